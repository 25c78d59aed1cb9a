//! [`inspect`]: a lock file's state, read from its path without writing
//! anything.
//!
//! An open handle needs write access: it may create the file, take over a
//! crashed creator's leftover, or repair a file from an earlier boot. A
//! monitor needs none of that. `inspect` opens the file `O_RDONLY`, checks
//! it with `fstat` and `pread` exactly as an opener would (type,
//! filesystem, size, header, creator's mark), and only then maps the part
//! it reads with `PROT_READ`: the header, the lock and its owner record and
//! counters, or a semaphore's slots (never the value, whose pages may be
//! holes that a read fault on a full tmpfs turns into SIGBUS). It takes no
//! `flock`, joins no registry and changes nothing, whoever owns the file:
//! read permission suffices, and a read-only mount too.

use crate::bare;
use crate::error::Error;
use crate::file::checks::{
    check_file, check_permit_mutexes, crashed_creator_leftover, invalid_to_error, read_header,
    replaced_by_reset,
};
use crate::file::layout::{self, Kind, LockKind};
use crate::file::{io_err, open_error};
use crate::identity;
use crate::options::OpenOptions;
use crate::semaphore::{self, SemaphoreStatus};
use crate::status::{self, FileInfo, LockState, OwnerInfo, Status};
use crate::sys;
use memmap2::MmapOptions;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Instant;

/// Everything [`inspect_file`] learned about a lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The lock's state: a mutex's (plain, re-entrant or bare) or a
    /// semaphore's.
    pub lock: Inspected,
    /// The header's facts; `None` for a bare (pymutex) file, which has no
    /// header.
    pub file: Option<FileInfo>,
    /// Permission bits of the file (`fstat` of the descriptor read).
    pub mode: u32,
    /// Owner of the file.
    pub uid: u32,
    /// Group of the file.
    pub gid: u32,
    /// Size of the file in bytes.
    pub len: u64,
    /// Device of the file: with `ino`, tells a replacement (a reset) apart.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
}

/// The state [`inspect_file`] read, by kind of lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inspected {
    /// A [`SharedMutex`](crate::SharedMutex),
    /// [`ReentrantMutex`](crate::ReentrantMutex) or
    /// [`BareMutex`](crate::BareMutex) file.
    Mutex(Status),
    /// A [`SharedSemaphore`](crate::SharedSemaphore) file.
    Semaphore(SemaphoreStatus),
}

impl Inspected {
    /// One state for the whole lock: a mutex's own; for a semaphore its
    /// worst permit's, in the order stuck, not-recoverable, owner-dead,
    /// locked (a permit in use), unlocked (every permit free).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Inspected, LockState, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("pool");
    /// let sem = SharedSemaphore::open(&path, 2)?;
    /// let permit = sem.acquire()?;
    /// let i = robust_mutex::inspect_file(&path)?;
    /// assert!(matches!(&i.lock, Inspected::Semaphore(s) if s.available == 1));
    /// assert_eq!(i.lock.state(), LockState::Locked);
    /// # drop(permit);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state(&self) -> LockState {
        match self {
            Inspected::Mutex(s) => s.state,
            Inspected::Semaphore(s) if s.truncated => LockState::Truncated,
            Inspected::Semaphore(s) => [
                (s.stuck, LockState::Stuck),
                (s.not_recoverable, LockState::NotRecoverable),
                (s.owner_dead, LockState::OwnerDead),
                (s.held, LockState::Locked),
            ]
            .into_iter()
            .find_map(|(n, state)| (n > 0).then_some(state))
            .unwrap_or(LockState::Unlocked),
        }
    }

    /// The holder the state is about: a mutex's (live or dead) holder; for
    /// a semaphore, that of the first permit in the state [`state`](Self::state)
    /// names.
    pub(crate) fn holder(&self) -> Option<OwnerInfo> {
        match self {
            Inspected::Mutex(s) => s.owner.clone(),
            Inspected::Semaphore(s) => {
                let state = self.state();
                s.permits
                    .iter()
                    .find(|p| p.state == state)
                    .and_then(|p| p.owner.clone())
            }
        }
    }
}

