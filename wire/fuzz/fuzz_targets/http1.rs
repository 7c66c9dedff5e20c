//! The HTTP/1 parser without detection; the first byte picks the request
//! flow.

#![no_main]

mod ops;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::http1::Http1Connection;
use llmslo_wire::{Flow, ParserConfig};

fuzz_target!(|input: &[u8]| {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let request_flow = if setup & 1 == 0 {
        Flow::Egress
    } else {
        Flow::Ingress
    };
    let mut http = Http1Connection::new(request_flow, Some(443), Arc::new(ParserConfig::default()));
    for op in ops::decode(rest) {
        match op {
            ops::Op::Data { flow, ts_ns, bytes } => http.on_data(flow, ts_ns, 1, bytes),
            ops::Op::Gap {
                flow,
                missing_bytes,
                ..
            } => http.on_gap(flow, missing_bytes),
            ops::Op::End { end, .. } => http.on_end(end),
        }
        let _ = http.take_exchanges();
    }
    let _ = http.finish();
});
