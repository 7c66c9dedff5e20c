//! One span per observed call: GenAI client spans for LLM calls, database
//! client spans for retrieval, HTTP client spans for guardrails and other
//! HTTP dependencies, and HTTP server spans for the requests the target
//! served. Each is parented to the observed trace.
//!
//! # Parents
//!
//! An outbound call linked to an inbound request whose server span is
//! exported becomes that span's child, unless an application span covers
//! the call, which then is the parent. Otherwise a call with a
//! `traceparent` is the child of its `parent-id`. A call linked to a
//! request that carried one is the child of the request's `parent-id`,
//! and the rest start new traces. Inbound requests are children of their
//! own `traceparent`.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use llmslo_schema::{Direction, Protocol};
use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};

use super::{
    resource::ResourceKey,
    semconv::{error_type, genai_metric_attributes, server_attributes},
};
use crate::{
    analyze::{
        Analysis, components,
        records::{CallRecord, Role, TtftSource},
    },
    cli::OtlpMode,
};

/// Kind of span a call becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanRole {
    /// An inbound HTTP request the target served.
    Server,
    /// An outbound LLM API call.
    GenAi,
    /// An outbound PostgreSQL or Redis call.
    Database,
    /// Another outbound HTTP call, such as a guardrail.
    HttpClient,
}

impl SpanRole {
    /// Returns the span role of a call, or `None` for calls that get no
    /// span: health checks, DNS queries, the target's own telemetry
    /// exports and other non-HTTP outbound traffic.
    pub fn of(record: &CallRecord) -> Option<Self> {
        let http = matches!(record.protocol, Protocol::Http1 | Protocol::Http2);
        match record.direction {
            Direction::Inbound => (record.role == Role::Request && http).then_some(Self::Server),
            Direction::Outbound => {
                let llm = record.operation.is_some()
                    && matches!(
                        record.component.as_str(),
                        components::PROVIDER | components::EMBEDDINGS
                    );
                if llm {
                    Some(Self::GenAi)
                } else if matches!(record.protocol, Protocol::Postgres | Protocol::Redis) {
                    Some(Self::Database)
                } else if http && !is_telemetry_export(record) {
                    Some(Self::HttpClient)
                } else {
                    None
                }
            }
        }
    }
}

/// OTLP/HTTP signal paths; a collector may serve them under a prefix.
const OTLP_HTTP_PATH_ENDINGS: [&str; 3] = ["/v1/traces", "/v1/metrics", "/v1/logs"];

/// Path prefix of the OTLP/gRPC export methods.
const OTLP_GRPC_PATH_PREFIX: &str = "/opentelemetry.proto.collector.";

/// Returns whether an unclassified outbound call is the target sending its
/// own telemetry over OTLP. Such a call is not part of any request, and a
/// span for it would add one root trace per export batch, so it gets none.
/// A `--component` rule that matches it makes it a dependency again.
fn is_telemetry_export(record: &CallRecord) -> bool {
    if record.component != components::OTHER {
        return false;
    }
    let endpoint = &record.endpoint;
    let Some(path) = endpoint.path.as_deref() else {
        return false;
    };
    endpoint.method.as_deref() == Some("POST")
        && (path.starts_with(OTLP_GRPC_PATH_PREFIX)
            || OTLP_HTTP_PATH_ENDINGS
                .iter()
                .any(|ending| path.ends_with(ending)))
}

/// The spans of one run, grouped by resource.
#[derive(Debug, Default)]
pub struct SpanPlan {
    pub batches: BTreeMap<ResourceKey, Vec<SpanData>>,
    pub spans: usize,
    /// Spans of calls an application span covers (marked, or `INTERNAL`
    /// in `enrich` mode).
    pub covered_spans: usize,
    /// Calls left out because an application span covers them
    /// (`uninstrumented-only`).
    pub skipped_calls: usize,
}

