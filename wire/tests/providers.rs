//! Fixtures of every supported provider and API: expected values, and the
//! same records whatever the read boundaries.

mod support;

use llmslo_schema::{ErrorKind, Exchange, LlmCall, TokenSource};
use support::exchanges_of;

fn only_call(exchanges: &[Exchange]) -> &LlmCall {
    assert_eq!(exchanges.len(), 1);
    exchanges[0].llm.as_ref().expect("an LLM call")
}

#[test]
fn openai_responses_stream() {
    let exchanges = exchanges_of("openai_responses_stream");
    let llm = only_call(&exchanges);
    assert_eq!(llm.provider, "openai");
    assert_eq!(llm.api, "responses");
    assert_eq!(llm.operation, "chat");
    assert_eq!(llm.request_model.as_deref(), Some("o4-mini"));
    assert_eq!(llm.response_model.as_deref(), Some("o4-mini-2025-04-16"));
    assert!(llm.streaming);
    assert!(llm.terminated);
    assert_eq!(llm.ttft_us, Some(900_000));
    assert_eq!(llm.content_events, 4);
    assert_eq!(llm.reasoning_events, 1);
    assert_eq!(llm.itl_us, [100_000, 40_000, 50_000]);
    assert_eq!(llm.usage.input_tokens, Some(30));
    assert_eq!(llm.usage.output_tokens, Some(140));
    assert_eq!(llm.usage.reasoning_tokens, Some(128));
    assert_eq!(llm.usage.cached_input_tokens, Some(0));
    assert_eq!(llm.finish_reason.as_deref(), Some("completed"));
    assert_eq!(exchanges[0].e2e_us, Some(1_100_000));
    assert!(exchanges[0].error.is_none());
}

