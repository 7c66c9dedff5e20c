//! States in the result's kernel report which component signals were
//! collected, and why the others were not.

use llmslo_schema::{Feature, KernelReport, UnavailableSignal};

use super::programs::Availability;

/// Adds one feature per signal and an `unavailable` entry for each signal
/// that was not collected. `cgroup_cpu` is why no cgroup was sampled, if
/// none was.
pub fn apply(kernel: &mut KernelReport, signals: &Availability, cgroup_cpu: &Result<(), String>) {
    let cgroup_detail = format!(
        "cpu.stat of the target cgroups, sampled every {} ms",
        super::cgroup_cpu::SAMPLE_INTERVAL.as_millis()
    );
    let entries: [(&str, &Result<(), String>, &str, &str); 5] = [
        (
            "run_queue_latency",
            &signals.run_queue,
            "sched:sched_wakeup, sched_wakeup_new and sched_switch time run-queue waits and \
             on-CPU time of target threads",
            "a kernel whose tracefs has sched:sched_switch, sched:sched_wakeup, \
             sched:sched_wakeup_new and task:task_newtask",
        ),
        (
            "connect_latency",
            &signals.handshakes,
            "sock:inet_sock_set_state times TCP handshakes of blocking and non-blocking \
             connects",
            "a kernel with the sock:inet_sock_set_state tracepoint (Linux 4.16 or later); \
             until then blocking connects are timed by their syscall and non-blocking ones \
             have no latency",
        ),
        (
            "connect_errors",
            &signals.error_reports,
            "sock:inet_sk_error_report names the errno of failed non-blocking connects",
            "a kernel with the sock:inet_sk_error_report tracepoint; until then a failed \
             non-blocking connect reports error `unknown` unless the process closed it",
        ),
        (
            "retransmits",
            &signals.retransmits,
            "tcp:tcp_retransmit_skb counts retransmitted segments of target connections",
            "a kernel with the tcp:tcp_retransmit_skb tracepoint",
        ),
        (
            "cgroup_cpu",
            cgroup_cpu,
            &cgroup_detail,
            "mount the host's cgroup file system (/sys/fs/cgroup) into the probe",
        ),
    ];

    for (signal, availability, detail, remedy) in entries {
        kernel.features.push(Feature {
            name: signal.into(),
            available: availability.is_ok(),
            detail: Some(detail.into()),
        });
        if let Err(reason) = availability {
            kernel.unavailable.push(UnavailableSignal {
                signal: signal.into(),
                reason: reason.clone(),
                remedy: remedy.into(),
            });
        }
    }
}
