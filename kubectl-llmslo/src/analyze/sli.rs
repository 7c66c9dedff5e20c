//! SLIs of groups of calls: counts, errors, and percentiles of TTFT, ITL,
//! TPOT, E2E and output tokens per second.

use std::collections::BTreeMap;

use llmslo_schema::{Direction, ErrorKind};
use serde::Serialize;

use super::{
    records::{CallRecord, Endpoint, Role},
    stats,
};

/// Nearest-rank percentiles of a latency-like SLI; see [`super::stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        stats::sort_floats(&mut sorted);
        Self {
            samples: sorted.len(),
            p50: stats::percentile_sorted(&sorted, 50.0),
            p90: stats::percentile_sorted(&sorted, 90.0),
            p95: stats::percentile_sorted(&sorted, 95.0),
            p99: stats::percentile_sorted(&sorted, 99.0),
            max: sorted.last().copied(),
        }
    }
}

/// Percentiles of a throughput-like SLI, where the low end is the bad one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LowPercentiles {
    pub samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p5: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
}

impl LowPercentiles {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        stats::sort_floats(&mut sorted);
        Self {
            samples: sorted.len(),
            min: sorted.first().copied(),
            p5: stats::percentile_sorted(&sorted, 5.0),
            p10: stats::percentile_sorted(&sorted, 10.0),
            p50: stats::percentile_sorted(&sorted, 50.0),
        }
    }
}

/// The SLIs of one group of calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SliSummary {
    pub requests: usize,
    /// Calls still in flight when the window ended: counted in
    /// `requests`, but neither errors nor in the error-rate denominators
    /// nor in E2E.
    pub in_flight: usize,
    /// Calls that ended with an outcome the probe could not see (bytes
    /// missed or a response it could not parse): counted in `requests`,
    /// but neither errors nor in the error-rate denominators nor in E2E.
    pub unmeasured: usize,
    pub errors: usize,
    /// Errors by kind (`http_status`, `rate_limited`, `stream_error`, ...).
    pub errors_by_kind: BTreeMap<String, usize>,
    /// HTTP 429 responses, also counted in `errors`.
    pub rate_limited: usize,
    pub error_rate: f64,
    pub rate_limited_rate: f64,
    pub ttft_us: Percentiles,
    /// Pooled over every gap of every call in the group.
    pub itl_us: Percentiles,
    pub tpot_us: Percentiles,
    pub e2e_us: Percentiles,
    pub tokens_per_sec: LowPercentiles,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Calls per source of their output token count.
    pub output_token_sources: BTreeMap<String, usize>,
}

pub fn error_kind_name(kind: ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

impl SliSummary {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a CallRecord>) -> Self {
        let mut summary = Self::default();
        let mut ttft = Vec::new();
        let mut itl = Vec::new();
        let mut tpot = Vec::new();
        let mut e2e = Vec::new();
        let mut tokens_per_sec = Vec::new();

        for record in records {
            summary.requests += 1;
            if record.in_flight {
                summary.in_flight += 1;
            }
            if record.unmeasured.is_some() {
                summary.unmeasured += 1;
            }
            if let Some(error) = &record.error {
                summary.errors += 1;
                *summary
                    .errors_by_kind
                    .entry(error_kind_name(error.kind))
                    .or_default() += 1;
                if error.kind == ErrorKind::RateLimited {
                    summary.rate_limited += 1;
                }
            }

            ttft.extend(record.ttft_us.map(|v| v as f64));
            itl.extend(record.itl_us.iter().map(|&v| v as f64));
            tpot.extend(record.tpot_us);
            e2e.extend(record.e2e_us.map(|v| v as f64));
            tokens_per_sec.extend(record.tokens_per_sec);
            summary.input_tokens += record.input_tokens.unwrap_or(0);
            summary.output_tokens += record.output_tokens.unwrap_or(0);
            if let Some(source) = &record.token_source {
                *summary
                    .output_token_sources
                    .entry(source.clone())
                    .or_default() += 1;
            }
        }

        let finished = summary.requests - summary.in_flight - summary.unmeasured;
        if finished > 0 {
            summary.error_rate = summary.errors as f64 / finished as f64;
            summary.rate_limited_rate = summary.rate_limited as f64 / finished as f64;
        }
        summary.ttft_us = Percentiles::of(&ttft);
        summary.itl_us = Percentiles::of(&itl);
        summary.tpot_us = Percentiles::of(&tpot);
        summary.e2e_us = Percentiles::of(&e2e);
        summary.tokens_per_sec = LowPercentiles::of(&tokens_per_sec);
        summary
    }
}

