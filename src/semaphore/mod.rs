//! [`SharedSemaphore`]: a crash-safe counting semaphore in a file.
//!
//! POSIX semaphores are not crash-safe: a holder that dies keeps its permit
//! for ever. Here each of the N permits is a *slot* (`layout::Slot`): its
//! own robust ERRORCHECK mutex and owner record. Holding a permit is holding
//! its slot's mutex, so the kernel gives a dead holder's permit back, and the
//! next taker of that slot is told, as [`Acquired::OwnerDied`](crate::Acquired::OwnerDied), with the same
//! recovery contract as the mutex.
//!
//! # Counters
//!
//! Each permit counts its acquisitions in its own hot record (in its
//! mutex's cache line, written only by its holder); the file's cold
//! counters, which several permit holders share, are updated with atomic
//! adds (`AtomicU64::from_ptr` on the mapped fields) only on rare paths (a
//! hot count's wrap, an owner death, a recovery). A status reads them with
//! volatile loads (it may read a `PROT_READ` mapping; see `snapshot_at`)
//! and adds every permit's hot counts.

mod acquire;
#[cfg(feature = "async")]
mod acquire_async;
mod permit;

#[cfg(feature = "async")]
pub use acquire_async::{AcquireFuture, AsyncPermit};
pub use permit::PermitGuard;

use crate::error::Error;
use crate::file;
use crate::file::layout::{self, Counters, DataLayout, Kind, Slot};
use crate::options::{OpenOptions, Spec};
use crate::owner::Records;
use crate::raw::{Books, Name, RawMutex};
use crate::registry::{self, Mapping};
use crate::status::{self, FileInfo, LockState, OwnerInfo};
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

/// The most permits a semaphore can have: a blocked acquire sleeps on every
/// permit and a cancel token at once, and `futex_waitv` takes at most 128
/// words.
pub const MAX_PERMITS: usize = 127;

/// A crash-safe counting semaphore with N permits, named by a file path
/// (every permit starts free).
///
/// A permit whose holder dies (SIGKILL, crash, thread exit) comes back, and
/// its next taker gets [`Acquired::OwnerDied`](crate::Acquired::OwnerDied) with the dead holder's record:
/// repair whatever the application associates with that permit, then
/// [`Recovery::mark_consistent`](crate::Recovery::mark_consistent). A recovery dropped without it loses
/// that one permit: the semaphore goes on with one permit fewer, which
/// [`SemaphoreStatus::not_recoverable`] reports.
///
/// Waiting sleeps in the kernel (one `futex_waitv` over every permit and the
/// optional cancel token; Linux 5.16+): no polling, no CPU spent while
/// waiting, and a waiter is woken as soon as a permit is released or its
/// holder dies. Taking a free permit makes no system call. A handle is
/// `Send + Sync`; all handles of one file in one process share a mapping.
///
/// The file holds, after the usual header, one 192-byte slot per permit: a
/// robust process-shared ERRORCHECK mutex and its holder's record (see
/// `docs/design.md`). At most [`MAX_PERMITS`] permits.
///
/// # Truncation
///
/// The file is mapped into every process that uses it. If someone with
/// write access truncates it to nothing (`truncate -s 0`, `> file`) while
/// it is in use, every process that then touches the mapping (to lock,
/// unlock or read) is killed by SIGBUS: a library cannot catch that signal
/// (the `robust-mutex` command does, and says the file was truncated).
/// Truncating it to a few bytes instead zeroes the lock in place, and what
/// can be detected is reported:
/// * a waiter that gets the lock after waiting finds the header no longer
///   READY, lets the lock go and returns [`LockError::FileChanged`](crate::LockError::FileChanged)
///   instead of a lock that protects nothing (an uncontended lock is not
///   checked: the fast path reads no header);
/// * the holder's [`PermitGuard::unlock`] returns [`LockError::NotOwner`](crate::LockError::NotOwner)
///   (dropping the guard logs it) and touches nothing, since the lock word
///   no longer names it.
///
/// Give write access to a lock file only to its users. Replace a truncated
/// semaphore with `OpenOptions::replace(true)`.
///
/// # Examples
/// ```
/// use robust_mutex::{Acquired, SharedSemaphore};
/// # let dir = tempfile::tempdir()?;
/// let sem = SharedSemaphore::open(dir.path().join("pool"), 3)?;
/// let permit = match sem.acquire()? {
///     Acquired::Clean(p) => p,
///     Acquired::OwnerDied(r) => {
///         // A holder of this permit died: repair what it was doing.
///         if let Some(o) = r.previous_owner() {
///             eprintln!("pid {} died holding permit {}", o.pid, r.guard().slot());
///         }
///         r.mark_consistent()
///     }
/// };
/// assert_eq!(sem.status().available, 2);
/// drop(permit);
/// assert_eq!(sem.status().available, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedSemaphore {
    path: PathBuf,
    map: Option<Arc<Mapping>>,
    data_offset: u64,
    permits: usize,
}

