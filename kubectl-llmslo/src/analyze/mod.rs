//! Analysis of a collection: per-call records with workload identity,
//! links from outbound calls to inbound requests, per-request
//! decomposition, SLIs per group, SLO evaluation, baseline comparison and
//! attribution verdicts.

pub mod baseline;
pub mod bootstrap;
pub mod components;
pub mod decompose;
pub mod intervals;
pub mod linking;
pub mod openslo;
pub mod records;
pub mod sample;
pub mod sli;
pub mod slo;
pub mod stats;
#[cfg(test)]
pub mod testing;
pub mod traces;
pub mod units;
mod unmeasured;
pub mod verdict;

#[cfg(test)]
mod scenario_tests;

mod run;

use llmslo_schema::{Drops, OutcomeStatus, Severity, TlsVisibility, UnavailableSignal};
use serde::{Deserialize, Serialize};

pub use run::analyze;

use crate::{
    collection::{NodeFailure, SkippedPod, WorkloadIdentity},
    exit::Status,
};
use baseline::Baseline;
use components::ComponentRule;
use decompose::ComponentAggregate;
use linking::LinkingSummary;
use records::CallRecord;
use sample::RequestSample;
use sli::{SliGroup, SliSummary};
use slo::{SloResult, SloSpec, SloStatus};
use traces::TraceSummary;
use verdict::{BaselineComparison, Verdict, VerdictConfig};

/// Kind of calls that are the requests SLOs apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestScope {
    /// Inbound HTTP requests served by the target.
    Inbound,
    /// Outbound LLM calls, because the target served no inbound requests
    /// (a client process probed directly).
    OutboundLlm,
    /// No request was seen.
    None,
}

/// Inputs of the analysis besides the collection: SLOs, component rules,
/// a baseline and the verdict thresholds.
#[derive(Debug, Clone, Default)]
pub struct AnalysisOptions {
    pub slos: Vec<SloSpec>,
    pub component_rules: Vec<ComponentRule>,
    pub baseline: Option<Baseline>,
    pub verdict: VerdictConfig,
}

/// One node's part of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    pub node: String,
    /// `ok`, `partial` (a result, but the probe stopped early or failed
    /// part-way) or `missing` (no result).
    pub status: NodeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// Length of the node's collection window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<f64>,
    pub exchanges: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<NodeFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Ok,
    Partial,
    Missing,
}

/// A probe diagnostic with the node it came from, or a diagnostic of the
/// CLI itself (such as a failed OTLP export) with an empty node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeDiagnostic {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    pub severity: Severity,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Data lost or not visible to the probes, summed over nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataQuality {
    pub drops: Drops,
    /// Events the probes read from their ring buffers.
    pub events: u64,
    /// `ring_buffer_full / (events + ring_buffer_full)`.
    pub event_loss_fraction: f64,
    /// Calls with bytes the probe did not see.
    pub calls_with_missing_bytes: usize,
    /// Outbound connections whose traffic could not be parsed.
    pub opaque_connections: usize,
    /// Requests still in flight when the window ended. They are not
    /// errors, and have no E2E.
    pub in_flight_requests: usize,
    /// Calls that looked cut short after the probe missed some of their
    /// bytes. They are not errors, and have no E2E.
    pub incomplete_capture_calls: usize,
    /// HTTP calls whose response had neither a status nor an error the
    /// parser could read. They are not successes, and have no E2E.
    pub unparsed_calls: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsVisibility>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableSignal>,
    /// Notes from the analysis itself, such as a baseline of another scope.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The saved run a comparison used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineInfo {
    pub name: String,
    pub saved_unix_ms: u64,
    pub run_id: String,
    pub requests: usize,
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub run_id: String,
    pub scope: RequestScope,
    pub nodes: Vec<NodeSummary>,
    pub workloads: Vec<WorkloadIdentity>,
    pub skipped: Vec<SkippedPod>,
    /// SLIs of all requests in scope together.
    pub requests: SliSummary,
    pub sli_groups: Vec<SliGroup>,
    /// Aggregate decomposition per phase and component.
    pub components: Vec<ComponentAggregate>,
    pub linking: LinkingSummary,
    pub slos: Vec<SloResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<BaselineComparison>,
    pub verdicts: Vec<Verdict>,
    /// Requests that carried W3C trace context, and the trace ids of the
    /// worst requests per SLO and regression.
    pub traces: TraceSummary,
    pub data_quality: DataQuality,
    pub diagnostics: Vec<NodeDiagnostic>,
    /// What `--otlp-endpoint` exported, set after the analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_export: Option<crate::export::ExportSummary>,
    /// Every call, requests and outbound calls alike.
    pub calls: Vec<CallRecord>,
    /// Per-request samples in the form a baseline keeps.
    #[serde(skip)]
    pub samples: Vec<RequestSample>,
    /// The run was cut short by the user.
    #[serde(skip)]
    pub interrupted: bool,
}

impl Analysis {
    /// Returns the exit status for runbooks: a breach or regression first, then
    /// an interruption, then what could not be measured, then missing
    /// nodes.
    pub fn exit_status(&self) -> Status {
        let breached = self
            .slos
            .iter()
            .any(|slo| slo.status == SloStatus::Breached)
            || self.comparisons.iter().any(|c| c.regressed);
        if breached {
            return Status::SloBreached;
        }
        if self.interrupted {
            return Status::Interrupted;
        }
        let all_missing = !self.nodes.is_empty()
            && self
                .nodes
                .iter()
                .all(|node| node.status == NodeStatus::Missing);
        let unmeasured = self.slos.iter().any(|slo| {
            matches!(
                slo.status,
                SloStatus::NotMeasured | SloStatus::InsufficientData
            )
        });
        if all_missing || self.nodes.is_empty() || self.scope == RequestScope::None || unmeasured {
            return Status::NotMeasured;
        }
        if self.nodes.iter().any(|node| node.status != NodeStatus::Ok) {
            return Status::Partial;
        }
        Status::Ok
    }

    /// Builds the baseline to save for this run.
    pub fn to_baseline(&self, name: &str, saved_unix_ms: u64) -> Baseline {
        Baseline {
            baseline_version: baseline::BASELINE_VERSION,
            name: name.to_owned(),
            saved_unix_ms,
            run_id: self.run_id.clone(),
            scope: self.scope,
            requests: self.samples.clone(),
        }
    }
}
