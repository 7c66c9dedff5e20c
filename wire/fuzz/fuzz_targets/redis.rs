//! The Redis parser without detection; the first byte picks the client
//! flow.

#![no_main]

mod ops;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::Flow;
use llmslo_wire::db::redis::RedisConnection;

fuzz_target!(|input: &[u8]| {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let client_flow = if setup & 1 == 0 {
        Flow::Egress
    } else {
        Flow::Ingress
    };
    let mut redis = RedisConnection::new(client_flow);
    for op in ops::decode(rest) {
        match op {
            ops::Op::Data { flow, ts_ns, bytes } => redis.on_data(flow, ts_ns, 1, bytes),
            ops::Op::Gap {
                flow,
                missing_bytes,
                ..
            } => redis.on_gap(flow, missing_bytes),
            ops::Op::End { end, .. } => redis.on_end(end),
        }
        let _ = redis.take_exchanges();
    }
    let _ = redis.finish();
});
