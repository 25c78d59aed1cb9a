//! The tree beacon of `run --kill-tree` (an OFD read lock on byte 2^62 of
//! the lock file, held by COMMAND's tree): every `run` waits for it to be
//! free before it starts COMMAND, within its --timeout (--nonblock: looks
//! once); and `--kill-tree` never runs COMMAND in a half-made namespace.
//! The test itself holds the beacon, so nothing here depends on timing.

use crate::*;
use std::fs::File;
use std::os::fd::AsRawFd;

/// The beacon's byte (os.rs's TREE_BEACON).
const BEACON: i64 = 1 << 62;

/// An OFD lock request of `kind` on the beacon.
fn beacon(kind: i32) -> libc::flock {
    libc::flock {
        l_type: kind as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: BEACON,
        l_len: 1,
        l_pid: 0,
    }
}

/// Read-locks the beacon of PATH as a tree would; released when dropped.
fn hold_beacon(path: &Path) -> File {
    let f = File::open(path).unwrap();
    let lock = beacon(libc::F_RDLCK);
    // SAFETY: fcntl(2) on our open file with a valid struct flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    f
}

/// The type of lock that F_OFD_GETLK finds on PATH's beacon (F_UNLCK: none).
fn beacon_holder(path: &Path) -> i32 {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut lock = beacon(libc::F_WRLCK);
    // SAFETY: fcntl(2) on our open file with a valid, writable struct flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    i32::from(lock.l_type)
}

/// `run EXTRA PATH` must not start COMMAND while the test holds the beacon:
/// COMMAND prints a file that the test makes only when it lets go.
fn waits_for_the_beacon(extra: &[&str]) -> Output {
    let (dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let mark = dir.path().join("released");
    let held = hold_beacon(&path);
    let run = bin()
        .arg("run")
        .args(extra)
        .args([p(&path), "--", "sh", "-c", "cat \"$MARK\""])
        .env("MARK", &mark)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = Proc(run);
    // `run` has the lock, and now waits for the beacon.
    eventually("run holds the lock", || {
        json_status(&path).0["state"] == "locked"
    });
    std::fs::write(&mark, "released\n").unwrap();
    drop(held);
    let mut run = run;
    let o = Output {
        status: run.wait_exit(),
        stdout: std::io::read_to_string(run.0.stdout.take().unwrap())
            .unwrap()
            .into_bytes(),
        stderr: std::io::read_to_string(run.0.stderr.take().unwrap())
            .unwrap()
            .into_bytes(),
    };
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "released\n".into()),
        "COMMAND started before the beacon was free: {}",
        stderr(&o)
    );
    o
}

#[test]
fn run_starts_command_only_once_the_tree_beacon_is_free() {
    let o = waits_for_the_beacon(&[]);
    assert_eq!(stderr(&o), "");
}

#[test]
#[cfg_attr(
    any(not_root, no_pidns),
    ignore = "needs root allowed a PID namespace (unshare --pid) for --kill-tree"
)]
fn run_kill_tree_starts_command_only_once_the_tree_beacon_is_free() {
    let o = waits_for_the_beacon(&["--kill-tree"]);
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_held_beacon_ends_nonblock_and_timeout_with_the_conflict_code() {
    let (_dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let held = hold_beacon(&path);
    for (extra, want) in [
        (&["-n"][..], 1),
        (&["--nonblock", "-E", "75"][..], 75),
        (&["--timeout", "0.2"][..], 1),
        (&["-w", "0"][..], 1),
    ] {
        let o = bin()
            .arg("run")
            .args(extra)
            .args([p(&path), "--", "echo", "ran"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(want), "{extra:?}: {err}");
        assert_eq!(stdout(&o), "", "{extra:?}: COMMAND ran");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("still hold its tree beacon"), "{err}");
        assert!(
            err.contains(&format!("see `fuser -v {}`", p(&path))),
            "{err}"
        );
        assert!(err.contains("COMMAND not run"), "{err}");
        // The lock was released cleanly: nothing ran, nothing broke.
        assert_eq!(json_status(&path).0["state"], "unlocked");
    }
    drop(held);
    let o = cli(&["run", "-n", p(&path), "--", "echo", "ran"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "ran\n".into()));
}

#[test]
#[cfg_attr(
    any(not_root, no_pidns),
    ignore = "needs root allowed a PID namespace (unshare --pid) for --kill-tree"
)]
fn a_kill_tree_holder_read_locks_the_beacon_until_its_tree_is_gone() {
    let (_dir, path) = temp_path("l");
    // COMMAND prints its outer pid (`$$` is namespace-local).
    let script = "read -r p rest < /proc/self/stat; echo $p; echo ready; exec sleep 1000";
    let mut h = Holder::start_script(&path, &["--kill-tree"], script);
    assert_eq!(beacon_holder(&path), libc::F_RDLCK);
    h.kill_run();
    let c = h.command_pid;
    eventually("the tree gone", || pid_gone(c));
    eventually("the beacon free", || beacon_holder(&path) == libc::F_UNLCK);
    // A plain holder has none.
    let _h = Holder::start(&path, &[]);
    assert_eq!(beacon_holder(&path), libc::F_UNLCK);
}