impl std::fmt::Debug for SharedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSemaphore")
            .field("path", &self.path)
            .field("permits", &self.permits)
            .finish_non_exhaustive()
    }
}

/// The state of one permit, from a racy snapshot of its lock word.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermitStatus {
    /// Which permit (slot), `0..total`.
    pub slot: usize,
    /// Free, held, held by a dead owner, lost, or stuck.
    pub state: LockState,
    /// The holder (Locked), the dead holder (OwnerDead, Stuck), or `None`.
    pub owner: Option<OwnerInfo>,
    /// The raw futex lock word (owner TID and flag bits; `0x8000_0000`, when
    /// set, means someone sleeps waiting for a permit), for diagnostics.
    pub lock_word: u32,
}

/// A snapshot of a semaphore, taken without acquiring anything.
///
/// `available + held + owner_dead + not_recoverable + stuck == total`,
/// unless `truncated`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreStatus {
    /// Number of permits.
    pub total: usize,
    /// Permits free right now.
    pub available: usize,
    /// Permits held by live threads.
    pub held: usize,
    /// The holders of the held permits, from their owner records (a holder
    /// that has just taken its permit may not have written its record yet).
    pub holders: Vec<OwnerInfo>,
    /// Permits whose holder died; the next taker recovers them
    /// ([`Acquired::OwnerDied`](crate::Acquired::OwnerDied)).
    pub owner_dead: usize,
    /// Permits lost to an abandoned recovery; acquire skips them.
    pub not_recoverable: usize,
    /// Permits whose lock word names a thread that is gone without the
    /// kernel having marked it dead (see [`LockState::Stuck`]); they never
    /// come back by themselves.
    pub stuck: usize,
    /// Every permit, in slot order.
    pub permits: Vec<PermitStatus>,
    /// The file's counters: acquisitions (`contended`: those that had to
    /// sleep), owner deaths reported, recoveries completed.
    pub counters: crate::Counters,
    /// Only from a handle's `status()`: the file was truncated after the
    /// handle mapped it (see [`LockState::Truncated`]). Nothing else was
    /// read: every count is 0 but `total`, and `permits` is empty.
    pub truncated: bool,
}