/// The calls that share direction, role, component, workload, endpoint,
/// provider and model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliGroup {
    pub direction: Direction,
    pub role: Role,
    pub component: String,
    /// Workload label (`NAMESPACE/KIND/NAME`), or `pid PID (COMM)` on a
    /// host without Kubernetes identity.
    pub workload: String,
    pub endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(flatten)]
    pub summary: SliSummary,
}

pub fn workload_label(record: &CallRecord) -> String {
    match &record.workload {
        Some(workload) => workload.label(),
        None => match &record.comm {
            Some(comm) => format!("pid {} ({comm})", record.pid),
            None => format!("pid {}", record.pid),
        },
    }
}

type GroupKey = (
    u8,
    String,
    String,
    Endpoint,
    Option<String>,
    Option<String>,
    bool,
);

/// Groups requests and outbound calls. Requests come first, then
/// outbound calls by component; the largest groups first within each.
pub fn groups(records: &[CallRecord]) -> Vec<SliGroup> {
    let mut grouped: BTreeMap<GroupKey, (Role, Vec<&CallRecord>)> = BTreeMap::new();
    for record in records {
        if record.role == Role::Excluded {
            continue;
        }
        let order = match record.role {
            Role::Request => 0,
            _ => 1,
        };
        let key = (
            order,
            record.component.clone(),
            workload_label(record),
            record.endpoint.clone(),
            record.provider.clone(),
            record.model.clone(),
            record.direction == Direction::Inbound,
        );
        grouped
            .entry(key)
            .or_insert_with(|| (record.role, Vec::new()))
            .1
            .push(record);
    }
    let mut out: Vec<(u8, SliGroup)> = grouped
        .into_iter()
        .map(
            |(
                (order, component, workload, endpoint, provider, model, inbound),
                (role, records),
            )| {
                (
                    order,
                    SliGroup {
                        direction: if inbound {
                            Direction::Inbound
                        } else {
                            Direction::Outbound
                        },
                        role,
                        component,
                        workload,
                        endpoint,
                        provider,
                        model,
                        summary: SliSummary::of(records),
                    },
                )
            },
        )
        .collect();
    out.sort_by(|(oa, a), (ob, b)| {
        oa.cmp(ob)
            .then(a.component.cmp(&b.component))
            .then(b.summary.requests.cmp(&a.summary.requests))
            .then(a.endpoint.cmp(&b.endpoint))
    });
    out.into_iter().map(|(_, group)| group).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::record;

    #[test]
    fn summary_counts_errors_by_kind() {
        let mut records: Vec<CallRecord> = (0..10).map(|i| record(i, 100 + i * 10, 1000)).collect();
        records[0].error = Some(super::super::records::ErrorRecord {
            kind: ErrorKind::RateLimited,
            provider_code: None,
        });
        records[1].error = Some(super::super::records::ErrorRecord {
            kind: ErrorKind::HttpStatus,
            provider_code: None,
        });
        let summary = SliSummary::of(&records);
        assert_eq!(summary.requests, 10);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.rate_limited, 1);
        assert_eq!(summary.errors_by_kind.get("rate_limited"), Some(&1));
        assert_eq!(summary.errors_by_kind.get("http_status"), Some(&1));
        assert!((summary.error_rate - 0.2).abs() < 1e-9);
        assert!((summary.rate_limited_rate - 0.1).abs() < 1e-9);
    }

    #[test]
    fn summary_percentiles() {
        let records: Vec<CallRecord> = (1..=20).map(|i| record(i, i * 1000, 50_000)).collect();
        let summary = SliSummary::of(&records);
        assert_eq!(summary.ttft_us.samples, 20);
        assert_eq!(summary.ttft_us.p50, Some(10_000.0));
        assert_eq!(summary.ttft_us.p95, Some(19_000.0));
        assert_eq!(summary.ttft_us.p99, Some(20_000.0));
        assert_eq!(summary.e2e_us.p50, Some(50_000.0));
    }

    #[test]
    fn itl_is_pooled_over_calls() {
        let mut a = record(0, 100, 1000);
        a.itl_us = vec![10, 20];
        let mut b = record(1, 100, 1000);
        b.itl_us = vec![30, 40, 50];
        let summary = SliSummary::of([&a, &b]);
        assert_eq!(summary.itl_us.samples, 5);
        assert_eq!(summary.itl_us.p50, Some(30.0));
    }

    #[test]
    fn groups_put_requests_first() {
        let mut request = record(0, 100, 1000);
        request.role = Role::Request;
        let mut dependency = record(1, 100, 1000);
        dependency.component = "retrieval".into();
        let groups = groups(&[dependency, request]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].role, Role::Request);
        assert_eq!(groups[1].component, "retrieval");
    }
}
