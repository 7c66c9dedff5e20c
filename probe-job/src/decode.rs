//! Decodes raw ring-buffer records into typed events.
//!
//! The records come from the kernel, but their lengths are still checked
//! against the layouts in `llmslo-probe-common` before any field is read. A
//! mismatched eBPF object or a kernel bug then produces an error, not a
//! panic or a read past the record.

use std::{
    mem::{offset_of, size_of},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use llmslo_probe_common::{
    ArrivalEvent, ConnEvent, DATA_EVENT_HEADER_LEN, DataEvent, DataSource, EventHeader, EventKind,
    ExitEvent, FlowKey, HandshakeEvent, HandshakeStage, MAX_PAYLOAD, RetransmitEvent,
    RunQueueWaitEvent, SockAddr, SocketErrorEvent,
};
use llmslo_wire::Flow;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// `TCP_SYN_SENT` of the kernel's `tcp_states.h`.
const TCP_SYN_SENT: i32 = 2;

/// Fields every event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
}

/// Bytes a target read from or wrote to a socket.
#[derive(Debug, PartialEq, Eq)]
pub struct DataRecord<'a> {
    pub header: Header,
    pub flow: Flow,
    /// Bytes the call transferred; more than `payload.len()` when the
    /// capture was truncated or the user buffer could not be read.
    pub byte_count: u64,
    /// Positive errno of a call that ended the connection, else 0.
    pub errno: i32,
    pub source: Source,
    /// `CLOCK_MONOTONIC` of the syscall's entry.
    pub call_start_ns: u64,
    /// Bytes the call asked for; 0 when unknown.
    pub requested_bytes: u64,
    /// For TLS plaintext, the library's session object (`SSL *` or Go
    /// `*tls.Conn`); 0 for socket bytes.
    pub tls_session: u64,
    pub payload: &'a [u8],
}

/// Origin of the bytes of a [`DataRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Syscall,
    OpenSsl,
    GoTls,
}

impl Source {
    /// Name of the TLS library for `Connection.tls_library`.
    pub fn tls_library(self) -> Option<&'static str> {
        match self {
            Self::Syscall => None,
            Self::OpenSsl => Some("openssl"),
            Self::GoTls => Some("go_crypto_tls"),
        }
    }
}

/// A `connect()` or `accept()` that returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRecord {
    pub header: Header,
    /// The peer, when the call named an IPv4 or IPv6 address.
    pub peer: Option<SocketAddr>,
    /// Syscall return value: 0 or a negative errno for connect, the new fd
    /// for accept.
    pub ret: i64,
    /// `CLOCK_MONOTONIC` of the syscall's entry.
    pub start_ns: u64,
}

/// A stage of a TCP connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRecord {
    /// The connecting thread's ids and fd; `ts_ns` is when the stage
    /// happened.
    pub header: Header,
    /// Kernel address of the socket, the attempt's identity.
    pub skaddr: u64,
    /// `CLOCK_MONOTONIC` of the `connect()` call's entry.
    pub start_ns: u64,
    /// The address connected to, when the family is IPv4 or IPv6.
    pub remote: Option<SocketAddr>,
    pub stage: HandshakeStage,
    /// Positive errno of a failure, when the kernel reported it first; 0
    /// otherwise.
    pub error: i32,
}

