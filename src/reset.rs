//! The way back from a broken mutex that loses nothing: [`reset()`].
//!
//! Re-initialising a mutex in place while other processes hold handles, or
//! sleep in `lock`, is not safe. A reset instead builds a fresh file beside
//! the old one (unnamed, with `O_TMPFILE`), copies the value, the owner record
//! and the counters, gives it the next generation number and a lock word in
//! the owner-died state, and publishes it atomically with `rename`. The old
//! file is marked RETIRED; handles that meet it (NotRecoverable, or woken
//! from a stuck wait with EOWNERDEAD) see that the path names another inode
//! and move to the new file. The first locker of the new file gets
//! [`Acquired::OwnerDied`](crate::Acquired::OwnerDied), so the application's
//! repair code runs.

use crate::error::Error;
use crate::file;
use crate::file::checks::{self, Found};
use crate::file::init::{Fill, MAIN_DIED, Prepared, prepare_new_file, publish_prepared};
use crate::file::layout::{self, DataLayout, LockKind};
use crate::options::{OpenOptions, Spec};
use crate::registry;
use crate::status::{self, LockState};
use crate::sys;
use std::mem::offset_of;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a reset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResetOutcome {
    /// The generation of the new file.
    pub generation: u64,
    /// The state the old mutex was in ([`LockState::NotRecoverable`] for a
    /// remnant: it held no usable lock).
    pub previous_state: LockState,
    /// `Some(length)` when the old file was only what was left of a lock
    /// file (empty, cut short, or a crashed creator's leftover), replaced
    /// with `force`.
    pub remnant_len: Option<u64>,
    /// `Some(version)` when the old file was of an earlier format version
    /// (1), converted to this build's: see [`reset()`].
    pub migrated_from: Option<u32>,
    /// A forced conversion: how many of the old file's locks (a mutex's
    /// one, a semaphore's permits) version-1 processes still held when it
    /// stopped waiting for them (the reset's timeout,
    /// [`ResetOptions::init_timeout`]). Each such holder's unlock leaves
    /// that lock free, so version-1 processes may go on using the old file
    /// through it: stop them. 0 otherwise.
    pub old_locks_held: usize,
    /// A conversion that found, once it had the version-1 file's lock, that
    /// another reset had converted it meanwhile: it did nothing, and
    /// `generation` and `previous_state` are those of the version-2 file
    /// now at the path, as found then (its state: not before, but now).
    pub converted_by_another: bool,
}

