//! LLM API calls inside HTTP exchanges: which provider and API a request
//! goes to, and the timings and token counts of its response.
//!
//! The HTTP layer hands a [`LlmTracker`] the request head, the request body,
//! the response head and the decoded response body with the timestamp of
//! the read that delivered each piece. Streaming responses are split into
//! events; an event counts at the timestamp of the read that completed it.
//! A non-streaming body is one event that counts at its first byte, because
//! its content was generated before the first byte was sent.

mod anthropic;
mod format;
mod gemini;
mod json;
mod ndjson;
mod ollama;
mod openai;
mod responses;

use llmslo_schema::{ErrorKind, ExchangeError, LlmCall, TokenSource};

use self::format::StreamFraming;
pub use self::format::{ApiFormat, RequestTarget, identify};
use self::ndjson::NdjsonSplitter;
use crate::decode::ContentDecoder;
use crate::sse::SseParser;

/// Largest single stream event (SSE event or NDJSON line) kept for JSON
/// decoding; larger events are counted but not read.
const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Maximum number of ITL samples kept per call, which bounds the memory of
/// very long streams; content events past it are still counted.
const MAX_ITL_SAMPLES: usize = 65_536;

/// Maximum decoded size of one compressed response body. Decoding stops
/// there, which bounds the work a decompression bomb can cause.
const MAX_DECODED_BYTES: u64 = 64 << 20;

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

impl EventFacts {
    /// Facts of an event that was not JSON of the expected shape.
    pub const UNREADABLE: Self = Self {
        content: false,
        reasoning: false,
        tool_call: false,
        terminal: false,
        error: None,
        unreadable: true,
    };
}

