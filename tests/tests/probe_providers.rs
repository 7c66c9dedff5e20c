//! The probe against the real `anthropic` and `openai` Python SDKs: Anthropic
//! Messages (streaming and not), OpenAI chat completions, the Responses API
//! and embeddings, and provider errors, all served on loopback by the
//! format-faithful stand-in `tests/python/anthropic_server.py`. Needs root
//! and eBPF.

use std::time::Duration;

use llmslo_schema::{ErrorKind, Exchange, OutcomeStatus, ProbeResult, TokenSource};
use llmslo_tests::{
    probe::{self, Probe},
    python::{GatedClient, OpenAiServer, SdkCall, ServerRequest},
};

/// Slack on each side of the server's and the client's own TTFT, for
/// clock reads and rounding to microseconds.
const TTFT_SLACK_NS: u64 = 1_000_000;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

const PROBE_EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Keeps the runs short: 20-60 ms to the first event, 1-5 ms gaps.
const SERVER_ARGS: &[&str] = &["--max-gap-ms", "5", "--max-tokens", "12", "--seed", "11"];

/// What one probe run over one client run produced.
struct Run {
    result: ProbeResult,
    server: Vec<ServerRequest>,
    client: Vec<SdkCall>,
}

impl Run {
    /// Returns the LLM exchanges in request order, one per SDK call.
    fn exchanges(&self) -> Vec<&Exchange> {
        let mut exchanges: Vec<&Exchange> = self
            .result
            .exchanges
            .iter()
            .filter(|exchange| exchange.llm.is_some())
            .collect();
        exchanges.sort_by_key(|exchange| exchange.t0_ns);
        assert_eq!(
            exchanges.len(),
            self.client.len(),
            "one exchange per SDK call; exchanges: {exchanges:#?}"
        );
        exchanges
    }
}

/// Runs `sdk_client.py` with `calls` under the probe, which follows the
/// client's pid.
fn run_calls(calls: &[&str]) -> Run {
    let server = OpenAiServer::start_with_anthropic(SERVER_ARGS);
    let mut client = GatedClient::sdk(&server.root_url(), calls, &[]);
    let probe = Probe::start(&[
        "--pid".into(),
        client.pid().to_string(),
        "--duration".into(),
        "300s".into(),
    ]);
    probe.wait_ready();
    client.go();
    let client_log: Vec<SdkCall> = client.wait_for_log(CLIENT_TIMEOUT);
    // The probe ends its window once its only target has exited.
    let output = probe.wait(PROBE_EXIT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "probe failed:\n{}", output.stderr);

    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);
    assert_eq!(result.drops.ring_buffer_full, 0);
    assert_eq!(client_log.len(), calls.len(), "every call was logged");
    Run {
        result,
        server: server.requests(),
        client: client_log,
    }
}

fn status(exchange: &Exchange) -> Option<u16> {
    exchange.http.as_ref().and_then(|http| http.status)
}

/// Checks that the probe's TTFT lies between the server's own TTFT and the
/// client's own TTFT, each widened by [`TTFT_SLACK_NS`].
fn check_ttft(exchange: &Exchange, server: &ServerRequest, client: &SdkCall) {
    let llm = exchange.llm.as_ref().unwrap();
    let probe_ttft = llm.ttft_us.expect("the exchange has a TTFT") * 1_000;
    let server_ttft = server.ttft_ns();
    let client_ttft = client.ttft_ns();
    assert!(
        probe_ttft + TTFT_SLACK_NS >= server_ttft,
        "{}: probe TTFT {probe_ttft} ns is below the server's {server_ttft} ns",
        client.call
    );
    assert!(
        probe_ttft <= client_ttft + TTFT_SLACK_NS,
        "{}: probe TTFT {probe_ttft} ns is above the client's {client_ttft} ns",
        client.call
    );
    assert!(
        exchange.t0_ns + TTFT_SLACK_NS >= client.start_ns,
        "{}: t0 before the SDK call",
        client.call
    );
}

/// Checks what every successful call shares: status, models, provider
/// usage and no error.
fn check_success(exchange: &Exchange, server: &ServerRequest, client: &SdkCall) {
    let llm = exchange.llm.as_ref().unwrap();
    assert_eq!(client.status, 200, "{}", client.call);
    assert_eq!(status(exchange), Some(200), "{}", client.call);
    assert_eq!(exchange.error, None, "{}", client.call);
    assert!(llm.terminated, "{}", client.call);
    assert_eq!(llm.request_model, server.model, "{}", client.call);
    assert_eq!(llm.response_model, server.response_model, "{}", client.call);
    assert_eq!(llm.response_model, client.model, "{}", client.call);
    assert_eq!(
        llm.usage.input_tokens, server.prompt_tokens,
        "{}",
        client.call
    );
    assert_eq!(
        llm.usage.output_tokens, server.completion_tokens,
        "{}",
        client.call
    );
}

