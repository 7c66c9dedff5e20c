//! `llmslo-probe doctor`: checks the node instead of collecting, and
//! reports what the probe can measure there.
//!
//! Every check runs even when an earlier one failed, so that one report
//! lists everything to change. The embedded eBPF programs are loaded and
//! attached for a moment with every filter path enabled, which is the only
//! check that shows whether this kernel's verifier accepts them.

use llmslo_probe_common::{
    FILTER_BY_CGROUP, FILTER_BY_PID_NAMESPACE, FILTER_BY_TGID, PidNamespaces,
};
use llmslo_schema::{Diagnostic, Feature as FeatureReport, ProbeResult, Severity};

use crate::{
    cli::DoctorArgs,
    collect::{
        Collector, LoadError,
        features::{Feature, KernelFeatures},
        loader::TRACEPOINTS,
        preflight,
    },
    identity::{self, IdentityOptions},
    result,
};

/// Ring buffer size of the trial load; the trial reads no events.
const TRIAL_RING_BUFFER_BYTES: u32 = 1 << 20;

/// Runs every check and returns the report as a result.
pub async fn run(args: &DoctorArgs) -> ProbeResult {
    let features = KernelFeatures::detect();
    let mut diagnostics = Vec::new();
    let mut problem = |code: &str, message: String| {
        tracing::warn!(code, %message, "doctor check failed");
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code: code.into(),
            message,
            pid: None,
        });
    };

    let capabilities = preflight::check_capabilities();
    if let Err(error) = &capabilities {
        problem("missing_capabilities", error.to_string());
    }
    let tracefs = preflight::find_tracefs();
    if let Err(error) = &tracefs {
        problem("tracefs_missing", error.to_string());
    }
    for feature in [Feature::Tracepoints, Feature::RingBuffer] {
        if let Err(reason) = features.check(feature) {
            problem(
                "feature_missing",
                format!("{reason}; no SLI can be measured without it"),
            );
        }
    }

    let identity_options = IdentityOptions {
        cgroup_v2: !features.is_disabled(Feature::CgroupV2),
        pid_namespace_filter: features.check(Feature::PidNamespaceFilter),
    };
    let mut probe_result = ProbeResult::new(result::probe_info(args.node.as_deref()));
    match identity::resolve(&args.pids, &args.container_ids, &identity_options) {
        Ok(targets) => {
            probe_result.filter = targets.filter_kind();
            probe_result.containers = targets
                .containers
                .iter()
                .map(identity::ContainerTarget::describe)
                .collect();
        }
        Err(error) => problem("target_not_found", error.to_string()),
    }

    let trial = if capabilities.is_ok()
        && features.available(Feature::Tracepoints)
        && features.available(Feature::RingBuffer)
    {
        trial_load(&features, args.verbose > 0)
    } else {
        Err("not tried: a privilege or a required feature is missing (see above)".into())
    };
    if let Err(reason) = &trial
        && !reason.starts_with("not tried")
    {
        problem("programs_rejected", reason.clone());
    }

    let arrivals = features.check(Feature::TcpProbe);
    probe_result.kernel = result::kernel_report(&features, None, &arrivals);
    probe_result.kernel.features.push(FeatureReport {
        name: "probe_programs".into(),
        available: trial.is_ok(),
        detail: Some(match &trial {
            Ok(count) => format!("{count} eBPF programs loaded and attached"),
            Err(reason) => reason.clone(),
        }),
    });
    probe_result.diagnostics = diagnostics;
    probe_result
}

/// Loads and attaches the embedded programs, then detaches them; returns
/// how many attach points worked.
fn trial_load(features: &KernelFeatures, keep_verifier_log: bool) -> Result<usize, String> {
    // Every filter bit and one namespace slot, so that the verifier checks
    // every filter path instead of pruning it; inode 0 matches no task.
    let flags = FILTER_BY_TGID | FILTER_BY_CGROUP | FILTER_BY_PID_NAMESPACE;
    let namespaces = PidNamespaces {
        count: u32::from(features.available(Feature::PidNamespaceFilter)),
        ..PidNamespaces::default()
    };
    let layout = features
        .tracefs
        .as_deref()
        .and_then(|tracefs| crate::collect::loader::tcp_probe_layout(tracefs).ok())
        .unwrap_or_default();
    let mut collector = Collector::load(
        TRIAL_RING_BUFFER_BYTES,
        flags,
        &namespaces,
        layout,
        &crate::signals::KernelGlobals::default(),
        keep_verifier_log,
    )
    .map_err(|error| {
        if let crate::collect::CollectError::Load(LoadError::Verifier { log: Some(log), .. }) =
            &error
        {
            eprintln!("{log}");
        }
        error.to_string()
    })?;
    collector.attach().map_err(|error| error.to_string())?;
    Ok(TRACEPOINTS.len())
}
