//! Anthropic Messages API (`POST /v1/messages`): `message_start`,
//! `content_block_*`, `message_delta` and `message_stop` events, `ping`
//! keep-alives and `error` events, and non-streaming message objects.

use llmslo_schema::{LlmCall, TokenSource, TokenUsage};
use serde::Deserialize;

use super::EventFacts;
use super::json::{self, ErrorBody, NonEmptyText, set_label};

/// Token counts as Anthropic reports them. `input_tokens` excludes the
/// tokens read from or written to the prompt cache.
#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl Usage {
    /// Updates `usage` with the fields present. `message_delta` repeats
    /// cumulative counts, so later values replace earlier ones. The input
    /// reported is all prompt tokens, cached or not, as OpenAI counts them.
    fn apply(&self, usage: &mut TokenUsage) {
        if self.input_tokens.is_some() || self.cache_read_input_tokens.is_some() {
            let uncached = self.input_tokens.unwrap_or(0);
            let read = self.cache_read_input_tokens.unwrap_or(0);
            let written = self.cache_creation_input_tokens.unwrap_or(0);
            usage.input_tokens = Some(uncached.saturating_add(read).saturating_add(written));
            usage.cached_input_tokens = self.cache_read_input_tokens;
        }
        if let Some(output) = self.output_tokens {
            usage.output_tokens = Some(output);
            usage.source = TokenSource::Provider;
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    model: Option<String>,
    /// Content blocks of a non-streaming message, empty in `message_start`.
    #[serde(default)]
    content: Option<Vec<Block>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

impl Message {
    fn apply(&self, call: &mut LlmCall) {
        if let Some(model) = self.model.as_deref().filter(|m| !m.is_empty()) {
            set_label(&mut call.response_model, model);
        }
        if let Some(reason) = self.stop_reason.as_deref() {
            set_label(&mut call.finish_reason, reason);
        }
        if let Some(usage) = &self.usage {
            usage.apply(&mut call.usage);
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Debug, Default, Deserialize)]
struct Block {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: NonEmptyText,
    #[serde(default)]
    thinking: NonEmptyText,
}

impl Block {
    fn is_tool_call(&self) -> bool {
        matches!(self.kind.as_str(), "tool_use" | "server_tool_use")
    }
}

/// A `content_block_delta` delta, or the `message_delta` delta with the
/// stop reason.
#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: NonEmptyText,
    #[serde(default)]
    thinking: NonEmptyText,
    #[serde(default)]
    partial_json: NonEmptyText,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Reads one SSE event of a Messages stream. `name` is the SSE `event:`
/// field, used when the data lacks `type`.
pub fn stream_event(call: &mut LlmCall, name: &str, data: &[u8]) -> EventFacts {
    let Some(event) = json::parse::<Event>(data) else {
        return EventFacts::UNREADABLE;
    };
    let kind = super::event_type(&event.kind, name);

    let mut facts = EventFacts::default();
    match kind {
        "message_start" => {
            if let Some(message) = &event.message {
                message.apply(call);
            }
        }
        "content_block_start" => {
            // A tool_use block starts with the tool's name, the first
            // generated part of a tool call, as OpenAI's first tool delta.
            if let Some(block) = &event.content_block {
                let tool = block.is_tool_call();
                facts.content = tool || block.text.0;
                facts.tool_call = tool;
            }
        }
        "content_block_delta" => {
            if let Some(delta) = &event.delta {
                match delta.kind.as_str() {
                    "text_delta" => facts.content = delta.text.0,
                    "thinking_delta" => {
                        facts.content = delta.thinking.0;
                        facts.reasoning = delta.thinking.0;
                    }
                    "input_json_delta" => {
                        facts.content = delta.partial_json.0;
                        facts.tool_call = delta.partial_json.0;
                    }
                    // signature_delta and citations_delta carry no tokens
                    // of their own.
                    _ => {}
                }
            }
        }
        "message_delta" => {
            if let Some(reason) = event.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                set_label(&mut call.finish_reason, reason);
            }
            if let Some(usage) = &event.usage {
                usage.apply(&mut call.usage);
            }
        }
        "message_stop" => facts.terminal = true,
        "error" => facts.error = Some(event.error.as_ref().and_then(ErrorBody::provider_code)),
        _ => {}
    }
    facts
}

/// Reads a non-streaming message object, and returns what its content
/// blocks carried as one event. Returns `None` when the body is not JSON
/// of this shape.
pub fn whole_response(call: &mut LlmCall, body: &[u8]) -> Option<EventFacts> {
    let message = json::parse::<Message>(body)?;
    message.apply(call);
    let mut facts = EventFacts::default();
    for block in message.content.iter().flatten() {
        let tool = block.is_tool_call();
        facts.content |= block.text.0 || block.thinking.0 || tool;
        facts.reasoning |= block.thinking.0;
        facts.tool_call |= tool;
    }
    Some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_start_sets_input_and_model() {
        let mut call = LlmCall::default();
        stream_event(
            &mut call,
            "message_start",
            br#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
        );
        assert_eq!(call.usage.input_tokens, Some(135));
        assert_eq!(call.usage.cached_input_tokens, Some(100));
        assert_eq!(
            call.response_model.as_deref(),
            Some("claude-sonnet-4-5-20250929")
        );
    }

    #[test]
    fn message_delta_usage_is_cumulative() {
        let mut call = LlmCall::default();
        let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#;
        stream_event(&mut call, "message_delta", delta);
        stream_event(&mut call, "message_delta", delta);
        assert_eq!(call.usage.output_tokens, Some(15));
        assert_eq!(call.finish_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn deltas_by_kind() {
        let mut call = LlmCall::default();
        let text = stream_event(
            &mut call,
            "content_block_delta",
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        );
        assert!(text.content);
        let thinking = stream_event(
            &mut call,
            "content_block_delta",
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}"#,
        );
        assert!(thinking.reasoning);
        let signature = stream_event(
            &mut call,
            "content_block_delta",
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
        );
        assert!(!signature.content);
        let empty_json = stream_event(
            &mut call,
            "content_block_delta",
            br#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        );
        assert!(!empty_json.content);
        let tool_start = stream_event(
            &mut call,
            "content_block_start",
            br#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
        );
        assert!(tool_start.tool_call);
    }

    #[test]
    fn error_event_has_type() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            "error",
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(facts.error, Some(Some("overloaded_error".to_owned())));
    }

    #[test]
    fn whole_message_content_by_block() {
        let mut call = LlmCall::default();
        let tool = whole_response(
            &mut call,
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":""},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":30}}"#,
        )
        .expect("a readable body");
        assert!(tool.content);
        assert!(tool.tool_call);
        assert_eq!(call.finish_reason.as_deref(), Some("tool_use"));

        let empty = whole_response(
            &mut call,
            br#"{"type":"message","content":[{"type":"text","text":""}],"usage":{"output_tokens":0}}"#,
        )
        .expect("a readable body");
        assert!(!empty.content);
        assert!(whole_response(&mut call, br#"{"content":null}"#).is_some());
    }
}
