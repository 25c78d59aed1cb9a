//! Black-box tests of the `robust-mutex` binary: real processes, real
//! SIGKILLs, synchronised through the children's output and the lock's own
//! state (polled), never by sleeping for a fixed time.

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
        let mut run = bin()
            .arg("run")
            .args(extra)
            .arg(path)
            .args(["--", "sh", "-c", "echo $$; echo ready; exec sleep 1000"])
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

#[test]
fn run_runs_the_command_and_passes_its_status_through() {
    let (dir, path) = temp_path("l");
    let o = cli(&["run", p(&path), "--", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(o.stdout, b"hi\n");
    assert_eq!(o.stderr, b"");
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("unlocked"), 0));
    assert_eq!(v["file"]["mode"], "0600", "created like flock(1) does");

    // An outer recovery's variables never leak into a clean run.
    let o = bin()
        .args(["run", p(&path), "--", "sh", "-c"])
        .arg("echo ${ROBUST_MUTEX_OWNER_DIED:-0} ${ROBUST_MUTEX_PREVIOUS_OWNER_PID:-none}")
        .env("ROBUST_MUTEX_OWNER_DIED", "1")
        .env("ROBUST_MUTEX_PREVIOUS_OWNER_PID", "42")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "0 none\n");

    // --mode for a file `run` creates; a timeout too long to represent is
    // "for ever", not a crash.
    let shared = dir.path().join("shared");
    let o = cli(&[
        "run",
        "--mode",
        "0660",
        "--timeout",
        "1e30",
        p(&shared),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777,
        0o660
    );
}

#[test]
fn nonblock_against_a_holder_exits_1_naming_the_holder() {
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &["--label", "nightly backup"]);
    let o = cli(&["run", "--nonblock", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("pid {}", h.pid())), "{err}");
    assert!(err.contains("nightly backup"), "{err}");
    assert!(err.contains("held by") && err.contains(" for "), "{err}");
    assert!(err.contains(p(&path)), "{err}");
    let o = cli(&["run", "-n", "-E", "75", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(75));
    let o = cli(&["run", "--timeout", "0", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(1), "--timeout 0 tries once");
}

#[test]
fn timeout_returns_after_the_timeout_within_a_sane_margin() {
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &[]);
    let t = Instant::now();
    let o = cli(&["run", "--timeout", "0.2", p(&path), "--", "true"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("pid {}", h.pid())));
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_sigkilled_run_takes_its_command_along_and_the_next_run_recovers() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    let run_pid = h.pid();
    h.kill_run();
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
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("1 {run_pid}"));
    assert!(stderr(&o).contains("recovery"), "{}", stderr(&o));
    // Recovered: the next run is clean.
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo ${ROBUST_MUTEX_OWNER_DIED:-0}",
    ]);
    assert_eq!(stdout(&o).trim(), "0");
    let v = json_status(&path).0;
    assert_eq!(v["counters"]["owner_deaths"], 1);
    assert_eq!(v["counters"]["recoveries"], 1);
}

