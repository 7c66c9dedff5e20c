//! What the probe saw of the node: processes, connections, scheduling, TLS
//! libraries and kernel features.

use serde::{Deserialize, Serialize};

use crate::TargetFilter;

/// A process the probe treated as a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetProcess {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_pid: Option<u32>,
    /// Command name (`/proc/PID/comm`).
    pub comm: String,
    /// cgroup v2 id of the process when it was first seen.
    pub cgroup_id: u64,
    /// Container id (64 hex digits) parsed from the cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Pod UID parsed from the cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// True for processes that started during the window.
    #[serde(default)]
    pub started_in_window: bool,
    /// True for processes that exited during the window.
    #[serde(default)]
    pub exited_in_window: bool,
}

/// One TCP connection attempt by a target process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAttempt {
    pub pid: u32,
    pub tid: u32,
    /// `ip:port` that was connected to.
    pub peer: String,
    /// `CLOCK_MONOTONIC` when `connect()` was called.
    pub start_ns: u64,
    /// Time until the handshake completed or failed; absent when neither
    /// happened inside the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// `errno` name when the attempt failed (`ECONNREFUSED`, `ETIMEDOUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// TCP retransmissions towards one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetransmitCount {
    pub pid: u32,
    pub peer: String,
    pub segments: u64,
    /// `CLOCK_MONOTONIC` of each retransmission of data, for overlap with
    /// exchanges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_ns: Vec<u64>,
    /// `CLOCK_MONOTONIC` of each retransmitted SYN, for overlap with
    /// connection attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syn_at_ns: Vec<u64>,
}

/// Time one target connection spent on TCP loss recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossRecovery {
    pub pid: u32,
    /// `ip:port` of the target's end.
    pub local: String,
    /// `ip:port` of the other end.
    pub peer: String,
    pub kind: LossRecoveryKind,
    /// `CLOCK_MONOTONIC` of the first sign of the loss: the arrival past
    /// the gap for `refilled`, the retransmission itself for `resent`, the
    /// arrival before the missing packets for `missed`.
    pub from_ns: u64,
    /// `CLOCK_MONOTONIC` when the lost data went out again or arrived.
    pub to_ns: u64,
}

/// The side that lost data, and how the probe saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossRecoveryKind {
    /// The target sent data again: a retransmission timer or duplicate
    /// acknowledgements showed it that the data was lost (or only its
    /// acknowledgement). `from_ns` and `to_ns` are both the
    /// retransmission; when the data was first sent is the consumer's
    /// estimate (for a request, its start).
    #[default]
    Resent,
    /// Data from the peer arrived with a gap before it, and the missing
    /// bytes came later: the peer's retransmission, or a late original
    /// when the path reordered segments. `from_ns` is the arrival of the
    /// first segment past the gap, `to_ns` the arrival that closed it (or
    /// that closed part of it): a lower bound, since the lost segment left
    /// the peer before `from_ns`.
    Refilled,
    /// Packets of the peer never arrived, and none arrived past them. The
    /// next packet that did carried an IPv4 ID beyond theirs (Linux
    /// numbers the packets of each connection), and its bytes were the
    /// next in sequence, so it was most likely the peer's retransmission.
    /// `from_ns` is the arrival of the connection's previous data (or its
    /// start), `to_ns` this arrival. That is an upper bound, since the
    /// lost packet left the peer somewhere in between. Not reported while
    /// this end's data was unacknowledged, when the missing packet may
    /// have been an acknowledgement. The wait starts no earlier than the
    /// peer's likely retransmission timeouts allow.
    Missed,
    /// A kind this reader does not know, from a newer probe.
    #[serde(other)]
    Unknown,
}

/// Run-queue waits of target threads: the time between becoming runnable
/// and getting a CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduling {
    /// Waits counted in the kernel.
    pub waits: u64,
    /// Sum of all waits.
    pub total_wait_us: u64,
    /// Log2 histogram: bucket `i` counts waits in `[2^i, 2^(i+1))` µs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wait_histogram_log2_us: Vec<u64>,
    /// Individual waits longer than the probe's reporting threshold, so
    /// that they can be placed inside exchanges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub long_waits: Vec<RunQueueWait>,
    /// The reporting threshold of `long_waits` (`--long-wait-threshold`);
    /// 0 in results of probes that did not state it.
    #[serde(default)]
    pub long_wait_threshold_us: u64,
    /// On-CPU time and waits per target process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessScheduling>,
}

/// CPU time and run-queue waits of one target process's threads during the
/// window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessScheduling {
    pub pid: u32,
    /// Sum of the intervals its threads ran on a CPU.
    pub on_cpu_us: u64,
    pub waits: u64,
    pub total_wait_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQueueWait {
    pub pid: u32,
    pub tid: u32,
    /// `CLOCK_MONOTONIC` when the thread got the CPU.
    pub end_ns: u64,
    pub wait_us: u64,
}

/// Samples of a cgroup's `cpu.stat` over the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupCpu {
    /// Path below the cgroup mount.
    pub cgroup_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<CpuStatSample>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStatSample {
    pub at_ns: u64,
    pub usage_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

/// A TLS library found in a target process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsVisibility {
    pub pid: u32,
    /// `openssl`, `boringssl`, `go_crypto_tls`, `rustls`, `java`, ...
    pub library: String,
    /// Path of the library or executable inside the process's mount
    /// namespace.
    pub path: String,
    /// True when the probe attached to it and reads its plaintext.
    pub visible: bool,
    /// Why the plaintext is not visible, and what would make it visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Kernel capabilities the probe detected, and what it did with them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelReport {
    #[serde(default)]
    pub features: Vec<Feature>,
    /// SLIs or components that cannot be measured on this node, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableSignal>,
    /// The node's cgroup hierarchies and driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupLayout>,
    /// Effective capabilities of the probe that matter to it, such as
    /// `CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Kernel lockdown mode (`none`, `integrity`, `confidentiality`) when
    /// the node has the lockdown LSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockdown: Option<String>,
    /// `kernel.unprivileged_bpf_disabled`: 0 lets unprivileged users load
    /// some programs, 1 and 2 do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unprivileged_bpf_disabled: Option<i64>,
    /// Features turned off with the `LLMSLO_DISABLE_FEATURES` test switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_features: Vec<String>,
}

/// The cgroup hierarchies of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLayout {
    /// `v2` (unified only), `v1`, `hybrid` (both) or `none`.
    pub mode: String,
    /// `systemd` or `cgroupfs`, from how the kubelet named the pod
    /// cgroups; absent where no `kubepods` cgroup exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Mount point of cgroup v2, when it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2_mount: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v1_mounts: Vec<String>,
}

/// A target container and how the kernel-side filter recognises its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerTarget {
    /// Container id (64 hex digits) parsed from its cgroup, or the id
    /// given on the command line.
    pub container_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// cgroup path of the container below its hierarchy's mount.
    pub cgroup_path: String,
    /// `v2` or `v1`: the hierarchy where the container's processes were
    /// found.
    pub hierarchy: String,
    pub filter: TargetFilter,
    /// Inode of the PID namespace, for [`TargetFilter::PidNamespace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace_inode: Option<u64>,
    /// Reason a fallback filter was used instead of the cgroup v2 id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// Stable name: `tracepoints`, `uprobes`, `ring_buffer`, `btf`, ...
    pub name: String,
    pub available: bool,
    /// Detail such as the tracefs path or the error that disabled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableSignal {
    /// Signal or SLI name: `tls_plaintext`, `run_queue_latency`, ...
    pub signal: String,
    pub reason: String,
    /// What to change on the node to get it.
    pub remedy: String,
}