/// Form in which one call is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emission {
    /// The span the conventions describe.
    Full,
    /// An `INTERNAL` span with `llmslo.*` attributes only.
    Enrich,
    Skip,
}

/// A span's identity and parent.
#[derive(Debug, Clone, Copy)]
struct Placement {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    parent_is_remote: bool,
}

/// Builds the spans of every exported call.
pub fn plan(analysis: &Analysis, mode: OtlpMode, covered: &[bool]) -> SpanPlan {
    let ids = RandomIdGenerator::default();
    let records = &analysis.calls;
    let roles: Vec<Option<SpanRole>> = records.iter().map(SpanRole::of).collect();
    let emissions: Vec<Emission> = roles
        .iter()
        .zip(covered)
        .map(|(role, &covered)| match (role, covered, mode) {
            (None, _, _) => Emission::Skip,
            (Some(_), false, _) | (Some(_), true, OtlpMode::All) => Emission::Full,
            (Some(_), true, OtlpMode::UninstrumentedOnly) => Emission::Skip,
            (Some(_), true, OtlpMode::Enrich) => Emission::Enrich,
        })
        .collect();

    // Server spans first, so that their children can point at them.
    let mut placements: Vec<Option<Placement>> = vec![None; records.len()];
    for (index, record) in records.iter().enumerate() {
        if roles[index] == Some(SpanRole::Server) && emissions[index] != Emission::Skip {
            placements[index] = Some(below_traceparent(record, &ids));
        }
    }
    for (index, record) in records.iter().enumerate() {
        if emissions[index] == Emission::Skip || roles[index] == Some(SpanRole::Server) {
            continue;
        }
        let request = record
            .link
            .as_ref()
            .and_then(|link| link.request_index)
            .filter(|&request| request < records.len());
        let server = request.and_then(|request| placements[request]);
        placements[index] = Some(match (server, covered[index]) {
            (Some(server), false) => Placement {
                trace_id: server.trace_id,
                span_id: ids.new_span_id(),
                parent_span_id: server.span_id,
                parent_is_remote: false,
            },
            _ if record.trace_id.is_some() => below_traceparent(record, &ids),
            _ => match request.map(|request| &records[request]) {
                Some(request) if request.trace_id.is_some() => Placement {
                    span_id: ids.new_span_id(),
                    ..below_traceparent(request, &ids)
                },
                _ => root(&ids),
            },
        });
    }

    let scope = InstrumentationScope::builder("llmslo")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut plan = SpanPlan::default();
    for (index, record) in records.iter().enumerate() {
        let (Some(role), Some(placement)) = (roles[index], placements[index]) else {
            if roles[index].is_some() && covered[index] {
                plan.skipped_calls += 1;
            }
            continue;
        };
        let span = span(
            record,
            role,
            placement,
            emissions[index],
            covered[index],
            &scope,
        );
        plan.spans += 1;
        if covered[index] {
            plan.covered_spans += 1;
        }
        plan.batches
            .entry(ResourceKey::of(record))
            .or_default()
            .push(span);
    }
    plan
}

/// Places a new span below the record's `traceparent`, or starts a new
/// trace without one.
fn below_traceparent(record: &CallRecord, ids: &RandomIdGenerator) -> Placement {
    let parent = record
        .trace_id
        .as_deref()
        .and_then(|trace| TraceId::from_hex(trace).ok())
        .zip(
            record
                .parent_span_id
                .as_deref()
                .and_then(|span| SpanId::from_hex(span).ok()),
        );
    match parent {
        Some((trace_id, parent_span_id)) => Placement {
            trace_id,
            span_id: ids.new_span_id(),
            parent_span_id,
            parent_is_remote: true,
        },
        None => root(ids),
    }
}

fn root(ids: &RandomIdGenerator) -> Placement {
    Placement {
        trace_id: ids.new_trace_id(),
        span_id: ids.new_span_id(),
        parent_span_id: SpanId::INVALID,
        parent_is_remote: false,
    }
}

