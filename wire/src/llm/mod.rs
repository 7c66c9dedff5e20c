//! LLM API calls inside HTTP exchanges: which provider and API a request
//! goes to, and the timings and token counts of its response.
//!
//! The HTTP layer hands a [`LlmTracker`] the request head, the request body,
//! the response head and the decoded response body with the timestamp of
//! the read that delivered each piece. Streaming responses are split into
//! events; an event counts at the timestamp of the read that completed it.

mod json;
mod openai;

use llmslo_schema::{ErrorKind, ExchangeError, LlmCall, TokenSource};

use crate::ProviderRule;
use crate::sse::{SseEvent, SseParser};

/// Largest single stream event (SSE event or NDJSON line) kept for JSON
/// decoding; larger events are counted but not read.
const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Facts about one stream event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventFacts {
    /// Non-empty generated output: text, refusal, reasoning or tool call.
    pub content: bool,
    pub reasoning: bool,
    pub tool_call: bool,
    /// The stream's terminal event (`[DONE]`, `message_stop`, ...).
    pub terminal: bool,
    /// An error event, with the provider's code when it gave one.
    pub error: Option<Option<String>>,
    /// The event was not JSON of the expected shape.
    pub unreadable: bool,
}

/// The wire format of an LLM API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    OpenAiChat,
}

impl ApiFormat {
    fn api(self) -> &'static str {
        match self {
            ApiFormat::OpenAiChat => "chat.completions",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            ApiFormat::OpenAiChat => "chat",
        }
    }
}

/// Destination of a request, from its head.
pub struct RequestTarget<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub method: &'a str,
    pub path: &'a str,
}

/// Names the provider and API format of a request, or `None` when it is not
/// an LLM API call. User rules name the provider first; the path then names
/// the format.
pub fn identify(target: &RequestTarget<'_>, rules: &[ProviderRule]) -> Option<(String, ApiFormat)> {
    if !target.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let format = format_of_path(target.path)?;
    let rule = rules.iter().find(|rule| rule_matches(rule, target));
    let provider = match rule {
        Some(rule) => rule.provider.clone(),
        None => provider_of(target.host, target.path, format).to_owned(),
    };
    Some((provider, format))
}

fn format_of_path(path: &str) -> Option<ApiFormat> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") || path == "/chat/completions" {
        return Some(ApiFormat::OpenAiChat);
    }
    None
}

fn provider_of(host: Option<&str>, path: &str, format: ApiFormat) -> &'static str {
    let host = host.unwrap_or_default();
    match format {
        ApiFormat::OpenAiChat => {
            if host == "api.openai.com" {
                "openai"
            } else if host.ends_with(".openai.azure.com")
                || host.ends_with(".cognitiveservices.azure.com")
                || path.starts_with("/openai/deployments/")
            {
                "azure_openai"
            } else {
                "openai_compatible"
            }
        }
    }
}

fn rule_matches(rule: &ProviderRule, target: &RequestTarget<'_>) -> bool {
    let host_matches = target
        .host
        .is_some_and(|host| host.eq_ignore_ascii_case(&rule.host));
    let port_matches = rule.port.is_none() || rule.port == target.port;
    host_matches && port_matches && target.path.starts_with(&rule.path_prefix)
}

/// A body kept up to a limit; longer bodies are marked truncated.
#[derive(Debug, Default)]
struct BoundedBody {
    bytes: Vec<u8>,
    truncated: bool,
}

impl BoundedBody {
    fn push(&mut self, input: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.bytes.len());
        if input.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&input[..input.len().min(room)]);
    }
}

/// Reader of the response body.
#[derive(Debug)]
enum ResponseReader {
    /// Not yet known: the response head has not arrived.
    Pending,
    /// A JSON body read once complete.
    Whole(BoundedBody),
    Sse(Box<SseParser>),
    /// A body that carries no usable metadata (encoded, error page, ...).
    Ignored,
}

/// Follows one LLM API call through its request and response.
#[derive(Debug)]
pub struct LlmTracker {
    format: ApiFormat,
    call: LlmCall,
    t0_ns: u64,
    max_body_bytes: usize,
    request_body: BoundedBody,
    reader: ResponseReader,
    status: u16,
    first_content_ns: Option<u64>,
    last_content_ns: Option<u64>,
    terminal_ns: Option<u64>,
    /// Error events inside the stream, or a stream cut before its end.
    stream_error: Option<ExchangeError>,
    /// Events that were not JSON of the expected shape, or too large.
    unreadable_events: u32,
}

