//! Ollama native API: `/api/chat` and `/api/generate`, streamed as NDJSON
//! (one JSON object per line, the last with `"done": true`) or returned as
//! one object when the request sets `"stream": false`.

use llmslo_schema::{LlmCall, TokenSource};
use serde::Deserialize;

use super::EventFacts;
use super::json::{self, ArrayLength, NonEmptyText, set_label};

#[derive(Debug, Default, Deserialize)]
struct Object {
    #[serde(default)]
    model: Option<String>,
    /// Message of `/api/chat`.
    #[serde(default)]
    message: Option<Message>,
    /// Generated text of `/api/generate`.
    #[serde(default)]
    response: NonEmptyText,
    /// Thinking text of `/api/generate` with `think` enabled.
    #[serde(default)]
    thinking: NonEmptyText,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    /// Ollama reports errors as a plain string without a code.
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    content: NonEmptyText,
    #[serde(default)]
    thinking: NonEmptyText,
    #[serde(default)]
    tool_calls: ArrayLength,
}

impl Object {
    fn apply(self, call: &mut LlmCall) -> EventFacts {
        let mut facts = EventFacts::default();
        if self.error.is_some() {
            facts.error = Some(None);
            return facts;
        }
        if let Some(model) = self.model.as_deref().filter(|m| !m.is_empty()) {
            set_label(&mut call.response_model, model);
        }

        let (text, thinking, tools) = match &self.message {
            Some(message) => (
                message.content.0,
                message.thinking.0,
                message.tool_calls.0 > 0,
            ),
            None => (self.response.0, self.thinking.0, false),
        };
        facts.content = text || thinking || tools;
        facts.reasoning = thinking;
        facts.tool_call = tools;

        if self.done == Some(true) {
            facts.terminal = true;
            if let Some(reason) = self.done_reason.as_deref() {
                set_label(&mut call.finish_reason, reason);
            }
            call.usage.input_tokens = self.prompt_eval_count;
            if let Some(output) = self.eval_count {
                call.usage.output_tokens = Some(output);
                call.usage.source = TokenSource::Provider;
            }
        }
        facts
    }
}

/// Reads one NDJSON line of a streaming response.
pub fn stream_event(call: &mut LlmCall, line: &[u8]) -> EventFacts {
    match json::parse::<Object>(line) {
        Some(object) => object.apply(call),
        None => EventFacts::UNREADABLE,
    }
}

/// Reads a non-streaming response, and returns what it carried as one
/// event. Returns `None` when the body is not JSON of this shape or lacks
/// `"done": true`.
pub fn whole_response(call: &mut LlmCall, body: &[u8]) -> Option<EventFacts> {
    let object = json::parse::<Object>(body)?;
    let facts = object.apply(call);
    facts.terminal.then_some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_lines() {
        let mut call = LlmCall::default();
        let first = stream_event(
            &mut call,
            br#"{"model":"llama3.2","created_at":"2026-12-03T10:00:00.1Z","message":{"role":"assistant","content":"The"},"done":false}"#,
        );
        assert!(first.content);
        assert!(!first.terminal);
        let last = stream_event(
            &mut call,
            br#"{"model":"llama3.2","created_at":"2026-12-03T10:00:01Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
        );
        assert!(!last.content);
        assert!(last.terminal);
        assert_eq!(call.usage.input_tokens, Some(26));
        assert_eq!(call.usage.output_tokens, Some(282));
        assert_eq!(call.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn generate_line_is_content() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"model":"llama3.2","created_at":"2026-12-03T10:00:00Z","response":"The","done":false}"#,
        );
        assert!(facts.content);
    }

    #[test]
    fn error_line() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"error":"an error was encountered while running the model"}"#,
        );
        assert_eq!(facts.error, Some(None));
    }
}
