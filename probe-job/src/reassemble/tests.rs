use std::{cell::RefCell, rc::Rc};

use llmslo_schema::{Connection as ExchangeConnection, LossRecoveryKind};

use super::*;

/// A parser that logs every call and returns one finished exchange for each
/// payload `done`, and one unfinished exchange from `finish`.
struct Recorder {
    log: Rc<RefCell<Vec<String>>>,
    ready: Vec<Exchange>,
    unparsed_bytes: u64,
}

impl ExchangeParser for Recorder {
    fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        self.log.borrow_mut().push(format!(
            "data {flow:?} {ts_ns} {tid} {}",
            String::from_utf8_lossy(bytes)
        ));
        if bytes == b"done" {
            self.ready.push(Exchange {
                t0_ns: ts_ns,
                e2e_us: Some(5),
                connection: ExchangeConnection {
                    server_name: Some("api.example".into()),
                    ..ExchangeConnection::default()
                },
                ..Exchange::default()
            });
        } else {
            self.unparsed_bytes += bytes.len() as u64;
        }
    }

    fn on_gap(&mut self, flow: Flow, ts_ns: u64, missing_bytes: u64) {
        self.log
            .borrow_mut()
            .push(format!("gap {flow:?} {ts_ns} {missing_bytes}"));
    }

    fn on_end(&mut self, ts_ns: u64, end: StreamEnd) {
        self.log.borrow_mut().push(format!("end {ts_ns} {end:?}"));
    }

    fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.ready)
    }

    fn finish(&mut self, ts_ns: u64) -> Vec<Exchange> {
        self.log.borrow_mut().push(format!("finish {ts_ns}"));
        vec![Exchange {
            t0_ns: ts_ns,
            ..Exchange::default()
        }]
    }

    fn unparsed_bytes(&self) -> u64 {
        self.unparsed_bytes
    }
}

type Log = Rc<RefCell<Vec<String>>>;
type Infos = Rc<RefCell<Vec<ConnectionInfo>>>;

fn table() -> (
    ConnectionTable<Recorder, impl FnMut(ConnectionInfo) -> Recorder>,
    Log,
    Infos,
) {
    let log: Log = Rc::default();
    let infos: Infos = Rc::default();
    let (parser_log, parser_infos) = (log.clone(), infos.clone());
    let table = ConnectionTable::new(move |info| {
        parser_infos.borrow_mut().push(info);
        Recorder {
            log: parser_log.clone(),
            ready: Vec::new(),
            unparsed_bytes: 0,
        }
    });
    (table, log, infos)
}

fn outbound() -> ConnectionMeta {
    ConnectionMeta {
        transport: Transport::Tcp,
        role: Some(Direction::Outbound),
        local: Some("127.0.0.1:40000".parse().unwrap()),
        peer: Some("127.0.0.1:8000".parse().unwrap()),
        tls_library: None,
        server_name: None,
    }
}

const KEY: SocketKey = SocketKey { tgid: 100, fd: 7 };

fn transfer(flow: Flow, ts_ns: u64, tid: u32, payload: &[u8], byte_count: u64) -> Transfer<'_> {
    Transfer {
        flow,
        ts_ns,
        tid,
        payload,
        byte_count,
        call_start_ns: ts_ns.saturating_sub(1),
        requested_bytes: 0,
    }
}

#[test]
fn parser_gets_connection_info() {
    let (mut table, _, infos) = table();
    table.open(KEY, 9, outbound(), 1);
    let info = infos.borrow()[0].clone();
    assert_eq!(info.transport, Transport::Tcp);
    assert_eq!(info.role, Some(Direction::Outbound));
    assert_eq!(info.local_port, Some(40000));
    assert_eq!(info.peer_port, Some(8000));
    assert!(!info.tls);
}

#[test]
fn bytes_reach_parser_in_order() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    assert!(table.data(KEY, transfer(Flow::Egress, 10, 101, b"request", 7)));
    assert!(table.data(KEY, transfer(Flow::Ingress, 20, 102, b"response", 8)));
    assert_eq!(
        *log.borrow(),
        ["data Egress 10 101 request", "data Ingress 20 102 response"]
    );
}

