//! The `status` subcommand: read a lock's state without locking it and
//! without writing anything (the library's read-only
//! [`inspect_file`](robust_mutex::inspect_file)), and show it as text or one
//! line of JSON.
//!
//! Reading and rendering are apart: [`observe`] gathers the facts that the
//! library's snapshot lacks (the holder's liveness and command line, the
//! time), and [`render_text`] and [`render_json`] are pure functions of the
//! library's [`Status`] (or [`SemaphoreStatus`]), [`FileInfo`] and those
//! facts.

use crate::exit::{Op, code, fail, state_code};
use crate::format::{emit, escape, human, path_text, rfc3339, warn};
use robust_mutex::{
    FileInfo, Inspected, Inspection, LockState, OwnerInfo, SemaphoreStatus, Status,
};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `status`: prints the state of PATH as text or JSON; the exit code tells
/// the state (0 unlocked, 1 locked, 2 broken). Only reads.
pub(crate) fn status(path: &Path, json: bool) -> Result<u8, u8> {
    let i = match robust_mutex::inspect_file(path) {
        Ok(i) => i,
        Err(e) => {
            if json && matches!(e, robust_mutex::Error::BeingCreated { .. }) {
                // A JSON reader gets an object for this answer too (exit 75).
                let v = serde_json::json!({"path": path.display().to_string(), "state": "being-created"});
                let _ = emit(&format!("{v}\n"));
            }
            return Err(fail(&e, Op::Status, path));
        }
    };
    let text = render(&i, path, json);
    match emit(&text) {
        Ok(()) => {}
        // The reader went away (e.g. `| grep -q`): the exit status still tells.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            warn(format_args!(
                "status {}: writing the output: {e}",
                path_text(path)
            ));
            return Err(code::IO);
        }
    }
    Ok(state_code(i.lock.state()))
}

/// What `status` prints for `i`, a look at `path`.
fn render(i: &Inspection, path: &Path, json: bool) -> String {
    let holders: Vec<&OwnerInfo> = match &i.lock {
        Inspected::Mutex(s) => s.owner.iter().collect(),
        Inspected::Semaphore(s) => s.permits.iter().filter_map(|p| p.owner.as_ref()).collect(),
        _ => Vec::new(),
    };
    let state = i.lock.state();
    let facts = observe(path, i, &holders);
    match (&i.lock, &i.file) {
        (Inspected::Mutex(s), Some(info)) if json => {
            format!("{}\n", render_json(s, info, &facts))
        }
        (Inspected::Mutex(s), Some(info)) => render_text(s, info, &facts),
        (Inspected::Mutex(s), None) if json => {
            format!("{}\n", render_bare_json(s, &facts))
        }
        (Inspected::Mutex(s), None) => render_bare_text(s, &facts),
        (Inspected::Semaphore(s), info) if json => {
            format!(
                "{}\n",
                render_semaphore_json(s, state, info.as_ref(), &facts)
            )
        }
        (Inspected::Semaphore(s), info) => render_semaphore_text(s, state, info.as_ref(), &facts),
        // A kind this build does not know how to show in detail.
        _ if json => format!(
            "{}\n",
            serde_json::json!({"path": path.display().to_string(), "state": state.as_str()})
        ),
        _ => format!("{}: {state}\n", path_text(path)),
    }
}

/// What `status` shows besides the library's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// PATH as given.
    pub(crate) path: PathBuf,
    /// The file's permission bits.
    pub(crate) mode: u32,
    /// The file's owner.
    pub(crate) uid: u32,
    /// The moment the holder's tenure is measured to.
    pub(crate) now: SystemTime,
    /// Whether the holder's process still runs (same pid and start time).
    pub(crate) owner_alive: bool,
    /// The holder's command line, only while it runs.
    pub(crate) owner_cmdline: Option<String>,
}