/// Result of a finished [`LlmTracker`].
#[derive(Debug)]
pub struct LlmOutcome {
    pub call: LlmCall,
    /// An error event or a truncated stream.
    pub stream_error: Option<ExchangeError>,
    /// The provider's error code from the body of a 4xx/5xx response.
    pub provider_code: Option<String>,
}

impl LlmTracker {
    pub fn new(provider: String, format: ApiFormat, t0_ns: u64, max_body_bytes: usize) -> Self {
        Self {
            format,
            call: LlmCall {
                provider,
                api: format.api().to_owned(),
                operation: format.operation().to_owned(),
                ..LlmCall::default()
            },
            t0_ns,
            max_body_bytes,
            request_body: BoundedBody::default(),
            reader: ResponseReader::Pending,
            status: 0,
            first_content_ns: None,
            last_content_ns: None,
            terminal_ns: None,
            stream_error: None,
            unreadable_events: 0,
        }
    }

    /// Takes request body bytes (after transfer decoding).
    pub fn on_request_body(&mut self, bytes: &[u8]) {
        self.request_body.push(bytes, self.max_body_bytes);
    }

    /// Reads `model` and `stream` from the complete request body.
    pub fn on_request_end(&mut self) {
        let body = std::mem::take(&mut self.request_body);
        if body.truncated {
            // NOTE: a body longer than max_body_bytes is not parsed, so the
            // request model stays unknown; the response model still names it.
            tracing::debug!(
                kept_bytes = body.bytes.len(),
                "LLM request body exceeds max_body_bytes; request model not read"
            );
            return;
        }
        match self.format {
            ApiFormat::OpenAiChat => {
                if let Ok(request) = serde_json::from_slice::<openai::ChatRequest>(&body.bytes) {
                    self.call.request_model = request.model.as_deref().map(json::label);
                    self.call.streaming = request.stream.unwrap_or(false);
                }
            }
        }
    }

    /// Chooses how to read the response body from the final response head.
    /// `content_encoding` other than identity makes the body unreadable
    /// until decoding is supported.
    pub fn on_response_head(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) {
        self.status = status;
        let encoded =
            content_encoding.is_some_and(|coding| !coding.eq_ignore_ascii_case("identity"));
        let event_stream = content_type == Some("text/event-stream");

        self.reader = if encoded {
            // TODO: decode gzip, deflate, br and zstd bodies incrementally.
            ResponseReader::Ignored
        } else if event_stream && (200..300).contains(&status) {
            self.call.streaming = true;
            ResponseReader::Sse(Box::new(SseParser::new(MAX_EVENT_BYTES)))
        } else {
            ResponseReader::Whole(BoundedBody::default())
        };
    }

    /// Takes decoded response body bytes delivered by a read at `ts_ns`.
    pub fn on_response_body(&mut self, ts_ns: u64, bytes: &[u8]) {
        match &mut self.reader {
            ResponseReader::Pending | ResponseReader::Ignored => {}
            ResponseReader::Whole(body) => body.push(bytes, self.max_body_bytes),
            ResponseReader::Sse(parser) => {
                let mut events = Vec::new();
                parser.feed(bytes, &mut events);
                for event in events {
                    self.on_sse_event(ts_ns, &event);
                }
            }
        }
    }

    /// Notes response bytes that were lost before capture: a whole body can
    /// no longer be parsed, and a stream restarts at the next line.
    pub fn on_response_gap(&mut self) {
        match &mut self.reader {
            ResponseReader::Whole(body) => body.truncated = true,
            ResponseReader::Sse(parser) => **parser = SseParser::new(MAX_EVENT_BYTES),
            ResponseReader::Pending | ResponseReader::Ignored => {}
        }
    }

    /// Notes request body bytes lost before capture.
    pub fn on_request_gap(&mut self) {
        self.request_body.truncated = true;
    }

    fn on_sse_event(&mut self, ts_ns: u64, event: &SseEvent) {
        if self.terminal_ns.is_some() {
            return;
        }
        let facts = if event.oversized {
            EventFacts {
                unreadable: true,
                ..EventFacts::default()
            }
        } else {
            match self.format {
                ApiFormat::OpenAiChat => openai::chat_stream_event(&mut self.call, &event.data),
            }
        };
        self.record_event(ts_ns, &facts);
    }

    fn record_event(&mut self, ts_ns: u64, facts: &EventFacts) {
        if facts.unreadable {
            self.unreadable_events += 1;
        }
        if facts.content {
            if let Some(last) = self.last_content_ns {
                self.call.itl_us.push(ts_ns.saturating_sub(last) / 1000);
            }
            self.first_content_ns.get_or_insert(ts_ns);
            self.last_content_ns = Some(ts_ns);
            self.call.content_events += 1;
            self.call.reasoning_events += u32::from(facts.reasoning);
            self.call.tool_call_events += u32::from(facts.tool_call);
        }
        if let Some(code) = &facts.error
            && self.stream_error.is_none()
        {
            self.stream_error = Some(ExchangeError {
                kind: ErrorKind::StreamError,
                provider_code: code.clone(),
            });
        }
        if facts.terminal {
            self.terminal_ns = Some(ts_ns);
            self.call.terminated = true;
        }
    }

