//! SLO objectives from `--slo` flags, and their evaluation: measured
//! value, breach, and error-budget consumption over the window.
//!
//! Syntax: `[SCOPE/]SLI[.pNN]OP TARGET`, where OP is `=` (the SLI's
//! natural direction), `<=` or `>=`. Examples: `ttft.p95=800ms`,
//! `e2e.p99<=8s`, `error_rate=1%`, `tokens_per_sec.p50>=20`,
//! `outbound/ttft.p95=600ms`.

use std::fmt;

use serde::Serialize;

use super::{
    records::{CallRecord, Role},
    stats, units,
};

/// A service level indicator that an SLO can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    Ttft,
    Ttfb,
    Itl,
    Tpot,
    E2e,
    TokensPerSec,
    ErrorRate,
    RateLimitedRate,
}

impl Sli {
    pub const NAMES: [(&'static str, Sli); 8] = [
        ("ttft", Sli::Ttft),
        ("ttfb", Sli::Ttfb),
        ("itl", Sli::Itl),
        ("tpot", Sli::Tpot),
        ("e2e", Sli::E2e),
        ("tokens_per_sec", Sli::TokensPerSec),
        ("error_rate", Sli::ErrorRate),
        ("rate_limited_rate", Sli::RateLimitedRate),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, sli)| *sli == self)
            .map_or("?", |(name, _)| name)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, sli)| *sli)
    }

    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Sli::Ttft | Sli::Ttfb | Sli::Itl | Sli::Tpot | Sli::E2e
        )
    }

    pub fn is_ratio(self) -> bool {
        matches!(self, Sli::ErrorRate | Sli::RateLimitedRate)
    }

    /// Returns the comparison that `=` means for this SLI.
    fn natural_comparison(self) -> Comparison {
        if self == Sli::TokensPerSec {
            Comparison::AtLeast
        } else {
            Comparison::AtMost
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    AtMost,
    AtLeast,
}

impl Comparison {
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::AtMost => "<=",
            Comparison::AtLeast => ">=",
        }
    }
}

/// Set of calls an SLO applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloScope {
    /// The run's requests: inbound requests when there are any, else the
    /// outbound LLM calls.
    #[default]
    Requests,
    /// Inbound requests only.
    Inbound,
    /// Outbound LLM generation calls only.
    Outbound,
}

impl SloScope {
    pub fn includes(self, record: &CallRecord) -> bool {
        match self {
            SloScope::Requests => record.role == Role::Request,
            SloScope::Inbound => {
                record.role == Role::Request
                    && record.direction == llmslo_schema::Direction::Inbound
            }
            SloScope::Outbound => {
                record.direction == llmslo_schema::Direction::Outbound
                    && record.is_generation_call()
            }
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            SloScope::Requests => "",
            SloScope::Inbound => "inbound/",
            SloScope::Outbound => "outbound/",
        }
    }
}

/// One objective to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloSpec {
    /// The flag text, or the OpenSLO `metadata.name` (with the objective's
    /// `displayName` when it has one).
    pub name: String,
    pub scope: SloScope,
    pub sli: Sli,
    /// Percentile for latency and throughput SLIs, such as 95.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub comparison: Comparison,
    /// Microseconds for latencies, tokens per second for throughput, a
    /// fraction from 0 to 1 for rates.
    pub target: f64,
}

impl fmt::Display for SloSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.scope.prefix(), self.sli.name())?;
        if let Some(percentile) = self.percentile {
            write!(f, ".p{percentile}")?;
        }
        write!(f, "{}{}", self.comparison.symbol(), self.target_text())
    }
}

impl SloSpec {
    pub fn target_text(&self) -> String {
        if self.sli.is_latency() {
            units::duration_us(self.target)
        } else if self.sli.is_ratio() {
            units::percent(self.target)
        } else {
            units::tokens_per_sec(self.target)
        }
    }

