//! Maps shared by all programs, and the helpers that fill the ring buffer.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_probe_read_user,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use llmslo_probe_common::{
    ConnEvent, DATA_EVENT_HEADER_LEN, DROP_REASONS, DataEvent, DropReason, EventHeader, EventKind,
    MAX_PAYLOAD, SOCKET_TRACKED, SocketKey,
};

/// Events for user space. User space resizes it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Unread bytes in [`EVENTS`] whose crossing wakes user space; below it,
/// user space reads on its own timer. User space sets it before load; zero
/// leaves batched events to the timer.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

// Flags of bpf_ringbuf_output and bpf_ringbuf_query (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// When an event wakes user space.
#[derive(Clone, Copy)]
pub enum Wakeup {
    /// Payloads, arrivals, handshakes, retransmissions, socket errors and
    /// scheduler events, the bulk of the stream: user space reads them on
    /// its timer, so that the client's syscalls do not pay for a wake-up
    /// each. The event that fills the ring buffer past [`WAKEUP_BYTES`]
    /// wakes it; the ones after it do not, while user space catches up.
    Batched,
    /// Events that user space acts on at once: new connections, forks,
    /// exits, and the wake marker after the first call on a socket found
    /// open. The wake-up is forced, because the kernel's default wakes user
    /// space only when nothing unread comes before the event, which is
    /// rarely true while batched events wait.
    Prompt,
}

impl Wakeup {
    /// Output flags for an event of `size` bytes.
    #[inline(always)]
    pub fn flags(self, size: usize) -> u64 {
        match self {
            Wakeup::Prompt => BPF_RB_FORCE_WAKEUP,
            Wakeup::Batched => {
                // SAFETY: a plain read of a global that user space sets at
                // load; the volatile read keeps the default from being folded in.
                let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
                let unread = EVENTS.query(BPF_RB_AVAIL_DATA);
                if unread < threshold && unread + size as u64 >= threshold {
                    BPF_RB_FORCE_WAKEUP
                } else {
                    BPF_RB_NO_WAKEUP
                }
            }
        }
    }
}

/// Sends a fixed-size event, counting it as lost when the ring buffer is
/// full.
#[inline(always)]
pub fn emit<T>(event: &T, wakeup: Wakeup) {
    if EVENTS
        .output(event, wakeup.flags(core::mem::size_of::<T>()))
        .is_err()
    {
        count_drop(DropReason::RingBufferFull, 1);
    }
}

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

/// Reads a `T` from the target's memory; `None` when the address faults.
#[inline(always)]
pub fn read_user<T: Copy>(address: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user tolerates any address and reports faults.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(address as *const T) }.ok()
}

/// Copies up to [`MAX_PAYLOAD`] bytes of the user buffer at `buffer` into
/// `event`, whose other fields are set, and sends the event with only the
/// bytes captured. Bytes beyond the limit and failed reads are counted.
#[inline(always)]
pub fn send_data(event: &mut DataEvent, buffer: u64, byte_count: u64) {
    // The verifier needs a provable bound on the copy length: a full copy
    // uses the constant, a partial one a mask that cannot exceed it.
    let captured = if byte_count >= MAX_PAYLOAD as u64 {
        MAX_PAYLOAD as u32
    } else {
        (byte_count as u32) & (MAX_PAYLOAD as u32 - 1)
    };
    if byte_count > MAX_PAYLOAD as u64 {
        count_drop(
            DropReason::PayloadTruncatedBytes,
            byte_count - MAX_PAYLOAD as u64,
        );
    }
    let mut captured_len = 0;
    if captured > 0 {
        // SAFETY: `captured` is at most MAX_PAYLOAD, the payload's size.
        let status = unsafe {
            bpf_probe_read_user(
                event.payload.as_mut_ptr().cast(),
                captured,
                buffer as *const core::ffi::c_void,
            )
        };
        if status == 0 {
            captured_len = captured;
        } else {
            count_drop(DropReason::PayloadReadFailed, 1);
        }
    }
    event.captured_len = captured_len;

    let length = DATA_EVENT_HEADER_LEN + (captured_len as usize & (MAX_PAYLOAD * 2 - 1));
    if length > core::mem::size_of_val(event) {
        return;
    }
    // SAFETY: `length` is at most the size of the event, checked above.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const DataEvent).cast::<u8>(), length) };
    if EVENTS.output(bytes, Wakeup::Batched.flags(length)).is_err() {
        count_drop(DropReason::RingBufferFull, 1);
    }
}

pub fn emit_conn(event: &ConnEvent) {
    emit(event, Wakeup::Prompt);
}

pub fn is_socket(tgid: u32, fd: i32) -> bool {
    socket_mark(tgid, fd).is_some()
}

/// Returns the value of a target socket in [`SOCKETS`] (`SOCKET_TRACKED`
/// or `SOCKET_SEEDED`), `None` for other fds.
pub fn socket_mark(tgid: u32, fd: i32) -> Option<u8> {
    // SAFETY: the value is copied out before the entry could be deleted.
    unsafe { SOCKETS.get(&SocketKey { tgid, fd }) }.copied()
}

pub fn track_socket(tgid: u32, fd: i32) {
    if SOCKETS
        .insert(&SocketKey { tgid, fd }, &SOCKET_TRACKED, 0)
        .is_err()
    {
        count_drop(DropReason::MapFull, 1);
    }
}

/// Stops tracking a socket; returns whether it was tracked.
pub fn untrack_socket(tgid: u32, fd: i32) -> bool {
    SOCKETS.remove(&SocketKey { tgid, fd }).is_ok()
}