/// Replaces the mutex file at `path` with a fresh one holding the same value.
///
/// Without `force`, only a mutex that is [`LockState::NotRecoverable`] or
/// [`LockState::Stuck`] is reset. With `force`, any mutex is: a live holder
/// and the processes already waiting on the old file then finish on the old
/// file while newcomers use the new one, so force only when you know the
/// holder is gone or harmless.
///
/// With `force`, what is left of a lock file is replaced too, so that no
/// operator ever needs `rm`: an empty file (as flock(1) and `touch` leave),
/// a mutex file cut short (`truncate`), or a crashed creator's leftover.
/// The new file keeps the kind and value layout if the old header still
/// shows them, and is otherwise a plain mutex with no value (what
/// `robust-mutex create` makes); its first locker gets
/// [`Acquired::OwnerDied`](crate::Acquired::OwnerDied). Someone else's data
/// is never replaced.
///
/// A file of format version 1 (written by robust-mutex before version 2,
/// which every open refuses with [`Error::UnsupportedVersion`]) is
/// converted, a semaphore too: the new file keeps its kind, value layout,
/// value (a semaphore: its permits) and counters, and takes the next
/// generation. A free lock (permit), or one busy for a moment (waited for
/// up to [`ResetOptions::init_timeout`]), needs no `force` and converts to
/// a clean one (the value was consistent); a dead holder's needs no `force`
/// and its next taker gets
/// [`Acquired::OwnerDied`](crate::Acquired::OwnerDied); one a live process
/// holds through the timeout needs `force`, as above. The version-1 owner
/// records are not carried (their layout differs). A version-1 process
/// still using the old file finds its lock (every permit) not recoverable,
/// never a lock beside the new one: with `force`, each live holder's lock
/// is waited for after publishing (up to the timeout) and left not
/// recoverable too; [`ResetOutcome::old_locks_held`] counts those still
/// held at the timeout, which version-1 processes may go on using (see
/// `docs/design.md`, "Converting a version-1 file", for every such
/// window). [`ResetOutcome::migrated_from`] says it was a conversion. A file of a newer
/// version is refused ([`Error::UnsupportedVersion`]): a reset never
/// downgrades a file.
///
/// A file owned by another user is refused ([`Error::ForeignOwner`]); an
/// operator opts in with [`ResetOptions::allow_other_owners`]. The new file
/// keeps the old one's owner, group and mode; only root can give it another
/// user's owner, so for anyone else that is [`Error::ResetChangesOwner`].
///
/// The replacement is built unnamed in the same directory, its blocks
/// reserved before it is mapped, and renamed over the path: on any error
/// (a full disk, say) the old file is left exactly as it was.
///
/// # Errors
/// * [`Error::ResetRefused`] for a healthy mutex without `force`;
///   [`Error::ConversionRefused`] for a version-1 file one of whose locks a
///   live process holds through the timeout, without `force`;
/// * [`Error::ResetNeedsForce`] for an empty or truncated file without
///   `force`;
/// * [`Error::ForeignOwner`] for another user's file (see above), and
///   [`Error::ResetChangesOwner`] for one allowed but not root's to reset;
/// * [`Error::ForeignFile`] for someone else's data, and any open error for
///   a whole file that is not a usable mutex file (it must be one), such as
///   [`Error::UnsupportedVersion`] for a newer format version;
/// * [`Error::InvalidOptions`] for a semaphore of this format version
///   (replace it with [`OpenOptions::replace`]);
/// * [`Error::ChangedUnderneath`] when the file was removed, or the path
///   made to name another file, while the reset waited for the file's lock
///   (nothing is changed then);
/// * [`Error::DirectoryNotWritable`] when the caller may not create the
///   replacement in the file's directory;
/// * [`Error::NoSpace`], [`Error::ReadOnlyFilesystem`] or [`Error::Io`] when
///   the new file cannot be built.
///
/// Whatever the error, the file at `path` is as it was.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("m");
/// robust_mutex::SharedMutex::<u64>::open(&path)?;
/// let out = robust_mutex::reset(&path, true)?;
/// assert_eq!(out.generation, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn reset(path: impl AsRef<Path>, force: bool) -> Result<ResetOutcome, Error> {
    ResetOptions::new().force(force).reset(path)
}

/// Options for [`reset()`]: `reset(path, force)` is
/// `ResetOptions::new().force(force).reset(path)`.
///
/// # Examples
/// ```
/// use robust_mutex::ResetOptions;
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("m");
/// # robust_mutex::SharedMutex::<u64>::open(&path)?;
/// // An operator repairing a lock that another user owns.
/// let out = ResetOptions::new()
///     .force(true)
///     .allow_other_owners(true)
///     .reset(&path)?;
/// assert_eq!(out.generation, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResetOptions {
    force: bool,
    allow_other_owners: bool,
    init_timeout: Duration,
}

impl Default for ResetOptions {
    fn default() -> Self {
        ResetOptions::new()
    }
}

impl ResetOptions {
    /// Only broken mutexes, only the caller's own files.
    pub fn new() -> Self {
        ResetOptions {
            force: false,
            allow_other_owners: false,
            init_timeout: OpenOptions::new().init_timeout,
        }
    }

    /// Reset a healthy mutex too, and replace an empty or truncated file
    /// (see [`reset()`]).
    pub fn force(&mut self, force: bool) -> &mut Self {
        self.force = force;
        self
    }

    /// Accept a file owned by another user (default: refuse with
    /// [`Error::ForeignOwner`]); the new file keeps that owner, so only root
    /// can (for anyone else: [`Error::ResetChangesOwner`]).
    pub fn allow_other_owners(&mut self, allow: bool) -> &mut Self {
        self.allow_other_owners = allow;
        self
    }