    /// Statistic label such as `ttft.p95` or `error_rate`.
    pub fn metric(&self) -> String {
        match self.percentile {
            Some(percentile) => format!("{}.p{percentile}", self.sli.name()),
            None => self.sli.name().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SloParseError {
    #[error(
        "invalid --slo {text:?}: expected [SCOPE/]SLI[.pNN]=TARGET, for example \
         ttft.p95=800ms, error_rate=1% or tokens_per_sec.p50>=20"
    )]
    Syntax { text: String },
    #[error(
        "invalid --slo {text:?}: unknown SLI {sli:?}; use one of ttft, ttfb, itl, tpot, e2e, \
         tokens_per_sec, error_rate, rate_limited_rate"
    )]
    UnknownSli { text: String, sli: String },
    #[error("invalid --slo {text:?}: unknown scope {scope:?}; use inbound/ or outbound/")]
    UnknownScope { text: String, scope: String },
    #[error(
        "invalid --slo {text:?}: {sli} needs a percentile such as {sli}.p95 \
         (pNN with NN greater than 0 and less than 100)"
    )]
    MissingPercentile { text: String, sli: String },
    #[error("invalid --slo {text:?}: invalid percentile {statistic:?}; use p50, p95, p99 or p99.9")]
    Percentile { text: String, statistic: String },
    #[error("invalid --slo {text:?}: {sli} is a rate and takes no percentile; write {sli}=1%")]
    UnexpectedPercentile { text: String, sli: String },
    #[error(
        "invalid --slo {text:?}: invalid latency {target:?}; give a number with a unit, \
         such as 800ms, 1.5s or 250us"
    )]
    Latency { text: String, target: String },
    #[error(
        "invalid --slo {text:?}: invalid rate {target:?}; give a percentage such as 1% \
         or a fraction such as 0.01, from 0 to 1"
    )]
    Rate { text: String, target: String },
    #[error(
        "invalid --slo {text:?}: invalid throughput {target:?}; give tokens per second, such as 20"
    )]
    Throughput { text: String, target: String },
    #[error(
        "invalid --slo {text:?}: {sli} with {op} would reward worse service; \
         use {expected} (or =)"
    )]
    Direction {
        text: String,
        sli: String,
        op: String,
        expected: String,
    },
}

impl SloSpec {
    /// Parses one `--slo` value.
    ///
    /// # Errors
    ///
    /// [`SloParseError`] naming the flag value and a valid example.
    pub fn parse(text: &str) -> Result<Self, SloParseError> {
        let trimmed = text.trim();
        let syntax = || SloParseError::Syntax {
            text: text.to_owned(),
        };
        let (left, op, target) = split_operator(trimmed).ok_or_else(syntax)?;
        let (scope, metric) = match left.split_once('/') {
            Some((scope, metric)) => (
                match scope.trim() {
                    "inbound" => SloScope::Inbound,
                    "outbound" => SloScope::Outbound,
                    other => {
                        return Err(SloParseError::UnknownScope {
                            text: text.to_owned(),
                            scope: other.to_owned(),
                        });
                    }
                },
                metric,
            ),
            None => (SloScope::Requests, left),
        };
        let (sli_name, statistic) = match metric.split_once('.') {
            Some((sli, statistic)) => (sli.trim(), Some(statistic.trim())),
            None => (metric.trim(), None),
        };
        if sli_name.is_empty() || target.trim().is_empty() {
            return Err(syntax());
        }
        let sli = Sli::from_name(sli_name).ok_or_else(|| SloParseError::UnknownSli {
            text: text.to_owned(),
            sli: sli_name.to_owned(),
        })?;

        let percentile = match (sli.is_ratio(), statistic) {
            (true, Some(_)) => {
                return Err(SloParseError::UnexpectedPercentile {
                    text: text.to_owned(),
                    sli: sli_name.to_owned(),
                });
            }
            (true, None) => None,
            (false, None) => {
                return Err(SloParseError::MissingPercentile {
                    text: text.to_owned(),
                    sli: sli_name.to_owned(),
                });
            }
            (false, Some(statistic)) => {
                Some(
                    parse_percentile(statistic).ok_or_else(|| SloParseError::Percentile {
                        text: text.to_owned(),
                        statistic: statistic.to_owned(),
                    })?,
                )
            }
        };

        let comparison = match op {
            "=" => sli.natural_comparison(),
            "<=" => Comparison::AtMost,
            _ => Comparison::AtLeast,
        };
        if comparison != sli.natural_comparison() {
            return Err(SloParseError::Direction {
                text: text.to_owned(),
                sli: sli_name.to_owned(),
                op: op.to_owned(),
                expected: sli.natural_comparison().symbol().to_owned(),
            });
        }

        let target = target.trim();
        let value = if sli.is_latency() {
            parse_latency_us(target).ok_or_else(|| SloParseError::Latency {
                text: text.to_owned(),
                target: target.to_owned(),
            })?
        } else if sli.is_ratio() {
            parse_ratio(target).ok_or_else(|| SloParseError::Rate {
                text: text.to_owned(),
                target: target.to_owned(),
            })?
        } else {
            parse_throughput(target).ok_or_else(|| SloParseError::Throughput {
                text: text.to_owned(),
                target: target.to_owned(),
            })?
        };

        Ok(Self {
            name: trimmed.to_owned(),
            scope,
            sli,
            percentile,
            comparison,
            target: value,
        })
    }
}

