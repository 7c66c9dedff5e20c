//! The versioned result that an llmslo probe prints and the CLI reads.
//!
//! This crate is the single definition of the probe's output. It depends on
//! nothing Linux-specific so that the CLI builds on every platform krew ships.
//!
//! # Units and clocks
//!
//! Field names carry their unit: `_ns`, `_us`, `_ms`, `_secs`, `_bytes`.
//! Timestamps named `*_ns` without another qualifier are `CLOCK_MONOTONIC`
//! nanoseconds on the probe's node, the clock that `bpf_ktime_get_ns()` reads.
//! [`Window::unix_offset_ns`] converts them to wall-clock time.
//!
//! # Compatibility
//!
//! [`SCHEMA_VERSION`] changes whenever a field is removed or changes meaning.
//! Adding an optional field does not change it, so readers ignore unknown
//! fields. Nor does a new kind of loss recovery, which readers take as
//! `unknown`.

pub mod envelope;
mod exchange;
mod host;

pub use exchange::*;
pub use host::*;

use serde::{Deserialize, Serialize};

/// Version of the result format defined in this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything one probe observed on one node during one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Always [`SCHEMA_VERSION`] for results written by this crate.
    pub schema_version: u32,
    pub probe: ProbeInfo,
    pub window: Window,
    /// How the probe told target traffic apart from the rest of the node.
    pub filter: TargetFilter,
    /// Target containers and the identity that filtered each one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerTarget>,
    /// Every target process seen during the window, including ones that
    /// started or exited inside it.
    #[serde(default)]
    pub processes: Vec<TargetProcess>,
    /// Request/response exchanges reconstructed from the target's sockets.
    #[serde(default)]
    pub exchanges: Vec<Exchange>,
    /// TCP connection attempts made by target processes.
    #[serde(default)]
    pub connects: Vec<ConnectAttempt>,
    /// TCP retransmissions on target connections, per peer.
    #[serde(default)]
    pub retransmits: Vec<RetransmitCount>,
    /// Waits of target connections on TCP loss recovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_recoveries: Vec<LossRecovery>,
    /// Scheduling: run-queue waits of target threads.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// CPU controller statistics of the target cgroups.
    #[serde(default)]
    pub cgroup_cpu: Vec<CgroupCpu>,
    /// Which TLS libraries the probe found in target processes and whether it
    /// can see their plaintext.
    #[serde(default)]
    pub tls: Vec<TlsVisibility>,
    /// What was lost between the kernel and the parsers, and why.
    #[serde(default)]
    pub drops: Drops,
    /// CPU and memory that the probe itself used.
    #[serde(default)]
    pub probe_usage: ResourceUsage,
    /// Kernel features the probe detected and the strategy it chose.
    #[serde(default)]
    pub kernel: KernelReport,
    /// Warnings and errors met during the window, in the order they happened.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    pub outcome: Outcome,
}

impl ProbeResult {
    /// Creates an empty result of the current schema version.
    pub fn new(probe: ProbeInfo) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            probe,
            ..Self::default()
        }
    }
}

/// The probe binary that produced a result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// Version of the `llmslo-probe` binary (Cargo package version).
    pub version: String,
    /// Kubernetes node name when run as a probe Job, otherwise the host name.
    pub node: String,
    /// `uname -r` of the node.
    pub kernel_release: String,
}

/// The collection window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Length the window was asked to have.
    pub requested_ms: u64,
    /// `CLOCK_MONOTONIC` when the probes were attached.
    pub start_ns: u64,
    /// `CLOCK_MONOTONIC` when collection stopped.
    pub end_ns: u64,
    /// Add to a monotonic timestamp to get nanoseconds since the Unix epoch.
    pub unix_offset_ns: i128,
}

/// How the kernel-side filter selects target events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TargetFilter {
    /// Thread group ids given on the command line, plus their descendants.
    #[default]
    Pids,
    /// cgroup v2 ids of the target containers' leaf cgroups.
    CgroupV2,
    /// PID namespace inodes, used where cgroup ids do not identify a
    /// container (cgroup v1 and hybrid nodes).
    PidNamespace,
}

impl TargetFilter {
    /// Orders filters from the most to the least precise, for a result
    /// whose containers were filtered in different ways.
    pub fn precision_rank(&self) -> u8 {
        match self {
            Self::CgroupV2 => 0,
            Self::PidNamespace => 1,
            Self::Pids => 2,
        }
    }
}

/// Why the window ended and whether the result is complete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The window ran for its full length.
    #[default]
    Completed,
    /// SIGINT or SIGTERM ended the window early; what was seen is kept.
    Interrupted,
    /// Every target process exited before the window ended.
    TargetsExited,
    /// Collection failed part-way; what was seen before is kept.
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: OutcomeStatus,
    /// A sentence for people when the status is not `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A warning or error with a stable code that scripts can match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable identifier such as `tls_library_unsupported` or `target_exited`.
    pub code: String,
    /// What happened, on which value, and what to do about it.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Events and bytes that did not reach the parsers, by reason. Each counter
/// says what it costs in accuracy in `docs/collected-data.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Events lost because the ring buffer was full.
    pub ring_buffer_full: u64,
    /// Bytes beyond the per-event capture limit, which the parsers never saw.
    pub payload_truncated_bytes: u64,
    /// Events whose user-space buffer could not be read by the kernel probe.
    pub payload_read_failed: u64,
    /// Connections the kernel probe could not track because a map was full.
    pub map_full: u64,
    /// Bytes a parser skipped because it lost its place in a stream.
    pub unparsed_bytes: u64,
    /// Exchanges still open when the window ended.
    pub open_at_window_end: u64,
}

impl Drops {
    /// Returns true when no event or byte was lost.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Resources used by the probe process during the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    pub max_rss_kib: u64,
    /// Events read from the ring buffer.
    pub events: u64,
    /// Payload bytes copied out of the kernel.
    pub payload_bytes: u64,
}
