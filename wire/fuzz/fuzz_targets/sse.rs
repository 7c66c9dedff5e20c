//! The SSE parser: the data operations' bytes are fed as separate reads.

#![no_main]

mod ops;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::sse::SseParser;

fuzz_target!(|input: &[u8]| {
    let mut parser = SseParser::new(1024);
    let mut events = Vec::new();
    for op in ops::decode(input) {
        if let ops::Op::Data { bytes, .. } = op {
            parser.feed(bytes, &mut events);
            for event in events.drain(..) {
                assert!(event.data.len() <= 1024);
            }
        }
    }
    let _ = parser.finish();
});
