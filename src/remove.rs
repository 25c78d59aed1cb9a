//! [`remove`]: unlink a lock file of any kind, and nothing else; never a
//! lock that is held or whose state a removal would discard.

use crate::error::Error;
use crate::file::{self, io_err, open_error};
use crate::inspect::{self, Inspected};
use crate::status::LockState;
use crate::sys;
use std::path::Path;

/// Removes the name `path` if it is a lock file of this crate that may go:
/// `RemoveOptions::new().remove(path)`. See [`RemoveOptions::remove`].
///
/// # Errors
/// As [`RemoveOptions::remove`]; the file is left untouched.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("m");
/// robust_mutex::SharedMutex::<u64>::open(&path)?;
/// robust_mutex::remove(&path)?;
/// assert!(!path.exists());
///
/// std::fs::write(&path, "not a lock")?;
/// assert!(robust_mutex::remove(&path).is_err());
/// assert!(path.exists()); // untouched
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remove(path: impl AsRef<Path>) -> Result<(), Error> {
    RemoveOptions::new().remove(path)
}

/// How [`remove`] decides, in the builder style of [`OpenOptions`](crate::OpenOptions).
///
/// By default a lock file is removed only when that loses nothing: it is
/// ours (owned by this user), of this crate, and either free or what a
/// crashed creator left. [`force`](Self::force) removes it whatever its
/// state; [`allow_other_owners`](Self::allow_other_owners) accepts another
/// user's file.
///
/// # Examples
/// ```
/// use robust_mutex::{Error, LockState, RemoveOptions, SharedMutex};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("m");
/// let m = SharedMutex::<u64>::open(&path)?;
/// let g = m.lock()?;
/// let e = robust_mutex::remove(&path).unwrap_err();
/// assert!(matches!(e, Error::RemoveRefused { state: LockState::Locked, .. }));
/// RemoveOptions::new().force(true).remove(&path)?;
/// assert!(!path.exists());
/// # drop(g);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct RemoveOptions {
    force: bool,
    allow_other_owners: bool,
}

impl RemoveOptions {
    /// Refuse held and broken locks and other users' files (the default).
    pub fn new() -> Self {
        RemoveOptions::default()
    }

    /// Remove the lock file whatever its state, and even when it cannot be
    /// judged (another PID namespace, corrupt, cut short with our header):
    /// a live holder and its waiters go on with the unlinked file while the
    /// next opener makes a new one, and an owner death's repair is skipped.
    pub fn force(&mut self, force: bool) -> &mut Self {
        self.force = force;
        self
    }

    /// Accept a file owned by another user (default: refuse with
    /// [`Error::ForeignOwner`], as an open does).
    pub fn allow_other_owners(&mut self, allow: bool) -> &mut Self {
        self.allow_other_owners = allow;
        self
    }