#[test]
fn truncated_capture_becomes_gap() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.data(KEY, transfer(Flow::Ingress, 30, 101, b"abc", 10));
    table.data(KEY, transfer(Flow::Ingress, 31, 101, b"", 4));
    assert_eq!(
        *log.borrow(),
        [
            "data Ingress 30 101 abc",
            "gap Ingress 30 7",
            "gap Ingress 31 4"
        ]
    );
    let (_, stats) = table.finish(40);
    assert_eq!(stats.missing_bytes, 11);
}

#[test]
fn unknown_socket_is_not_fed() {
    let (mut table, log, _) = table();
    assert!(!table.data(KEY, transfer(Flow::Egress, 10, 101, b"x", 1)));
    assert!(log.borrow().is_empty());
}

#[test]
fn exchanges_get_probe_fields() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.data(KEY, transfer(Flow::Ingress, 50, 101, b"done", 4));
    table.data(KEY, transfer(Flow::Ingress, 60, 101, b"done", 4));
    let (exchanges, _) = table.finish(70);

    assert_eq!(exchanges.len(), 3);
    let first = &exchanges[0];
    assert_eq!(first.id, 1);
    assert_eq!(first.pid, 100);
    assert_eq!(first.cgroup_id, 9);
    assert_eq!(first.connection.fd, 7);
    assert_eq!(first.connection.local.as_deref(), Some("127.0.0.1:40000"));
    assert_eq!(first.connection.peer.as_deref(), Some("127.0.0.1:8000"));
    assert_eq!(first.connection.tls_library, None);
    assert_eq!(first.connection.server_name.as_deref(), Some("api.example"));
    assert_eq!(exchanges[1].id, 2);
}

#[test]
fn close_ends_and_finishes_parser() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.close(KEY, 80);
    assert!(!table.contains(KEY));
    assert_eq!(*log.borrow(), ["end 80 Closed", "finish 80"]);

    let (exchanges, stats) = table.finish(90);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(stats.open_at_window_end, 0);
}

#[test]
fn end_of_stream_keeps_connection() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.end(KEY, 85, StreamEnd::PeerClosed);
    assert!(table.contains(KEY));
    assert_eq!(*log.borrow(), ["end 85 PeerClosed"]);
}

#[test]
fn reopened_fd_closes_old_connection() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.open(KEY, 9, outbound(), 2);
    assert_eq!(*log.borrow(), ["end 2 Closed", "finish 2"]);
    let (_, stats) = table.finish(3);
    assert_eq!(stats.connections_opened, 2);
}

#[test]
fn process_exit_closes_only_its_sockets() {
    let (mut table, _, _) = table();
    let other = SocketKey { tgid: 200, fd: 7 };
    table.open(KEY, 9, outbound(), 1);
    table.open(SocketKey { tgid: 100, fd: 8 }, 9, outbound(), 1);
    table.open(other, 9, outbound(), 1);
    assert_eq!(table.close_process(100, 5), 2);
    assert!(table.contains(other));
    assert!(!table.contains(KEY));
}

#[test]
fn window_end_counts_open_exchanges_and_unparsed_bytes() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.data(KEY, transfer(Flow::Egress, 10, 101, b"garbage", 7));
    let (exchanges, stats) = table.finish(100);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(stats.open_at_window_end, 1);
    assert_eq!(stats.unparsed_bytes, 7);
}

#[test]
fn received_bytes_carry_arrival_times() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.enable_arrivals(KEY);
    table.arrival(KEY, &segment(100, None, 4));
    table.arrival(KEY, &segment(200, None, 6));
    table.data(KEY, transfer(Flow::Ingress, 300, 101, b"abcdefghij", 10));
    table.data(KEY, transfer(Flow::Egress, 310, 101, b"req", 3));
    assert_eq!(
        *log.borrow(),
        [
            "data Ingress 100 101 abcd",
            "data Ingress 200 101 efghij",
            "data Egress 310 101 req"
        ]
    );
    let (_, stats) = table.finish(400);
    assert_eq!(stats.bytes_at_arrival, 10);
}

