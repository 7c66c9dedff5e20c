//! Turns one node's doctor result into what llmslo can measure there and
//! what to change.

use llmslo_schema::{CgroupLayout, ContainerTarget, Feature, ProbeResult, Severity, TargetFilter};
use serde::Serialize;

use crate::collection::{NodeCollection, NodeFailure};

/// The doctor's findings on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub node: String,
    /// `uname -r`, when the probe ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btf: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupLayout>,
    /// Identity by which target containers are filtered on this node.
    pub identity: String,
    pub capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockdown: Option<String>,
    pub features: Vec<Feature>,
    pub containers: Vec<ContainerTarget>,
    pub measurable: Vec<Measurable>,
    /// Changes to make on the node or in the probe Job, most important
    /// first.
    pub changes: Vec<String>,
    /// Reason the doctor could not run on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<NodeFailure>,
}

impl NodeReport {
    /// True when the node can measure the LLM SLIs of plaintext traffic.
    pub fn can_measure(&self) -> bool {
        self.failure.is_none()
            && self
                .measurable
                .first()
                .is_some_and(|item| item.status != Availability::No)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Yes,
    Partial,
    No,
}

impl Availability {
    pub fn label(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::Partial => "partial",
            Self::No => "no",
        }
    }
}

/// One SLI or component and whether the node can measure it.
#[derive(Debug, Clone, Serialize)]
pub struct Measurable {
    pub name: &'static str,
    pub status: Availability,
    pub detail: String,
}

/// Assesses a node from its doctor result, or reports why there is none.
pub fn assess(node: &NodeCollection) -> NodeReport {
    let Some(result) = &node.result else {
        let failure = node.failure.clone().unwrap_or(NodeFailure {
            code: "no_result".into(),
            message: "the doctor printed no result".into(),
        });
        return NodeReport {
            node: node.node.clone(),
            kernel_release: None,
            btf: None,
            cgroup: None,
            identity: "unknown".into(),
            capabilities: Vec::new(),
            lockdown: None,
            features: Vec::new(),
            containers: Vec::new(),
            measurable: Vec::new(),
            changes: vec![failure.message.clone()],
            failure: Some(failure),
        };
    };

    let kernel = &result.kernel;
    NodeReport {
        node: node.node.clone(),
        kernel_release: Some(result.probe.kernel_release.clone()),
        btf: feature(result, "btf").map(|feature| feature.available),
        cgroup: kernel.cgroup.clone(),
        identity: identity(result),
        capabilities: kernel.capabilities.clone(),
        lockdown: kernel.lockdown.clone(),
        features: kernel.features.clone(),
        containers: result.containers.clone(),
        measurable: measurable(result),
        changes: changes(result),
        failure: node.failure.clone(),
    }
}

fn feature<'a>(result: &'a ProbeResult, name: &str) -> Option<&'a Feature> {
    result
        .kernel
        .features
        .iter()
        .find(|feature| feature.name == name)
}

fn has(result: &ProbeResult, name: &str) -> bool {
    feature(result, name).is_some_and(|feature| feature.available)
}

fn unavailable_reason(result: &ProbeResult, signal: &str) -> Option<String> {
    result
        .kernel
        .unavailable
        .iter()
        .find(|unavailable| unavailable.signal == signal)
        .map(|unavailable| unavailable.reason.clone())
}

/// Names the identity that filters containers: from the targets' filters,
/// else from what the node offers.
fn identity(result: &ProbeResult) -> String {
    if !result.containers.is_empty() {
        let mut filters: Vec<&str> = result
            .containers
            .iter()
            .map(|container| filter_name(&container.filter))
            .collect();
        filters.sort_unstable();
        filters.dedup();
        return filters.join(", ");
    }
    let layout = result
        .kernel
        .cgroup
        .as_ref()
        .map(|layout| layout.mode.as_str());
    match layout {
        Some("v2") => filter_name(&TargetFilter::CgroupV2).into(),
        Some("hybrid") => format!(
            "{} where the runtime uses it, else {}",
            filter_name(&TargetFilter::CgroupV2),
            fallback_name(result)
        ),
        Some("v1") => fallback_name(result).into(),
        _ => "pids only (no cgroup mounted)".into(),
    }
}

