//! A live holder is never called stuck because `/proc` cannot show it: a
//! `/proc` mounted `hidepid=2` (systemd's `ProtectProc=invisible`), or the
//! `/proc` of another PID namespace (`unshare -pf` without
//! `--mount-proc`). Only `kill(2)` saying ESRCH makes a holder gone.

use crate::common::{self, temp_path};
use robust_mutex::{LockState, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

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
    any(not_root, no_mount, no_setpriv),
    ignore = "needs root allowed to mount (a hidepid=2 proc in a new mount namespace) and setpriv(1) to drop to uid 65534"
)]
fn a_live_holder_hidden_by_hidepid_is_locked_not_stuck() {
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
#[cfg_attr(
    any(not_root, no_pidns),
    ignore = "needs root allowed to unshare --pid"
)]
fn a_live_holder_seen_through_another_namespaces_proc_is_locked_not_stuck() {
    let (_dir, path) = temp_path("m");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork"])
        .arg(std::env::current_exe().unwrap());
    let said = run_role(cmd, "ns_thread_holds", &path);
    assert_eq!(said, "status=locked\nlock=timed-out");
}

/// A live holder that writes no owner record (a raw pthread or pymutex
/// peer) whose TID a stale record names — left by a dead holder of
/// another process, the TID since reused — is alive: the record's process
/// not owning that thread cannot tell a stuck lock from a live holder, so
/// it is no evidence, and reset must not release the lock.
#[test]
fn a_live_holder_under_a_stale_record_of_its_tid_is_locked_not_stuck() {
    use robust_mutex::internals::{ColdRecord, HOT_OFFSET, HotRecord, LABEL_MAX, OWNER_OFFSET};
    use std::os::unix::fs::MetadataExt;
    let (_dir, path) = temp_path("m");
    let m = robust_mutex::SharedMutex::<u64>::open(&path).unwrap();
    let mut raw = common::Kid::spawn("raw_owner_died", &path);
    assert_eq!(raw.expect("locked"), "0");
    let tid = m.status().lock_word & 0x3fff_ffff;
    let stale_hot = HotRecord {
        tid,
        pid: std::process::id(), // alive, but thread `tid` is not its
        since: 2,
        counts: bytemuck::Zeroable::zeroed(),
    };
    let stale_cold = ColdRecord {
        pid: std::process::id(),
        label_len: 0,
        pidns_ino: std::fs::metadata("/proc/self/ns/pid").unwrap().ino(),
        start_time: 1,
        key: 1,
        reserved: 0,
        label: [0; LABEL_MAX],
    };
    let base = common::roles::raw_map(&path);
    // SAFETY: the hot record lies at HOT_OFFSET and the cold one at
    // OWNER_OFFSET of the live 4096-byte mapping (docs/design.md); a
    // test's deliberate overwrite.
    unsafe {
        let base = base.cast::<u8>();
        std::ptr::write_volatile(base.add(HOT_OFFSET).cast::<HotRecord>(), stale_hot);
        std::ptr::write_volatile(base.add(OWNER_OFFSET).cast::<ColdRecord>(), stale_cold);
    }
    assert_eq!(m.status().state, LockState::Locked);
    assert!(matches!(
        m.lock_timeout(std::time::Duration::from_secs(3)),
        Err(robust_mutex::LockError::TimedOut)
    ));
    assert!(matches!(
        robust_mutex::reset(&path, false),
        Err(robust_mutex::Error::ResetRefused { .. })
    ));
    raw.kill();
    assert!(m.lock().unwrap().owner_died());
}