/// A retransmitted TCP segment of a target connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitRecord {
    /// `tgid` 0 when the kernel matched the connection by `flow` alone.
    pub header: Header,
    pub flow: FlowKey,
    pub remote: Option<SocketAddr>,
    /// The segment was the SYN of a connection being opened.
    pub syn: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Data(DataRecord<'a>),
    Connect(ConnRecord),
    Accept(ConnRecord),
    Close(Header),
    /// A marker that only woke user space.
    Wake,
    Fork {
        header: Header,
        child_pid: u32,
    },
    /// A target process exited; `comm` is its command name, if the kernel
    /// gave one.
    Exit {
        header: Header,
        comm: Option<String>,
    },
    /// A target process replaced its program with `execve()`.
    Exec(Header),
    /// A TCP segment with `data_len` payload bytes arrived on `flow`; `seq`
    /// is the sequence number of its first byte, when the kernel gave it.
    /// `missed_packets` of the peer never arrived right before it, and
    /// `own_data_unacked` is whether one of them may have been an
    /// acknowledgement of this end's data rather than a lost segment.
    /// `srtt_us` is the socket's smoothed round-trip time (0 when no
    /// packet is missing).
    Arrival {
        ts_ns: u64,
        flow: FlowKey,
        data_len: u32,
        seq: Option<u32>,
        missed_packets: u16,
        own_data_unacked: bool,
        srtt_us: u32,
    },
    /// Thread `tid` of process `pid` got a CPU at `end_ns` after waiting
    /// `wait_ns` for it.
    RunQueueWait {
        pid: u32,
        tid: u32,
        end_ns: u64,
        wait_ns: u64,
    },
    Handshake(HandshakeRecord),
    /// The error (positive errno) that ended the attempt on `skaddr`.
    SocketError {
        skaddr: u64,
        errno: i32,
    },
    Retransmit(RetransmitRecord),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is shorter than the {expected}-byte {what}")]
    TooShort {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("ring buffer record has unknown event kind {0}")]
    UnknownKind(u8),
    #[error("ring buffer record has unknown data source {0}")]
    UnknownSource(u8),
    #[error("ring buffer record has unknown handshake stage {0}")]
    UnknownStage(u8),
    #[error(
        "data record claims {captured_len} captured bytes but carries {available} \
         (limit {MAX_PAYLOAD})"
    )]
    PayloadLength {
        captured_len: usize,
        available: usize,
    },
}

/// Decodes one ring-buffer record.
///
/// # Errors
///
/// Returns a [`DecodeError`] when the record is shorter than its layout, or
/// its kind, source or payload length is out of range.
pub fn decode(record: &[u8]) -> Result<Event<'_>, DecodeError> {
    require(record, size_of::<EventHeader>(), "event header")?;
    let header = Header {
        ts_ns: read_u64(record, offset_of!(EventHeader, ts_ns)),
        cgroup_id: read_u64(record, offset_of!(EventHeader, cgroup_id)),
        tgid: read_u32(record, offset_of!(EventHeader, tgid)),
        tid: read_u32(record, offset_of!(EventHeader, tid)),
        fd: read_u32(record, offset_of!(EventHeader, fd)) as i32,
    };
    let kind_byte = record[offset_of!(EventHeader, kind)];
    let kind = EventKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;

    match kind {
        EventKind::Write | EventKind::Read => decode_data(record, header, kind),
        EventKind::Connect => Ok(Event::Connect(decode_conn(record, header)?)),
        EventKind::Accept => Ok(Event::Accept(decode_conn(record, header)?)),
        EventKind::Close => Ok(Event::Close(header)),
        EventKind::Fork => {
            let conn = decode_conn(record, header)?;
            Ok(Event::Fork {
                header,
                child_pid: conn.ret as u32,
            })
        }
        EventKind::Exit => {
            require(record, size_of::<ExitEvent>(), "exit event")?;
            let at = offset_of!(ExitEvent, comm);
            let comm = &record[at..at + 16];
            let len = comm
                .iter()
                .position(|&byte| byte == 0)
                .unwrap_or(comm.len());
            let comm = String::from_utf8_lossy(&comm[..len]).into_owned();
            Ok(Event::Exit {
                header,
                comm: Some(comm).filter(|comm| !comm.is_empty()),
            })
        }
        EventKind::Exec => Ok(Event::Exec(header)),
        EventKind::Wake => Ok(Event::Wake),
        EventKind::Arrival => decode_arrival(record, header),
        EventKind::RunQueueWait => {
            require(
                record,
                size_of::<RunQueueWaitEvent>(),
                "run-queue wait event",
            )?;
            Ok(Event::RunQueueWait {
                pid: header.tgid,
                tid: header.tid,
                end_ns: header.ts_ns,
                wait_ns: read_u64(record, offset_of!(RunQueueWaitEvent, wait_ns)),
            })
        }
        EventKind::Handshake => decode_handshake(record, header),
        EventKind::SocketError => {
            require(record, size_of::<SocketErrorEvent>(), "socket error event")?;
            Ok(Event::SocketError {
                skaddr: read_u64(record, offset_of!(SocketErrorEvent, skaddr)),
                errno: read_u32(record, offset_of!(SocketErrorEvent, error)) as i32,
            })
        }
        EventKind::Retransmit => {
            require(record, size_of::<RetransmitEvent>(), "retransmit event")?;
            let flow = read_flow(record, offset_of!(RetransmitEvent, flow));
            let state = read_u32(record, offset_of!(RetransmitEvent, state)) as i32;
            Ok(Event::Retransmit(RetransmitRecord {
                header,
                flow,
                remote: flow_remote(&flow),
                syn: state == TCP_SYN_SENT,
            }))
        }
    }
}

