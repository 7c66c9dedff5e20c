//! Process lifecycle: child processes of targets become targets; exits are
//! reported.

use aya_ebpf::{helpers::bpf_get_current_comm, macros::tracepoint, programs::TracePointContext};
use llmslo_probe_common::{ConnEvent, DropReason, EventKind, ExitEvent, FILTER_BY_TGID, SockAddr};

use crate::{
    filter::{TARGET_TGIDS, filter_flags, is_target},
    maps::{Wakeup, count_drop, current_ids, emit, emit_conn, header, now_ns},
};

/// Offsets in `task:task_newtask`, whose format has been the same since
/// Linux 3.x (unlike `sched:sched_process_fork`, whose `child_pid` moved
/// when its comm fields became dynamic arrays).
pub(crate) const NEWTASK_PID: usize = 8;
pub(crate) const NEWTASK_CLONE_FLAGS: usize = 32;

pub(crate) const CLONE_THREAD: u64 = 0x0001_0000;

/// `task:task_newtask` runs in the parent while the child is created, before
/// the child can run, so the child cannot make a syscall before it is a
/// target. New threads are skipped: they share their process's tgid.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    // SAFETY: the offsets come from the tracepoint's stable format.
    let (Ok(child_pid), Ok(clone_flags)) = (unsafe {
        (
            ctx.read_at::<i32>(NEWTASK_PID),
            ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS),
        )
    }) else {
        return 0;
    };
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    if filter_flags() & FILTER_BY_TGID != 0
        && TARGET_TGIDS.insert(&(child_pid as u32), &1, 0).is_err()
    {
        count_drop(DropReason::MapFull, 1);
    }
    emit_conn(&ConnEvent {
        header: header(EventKind::Fork, -1, now_ns()),
        peer: SockAddr::default(),
        ret: i64::from(child_pid),
        start_ns: 0,
    });
    0
}

/// `sched:sched_process_exit` fires per thread, and only the thread group
/// leader's exit is reported. It removes the process from the targets, so
/// that a later process with the same pid is not traced.
///
/// NOTE: a leader that exits before its other threads (`pthread_exit` in
/// `main`) is reported as exited while those threads still run.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if tgid != tid || !is_target(tgid) {
        return 0;
    }
    let event = ExitEvent {
        header: header(EventKind::Exit, -1, now_ns()),
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    emit(&event, Wakeup::Prompt);
    let _ = TARGET_TGIDS.remove(&tgid);
    0
}
