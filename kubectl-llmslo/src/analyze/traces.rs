//! Trace coverage and exemplars: how many requests carried a W3C
//! `traceparent`, and the trace ids of the worst requests behind each SLO
//! and regression, so that an engineer can open those traces.

use std::collections::HashSet;

use llmslo_schema::Direction;
use serde::Serialize;

use super::{
    records::{CallRecord, Role},
    slo::{Comparison, Sli, SloResult, SloSpec, SloStatus},
    stats,
    verdict::BaselineComparison,
};

/// Most exemplars listed per subject.
pub const MAX_EXEMPLARS: usize = 5;

/// Trace context seen in the window, and the exemplars.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TraceSummary {
    /// Requests in scope, and of those the ones that carried a
    /// `traceparent`.
    pub requests: usize,
    pub traced_requests: usize,
    /// Outbound calls (dependencies), and of those the ones that carried a
    /// `traceparent`.
    pub outbound_calls: usize,
    pub traced_outbound_calls: usize,
    /// Distinct trace ids over every call.
    pub trace_ids: usize,
    /// Traced requests among the worst, per SLO and per regression.
    pub exemplars: Vec<ExemplarSet>,
}

/// The worst traced requests of one SLO, comparison or SLI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExemplarSet {
    /// The SLO's `objective`, the comparison's `metric`, or the SLI name
    /// when neither was given. Verdicts carry the same text in `subject`.
    pub subject: String,
    pub sli: Sli,
    /// Requests in the tail: beyond the SLO target, failed for error-rate
    /// SLOs, or at or beyond the compared percentile.
    pub tail_requests: usize,
    /// Of those, the ones that carried a `traceparent`.
    pub traced_tail_requests: usize,
    /// Up to [`MAX_EXEMPLARS`] traced tail requests, worst first.
    pub requests: Vec<Exemplar>,
}

/// One traced request to open in a tracing backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exemplar {
    /// The call's `id` in `calls`.
    pub call_id: String,
    pub trace_id: String,
    /// The `parent-id` of the request's `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The request's value of the SLI, in `unit`; absent for error-rate
    /// subjects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// `us`, `tokens_per_sec` or `error`.
    pub unit: &'static str,
    /// Position among every request in scope, worst first (1 is the
    /// worst request); absent for error-rate subjects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

/// Summarizes trace coverage and lists exemplars for every SLO and every
/// regressed comparison; without either, for TTFT and E2E.
pub fn summarize(
    records: &[CallRecord],
    slos: &[(SloSpec, SloResult)],
    comparisons: &[BaselineComparison],
) -> TraceSummary {
    let requests: Vec<&CallRecord> = records.iter().filter(|r| r.role == Role::Request).collect();
    let outbound: Vec<&CallRecord> = records
        .iter()
        .filter(|r| r.direction == Direction::Outbound && r.role == Role::Dependency)
        .collect();
    let trace_ids: HashSet<&str> = records
        .iter()
        .filter_map(|r| r.trace_id.as_deref())
        .collect();

    let mut exemplars = Vec::new();
    for (spec, result) in slos {
        if result.status == SloStatus::NotMeasured {
            continue;
        }
        exemplars.push(slo_exemplars(spec, result, records));
    }
    for comparison in comparisons.iter().filter(|c| c.regressed) {
        exemplars.push(tail_exemplars(
            comparison.metric.clone(),
            comparison.sli,
            comparison.percentile,
            &requests,
        ));
    }
    if slos.is_empty() && comparisons.iter().all(|c| !c.regressed) {
        for sli in [Sli::Ttft, Sli::E2e] {
            let set = tail_exemplars(sli.name().to_owned(), sli, Some(95.0), &requests);
            if set.tail_requests > 0 {
                exemplars.push(set);
            }
        }
    }

    TraceSummary {
        requests: requests.len(),
        traced_requests: requests.iter().filter(|r| r.trace_id.is_some()).count(),
        outbound_calls: outbound.len(),
        traced_outbound_calls: outbound.iter().filter(|r| r.trace_id.is_some()).count(),
        trace_ids: trace_ids.len(),
        exemplars,
    }
}

/// Returns a request's value of a per-request SLI. ITL uses the request's
/// largest gap, as the verdicts do.
fn value(record: &CallRecord, sli: Sli) -> Option<f64> {
    match sli {
        Sli::Ttft => record.ttft_us.map(|v| v as f64),
        Sli::Ttfb => record.ttfb_us.map(|v| v as f64),
        Sli::E2e => record.e2e_us.map(|v| v as f64),
        Sli::Tpot => record.tpot_us,
        Sli::Itl => record.itl_max_us.map(|v| v as f64),
        Sli::TokensPerSec => record.tokens_per_sec,
        Sli::ErrorRate | Sli::RateLimitedRate => None,
    }
}