fn decode_arrival(record: &[u8], header: Header) -> Result<Event<'_>, DecodeError> {
    require(record, size_of::<ArrivalEvent>(), "arrival event")?;
    Ok(Event::Arrival {
        ts_ns: header.ts_ns,
        flow: read_flow(record, offset_of!(ArrivalEvent, flow)),
        data_len: read_u32(record, offset_of!(ArrivalEvent, data_len)),
        seq: (record[offset_of!(ArrivalEvent, seq_known)] == 1)
            .then(|| read_u32(record, offset_of!(ArrivalEvent, seq))),
        missed_packets: read_u16(record, offset_of!(ArrivalEvent, missed_packets)),
        own_data_unacked: record[offset_of!(ArrivalEvent, own_data_unacked)] == 1,
        srtt_us: read_u32(record, offset_of!(ArrivalEvent, srtt_us)),
    })
}

fn decode_handshake(record: &[u8], header: Header) -> Result<Event<'_>, DecodeError> {
    require(record, size_of::<HandshakeEvent>(), "handshake event")?;
    let stage_byte = record[offset_of!(HandshakeEvent, stage)];
    let stage = match stage_byte {
        value if value == HandshakeStage::Started as u8 => HandshakeStage::Started,
        value if value == HandshakeStage::Established as u8 => HandshakeStage::Established,
        value if value == HandshakeStage::Failed as u8 => HandshakeStage::Failed,
        other => return Err(DecodeError::UnknownStage(other)),
    };
    let flow = read_flow(record, offset_of!(HandshakeEvent, flow));
    Ok(Event::Handshake(HandshakeRecord {
        header,
        skaddr: read_u64(record, offset_of!(HandshakeEvent, skaddr)),
        start_ns: read_u64(record, offset_of!(HandshakeEvent, start_ns)),
        remote: flow_remote(&flow),
        stage,
        error: read_u32(record, offset_of!(HandshakeEvent, error)) as i32,
    }))
}

/// Reads a [`FlowKey`] at `at`; the caller checked the record's length.
fn read_flow(record: &[u8], at: usize) -> FlowKey {
    let address = |field: usize| {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&record[at + field..at + field + 16]);
        bytes
    };
    FlowKey {
        family: read_u16(record, at + offset_of!(FlowKey, family)),
        local_port: read_u16(record, at + offset_of!(FlowKey, local_port)),
        remote_port: read_u16(record, at + offset_of!(FlowKey, remote_port)),
        _pad: 0,
        local_addr: address(offset_of!(FlowKey, local_addr)),
        remote_addr: address(offset_of!(FlowKey, remote_addr)),
    }
}

/// Returns the remote address and port of a flow; `None` for families
/// other than IPv4 and IPv6.
pub fn flow_remote(flow: &FlowKey) -> Option<SocketAddr> {
    let address = flow.remote_addr;
    match flow.family {
        AF_INET => {
            let ip = Ipv4Addr::new(address[0], address[1], address[2], address[3]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, flow.remote_port)))
        }
        AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(address),
            flow.remote_port,
            0,
            0,
        ))),
        _ => None,
    }
}

