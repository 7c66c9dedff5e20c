//! Kernel feature detection: which program types, map types, helpers and
//! kernel interfaces work on this node, so that the probe picks what it
//! can use and names what it cannot.
//!
//! # Test switch
//!
//! `LLMSLO_DISABLE_FEATURES` lists features, separated by commas, that the
//! probe treats as missing even when the kernel has them, such as
//! `LLMSLO_DISABLE_FEATURES=ring_buffer,pid_namespace_filter`. Tests use it
//! to check each fallback and message on a kernel that has everything.
//! [`Feature::ALL`] lists the names.

use std::{fmt, fs, path::PathBuf};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use llmslo_schema::{Feature as FeatureReport, KernelReport, UnavailableSignal};

use super::{loader, preflight};
use crate::identity::layout::CgroupMounts;

/// Environment variable of the test switch.
pub const DISABLE_ENV: &str = "LLMSLO_DISABLE_FEATURES";

/// Path of the kernel's BTF.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// A kernel feature the probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Tracepoint programs and tracefs: every socket signal needs them.
    Tracepoints,
    RawTracepoints,
    /// fentry/fexit and `tp_btf` programs (BPF trampolines, BTF).
    Fentry,
    /// uprobes: TLS plaintext from `SSL_read`/`SSL_write`.
    Uprobes,
    /// kprobes; the probe does not use them, so this is for the record.
    Kprobes,
    /// `BPF_MAP_TYPE_RINGBUF`, which carries every event.
    RingBuffer,
    PerfBuffer,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux`.
    Btf,
    /// The `tcp:tcp_probe` tracepoint: arrival times of received segments.
    TcpProbe,
    /// `bpf_get_ns_current_pid_tgid` in tracepoint programs: the PID
    /// namespace filter of containers that cgroup v2 does not identify.
    PidNamespaceFilter,
    /// A cgroup v2 hierarchy, whose ids identify containers.
    CgroupV2,
}

impl Feature {
    pub const ALL: [Feature; 11] = [
        Feature::Tracepoints,
        Feature::RawTracepoints,
        Feature::Fentry,
        Feature::Uprobes,
        Feature::Kprobes,
        Feature::RingBuffer,
        Feature::PerfBuffer,
        Feature::Btf,
        Feature::TcpProbe,
        Feature::PidNamespaceFilter,
        Feature::CgroupV2,
    ];

    /// Stable name in results and in the test switch.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Tracepoints => "tracepoints",
            Feature::RawTracepoints => "raw_tracepoints",
            Feature::Fentry => "fentry",
            Feature::Uprobes => "uprobes",
            Feature::Kprobes => "kprobes",
            Feature::RingBuffer => "ring_buffer",
            Feature::PerfBuffer => "perf_buffer",
            Feature::Btf => "btf",
            Feature::TcpProbe => "tcp_probe",
            Feature::PidNamespaceFilter => "pid_namespace_filter",
            Feature::CgroupV2 => "cgroup_v2",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|feature| feature.name() == name)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Whether a feature works, and the detail or the reason it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub available: bool,
    pub detail: String,
}

impl Detected {
    fn yes(detail: impl Into<String>) -> Self {
        Self {
            available: true,
            detail: detail.into(),
        }
    }

    fn no(reason: impl Into<String>) -> Self {
        Self {
            available: false,
            detail: reason.into(),
        }
    }
}

/// Facts the probe detected about this kernel.
#[derive(Debug, Clone)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    pub tracefs: Option<PathBuf>,
    pub cgroups: CgroupMounts,
    detected: Vec<(Feature, Detected)>,
    /// Effective capabilities that matter to the probe.
    pub capabilities: Vec<String>,
    pub lockdown: Option<String>,
    pub unprivileged_bpf_disabled: Option<i64>,
    /// Features turned off by [`DISABLE_ENV`].
    pub disabled: Vec<Feature>,
    /// Names in [`DISABLE_ENV`] that are not features.
    pub unknown_disabled: Vec<String>,
}

/// Capabilities reported, by bit number.
const REPORTED_CAPABILITIES: &[(u32, &str)] = &[
    (21, "CAP_SYS_ADMIN"),
    (19, "CAP_SYS_PTRACE"),
    (24, "CAP_SYS_RESOURCE"),
    (38, "CAP_PERFMON"),
    (39, "CAP_BPF"),
];

impl KernelFeatures {
    /// Detects every feature. Checks that need the `bpf()` syscall report
    /// "not checked" when the probe lacks the privileges to make it.
    pub fn detect() -> Self {
        let (disabled, unknown_disabled) = parse_disabled(std::env::var(DISABLE_ENV).ok());
        let tracefs = preflight::find_tracefs().ok();
        let cgroups = CgroupMounts::read().unwrap_or_default();

        let mut detected = vec![
            (Feature::Tracepoints, detect_tracepoints(tracefs.as_ref())),
            (
                Feature::RawTracepoints,
                detect_program(ProgramType::RawTracePoint, "raw tracepoint programs"),
            ),
            (
                Feature::Fentry,
                detect_program(ProgramType::Tracing, "fentry/fexit and tp_btf programs"),
            ),
            (Feature::Uprobes, detect_perf_pmu("uprobe")),
            (Feature::Kprobes, detect_perf_pmu("kprobe")),
            (
                Feature::RingBuffer,
                detect_map(MapType::RingBuf, "ring buffer maps (Linux 5.8)"),
            ),
            (
                Feature::PerfBuffer,
                detect_map(MapType::PerfEventArray, "perf event array maps"),
            ),
            (Feature::Btf, detect_btf()),
            (Feature::TcpProbe, detect_tcp_probe(tracefs.as_ref())),
            (Feature::PidNamespaceFilter, detect_pid_namespace_helper()),
            (
                Feature::CgroupV2,
                match &cgroups.v2 {
                    Some(mount) => Detected::yes(format!("mounted at {}", mount.display())),
                    None => Detected::no("no cgroup2 file system is mounted"),
                },
            ),
        ];
        for (feature, state) in &mut detected {
            if disabled.contains(feature) && state.available {
                *state = Detected::no(format!("turned off by {DISABLE_ENV}"));
            }
        }

        Self {
            release: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            tracefs,
            cgroups,
            detected,
            capabilities: effective_capabilities(),
            lockdown: read_trimmed("/sys/kernel/security/lockdown")
                .and_then(|text| selected_lockdown(&text)),
            unprivileged_bpf_disabled: read_trimmed("/proc/sys/kernel/unprivileged_bpf_disabled")
                .and_then(|text| text.parse().ok()),
            disabled,
            unknown_disabled,
        }
    }

    pub fn get(&self, feature: Feature) -> &Detected {
        &self
            .detected
            .iter()
            .find(|(name, _)| *name == feature)
            .expect("every feature is detected")
            .1
    }

    pub fn available(&self, feature: Feature) -> bool {
        self.get(feature).available
    }

    /// `Ok` when the feature works, else why not.
    pub fn check(&self, feature: Feature) -> Result<(), String> {
        let state = self.get(feature);
        if state.available {
            Ok(())
        } else {
            Err(format!("{feature}: {}", state.detail))
        }
    }

    pub fn is_disabled(&self, feature: Feature) -> bool {
        self.disabled.contains(&feature)
    }

    /// Builds the kernel report of the result: every feature, the signals
    /// that cannot be measured here and the node facts.
    pub fn report(&self, unavailable: Vec<UnavailableSignal>) -> KernelReport {
        KernelReport {
            features: self
                .detected
                .iter()
                .map(|(feature, state)| FeatureReport {
                    name: feature.name().into(),
                    available: state.available,
                    detail: Some(state.detail.clone()),
                })
                .collect(),
            unavailable,
            cgroup: Some(self.cgroups.describe()),
            capabilities: self.capabilities.clone(),
            lockdown: self.lockdown.clone(),
            unprivileged_bpf_disabled: self.unprivileged_bpf_disabled,
            disabled_features: self
                .disabled
                .iter()
                .map(|feature| feature.name().to_string())
                .collect(),
        }
    }

    /// Signals this kernel cannot provide, with the remedy; empty when
    /// everything the probe uses is here.
    pub fn unavailable_signals(&self) -> Vec<UnavailableSignal> {
        let mut signals = Vec::new();
        let kernel = &self.release;
        if let Err(reason) = self.check(Feature::Tracepoints) {
            signals.push(UnavailableSignal {
                signal: "all".into(),
                reason: format!(
                    "{reason}; every SLI (TTFT, ITL, TPOT, E2E, tokens/s, errors, 429s) and \
                     component comes from syscall tracepoints"
                ),
                remedy: "mount tracefs (`mount -t tracefs tracefs /sys/kernel/tracing`, or the \
                         host's /sys/kernel/tracing in the probe Job) on a kernel with \
                         CONFIG_FTRACE_SYSCALLS"
                    .into(),
            });
        }
        if let Err(reason) = self.check(Feature::RingBuffer) {
            signals.push(UnavailableSignal {
                signal: "all".into(),
                reason: format!(
                    "{reason}; the probe sends every event through a ring buffer map, so no SLI \
                     can be measured on kernel {kernel}"
                ),
                remedy: "Linux 5.8 or later".into(),
            });
        }
        if let Err(reason) = self.check(Feature::TcpProbe) {
            signals.push(UnavailableSignal {
                signal: "segment_arrival_times".into(),
                reason: format!(
                    "{reason}; received bytes are stamped when the target read them, which adds \
                     the target's own read delay to TTFB, TTFT and ITL"
                ),
                remedy: "a kernel with the tcp:tcp_probe tracepoint (Linux 4.16 or later)".into(),
            });
        }
        if let Err(reason) = self.check(Feature::Uprobes) {
            signals.push(UnavailableSignal {
                signal: "tls_plaintext".into(),
                reason: format!(
                    "{reason}; calls over TLS (HTTPS to hosted providers) cannot be parsed, so \
                     their TTFT, ITL, tokens and status are missing"
                ),
                remedy: "a kernel with CONFIG_UPROBE_EVENTS".into(),
            });
        }
        signals
    }
}

/// Splits the switch's value into features and unknown names.
fn parse_disabled(value: Option<String>) -> (Vec<Feature>, Vec<String>) {
    let mut features = Vec::new();
    let mut unknown = Vec::new();
    for name in value
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        match Feature::from_name(name) {
            Some(feature) => features.push(feature),
            None => unknown.push(name.to_string()),
        }
    }
    (features, unknown)
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// Picks the bracketed mode of `/sys/kernel/security/lockdown`, such as
/// `integrity` in `none [integrity] confidentiality`.
fn selected_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

fn effective_capabilities() -> Vec<String> {
    let Ok(effective) = procfs::process::Process::myself()
        .and_then(|process| process.status())
        .map(|status| status.capeff)
    else {
        return Vec::new();
    };
    REPORTED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1u64 << bit) != 0)
        .map(|(_, name)| (*name).to_string())
        .collect()
}

/// Describes a feature probe that could not run: a seccomp filter that
/// rejects `bpf()`, or missing capabilities.
fn not_checked(error: &dyn std::error::Error) -> Detected {
    let mut error_text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        error_text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let error = error_text;
    let has_capabilities = effective_capabilities()
        .iter()
        .any(|name| name == "CAP_BPF" || name == "CAP_SYS_ADMIN");
    if has_capabilities && seccomp_filtered() {
        // The same sentence for every feature, so that messages that list
        // several features state it once.
        return Detected::no(
            "the kernel denied bpf() although the probe holds CAP_BPF, and a seccomp \
             filter is active (Seccomp: 2 in /proc/self/status). A container runtime's default \
             profile (Kubernetes RuntimeDefault, Docker's, containerd's) allows bpf() and \
             perf_event_open() only with CAP_SYS_ADMIN. Run the probe with seccompProfile \
             Unconfined (the default of kubectl llmslo), with a Localhost profile that allows \
             both calls (--seccomp-profile), or with --privileged",
        );
    }
    if has_capabilities {
        return Detected::no(format!(
            "the kernel rejected the feature probe ({error}) although the probe holds CAP_BPF; \
             treated as unavailable"
        ));
    }
    Detected::no(format!(
        "not checked: the kernel refused the feature probe ({error}); run the probe with CAP_BPF \
         and CAP_PERFMON"
    ))
}

/// True when a seccomp filter applies to this process (`Seccomp: 2`).
pub fn seccomp_filtered() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .filter_map(|line| line.strip_prefix("Seccomp:"))
            .any(|mode| mode.trim() == "2")
    })
}

fn detect_program(program_type: ProgramType, what: &str) -> Detected {
    match is_program_supported(program_type) {
        Ok(true) => Detected::yes(format!("{what} load")),
        Ok(false) => Detected::no(format!("this kernel does not load {what}")),
        Err(error) => not_checked(&error),
    }
}

fn detect_map(map_type: MapType, what: &str) -> Detected {
    match is_map_supported(map_type) {
        Ok(true) => Detected::yes(format!("{what} can be created")),
        Ok(false) => Detected::no(format!("this kernel cannot create {what}")),
        Err(error) => not_checked(&error),
    }
}

fn detect_tracepoints(tracefs: Option<&PathBuf>) -> Detected {
    let Some(tracefs) = tracefs else {
        return Detected::no(
            "tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing",
        );
    };
    match is_program_supported(ProgramType::TracePoint) {
        Ok(true) => Detected::yes(format!("tracefs at {}", tracefs.display())),
        Ok(false) => Detected::no("this kernel does not load tracepoint programs"),
        Err(error) => not_checked(&error),
    }
}

/// Checks the perf PMU that `perf_event_open` uses for uprobes or kprobes.
fn detect_perf_pmu(pmu: &str) -> Detected {
    let path = format!("/sys/bus/event_source/devices/{pmu}/type");
    if fs::metadata(&path).is_ok() {
        Detected::yes(format!("{path} exists"))
    } else {
        Detected::no(format!(
            "{path} is missing: the kernel was built without {pmu}s"
        ))
    }
}

fn detect_btf() -> Detected {
    match fs::metadata(BTF_PATH) {
        Ok(metadata) if metadata.len() > 0 => Detected::yes(format!(
            "{BTF_PATH} ({} KiB): sequence numbers of received segments, for gaps that the \
             peer's retransmissions filled",
            metadata.len() / 1024
        )),
        Ok(_) => Detected::no(format!("{BTF_PATH} is empty")),
        Err(error) => Detected::no(format!(
            "{BTF_PATH} cannot be read ({error}); the kernel needs CONFIG_DEBUG_INFO_BTF, and a \
             probe Job the host's /sys/kernel/btf"
        )),
    }
}

fn detect_tcp_probe(tracefs: Option<&PathBuf>) -> Detected {
    let Some(tracefs) = tracefs else {
        return Detected::no("tracefs is not mounted");
    };
    match loader::tcp_probe_layout(tracefs) {
        Ok(_) => Detected::yes("tcp:tcp_probe stamps received bytes with their arrival"),
        Err(reason) => Detected::no(reason),
    }
}

fn detect_pid_namespace_helper() -> Detected {
    match is_helper_supported(
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_get_ns_current_pid_tgid,
    ) {
        Ok(true) => Detected::yes("bpf_get_ns_current_pid_tgid works in tracepoint programs"),
        Ok(false) => Detected::no(
            "tracepoint programs cannot call bpf_get_ns_current_pid_tgid (Linux 5.7 or later)",
        ),
        Err(error) => not_checked(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_names_features_and_unknown_words() {
        let (features, unknown) =
            parse_disabled(Some("ring_buffer, uprobes,,warp_drive".to_string()));
        assert_eq!(features, [Feature::RingBuffer, Feature::Uprobes]);
        assert_eq!(unknown, ["warp_drive"]);
    }

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            selected_lockdown("none [integrity] confidentiality").as_deref(),
            Some("integrity")
        );
        assert_eq!(selected_lockdown("none integrity"), None);
    }

    #[test]
    fn every_feature_name_round_trips() {
        for feature in Feature::ALL {
            assert_eq!(Feature::from_name(feature.name()), Some(feature));
        }
    }
}