#[test]
fn openai_embeddings() {
    let exchanges = exchanges_of("openai_embeddings");
    let llm = only_call(&exchanges);
    assert_eq!(llm.api, "embeddings");
    assert_eq!(llm.operation, "embeddings");
    assert!(!llm.streaming);
    assert!(llm.terminated);
    assert_eq!(llm.request_model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(
        llm.response_model.as_deref(),
        Some("text-embedding-3-small")
    );
    assert_eq!(llm.usage.input_tokens, Some(5));
    assert_eq!(llm.usage.output_tokens, None);
    assert_eq!(llm.usage.source, TokenSource::Unknown);
    assert_eq!(exchanges[0].e2e_us, Some(120_000));
    assert_eq!(llm.ttft_us, None, "embeddings generate no content");
}

#[test]
fn openai_chat_whole_split() {
    let exchanges = exchanges_of("openai_chat_whole_split");
    let llm = only_call(&exchanges);
    assert_eq!(llm.api, "chat.completions");
    assert!(!llm.streaming);
    assert!(llm.terminated);
    assert_eq!(exchanges[0].ttfb_us, Some(300_000));
    assert_eq!(llm.ttft_us, Some(350_000), "TTFT is the first body byte");
    assert_eq!(exchanges[0].e2e_us, Some(400_000));
    assert_eq!(llm.content_events, 0);
    assert!(llm.itl_us.is_empty());
    assert_eq!(llm.tpot_us, None);
    assert_eq!(llm.usage.input_tokens, Some(12));
    assert_eq!(llm.usage.output_tokens, Some(7));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    assert_eq!(llm.finish_reason.as_deref(), Some("stop"));
    assert!(exchanges[0].error.is_none());
}

#[test]
fn azure_openai_completions_stream() {
    let exchanges = exchanges_of("azure_openai_completions_stream");
    let llm = only_call(&exchanges);
    assert_eq!(llm.provider, "azure_openai");
    assert_eq!(llm.api, "completions");
    assert_eq!(llm.operation, "text_completion");
    assert_eq!(llm.request_model.as_deref(), Some("instruct-prod"));
    assert_eq!(llm.response_model.as_deref(), Some("gpt-35-turbo-instruct"));
    assert_eq!(llm.content_events, 2);
    assert_eq!(llm.ttft_us, Some(160_000));
    assert_eq!(llm.usage.output_tokens, Some(2));
    assert_eq!(llm.usage.source, TokenSource::EstimateFromEvents);
    assert_eq!(llm.finish_reason.as_deref(), Some("length"));
    let http = exchanges[0].http.as_ref().unwrap();
    assert_eq!(http.path, "/openai/deployments/instruct-prod/completions");
    assert_eq!(http.query_keys, ["api-version"]);
    assert_eq!(
        exchanges[0].connection.server_name.as_deref(),
        Some("contoso.openai.azure.com")
    );
}

#[test]
fn vllm_usage_in_every_chunk() {
    let exchanges = exchanges_of("vllm_chat_stream_usage_every_chunk");
    let llm = only_call(&exchanges);
    assert_eq!(llm.provider, "openai_compatible");
    assert_eq!(llm.content_events, 3);
    assert_eq!(llm.tool_call_events, 1);
    assert_eq!(llm.ttft_us, Some(60_000));
    assert_eq!(llm.itl_us, [10_000, 15_000]);
    assert_eq!(llm.usage.input_tokens, Some(21));
    assert_eq!(llm.usage.output_tokens, Some(3));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    assert_eq!(llm.finish_reason.as_deref(), Some("stop"));
    assert!(llm.terminated);
    assert_eq!(llm.tpot_us, Some(12_500.0));
}

#[test]
fn anthropic_messages_stream() {
    let exchanges = exchanges_of("anthropic_messages_stream");
    let llm = only_call(&exchanges);
    assert_eq!(llm.provider, "anthropic");
    assert_eq!(llm.api, "messages");
    assert_eq!(llm.operation, "chat");
    assert_eq!(llm.request_model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(
        llm.response_model.as_deref(),
        Some("claude-sonnet-4-5-20250929")
    );
    assert!(llm.streaming);
    assert!(llm.terminated);
    // thinking, text, tool_use start, non-empty input_json_delta.
    assert_eq!(llm.content_events, 4);
    assert_eq!(llm.reasoning_events, 1);
    assert_eq!(llm.tool_call_events, 2);
    assert_eq!(llm.ttft_us, Some(700_000));
    assert_eq!(llm.itl_us, [150_000, 50_000, 50_000]);
    assert_eq!(llm.usage.input_tokens, Some(472 + 2048));
    assert_eq!(llm.usage.cached_input_tokens, Some(2048));
    assert_eq!(llm.usage.output_tokens, Some(89));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    assert_eq!(llm.finish_reason.as_deref(), Some("tool_use"));
    assert_eq!(exchanges[0].ttfb_us, Some(600_000));
    assert_eq!(exchanges[0].e2e_us, Some(1_000_000));
    let limit = exchanges[0]
        .http
        .as_ref()
        .unwrap()
        .rate_limit
        .clone()
        .unwrap();
    assert_eq!(limit.limit_requests, Some(4000));
    assert_eq!(limit.remaining_requests, Some(3999));
    assert_eq!(limit.limit_tokens, Some(400000));
    assert_eq!(limit.remaining_tokens, Some(399000));
    assert!(exchanges[0].error.is_none());
}

#[test]
fn anthropic_overloaded() {
    let exchanges = exchanges_of("anthropic_messages_overloaded");
    assert_eq!(exchanges.len(), 2);

    let streamed = &exchanges[0];
    let error = streamed.error.as_ref().expect("stream error");
    assert_eq!(error.kind, ErrorKind::StreamError);
    assert_eq!(error.provider_code.as_deref(), Some("overloaded_error"));
    assert_eq!(streamed.http.as_ref().unwrap().status, Some(200));
    let llm = streamed.llm.as_ref().unwrap();
    assert!(!llm.terminated);
    assert_eq!(llm.usage.input_tokens, Some(12));

    let refused = &exchanges[1];
    let error = refused.error.as_ref().expect("status error");
    assert_eq!(error.kind, ErrorKind::HttpStatus);
    assert_eq!(error.provider_code.as_deref(), Some("overloaded_error"));
    assert_eq!(refused.http.as_ref().unwrap().status, Some(529));
    assert_eq!(refused.e2e_us, Some(150_000));
}

#[test]
fn anthropic_error_then_close() {
    let exchanges = exchanges_of("anthropic_messages_error_then_close");
    let llm = only_call(&exchanges);
    assert!(llm.streaming);
    assert!(!llm.terminated);
    assert_eq!(llm.content_events, 1);
    assert_eq!(llm.ttft_us, Some(350_000));
    let error = exchanges[0].error.as_ref().expect("an error event");
    assert_eq!(error.kind, ErrorKind::StreamError);
    assert_eq!(error.provider_code.as_deref(), Some("overloaded_error"));
    assert_eq!(exchanges[0].e2e_us, Some(400_000));
}

#[test]
fn anthropic_messages_whole() {
    let exchanges = exchanges_of("anthropic_messages_whole");
    let llm = only_call(&exchanges);
    assert!(!llm.streaming);
    assert!(llm.terminated);
    assert_eq!(
        llm.response_model.as_deref(),
        Some("claude-opus-4-1-20250805")
    );
    assert_eq!(llm.usage.input_tokens, Some(25));
    assert_eq!(llm.usage.cached_input_tokens, Some(0));
    assert_eq!(llm.usage.output_tokens, Some(33));
    assert_eq!(llm.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(exchanges[0].e2e_us, Some(2_400_000));
    assert_eq!(llm.ttft_us, Some(2_400_000));
}

#[test]
fn gemini_stream_sse() {
    let exchanges = exchanges_of("gemini_stream_sse");
    let llm = only_call(&exchanges);
    assert_eq!(llm.provider, "gemini");
    assert_eq!(llm.api, "stream_generate_content");
    assert_eq!(llm.operation, "generate_content");
    assert_eq!(llm.request_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(llm.response_model.as_deref(), Some("gemini-2.5-flash"));
    assert!(llm.streaming);
    assert!(llm.terminated);
    assert_eq!(llm.content_events, 3);
    assert_eq!(llm.reasoning_events, 1);
    assert_eq!(llm.ttft_us, Some(700_000));
    assert_eq!(llm.itl_us, [200_000, 100_000]);
    assert_eq!(llm.usage.input_tokens, Some(11));
    assert_eq!(llm.usage.output_tokens, Some(70));
    assert_eq!(llm.usage.reasoning_tokens, Some(64));
    assert_eq!(llm.finish_reason.as_deref(), Some("STOP"));
    assert_eq!(exchanges[0].e2e_us, Some(1_000_000));
    let http = exchanges[0].http.as_ref().unwrap();
    assert_eq!(http.query_keys, ["alt"]);
}

#[test]
fn gemini_generate_content() {
    let exchanges = exchanges_of("gemini_generate_content");
    let llm = only_call(&exchanges);
    assert_eq!(llm.api, "generate_content");
    assert!(!llm.streaming);
    assert!(llm.terminated);
    assert_eq!(llm.request_model.as_deref(), Some("gemini-2.0-flash"));
    assert_eq!(llm.usage.input_tokens, Some(8));
    assert_eq!(llm.usage.output_tokens, Some(14));
    assert_eq!(llm.usage.cached_input_tokens, Some(0));
    let http = exchanges[0].http.as_ref().unwrap();
    assert_eq!(http.query_keys, ["key"]);
}

#[test]
fn ollama_chat_and_generate() {
    let exchanges = exchanges_of("ollama_chat_stream");
    assert_eq!(exchanges.len(), 2);

    let chat = exchanges[0].llm.as_ref().unwrap();
    assert_eq!(chat.provider, "ollama");
    assert_eq!(chat.api, "ollama.chat");
    assert!(chat.streaming);
    assert!(chat.terminated);
    assert_eq!(chat.content_events, 3);
    assert_eq!(chat.ttft_us, Some(320_000));
    assert_eq!(chat.itl_us, [20_000, 25_000]);
    assert_eq!(chat.usage.input_tokens, Some(26));
    assert_eq!(chat.usage.output_tokens, Some(3));
    assert_eq!(chat.usage.source, TokenSource::Provider);
    assert_eq!(chat.finish_reason.as_deref(), Some("stop"));
    assert_eq!(exchanges[0].e2e_us, Some(380_000));

    let generate = exchanges[1].llm.as_ref().unwrap();
    assert_eq!(generate.api, "ollama.generate");
    assert_eq!(generate.operation, "text_completion");
    assert!(!generate.streaming);
    assert!(generate.terminated);
    assert_eq!(generate.usage.input_tokens, Some(30));
    assert_eq!(generate.usage.output_tokens, Some(12));
    assert_eq!(exchanges[1].e2e_us, Some(500_000));
}
