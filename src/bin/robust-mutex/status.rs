//! The `status` subcommand: read a mutex's state without locking it and
//! show it as text or one line of JSON.
//!
//! Reading and rendering are apart: [`observe`] gathers the facts that the
//! library's snapshot lacks (file mode and owner, the holder's liveness and
//! command line, the time), and [`render_text`] and [`render_json`] are pure
//! functions of the library's [`Status`] and [`FileInfo`] and those facts.

use crate::exit::{Op, code, fail, state_code};
use crate::format::{emit, escape, human, path_text, rfc3339, warn};
use robust_mutex::{Error, FileInfo, LockState, OpenOptions, OwnerInfo, SharedMutex, Status};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Opens an existing mutex file for reading its state (never creates).
pub(crate) fn open_existing(path: &Path) -> Result<SharedMutex<()>, Error> {
    OpenOptions::new()
        .allow_other_owners(true)
        .open_lock_only(path)
}

/// `status`: prints the state of PATH as text or JSON; the exit code tells
/// the state (0 unlocked, 1 locked, 2 broken).
pub(crate) fn status(path: &Path, json: bool) -> Result<u8, u8> {
    let m = open_existing(path).map_err(|e| fail(&e, Op::Open, path))?;
    let s = m.status();
    let info = m.file_info();
    drop(m);
    let facts = observe(path, &s);
    let text = if json {
        format!("{}\n", render_json(&s, &info, &facts))
    } else {
        render_text(&s, &info, &facts)
    };
    match emit(&text) {
        Ok(()) => {}
        // The reader went away (e.g. `| grep -q`): the exit status still tells.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            warn(format_args!(
                "status {}: writing the output: {e}",
                path.display()
            ));
            return Err(code::IO);
        }
    }
    Ok(state_code(s.state))
}

/// What `status` shows besides the library's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// PATH as given.
    pub(crate) path: PathBuf,
    /// PATH's permission bits (0 when it could not be read).
    pub(crate) mode: u32,
    /// PATH's owner (0 when it could not be read).
    pub(crate) uid: u32,
    /// The moment the holder's tenure is measured to.
    pub(crate) now: SystemTime,
    /// Whether the holder's process still runs (same pid and start time).
    pub(crate) owner_alive: bool,
    /// The holder's command line, only while it runs.
    pub(crate) owner_cmdline: Option<String>,
}

/// Gathers the [`Facts`] about `path` and the holder in `s`: a stat of
/// PATH, a look at /proc, and the clock.
fn observe(path: &Path, s: &Status) -> Facts {
    let (mode, uid) = std::fs::symlink_metadata(path)
        .map(|md| (md.mode() & 0o7777, md.uid()))
        .unwrap_or_default();
    let owner_alive = s.owner.as_ref().is_some_and(OwnerInfo::is_alive);
    Facts {
        path: path.to_path_buf(),
        mode,
        uid,
        now: SystemTime::now(),
        owner_alive,
        owner_cmdline: s.owner.as_ref().filter(|_| owner_alive).and_then(cmdline),
    }
}

/// The owner's command line from /proc. Only asked while that very process
/// runs (same pid and start time): a dead owner's pid may belong to someone
/// else.
fn cmdline(o: &OwnerInfo) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{}/cmdline", o.pid)).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
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
    let c = s.counters;
    let owner = s.owner.as_ref().map(|o| {
        serde_json::json!({
            "pid": o.pid,
            "tid": o.tid,
            "label": o.label,
            "alive": f.owner_alive,
            "cmdline": f.owner_cmdline,
            "acquired_at": rfc3339(o.acquired_at),
            "acquired_at_unix": unix_secs(o.acquired_at),
            "held_for_secs": held_for(o, f.now).as_secs_f64(),
        })
    });
    serde_json::json!({
        "path": f.path.display().to_string(),
        "state": s.state.as_str(),
        "owner": owner,
        "counters": {
            "acquisitions": c.acquisitions,
            "contended": c.contended,
            "owner_deaths": c.owner_deaths,
            "recoveries": c.recoveries,
            "resets": c.resets,
        },
        "lock_word": s.lock_word,
        "file": {
            "version": info.version,
            "kind": info.kind.as_str(),
            "abi": info.abi,
            "generation": info.generation,
            "value_size": info.value_size,
            "created_at": rfc3339(info.created_at),
            "boot_id_matches": info.boot_id_matches,
            "mode": format!("{:04o}", f.mode),
            "uid": f.uid,
        },
    })
}

/// The status as lines of text for a person, ending in a newline.
pub(crate) fn render_text(s: &Status, info: &FileInfo, f: &Facts) -> String {
    let path = path_text(&f.path);
    let c = s.counters;
    let mut t = format!("{path}: {}\n", s.state);
    if let Some(o) = &s.owner {
        let role = match s.state {
            LockState::Locked => "holder",
            _ => "dead holder",
        };
        let label = if o.label.is_empty() {
            String::new()
        } else {
            format!(", label \"{}\"", escape(&o.label))
        };
        t += &format!(
            "  {role}: pid {}, tid {}{label}, took it {} ago ({})\n",
            o.pid,
            o.tid,
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
    t += &format!(
        "  counters: {} acquisitions, {} contended, {} owner deaths, {} recoveries, {} resets\n",
        c.acquisitions, c.contended, c.owner_deaths, c.recoveries, c.resets
    );
    t += &format!(
        "  file: {}, format version {}, generation {}, value {} bytes, created {}\n",
        info.kind,
        info.version,
        info.generation,
        info.value_size,
        rfc3339(info.created_at)
    );
    t += &format!(
        "  ABI: {}; mode {:04o}, uid {}; boot id {}\n",
        info.abi,
        f.mode,
        f.uid,
        if info.boot_id_matches {
            "matches (this boot)"
        } else {
            "differs (made before the last reboot)"
        }
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use robust_mutex::Acquired;

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
