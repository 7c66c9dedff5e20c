//! SLOs from an OpenSLO v1 file, in the llmslo dialect of its metric
//! sources; docs/slo.md describes the dialect with examples.
//!
//! Each `kind: SLO` document becomes one [`SloSpec`] per objective. A
//! threshold metric with `op`, `value` and `target` becomes a percentile
//! objective: `target: 0.95`, `op: lte`, `value: 800` on `sli: ttft` is
//! `ttft.p95<=800ms`. A ratio metric becomes an error-rate objective:
//! `target: 0.99` of good requests is `error_rate<=1%`. `kind: SLI`
//! documents can be referenced with `indicatorRef`. Other kinds are
//! //! skipped. `timeWindow` is ignored because the window is `--duration`.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use super::slo::{Comparison, Sli, SloScope, SloSpec};

#[derive(Debug, thiserror::Error)]
pub enum OpenSloError {
    #[error("failed to read the OpenSLO file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the OpenSLO file {path} is not valid YAML of OpenSLO objects: {message}")]
    Yaml { path: String, message: String },
    #[error("the OpenSLO file {path} has apiVersion {found:?}; only openslo/v1 is supported")]
    Version { path: String, found: String },
    #[error("SLO {slo:?} in {path}: {problem}")]
    Slo {
        path: String,
        slo: String,
        problem: String,
    },
    #[error("the OpenSLO file {path} contains no kind: SLO object")]
    Empty { path: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SloDocSpec {
    indicator: Option<Indicator>,
    indicator_ref: Option<String>,
    budgeting_method: Option<String>,
    #[serde(default)]
    objectives: Vec<Objective>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Indicator {
    #[serde(default)]
    spec: IndicatorSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndicatorSpec {
    threshold_metric: Option<MetricSpec>,
    ratio_metric: Option<RatioMetric>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RatioMetric {
    good: Option<MetricSpec>,
    bad: Option<MetricSpec>,
    total: Option<MetricSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricSpec {
    metric_source: MetricSource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricSource {
    #[serde(rename = "type")]
    source_type: Option<String>,
    #[serde(default)]
    spec: HashMap<String, serde_json::Value>,
}

impl MetricSource {
    fn field(&self, name: &str) -> Option<String> {
        self.spec.get(name).map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Objective {
    display_name: Option<String>,
    op: Option<String>,
    value: Option<f64>,
    target: Option<f64>,
    target_percent: Option<f64>,
    indicator: Option<Indicator>,
    indicator_ref: Option<String>,
}

/// Reads the SLOs of an OpenSLO v1 file.
///
/// # Errors
///
/// [`OpenSloError`] naming the file, the SLO and the field at fault.
pub fn load(path: &Path) -> Result<Vec<SloSpec>, OpenSloError> {
    let text = std::fs::read_to_string(path).map_err(|source| OpenSloError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses OpenSLO v1 YAML (one or more documents).
pub fn parse(text: &str, path: &str) -> Result<Vec<SloSpec>, OpenSloError> {
    let documents: Vec<Document> =
        serde_saphyr::from_multiple(text).map_err(|error| OpenSloError::Yaml {
            path: path.to_owned(),
            message: error.to_string(),
        })?;

    let mut indicators: HashMap<String, Indicator> = HashMap::new();
    for document in &documents {
        check_version(document, path)?;
        if document.kind.as_deref() == Some("SLI") {
            let indicator = Indicator {
                spec: serde_json::from_value(document.spec.clone()).map_err(|error| {
                    OpenSloError::Yaml {
                        path: path.to_owned(),
                        message: format!("SLI {:?}: {error}", document.metadata.name),
                    }
                })?,
            };
            indicators.insert(document.metadata.name.clone(), indicator);
        }
    }

    let mut specs = Vec::new();
    for document in documents
        .iter()
        .filter(|d| d.kind.as_deref() == Some("SLO"))
    {
        let name = document.metadata.name.clone();
        let fail = |problem: String| OpenSloError::Slo {
            path: path.to_owned(),
            slo: name.clone(),
            problem,
        };
        let spec: SloDocSpec = serde_json::from_value(document.spec.clone())
            .map_err(|error| fail(format!("invalid spec: {error}")))?;
        if let Some(method) = &spec.budgeting_method
            && method != "Occurrences"
        {
            return Err(fail(format!(
                "budgetingMethod {method:?} is not supported; llmslo counts requests, \
                 so use Occurrences"
            )));
        }
        if spec.objectives.is_empty() {
            return Err(fail("the SLO has no objectives".to_owned()));
        }
        for (index, objective) in spec.objectives.iter().enumerate() {
            let indicator = resolve_indicator(objective, &spec, &indicators).map_err(fail)?;
            let label = match &objective.display_name {
                Some(display) => format!("{name}: {display}"),
                None if spec.objectives.len() > 1 => format!("{name}[{index}]"),
                None => name.clone(),
            };
            specs.push(objective_spec(label, objective, &indicator).map_err(fail)?);
        }
    }
    if specs.is_empty() {
        return Err(OpenSloError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(specs)
}

fn check_version(document: &Document, path: &str) -> Result<(), OpenSloError> {
    match document.api_version.as_deref() {
        Some("openslo/v1") => Ok(()),
        found => Err(OpenSloError::Version {
            path: path.to_owned(),
            found: found.unwrap_or("(missing)").to_owned(),
        }),
    }
}

fn resolve_indicator(
    objective: &Objective,
    spec: &SloDocSpec,
    indicators: &HashMap<String, Indicator>,
) -> Result<Indicator, String> {
    let lookup = |name: &String| {
        indicators
            .get(name)
            .cloned()
            .ok_or_else(|| format!("indicatorRef {name:?} names no kind: SLI object in the file"))
    };
    if let Some(indicator) = &objective.indicator {
        return Ok(indicator.clone());
    }
    if let Some(name) = &objective.indicator_ref {
        return lookup(name);
    }
    if let Some(indicator) = &spec.indicator {
        return Ok(indicator.clone());
    }
    if let Some(name) = &spec.indicator_ref {
        return lookup(name);
    }
    Err("the SLO has neither indicator nor indicatorRef".to_owned())
}

fn llmslo_source(metric: &MetricSpec, role: &str) -> Result<(String, SloScope), String> {
    let source = &metric.metric_source;
    match source.source_type.as_deref() {
        Some("llmslo") => {}
        other => {
            return Err(format!(
                "{role} metricSource type is {:?}; llmslo evaluates only type: llmslo sources",
                other.unwrap_or("(missing)")
            ));
        }
    }
    let sli = source
        .field("sli")
        .ok_or_else(|| format!("{role} metricSource spec has no sli field"))?;
    let scope = match source.field("scope").as_deref() {
        None | Some("requests") => SloScope::Requests,
        Some("inbound") => SloScope::Inbound,
        Some("outbound") => SloScope::Outbound,
        Some(other) => {
            return Err(format!(
                "{role} metricSource scope {other:?} is unknown; use requests, inbound or outbound"
            ));
        }
    };
    Ok((sli, scope))
}

fn objective_spec(
    name: String,
    objective: &Objective,
    indicator: &Indicator,
) -> Result<SloSpec, String> {
    let target = match (objective.target, objective.target_percent) {
        (Some(target), _) => target,
        (None, Some(percent)) => percent / 100.0,
        (None, None) => return Err("an objective has neither target nor targetPercent".to_owned()),
    };
    if !(target > 0.0 && target < 1.0) {
        return Err(format!(
            "objective target {target} must be greater than 0 and less than 1"
        ));
    }

    if let Some(threshold) = &indicator.spec.threshold_metric {
        let (sli_name, scope) = llmslo_source(threshold, "thresholdMetric")?;
        let sli = Sli::from_name(&sli_name)
            .filter(|sli| !sli.is_ratio())
            .ok_or_else(|| {
                format!(
                    "thresholdMetric sli {sli_name:?} is unknown; use ttft, ttfb, itl, tpot, \
                     e2e or tokens_per_sec"
                )
            })?;
        let value = objective
            .value
            .ok_or_else(|| "a threshold objective needs value".to_owned())?;
        let comparison = match objective.op.as_deref() {
            Some("lte" | "lt") => Comparison::AtMost,
            Some("gte" | "gt") => Comparison::AtLeast,
            other => {
                return Err(format!(
                    "objective op {:?} is not lte, lt, gte or gt",
                    other.unwrap_or("(missing)")
                ));
            }
        };
        let expected = if sli == Sli::TokensPerSec {
            Comparison::AtLeast
        } else {
            Comparison::AtMost
        };
        if comparison != expected {
            return Err(format!(
                "op {} on {sli_name} would reward worse service; use {}",
                objective.op.as_deref().unwrap_or_default(),
                if expected == Comparison::AtMost {
                    "lte"
                } else {
                    "gte"
                }
            ));
        }
        let unit_scale = match threshold.metric_source.field("unit").as_deref() {
            None if sli.is_latency() => 1000.0,
            None => 1.0,
            Some("us" | "µs") => 1.0,
            Some("ms") => 1000.0,
            Some("s") => 1e6,
            Some(other) => return Err(format!("unit {other:?} is not us, ms or s")),
        };
        if !(value > 0.0 && value.is_finite()) {
            return Err(format!("objective value {value} must be greater than 0"));
        }
        // `target` of the good samples lie on the right side: for lte that
        // is the target percentile, for gte the (1 - target) percentile.
        let percentile = match comparison {
            Comparison::AtMost => target * 100.0,
            Comparison::AtLeast => (1.0 - target) * 100.0,
        };
        return Ok(SloSpec {
            name,
            scope,
            sli,
            percentile: Some(round_percentile(percentile)),
            comparison,
            target: value * unit_scale,
        });
    }

    if let Some(ratio) = &indicator.spec.ratio_metric {
        let total = ratio
            .total
            .as_ref()
            .ok_or_else(|| "ratioMetric needs total".to_owned())?;
        let (total_sli, scope) = llmslo_source(total, "ratioMetric total")?;
        if total_sli != "requests" {
            return Err(format!(
                "ratioMetric total sli {total_sli:?} must be requests"
            ));
        }
        let sli = match (&ratio.good, &ratio.bad) {
            (Some(good), None) => match llmslo_source(good, "ratioMetric good")?.0.as_str() {
                "successes" => Sli::ErrorRate,
                "not_rate_limited" => Sli::RateLimitedRate,
                other => {
                    return Err(format!(
                        "ratioMetric good sli {other:?} must be successes or not_rate_limited"
                    ));
                }
            },
            (None, Some(bad)) => match llmslo_source(bad, "ratioMetric bad")?.0.as_str() {
                "errors" => Sli::ErrorRate,
                "rate_limited" => Sli::RateLimitedRate,
                other => {
                    return Err(format!(
                        "ratioMetric bad sli {other:?} must be errors or rate_limited"
                    ));
                }
            },
            _ => return Err("ratioMetric needs exactly one of good and bad".to_owned()),
        };
        return Ok(SloSpec {
            name,
            scope,
            sli,
            percentile: None,
            comparison: Comparison::AtMost,
            target: 1.0 - target,
        });
    }

    Err("the indicator has neither thresholdMetric nor ratioMetric".to_owned())
}

/// Removes float noise such as 95.00000000000001 from `0.95 * 100`.
fn round_percentile(percentile: f64) -> f64 {
    (percentile * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: &str = r#"
apiVersion: openslo/v1
kind: SLO
metadata:
  name: chat-ttft
spec:
  service: chat-api
  budgetingMethod: Occurrences
  timeWindow:
    - duration: 1h
      isRolling: true
  indicator:
    metadata:
      name: ttft
    spec:
      thresholdMetric:
        metricSource:
          type: llmslo
          spec:
            sli: ttft
  objectives:
    - displayName: p95 under 800 ms
      op: lte
      value: 800
      target: 0.95
    - op: lte
      value: 2
      targetPercent: 99
"#;

    #[test]
    fn threshold_objectives_become_percentiles() {
        let specs = parse(THRESHOLD, "slo.yaml").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].name, "chat-ttft: p95 under 800 ms");
        assert_eq!(specs[0].sli, Sli::Ttft);
        assert_eq!(specs[0].percentile, Some(95.0));
        assert_eq!(specs[0].target, 800_000.0);
        assert_eq!(specs[0].comparison, Comparison::AtMost);
        assert_eq!(specs[1].name, "chat-ttft[1]");
        assert_eq!(specs[1].percentile, Some(99.0));
        assert_eq!(specs[1].target, 2_000.0);
    }

    #[test]
    fn ratio_with_indicator_ref() {
        let text = r#"
apiVersion: openslo/v1
kind: SLI
metadata:
  name: llm-errors
spec:
  ratioMetric:
    counter: true
    bad:
      metricSource:
        type: llmslo
        spec:
          sli: errors
          scope: outbound
    total:
      metricSource:
        type: llmslo
        spec:
          sli: requests
          scope: outbound
---
apiVersion: openslo/v1
kind: Service
metadata:
  name: chat-api
spec: {}
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: llm-availability
spec:
  service: chat-api
  indicatorRef: llm-errors
  budgetingMethod: Occurrences
  objectives:
    - target: 0.99
"#;
        let specs = parse(text, "slo.yaml").unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].sli, Sli::ErrorRate);
        assert!((specs[0].target - 0.01).abs() < 1e-12);
        assert_eq!(specs[0].scope, SloScope::Outbound);
    }

    #[test]
    fn throughput_gte_uses_lower_percentile() {
        let text = r#"
apiVersion: openslo/v1
kind: SLO
metadata:
  name: decode-rate
spec:
  indicator:
    spec:
      thresholdMetric:
        metricSource:
          type: llmslo
          spec:
            sli: tokens_per_sec
  objectives:
    - op: gte
      value: 20
      target: 0.9
"#;
        let specs = parse(text, "slo.yaml").unwrap();
        assert_eq!(specs[0].percentile, Some(10.0));
        assert_eq!(specs[0].comparison, Comparison::AtLeast);
        assert_eq!(specs[0].target, 20.0);
    }

    #[test]
    fn errors_name_file_slo_and_field() {
        let cases = [
            (
                THRESHOLD.replace("openslo/v1", "openslo/v2alpha"),
                "only openslo/v1",
            ),
            (
                THRESHOLD.replace("type: llmslo", "type: Prometheus"),
                "type: llmslo",
            ),
            (
                THRESHOLD.replace("sli: ttft", "sli: latency"),
                "sli \"latency\" is unknown",
            ),
            (
                THRESHOLD.replace("op: lte\n      value: 800", "op: gte\n      value: 800"),
                "would reward worse service",
            ),
            (
                THRESHOLD.replace("target: 0.95", "target: 95"),
                "less than 1",
            ),
            (
                THRESHOLD.replace("Occurrences", "Timeslices"),
                "Occurrences",
            ),
            (
                "apiVersion: openslo/v1\nkind: Service\nmetadata:\n  name: x\n".to_owned(),
                "no kind: SLO",
            ),
            ("{{{".to_owned(), "not valid YAML"),
        ];
        for (text, expected) in cases {
            let message = parse(&text, "slo.yaml").unwrap_err().to_string();
            assert!(message.contains(expected), "{expected}: {message}");
            assert!(message.contains("slo.yaml"), "{message}");
        }
    }

    #[test]
    fn missing_file_is_reported() {
        let message = load(Path::new("/nonexistent/slo.yaml"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/slo.yaml"), "{message}");
    }
}