    /// Timestamp of the stream's terminal event, when one was seen.
    pub fn terminal_ns(&self) -> Option<u64> {
        self.terminal_ns
    }

    /// Completes the call once the response body ended. `complete` is false
    /// when the body was cut short (reset, close, end of window).
    pub fn finish(mut self, complete: bool) -> LlmOutcome {
        let mut provider_code = None;
        match std::mem::replace(&mut self.reader, ResponseReader::Ignored) {
            ResponseReader::Whole(body) if complete && !body.truncated => {
                if self.status >= 400 {
                    provider_code = json::error_code(&body.bytes);
                } else if self.read_whole_body(&body.bytes) {
                    self.call.terminated = true;
                }
            }
            ResponseReader::Sse(mut parser) => {
                if let Some(event) = parser.finish() {
                    // The SSE standard drops an event without its blank line;
                    // it only shows that the stream was cut.
                    tracing::debug!(
                        data_bytes = event.data.len(),
                        "SSE stream ended inside an event"
                    );
                }
                if !self.call.terminated && self.stream_error.is_none() {
                    self.stream_error = Some(ExchangeError {
                        kind: ErrorKind::Truncated,
                        provider_code: None,
                    });
                }
            }
            _ => {}
        }

        if self.unreadable_events > 0 {
            tracing::debug!(
                unreadable_events = self.unreadable_events,
                api = self.call.api,
                "stream events were not JSON of the expected shape"
            );
        }
        self.fill_derived_metrics();
        LlmOutcome {
            call: self.call,
            stream_error: self.stream_error,
            provider_code,
        }
    }

    /// Reads a complete non-streaming response body. Returns false when it
    /// is not a response of the expected shape.
    fn read_whole_body(&mut self, body: &[u8]) -> bool {
        match self.format {
            ApiFormat::OpenAiChat => openai::chat_response(&mut self.call, body),
        }
    }

    fn fill_derived_metrics(&mut self) {
        if let Some(first) = self.first_content_ns {
            self.call.ttft_us = Some(first.saturating_sub(self.t0_ns) / 1000);
        }

        if self.call.usage.output_tokens.is_none() && self.call.content_events > 0 {
            self.call.usage.output_tokens = Some(u64::from(self.call.content_events));
            self.call.usage.source = TokenSource::EstimateFromEvents;
        }

        if let (Some(first), Some(last), Some(tokens)) = (
            self.first_content_ns,
            self.last_content_ns,
            self.call.usage.output_tokens,
        ) && tokens >= 2
        {
            let span_us = last.saturating_sub(first) as f64 / 1000.0;
            self.call.tpot_us = Some(span_us / (tokens - 1) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(host: &'a str, path: &'a str) -> RequestTarget<'a> {
        RequestTarget {
            host: Some(host),
            port: Some(443),
            method: "POST",
            path,
        }
    }

    #[test]
    fn providers_by_host_and_path() {
        let cases = [
            ("api.openai.com", "/v1/chat/completions", "openai"),
            (
                "res.openai.azure.com",
                "/openai/deployments/gpt4o/chat/completions",
                "azure_openai",
            ),
            ("vllm.internal", "/v1/chat/completions", "openai_compatible"),
        ];
        for (host, path, provider) in cases {
            let (found, format) = identify(&target(host, path), &[]).expect(path);
            assert_eq!(found, provider, "{host}{path}");
            assert_eq!(format, ApiFormat::OpenAiChat);
        }
    }

    #[test]
    fn get_requests_are_not_llm_calls() {
        let mut request = target("api.openai.com", "/v1/chat/completions");
        request.method = "GET";
        assert!(identify(&request, &[]).is_none());
    }

    #[test]
    fn user_rule_names_provider() {
        let rules = [ProviderRule {
            provider: "gateway".to_owned(),
            host: "llm.corp.test".to_owned(),
            port: Some(443),
            path_prefix: "/v1/".to_owned(),
        }];
        let (provider, _) =
            identify(&target("llm.corp.test", "/v1/chat/completions"), &rules).unwrap();
        assert_eq!(provider, "gateway");
        let (provider, _) =
            identify(&target("other.test", "/v1/chat/completions"), &rules).unwrap();
        assert_eq!(provider, "openai_compatible");
    }
}
