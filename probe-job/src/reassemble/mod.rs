//! Per-connection state: turns socket events of one `(tgid, fd)` into
//! ordered byte streams for a protocol parser, and collects the exchanges it
//! returns with the connection's identity filled in.

mod arrivals;
mod gaps;
mod parser;
mod stream;

use std::net::SocketAddr;

use llmslo_schema::{Direction, Exchange, LossRecoveryKind};
use llmslo_wire::{ConnectionInfo, Flow, StreamEnd, Transport};

pub use arrivals::ArrivalQueue;
pub use parser::ExchangeParser;
pub use stream::StreamState;

/// A socket of one process: thread group id and file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketKey {
    pub tgid: u32,
    pub fd: i32,
}

/// Facts about a connection when the probe starts following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionMeta {
    pub transport: Transport,
    /// `None` for connections that existed before the probe started.
    pub role: Option<Direction>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// TLS library whose plaintext is read; `None` for socket bytes.
    pub tls_library: Option<&'static str>,
    /// TLS server name (SNI) from the ClientHello; it takes precedence
    /// over the HTTP `Host` the parser reports.
    pub server_name: Option<String>,
}

impl ConnectionMeta {
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            transport: self.transport,
            role: self.role,
            local_port: self.local.map(|address| address.port()),
            peer_port: self.peer.map(|address| address.port()),
            tls: self.tls_library.is_some(),
        }
    }
}

struct Connection<P> {
    meta: ConnectionMeta,
    /// cgroup v2 id of the owning process when the connection was opened or
    /// first seen.
    cgroup_id: u64,
    parser: P,
    egress: StreamState,
    ingress: StreamState,
    /// Segment arrivals, once the kernel reports them for this connection.
    arrivals: Option<ArrivalQueue>,
    /// Gaps in the received sequence space, kept also where TLS hides
    /// which plaintext bytes a segment carried.
    gaps: gaps::SequenceGaps,
    /// When the last segment with payload arrived, or the connection
    /// opened (or was first seen).
    last_arrival_ns: u64,
    /// Whether this end sent its SYN again: the SYN or the peer's SYN-ACK
    /// was lost.
    lost_handshake: bool,
}

impl<P> Connection<P> {
    fn stream_mut(&mut self, flow: Flow) -> &mut StreamState {
        match flow {
            Flow::Egress => &mut self.egress,
            Flow::Ingress => &mut self.ingress,
        }
    }
}

/// A TCP segment with payload that arrived on a followed connection, as
/// the kernel reported it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Segment {
    pub ts_ns: u64,
    /// Sequence number of the first payload byte, when known.
    pub seq: Option<u32>,
    pub bytes: u64,
    /// Packets of the peer that never arrived right before this one.
    pub missed_packets: u16,
    /// Whether this end's data was unacknowledged when it arrived.
    pub own_data_unacked: bool,
    /// The connection's smoothed round-trip time, when packets are missing.
    pub srtt_us: u32,
}

/// The minimum retransmission timeout of Linux (`TCP_RTO_MIN`).
const MIN_RTO_NS: u64 = 200_000_000;

/// The retransmission timeout before a round trip was measured (RFC 6298).
const INITIAL_RTO_NS: u64 = 1_000_000_000;

/// The retransmission timeout after a lost handshake packet, when the
/// handshake gave no round trip to measure (RFC 6298, section 5.7).
const FALLBACK_RTO_NS: u64 = 3_000_000_000;

/// Missing packets beyond this many do not lengthen the longest wait
/// they can explain any further.
const MAX_BACKOFFS: u16 = 6;

/// Returns how long before `segment` the loss of its missing packets can
/// have begun to delay it: the peer's retransmission timeouts, doubling
/// for each loss in a row (as if every missing packet were the same
/// segment lost again). Each is the larger of the initial timeout (the
/// fallback after `lost_handshake`) and the round-trip time plus Linux's
/// least variance term.
///
/// NOTE: an estimate. A peer on a path whose round-trip time varies by
/// more than 200 ms can wait longer, and within the bound the wait is
/// partly the peer's own, up to a second per loss (three after a lost
/// handshake packet).
fn recovery_bound_ns(segment: &Segment, lost_handshake: bool) -> u64 {
    let initial = if lost_handshake {
        FALLBACK_RTO_NS
    } else {
        INITIAL_RTO_NS
    };
    let timeout = (u64::from(segment.srtt_us) * 1_000 + MIN_RTO_NS).max(initial);
    let backoffs = segment.missed_packets.min(MAX_BACKOFFS);
    timeout * ((1u64 << backoffs) - 1)
}

