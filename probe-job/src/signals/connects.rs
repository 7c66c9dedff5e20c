//! TCP connection attempts of targets, from the handshake events of
//! `sock:inet_sock_set_state`, the error reports that follow failures, and
//! the `connect()` syscall's return.
//!
//! An attempt starts with `TCP_SYN_SENT` inside `connect()`. It ends when
//! the handshake completes (latency to `TCP_ESTABLISHED`) or fails
//! (`TCP_CLOSE`). The errno of a failure comes from, in order of trust:
//! the return of a blocking `connect()`, the kernel's error report
//! (`ECONNREFUSED` for a reset, `ETIMEDOUT` after the SYN retries,
//! `EHOSTUNREACH` for ICMP errors), or `aborted` when the process closed
//! the socket itself during the handshake. This covers blocking and
//! non-blocking connects alike.

use std::{collections::HashMap, net::SocketAddr};

use llmslo_probe_common::HandshakeStage;
use llmslo_schema::ConnectAttempt;

use crate::decode::{ConnRecord, HandshakeRecord};

const EINPROGRESS: i64 = 115;

/// `error` of an attempt that the process closed before the handshake
/// ended; no errno exists for it.
pub const ABORTED: &str = "aborted";

/// `error` of a failed attempt whose errno the probe did not see.
pub const UNKNOWN_ERROR: &str = "unknown";

/// What the kernel told about the socket of a `connect()` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// The call started a TCP handshake.
    Tcp,
    /// The call succeeded without a TCP handshake: UDP or another
    /// datagram protocol.
    NotTcp,
    /// Handshakes are not followed, or the call failed first.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InProgress,
    Established,
    Failed,
}

#[derive(Debug, Clone)]
struct Attempt {
    pid: u32,
    tid: u32,
    peer: Option<SocketAddr>,
    start_ns: u64,
    end_ns: Option<u64>,
    state: State,
    error: Option<String>,
    /// The process closed the socket while the handshake was in progress.
    closed: bool,
}

/// Connection attempts of one window.
#[derive(Debug, Default)]
pub struct ConnectTracker {
    /// Whether the kernel reports handshakes. Without them attempts come
    /// from `connect()` returns alone, and non-blocking ones have no
    /// latency.
    handshakes: bool,
    attempts: Vec<Attempt>,
    /// Attempts by socket address until they end.
    in_progress: HashMap<u64, usize>,
    /// Failed attempts whose error report may still come.
    awaiting_error: HashMap<u64, usize>,
    /// Attempts by `(tgid, connect() entry time)`, until the call returns.
    by_call: HashMap<(u32, u64), usize>,
    /// The latest attempt on each `(tgid, fd)`, to notice closes.
    by_socket: HashMap<(u32, i32), usize>,
}

impl ConnectTracker {
    pub fn new(handshakes: bool) -> Self {
        Self {
            handshakes,
            ..Self::default()
        }
    }

    /// Handles a handshake event. A stage whose start was lost (ring
    /// buffer full) still makes an attempt, because every event carries
    /// the start.
    pub fn handshake(&mut self, record: &HandshakeRecord) {
        let index = match self.in_progress.get(&record.skaddr) {
            Some(&index) => index,
            None => self.start(record),
        };
        let attempt = &mut self.attempts[index];
        if attempt.peer.is_none() {
            attempt.peer = record.remote;
        }
        match record.stage {
            HandshakeStage::Started => {}
            HandshakeStage::Established => {
                attempt.state = State::Established;
                attempt.end_ns = Some(record.header.ts_ns);
                self.in_progress.remove(&record.skaddr);
            }
            HandshakeStage::Failed => {
                attempt.state = State::Failed;
                attempt.end_ns = Some(record.header.ts_ns);
                self.in_progress.remove(&record.skaddr);
                if record.error != 0 {
                    attempt
                        .error
                        .get_or_insert_with(|| errno_name(i64::from(record.error)));
                } else if attempt.closed {
                    attempt.error.get_or_insert_with(|| ABORTED.to_string());
                } else {
                    self.awaiting_error.insert(record.skaddr, index);
                }
            }
        }
    }

    fn start(&mut self, record: &HandshakeRecord) -> usize {
        let header = record.header;
        let index = self.attempts.len();
        self.attempts.push(Attempt {
            pid: header.tgid,
            tid: header.tid,
            peer: record.remote,
            start_ns: record.start_ns,
            end_ns: None,
            state: State::InProgress,
            error: None,
            closed: false,
        });
        self.in_progress.insert(record.skaddr, index);
        if header.fd >= 0 {
            self.by_call.insert((header.tgid, record.start_ns), index);
            self.by_socket.insert((header.tgid, header.fd), index);
        }
        index
    }