fn split_operator(text: &str) -> Option<(&str, &'static str, &str)> {
    for op in ["<=", ">="] {
        if let Some((left, right)) = text.split_once(op) {
            return Some((left, op, right));
        }
    }
    text.split_once('=').map(|(left, right)| (left, "=", right))
}

/// Parses `p95`, `p99.9`; the percentile must be above 0 and below 100.
pub fn parse_percentile(statistic: &str) -> Option<f64> {
    let number = statistic.strip_prefix('p')?;
    let value: f64 = number.parse().ok()?;
    (value > 0.0 && value < 100.0 && value.is_finite()).then_some(value)
}

/// Parses a latency with a unit (`800ms`, `1.5s`, `250us`, `250µs`,
/// `2m`) into microseconds.
pub fn parse_latency_us(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" | "min" => 60e6,
        _ => return None,
    };
    let us = value * scale;
    (us > 0.0 && us.is_finite()).then_some(us)
}

/// Parses `1%` or `0.01` into a fraction from 0 to 1.
pub fn parse_ratio(text: &str) -> Option<f64> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => text.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&value).then_some(value)
}

fn parse_throughput(text: &str) -> Option<f64> {
    let number = text
        .trim()
        .trim_end_matches("tok/s")
        .trim_end_matches("/s")
        .trim();
    let value: f64 = number.parse().ok()?;
    (value > 0.0 && value.is_finite()).then_some(value)
}

/// Whether an objective holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloStatus {
    Met,
    Breached,
    /// The objective is met on the samples seen, but there are too few of
    /// them to tell whether it is met at the target's percentile or rate.
    InsufficientData,
    /// No sample of the SLI was seen.
    NotMeasured,
}

/// The evaluation of one SLO over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloResult {
    pub name: String,
    /// Canonical form such as `ttft.p95<=800 ms`.
    pub objective: String,
    pub scope: SloScope,
    pub sli: Sli,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub comparison: Comparison,
    /// In `unit`.
    pub target: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    /// `us`, `tokens_per_sec` or `ratio`.
    pub unit: &'static str,
    /// Samples the SLO was evaluated on: requests, or inter-token gaps for
    /// ITL.
    pub samples: usize,
    /// Samples on the wrong side of the target (errors for rates).
    pub bad: usize,
    /// Fraction of samples allowed on the wrong side: `1 - p/100` for
    /// `<=` percentiles, `p/100` for `>=`, the target for rates.
    pub allowed_bad_fraction: f64,
    /// `bad / (allowed_bad_fraction * samples)`: 1.0 uses the whole
    /// error budget of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_consumed: Option<f64>,
    pub status: SloStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SloResult {
    pub fn measured_text(&self) -> String {
        match self.measured {
            None => "-".to_owned(),
            Some(value) if self.sli.is_latency() => units::duration_us(value),
            Some(value) if self.sli.is_ratio() => units::percent(value),
            Some(value) => units::tokens_per_sec(value),
        }
    }
}