    /// How long the reset waits for the old file's flock (another reset,
    /// a creator), and a conversion of a version-1 file for each of its
    /// locks (see [`reset()`]); default 5 s, as
    /// [`OpenOptions::init_timeout`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("m");
    /// # robust_mutex::SharedMutex::<u64>::open(&path)?;
    /// use std::time::Duration;
    /// let out = robust_mutex::ResetOptions::new()
    ///     .force(true)
    ///     .init_timeout(Duration::from_secs(30))
    ///     .reset(&path)?;
    /// assert_eq!(out.generation, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn init_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.init_timeout = timeout;
        self
    }

    /// Resets the file at `path` as [`reset()`] describes.
    ///
    /// # Errors
    /// As [`reset()`].
    pub fn reset(&self, path: impl AsRef<Path>) -> Result<ResetOutcome, Error> {
        let path = path.as_ref();
        let mut opts = OpenOptions::new();
        opts.allow_other_owners = self.allow_other_owners;
        opts.init_timeout = self.init_timeout;
        let start = Instant::now();
        // The length of the remnant an earlier look found, if one did.
        let mut remnant_seen: Option<u64> = None;
        loop {
            // Look first, read-only and without mapping: what is at the path?
            let fd = sys::open_existing(path, false).map_err(|e| file::open_error(path, e))?;
            let st = checks::check_file(path, &fd, &opts)?;
            let done = match checks::found_for_reset(path, &fd, &st)? {
                Found::Whole if remnant_seen.is_some() => {
                    // The remnant became a whole lock meanwhile (its creator
                    // finished, or another reset replaced it): that lock is
                    // new and may be held already, so it is never reset here.
                    let (h, _, _) = checks::read_header(path, &fd)?;
                    return Ok(ResetOutcome {
                        generation: h.generation,
                        previous_state: LockState::NotRecoverable,
                        remnant_len: remnant_seen,
                        migrated_from: None,
                        old_locks_held: 0,
                        converted_by_another: false,
                    });
                }
                Found::Whole => {
                    drop(fd);
                    reset_mutex(path, &opts, self.force).transpose()
                }
                Found::Remnant(_) if !self.force => {
                    return Err(Error::ResetNeedsForce {
                        path: path.to_owned(),
                        len: st.size,
                        found: if st.perm() == layout::CREATOR_MODE {
                            "left unfinished by a creator that died"
                        } else if st.size == 0 {
                            "empty"
                        } else {
                            "cut short"
                        },
                    });
                }
                Found::Remnant(_) => {
                    remnant_seen.get_or_insert(st.size);
                    file::init::checkpoint("reset_looked");
                    replace_remnant(path, &fd, &opts).transpose()
                }
            };
            match done {
                Some(r) => return r.map_err(file::while_doing("reset")),
                // The file changed while we took its flock: look again, a
                // bounded number of times.
                None if start.elapsed() < self.init_timeout => {}
                None => {
                    return Err(Error::InitTimeout {
                        path: path.to_owned(),
                        waited: start.elapsed(),
                    });
                }
            }
        }
    }
}

/// Resets a whole mutex file: open it, judge its state, replace it.
/// `Ok(None)`: it was cut short while we waited for its flock; look again.
fn reset_mutex(
    path: &Path,
    opts: &OpenOptions,
    force: bool,
) -> Result<Option<ResetOutcome>, Error> {
    let spec = Spec {
        any_kind: true,
        migrate: true,
        ..Spec::any_value(LockKind::Mutex)
    };
    let old = file::open(path, opts, &spec)?;
    file::init::checkpoint("reset_opened");
    // One reset at a time: hold the old file's init flock throughout.
    if let Err(e) = file::wait_for_flock(path, &old.fd, opts.init_timeout) {
        registry::detach(old.map);
        return Err(e);
    }
    let result = replace(path, &old, force, opts.init_timeout);
    let _ = sys::funlock(&old.fd);
    registry::detach(old.map);
    result
}

