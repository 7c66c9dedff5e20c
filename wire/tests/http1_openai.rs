//! HTTP/1.1 and OpenAI Chat Completions fixtures: expected values, and the
//! same records whatever the read boundaries.

mod support;

use llmslo_schema::{Direction, ErrorKind, Protocol, TokenSource};
use support::exchanges_of;

const T0: u64 = 1_000_000_000;

#[test]
fn openai_chat_stream() {
    let exchanges = exchanges_of("openai_chat_stream");
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.direction, Direction::Outbound);
    assert_eq!(exchange.protocol, Protocol::Http1);
    assert_eq!(exchange.tid, 101);
    assert_eq!(exchange.t0_ns, T0);
    assert_eq!(exchange.ttfb_us, Some(350_000));
    assert_eq!(exchange.e2e_us, Some(530_000));
    assert_eq!(
        exchange.connection.server_name.as_deref(),
        Some("api.openai.com")
    );
    assert_eq!(exchange.error, None);
    assert_eq!(exchange.missing_bytes, 0);

    let http = exchange.http.as_ref().unwrap();
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/v1/chat/completions");
    assert_eq!(http.status, Some(200));
    assert_eq!(http.content_type.as_deref(), Some("text/event-stream"));

    let llm = exchange.llm.as_ref().unwrap();
    assert_eq!(llm.provider, "openai");
    assert_eq!(llm.api, "chat.completions");
    assert_eq!(llm.operation, "chat");
    assert_eq!(llm.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        llm.response_model.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert!(llm.streaming);
    assert!(llm.terminated);
    assert_eq!(llm.ttft_us, Some(400_000));
    assert_eq!(llm.content_events, 3);
    assert_eq!(llm.itl_us, [50_000, 0]);
    assert_eq!(llm.finish_reason.as_deref(), Some("stop"));
    assert_eq!(llm.usage.input_tokens, Some(19));
    assert_eq!(llm.usage.output_tokens, Some(4));
    assert_eq!(llm.usage.cached_input_tokens, Some(0));
    assert_eq!(llm.usage.reasoning_tokens, Some(0));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    let tpot_us = llm.tpot_us.unwrap();
    assert!((tpot_us - 50_000.0 / 3.0).abs() < 1e-6, "tpot {tpot_us}");
}

#[test]
fn openai_chat_keepalive() {
    let exchanges = exchanges_of("openai_chat_keepalive");
    assert_eq!(exchanges.len(), 2);

    let chat = &exchanges[0];
    assert_eq!(chat.t0_ns, T0);
    assert_eq!(chat.ttfb_us, Some(700_000));
    assert_eq!(chat.e2e_us, Some(702_000));
    assert_eq!(chat.error, None);
    let llm = chat.llm.as_ref().unwrap();
    assert!(!llm.streaming);
    assert!(llm.terminated);
    // The body's first bytes came with the head.
    assert_eq!(llm.ttft_us, Some(700_000));
    assert_eq!(llm.content_events, 0);
    assert_eq!(llm.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        llm.response_model.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(llm.usage.input_tokens, Some(1200));
    assert_eq!(llm.usage.output_tokens, Some(9));
    assert_eq!(llm.usage.cached_input_tokens, Some(1024));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    assert_eq!(llm.finish_reason.as_deref(), Some("stop"));

    let models = &exchanges[1];
    assert_eq!(models.tid, 102);
    assert_eq!(models.t0_ns, T0 + 900_000_000);
    assert_eq!(models.e2e_us, Some(80_000));
    assert!(models.llm.is_none());
    assert_eq!(models.http.as_ref().unwrap().method, "GET");
    assert_eq!(models.http.as_ref().unwrap().status, Some(200));
    assert!(models.response_bytes > 0);
}

#[test]
fn openai_chat_pipelined_inbound() {
    let exchanges = exchanges_of("openai_chat_pipelined");
    assert_eq!(exchanges.len(), 2);
    for (exchange, tokens) in exchanges.iter().zip([16, 32]) {
        assert_eq!(exchange.direction, Direction::Inbound);
        assert_eq!(exchange.tid, 7);
        assert_eq!(exchange.t0_ns, T0);
        assert_eq!(exchange.ttfb_us, Some(800_000));
        assert_eq!(exchange.e2e_us, Some(800_000));
        assert_eq!(
            exchange.connection.server_name.as_deref(),
            Some("vllm.default.svc")
        );
        let llm = exchange.llm.as_ref().unwrap();
        assert_eq!(llm.provider, "openai_compatible");
        assert_eq!(
            llm.request_model.as_deref(),
            Some("meta-llama/Llama-3.1-8B-Instruct")
        );
        assert_eq!(llm.usage.output_tokens, Some(tokens));
        assert_eq!(llm.usage.cached_input_tokens, None);
        assert_eq!(llm.finish_reason.as_deref(), Some("length"));
    }
    let trace = exchanges[0].trace.as_ref().expect("traceparent");
    assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace.parent_span_id, "00f067aa0ba902b7");
    assert!(trace.sampled);
    assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    assert!(exchanges[1].trace.is_none());
}