#[test]
fn a_command_killed_by_a_signal_hands_the_lock_on_as_owner_dead() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    signal(h.command_pid as u32, libc::SIGKILL);
    assert_eq!(h.run.wait_exit().code(), Some(128 + libc::SIGKILL));
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("owner-dead"), 2));
    assert_eq!(v["owner"]["pid"], h.pid());
    assert_eq!(v["owner"]["alive"], false);
    assert_eq!(v["owner"]["cmdline"], serde_json::Value::Null);
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo $ROBUST_MUTEX_OWNER_DIED",
    ]);
    assert_eq!(stdout(&o).trim(), "1");
}

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
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo $ROBUST_MUTEX_OWNER_DIED",
    ]);
    assert_eq!(stdout(&o).trim(), "1", "the next locker recovers");
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
fn a_recovery_command_that_cannot_run_leaves_the_owner_death_for_the_next() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    h.kill_run();
    let o = cli(&["run", p(&path), "--", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(json_status(&path).0["state"], "owner-dead");
    let o = cli(&[
        "run",
        p(&path),
        "--",
        "sh",
        "-c",
        "echo $ROBUST_MUTEX_OWNER_DIED",
    ]);
    assert_eq!(stdout(&o).trim(), "1");
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
    let o = cli(&[
        "run",
        p(&stuck),
        "--",
        "sh",
        "-c",
        "echo $ROBUST_MUTEX_OWNER_DIED",
    ]);
    assert_eq!(stdout(&o).trim(), "1");
    assert_eq!(json_status(&stuck).0["state"], "unlocked");
}

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
    assert_eq!(v["file"]["version"], 1);
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
fn watch_prints_each_transition() {
    let (_dir, path) = temp_path("l");
    cli(&["create", p(&path)]);
    let mut w = Watch::start(&[
        "--interval",
        "5",
        "--until-state",
        "not-recoverable",
        p(&path),
    ]);
    assert_eq!(w.expect("unlocked", |l| l == "unlocked"), "unlocked");
    let mut h = Holder::start(&path, &["--label", "w"]);
    let locked = format!("locked pid {} tid ", h.pid());
    w.expect("the holder", |l| {
        l.starts_with(&locked) && l.ends_with(" (w)")
    });
    h.kill_run();
    let dead = format!("owner-dead pid {} tid ", h.pid());
    w.expect("the owner death", |l| l.starts_with(&dead));
    cli(&["run", p(&path), "--", "false"]);
    w.expect("not-recoverable", |l| l == "not-recoverable");
    assert_eq!(w.proc.wait_exit().code(), Some(0), "--until-state ends it");
}

#[test]
fn watch_follows_a_reset_a_removal_and_a_new_file() {
    let (_dir, path) = temp_path("l");
    make_not_recoverable(&path);
    let mut w = Watch::start(&["--interval", "5", p(&path)]);
    w.expect("not-recoverable", |l| l == "not-recoverable");
    assert_eq!(cli(&["reset", p(&path)]).status.code(), Some(0));
    w.expect("the replacement", |l| l == "replaced: generation 2");
    w.expect("owner-dead", |l| l.starts_with("owner-dead"));
    assert_eq!(cli(&["remove", p(&path)]).status.code(), Some(0));
    w.expect("the removal", |l| l == "removed");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    w.expect("the new file", |l| l == "created: generation 1");
    w.expect("unlocked", |l| l == "unlocked");
}

#[test]
fn watch_stops_quietly_when_its_reader_goes_away() {
    let (_dir, path) = temp_path("l");
    cli(&["create", p(&path)]);
    let mut w = Watch::start(&["--interval", "5", p(&path)]);
    w.expect("unlocked", |l| l == "unlocked");
    let mut err = w.proc.0.stderr.take().unwrap();
    drop(w.out); // the reader goes away, like `| head -1`
    let _h = Holder::start(&path, &[]); // a change to print
    let st = w.proc.wait_exit();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut err, &mut text).unwrap();
    assert_eq!((st.code(), text.as_str()), (Some(0), ""), "no panic");
}

