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
#[cfg_attr(
    any(not_root, no_pidns),
    ignore = "needs root allowed to unshare --pid"
)]
fn a_process_in_another_pid_namespace_is_refused_unless_it_opts_in() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
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

/// Cuts the file at `path` to `len` bytes, as `truncate -s LEN` does.
fn cut(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn reset_without_force_refuses_an_empty_or_truncated_file_untouched() {
    let (_dir, path) = temp_path("m");
    for len in [0, 10, 300, 515] {
        SharedMutex::<u64>::open(&path).unwrap();
        cut(&path, len);
        let before = common::snapshot(&path);
        let e = robust_mutex::reset(&path, false).unwrap_err();
        assert!(
            matches!(&e, Error::ResetNeedsForce { len: l, .. } if *l == len),
            "{len}: {e}"
        );
        assert!(e.to_string().contains("force"), "{e}");
        let found = if len == 0 { "empty" } else { "cut short" };
        assert!(e.to_string().contains(found), "{e}");
        assert_eq!(common::snapshot(&path), before, "{len}");
        std::fs::remove_file(&path).unwrap();
    }
    // A full-size leftover of a creator that died is named as such.
    use std::os::unix::fs::PermissionsExt;
    SharedMutex::<u64>::open(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let e = robust_mutex::reset(&path, false).unwrap_err();
    assert!(e.to_string().contains("creator that died"), "{e}");
}

#[test]
fn reset_with_force_replaces_a_truncated_file_keeping_what_its_remnants_show() {
    use robust_mutex::{OpenOptions, ReentrantMutex};
    let (_dir, path) = temp_path("m");
    // The header survived (300 bytes): the kind and the value's size are
    // kept; the value itself is gone (zero) and the first locker recovers.
    let old = ReentrantMutex::<u64>::open(&path).unwrap();
    old.lock().unwrap().recover_with(|_| {}).set(7);
    let gen_before = old.status().generation;
    drop(old);
    cut(&path, 300);
    let e = ReentrantMutex::<u64>::open(&path).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    let out = robust_mutex::reset(&path, true).unwrap();
    assert_eq!(out.generation, gen_before + 1);
    // Opening it as a re-entrant mutex of a u64 checks kind and size.
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("the first locker after a reset must run its repair code");
    };
    assert_eq!(r.guard().get(), 0);
    drop(r.mark_consistent());

    // Only the magic survived (`truncate -s 10`): a plain mutex with no value,
    // what `robust-mutex create` makes.
    cut(&path, 10);
    robust_mutex::reset(&path, true).unwrap();
    let m = OpenOptions::new().open::<()>(&path).unwrap();
    assert!(m.lock().unwrap().owner_died());
}

#[test]
fn reset_with_force_makes_an_empty_file_a_mutex_keeping_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_path("flocked");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    robust_mutex::reset(&path, true).unwrap();
    assert_eq!(common::mode_of(&path), 0o640);
    let m = robust_mutex::OpenOptions::new()
        .open_lock_only(&path)
        .unwrap();
    assert!(m.lock().unwrap().owner_died());
    // A crashed creator's empty leftover (0400) too, as a mode-0600 mutex.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    robust_mutex::reset(&path, true).unwrap();
    assert_eq!(common::mode_of(&path), 0o600);
    robust_mutex::OpenOptions::new()
        .open_lock_only(&path)
        .unwrap();
}

#[test]
fn reset_with_force_never_replaces_someone_elses_data() {
    let (_dir, path) = temp_path("m");
    for bytes in [
        &b"#!/bin/sh\n"[..],
        &[0u8; 600][..],
        &b"RBSTMTX\x02"[..],
        b"R",
        b"RBS",
    ] {
        std::fs::write(&path, bytes).unwrap();
        let before = common::snapshot(&path);
        let e = robust_mutex::reset(&path, true).unwrap_err();
        assert!(matches!(e, Error::ForeignFile { .. }), "{e}");
        assert_eq!(common::snapshot(&path), before);
    }
}

#[test]
fn reset_works_for_every_name_length_up_to_name_max() {
    let dir = tempfile::tempdir().unwrap();
    for len in [1, 200, 230, 240, 254, 255] {
        let path = dir.path().join("n".repeat(len));
        let m = SharedMutex::<u64>::open(&path).unwrap();
        *m.lock_or_recover(|_| {}).unwrap() = len as u64;
        let out = robust_mutex::reset(&path, true).unwrap();
        assert_eq!(out.generation, 2, "{len}");
        assert_eq!(*m.lock_or_recover(|_| {}).unwrap(), len as u64);
        // And when only the name's remnants are left.
        cut(&path, 10);
        robust_mutex::reset(&path, true).unwrap();
    }
    // Nothing else is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
}

