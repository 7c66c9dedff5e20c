//! The GenAI client metrics of the outbound LLM calls, one collection per
//! resource.
//!
//! The SDK aggregates the recorded values into histograms. A manual reader
//! collects them once, after every call is recorded, because the CLI
//! exports once per run. Data points carry the export time, not the
//! window's.

use std::{sync::Arc, time::Duration};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::ResourceMetrics, reader::MetricReader,
    },
};

use super::{
    resource::{self, ResourceKey},
    semconv::{DURATION_BUCKETS_SECS, TOKEN_BUCKETS, genai_metric_attributes},
    spans::SpanRole,
};
use crate::analyze::Analysis;

/// A [`ManualReader`] the provider and the export share.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Collected metrics of one resource, and how many values were recorded.
pub struct CollectedMetrics {
    pub metrics: ResourceMetrics,
    pub recorded_values: usize,
}

/// Records the GenAI client metrics of every LLM call whose flag in
/// `include` is set, and collects them per resource.
///
/// # Errors
///
/// The SDK's error when a collection fails.
pub fn collect(analysis: &Analysis, include: &[bool]) -> Result<Vec<CollectedMetrics>, String> {
    let mut groups: std::collections::BTreeMap<ResourceKey, Vec<usize>> = Default::default();
    for (index, record) in analysis.calls.iter().enumerate() {
        if include[index] && SpanRole::of(record) == Some(SpanRole::GenAi) {
            groups
                .entry(ResourceKey::of(record))
                .or_default()
                .push(index);
        }
    }

    let mut collected = Vec::new();
    for (key, indices) in groups {
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let provider = SdkMeterProvider::builder()
            .with_resource(resource::build(&key, analysis))
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter_with_scope(
            opentelemetry::InstrumentationScope::builder("llmslo")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration.")
            .with_boundaries(DURATION_BUCKETS_SECS.to_vec())
            .build();
        let time_to_first_chunk = meter
            .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
            .with_unit("s")
            .with_description(
                "Time to receive the first chunk, from the first request byte written to \
                 the first event with generated content.",
            )
            .with_boundaries(DURATION_BUCKETS_SECS.to_vec())
            .build();
        let token_usage = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used.")
            .with_boundaries(TOKEN_BUCKETS.to_vec())
            .build();

        let mut recorded_values = 0;
        for index in indices {
            let record = &analysis.calls[index];
            let attributes = genai_metric_attributes(record);
            if let Some(e2e_us) = record.e2e_us {
                duration.record(e2e_us as f64 / 1e6, &attributes);
                recorded_values += 1;
            }
            if record.streaming == Some(true)
                && let Some(ttft_us) = record.ttft_us
            {
                time_to_first_chunk.record(ttft_us as f64 / 1e6, &attributes);
                recorded_values += 1;
            }
            // Estimated counts are not usage: the conventions ask for the
            // provider's counts only.
            if record.token_source.as_deref() == Some("provider") {
                let usage = [
                    ("input", record.input_tokens),
                    ("output", record.output_tokens),
                ];
                for (token_type, tokens) in usage {
                    let Some(tokens) = tokens else { continue };
                    let mut attributes = attributes.clone();
                    attributes.push(opentelemetry::KeyValue::new(
                        "gen_ai.token.type",
                        token_type,
                    ));
                    token_usage.record(tokens, &attributes);
                    recorded_values += 1;
                }
            }
        }

        let mut metrics = ResourceMetrics::default();
        reader
            .collect(&mut metrics)
            .map_err(|error| error.to_string())?;
        if let Err(error) = provider.shutdown() {
            tracing::debug!(%error, "the meter provider did not shut down cleanly");
        }
        collected.push(CollectedMetrics {
            metrics,
            recorded_values,
        });
    }
    Ok(collected)
}
