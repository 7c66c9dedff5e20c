//! Attribution verdicts: which components explain an SLO breach or a
//! regression against a baseline, with bootstrap confidence intervals and
//! the evidence behind them. docs/attribution.md describes the method.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{
    bootstrap::{BootstrapConfig, ConfidenceInterval, salt},
    components,
    decompose::Phase,
    sample::{RequestSample, phase_of},
    slo::{Comparison, Sli, SloResult, SloSpec, SloStatus},
    stats, units,
};

/// Thresholds of the verdict rules. The defaults are documented in
/// docs/attribution.md.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictConfig {
    pub bootstrap: BootstrapConfig,
    /// Fewer requests in scope than this give "inconclusive".
    pub min_requests: usize,
    /// Fewer requests beyond an SLO threshold (or in a tail) than this
    /// give "inconclusive".
    pub min_tail: usize,
    /// A larger share of requests with lost bytes or events gives
    /// "inconclusive".
    pub max_loss_fraction: f64,
    /// A larger share of ambiguous links among the calls of the requests
    /// examined gives "inconclusive".
    pub max_ambiguous_fraction: f64,
    /// Largest number of components a breach may need to be explained.
    pub max_explaining_components: usize,
    /// A regression must exceed this fraction of the baseline value...
    pub min_regression_fraction: f64,
    /// ...and this many microseconds (latency SLIs).
    pub min_regression_us: f64,
    /// A component must carry at least this fraction of a regression...
    pub min_contribution_fraction: f64,
    /// ...and this many microseconds.
    pub min_contribution_us: f64,
    /// Named contributors must explain at least this fraction of a
    /// regression, or the verdict is "inconclusive".
    pub min_explained_fraction: f64,
    /// Output tokens per second at or below this fraction of the baseline
    /// is a throughput collapse.
    pub collapse_ratio: f64,
    /// A share-based contributor must hold at least this fraction of the
    /// phase or of the errors.
    pub min_share: f64,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        Self {
            bootstrap: BootstrapConfig::default(),
            min_requests: 10,
            min_tail: 3,
            max_loss_fraction: 0.10,
            max_ambiguous_fraction: 0.30,
            max_explaining_components: 3,
            min_regression_fraction: 0.10,
            min_regression_us: 20_000.0,
            min_contribution_fraction: 0.10,
            min_contribution_us: 10_000.0,
            min_explained_fraction: 0.60,
            collapse_ratio: 0.50,
            min_share: 0.20,
        }
    }
}

/// Run-wide facts that limit how far the samples can be trusted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunEvidence {
    /// Share of kernel events lost to a full ring buffer.
    pub event_loss_fraction: f64,
    /// Nodes without a result.
    pub missing_nodes: usize,
    pub nodes: usize,
    /// Outbound connections whose traffic the probe could not parse (TLS
    /// libraries it cannot read), which would hide calls inside the
    /// service's own time.
    pub opaque_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    SloBreach,
    Regression,
    ThroughputCollapse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictStatus {
    /// The contributors explain the breach or regression.
    Attributed,
    /// The evidence does not support naming a component, and `reason`
    /// explains why. Listed contributors are candidates only.
    Inconclusive,
}

/// A component that explains (part of) a breach or regression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contributor {
    pub component: String,
    /// The effect in words, such as "+1.90 s in requests at or above TTFT
    /// p95 compared with the baseline".
    pub effect: String,
    /// The effect as a number, in `unit`.
    pub value: f64,
    /// `us`, `us_per_token`, `fraction_of_budget`, `fraction_of_phase` or
    /// `fraction_of_errors`.
    pub unit: &'static str,
    /// Bootstrap interval of `value` at the verdict's confidence level,
    /// widened by ambiguous links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<ConfidenceInterval>,
}

/// Evidence behind a verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// Requests in scope with a value of the SLI.
    pub requests: usize,
    /// Requests beyond the threshold, or in the tail that is compared.
    pub tail_requests: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_requests: Option<usize>,
    /// Share of the requests examined with bytes the probe did not see,
    /// or of events lost in the kernel, whichever is larger.
    pub loss_fraction: f64,
    /// Outbound calls of the examined requests, and how many of them had
    /// an ambiguous link.
    pub linked_calls: usize,
    pub ambiguous_links: usize,
    pub missing_nodes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub trigger: Trigger,
    /// The objective or metric, such as `ttft.p95<=800 ms` or `ttft.p95`.
    pub subject: String,
    pub status: VerdictStatus,
    /// One sentence for people.
    pub summary: String,
    pub contributors: Vec<Contributor>,
    /// Two-sided level of every interval, such as 0.9.
    pub confidence_level: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub evidence: Evidence,
}

impl Verdict {
    /// Returns an inconclusive verdict without contributors, which the
    /// explain functions complete as far as the evidence allows.
    fn inconclusive(
        trigger: Trigger,
        subject: &str,
        summary: String,
        evidence: Evidence,
        config: &VerdictConfig,
    ) -> Self {
        Self {
            trigger,
            subject: subject.to_owned(),
            status: VerdictStatus::Inconclusive,
            summary,
            contributors: Vec::new(),
            confidence_level: config.bootstrap.level,
            reason: None,
            evidence,
        }
    }

