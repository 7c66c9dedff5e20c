//! Loads and attaches the eBPF programs of the component signals. Each
//! group of programs is optional: a group that this kernel cannot run is
//! reported as unavailable and the probe carries on without it.

use aya::{
    Ebpf,
    programs::{ProgramError, TracePoint},
};

use super::SignalSetup;

/// A program and the tracepoint (category, name) it attaches to.
type Attachment = (&'static str, &'static str, &'static str);

/// Run-queue waits and on-CPU time. `sched_newtask` and
/// `sched_thread_exit` share their tracepoints with the process programs.
const RUN_QUEUE: &[Attachment] = &[
    ("sched_newtask", "task", "task_newtask"),
    ("sched_thread_exit", "sched", "sched_process_exit"),
    ("sched_wakeup", "sched", "sched_wakeup"),
    ("sched_wakeup_new", "sched", "sched_wakeup_new"),
    ("sched_switch", "sched", "sched_switch"),
];

const HANDSHAKES: &[Attachment] = &[("inet_sock_set_state", "sock", "inet_sock_set_state")];

const ERROR_REPORTS: &[Attachment] = &[("inet_sk_error_report", "sock", "inet_sk_error_report")];

const RETRANSMITS: &[Attachment] = &[("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb")];

/// Whether each signal is collected, or why not.
#[derive(Debug, Clone)]
pub struct Availability {
    pub run_queue: Result<(), String>,
    pub handshakes: Result<(), String>,
    pub error_reports: Result<(), String>,
    pub retransmits: Result<(), String>,
}

/// Loads and attaches every group whose tracepoints this kernel has.
/// Failures disable their group, are logged, and end up in the result's
/// `kernel.unavailable`; with `keep_verifier_log` a verifier rejection also
/// logs the verifier's output.
pub fn attach(ebpf: &mut Ebpf, setup: &SignalSetup, keep_verifier_log: bool) -> Availability {
    let mut group =
        |name: &'static str, layout: &Result<(), String>, programs: &[Attachment]| match layout {
            Ok(()) => attach_group(ebpf, programs, keep_verifier_log).inspect_err(|reason| {
                tracing::warn!(signal = name, %reason, "signal unavailable");
            }),
            Err(reason) => Err(reason.clone()),
        };
    let run_queue = group(
        "run_queue_latency",
        &setup.sched.as_ref().map(|_| ()).map_err(Clone::clone),
        RUN_QUEUE,
    );
    let handshakes = group("connect_latency", &setup.tcp.handshakes, HANDSHAKES);
    // Error reports only complete the failures that the handshake program
    // reports.
    let error_reports = match &handshakes {
        Ok(()) => group("connect_errors", &setup.tcp.error_reports, ERROR_REPORTS),
        Err(reason) => Err(format!("connection attempts are not followed: {reason}")),
    };
    let retransmits = group("retransmits", &setup.tcp.retransmits, RETRANSMITS);
    Availability {
        run_queue,
        handshakes,
        error_reports,
        retransmits,
    }
}

/// Loads and attaches a group; on any failure unloads the programs of the
/// group that did attach, so that none runs with its partners missing.
fn attach_group(
    ebpf: &mut Ebpf,
    programs: &[Attachment],
    keep_verifier_log: bool,
) -> Result<(), String> {
    let mut attached: Vec<&'static str> = Vec::new();
    let result = programs.iter().try_for_each(|&(program, category, name)| {
        let tracepoint = tracepoint_mut(ebpf, program)?;
        tracepoint
            .load()
            .map_err(|error| load_failure(program, error, keep_verifier_log))?;
        tracepoint.attach(category, name).map_err(|error| {
            format!(
                "attaching eBPF program {program} to tracepoint {category}:{name} failed: {error}"
            )
        })?;
        attached.push(program);
        Ok(())
    });
    if result.is_err() {
        for program in attached {
            if let Ok(tracepoint) = tracepoint_mut(ebpf, program) {
                let _ = tracepoint.unload();
            }
        }
    }
    result
}

fn tracepoint_mut<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut TracePoint, String> {
    ebpf.program_mut(program)
        .ok_or_else(|| format!("eBPF program {program} is missing from the embedded object"))?
        .try_into()
        .map_err(|error: ProgramError| {
            format!("eBPF program {program} is not a tracepoint: {error}")
        })
}

fn load_failure(program: &'static str, error: ProgramError, keep_verifier_log: bool) -> String {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if keep_verifier_log {
                tracing::warn!(program, log = %verifier_log, "verifier log");
            }
            format!(
                "the kernel verifier rejected eBPF program {program} ({io_error}); run with -v \
                 to log the verifier's output"
            )
        }
        other => format!("loading eBPF program {program} failed: {other}"),
    }
}
