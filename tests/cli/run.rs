//! `robust-mutex run`: the command runs under the lock, its status passes
//! through; holders, timeouts, owner deaths, recovery commands, signals.

use crate::*;

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
    assert_eq!(run_sees_owner_died(&path), "0");
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
    assert_eq!(run_sees_owner_died(&path), "1");
}

#[test]
fn a_recovery_command_that_cannot_run_leaves_the_owner_death_for_the_next() {
    let (_dir, path) = temp_path("l");
    let mut h = Holder::start(&path, &[]);
    h.kill_run();
    let o = cli(&["run", p(&path), "--", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(json_status(&path).0["state"], "owner-dead");
    assert_eq!(run_sees_owner_died(&path), "1");
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
