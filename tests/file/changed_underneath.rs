//! Reset and remove against files that change under them: cut short while
//! a reset waits for the flock, a creation at work while a remove looks.

use crate::common::{Kid, temp_path};
use robust_mutex::{Error, LockState, SharedMutex};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Waits (no sleeps: it yields) until process `pid` has `path` mapped.
fn wait_until_mapped(pid: u32, path: &Path) {
    let name = path.to_str().unwrap();
    let start = std::time::Instant::now();
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.lines().any(|l| l.ends_with(name)) {
            return;
        }
        // A watchdog that only catches a real hang.
        assert!(start.elapsed().as_secs() < 60, "the child never mapped it");
        std::thread::yield_now();
    }
}

/// A reset that has mapped the file and waits for its flock while the file
/// is cut to 10 bytes: returns what the reset (forced or not) said.
fn reset_of_a_file_cut_short_while_it_waits(force: bool) -> String {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let holder = std::fs::File::open(&path).unwrap();
    // SAFETY: flock(2) on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    let role = if force {
        "reset_force_report"
    } else {
        "reset_report"
    };
    let mut kid = Kid::spawn(role, &path);
    // Mapped: the reset opened it and now waits for the flock we hold.
    wait_until_mapped(kid.pid(), &path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    drop(holder);
    let said = kid.expect("result");
    assert_eq!(m.status().state, LockState::Truncated);
    said
}

#[test]
fn a_forced_reset_of_a_file_cut_short_while_it_waits_replaces_the_remnant() {
    // It used to copy the old mapping's bytes: SIGBUS.
    let said = reset_of_a_file_cut_short_while_it_waits(true);
    assert_eq!(said, "ok 1 true");
}

#[test]
fn a_reset_of_a_file_cut_short_while_it_waits_asks_for_force_for_the_remnant() {
    // It used to say "truncated, not broken; use --force", which then
    // crashed (above).
    let said = reset_of_a_file_cut_short_while_it_waits(false);
    assert!(said.starts_with("error ResetNeedsForce"), "{said}");
}

/// A creator (`role`) paused at `step`; `remove` is refused while it works
/// (`unlink_meanwhile`: `rm` runs instead), then it goes on: the file at
/// the path is the one it made and holds.
fn remove_during_a_creation(role: &str, step: &str, unlink_meanwhile: bool) {
    let (_dir, path) = temp_path("m");
    let mut kid = Kid::spawn_env(
        role,
        &path,
        &[
            ("ROBUST_MUTEX_TEST_PAUSE_AT", step),
            ("ROBUST_MUTEX_TEST_RESUME", "1"),
        ],
    );
    kid.expect(&format!("paused:{step}"));
    if unlink_meanwhile {
        std::fs::remove_file(&path).unwrap();
    } else {
        let e = robust_mutex::remove(&path).unwrap_err();
        assert!(matches!(e, Error::BeingCreated { .. }), "{step}: {e}");
        assert!(path.exists());
    }
    kid.tell("go");
    kid.expect("locked");
    let s = robust_mutex::inspect(&path).unwrap();
    assert_eq!(s.state, LockState::Locked, "{step}");
    assert_eq!(s.owner.unwrap().pid, kid.pid(), "{step}");
}

#[test]
fn remove_refuses_a_creation_at_work_and_the_creator_finishes_its_file() {
    // It used to unlink it: the creator went on to hold a lock on a file
    // nobody else could find.
    for step in ["created", "sized", "mutex_init", "header"] {
        remove_during_a_creation("create_then_hold", step, false);
    }
    remove_during_a_creation("bare_create_then_hold", "bare_flocked", false);
}

#[test]
fn a_bare_creator_whose_file_is_unlinked_before_it_attaches_makes_a_new_one() {
    remove_during_a_creation("bare_create_then_hold", "bare_written", true);
}
