//! `create` and `run` on a full filesystem (a real small tmpfs and ext4,
//! so root only): exit 73 with one line naming the path, never a SIGBUS;
//! once space is freed, both work.

use crate::small_fs::SmallFs;
use crate::*;
use std::os::unix::fs::PermissionsExt;

/// Runs the command; asserts it exited (no signal) with `code` and one
/// line on stderr naming `path`; returns that line.
fn exits_with(args: &[&str], code: i32, path: &Path) -> String {
    let o = cli(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?}: {:?} {err}",
        o.status
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.contains(p(path)), "{args:?}: names the path: {err}");
    err
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn create_and_run_on_a_full_tmpfs_exit_73_and_work_once_space_is_freed() {
    create_and_run_on_a_full_disk("tmpfs", SmallFs::tmpfs("64k"));
}

#[test]
#[cfg_attr(
    any(not_root, no_mount, no_loop_ext4),
    ignore = "needs root allowed to mount, mkfs.ext4 and loop devices: mounts an ext4 image"
)]
fn create_and_run_on_a_full_ext4_exit_73_and_work_once_space_is_freed() {
    create_and_run_on_a_full_disk("ext4", SmallFs::ext4());
}

fn create_and_run_on_a_full_disk(name: &str, fs: SmallFs) {
    fs.fill();
    let path = fs.join("a.lock");
    let err = exits_with(&["create", p(&path)], 73, &path);
    assert!(err.contains("no space"), "{name}: {err}");
    assert!(!path.exists(), "{name}: nothing left behind");
    exits_with(&["run", p(&path), "--", "true"], 73, &path);
    assert!(!path.exists(), "{name}: nothing left behind");
    fs.free();
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0), "{name}");
    let o = cli(&["run", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{name}");
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_sparse_leftover_on_a_full_disk_kills_no_command() {
    let fs = SmallFs::tmpfs("64k");
    let path = fs.sparse_leftover("left.lock");
    // A second one for `remove`, which may delete it.
    let other = fs.sparse_leftover("other.lock");
    fs.fill();
    exits_with(&["run", p(&path), "--", "true"], 73, &path);
    for args in [vec!["status", p(&path)], vec!["remove", p(&other)]] {
        let o = cli(&args);
        assert!(o.status.code().is_some(), "{args:?}: {:?}", o.status);
    }
    assert!(path.exists(), "the leftover is still there");
    fs.free();
    // Once space is freed, `run` takes the leftover over.
    assert_eq!(cli(&["run", p(&path), "--", "true"]).status.code(), Some(0));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(cli(&["status", p(&path)]).status.code(), Some(0));
}
