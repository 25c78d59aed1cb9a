//! What `robust-mutex status` reports, for any program: [`status_json`]
//! (exactly the command's `status --json` line), and the [`Facts`] it and
//! the command's text add to the read-only [`inspect_file`] snapshot (the
//! holder's liveness and command line, the time its tenure is measured
//! to).
//!
//! Reading and rendering are apart: [`Facts::observe`] gathers what the
//! snapshot lacks, and the JSON renderers here are pure functions of the
//! library's [`Status`] (or [`SemaphoreStatus`]), [`FileInfo`] and those
//! facts. Compiled with the `json` feature (which the `cli` feature turns
//! on).

use crate::error::Error;
use crate::inspect::{Inspected, Inspection, inspect_file};
use crate::semaphore::SemaphoreStatus;
use crate::status::{Counters, FileInfo, LockState, OwnerInfo, Status};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state of the lock file at `path` as one line of JSON: exactly what
/// `robust-mutex status --json PATH` prints, without the trailing newline.
/// Only reads, as [`inspect_file`] does: never locks, never writes.
///
/// The keys: `path`, `state` (`unlocked`, `locked`, `owner-dead`,
/// `not-recoverable`, `stuck`, `truncated`), `owner` (null, or `pid`,
/// `tid`, `label`, `alive`, `cmdline`, `acquired_at`, `acquired_at_unix`,
/// `held_for_secs`), `counters` (`acquisitions`, `contended`,
/// `owner_deaths`, `recoveries`, `resets`; null for a bare file),
/// `lock_word`, and `file` (`version`, `kind`, `abi`, `generation`,
/// `value_size`, `created_at`, `boot_id_matches`, `mode`, `uid`; a bare
/// file's only `kind`, `mode` and `uid`). A semaphore has `owner` null and
/// no `lock_word`, and `permits` (`total`, `available`, `held`,
/// `owner_dead`, `not_recoverable`, `stuck`, `holders`: owners as above,
/// `slots`: `slot`, `state`, `pid`, `lock_word`). A file that is being
/// created (or whose creator died before finishing) is
/// `{"path": PATH, "state": "being-created"}`, not an error.
///
/// # Errors
/// As [`inspect_file`], except [`Error::BeingCreated`], which is the
/// `being-created` object above.
///
/// # Examples
/// ```
/// use robust_mutex::SharedMutex;
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("job.lock");
/// let m = SharedMutex::<u64>::open(&path)?;
/// let g = m.lock()?;
/// let line = robust_mutex::status_json(&path)?;
/// let v: serde_json::Value = serde_json::from_str(&line)?;
/// assert_eq!(v["state"], "locked");
/// assert_eq!(v["owner"]["pid"], std::process::id());
/// assert_eq!(v["owner"]["alive"], true);
/// # drop(g);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn status_json(path: impl AsRef<Path>) -> Result<String, Error> {
    let path = path.as_ref();
    match inspect_file(path) {
        Ok(i) => Ok(render_json(&i, &Facts::observe(path, &i)).to_string()),
        Err(Error::BeingCreated { .. }) => {
            Ok(json!({"path": path.display().to_string(), "state": "being-created"}).to_string())
        }
        Err(e) => Err(e),
    }
}

/// What `status` shows besides the library's snapshot ([`Inspection`]):
/// the path as given, the time, and the first holder's liveness and
/// command line. [`Facts::observe`] gathers them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Facts {
    /// PATH as given.
    pub path: PathBuf,
    /// The file's permission bits.
    pub mode: u32,
    /// The file's owner.
    pub uid: u32,
    /// The moment the holders' tenure is measured to.
    pub now: SystemTime,
    /// Whether the first holder's process still runs (same pid and start
    /// time).
    pub owner_alive: bool,
    /// The first holder's command line, only while it runs: its arguments
    /// joined by spaces, each that a shell would split (empty, or holding
    /// white space or a quote) single-quoted.
    pub owner_cmdline: Option<String>,
}

impl Facts {
    /// Gathers the facts about the file at `path` that `i` looked at and
    /// its first holder (a mutex's, or a semaphore's first held permit's):
    /// a look at `/proc`, and the clock.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{SharedMutex, report::Facts};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("job.lock");
    /// let m = SharedMutex::<u64>::open(&path)?;
    /// let g = m.lock()?;
    /// let i = robust_mutex::inspect_file(&path)?;
    /// let f = Facts::observe(&path, &i);
    /// assert!(f.owner_alive);
    /// assert!(f.owner_cmdline.is_some());
    /// assert_eq!(f.mode, i.mode);
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn observe(path: impl AsRef<Path>, i: &Inspection) -> Facts {
        let first = holders(&i.lock).first().copied();
        let owner_alive = first.is_some_and(OwnerInfo::is_alive);
        Facts {
            path: path.as_ref().to_path_buf(),
            mode: i.mode,
            uid: i.uid,
            now: SystemTime::now(),
            owner_alive,
            owner_cmdline: first.filter(|_| owner_alive).and_then(cmdline),
        }
    }

