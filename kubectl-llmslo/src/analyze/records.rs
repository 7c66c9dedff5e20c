//! Per-call records: every exchange of every node, joined with the
//! workload identity of its process and classified into a component.

use std::collections::HashMap;

use llmslo_schema::{
    Direction, ErrorKind, Exchange, ProbeResult, Protocol, TargetProcess, TokenSource,
};
use serde::Serialize;

use super::{
    components::{self, ComponentRule},
    intervals::Interval,
    stats,
};
use crate::collection::{Collection, WorkloadIdentity};

/// The pod and container a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    /// Empty when only the pod is known (the process's cgroup named the
    /// pod but not the container).
    pub container: String,
    /// Top of the controller chain, such as `Deployment/chat-api`; absent
    /// for bare pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Workload {
    /// Short label for tables: the owner, else the pod.
    pub fn label(&self) -> String {
        match &self.owner {
            Some(owner) => format!("{}/{}", self.namespace, owner),
            None => format!("{}/pod/{}", self.namespace, self.pod),
        }
    }
}

/// Part a call plays in the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A request whose SLIs the SLOs apply to: an inbound HTTP request, or
    /// an outbound LLM call when the target served no inbound requests.
    Request,
    /// An outbound call made by the target.
    Dependency,
    /// An inbound health check or metrics scrape, left out of the SLIs.
    Excluded,
}

/// Source of a record's TTFT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TtftSource {
    /// The first content-carrying event of a recognised LLM response.
    ContentEvent,
    /// The first response byte, for inbound responses whose format the
    /// probe does not parse as an LLM stream.
    FirstByte,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    pub kind: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
}

/// Reason that a call which ended inside the window has no known outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmeasured {
    /// The probe missed bytes of the exchange, and the stream then looked
    /// cut short (`truncated`, `client_aborted` or `connection_reset`). The
    /// missed bytes alone explain that, so it is not counted as an error.
    IncompleteCapture,
    /// The response had neither a status the parser could read nor an
    /// error, such as random bytes or a head too large to capture.
    Unparsed,
}

/// Destination of an outbound call. It never contains a query string or
/// header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    /// TLS server name or HTTP host, else the peer address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// HTTP path with id-like segments replaced by `{id}`, the database
    /// command, or the DNS query type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Endpoint {
    pub fn label(&self) -> String {
        let server = self.server.as_deref().unwrap_or("?");
        match (&self.method, &self.path) {
            (Some(method), Some(path)) => format!("{method} {server}{path}"),
            (None, Some(path)) => format!("{server} {path}"),
            _ => server.to_owned(),
        }
    }
}

