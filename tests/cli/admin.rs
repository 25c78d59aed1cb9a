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

#[test]
fn an_empty_or_truncated_file_is_named_and_reset_force_makes_it_a_mutex() {
    let (_dir, path) = temp_path("l");
    // An empty file, as flock(1) or touch leave it.
    std::fs::write(&path, b"").unwrap();
    let o = cli(&["run", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(65));
    let err = stderr(&o);
    assert!(
        err.contains("empty") && err.contains(&format!("reset --force {}", p(&path))),
        "{err}"
    );
    let before = snapshot(&path);
    let o = cli(&["reset", p(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(snapshot(&path), before);
    let o = cli(&["reset", "--force", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(run_sees_owner_died(&path), "1");
    assert_eq!(run_sees_owner_died(&path), "0");

    // Cut short under use (`truncate -s 10`): only its magic is left.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    let o = cli(&["run", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains(&format!("reset --force {}", p(&path))),
        "{}",
        stderr(&o)
    );
    assert_eq!(cli(&["reset", p(&path)]).status.code(), Some(1));
    let o = cli(&["reset", "--force", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(run_sees_owner_died(&path), "1");
}

#[test]
fn reset_works_for_a_name_of_name_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x".repeat(255));
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let o = cli(&["reset", "--force", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(run_sees_owner_died(&path), "1");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

const NOBODY: u32 = 65534;

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: files are chowned, commands run as uid 65534"
)]
fn reset_in_a_directory_the_owner_cannot_write_exits_77_naming_the_directory() {
    use std::os::unix::process::CommandExt;
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = top.path().join("root-owned");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = snapshot(&path);
    let o = bin()
        .args(["reset", "--force", p(&path)])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(77), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}:", p(&dir))) && err.contains("permission denied"),
        "names the directory: {err}"
    );
    assert!(!err.contains("O_TMPFILE"), "{err}");
    assert!(
        err.contains(&format!(
            "reset {}: cannot create its replacement",
            p(&path)
        )),
        "names the lock file and what failed: {err}"
    );
    assert_eq!(snapshot(&path), before);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: files are chowned")]
fn reset_refuses_another_users_file_unless_allowed() {
    let (_dir, path) = temp_path("l");
    // A creator's mark planted by another user (item 4).
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = snapshot(&path);
    for args in [vec!["reset", p(&path)], vec!["reset", "--force", p(&path)]] {
        let o = cli(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(77), "{args:?}: {err}");
        assert!(err.contains("--allow-other-owners"), "{err}");
        assert_eq!(snapshot(&path), before);
    }
    let o = cli(&["reset", "--force", "--allow-other-owners", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (NOBODY, 0o600));
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
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = snapshot(&path);
    for args in [
        vec!["remove", p(&path)],
        vec!["remove", "--force", p(&path)],
    ] {
        let o = cli(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(77), "{args:?}: {err}");
        assert!(
            err.contains("uid 65534") && err.contains("--allow-other-owners"),
            "{err}"
        );
        assert_eq!(snapshot(&path), before);
    }
    let o = cli(&["remove", "--allow-other-owners", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!path.exists());
}

#[test]
fn remove_takes_our_abandoned_creation() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    let o = cli(&["remove", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!path.exists());
}