fn unit_of(sli: Sli) -> &'static str {
    match sli {
        Sli::TokensPerSec => "tokens_per_sec",
        Sli::ErrorRate | Sli::RateLimitedRate => "error",
        _ => "us",
    }
}

/// Requests in scope with a value, worst first: highest latency, lowest
/// throughput.
fn ranked<'a>(sli: Sli, in_scope: &[&'a CallRecord]) -> Vec<(&'a CallRecord, f64)> {
    let mut ranked: Vec<(&CallRecord, f64)> = in_scope
        .iter()
        .filter_map(|record| value(record, sli).map(|v| (*record, v)))
        .collect();
    if sli == Sli::TokensPerSec {
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    } else {
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    }
    ranked
}

fn slo_exemplars(spec: &SloSpec, result: &SloResult, records: &[CallRecord]) -> ExemplarSet {
    let in_scope: Vec<&CallRecord> = records.iter().filter(|r| spec.scope.includes(r)).collect();
    if spec.sli.is_ratio() {
        let failed: Vec<&CallRecord> = in_scope
            .iter()
            .copied()
            .filter(|r| match spec.sli {
                Sli::RateLimitedRate => r.is_rate_limited(),
                _ => r.is_error(),
            })
            .collect();
        return error_exemplars(result.objective.clone(), spec.sli, &failed);
    }

    let beyond = |v: f64| match spec.comparison {
        Comparison::AtMost => v > spec.target,
        Comparison::AtLeast => v < spec.target,
    };
    let tail: Vec<(usize, &CallRecord, f64)> = ranked(spec.sli, &in_scope)
        .into_iter()
        .enumerate()
        .filter(|(_, (_, v))| beyond(*v))
        .map(|(index, (record, v))| (index + 1, record, v))
        .collect();
    exemplar_set(result.objective.clone(), spec.sli, &tail)
}

/// Exemplars among the requests at or beyond the run's own percentile.
fn tail_exemplars(
    subject: String,
    sli: Sli,
    percentile: Option<f64>,
    requests: &[&CallRecord],
) -> ExemplarSet {
    if sli.is_ratio() {
        let failed: Vec<&CallRecord> = requests.iter().copied().filter(|r| r.is_error()).collect();
        return error_exemplars(subject, sli, &failed);
    }
    let ranked = ranked(sli, requests);
    let values: Vec<f64> = ranked.iter().map(|(_, v)| *v).collect();
    // The tail of a low-is-bad SLI is below its low percentile.
    let threshold = match (sli, percentile) {
        (Sli::TokensPerSec, Some(p)) => stats::percentile(&values, 100.0 - p),
        (_, Some(p)) => stats::percentile(&values, p),
        (_, None) => None,
    };
    let tail: Vec<(usize, &CallRecord, f64)> = ranked
        .into_iter()
        .enumerate()
        .filter(|(_, (_, v))| match (threshold, sli) {
            (Some(t), Sli::TokensPerSec) => *v <= t,
            (Some(t), _) => *v >= t,
            (None, _) => false,
        })
        .map(|(index, (record, v))| (index + 1, record, v))
        .collect();
    exemplar_set(subject, sli, &tail)
}

fn exemplar_set(subject: String, sli: Sli, tail: &[(usize, &CallRecord, f64)]) -> ExemplarSet {
    let traced: Vec<&(usize, &CallRecord, f64)> = tail
        .iter()
        .filter(|(_, r, _)| r.trace_id.is_some())
        .collect();
    ExemplarSet {
        subject,
        sli,
        tail_requests: tail.len(),
        traced_tail_requests: traced.len(),
        requests: traced
            .iter()
            .take(MAX_EXEMPLARS)
            .map(|(rank, record, v)| Exemplar {
                call_id: record.id.clone(),
                trace_id: record.trace_id.clone().unwrap_or_default(),
                parent_span_id: record.parent_span_id.clone(),
                value: Some(*v),
                unit: unit_of(sli),
                rank: Some(*rank),
                error_kind: None,
            })
            .collect(),
    }
}

