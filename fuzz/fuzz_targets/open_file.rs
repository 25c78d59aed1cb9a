//! Fuzz target: arbitrary bytes and mode in a file, then open it.
//! See ../check.rs for the property and the input layout.
#![no_main]

#[path = "../check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
