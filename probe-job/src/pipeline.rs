//! Routes decoded events: data to connections, connect and accept to new
//! connections, fork and exit to the process registry. Changes the kernel
//! maps need are queued as [`MapAction`]s, and processes whose TLS
//! libraries need a look as [`ProcessChange`]s, for the caller to apply.

mod tls;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use llmslo_probe_common::FlowKey;
use llmslo_schema::{
    ConnectAttempt, Diagnostic, Direction, Exchange, LossRecovery, LossRecoveryKind,
    RetransmitCount, Severity, TargetProcess,
};
use llmslo_wire::{ConnectionParser, Flow, ParserConfig, StreamEnd, Transport};

use crate::{
    decode::{self, ConnRecord, DataRecord, Event, Source},
    identity::{
        ContainerFilter, ContainerTarget,
        cgroup::{self, PathIds},
        namespace,
        processes::{ProcessRegistry, read_facts},
        sockets::{SocketInfo, SocketLookup},
    },
    reassemble::{ConnectionMeta, ConnectionTable, Segment, SocketKey, TableStats, Transfer},
    signals::{
        connects::{ConnectTracker, SocketKind},
        retransmits::{Retransmits, Socket},
        sched::LongWaits,
    },
    tls::route::TlsRouter,
};

const EINPROGRESS: i64 = 115;

/// Decode errors logged in full; later ones are only counted.
const LOGGED_DECODE_ERRORS: u64 = 5;

/// A change to the kernel's socket map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAction {
    /// Report reads and writes on this socket.
    Track(SocketKey),
    /// Stop reporting every socket of this process.
    ForgetProcess(u32),
    /// Report segment arrivals of this connection.
    AddFlow(FlowKey),
    /// Stop reporting segment arrivals of this connection.
    RemoveFlow(FlowKey),
    /// Add every thread of this process to the run-queue programs' map.
    AddThreads(u32),
    /// Make this process a target by tgid: it joined a container that is
    /// filtered by tgid.
    TrackProcess(u32),
}

/// A process event that can change which TLS libraries a target maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessChange {
    /// A process became a target during the window (fork, or it joined a
    /// target cgroup).
    Appeared(u32),
    /// A target replaced its program with `execve()`.
    Exec(u32),
    Exited(u32),
}

/// Everything the pipeline collected, for the result.
pub struct PipelineOutput {
    pub processes: Vec<TargetProcess>,
    pub exchanges: Vec<Exchange>,
    pub connects: Vec<ConnectAttempt>,
    pub retransmits: Vec<RetransmitCount>,
    /// Retransmissions that no target connection could be found for.
    pub retransmits_unattributed: u64,
    pub loss_recoveries: Vec<LossRecovery>,
    /// Loss recoveries beyond the window's limit, counted only.
    pub loss_recoveries_dropped: u64,
    pub long_waits: LongWaits,
    pub diagnostics: Vec<Diagnostic>,
    pub table: TableStats,
    pub events: u64,
    pub payload_bytes: u64,
    pub decode_errors: u64,
}

type Parsers = ConnectionTable<
    ConnectionParser,
    Box<dyn FnMut(llmslo_wire::ConnectionInfo) -> ConnectionParser>,
>;

/// Per-window state between the ring buffer and the result.
pub struct Pipeline {
    table: Parsers,
    registry: ProcessRegistry,
    /// Sockets found open before their first event, with their addresses.
    seeded: HashMap<SocketKey, ConnectionMeta>,
    /// Target containers, to name processes that join them.
    containers: Vec<ContainerTarget>,
    connects: ConnectTracker,
    retransmits: Retransmits,
    long_waits: LongWaits,
    diagnostics: Vec<Diagnostic>,
    map_actions: Vec<MapAction>,
    process_changes: Vec<ProcessChange>,
    /// Ties TLS plaintext to sockets and screens out ciphertext.
    tls: TlsRouter,
    /// Name of the OpenSSL-API library each process's plaintext events come
    /// from, when it is not `openssl`.
    openssl_api_names: HashMap<u32, &'static str>,
    /// Whether the kernel reports segment arrivals (`tcp:tcp_probe`).
    arrivals: bool,
    /// Whether those arrivals carry TCP sequence numbers.
    sequence_numbers: bool,
    /// Whether the kernel reports retransmissions of the connections in
    /// its `FLOWS` map.
    retransmit_flows: bool,
    /// Whether the kernel's thread map needs the threads of new targets.
    threads: bool,
    /// Addresses of the sockets that targets open, connect and accept.
    socket_lookup: SocketLookup,
    /// Followed TCP connections by their kernel flow, and back. Every
    /// arrival event looks its flow up here, hence foldhash (seeded per
    /// process) rather than SipHash.
    socket_of_flow: foldhash::HashMap<FlowKey, SocketKey>,
    flow_of_socket: foldhash::HashMap<SocketKey, FlowKey>,
    window_start_ns: u64,
    events: u64,
    payload_bytes: u64,
    decode_errors: u64,
}