#[test]
fn openai_chat_stream_until_close() {
    let exchanges = exchanges_of("openai_chat_stream_until_close");
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.direction, Direction::Inbound);
    assert_eq!(exchange.t0_ns, T0);
    assert_eq!(exchange.ttfb_us, Some(100_000));
    assert_eq!(exchange.e2e_us, Some(320_000));
    assert_eq!(exchange.error, None);
    let llm = exchange.llm.as_ref().unwrap();
    assert!(llm.terminated);
    assert_eq!(llm.request_model.as_deref(), Some("llama3.2"));
    // The first content event completes in the second of its two writes.
    assert_eq!(llm.ttft_us, Some(230_000));
    assert_eq!(llm.content_events, 3);
    assert_eq!(llm.itl_us, [70_000, 0]);
    assert_eq!(llm.usage.output_tokens, Some(3));
    assert_eq!(llm.usage.input_tokens, None);
    assert_eq!(llm.usage.source, TokenSource::EstimateFromEvents);
    assert_eq!(llm.tpot_us, Some(35_000.0));
}

#[test]
fn openai_chat_stream_truncated() {
    let exchanges = exchanges_of("openai_chat_stream_cr_separators");
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.ttfb_us, Some(50_000));
    let llm = exchange.llm.as_ref().unwrap();
    assert!(!llm.terminated);
    assert_eq!(llm.provider, "openai_compatible");
    assert_eq!(llm.ttft_us, Some(80_000));
    assert_eq!(llm.content_events, 2);
    assert_eq!(llm.itl_us, [15_000]);
    let error = exchange.error.as_ref().expect("error");
    assert_eq!(error.kind, ErrorKind::Truncated);
    assert_eq!(exchange.e2e_us, Some(96_000));
}

#[test]
fn openai_rate_limited() {
    let exchanges = exchanges_of("openai_rate_limited");
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.ttfb_us, Some(90_000));
    assert_eq!(exchange.e2e_us, Some(90_000));
    let error = exchange.error.as_ref().expect("error");
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert_eq!(error.provider_code.as_deref(), Some("rate_limit_exceeded"));
    let http = exchange.http.as_ref().unwrap();
    assert_eq!(http.status, Some(429));
    assert_eq!(http.retry_after_secs, Some(20));
    let limit = http.rate_limit.as_ref().expect("rate limit headers");
    assert_eq!(limit.limit_requests, Some(3));
    assert_eq!(limit.remaining_requests, Some(0));
    assert_eq!(limit.limit_tokens, None);
    let llm = exchange.llm.as_ref().unwrap();
    assert!(llm.streaming);
    assert!(!llm.terminated);
    assert_eq!(llm.content_events, 0);
}

#[test]
fn openai_chat_client_abort() {
    let exchanges = exchanges_of("openai_chat_client_abort");
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    let error = exchange.error.as_ref().expect("error");
    assert_eq!(error.kind, ErrorKind::ClientAborted);
    assert_eq!(exchange.e2e_us, None);
    let llm = exchange.llm.as_ref().unwrap();
    assert_eq!(llm.content_events, 1);
    assert_eq!(llm.ttft_us, Some(320_000));
}

