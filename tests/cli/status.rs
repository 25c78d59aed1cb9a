//! `robust-mutex status`: each state, with its exit code, as text and JSON;
//! every kind of lock file; read-only (read permission and a read-only
//! mount suffice), changing nothing.

use crate::small_fs::SmallFs;
use crate::*;

const NOBODY: u32 = 65534;

#[test]
fn status_shows_each_state_with_its_exit_code() {
    let (_dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let (v, c) = json_status(&path);
    assert_eq!(
        (v["state"].as_str(), c, &v["owner"]),
        (Some("unlocked"), 0, &serde_json::Value::Null)
    );
    for key in [
        "acquisitions",
        "contended",
        "owner_deaths",
        "recoveries",
        "resets",
    ] {
        assert_eq!(v["counters"][key], 0, "{key}");
    }
    assert_eq!(v["file"]["version"], 2);
    assert_eq!(v["file"]["boot_id_matches"], true);

    let mut h = Holder::start(&path, &["--label", "L"]);
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("locked"), 1));
    assert_eq!(v["owner"]["pid"], h.pid());
    assert_eq!(v["owner"]["label"], "L");
    assert!(v["owner"]["tid"].as_u64().unwrap() > 0);
    assert_eq!(v["owner"]["alive"], true);
    assert!(
        v["owner"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("run --label L"),
        "{v}"
    );
    assert_eq!(v["counters"]["acquisitions"], 1);
    let o = cli(&["status", p(&path)]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.starts_with(&format!("{}: locked\n", p(&path))),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", h.pid())), "{text}");
    assert!(
        text.contains("run --label L"),
        "the holder's command line: {text}"
    );
    assert!(
        text.contains("sh -c 'echo $$; echo ready; exec sleep 1000'\n"),
        "arguments with spaces quoted: {text}"
    );
    assert!(text.contains("mode 0600"), "{text}");

    h.kill_run();
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("owner-dead"), 2));
    assert_eq!(v["owner"]["pid"], h.pid(), "the dead holder");

    assert_eq!(
        cli(&["run", p(&path), "--", "false"]).status.code(),
        Some(1)
    );
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("not-recoverable"), 2));
    assert_eq!(v["counters"]["owner_deaths"], 1);
    let o = cli(&["status", p(&path)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains(&format!("robust-mutex reset {}", p(&path))));
}

