//! The bare (pymutex-format) file on our side, without a Python peer: bad
//! bare files, telling bare and header files apart, open options, status.
//! Sharing it with Python is in `pymutex.rs`.

use crate::common::{mode_of, snapshot, temp_path};
use robust_mutex::{BareMutex, Error, LockError, LockState, OpenOptions, SharedMutex};
use std::os::unix::fs::PermissionsExt;

#[test]
fn bad_bare_files_are_refused_untouched() {
    let (dir, path) = temp_path("bad");
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(Vec<u8>, u32, Expect)> = vec![
        (vec![], 0o600, |e| {
            matches!(e, Error::Truncated { len: 0, .. })
        }),
        (vec![0; 39], 0o600, |e| matches!(e, Error::Truncated { .. })),
        (vec![0; 41], 0o600, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
        (vec![0xAB; 40], 0o600, |e| {
            matches!(e, Error::Corrupt { .. })
        }),
        (vec![0; 40], 0o600, |e| matches!(e, Error::Corrupt { .. })),
        (vec![0; 40], 0o444, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
        // Read-only with the creator's mark but content no creator leaves:
        // refused at once, without waiting for the init timeout.
        (vec![0xAB; 40], 0o400, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
        (vec![0; 4096], 0o400, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
    ];
    for (bytes, perm, ok) in cases {
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm)).unwrap();
        let before = snapshot(&path);
        let e = BareMutex::open(&path).unwrap_err();
        assert!(ok(&e), "{} bytes, mode {perm:o}: {e}", bytes.len());
        assert_eq!(snapshot(&path), before);
    }
    // A garbage kind word in an otherwise plausible mutex.
    let good = dir.path().join("good");
    drop(BareMutex::open(&good).unwrap());
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[16] ^= 0x01; // __kind on 64-bit glibc: errorcheck becomes recursive
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let before = snapshot(&path);
    assert!(matches!(
        BareMutex::open(&path).unwrap_err(),
        Error::Corrupt { .. }
    ));
    assert_eq!(snapshot(&path), before);
    // Not regular files.
    assert!(matches!(
        BareMutex::open(dir.path()).unwrap_err(),
        Error::NotRegularFile { .. }
    ));
    // Symlinks are never followed, and their target is not touched.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let before = snapshot(&good);
    assert!(matches!(
        BareMutex::open(&link).unwrap_err(),
        Error::Symlink { .. }
    ));
    assert_eq!(snapshot(&good), before);
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        BareMutex::open(&dangling).unwrap_err(),
        Error::Symlink { .. }
    ));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn header_files_and_bare_files_are_told_apart() {
    let (dir, _) = temp_path("x");
    let header = dir.path().join("header");
    SharedMutex::<u64>::open(&header).unwrap();
    let before = snapshot(&header);
    assert!(matches!(
        BareMutex::open(&header).unwrap_err(),
        Error::ForeignFile { .. }
    ));
    assert_eq!(snapshot(&header), before);

    let bare = dir.path().join("bare");
    drop(BareMutex::open(&bare).unwrap());
    let before = snapshot(&bare);
    let e = SharedMutex::<u64>::open(&bare).unwrap_err();
    assert!(
        matches!(e, Error::ForeignFile { .. } | Error::Truncated { .. }),
        "{e}"
    );
    let e = OpenOptions::new().open_lock_only(&bare).unwrap_err();
    assert!(
        matches!(e, Error::ForeignFile { .. } | Error::Truncated { .. }),
        "{e}"
    );
    assert_eq!(snapshot(&bare), before);
}

#[test]
fn open_options_are_honoured() {
    let (dir, path) = temp_path("new.lock");
    assert!(matches!(
        robust_mutex::BareMutex::open_with(&path, &OpenOptions::new()).unwrap_err(),
        Error::NotFound { .. }
    ));
    let m = BareMutex::open_with(&path, OpenOptions::new().create_new(true).mode(0o660)).unwrap();
    assert_eq!(mode_of(&path), 0o660);
    assert!(matches!(
        BareMutex::open_with(&path, OpenOptions::new().create_new(true)).unwrap_err(),
        Error::AlreadyExists { .. }
    ));
    // A second handle in the process shares the mapping, hence the lock.
    let again = robust_mutex::BareMutex::open_with(&path, &OpenOptions::new()).unwrap();
    let g = m.try_lock().unwrap();
    assert!(matches!(again.try_lock(), Err(LockError::Deadlock)));
    drop(g);
    let other = dir.path().join("other.lock");
    for (opts, want) in [
        (OpenOptions::new().create(true).mode(0o400).clone(), "mode"),
        (
            OpenOptions::new().create(true).mode(0o10600).clone(),
            "mode",
        ),
        (
            OpenOptions::new().create(true).replace(true).clone(),
            "options",
        ),
    ] {
        let e = robust_mutex::BareMutex::open_with(&other, &opts).unwrap_err();
        let got = match e {
            Error::InvalidMode { .. } => "mode",
            Error::InvalidOptions { .. } => "options",
            _ => "other",
        };
        assert_eq!(got, want, "{e}");
        assert!(!other.exists());
    }
}

#[test]
fn status_names_a_holder_on_any_thread() {
    let (_dir, path) = temp_path("t.lock");
    let m = BareMutex::open(&path).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // Owned by this closure: a failed assertion drops it, which ends
        // the holder thread instead of hanging the scope.
        let release_tx = release_tx;
        let m = &m;
        s.spawn(move || {
            let g = m.lock().unwrap().recover_with(|_| {});
            // SAFETY: gettid has no preconditions.
            locked_tx.send(unsafe { libc::gettid() } as u32).unwrap();
            release_rx.recv().unwrap();
            drop(g);
        });
        let tid = locked_rx.recv().unwrap();
        let st = m.status();
        assert_eq!(st.state, LockState::Locked, "{st:?}");
        let owner = st.owner.unwrap();
        assert_eq!((owner.pid, owner.tid), (std::process::id(), tid));
        assert!(owner.is_alive());
        assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
        release_tx.send(()).unwrap();
    });
    assert_eq!(m.status().state, LockState::Unlocked);
}
