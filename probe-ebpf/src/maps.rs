//! Maps shared by all programs, and the helpers that fill the ring buffer.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use llmslo_probe_common::{
    ConnEvent, DROP_REASONS, DataEvent, DropReason, EventHeader, EventKind, SocketKey,
};

/// Events for user space. User space resizes it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-CPU drop counters indexed by [`DropReason`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

/// Sockets of target processes. Only reads and writes on these fds are
/// reported; user space seeds it with the sockets that existed before the
/// probe started.
#[map]
pub static SOCKETS: HashMap<SocketKey, u8> = HashMap::with_max_entries(65_536, 0);

/// Scratch space for one [`DataEvent`] per CPU; too large for the 512-byte
/// eBPF stack.
#[map]
pub static DATA_SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

pub fn count_drop(reason: DropReason, amount: u64) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: the pointer comes from a per-CPU array slot that only this
        // CPU writes, and programs do not nest on one CPU for these hooks.
        unsafe { *counter += amount };
    }
}

/// Returns `(tgid, tid)` of the current task.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

#[inline(always)]
pub fn header(kind: EventKind, fd: i32, ts_ns: u64) -> EventHeader {
    let (tgid, tid) = current_ids();
    EventHeader {
        ts_ns,
        // SAFETY: the helper has no preconditions in tracing programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid,
        tid,
        kind: kind as u8,
        _pad: [0; 3],
        fd,
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

pub fn emit_conn(event: &ConnEvent) {
    if EVENTS.output(event, 0).is_err() {
        count_drop(DropReason::RingBufferFull, 1);
    }
}

pub fn is_socket(tgid: u32, fd: i32) -> bool {
    // SAFETY: the value is copied out before the entry could be deleted.
    unsafe { SOCKETS.get(&SocketKey { tgid, fd }) }.is_some()
}

pub fn track_socket(tgid: u32, fd: i32) {
    if SOCKETS.insert(&SocketKey { tgid, fd }, &1, 0).is_err() {
        count_drop(DropReason::MapFull, 1);
    }
}

/// Stops tracking a socket; returns whether it was tracked.
pub fn untrack_socket(tgid: u32, fd: i32) -> bool {
    SOCKETS.remove(&SocketKey { tgid, fd }).is_ok()
}