fn fallback_name(result: &ProbeResult) -> &'static str {
    if has(result, "pid_namespace_filter") {
        filter_name(&TargetFilter::PidNamespace)
    } else {
        filter_name(&TargetFilter::Pids)
    }
}

fn filter_name(filter: &TargetFilter) -> &'static str {
    match filter {
        TargetFilter::CgroupV2 => "cgroup v2 id",
        TargetFilter::PidNamespace => "PID namespace",
        TargetFilter::Pids => "tgids",
    }
}

/// Lists the SLIs and components, each with what limits it on this node.
fn measurable(result: &ProbeResult) -> Vec<Measurable> {
    let blocking: Vec<String> = result
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.severity == Severity::Error)
        .filter(|diagnostic| diagnostic.code != "target_not_found")
        .map(|diagnostic| diagnostic.message.clone())
        .collect();
    let core = if !blocking.is_empty() {
        (Availability::No, blocking.join("; "))
    } else if !has(result, "probe_programs") {
        (
            Availability::No,
            feature(result, "probe_programs")
                .and_then(|feature| feature.detail.clone())
                .unwrap_or_else(|| "the probe programs were not checked".into()),
        )
    } else {
        (Availability::Yes, String::new())
    };
    let with_core = |detail: &str| -> (Availability, String) {
        match core.0 {
            Availability::No => core.clone(),
            _ => (Availability::Yes, detail.to_string()),
        }
    };

    let mut items = Vec::new();
    let mut push = |name: &'static str, (status, detail): (Availability, String)| {
        items.push(Measurable {
            name,
            status,
            detail,
        });
    };

    let timing = match (core.0, unavailable_reason(result, "segment_arrival_times")) {
        (Availability::No, _) => core.clone(),
        (_, Some(reason)) => (Availability::Partial, reason),
        (_, None) => (
            Availability::Yes,
            "plaintext HTTP/1.1 and HTTP/2, received bytes stamped at their arrival".into(),
        ),
    };
    push("TTFT, ITL, TPOT, E2E, tokens/s", timing);
    push(
        "errors and 429s",
        with_core("HTTP status, SSE error events, resets"),
    );
    let tls = match (core.0, unavailable_reason(result, "tls_plaintext")) {
        (Availability::No, _) => core.clone(),
        (_, Some(reason)) => (Availability::No, reason),
        (_, None) => (Availability::Yes, "TLS library uprobes".into()),
    };
    push("LLM calls over TLS (HTTPS)", tls);
    push(
        "provider, retrieval, guardrail components",
        with_core("plaintext PostgreSQL, Redis and HTTP calls"),
    );
    push(
        "DNS component",
        with_core("UDP port 53 through the socket probes"),
    );
    let connect = match (core.0, unavailable_reason(result, "connect_latency")) {
        (Availability::No, _) => core.clone(),
        (_, Some(reason)) => (
            Availability::Partial,
            format!("blocking connects only: {reason}"),
        ),
        (_, None) => (Availability::Yes, String::new()),
    };
    push("connect component", connect);
    let cpu_reasons: Vec<String> = ["run_queue_latency", "cgroup_cpu"]
        .iter()
        .filter_map(|signal| unavailable_reason(result, signal))
        .collect();
    let cpu = match core.0 {
        Availability::No => core.clone(),
        _ if cpu_reasons.is_empty() => (Availability::Yes, String::new()),
        _ => (Availability::No, cpu_reasons.join("; ")),
    };
    push("service CPU time (run queue, throttling)", cpu);
    items
}