fn decode_data(record: &[u8], header: Header, kind: EventKind) -> Result<Event<'_>, DecodeError> {
    require(record, DATA_EVENT_HEADER_LEN, "data event header")?;
    let captured_len = read_u32(record, offset_of!(DataEvent, captured_len)) as usize;
    let available = record.len() - DATA_EVENT_HEADER_LEN;
    if captured_len > MAX_PAYLOAD || captured_len > available {
        return Err(DecodeError::PayloadLength {
            captured_len,
            available,
        });
    }
    let source_byte = record[offset_of!(DataEvent, source)];
    let source = match source_byte {
        value if value == DataSource::Syscall as u8 => Source::Syscall,
        value if value == DataSource::OpenSsl as u8 => Source::OpenSsl,
        value if value == DataSource::GoTls as u8 => Source::GoTls,
        other => return Err(DecodeError::UnknownSource(other)),
    };

    Ok(Event::Data(DataRecord {
        header,
        flow: if kind == EventKind::Write {
            Flow::Egress
        } else {
            Flow::Ingress
        },
        byte_count: read_u64(record, offset_of!(DataEvent, byte_count)),
        errno: read_u32(record, offset_of!(DataEvent, errno)) as i32,
        source,
        call_start_ns: read_u64(record, offset_of!(DataEvent, call_start_ns)),
        requested_bytes: read_u64(record, offset_of!(DataEvent, requested_bytes)),
        tls_session: read_u64(record, offset_of!(DataEvent, tls_session)),
        payload: &record[DATA_EVENT_HEADER_LEN..DATA_EVENT_HEADER_LEN + captured_len],
    }))
}

fn decode_conn(record: &[u8], header: Header) -> Result<ConnRecord, DecodeError> {
    require(record, size_of::<ConnEvent>(), "connection event")?;
    let peer_at = offset_of!(ConnEvent, peer);
    let family = read_u16(record, peer_at + offset_of!(SockAddr, family));
    let port = read_u16(record, peer_at + offset_of!(SockAddr, port));
    let scope_id = read_u32(record, peer_at + offset_of!(SockAddr, scope_id));
    let addr_at = peer_at + offset_of!(SockAddr, addr);
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&record[addr_at..addr_at + 16]);

    let peer = match family {
        AF_INET => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        AF_INET6 => {
            let ip = Ipv6Addr::from(addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id)))
        }
        _ => None,
    };
    Ok(ConnRecord {
        header,
        peer,
        ret: read_u64(record, offset_of!(ConnEvent, ret)) as i64,
        start_ns: read_u64(record, offset_of!(ConnEvent, start_ns)),
    })
}

fn require(record: &[u8], expected: usize, what: &'static str) -> Result<(), DecodeError> {
    if record.len() < expected {
        return Err(DecodeError::TooShort {
            what,
            len: record.len(),
            expected,
        });
    }
    Ok(())
}

// The readers below index only below lengths checked by `require`.

fn read_u16(record: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([record[at], record[at + 1]])
}

fn read_u32(record: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&record[at..at + 4]);
    u32::from_ne_bytes(bytes)
}

