//! The `watch` subcommand: follow PATH and print one timestamped line per
//! change of state or holder, and when the file is removed, replaced (by a
//! reset) or created again.

use crate::cli::WatchArgs;
use crate::exit::{Op, code, fail};
use crate::format::{emit, label_suffix, rfc3339, warn};
use crate::status::open_existing;
use robust_mutex::{Error, LockState, SharedMutex};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A file's identity, to notice that PATH now names another file.
type FileId = (u64, u64);

fn file_id(path: &Path) -> io::Result<FileId> {
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Opens PATH and learns which file it opened.
fn open_watched(path: &Path) -> Result<(SharedMutex<()>, FileId), Error> {
    let mut tries = 0;
    loop {
        let before = file_id(path).ok();
        let m = open_existing(path)?;
        let after = file_id(path).ok();
        tries += 1;
        match after {
            Some(id) if before == after || tries >= 10 => return Ok((m, id)),
            // Replaced while we opened it: open again.
            _ => continue,
        }
    }
}

/// What `watch` compares from one look to the next: state and holder tenure.
type Seen = (LockState, Option<(u32, u32, String, SystemTime)>);

/// `watch`: looks at PATH every `--interval` ms and prints a line per
/// change, until `--count`, `--until-state`, a closed stdout or Ctrl-C.
pub(crate) fn watch(a: &WatchArgs) -> Result<u8, u8> {
    let path = a.path.as_path();
    let mut current = Some(open_watched(path).map_err(|e| fail(&e, Op::Open, path))?);
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
                    path.display()
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
        // Has PATH been removed, or replaced (by a reset)?
        let now = file_id(path);
        match (&current, now) {
            (Some((_, id)), Ok(n)) if *id == n => {}
            (Some(_), Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                current = None;
                last = None;
                if print("removed".into(), None)? {
                    return Ok(code::OK);
                }
            }
            (None, Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
            (was, _) => {
                let had = was.is_some();
                match open_watched(path) {
                    Ok((m, id)) => {
                        let line = if had {
                            format!("replaced: generation {}", m.status().generation)
                        } else {
                            format!("created: generation {}", m.status().generation)
                        };
                        current = Some((m, id));
                        last = None;
                        if print(line, None)? {
                            return Ok(code::OK);
                        }
                    }
                    // Gone again before we could open it: look next time.
                    Err(Error::NotFound { .. }) => {
                        if had {
                            current = None;
                            last = None;
                            if print("removed".into(), None)? {
                                return Ok(code::OK);
                            }
                        }
                    }
                    Err(e) => return Err(fail(&e, Op::Open, path)),
                }
            }
        }
        if let Some((m, _)) = &current {
            let s = m.status();
            let seen: Seen = (
                s.state,
                s.owner
                    .as_ref()
                    .map(|o| (o.pid, o.tid, o.label.clone(), o.acquired_at)),
            );
            if last.as_ref() != Some(&seen) {
                let who = s.owner.as_ref().map_or(String::new(), |o| {
                    format!(" pid {} tid {}{}", o.pid, o.tid, label_suffix(&o.label))
                });
                last = Some(seen);
                if print(format!("{}{who}", s.state), Some(s.state))? {
                    return Ok(code::OK);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(a.interval));
    }
}
