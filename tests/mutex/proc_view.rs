//! A live holder is never called stuck because `/proc` cannot show it: a
//! `/proc` mounted `hidepid=2` (systemd's `ProtectProc=invisible`), or the
//! `/proc` of another PID namespace (`unshare -pf` without
//! `--mount-proc`). Only `kill(2)` saying ESRCH makes a holder gone.

use crate::common::{self, temp_path};
use robust_mutex::{LockState, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Whether `unshare ARGS true` works here (root, but a sandbox may forbid
/// new namespaces).
fn unshare_works(args: &[&str]) -> bool {
    let probe = Command::new("unshare").args(args).arg("true").status();
    let ok = matches!(probe, Ok(s) if s.success());
    if !ok {
        eprintln!("SKIPPED: needs `unshare {args:?}`, which fails here ({probe:?})");
    }
    ok
}

/// Runs `cmd` (which ends in the test binary playing `role` on `path`) to
/// its end; returns its `@@` lines.
fn run_role(mut cmd: Command, role: &str, path: &std::path::Path) -> String {
    let out = cmd
        .args(common::CHILD_ARGS)
        .env(common::ROLE, role)
        .env(common::PATH, path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: mounts a hidepid=2 proc in a new mount namespace, drops to uid 65534"
)]
fn a_live_holder_hidden_by_hidepid_is_locked_not_stuck() {
    if !unshare_works(&["--mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("m");
    let m = OpenOptions::new()
        .create(true)
        .mode(0o666)
        .open::<u64>(&path)
        .unwrap();
    let g = m.lock().unwrap().recover_with(|_| {});
    // The test binary, where uid 65534 can run it.
    let exe_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(exe_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = exe_dir.path().join("test-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t proc -o hidepid=2 proc /proc && \
             exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"",
        )
        .arg("sh")
        .arg(&exe);
    let said = run_role(cmd, "hidden_proc_look", &path);
    assert_eq!(said, "status=locked\nlock=timed-out");
    assert_eq!(m.status().state, LockState::Locked);
    drop(g);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: unshare --pid")]
fn a_live_holder_seen_through_another_namespaces_proc_is_locked_not_stuck() {
    if !unshare_works(&["--pid", "--fork"]) {
        return;
    }
    let (_dir, path) = temp_path("m");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork"])
        .arg(std::env::current_exe().unwrap());
    let said = run_role(cmd, "ns_thread_holds", &path);
    assert_eq!(said, "status=locked\nlock=timed-out");
}