    /// How long `o` has held the lock at [`now`](Self::now) (zero if the
    /// clock went back).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{SharedMutex, report::Facts};
    /// use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("job.lock");
    /// let m = SharedMutex::<u64>::open(&path)?;
    /// let g = m.lock()?;
    /// let i = robust_mutex::inspect_file(&path)?;
    /// let mut f = Facts::observe(&path, &i);
    /// let o = m.status().owner.unwrap();
    /// f.now = o.acquired_at + Duration::from_secs(90);
    /// assert_eq!(f.held_for(&o), Duration::from_secs(90));
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn held_for(&self, o: &OwnerInfo) -> Duration {
        self.now.duration_since(o.acquired_at).unwrap_or_default()
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-01-31T12:00:01.250Z`:
/// how [`status_json`] writes a time.
///
/// # Examples
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
/// assert_eq!(robust_mutex::report::rfc3339(t), "2023-11-14T22:13:20.123Z");
/// ```
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The holders of the lock `l`: a mutex's (live or dead), or each held
/// permit's, in slot order.
fn holders(l: &Inspected) -> Vec<&OwnerInfo> {
    match l {
        Inspected::Mutex(s) => s.owner.iter().collect(),
        Inspected::Semaphore(s) => s.permits.iter().filter_map(|p| p.owner.as_ref()).collect(),
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

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The JSON object for `i`, a look at `f.path`.
fn render_json(i: &Inspection, f: &Facts) -> Value {
    match (&i.lock, &i.file) {
        (Inspected::Mutex(s), Some(info)) => mutex_json(s, info, f),
        (Inspected::Mutex(s), None) => bare_json(s, f),
        (Inspected::Semaphore(s), info) => semaphore_json(s, i.lock.state(), info.as_ref(), f),
    }
}

/// A mutex (plain or re-entrant) as one JSON object.
fn mutex_json(s: &Status, info: &FileInfo, f: &Facts) -> Value {
    json!({
        "path": f.path.display().to_string(),
        "state": s.state.as_str(),
        "owner": s.owner.as_ref().map(|o| owner_json(o, f, true)),
        "counters": counters_json(&s.counters),
        "lock_word": s.lock_word,
        "file": file_json(info, f),
    })
}

/// A holder in JSON: `alive` and `cmdline` from `f` for the first holder,
/// looked up for the others.
fn owner_json(o: &OwnerInfo, f: &Facts, first: bool) -> Value {
    let (alive, cmdline) = if first {
        (f.owner_alive, f.owner_cmdline.clone())
    } else {
        let alive = o.is_alive();
        (alive, if alive { cmdline(o) } else { None })
    };
    // A bare (pymutex) file has no owner record: when it was taken is
    // unknown (the epoch stands for it), and so is how long it is held.
    let known = o.acquired_at > std::time::UNIX_EPOCH;
    json!({
        "pid": o.pid,
        "tid": o.tid,
        "label": o.label,
        "alive": alive,
        "cmdline": cmdline,
        "acquired_at": known.then(|| rfc3339(o.acquired_at)),
        "acquired_at_unix": known.then(|| unix_secs(o.acquired_at)),
        "held_for_secs": known.then(|| f.held_for(o).as_secs_f64()),
    })
}

/// The counters as JSON.
fn counters_json(s: &Counters) -> Value {
    json!({
        "acquisitions": s.acquisitions,
        "contended": s.contended,
        "owner_deaths": s.owner_deaths,
        "recoveries": s.recoveries,
        "resets": s.resets,
    })
}

/// The header's facts and the file's mode and owner as JSON.
fn file_json(info: &FileInfo, f: &Facts) -> Value {
    json!({
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
fn bare_json(s: &Status, f: &Facts) -> Value {
    json!({
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

/// A semaphore as JSON: `state` (its worst permit's), and `permits`.
fn semaphore_json(
    s: &SemaphoreStatus,
    state: LockState,
    info: Option<&FileInfo>,
    f: &Facts,
) -> Value {
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
            json!({
                "slot": p.slot,
                "state": p.state.as_str(),
                "pid": p.owner.as_ref().map(|o| o.pid),
                "lock_word": p.lock_word,
            })
        })
        .collect();
    json!({
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedMutex;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(join_args(&args(&["run", "-n", "/x"])), "run -n /x");
        assert_eq!(
            join_args(&args(&["sh", "-c", "echo a b", "", "it's", "t\tab"])),
            "sh -c 'echo a b' '' 'it'\\''s' 't\tab'"
        );
        // A backslash alone is left as it is (the command's text shows it
        // doubled).
        assert_eq!(join_args(&args(&["a\\b"])), "a\\b");
    }

    /// Runs `check` on a fresh mutex file's path, status and header:
    /// unlocked, or held by this thread with the label `nightly`.
    fn look(held: bool, check: impl FnOnce(&Path, Status, FileInfo)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock");
        let m = SharedMutex::<()>::open(&path).unwrap();
        let mut g = held.then(|| m.lock().unwrap().recover_with(|_| ()));
        if let Some(g) = &mut g {
            g.set_label("nightly").unwrap();
        }
        check(&path, m.status(), m.file_info());
    }

    /// Facts as a test sets them: mode 0640, uid 1234, the holder alive
    /// with `cmdline`, or gone.
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

    #[test]
    fn unlocked_json() {
        look(false, |path, s, info| {
            let v = mutex_json(&s, &info, &facts(path, SystemTime::now(), None));
            assert_eq!(v["path"], path.display().to_string());
            assert_eq!(v["state"], "unlocked");
            assert!(v["owner"].is_null());
            assert_eq!(v["counters"]["acquisitions"], 0);
            assert_eq!(v["file"]["kind"], "mutex");
            assert_eq!(v["file"]["generation"], 1);
            assert_eq!(v["file"]["mode"], "0640");
            assert_eq!(v["file"]["uid"], 1234);
            assert_eq!(v["file"]["created_at"], rfc3339(info.created_at));
        });
    }

    #[test]
    fn a_holder_is_shown_from_the_facts_given() {
        look(true, |path, s, info| {
            let o = s.owner.clone().expect("the holder's record");
            let later = o.acquired_at + Duration::from_secs(90);
            let f = facts(path, later, Some("backup --all"));
            // Pure: the same values give the same output.
            assert_eq!(mutex_json(&s, &info, &f), mutex_json(&s, &info, &f));
            let v = mutex_json(&s, &info, &f);
            let owner = &v["owner"];
            assert_eq!(owner["pid"], o.pid);
            assert_eq!(owner["tid"], o.tid);
            assert_eq!(owner["label"], "nightly");
            assert_eq!(owner["alive"], true);
            assert_eq!(owner["cmdline"], "backup --all");
            assert_eq!(owner["acquired_at"], rfc3339(o.acquired_at));
            assert_eq!(owner["held_for_secs"], 90.0);
            assert_eq!(v["lock_word"], s.lock_word);

            // A holder that is gone: no command line; a clock that went
            // back: held for zero.
            let gone = facts(path, o.acquired_at - Duration::from_secs(5), None);
            let v = mutex_json(&s, &info, &gone);
            assert_eq!(v["owner"]["alive"], false);
            assert!(v["owner"]["cmdline"].is_null());
            assert_eq!(v["owner"]["held_for_secs"], 0.0);
        });
    }

    #[test]
    fn json_has_the_keys_that_the_help_lists() {
        look(true, |path, s, info| {
            let v = mutex_json(&s, &info, &facts(path, SystemTime::now(), None));
            let keys = |v: &Value| {
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
        });
    }

    /// The states of a broken lock, as the status names them (the renderer
    /// is pure: the status is set by hand; tests/cli/status.rs makes them
    /// for real).
    #[test]
    fn a_dead_holder_then_a_failed_recovery() {
        look(true, |path, mut s, info| {
            let o = s.owner.clone().expect("the holder's record");
            let f = facts(path, o.acquired_at + Duration::from_secs(3 * 3600), None);
            s.state = LockState::OwnerDead;
            let v = mutex_json(&s, &info, &f);
            assert_eq!(v["state"], "owner-dead");
            assert_eq!(v["owner"]["pid"], o.pid);
            assert_eq!(v["owner"]["alive"], false);
            assert_eq!(v["owner"]["held_for_secs"], 3.0 * 3600.0);

            (s.state, s.owner) = (LockState::NotRecoverable, None);
            let v = mutex_json(&s, &info, &f);
            assert_eq!(v["state"], "not-recoverable");
            assert_eq!(v["owner"], Value::Null);
        });
    }

    /// `status_json` of a file that is being created is an object too,
    /// and the file is left as it was.
    #[test]
    fn a_file_being_created_is_an_object() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("left");
        std::fs::File::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let v: Value = serde_json::from_str(&status_json(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"path": path.display().to_string(), "state": "being-created"})
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (0, 0o400));

        // Other errors stay errors.
        let gone = dir.path().join("gone");
        assert!(matches!(status_json(&gone), Err(Error::NotFound { .. })));
    }
}
