//! Run-queue waits and on-CPU time of target threads, from
//! `sched:sched_wakeup`, `sched:sched_wakeup_new` and `sched:sched_switch`.
//!
//! A wait starts when a thread becomes runnable (woken, created, or
//! preempted while runnable) and ends when `sched_switch` gives it a CPU.
//! Waits are summed into a per-CPU log2 histogram; waits of at least
//! `LONG_WAIT_THRESHOLD_NS` are also sent as events, so that user space can
//! place them inside requests.
//!
//! These tracepoints fire for every task on the node, so each program
//! returns after one map lookup per thread id unless that thread belongs to a
//! target. The thread map is kept by the programs below (new threads, exits)
//! and seeded by user space from `/proc/PID/task` for threads that existed
//! before the probe.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use llmslo_probe_common::{
    DropReason, EventHeader, EventKind, RunQueueWaitEvent,
    sched::{OnCpu, ProcessCpu, RUN_QUEUE_BUCKETS, RunQueueStats, SchedLayout},
};

use crate::{
    filter::is_target,
    maps::{Wakeup, count_drop, current_ids, emit, now_ns},
    process::{CLONE_THREAD, NEWTASK_CLONE_FLAGS, NEWTASK_PID},
};

/// Offsets of the sched tracepoint fields; user space reads them from the
/// format files and sets them before load.
#[unsafe(no_mangle)]
static SCHED_LAYOUT: SchedLayout = SchedLayout {
    wakeup_pid: 0,
    wakeup_new_pid: 0,
    switch_prev_state: 0,
    switch_prev_state_size: 0,
    switch_next_pid: 0,
    _pad: 0,
};

/// Waits at least this long are sent as [`RunQueueWaitEvent`]s; user space
/// sets it before load.
#[unsafe(no_mangle)]
static LONG_WAIT_THRESHOLD_NS: u64 = 1_000_000;

/// Threads of targets: thread id -> thread group id.
#[map]
pub static TARGET_THREADS: HashMap<u32, u32> = HashMap::with_max_entries(65_536, 0);

/// When each runnable target thread started waiting, by thread id.
#[map]
static RUNNABLE_SINCE: HashMap<u32, u64> = HashMap::with_max_entries(65_536, 0);

/// Run-queue waits of all target threads, per CPU.
#[map]
static RUN_QUEUE_STATS: PerCpuArray<RunQueueStats> = PerCpuArray::with_max_entries(1, 0);

/// On-CPU time and waits per target process, per CPU.
#[map]
static PROCESS_CPU: PerCpuHashMap<u32, ProcessCpu> = PerCpuHashMap::with_max_entries(16_384, 0);

/// The target thread running on each CPU and since when. User space adds
/// the open slices to the totals it reads: a thread that runs until it
/// exits switches out only after its exit event, which may be after the
/// read.
#[map]
static ON_CPU: PerCpuArray<OnCpu> = PerCpuArray::with_max_entries(1, 0);

/// `TASK_REPORT_MAX - 1` on Linux 4.14 and later: the state bits that
/// `sched_switch` reports for a thread that left the CPU to sleep, stop or
/// exit. With none of them set the thread was preempted and stays runnable.
const SLEEP_STATE_MASK: u64 = 0xff;

fn layout() -> SchedLayout {
    // SAFETY: a plain read of a global; the volatile read keeps the compiler
    // from folding in the zero default, because user space rewrites it.
    unsafe { core::ptr::read_volatile(&SCHED_LAYOUT) }
}

fn long_wait_threshold_ns() -> u64 {
    // SAFETY: as in `layout`.
    unsafe { core::ptr::read_volatile(&LONG_WAIT_THRESHOLD_NS) }
}

/// Returns the thread group id of a target thread.
#[inline(always)]
fn target_tgid(tid: u32) -> Option<u32> {
    if tid == 0 {
        // Every CPU's idle task has thread id 0.
        return None;
    }
    // SAFETY: the value is copied out at once.
    unsafe { TARGET_THREADS.get(&tid) }.copied()
}

fn mark_runnable(tid: u32, now: u64) {
    if RUNNABLE_SINCE.insert(&tid, &now, 0).is_err() {
        count_drop(DropReason::MapFull, 1);
    }
}

