//! The lock file: its format, and how it is created, opened, checked and
//! repaired. Nothing outside this module reads or writes a file's bytes
//! except through a mapping it hands out.
//!
//! * [`layout`]: the format, every offset, and the header checks;
//! * [`open`]: the open state machine (create, wait, take over, attach);
//! * [`init`]: initialising a file (a new one, a takeover, a reset's
//!   replacement, a stale boot's repair);
//! * [`checks`]: what an opener checks before trusting a path;
//! * [`stale`]: files that outlived a reboot.

pub(crate) mod checks;
pub(crate) mod init;
pub(crate) mod layout;
pub(crate) mod open;
pub(crate) mod records;
pub(crate) mod stale;

use crate::error::Error;
use crate::registry::Mapping;
use crate::sys;
use layout::Header;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use open::open;

/// Result of a successful open.
#[derive(Debug)]
pub(crate) struct Opened {
    pub map: Arc<Mapping>,
    pub header: Header,
    /// The descriptor we opened it by (closed once the handle is built).
    pub fd: OwnedFd,
    pub stat: sys::FileStat,
}

pub(crate) fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn open_error(path: &Path, e: io::Error) -> Error {
    let path = path.to_owned();
    match e.raw_os_error() {
        Some(libc::ELOOP) => Error::Symlink { path },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { path },
        Some(libc::ENOENT) => Error::NotFound { path },
        Some(libc::EISDIR) => Error::NotRegularFile {
            path,
            kind: "directory",
        },
        _ => write_error("open", path)(e),
    }
}

/// Whether `e` says the filesystem is full (ENOSPC) or the quota used up
/// (EDQUOT).
fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The error of a call that writes the file system while creating a lock
/// file (`op`: "open", "fallocate", "link", ...): a full disk is
/// [`Error::NoSpace`], a read-only one [`Error::ReadOnlyFilesystem`], the
/// rest [`Error::Io`].
pub(crate) fn write_error(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| {
        if is_no_space(&source) {
            Error::NoSpace {
                op: "create",
                path,
                source,
            }
        } else if source.raw_os_error() == Some(libc::EROFS) {
            Error::ReadOnlyFilesystem { op: "open", path }
        } else {
            Error::Io { op, path, source }
        }
    }
}

/// Names what was being done (`verb`: "take over", "reset", ...) in a
/// [`Error::NoSpace`] or [`Error::ReadOnlyFilesystem`] made by
/// [`write_error`]; other errors pass unchanged.
pub(crate) fn while_doing(verb: &'static str) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::NoSpace { path, source, .. } => Error::NoSpace {
            op: verb,
            path,
            source,
        },
        Error::ReadOnlyFilesystem { path, .. } => Error::ReadOnlyFilesystem { op: verb, path },
        e => e,
    }
}

/// Unlinks `path` if it still names the file open as `fd`: a creator
/// removing its own new file when it could not finish it.
pub(crate) fn remove_if_same(path: &Path, fd: &OwnedFd) {
    if let (Ok(a), Ok(b)) = (sys::fstat(fd), sys::lstat(path)) {
        if (a.dev, a.ino) == (b.dev, b.ino) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Takes the init `flock` on `fd`, polling (flock has no timed wait) until
/// `timeout` has passed: the one bounded wait for another process's
/// creation, repair or reset to finish.
///
/// # Errors
/// [`Error::InitTimeout`] after `timeout`; [`Error::Io`] if flock fails.
pub(crate) fn wait_for_flock(path: &Path, fd: &OwnedFd, timeout: Duration) -> Result<(), Error> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    while !sys::try_flock_exclusive(fd).map_err(io_err("flock", path))? {
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::InitTimeout {
                path: path.to_owned(),
                waited,
            });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(1));
    }
    Ok(())
}
