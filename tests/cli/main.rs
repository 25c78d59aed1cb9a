//! Black-box tests of the `robust-mutex` binary: real processes, real
//! SIGKILLs, synchronised through the children's output and the lock's own
//! state (polled), never by sleeping for a fixed time. One module per
//! subcommand (`run`, `status`, `watch`, `admin` for `reset` and `remove`),
//! and `bad_input` for all of them; this file holds the helpers they share.

mod admin;
mod bad_input;
mod beacon;
mod containers;
mod full_disk;
mod hints;
mod kill_tree;
mod labels;
mod run;
mod status;
mod truncation;
mod watch;

#[path = "../common/small_fs.rs"]
mod small_fs;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a condition that another process will make true may take before
/// the test fails. Only a bound for failures: passing tests never wait it out.
const PATIENCE: Duration = Duration::from_secs(20);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_robust-mutex"))
}

fn cli(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// A child process that is killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the process never exited");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A `run` holding the lock while its COMMAND prints its pid and "ready"
/// and sleeps.
struct Holder {
    run: Proc,
    /// Kept open, so that COMMAND's stdout stays a valid pipe.
    _out: BufReader<ChildStdout>,
    command_pid: i32,
}

impl Holder {
    fn start(path: &Path, extra: &[&str]) -> Holder {
        Holder::start_script(path, extra, "echo $$; echo ready; exec sleep 1000")
    }

    /// A `run` of `sh -c script` that prints a pid, then "ready", and holds
    /// on; the pid is killed when the Holder drops.
    fn start_script(path: &Path, extra: &[&str], script: &str) -> Holder {
        let mut run = bin()
            .arg("run")
            .args(extra)
            .arg(path)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(run.stdout.take().unwrap());
        let run = Proc(run);
        let command_pid = line(&mut out).parse().unwrap();
        assert_eq!(line(&mut out), "ready");
        Holder {
            run,
            _out: out,
            command_pid,
        }
    }

    fn pid(&self) -> u32 {
        self.run.0.id()
    }

    /// SIGKILLs `run` (not COMMAND) and reaps it.
    fn kill_run(&mut self) {
        self.run.0.kill().unwrap();
        self.run.0.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // `run` is killed by `Proc`'s drop; COMMAND by PR_SET_PDEATHSIG, and
        // here too in case the test got that wrong.
        // SAFETY: kill(2) on a pid we started; harmless if it is gone.
        unsafe { libc::kill(self.command_pid, libc::SIGKILL) };
    }
}

fn line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    assert!(r.read_line(&mut s).unwrap() > 0, "unexpected end of output");
    s.trim_end().to_owned()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// `run [extra] PATH -- sh -c script`, its output.
fn run_sh(path: &Path, extra: &[&str], script: &str) -> Output {
    bin()
        .arg("run")
        .args(extra)
        .args([p(path), "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What a `run` on `path` is told: `"1"` if the previous holder died
/// (`ROBUST_MUTEX_OWNER_DIED` set for its command), else `"0"`.
fn run_sees_owner_died(path: &Path) -> String {
    let o = cli(&[
        "run",
        p(path),
        "--",
        "sh",
        "-c",
        "echo ${ROBUST_MUTEX_OWNER_DIED:-0}",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// Runs the binary as uid and gid `uid`, with `args` (root only).
fn cli_as(uid: u32, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    bin()
        .args(args)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// An empty file of mode 0400: what a creator that crashed right after
/// `O_CREAT` leaves.
fn abandoned_creation(path: &Path) {
    std::fs::File::create(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
}

fn json_status(path: &Path) -> (serde_json::Value, i32) {
    let o = cli(&["status", "--json", p(path)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {} {}", stdout(&o), stderr(&o)));
    (v, o.status.code().unwrap())
}

/// Gone, or a zombie (exited, not yet reaped by its new parent).
fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A world-usable directory with a copy of the program in it (the build
/// directory may be closed to uid 65534): the directory and the copy.
fn world_dir_with_exe() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = dir.path().join("robust-mutex");
    // Copied by cp(1), not here: a child forked meanwhile by another test
    // would inherit our writable descriptor of the copy, and executing it
    // would fail with ETXTBSY.
    let copied = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_robust-mutex"))
        .arg(&exe)
        .status()
        .unwrap();
    assert!(copied.success());
    (dir, exe)
}

/// Polls (bounded) for a condition that another process will make true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until some process sleeps on the lock (FUTEX_WAITERS in the word).
fn wait_for_waiter(path: &Path) {
    eventually("a waiter", || {
        json_status(path).0["lock_word"]
            .as_u64()
            .is_some_and(|w| w & 0x8000_0000 != 0)
    });
}

/// Everything about a file that a command must not change.
fn snapshot(path: &Path) -> (Vec<u8>, u32, i64, i64, u64) {
    let md = std::fs::symlink_metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        md.mode(),
        md.mtime(),
        md.mtime_nsec(),
        md.ino(),
    )
}

/// A `watch` whose lines are read one by one.
struct Watch {
    proc: Proc,
    out: BufReader<ChildStdout>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = bin()
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Watch {
            proc: Proc(child),
            out,
        }
    }

    /// Reads lines until one (without its timestamp) satisfies `want`;
    /// returns it. Lines in between (a transient state the poll happened to
    /// see) are allowed, within reason.
    fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let l = line(&mut self.out);
            let (ts, rest) = l.split_once(' ').expect("a timestamp, then the event");
            assert!(
                ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "not an RFC 3339 UTC timestamp: {l}"
            );
            if want(rest) {
                return rest.to_owned();
            }
            seen.push(l);
        }
        panic!("no line with {what}; saw {seen:#?}");
    }
}

/// Makes `path` not recoverable: a holder dies, its successor's recovery fails.
fn make_not_recoverable(path: &Path) {
    let mut h = Holder::start(path, &[]);
    h.kill_run();
    let o = cli(&["run", p(path), "--", "false"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}
