//! OpenAI Chat Completions, Completions and Embeddings, and the servers that
//! copy their format (Azure OpenAI, vLLM, TGI, LiteLLM and other
//! OpenAI-compatible servers).

use std::borrow::Cow;

use llmslo_schema::{LlmCall, TokenUsage};
use serde::Deserialize;

use super::EventFacts;
use super::json::{self, ArrayLength, ErrorBody, NonEmptyText, set_label};

/// Token counts as Chat Completions reports them.
#[derive(Debug, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// Replaces the counts in `usage`. A later usage object wins, which is
    /// right for servers that repeat cumulative usage in every chunk.
    pub fn apply(&self, usage: &mut TokenUsage) {
        usage.input_tokens = self.prompt_tokens;
        usage.output_tokens = self.completion_tokens;
        usage.cached_input_tokens = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens);
        usage.reasoning_tokens = self
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens);
        if usage.output_tokens.is_some() {
            usage.source = llmslo_schema::TokenSource::Provider;
        }
    }
}

/// A JSON string that borrows from the event unless it has escapes. serde
/// borrows a `Cow<str>` field marked `borrow`, but not one inside an
/// `Option`, hence the wrapper.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// One `chat.completion.chunk`, or an error object sent in its place. The
/// model name borrows from the event: chunks come by the thousand per
/// second, and each one repeats it.
#[derive(Debug, Default, Deserialize)]
struct ChatChunk<'a> {
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    delta: Option<Delta>,
    /// Generated text of the legacy Completions API.
    #[serde(default)]
    text: NonEmptyText,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

/// The generated parts of a delta. `reasoning_content` is the field of
/// DeepSeek and vLLM reasoning parsers, `reasoning` the one of OpenRouter and
/// newer vLLM versions.
#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: NonEmptyText,
    #[serde(default)]
    refusal: NonEmptyText,
    #[serde(default)]
    reasoning_content: NonEmptyText,
    #[serde(default)]
    reasoning: NonEmptyText,
    #[serde(default)]
    tool_calls: ArrayLength,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

/// Reads one SSE `data:` payload of a Chat Completions or Completions
/// stream.
pub fn stream_event(call: &mut LlmCall, data: &[u8]) -> EventFacts {
    if data == b"[DONE]" {
        return EventFacts {
            terminal: true,
            ..EventFacts::default()
        };
    }

    let Some(chunk) = json::parse::<ChatChunk>(data) else {
        return EventFacts::UNREADABLE;
    };

    let mut facts = EventFacts::default();
    if let Some(error) = chunk.error {
        facts.error = Some(error.provider_code());
        return facts;
    }
    if let Some(model) = chunk.model.as_deref().filter(|m| !m.is_empty()) {
        set_label(&mut call.response_model, model);
    }
    if let Some(usage) = &chunk.usage {
        usage.apply(&mut call.usage);
    }

    for choice in chunk.choices.unwrap_or_default() {
        facts.content |= choice.text.0;
        if let Some(delta) = &choice.delta {
            let text = delta.content.0 || delta.refusal.0;
            let reasoning = delta.reasoning_content.0 || delta.reasoning.0;
            let tool_call = delta.tool_calls.0 > 0 || delta.function_call.is_some();
            facts.content |= text || reasoning || tool_call;
            facts.reasoning |= reasoning;
            facts.tool_call |= tool_call;
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            set_label(&mut call.finish_reason, reason);
        }
    }
    facts
}

/// A complete `chat.completion`, `text_completion` or embeddings `list`
/// response body.
#[derive(Debug, Default, Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<ResponseChoice>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseChoice {
    /// The generated message of Chat Completions, which has the fields of a
    /// stream delta.
    #[serde(default)]
    message: Option<Delta>,
    /// Generated text of the legacy Completions API.
    #[serde(default)]
    text: NonEmptyText,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Reads a non-streaming Chat Completions, Completions or Embeddings
/// response, and returns what the body carried as one event. Returns `None`
/// when the body is not JSON of this shape.
pub fn whole_response(call: &mut LlmCall, body: &[u8]) -> Option<EventFacts> {
    let response = json::parse::<ChatResponse>(body)?;
    if let Some(model) = response.model.as_deref().filter(|m| !m.is_empty()) {
        set_label(&mut call.response_model, model);
    }
    if let Some(usage) = &response.usage {
        usage.apply(&mut call.usage);
    }
    let mut facts = EventFacts::default();
    for choice in response.choices.unwrap_or_default() {
        facts.content |= choice.text.0;
        if let Some(message) = &choice.message {
            let text = message.content.0 || message.refusal.0;
            let reasoning = message.reasoning_content.0 || message.reasoning.0;
            let tool_call = message.tool_calls.0 > 0 || message.function_call.is_some();
            facts.content |= text || reasoning || tool_call;
            facts.reasoning |= reasoning;
            facts.tool_call |= tool_call;
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            set_label(&mut call.finish_reason, reason);
        }
    }
    Some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_only_delta_is_not_content() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
        );
        assert!(!facts.content);
        assert_eq!(
            call.response_model.as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
    }

    #[test]
    fn tool_call_and_reasoning_deltas_are_content() {
        let mut call = LlmCall::default();
        let tool = stream_event(
            &mut call,
            br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#,
        );
        assert!(tool.content);
        assert!(tool.tool_call);
        assert!(!tool.reasoning);
        let reasoning = stream_event(
            &mut call,
            br#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}]}"#,
        );
        assert!(reasoning.content);
        assert!(reasoning.reasoning);
    }

    #[test]
    fn usage_chunk_sets_provider_usage() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
        );
        assert!(!facts.content);
        assert_eq!(call.usage.input_tokens, Some(12));
        assert_eq!(call.usage.output_tokens, Some(5));
        assert_eq!(call.usage.cached_input_tokens, Some(4));
        assert_eq!(call.usage.reasoning_tokens, Some(2));
        assert_eq!(call.usage.source, llmslo_schema::TokenSource::Provider);
    }

    #[test]
    fn escaped_model_and_null_reason_parse() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"model":"gpt\u002d4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        );
        assert!(facts.content);
        assert_eq!(call.response_model.as_deref(), Some("gpt-4o"));
        assert_eq!(call.finish_reason, None);

        let facts = stream_event(
            &mut call,
            br#"{"model":null,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        );
        assert!(!facts.content);
        assert_eq!(call.response_model.as_deref(), Some("gpt-4o"));
        assert_eq!(call.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn error_chunk_is_reported() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"error":{"message":"m","type":"server_error","param":null,"code":null}}"#,
        );
        assert_eq!(facts.error, Some(Some("server_error".to_owned())));
    }

    #[test]
    fn completions_text_is_content() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"gpt-3.5-turbo-instruct","choices":[{"text":" hi","index":0,"logprobs":null,"finish_reason":null}]}"#,
        );
        assert!(facts.content);
        assert!(!facts.tool_call);
    }

    #[test]
    fn several_choices_make_one_event() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":""}}]}"#,
        );
        assert!(facts.content);
    }

    #[test]
    fn unreadable_event_is_flagged() {
        let mut call = LlmCall::default();
        assert!(stream_event(&mut call, b"{not json").unreadable);
    }

    #[test]
    fn whole_completion_content_by_choice() {
        let mut call = LlmCall::default();
        let tool = whole_response(
            &mut call,
            br#"{"object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
        )
        .expect("a readable body");
        assert!(tool.content);
        assert!(tool.tool_call);

        let embeddings = whole_response(
            &mut call,
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AAAAAA=="}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#,
        )
        .expect("a readable body");
        assert!(!embeddings.content);
    }
}