/// One exchange with its identity, component and derived SLIs.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// `NODE/EXCHANGE-ID`, unique within a report.
    pub id: String,
    pub node: String,
    pub pid: u32,
    pub tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    pub direction: Direction,
    pub protocol: Protocol,
    pub role: Role,
    pub component: String,
    pub endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The response's model, else the request's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model named in the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_model: Option<String>,
    /// The model named in the response, such as a dated snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// `t0` as nanoseconds since the Unix epoch.
    pub start_unix_ns: i64,
    /// `t0` relative to the start of the node's window.
    pub start_offset_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_source: Option<TtftSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_us: Option<u64>,
    /// Number of inter-token gaps and their median and maximum.
    #[serde(skip_serializing_if = "is_zero")]
    pub itl_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itl_p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itl_max_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpot_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// `provider`, `estimate_from_events`, `unknown`, or `linked_calls` for
    /// inbound requests whose own response format is not parsed: the sum
    /// of the output tokens of the LLM calls linked to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_source: Option<String>,
    /// Output tokens per second of the generation phase:
    /// `output_tokens / (e2e - ttft)`; streamed responses only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// The window ended before the response did: the call was in flight,
    /// not failed. It has no E2E and no error, and keeps its TTFT when
    /// the first token had arrived.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_flight: bool,
    /// The call ended, but its outcome is unknown. Like a call in flight,
    /// it has no E2E and no error, and error rates leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmeasured: Option<Unmeasured>,
    /// W3C trace id from the request's `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The `parent-id` of that `traceparent`: the span of the caller (for
    /// inbound requests) or of the target itself (for outbound calls) that
    /// the request continues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Port of the server end: the peer's for outbound calls, the target's
    /// own for inbound requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub missing_bytes: u64,
    /// For outbound calls: the inbound request they served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<super::linking::Link>,
    /// For requests: the time of each component on the critical path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decomposition: Option<super::decompose::Decomposition>,

    /// `t0` on the node's monotonic clock.
    #[serde(skip)]
    pub t0_ns: u64,
    /// Every inter-token gap, for pooled ITL percentiles.
    #[serde(skip)]
    pub itl_us: Vec<u64>,
    /// The response is an event stream (`text/event-stream` or NDJSON),
    /// whatever its format inside.
    #[serde(skip)]
    pub event_stream: bool,
    /// For DNS lookups that got a response: whether it carried an answer.
    /// NXDOMAIN is a response, not an error, so a name that never
    /// resolves shows only here.
    #[serde(skip)]
    pub dns_resolved: Option<bool>,
    /// For requests: when the first of their connection attempts that
    /// failed started, and its component (`connect`, or `network` after a
    /// retransmitted SYN). Attempts are not records, so their failures are
    /// kept here for the error cause.
    #[serde(skip)]
    pub failed_connect: Option<(u64, &'static str)>,
    /// `(local, peer)` addresses of the connection the call used.
    #[serde(skip)]
    pub socket: Option<(String, String)>,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

impl CallRecord {
    /// Returns the call's interval from `t0` to its end. Calls without an
    /// end last until the end of the window.
    pub fn interval(&self, window_end_ns: u64) -> Interval {
        let end_ns = match self.e2e_us {
            Some(e2e_us) => self.t0_ns + e2e_us * 1000,
            None => window_end_ns.max(self.t0_ns),
        };
        Interval::new(self.t0_ns, end_ns)
    }

    /// Returns when the first response byte came, or the end of `call`
    /// (its interval) for a call without a response.
    pub fn first_byte_ns(&self, call: Interval) -> u64 {
        self.ttfb_us
            .map_or(call.end_ns, |ttfb_us| self.t0_ns + ttfb_us * 1000)
    }

    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }

    /// Returns whether the call is known to have succeeded or failed: it
    /// ended inside the window and the probe saw how.
    pub fn has_outcome(&self) -> bool {
        !self.in_flight && self.unmeasured.is_none()
    }

    pub fn is_rate_limited(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|error| error.kind == ErrorKind::RateLimited)
    }

    /// True for LLM calls other than embeddings.
    pub fn is_generation_call(&self) -> bool {
        self.component == components::PROVIDER && self.operation.is_some()
    }
}

/// Response content types of streamed responses.
const EVENT_STREAM_TYPES: [&str; 3] = [
    "text/event-stream",
    "application/x-ndjson",
    "application/jsonl",
];

/// Inbound paths of health checks and metrics scrapes.
const EXCLUDED_INBOUND_PATHS: [&str; 8] = [
    "/healthz", "/readyz", "/livez", "/health", "/ready", "/live", "/metrics", "/ping",
];

/// Maps a node's processes to workloads through container id and pod UID.
pub struct IdentityIndex<'a> {
    by_container: HashMap<&'a str, &'a WorkloadIdentity>,
    by_pod_uid: HashMap<&'a str, &'a WorkloadIdentity>,
}

impl<'a> IdentityIndex<'a> {
    pub fn new(collection: &'a Collection) -> Self {
        let mut by_container = HashMap::new();
        let mut by_pod_uid = HashMap::new();
        for workload in &collection.workloads {
            by_container.insert(workload.container_id.as_str(), workload);
            by_pod_uid
                .entry(workload.pod_uid.as_str())
                .or_insert(workload);
        }
        Self {
            by_container,
            by_pod_uid,
        }
    }