/// Values of a percentile SLI for the records in scope, one per request,
/// or one per gap for ITL.
pub fn sli_values(sli: Sli, records: &[&CallRecord]) -> Vec<f64> {
    match sli {
        Sli::Ttft => records
            .iter()
            .filter_map(|r| r.ttft_us)
            .map(|v| v as f64)
            .collect(),
        Sli::Ttfb => records
            .iter()
            .filter_map(|r| r.ttfb_us)
            .map(|v| v as f64)
            .collect(),
        Sli::E2e => records
            .iter()
            .filter_map(|r| r.e2e_us)
            .map(|v| v as f64)
            .collect(),
        Sli::Tpot => records.iter().filter_map(|r| r.tpot_us).collect(),
        Sli::TokensPerSec => records.iter().filter_map(|r| r.tokens_per_sec).collect(),
        Sli::Itl => records
            .iter()
            .flat_map(|r| r.itl_us.iter().map(|&v| v as f64))
            .collect(),
        Sli::ErrorRate | Sli::RateLimitedRate => Vec::new(),
    }
}

/// Evaluates an objective on all records, picking those in its scope.
pub fn evaluate(spec: &SloSpec, records: &[CallRecord]) -> SloResult {
    let in_scope: Vec<&CallRecord> = records.iter().filter(|r| spec.scope.includes(r)).collect();
    let mut result = SloResult {
        name: spec.name.clone(),
        objective: spec.to_string(),
        scope: spec.scope,
        sli: spec.sli,
        percentile: spec.percentile,
        comparison: spec.comparison,
        target: spec.target,
        measured: None,
        unit: if spec.sli.is_latency() {
            "us"
        } else if spec.sli.is_ratio() {
            "ratio"
        } else {
            "tokens_per_sec"
        },
        samples: 0,
        bad: 0,
        allowed_bad_fraction: 0.0,
        budget_consumed: None,
        status: SloStatus::NotMeasured,
        note: None,
    };

    if spec.sli.is_ratio() {
        evaluate_ratio(spec, &in_scope, &mut result);
    } else {
        evaluate_percentile(spec, &in_scope, &mut result);
    }
    result
}

fn evaluate_ratio(spec: &SloSpec, in_scope: &[&CallRecord], result: &mut SloResult) {
    // A request still in flight when the window ended has not failed or
    // succeeded yet, and one whose outcome the probe could not see may
    // have done either.
    let unmeasured = in_scope.iter().filter(|r| r.unmeasured.is_some()).count();
    let in_scope: Vec<&CallRecord> = in_scope
        .iter()
        .copied()
        .filter(|r| r.has_outcome())
        .collect();
    let bad = in_scope
        .iter()
        .filter(|r| match spec.sli {
            Sli::RateLimitedRate => r.is_rate_limited(),
            _ => r.is_error(),
        })
        .count();
    result.samples = in_scope.len();
    result.bad = bad;
    result.allowed_bad_fraction = spec.target;
    if in_scope.is_empty() {
        result.note = Some(if unmeasured > 0 {
            format!(
                "{unmeasured} calls in scope, none with a known outcome because the probe \
                 missed or could not parse their bytes"
            )
        } else {
            "no request in scope during the window".to_owned()
        });
        return;
    }
    let rate = bad as f64 / in_scope.len() as f64;
    result.measured = Some(rate);
    result.budget_consumed = (spec.target > 0.0).then(|| rate / spec.target);
    let breached = if spec.target > 0.0 {
        rate > spec.target
    } else {
        bad > 0
    };
    // No errors in fewer than 1/target requests proves little, because one
    // more error would have exceeded the target.
    let needed = if spec.target > 0.0 {
        (1.0 / spec.target - 1e-9).ceil() as usize
    } else {
        0
    };
    // If the calls without a known outcome had all failed, would the rate
    // exceed the target?
    let worst_rate = (bad + unmeasured) as f64 / (in_scope.len() + unmeasured) as f64;
    result.status = if breached {
        SloStatus::Breached
    } else if unmeasured > 0 && worst_rate > spec.target {
        result.note = Some(format!(
            "{unmeasured} calls in scope have no known outcome because the probe missed or \
             could not parse their bytes; if they failed, the rate would be {}",
            units::percent(worst_rate)
        ));
        SloStatus::InsufficientData
    } else if in_scope.len() < needed {
        result.note = Some(format!(
            "{} requests seen; at least {needed} are needed to check a rate of {}; use a \
             longer --duration",
            in_scope.len(),
            units::percent(spec.target)
        ));
        SloStatus::InsufficientData
    } else {
        SloStatus::Met
    };
}