fn wakeup(ctx: &TracePointContext, pid_offset: u32) -> u32 {
    if pid_offset == 0 {
        return 0;
    }
    // SAFETY: the offset comes from the tracepoint's format file.
    let Ok(tid) = (unsafe { ctx.read_at::<i32>(pid_offset as usize) }) else {
        return 0;
    };
    if target_tgid(tid as u32).is_none() {
        return 0;
    }
    mark_runnable(tid as u32, now_ns());
    0
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    wakeup(&ctx, layout().wakeup_pid)
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    wakeup(&ctx, layout().wakeup_new_pid)
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let layout = layout();
    if layout.switch_next_pid == 0 {
        return 0;
    }
    // The tracepoint runs before the switch, so the current task is `prev`.
    let prev_tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the offset comes from the tracepoint's format file.
    let Ok(next_tid) = (unsafe { ctx.read_at::<i32>(layout.switch_next_pid as usize) }) else {
        return 0;
    };
    let next_tid = next_tid as u32;
    let prev_tgid = target_tgid(prev_tid);
    let next_tgid = target_tgid(next_tid);
    let Some(on_cpu) = ON_CPU.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the slot belongs to this CPU, and sched_switch does not nest.
    let on_cpu = unsafe { &mut *on_cpu };
    if prev_tgid.is_none() && next_tgid.is_none() && on_cpu.tid == 0 {
        return 0;
    }
    let now = now_ns();

    // Charge the slice to the thread group recorded when it started,
    // because an exiting thread has left the thread map before it switches
    // out for the last time, and its last slice counts too.
    if on_cpu.tid != 0 && on_cpu.tid == prev_tid {
        add_on_cpu(on_cpu.tgid, now.saturating_sub(on_cpu.since_ns));
    }
    if prev_tgid.is_some() {
        if is_still_runnable(&ctx, &layout) {
            mark_runnable(prev_tid, now);
        } else {
            // `sched_wakeup` also fires for a thread that is still on the
            // CPU (it set itself to sleep but had not switched out yet).
            // That mark must not outlive this sleep, or the next switch-in
            // would count the whole sleep as a run-queue wait.
            let _ = RUNNABLE_SINCE.remove(&prev_tid);
        }
    }

    match next_tgid {
        Some(tgid) => {
            *on_cpu = OnCpu {
                tid: next_tid,
                tgid,
                since_ns: now,
            };
            // SAFETY: the value is copied out before the entry is removed.
            if let Some(since) = unsafe { RUNNABLE_SINCE.get(&next_tid) }.copied() {
                let _ = RUNNABLE_SINCE.remove(&next_tid);
                record_wait(tgid, next_tid, now, now.saturating_sub(since));
            }
        }
        None => on_cpu.tid = 0,
    }
    0
}

/// Whether `prev` left the CPU while still runnable (preempted or yielded).
fn is_still_runnable(ctx: &TracePointContext, layout: &SchedLayout) -> bool {
    let offset = layout.switch_prev_state as usize;
    // SAFETY: the offset and size come from the tracepoint's format file.
    let state = if layout.switch_prev_state_size == 8 {
        unsafe { ctx.read_at::<u64>(offset) }
    } else {
        unsafe { ctx.read_at::<u32>(offset) }.map(u64::from)
    };
    state.is_ok_and(|state| state & SLEEP_STATE_MASK == 0)
}

fn process_cpu(tgid: u32) -> Option<*mut ProcessCpu> {
    if let Some(entry) = PROCESS_CPU.get_ptr_mut(&tgid) {
        return Some(entry);
    }
    if PROCESS_CPU
        .insert(&tgid, &ProcessCpu::default(), 0)
        .is_err()
    {
        count_drop(DropReason::MapFull, 1);
        return None;
    }
    PROCESS_CPU.get_ptr_mut(&tgid)
}

fn add_on_cpu(tgid: u32, on_cpu_ns: u64) {
    if let Some(entry) = process_cpu(tgid) {
        // SAFETY: per-CPU value of this CPU; sched_switch does not nest.
        unsafe { (*entry).on_cpu_ns += on_cpu_ns };
    }
}

fn record_wait(tgid: u32, tid: u32, now: u64, wait_ns: u64) {
    if let Some(stats) = RUN_QUEUE_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot of this CPU; sched_switch does not nest.
        let stats = unsafe { &mut *stats };
        stats.waits += 1;
        stats.total_wait_ns += wait_ns;
        let bucket = log2_bucket(wait_ns / 1_000);
        if let Some(count) = stats.histogram.get_mut(bucket) {
            *count += 1;
        }
    }
    if let Some(entry) = process_cpu(tgid) {
        // SAFETY: as above.
        unsafe {
            (*entry).waits += 1;
            (*entry).total_wait_ns += wait_ns;
        }
    }

    if wait_ns < long_wait_threshold_ns() {
        return;
    }
    let event = RunQueueWaitEvent {
        header: EventHeader {
            ts_ns: now,
            cgroup_id: 0,
            tgid,
            tid,
            kind: EventKind::RunQueueWait as u8,
            _pad: [0; 3],
            fd: -1,
        },
        wait_ns,
    };
    emit(&event, Wakeup::Batched);
}

/// Returns `floor(log2(value))`, 0 for values under 2, capped at the last
/// bucket.
fn log2_bucket(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    let bucket = bits.saturating_sub(1);
    if bucket >= RUN_QUEUE_BUCKETS {
        RUN_QUEUE_BUCKETS - 1
    } else {
        bucket
    }
}

/// Adds threads and child processes of targets to the thread map before
/// they can run. Runs next to `process::task_newtask` on the same
/// tracepoint.
#[tracepoint]
pub fn sched_newtask(ctx: TracePointContext) -> u32 {
    if layout().switch_next_pid == 0 {
        return 0;
    }
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    // SAFETY: the offsets come from the tracepoint's stable format.
    let (Ok(child), Ok(clone_flags)) = (unsafe {
        (
            ctx.read_at::<i32>(NEWTASK_PID),
            ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS),
        )
    }) else {
        return 0;
    };
    let child = child as u32;
    let child_tgid = if clone_flags & CLONE_THREAD != 0 {
        tgid
    } else {
        child
    };
    if TARGET_THREADS.insert(&child, &child_tgid, 0).is_err() {
        count_drop(DropReason::MapFull, 1);
    }
    0
}

/// Forgets an exiting thread, so that a later thread with the same id is
/// not taken for a target. Runs next to `process::sched_process_exit`.
#[tracepoint]
pub fn sched_thread_exit(_ctx: TracePointContext) -> u32 {
    let (_, tid) = current_ids();
    if target_tgid(tid).is_none() {
        return 0;
    }
    let _ = TARGET_THREADS.remove(&tid);
    let _ = RUNNABLE_SINCE.remove(&tid);
    0
}