#[test]
#[cfg_attr(
    any(not_root, no_pidns, no_setpriv, no_unpriv_userns),
    ignore = "needs root (a mount namespace), setpriv(1) and unprivileged user namespaces"
)]
fn kill_tree_never_runs_command_in_a_half_made_user_namespace() {
    // As on Ubuntu 24.04 (apparmor_restrict_unprivileged_userns): a user
    // namespace may be made, but its maps may not be written. Here /proc is
    // read-only (in a mount namespace of the test's), for uid 65534.
    let (dir, exe) = world_dir_with_exe();
    let path = dir.path().join("l");
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -o remount,bind,ro /proc && \
             exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$0\" \"$@\"",
        )
        .arg(&exe)
        .args(["run", "--kill-tree", p(&path), "--"])
        .args(["readlink", "/proc/self/ns/user"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no PID namespace can be made here"), "{err}");
    assert!(err.contains("/proc/self/"), "names the step: {err}");
    assert_eq!(
        stdout(&o).trim(),
        ours.to_str().unwrap(),
        "COMMAND ran in a new user namespace"
    );
}

#[test]
#[cfg_attr(
    any(not_root, no_pidns),
    ignore = "needs root allowed a PID namespace (unshare --pid, nsenter) for --kill-tree"
)]
fn a_killed_runs_beacon_stays_until_its_namespace_is_gone() {
    // A process of the namespace that has not finished exiting when the
    // namespace is killed (as one in uninterruptible I/O would): here a
    // child that `nsenter` put there, which stays unreaped while `nsenter`
    // is stopped, so the namespace's init cannot be reaped either. The
    // beacon must stay held until then, though COMMAND and the init are
    // gone and have closed theirs.
    let (_dir, path) = temp_path("l");
    let script = "read -r p rest < /proc/self/stat; echo $p; echo ready; exec sleep 1000";
    let mut h = Holder::start_script(&path, &["--kill-tree"], script);
    let mut inside = Command::new("nsenter");
    inside
        .args(["-t", &h.command_pid.to_string(), "--pid", "--"])
        .args(["sh", "-c", "echo in; exec sleep 1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut nsenter = inside.spawn().unwrap();
    let mut out = BufReader::new(nsenter.stdout.take().unwrap());
    let nsenter = Proc(nsenter);
    assert_eq!(line(&mut out), "in");
    signal(nsenter.0.id(), libc::SIGSTOP);
    // Stopped for real (a waking `nsenter` could still reap its child).
    let stat = format!("/proc/{}/stat", nsenter.0.id());
    eventually("nsenter stopped", || {
        std::fs::read_to_string(&stat)
            .unwrap()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    });
    h.kill_run();
    let c = h.command_pid;
    eventually("COMMAND gone", || pid_gone(c));
    assert_eq!(
        beacon_holder(&path),
        libc::F_RDLCK,
        "the beacon dropped while the namespace still had a process"
    );
    signal(nsenter.0.id(), libc::SIGCONT);
    eventually("the beacon free", || beacon_holder(&path) == libc::F_UNLCK);
}