/// Lists the changes to make, from the failed checks and the remedies of
/// missing signals, without repeats.
fn changes(result: &ProbeResult) -> Vec<String> {
    let mut changes: Vec<String> = result
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.severity >= Severity::Warning)
        .map(|diagnostic| diagnostic.message.clone())
        .collect();
    for unavailable in &result.kernel.unavailable {
        let change = format!("{}: {}", unavailable.signal, unavailable.remedy);
        if !changes.contains(&change) {
            changes.push(change);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use llmslo_schema::{Diagnostic, KernelReport, ProbeInfo, UnavailableSignal};

    use super::*;

    fn result(features: &[(&str, bool)], unavailable: &[&str]) -> ProbeResult {
        let mut result = ProbeResult::new(ProbeInfo {
            version: "0.1.0".into(),
            node: "worker-1".into(),
            kernel_release: "6.18.0".into(),
        });
        result.kernel = KernelReport {
            features: features
                .iter()
                .map(|(name, available)| Feature {
                    name: (*name).into(),
                    available: *available,
                    detail: Some(format!("{name} detail")),
                })
                .collect(),
            unavailable: unavailable
                .iter()
                .map(|signal| UnavailableSignal {
                    signal: (*signal).into(),
                    reason: format!("{signal} reason"),
                    remedy: format!("{signal} remedy"),
                })
                .collect(),
            cgroup: Some(CgroupLayout {
                mode: "hybrid".into(),
                ..CgroupLayout::default()
            }),
            ..KernelReport::default()
        };
        result
    }

    fn node(result: ProbeResult) -> NodeCollection {
        NodeCollection {
            node: "worker-1".into(),
            result: Some(result),
            failure: None,
        }
    }

    fn status(report: &NodeReport, name: &str) -> Availability {
        report
            .measurable
            .iter()
            .find(|item| item.name == name)
            .unwrap()
            .status
    }

    #[test]
    fn healthy_node_measures_plaintext_slis() {
        let report = assess(&node(result(
            &[
                ("probe_programs", true),
                ("btf", true),
                ("pid_namespace_filter", true),
            ],
            &["tls_plaintext"],
        )));
        assert!(report.can_measure());
        assert_eq!(
            status(&report, "TTFT, ITL, TPOT, E2E, tokens/s"),
            Availability::Yes
        );
        assert_eq!(
            status(&report, "LLM calls over TLS (HTTPS)"),
            Availability::No
        );
        assert_eq!(report.btf, Some(true));
        assert_eq!(
            report.identity,
            "cgroup v2 id where the runtime uses it, else PID namespace"
        );
        assert_eq!(report.changes, ["tls_plaintext: tls_plaintext remedy"]);
    }

    #[test]
    fn missing_arrivals_make_timing_partial() {
        let report = assess(&node(result(
            &[("probe_programs", true)],
            &["segment_arrival_times"],
        )));
        assert_eq!(
            status(&report, "TTFT, ITL, TPOT, E2E, tokens/s"),
            Availability::Partial
        );
    }

    #[test]
    fn failed_check_blocks_everything() {
        let mut failed = result(&[("probe_programs", false)], &[]);
        failed.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code: "missing_capabilities".into(),
            message: "missing CAP_BPF".into(),
            pid: None,
        });
        let report = assess(&node(failed));
        assert!(!report.can_measure());
        assert!(
            report
                .measurable
                .iter()
                .all(|item| item.status == Availability::No)
        );
        assert_eq!(report.changes, ["missing CAP_BPF"]);
    }

    #[test]
    fn blocking_detail_printed_once() {
        let mut failed = result(&[("probe_programs", false)], &[]);
        failed.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code: "missing_capabilities".into(),
            message: "missing CAP_BPF".into(),
            pid: None,
        });
        let report = assess(&node(failed));
        let text = crate::doctor::render(std::slice::from_ref(&report));
        let measure_table = text
            .split("What llmslo can measure")
            .nth(1)
            .and_then(|rest| rest.split("To change").next())
            .expect("a table of what can be measured");
        let rows = report.measurable.len();
        assert!(rows > 1, "{text}");
        assert_eq!(
            measure_table.matches("missing CAP_BPF").count(),
            1,
            "{text}"
        );
        assert_eq!(
            measure_table.matches("the same as above").count(),
            rows - 1,
            "{text}"
        );
    }

    #[test]
    fn node_without_result_reports_failure() {
        let report = assess(&NodeCollection {
            node: "worker-2".into(),
            result: None,
            failure: Some(NodeFailure {
                code: "image_pull_failed".into(),
                message: "image not found".into(),
            }),
        });
        assert!(!report.can_measure());
        assert_eq!(report.changes, ["image not found"]);
    }
}