    /// Returns an inconclusive verdict on a breached objective.
    fn breach_inconclusive(result: &SloResult, evidence: Evidence, config: &VerdictConfig) -> Self {
        let summary = format!(
            "{} is breached; the cause is inconclusive",
            result.objective
        );
        Self::inconclusive(
            Trigger::SloBreach,
            &result.objective,
            summary,
            evidence,
            config,
        )
    }
}

/// A metric compared with the baseline, whether or not it regressed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineComparison {
    /// Such as `ttft.p95` or `error_rate`.
    pub metric: String,
    pub sli: Sli,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub baseline: f64,
    pub current: f64,
    /// `current - baseline`, in the SLI's unit.
    pub change: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<ConfidenceInterval>,
    pub regressed: bool,
    pub baseline_requests: usize,
    pub requests: usize,
}

fn evidence_for(samples: &[&RequestSample], tail: usize, run: &RunEvidence) -> Evidence {
    let lossy = samples.iter().filter(|s| s.missing_bytes > 0).count();
    let sample_loss = if samples.is_empty() {
        0.0
    } else {
        lossy as f64 / samples.len() as f64
    };
    Evidence {
        requests: samples.len(),
        tail_requests: tail,
        baseline_requests: None,
        loss_fraction: sample_loss.max(run.event_loss_fraction),
        linked_calls: samples.iter().map(|s| s.linked_calls).sum(),
        ambiguous_links: samples.iter().map(|s| s.ambiguous_calls).sum(),
        missing_nodes: run.missing_nodes,
    }
}

/// Returns why the evidence is too weak to name a component, if it is.
fn weak_evidence(evidence: &Evidence, config: &VerdictConfig) -> Option<String> {
    if evidence.requests < config.min_requests {
        return Some(format!(
            "only {} requests were measured; at least {} are needed (use a longer --duration)",
            evidence.requests, config.min_requests
        ));
    }
    if evidence.tail_requests < config.min_tail {
        return Some(format!(
            "only {} requests are in the tail being explained; at least {} are needed",
            evidence.tail_requests, config.min_tail
        ));
    }
    if evidence.loss_fraction > config.max_loss_fraction {
        return Some(format!(
            "{} of the requests or events were partly lost (drops), more than {}",
            units::percent(evidence.loss_fraction),
            units::percent(config.max_loss_fraction)
        ));
    }
    if evidence.linked_calls > 0 {
        let ambiguous = evidence.ambiguous_links as f64 / evidence.linked_calls as f64;
        if ambiguous > config.max_ambiguous_fraction {
            return Some(format!(
                "{} of the outbound calls of these requests could belong to several \
                 concurrent requests (ambiguous links), more than {}; propagate \
                 traceparent to link them",
                units::percent(ambiguous),
                units::percent(config.max_ambiguous_fraction)
            ));
        }
    }
    None
}

/// Components present in the phase of any sample, outbound first.
fn components_in(samples: &[&RequestSample], phase: Phase) -> Vec<String> {
    let names: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| s.parts(phase).iter().map(|p| p.component.clone()))
        .collect();
    names.into_iter().collect()
}

fn component_label(component: &str) -> String {
    match component {
        components::SERVICE => "service (own time)".to_owned(),
        components::RUN_QUEUE => "run-queue wait".to_owned(),
        components::CPU_THROTTLING => "CPU throttling (estimate)".to_owned(),
        components::NETWORK => "network (TCP loss recovery)".to_owned(),
        other => other.to_owned(),
    }
}

/// Blocks a verdict that would blame the service's own time while calls
/// on unparsed connections may hide inside it.
fn opaque_guard(contributors: &[Contributor], run: &RunEvidence) -> Option<String> {
    let blames_own_time = contributors
        .iter()
        .any(|c| components::OWN_TIME.contains(&c.component.as_str()));
    (blames_own_time && run.opaque_connections > 0).then(|| {
        format!(
            "the service's own time looks responsible, but {} outbound connections carried \
             traffic the probe could not parse (for example TLS it cannot read), and calls on \
             them would count as own time",
            run.opaque_connections
        )
    })
}

