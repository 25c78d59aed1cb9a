//! Black-box tests of the `robust-mutex` binary: real processes, real
//! SIGKILLs, synchronised through the children's output and the lock's own
//! state, never by sleeping.

mod common;

use common::{snapshot, temp_path};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_robust-mutex"))
}

fn cli(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A `run` holding the lock while its COMMAND prints its pid and "ready".
struct Holder {
    run: Child,
    /// Kept open, so COMMAND's stdout stays a valid pipe.
    _out: BufReader<ChildStdout>,
    command_pid: i32,
}

impl Holder {
    fn start(path: &Path, extra: &[&str]) -> Holder {
        let mut run = bin()
            .arg("run")
            .args(extra)
            .arg(path)
            .args(["--", "sh", "-c", "echo $$; echo ready; exec sleep 1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(run.stdout.take().unwrap());
        let command_pid = line(&mut out).parse().unwrap();
        assert_eq!(line(&mut out), "ready");
        Holder {
            run,
            _out: out,
            command_pid,
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.run.kill();
        let _ = self.run.wait();
        // SAFETY: kill(2) on a pid we started; harmless if it is gone.
        unsafe { libc::kill(self.command_pid, libc::SIGKILL) };
    }
}

fn line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    assert!(r.read_line(&mut s).unwrap() > 0, "unexpected end of output");
    s.trim_end().to_owned()
}

fn json_status(path: &Path) -> (serde_json::Value, i32) {
    let o = cli(&["status", "--json", p(path)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    (v, o.status.code().unwrap())
}

fn pid_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) != 0 }
}

/// Waits (bounded) for a condition that another process will make true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::yield_now();
    }
}

/// Waits until some process sleeps on the lock word (FUTEX_WAITERS).
fn wait_for_waiter(path: &Path) {
    let m = robust_mutex::OpenOptions::new()
        .open_lock_only(path)
        .unwrap();
    eventually("a waiter", || m.status().lock_word & 0x8000_0000 != 0);
}

#[test]
fn run_runs_the_command_and_passes_its_status_through() {
    let (_dir, path) = temp_path("l");
    let o = cli(&["run", p(&path), "--", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(o.stdout, b"hi\n");
    assert_eq!(json_status(&path).0["state"], "unlocked");
}

#[test]
fn nonblock_against_a_holder_exits_1_naming_the_holder() {
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &["--label", "nightly backup"]);
    let o = cli(&["run", "--nonblock", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("pid {}", h.run.id())), "{err}");
    assert!(err.contains("nightly backup"), "{err}");
    let o = cli(&["run", "-n", "-E", "75", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(75));
}

#[test]
fn timeout_returns_after_the_timeout_within_a_sane_margin() {
    let (_dir, path) = temp_path("l");
    let _h = Holder::start(&path, &[]);
    let t = Instant::now();
    let o = cli(&["run", "--timeout", "0.2", p(&path), "--", "true"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1));
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_sigkilled_run_takes_its_command_along_and_the_next_run_recovers() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    let run_pid = h.run.id();
    h.run.kill().unwrap();
    h.run.wait().unwrap();
    let cmd = h.command_pid;
    eventually("COMMAND killed by PR_SET_PDEATHSIG", || pid_gone(cmd));
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo $ROBUST_MUTEX_OWNER_DIED $ROBUST_MUTEX_PREVIOUS_OWNER_PID",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("1 {run_pid}")
    );
    // Recovered: the next run is clean.
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo ${ROBUST_MUTEX_OWNER_DIED:-0}",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
}

#[test]
fn a_failed_recovery_leaves_it_not_recoverable_and_reset_brings_it_back() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    h.run.kill().unwrap();
    h.run.wait().unwrap();
    let o = cli(&["run", p(&path), "--", "sh", "-c", "exit 1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not recoverable") && err.contains("reset"),
        "{err}"
    );
    assert_eq!(json_status(&path).1, 2);
    assert_eq!(json_status(&path).0["state"], "not-recoverable");
    let o = cli(&["run", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(69));

    let o = cli(&["reset", p(&path)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo $ROBUST_MUTEX_OWNER_DIED",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("unlocked"), 0));
    assert_eq!(v["counters"]["resets"], 1);
    // A healthy mutex is reset only with --force.
    assert_eq!(cli(&["reset", p(&path)]).status.code(), Some(1));
    assert_eq!(cli(&["reset", "--force", p(&path)]).status.code(), Some(0));
}

#[test]
fn status_json_shows_each_state_with_its_exit_code() {
    let (_dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let (v, c) = json_status(&path);
    assert_eq!(
        (v["state"].as_str(), c, &v["owner"]),
        (Some("unlocked"), 0, &serde_json::Value::Null)
    );

    let mut h = Holder::start(&path, &["--label", "L"]);
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("locked"), 1));
    assert_eq!(v["owner"]["pid"], h.run.id());
    assert_eq!(v["owner"]["label"], "L");
    assert!(v["owner"]["tid"].as_u64().unwrap() > 0);
    assert!(v["counters"]["acquisitions"].as_u64().unwrap() >= 1);

    h.run.kill().unwrap();
    h.run.wait().unwrap();
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("owner-dead"), 2));

    cli(&["run", p(&path), "--", "false"]);
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("not-recoverable"), 2));
    let human = cli(&["status", p(&path)]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("robust-mutex reset"));
}