impl Pipeline {
    pub fn new(
        config: ParserConfig,
        registry: ProcessRegistry,
        containers: &[ContainerTarget],
    ) -> Self {
        let config = Arc::new(config);
        let new_parser: Box<dyn FnMut(llmslo_wire::ConnectionInfo) -> ConnectionParser> =
            Box::new(move |info| ConnectionParser::new(info, config.clone()));
        Self {
            table: ConnectionTable::new(new_parser),
            registry,
            seeded: HashMap::new(),
            containers: containers.to_vec(),
            connects: ConnectTracker::new(false),
            retransmits: Retransmits::default(),
            long_waits: LongWaits::default(),
            diagnostics: Vec::new(),
            map_actions: Vec::new(),
            process_changes: Vec::new(),
            tls: TlsRouter::new(),
            openssl_api_names: HashMap::new(),
            arrivals: false,
            sequence_numbers: false,
            retransmit_flows: false,
            threads: false,
            socket_lookup: SocketLookup::default(),
            socket_of_flow: foldhash::HashMap::default(),
            flow_of_socket: foldhash::HashMap::default(),
            window_start_ns: 0,
            events: 0,
            payload_bytes: 0,
            decode_errors: 0,
        }
    }

    pub fn set_window_start(&mut self, start_ns: u64) {
        self.window_start_ns = start_ns;
    }

    /// Turns on arrival stamps for connections opened from now on, and
    /// records whether the arrivals carry TCP sequence numbers.
    pub fn enable_arrivals(&mut self, sequence_numbers: bool) {
        self.arrivals = true;
        self.sequence_numbers = sequence_numbers;
    }

    /// Sets which component signals the kernel reports: TCP handshakes,
    /// retransmissions, and run-queue waits (which need the threads of
    /// every target in a kernel map).
    pub fn enable_signals(&mut self, handshakes: bool, retransmits: bool, run_queue: bool) {
        self.connects = ConnectTracker::new(handshakes);
        self.retransmit_flows = retransmits;
        self.threads = run_queue;
    }

    /// Queues the threads of every live target for the kernel's thread
    /// map.
    pub fn add_target_threads(&mut self) {
        if self.threads {
            for pid in self.registry.live_pids() {
                self.map_actions.push(MapAction::AddThreads(pid));
            }
        }
    }

    pub fn registry(&self) -> &ProcessRegistry {
        &self.registry
    }

    /// Finds the connected sockets a process already has and queues them
    /// for the kernel's socket map.
    pub fn seed_sockets(&mut self, pid: u32) {
        let sockets = self.socket_lookup.connected_sockets(pid);
        tracing::debug!(pid, count = sockets.len(), "found existing sockets");
        for (fd, info) in sockets {
            let key = SocketKey { tgid: pid, fd };
            self.seeded.insert(key, meta_from_proc(&info, None));
            self.map_actions.push(MapAction::Track(key));
        }
    }

    /// Returns the kernel map changes queued since the last call.
    pub fn take_map_actions(&mut self) -> Vec<MapAction> {
        std::mem::take(&mut self.map_actions)
    }

    /// Returns the process changes seen since the last call.
    pub fn take_process_changes(&mut self) -> Vec<ProcessChange> {
        std::mem::take(&mut self.process_changes)
    }

