//! Bad input: every broken or hostile file gets a typed error and is left
//! byte-for-byte (and mode-for-mode) as it was. No panic, no hang, no SIGBUS.

use crate::common::{snapshot, temp_path};
use robust_mutex::{Error, LockError, LockState, OpenOptions, SharedMutex};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Header field offsets (docs/design.md), for cutting and corrupting.
const FIELDS: &[(&str, usize)] = &[
    ("magic", 0),
    ("version", 8),
    ("state", 12),
    ("flags", 16),
    ("kind", 20),
    ("arch", 24),
    ("libc_env", 40),
    ("mutex_size", 48),
    ("pointer_width", 52),
    ("data_size", 56),
    ("data_align", 64),
    ("data_offset", 72),
    ("file_len", 80),
    ("generation", 88),
    ("boot_id", 96),
    ("pidns", 112),
    ("created", 120),
    ("reserved", 128),
    ("mutex", 256),
    ("owner", 320),
    ("counters", 448),
    ("value", 512),
];

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Opens `path` as a `SharedMutex<u64>` and checks that it fails and that
/// the file did not change. Returns the error.
fn rejected(path: &Path) -> Error {
    let before = snapshot(path);
    let err = match OpenOptions::new().create(true).open::<u64>(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    };
    assert_eq!(
        snapshot(path),
        before,
        "a rejected file was changed ({err})"
    );
    err
}

