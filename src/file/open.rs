//! The initialisation handshake: create, wait, or take over. See the state
//! machine in docs/design.md.
//!
//! * A **creator** makes the file with `O_CREAT|O_EXCL`, mode 0400 (the
//!   creator's mark), holds an exclusive `flock` while it sizes, maps and
//!   initialises it, writes the header with `state = READY` last, then
//!   `fchmod`s it to the final mode and lets the flock go.
//! * An **opener** attaches only to a file that is writable (mode has the
//!   owner-write bit) *and* READY. It decides from `fstat` and the header,
//!   never from `open` failing, because root ignores mode bits.
//! * A file still carrying the mark whose flock nobody holds lost its creator:
//!   the next opener takes the flock and initialises it, provided it holds only
//!   what a crashed creator can leave (nothing, zeros, or our magic in the
//!   INIT state). Anything else is someone's data and is left untouched.

use super::checks::{
    check_file, check_ours, check_permit_mutexes, crashed_creator_leftover, invalid_to_error,
    read_header, replaced_by_reset,
};
use super::init::{Fill, checkpoint, initialise, publish_new_file};
use super::layout;
use super::{Opened, io_err, open_error, write_error};
use crate::error::Error;
use crate::identity;
use crate::options::{OpenOptions, Spec};
use crate::registry;
use crate::sys;
use memmap2::MmapOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one open is about, threaded through the state machine.
#[derive(Debug, Clone, Copy)]
struct Ctx<'a> {
    /// The path given.
    path: &'a Path,
    /// The caller's options.
    opts: &'a OpenOptions,
    /// The kind and value layout asked for.
    spec: &'a Spec,
}

/// Look-agains after which a path that keeps changing is given up on.
const MAX_RETRIES: u32 = 64;

/// What one look at the path decided.
enum Step {
    Attached(Box<Opened>),
    /// Look again now (the file changed under us).
    Retry,
    /// A live creator holds the flock: wait a little, then look again. At
    /// the init timeout, fail with this error (or [`Error::InitTimeout`]).
    Wait(Option<Error>),
}

