//! `remove`: unlinks a lock file of ours, and refuses, leaving the file
//! untouched, what it must not discard: a held lock, a dead holder's state
//! awaiting repair, a lock that is not recoverable or stuck, and another
//! user's file.

use crate::common::{Kid, snapshot, temp_path};
use crate::status::{not_recoverable_file, owner_dead_file};
use robust_mutex::{Error, LockState, RemoveOptions, SharedMutex, SharedSemaphore};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const NOBODY: u32 = 65534;

/// `remove` refuses `path` with `RemoveRefused { state }` and a hint, and
/// leaves it exactly as it was; forced, it removes it.
fn refused_then_forced(path: &Path, state: LockState, hint: &str) {
    let before = snapshot(path);
    let e = robust_mutex::remove(path).unwrap_err();
    assert!(
        matches!(e, Error::RemoveRefused { state: s, .. } if s == state),
        "{state}: {e}"
    );
    let msg = e.to_string();
    assert!(msg.contains(hint) && msg.contains("force"), "{msg}");
    assert_eq!(snapshot(path), before, "{state}: refused, yet changed");
    RemoveOptions::new().force(true).remove(path).unwrap();
    assert!(!path.exists(), "{state}");
}

#[test]
fn remove_refuses_a_held_lock_unless_forced() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    let mut k = Kid::spawn("hold", &path);
    k.expect("locked");
    refused_then_forced(&path, LockState::Locked, &format!("pid {}", k.pid()));
}

#[test]
fn remove_refuses_an_owner_dead_lock_unless_forced() {
    let (_dir, path) = temp_path("m");
    owner_dead_file(&path);
    refused_then_forced(
        &path,
        LockState::OwnerDead,
        "the next locker would run its repair",
    );
}

#[test]
fn remove_refuses_a_not_recoverable_lock_unless_forced() {
    let (_dir, path) = temp_path("m");
    not_recoverable_file(&path);
    refused_then_forced(&path, LockState::NotRecoverable, "robust-mutex reset");
}

#[test]
fn remove_refuses_a_stuck_lock_unless_forced() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    Kid::spawn("stuck", &path).wait_ok();
    refused_then_forced(&path, LockState::Stuck, "robust-mutex reset");
}

#[test]
fn remove_refuses_a_semaphore_with_a_dead_holder_unless_forced() {
    let (_dir, path) = temp_path("s");
    SharedSemaphore::open(&path, 3).unwrap();
    let mut k = Kid::spawn("sem_hold", &path);
    k.expect("slot");
    k.kill();
    refused_then_forced(
        &path,
        LockState::OwnerDead,
        "the next locker would run its repair",
    );
}

#[test]
fn remove_takes_a_free_lock_and_our_own_abandoned_creation() {
    let (dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    robust_mutex::remove(&path).unwrap();
    assert!(!path.exists());
    // What a creator that crashed right after O_CREAT leaves.
    let left = dir.path().join("left");
    std::fs::File::create(&left).unwrap();
    std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o400)).unwrap();
    robust_mutex::remove(&left).unwrap();
    assert!(!left.exists());
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: chowns files to uid 65534")]
fn remove_refuses_another_users_file_unless_allowed() {
    let (dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    let left = dir.path().join("left");
    std::fs::File::create(&left).unwrap();
    std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o400)).unwrap();
    for p in [&path, &left] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        let before = snapshot(p);
        let e = robust_mutex::remove(p).unwrap_err();
        assert!(
            matches!(e, Error::ForeignOwner { owner: NOBODY, .. }),
            "{e}"
        );
        assert_eq!(snapshot(p), before);
        RemoveOptions::new()
            .allow_other_owners(true)
            .remove(p)
            .unwrap();
        assert!(!p.exists());
    }
}
