//! Google Gemini API: `:streamGenerateContent?alt=sse` events and
//! `:generateContent` responses, both `GenerateContentResponse` objects.

use llmslo_schema::{LlmCall, TokenSource};
use serde::Deserialize;

use super::EventFacts;
use super::json::{self, ErrorBody, NonEmptyText, label, set_label};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Option<Vec<Part>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: NonEmptyText,
    /// True for thought summaries of thinking models.
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    executable_code: Option<serde::de::IgnoredAny>,
}

/// Token counts as `usageMetadata` reports them. `candidatesTokenCount`
/// excludes thinking tokens, which come in `thoughtsTokenCount`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
}

impl GenerateContentResponse {
    /// Applies this response to `call` and returns what it carried.
    fn apply(self, call: &mut LlmCall) -> EventFacts {
        let mut facts = EventFacts::default();
        if let Some(error) = self.error {
            facts.error = Some(error.provider_code());
            return facts;
        }
        if let Some(model) = self.model_version.as_deref().filter(|m| !m.is_empty()) {
            set_label(&mut call.response_model, model);
        }

        if let Some(usage) = &self.usage_metadata {
            // Output tokens include thinking tokens, as OpenAI's
            // completion_tokens include reasoning tokens.
            let thoughts = usage.thoughts_token_count;
            let output = usage
                .candidates_token_count
                .map(|candidates| candidates.saturating_add(thoughts.unwrap_or(0)));
            call.usage.input_tokens = usage.prompt_token_count.or(call.usage.input_tokens);
            call.usage.cached_input_tokens = usage.cached_content_token_count;
            call.usage.reasoning_tokens = thoughts;
            if output.is_some() {
                call.usage.output_tokens = output;
                call.usage.source = TokenSource::Provider;
            }
        }

        for candidate in self.candidates.unwrap_or_default() {
            for part in candidate.content.and_then(|c| c.parts).unwrap_or_default() {
                let thought = part.thought.unwrap_or(false);
                let tool = part.function_call.is_some() || part.executable_code.is_some();
                facts.content |= part.text.0 || tool;
                facts.reasoning |= thought && part.text.0;
                facts.tool_call |= tool;
            }
            if let Some(reason) = candidate.finish_reason.as_deref() {
                set_label(&mut call.finish_reason, reason);
                // Gemini streams have no terminal event: the chunk that
                // carries finishReason is the last one.
                facts.terminal = true;
            }
        }
        facts
    }
}

/// Reads one SSE `data:` payload of a `streamGenerateContent?alt=sse`
/// stream.
pub fn stream_event(call: &mut LlmCall, data: &[u8]) -> EventFacts {
    match json::parse::<GenerateContentResponse>(data) {
        Some(response) => response.apply(call),
        None => EventFacts::UNREADABLE,
    }
}

/// Reads a `generateContent` response, or a `streamGenerateContent` body
/// sent without `alt=sse`, which is a JSON array of responses, and returns
/// what the body carried as one event. Returns `None` when the body is not
/// JSON of this shape.
pub fn whole_response(call: &mut LlmCall, body: &[u8]) -> Option<EventFacts> {
    if let Some(responses) = json::parse::<Vec<GenerateContentResponse>>(body) {
        let mut facts = EventFacts::default();
        for response in responses {
            let part = response.apply(call);
            facts.content |= part.content;
            facts.reasoning |= part.reasoning;
            facts.tool_call |= part.tool_call;
        }
        return Some(facts);
    }
    let response = json::parse::<GenerateContentResponse>(body)?;
    Some(response.apply(call))
}

/// Model named in a Gemini path: `/v1beta/models/gemini-2.0-flash:generateContent`
/// gives `gemini-2.0-flash`.
pub fn model_of_path(path: &str) -> Option<String> {
    let after = path.rsplit_once("/models/")?.1;
    let model = after.split(':').next()?;
    (!model.is_empty()).then(|| label(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunk_is_content() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.0-flash","responseId":"r1"}"#,
        );
        assert!(facts.content);
        assert!(!facts.terminal);
        assert_eq!(call.usage.input_tokens, Some(9));
        assert_eq!(call.usage.output_tokens, None);
    }

    #[test]
    fn finish_reason_ends_stream_and_usage_counts_thoughts() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":12,"thoughtsTokenCount":30,"cachedContentTokenCount":4,"totalTokenCount":51},"modelVersion":"gemini-2.5-flash"}"#,
        );
        assert!(facts.terminal);
        assert!(!facts.content);
        assert_eq!(call.usage.output_tokens, Some(42));
        assert_eq!(call.usage.reasoning_tokens, Some(30));
        assert_eq!(call.usage.cached_input_tokens, Some(4));
        assert_eq!(call.finish_reason.as_deref(), Some("STOP"));
    }

    #[test]
    fn thought_and_function_call_parts() {
        let mut call = LlmCall::default();
        let facts = stream_event(
            &mut call,
            br#"{"candidates":[{"content":{"parts":[{"text":"plan","thought":true},{"functionCall":{"name":"f","args":{}}}],"role":"model"}}]}"#,
        );
        assert!(facts.reasoning);
        assert!(facts.tool_call);
    }

    #[test]
    fn model_from_path() {
        assert_eq!(
            model_of_path("/v1beta/models/gemini-2.0-flash:streamGenerateContent").as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            model_of_path("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent")
                .as_deref(),
            Some("gemini-2.5-pro")
        );
        assert_eq!(model_of_path("/v1/chat"), None);
    }

    #[test]
    fn array_body_is_read() {
        let mut call = LlmCall::default();
        let facts = whole_response(
            &mut call,
            br#"[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]},{"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}]"#,
        )
        .expect("a readable body");
        assert!(facts.content);
        assert_eq!(call.usage.output_tokens, Some(2));
    }
}
