//! Regression (found by the fuzz target `fuzz/fuzz_targets/open_file.rs`):
//! a file whose header says RETIRED, still linked at the path, made `open`
//! spin for ever ("a reset replaced it: look again" found the same file
//! again, and `Step::Retry` never checks the init timeout).
//!
//! Input: fuzz/corpus/open_file/regression-retired-state-spins-open.

use robust_mutex::{OpenOptions, SharedMutex};
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::Duration;

/// `state` at offset 12 (docs/design.md): READY and RETIRED.
const READY: u32 = 0x5245_4459;
const RETIRED: u32 = 0x5245_5449;

#[test]
fn a_retired_file_still_at_its_path_gets_an_error_within_the_init_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    drop(SharedMutex::<u64>::open(&path).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[12..16], READY.to_ne_bytes());
    bytes[12..16].copy_from_slice(&RETIRED.to_ne_bytes());
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let r = OpenOptions::new()
            .create(true)
            .init_timeout(Duration::from_millis(50))
            .open::<u64>(&p)
            .map(drop);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => {
            let e = r.expect_err("a RETIRED file is not a usable mutex");
            eprintln!("refused: {e}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "a rejected file was changed"
            );
        }
        // The spinning thread is left behind; the test process exits.
        Err(_) => panic!("open of a RETIRED file still at its path did not return in 5 s"),
    }
}