/// Explains a breached latency SLO (TTFT, TTFB, E2E) with the smallest
/// set of components whose removal would bring the percentile within the
/// target.
pub fn explain_latency_breach(
    spec: &SloSpec,
    result: &SloResult,
    samples: &[&RequestSample],
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Verdict {
    let phase = phase_of(spec.sli).unwrap_or(Phase::E2e);
    let percentile = spec.percentile.unwrap_or(95.0);
    let target = spec.target;
    let with_value: Vec<&RequestSample> = samples
        .iter()
        .copied()
        .filter(|s| s.value(spec.sli).is_some() && !s.parts(phase).is_empty())
        .collect();
    let metric = |s: &RequestSample| s.value(spec.sli).unwrap_or(0.0);
    let tail: Vec<&RequestSample> = with_value
        .iter()
        .copied()
        .filter(|s| metric(s) > target)
        .collect();
    let evidence = evidence_for(&with_value, tail.len(), run);
    let mut verdict = Verdict::breach_inconclusive(result, evidence, config);
    if let Some(reason) = weak_evidence(&verdict.evidence, config) {
        verdict.reason = Some(reason);
        return verdict;
    }

    // Tail mean of each component, with bootstrap intervals whose low end
    // counts only unambiguous calls and high end every candidate call.
    let names = components_in(&tail, phase);
    let mut ranked: Vec<(String, f64, Option<ConfidenceInterval>)> = names
        .iter()
        .map(|name| {
            let mean = stats::mean(
                &tail
                    .iter()
                    .map(|s| s.part(phase, name).0)
                    .collect::<Vec<_>>(),
            )
            .unwrap_or(0.0);
            let interval =
                tail_mean_interval(&with_value, name, phase, |s| metric(s) > target, config);
            (name.clone(), mean, interval)
        })
        .filter(|(_, mean, interval)| *mean > 0.0 && interval.is_some_and(|ci| ci.low > 0.0))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

    let mut chosen = None;
    for size in 1..=config.max_explaining_components.min(ranked.len()) {
        let set: Vec<&str> = ranked[..size].iter().map(|(n, _, _)| n.as_str()).collect();
        let reduced: Vec<f64> = with_value
            .iter()
            .map(|s| metric(s) - set.iter().map(|n| s.part(phase, n).0).sum::<f64>())
            .collect();
        if stats::percentile(&reduced, percentile).is_some_and(|q| q <= target) {
            chosen = Some(size);
            break;
        }
    }

    let to_contributor =
        |(name, mean, interval): &(String, f64, Option<ConfidenceInterval>)| Contributor {
            component: name.clone(),
            effect: format!(
                "uses {} of the {} budget ({} of {}) in the {} requests beyond it",
                units::percent(mean / target),
                spec.sli.name().to_uppercase(),
                units::duration_us(*mean),
                units::duration_us(target),
                tail.len()
            ),
            value: mean / target,
            unit: "fraction_of_budget",
            interval: interval.map(|ci| ConfidenceInterval {
                low: ci.low / target,
                high: ci.high / target,
            }),
        };

    match chosen {
        Some(size) => {
            verdict.contributors = ranked[..size].iter().map(to_contributor).collect();
            if let Some(reason) = opaque_guard(&verdict.contributors, run) {
                verdict.reason = Some(reason);
                return verdict;
            }
            verdict.status = VerdictStatus::Attributed;
            verdict.summary = format!(
                "{} is breached ({}); {} explain{} it",
                result.objective,
                result.measured_text(),
                join_labels(&verdict.contributors),
                if size == 1 { "s" } else { "" }
            );
        }
        None => {
            verdict.contributors = ranked
                .iter()
                .take(config.max_explaining_components)
                .map(to_contributor)
                .collect();
            verdict.reason = Some(format!(
                "no set of up to {} components brings {} within the target when removed; \
                 the time is spread over many components",
                config.max_explaining_components,
                spec.metric()
            ));
        }
    }
    verdict
}

fn join_labels(contributors: &[Contributor]) -> String {
    let labels: Vec<String> = contributors
        .iter()
        .map(|c| component_label(&c.component))
        .collect();
    match labels.len() {
        0 => String::new(),
        1 => labels[0].clone(),
        _ => format!(
            "{} and {} together",
            labels[..labels.len() - 1].join(", "),
            labels[labels.len() - 1]
        ),
    }
}

/// Bootstrap interval of a component's mean critical time over the
/// samples `in_tail` selects; low end from unambiguous calls only, high
/// end from every candidate call.
fn tail_mean_interval(
    samples: &[&RequestSample],
    component: &str,
    phase: Phase,
    in_tail: impl Fn(&RequestSample) -> bool,
    config: &VerdictConfig,
) -> Option<ConfidenceInterval> {
    let mean_over = |indices: &[usize], pick: &dyn Fn(&RequestSample) -> f64| {
        let values: Vec<f64> = indices
            .iter()
            .map(|&i| samples[i])
            .filter(|s| in_tail(s))
            .map(pick)
            .collect();
        stats::mean(&values)
    };
    let seed = salt(component) ^ salt(phase.name());
    let low = config.bootstrap.interval(samples.len(), seed, |indices| {
        mean_over(indices, &|s| s.part(phase, component).1)
    })?;
    let high = config.bootstrap.interval(samples.len(), seed, |indices| {
        mean_over(indices, &|s| s.part(phase, component).2)
    })?;
    Some(ConfidenceInterval {
        low: low.low,
        high: high.high,
    })
}

/// Explains a breached generation-phase SLO (ITL, TPOT, tokens per
/// second) by each component's share of the generation phase of the
/// requests on the wrong side of the target.
pub fn explain_generation_breach(
    spec: &SloSpec,
    result: &SloResult,
    samples: &[&RequestSample],
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Verdict {
    let phase = Phase::Generation;
    let bad = |s: &RequestSample| match (s.value(spec.sli), spec.comparison) {
        (Some(v), Comparison::AtMost) => v > spec.target,
        (Some(v), Comparison::AtLeast) => v < spec.target,
        (None, _) => false,
    };
    let with_value: Vec<&RequestSample> = samples
        .iter()
        .copied()
        .filter(|s| s.value(spec.sli).is_some() && s.phase_len_us(phase) > 0.0)
        .collect();
    let tail: Vec<&RequestSample> = with_value.iter().copied().filter(|s| bad(s)).collect();
    let evidence = evidence_for(&with_value, tail.len(), run);
    let mut verdict = Verdict::breach_inconclusive(result, evidence, config);
    if let Some(reason) = weak_evidence(&verdict.evidence, config) {
        verdict.reason = Some(reason);
        return verdict;
    }

    let share = |s: &RequestSample, name: &str, pick: usize| {
        let (est, low, high) = s.part(phase, name);
        let value = [est, low, high][pick];
        value / s.phase_len_us(phase)
    };
    let names = components_in(&tail, phase);
    let mut ranked: Vec<Contributor> = Vec::new();
    for name in &names {
        let mean =
            stats::mean(&tail.iter().map(|s| share(s, name, 0)).collect::<Vec<_>>()).unwrap_or(0.0);
        let seed = salt(name) ^ salt("generation-share");
        let mean_of = |indices: &[usize], pick: usize| {
            let values: Vec<f64> = indices
                .iter()
                .map(|&i| with_value[i])
                .filter(|s| bad(s))
                .map(|s| share(s, name, pick))
                .collect();
            stats::mean(&values)
        };
        let low = config
            .bootstrap
            .interval(with_value.len(), seed, |ix| mean_of(ix, 1));
        let high = config
            .bootstrap
            .interval(with_value.len(), seed, |ix| mean_of(ix, 2));
        let interval = low.zip(high).map(|(l, h)| ConfidenceInterval {
            low: l.low,
            high: h.high,
        });
        if mean >= config.min_share && interval.is_some_and(|ci| ci.low > 0.0) {
            ranked.push(Contributor {
                component: name.clone(),
                effect: format!(
                    "accounts for {} of the generation time of the {} requests that miss the target",
                    units::percent(mean),
                    tail.len()
                ),
                value: mean,
                unit: "fraction_of_phase",
                interval,
            });
        }
    }
    ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
    let covered: f64 = ranked.iter().map(|c| c.value).sum();
    verdict.contributors = ranked;
    if verdict.contributors.is_empty() || covered < config.min_explained_fraction {
        verdict.reason = Some(format!(
            "no component holds at least {} of the generation phase of the slow requests",
            units::percent(config.min_share)
        ));
        return verdict;
    }
    if let Some(reason) = opaque_guard(&verdict.contributors, run) {
        verdict.reason = Some(reason);
        return verdict;
    }
    verdict.status = VerdictStatus::Attributed;
    verdict.summary = format!(
        "{} is breached ({}); {} dominate{} the generation phase",
        result.objective,
        result.measured_text(),
        join_labels(&verdict.contributors),
        if verdict.contributors.len() == 1 {
            "s"
        } else {
            ""
        }
    );
    verdict
}

/// Keeps the requests with a known outcome, because those in flight at
/// the window's end, or whose end the probe did not see, have neither
/// failed nor succeeded as far as the run can tell.
fn finished<'a>(samples: &[&'a RequestSample]) -> Vec<&'a RequestSample> {
    samples
        .iter()
        .copied()
        .filter(|s| !s.in_flight && !s.unmeasured)
        .collect()
}

