//! The `watch` subcommand: follow PATH and print one timestamped line per
//! change of state or holder, and when the file is removed, replaced (by a
//! reset), being created, or created again. Every look is the library's
//! read-only [`inspect_file`](robust_mutex::inspect_file): it never writes.

use crate::cli::WatchArgs;
use crate::exit::{Op, code, fail};
use crate::format::{emit, label_suffix, path_text, warn};
use robust_mutex::report::rfc3339;
use robust_mutex::{Error, Inspected, Inspection, LockState};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A file's identity, to notice that PATH now names another file.
type FileId = (u64, u64);

/// What PATH was at the last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Nothing (never printed: only a change from something to nothing).
    Nothing,
    /// A file carrying the creator's mark, not ready yet.
    BeingCreated,
    /// A ready lock file.
    Lock(FileId),
}

/// What `watch` compares from one look to the next: state and holders
/// (pid, tid, label, when taken).
type Seen = (LockState, Vec<(u32, u32, String, SystemTime)>);

/// The state line's state and holders, and its text.
fn seen(i: &Inspection) -> (Seen, String) {
    let state = i.lock.state();
    let (owners, extra) = match &i.lock {
        Inspected::Mutex(s) => (s.owner.iter().collect::<Vec<_>>(), String::new()),
        Inspected::Semaphore(s) => (
            s.permits.iter().filter_map(|p| p.owner.as_ref()).collect(),
            format!(" {}/{} available", s.available, s.total),
        ),
        _ => (Vec::new(), String::new()),
    };
    let who: String = owners
        .iter()
        .map(|o| format!(" pid {} tid {}{}", o.pid, o.tid, label_suffix(&o.label)))
        .collect();
    let key = owners
        .iter()
        .map(|o| (o.pid, o.tid, o.label.clone(), o.acquired_at))
        .collect();
    ((state, key), format!("{state}{extra}{who}"))
}

/// The generation of the file `i` looked at (0 for a bare file).
fn generation(i: &Inspection) -> u64 {
    i.file.as_ref().map_or(0, |f| f.generation)
}

/// `watch`: looks at PATH every `--interval` ms and prints a line per
/// change, until `--count`, `--until-state`, a closed stdout or Ctrl-C.
pub(crate) fn watch(a: &WatchArgs) -> Result<u8, u8> {
    let path = a.path.as_path();
    let mut found: Option<Found> = None; // None: not looked yet
    let mut last: Option<Seen> = None;
    let mut printed = 0u64;
    let mut print = |line: String, state: Option<LockState>| -> Result<bool, u8> {
        let text = format!("{} {line}\n", rfc3339(SystemTime::now()));
        match emit(&text) {
            Ok(()) => {}
            // The reader went away (e.g. `| head -3`): a normal way to stop.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(code::OK),
            Err(e) => {
                warn(format_args!(
                    "watch {}: writing the output: {e}",
                    path_text(path)
                ));
                return Err(code::IO);
            }
        }
        printed += 1;
        let done = a.count.is_some_and(|n| printed >= n)
            || state.is_some_and(|s| a.until_state.is_some_and(|u| u.matches(s)));
        Ok(done)
    };
    loop {
        let (now, look) = match look(path, found.is_none())? {
            Ok(i) => (Found::Lock((i.dev, i.ino)), Some(i)),
            Err(f) => (f, None),
        };
        let before = found.replace(now);
        if before != Some(now) {
            last = None;
            let line = match (before, now, &look) {
                (Some(Found::Lock(_)), Found::Lock(_), Some(i)) => {
                    Some(format!("replaced: generation {}", generation(i)))
                }
                (Some(_), Found::Lock(_), Some(i)) => {
                    Some(format!("created: generation {}", generation(i)))
                }
                (_, Found::BeingCreated, _) => Some(
                    "being created, or its creator died before finishing (mode 0400, not ready); the next opener finishes it or takes it over"
                        .to_owned(),
                ),
                (Some(Found::Lock(_) | Found::BeingCreated), Found::Nothing, _) => {
                    Some("removed".to_owned())
                }
                _ => None,
            };
            if let Some(line) = line {
                if print(line, None)? {
                    return Ok(code::OK);
                }
            }
        }
        if let Some(i) = &look {
            let (s, line) = seen(i);
            if last.as_ref() != Some(&s) {
                let state = s.0;
                last = Some(s);
                if print(line, Some(state))? {
                    return Ok(code::OK);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(a.interval));
    }
}

/// One read-only look at PATH: the lock, or what stands there instead.
/// On the `first` look a missing PATH is an error, as is anything unusable
/// on every look.
fn look(path: &Path, first: bool) -> Result<Result<Inspection, Found>, u8> {
    match robust_mutex::inspect_file(path) {
        Ok(i) => Ok(Ok(i)),
        Err(Error::NotFound { .. }) if !first => Ok(Err(Found::Nothing)),
        Err(Error::BeingCreated { .. }) => Ok(Err(Found::BeingCreated)),
        Err(e) => Err(fail(&e, Op::Open, path)),
    }
}