impl SharedSemaphore {
    /// Opens the semaphore file at `path`, creating it with `permits`
    /// permits, all free, if it does not exist ("open or create"). Same as `open_with(path, permits, OpenOptions::new().create(true))`.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for 0 or more than [`MAX_PERMITS`] permits
    /// (nothing is created); [`Error::PermitMismatch`] if the file has
    /// another number of permits; [`Error::KindMismatch`] for a mutex file;
    /// otherwise as [`OpenOptions::open`]: every cause has its own [`Error`]
    /// variant, and a rejected file is never changed.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// assert_eq!(sem.permits(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, permits: usize) -> Result<Self, Error> {
        SharedSemaphore::open_with(path, permits, OpenOptions::new().create(true))
    }

    /// Opens with explicit [`OpenOptions`], whose creation policies are:
    ///
    /// | policy | options |
    /// |---|---|
    /// | open existing | `OpenOptions::new()` ([`Error::NotFound`] if missing; nothing is created) |
    /// | open or create | `.create(true)` (what [`open`](Self::open) does) |
    /// | create new | `.create_new(true)` ([`Error::AlreadyExists`] if it exists) |
    /// | replace | `.replace(true)`: a fresh semaphore with all permits free is renamed over an existing one of our files; processes that have the old file open go on using it |
    ///
    /// The options' mode, init timeout, owner and PID-namespace settings
    /// apply as for a mutex.
    ///
    /// # Errors
    /// As [`open`](Self::open); with `replace`, [`Error::ForeignFile`] if the
    /// path is not one of our files (it is left untouched).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Error, OpenOptions, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("s");
    /// let missing = SharedSemaphore::open_with(&path, 4, &OpenOptions::new());
    /// assert!(matches!(missing, Err(Error::NotFound { .. })));
    /// let sem = SharedSemaphore::open_with(&path, 4, OpenOptions::new().create_new(true))?;
    /// let again = SharedSemaphore::open_with(&path, 4, OpenOptions::new().create_new(true));
    /// assert!(matches!(again, Err(Error::AlreadyExists { .. })));
    /// let other = SharedSemaphore::open_with(&path, 5, &OpenOptions::new());
    /// assert!(matches!(other, Err(Error::PermitMismatch { file: 4, asked: 5, .. })));
    /// # drop(sem);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with(
        path: impl AsRef<Path>,
        permits: usize,
        opts: &OpenOptions,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        if permits == 0 || permits > MAX_PERMITS {
            return Err(Error::InvalidOptions {
                reason: "a semaphore has between 1 and 127 permits",
            });
        }
        let want = DataLayout::new(permits * layout::SLOT_SIZE, align_of::<Slot>())
            .expect("127 slots fit any address space");
        let spec = Spec::new(Kind::Semaphore, want);
        let opened = file::open(path, opts, &spec).map_err(|e| match e {
            // Same kind, another value size: another number of slots.
            Error::TypeMismatch {
                path, file_size, ..
            } => Error::PermitMismatch {
                path,
                file: file_size as usize / layout::SLOT_SIZE,
                asked: permits,
            },
            e => e,
        })?;
        Ok(SharedSemaphore {
            path: path.to_owned(),
            data_offset: opened.header.data_offset,
            map: Some(opened.map),
            permits,
        })
    }

    /// The number of permits (including lost ones).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 5)?;
    /// assert_eq!(sem.permits(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// The path the semaphore was opened by.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("s");
    /// let sem = robust_mutex::SharedSemaphore::open(&path, 1)?;
    /// assert_eq!(sem.path(), path);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn map(&self) -> &Mapping {
        self.map.as_deref().expect("mapping lives until drop")
    }

    fn slot_at(&self, offset: usize) -> NonNull<u8> {
        NonNull::new(self.map().data(offset as u64)).expect("a mapping is never at address 0")
    }

    /// Permit `i`'s raw lock, with its owner record and the shared counters.
    fn slot(&self, i: usize) -> RawMutex<'_> {
        debug_assert!(i < self.permits);
        let data = self.data_offset as usize;
        let map = self.map();
        // The handshake validated a READY semaphore file of `permits` slots,
        // each initialised before READY, and every slot's mutex kind word; a
        // slot's owner record follows its mutex (RECORD_AFTER_MUTEX).
        // SAFETY: so slot `i`'s mutex is initialised, in the mapping that
        // lives as long as `self`; only the permit's holder writes its record,
        // and the shared counters are only updated atomically (Books::Permit).
        unsafe {
            RawMutex::new(
                self.slot_at(layout::slot_mutex(data, i)).cast(),
                Books::Permit {
                    counters: NonNull::new(map.counters()).expect("mapped"),
                },
            )
        }
    }

    fn name(&self, permit: Option<usize>) -> Name<'_> {
        Name {
            path: &self.path,
            permit,
        }
    }

    /// A snapshot of every permit, taken without acquiring anything: how
    /// many are free, held (and by whom), held by a dead owner, lost or
    /// stuck, plus the counters.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let mut p = sem.acquire()?.recover_with(|_| {});
    /// p.set_label("job 7")?;
    /// let s = sem.status();
    /// assert_eq!((s.total, s.available, s.held), (2, 1, 1));
    /// assert_eq!(s.holders[0].pid, std::process::id());
    /// assert_eq!(s.holders[0].label, "job 7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> SemaphoreStatus {
        let map = self.map();
        if !map.intact() {
            return SemaphoreStatus {
                truncated: true,
                ..SemaphoreStatus::empty(self.permits)
            };
        }
        // SAFETY: the handshake validated a READY semaphore file of
        // `permits` slots from `data_offset`, mapped for as long as `self`
        // lives, and the file still covers the mapping (just checked).
        unsafe { snapshot_at(map.header().cast(), self.data_offset as usize, self.permits) }
    }

    /// Facts about the file from its header (kind `"semaphore"`, value size
    /// = 192 bytes per permit, generation, boot id).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// assert_eq!(sem.file_info().kind, robust_mutex::LockKind::Semaphore);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_info(&self) -> FileInfo {
        status::file_info(self.map())
    }
}

