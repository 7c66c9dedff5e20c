//! Decodes fuzz input into the calls the probe makes on a parser.
//!
//! The input is a sequence of operations: one byte `op`, a two-byte
//! little-endian length, then that many bytes of data. Bit 0 of `op` picks
//! the flow (0 egress, 1 ingress), bits 1-2 the call (0 data, 1 gap of
//! `length` bytes, 2 end), and bits 3-4 the end kind. Each operation is
//! 1 ms after the previous one. `seed.py` writes fixtures in this form.

use llmslo_wire::{Flow, StreamEnd};

pub enum Op<'a> {
    Data {
        flow: Flow,
        ts_ns: u64,
        bytes: &'a [u8],
    },
    Gap {
        flow: Flow,
        ts_ns: u64,
        missing_bytes: u64,
    },
    End {
        ts_ns: u64,
        end: StreamEnd,
    },
}

pub fn decode(mut input: &[u8]) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    let mut ts_ns = 1_000_000_000u64;
    while input.len() >= 3 {
        let op = input[0];
        let length = usize::from(u16::from_le_bytes([input[1], input[2]]));
        input = &input[3..];
        let flow = if op & 1 == 0 {
            Flow::Egress
        } else {
            Flow::Ingress
        };
        ts_ns += 1_000_000;
        match (op >> 1) & 3 {
            0 => {
                let take = length.min(input.len());
                ops.push(Op::Data {
                    flow,
                    ts_ns,
                    bytes: &input[..take],
                });
                input = &input[take..];
            }
            1 => ops.push(Op::Gap {
                flow,
                ts_ns,
                missing_bytes: length as u64,
            }),
            _ => {
                let end = match (op >> 3) & 3 {
                    0 => StreamEnd::PeerClosed,
                    1 => StreamEnd::Closed,
                    _ => StreamEnd::Reset,
                };
                ops.push(Op::End { ts_ns, end });
            }
        }
    }
    ops
}
