//! `robust-mutex reset` and `remove`: the way back from a not-recoverable or
//! stuck mutex, and removal, refused for a held or broken lock and for
//! another user's file.

use crate::*;

#[test]
fn a_failed_recovery_leaves_it_not_recoverable_and_reset_brings_it_back() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    h.kill_run();
    let o = cli(&["run", p(&path), "--", "sh", "-c", "exit 1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("not recoverable")
            && err.contains(&format!("robust-mutex reset {}", p(&path))),
        "{err}"
    );
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("not-recoverable"), 2));
    let o = cli(&["run", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(69));
    assert!(stderr(&o).contains("reset"), "{}", stderr(&o));

    let o = cli(&["reset", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("generation 2"), "{}", stdout(&o));
    assert_eq!(run_sees_owner_died(&path), "1", "the next locker recovers");
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("unlocked"), 0));
    assert_eq!(v["counters"]["resets"], 1);
    assert_eq!(v["file"]["generation"], 2);

    // A healthy mutex is reset only with --force.
    let o = cli(&["reset", p(&path)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(cli(&["reset", "--force", p(&path)]).status.code(), Some(0));
}

#[test]
fn a_stuck_mutex_is_reported_and_reset_repairs_it() {
    // A copy of a held mutex file names the holder's thread in its lock
    // word, but is on nobody's robust list: when the holder dies, the kernel
    // never marks the copy owner-dead. Nobody will ever release it.
    let (dir, path) = temp_path("l");
    let stuck = dir.path().join("stuck");
    let mut h = Holder::start(&path, &["--label", "copied"]);
    std::fs::copy(&path, &stuck).unwrap();
    h.kill_run();
    let (v, c) = json_status(&stuck);
    assert_eq!((v["state"].as_str(), c), (Some("stuck"), 2));
    assert_eq!(v["owner"]["pid"], h.pid());
    let hint = format!("robust-mutex reset {}", p(&stuck));
    assert!(stdout(&cli(&["status", p(&stuck)])).contains(&hint));

    let o = cli(&["run", "-n", p(&stuck), "--", "true"]);
    assert_eq!(o.status.code(), Some(69));
    assert!(
        stderr(&o).contains("stuck") && stderr(&o).contains(&hint),
        "{}",
        stderr(&o)
    );
    // A long wait gives up once the mutex is seen stuck (about 1 s).
    let t = Instant::now();
    let o = cli(&["run", "--timeout", "60", p(&stuck), "--", "true"]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());

    let o = cli(&["reset", p(&stuck)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a stuck mutex needs no --force: {}",
        stderr(&o)
    );
    assert_eq!(run_sees_owner_died(&stuck), "1");
    assert_eq!(json_status(&stuck).0["state"], "unlocked");
}

#[test]
fn remove_refuses_a_held_lock_unless_forced() {
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &[]);
    let o = cli(&["remove", p(&path)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("pid {}", h.pid())));
    assert!(path.exists());
    assert_eq!(cli(&["remove", "--force", p(&path)]).status.code(), Some(0));
    assert!(!path.exists());
}

/// `remove` without --force refuses `path` in `state` (exit 2, one line
/// with the way out: `hint`), leaves it untouched; with --force removes it.
fn remove_refuses_broken(path: &Path, state: &str, hint: &str) {
    let before = snapshot(path);
    let o = cli(&["remove", p(path)]);
    assert_eq!(o.status.code(), Some(2), "{state}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("the lock is {state}"))
            && err.contains(hint)
            && err.contains("--force")
            && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(snapshot(path), before, "{state}");
    let o = cli(&["remove", "--force", p(path)]);
    assert_eq!(o.status.code(), Some(0), "{state}: {}", stderr(&o));
    assert!(!path.exists());
}

#[test]
fn remove_refuses_broken_locks_unless_forced() {
    let (dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    h.kill_run();
    remove_refuses_broken(&path, "owner-dead", "the next locker would run its repair");

    let path = dir.path().join("nr");
    make_not_recoverable(&path);
    let reset = format!("robust-mutex reset {}", p(&path));
    remove_refuses_broken(&path, "not-recoverable", &reset);

    let path = dir.path().join("held");
    let stuck = dir.path().join("stuck");
    let mut h = Holder::start(&path, &[]);
    std::fs::copy(&path, &stuck).unwrap();
    h.kill_run();
    let reset = format!("robust-mutex reset {}", p(&stuck));
    remove_refuses_broken(&stuck, "stuck", &reset);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: chowns a file to uid 65534")]
fn remove_refuses_another_users_abandoned_creation() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let before = snapshot(&path);
    let o = cli(&["remove", p(&path)]);
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(stderr(&o).contains("uid 65534"), "{}", stderr(&o));
    assert_eq!(snapshot(&path), before);
}

#[test]
fn remove_takes_our_abandoned_creation() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    let o = cli(&["remove", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!path.exists());
}