/// Gathers the [`Facts`] about the file `i` looked at and its first holder
/// (of `holders`): a look at /proc, and the clock.
fn observe(path: &Path, i: &Inspection, holders: &[&OwnerInfo]) -> Facts {
    let first = holders.first().copied();
    let owner_alive = first.is_some_and(OwnerInfo::is_alive);
    Facts {
        path: path.to_path_buf(),
        mode: i.mode,
        uid: i.uid,
        now: SystemTime::now(),
        owner_alive,
        owner_cmdline: first.filter(|_| owner_alive).and_then(cmdline),
    }
}

/// The owner's command line from /proc. Only asked while that very process
/// runs (same pid and start time): a dead owner's pid may belong to someone
/// else.
fn cmdline(o: &OwnerInfo) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{}/cmdline", o.pid)).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!raw.is_empty()).then(|| join_args(&parts))
}

/// Arguments joined by spaces, as a shell would read them back: one that
/// is empty or holds white space or a quote is single-quoted
/// (`'` as `'\''`).
fn join_args(parts: &[String]) -> String {
    let quoted: Vec<String> = parts
        .iter()
        .map(|a| {
            if !a.is_empty() && !a.contains(|c: char| c.is_whitespace() || "'\"".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect();
    quoted.join(" ")
}

/// How long `o` has held the lock at `now` (zero if the clock went back).
fn held_for(o: &OwnerInfo, now: SystemTime) -> Duration {
    now.duration_since(o.acquired_at).unwrap_or_default()
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The status as one JSON object; its keys are listed in `status --help`.
pub(crate) fn render_json(s: &Status, info: &FileInfo, f: &Facts) -> serde_json::Value {
    serde_json::json!({
        "path": f.path.display().to_string(),
        "state": s.state.as_str(),
        "owner": s.owner.as_ref().map(|o| owner_json(o, f, true)),
        "counters": counters_json(&s.counters),
        "lock_word": s.lock_word,
        "file": file_json(info, f),
    })
}

/// The first line, the holder's and what comes next.
fn state_and_holder(s: &Status, f: &Facts) -> String {
    let path = path_text(&f.path);
    let mut t = format!("{path}: {}\n", s.state);
    if let Some(o) = &s.owner {
        let role = match s.state {
            LockState::Locked => "holder",
            _ => "dead holder",
        };
        t += &format!(
            "  {role}: pid {}, tid {}{}, took it {} ago ({})\n",
            o.pid,
            o.tid,
            label_part(&o.label),
            human(held_for(o, f.now)),
            rfc3339(o.acquired_at)
        );
        if let Some(cl) = &f.owner_cmdline {
            t += &format!("  command: {}\n", escape(cl));
        }
    }
    match s.state {
        LockState::OwnerDead => t += "  next: the next locker runs its recovery\n",
        LockState::NotRecoverable | LockState::Stuck => {
            t += &format!("  repair: robust-mutex reset {path}\n");
        }
        _ => {}
    }
    t
}

/// The status as lines of text for a person, ending in a newline.
pub(crate) fn render_text(s: &Status, info: &FileInfo, f: &Facts) -> String {
    let mut t = state_and_holder(s, f);
    t += &counters_line(&s.counters);
    t += &file_lines(info, f);
    t
}

/// A holder in JSON: `alive` and `cmdline` from `f` for the first holder,
/// looked up for the others.
fn owner_json(o: &OwnerInfo, f: &Facts, first: bool) -> serde_json::Value {
    let (alive, cmdline) = if first {
        (f.owner_alive, f.owner_cmdline.clone())
    } else {
        let alive = o.is_alive();
        (alive, if alive { cmdline(o) } else { None })
    };
    serde_json::json!({
        "pid": o.pid,
        "tid": o.tid,
        "label": o.label,
        "alive": alive,
        "cmdline": cmdline,
        "acquired_at": rfc3339(o.acquired_at),
        "acquired_at_unix": unix_secs(o.acquired_at),
        "held_for_secs": held_for(o, f.now).as_secs_f64(),
    })
}

/// The counters as JSON.
fn counters_json(s: &robust_mutex::Counters) -> serde_json::Value {
    serde_json::json!({
        "acquisitions": s.acquisitions,
        "contended": s.contended,
        "owner_deaths": s.owner_deaths,
        "recoveries": s.recoveries,
        "resets": s.resets,
    })
}

/// The header's facts and the file's mode and owner as JSON.
fn file_json(info: &FileInfo, f: &Facts) -> serde_json::Value {
    serde_json::json!({
        "version": info.version,
        "kind": info.kind.as_str(),
        "abi": info.abi,
        "generation": info.generation,
        "value_size": info.value_size,
        "created_at": rfc3339(info.created_at),
        "boot_id_matches": info.boot_id_matches,
        "mode": format!("{:04o}", f.mode),
        "uid": f.uid,
    })
}

/// A bare (pymutex) file as JSON: no counters, no header.
pub(crate) fn render_bare_json(s: &Status, f: &Facts) -> serde_json::Value {
    serde_json::json!({
        "path": f.path.display().to_string(),
        "state": s.state.as_str(),
        "owner": s.owner.as_ref().map(|o| owner_json(o, f, true)),
        "counters": null,
        "lock_word": s.lock_word,
        "file": {
            "kind": "bare",
            "mode": format!("{:04o}", f.mode),
            "uid": f.uid,
        },
    })
}

/// A bare (pymutex) file as text.
pub(crate) fn render_bare_text(s: &Status, f: &Facts) -> String {
    let mut t = state_and_holder(s, f);
    t += &format!(
        "  file: bare (pymutex format: the mutex alone, no header or counters); mode {:04o}, uid {}\n",
        f.mode, f.uid
    );
    t
}

/// A semaphore as JSON: `state` (its worst permit's), and `permits`.
pub(crate) fn render_semaphore_json(
    s: &SemaphoreStatus,
    state: LockState,
    info: Option<&FileInfo>,
    f: &Facts,
) -> serde_json::Value {
    let holders: Vec<_> = s
        .permits
        .iter()
        .filter_map(|p| p.owner.as_ref())
        .enumerate()
        .map(|(n, o)| owner_json(o, f, n == 0))
        .collect();
    let slots: Vec<_> = s
        .permits
        .iter()
        .map(|p| {
            serde_json::json!({
                "slot": p.slot,
                "state": p.state.as_str(),
                "pid": p.owner.as_ref().map(|o| o.pid),
                "lock_word": p.lock_word,
            })
        })
        .collect();
    serde_json::json!({
        "path": f.path.display().to_string(),
        "state": state.as_str(),
        "owner": null,
        "counters": counters_json(&s.counters),
        "permits": {
            "total": s.total,
            "available": s.available,
            "held": s.held,
            "owner_dead": s.owner_dead,
            "not_recoverable": s.not_recoverable,
            "stuck": s.stuck,
            "holders": holders,
            "slots": slots,
        },
        "file": info.map(|i| file_json(i, f)),
    })
}

/// A semaphore as text: `state` (its worst permit's), the permits, each
/// holder (live or dead), the counters and the file.
pub(crate) fn render_semaphore_text(
    s: &SemaphoreStatus,
    state: LockState,
    info: Option<&FileInfo>,
    f: &Facts,
) -> String {
    let path = path_text(&f.path);
    let mut t = format!("{path}: {state}\n");
    t += &format!(
        "  permits: {} total, {} available, {} held, {} owner-dead, {} not-recoverable, {} stuck\n",
        s.total, s.available, s.held, s.owner_dead, s.not_recoverable, s.stuck
    );
    for p in &s.permits {
        if let Some(o) = &p.owner {
            let role = if p.state == LockState::Locked {
                "holder"
            } else {
                "dead holder"
            };
            t += &format!(
                "  {role} of permit {}: pid {}, tid {}{}, took it {} ago\n",
                p.slot,
                o.pid,
                o.tid,
                label_part(&o.label),
                human(held_for(o, f.now))
            );
        }
    }
    t += &counters_line(&s.counters);
    if let Some(info) = info {
        t += &file_lines(info, f);
    }
    t
}

fn label_part(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(", label \"{}\"", escape(label))
    }
}

fn counters_line(c: &robust_mutex::Counters) -> String {
    format!(
        "  counters: {} acquisitions, {} contended, {} owner deaths, {} recoveries, {} resets\n",
        c.acquisitions, c.contended, c.owner_deaths, c.recoveries, c.resets
    )
}

fn file_lines(info: &FileInfo, f: &Facts) -> String {
    format!(
        "  file: {}, format version {}, generation {}, value {} bytes, created {}\n  ABI: {}; mode {:04o}, uid {}; boot id {}\n",
        info.kind,
        info.version,
        info.generation,
        info.value_size,
        rfc3339(info.created_at),
        info.abi,
        f.mode,
        f.uid,
        if info.boot_id_matches {
            "matches (this boot)"
        } else {
            "differs (made before the last reboot)"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use robust_mutex::{Acquired, OpenOptions, SharedMutex};

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(join_args(&args(&["run", "-n", "/x"])), "run -n /x");
        assert_eq!(
            join_args(&args(&["sh", "-c", "echo a b", "", "it's", "t\tab"])),
            "sh -c 'echo a b' '' 'it'\\''s' 't\tab'"
        );
        // A backslash alone is left as it is (`escape` shows it doubled).
        assert_eq!(join_args(&args(&["a\\b"])), "a\\b");
    }

    /// A fresh mutex file in a temporary directory.
    fn fresh() -> (tempfile::TempDir, PathBuf, SharedMutex<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock");
        let m = OpenOptions::new()
            .create(true)
            .open_lock_only(&path)
            .unwrap();
        (dir, path, m)
    }

    fn facts(path: &Path, now: SystemTime, cmdline: Option<&str>) -> Facts {
        Facts {
            path: path.to_path_buf(),
            mode: 0o640,
            uid: 1234,
            now,
            owner_alive: cmdline.is_some(),
            owner_cmdline: cmdline.map(str::to_owned),
        }
    }

    /// The lines after the holder's, which depend only on the file.
    fn file_lines(info: &FileInfo, counters: &str) -> String {
        format!(
            "  counters: {counters}\n  file: {}, format version {}, generation 1, value 0 bytes, created {}\n  ABI: {}; mode 0640, uid 1234; boot id matches (this boot)\n",
            info.kind,
            info.version,
            rfc3339(info.created_at),
            info.abi
        )
    }

    #[test]
    fn unlocked_text_and_json() {
        let (_dir, path, m) = fresh();
        let (s, info) = (m.status(), m.file_info());
        let f = facts(&path, SystemTime::now(), None);
        let zero = "0 acquisitions, 0 contended, 0 owner deaths, 0 recoveries, 0 resets";
        assert_eq!(
            render_text(&s, &info, &f),
            format!("{}: unlocked\n{}", path.display(), file_lines(&info, zero))
        );
        let v = render_json(&s, &info, &f);
        assert_eq!(v["path"], path.display().to_string());
        assert_eq!(v["state"], "unlocked");
        assert!(v["owner"].is_null());
        assert_eq!(v["counters"]["acquisitions"], 0);
        assert_eq!(v["file"]["kind"], "mutex");
        assert_eq!(v["file"]["generation"], 1);
        assert_eq!(v["file"]["mode"], "0640");
        assert_eq!(v["file"]["uid"], 1234);
        assert_eq!(v["file"]["created_at"], rfc3339(info.created_at));
    }

    #[test]
    fn a_holder_is_shown_from_the_facts_given() {
        let (_dir, path, m) = fresh();
        let Acquired::Clean(mut g) = m.lock().unwrap() else {
            panic!("a fresh mutex is clean");
        };
        g.set_label("nightly").unwrap();
        let (s, info) = (m.status(), m.file_info());
        let o = s.owner.clone().expect("the holder's record");
        let now = o.acquired_at + Duration::from_secs(90);
        let f = facts(&path, now, Some("backup --all"));
        let one = "1 acquisitions, 0 contended, 0 owner deaths, 0 recoveries, 0 resets";
        let text = format!(
            "{}: locked\n  holder: pid {}, tid {}, label \"nightly\", took it 90.0 s ago ({})\n  command: backup --all\n{}",
            path.display(),
            o.pid,
            o.tid,
            rfc3339(o.acquired_at),
            file_lines(&info, one)
        );
        assert_eq!(render_text(&s, &info, &f), text);
        // Pure: the same values give the same output.
        assert_eq!(render_text(&s, &info, &f), text);
        assert_eq!(render_json(&s, &info, &f), render_json(&s, &info, &f));

        let v = render_json(&s, &info, &f);
        let owner = &v["owner"];
        assert_eq!(owner["pid"], o.pid);
        assert_eq!(owner["tid"], o.tid);
        assert_eq!(owner["label"], "nightly");
        assert_eq!(owner["alive"], true);
        assert_eq!(owner["cmdline"], "backup --all");
        assert_eq!(owner["acquired_at"], rfc3339(o.acquired_at));
        assert_eq!(owner["held_for_secs"], 90.0);
        assert_eq!(v["lock_word"], s.lock_word);

        // A holder that is gone: no command line; a clock that went back:
        // held for zero.
        let gone = facts(&path, o.acquired_at - Duration::from_secs(5), None);
        let t = render_text(&s, &info, &gone);
        assert!(t.contains(", took it 0 ms ago ("), "{t}");
        assert!(!t.contains("command:"), "{t}");
        let v = render_json(&s, &info, &gone);
        assert_eq!(v["owner"]["alive"], false);
        assert!(v["owner"]["cmdline"].is_null());
        assert_eq!(v["owner"]["held_for_secs"], 0.0);
        drop(g);
    }

    #[test]
    fn json_has_the_keys_that_the_help_lists() {
        let (_dir, path, m) = fresh();
        let _g = m.lock().unwrap();
        let (s, info) = (m.status(), m.file_info());
        let v = render_json(&s, &info, &facts(&path, SystemTime::now(), None));
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            k.sort_unstable();
            k.join(" ")
        };
        let owner = "acquired_at acquired_at_unix alive cmdline held_for_secs label pid tid";
        let counters = "acquisitions contended owner_deaths recoveries resets";
        let file = "abi boot_id_matches created_at generation kind mode uid value_size version";
        assert_eq!(keys(&v), "counters file lock_word owner path state");
        assert_eq!(keys(&v["owner"]), owner);
        assert_eq!(keys(&v["counters"]), counters);
        assert_eq!(keys(&v["file"]), file);
    }

    #[test]
    fn a_dead_holder_then_a_failed_recovery() {
        let (_dir, path, m) = fresh();
        // A thread that ends holding the lock: the kernel marks its owner dead.
        std::thread::scope(|t| {
            t.spawn(|| std::mem::forget(m.lock().unwrap()));
        });
        // The join can return a moment before the kernel has marked the lock
        // word (until then the holder looks stuck): look again briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while m.status().state != LockState::OwnerDead && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (s, info) = (m.status(), m.file_info());
        assert_eq!(s.state, LockState::OwnerDead);
        let o = s.owner.clone().expect("the dead holder's record");
        let f = facts(&path, o.acquired_at + Duration::from_secs(3 * 3600), None);
        let t = render_text(&s, &info, &f);
        let head = format!(
            "{}: owner-dead\n  dead holder: pid {}, tid {}, took it 3.0 h ago ({})\n  next: the next locker runs its recovery\n",
            path.display(),
            o.pid,
            o.tid,
            rfc3339(o.acquired_at)
        );
        assert!(t.starts_with(&head), "{t}");
        assert_eq!(render_json(&s, &info, &f)["state"], "owner-dead");

        // Recovery abandoned: not recoverable, and the repair is named.
        match m.lock().unwrap() {
            Acquired::OwnerDied(r) => drop(r),
            Acquired::Clean(_) => panic!("expected OwnerDied"),
        }
        let s = m.status();
        assert_eq!(s.state, LockState::NotRecoverable);
        let t = render_text(&s, &info, &f);
        let head = format!(
            "{p}: not-recoverable\n  repair: robust-mutex reset {p}\n  counters: 2 acquisitions",
            p = path.display()
        );
        assert!(t.starts_with(&head), "{t}");
        assert_eq!(render_json(&s, &info, &f)["owner"], serde_json::Value::Null);
    }
}