/// Opens or creates the mutex file at `path` for a value laid out as `want`.
pub(crate) fn open(path: &Path, opts: &OpenOptions, spec: &Spec) -> Result<Opened, Error> {
    let cx = Ctx { path, opts, spec };
    let want = spec.layout;
    opts.check_mode()?;
    if opts.replace {
        match check_ours(path) {
            Ok(_) => {
                publish_new_file(path, opts.mode, None, want, spec.kind, &Fill::Fresh)?;
                log::warn!("{}: replaced with a new, empty lock file", path.display());
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    let mut retries = 0u32;
    loop {
        let step = if opts.create_new {
            create_step(&cx)?
        } else {
            match sys::open_existing(path, true) {
                Ok(fd) => inspect(&cx, fd, true)?,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT) if opts.create => create_step(&cx)?,
                    Some(libc::ENOENT) => {
                        return Err(Error::NotFound {
                            path: path.to_owned(),
                        });
                    }
                    Some(libc::EACCES) | Some(libc::EPERM) => {
                        // Not writable for us: a creator's 0400 mark (we may
                        // still wait or take over) or a file closed to us.
                        match sys::open_existing(path, false) {
                            Ok(fd) => inspect(&cx, fd, false)?,
                            Err(_) => {
                                return Err(Error::PermissionDenied {
                                    path: path.to_owned(),
                                });
                            }
                        }
                    }
                    _ => return Err(open_error(path, e)),
                },
            }
        };
        match step {
            Step::Attached(o) => return Ok(*o),
            // Every retry follows a change (our own creation or takeover,
            // another process's, a reset's rename), so a few are normal even
            // with a zero init timeout; an endless stream is not.
            Step::Retry if retries >= MAX_RETRIES && start.elapsed() > opts.init_timeout => {
                return Err(Error::InitTimeout {
                    path: path.to_owned(),
                    waited: start.elapsed(),
                });
            }
            Step::Retry => retries += 1,
            Step::Wait(on_timeout) => {
                checkpoint("open_wait");
                let waited = start.elapsed();
                if waited >= opts.init_timeout {
                    return Err(on_timeout.unwrap_or(Error::InitTimeout {
                        path: path.to_owned(),
                        waited,
                    }));
                }
                // Polling the flock: flock(2) has no timed wait.
                std::thread::sleep(pause.min(opts.init_timeout - waited));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// The path is missing: try to create it ourselves.
fn create_step(cx: &Ctx<'_>) -> Result<Step, Error> {
    let Ctx { path, opts, spec } = *cx;
    let want = spec.layout;
    let fd = match sys::create_exclusive(path, layout::CREATOR_MODE) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if opts.create_new {
                return Err(Error::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            return Ok(Step::Retry);
        }
        Err(e) => return Err(open_error(path, e)),
    };
    // Between O_CREAT and flock an opener may see our mark with no flock and
    // take the initialisation over; then we simply become an opener.
    if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
        return Ok(if opts.create_new {
            Step::Wait(None)
        } else {
            Step::Retry
        });
    }
    checkpoint("created");
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    if st.perm() != layout::CREATOR_MODE || st.size != 0 || st.nlink == 0 {
        // Taken over and finished before our flock (it is an ordinary open
        // now), or removed meanwhile (as bare create: look at the path again).
        let _ = sys::funlock(&fd);
        return Ok(Step::Retry);
    }
    if let Err(e) = initialise(path, &fd, opts.mode, want, spec.kind, &Fill::Fresh) {
        // Nobody can have attached to our half-made file (it still has the
        // mark): remove it rather than leave a leftover (a full disk, say),
        // so that a later `create_new` finds the path free.
        super::remove_if_same(path, &fd);
        let _ = sys::funlock(&fd);
        return Err(e);
    }
    let _ = sys::funlock(&fd);
    log::debug!("created robust mutex file {}", path.display());
    if opts.create_new {
        // Attach to exactly the file we made.
        let opts = OpenOptions {
            create_new: false,
            ..opts.clone()
        };
        return inspect(&Ctx { opts: &opts, ..*cx }, fd, true);
    }
    Ok(Step::Retry)
}

/// Whether the file open as `fd` (stat `st` when we looked) changed since:
/// its size, mode or link count, or the path now names another file.
pub(crate) fn changed_since(path: &Path, fd: &OwnedFd, st: &sys::FileStat) -> Result<bool, Error> {
    let now = sys::fstat(fd).map_err(io_err("fstat", path))?;
    let here = sys::lstat(path).is_ok_and(|l| (l.dev, l.ino) == (st.dev, st.ino));
    Ok(!here || (now.size, now.mode, now.nlink) != (st.size, st.mode, st.nlink))
}

/// Decides what to do with an existing path opened as `fd`.
fn inspect(cx: &Ctx<'_>, fd: OwnedFd, writable: bool) -> Result<Step, Error> {
    let Ctx { path, opts, spec } = *cx;
    let want = spec.layout;
    let st = check_file(path, &fd, opts)?;
    if st.perm() == layout::CREATOR_MODE {
        return creator_marked(cx, fd, writable);
    }
    if st.size == 0 {
        // Not our mark, so not a creator at work: flock(1) and touch leave
        // such files. A non-root takeover lifts the mark for one `open`
        // while it holds the flock (see `writable_fd`): wait while it does.
        let empty = Error::Empty {
            path: path.to_owned(),
        };
        checkpoint("open_empty_seen");
        if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
            return Ok(Step::Wait(Some(empty)));
        }
        let changed = changed_since(path, &fd, &st)?;
        let _ = sys::funlock(&fd);
        // A takeover may have finished between our fstat and our flock.
        return if changed { Ok(Step::Retry) } else { Err(empty) };
    }
    if st.perm() & 0o200 == 0 {
        // Read-only, but not our mark: someone else's file.
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    if st.size < layout::DATA_MIN_OFFSET as u64 {
        let (h, _, n) = read_header(path, &fd)?;
        // A cut-short mutex file still starts with (a prefix of) our magic.
        if !layout::MAGIC.starts_with(&h.magic[..n.min(8)]) {
            return Err(Error::ForeignFile {
                path: path.to_owned(),
            });
        }
        return Err(Error::Truncated {
            path: path.to_owned(),
            len: st.size,
            needed: want.file_len.max(layout::DATA_MIN_OFFSET as u64),
        });
    }
    let (header, mutex, _) = read_header(path, &fd)?;
    if header.magic == layout::MAGIC && header.state == layout::STATE_INIT {
        // Writable yet not ready: only a takeover by a non-root user makes
        // this for a moment (see `writable_fd`); wait while it holds the flock.
        checkpoint("open_init_seen");
        if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
            return Ok(Step::Wait(None));
        }
        // The takeover may have finished between our read and our flock:
        // read again rather than judge what we read before.
        let (now, _, _) = read_header(path, &fd)?;
        let changed = now.state != header.state || changed_since(path, &fd, &st)?;
        let _ = sys::funlock(&fd);
        if changed {
            return Ok(Step::Retry);
        }
    }
    let check = if spec.any_value {
        None
    } else if spec.any_align {
        // Raw bytes: only the size must match (the file's alignment is
        // whatever its creator's type had).
        layout::DataLayout::new(want.size as usize, header.data_align as usize).or(Some(want))
    } else {
        Some(want)
    };
    layout::validate_versions(
        &header,
        st.size,
        check,
        spec.accepted_kinds(),
        &mutex,
        spec.versions(),
    )
    .map_err(|i| invalid_to_error(path, i, want))?;
    if header.kind == layout::Kind::Semaphore.code() {
        check_permit_mutexes(path, &fd, &header)?;
    }
    if header.state == layout::STATE_RETIRED || st.nlink == 0 {
        // A reset replaced it between our open and now: open the new one.
        replaced_by_reset(path, &st)?;
        return Ok(Step::Retry);
    }
    let our_ns = identity::me().pidns_ino;
    if header.pidns_ino != our_ns && !opts.allow_foreign_pid_namespace {
        return Err(Error::PidNamespaceMismatch {
            path: path.to_owned(),
            file_ns: header.pidns_ino,
            ours: our_ns,
        });
    }
    if !writable {
        return Err(Error::PermissionDenied {
            path: path.to_owned(),
        });
    }
    let map = registry::attach((st.dev, st.ino), &header, || {
        // A file with holes (a sparse copy, say) would need pages at the
        // first store into them; on a full disk that store is a SIGBUS.
        // Fill them now, where a full disk is an error (data is unchanged).
        if sys::has_hole_before(&fd, header.file_len).map_err(io_err("lseek", path))? {
            checkpoint("holes_seen");
            sys::fill_holes(&fd, header.file_len)
                .map_err(write_error("fallocate", path))
                .map_err(super::while_doing("fill holes in"))?;
            checkpoint("holes_filled");
        }
        MmapOptions::new()
            .len(header.file_len as usize)
            .map_raw(&fd)
            .map_err(io_err("mmap", path))
    })?;
    let opened = Opened {
        map,
        header,
        fd,
        stat: st,
    };
    if header.boot_id != identity::boot_id() {
        super::stale::repair_stale_boot(path, &opened, opts)?;
    }
    Ok(Step::Attached(Box::new(opened)))
}

/// The file carries the creator's mark (mode 0400).
fn creator_marked(cx: &Ctx<'_>, fd: OwnedFd, writable: bool) -> Result<Step, Error> {
    let Ctx { path, opts, spec } = *cx;
    let want = spec.layout;
    if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
        return Ok(Step::Wait(None)); // a live creator is at work
    }
    // We hold the flock. Look again: the creator may have finished (and
    // chmodded) between our fstat and our flock, or the name may be gone.
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    let still_marked = st.perm() == layout::CREATOR_MODE && st.nlink > 0;
    let leftover = still_marked && crashed_creator_leftover(path, &fd, st.size)?;
    match decide_marked(true, still_marked, leftover) {
        Marked::TakeOver => {}
        other => {
            let _ = sys::funlock(&fd);
            return match other {
                Marked::Refuse => Err(Error::ForeignFile {
                    path: path.to_owned(),
                }),
                _ => Ok(Step::Retry),
            };
        }
    }
    log::warn!(
        "{}: its creator died during initialisation; taking over",
        path.display()
    );
    // The flock stays on `fd` (flocks belong to one open file description).
    let reopened;
    let rw = if writable {
        &fd
    } else {
        reopened = writable_fd(path, &fd)?;
        &reopened
    };
    let r = initialise(path, rw, opts.mode, want, spec.kind, &Fill::Fresh)
        .map_err(super::while_doing("take over"));
    let _ = sys::funlock(&fd);
    r.map(|()| Step::Retry)
}

/// What to do with a file that carried the creator's mark (mode 0400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// A live creator holds the flock: wait for it.
    Wait,
    /// The file changed (finished, renamed, removed): look again.
    Retry,
    /// Its creator died; the content is its leftover: initialise it.
    TakeOver,
    /// Someone else's read-only file: refuse it, untouched.
    Refuse,
}

/// The pure decision for a creator-marked file, after trying its flock.
/// `got_flock`: our non-blocking exclusive flock succeeded; `still_marked`:
/// re-checked under the flock, the file still has mode 0400 and a name;
/// `leftover`: its content is only what a crashed creator can leave.
/// Kept free of system calls so the loom model runs exactly this code.
pub fn decide_marked(got_flock: bool, still_marked: bool, leftover: bool) -> Marked {
    match (got_flock, still_marked, leftover) {
        (false, _, _) => Marked::Wait,
        (true, false, _) => Marked::Retry,
        (true, true, true) => Marked::TakeOver,
        (true, true, false) => Marked::Refuse,
    }
}

/// Root opened the file read-write at once; another user who owns a 0400
/// file gets a read-write descriptor by lifting the mark for the length of
/// one `open`, while we hold the flock on `fd` (openers that see the lifted
/// mode wait while the flock is held). Also used for bare files.
pub(crate) fn writable_fd(path: &Path, fd: &OwnedFd) -> Result<OwnedFd, Error> {
    use std::os::fd::AsRawFd;
    sys::fchmod(fd, 0o600).map_err(|_| Error::PermissionDenied {
        path: path.to_owned(),
    })?;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&proc_path);
    let restore = sys::fchmod(fd, layout::CREATOR_MODE);
    let rw: OwnedFd = rw.map_err(io_err("reopen", path))?.into();
    restore.map_err(io_err("fchmod", path))?;
    Ok(rw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_creator_mark_decision_table() {
        assert_eq!(decide_marked(false, true, true), Marked::Wait);
        assert_eq!(decide_marked(true, false, true), Marked::Retry);
        assert_eq!(decide_marked(true, true, true), Marked::TakeOver);
        assert_eq!(decide_marked(true, true, false), Marked::Refuse);
    }
}