/// Reads the state of the mutex file at `path` without locking it and
/// without writing anything: [`inspect_file`] for a
/// [`SharedMutex`](crate::SharedMutex),
/// [`ReentrantMutex`](crate::ReentrantMutex) or bare
/// ([`BareMutex`](crate::BareMutex)) file.
///
/// Works with read permission alone and on a read-only mount, for a file
/// of any owner. A file from an earlier boot is reported as its next
/// opener will leave it (owner-dead: the next locker repairs), without the
/// repair.
///
/// # Errors
/// [`Error::KindMismatch`] for a semaphore file (see
/// [`inspect_semaphore`]); otherwise as [`inspect_file`].
///
/// # Examples
/// ```
/// use robust_mutex::{Error, LockState, SharedMutex};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("job.lock");
/// let m = SharedMutex::<u64>::open(&path)?;
/// let g = m.lock()?;
/// let s = robust_mutex::inspect(&path)?;
/// assert_eq!(s.state, LockState::Locked);
/// assert_eq!(s.owner.unwrap().pid, std::process::id());
/// # drop(g);
///
/// // What a crashed creator leaves is reported, not taken over.
/// # let left = dir.path().join("left");
/// std::fs::File::create(&left)?;
/// # use std::os::unix::fs::PermissionsExt;
/// std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o400))?;
/// assert!(matches!(robust_mutex::inspect(&left), Err(Error::BeingCreated { .. })));
/// assert_eq!(std::fs::metadata(&left)?.len(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Status, Error> {
    let path = path.as_ref();
    match inspect_file(path)?.lock {
        Inspected::Mutex(s) => Ok(s),
        Inspected::Semaphore(_) => Err(Error::KindMismatch {
            path: path.to_owned(),
            found: LockKind::Semaphore,
            expected: LockKind::Mutex,
        }),
    }
}

/// Reads the state of the semaphore file at `path` without acquiring
/// anything and without writing anything; see [`inspect`].
///
/// # Errors
/// [`Error::KindMismatch`] for a mutex file; otherwise as [`inspect_file`].
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("pool");
/// let sem = robust_mutex::SharedSemaphore::open(&path, 3)?;
/// let p = sem.acquire()?;
/// let s = robust_mutex::inspect_semaphore(&path)?;
/// assert_eq!((s.total, s.available, s.held), (3, 2, 1));
/// # drop(p);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect_semaphore(path: impl AsRef<Path>) -> Result<SemaphoreStatus, Error> {
    let path = path.as_ref();
    let i = inspect_file(path)?;
    match i.lock {
        Inspected::Semaphore(s) => Ok(s),
        Inspected::Mutex(_) => Err(Error::KindMismatch {
            path: path.to_owned(),
            found: i.file.map_or(LockKind::Mutex, |f| f.kind),
            expected: LockKind::Semaphore,
        }),
    }
}

/// Looks at a replaced (reset) file at most this many times in a row.
const MAX_LOOKS: u32 = 16;

/// Reads everything about the lock file at `path` without writing
/// anything: the lock's state (any kind), the header's facts, and the
/// file's mode, owner, size and identity.
///
/// It opens the file `O_RDONLY|O_NOFOLLOW|O_CLOEXEC`, checks it with
/// `fstat` and `pread` as [`OpenOptions::open`] does, and maps only what it
/// reads, `PROT_READ`. It takes no lock of any kind (no `flock` either),
/// and never creates, takes over, converts or repairs a file. Reading a
/// file owned by another user is allowed (nothing is written), but its
/// state is only as trustworthy as whoever can write it.
///
/// # Errors
/// The typed errors of an open, and the file is left untouched:
/// [`Error::BeingCreated`] for a file that carries the creator's mark (a
/// creation in progress, or a crashed creator's leftover);
/// [`Error::NotFound`], [`Error::Symlink`], [`Error::NotRegularFile`],
/// [`Error::PermissionDenied`] (no read permission),
/// [`Error::UnsupportedFilesystem`], [`Error::Empty`], [`Error::ForeignFile`],
/// [`Error::Truncated`], [`Error::UnsupportedVersion`],
/// [`Error::AbiMismatch`], [`Error::Corrupt`],
/// [`Error::PidNamespaceMismatch`] (its TIDs would be read in the wrong
/// namespace), [`Error::InitTimeout`] (replaced by resets again and again
/// while read), [`Error::Io`].
///
/// # Examples
/// ```
/// use robust_mutex::{Inspected, LockKind, LockState};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("job.lock");
/// robust_mutex::SharedMutex::<[u64; 2]>::open(&path)?;
/// let i = robust_mutex::inspect_file(&path)?;
/// assert_eq!(i.lock.state(), LockState::Unlocked);
/// assert!(matches!(i.lock, Inspected::Mutex(_)));
/// let file = i.file.unwrap();
/// assert_eq!((file.kind, file.value_size), (LockKind::Mutex, 16));
/// assert_eq!(i.mode, 0o600);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect_file(path: impl AsRef<Path>) -> Result<Inspection, Error> {
    let path = path.as_ref();
    let start = Instant::now();
    let mut looks = 0;
    loop {
        let fd = sys::open_existing(path, false).map_err(|e| open_error(path, e))?;
        if let Some(i) = look(path, &fd)? {
            return Ok(i);
        }
        looks += 1;
        if looks >= MAX_LOOKS {
            return Err(Error::InitTimeout {
                path: path.to_owned(),
                waited: start.elapsed(),
            });
        }
    }
}