    /// Handles one ring-buffer record; malformed records are counted and
    /// logged, never trusted.
    pub fn handle_record(&mut self, record: &[u8]) {
        self.events += 1;
        match decode::decode(record) {
            Ok(event) => self.handle_event(event),
            Err(error) => {
                self.decode_errors += 1;
                if self.decode_errors <= LOGGED_DECODE_ERRORS {
                    tracing::warn!(%error, "skipped a malformed ring buffer record");
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event<'_>) {
        match event {
            Event::Data(data) => self.on_data(data),
            Event::Connect(conn) => self.on_connect(conn),
            Event::Accept(conn) => self.on_accept(conn),
            Event::Wake => {}
            Event::Close(header) => {
                let key = SocketKey {
                    tgid: header.tgid,
                    fd: header.fd,
                };
                self.connects.closed(key.tgid, key.fd);
                self.seeded.remove(&key);
                self.tls.on_close(key.tgid, key.fd);
                self.close(key, header.ts_ns);
            }
            Event::Fork { header, child_pid } => {
                self.on_fork(header.tgid, child_pid, header.cgroup_id)
            }
            Event::Exit { header, comm } => {
                if let Some(comm) = comm {
                    self.registry.set_comm(header.tgid, comm);
                }
                self.on_exit(header.tgid, header.ts_ns, "its exit event");
            }
            Event::Exec(header) => {
                tracing::debug!(pid = header.tgid, "target process ran execve()");
                self.process_changes.push(ProcessChange::Exec(header.tgid));
            }
            Event::Arrival {
                ts_ns,
                flow,
                data_len,
                seq,
                missed_packets,
                own_data_unacked,
                srtt_us,
            } => {
                let Some(&key) = self.socket_of_flow.get(&flow) else {
                    return;
                };
                let segment = Segment {
                    ts_ns,
                    seq,
                    bytes: u64::from(data_len),
                    missed_packets,
                    own_data_unacked,
                    srtt_us,
                };
                if let Some((wait, meta)) = self.table.arrival(key, &segment)
                    && let Some(socket) = loss_socket(key, meta)
                {
                    self.retransmits
                        .add_recovery(socket, wait.kind, wait.from_ns, wait.to_ns);
                }
            }
            Event::RunQueueWait {
                pid,
                tid,
                end_ns,
                wait_ns,
            } => self.long_waits.push(pid, tid, end_ns, wait_ns),
            Event::Handshake(handshake) => self.connects.handshake(&handshake),
            Event::SocketError { skaddr, errno } => self.connects.socket_error(skaddr, errno),
            Event::Retransmit(retransmit) => {
                let header = retransmit.header;
                // Connections the target opened carry their owner in the
                // header; the others are found by their addresses.
                let key = match (header.tgid, header.fd) {
                    (tgid, fd) if tgid != 0 && fd >= 0 => Some(SocketKey { tgid, fd }),
                    _ => self.socket_of_flow.get(&retransmit.flow).copied(),
                };
                let pid = match header.tgid {
                    0 => key.map(|key| key.tgid),
                    tgid => Some(tgid),
                };
                let at_ns = header.ts_ns;
                if let Some(peer) = retransmit.remote {
                    self.retransmits.add(pid, peer, at_ns, retransmit.syn);
                }
                if let Some(key) = key {
                    if retransmit.syn {
                        self.table.syn_resent(key);
                    } else if let Some(socket) =
                        self.table.meta(key).and_then(|meta| loss_socket(key, meta))
                    {
                        self.retransmits.add_recovery(
                            socket,
                            LossRecoveryKind::Resent,
                            at_ns,
                            at_ns,
                        );
                    }
                }
            }
        }
    }

    /// Starts following a connection, with arrival stamps when the kernel
    /// reports them and both addresses are known.
    fn open(&mut self, key: SocketKey, cgroup_id: u64, meta: ConnectionMeta, ts_ns: u64) {
        self.forget_flow(key);
        let flow = match (meta.transport, meta.local, meta.peer) {
            (Transport::Tcp, Some(local), Some(peer)) if self.arrivals || self.retransmit_flows => {
                flow_key(local, peer)
            }
            _ => None,
        };
        self.table.open(key, cgroup_id, meta, ts_ns);
        if let Some(flow) = flow {
            if self.arrivals {
                self.table.enable_arrivals(key);
            }
            self.socket_of_flow.insert(flow, key);
            self.flow_of_socket.insert(key, flow);
            self.map_actions.push(MapAction::AddFlow(flow));
        }
    }

    fn close(&mut self, key: SocketKey, ts_ns: u64) {
        self.forget_flow(key);
        self.table.close(key, ts_ns);
    }

    /// Called when a connection turns out to carry TLS, whose plaintext
    /// cannot be stamped with segment arrivals. The kernel keeps reporting
    /// them where they carry sequence numbers, for the gaps of loss
    /// recovery; otherwise they would cost events for nothing.
    fn stop_arrival_stamps(&mut self, key: SocketKey) {
        if !self.sequence_numbers {
            self.forget_flow(key);
        }
    }

    fn forget_flow(&mut self, key: SocketKey) {
        if let Some(flow) = self.flow_of_socket.remove(&key) {
            self.socket_of_flow.remove(&flow);
            self.map_actions.push(MapAction::RemoveFlow(flow));
        }
    }

    fn on_data(&mut self, data: DataRecord<'_>) {
        self.payload_bytes += data.payload.len() as u64;
        let header = data.header;
        self.note_process(header.tgid, header.cgroup_id);

        if data.source != Source::Syscall {
            self.on_tls_plaintext(&data);
            return;
        }
        if data.byte_count > 0 && self.screen_ciphertext(&data) {
            return;
        }

        let key = SocketKey {
            tgid: header.tgid,
            fd: header.fd,
        };
        self.open_if_new(key, header.cgroup_id, header.ts_ns);
        self.feed(
            key,
            Transfer {
                flow: data.flow,
                ts_ns: header.ts_ns,
                tid: header.tid,
                payload: data.payload,
                byte_count: data.byte_count,
                call_start_ns: data.call_start_ns,
                requested_bytes: data.requested_bytes,
            },
            data.errno,
        );
    }

    /// Starts following a socket met first through its data, with what
    /// `/proc` says about it.
    fn open_if_new(&mut self, key: SocketKey, cgroup_id: u64, ts_ns: u64) {
        if self.table.contains(key) {
            return;
        }
        let meta = self.seeded.remove(&key).unwrap_or_else(|| {
            let info = self.socket_lookup.resolve(key.tgid, key.fd);
            match info {
                Some(info) => meta_from_proc(&info, None),
                None => ConnectionMeta {
                    transport: Transport::Tcp,
                    role: None,
                    local: None,
                    peer: None,
                    tls_library: None,
                    server_name: None,
                },
            }
        });
        self.open(key, cgroup_id, meta, ts_ns);
    }

    /// Feeds the bytes of one call; a call without bytes is end of stream
    /// (a read) or a reset (`errno` set).
    fn feed(&mut self, key: SocketKey, transfer: Transfer<'_>, errno: i32) {
        if transfer.byte_count > 0 {
            self.table.data(key, transfer);
        } else if errno != 0 {
            self.table.end(key, transfer.ts_ns, StreamEnd::Reset);
        } else if transfer.flow == Flow::Ingress {
            self.table.end(key, transfer.ts_ns, StreamEnd::PeerClosed);
        }
    }

    fn on_connect(&mut self, conn: ConnRecord) {
        let header = conn.header;
        self.note_process(header.tgid, header.cgroup_id);
        let Some(peer) = conn.peer else {
            return;
        };
        let kind = self.connects.connect_returned(&conn, peer);
        let failed = conn.ret < 0 && conn.ret != -EINPROGRESS;
        if failed {
            return;
        }

        let key = SocketKey {
            tgid: header.tgid,
            fd: header.fd,
        };
        self.seeded.remove(&key);
        let info = self.socket_lookup.resolve(key.tgid, key.fd);
        // The kernel's view wins over `/proc`, which no longer lists a
        // socket that was closed before this event was read (glibc's
        // resolver closes its UDP socket right after the answers).
        let transport = match (kind, info) {
            (SocketKind::Tcp, _) => Transport::Tcp,
            (SocketKind::NotTcp, info) => info.map_or(Transport::Udp, |info| info.transport),
            (SocketKind::Unknown, info) => info.map_or(Transport::Tcp, |info| info.transport),
        };
        let meta = ConnectionMeta {
            transport,
            role: Some(Direction::Outbound),
            local: info.map(|info| info.local),
            peer: Some(peer),
            tls_library: None,
            server_name: None,
        };
        self.open(key, header.cgroup_id, meta, header.ts_ns);
    }

    fn on_accept(&mut self, conn: ConnRecord) {
        let header = conn.header;
        self.note_process(header.tgid, header.cgroup_id);
        let key = SocketKey {
            tgid: header.tgid,
            fd: header.fd,
        };
        self.seeded.remove(&key);
        let info = self.socket_lookup.resolve(key.tgid, key.fd);
        let meta = ConnectionMeta {
            transport: Transport::Tcp,
            role: Some(Direction::Inbound),
            local: info.map(|info| info.local),
            peer: conn.peer.or_else(|| info.and_then(|info| info.peer)),
            tls_library: None,
            server_name: None,
        };
        self.open(key, header.cgroup_id, meta, header.ts_ns);
    }

    fn on_fork(&mut self, parent: u32, child: u32, cgroup_id: u64) {
        tracing::debug!(parent, child, "target process created a child process");
        self.registry.add_child(parent, child, cgroup_id);
        self.process_changes.push(ProcessChange::Appeared(child));
        // The child inherits the parent's sockets under its own pid, which
        // the kernel map does not know yet.
        self.seed_sockets(child);
    }

    /// Records the exit of a target process, once, however it was noticed.
    pub fn on_exit(&mut self, pid: u32, ts_ns: u64, noticed_by: &str) {
        let child = self.registry.started_in_window(pid);
        if !self.registry.mark_exited(pid) {
            return;
        }
        let comm = self.registry.comm(pid).unwrap_or_default().to_string();
        let followed: Vec<SocketKey> = self
            .flow_of_socket
            .keys()
            .filter(|key| key.tgid == pid)
            .copied()
            .collect();
        for key in followed {
            self.forget_flow(key);
        }
        let closed = self.table.close_process(pid, ts_ns);
        self.tls.on_exit(pid);
        self.openssl_api_names.remove(&pid);
        self.map_actions.push(MapAction::ForgetProcess(pid));
        self.process_changes.push(ProcessChange::Exited(pid));
        let offset_ms = ts_ns.saturating_sub(self.window_start_ns) / 1_000_000;
        tracing::debug!(pid, comm, closed, noticed_by, "target process exited");
        // Children that come and go (subprocesses) are normal; a target that
        // was running when the window started deserves a warning.
        self.diagnostics.push(Diagnostic {
            severity: if child {
                Severity::Info
            } else {
                Severity::Warning
            },
            code: "target_exited".into(),
            message: format!(
                "target process {pid} ({comm}) exited {offset_ms} ms into the window (noticed by \
                 {noticed_by}); what it did before is in the result"
            ),
            pid: Some(pid),
        });
    }

    /// Checks `/proc` and the target cgroups for processes that exited or
    /// joined without an event; returns true when no target process is left.
    pub fn check_targets(&mut self, now_ns: u64) -> bool {
        for pid in self.registry.find_exited() {
            self.on_exit(pid, now_ns, "/proc");
        }

        let mut cgroups_empty = true;
        let containers = self.containers.clone();
        for container in &containers {
            let pids = cgroup::cgroup_pids(&container.cgroup.path).unwrap_or_default();
            for pid in &pids {
                if self.registry.contains(*pid) {
                    continue;
                }
                if container.filter == ContainerFilter::Tgids {
                    self.map_actions.push(MapAction::TrackProcess(*pid));
                }
                self.add_joined(*pid, &container.cgroup.ids);
            }
            cgroups_empty &= pids.is_empty();
        }
        self.registry.live_pids().is_empty() && cgroups_empty
    }

    /// Finds the target container of a process that an event revealed: by
    /// its cgroup v2 id, its PID namespace, or its place in a v1 cgroup.
    fn container_of(&self, tgid: u32, cgroup_id: u64) -> Option<&ContainerTarget> {
        let by_cgroup = self.containers.iter().find(|container| {
            container.filter == ContainerFilter::CgroupV2 && container.cgroup.cgroup_id == cgroup_id
        });
        if by_cgroup.is_some() {
            return by_cgroup;
        }
        let process_namespace = namespace::pid_namespace(tgid);
        let by_namespace = self.containers.iter().find(|container| {
            matches!(container.filter, ContainerFilter::PidNamespace(target) if Some(target) == process_namespace)
        });
        if by_namespace.is_some() {
            return by_namespace;
        }
        self.containers.iter().find(|container| {
            container.cgroup.v1
                && cgroup::cgroup_pids(&container.cgroup.path)
                    .is_some_and(|pids| pids.contains(&tgid))
        })
    }

    /// Adds a process that an event or a cgroup scan revealed, such as one
    /// started in a target container by `exec`.
    fn note_process(&mut self, tgid: u32, cgroup_id: u64) {
        if self.registry.contains(tgid) {
            return;
        }
        let ids = self
            .container_of(tgid, cgroup_id)
            .map(|container| container.cgroup.ids.clone());
        self.add_joined(tgid, &ids.unwrap_or_default());
    }

    fn add_joined(&mut self, pid: u32, ids: &PathIds) {
        tracing::debug!(pid, "a process joined the targets");
        let ids = (ids != &PathIds::default()).then_some(ids);
        self.registry.add(pid, read_facts(pid), ids, true);
        self.process_changes.push(ProcessChange::Appeared(pid));
        self.seed_sockets(pid);
        if self.threads {
            self.map_actions.push(MapAction::AddThreads(pid));
        }
    }

    /// Ends the window and hands over everything for the result.
    pub fn finish(mut self, end_ns: u64) -> PipelineOutput {
        let (exchanges, table) = self.table.finish(end_ns);
        let unresolved = self.tls.finish();
        if unresolved.unresolved_events > 0 {
            self.diagnostics
                .push(tls::unresolved_diagnostic(unresolved));
        }
        let loss_recoveries_dropped = self.retransmits.recoveries_dropped;
        let retransmits_unattributed = self.retransmits.unattributed;
        let (retransmits, loss_recoveries) = self.retransmits.finish();
        PipelineOutput {
            processes: self.registry.into_processes(),
            exchanges,
            connects: self.connects.finish(),
            retransmits_unattributed,
            loss_recoveries_dropped,
            retransmits,
            loss_recoveries,
            long_waits: self.long_waits,
            diagnostics: self.diagnostics,
            table,
            events: self.events,
            payload_bytes: self.payload_bytes,
            decode_errors: self.decode_errors,
        }
    }
}

/// Returns the connection of a loss recovery, when both its addresses
/// are known.
fn loss_socket(key: SocketKey, meta: &ConnectionMeta) -> Option<Socket> {
    Some(Socket {
        pid: key.tgid,
        local: meta.local?,
        peer: meta.peer?,
    })
}

/// Builds the kernel's key of a TCP connection, as `tcp:tcp_probe` reports
/// it.
fn flow_key(local: SocketAddr, peer: SocketAddr) -> Option<FlowKey> {
    let mut flow = FlowKey {
        local_port: local.port(),
        remote_port: peer.port(),
        ..FlowKey::default()
    };
    match (local, peer) {
        (SocketAddr::V4(local), SocketAddr::V4(peer)) => {
            flow.family = 2;
            flow.local_addr[..4].copy_from_slice(&local.ip().octets());
            flow.remote_addr[..4].copy_from_slice(&peer.ip().octets());
        }
        (SocketAddr::V6(local), SocketAddr::V6(peer)) => {
            flow.family = 10;
            flow.local_addr = local.ip().octets();
            flow.remote_addr = peer.ip().octets();
        }
        _ => return None,
    }
    Some(flow)
}

fn meta_from_proc(info: &SocketInfo, role: Option<Direction>) -> ConnectionMeta {
    ConnectionMeta {
        transport: info.transport,
        role,
        local: Some(info.local),
        peer: info.peer,
        tls_library: None,
        server_name: None,
    }
}
