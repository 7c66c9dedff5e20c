//! Parsing cost grows linearly with the stream, even when every byte comes
//! in its own read: a parser that rescanned its buffer from the start on
//! each read would take about 100 times longer for 10 times the bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmslo_wire::{ConnectionInfo, ConnectionParser, Flow, ParserConfig, Transport};

/// A streaming Chat Completions exchange whose response has `events` SSE
/// events, one long header and one long event of `events * 40` bytes.
fn exchange_bytes(events: usize) -> (Vec<u8>, Vec<u8>) {
    let body = br#"{"model":"m","messages":[],"stream":true}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = request.into_bytes();
    request.extend_from_slice(body);

    let long_header = "a".repeat(events * 4);
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Long: {long_header}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    let long_event = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(events * 40)
    );
    let mut events_text = vec![long_event];
    for _ in 0..events {
        events_text.push("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n".to_owned());
    }
    events_text.push("data: [DONE]\n\n".to_owned());
    for event in events_text {
        response.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
    }
    response.extend_from_slice(b"0\r\n\r\n");
    (request, response)
}

/// Feeds the exchange one byte per read and returns the time it took.
fn parse_byte_by_byte(events: usize) -> Duration {
    let (request, response) = exchange_bytes(events);
    let info = ConnectionInfo {
        transport: Transport::Tcp,
        role: None,
        local_port: Some(40000),
        peer_port: Some(443),
        tls: false,
    };
    let start = Instant::now();
    let mut parser = ConnectionParser::new(info, Arc::new(ParserConfig::default()));
    for (i, byte) in request.iter().enumerate() {
        parser.on_data(Flow::Egress, i as u64, 1, std::slice::from_ref(byte));
    }
    for (i, byte) in response.iter().enumerate() {
        parser.on_data(
            Flow::Ingress,
            1_000_000 + i as u64,
            1,
            std::slice::from_ref(byte),
        );
    }
    let exchanges = parser.finish(u64::MAX / 2);
    let elapsed = start.elapsed();

    assert_eq!(exchanges.len(), 1);
    let llm = exchanges[0].llm.as_ref().unwrap();
    assert!(llm.terminated);
    assert_eq!(llm.content_events as usize, events + 1);
    elapsed
}

#[test]
fn byte_by_byte_cost_is_linear() {
    // Warm up allocations and caches before measuring.
    parse_byte_by_byte(100);

    let small = parse_byte_by_byte(400);
    let large = parse_byte_by_byte(4000);
    let ratio = large.as_secs_f64() / small.as_secs_f64();
    // Linear cost gives about 10; quadratic cost about 100. The bound leaves
    // room for a loaded machine.
    assert!(
        ratio < 35.0,
        "10x the bytes took {ratio:.1}x the time ({small:?} -> {large:?})"
    );
}
