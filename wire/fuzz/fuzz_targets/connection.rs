//! Every parser behind protocol detection: the first byte picks the
//! transport and ports, the rest are probe calls (see `ops.rs`).

#![no_main]

mod ops;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::{ConnectionInfo, ConnectionParser, ParserConfig, Transport};

fuzz_target!(|input: &[u8]| {
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
            ops::Op::Data { flow, ts_ns, bytes } => parser.on_data(flow, ts_ns, 1, bytes),
            ops::Op::Gap {
                flow,
                ts_ns,
                missing_bytes,
            } => parser.on_gap(flow, ts_ns, missing_bytes),
            ops::Op::End { ts_ns, end } => parser.on_end(ts_ns, end),
        }
        let _ = parser.take_exchanges();
    }
    let _ = parser.finish(u64::MAX / 2);
    let _ = parser.stats();
});