fn valid_bytes() -> Vec<u8> {
    let (_dir, path) = temp_path("valid");
    SharedMutex::<u64>::open(&path).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn someone_elses_data_is_refused() {
    let (_dir, path) = temp_path("m");
    for (bytes, mode) in [
        (b"#!/bin/sh\necho hello\n".to_vec(), 0o644),
        (vec![0xAB; 4096], 0o600),
        (vec![0; 4096], 0o600),
    ] {
        write_file(&path, &bytes, mode);
        let e = rejected(&path);
        assert!(
            matches!(e, Error::ForeignFile { .. } | Error::Truncated { .. }),
            "{e}"
        );
    }
}

#[test]
fn an_empty_file_is_named_empty_with_a_hint_for_flock_users() {
    let (_dir, path) = temp_path("m");
    // What touch leaves, and flock(1) (0644 under the usual umask), and
    // other modes; only 0400 is a creator's mark (taken over instead).
    for mode in [0o644, 0o600, 0o666, 0o444] {
        write_file(&path, b"", mode);
        let e = rejected(&path);
        assert!(
            matches!(&e, Error::Empty { path: p } if *p == path),
            "{mode:o}: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("empty") && text.contains("flock(1)") && text.contains("reset --force"),
            "{text}"
        );
        assert!(!text.contains("truncated"), "{text}");
    }
}

#[test]
fn an_empty_file_whose_flock_is_held_is_named_empty_after_the_init_timeout() {
    // While a flock is held on an empty file the opener waits (it may be a
    // non-root takeover lifting the creator's mark for one open); when the
    // holder is a flock(1) user, the answer after the timeout is the same.
    use std::os::fd::AsRawFd;
    let (_dir, path) = temp_path("held");
    write_file(&path, b"", 0o644);
    let holder = std::fs::File::open(&path).unwrap();
    // SAFETY: flock(2) on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    let before = snapshot(&path);
    let e = OpenOptions::new()
        .init_timeout(Duration::from_millis(20))
        .open::<u64>(&path)
        .unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    assert_eq!(snapshot(&path), before);
}

#[test]
#[cfg_attr(no_flock1, ignore = "needs flock(1) (util-linux)")]
fn a_file_left_by_flock_1_is_named_empty_and_left_alone() {
    let (_dir, path) = temp_path("flocked");
    let st = std::process::Command::new("flock")
        .arg(&path)
        .arg("true")
        .status();
    assert!(matches!(st, Ok(s) if s.success()), "flock(1): {st:?}");
    assert!(matches!(rejected(&path), Error::Empty { .. }));
}

#[test]
fn a_file_cut_at_every_field_boundary_is_refused() {
    let good = valid_bytes();
    let (_dir, path) = temp_path("m");
    for &(field, at) in FIELDS {
        for cut in [at, at + 1] {
            if cut >= good.len() {
                continue;
            }
            write_file(&path, &good[..cut], 0o600);
            let e = rejected(&path);
            assert!(
                matches!(
                    e,
                    Error::Truncated { .. } | Error::ForeignFile { .. } | Error::Empty { .. }
                ),
                "cut in {field} at {cut}: {e}"
            );
        }
    }
}

#[test]
fn each_corrupted_header_field_has_its_own_error() {
    let good = valid_bytes();
    let (_dir, path) = temp_path("m");
    type Expect = fn(&Error) -> bool;
    let cases: &[(&str, usize, Expect)] = &[
        ("magic", 0, |e| matches!(e, Error::ForeignFile { .. })),
        ("version", 8, |e| {
            matches!(e, Error::UnsupportedVersion { .. })
        }),
        ("state", 12, |e| matches!(e, Error::Corrupt { .. })),
        // An unknown kind code is corruption; a known other kind is a
        // KindMismatch (tests/mutex/reentrant.rs, tests/semaphore/files.rs).
        (
            "kind",
            20,
            |e| matches!(e, Error::Corrupt { reason, .. } if reason.contains("kind")),
        ),
        ("arch", 24, |e| matches!(e, Error::AbiMismatch { .. })),
        ("libc_env", 40, |e| matches!(e, Error::AbiMismatch { .. })),
        ("mutex_size", 48, |e| matches!(e, Error::AbiMismatch { .. })),
        ("pointer_width", 52, |e| {
            matches!(e, Error::AbiMismatch { .. })
        }),
        ("data_size", 56, |e| matches!(e, Error::Corrupt { .. })),
        ("data_align", 64, |e| matches!(e, Error::Corrupt { .. })),
        ("data_offset", 72, |e| matches!(e, Error::Corrupt { .. })),
        ("file_len", 80, |e| matches!(e, Error::Corrupt { .. })),
        ("pidns", 112, |e| {
            matches!(e, Error::PidNamespaceMismatch { .. })
        }),
        ("mutex kind word", 256 + 16, |e| {
            matches!(e, Error::Corrupt { .. })
        }),
    ];
    for (field, at, ok) in cases {
        let mut bad = good.clone();
        bad[*at] ^= 0x5a;
        write_file(&path, &bad, 0o600);
        let e = rejected(&path);
        assert!(ok(&e), "corrupt {field}: got {e}");
    }
    // generation 0 is never written.
    let mut bad = good.clone();
    bad[88..96].fill(0);
    write_file(&path, &bad, 0o600);
    assert!(matches!(rejected(&path), Error::Corrupt { .. }));
}

#[test]
fn a_value_of_another_size_or_alignment_is_refused() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    let before = snapshot(&path);
    let e = SharedMutex::<u32>::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TypeMismatch {
                file_size: 8,
                size: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = SharedMutex::<[u8; 8]>::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TypeMismatch {
                file_align: 8,
                align: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(snapshot(&path), before);
}

#[test]
fn directories_fifos_devices_and_symlinks_are_refused() {
    let (dir, path) = temp_path("d");
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(
        rejected(&path),
        Error::NotRegularFile {
            kind: "directory",
            ..
        }
    ));

    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(matches!(
        rejected(&fifo),
        Error::NotRegularFile { kind: "FIFO", .. }
    ));

    let before = snapshot(Path::new("/dev/null"));
    let e = SharedMutex::<u64>::open("/dev/null").unwrap_err();
    assert!(matches!(e, Error::NotRegularFile { .. }), "{e}");
    assert_eq!(snapshot(Path::new("/dev/null")), before);
}

/// The pre-created-symlink attack in a shared /tmp (filelock's
/// CVE-2025-68146): a link planted where the lock file will be must not make
/// us open, create or change its target.
#[test]
fn a_planted_symlink_never_reaches_its_target() {
    let (dir, path) = temp_path("lock");
    let victim = dir.path().join("victim");
    write_file(&victim, b"precious", 0o644);
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let e = SharedMutex::<u64>::open(&path).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // A dangling link must not create its target either.
    let target = dir.path().join("not-yet");
    let link = dir.path().join("lock2");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = SharedMutex::<u64>::open(&link).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    assert!(!target.exists());

    // A link to a valid mutex file is refused too.
    let real = dir.path().join("real");
    SharedMutex::<u64>::open(&real).unwrap();
    let link3 = dir.path().join("lock3");
    std::os::unix::fs::symlink(&real, &link3).unwrap();
    assert!(matches!(
        SharedMutex::<u64>::open(&link3).unwrap_err(),
        Error::Symlink { .. }
    ));
}

#[test]
fn a_huge_sparse_file_is_not_read_or_changed() {
    let (_dir, path) = temp_path("m");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(1 << 40).unwrap();
    drop(f);
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = rejected(&path);
        assert!(matches!(e, Error::ForeignFile { .. }), "{mode:o}: {e}");
    }
}

#[test]
fn garbage_in_the_lock_word_is_reported_stuck_and_never_hangs() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // A TID that cannot exist (above pid_max's ceiling of 2^22).
    bytes[256..260].copy_from_slice(&0x3fff_fff0u32.to_ne_bytes());
    let other = path.with_extension("garbage");
    write_file(&other, &bytes, 0o600);
    let m = SharedMutex::<u64>::open(&other).unwrap();
    assert_eq!(m.status().state, LockState::Stuck);
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(50)),
        Err(LockError::TimedOut)
    ));
}

mod a_retired_file_at_the_path_never_hangs_open {
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
}