/// One read-only look at `path`, open as `fd`. `None`: a reset replaced the
/// file between our open and now; look at the path again.
pub(crate) fn look(path: &Path, fd: &OwnedFd) -> Result<Option<Inspection>, Error> {
    let marked = |st: &sys::FileStat| st.perm() == layout::CREATOR_MODE;
    let unmarked_before = sys::fstat(fd).is_ok_and(|st| !marked(&st));
    match look_once(path, fd) {
        // A non-root takeover lifts the creator's mark for one open
        // (file::open::writable_fd): the empty or zeroed file we read may
        // be that moment. The mark back now: it is a creation.
        Err(Error::Empty { .. } | Error::ForeignFile { .. })
            if unmarked_before && sys::fstat(fd).is_ok_and(|st| marked(&st)) =>
        {
            Err(Error::BeingCreated {
                path: path.to_owned(),
            })
        }
        other => other,
    }
}

/// [`look`], without the second look at the mode.
fn look_once(path: &Path, fd: &OwnedFd) -> Result<Option<Inspection>, Error> {
    let mut any_owner = OpenOptions::new();
    any_owner.allow_other_owners(true);
    let st = check_file(path, fd, &any_owner)?;
    let foreign = || Error::ForeignFile {
        path: path.to_owned(),
    };
    let being_created = || Error::BeingCreated {
        path: path.to_owned(),
    };
    if st.perm() == layout::CREATOR_MODE {
        // Never mapped: a creator sizes the file before it writes it, and
        // its pages may be holes.
        return Err(
            if crashed_creator_leftover(path, fd, st.size)?
                || bare::creator_leftover(path, fd, st.size)?
            {
                being_created()
            } else {
                foreign()
            },
        );
    }
    if st.size == 0 {
        // As an opener decides: not our mark, so flock(1)'s or touch's file,
        // unless a takeover that had lifted the mark finished meanwhile.
        crate::file::init::checkpoint("inspect_empty_seen");
        if crate::file::open::changed_since(path, fd, &st)? {
            return Ok(None);
        }
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    if st.perm() & 0o200 == 0 {
        return Err(foreign()); // read-only, but not the creator's mark
    }
    let inspection = |lock, file| Inspection {
        lock,
        file,
        mode: st.perm(),
        uid: st.uid,
        gid: st.gid,
        len: st.size,
        dev: st.dev,
        ino: st.ino,
    };
    if bare::holds_mutex(path, fd, st.size)? {
        let map = MmapOptions::new()
            .len(bare::BARE_SIZE)
            .map_raw_read_only(fd)
            .map_err(io_err("mmap", path))?;
        if sys::fstat(fd).is_ok_and(|now| now.size < bare::BARE_SIZE as u64) {
            return Ok(None); // cut short this instant: look again
        }
        // SAFETY: the file is exactly one mutex (checked with pread), and
        // still covers the live mapping (just checked).
        let s = unsafe { bare::status_at(map.as_mut_ptr().cast()) };
        return Ok(Some(inspection(Inspected::Mutex(s), None)));
    }
    let (header, mutex, n) = read_header(path, fd)?;
    if st.size < layout::DATA_MIN_OFFSET as u64 {
        // As an opener decides: a cut-short mutex file still starts with (a
        // prefix of) our magic.
        if !layout::MAGIC.starts_with(&header.magic[..n.min(8)]) {
            return Err(foreign());
        }
        return Err(Error::Truncated {
            path: path.to_owned(),
            len: st.size,
            needed: layout::DATA_MIN_OFFSET as u64,
        });
    }
    if header.magic == layout::MAGIC && header.state == layout::STATE_INIT {
        // Writable yet not ready: a non-root takeover lifts the mark for
        // one open (file::open::writable_fd).
        return Err(being_created());
    }
    let kinds = [Kind::Mutex, Kind::Reentrant, Kind::Semaphore];
    layout::validate(&header, st.size, None, &kinds, &mutex)
        .map_err(|i| invalid_to_error(path, i, header.data_layout()))?;
    let is_semaphore = header.kind == Kind::Semaphore.code();
    if is_semaphore {
        check_permit_mutexes(path, fd, &header)?;
    }
    if header.state == layout::STATE_RETIRED || st.nlink == 0 {
        replaced_by_reset(path, &st)?; // as an opener decides
        return Ok(None);
    }
    let ours = identity::me().pidns_ino;
    if header.pidns_ino != ours {
        return Err(Error::PidNamespaceMismatch {
            path: path.to_owned(),
            file_ns: header.pidns_ino,
            ours,
        });
    }
    // Map only what is read: the header, lock, owner record and counters,
    // and a semaphore's slots; never the value (its pages may be holes).
    let len = if is_semaphore {
        (header.data_offset + header.data_size) as usize
    } else {
        layout::DATA_MIN_OFFSET
    };
    let map = MmapOptions::new()
        .len(len)
        .map_raw_read_only(fd)
        .map_err(io_err("mmap", path))?;
    // The size again, right before the reads: a truncation since the checks
    // above would make them fault. (One after this check still would.)
    if sys::fstat(fd).is_ok_and(|now| now.size < len as u64) {
        return Ok(None);
    }
    let base = map.as_mut_ptr();
    let stale_boot = header.boot_id != identity::boot_id();
    let lock = if is_semaphore {
        // SAFETY: a validated READY semaphore file whose slots end at `len`,
        // mapped (read-only) over that length, which the file covers.
        let s =
            unsafe { semaphore::snapshot_at(base, header.data_offset as usize, header.permits()) };
        Inspected::Semaphore(if stale_boot { after_reboot_sem(s) } else { s })
    } else {
        // SAFETY: a validated READY mutex or re-entrant file, mapped
        // (read-only) over its first DATA_MIN_OFFSET bytes, which the file
        // covers.
        let s = unsafe { status::snapshot_at(base) };
        Inspected::Mutex(if stale_boot { after_reboot(s, base) } else { s })
    };
    Ok(Some(inspection(lock, Some(status::file_info_of(&header)))))
}

/// A file from an earlier boot, as its next opener leaves it
/// (`file::stale`): the mutex re-initialised and marked owner-dead, so the
/// next locker repairs; the owner records name the holder of the old boot.
fn after_reboot(s: Status, base: *mut u8) -> Status {
    // SAFETY: the mutex and its records lie in the live mapping (see the
    // caller); a racy read, as any status read.
    let records =
        unsafe { crate::owner::Records::read(base.wrapping_add(layout::MUTEX_OFFSET).cast()) };
    Status {
        state: LockState::OwnerDead,
        owner: records.owner(),
        ..s
    }
}

/// A semaphore file from an earlier boot, as its next opener leaves it:
/// every permit re-initialised, the ones that were held marked owner-dead.
fn after_reboot_sem(mut s: SemaphoreStatus) -> SemaphoreStatus {
    for p in &mut s.permits {
        if p.lock_word & sys::FUTEX_TID_MASK != 0 {
            p.state = LockState::OwnerDead;
        } else {
            p.state = LockState::Unlocked;
            p.owner = None;
        }
    }
    s.recount()
}
