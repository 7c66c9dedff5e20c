//! TCP connection attempts and retransmissions of target connections, from
//! `sock:inet_sock_set_state`, `sock:inet_sk_error_report` and
//! `tcp:tcp_retransmit_skb`.
//!
//! `TCP_CLOSE -> TCP_SYN_SENT` runs inside `connect()` in the connecting
//! thread, which is where the target filter applies; the socket's kernel
//! address then stands for the target in the later stages, which run in
//! softirq or timer context. Retransmissions also match connections in the
//! `FLOWS` map by their addresses, which covers accepted connections and
//! ones that predate the probe.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use llmslo_probe_common::{
    DropReason, EventHeader, EventKind, FlowKey, FlowState, HandshakeEvent, HandshakeStage,
    RetransmitEvent, SockTupleLayout, SocketErrorEvent, TcpLayout, TcpOwner,
};

use crate::{
    arrivals::FLOWS,
    filter::is_target,
    maps::{EVENTS, Wakeup, count_drop, current_ids, emit, now_ns},
    sockets::ACTIVE_CONN,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const EEXIST: i32 = 17;

/// Offsets of the tracepoint fields; user space reads them from the format
/// files and sets them before load.
#[unsafe(no_mangle)]
static TCP_LAYOUT: TcpLayout = TcpLayout {
    set_state_skaddr: 0,
    set_state_oldstate: 0,
    set_state_newstate: 0,
    set_state_protocol: 0,
    set_state_tuple: EMPTY_TUPLE,
    retransmit_skaddr: 0,
    retransmit_state: 0,
    retransmit_tuple: EMPTY_TUPLE,
    error_report_error: 0,
    error_report_protocol: 0,
    error_report_tuple: EMPTY_TUPLE,
};

const EMPTY_TUPLE: SockTupleLayout = SockTupleLayout {
    family: 0,
    sport: 0,
    dport: 0,
    saddr: 0,
    daddr: 0,
    saddr_v6: 0,
    daddr_v6: 0,
};

/// TCP sockets that targets started connecting during the window, by
/// kernel address, until they reach `TCP_CLOSE`.
#[map]
static TCP_OWNERS: HashMap<u64, TcpOwner> = HashMap::with_max_entries(65_536, 0);

/// Failed attempts whose error report has not been seen yet: flow ->
/// socket address. The report follows the failure at once, so a small LRU
/// map is enough; attempts that the process closed itself get no report.
#[map]
static FAILED_ATTEMPTS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(1_024, 0);

/// An error report that came before its socket's `TCP_CLOSE`.
#[derive(Clone, Copy)]
#[repr(C)]
struct EarlyError {
    error: i32,
    _pad: u32,
    ts_ns: u64,
}

/// TCP error reports by flow, for kernels that report an error before the
/// state change (`tcp_reset` and `tcp_v4_err` did so before they moved to
/// `tcp_done_with_error`). Every TCP error report on the node lands here,
/// since the target is not known yet, so the LRU map keeps the latest.
#[map]
static EARLY_ERRORS: LruHashMap<FlowKey, EarlyError> = LruHashMap::with_max_entries(1_024, 0);

/// An early error report belongs to a failure that follows within this
/// time; the two happen in one kernel call.
const EARLY_ERROR_MAX_AGE_NS: u64 = 10_000_000;

/// Reads one field of `TCP_LAYOUT`. Each field is read on its own, because
/// a copy of the whole layout would not fit on the 512-byte eBPF stack next
/// to an event.
macro_rules! layout {
    ($field:ident) => {
        // SAFETY: a plain read of a global; the volatile read keeps the
        // compiler from folding in the zero default, because user space
        // rewrites it before load.
        unsafe { core::ptr::read_volatile(&TCP_LAYOUT.$field) }
    };
}

/// Reads the family, ports and addresses of a record into `flow`; false for
/// families other than IPv4 and IPv6, or a failed read.
fn read_flow(ctx: &TracePointContext, tuple: &SockTupleLayout, flow: &mut FlowKey) -> bool {
    // SAFETY: offsets come from the tracepoint's format file.
    let (Ok(family), Ok(local_port), Ok(remote_port)) = (unsafe {
        (
            ctx.read_at::<u16>(tuple.family as usize),
            ctx.read_at::<u16>(tuple.sport as usize),
            ctx.read_at::<u16>(tuple.dport as usize),
        )
    }) else {
        return false;
    };
    flow.family = family;
    flow.local_port = local_port;
    flow.remote_port = remote_port;
    flow._pad = 0;
    match family {
        AF_INET => {
            // SAFETY: as above.
            let (Ok(local), Ok(remote)) = (unsafe {
                (
                    ctx.read_at::<[u8; 4]>(tuple.saddr as usize),
                    ctx.read_at::<[u8; 4]>(tuple.daddr as usize),
                )
            }) else {
                return false;
            };
            flow.local_addr = [0; 16];
            flow.remote_addr = [0; 16];
            flow.local_addr[..4].copy_from_slice(&local);
            flow.remote_addr[..4].copy_from_slice(&remote);
            true
        }
        AF_INET6 => {
            // SAFETY: as above.
            let (Ok(local), Ok(remote)) = (unsafe {
                (
                    ctx.read_at::<[u8; 16]>(tuple.saddr_v6 as usize),
                    ctx.read_at::<[u8; 16]>(tuple.daddr_v6 as usize),
                )
            }) else {
                return false;
            };
            flow.local_addr = local;
            flow.remote_addr = remote;
            true
        }
        _ => false,
    }
}

fn owner_header(owner: &TcpOwner, kind: EventKind, ts_ns: u64) -> EventHeader {
    EventHeader {
        ts_ns,
        cgroup_id: owner.cgroup_id,
        tgid: owner.tgid,
        tid: owner.tid,
        kind: kind as u8,
        _pad: [0; 3],
        fd: owner.fd,
    }
}

/// A stage of an attempt and, for failures, the errno if already known.
struct Stage {
    stage: HandshakeStage,
    error: i32,
}

fn emit_handshake(owner: &TcpOwner, skaddr: u64, flow: &FlowKey, stage: Stage, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<HandshakeEvent>(0) else {
        count_drop(DropReason::RingBufferFull, 1);
        return;
    };
    entry.write(HandshakeEvent {
        header: owner_header(owner, EventKind::Handshake, now),
        skaddr,
        start_ns: owner.start_ns,
        flow: *flow,
        stage: stage.stage as u8,
        _pad: [0; 3],
        error: stage.error,
    });
    entry.submit(Wakeup::Batched.flags(core::mem::size_of::<HandshakeEvent>()));
}

/// Returns the errno of an error report that came before this failure, or
/// remembers the failure for a report that comes after it.
fn failure_error(flow: &FlowKey, skaddr: u64, now: u64) -> i32 {
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(early) = unsafe { EARLY_ERRORS.get(flow) }.copied() {
        let _ = EARLY_ERRORS.remove(flow);
        if now.saturating_sub(early.ts_ns) <= EARLY_ERROR_MAX_AGE_NS {
            return early.error;
        }
    }
    if FAILED_ATTEMPTS.insert(flow, &skaddr, 0).is_err() {
        count_drop(DropReason::MapFull, 1);
    }
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let new_state_offset = layout!(set_state_newstate) as usize;
    if new_state_offset == 0 {
        return 0;
    }
    let protocol_offset = layout!(set_state_protocol) as usize;
    let old_state_offset = layout!(set_state_oldstate) as usize;
    let skaddr_offset = layout!(set_state_skaddr) as usize;
    // SAFETY: offsets come from the tracepoint's format file.
    let (Ok(protocol), Ok(old_state), Ok(new_state), Ok(skaddr)) = (unsafe {
        (
            ctx.read_at::<u16>(protocol_offset),
            ctx.read_at::<i32>(old_state_offset),
            ctx.read_at::<i32>(new_state_offset),
            ctx.read_at::<u64>(skaddr_offset),
        )
    }) else {
        return 0;
    };
    if protocol != IPPROTO_TCP {
        return 0;
    }

    if old_state == TCP_CLOSE && new_state == TCP_SYN_SENT {
        return start_attempt(&ctx, skaddr);
    }

    // SAFETY: the value is copied out before the entry is removed.
    let Some(owner) = (unsafe { TCP_OWNERS.get(&skaddr) }).copied() else {
        return 0;
    };
    let handshake_ended =
        old_state == TCP_SYN_SENT && (new_state == TCP_ESTABLISHED || new_state == TCP_CLOSE);
    if !handshake_ended && new_state != TCP_CLOSE {
        return 0;
    }
    let mut flow = FlowKey::default();
    let flow_known = read_flow(&ctx, &layout!(set_state_tuple), &mut flow);
    if handshake_ended && flow_known {
        let now = now_ns();
        let stage = if new_state == TCP_ESTABLISHED {
            follow_arrivals(&flow);
            Stage {
                stage: HandshakeStage::Established,
                error: 0,
            }
        } else {
            Stage {
                stage: HandshakeStage::Failed,
                error: failure_error(&flow, skaddr, now),
            }
        };
        emit_handshake(&owner, skaddr, &flow, stage, now);
    }
    if new_state == TCP_CLOSE {
        let _ = TCP_OWNERS.remove(&skaddr);
        if flow_known {
            let _ = FLOWS.remove(&flow);
        }
    }
    0
}

/// Starts reporting arrivals on a connection that a target opened, as soon
/// as it is established. User space adds it too, but only once it has read
/// the connect, and by then the peer's first packets may have come: the
/// acknowledgement of a request, whose IPv4 ID shows whether the response
/// that follows lost packets.
fn follow_arrivals(flow: &FlowKey) {
    // An entry that user space added first keeps its state.
    if let Err(error) = FLOWS.insert(flow, &FlowState::default(), u64::from(BPF_NOEXIST)) {
        if error != -EEXIST {
            count_drop(DropReason::MapFull, 1);
        }
    }
}

/// Records a target's socket entering `TCP_SYN_SENT`, which happens inside
/// its `connect()` call (or an `io_uring` connect, which has no syscall).
fn start_attempt(ctx: &TracePointContext, skaddr: u64) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    let now = now_ns();
    // SAFETY: the value is copied out at once.
    let call = unsafe { ACTIVE_CONN.get(&bpf_get_current_pid_tgid()) }.copied();
    let owner = TcpOwner {
        tgid,
        tid,
        fd: call.map_or(-1, |call| call.fd),
        _pad: 0,
        start_ns: call.map_or(now, |call| call.start_ns),
        // SAFETY: the helper has no preconditions in tracing programs.
        cgroup_id: unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() },
    };
    if TCP_OWNERS.insert(&skaddr, &owner, 0).is_err() {
        count_drop(DropReason::MapFull, 1);
        return 0;
    }
    let mut flow = FlowKey::default();
    if !read_flow(ctx, &layout!(set_state_tuple), &mut flow) {
        flow = FlowKey::default();
    }
    let started = Stage {
        stage: HandshakeStage::Started,
        error: 0,
    };
    emit_handshake(&owner, skaddr, &flow, started, now);
    0
}