#[test]
fn signals_abandon_a_wait_and_are_forwarded_to_the_command() {
    // SIGINT abandons a wait.
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &[]);
    let waiter = bin()
        .args(["run", p(&path), "--", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiter = Proc(waiter);
    wait_for_waiter(&path);
    signal(waiter.0.id(), libc::SIGINT);
    let st = waiter.wait_exit();
    let mut err = String::new();
    std::io::Read::read_to_string(waiter.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(130), "{err}");
    assert!(err.contains("wait abandoned on SIGINT"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        json_status(&path).0["owner"]["pid"],
        h.pid(),
        "still the holder's"
    );
    drop(h);

    // SIGTERM reaches COMMAND, which handles it and exits: a clean release.
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(run.stdout.take().unwrap());
    let mut run = Proc(run);
    assert_eq!(line(&mut out), "ready");
    signal(run.0.id(), libc::SIGTERM);
    assert_eq!(line(&mut out), "got-term");
    assert_eq!(run.wait_exit().code(), Some(3));
    assert_eq!(json_status(&path2).0["state"], "unlocked");

    // SIGINT reaches a COMMAND that does not handle it: it dies mid-work,
    // so the lock is handed on in the owner-died state.
    let mut h = Holder::start(&path2, &[]);
    signal(h.pid(), libc::SIGINT);
    assert_eq!(h.run.wait_exit().code(), Some(130));
    assert!(pid_gone(h.command_pid));
    assert_eq!(json_status(&path2).0["state"], "owner-dead");
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
fn bad_input_gets_a_clear_error_and_never_creates_or_changes_a_file() {
    let (dir, path) = temp_path("missing");
    for args in [
        vec!["status", p(&path)],
        vec!["status", "--json", p(&path)],
        vec!["watch", "--count", "1", p(&path)],
        vec!["reset", p(&path)],
        vec!["reset", "--force", p(&path)],
        vec!["remove", p(&path)],
        vec!["run", "--no-create", p(&path), "--", "true"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(66), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(p(&path)), "names the path: {err}");
        assert!(err.contains("no such file"), "names the cause: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    assert!(!path.exists());

    // Someone else's file, and a symlink to it: untouched.
    let data = dir.path().join("data");
    std::fs::write(&data, b"precious data\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let before = snapshot(&data);
    for f in [&data, &link] {
        for args in [
            vec!["status", p(f)],
            vec!["watch", p(f)],
            vec!["run", p(f), "--", "true"],
            vec!["run", "--no-create", p(f), "--", "true"],
            vec!["reset", p(f)],
            vec!["reset", "--force", p(f)],
            vec!["remove", p(f)],
            vec!["remove", "--force", p(f)],
            vec!["create", p(f)],
        ] {
            let o = cli(&args);
            let want = if args[0] == "create" { 73 } else { 65 };
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(want), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains(p(f)), "names the path: {err}");
            assert_eq!(snapshot(&data), before, "{args:?} changed the file");
        }
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

    // Bad modes: a usage error, and no file.
    let m = dir.path().join("m");
    for bad in ["0999", "0400", "abc", "17777"] {
        for args in [
            vec!["create", "--mode", bad, p(&m)],
            vec!["run", "--mode", bad, p(&m), "--", "true"],
        ] {
            let o = cli(&args);
            assert_eq!(o.status.code(), Some(64), "{args:?}");
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
            assert!(!m.exists(), "{args:?}");
        }
    }
    assert_eq!(cli(&["create", p(&m)]).status.code(), Some(0));
    let o = cli(&["create", p(&m)]);
    assert_eq!(o.status.code(), Some(73));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = cli(&["create", p(&dir.path().join("no/such/dir/x"))]);
    assert_eq!(o.status.code(), Some(73), "{}", stderr(&o));

    // COMMANDs that cannot run: as shells do, and the lock is released.
    let o = cli(&["run", p(&m), "--", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("/no/such/command"), "{}", stderr(&o));
    let script = dir.path().join("not-executable");
    std::fs::write(&script, b"#!/bin/sh\necho never\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cli(&["run", p(&m), "--", p(&script)]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let (v, _) = json_status(&m);
    assert_eq!(v["state"], "unlocked", "the lock was released");

    // Usage errors: one line, exit 64.
    for args in [
        vec!["bogus"],
        vec!["run", p(&m)],
        vec!["run", "--bogus", p(&m), "--", "true"],
        vec!["run", "--timeout", "-1", p(&m), "--", "true"],
        vec!["run", "--timeout", "soon", p(&m), "--", "true"],
        vec!["run", "-n", "--timeout", "1", p(&m), "--", "true"],
        vec!["run", "--conflict-exit-code", "256", p(&m), "--", "true"],
        vec!["watch", "--interval", "0", p(&m)],
        vec!["watch", "--until-state", "dizzy", p(&m)],
        vec!["status"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    // Help everywhere, with examples.
    for sub in ["run", "status", "watch", "create", "remove", "reset"] {
        let o = cli(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub}");
        assert!(stdout(&o).contains("Examples:"), "{sub}: {}", stdout(&o));
    }
    let o = cli(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit codes:"));

    assert_eq!(cli(&["remove", p(&m)]).status.code(), Some(0));
    assert!(!m.exists());
}
