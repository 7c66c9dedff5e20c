//! OpenAI Responses API (`POST /v1/responses`): named SSE events from
//! `response.created` to `response.completed`, and non-streaming response
//! objects.

use llmslo_schema::{LlmCall, TokenSource, TokenUsage};
use serde::Deserialize;

use super::EventFacts;
use super::json::{self, ErrorBody, NonEmptyText, label, set_label};

/// Token counts as the Responses API reports them.
#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl Usage {
    fn apply(&self, usage: &mut TokenUsage) {
        usage.input_tokens = self.input_tokens;
        usage.output_tokens = self.output_tokens;
        usage.cached_input_tokens = self
            .input_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens);
        usage.reasoning_tokens = self
            .output_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens);
        if usage.output_tokens.is_some() {
            usage.source = TokenSource::Provider;
        }
    }
}

/// A response object, in a response body or inside lifecycle events.
#[derive(Debug, Default, Deserialize)]
struct Response {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    output: Option<Vec<OutputItem>>,
}

/// An item of a response's `output`: a message, a reasoning item or a tool
/// call.
#[derive(Debug, Default, Deserialize)]
struct OutputItem {
    #[serde(default, rename = "type")]
    kind: String,
    /// Parts of a message (`output_text`, `refusal`) or of a reasoning item
    /// (`reasoning_text`).
    #[serde(default)]
    content: Option<Vec<OutputPart>>,
    /// Reasoning summary parts.
    #[serde(default)]
    summary: Option<Vec<OutputPart>>,
}

#[derive(Debug, Default, Deserialize)]
struct OutputPart {
    #[serde(default)]
    text: NonEmptyText,
    #[serde(default)]
    refusal: NonEmptyText,
}

impl OutputItem {
    /// Returns what this item carried, as the facts of one event.
    fn facts(&self) -> EventFacts {
        let parts = |parts: &Option<Vec<OutputPart>>| {
            parts
                .iter()
                .flatten()
                .any(|part| part.text.0 || part.refusal.0)
        };
        let mut facts = EventFacts::default();
        match self.kind.as_str() {
            "message" => facts.content = parts(&self.content),
            "reasoning" => {
                facts.reasoning = parts(&self.content) || parts(&self.summary);
                facts.content = facts.reasoning;
            }
            kind if kind.ends_with("_call") => {
                facts.content = true;
                facts.tool_call = true;
            }
            _ => {}
        }
        facts
    }
}

#[derive(Debug, Default, Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

impl Response {
    fn apply(&self, call: &mut LlmCall) {
        if let Some(model) = self.model.as_deref().filter(|m| !m.is_empty()) {
            set_label(&mut call.response_model, model);
        }
        if let Some(usage) = &self.usage {
            usage.apply(&mut call.usage);
        }
        let reason = self
            .incomplete_details
            .as_ref()
            .and_then(|d| d.reason.as_deref())
            .or(self.status.as_deref());
        if let Some(reason) = reason {
            set_label(&mut call.finish_reason, reason);
        }
    }
}

/// One streaming event. The event name is repeated in `type`.
#[derive(Debug, Default, Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    delta: NonEmptyText,
    #[serde(default)]
    response: Option<Response>,
    /// Code of an `error` event.
    #[serde(default)]
    code: Option<String>,
}

/// Reads one SSE event of a Responses stream. `name` is the SSE `event:`
/// field, used when the data lacks `type`.
pub fn stream_event(call: &mut LlmCall, name: &str, data: &[u8]) -> EventFacts {
    let Some(event) = json::parse::<Event>(data) else {
        return EventFacts::UNREADABLE;
    };
    let kind = super::event_type(&event.kind, name);

    let mut facts = EventFacts::default();
    if let Some(response) = &event.response {
        response.apply(call);
    }
    match kind {
        "response.output_text.delta" | "response.refusal.delta" => facts.content = event.delta.0,
        "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
            facts.content = event.delta.0;
            facts.reasoning = event.delta.0;
        }
        "response.function_call_arguments.delta"
        | "response.custom_tool_call_input.delta"
        | "response.mcp_call_arguments.delta" => {
            facts.content = event.delta.0;
            facts.tool_call = event.delta.0;
        }
        "response.completed" | "response.incomplete" => facts.terminal = true,
        "response.failed" => {
            facts.terminal = true;
            let code = event
                .response
                .as_ref()
                .and_then(|r| r.error.as_ref())
                .and_then(ErrorBody::provider_code);
            facts.error = Some(code);
        }
        "error" => facts.error = Some(event.code.as_deref().map(label)),
        _ => {}
    }
    facts
}

/// Reads a non-streaming response object, and returns what its output
/// items carried as one event. Returns `None` when the body is not JSON of
/// this shape.
pub fn whole_response(call: &mut LlmCall, body: &[u8]) -> Option<EventFacts> {
    let response = json::parse::<Response>(body)?;
    response.apply(call);
    let mut facts = EventFacts::default();
    for item in response.output.iter().flatten() {
        let item = item.facts();
        facts.content |= item.content;
        facts.reasoning |= item.reasoning;
        facts.tool_call |= item.tool_call;
    }
    Some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_delta_is_content() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            "response.output_text.delta",
            br#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#,
        );
        assert!(facts.content);
        assert!(!facts.reasoning);
    }

    #[test]
    fn completed_carries_usage() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            "response.completed",
            br#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":8},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":123}}}"#,
        );
        assert!(facts.terminal);
        assert_eq!(call.usage.input_tokens, Some(36));
        assert_eq!(call.usage.cached_input_tokens, Some(8));
        assert_eq!(call.usage.output_tokens, Some(87));
        assert_eq!(call.usage.reasoning_tokens, Some(12));
        assert_eq!(call.response_model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(call.finish_reason.as_deref(), Some("completed"));
    }

    #[test]
    fn failed_response_is_an_error() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            "response.failed",
            br#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"m"}}}"#,
        );
        assert!(facts.terminal);
        assert_eq!(facts.error, Some(Some("server_error".to_owned())));
    }

    #[test]
    fn function_arguments_are_tool_calls() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            "",
            br#"{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":"{\"a\""}"#,
        );
        assert!(facts.content);
        assert!(facts.tool_call);
    }

    #[test]
    fn whole_response_content_by_item() {
        let mut call = LlmCall::default();
        let tool = whole_response(
            &mut call,
            br#"{"id":"resp_2","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"id":"fc_1","type":"function_call","status":"completed","arguments":"{}","call_id":"call_1","name":"get_weather"}],"usage":{"input_tokens":20,"output_tokens":9}}"#,
        )
        .expect("a readable body");
        assert!(tool.content);
        assert!(tool.tool_call);
        assert_eq!(call.usage.output_tokens, Some(9));

        let empty = whole_response(
            &mut call,
            br#"{"status":"completed","output":[{"id":"rs_1","type":"reasoning","summary":[]},{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"output_text","text":"","annotations":[]}]}]}"#,
        )
        .expect("a readable body");
        assert!(!empty.content);
    }
}
