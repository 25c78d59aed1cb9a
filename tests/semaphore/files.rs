//! Semaphore files: kinds, permit counts, creation policies, replacing
//! instead of resetting, and permit mutexes of a foreign kind.

use crate::common::{snapshot, temp_path};
use robust_mutex::{Error, OpenOptions, SharedMutex, SharedSemaphore};

#[test]
fn kinds_permit_counts_and_creation_policies() {
    let (dir, path) = temp_path("sem");
    SharedSemaphore::open(&path, 2).unwrap();
    let before = snapshot(&path);

    let e = SharedSemaphore::open(&path, 3).unwrap_err();
    assert!(
        matches!(
            e,
            Error::PermitMismatch {
                file: 2,
                asked: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = SharedMutex::<u64>::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                found: robust_mutex::LockKind::Semaphore,
                ..
            }
        ),
        "{e}"
    );
    let e = robust_mutex::ReentrantMutex::<u64>::open_with(&path, &OpenOptions::new()).unwrap_err();
    assert!(matches!(e, Error::KindMismatch { .. }), "{e}");
    let e = SharedSemaphore::open_with(&path, 2, OpenOptions::new().create_new(true)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!(snapshot(&path), before, "a rejected file is left untouched");

    let m = dir.path().join("mutex");
    SharedMutex::<u64>::open(&m).unwrap();
    let mutex_before = snapshot(&m);
    let e = SharedSemaphore::open(&m, 2).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                found: robust_mutex::LockKind::Mutex,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(snapshot(&m), mutex_before);

    let missing = dir.path().join("missing");
    let e = SharedSemaphore::open_with(&missing, 2, &OpenOptions::new()).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(!missing.exists(), "open existing creates nothing");

    let created =
        SharedSemaphore::open_with(&missing, 4, OpenOptions::new().create_new(true)).unwrap();
    assert_eq!(
        (created.permits(), created.file_info().kind),
        (4, robust_mutex::LockKind::Semaphore)
    );
    let again = SharedSemaphore::open_with(&missing, 4, &OpenOptions::new()).unwrap();
    let held = again.try_acquire().unwrap();
    assert_eq!(created.status().held, 1, "one semaphore, two handles");
    drop(held);

    // Replace: a new file with another permit count over the old one.
    let fresh = SharedSemaphore::open_with(&path, 5, OpenOptions::new().replace(true)).unwrap();
    assert_eq!(fresh.status().total, 5);
    assert!(matches!(
        SharedSemaphore::open(&path, 2),
        Err(Error::PermitMismatch { file: 5, .. })
    ));
    // Replace never touches someone else's file.
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"not ours").unwrap();
    let e = SharedSemaphore::open_with(&foreign, 2, OpenOptions::new().replace(true)).unwrap_err();
    assert!(matches!(e, Error::ForeignFile { .. }), "{e}");
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not ours");

    for bad in [0, 128] {
        let e = SharedSemaphore::open(dir.path().join("bad"), bad).unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e}");
    }
    assert!(!dir.path().join("bad").exists());
    assert!(SharedSemaphore::open(dir.path().join("max"), 127).is_ok());

    robust_mutex::remove(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn reset_refuses_a_semaphore_and_points_to_replace() {
    let (_dir, path) = temp_path("sem-reset");
    robust_mutex::SharedSemaphore::open(&path, 2).unwrap();
    let before = snapshot(&path);
    let e = robust_mutex::reset(&path, true).unwrap_err();
    assert!(
        matches!(e, robust_mutex::Error::InvalidOptions { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("replace"));
    assert_eq!(snapshot(&path), before);
}

mod a_semaphore_permit_with_a_foreign_mutex_kind_is_refused {
    //! Regression (found by the fuzz target `fuzz/fuzz_targets/open_file.rs`,
    //! input fuzz/corpus/open_file/regression-semaphore-permit-kind-word-aborts):
    //! open checks glibc's `__kind` word of the file's main mutex, but not the
    //! kind words of a semaphore's permit mutexes (one per 192-byte slot in
    //! the value region). A file whose permit mutex says "priority protect"
    //! (or priority inherit, or not robust, ...) is accepted, and the first
    //! `try_acquire` / `acquire_timeout` hands it to glibc, which takes the
    //! PTHREAD_PRIO_PROTECT path and aborts the whole process:
    //! `tpp.c:83: __pthread_tpp_change_priority: Assertion ... failed`.

    use robust_mutex::{Error, OpenOptions, SharedSemaphore};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Duration;

    /// Offset of slot 0 (the value region of a semaphore) and of `__kind` in a
    /// 64-bit glibc `pthread_mutex_t` (docs/design.md).
    const SLOT0: usize = 512;
    const KIND: usize = 16;
    /// The fuzzer's edit: ERRORCHECK|ROBUST|PSHARED (0x92) ^ 0x53 = 0xc1,
    /// PRIO_PROTECT|PSHARED|RECURSIVE.
    const FLIP: u8 = 0x53;

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

    /// The consequence, in a child process (role `sem_acquire_broken`):
    /// acquiring aborts it.
    #[test]
    fn acquiring_from_such_a_file_does_not_kill_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        broken_semaphore(&path);
        let out = crate::common::child_command("sem_acquire_broken", &path)
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
}
