//! The DNS parser over UDP (each data operation one datagram) or TCP,
//! picked by the first byte.

#![no_main]

mod ops;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::dns::{DnsConnection, parse_message};

fuzz_target!(|input: &[u8]| {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let _ = parse_message(rest);
    let mut dns = DnsConnection::new(setup & 1 == 1);
    for op in ops::decode(rest) {
        match op {
            ops::Op::Data { flow, ts_ns, bytes } => dns.on_data(flow, ts_ns, 1, bytes),
            ops::Op::Gap { flow, .. } => dns.on_gap(flow),
            ops::Op::End { end, .. } => dns.on_end(end),
        }
        let _ = dns.take_exchanges();
    }
    let _ = dns.finish();
});