/// Failed requests in start order: for error rates no request is worse
/// than another.
fn error_exemplars(subject: String, sli: Sli, failed: &[&CallRecord]) -> ExemplarSet {
    let mut traced: Vec<&CallRecord> = failed
        .iter()
        .copied()
        .filter(|r| r.trace_id.is_some())
        .collect();
    traced.sort_by_key(|r| r.start_unix_ns);
    ExemplarSet {
        subject,
        sli,
        tail_requests: failed.len(),
        traced_tail_requests: traced.len(),
        requests: traced
            .iter()
            .take(MAX_EXEMPLARS)
            .map(|record| Exemplar {
                call_id: record.id.clone(),
                trace_id: record.trace_id.clone().unwrap_or_default(),
                parent_span_id: record.parent_span_id.clone(),
                value: None,
                unit: unit_of(sli),
                rank: None,
                error_kind: record
                    .error
                    .as_ref()
                    .map(|e| super::sli::error_kind_name(e.kind)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{
        AnalysisOptions, analyze,
        testing::{Fault, Scenario},
    };

    fn traced_analysis(slos: &[&str]) -> crate::analyze::Analysis {
        let scenario = Scenario {
            requests: 40,
            traced: true,
            faults: vec![Fault {
                component: "provider_ttft",
                extra_ms: 2000.0,
                fraction: 0.2,
            }],
            rate_limited_fraction: 0.1,
            ..Scenario::default()
        };
        let options = AnalysisOptions {
            slos: slos.iter().map(|s| SloSpec::parse(s).unwrap()).collect(),
            ..AnalysisOptions::default()
        };
        analyze(&scenario.collection(), &options)
    }

    #[test]
    fn coverage_counts_traced_requests() {
        let analysis = traced_analysis(&[]);
        let traces = &analysis.traces;
        assert_eq!(traces.requests, 40);
        assert_eq!(traces.traced_requests, 40);
        assert_eq!(traces.outbound_calls, 120);
        assert_eq!(traces.traced_outbound_calls, 120);
        assert_eq!(traces.trace_ids, 40);
    }

    #[test]
    fn untraced_requests_have_no_exemplars() {
        let scenario = Scenario {
            requests: 20,
            ..Scenario::default()
        };
        let options = AnalysisOptions {
            slos: vec![SloSpec::parse("ttft.p95=100ms").unwrap()],
            ..AnalysisOptions::default()
        };
        let analysis = analyze(&scenario.collection(), &options);
        let set = &analysis.traces.exemplars[0];
        assert_eq!(analysis.traces.traced_requests, 0);
        assert_eq!(set.tail_requests, 20);
        assert_eq!(set.traced_tail_requests, 0);
        assert!(set.requests.is_empty());
    }

    #[test]
    fn breached_slo_lists_worst_requests_first() {
        let analysis = traced_analysis(&["ttft.p95=1s"]);
        let set = &analysis.traces.exemplars[0];
        assert_eq!(set.subject, analysis.slos[0].objective);
        assert_eq!(set.tail_requests, analysis.slos[0].bad);
        assert_eq!(set.requests.len(), MAX_EXEMPLARS.min(set.tail_requests));
        let values: Vec<f64> = set.requests.iter().map(|e| e.value.unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
        assert!(values.iter().all(|&v| v > 1_000_000.0), "{values:?}");
        assert_eq!(set.requests[0].rank, Some(1));
        let worst = analysis
            .calls
            .iter()
            .filter(|c| c.role == Role::Request)
            .filter_map(|c| c.ttft_us)
            .max()
            .unwrap();
        assert_eq!(set.requests[0].value, Some(worst as f64));
        let call = analysis
            .calls
            .iter()
            .find(|c| c.id == set.requests[0].call_id)
            .unwrap();
        assert_eq!(
            call.trace_id.as_deref(),
            Some(set.requests[0].trace_id.as_str())
        );
        assert_eq!(
            set.requests[0].parent_span_id.as_deref(),
            Some("00f067aa0ba902b7")
        );
    }

    #[test]
    fn verdict_subjects_have_exemplars() {
        let analysis = traced_analysis(&["ttft.p95=1s", "error_rate=1%"]);
        assert!(!analysis.verdicts.is_empty());
        for verdict in &analysis.verdicts {
            assert!(
                analysis
                    .traces
                    .exemplars
                    .iter()
                    .any(|set| set.subject == verdict.subject),
                "no exemplars for {}",
                verdict.subject
            );
        }
    }

    #[test]
    fn error_rate_lists_failed_requests() {
        let analysis = traced_analysis(&["error_rate=1%"]);
        let set = &analysis.traces.exemplars[0];
        assert_eq!(set.tail_requests, analysis.slos[0].bad);
        assert!(set.tail_requests > 0);
        for exemplar in &set.requests {
            assert_eq!(exemplar.error_kind.as_deref(), Some("http_status"));
            assert_eq!(exemplar.value, None);
            assert_eq!(exemplar.unit, "error");
        }
    }

    #[test]
    fn without_slos_ttft_and_e2e_tails_are_listed() {
        let analysis = traced_analysis(&[]);
        let subjects: Vec<&str> = analysis
            .traces
            .exemplars
            .iter()
            .map(|set| set.subject.as_str())
            .collect();
        assert_eq!(subjects, ["ttft", "e2e"]);
    }
}
