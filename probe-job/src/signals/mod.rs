//! Component signals beside the exchanges: run-queue waits and on-CPU time
//! of target threads, TCP connection attempts, TCP retransmissions, and
//! the CPU statistics of the target cgroups.
//!
//! [`layouts`] reads the tracepoint formats, [`programs`] attaches the
//! eBPF programs that exist on this kernel, and the other modules turn
//! their events, maps and `cpu.stat` files into result fields.

pub mod cgroup_cpu;
pub mod connects;
pub mod layouts;
pub mod programs;
pub mod report;
pub mod retransmits;
pub mod sched;

use std::time::Duration;

use aya::maps::MapError;
use llmslo_probe_common::{TcpLayout, sched::SchedLayout};

/// Failures while reading or writing the maps of the signal programs.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("eBPF map {map} is missing from the embedded object; rebuild llmslo-probe")]
    MissingMap { map: &'static str },
    #[error("failed to {action} in eBPF map {map}: {source}")]
    Map {
        action: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
}

/// Values written into the eBPF object's read-only globals before load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelGlobals {
    pub sched_layout: SchedLayout,
    pub tcp_layout: TcpLayout,
    pub long_wait_threshold_ns: u64,
}

/// What this kernel offers for each signal, found before load.
#[derive(Debug, Clone)]
pub struct SignalSetup {
    pub sched: Result<SchedLayout, String>,
    pub tcp: layouts::TcpLayouts,
    pub long_wait_threshold: Duration,
}

impl SignalSetup {
    /// Reads the formats of every tracepoint the signal programs use.
    pub fn detect(tracefs: &std::path::Path, long_wait_threshold: Duration) -> Self {
        let setup = Self {
            sched: layouts::sched_layout(tracefs),
            tcp: layouts::tcp_layouts(tracefs),
            long_wait_threshold,
        };
        for (signal, availability) in [
            ("run_queue_latency", setup.sched.as_ref().map(|_| ())),
            ("connect_latency", setup.tcp.handshakes.as_ref().map(|_| ())),
            (
                "connect_errors",
                setup.tcp.error_reports.as_ref().map(|_| ()),
            ),
            ("retransmits", setup.tcp.retransmits.as_ref().map(|_| ())),
        ] {
            if let Err(reason) = availability {
                tracing::warn!(signal, %reason, "signal unavailable on this kernel");
            }
        }
        setup
    }

    pub fn globals(&self) -> KernelGlobals {
        KernelGlobals {
            sched_layout: self.sched.clone().unwrap_or_default(),
            tcp_layout: self.tcp.layout,
            long_wait_threshold_ns: u64::try_from(self.long_wait_threshold.as_nanos())
                .unwrap_or(u64::MAX),
        }
    }
}