#[test]
fn anthropic_sdk_messages() {
    let _lock = probe::exclusive();
    let run = run_calls(&["anthropic-stream", "anthropic-whole", "anthropic-stream"]);
    let exchanges = run.exchanges();

    for ((exchange, server), client) in exchanges.iter().zip(&run.server).zip(&run.client) {
        let llm = exchange.llm.as_ref().unwrap();
        assert_eq!(llm.provider, "anthropic");
        assert_eq!(llm.api, "messages");
        assert_eq!(llm.operation, "chat");
        check_success(exchange, server, client);
        assert_eq!(llm.usage.source, TokenSource::Provider);
        assert_eq!(llm.usage.cached_input_tokens, server.cached_tokens);
        check_ttft(exchange, server, client);

        if client.call == "anthropic-stream" {
            assert!(llm.streaming);
            assert!(
                server.cached_tokens.unwrap() > 0,
                "the server reported cache reads"
            );
            assert_eq!(llm.content_events, server.content_events);
            assert_eq!(llm.itl_us.len() + 1, server.content_events as usize);
            assert_eq!(llm.finish_reason.as_deref(), Some("end_turn"));
        } else {
            assert!(!llm.streaming);
            assert_eq!(llm.content_events, 0);
            assert_eq!(
                exchange.http.as_ref().unwrap().content_type.as_deref(),
                Some("application/json")
            );
        }
    }
}

#[test]
fn openai_sdk_chat_responses_embeddings() {
    let _lock = probe::exclusive();
    let run = run_calls(&[
        "openai-chat",
        "openai-responses-stream",
        "openai-embeddings",
    ]);
    let exchanges = run.exchanges();
    let [chat, responses, embeddings] = exchanges[..] else {
        unreachable!("run.exchanges() checked the count")
    };

    let chat_llm = chat.llm.as_ref().unwrap();
    assert_eq!(chat_llm.api, "chat.completions");
    assert_eq!(chat_llm.provider, "openai_compatible");
    assert!(!chat_llm.streaming);
    check_success(chat, &run.server[0], &run.client[0]);
    assert_eq!(chat_llm.usage.cached_input_tokens, Some(0));
    assert_eq!(chat_llm.usage.reasoning_tokens, Some(0));
    check_ttft(chat, &run.server[0], &run.client[0]);

    let responses_llm = responses.llm.as_ref().unwrap();
    assert_eq!(responses_llm.api, "responses");
    assert_eq!(responses_llm.operation, "chat");
    assert!(responses_llm.streaming);
    check_success(responses, &run.server[1], &run.client[1]);
    assert!(run.server[1].cached_tokens.unwrap() > 0);
    assert!(run.server[1].reasoning_tokens.unwrap() > 0);
    assert_eq!(
        responses_llm.usage.cached_input_tokens,
        run.server[1].cached_tokens
    );
    assert_eq!(
        responses_llm.usage.reasoning_tokens,
        run.server[1].reasoning_tokens
    );
    assert_eq!(responses_llm.content_events, run.server[1].content_events);
    assert_eq!(responses_llm.finish_reason.as_deref(), Some("completed"));
    check_ttft(responses, &run.server[1], &run.client[1]);

    let embeddings_llm = embeddings.llm.as_ref().unwrap();
    assert_eq!(embeddings.missing_bytes, 0, "the body fits the capture");
    assert_eq!(embeddings_llm.api, "embeddings");
    assert_eq!(embeddings_llm.operation, "embeddings");
    assert_eq!(status(embeddings), Some(200));
    assert_eq!(embeddings.error, None);
    assert!(embeddings_llm.terminated);
    assert_eq!(embeddings_llm.request_model, run.server[2].model);
    assert_eq!(embeddings_llm.response_model, run.client[2].model);
    assert_eq!(
        embeddings_llm.usage.input_tokens,
        run.server[2].prompt_tokens
    );
    assert_eq!(embeddings_llm.usage.output_tokens, None);
    assert_eq!(
        embeddings_llm.ttft_us, None,
        "embeddings generate no content"
    );
    let ttfb_ns = embeddings.ttfb_us.expect("a TTFB") * 1_000;
    let client_ns = run.client[2].end_ns - run.client[2].start_ns;
    assert!(ttfb_ns <= client_ns + TTFT_SLACK_NS);
}

#[test]
fn provider_errors_are_counted() {
    let _lock = probe::exclusive();
    let run = run_calls(&[
        "anthropic-overloaded",
        "anthropic-stream-error",
        "openai-rate-limited",
    ]);
    let exchanges = run.exchanges();
    let [overloaded, stream_error, rate_limited] = exchanges[..] else {
        unreachable!("run.exchanges() checked the count")
    };

    assert_eq!(run.client[0].status, 529);
    assert_eq!(status(overloaded), Some(529));
    let error = overloaded.error.as_ref().expect("529 is an error");
    assert_eq!(error.kind, ErrorKind::HttpStatus);
    assert_eq!(error.provider_code.as_deref(), Some("overloaded_error"));
    assert_eq!(overloaded.llm.as_ref().unwrap().provider, "anthropic");

    assert_eq!(
        run.client[1].error_type.as_deref(),
        Some("overloaded_error")
    );
    assert_eq!(status(stream_error), Some(200));
    let error = stream_error.error.as_ref().expect("an error event");
    assert_eq!(error.kind, ErrorKind::StreamError, "{stream_error:#?}");
    assert_eq!(error.provider_code.as_deref(), Some("overloaded_error"));
    let llm = stream_error.llm.as_ref().unwrap();
    assert!(llm.streaming);
    assert!(!llm.terminated, "no message_stop after the error event");
    assert_eq!(llm.content_events, run.server[1].content_events);
    check_ttft(stream_error, &run.server[1], &run.client[1]);

    assert_eq!(run.client[2].status, 429);
    assert_eq!(status(rate_limited), Some(429));
    let error = rate_limited.error.as_ref().expect("429 is an error");
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert_eq!(error.provider_code.as_deref(), Some("rate_limit_exceeded"));
    let http = rate_limited.http.as_ref().unwrap();
    assert_eq!(http.retry_after_secs, Some(2));
    assert_eq!(rate_limited.llm.as_ref().unwrap().ttft_us, None);
}
