//! Content decoding: the first byte picks the coding; the data operations'
//! bytes are fed as separate reads. Output must stay within the limit.

#![no_main]

mod ops;

use libfuzzer_sys::fuzz_target;
use llmslo_wire::decode::ContentDecoder;

const LIMIT_BYTES: u64 = 1 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&setup, rest)) = input.split_first() else {
        return;
    };
    let coding = ["gzip", "deflate", "br", "zstd"][usize::from(setup % 4)];
    let Ok(Some(mut decoder)) = ContentDecoder::new(Some(coding), LIMIT_BYTES) else {
        return;
    };
    let mut total = 0u64;
    for op in ops::decode(rest) {
        if let ops::Op::Data { bytes, .. } = op {
            match decoder.decode(bytes) {
                Ok(output) => total += output.len() as u64,
                Err(_) => break,
            }
            assert!(total <= LIMIT_BYTES);
        }
    }
});