fn unix_time(unix_ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_ns).unwrap_or(0))
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

fn span(
    record: &CallRecord,
    role: SpanRole,
    placement: Placement,
    emission: Emission,
    covered: bool,
    scope: &InstrumentationScope,
) -> SpanData {
    let start_time = unix_time(record.start_unix_ns);
    // NOTE: a call still open when the window ended has no E2E; its span
    // ends at its last known point, the first token or first byte.
    let length_us = record
        .e2e_us
        .or(record.ttft_us)
        .or(record.ttfb_us)
        .unwrap_or(0);
    let end_time = start_time + Duration::from_micros(length_us);

    let (name, kind, mut attributes) = match role {
        SpanRole::Server => server_span(record),
        SpanRole::GenAi => genai_span(record),
        SpanRole::Database => database_span(record),
        SpanRole::HttpClient => http_client_span(record),
    };
    let (name, kind) = match emission {
        Emission::Enrich => {
            attributes.clear();
            (format!("llmslo {name}"), SpanKind::Internal)
        }
        _ => (name, kind),
    };
    attributes.extend(llmslo_attributes(record, covered));

    let mut events = SpanEvents::default();
    if let Some(ttft_us) = record.ttft_us {
        events.events.push(Event::new(
            "llmslo.first_token",
            start_time + Duration::from_micros(ttft_us),
            vec![KeyValue::new("llmslo.ttft_s", seconds(ttft_us))],
            0,
        ));
    }

    let status = match error_type(record) {
        Some(error_type) => Status::error(error_type),
        None => Status::Unset,
    };

    SpanData {
        span_context: SpanContext::new(
            placement.trace_id,
            placement.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: placement.parent_span_id,
        parent_span_is_remote: placement.parent_is_remote,
        span_kind: kind,
        name: Cow::Owned(name),
        start_time,
        end_time,
        attributes,
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// Names and describes a GenAI client span:
/// `{gen_ai.operation.name} {gen_ai.request.model}`.
fn genai_span(record: &CallRecord) -> (String, SpanKind, Vec<KeyValue>) {
    let operation = record.operation.clone().unwrap_or_default();
    let name = match &record.request_model {
        Some(model) => format!("{operation} {model}"),
        None => operation,
    };
    let mut attributes = genai_metric_attributes(record);
    if let Some(streaming) = record.streaming {
        attributes.push(KeyValue::new("gen_ai.request.stream", streaming));
    }
    if record.token_source.as_deref() == Some("provider") {
        if let Some(tokens) = record.input_tokens {
            attributes.push(KeyValue::new("gen_ai.usage.input_tokens", tokens as i64));
        }
        if let Some(tokens) = record.output_tokens {
            attributes.push(KeyValue::new("gen_ai.usage.output_tokens", tokens as i64));
        }
    }
    if record.streaming == Some(true)
        && let Some(ttft_us) = record.ttft_us
    {
        attributes.push(KeyValue::new(
            "gen_ai.response.time_to_first_chunk",
            seconds(ttft_us),
        ));
    }
    (name, SpanKind::Client, attributes)
}

/// Names and describes a database client span after `db.operation.name`.
fn database_span(record: &CallRecord) -> (String, SpanKind, Vec<KeyValue>) {
    let system = match record.protocol {
        Protocol::Postgres => "postgresql",
        Protocol::Redis => "redis",
        _ => "other_sql",
    };
    let mut attributes = vec![KeyValue::new("db.system.name", system)];
    let name = match &record.endpoint.path {
        Some(operation) => {
            attributes.push(KeyValue::new("db.operation.name", operation.clone()));
            operation.clone()
        }
        None => system.to_owned(),
    };
    attributes.extend(server_attributes(record));
    if let Some(error_type) = error_type(record) {
        attributes.push(KeyValue::new("error.type", error_type));
    }
    (name, SpanKind::Client, attributes)
}

/// Names and describes an HTTP client span. The path is llmslo's
/// normalized path (id-like segments replaced by `{id}`, no query), so it
/// goes in `url.template`.
fn http_client_span(record: &CallRecord) -> (String, SpanKind, Vec<KeyValue>) {
    let method = record
        .endpoint
        .method
        .clone()
        .unwrap_or_else(|| "_OTHER".into());
    let mut attributes = vec![KeyValue::new("http.request.method", method.clone())];
    let name = match &record.endpoint.path {
        Some(path) => {
            attributes.push(KeyValue::new("url.template", path.clone()));
            format!("{method} {path}")
        }
        None => method,
    };
    if let Some(status) = record.status {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    attributes.extend(server_attributes(record));
    if let Some(error_type) = error_type(record) {
        attributes.push(KeyValue::new("error.type", error_type));
    }
    (name, SpanKind::Client, attributes)
}

/// Names and describes an HTTP server span. llmslo's normalized path
/// replaces `http.route`, which only the application's framework defines
/// exactly.
fn server_span(record: &CallRecord) -> (String, SpanKind, Vec<KeyValue>) {
    let method = record
        .endpoint
        .method
        .clone()
        .unwrap_or_else(|| "_OTHER".into());
    let mut attributes = vec![KeyValue::new("http.request.method", method.clone())];
    let name = match &record.endpoint.path {
        Some(path) => {
            attributes.push(KeyValue::new("http.route", path.clone()));
            format!("{method} {path}")
        }
        None => method,
    };
    if let Some(status) = record.status {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    attributes.extend(server_attributes(record));
    if let Some(error_type) = error_type(record) {
        attributes.push(KeyValue::new("error.type", error_type));
    }
    (name, SpanKind::Server, attributes)
}

/// Attributes outside the conventions: the kernel's timings and how the
/// call was linked and judged.
fn llmslo_attributes(record: &CallRecord, covered: bool) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("llmslo.call.id", record.id.clone()),
        KeyValue::new("llmslo.component", record.component.clone()),
    ];
    if covered {
        attributes.push(KeyValue::new("llmslo.duplicate_of_app_span", true));
    }
    if let Some(provider) = &record.provider {
        attributes.push(KeyValue::new("llmslo.provider", provider.clone()));
    }

    let timings = [
        ("llmslo.ttft_s", record.ttft_us),
        ("llmslo.ttfb_s", record.ttfb_us),
        ("llmslo.e2e_s", record.e2e_us),
        ("llmslo.itl.p50_s", record.itl_p50_us),
        ("llmslo.itl.max_s", record.itl_max_us),
    ];
    for (key, value) in timings {
        if let Some(us) = value {
            attributes.push(KeyValue::new(key, seconds(us)));
        }
    }
    if let Some(source) = record.ttft_source {
        let source = match source {
            TtftSource::ContentEvent => "content_event",
            TtftSource::FirstByte => "first_byte",
        };
        attributes.push(KeyValue::new("llmslo.ttft_source", source));
    }

    if let Some(tpot_us) = record.tpot_us {
        attributes.push(KeyValue::new("llmslo.tpot_s", tpot_us / 1e6));
    }
    if let Some(rate) = record.tokens_per_sec {
        attributes.push(KeyValue::new("llmslo.tokens_per_sec", rate));
    }
    if let Some(tokens) = record.output_tokens {
        attributes.push(KeyValue::new("llmslo.output_tokens", tokens as i64));
    }
    if let Some(source) = &record.token_source {
        attributes.push(KeyValue::new("llmslo.token_source", source.clone()));
    }

    if let Some(link) = &record.link {
        let method = serde_json::to_value(link.method)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        attributes.push(KeyValue::new("llmslo.link.method", method));
        attributes.push(KeyValue::new(
            "llmslo.link.candidates",
            link.candidates as i64,
        ));
    }
    if record.missing_bytes > 0 {
        attributes.push(KeyValue::new(
            "llmslo.missing_bytes",
            record.missing_bytes as i64,
        ));
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analyze::{AnalysisOptions, analyze, testing::Scenario},
        export::coverage::covered_by_app_span,
    };
    use opentelemetry::Value;

    fn analysis(traced: bool) -> Analysis {
        let scenario = Scenario {
            requests: 4,
            traced,
            ..Scenario::default()
        };
        analyze(&scenario.collection(), &AnalysisOptions::default())
    }

    fn all_spans(plan: &SpanPlan) -> Vec<&SpanData> {
        plan.batches.values().flatten().collect()
    }

    fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn call_id(span: &SpanData) -> String {
        attribute(span, "llmslo.call.id").unwrap().to_string()
    }

    #[test]
    fn outbound_spans_are_children_of_server_spans() {
        let analysis = analysis(true);
        let covered = covered_by_app_span(&analysis.calls);
        assert!(covered.iter().all(|&c| !c), "forwarded traceparents");
        let plan = plan(&analysis, OtlpMode::All, &covered);
        assert_eq!(plan.spans, 16);
        assert_eq!(plan.batches.len(), 1);

        let spans = all_spans(&plan);
        let servers: Vec<&&SpanData> = spans
            .iter()
            .filter(|s| s.span_kind == SpanKind::Server)
            .collect();
        assert_eq!(servers.len(), 4);
        for server in &servers {
            assert_eq!(
                server.parent_span_id,
                SpanId::from_hex("00f067aa0ba902b7").unwrap()
            );
            assert!(server.parent_span_is_remote);
            assert_eq!(server.name, "POST /v1/chat/completions");
            let children: Vec<&&SpanData> = spans
                .iter()
                .filter(|s| s.parent_span_id == server.span_context.span_id())
                .collect();
            assert_eq!(children.len(), 3, "{}", server.name);
            for child in children {
                assert_eq!(
                    child.span_context.trace_id(),
                    server.span_context.trace_id()
                );
                assert!(!child.parent_span_is_remote);
                assert_eq!(child.span_kind, SpanKind::Client);
            }
        }
    }

    #[test]
    fn untraced_requests_start_traces() {
        let analysis = analysis(false);
        let covered = covered_by_app_span(&analysis.calls);
        let plan = plan(&analysis, OtlpMode::All, &covered);
        let spans = all_spans(&plan);
        let servers: Vec<&&SpanData> = spans
            .iter()
            .filter(|s| s.span_kind == SpanKind::Server)
            .collect();
        assert_eq!(servers.len(), 4);
        for server in &servers {
            assert_eq!(server.parent_span_id, SpanId::INVALID);
        }
        let trace_ids: std::collections::HashSet<TraceId> =
            spans.iter().map(|s| s.span_context.trace_id()).collect();
        assert_eq!(trace_ids.len(), 4, "one trace per request");
    }

    #[test]
    fn spans_follow_conventions() {
        let analysis = analysis(true);
        let covered = covered_by_app_span(&analysis.calls);
        let plan = plan(&analysis, OtlpMode::All, &covered);
        let spans = all_spans(&plan);

        let genai = spans
            .iter()
            .find(|s| attribute(s, "gen_ai.operation.name").is_some())
            .expect("a GenAI span");
        assert_eq!(genai.name, "chat gpt-4o-mini");
        assert_eq!(
            attribute(genai, "gen_ai.provider.name"),
            Some(&Value::from("openai"))
        );
        assert_eq!(
            attribute(genai, "gen_ai.usage.output_tokens"),
            Some(&Value::I64(100))
        );
        assert_eq!(
            attribute(genai, "server.address"),
            Some(&Value::from("api.openai.com"))
        );
        let record = analysis
            .calls
            .iter()
            .find(|c| c.id == call_id(genai))
            .unwrap();
        assert_eq!(
            genai.end_time.duration_since(genai.start_time).unwrap(),
            Duration::from_micros(record.e2e_us.unwrap())
        );
        assert_eq!(
            genai.events.events[0].timestamp,
            genai.start_time + Duration::from_micros(record.ttft_us.unwrap())
        );

        let database = spans
            .iter()
            .find(|s| attribute(s, "db.system.name").is_some())
            .expect("a database span");
        assert_eq!(database.name, "SELECT");
        assert_eq!(
            attribute(database, "db.system.name"),
            Some(&Value::from("postgresql"))
        );
        assert_eq!(attribute(database, "server.port"), Some(&Value::I64(5432)));

        let guardrail = spans
            .iter()
            .find(|s| attribute(s, "url.template").is_some())
            .expect("an HTTP client span");
        assert_eq!(guardrail.name, "POST /v1/data/chat/allow");
        assert_eq!(
            attribute(guardrail, "http.response.status_code"),
            Some(&Value::I64(200))
        );
    }

    #[test]
    fn telemetry_exports_get_no_span() {
        let analysis = analysis(false);
        let guardrail = analysis
            .calls
            .iter()
            .find(|c| c.component == components::GUARDRAIL)
            .expect("a guardrail call");
        let call = |component: &str, path: &str| {
            let mut call = guardrail.clone();
            call.component = component.to_owned();
            call.endpoint.path = Some(path.to_owned());
            call.endpoint.method = Some("POST".to_owned());
            call
        };

        for path in [
            "/v1/traces",
            "/otlp/v1/metrics",
            "/v1/logs",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ] {
            assert_eq!(SpanRole::of(&call(components::OTHER, path)), None, "{path}");
        }
        assert_eq!(
            SpanRole::of(&call(components::OTHER, "/v1/score")),
            Some(SpanRole::HttpClient)
        );
        assert_eq!(
            SpanRole::of(&call("telemetry", "/v1/traces")),
            Some(SpanRole::HttpClient),
            "a --component rule makes it a dependency"
        );
    }

    #[test]
    fn covered_calls_follow_the_mode() {
        let analysis = analysis(true);
        let covered = vec![true; analysis.calls.len()];

        let all = plan(&analysis, OtlpMode::All, &covered);
        assert_eq!(all.spans, 16);
        assert_eq!(all.covered_spans, 16);
        for span in all_spans(&all) {
            assert_eq!(
                attribute(span, "llmslo.duplicate_of_app_span"),
                Some(&Value::Bool(true))
            );
        }

        let skipped = plan(&analysis, OtlpMode::UninstrumentedOnly, &covered);
        assert_eq!(skipped.spans, 0);
        assert_eq!(skipped.skipped_calls, 16);

        let enrich = plan(&analysis, OtlpMode::Enrich, &covered);
        assert_eq!(enrich.spans, 16);
        for span in all_spans(&enrich) {
            assert_eq!(span.span_kind, SpanKind::Internal);
            assert!(span.name.starts_with("llmslo "), "{}", span.name);
            assert!(
                span.attributes
                    .iter()
                    .all(|kv| kv.key.as_str().starts_with("llmslo.")),
                "{:?}",
                span.attributes
            );
        }
    }

    #[test]
    fn covered_call_is_child_of_app_span() {
        let mut analysis = analysis(true);
        let index = analysis
            .calls
            .iter()
            .position(|c| SpanRole::of(c) == Some(SpanRole::GenAi))
            .unwrap();
        analysis.calls[index].parent_span_id = Some("1111111111111111".into());
        let covered = covered_by_app_span(&analysis.calls);
        assert!(covered[index]);
        let plan = plan(&analysis, OtlpMode::All, &covered);
        let id = analysis.calls[index].id.clone();
        let span = all_spans(&plan)
            .into_iter()
            .find(|s| call_id(s) == id)
            .unwrap();
        assert_eq!(
            span.parent_span_id,
            SpanId::from_hex("1111111111111111").unwrap()
        );
        assert!(span.parent_span_is_remote);
    }
}