    /// Handles the kernel's report of the error that ended an attempt.
    pub fn socket_error(&mut self, skaddr: u64, errno: i32) {
        if let Some(index) = self.awaiting_error.remove(&skaddr) {
            self.attempts[index]
                .error
                .get_or_insert_with(|| errno_name(i64::from(errno)));
        }
    }

    /// Handles the return of a `connect()` to an IP address and says what
    /// kind of socket it was.
    pub fn connect_returned(&mut self, conn: &ConnRecord, peer: SocketAddr) -> SocketKind {
        let header = conn.header;
        let failed = conn.ret < 0 && conn.ret != -EINPROGRESS;
        if !self.handshakes {
            self.push_from_call(conn, peer, failed);
            return SocketKind::Unknown;
        }

        match self.by_call.remove(&(header.tgid, conn.start_ns)) {
            Some(index) => {
                let attempt = &mut self.attempts[index];
                if failed {
                    // The syscall's errno is what the process saw.
                    attempt.error = Some(errno_name(-conn.ret));
                    if attempt.state == State::InProgress {
                        attempt.state = State::Failed;
                        attempt.end_ns = Some(header.ts_ns);
                    }
                }
                SocketKind::Tcp
            }
            None if failed => {
                // Failed before a handshake started (no route, no free
                // port), or not a TCP socket at all.
                self.push_from_call(conn, peer, true);
                SocketKind::Unknown
            }
            None => SocketKind::NotTcp,
        }
    }

    /// Records an attempt from the syscall alone: its latency is the time
    /// in a blocking call, unknown for a non-blocking one.
    fn push_from_call(&mut self, conn: &ConnRecord, peer: SocketAddr, failed: bool) {
        let header = conn.header;
        let ended = conn.ret == 0 || failed;
        self.attempts.push(Attempt {
            pid: header.tgid,
            tid: header.tid,
            peer: Some(peer),
            start_ns: conn.start_ns,
            end_ns: ended.then_some(header.ts_ns),
            state: match (conn.ret == 0, failed) {
                (true, _) => State::Established,
                (_, true) => State::Failed,
                _ => State::InProgress,
            },
            error: failed.then(|| errno_name(-conn.ret)),
            closed: false,
        });
    }

    /// Handles a `close()` of a socket; an attempt still in progress on it
    /// is aborted by the process.
    pub fn closed(&mut self, tgid: u32, fd: i32) {
        if let Some(index) = self.by_socket.remove(&(tgid, fd)) {
            let attempt = &mut self.attempts[index];
            if attempt.state == State::InProgress {
                attempt.closed = true;
            }
        }
    }

    /// Returns every attempt in start order. Attempts still in progress
    /// have neither latency nor error.
    pub fn finish(self) -> Vec<ConnectAttempt> {
        let mut attempts: Vec<ConnectAttempt> = self
            .attempts
            .into_iter()
            .map(|attempt| ConnectAttempt {
                pid: attempt.pid,
                tid: attempt.tid,
                peer: attempt
                    .peer
                    .map(|peer| peer.to_string())
                    .unwrap_or_default(),
                start_ns: attempt.start_ns,
                latency_us: match attempt.state {
                    State::InProgress => None,
                    _ => attempt
                        .end_ns
                        .map(|end| end.saturating_sub(attempt.start_ns) / 1_000),
                },
                error: match attempt.state {
                    State::Failed => Some(attempt.error.unwrap_or_else(|| UNKNOWN_ERROR.into())),
                    _ => None,
                },
            })
            .collect();
        attempts.sort_by_key(|attempt| attempt.start_ns);
        attempts
    }
}