    /// Removes the name `path` if it is a lock file of this crate, of any
    /// kind ([`SharedMutex`](crate::SharedMutex) of any `T`,
    /// [`ReentrantMutex`](crate::ReentrantMutex),
    /// [`SharedSemaphore`](crate::SharedSemaphore), a pymutex-format
    /// [`BareMutex`](crate::BareMutex) file, or what a crashed creator left),
    /// that this user owns and that may go. Handles that are open keep
    /// working on the unlinked file; a later `open` creates a new one.
    ///
    /// It judges the file read-only, as [`inspect`](crate::inspect()) does,
    /// and without [`force`](Self::force) refuses, with
    /// [`Error::RemoveRefused`], a lock that is
    /// * [`Locked`](LockState::Locked): the next opener would make a new
    ///   file and take a second lock while this one is held;
    /// * [`OwnerDead`](LockState::OwnerDead): the next locker would run the
    ///   application's repair; removing discards that;
    /// * [`NotRecoverable`](LockState::NotRecoverable) or
    ///   [`Stuck`](LockState::Stuck): the state behind it was never
    ///   repaired; a new file would start clean on it. Reset it instead
    ///   ([`reset`](crate::reset())).
    ///
    /// For a semaphore, any permit in one of these states counts. Between
    /// the look and the unlink another process may lock it: a removal
    /// cannot be atomic with a check of the lock.
    ///
    /// # Errors
    /// [`Error::RemoveRefused`], [`Error::ForeignOwner`], any error of
    /// [`inspect_file`](crate::inspect_file) except
    /// [`Error::BeingCreated`] (those only without `force`),
    /// [`Error::NotFound`], [`Error::Symlink`], [`Error::NotRegularFile`],
    /// [`Error::ForeignFile`] (not one of our files), [`Error::Io`]. Nothing
    /// is removed.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("s");
    /// robust_mutex::SharedSemaphore::open(&path, 2)?;
    /// robust_mutex::RemoveOptions::new().remove(&path)?;
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.remove_look(path.as_ref(), 0, std::time::Instant::now())
    }

    /// [`remove`](Self::remove), after `looks` looks at a file that a reset
    /// replaced while we looked; the first look began at `start`.
    fn remove_look(&self, path: &Path, looks: u32, start: std::time::Instant) -> Result<(), Error> {
        let fd = sys::open_existing(path, false).map_err(|e| open_error(path, e))?;
        // A regular file, ours unless allowed, on a local filesystem.
        let mut opts = crate::OpenOptions::new();
        opts.allow_other_owners(self.allow_other_owners);
        let st = file::checks::check_file(path, &fd, &opts)?;
        if !self.force {
            match inspect::look(path, &fd) {
                Ok(Some(i)) => refuse_unless_free(path, &i)?,
                // A reset replaced it while we looked: judge what the path
                // names now.
                Ok(None) if looks < 16 => return self.remove_look(path, looks + 1, start),
                Ok(None) => {
                    return Err(Error::InitTimeout {
                        path: path.to_owned(),
                        waited: start.elapsed(),
                    });
                }
                // A leftover of a crashed creator, or a creation at work.
                Err(Error::BeingCreated { .. }) => {
                    if !abandoned_creation(path, &fd)? {
                        if looks < 16 {
                            return self.remove_look(path, looks + 1, start);
                        }
                        return Err(Error::BeingCreated {
                            path: path.to_owned(),
                        });
                    }
                    // We hold its flock now (until `fd` closes, after the
                    // unlink): no creator of ours can start on it.
                }
                Err(e) => return Err(e),
            }
        }
        let checked = match file::checks::check_ours(path) {
            Ok(st) => st,
            Err(Error::ForeignFile { .. }) if crate::bare::is_bare_file(path)? => {
                sys::lstat(path).map_err(io_err("lstat", path))?
            }
            Err(e) => return Err(e),
        };
        // Unlink only the file we judged: the name must still lead to it.
        let now = sys::lstat(path).map_err(io_err("lstat", path))?;
        if (now.dev, now.ino) != (st.dev, st.ino) || (checked.dev, checked.ino) != (st.dev, st.ino)
        {
            return Err(Error::ForeignFile {
                path: path.to_owned(),
            });
        }
        // Moved aside, checked, then unlinked: a reset's rename in between
        // cannot make us unlink its replacement (see sys::unlink_if_same).
        if !sys::unlink_if_same(path, st.dev, st.ino).map_err(io_err("unlink", path))? {
            return Err(Error::ForeignFile {
                path: path.to_owned(),
            });
        }
        Ok(())
    }
}

/// Whether the file with the creator's mark, open as `fd`, was abandoned
/// by its creator, judged under its flock, which stays held (`fd` must stay
/// open until the unlink). A creator of ours holds the flock while it works
/// and then attaches to the file it made: unlinking under it would leave it
/// a lock nobody else finds, and the next opener a second one. A pymutex
/// creator takes no flock; a bare-sized file (1 to [`BARE_SIZE`] bytes) is
/// only taken once its last change is older than the init timeout.
/// `Ok(false)`: it is no longer marked; look again.
///
/// [`BARE_SIZE`]: crate::BARE_SIZE
fn abandoned_creation(path: &Path, fd: &std::os::fd::OwnedFd) -> Result<bool, Error> {
    let busy = || Error::BeingCreated {
        path: path.to_owned(),
    };
    if !sys::try_flock_exclusive(fd).map_err(io_err("flock", path))? {
        return Err(busy());
    }
    let st = sys::fstat(fd).map_err(io_err("fstat", path))?;
    if st.perm() != file::layout::CREATOR_MODE || st.nlink == 0 {
        // Finished (or taken over and removed) before we got the flock.
        let _ = sys::funlock(fd);
        return Ok(false);
    }
    if st.size > 0 && st.size <= crate::BARE_SIZE as u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let age = now.saturating_sub(u64::try_from(st.ctime).unwrap_or(0));
        // Whole seconds: more than the timeout, counting the part second.
        if age <= crate::OpenOptions::new().init_timeout.as_secs() {
            let _ = sys::funlock(fd);
            return Err(busy());
        }
    }
    Ok(true)
}

/// Refuses a lock that is not free (see [`RemoveOptions::remove`]).
fn refuse_unless_free(path: &Path, i: &inspect::Inspection) -> Result<(), Error> {
    let state = i.lock.state();
    if state == LockState::Unlocked {
        return Ok(());
    }
    Err(Error::RemoveRefused {
        path: path.to_owned(),
        state,
        holder: i.lock.holder(),
        kind: match &i.lock {
            Inspected::Mutex(_) => i.file.as_ref().map(|f| f.kind),
            Inspected::Semaphore(_) => Some(crate::LockKind::Semaphore),
        },
    })
}