impl SemaphoreStatus {
    /// `total` permits, nothing counted yet.
    fn empty(total: usize) -> SemaphoreStatus {
        SemaphoreStatus {
            total,
            available: 0,
            held: 0,
            holders: Vec::new(),
            owner_dead: 0,
            not_recoverable: 0,
            stuck: 0,
            permits: Vec::new(),
            counters: crate::Counters::default(),
            truncated: false,
        }
    }

    /// Counts `p` in the totals and adds it to `permits`.
    pub(crate) fn push(&mut self, p: PermitStatus) {
        match p.state {
            LockState::Unlocked => self.available += 1,
            LockState::Locked => {
                self.held += 1;
                self.holders.extend(p.owner.clone());
            }
            LockState::OwnerDead => self.owner_dead += 1,
            LockState::NotRecoverable => self.not_recoverable += 1,
            LockState::Stuck | LockState::Truncated => self.stuck += 1,
        }
        self.permits.push(p);
    }

    /// The same permits, counted again (after their states were changed).
    pub(crate) fn recount(self) -> SemaphoreStatus {
        let mut s = SemaphoreStatus {
            counters: self.counters,
            ..SemaphoreStatus::empty(self.total)
        };
        for p in self.permits {
            s.push(p);
        }
        s
    }
}

/// A snapshot of the semaphore file mapped at `base`, without acquiring
/// anything. Only reads: Relaxed atomic loads of at most 4 bytes and
/// volatile reads, so a read-only mapping (PROT_READ) is enough on every
/// target (a 64-bit atomic load may be a compare-and-swap, a write, on
/// 32-bit ones; core::sync::atomic, "Atomic accesses to read-only memory").
/// A counter read on a 32-bit target may tear; it is a snapshot.
///
/// # Safety
/// `base` is the start of a live mapping of a READY semaphore file with
/// `permits` slots from `data_offset`, backed by the file up to the end of
/// the last slot.
pub(crate) unsafe fn snapshot_at(
    base: *mut u8,
    data_offset: usize,
    permits: usize,
) -> SemaphoreStatus {
    let at = |offset: usize| base.wrapping_add(offset);
    let load = |field: usize| {
        let p = at(layout::COUNTERS_OFFSET + field).cast::<u64>();
        // SAFETY: a u64 field of the counters, 8-byte aligned (offset 448 of
        // a page-aligned mapping) in the live mapping (the caller's
        // contract). Volatile, not atomic: it may be mapped read-only.
        unsafe { std::ptr::read_volatile(p) }
    };
    let mut s = SemaphoreStatus::empty(permits);
    let cold = || Counters {
        acquisitions: load(offset_of!(Counters, acquisitions)),
        contended: load(offset_of!(Counters, contended)),
        owner_deaths: load(offset_of!(Counters, owner_deaths)),
        recoveries: load(offset_of!(Counters, recoveries)),
        resets: load(offset_of!(Counters, resets)),
        reserved: [0; 3],
    };
    let mutex_of = |slot| at(layout::slot_mutex(data_offset, slot)).cast::<libc::pthread_mutex_t>();
    // The file's cold counters plus every permit's hot counts.
    let counters = status::with_cold_settled(cold, |mut sum| {
        for slot in 0..permits {
            // SAFETY: the slot's mutex and its records lie in the live
            // mapping (the caller's contract).
            let hot = unsafe { Records::read(mutex_of(slot)) }.hot;
            sum = sum.plus_hot(&hot);
        }
        sum
    });
    for slot in 0..permits {
        let mutex = mutex_of(slot);
        // SAFETY: the slot's mutex and its records lie in the live mapping
        // (the caller's contract).
        let read = || unsafe { Records::read(mutex) };
        // SAFETY: as above.
        let (state, owner, lock_word) = unsafe { status::lock_state(mutex, read) };
        s.push(PermitStatus {
            slot,
            state,
            owner,
            lock_word,
        });
    }
    s.counters = counters.into();
    s
}

impl Drop for SharedSemaphore {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            registry::detach(m);
        }
    }
}
