//! Fuzz target: arbitrary bytes and mode in a fresh file, then open it (as a
//! mutex of one of four value types, a re-entrant mutex, a semaphore, a
//! lock-only handle or a pymutex bare file) and use it.
//! The property and the input layout are in ../check.rs, which
//! `tests/file/fuzz_corpus.rs` shares to replay the corpus in `cargo test`.
#![no_main]

#[path = "../check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::set_label("this libFuzzer input (saved under fuzz/artifacts/open_file/)");
    let _ = check::check(data);
});
