//! The PostgreSQL parser without detection; the first byte picks the
//! client flow.

#![no_main]

mod ops;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::Flow;
use llmslo_wire::db::postgres::PostgresConnection;

fuzz_target!(|input: &[u8]| {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let client_flow = if setup & 1 == 0 {
        Flow::Egress
    } else {
        Flow::Ingress
    };
    let mut postgres = PostgresConnection::new(client_flow);
    for op in ops::decode(rest) {
        match op {
            ops::Op::Data { flow, ts_ns, bytes } => postgres.on_data(flow, ts_ns, 1, bytes),
            ops::Op::Gap { missing_bytes, .. } => postgres.on_gap(missing_bytes),
            ops::Op::End { end, .. } => postgres.on_end(end),
        }
        let _ = postgres.take_exchanges();
    }
    let _ = postgres.finish();
});