#[test]
fn arrivals_ignored_until_enabled() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.arrival(KEY, &segment(100, None, 4));
    table.data(KEY, transfer(Flow::Ingress, 300, 101, b"abcd", 4));
    assert_eq!(*log.borrow(), ["data Ingress 300 101 abcd"]);
}

#[test]
fn short_read_discards_duplicate_arrivals() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.enable_arrivals(KEY);
    table.arrival(KEY, &segment(100, None, 2));
    table.arrival(KEY, &segment(120, None, 2));
    let mut first = transfer(Flow::Ingress, 300, 101, b"ab", 2);
    first.call_start_ns = 250;
    first.requested_bytes = 65_536;
    table.data(KEY, first);
    table.data(KEY, transfer(Flow::Ingress, 500, 101, b"cd", 2));
    assert_eq!(
        *log.borrow(),
        ["data Ingress 100 101 ab", "data Ingress 500 101 cd"]
    );
    let (_, stats) = table.finish(600);
    assert_eq!(stats.arrivals_discarded, 1);
}

#[test]
fn refilled_gap_is_reported_also_under_tls() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.enable_arrivals(KEY);
    assert!(table.arrival(KEY, &segment(100, Some(0), 2)).is_none());
    // Bytes 2..4 are lost; 4..6 overtake them and open a gap at 150.
    assert!(table.arrival(KEY, &segment(150, Some(4), 2)).is_none());
    let (refill, _) = table.arrival(KEY, &segment(400, Some(2), 2)).unwrap();
    assert_eq!(
        refill,
        LossWait {
            kind: LossRecoveryKind::Refilled,
            from_ns: 150,
            to_ns: 400
        }
    );
    table.data(KEY, transfer(Flow::Ingress, 500, 101, b"abcdef", 6));
    assert_eq!(
        *log.borrow(),
        ["data Ingress 100 101 ab", "data Ingress 400 101 cdef"]
    );

    // TLS plaintext cannot be stamped, but gaps are still seen.
    assert!(table.mark_tls(KEY, Some("openssl"), None));
    assert!(table.arrival(KEY, &segment(600, Some(8), 2)).is_none());
    assert!(table.arrival(KEY, &segment(700, Some(6), 2)).is_some());
}

/// Builds a segment of `bytes` at `ts_ns` with nothing missing before it.
fn segment(ts_ns: u64, seq: Option<u32>, bytes: u64) -> Segment {
    Segment {
        ts_ns,
        seq,
        bytes,
        ..Segment::default()
    }
}

#[test]
fn missed_packets_make_a_wait() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 50);
    table.enable_arrivals(KEY);
    let lost_first = Segment {
        missed_packets: 1,
        ..segment(100, Some(0), 2)
    };
    // Nothing arrived before: the wait runs from the connection's start.
    let (wait, _) = table.arrival(KEY, &lost_first).unwrap();
    assert_eq!(
        wait,
        LossWait {
            kind: LossRecoveryKind::Missed,
            from_ns: 50,
            to_ns: 100
        }
    );
    assert!(table.arrival(KEY, &segment(130, Some(2), 2)).is_none());
    let lost_next = Segment {
        missed_packets: 2,
        ..segment(400, Some(4), 2)
    };
    let (wait, _) = table.arrival(KEY, &lost_next).unwrap();
    assert_eq!((wait.from_ns, wait.to_ns), (130, 400));
}