#[test]
fn status_shows_a_semaphore_and_a_bare_file() {
    let (dir, path) = temp_path("sem");
    let sem = robust_mutex::SharedSemaphore::open(&path, 3).unwrap();
    let _p = sem.acquire().unwrap();
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("locked"), 1), "{v}");
    assert_eq!(v["file"]["kind"], "semaphore");
    let permits = &v["permits"];
    assert_eq!(
        (permits["total"].as_u64(), permits["available"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
    assert_eq!(permits["holders"][0]["pid"], std::process::id());
    let text = stdout(&cli(&["status", p(&path)]));
    assert!(
        text.contains("permits: 3 total, 2 available, 1 held"),
        "{text}"
    );

    let bare = dir.path().join("bare");
    robust_mutex::BareMutex::open(&bare).unwrap();
    let (v, c) = json_status(&bare);
    assert_eq!((v["state"].as_str(), c), (Some("unlocked"), 0), "{v}");
    assert_eq!(v["file"]["kind"], "bare");
    let text = stdout(&cli(&["status", p(&bare)]));
    assert!(text.contains("bare"), "{text}");
}

/// `robust_mutex::status_json` is what `status --json` prints, without the
/// newline: for an unlocked mutex, one held by another process, a held
/// semaphore, an unlocked and a held bare file, and a file being created
/// (exit 75, the same object). Only the holders' `held_for_secs` differ
/// (each is measured at its own call).
#[test]
fn the_library_prints_what_status_json_prints() {
    let (dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    same_json(&path, 0);
    let h = Holder::start(&path, &["--label", "L"]);
    let v = same_json(&path, 1);
    assert_eq!(
        (&v["owner"]["pid"], &v["owner"]["alive"]),
        (&h.pid().into(), &true.into())
    );

    let sem = dir.path().join("sem");
    let s = robust_mutex::SharedSemaphore::open(&sem, 3).unwrap();
    let (_a, _b) = (s.acquire().unwrap(), s.acquire().unwrap());
    let v = same_json(&sem, 1);
    assert_eq!(
        v["permits"]["holders"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );

    let bare = dir.path().join("bare");
    let b = robust_mutex::BareMutex::open(&bare).unwrap();
    assert_eq!(same_json(&bare, 0)["file"]["kind"], "bare");
    let g = b.lock().unwrap();
    assert_eq!(same_json(&bare, 1)["state"], "locked");
    drop(g);

    let left = dir.path().join("left");
    abandoned_creation(&left);
    assert_eq!(same_json(&left, 75)["state"], "being-created");
}

/// The library's JSON for `path`, after checking that `status --json`
/// prints the same line and exits with `code`: byte for byte when nobody
/// holds it, else but for each holder's `held_for_secs`.
fn same_json(path: &Path, code: i32) -> serde_json::Value {
    let line = robust_mutex::status_json(path).unwrap();
    let o = cli(&["status", "--json", p(path)]);
    assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(!line.contains('\n'), "one line, no newline: {line:?}");
    if !line.contains("held_for_secs") {
        assert_eq!(printed, format!("{line}\n"));
    }
    let whole: serde_json::Value = serde_json::from_str(&line).unwrap();
    let mut lib = whole.clone();
    let mut printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    for v in [&mut lib, &mut printed] {
        take_held_for(&mut v["owner"]);
        if let Some(h) = v["permits"]["holders"].as_array_mut() {
            h.iter_mut().for_each(take_held_for);
        }
    }
    assert_eq!(lib, printed, "{}", p(path));
    whole
}

/// Removes a holder's `held_for_secs` (a number, at least 0, or null with
/// `acquired_at` when the file keeps no owner record: a bare file);
/// nothing for no holder (null).
fn take_held_for(o: &mut serde_json::Value) {
    if let Some(o) = o.as_object_mut() {
        let held = o.remove("held_for_secs").unwrap_or_default();
        let unknown = held.is_null() && o["acquired_at"].is_null();
        assert!(unknown || held.as_f64().is_some_and(|h| h >= 0.0), "{o:?}");
    }
}

/// A monitoring account with read permission only: a root-owned 0644 file,
/// held by a root `run`, looked at by uid 65534.
#[test]
#[cfg_attr(not_root, ignore = "needs root: runs status as uid 65534")]
fn status_needs_only_read_permission() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("l");
    assert_eq!(
        cli(&["create", "--mode", "0644", p(&path)]).status.code(),
        Some(0)
    );
    let h = Holder::start(&path, &["--label", "mon"]);
    let before = snapshot(&path);
    let o = cli_as(NOBODY, &["status", "--json", p(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["state"].as_str(), &v["owner"]["pid"]),
        (Some("locked"), &h.pid().into())
    );
    assert_eq!(v["file"]["mode"], "0644");
    let o = cli_as(NOBODY, &["status", p(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("label \"mon\""), "{}", stdout(&o));
    assert_eq!(snapshot(&path), before);
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a tmpfs"
)]
fn status_works_on_a_read_only_mount() {
    let fs = SmallFs::tmpfs("1m");
    let (free, dead, broken) = (
        fs.path().join("free"),
        fs.path().join("dead"),
        fs.path().join("broken"),
    );
    assert_eq!(cli(&["create", p(&free)]).status.code(), Some(0));
    let mut h = Holder::start(&dead, &[]);
    h.kill_run();
    drop(h);
    make_not_recoverable(&broken);
    fs.remount_read_only();
    let before: Vec<_> = [&free, &dead, &broken].map(|f| snapshot(f)).into();
    for (f, state, code) in [
        (&free, "unlocked", 0),
        (&dead, "owner-dead", 2),
        (&broken, "not-recoverable", 2),
    ] {
        let (v, c) = json_status(f);
        assert_eq!((v["state"].as_str(), c), (Some(state), code), "{v}");
        let o = cli(&["status", p(f)]);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    }
    let after: Vec<_> = [&free, &dead, &broken].map(|f| snapshot(f)).into();
    assert_eq!(after, before);
}

/// What a crashed creator leaves is reported, not converted: the bytes,
/// size, mode and owner stay as they were.
fn status_leaves_an_abandoned_creation_alone(path: &Path) {
    status_leaves_an_abandoned_creation_alone_sized(path, 0);
}

/// As [`status_leaves_an_abandoned_creation_alone`], for a file of `len`
/// bytes.
fn status_leaves_an_abandoned_creation_alone_sized(path: &Path, len: u64) {
    let before = (snapshot(path), std::fs::metadata(path).unwrap().uid());
    for args in [&["status", p(path)][..], &["status", "--json", p(path)]] {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(75), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("being created") && err.contains(p(path)) && err.lines().count() == 1,
            "{err}"
        );
    }
    assert_eq!(
        (snapshot(path), std::fs::metadata(path).unwrap().uid()),
        before
    );
    assert_eq!(std::fs::metadata(path).unwrap().len(), len);
}

#[test]
fn status_leaves_our_abandoned_creation_alone() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    status_leaves_an_abandoned_creation_alone(&path);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: chowns a file to uid 65534")]
fn status_leaves_another_users_abandoned_creation_alone() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    status_leaves_an_abandoned_creation_alone(&path);
}

/// What a creator that crashed on a full disk leaves: a 0400 file sized
/// with ftruncate whose pages were never written (holes; a read fault on
/// one of them, on a full tmpfs, is SIGBUS). `status` and `watch` report
/// it without mapping it, and `remove` takes it.
#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a tmpfs"
)]
fn status_and_remove_of_a_leftover_on_a_full_filesystem() {
    let fs = SmallFs::tmpfs("64k");
    let path = fs.sparse_leftover("l");
    fs.fill();
    status_leaves_an_abandoned_creation_alone_sized(&path, 512);
    let o = cli(&["remove", p(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!path.exists());
}
