//! The per-request view that verdicts work on, for the current run and
//! for a saved baseline alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decompose::Phase, records::CallRecord, sli::error_kind_name, slo::Sli};

/// One component's critical time in one phase of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub component: String,
    pub critical_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

/// The values and decomposition of one request that the verdicts use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestSample {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_max_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Component whose call failed first inside the request, else the
    /// request's own component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_cause: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<Phase, Vec<Part>>,
    /// Outbound calls linked to the request, and how many of those links
    /// were ambiguous.
    #[serde(default)]
    pub linked_calls: usize,
    #[serde(default)]
    pub ambiguous_calls: usize,
    #[serde(default)]
    pub missing_bytes: u64,
    /// Whether the request was still in flight when the window ended, so
    /// error rates leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_flight: bool,
    /// Whether the request ended with an outcome the probe could not see,
    /// so error rates leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmeasured: bool,
}

impl RequestSample {
    pub fn from_record(record: &CallRecord, error_cause: Option<String>) -> Self {
        let mut phases = BTreeMap::new();
        if let Some(decomposition) = &record.decomposition {
            for phase in Phase::ALL {
                let parts: Vec<Part> = decomposition
                    .phase(phase)
                    .iter()
                    .map(|share| Part {
                        component: share.component.clone(),
                        critical_us: share.critical_us,
                        min_us: share.min_us,
                        max_us: share.max_us,
                    })
                    .collect();
                if !parts.is_empty() {
                    phases.insert(phase, parts);
                }
            }
        }
        Self {
            ttft_us: record.ttft_us.map(|v| v as f64),
            ttfb_us: record.ttfb_us.map(|v| v as f64),
            e2e_us: record.e2e_us.map(|v| v as f64),
            tpot_us: record.tpot_us,
            itl_max_us: record.itl_max_us.map(|v| v as f64),
            tokens_per_sec: record.tokens_per_sec,
            output_tokens: record.output_tokens,
            error_kind: record.error.as_ref().map(|e| error_kind_name(e.kind)),
            error_cause,
            phases,
            linked_calls: 0,
            ambiguous_calls: 0,
            missing_bytes: record.missing_bytes,
            in_flight: record.in_flight,
            unmeasured: record.unmeasured.is_some(),
        }
    }

    /// Returns the value of a per-request SLI. ITL uses the request's
    /// largest gap.
    pub fn value(&self, sli: Sli) -> Option<f64> {
        match sli {
            Sli::Ttft => self.ttft_us,
            Sli::Ttfb => self.ttfb_us,
            Sli::E2e => self.e2e_us,
            Sli::Tpot => self.tpot_us,
            Sli::Itl => self.itl_max_us,
            Sli::TokensPerSec => self.tokens_per_sec,
            Sli::ErrorRate | Sli::RateLimitedRate => None,
        }
    }

    pub fn parts(&self, phase: Phase) -> &[Part] {
        self.phases.get(&phase).map_or(&[], Vec::as_slice)
    }

    /// Estimated, lowest and highest critical time of a component.
    pub fn part(&self, phase: Phase, component: &str) -> (f64, f64, f64) {
        self.parts(phase)
            .iter()
            .find(|part| part.component == component)
            .map_or((0.0, 0.0, 0.0), |part| {
                (part.critical_us, part.min_us, part.max_us)
            })
    }

    pub fn phase_len_us(&self, phase: Phase) -> f64 {
        self.parts(phase).iter().map(|part| part.critical_us).sum()
    }
}

/// Returns the phase whose decomposition explains an SLI.
pub fn phase_of(sli: Sli) -> Option<Phase> {
    match sli {
        Sli::Ttft | Sli::Ttfb => Some(Phase::Ttft),
        Sli::E2e => Some(Phase::E2e),
        Sli::Itl | Sli::Tpot | Sli::TokensPerSec => Some(Phase::Generation),
        Sli::ErrorRate | Sli::RateLimitedRate => None,
    }
}