/// A wait inside a connection that loss recovery explains, seen from
/// this end (see [`LossRecoveryKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossWait {
    pub kind: LossRecoveryKind,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// Bytes that one socket call transferred.
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    pub flow: Flow,
    /// When the bytes became visible to the call: syscall entry for writes,
    /// return for reads.
    pub ts_ns: u64,
    pub tid: u32,
    /// The captured prefix of the bytes.
    pub payload: &'a [u8],
    /// Bytes the call transferred; those beyond `payload` reach the parser
    /// as a gap.
    pub byte_count: u64,
    pub call_start_ns: u64,
    /// Bytes the call asked for; 0 when unknown.
    pub requested_bytes: u64,
}

/// Byte totals of every connection the table followed, open or closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub connections_opened: u64,
    /// Bytes the parsers skipped, summed over all connections.
    pub unparsed_bytes: u64,
    /// Bytes that crossed sockets but were not captured.
    pub missing_bytes: u64,
    /// Exchanges still open when the window ended.
    pub open_at_window_end: u64,
    /// Received bytes stamped with their segment's arrival rather than
    /// their read.
    pub bytes_at_arrival: u64,
    /// Arrival records dropped as retransmitted duplicates or for space.
    pub arrivals_discarded: u64,
}

/// Every connection the probe follows, keyed by `(tgid, fd)`.
pub struct ConnectionTable<P, F> {
    connections: foldhash::HashMap<SocketKey, Connection<P>>,
    new_parser: F,
    next_exchange_id: u64,
    exchanges: Vec<Exchange>,
    stats: TableStats,
    /// Runs of the read being fed, kept to reuse the allocation.
    runs: Vec<arrivals::Run>,
}