const NOBODY: u32 = 65534;

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: files are chowned, a child drops to uid 65534"
)]
fn reset_refuses_another_users_file_unless_allowed() {
    use robust_mutex::ResetOptions;
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_path("planted");
    // A creator's mark planted by another user, a mutex of another user,
    // an empty file of another user.
    for (len, mode) in [(0, 0o400), (520, 0o600), (0, 0o644)] {
        if len == 0 {
            std::fs::write(&path, b"").unwrap();
        } else {
            SharedMutex::<u64>::open(&path).unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        let before = common::snapshot(&path);
        let e = robust_mutex::reset(&path, true).unwrap_err();
        assert!(
            matches!(e, Error::ForeignOwner { owner: NOBODY, .. }),
            "{mode:o}: {e}"
        );
        assert_eq!(common::snapshot(&path), before, "{mode:o}");
        // Opting in: replaced, and the new file keeps its owner.
        ResetOptions::new()
            .force(true)
            .allow_other_owners(true)
            .reset(&path)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), NOBODY);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: files are chowned, a child drops to uid 65534"
)]
fn reset_in_a_directory_the_caller_cannot_write_names_the_directory() {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = top.path().join("root-owned");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("m");
    SharedMutex::<u64>::open(&path).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = common::snapshot(&path);
    let mut kid = Kid::spawn_as("reset_and_report", &path, &[], Some((NOBODY, NOBODY)));
    let r = kid.expect("result");
    kid.wait_ok();
    assert_eq!(r, format!("dir-not-writable {}", dir.display()));
    assert_eq!(common::snapshot(&path), before);
}

#[test]
fn reset_of_a_remnant_never_force_resets_the_lock_that_replaced_it() {
    // A reset looks, finds a remnant, and is stopped there; meanwhile
    // another reset (here: the test) replaces the remnant with a new lock,
    // which its user then holds. The first reset must report the remnant
    // replaced, never force-reset that new, held lock.
    let (_dir, path) = temp_path("m");
    drop(SharedMutex::<u64>::open(&path).unwrap());
    // Cut short past its header, so that the header's layout is kept.
    cut(&path, std::fs::metadata(&path).unwrap().len() - 1);
    let mut kid = Kid::spawn_env(
        "reset_and_report",
        &path,
        &[
            ("ROBUST_MUTEX_TEST_PAUSE_AT", "reset_looked"),
            ("ROBUST_MUTEX_TEST_RESUME", "1"),
        ],
    );
    kid.expect("paused:reset_looked");
    robust_mutex::reset(&path, true).unwrap();
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut g = m.lock_or_recover(|_| {}).unwrap();
    *g = 7;
    let ino = std::fs::metadata(&path).unwrap().ino();
    kid.tell("go");
    assert_eq!(kid.expect("result"), "ok");
    assert_eq!(
        std::fs::metadata(&path).unwrap().ino(),
        ino,
        "the held lock was replaced"
    );
    drop(g);
    let st = robust_mutex::inspect(&path).unwrap();
    assert_eq!(st.generation, 2);
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: files are chowned, a child drops to uid 65534"
)]
fn reset_by_a_group_member_of_another_users_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    // A lock owned by root, shared with group 65534 (mode 0660), in a
    // directory everyone may write: a member of that group may not reset
    // it, since the replacement would be its own and lock root out.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("m");
    for remnant in [false, true] {
        drop(SharedMutex::<u64>::open(&path).unwrap());
        if remnant {
            cut(&path, 10);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(NOBODY)).unwrap();
        let before = common::snapshot(&path);
        let mut kid = Kid::spawn_as(
            "reset_any_owner_and_report",
            &path,
            &[],
            Some((NOBODY, NOBODY)),
        );
        let r = kid.expect("result");
        kid.wait_ok();
        assert_eq!(r, "changes-owner 0", "remnant: {remnant}");
        assert_eq!(common::snapshot(&path), before, "remnant: {remnant}");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn reset_of_an_empty_file_a_flock_1_user_holds_names_that_flock() {
    let (_dir, path) = temp_path("m");
    std::fs::write(&path, b"").unwrap();
    let held = std::fs::File::open(&path).unwrap();
    held.lock().unwrap(); // flock(LOCK_EX), as flock(1) takes it
    let before = common::snapshot(&path);
    let e = robust_mutex::reset(&path, true).unwrap_err();
    assert!(matches!(e, Error::FlockHeld { .. }), "{e}");
    assert!(e.to_string().contains("flock(1)"), "{e}");
    assert_eq!(common::snapshot(&path), before);
}