    pub fn workload_of(&self, process: &TargetProcess) -> Option<Workload> {
        if let Some(identity) = process
            .container_id
            .as_deref()
            .and_then(|id| self.by_container.get(id))
        {
            return Some(workload(identity, true));
        }
        process
            .pod_uid
            .as_deref()
            .and_then(|uid| self.by_pod_uid.get(uid))
            .map(|identity| workload(identity, false))
    }
}

fn workload(identity: &WorkloadIdentity, with_container: bool) -> Workload {
    Workload {
        namespace: identity.namespace.clone(),
        pod: identity.pod.clone(),
        container: if with_container {
            identity.container.clone()
        } else {
            String::new()
        },
        owner: identity.owners.last().cloned(),
    }
}

/// Builds the records of one node's result, without roles, links or
/// decompositions.
pub fn node_records(
    node: &str,
    result: &ProbeResult,
    identities: &IdentityIndex<'_>,
    rules: &[ComponentRule],
) -> Vec<CallRecord> {
    let processes: HashMap<u32, &TargetProcess> =
        result.processes.iter().map(|p| (p.pid, p)).collect();
    result
        .exchanges
        .iter()
        .map(|exchange| {
            let process = processes.get(&exchange.pid).copied();
            record(node, result, exchange, process, identities, rules)
        })
        .collect()
}

fn record(
    node: &str,
    result: &ProbeResult,
    exchange: &Exchange,
    process: Option<&TargetProcess>,
    identities: &IdentityIndex<'_>,
    rules: &[ComponentRule],
) -> CallRecord {
    let llm = exchange.llm.as_ref();
    let http = exchange.http.as_ref();
    let component = match exchange.direction {
        Direction::Outbound => components::classify(exchange, rules),
        Direction::Inbound => components::SERVICE.to_owned(),
    };

    // The parsers give exchanges still open at the end of the window the
    // error kind `Unanswered`.
    let in_flight = exchange
        .error
        .as_ref()
        .is_some_and(|error| error.kind == ErrorKind::Unanswered);
    let unmeasured = unmeasured_reason(exchange, in_flight);
    let e2e_us = exchange
        .e2e_us
        .filter(|_| !in_flight && unmeasured.is_none());

    let (ttft_us, ttft_source) = match (llm.and_then(|llm| llm.ttft_us), exchange.direction) {
        (Some(ttft_us), _) => (Some(ttft_us), Some(TtftSource::ContentEvent)),
        (None, Direction::Inbound) if exchange.ttfb_us.is_some() => {
            (exchange.ttfb_us, Some(TtftSource::FirstByte))
        }
        _ => (None, None),
    };
    let output_tokens = llm.and_then(|llm| llm.usage.output_tokens);
    let token_source = llm.map(|llm| token_source_name(llm.usage.source).to_owned());
    let streaming = llm.map(|llm| llm.streaming);
    let tokens_per_sec = tokens_per_sec(output_tokens, streaming.unwrap_or(false), ttft_us, e2e_us);

    let mut itl_sorted: Vec<f64> = llm
        .map(|llm| llm.itl_us.iter().map(|&gap| gap as f64).collect())
        .unwrap_or_default();
    stats::sort_floats(&mut itl_sorted);

    let endpoint = Endpoint {
        server: exchange
            .connection
            .server_name
            .clone()
            .or_else(|| exchange.connection.peer.clone()),
        path: http
            .map(|http| normalize_path(&http.path))
            .or_else(|| exchange.db.as_ref().map(|db| db.operation.clone()))
            .or_else(|| exchange.dns.as_ref().map(|dns| dns.query_type.clone())),
        method: http.map(|http| http.method.clone()),
    };

    let unix_ns = i128::from(exchange.t0_ns) + result.window.unix_offset_ns;
    CallRecord {
        id: format!("{node}/{}", exchange.id),
        node: node.to_owned(),
        pid: exchange.pid,
        tid: exchange.tid,
        comm: process.map(|p| p.comm.clone()),
        workload: process.and_then(|p| identities.workload_of(p)),
        direction: exchange.direction,
        protocol: exchange.protocol,
        role: Role::Dependency,
        component,
        endpoint,
        provider: llm.map(|llm| llm.provider.clone()),
        model: llm.and_then(|llm| llm.response_model.clone().or(llm.request_model.clone())),
        request_model: llm.and_then(|llm| llm.request_model.clone()),
        response_model: llm.and_then(|llm| llm.response_model.clone()),
        operation: llm.map(|llm| llm.operation.clone()),
        streaming,
        start_unix_ns: i64::try_from(unix_ns).unwrap_or(i64::MAX),
        start_offset_ms: exchange.t0_ns.saturating_sub(result.window.start_ns) as f64 / 1e6,
        ttfb_us: exchange.ttfb_us,
        ttft_us,
        ttft_source,
        e2e_us,
        itl_count: itl_sorted.len(),
        itl_p50_us: stats::percentile_sorted(&itl_sorted, 50.0).map(|v| v as u64),
        itl_max_us: itl_sorted.last().map(|&v| v as u64),
        tpot_us: llm.and_then(|llm| llm.tpot_us),
        input_tokens: llm.and_then(|llm| llm.usage.input_tokens),
        output_tokens,
        token_source,
        tokens_per_sec,
        status: http.and_then(|http| http.status),
        error: exchange
            .error
            .as_ref()
            .filter(|error| error.kind != ErrorKind::Unanswered && unmeasured.is_none())
            .map(|error| ErrorRecord {
                kind: error.kind,
                provider_code: error.provider_code.clone(),
            }),
        in_flight,
        unmeasured,
        trace_id: exchange.trace.as_ref().map(|trace| trace.trace_id.clone()),
        parent_span_id: exchange
            .trace
            .as_ref()
            .map(|trace| trace.parent_span_id.clone()),
        server_port: server_port(exchange),
        missing_bytes: exchange.missing_bytes,
        link: None,
        decomposition: None,
        t0_ns: exchange.t0_ns,
        itl_us: llm.map(|llm| llm.itl_us.clone()).unwrap_or_default(),
        event_stream: http
            .and_then(|http| http.content_type.as_deref())
            .is_some_and(|content_type| EVENT_STREAM_TYPES.contains(&content_type)),
        dns_resolved: exchange
            .dns
            .as_ref()
            .filter(|dns| dns.response_code.is_some())
            .map(|dns| dns.answers > 0),
        failed_connect: None,
        socket: exchange
            .connection
            .local
            .clone()
            .zip(exchange.connection.peer.clone()),
    }
}

