//! OTLP export (`--otlp-endpoint`): one span per observed call following
//! the OpenTelemetry semantic conventions, parented to the observed trace,
//! and the GenAI client metrics, sent with the `opentelemetry-otlp`
//! exporters. docs/opentelemetry.md describes what is sent.

mod config;
mod coverage;
mod metrics;
mod resource;
mod semconv;
mod spans;
mod transport;

use std::time::Duration;

use opentelemetry_sdk::{
    error::OTelSdkError, metrics::exporter::PushMetricExporter as _, trace::SpanExporter as _,
};
use serde::Serialize;

pub use config::OtlpConfig;

use crate::{
    analyze::Analysis,
    cli::{OtlpMode, OtlpProtocol},
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("failed to set up the OTLP {signal} exporter: {source}")]
    Build {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("header {name:?} of --otlp-header is not a valid gRPC metadata entry")]
    Header { name: String },
    #[error("the --otlp-ca certificate is not usable: {reason}")]
    Ca { reason: String },
    #[error("failed to set up the HTTP client for OTLP: {reason}")]
    HttpClient { reason: String },
    #[error("failed to collect the GenAI metrics: {reason}")]
    Collect { reason: String },
    #[error(
        "failed to send the {signal} to {target} (--otlp-timeout {}): {source}; check that \
         a collector listens there and accepts OTLP over {protocol}, or raise --otlp-timeout \
         if it is slow",
        humantime::format_duration(*timeout)
    )]
    Send {
        signal: &'static str,
        /// The endpoint, or for OTLP/HTTP the signal's URL.
        target: String,
        protocol: &'static str,
        timeout: Duration,
        #[source]
        source: OTelSdkError,
    },
    #[error(
        "the export to {endpoint} did not finish within --otlp-timeout {}; check that \
         the collector is reachable, or raise the timeout",
        humantime::format_duration(*timeout)
    )]
    TimedOut { endpoint: String, timeout: Duration },
    #[error("the export was interrupted by Ctrl-C")]
    Interrupted,
}

/// Outcome of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    Exported,
    Failed,
}

/// Summary of the export, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
    pub mode: OtlpMode,
    pub state: ExportState,
    /// Spans and metric values accepted by the collector; zero when the
    /// export failed before them.
    pub spans: usize,
    pub metric_values: usize,
    /// Spans of calls that an application span already covers.
    pub covered_spans: usize,
    /// Calls left out because an application span covers them.
    pub skipped_calls: usize,
    /// Description of the failure, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Exports the analysis's calls as spans and metrics, within
/// `config.timeout`, and stops early on Ctrl-C.
///
/// # Errors
///
/// None are returned. Every failure is recorded in the summary instead, so
/// that the caller prints the report whatever happened to the collector.
pub async fn export(analysis: &Analysis, config: &OtlpConfig) -> ExportSummary {
    let mut summary = ExportSummary {
        endpoint: config.endpoint.clone(),
        protocol: config.protocol_name(),
        mode: config.mode,
        state: ExportState::Exported,
        spans: 0,
        metric_values: 0,
        covered_spans: 0,
        skipped_calls: 0,
        error: None,
    };
    tracing::info!(endpoint = %config.endpoint, protocol = summary.protocol, "exporting over OTLP");

    let outcome = tokio::select! {
        outcome = tokio::time::timeout(config.timeout, send(analysis, config, &mut summary)) => {
            outcome.unwrap_or_else(|_| Err(ExportError::TimedOut {
                endpoint: config.endpoint.clone(),
                timeout: config.timeout,
            }))
        }
        _ = tokio::signal::ctrl_c() => Err(ExportError::Interrupted),
    };
    if let Err(error) = outcome {
        tracing::warn!(endpoint = %config.endpoint, %error, "OTLP export failed");
        summary.state = ExportState::Failed;
        summary.error = Some(error.to_string());
    } else {
        tracing::info!(
            endpoint = %config.endpoint,
            spans = summary.spans,
            metric_values = summary.metric_values,
            "OTLP export finished"
        );
    }
    summary
}

/// Sends the spans, then the metrics, counting what the collector took.
async fn send(
    analysis: &Analysis,
    config: &OtlpConfig,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    let covered = coverage::covered_by_app_span(&analysis.calls);
    let plan = spans::plan(analysis, config.mode, &covered);
    summary.covered_spans = plan.covered_spans;
    summary.skipped_calls = plan.skipped_calls;

    let mut exporter = transport::span_exporter(config)?;
    for (key, batch) in plan.batches {
        let count = batch.len();
        exporter.set_resource(&resource::build(&key, analysis));
        exporter
            .export(batch)
            .await
            .map_err(|source| send_error("spans", &config.traces_url, config, source))?;
        summary.spans += count;
    }

    let include: Vec<bool> = covered
        .iter()
        .map(|&covered| !covered || config.mode == OtlpMode::All)
        .collect();
    let collected =
        metrics::collect(analysis, &include).map_err(|reason| ExportError::Collect { reason })?;
    if collected.is_empty() {
        return Ok(());
    }
    let exporter = transport::metric_exporter(config)?;
    for collection in collected {
        exporter
            .export(&collection.metrics)
            .await
            .map_err(|source| send_error("metrics", &config.metrics_url, config, source))?;
        summary.metric_values += collection.recorded_values;
    }
    Ok(())
}

/// Describes a failed export of `signal`. `http_url` is the signal's
/// OTLP/HTTP URL; gRPC sends every signal to the endpoint itself.
fn send_error(
    signal: &'static str,
    http_url: &str,
    config: &OtlpConfig,
    source: OTelSdkError,
) -> ExportError {
    let target = match config.protocol {
        OtlpProtocol::Grpc => config.endpoint.clone(),
        OtlpProtocol::HttpProtobuf => http_url.to_owned(),
    };
    ExportError::Send {
        signal,
        target,
        protocol: config.protocol_name(),
        timeout: config.timeout,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_error_names_target_and_timeout() {
        let source = || OTelSdkError::InternalFailure("connection refused".to_owned());

        let mut config = config::resolve("http://127.0.0.1:4318", None, false, &[]).unwrap();
        config.timeout = Duration::from_secs(3);
        let message = send_error("spans", &config.traces_url, &config, source()).to_string();
        assert!(
            message.contains("spans to http://127.0.0.1:4318/v1/traces"),
            "{message}"
        );
        assert!(message.contains("--otlp-timeout 3s"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.contains("OTLP over http/protobuf"), "{message}");

        let config = config::resolve("grpc://127.0.0.1:4317", None, false, &[]).unwrap();
        let message = send_error("metrics", &config.metrics_url, &config, source()).to_string();
        assert!(
            message.contains("metrics to grpc://127.0.0.1:4317 "),
            "{message}"
        );
    }
}