fn evaluate_percentile(spec: &SloSpec, in_scope: &[&CallRecord], result: &mut SloResult) {
    let percentile = spec.percentile.unwrap_or(50.0);
    let values = sli_values(spec.sli, in_scope);
    result.samples = values.len();
    if values.is_empty() {
        result.note = Some(format!(
            "no {} sample in scope during the window",
            spec.sli.name()
        ));
        return;
    }
    let measured = stats::percentile(&values, percentile).unwrap_or(0.0);
    result.measured = Some(measured);
    let (bad, allowed, breached) = match spec.comparison {
        Comparison::AtMost => (
            values.iter().filter(|&&v| v > spec.target).count(),
            (100.0 - percentile) / 100.0,
            measured > spec.target,
        ),
        Comparison::AtLeast => (
            values.iter().filter(|&&v| v < spec.target).count(),
            percentile / 100.0,
            measured < spec.target,
        ),
    };
    result.bad = bad;
    result.allowed_bad_fraction = allowed;
    result.budget_consumed = Some(bad as f64 / (allowed * values.len() as f64));
    let needed = match spec.comparison {
        Comparison::AtMost => stats::min_samples_for_percentile(percentile),
        Comparison::AtLeast => stats::min_samples_for_percentile(100.0 - percentile),
    };
    result.status = if breached {
        SloStatus::Breached
    } else if values.len() < needed {
        result.note = Some(format!(
            "{} samples seen; at least {needed} are needed for p{percentile} to differ \
             from the extreme value; use a longer --duration",
            values.len()
        ));
        SloStatus::InsufficientData
    } else {
        SloStatus::Met
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::record;

    #[test]
    fn parses_latency_objectives() {
        let slo = SloSpec::parse("ttft.p95=800ms").unwrap();
        assert_eq!(slo.sli, Sli::Ttft);
        assert_eq!(slo.percentile, Some(95.0));
        assert_eq!(slo.comparison, Comparison::AtMost);
        assert_eq!(slo.target, 800_000.0);
        assert_eq!(slo.scope, SloScope::Requests);

        let slo = SloSpec::parse("e2e.p99<=8s").unwrap();
        assert_eq!(slo.target, 8_000_000.0);
        let slo = SloSpec::parse("itl.p99.9=250us").unwrap();
        assert_eq!(slo.percentile, Some(99.9));
        assert_eq!(slo.target, 250.0);
        let slo = SloSpec::parse("outbound/tpot.p50=40ms").unwrap();
        assert_eq!(slo.scope, SloScope::Outbound);
    }

    #[test]
    fn parses_rate_and_throughput_objectives() {
        let slo = SloSpec::parse("error_rate=1%").unwrap();
        assert_eq!(slo.sli, Sli::ErrorRate);
        assert!((slo.target - 0.01).abs() < 1e-12);
        assert_eq!(slo.percentile, None);
        let slo = SloSpec::parse("rate_limited_rate=0.05").unwrap();
        assert!((slo.target - 0.05).abs() < 1e-12);
        let slo = SloSpec::parse("tokens_per_sec.p50>=20").unwrap();
        assert_eq!(slo.comparison, Comparison::AtLeast);
        assert_eq!(slo.target, 20.0);
        let slo = SloSpec::parse("tokens_per_sec.p10=15").unwrap();
        assert_eq!(slo.comparison, Comparison::AtLeast);
    }

    #[test]
    fn rejects_bad_objectives_with_clear_messages() {
        let cases = [
            ("ttft", "expected [SCOPE/]SLI"),
            ("latency.p95=1s", "unknown SLI \"latency\""),
            ("ttft=800ms", "needs a percentile"),
            ("ttft.p100=800ms", "invalid percentile \"p100\""),
            ("ttft.avg=800ms", "invalid percentile \"avg\""),
            ("ttft.p95=800", "give a number with a unit"),
            ("error_rate=150%", "from 0 to 1"),
            ("error_rate.p95=1%", "takes no percentile"),
            ("ttft.p95>=800ms", "would reward worse service"),
            ("tokens_per_sec.p50<=20", "would reward worse service"),
            ("tokens_per_sec.p50=fast", "invalid throughput"),
            ("cluster/ttft.p95=1s", "unknown scope"),
        ];
        for (text, expected) in cases {
            let message = SloSpec::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains(text), "{text}: {message}");
        }
    }

    #[test]
    fn canonical_text_round_trips() {
        for text in ["ttft.p95<=800 ms", "tokens_per_sec.p50>=20 tok/s"] {
            let slo = SloSpec::parse(text).unwrap();
            assert_eq!(slo.to_string(), text);
        }
    }

    fn requests(ttfts_ms: &[u64]) -> Vec<CallRecord> {
        ttfts_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                let mut r = record(i as u64, ms * 1000, ms * 2000);
                r.role = Role::Request;
                r
            })
            .collect()
    }

    #[test]
    fn percentile_budget_counts_samples_beyond_target() {
        // 20 requests, 2 beyond 800 ms: p95 is the 19th value (900 ms).
        let mut ttfts = vec![100; 18];
        ttfts.extend([900, 1000]);
        let result = evaluate(
            &SloSpec::parse("ttft.p95=800ms").unwrap(),
            &requests(&ttfts),
        );
        assert_eq!(result.status, SloStatus::Breached);
        assert_eq!(result.measured, Some(900_000.0));
        assert_eq!(result.bad, 2);
        assert!((result.allowed_bad_fraction - 0.05).abs() < 1e-12);
        assert!((result.budget_consumed.unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn one_bad_sample_in_twenty_meets_p95() {
        let mut ttfts = vec![100; 19];
        ttfts.push(1000);
        let result = evaluate(
            &SloSpec::parse("ttft.p95=800ms").unwrap(),
            &requests(&ttfts),
        );
        assert_eq!(result.status, SloStatus::Met);
        assert!((result.budget_consumed.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn few_samples_are_insufficient_for_p99() {
        let result = evaluate(
            &SloSpec::parse("ttft.p99=800ms").unwrap(),
            &requests(&[100; 30]),
        );
        assert_eq!(result.status, SloStatus::InsufficientData);
        let note = result.note.unwrap();
        assert!(note.contains("at least 100"), "{note}");
        assert!(note.contains("longer --duration"), "{note}");
    }

    #[test]
    fn error_rate_budget() {
        let mut records = requests(&[100; 200]);
        for record in records.iter_mut().take(4) {
            record.error = Some(super::super::records::ErrorRecord {
                kind: llmslo_schema::ErrorKind::HttpStatus,
                provider_code: None,
            });
        }
        let result = evaluate(&SloSpec::parse("error_rate=1%").unwrap(), &records);
        assert_eq!(result.status, SloStatus::Breached);
        assert!((result.measured.unwrap() - 0.02).abs() < 1e-12);
        assert!((result.budget_consumed.unwrap() - 2.0).abs() < 1e-9);
        let rate_limited = evaluate(&SloSpec::parse("rate_limited_rate=1%").unwrap(), &records);
        assert_eq!(rate_limited.status, SloStatus::Met);
        assert_eq!(rate_limited.bad, 0);
    }

    #[test]
    fn throughput_objective_counts_slow_requests() {
        let mut records = requests(&[100; 10]);
        for (i, record) in records.iter_mut().enumerate() {
            record.tokens_per_sec = Some(if i < 6 { 10.0 } else { 50.0 });
        }
        let result = evaluate(&SloSpec::parse("tokens_per_sec.p50>=20").unwrap(), &records);
        assert_eq!(result.status, SloStatus::Breached);
        assert_eq!(result.measured, Some(10.0));
        assert_eq!(result.bad, 6);
        assert!((result.budget_consumed.unwrap() - 1.2).abs() < 1e-9);
    }

    #[test]
    fn nothing_in_scope_is_not_measured() {
        let result = evaluate(&SloSpec::parse("ttft.p95=800ms").unwrap(), &[]);
        assert_eq!(result.status, SloStatus::NotMeasured);
        assert_eq!(result.measured, None);
    }
}
