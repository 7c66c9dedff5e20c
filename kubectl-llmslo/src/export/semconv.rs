//! OpenTelemetry semantic convention values shared by spans and metrics:
//! GenAI provider names, `error.type`, and server address and port.
//!
//! Sources: the GenAI conventions of open-telemetry/semantic-conventions-genai
//! (docs/gen-ai/gen-ai-metrics.md and client-inference.md, status
//! "development"), and the stable `server.*` and `error.type` attributes.

use opentelemetry::KeyValue;

use crate::analyze::{records::CallRecord, sli::error_kind_name};

/// Bucket boundaries in seconds that the GenAI conventions recommend for
/// `gen_ai.client.operation.duration` and
/// `gen_ai.client.operation.time_to_first_chunk`.
pub const DURATION_BUCKETS_SECS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Bucket boundaries that the GenAI conventions recommend for
/// `gen_ai.client.token.usage`.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Maps llmslo's provider name to `gen_ai.provider.name`.
///
/// OpenAI-compatible servers (vLLM, TGI, LiteLLM) speak OpenAI's format,
/// and the conventions make the provider name the discriminator of the
/// format flavor, so they map to `openai`, and `server.address`
/// distinguishes them. Ollama and user rules have no listed value and
/// keep their name.
pub fn provider_name(provider: &str) -> &str {
    match provider {
        "openai" | "openai_compatible" => "openai",
        "azure_openai" => "azure.ai.openai",
        "anthropic" => "anthropic",
        "gemini" => "gcp.gemini",
        other => other,
    }
}

/// `error.type` of a failed call: the HTTP status code for status 400 or
/// higher, else the provider's error code, else llmslo's error kind
/// (`truncated`, `connection_reset`, ...). `None` for a call without
/// error.
pub fn error_type(record: &CallRecord) -> Option<String> {
    let error = record.error.as_ref()?;
    if let Some(status) = record.status.filter(|&status| status >= 400) {
        return Some(status.to_string());
    }
    Some(
        error
            .provider_code
            .clone()
            .unwrap_or_else(|| error_kind_name(error.kind)),
    )
}

/// `server.address` and `server.port` of an outbound call.
pub fn server_attributes(record: &CallRecord) -> Vec<KeyValue> {
    let mut attributes = Vec::new();
    if let Some(server) = &record.endpoint.server {
        attributes.push(KeyValue::new("server.address", host_of(server).to_owned()));
        if let Some(port) = record.server_port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    attributes
}

/// Returns the host of `host`, `host:port`, `ip:port` or `[ip6]:port`.
fn host_of(server: &str) -> &str {
    if let Some(rest) = server.strip_prefix('[') {
        return rest.split_once(']').map_or(server, |(host, _)| host);
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => server,
    }
}

/// Returns the GenAI attributes that the client metrics share with the
/// span.
pub fn genai_metric_attributes(record: &CallRecord) -> Vec<KeyValue> {
    let mut attributes = Vec::new();
    if let Some(operation) = &record.operation {
        attributes.push(KeyValue::new("gen_ai.operation.name", operation.clone()));
    }
    if let Some(provider) = &record.provider {
        attributes.push(KeyValue::new(
            "gen_ai.provider.name",
            provider_name(provider).to_owned(),
        ));
    }
    if let Some(model) = &record.request_model {
        attributes.push(KeyValue::new("gen_ai.request.model", model.clone()));
    }
    if let Some(model) = &record.response_model {
        attributes.push(KeyValue::new("gen_ai.response.model", model.clone()));
    }
    attributes.extend(server_attributes(record));
    if let Some(error_type) = error_type(record) {
        attributes.push(KeyValue::new("error.type", error_type));
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{records::ErrorRecord, testing::record};
    use llmslo_schema::ErrorKind;

    #[test]
    fn providers_map_to_convention_values() {
        assert_eq!(provider_name("openai_compatible"), "openai");
        assert_eq!(provider_name("azure_openai"), "azure.ai.openai");
        assert_eq!(provider_name("gemini"), "gcp.gemini");
        assert_eq!(provider_name("ollama"), "ollama");
    }

    #[test]
    fn error_type_prefers_status_then_provider_code() {
        let mut call = record(1, 10, 20);
        assert_eq!(error_type(&call), None);
        call.status = Some(429);
        call.error = Some(ErrorRecord {
            kind: ErrorKind::RateLimited,
            provider_code: Some("rate_limit_exceeded".into()),
        });
        assert_eq!(error_type(&call).as_deref(), Some("429"));
        call.status = Some(200);
        call.error = Some(ErrorRecord {
            kind: ErrorKind::StreamError,
            provider_code: Some("overloaded_error".into()),
        });
        assert_eq!(error_type(&call).as_deref(), Some("overloaded_error"));
        call.error = Some(ErrorRecord {
            kind: ErrorKind::Truncated,
            provider_code: None,
        });
        assert_eq!(error_type(&call).as_deref(), Some("truncated"));
    }

    #[test]
    fn server_address_drops_the_port() {
        assert_eq!(host_of("api.openai.com"), "api.openai.com");
        assert_eq!(host_of("127.0.0.1:8000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8000"), "::1");
        assert_eq!(host_of("::1"), "::1");
    }
}
