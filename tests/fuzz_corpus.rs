//! Replays every saved fuzz input (fuzz/corpus/open_file) through the same
//! property as the fuzz target, so `cargo test` exercises the whole corpus.

#[path = "../fuzz/check.rs"]
mod check;

#[test]
fn every_saved_fuzz_input_still_holds_the_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_file");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the fuzz corpus is missing") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        std::panic::catch_unwind(|| check::check(&data))
            .unwrap_or_else(|_| panic!("corpus input {} failed", path.display()));
        n += 1;
    }
    assert!(n > 0, "the fuzz corpus is empty");
    eprintln!("replayed {n} fuzz inputs");
}
