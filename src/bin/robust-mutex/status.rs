//! The `status` subcommand: read a lock's state without locking it and
//! without writing anything (the library's read-only
//! [`inspect_file`](robust_mutex::inspect_file)), and show it as text or one
//! line of JSON.
//!
//! The JSON is the library's ([`robust_mutex::status_json`]), and so are
//! the [`Facts`] the text shows besides the library's snapshot (the
//! holder's liveness and command line, the time): [`render_text`] and the
//! other text renderers here are pure functions of the library's
//! [`Status`] (or [`SemaphoreStatus`]), [`FileInfo`] and those facts.

use crate::exit::{Op, code, fail, state_code};
use crate::format::{emit, escape, human, path_text, warn};
use robust_mutex::report::{Facts, rfc3339};
use robust_mutex::{FileInfo, Inspected, Inspection, LockState, SemaphoreStatus, Status};
use std::io;
use std::path::Path;

/// `status`: prints the state of PATH as text or JSON; the exit code tells
/// the state (0 unlocked, 1 locked, 2 broken). Only reads.
pub(crate) fn status(path: &Path, json: bool) -> Result<u8, u8> {
    if json {
        return status_json(path);
    }
    let i = robust_mutex::inspect_file(path).map_err(|e| fail(&e, Op::Status, path))?;
    let text = render(&i, &Facts::observe(path, &i));
    print(path, &text)?;
    Ok(state_code(i.lock.state()))
}

/// `status --json`: the library's line, and the exit code of the state it
/// names. A file being created is an object too (`"state":
/// "being-created"`), then the error (exit 75).
fn status_json(path: &Path) -> Result<u8, u8> {
    let line = robust_mutex::status_json(path).map_err(|e| fail(&e, Op::Status, path))?;
    let printed = print(path, &format!("{line}\n"));
    // The state printed, not a second look that could differ from it.
    let state = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_owned));
    let known = [
        LockState::Unlocked,
        LockState::Locked,
        LockState::OwnerDead,
        LockState::NotRecoverable,
        LockState::Stuck,
        LockState::Truncated,
    ];
    match state.as_deref() {
        // Exit 75, with the reason on stderr, whether the object was
        // written or not.
        Some("being-created") => {
            let e = robust_mutex::Error::BeingCreated {
                path: path.to_path_buf(),
            };
            Err(fail(&e, Op::Status, path))
        }
        Some(s) => printed.map(|()| {
            known
                .into_iter()
                .find(|k| k.as_str() == s)
                .map_or(code::BROKEN, state_code)
        }),
        None => {
            warn(format_args!(
                "status {}: internal error: no state in {line}",
                path_text(path)
            ));
            Err(code::SOFTWARE)
        }
    }
}

/// Writes `text` to stdout; a failure is a warning and exit code IO.
fn print(path: &Path, text: &str) -> Result<(), u8> {
    match emit(text) {
        Ok(()) => Ok(()),
        // The reader went away (e.g. `| grep -q`): the exit status still tells.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => {
            warn(format_args!(
                "status {}: writing the output: {e}",
                path_text(path)
            ));
            Err(code::IO)
        }
    }
}

/// What `status` prints as text for `i`, a look at `f.path`.
fn render(i: &Inspection, f: &Facts) -> String {
    let state = i.lock.state();
    match (&i.lock, &i.file) {
        (Inspected::Mutex(s), Some(info)) => render_text(s, info, f),
        (Inspected::Mutex(s), None) => render_bare_text(s, f),
        (Inspected::Semaphore(s), info) => render_semaphore_text(s, state, info.as_ref(), f),
        // A kind this build does not know how to show in detail.
        _ => format!("{}: {state}\n", path_text(&f.path)),
    }
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
        // A bare file has no owner record: when it was taken is unknown
        // (the epoch stands for it).
        let when = if o.acquired_at > std::time::UNIX_EPOCH {
            format!(
                ", took it {} ago ({})",
                human(f.held_for(o)),
                rfc3339(o.acquired_at)
            )
        } else {
            String::new()
        };
        t += &format!(
            "  {role}: pid {}, tid {}{}{when}\n",
            o.pid,
            o.tid,
            label_part(&o.label),
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

/// A bare (pymutex) file as text.
pub(crate) fn render_bare_text(s: &Status, f: &Facts) -> String {
    let mut t = state_and_holder(s, f);
    t += &format!(
        "  file: bare (pymutex format: the mutex alone, no header or counters); mode {:04o}, uid {}\n",
        f.mode, f.uid
    );
    t
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
                human(f.held_for(o))
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
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

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

    /// The library's facts about `path`, then set as a test needs them.
    fn facts(path: &Path, now: SystemTime, cmdline: Option<&str>) -> Facts {
        let mut f = Facts::observe(path, &robust_mutex::inspect_file(path).unwrap());
        f.mode = 0o640;
        f.uid = 1234;
        f.now = now;
        f.owner_alive = cmdline.is_some();
        f.owner_cmdline = cmdline.map(str::to_owned);
        f
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
    fn unlocked_text() {
        let (_dir, path, m) = fresh();
        let (s, info) = (m.status(), m.file_info());
        let f = facts(&path, SystemTime::now(), None);
        let zero = "0 acquisitions, 0 contended, 0 owner deaths, 0 recoveries, 0 resets";
        assert_eq!(
            render_text(&s, &info, &f),
            format!("{}: unlocked\n{}", path.display(), file_lines(&info, zero))
        );
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

        // A holder that is gone: no command line; a clock that went back:
        // held for zero.
        let gone = facts(&path, o.acquired_at - Duration::from_secs(5), None);
        let t = render_text(&s, &info, &gone);
        assert!(t.contains(", took it 0 ms ago ("), "{t}");
        assert!(!t.contains("command:"), "{t}");
        drop(g);
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
    }
}