/// Names the errno values `connect()` commonly fails with.
pub fn errno_name(errno: i64) -> String {
    let name = match errno {
        1 => "EPERM",
        4 => "EINTR",
        11 => "EAGAIN",
        13 => "EACCES",
        22 => "EINVAL",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Header;

    const PEER: &str = "10.0.0.9:443";
    const SOCKET: u64 = 0xffff_8880_0000_1000;

    fn header(ts_ns: u64, fd: i32) -> Header {
        Header {
            ts_ns,
            cgroup_id: 1,
            tgid: 100,
            tid: 101,
            fd,
        }
    }

    fn stage(stage: HandshakeStage, ts_ns: u64, error: i32) -> HandshakeRecord {
        HandshakeRecord {
            header: header(ts_ns, 5),
            skaddr: SOCKET,
            start_ns: 1_000,
            remote: Some(PEER.parse().unwrap()),
            stage,
            error,
        }
    }

    fn returned(ts_ns: u64, ret: i64) -> ConnRecord {
        ConnRecord {
            header: header(ts_ns, 5),
            peer: Some(PEER.parse().unwrap()),
            ret,
            start_ns: 1_000,
        }
    }

    fn connect_returned(tracker: &mut ConnectTracker, ts_ns: u64, ret: i64) -> SocketKind {
        tracker.connect_returned(&returned(ts_ns, ret), PEER.parse().unwrap())
    }

    #[test]
    fn blocking_connect_latency_is_the_handshake() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        tracker.handshake(&stage(HandshakeStage::Established, 301_000, 0));
        assert_eq!(connect_returned(&mut tracker, 305_000, 0), SocketKind::Tcp);

        let attempts = tracker.finish();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].latency_us, Some(300));
        assert_eq!(attempts[0].error, None);
        assert_eq!(attempts[0].peer, PEER);
        assert_eq!(attempts[0].tid, 101);
    }

    #[test]
    fn non_blocking_connect_gets_latency_after_return() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        assert_eq!(connect_returned(&mut tracker, 2_000, -115), SocketKind::Tcp);
        tracker.handshake(&stage(HandshakeStage::Established, 2_001_000, 0));

        let attempts = tracker.finish();
        assert_eq!(attempts[0].latency_us, Some(2_000));
        assert_eq!(attempts[0].error, None);
    }

    #[test]
    fn error_report_names_non_blocking_failure() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        connect_returned(&mut tracker, 2_000, -115);
        tracker.handshake(&stage(HandshakeStage::Failed, 3_001_000, 0));
        tracker.socket_error(SOCKET, 110);

        let attempts = tracker.finish();
        assert_eq!(attempts[0].latency_us, Some(3_000));
        assert_eq!(attempts[0].error.as_deref(), Some("ETIMEDOUT"));
    }

    #[test]
    fn early_error_report_rides_on_failure() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        tracker.handshake(&stage(HandshakeStage::Failed, 51_000, 113));
        assert_eq!(tracker.finish()[0].error.as_deref(), Some("EHOSTUNREACH"));
    }

    #[test]
    fn syscall_errno_wins() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        tracker.handshake(&stage(HandshakeStage::Failed, 5_000, 0));
        tracker.socket_error(SOCKET, 113);
        assert_eq!(connect_returned(&mut tracker, 6_000, -111), SocketKind::Tcp);
        assert_eq!(tracker.finish()[0].error.as_deref(), Some("ECONNREFUSED"));
    }

    #[test]
    fn close_during_handshake_is_aborted() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        connect_returned(&mut tracker, 2_000, -115);
        tracker.closed(100, 5);
        tracker.handshake(&stage(HandshakeStage::Failed, 501_000, 0));

        let attempts = tracker.finish();
        assert_eq!(attempts[0].error.as_deref(), Some(ABORTED));
        assert_eq!(attempts[0].latency_us, Some(500));
    }

    #[test]
    fn attempt_in_progress_at_window_end_has_no_outcome() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Started, 1_200, 0));
        connect_returned(&mut tracker, 2_000, -115);

        let attempts = tracker.finish();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].latency_us, None);
        assert_eq!(attempts[0].error, None);
    }

    #[test]
    fn connect_without_handshake_is_not_tcp() {
        let mut tracker = ConnectTracker::new(true);
        assert_eq!(connect_returned(&mut tracker, 2_000, 0), SocketKind::NotTcp);
        assert!(tracker.finish().is_empty(), "UDP connects are no attempts");
    }

    #[test]
    fn failure_before_handshake_comes_from_syscall() {
        let mut tracker = ConnectTracker::new(true);
        assert_eq!(
            connect_returned(&mut tracker, 9_000, -101),
            SocketKind::Unknown
        );
        let attempts = tracker.finish();
        assert_eq!(attempts[0].error.as_deref(), Some("ENETUNREACH"));
        assert_eq!(attempts[0].latency_us, Some(8));
    }

    #[test]
    fn without_handshakes_syscalls_are_timed() {
        let mut tracker = ConnectTracker::new(false);
        assert_eq!(
            connect_returned(&mut tracker, 3_000, 0),
            SocketKind::Unknown
        );
        assert_eq!(
            connect_returned(&mut tracker, 4_000, -115),
            SocketKind::Unknown
        );
        let attempts = tracker.finish();
        assert_eq!(attempts[0].latency_us, Some(2));
        assert_eq!(
            attempts[1].latency_us, None,
            "non-blocking without handshakes"
        );
    }

    #[test]
    fn lost_start_is_rebuilt_from_later_stage() {
        let mut tracker = ConnectTracker::new(true);
        tracker.handshake(&stage(HandshakeStage::Established, 101_000, 0));
        let attempts = tracker.finish();
        assert_eq!(attempts[0].latency_us, Some(100));
        assert_eq!(attempts[0].pid, 100);
    }
}
