//! The work of each fuzz target on one input. The fuzz binaries in
//! `fuzz_targets/` call these under libFuzzer, and the test
//! `wire/tests/fuzz_corpus.rs` replays the kept corpus through them on the
//! stable toolchain. A target reports a problem only by panicking.

// Every fuzz binary uses one of these functions.
#![allow(dead_code)]

mod ops;

use std::sync::Arc;

use llmslo_wire::db::postgres::PostgresConnection;
use llmslo_wire::db::redis::RedisConnection;
use llmslo_wire::decode::ContentDecoder;
use llmslo_wire::dns::{DnsConnection, parse_message};
use llmslo_wire::http1::Http1Connection;
use llmslo_wire::http2::Http2Connection;
use llmslo_wire::sse::SseParser;
use llmslo_wire::{ConnectionInfo, ConnectionParser, Flow, ParserConfig, Transport};

use self::ops::Op;

/// The work of one fuzz target on one input.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary and corpus folder.
pub const ALL: [(&str, Target); 8] = [
    ("connection", connection),
    ("http1", http1),
    ("http2", http2),
    ("sse", sse),
    ("postgres", postgres),
    ("redis", redis),
    ("dns", dns),
    ("decode", decode),
];

/// Largest SSE event data the `sse` target lets through.
const SSE_MAX_DATA_BYTES: usize = 1024;
/// Output limit of the `decode` target.
const DECODE_LIMIT_BYTES: u64 = 1 << 20;

/// Returns the flow of the side that speaks first, from bit 0 of the setup
/// byte.
fn first_flow(setup: u8) -> Flow {
    if setup & 1 == 0 {
        Flow::Egress
    } else {
        Flow::Ingress
    }
}

/// Feeds every parser behind protocol detection. The first byte picks the
/// transport and ports, and the rest are probe calls (see `ops.rs`).
pub fn connection(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let info = ConnectionInfo {
        transport: if setup & 1 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        role: None,
        local_port: Some(40000),
        peer_port: Some(if setup & 2 == 0 { 443 } else { 53 }),
        tls: false,
    };
    let config = ParserConfig {
        max_body_bytes: 4096,
        ..ParserConfig::default()
    };
    let mut parser = ConnectionParser::new(info, Arc::new(config));
    for op in ops::decode(rest) {
        match op {
            Op::Data { flow, ts_ns, bytes } => parser.on_data(flow, ts_ns, 1, bytes),
            Op::Gap {
                flow,
                ts_ns,
                missing_bytes,
            } => parser.on_gap(flow, ts_ns, missing_bytes),
            Op::End { ts_ns, end } => parser.on_end(ts_ns, end),
        }
        let _ = parser.take_exchanges();
    }
    let _ = parser.finish(u64::MAX / 2);
    let _ = parser.stats();
}

/// Feeds `ops` to a parser whose data, gap and end calls take the flow
/// like those of HTTP/1, HTTP/2 and Redis, collecting exchanges after each.
macro_rules! feed_by_flow {
    ($parser:expr, $ops:expr) => {{
        let mut parser = $parser;
        for op in ops::decode($ops) {
            match op {
                Op::Data { flow, ts_ns, bytes } => parser.on_data(flow, ts_ns, 1, bytes),
                Op::Gap {
                    flow,
                    missing_bytes,
                    ..
                } => parser.on_gap(flow, missing_bytes),
                Op::End { end, .. } => parser.on_end(end),
            }
            let _ = parser.take_exchanges();
        }
        let _ = parser.finish();
    }};
}

/// Feeds the HTTP/1 parser without detection. The first byte picks the
/// request flow.
pub fn http1(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let config = Arc::new(ParserConfig::default());
    let http = Http1Connection::new(first_flow(setup), Some(443), config);
    feed_by_flow!(http, rest);
}

/// Feeds the HTTP/2 parser (frames and HPACK) without detection. The first
/// byte picks the client flow.
pub fn http2(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let config = Arc::new(ParserConfig::default());
    let http = Http2Connection::new(first_flow(setup), Some(443), config);
    feed_by_flow!(http, rest);
}

/// Feeds the SSE parser the bytes of each data operation as one read.
pub fn sse(input: &[u8]) {
    let mut parser = SseParser::new(SSE_MAX_DATA_BYTES);
    for op in ops::decode(input) {
        if let Op::Data { bytes, .. } = op {
            parser.feed(bytes, &mut |event| {
                assert!(event.data.len() <= SSE_MAX_DATA_BYTES);
            });
        }
    }
    let _ = parser.finish();
}

/// Feeds the PostgreSQL parser without detection. The first byte picks the
/// client flow.
pub fn postgres(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let mut postgres = PostgresConnection::new(first_flow(setup));
    for op in ops::decode(rest) {
        match op {
            Op::Data { flow, ts_ns, bytes } => postgres.on_data(flow, ts_ns, 1, bytes),
            Op::Gap { missing_bytes, .. } => postgres.on_gap(missing_bytes),
            Op::End { end, .. } => postgres.on_end(end),
        }
        let _ = postgres.take_exchanges();
    }
    let _ = postgres.finish();
}

/// Feeds the Redis parser without detection. The first byte picks the
/// client flow.
pub fn redis(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    feed_by_flow!(RedisConnection::new(first_flow(setup)), rest);
}

/// Feeds the DNS parser over UDP (each data operation one datagram) or
/// TCP, picked by the first byte.
pub fn dns(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let _ = parse_message(rest);
    let mut dns = DnsConnection::new(setup & 1 == 1);
    for op in ops::decode(rest) {
        match op {
            Op::Data { flow, ts_ns, bytes } => dns.on_data(flow, ts_ns, 1, bytes),
            Op::Gap { flow, .. } => dns.on_gap(flow),
            Op::End { ts_ns, end } => dns.on_end(ts_ns, end),
        }
        let _ = dns.take_exchanges();
    }
    let _ = dns.finish();
}

/// Decodes content in the coding the first byte picks, the bytes of each
/// data operation as one read, and checks that the output stays within
/// the limit.
pub fn decode(input: &[u8]) {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let coding = ["gzip", "deflate", "br", "zstd"][usize::from(setup % 4)];
    let Ok(Some(mut decoder)) = ContentDecoder::new(Some(coding), DECODE_LIMIT_BYTES) else {
        return;
    };
    let mut total = 0u64;
    for op in ops::decode(rest) {
        if let Op::Data { bytes, .. } = op {
            match decoder.decode(bytes) {
                Ok(output) => total += output.len() as u64,
                Err(_) => break,
            }
            assert!(total <= DECODE_LIMIT_BYTES);
        }
    }
}
