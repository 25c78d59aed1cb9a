//! The way back: reset of broken mutexes while others hold handles or wait,
//! files from an earlier boot, and PID-namespace checks.

use crate::common;
use crate::common::roles::HELD_VALUE;
use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, Error, LockError, LockState, SharedMutex};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn not_recoverable_mutex(path: &Path) -> SharedMutex<u64> {
    let m = SharedMutex::<u64>::open(path).unwrap();
    let mut kid = Kid::spawn("hold", path);
    kid.expect("locked");
    kid.kill();
    if let Acquired::OwnerDied(r) = m.lock().unwrap() {
        drop(r);
    }
    assert_eq!(m.status().state, LockState::NotRecoverable);
    m
}

#[test]
fn a_healthy_mutex_is_reset_only_when_forced() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    *m.lock_or_recover(|_| {}).unwrap() = 5;
    let e = robust_mutex::reset(&path, false).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ResetRefused {
                state: LockState::Unlocked,
                ..
            }
        ),
        "{e}"
    );
    let out = robust_mutex::reset(&path, true).unwrap();
    assert_eq!(out.generation, 2);
    // The handle follows, gets OwnerDied once, and the value survived.
    let a = SharedMutex::<u64>::open(&path).unwrap();
    let g = a.lock().unwrap();
    assert!(g.owner_died());
    assert_eq!(*g.recover_with(|_| {}), 5);
}

#[test]
fn reset_of_a_not_recoverable_mutex_moves_every_handle_and_keeps_the_value() {
    let (dir, path) = temp_path("m");
    let m = not_recoverable_mutex(&path);
    let out = robust_mutex::reset(&path, false).unwrap();
    assert_eq!(
        (out.generation, out.previous_state),
        (2, LockState::NotRecoverable)
    );
    // No file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // The old handle meets NotRecoverable, sees the new inode, moves, and is
    // the first locker: OwnerDied, with the value the dead owner left.
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("the first locker after a reset must run its repair code");
    };
    assert_eq!(*r, HELD_VALUE);
    drop(r.mark_consistent());
    let s = m.status();
    assert_eq!((s.state, s.generation), (LockState::Unlocked, 2));
    assert_eq!(s.counters.resets, 1);

    // A process opening afterwards sees a clean lock on the new file.
    let mut kid = Kid::spawn("reopen", &path);
    assert_eq!(kid.expect("got"), format!("false,{HELD_VALUE}"));
}

#[test]
fn reset_while_another_process_is_blocked_in_lock_on_a_stuck_mutex() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    *m.lock_or_recover(|_| {}).unwrap() = 1234;
    Kid::spawn("stuck", &path).wait_ok();
    assert_eq!(m.status().state, LockState::Stuck);

    let mut waiter = Kid::spawn("wait_through_reset", &path);
    waiter.expect("opened");
    // FUTEX_WAITERS: the waiter sleeps in the kernel on the stuck word.
    while m.status().lock_word & 0x8000_0000 == 0 {
        std::thread::yield_now();
    }
    let out = robust_mutex::reset(&path, false).unwrap();
    assert_eq!(out.previous_state, LockState::Stuck);
    let new_ino = std::fs::metadata(&path).unwrap().ino();
    let got = waiter.expect("got");
    assert_eq!(
        got,
        format!("true,1234,{new_ino}"),
        "no hang, no lost value, on the new file"
    );
    waiter.wait_ok();
}

#[test]
fn try_lock_and_timeouts_follow_a_reset_too() {
    let (_dir, path) = temp_path("m");
    let m = not_recoverable_mutex(&path);
    robust_mutex::reset(&path, false).unwrap();
    let a = m.try_lock().unwrap();
    assert!(a.owner_died());
    drop(a.recover_with(|_| {}));
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn a_reset_refuses_files_that_are_not_mutexes() {
    let (_dir, path) = temp_path("m");
    std::fs::write(&path, b"data").unwrap();
    let before = common::snapshot(&path);
    assert!(robust_mutex::reset(&path, true).is_err());
    assert_eq!(common::snapshot(&path), before);
    let missing = path.with_extension("missing");
    assert!(matches!(
        robust_mutex::reset(&missing, true),
        Err(Error::NotFound { .. })
    ));
    assert!(!missing.exists());
    let _ = LockError::NotRecoverable;
}

/// A file whose lock word names a thread of an earlier boot (faked with the
/// debug-only boot-id override): the first opener of this boot
/// re-initialises the mutex, keeps the value, and the first locker recovers.
#[test]
fn a_file_from_an_earlier_boot_is_repaired_on_open() {
    let (_dir, path) = temp_path("m");
    {
        let m = SharedMutex::<u64>::open(&path).unwrap();
        *m.lock_or_recover(|_| {}).unwrap() = 77;
    }
    // The "old boot" crashed while a thread held the lock.
    Kid::spawn("stuck", &path).wait_ok();
    let mut kid = Kid::spawn_env(
        "reopen",
        &path,
        &[(
            "ROBUST_MUTEX_TEST_BOOT_ID",
            "00112233-4455-6677-8899-aabbccddeeff",
        )],
    );
    assert_eq!(kid.expect("got"), "true,77");
    kid.wait_ok();
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: unshare --pid")]
fn a_process_in_another_pid_namespace_is_refused_unless_it_opts_in() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        // Root, but in a sandbox that forbids new PID namespaces.
        eprintln!("SKIPPED: needs `unshare --pid`, which fails here ({probe:?})");
        return;
    }
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork"])
        .arg(exe)
        .args(common::CHILD_ARGS)
        .env(common::ROLE, "open_foreign_ns")
        .env(common::PATH, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("@@ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
