//! HTTP/2 fixtures encoded by the h2 library: streams as exchanges, HPACK,
//! gRPC trailers, RST_STREAM and GOAWAY.

mod support;

use llmslo_schema::{Direction, ErrorKind, Protocol, TokenSource};
use support::exchanges_of;

const T0: u64 = 1_000_000_000;

#[test]
fn h2_openai_chat_stream() {
    let exchanges = exchanges_of("h2_openai_chat_stream");
    assert_eq!(exchanges.len(), 2);

    // Stream 3 ends first.
    let models = &exchanges[0];
    assert_eq!(models.protocol, Protocol::Http2);
    assert_eq!(models.tid, 102);
    let http = models.http.as_ref().unwrap();
    assert_eq!(http.stream_id, Some(3));
    assert_eq!(http.method, "GET");
    assert_eq!(http.path, "/v1/models");
    assert_eq!(http.status, Some(200));
    assert_eq!(models.t0_ns, T0 + 30_000_000);
    assert_eq!(models.e2e_us, Some(280_000));
    assert!(models.llm.is_none());

    let chat = &exchanges[1];
    assert_eq!(chat.direction, Direction::Outbound);
    assert_eq!(chat.tid, 101);
    assert_eq!(chat.t0_ns, T0);
    assert_eq!(chat.ttfb_us, Some(300_000));
    assert_eq!(chat.e2e_us, Some(410_000));
    assert_eq!(chat.error, None);
    assert_eq!(
        chat.connection.server_name.as_deref(),
        Some("api.openai.com")
    );
    let http = chat.http.as_ref().unwrap();
    assert_eq!(http.stream_id, Some(1));
    assert_eq!(http.content_type.as_deref(), Some("text/event-stream"));
    assert_eq!(
        http.rate_limit.as_ref().unwrap().remaining_requests,
        Some(99)
    );
    let trace = chat.trace.as_ref().unwrap();
    assert_eq!(trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert!(!trace.sampled);

    let llm = chat.llm.as_ref().unwrap();
    assert_eq!(llm.provider, "openai");
    assert_eq!(llm.request_model.as_deref(), Some("gpt-4o-mini"));
    assert!(llm.streaming);
    assert!(llm.terminated);
    assert_eq!(llm.ttft_us, Some(360_000));
    assert_eq!(llm.content_events, 2);
    assert_eq!(llm.itl_us, [40_000]);
    assert_eq!(llm.usage.output_tokens, Some(2));
    assert_eq!(llm.usage.source, TokenSource::Provider);
    assert!(chat.request_bytes > 0);
    assert!(chat.response_bytes > 0);
}

#[test]
fn h2_grpc_and_resets() {
    let exchanges = exchanges_of("h2_grpc_and_resets");
    assert_eq!(exchanges.len(), 3);

    let grpc = &exchanges[0];
    assert_eq!(grpc.direction, Direction::Inbound);
    let http = grpc.http.as_ref().unwrap();
    assert_eq!(http.path, "/rag.Retriever/Search");
    assert_eq!(http.status, Some(200));
    assert_eq!(http.content_type.as_deref(), Some("application/grpc"));
    let error = grpc.error.as_ref().expect("grpc error");
    assert_eq!(error.kind, ErrorKind::HttpStatus);
    assert_eq!(error.provider_code.as_deref(), Some("grpc-status 14"));
    assert_eq!(grpc.e2e_us, Some(15_000));

    let reset = &exchanges[1];
    assert_eq!(reset.http.as_ref().unwrap().stream_id, Some(3));
    assert_eq!(reset.error.as_ref().unwrap().kind, ErrorKind::ClientAborted);
    let llm = reset.llm.as_ref().unwrap();
    assert_eq!(llm.content_events, 1);
    assert_eq!(llm.ttft_us, Some(50_000));
    assert_eq!(reset.e2e_us, None);

    let refused = &exchanges[2];
    assert_eq!(refused.http.as_ref().unwrap().stream_id, Some(5));
    assert_eq!(
        refused.error.as_ref().unwrap().kind,
        ErrorKind::ConnectionReset
    );
}

#[test]
fn h2_inbound_traceparent() {
    let exchanges = exchanges_of("h2_inbound_traceparent");
    assert_eq!(exchanges.len(), 2);
    for exchange in &exchanges {
        assert_eq!(exchange.direction, Direction::Inbound);
        assert_eq!(exchange.protocol, Protocol::Http2);
    }

    let first = exchanges[0]
        .trace
        .as_ref()
        .expect("traceparent on stream 1");
    assert_eq!(first.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(first.parent_span_id, "00f067aa0ba902b7");
    assert!(first.sampled);
    assert_eq!(first.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7"));

    // The header name comes from the HPACK dynamic table this time.
    let second = exchanges[1]
        .trace
        .as_ref()
        .expect("traceparent on stream 3");
    assert_eq!(second.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(second.parent_span_id, "b7ad6b7169203331");
    assert!(!second.sampled);
    assert_eq!(second.tracestate, None);
}