#[test]
fn missed_packets_wait_bounded_by_timeouts() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 0);
    table.enable_arrivals(KEY);
    // The response came 8 s after the request, and its one lost packet
    // waited at most the initial timeout of 1 s.
    let late = Segment {
        missed_packets: 1,
        srtt_us: 10_000,
        ..segment(8_000_000_000, Some(0), 2)
    };
    let (wait, _) = table.arrival(KEY, &late).unwrap();
    assert_eq!(wait.to_ns - wait.from_ns, 1_000_000_000);
    // Two in a row: the second timeout doubles.
    let twice = Segment {
        missed_packets: 2,
        ..segment(20_000_000_000, Some(2), 2)
    };
    let (wait, _) = table.arrival(KEY, &twice).unwrap();
    assert_eq!(wait.to_ns - wait.from_ns, 3_000_000_000);
    // On a long path the measured round trip sets the timeout.
    let far = Segment {
        missed_packets: 1,
        srtt_us: 900_000,
        ..segment(30_000_000_000, Some(4), 2)
    };
    let (wait, _) = table.arrival(KEY, &far).unwrap();
    assert_eq!(wait.to_ns - wait.from_ns, 1_100_000_000);
}

#[test]
fn missed_packets_after_resent_syn_wait_longer() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 0);
    table.enable_arrivals(KEY);
    table.syn_resent(KEY);
    let late = Segment {
        missed_packets: 1,
        ..segment(8_000_000_000, Some(0), 2)
    };
    let (wait, _) = table.arrival(KEY, &late).unwrap();
    assert_eq!(wait.to_ns - wait.from_ns, 3_000_000_000);
}

#[test]
fn missed_packets_with_unacked_data_ignored() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 50);
    table.enable_arrivals(KEY);
    let after_lost_ack = Segment {
        missed_packets: 1,
        own_data_unacked: true,
        ..segment(100, Some(0), 2)
    };
    assert!(table.arrival(KEY, &after_lost_ack).is_none());
}

#[test]
fn missed_packets_past_gap_left_to_refill() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 50);
    table.enable_arrivals(KEY);
    assert!(table.arrival(KEY, &segment(100, Some(0), 2)).is_none());
    // Bytes 2..4 are lost, and 4..6 overtake them.
    let past_gap = Segment {
        missed_packets: 1,
        ..segment(150, Some(4), 2)
    };
    assert!(table.arrival(KEY, &past_gap).is_none());
    let (wait, _) = table.arrival(KEY, &segment(400, Some(2), 2)).unwrap();
    assert_eq!(
        (wait.kind, wait.from_ns, wait.to_ns),
        (LossRecoveryKind::Refilled, 150, 400)
    );
}

#[test]
fn tls_connection_takes_sni_and_library() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 1);
    assert!(!table.mark_tls(KEY, Some("openssl"), Some("api.openai.com")));
    table.data(KEY, transfer(Flow::Ingress, 50, 101, b"done", 4));
    let (exchanges, _) = table.finish(70);
    let connection = &exchanges[0].connection;
    assert_eq!(connection.tls_library.as_deref(), Some("openssl"));
    assert_eq!(
        connection.server_name.as_deref(),
        Some("api.openai.com"),
        "SNI wins over the Host the parser saw"
    );
}

#[test]
fn tls_connection_without_sni_keeps_host() {
    let (mut table, _, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.mark_tls(KEY, Some("go_crypto_tls"), None);
    table.mark_tls(KEY, None, None);
    table.data(KEY, transfer(Flow::Ingress, 50, 101, b"done", 4));
    let (exchanges, _) = table.finish(70);
    let connection = &exchanges[0].connection;
    assert_eq!(connection.tls_library.as_deref(), Some("go_crypto_tls"));
    assert_eq!(connection.server_name.as_deref(), Some("api.example"));
}

#[test]
fn tls_stops_arrival_stamps() {
    let (mut table, log, _) = table();
    table.open(KEY, 9, outbound(), 1);
    table.enable_arrivals(KEY);
    table.arrival(KEY, &segment(100, None, 40));
    assert!(table.mark_tls(KEY, Some("openssl"), None));
    table.data(KEY, transfer(Flow::Ingress, 300, 101, b"abcd", 4));
    assert_eq!(
        *log.borrow(),
        ["data Ingress 300 101 abcd"],
        "ciphertext arrivals do not stamp plaintext"
    );
    assert!(!table.mark_tls(KEY, Some("openssl"), None));
}
