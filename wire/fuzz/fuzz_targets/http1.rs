//! The `http1` fuzz target; what it does with an input is in
//! `targets/mod.rs`.

#![no_main]

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|input: &[u8]| targets::http1(input));
