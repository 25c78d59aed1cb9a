//! Regression (found by the fuzz target `fuzz/fuzz_targets/open_file.rs`,
//! input fuzz/corpus/open_file/regression-semaphore-permit-kind-word-aborts):
//! open checks glibc's `__kind` word of the file's main mutex, but not the
//! kind words of a semaphore's permit mutexes (one per 192-byte slot in the
//! value region). A file whose permit mutex says "priority protect" (or
//! priority inherit, or not robust, ...) is accepted, and the first
//! `try_acquire` / `acquire_timeout` hands it to glibc, which takes the
//! PTHREAD_PRIO_PROTECT path and aborts the whole process:
//! `tpp.c:83: __pthread_tpp_change_priority: Assertion ... failed`.

use robust_mutex::{Error, OpenOptions, SharedSemaphore};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Offset of slot 0 (the value region of a semaphore) and of `__kind` in a
/// 64-bit glibc `pthread_mutex_t` (docs/design.md).
const SLOT0: usize = 512;
const KIND: usize = 16;
/// The fuzzer's edit: ERRORCHECK|ROBUST|PSHARED (0x92) ^ 0x53 = 0xc1,
/// PRIO_PROTECT|PSHARED|RECURSIVE.
const FLIP: u8 = 0x53;
const CHILD: &str = "RM_SEMAPHORE_KIND_CHILD";

fn broken_semaphore(path: &Path) -> Vec<u8> {
    drop(SharedSemaphore::open(path, 2).unwrap());
    let mut bytes = std::fs::read(path).unwrap();
    bytes[SLOT0 + KIND] ^= FLIP;
    std::fs::write(path, &bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    bytes
}

fn opts() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.create(true).init_timeout(Duration::from_millis(50));
    o
}

#[test]
fn a_permit_mutex_with_a_foreign_kind_word_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let bytes = broken_semaphore(&path);
    match SharedSemaphore::open_with(&path, 2, &opts()) {
        Err(e) => {
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "a rejected file was changed"
            );
        }
        Ok(_) => panic!(
            "accepted a semaphore whose permit 0 mutex is not a robust process-shared \
             errorcheck mutex (kind word {:#x})",
            0x92 ^ FLIP
        ),
    }
}

/// The consequence, in a child process: acquiring aborts it.
#[test]
fn acquiring_from_such_a_file_does_not_kill_the_process() {
    if let Ok(p) = std::env::var(CHILD) {
        if let Ok(s) = SharedSemaphore::open_with(&p, 2, &opts()) {
            drop(s.try_acquire());
            drop(s.acquire_timeout(Duration::from_millis(1)));
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    broken_semaphore(&path);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acquiring_from_such_a_file_does_not_kill_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("Assertion") || l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