#[test]
fn http_framing_cases() {
    let exchanges = exchanges_of("http_framing_cases");
    let summary: Vec<(&str, Option<u16>)> = exchanges
        .iter()
        .map(|e| {
            let http = e.http.as_ref().unwrap();
            (http.method.as_str(), http.status)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT", Some(201)),
            ("HEAD", Some(200)),
            ("DELETE", Some(204)),
            ("GET", Some(304)),
            ("GET", Some(404)),
        ]
    );

    let put = &exchanges[0];
    // TTFB is measured to the final response, not to 100 Continue.
    assert_eq!(put.ttfb_us, Some(20_000));
    assert_eq!(put.e2e_us, Some(20_000));
    assert!(put.error.is_none());
    let head = &exchanges[1];
    assert_eq!(head.e2e_us, Some(5_000));
    let not_found = &exchanges[4];
    assert_eq!(not_found.ttfb_us, Some(10_000));
    assert_eq!(
        not_found.error.as_ref().unwrap().kind,
        ErrorKind::HttpStatus
    );
    let http = not_found.http.as_ref().unwrap();
    assert_eq!(http.path, "/page");
    assert_eq!(http.query_keys, ["lang", "token"]);
    assert!(exchanges.iter().all(|e| e.missing_bytes == 0));
}

#[test]
fn openai_chat_stream_gzip() {
    let exchanges = exchanges_of("openai_chat_stream_gzip");
    assert_eq!(exchanges.len(), 2);

    let stream = &exchanges[0];
    assert_eq!(stream.error, None);
    let http = stream.http.as_ref().unwrap();
    assert_eq!(http.content_encoding.as_deref(), Some("gzip"));
    let llm = stream.llm.as_ref().unwrap();
    assert!(llm.terminated);
    // The first content event completes with its second compressed read.
    assert_eq!(llm.ttft_us, Some(190_000));
    assert_eq!(llm.content_events, 2);
    assert_eq!(llm.itl_us, [50_000]);
    assert_eq!(llm.usage.output_tokens, Some(2));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    assert_eq!(stream.e2e_us, Some(260_000));

    let overloaded = &exchanges[1];
    let error = overloaded.error.as_ref().expect("status error");
    assert_eq!(error.kind, ErrorKind::HttpStatus);
    assert_eq!(error.provider_code.as_deref(), Some("server_error"));
    let http = overloaded.http.as_ref().unwrap();
    assert_eq!(http.status, Some(503));
    assert_eq!(http.retry_after_secs, Some(45));
}

#[test]
fn http_gaps_and_resync() {
    let exchanges = exchanges_of("http_gaps_and_resync");
    let paths: Vec<&str> = exchanges
        .iter()
        .map(|e| e.http.as_ref().unwrap().path.as_str())
        .collect();
    // The request whose head was lost has no exchange, and its response is
    // not matched to the next request.
    assert_eq!(paths, ["/v1/models", "/v1/after"]);

    let models = &exchanges[0];
    assert_eq!(models.missing_bytes, 15);
    assert_eq!(models.http.as_ref().unwrap().status, Some(200));
    assert_eq!(models.e2e_us, Some(12_000));
    assert!(models.error.is_none());

    let after = &exchanges[1];
    assert_eq!(after.t0_ns, T0 + 50_000_000);
    assert_eq!(after.http.as_ref().unwrap().status, Some(204));
    assert_eq!(after.e2e_us, Some(10_000));
    assert_eq!(after.missing_bytes, 0);

    let fixture = support::load("http_gaps_and_resync");
    let stats = support::stats_after(&fixture);
    assert!(stats.unparsed_bytes > 0);
    assert!(stats.lost_sync >= 2, "lost_sync {}", stats.lost_sync);
}

#[test]
fn openai_chat_close_after_done() {
    let exchanges = exchanges_of("openai_chat_close_after_done");
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.error, None, "the stream saw its terminal event");
    assert_eq!(exchange.e2e_us, Some(530_000), "E2E ends at data: [DONE]");
    let llm = exchange.llm.as_ref().unwrap();
    assert!(llm.terminated);
    assert_eq!(llm.content_events, 3);
    assert_eq!(llm.usage.output_tokens, Some(4));
}