/// Returns why an exchange that ended has no known outcome, if it has
/// none.
fn unmeasured_reason(exchange: &Exchange, in_flight: bool) -> Option<Unmeasured> {
    if in_flight {
        return None;
    }
    let cut_short = exchange.error.as_ref().is_some_and(|error| {
        matches!(
            error.kind,
            ErrorKind::Truncated | ErrorKind::ClientAborted | ErrorKind::ConnectionReset
        )
    });
    if exchange.missing_bytes > 0 && cut_short {
        return Some(Unmeasured::IncompleteCapture);
    }
    let http_exchange = matches!(exchange.protocol, Protocol::Http1 | Protocol::Http2);
    let status = exchange.http.as_ref().and_then(|http| http.status);
    if http_exchange && status.is_none() && exchange.error.is_none() {
        return Some(Unmeasured::Unparsed);
    }
    None
}

/// Returns the port of the connection's server end, from `ip:port` or
/// `[ip6]:port`.
fn server_port(exchange: &Exchange) -> Option<u16> {
    let address = match exchange.direction {
        Direction::Outbound => exchange.connection.peer.as_deref(),
        Direction::Inbound => exchange.connection.local.as_deref(),
    }?;
    address.rsplit_once(':')?.1.parse().ok()
}

pub fn token_source_name(source: TokenSource) -> &'static str {
    match source {
        TokenSource::Unknown => "unknown",
        TokenSource::Provider => "provider",
        TokenSource::EstimateFromEvents => "estimate_from_events",
    }
}