/// Returns the type of a named SSE event: its JSON `type` field, or the
/// SSE `event:` name when the data has none.
fn event_type<'a>(kind: &'a str, name: &'a str) -> &'a str {
    if kind.is_empty() { name } else { kind }
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
    Ndjson(NdjsonSplitter),
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
    /// Decoder of a compressed response body.
    decoder: Option<ContentDecoder>,
    status: u16,
    first_content_ns: Option<u64>,
    last_content_ns: Option<u64>,
    terminal_ns: Option<u64>,
    /// Timestamp of the read that delivered the first response body bytes.
    first_body_ns: Option<u64>,
    /// Timestamp of the read that delivered the last response body bytes.
    last_body_ns: u64,
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
    /// Starts following a call whose request head, at `path`, was read at
    /// `t0_ns`.
    pub fn new(
        provider: String,
        format: ApiFormat,
        path: &str,
        t0_ns: u64,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            format,
            call: LlmCall {
                provider,
                api: format.api().to_owned(),
                operation: format.operation().to_owned(),
                request_model: format.model_of_path(path),
                ..LlmCall::default()
            },
            t0_ns,
            max_body_bytes,
            request_body: BoundedBody::default(),
            reader: ResponseReader::Pending,
            decoder: None,
            status: 0,
            first_content_ns: None,
            last_content_ns: None,
            terminal_ns: None,
            first_body_ns: None,
            last_body_ns: t0_ns,
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
        self.format.read_request(&mut self.call, &body.bytes);
    }

    /// Chooses how to read the response body from the final response head.
    /// A body in an unsupported content coding is not read.
    pub fn on_response_head(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) {
        self.status = status;
        let unreadable = match ContentDecoder::new(content_encoding, MAX_DECODED_BYTES) {
            Ok(decoder) => {
                self.decoder = decoder;
                false
            }
            Err(error) => {
                tracing::debug!(%error, "LLM response body not decoded");
                true
            }
        };
        let framing = if (200..300).contains(&status) {
            self.format.stream_framing(content_type)
        } else {
            None
        };

        self.reader = match framing {
            _ if unreadable => ResponseReader::Ignored,
            Some(StreamFraming::Sse) => {
                self.call.streaming = true;
                ResponseReader::Sse(Box::new(SseParser::new(MAX_EVENT_BYTES)))
            }
            Some(StreamFraming::Ndjson) if self.call.streaming => {
                ResponseReader::Ndjson(NdjsonSplitter::new(MAX_EVENT_BYTES))
            }
            _ => ResponseReader::Whole(BoundedBody::default()),
        };
    }

    /// Takes decoded response body bytes delivered by a read at `ts_ns`.
    pub fn on_response_body(&mut self, ts_ns: u64, bytes: &[u8]) {
        self.first_body_ns.get_or_insert(ts_ns);
        self.last_body_ns = ts_ns;
        let decoded;
        let bytes = match &mut self.decoder {
            None => bytes,
            Some(decoder) => match decoder.decode(bytes) {
                Ok(output) => {
                    decoded = output;
                    &decoded[..]
                }
                Err(error) => {
                    tracing::debug!(%error, "LLM response body decoding stopped");
                    self.decoder = None;
                    self.reader = ResponseReader::Ignored;
                    return;
                }
            },
        };
        match &mut self.reader {
            ResponseReader::Pending | ResponseReader::Ignored => {}
            ResponseReader::Whole(body) => body.push(bytes, self.max_body_bytes),
            ResponseReader::Sse(_) => {
                // Taken out for the call, so that reading an event can
                // borrow the rest of the tracker. Reading events never
                // replaces the reader.
                let mut reader = std::mem::replace(&mut self.reader, ResponseReader::Pending);
                if let ResponseReader::Sse(parser) = &mut reader {
                    parser.feed(bytes, &mut |event| {
                        self.on_event(ts_ns, &event.event, &event.data, event.oversized)
                    });
                }
                self.reader = reader;
            }
            ResponseReader::Ndjson(splitter) => {
                let mut lines = Vec::new();
                splitter.feed(bytes, &mut lines);
                for line in lines {
                    self.on_event(ts_ns, "", &line.bytes, line.oversized);
                }
            }
        }
    }

    /// Notes response bytes that were lost before capture: a whole body can
    /// no longer be parsed, and a stream restarts at the next line.
    pub fn on_response_gap(&mut self) {
        match &mut self.reader {
            // NOTE: a whole body with a gap is not parsed at all, so usage
            // at its end is lost. Embeddings of many inputs hit this once a
            // read returns more than the probe captures of one call.
            ResponseReader::Whole(body) => body.truncated = true,
            ResponseReader::Sse(parser) => **parser = SseParser::new(MAX_EVENT_BYTES),
            ResponseReader::Ndjson(splitter) => *splitter = NdjsonSplitter::new(MAX_EVENT_BYTES),
            ResponseReader::Pending | ResponseReader::Ignored => {}
        }
    }

    /// Notes request body bytes lost before capture.
    pub fn on_request_gap(&mut self) {
        self.request_body.truncated = true;
    }

    /// Reads one SSE event or NDJSON line that a read at `ts_ns` completed.
    /// Events after the terminal one are ignored.
    fn on_event(&mut self, ts_ns: u64, name: &str, data: &[u8], oversized: bool) {
        if self.terminal_ns.is_some() {
            return;
        }
        let facts = if oversized {
            EventFacts::UNREADABLE
        } else {
            self.format.read_event(&mut self.call, name, data)
        };
        self.record_event(ts_ns, &facts);
    }

    fn record_event(&mut self, ts_ns: u64, facts: &EventFacts) {
        if facts.unreadable {
            self.unreadable_events += 1;
        }
        if facts.content {
            if let Some(last) = self.last_content_ns
                && self.call.itl_us.len() < MAX_ITL_SAMPLES
            {
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

    /// Returns true once an error event arrived in the stream. Providers
    /// send nothing generated after it, so the stream failed there.
    pub fn saw_error_event(&self) -> bool {
        self.stream_error
            .as_ref()
            .is_some_and(|error| error.kind == ErrorKind::StreamError)
    }

    /// Completes the call once the response body ended. `complete` is false
    /// when the body was cut short (reset, close, end of window).
    pub fn finish(mut self, complete: bool) -> LlmOutcome {
        let mut provider_code = None;
        match std::mem::replace(&mut self.reader, ResponseReader::Ignored) {
            ResponseReader::Whole(body) if complete && !body.truncated => {
                if self.status >= 400 {
                    provider_code = json::error_code(&body.bytes);
                } else {
                    self.read_whole_body(&body.bytes);
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
                self.mark_truncated();
            }
            ResponseReader::Ndjson(mut splitter) => {
                // An unterminated last line still counts when it is whole
                // JSON, as a body that ends without a final newline.
                if let Some(line) = splitter.finish() {
                    self.on_event(self.last_body_ns, "", &line.bytes, line.oversized);
                }
                self.mark_truncated();
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

    /// Reads a complete non-streaming response body. A body of the
    /// expected shape terminates the call, and when it carries generated
    /// content its first byte sets TTFT. It is not counted in
    /// `content_events`, so ITL and TPOT stay unset.
    fn read_whole_body(&mut self, body: &[u8]) {
        let Some(facts) = self.format.read_whole_response(&mut self.call, body) else {
            return;
        };
        self.call.terminated = true;
        if facts.content {
            self.first_content_ns = self.first_body_ns;
        }
    }

    fn mark_truncated(&mut self) {
        if !self.call.terminated && self.stream_error.is_none() {
            self.stream_error = Some(ExchangeError {
                kind: ErrorKind::Truncated,
                provider_code: None,
            });
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