impl<P, F> ConnectionTable<P, F>
where
    P: ExchangeParser,
    F: FnMut(ConnectionInfo) -> P,
{
    /// Creates an empty table; `new_parser` builds the parser of each new
    /// connection.
    pub fn new(new_parser: F) -> Self {
        Self {
            connections: foldhash::HashMap::default(),
            new_parser,
            next_exchange_id: 1,
            exchanges: Vec::new(),
            stats: TableStats::default(),
            runs: Vec::new(),
        }
    }

    /// Starts following a connection. A connection still open on the same
    /// key is closed first: its close was not seen (for example after
    /// `dup2` over the fd).
    pub fn open(&mut self, key: SocketKey, cgroup_id: u64, meta: ConnectionMeta, ts_ns: u64) {
        if self.connections.contains_key(&key) {
            tracing::debug!(
                tgid = key.tgid,
                fd = key.fd,
                "fd reused without a close; ending the old connection"
            );
            self.close(key, ts_ns);
        }
        let parser = (self.new_parser)(meta.info());
        self.connections.insert(
            key,
            Connection {
                meta,
                cgroup_id,
                parser,
                egress: StreamState::default(),
                ingress: StreamState::default(),
                arrivals: None,
                gaps: gaps::SequenceGaps::default(),
                last_arrival_ns: ts_ns,
                lost_handshake: false,
            },
        );
        self.stats.connections_opened += 1;
    }

    /// Starts stamping received bytes of a connection with segment arrival
    /// times; the kernel reports arrivals from now on.
    pub fn enable_arrivals(&mut self, key: SocketKey) {
        if let Some(connection) = self.connections.get_mut(&key) {
            connection
                .arrivals
                .get_or_insert_with(ArrivalQueue::default);
        }
    }

    /// Records a segment that arrived on a connection. Returns the wait
    /// that loss recovery explains, seen from this end, with the
    /// connection's addresses. That is a gap in the received bytes that
    /// this segment closed, or else packets of the peer that went missing
    /// right before it. Their wait starts at the previous data, but no
    /// earlier than the peer's likely retransmission timeouts allow.
    pub fn arrival(
        &mut self,
        key: SocketKey,
        segment: &Segment,
    ) -> Option<(LossWait, &ConnectionMeta)> {
        let connection = self.connections.get_mut(&key)?;
        let previous_ns = std::mem::replace(&mut connection.last_arrival_ns, segment.ts_ns);
        let mut in_order = true;
        let mut wait = None;
        if let Some(seq) = segment.seq {
            // tcp:tcp_probe reports the payload length as 16 bits.
            let placement = connection
                .gaps
                .observe(seq, segment.bytes as u32, segment.ts_ns);
            if let Some(queue) = connection.arrivals.as_mut() {
                queue.place(segment.ts_ns, &placement);
            }
            in_order = placement.appended.is_some()
                && !placement.opened_gap
                && placement.filled.is_empty();
            wait = placement.refill.map(|refill| LossWait {
                kind: LossRecoveryKind::Refilled,
                from_ns: refill.from_ns,
                to_ns: refill.to_ns,
            });
        } else if let Some(queue) = connection.arrivals.as_mut() {
            queue.push(segment.ts_ns, segment.bytes);
        }
        // A segment past a gap leaves the wait to the one that fills it,
        // and one that repeats bytes delays nothing. While this end's data
        // was unacknowledged, a missing packet may have been the peer's
        // acknowledgement, whose loss delays nothing here either.
        if wait.is_none() && in_order && segment.missed_packets > 0 && !segment.own_data_unacked {
            let bound_ns = recovery_bound_ns(segment, connection.lost_handshake);
            let earliest_ns = segment.ts_ns.saturating_sub(bound_ns);
            wait = Some(LossWait {
                kind: LossRecoveryKind::Missed,
                from_ns: previous_ns.max(earliest_ns).min(segment.ts_ns),
                to_ns: segment.ts_ns,
            });
        }
        wait.map(|wait| (wait, &connection.meta))
    }

    /// Notes that a connection sent its SYN again. The peer then waits
    /// longer before it sends lost data again.
    pub fn syn_resent(&mut self, key: SocketKey) {
        if let Some(connection) = self.connections.get_mut(&key) {
            connection.lost_handshake = true;
        }
    }

    /// Returns what is known about a followed connection.
    pub fn meta(&self, key: SocketKey) -> Option<&ConnectionMeta> {
        self.connections
            .get(&key)
            .map(|connection| &connection.meta)
    }

    pub fn contains(&self, key: SocketKey) -> bool {
        self.connections.contains_key(&key)
    }

    /// Marks a connection as TLS: `library`, when known, is the library
    /// whose plaintext it carries, and `server_name` the SNI. Received
    /// plaintext cannot be matched against TCP segment arrivals, which count
    /// ciphertext, so arrival stamps stop; returns true when they were on.
    pub fn mark_tls(
        &mut self,
        key: SocketKey,
        library: Option<&'static str>,
        server_name: Option<&str>,
    ) -> bool {
        let Some(connection) = self.connections.get_mut(&key) else {
            return false;
        };
        if library.is_some() {
            connection.meta.tls_library = library;
        }
        if let Some(name) = server_name
            && connection.meta.server_name.as_deref() != Some(name)
        {
            connection.meta.server_name = Some(name.to_string());
        }
        match connection.arrivals.take() {
            Some(queue) => {
                self.stats.arrivals_discarded += queue.discarded;
                true
            }
            None => false,
        }
    }

    /// Feeds bytes of one socket call. Received bytes of a connection with
    /// arrivals enabled reach the parser in runs stamped with their arrival
    /// times; all other bytes carry the call's time.
    ///
    /// Returns false when the connection is not followed; the caller opens it
    /// first.
    pub fn data(&mut self, key: SocketKey, transfer: Transfer<'_>) -> bool {
        let Some(connection) = self.connections.get_mut(&key) else {
            return false;
        };
        let flow = transfer.flow;
        let captured = transfer.payload.len() as u64;
        let missing = transfer.byte_count.saturating_sub(captured);
        connection
            .stream_mut(flow)
            .record(transfer.ts_ns, captured, missing);

        let arrivals = match (&mut connection.arrivals, flow) {
            (Some(queue), Flow::Ingress) => Some(queue),
            _ => None,
        };
        match arrivals {
            Some(queue) => {
                queue.take(transfer.byte_count, transfer.ts_ns, &mut self.runs);
                let mut offset = 0usize;
                for run in &self.runs {
                    let end = (offset as u64 + run.bytes).min(captured) as usize;
                    if offset < end {
                        connection.parser.on_data(
                            flow,
                            run.arrival_ns,
                            transfer.tid,
                            &transfer.payload[offset..end],
                        );
                        if run.arrival_ns != transfer.ts_ns {
                            self.stats.bytes_at_arrival += (end - offset) as u64;
                        }
                    }
                    offset = end;
                }
                if transfer.requested_bytes > transfer.byte_count {
                    queue.drained(transfer.call_start_ns);
                }
                if let Some(read_end) = queue.read_end() {
                    connection.gaps.read_up_to(read_end);
                }
            }
            None if !transfer.payload.is_empty() => {
                connection
                    .parser
                    .on_data(flow, transfer.ts_ns, transfer.tid, transfer.payload);
            }
            None => {}
        }
        if missing > 0 {
            connection.parser.on_gap(flow, transfer.ts_ns, missing);
            self.stats.missing_bytes += missing;
        }
        self.collect(key);
        true
    }

    /// Reports end of stream (a read of 0 bytes) or a reset; the connection
    /// stays open until its close.
    pub fn end(&mut self, key: SocketKey, ts_ns: u64, end: StreamEnd) {
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        connection.ingress.ended = true;
        if end == StreamEnd::Reset {
            connection.egress.ended = true;
        }
        connection.parser.on_end(ts_ns, end);
        self.collect(key);
    }

    /// Ends a connection: the target closed the socket or exited.
    pub fn close(&mut self, key: SocketKey, ts_ns: u64) {
        let Some(mut connection) = self.connections.remove(&key) else {
            return;
        };
        connection.parser.on_end(ts_ns, StreamEnd::Closed);
        let mut exchanges = connection.parser.take_exchanges();
        exchanges.extend(connection.parser.finish(ts_ns));
        self.stats.unparsed_bytes += connection.parser.unparsed_bytes();
        self.stats.arrivals_discarded += connection.arrivals.map_or(0, |queue| queue.discarded);
        self.annotate_all(key, &connection.meta, connection.cgroup_id, exchanges);
    }

    /// Closes every connection of a process that exited.
    pub fn close_process(&mut self, tgid: u32, ts_ns: u64) -> usize {
        let keys: Vec<SocketKey> = self
            .connections
            .keys()
            .filter(|key| key.tgid == tgid)
            .copied()
            .collect();
        for key in &keys {
            self.close(*key, ts_ns);
        }
        keys.len()
    }

    /// Ends the window: every parser returns what it still holds, and
    /// exchanges without an end count as open at the window's end.
    pub fn finish(mut self, ts_ns: u64) -> (Vec<Exchange>, TableStats) {
        let mut keys: Vec<SocketKey> = self.connections.keys().copied().collect();
        keys.sort();
        for key in keys {
            let Some(mut connection) = self.connections.remove(&key) else {
                continue;
            };
            let mut exchanges = connection.parser.take_exchanges();
            let unfinished = connection.parser.finish(ts_ns);
            self.stats.open_at_window_end += unfinished
                .iter()
                .filter(|exchange| exchange.e2e_us.is_none())
                .count() as u64;
            exchanges.extend(unfinished);
            self.stats.unparsed_bytes += connection.parser.unparsed_bytes();
            self.stats.arrivals_discarded += connection.arrivals.map_or(0, |queue| queue.discarded);
            self.annotate_all(key, &connection.meta, connection.cgroup_id, exchanges);
        }
        self.exchanges
            .sort_by_key(|exchange| (exchange.t0_ns, exchange.id));
        (self.exchanges, self.stats)
    }

    fn collect(&mut self, key: SocketKey) {
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        let exchanges = connection.parser.take_exchanges();
        if exchanges.is_empty() {
            return;
        }
        let meta = connection.meta.clone();
        let cgroup_id = connection.cgroup_id;
        self.annotate_all(key, &meta, cgroup_id, exchanges);
    }

    /// Fills the fields the probe owns: id, pid, cgroup id and the
    /// connection's fd, addresses and TLS library. The parser owns the rest,
    /// including `connection.server_name`.
    fn annotate_all(
        &mut self,
        key: SocketKey,
        meta: &ConnectionMeta,
        cgroup_id: u64,
        exchanges: Vec<Exchange>,
    ) {
        for mut exchange in exchanges {
            exchange.id = self.next_exchange_id;
            self.next_exchange_id += 1;
            exchange.pid = key.tgid;
            exchange.cgroup_id = cgroup_id;
            exchange.connection.fd = key.fd;
            exchange.connection.local = meta.local.map(|address| address.to_string());
            exchange.connection.peer = meta.peer.map(|address| address.to_string());
            exchange.connection.tls_library = meta.tls_library.map(str::to_string);
            if meta.server_name.is_some() {
                exchange.connection.server_name = meta.server_name.clone();
            }
            self.exchanges.push(exchange);
        }
    }
}

#[cfg(test)]
mod tests;