fn read_u64(record: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&record[at..at + 8]);
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(kind: EventKind, fd: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; size_of::<EventHeader>()];
        bytes[offset_of!(EventHeader, ts_ns)..][..8].copy_from_slice(&1_000u64.to_ne_bytes());
        bytes[offset_of!(EventHeader, cgroup_id)..][..8].copy_from_slice(&77u64.to_ne_bytes());
        bytes[offset_of!(EventHeader, tgid)..][..4].copy_from_slice(&10u32.to_ne_bytes());
        bytes[offset_of!(EventHeader, tid)..][..4].copy_from_slice(&11u32.to_ne_bytes());
        bytes[offset_of!(EventHeader, kind)] = kind as u8;
        bytes[offset_of!(EventHeader, fd)..][..4].copy_from_slice(&fd.to_ne_bytes());
        bytes
    }

    fn data_record(kind: EventKind, payload: &[u8], byte_count: u64) -> Vec<u8> {
        let mut bytes = header_bytes(kind, 5);
        bytes.resize(DATA_EVENT_HEADER_LEN, 0);
        bytes[offset_of!(DataEvent, byte_count)..][..8].copy_from_slice(&byte_count.to_ne_bytes());
        bytes[offset_of!(DataEvent, captured_len)..][..4]
            .copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn conn_record(kind: EventKind, family: u16, addr: &[u8], port: u16, ret: i64) -> Vec<u8> {
        let mut bytes = header_bytes(kind, 7);
        bytes.resize(size_of::<ConnEvent>(), 0);
        let peer = offset_of!(ConnEvent, peer);
        bytes[peer + offset_of!(SockAddr, family)..][..2].copy_from_slice(&family.to_ne_bytes());
        bytes[peer + offset_of!(SockAddr, port)..][..2].copy_from_slice(&port.to_ne_bytes());
        bytes[peer + offset_of!(SockAddr, addr)..][..addr.len()].copy_from_slice(addr);
        bytes[offset_of!(ConnEvent, ret)..][..8].copy_from_slice(&ret.to_ne_bytes());
        bytes[offset_of!(ConnEvent, start_ns)..][..8].copy_from_slice(&900u64.to_ne_bytes());
        bytes
    }

    #[test]
    fn write_record_decodes() {
        let record = data_record(EventKind::Write, b"GET / HTTP/1.1\r\n", 16);
        let Event::Data(data) = decode(&record).unwrap() else {
            panic!("not a data event");
        };
        assert_eq!(data.flow, Flow::Egress);
        assert_eq!(data.header.ts_ns, 1_000);
        assert_eq!(data.header.cgroup_id, 77);
        assert_eq!(data.header.tgid, 10);
        assert_eq!(data.header.tid, 11);
        assert_eq!(data.header.fd, 5);
        assert_eq!(data.byte_count, 16);
        assert_eq!(data.source, Source::Syscall);
        assert_eq!(data.payload, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn truncated_read_keeps_byte_count() {
        let record = data_record(EventKind::Read, b"abc", 100_000);
        let Event::Data(data) = decode(&record).unwrap() else {
            panic!("not a data event");
        };
        assert_eq!(data.flow, Flow::Ingress);
        assert_eq!(data.byte_count, 100_000);
        assert_eq!(data.payload.len(), 3);
    }

    #[test]
    fn captured_length_beyond_record_is_rejected() {
        let mut record = data_record(EventKind::Read, b"abcd", 4);
        record.truncate(record.len() - 2);
        assert_eq!(
            decode(&record),
            Err(DecodeError::PayloadLength {
                captured_len: 4,
                available: 2
            })
        );
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(matches!(
            decode(&[0u8; 8]),
            Err(DecodeError::TooShort { len: 8, .. })
        ));
        let mut record = header_bytes(EventKind::Connect, 3);
        record.push(0);
        assert!(matches!(
            decode(&record),
            Err(DecodeError::TooShort {
                what: "connection event",
                ..
            })
        ));
    }

    #[test]
    fn wake_marker_has_no_content() {
        let record = header_bytes(EventKind::Wake, 3);
        assert_eq!(decode(&record), Ok(Event::Wake));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut record = header_bytes(EventKind::Close, 3);
        record[offset_of!(EventHeader, kind)] = 200;
        assert_eq!(decode(&record), Err(DecodeError::UnknownKind(200)));
    }

    #[test]
    fn connect_ipv4_peer() {
        let record = conn_record(EventKind::Connect, AF_INET, &[127, 0, 0, 1], 8080, -115);
        let Event::Connect(conn) = decode(&record).unwrap() else {
            panic!("not a connect event");
        };
        assert_eq!(conn.peer, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(conn.ret, -115);
        assert_eq!(conn.start_ns, 900);
    }

    #[test]
    fn accept_ipv6_peer() {
        let ip: Ipv6Addr = "::1".parse().unwrap();
        let record = conn_record(EventKind::Accept, AF_INET6, &ip.octets(), 443, 9);
        let Event::Accept(conn) = decode(&record).unwrap() else {
            panic!("not an accept event");
        };
        assert_eq!(conn.peer, Some("[::1]:443".parse().unwrap()));
        assert_eq!(conn.ret, 9);
    }

    #[test]
    fn unknown_family_has_no_peer() {
        let record = conn_record(EventKind::Accept, 1, &[], 0, 4);
        let Event::Accept(conn) = decode(&record).unwrap() else {
            panic!("not an accept event");
        };
        assert_eq!(conn.peer, None);
    }

    #[test]
    fn arrival_decodes_flow() {
        let mut record = header_bytes(EventKind::Arrival, -1);
        record.resize(size_of::<ArrivalEvent>(), 0);
        let flow = offset_of!(ArrivalEvent, flow);
        record[flow + offset_of!(FlowKey, family)..][..2].copy_from_slice(&AF_INET.to_ne_bytes());
        record[flow + offset_of!(FlowKey, local_port)..][..2]
            .copy_from_slice(&40000u16.to_ne_bytes());
        record[flow + offset_of!(FlowKey, remote_port)..][..2]
            .copy_from_slice(&443u16.to_ne_bytes());
        record[flow + offset_of!(FlowKey, remote_addr)..][..4].copy_from_slice(&[10, 0, 0, 1]);
        record[offset_of!(ArrivalEvent, data_len)..][..4].copy_from_slice(&1448u32.to_ne_bytes());
        record[offset_of!(ArrivalEvent, seq)..][..4].copy_from_slice(&7u32.to_ne_bytes());

        let decode_arrival = |record: &[u8]| {
            let Event::Arrival {
                ts_ns,
                flow,
                data_len,
                seq,
                missed_packets,
                own_data_unacked,
                srtt_us,
            } = decode(record).unwrap()
            else {
                panic!("not an arrival event");
            };
            (
                ts_ns,
                flow,
                data_len,
                seq,
                (missed_packets, own_data_unacked, srtt_us),
            )
        };
        let (ts_ns, flow, data_len, seq, loss) = decode_arrival(&record);
        assert_eq!(loss, (0, false, 0));
        assert_eq!(ts_ns, 1_000);
        assert_eq!(flow.local_port, 40000);
        assert_eq!(flow.remote_port, 443);
        assert_eq!(flow.remote_addr[..4], [10, 0, 0, 1]);
        assert_eq!(data_len, 1448);
        // Without `seq_known` the sequence number is not trusted.
        assert_eq!(seq, None);
        record[offset_of!(ArrivalEvent, seq_known)] = 1;
        assert_eq!(decode_arrival(&record).3, Some(7));
        record[offset_of!(ArrivalEvent, missed_packets)..][..2]
            .copy_from_slice(&3u16.to_ne_bytes());
        record[offset_of!(ArrivalEvent, own_data_unacked)] = 1;
        record[offset_of!(ArrivalEvent, srtt_us)..][..4].copy_from_slice(&250u32.to_ne_bytes());
        assert_eq!(decode_arrival(&record).4, (3, true, 250));
    }

    fn flow_bytes(record: &mut [u8], at: usize) {
        record[at + offset_of!(FlowKey, family)..][..2].copy_from_slice(&AF_INET.to_ne_bytes());
        record[at + offset_of!(FlowKey, remote_port)..][..2]
            .copy_from_slice(&8443u16.to_ne_bytes());
        record[at + offset_of!(FlowKey, remote_addr)..][..4].copy_from_slice(&[10, 1, 2, 3]);
    }

    #[test]
    fn handshake_decodes_stage_and_peer() {
        let mut record = header_bytes(EventKind::Handshake, 6);
        record.resize(size_of::<HandshakeEvent>(), 0);
        record[offset_of!(HandshakeEvent, skaddr)..][..8]
            .copy_from_slice(&0xffff_8880_1234_5678u64.to_ne_bytes());
        record[offset_of!(HandshakeEvent, start_ns)..][..8].copy_from_slice(&400u64.to_ne_bytes());
        flow_bytes(&mut record, offset_of!(HandshakeEvent, flow));
        record[offset_of!(HandshakeEvent, stage)] = HandshakeStage::Failed as u8;
        record[offset_of!(HandshakeEvent, error)..][..4].copy_from_slice(&113i32.to_ne_bytes());

        let Event::Handshake(handshake) = decode(&record).unwrap() else {
            panic!("not a handshake event");
        };
        assert_eq!(handshake.header.fd, 6);
        assert_eq!(handshake.skaddr, 0xffff_8880_1234_5678);
        assert_eq!(handshake.start_ns, 400);
        assert_eq!(handshake.remote, Some("10.1.2.3:8443".parse().unwrap()));
        assert_eq!(handshake.stage, HandshakeStage::Failed);
        assert_eq!(handshake.error, 113);

        record[offset_of!(HandshakeEvent, stage)] = 9;
        assert_eq!(decode(&record), Err(DecodeError::UnknownStage(9)));
    }

    #[test]
    fn run_queue_wait_and_socket_error_decode() {
        let mut wait = header_bytes(EventKind::RunQueueWait, -1);
        wait.resize(size_of::<RunQueueWaitEvent>(), 0);
        wait[offset_of!(RunQueueWaitEvent, wait_ns)..][..8]
            .copy_from_slice(&2_500_000u64.to_ne_bytes());
        assert_eq!(
            decode(&wait).unwrap(),
            Event::RunQueueWait {
                pid: 10,
                tid: 11,
                end_ns: 1_000,
                wait_ns: 2_500_000
            }
        );

        let mut error = header_bytes(EventKind::SocketError, -1);
        error.resize(size_of::<SocketErrorEvent>(), 0);
        error[offset_of!(SocketErrorEvent, skaddr)..][..8].copy_from_slice(&77u64.to_ne_bytes());
        error[offset_of!(SocketErrorEvent, error)..][..4].copy_from_slice(&111i32.to_ne_bytes());
        assert_eq!(
            decode(&error).unwrap(),
            Event::SocketError {
                skaddr: 77,
                errno: 111
            }
        );
        error.truncate(error.len() - 1);
        assert!(matches!(
            decode(&error),
            Err(DecodeError::TooShort {
                what: "socket error event",
                ..
            })
        ));
    }

    #[test]
    fn retransmit_decodes_peer() {
        let mut record = header_bytes(EventKind::Retransmit, -1);
        record.resize(size_of::<RetransmitEvent>(), 0);
        flow_bytes(&mut record, offset_of!(RetransmitEvent, flow));
        let Event::Retransmit(retransmit) = decode(&record).unwrap() else {
            panic!("not a retransmit event");
        };
        assert_eq!(retransmit.remote, Some("10.1.2.3:8443".parse().unwrap()));
        assert_eq!(retransmit.flow.remote_port, 8443);
    }

    #[test]
    fn tls_plaintext_keeps_its_session() {
        let mut record = data_record(EventKind::Read, b"HTTP/1.1 200 OK\r\n", 17);
        record[offset_of!(EventHeader, fd)..][..4].copy_from_slice(&(-1i32).to_ne_bytes());
        record[offset_of!(DataEvent, source)] = DataSource::OpenSsl as u8;
        record[offset_of!(DataEvent, tls_session)..][..8]
            .copy_from_slice(&0x7f00_1234u64.to_ne_bytes());
        let Event::Data(data) = decode(&record).unwrap() else {
            panic!("not a data event");
        };
        assert_eq!(data.source, Source::OpenSsl);
        assert_eq!(data.tls_session, 0x7f00_1234);
        assert_eq!(data.header.fd, -1);
        assert_eq!(data.payload, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn unknown_source_is_rejected() {
        let mut record = data_record(EventKind::Write, b"x", 1);
        record[offset_of!(DataEvent, source)] = 9;
        assert_eq!(decode(&record), Err(DecodeError::UnknownSource(9)));
    }

    #[test]
    fn exec_decodes() {
        let record = conn_record(EventKind::Exec, 0, &[], 0, 0);
        let Event::Exec(header) = decode(&record).unwrap() else {
            panic!("not an exec event");
        };
        assert_eq!(header.tgid, 10);
    }

    #[test]
    fn exit_carries_comm() {
        let mut record = header_bytes(EventKind::Exit, -1);
        record.resize(size_of::<ExitEvent>(), 0);
        record[offset_of!(ExitEvent, comm)..][..4].copy_from_slice(b"curl");
        let Event::Exit { header, comm } = decode(&record).unwrap() else {
            panic!("not an exit event");
        };
        assert_eq!(header.tgid, 10);
        assert_eq!(comm.as_deref(), Some("curl"));

        record[offset_of!(ExitEvent, comm)..].fill(0);
        assert!(matches!(
            decode(&record).unwrap(),
            Event::Exit { comm: None, .. }
        ));
        assert!(matches!(
            decode(&record[..size_of::<ExitEvent>() - 1]),
            Err(DecodeError::TooShort { .. })
        ));
    }

    #[test]
    fn fork_carries_child_pid() {
        let record = conn_record(EventKind::Fork, 0, &[], 0, 4242);
        assert!(matches!(
            decode(&record).unwrap(),
            Event::Fork {
                child_pid: 4242,
                ..
            }
        ));
    }
}