/// Replaces what is left of a lock file (open read-only as `fd`) with a new
/// mutex, under the old file's flock (a live creator, or a flock(1) user,
/// is waited for up to the init timeout), after checking again that the
/// path still names the same file and that it is still a remnant.
/// `Ok(None)`: it changed meanwhile; look again.
fn replace_remnant(
    path: &Path,
    fd: &OwnedFd,
    opts: &OpenOptions,
) -> Result<Option<ResetOutcome>, Error> {
    file::wait_for_flock(path, fd, opts.init_timeout).map_err(|e| match e {
        // Not a creator at work (its mark is 0400): someone else's flock.
        Error::InitTimeout { path, waited }
            if sys::fstat(fd).is_ok_and(|s| s.perm() != layout::CREATOR_MODE) =>
        {
            Error::FlockHeld { path, waited }
        }
        e => e,
    })?;
    let result = (|| {
        let st = checks::check_file(path, fd, opts)?;
        let here = sys::lstat(path).is_ok_and(|now| (now.dev, now.ino) == (st.dev, st.ino));
        let found = checks::found_for_reset(path, fd, &st)?;
        let (Found::Remnant(kept), true) = (found, here && st.nlink > 0) else {
            return Ok(None);
        };
        let (kind, data, generation) = match kept {
            Some(k) if k.kind == layout::Kind::Semaphore => (k.kind, k.layout, 1),
            Some(k) => (k.kind, k.layout, k.generation.max(1) + 1),
            None => (
                layout::Kind::Mutex,
                DataLayout::of::<()>().expect("unit"),
                1,
            ),
        };
        // A remnant holds no owner record, counters or value worth carrying:
        // only the count of resets, one.
        let mut carried = vec![0u8; layout::DATA_MIN_OFFSET - layout::HOT_OFFSET];
        count_reset(&mut carried);
        let fill = if kind == layout::Kind::Semaphore {
            // Every permit free, generation 1: a semaphore's permits have no
            // one lock to report dead (as `OpenOptions::replace`).
            Fill::Fresh
        } else {
            Fill::Replacement {
                generation,
                carried: &carried,
                owner_died: MAIN_DIED,
            }
        };
        // The old mode if it lets the owner read and write (not the 0400
        // mark), else 0600; never execute bits.
        let mode = (st.perm() & 0o666) | 0o600;
        file::init::publish_new_file(path, mode, Some((st.uid, st.gid)), data, kind, &fill)?;
        log::warn!(
            "{}: {} bytes left of a lock file; replaced with a new {kind} lock (generation {generation})",
            path.display(),
            st.size
        );
        Ok(Some(ResetOutcome {
            generation,
            previous_state: LockState::NotRecoverable,
            remnant_len: Some(st.size),
            migrated_from: None,
            old_locks_held: 0,
            converted_by_another: false,
        }))
    })();
    let _ = sys::funlock(fd);
    result
}

/// `Ok(None)`: the file no longer covers the mapping (cut short while we
/// waited for its flock); the caller looks again and finds a remnant.
fn replace(
    path: &Path,
    old: &file::Opened,
    force: bool,
    timeout: Duration,
) -> Result<Option<ResetOutcome>, Error> {
    if old.header.version == layout::MIGRATABLE_VERSION {
        return crate::migrate::migrate(path, old, force, timeout);
    }
    if old.header.kind == layout::Kind::Semaphore.code() {
        // Its permits are per-slot mutexes, which this judge-and-move design
        // does not cover (open handles would not follow either).
        return Err(Error::InvalidOptions {
            reason: "a semaphore is reset by replacing it: OpenOptions::replace(true), then reopen",
        });
    }
    let map = &old.map;
    let now = status::snapshot(map);
    if now.state == LockState::Truncated {
        // Cut short while we waited for the flock: reading the mapping now
        // would fault. The next look sees the remnant.
        return Ok(None);
    }
    if map.state().load(Ordering::Acquire) == layout::STATE_RETIRED {
        // Someone reset it while we waited for the flock.
        return Ok(Some(ResetOutcome {
            generation: now.generation + 1,
            previous_state: now.state,
            remnant_len: None,
            migrated_from: None,
            old_locks_held: 0,
            converted_by_another: false,
        }));
    }
    if !still_at(path, old) {
        return Err(changed_underneath(path));
    }
    if !force && !matches!(now.state, LockState::NotRecoverable | LockState::Stuck) {
        return Err(Error::ResetRefused {
            path: path.to_owned(),
            state: now.state,
        });
    }
    let prepared = prepare_replacement(path, old)?;
    // The hot record (who held it, the hot counts), the cold record,
    // counters and value, as they are now: everything after the mutex (a
    // racy snapshot by design: the mutex is broken or forced).
    let carried = carried_from(old, layout::HOT_OFFSET);
    let kind = layout::Kind::from_code(old.header.kind).unwrap_or(layout::Kind::Mutex);
    let generation = publish_replacement(path, old, prepared, kind, carried, MAIN_DIED)?;
    // Published. Retire the old file and release its waiters.
    map.state().store(layout::STATE_RETIRED, Ordering::Release);
    if now.state == LockState::Stuck {
        // SAFETY: the mutex lies in the live mapping, and `snapshot` found
        // the thread in its lock word gone.
        unsafe { sys::release_dead_owner(map.mutex(), now.lock_word) };
    }
    // Condition waiters asleep on the old file wake and move (after the
    // stuck word's release: a woken waiter must not change that word
    // before the release's compare-and-swap).
    crate::cond::notify(map.cond(), true);
    log::warn!(
        "{}: reset from {} to generation {generation}",
        path.display(),
        now.state
    );
    Ok(Some(ResetOutcome {
        generation,
        previous_state: now.state,
        remnant_len: None,
        migrated_from: None,
        old_locks_held: 0,
        converted_by_another: false,
    }))
}