/// Output tokens per second of the generation phase, `e2e - ttft`.
///
/// Only streamed responses have a generation phase that the probe can
/// time; for a buffered response TTFT is the arrival of the whole body.
pub fn tokens_per_sec(
    output_tokens: Option<u64>,
    streaming: bool,
    ttft_us: Option<u64>,
    e2e_us: Option<u64>,
) -> Option<f64> {
    let tokens = output_tokens.filter(|&tokens| tokens > 0)?;
    let generation_us = e2e_us?.checked_sub(ttft_us?)?;
    (streaming && generation_us > 0).then(|| tokens as f64 / (generation_us as f64 / 1e6))
}

/// Assigns roles: inbound HTTP requests are the requests when there are
/// any; otherwise outbound generation calls (or, failing those, every
/// outbound LLM call) are.
pub fn assign_roles(records: &mut [CallRecord]) -> super::RequestScope {
    let mut inbound_requests = 0;
    for record in records.iter_mut() {
        if record.direction == Direction::Inbound {
            let excluded = record
                .endpoint
                .path
                .as_deref()
                .is_some_and(|path| EXCLUDED_INBOUND_PATHS.contains(&path))
                || !matches!(record.protocol, Protocol::Http1 | Protocol::Http2);
            record.role = if excluded {
                Role::Excluded
            } else {
                inbound_requests += 1;
                Role::Request
            };
        }
    }
    if inbound_requests > 0 {
        return super::RequestScope::Inbound;
    }

    let has_generation = records.iter().any(CallRecord::is_generation_call);
    let mut any = false;
    for record in records.iter_mut() {
        let is_llm = record.operation.is_some()
            && matches!(
                record.component.as_str(),
                components::PROVIDER | components::EMBEDDINGS
            );
        if record.direction == Direction::Outbound
            && is_llm
            && (!has_generation || record.is_generation_call())
        {
            record.role = Role::Request;
            any = true;
        }
    }
    if any {
        super::RequestScope::OutboundLlm
    } else {
        super::RequestScope::None
    }
}

/// Replaces path segments that look like identifiers with `{id}`, so that
/// `/v1/threads/thread_abc123/runs` groups with its siblings.
pub fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| {
            if looks_like_id(segment) {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn looks_like_id(segment: &str) -> bool {
    if segment.is_empty() || segment.starts_with('_') {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    let all_digits = digits == segment.len();
    let hex_like =
        segment.len() >= 16 && segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let long_mixed = segment.len() >= 12 && digits >= 3;
    all_digits || hex_like || long_mixed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_replaced() {
        assert_eq!(
            normalize_path("/v1/chat/completions"),
            "/v1/chat/completions"
        );
        assert_eq!(normalize_path("/users/42/orders"), "/users/{id}/orders");
        assert_eq!(
            normalize_path("/v1/threads/thread_abc123def456/runs"),
            "/v1/threads/{id}/runs"
        );
        assert_eq!(
            normalize_path("/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
            "/items/{id}"
        );
        assert_eq!(normalize_path("/docs/_search"), "/docs/_search");
        assert_eq!(normalize_path(""), "/");
    }

    #[test]
    fn tokens_per_sec_uses_generation_phase() {
        assert_eq!(
            tokens_per_sec(Some(100), true, Some(500_000), Some(2_500_000)),
            Some(50.0)
        );
        assert_eq!(
            tokens_per_sec(Some(100), false, Some(500_000), Some(2_500_000)),
            None
        );
        assert_eq!(
            tokens_per_sec(Some(0), true, Some(500_000), Some(2_500_000)),
            None
        );
        assert_eq!(
            tokens_per_sec(Some(10), true, Some(500_000), Some(500_000)),
            None
        );
        assert_eq!(tokens_per_sec(None, true, Some(1), Some(2)), None);
    }
}