/// Explains a breached error-rate or rate-limited SLO by the component
/// whose calls failed inside the failed requests.
pub fn explain_error_breach(
    spec: &SloSpec,
    result: &SloResult,
    samples: &[&RequestSample],
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Verdict {
    let samples = finished(samples);
    let samples = samples.as_slice();
    let counts = |s: &RequestSample| match spec.sli {
        Sli::RateLimitedRate => s.error_kind.as_deref() == Some("rate_limited"),
        _ => s.error_kind.is_some(),
    };
    let failed: Vec<&RequestSample> = samples.iter().copied().filter(|s| counts(s)).collect();
    let evidence = evidence_for(samples, failed.len(), run);
    let mut verdict = Verdict::breach_inconclusive(result, evidence, config);
    if let Some(reason) = weak_evidence(&verdict.evidence, config) {
        verdict.reason = Some(reason);
        return verdict;
    }
    verdict.contributors = error_causes(samples, &counts, config);
    if verdict.contributors.is_empty() {
        verdict.reason = Some(format!(
            "no single component causes at least {} of the errors",
            units::percent(config.min_share)
        ));
        return verdict;
    }
    verdict.status = VerdictStatus::Attributed;
    verdict.summary = format!(
        "{} is breached ({}); failures of {} cause most errors",
        result.objective,
        result.measured_text(),
        join_labels(&verdict.contributors)
    );
    verdict
}

fn error_causes(
    samples: &[&RequestSample],
    counts: &dyn Fn(&RequestSample) -> bool,
    config: &VerdictConfig,
) -> Vec<Contributor> {
    let failed: Vec<&RequestSample> = samples.iter().copied().filter(|s| counts(s)).collect();
    let causes: BTreeSet<String> = failed
        .iter()
        .map(|s| {
            s.error_cause
                .clone()
                .unwrap_or_else(|| components::SERVICE.to_owned())
        })
        .collect();
    let mut out = Vec::new();
    for cause in causes {
        let is_cause = |s: &RequestSample| {
            counts(s) && s.error_cause.as_deref().unwrap_or(components::SERVICE) == cause.as_str()
        };
        let n_cause = failed.iter().filter(|s| is_cause(s)).count();
        let share = n_cause as f64 / failed.len() as f64;
        let interval =
            config
                .bootstrap
                .interval(samples.len(), salt(&cause) ^ salt("errors"), |indices| {
                    let failed = indices.iter().filter(|&&i| counts(samples[i])).count();
                    (failed > 0).then(|| {
                        indices.iter().filter(|&&i| is_cause(samples[i])).count() as f64
                            / failed as f64
                    })
                });
        if share >= config.min_share && interval.is_some_and(|ci| ci.low > 0.0) {
            out.push(Contributor {
                component: cause.clone(),
                effect: format!(
                    "causes {} of the failed requests ({n_cause} of {})",
                    units::percent(share),
                    failed.len()
                ),
                value: share,
                unit: "fraction_of_errors",
                interval,
            });
        }
    }
    out.sort_by(|a, b| b.value.total_cmp(&a.value));
    out
}

/// Compares one SLI with the baseline and explains a regression.
///
/// Latency SLIs compare the percentile as `current - baseline`, with an
/// interval from a two-sample bootstrap. Each component's effect is the
/// change in its mean critical time among requests at or beyond the
/// percentile.
/// Returns the comparison, and a verdict when the SLI regressed.
pub fn compare_latency(
    sli: Sli,
    percentile: f64,
    current: &[&RequestSample],
    baseline: &[&RequestSample],
    baseline_name: &str,
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Option<(BaselineComparison, Option<Verdict>)> {
    let phase = phase_of(sli)?;
    let current: Vec<&RequestSample> = current
        .iter()
        .copied()
        .filter(|s| s.value(sli).is_some())
        .collect();
    let baseline: Vec<&RequestSample> = baseline
        .iter()
        .copied()
        .filter(|s| s.value(sli).is_some())
        .collect();
    let value = |s: &RequestSample| s.value(sli).unwrap_or(0.0);
    let q_current = stats::percentile(
        &current.iter().map(|s| value(s)).collect::<Vec<_>>(),
        percentile,
    )?;
    let q_baseline = stats::percentile(
        &baseline.iter().map(|s| value(s)).collect::<Vec<_>>(),
        percentile,
    )?;
    let metric = format!("{}.p{percentile}", sli.name());
    let lower_is_better = sli != Sli::TokensPerSec;

    let quantile_of = |samples: &[&RequestSample], indices: &[usize]| {
        stats::percentile(
            &indices
                .iter()
                .map(|&i| value(samples[i]))
                .collect::<Vec<_>>(),
            percentile,
        )
    };
    let interval = config.bootstrap.interval_two_sample(
        current.len(),
        baseline.len(),
        salt(&metric) ^ salt("change"),
        |a, b| Some(quantile_of(&current, a)? - quantile_of(&baseline, b)?),
    );
    let change = q_current - q_baseline;
    let worse = if lower_is_better { change } else { -change };
    let worse_interval_excludes_zero = interval.is_some_and(|ci| {
        if lower_is_better {
            ci.low > 0.0
        } else {
            ci.high < 0.0
        }
    });
    let material = worse >= config.min_regression_fraction * q_baseline.abs()
        && (!sli.is_latency() || worse >= config.min_regression_us);
    let regressed = worse_interval_excludes_zero
        && material
        && current.len() >= config.min_requests
        && baseline.len() >= config.min_requests;
    let comparison = BaselineComparison {
        metric: metric.clone(),
        sli,
        percentile: Some(percentile),
        baseline: q_baseline,
        current: q_current,
        change,
        interval,
        regressed,
        baseline_requests: baseline.len(),
        requests: current.len(),
    };
    if !regressed {
        return Some((comparison, None));
    }

    let verdict = if sli == Sli::TokensPerSec {
        explain_throughput_regression(&comparison, &current, &baseline, baseline_name, run, config)
    } else {
        explain_latency_regression(
            &comparison,
            phase,
            &current,
            &baseline,
            baseline_name,
            run,
            config,
        )
    };
    Some((comparison, Some(verdict)))
}

fn explain_latency_regression(
    comparison: &BaselineComparison,
    phase: Phase,
    current: &[&RequestSample],
    baseline: &[&RequestSample],
    baseline_name: &str,
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Verdict {
    let sli = comparison.sli;
    let percentile = comparison.percentile.unwrap_or(95.0);
    let value = |s: &RequestSample| s.value(sli).unwrap_or(0.0);
    let current_tail: Vec<&RequestSample> = current
        .iter()
        .copied()
        .filter(|s| value(s) >= comparison.current && !s.parts(phase).is_empty())
        .collect();
    let baseline_tail: Vec<&RequestSample> = baseline
        .iter()
        .copied()
        .filter(|s| value(s) >= comparison.baseline && !s.parts(phase).is_empty())
        .collect();
    let mut evidence = evidence_for(current, current_tail.len(), run);
    evidence.baseline_requests = Some(baseline.len());
    let metric_label = format!("{} p{percentile}", sli.name().to_uppercase());
    let summary = format!(
        "{metric_label} regressed by {} compared with baseline {baseline_name:?}; the cause is inconclusive",
        units::signed_duration_us(comparison.change)
    );
    let mut verdict = Verdict::inconclusive(
        Trigger::Regression,
        &comparison.metric,
        summary,
        evidence,
        config,
    );
    if let Some(reason) = weak_evidence(&verdict.evidence, config) {
        verdict.reason = Some(reason);
        return verdict;
    }
    if baseline_tail.len() < config.min_tail {
        verdict.reason = Some(format!(
            "the baseline has only {} decomposed requests at or above its p{percentile}",
            baseline_tail.len()
        ));
        return verdict;
    }

    let tail_mean = |samples: &[&RequestSample]| {
        stats::mean(&samples.iter().map(|s| value(s)).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let total_change = tail_mean(&current_tail) - tail_mean(&baseline_tail);
    let mut names: BTreeSet<String> = components_in(&current_tail, phase).into_iter().collect();
    names.extend(components_in(&baseline_tail, phase));

    let names: Vec<String> = names.into_iter().collect();
    let mean_part = |tail: &[&RequestSample], name: &str, pick: usize| {
        stats::mean(
            &tail
                .iter()
                .map(|s| {
                    let (est, low, high) = s.part(phase, name);
                    [est, low, high][pick]
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0)
    };
    // One resampling loop serves every component, so the tails of each
    // resample are found once. Values 2i and 2i+1 are the low and high
    // change of component i.
    let intervals = config.bootstrap.intervals_two_sample(
        current.len(),
        baseline.len(),
        2 * names.len(),
        salt(&comparison.metric),
        |a, b, values| {
            let (Some(cur_tail), Some(base_tail)) = (
                resampled_tail(current, a, sli, percentile),
                resampled_tail(baseline, b, sli, percentile),
            ) else {
                return false;
            };
            for (i, name) in names.iter().enumerate() {
                let base = mean_part(&base_tail, name, 0);
                values[2 * i] = mean_part(&cur_tail, name, 1) - base;
                values[2 * i + 1] = mean_part(&cur_tail, name, 2) - base;
            }
            true
        },
    );

    let mut contributors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let change = mean_part(&current_tail, name, 0) - mean_part(&baseline_tail, name, 0);
        let interval =
            intervals[2 * i]
                .zip(intervals[2 * i + 1])
                .map(|(l, h)| ConfidenceInterval {
                    low: l.low,
                    high: h.high,
                });
        let material = change >= config.min_contribution_us
            && change >= config.min_contribution_fraction * total_change.max(0.0);
        if material && interval.is_some_and(|ci| ci.low > 0.0) {
            contributors.push(Contributor {
                component: name.clone(),
                effect: format!(
                    "{} in requests at or above {metric_label} compared with baseline {baseline_name:?}",
                    units::signed_duration_us(change)
                ),
                value: change,
                unit: "us",
                interval,
            });
        }
    }
    contributors.sort_by(|a, b| b.value.total_cmp(&a.value));
    let explained: f64 = contributors.iter().map(|c| c.value).sum();
    verdict.contributors = contributors;
    if verdict.contributors.is_empty() {
        verdict.reason = Some(
            "no component's time changed by a clear, material amount; the regression is \
             spread over components or within noise"
                .to_owned(),
        );
        return verdict;
    }
    if total_change <= 0.0 || explained < config.min_explained_fraction * total_change {
        verdict.reason = Some(format!(
            "the named components explain {} of the {} change in the tail; another cause \
             may be at work",
            units::duration_us(explained),
            units::duration_us(total_change.max(0.0))
        ));
        return verdict;
    }
    if let Some(reason) = opaque_guard(&verdict.contributors, run) {
        verdict.reason = Some(reason);
        return verdict;
    }
    verdict.status = VerdictStatus::Attributed;
    verdict.summary = format!(
        "{metric_label} is {} compared with baseline {baseline_name:?}; {} explain{} it",
        units::signed_duration_us(comparison.change),
        join_labels(&verdict.contributors),
        if verdict.contributors.len() == 1 {
            "s"
        } else {
            ""
        }
    );
    verdict
}

/// Returns the requests of a resample at or beyond its own percentile.
fn resampled_tail<'a>(
    samples: &[&'a RequestSample],
    indices: &[usize],
    sli: Sli,
    percentile: f64,
) -> Option<Vec<&'a RequestSample>> {
    let picked: Vec<&RequestSample> = indices.iter().map(|&i| samples[i]).collect();
    let values: Vec<f64> = picked.iter().map(|s| s.value(sli).unwrap_or(0.0)).collect();
    let q = stats::percentile(&values, percentile)?;
    Some(
        picked
            .into_iter()
            .filter(|s| s.value(sli).unwrap_or(0.0) >= q)
            .collect(),
    )
}

/// Explains lower output tokens per second by the change in each
/// component's generation time per output token.
fn explain_throughput_regression(
    comparison: &BaselineComparison,
    current: &[&RequestSample],
    baseline: &[&RequestSample],
    baseline_name: &str,
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Verdict {
    let phase = Phase::Generation;
    fn decomposed<'a>(samples: &[&'a RequestSample]) -> Vec<&'a RequestSample> {
        samples
            .iter()
            .copied()
            .filter(|s| s.output_tokens.unwrap_or(0) > 0 && s.phase_len_us(Phase::Generation) > 0.0)
            .collect()
    }
    let current_decomposed = decomposed(current);
    let baseline_decomposed = decomposed(baseline);
    let mut evidence = evidence_for(current, current_decomposed.len(), run);
    evidence.baseline_requests = Some(baseline.len());
    let ratio = if comparison.baseline > 0.0 {
        comparison.current / comparison.baseline
    } else {
        1.0
    };
    let collapsed = ratio <= config.collapse_ratio;
    let trigger = if collapsed {
        Trigger::ThroughputCollapse
    } else {
        Trigger::Regression
    };
    let summary = format!(
        "output tokens per second fell from {} to {} ({} of baseline {baseline_name:?}); \
         the cause is inconclusive",
        units::tokens_per_sec(comparison.baseline),
        units::tokens_per_sec(comparison.current),
        units::percent(ratio)
    );
    let mut verdict = Verdict::inconclusive(trigger, &comparison.metric, summary, evidence, config);
    if let Some(reason) = weak_evidence(&verdict.evidence, config) {
        verdict.reason = Some(reason);
        return verdict;
    }

    let per_token = |s: &RequestSample, name: &str, pick: usize| {
        let (est, low, high) = s.part(phase, name);
        [est, low, high][pick] / s.output_tokens.unwrap_or(1).max(1) as f64
    };
    let mut names: BTreeSet<String> = components_in(&current_decomposed, phase)
        .into_iter()
        .collect();
    names.extend(components_in(&baseline_decomposed, phase));
    let total_per_token = |samples: &[&RequestSample]| {
        stats::mean(
            &samples
                .iter()
                .map(|s| s.phase_len_us(phase) / s.output_tokens.unwrap_or(1).max(1) as f64)
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0)
    };
    let total_change = total_per_token(&current_decomposed) - total_per_token(&baseline_decomposed);
    let mut contributors = Vec::new();
    for name in &names {
        let mean = |samples: &[&RequestSample], pick: usize| {
            stats::mean(
                &samples
                    .iter()
                    .map(|s| per_token(s, name, pick))
                    .collect::<Vec<_>>(),
            )
        };
        let change = mean(&current_decomposed, 0).unwrap_or(0.0)
            - mean(&baseline_decomposed, 0).unwrap_or(0.0);
        let seed = salt(name) ^ salt("per-token");
        let replicate = |a: &[usize], b: &[usize], pick: usize| {
            let cur: Vec<&RequestSample> = a.iter().map(|&i| current_decomposed[i]).collect();
            let base: Vec<&RequestSample> = b.iter().map(|&i| baseline_decomposed[i]).collect();
            Some(mean(&cur, pick)? - mean(&base, 0)?)
        };
        let low = config.bootstrap.interval_two_sample(
            current_decomposed.len(),
            baseline_decomposed.len(),
            seed,
            |a, b| replicate(a, b, 1),
        );
        let high = config.bootstrap.interval_two_sample(
            current_decomposed.len(),
            baseline_decomposed.len(),
            seed,
            |a, b| replicate(a, b, 2),
        );
        let interval = low.zip(high).map(|(l, h)| ConfidenceInterval {
            low: l.low,
            high: h.high,
        });
        if change > 0.0
            && change >= config.min_contribution_fraction * total_change.max(0.0)
            && interval.is_some_and(|ci| ci.low > 0.0)
        {
            contributors.push(Contributor {
                component: name.clone(),
                effect: format!(
                    "{} per output token in the generation phase compared with baseline {baseline_name:?}",
                    units::signed_duration_us(change)
                ),
                value: change,
                unit: "us_per_token",
                interval,
            });
        }
    }
    contributors.sort_by(|a, b| b.value.total_cmp(&a.value));
    let explained: f64 = contributors.iter().map(|c| c.value).sum();
    verdict.contributors = contributors;
    if verdict.contributors.is_empty()
        || total_change <= 0.0
        || explained < config.min_explained_fraction * total_change
    {
        verdict.reason = Some(
            "no component's generation time per token rose by a clear amount that explains \
             the drop"
                .to_owned(),
        );
        return verdict;
    }
    if let Some(reason) = opaque_guard(&verdict.contributors, run) {
        verdict.reason = Some(reason);
        return verdict;
    }
    verdict.status = VerdictStatus::Attributed;
    verdict.summary = format!(
        "output tokens per second fell from {} to {} ({} of baseline {baseline_name:?}){}; {} explain{} it",
        units::tokens_per_sec(comparison.baseline),
        units::tokens_per_sec(comparison.current),
        units::percent(ratio),
        if collapsed {
            ", a throughput collapse"
        } else {
            ""
        },
        join_labels(&verdict.contributors),
        if verdict.contributors.len() == 1 {
            "s"
        } else {
            ""
        }
    );
    verdict
}

/// Compares the error rate with the baseline: a regression when the
/// interval of the difference excludes zero and the rate rose by at least
/// one percentage point and by half.
pub fn compare_error_rate(
    current: &[&RequestSample],
    baseline: &[&RequestSample],
    baseline_name: &str,
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Option<(BaselineComparison, Option<Verdict>)> {
    let (current, baseline) = (finished(current), finished(baseline));
    let (current, baseline) = (current.as_slice(), baseline.as_slice());
    let rate = |samples: &[&RequestSample], indices: &[usize]| {
        (!indices.is_empty()).then(|| {
            indices
                .iter()
                .filter(|&&i| samples[i].error_kind.is_some())
                .count() as f64
                / indices.len() as f64
        })
    };
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let current_rate = rate(current, &all(current.len()))?;
    let baseline_rate = rate(baseline, &all(baseline.len()))?;
    let interval = config.bootstrap.interval_two_sample(
        current.len(),
        baseline.len(),
        salt("error_rate"),
        |a, b| Some(rate(current, a)? - rate(baseline, b)?),
    );
    let change = current_rate - baseline_rate;
    let regressed = interval.is_some_and(|ci| ci.low > 0.0)
        && change >= 0.01
        && change >= 0.5 * baseline_rate
        && current.len() >= config.min_requests
        && baseline.len() >= config.min_requests;
    let comparison = BaselineComparison {
        metric: "error_rate".to_owned(),
        sli: Sli::ErrorRate,
        percentile: None,
        baseline: baseline_rate,
        current: current_rate,
        change,
        interval,
        regressed,
        baseline_requests: baseline.len(),
        requests: current.len(),
    };
    if !regressed {
        return Some((comparison, None));
    }
    let failed = current.iter().filter(|s| s.error_kind.is_some()).count();
    let mut evidence = evidence_for(current, failed, run);
    evidence.baseline_requests = Some(baseline.len());
    let contributors = error_causes(current, &|s: &RequestSample| s.error_kind.is_some(), config);
    let status = if contributors.is_empty() {
        VerdictStatus::Inconclusive
    } else {
        VerdictStatus::Attributed
    };
    let verdict = Verdict {
        trigger: Trigger::Regression,
        subject: "error_rate".to_owned(),
        status,
        summary: format!(
            "the error rate rose from {} to {} compared with baseline {baseline_name:?}{}",
            units::percent(baseline_rate),
            units::percent(current_rate),
            if contributors.is_empty() {
                "; the cause is inconclusive".to_owned()
            } else {
                format!(
                    "; failures of {} cause most errors",
                    join_labels(&contributors)
                )
            }
        ),
        reason: contributors
            .is_empty()
            .then(|| "no single component causes most of the failed requests".to_owned()),
        contributors,
        confidence_level: config.bootstrap.level,
        evidence,
    };
    Some((comparison, Some(verdict)))
}

/// Explains one evaluated SLO when it is breached.
pub fn explain_slo(
    spec: &SloSpec,
    result: &SloResult,
    samples: &[&RequestSample],
    run: &RunEvidence,
    config: &VerdictConfig,
) -> Option<Verdict> {
    if result.status != SloStatus::Breached {
        return None;
    }
    Some(match spec.sli {
        Sli::Ttft | Sli::Ttfb | Sli::E2e => {
            explain_latency_breach(spec, result, samples, run, config)
        }
        Sli::Itl | Sli::Tpot | Sli::TokensPerSec => {
            explain_generation_breach(spec, result, samples, run, config)
        }
        Sli::ErrorRate | Sli::RateLimitedRate => {
            explain_error_breach(spec, result, samples, run, config)
        }
    })
}