#[tracepoint]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    let error_offset = layout!(error_report_error) as usize;
    if error_offset == 0 {
        return 0;
    }
    let protocol_offset = layout!(error_report_protocol) as usize;
    // SAFETY: offsets come from the tracepoint's format file.
    let (Ok(protocol), Ok(error)) = (unsafe {
        (
            ctx.read_at::<u16>(protocol_offset),
            ctx.read_at::<i32>(error_offset),
        )
    }) else {
        return 0;
    };
    // Soft errors (an ICMP error while the socket is locked) wake the
    // socket up with `sk_err` still 0; they carry no errno.
    if protocol != IPPROTO_TCP || error == 0 {
        return 0;
    }
    let mut flow = FlowKey::default();
    if !read_flow(&ctx, &layout!(error_report_tuple), &mut flow) {
        return 0;
    }
    // SAFETY: the value is copied out before the entry is removed.
    let Some(skaddr) = (unsafe { FAILED_ATTEMPTS.get(&flow) }).copied() else {
        let early = EarlyError {
            error,
            _pad: 0,
            ts_ns: now_ns(),
        };
        let _ = EARLY_ERRORS.insert(&flow, &early, 0);
        return 0;
    };
    let _ = FAILED_ATTEMPTS.remove(&flow);
    let event = SocketErrorEvent {
        header: EventHeader {
            ts_ns: now_ns(),
            cgroup_id: 0,
            tgid: 0,
            tid: 0,
            kind: EventKind::SocketError as u8,
            _pad: [0; 3],
            fd: -1,
        },
        skaddr,
        error,
        _pad: 0,
    };
    emit(&event, Wakeup::Batched);
    0
}