/// Whether `path` still names the file open as `old`, and that file is
/// still linked. Checked after the wait for its flock and again just before
/// publishing: a reset that finds otherwise gives up
/// ([`Error::ChangedUnderneath`]), for its rename would overwrite the file
/// now at the path (maybe a live lock) or bring back a removed one. (A
/// rename by someone else between the last check and ours is not covered:
/// `rename` cannot be made conditional on the inode it replaces.)
pub(crate) fn still_at(path: &Path, old: &file::Opened) -> bool {
    sys::fstat(&old.fd).is_ok_and(|st| {
        st.nlink > 0 && sys::lstat(path).is_ok_and(|now| (now.dev, now.ino) == (st.dev, st.ino))
    })
}

/// [`Error::ChangedUnderneath`] for `path`.
pub(crate) fn changed_underneath(path: &Path) -> Error {
    Error::ChangedUnderneath {
        path: path.to_owned(),
    }
}

/// The bytes of `old` from the hot record (right after the mutex) to the end of the value, as
/// [`Fill::Replacement`] takes them, copied from offset `from` on (those
/// before it zero).
pub(crate) fn carried_from(old: &file::Opened, from: usize) -> Vec<u8> {
    let len = old.header.file_len as usize;
    let mut carried = vec![0u8; len - layout::HOT_OFFSET];
    let skip = from - layout::HOT_OFFSET;
    // SAFETY: the mapping is `file_len` bytes long (checked at open) and
    // `from` lies in it; the reads race only with a holder's writes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            old.map.data(from as u64).cast_const(),
            carried[skip..].as_mut_ptr(),
            len - from,
        )
    };
    carried
}

/// Makes the replacement of `old` ([`prepare_new_file`]): same owner,
/// room for the same layout.
pub(crate) fn prepare_replacement(path: &Path, old: &file::Opened) -> Result<Prepared, Error> {
    prepare_new_file(
        path,
        Some((old.stat.uid, old.stat.gid)),
        old.header.data_layout(),
    )
}

/// Publishes `prepared` ([`prepare_replacement`]) over `path` as the
/// replacement of `old`: a `kind` lock holding `carried` (see
/// [`carried_from`]) with one more reset counted, the next generation and
/// the mutexes `owner_died` names ([`Fill::Replacement`]) owner-dead, in
/// `old`'s mode. Returns the new generation. [`Error::ChangedUnderneath`]
/// if `path` no longer names `old` ([`still_at`]).
pub(crate) fn publish_replacement(
    path: &Path,
    old: &file::Opened,
    prepared: Prepared,
    kind: layout::Kind,
    mut carried: Vec<u8>,
    owner_died: u128,
) -> Result<u64, Error> {
    count_reset(&mut carried);
    if !still_at(path, old) {
        return Err(changed_underneath(path));
    }
    let generation = old.header.generation + 1;
    publish_prepared(
        path,
        prepared,
        old.stat.perm(),
        old.header.data_layout(),
        kind,
        &Fill::Replacement {
            generation,
            carried: &carried,
            owner_died,
        },
    )?;
    Ok(generation)
}

/// Adds one to the `resets` counter in `carried` (bytes from the owner
/// record on, as [`Fill::Replacement`] takes them).
fn count_reset(carried: &mut [u8]) {
    let at = layout::COUNTERS_OFFSET - layout::HOT_OFFSET + offset_of!(layout::Counters, resets);
    let n = u64::from_ne_bytes(carried[at..at + 8].try_into().expect("8 bytes")) + 1;
    carried[at..at + 8].copy_from_slice(&n.to_ne_bytes());
}
