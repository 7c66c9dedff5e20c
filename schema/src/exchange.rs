//! Request/response exchanges reconstructed from socket traffic.

use serde::{Deserialize, Serialize};

/// One request and its response on one connection (or one HTTP/2 stream).
///
/// Only metadata is kept: no prompt, completion, query text or header value
/// ever appears here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Unique within one [`crate::ProbeResult`].
    pub id: u64,
    /// Thread group id of the process that owns the socket.
    pub pid: u32,
    /// Thread that wrote (outbound) or read (inbound) the first request byte.
    pub tid: u32,
    /// cgroup v2 id of that thread at the time.
    pub cgroup_id: u64,
    pub direction: Direction,
    pub protocol: Protocol,
    pub connection: Connection,
    /// `t0`: the first request byte written (outbound) or read (inbound),
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub t0_ns: u64,
    /// TTFB: first response byte minus `t0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_us: Option<u64>,
    /// E2E: end of the response (terminal event or last byte) minus `t0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_us: Option<u64>,
    /// Bytes of the request and the response as they crossed the socket or
    /// the TLS library (before any content decoding).
    pub request_bytes: u64,
    pub response_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpExchange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DbCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsQuery>,
    /// W3C trace context from the request's `traceparent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
    /// Set when the exchange failed in any way that counts as an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExchangeError>,
    /// Bytes of this exchange the probe did not see (capture limits or ring
    /// buffer loss); non-zero means the timings may be late or missing.
    #[serde(default)]
    pub missing_bytes: u64,
}

/// Which side of the connection the target process is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The target made the request (an outbound call to a provider,
    /// database or other service).
    #[default]
    Outbound,
    /// The target served the request.
    Inbound,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
    Postgres,
    Redis,
    Dns,
}

/// The connection an exchange travelled on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Socket file descriptor in the target process.
    pub fd: i32,
    /// `ip:port` of the target's end, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// `ip:port` of the other end, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// TLS server name (SNI) or, without it, the HTTP `Host`/`:authority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// TLS library whose plaintext the probe read; absent for plaintext
    /// sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_library: Option<String>,
}

/// HTTP metadata of an exchange (HTTP/1.1 or HTTP/2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpExchange {
    pub method: String,
    /// Request path without the query string, which may carry keys.
    pub path: String,
    /// Names of the query parameters, without their values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// HTTP/2 stream id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
    /// Response `Content-Type` without parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Response `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// `Retry-After` of the response, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Provider rate-limit headers of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Rate-limit state that providers report in response headers
/// (`x-ratelimit-*`, `anthropic-ratelimit-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_tokens: Option<u64>,
}

/// A call to an LLM API recognised by its wire format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Provider as identified by host, path and format: `openai`,
    /// `azure_openai`, `anthropic`, `gemini`, `openai_compatible`, `ollama`,
    /// or the name of a user rule.
    pub provider: String,
    /// API within the provider, such as `chat.completions`, `responses`,
    /// `embeddings`, `messages`, `generate_content`, `ollama.chat`.
    pub api: String,
    /// OpenTelemetry `gen_ai.operation.name`: `chat`, `text_completion`,
    /// `embeddings`, `generate_content`.
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_model: Option<String>,
    pub streaming: bool,
    /// TTFT: first event that carries non-empty generated content minus `t0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<u64>,
    /// ITL: gaps between successive content-carrying events, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub itl_us: Vec<u64>,
    /// TPOT: (last content event minus first) / (output tokens minus 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_us: Option<f64>,
    /// Events that carried generated content (text, reasoning or tool calls).
    pub content_events: u32,
    /// Of those, events that carried reasoning deltas.
    #[serde(default)]
    pub reasoning_events: u32,
    /// Of those, events that carried tool-call deltas.
    #[serde(default)]
    pub tool_call_events: u32,
    pub usage: TokenUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Whether the stream's terminal event (`[DONE]`, `message_stop`,
    /// `response.completed`, `"done": true`) was seen. Always true for
    /// complete non-streaming responses.
    pub terminated: bool,
}

/// Token counts of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Where `output_tokens` came from.
    pub source: TokenSource,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// No token count is known.
    #[default]
    Unknown,
    /// The provider's usage fields.
    Provider,
    /// An estimate from the number of content events, one token each.
    EstimateFromEvents,
}

/// A database or cache call (retrieval component).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbCall {
    /// OpenTelemetry `db.system.name`: `postgresql`, `redis`.
    pub system: String,
    /// Command or statement keyword only (`SELECT`, `GET`, `FT.SEARCH`); the
    /// statement text is never kept.
    pub operation: String,
}

/// A DNS query and its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsQuery {
    pub name: String,
    /// Query type such as `A`, `AAAA`, `SRV`.
    pub query_type: String,
    /// Response code such as `NOERROR`, `NXDOMAIN`, `SERVFAIL`; absent when
    /// no answer arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    pub answers: u16,
}

/// W3C Trace Context of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The `parent-id` field of `traceparent`: 16 lowercase hex digits.
    pub parent_span_id: String,
    pub sampled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Why an exchange counts as failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeError {
    pub kind: ErrorKind,
    /// Provider error type or code when the body or event names one
    /// (`rate_limit_error`, `overloaded_error`, `server_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// HTTP status 400 or higher other than 429.
    HttpStatus,
    /// HTTP status 429.
    RateLimited,
    /// An error event inside a stream that had started with 2xx.
    StreamError,
    /// A stream that ended without its terminal event.
    Truncated,
    /// The connection was reset or closed before the response finished.
    ConnectionReset,
    /// The client closed the connection before the response finished.
    ClientAborted,
    /// The database or DNS server answered with an error.
    ServerError,
    /// No answer arrived before the window ended.
    Unanswered,
}