/// NOTE: a connection accepted during the window is matched through
/// `FLOWS` only after user space has read its accept and added the flow,
/// so its retransmissions in the first milliseconds are missed.
#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let skaddr_offset = layout!(retransmit_skaddr);
    if skaddr_offset == 0 {
        return 0;
    }
    // SAFETY: offsets come from the tracepoint's format file.
    let Ok(skaddr) = (unsafe { ctx.read_at::<u64>(skaddr_offset as usize) }) else {
        return 0;
    };
    // SAFETY: the value is copied out at once.
    let owner = unsafe { TCP_OWNERS.get(&skaddr) }.copied();
    let mut flow = FlowKey::default();
    if !read_flow(&ctx, &layout!(retransmit_tuple), &mut flow) {
        return 0;
    }
    // SAFETY: only presence is checked; the value is not read.
    if owner.is_none() && unsafe { FLOWS.get(&flow) }.is_none() {
        return 0;
    }
    // Kernels before 5.x have no `state` field; 0 is no TCP state.
    let state = match layout!(retransmit_state) {
        0 => 0,
        // SAFETY: as above.
        offset => unsafe { ctx.read_at::<i32>(offset as usize) }.unwrap_or(0),
    };

    let now = now_ns();
    let header = match owner {
        Some(owner) => owner_header(&owner, EventKind::Retransmit, now),
        None => EventHeader {
            ts_ns: now,
            cgroup_id: 0,
            tgid: 0,
            tid: 0,
            kind: EventKind::Retransmit as u8,
            _pad: [0; 3],
            fd: -1,
        },
    };
    let event = RetransmitEvent {
        header,
        flow,
        state,
        _pad: 0,
    };
    emit(&event, Wakeup::Batched);
    0
}
