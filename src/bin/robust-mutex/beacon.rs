//! The tree beacon of `run --kill-tree`: an OFD read lock on one byte of
//! the lock file, held by COMMAND's whole tree, that a later `run` waits
//! to see released before it takes the lock.

use crate::signals::pending_signal;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use std::ffi::c_int;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The byte of a lock file whose OFD read lock marks a living process tree
/// of `run --kill-tree`: far past any lock file's end and never written.
/// The library locks files only with flock(2), which fcntl locks ignore.
const TREE_BEACON: i64 = 1 << 62;

/// An OFD lock request on [`TREE_BEACON`] (`F_RDLCK` or `F_WRLCK`).
fn beacon_lock(kind: c_int) -> nix::libc::flock {
    // nix takes libc's `struct flock` as it is. l_pid must be 0 for OFD
    // locks; the constants are small (0..=2), so the casts never wrap.
    nix::libc::flock {
        l_type: kind as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: TREE_BEACON,
        l_len: 1,
        l_pid: 0,
    }
}

/// Opens PATH again and read-locks its tree beacon on that new open file
/// description. Every process that inherits the descriptor shares the
/// lock, which the kernel drops when the last of them has closed it or
/// died: COMMAND's whole tree in its PID namespace.
pub fn tree_beacon(path: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let fd = OwnedFd::from(f);
    fcntl(&fd, FcntlArg::F_OFD_SETLK(&beacon_lock(nix::libc::F_RDLCK)))?;
    Ok(fd)
}

/// How long [`wait_for_trees`] waits at most, without a deadline, before
/// it lets `run` go on with a word.
const TREE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How [`wait_for_trees`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trees {
    /// No tree is left (the beacon was free).
    Gone,
    /// A signal arrived (its caller sees it pending).
    Signalled,
    /// The deadline passed (at once for a deadline of now) with the beacon
    /// still held.
    Deadline,
    /// No deadline, and the beacon was still held after this long
    /// ([`TREE_PATIENCE`]).
    Patience(std::time::Duration),
}

/// Waits until no process tree of an earlier `run --kill-tree` on PATH is
/// left: a holder that was SIGKILLed lost its lock a moment before the
/// kernel killed its namespace (see `tree`). Returns at once when there is
/// none (one uncontended fcntl); else looks again until `deadline`
/// (`--timeout`'s; now: look once), or for [`TREE_PATIENCE`] without one.
/// Any fcntl lock on the beacon's byte holds it up, whoever took it.
///
/// # Errors
/// Opening PATH again, or an fcntl error other than a conflict.
pub fn wait_for_trees(path: &Path, deadline: Option<std::time::Instant>) -> io::Result<Trees> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let probe = beacon_lock(nix::libc::F_WRLCK);
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        match fcntl(&f, FcntlArg::F_OFD_SETLK(&probe)) {
            // Ours now, and released when `f` closes.
            Ok(_) => return Ok(Trees::Gone),
            Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if pending_signal().is_some() {
            return Ok(Trees::Signalled);
        }
        let now = std::time::Instant::now();
        match deadline {
            Some(d) if now >= d => return Ok(Trees::Deadline),
            Some(d) => pause = pause.min(d - now),
            None if now - start >= TREE_PATIENCE => {
                return Ok(Trees::Patience(TREE_PATIENCE));
            }
            None => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(5));
    }
}
