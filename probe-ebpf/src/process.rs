//! Process lifecycle: children of targets become targets; exits are reported.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use llmslo_probe_common::{ConnEvent, EventKind, SockAddr};

use crate::{
    filter::{FILTER_TGID, TARGET_TGIDS, filter_mode, is_target},
    maps::{current_ids, emit_conn, header, now_ns},
};

/// Offset of `child_pid` in `sched:sched_process_fork`.
const FORK_CHILD_PID: usize = 20;

/// `sched:sched_process_fork` runs in the parent. It fires for new threads
/// too; their ids never match another process's tgid, so adding them to the
/// filter is harmless, and user space ignores them.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    // SAFETY: the offset comes from the tracepoint's stable format.
    let Ok(child_pid) = (unsafe { ctx.read_at::<i32>(FORK_CHILD_PID) }) else {
        return 0;
    };
    if filter_mode() == FILTER_TGID {
        let _ = TARGET_TGIDS.insert(&(child_pid as u32), &1, 0);
    }
    emit_conn(&ConnEvent {
        header: header(EventKind::Fork, -1, now_ns()),
        peer: SockAddr::default(),
        ret: i64::from(child_pid),
        start_ns: 0,
    });
    0
}

/// `sched:sched_process_exit` fires per thread; only the thread group
/// leader's exit is reported.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if tgid != tid || !is_target(tgid) {
        return 0;
    }
    emit_conn(&ConnEvent {
        header: header(EventKind::Exit, -1, now_ns()),
        peer: SockAddr::default(),
        ret: 0,
        start_ns: 0,
    });
    0
}