#[test]
fn watch_prints_each_transition() {
    let (_dir, path) = temp_path("l");
    cli(&["create", p(&path)]);
    let mut w = bin()
        .args(["watch", "--interval", "5", "--count", "3", p(&path)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(w.stdout.take().unwrap());
    assert!(line(&mut out).ends_with(" unlocked"));
    let mut h = Holder::start(&path, &["--label", "w"]);
    let l = line(&mut out);
    assert!(l.contains(" locked pid ") && l.ends_with("(w)"), "{l}");
    h.run.kill().unwrap();
    h.run.wait().unwrap();
    let l = line(&mut out);
    assert!(l.contains(" owner-dead pid "), "{l}");
    assert!(w.wait().unwrap().success());
}

#[test]
fn sigint_abandons_a_wait_and_sigterm_is_forwarded_to_the_command() {
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &[]);
    let waiter = bin()
        .args(["run", p(&path), "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_waiter(&path);
    // SAFETY: signals a child we started.
    unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) };
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wait abandoned"));
    assert_eq!(
        json_status(&path).0["owner"]["pid"],
        h.run.id(),
        "still the holder's"
    );
    drop(h);

    let (_dir2, path2) = temp_path("l2");
    let mut run = bin()
        .args([
            "run",
            p(&path2),
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(run.stdout.take().unwrap());
    assert_eq!(line(&mut out), "ready");
    // SAFETY: signals a child we started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    assert_eq!(line(&mut out), "got-term");
    assert_eq!(run.wait().unwrap().code(), Some(3));
    assert_eq!(json_status(&path2).0["state"], "unlocked");
}

#[test]
fn bad_input_gets_a_clear_error_and_never_creates_or_changes_a_file() {
    let (dir, path) = temp_path("missing");
    for args in [
        vec!["status", p(&path)],
        vec!["watch", "--count", "1", p(&path)],
        vec!["reset", p(&path)],
        vec!["remove", p(&path)],
        vec!["run", "--no-create", p(&path), "--", "true"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(66), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(p(&path)), "names the path: {err}");
    }
    assert!(!path.exists());

    let data = dir.path().join("data");
    std::fs::write(&data, b"precious data\n").unwrap();
    let before = snapshot(&data);
    for args in [
        vec!["status", p(&data)],
        vec!["run", p(&data), "--", "true"],
        vec!["reset", "--force", p(&data)],
        vec!["remove", p(&data)],
    ] {
        let o = cli(&args);
        assert_eq!(
            o.status.code(),
            Some(65),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(snapshot(&data), before, "{args:?} changed the file");
    }

    let m = dir.path().join("m");
    for bad in ["0999", "0400", "abc"] {
        let o = cli(&["create", "--mode", bad, p(&m)]);
        assert_eq!(o.status.code(), Some(64), "{bad}");
        assert!(!m.exists());
    }
    assert_eq!(cli(&["create", p(&m)]).status.code(), Some(0));
    assert_eq!(cli(&["create", p(&m)]).status.code(), Some(73));

    let o = cli(&["run", p(&m), "--", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(
        json_status(&m).0["state"],
        "unlocked",
        "the lock was released"
    );
    assert_eq!(cli(&["bogus"]).status.code(), Some(64));
    assert_eq!(cli(&["run", p(&m)]).status.code(), Some(64), "no COMMAND");
    assert_eq!(cli(&["--help"]).status.code(), Some(0));
    assert_eq!(cli(&["remove", p(&m)]).status.code(), Some(0));
    assert!(!m.exists());
}
