//! [`SharedSemaphore`]: a crash-safe counting semaphore in a file.
//!
//! POSIX semaphores are not crash-safe: a holder that dies keeps its permit
//! for ever. Here each of the N permits is a slot holding its own robust
//! mutex and owner record, so the kernel gives a dead holder's permit back,
//! and the next taker of that slot is told, as
//! [`Permit::OwnerDied`], with the same recovery contract as the mutex.

use crate::cancel::CancelToken;
use crate::error::{Error, LockError};
use crate::guard::{record_acquired, record_release};
use crate::handshake;
use crate::layout::{self, Counters, DataLayout, Kind, OwnerRecord};
use crate::options::OpenOptions;
use crate::registry::{self, Mapping};
use crate::status::{self, LockState, OwnerInfo};
use crate::sys::{self, LockFail, Locked};
use crate::wait;
use std::cell::Cell;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// At most this many permits: a blocked acquire sleeps on every slot and the
/// cancel token at once, and `futex_waitv` takes at most 128 words.
pub const MAX_PERMITS: usize = 127;

/// A crash-safe counting semaphore with N permits, named by a file path
/// (named-semaphores' `initial_value`). A permit whose holder dies comes back,
/// and its next taker gets [`Permit::OwnerDied`].
///
/// Waiting sleeps in the kernel (one `futex_waitv` over every permit and an
/// optional cancel token): no polling, no CPU burnt while waiting.
///
/// # Examples
/// ```
/// use robust_mutex::{Permit, SharedSemaphore};
/// # let dir = tempfile::tempdir()?;
/// let sem = SharedSemaphore::open(dir.path().join("pool"), 3)?;
/// let a = sem.acquire()?;
/// let b = sem.try_acquire()?;
/// assert_eq!(sem.status().available, 1);
/// if let Permit::OwnerDied(r) = a {
///     // a holder of this permit died: repair what it guarded
///     drop(r.mark_consistent());
/// }
/// # drop(b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SharedSemaphore {
    path: PathBuf,
    map: Option<Arc<Mapping>>,
    data_offset: u64,
    permits: usize,
}

/// What an acquire returns: the permit either way, but after its previous
/// holder died, a recovery first.
#[must_use = "if unused the permit is released at once"]
#[derive(Debug)]
pub enum Permit<'a> {
    /// The previous holder of this permit released it normally.
    Clean(PermitGuard<'a>),
    /// The previous holder died holding it: repair, then
    /// [`PermitRecovery::mark_consistent`].
    OwnerDied(PermitRecovery<'a>),
}

/// A held permit; released on drop. Not `Send`: the taking thread releases.
#[must_use = "if unused the permit is released at once"]
#[derive(Debug)]
pub struct PermitGuard<'a> {
    sem: &'a SharedSemaphore,
    slot: usize,
    _not_send: PhantomData<*const ()>,
}

/// A permit whose previous holder died. Dropping it without
/// [`mark_consistent`](Self::mark_consistent) makes *this permit* not
/// recoverable: the semaphore goes on with one permit fewer (see
/// [`SemaphoreStatus::not_recoverable`]) until it is reset.
#[derive(Debug)]
pub struct PermitRecovery<'a> {
    guard: Option<PermitGuard<'a>>,
    previous: Option<OwnerInfo>,
}

/// A snapshot of a semaphore, taken without acquiring anything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreStatus {
    /// Number of permits.
    pub total: usize,
    /// Permits free right now.
    pub available: usize,
    /// Holders of the taken permits (live ones).
    pub holders: Vec<OwnerInfo>,
    /// Permits whose holder died; the next taker recovers them.
    pub owner_dead: usize,
    /// Permits lost to an abandoned recovery (reset to get them back).
    pub not_recoverable: usize,
    /// Permits held by a thread that is gone without the kernel noticing.
    pub stuck: usize,
    /// The file's counters.
    pub counters: crate::Counters,
}

thread_local! {
    /// Where this thread starts its scan, so that threads spread over slots.
    static START: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl SharedSemaphore {
    /// Opens the semaphore file at `path`, creating it with `permits`
    /// permits if it does not exist.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for 0 or more than [`MAX_PERMITS`] permits;
    /// [`Error::PermitMismatch`] if the file has another number of permits;
    /// [`Error::KindMismatch`] for a mutex file; otherwise as
    /// [`OpenOptions::open`](crate::OpenOptions::open).
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

    /// Opens with explicit [`OpenOptions`]: the creation policies are those of
    /// named-semaphores (open existing: `new()`; open or create: `create`;
    /// create new: `create_new`; replace: `replace`).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{OpenOptions, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("s");
    /// let sem = SharedSemaphore::open_with(&path, 4, OpenOptions::new().create_new(true))?;
    /// assert!(SharedSemaphore::open_with(&path, 4, OpenOptions::new().create_new(true)).is_err());
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
        let mut opts = opts.clone();
        opts.kind = Kind::Semaphore;
        opts.any_value = false;
        let want = DataLayout::new(permits * layout::SLOT_SIZE, 64).expect("slot layout");
        let opened = handshake::open(path, &opts, want).map_err(|e| match e {
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

    /// The number of permits.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// The path the semaphore was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn map(&self) -> &Mapping {
        self.map.as_deref().expect("mapping lives until drop")
    }

    fn slot_mutex(&self, i: usize) -> *mut libc::pthread_mutex_t {
        self.map()
            .data(self.data_offset + (i * layout::SLOT_SIZE) as u64)
            .cast()
    }

    fn slot_owner(&self, i: usize) -> *mut OwnerRecord {
        self.map()
            .data(self.data_offset + (i * layout::SLOT_SIZE + layout::MUTEX_ROOM) as u64)
            .cast()
    }

    /// Takes a free permit if there is one now.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if every permit is taken;
    /// [`LockError::NotRecoverable`] if every permit is lost.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.try_acquire()?;
    /// assert!(matches!(sem.try_acquire(), Err(robust_mutex::LockError::WouldBlock)));
    /// # drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Permit<'_>, LockError> {
        match self.scan(false)? {
            Scan::Got(p) => Ok(p),
            Scan::Busy { .. } => Err(LockError::WouldBlock),
        }
    }

    /// Waits for a permit.
    ///
    /// # Errors
    /// [`LockError::Deadlock`] if every permit is held by the calling thread;
    /// [`LockError::NotRecoverable`] if every permit is lost.
    ///
    /// # Examples
    /// See [`SharedSemaphore`].
    pub fn acquire(&self) -> Result<Permit<'_>, LockError> {
        self.acquire_inner(None, None)
    }

    /// Waits at most `timeout` (CLOCK_MONOTONIC) for a permit.
    ///
    /// # Errors
    /// [`LockError::TimedOut`]; else as [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.acquire_timeout(std::time::Duration::from_millis(10))?;
    /// # drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>, LockError> {
        self.acquire_inner(Some(sys::deadline_after(timeout)), None)
    }

    /// Waits for a permit until `cancel` is cancelled (from another thread or
    /// a signal handler) or the optional `timeout` passes.
    ///
    /// # Errors
    /// [`LockError::Cancelled`]; else as [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let cancel = robust_mutex::CancelToken::new();
    /// let p = sem.acquire_cancellable(&cancel, None)?;
    /// # drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_cancellable(
        &self,
        cancel: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Permit<'_>, LockError> {
        self.acquire_inner(timeout.map(sys::deadline_after), Some(cancel))
    }

    fn acquire_inner(
        &self,
        deadline: Option<libc::timespec>,
        cancel: Option<&CancelToken>,
    ) -> Result<Permit<'_>, LockError> {
        let mut slept = false;
        loop {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(LockError::Cancelled);
            }
            let busy = match self.scan(slept)? {
                Scan::Got(p) => return Ok(p),
                Scan::Busy { others } => others,
            };
            if busy.is_empty() {
                // Every taken permit is this thread's own: waiting would never end.
                return Err(LockError::Deadlock);
            }
            // Announce ourselves on every busy slot, so that any release or
            // death wakes us; if one changed meanwhile, scan again.
            let mut words = Vec::with_capacity(busy.len());
            for &i in &busy {
                // SAFETY: the slot mutex lies in the live mapping.
                let word = unsafe { sys::lock_word(self.slot_mutex(i)) };
                match wait::announce(word) {
                    Some(expected) => words.push((word, expected)),
                    None => break,
                }
            }
            if words.len() < busy.len() {
                continue;
            }
            wait::sleep(&words, cancel, deadline.as_ref())?;
            slept = true;
        }
    }

    /// One pass over the slots, starting where this thread last started.
    fn scan(&self, after_sleep: bool) -> Result<Scan<'_>, LockError> {
        let n = self.permits;
        let start = START.with(|s| {
            let v = s.get();
            let v = if v == usize::MAX {
                sys::gettid() as usize
            } else {
                v
            };
            s.set(v.wrapping_add(1));
            v % n
        });
        let mut others = Vec::new();
        let mut lost = 0;
        for k in 0..n {
            let i = (start + k) % n;
            let m = self.slot_mutex(i);
            // SAFETY: an initialised robust mutex in the live mapping.
            // A past deadline: try once (never pthread_mutex_trylock, whose
            // glibc version strands not-recoverable mutexes).
            let contended = unsafe { sys::lock_word_snapshot(m) } != 0;
            // SAFETY: as above.
            let r = unsafe { sys::mutex_clocklock(m, &sys::PAST_DEADLINE) };
            match r {
                Ok(how) => {
                    if after_sleep {
                        // SAFETY: the slot mutex lies in the live mapping.
                        wait::after_sleep(unsafe { sys::lock_word(m) });
                    }
                    return Ok(Scan::Got(self.taken(
                        i,
                        how == Locked::OwnerDied,
                        contended,
                    )));
                }
                Err(LockFail::Busy) => others.push(i),
                Err(LockFail::Deadlock) => {} // this thread holds it already
                Err(LockFail::NotRecoverable) => lost += 1,
                Err(LockFail::Other(e)) => return Err(LockError::Io(e)),
            }
        }
        if lost == n {
            log::error!(
                "{}: every permit is not recoverable; reset it",
                self.path.display()
            );
            return Err(LockError::NotRecoverable);
        }
        Ok(Scan::Busy { others })
    }

    fn taken(&self, slot: usize, died: bool, contended: bool) -> Permit<'_> {
        let mut local = Counters::default();
        // SAFETY: we hold slot `slot`, which guards its owner record; the
        // counters are a local scratch copy.
        let previous =
            unsafe { record_acquired(self.slot_owner(slot), &mut local, died, contended) };
        self.add_counters(&local);
        let guard = PermitGuard {
            sem: self,
            slot,
            _not_send: PhantomData,
        };
        if died {
            log::warn!(
                "{}: recovered permit {slot} of a dead holder{}",
                self.path.display(),
                previous
                    .as_ref()
                    .map_or(String::new(), |o| format!(" (pid {})", o.pid))
            );
            Permit::OwnerDied(PermitRecovery {
                guard: Some(guard),
                previous,
            })
        } else {
            log::debug!("{}: acquired permit {slot}", self.path.display());
            Permit::Clean(guard)
        }
    }

    /// Several holders run at once, so the file's counters are bumped atomically.
    fn add_counters(&self, c: &Counters) {
        let base = self.map().counters().cast::<u64>();
        // The first four u64 fields of `Counters`, in order.
        for (index, add) in [
            (0, c.acquisitions),
            (1, c.contended),
            (2, c.owner_deaths),
            (3, c.recoveries),
        ] {
            let field = base.wrapping_add(index);
            if add > 0 {
                // SAFETY: an aligned u64 inside the live mapping, only ever
                // accessed atomically for a semaphore.
                unsafe { AtomicU64::from_ptr(field) }.fetch_add(add, Ordering::Relaxed);
            }
        }
    }

    fn release(&self, slot: usize) {
        // SAFETY: this thread holds the slot; its record and mutex lie in the
        // live mapping.
        let r = unsafe {
            record_release(self.slot_owner(slot));
            sys::mutex_unlock(self.slot_mutex(slot))
        };
        debug_assert!(r.is_ok(), "unlock failed: {r:?}");
    }

    /// A snapshot of every permit, taken without acquiring anything.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let s = sem.status();
    /// assert_eq!((s.total, s.available), (2, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> SemaphoreStatus {
        let mut s = SemaphoreStatus {
            total: self.permits,
            available: 0,
            holders: Vec::new(),
            owner_dead: 0,
            not_recoverable: 0,
            stuck: 0,
            counters: status::snapshot(self.map()).counters,
        };
        for i in 0..self.permits {
            // SAFETY: the slot lies in the live mapping.
            let (state, owner, _) =
                unsafe { status::lock_state(self.slot_mutex(i), self.slot_owner(i)) };
            match state {
                LockState::Unlocked => s.available += 1,
                LockState::Locked => s.holders.extend(owner),
                LockState::OwnerDead => s.owner_dead += 1,
                LockState::NotRecoverable => s.not_recoverable += 1,
                LockState::Stuck => s.stuck += 1,
            }
        }
        s
    }
}

impl Drop for SharedSemaphore {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            registry::detach(m);
        }
    }
}

enum Scan<'a> {
    Got(Permit<'a>),
    /// Slots held by other threads or processes.
    Busy {
        others: Vec<usize>,
    },
}

impl<'a> Permit<'a> {
    /// The guard, running `repair` first if the previous holder died.
    pub fn recover_with(self, repair: impl FnOnce()) -> PermitGuard<'a> {
        match self {
            Permit::Clean(g) => g,
            Permit::OwnerDied(r) => {
                repair();
                r.mark_consistent()
            }
        }
    }

    /// True if the previous holder of this permit died holding it.
    pub fn owner_died(&self) -> bool {
        matches!(self, Permit::OwnerDied(_))
    }
}

impl PermitGuard<'_> {
    /// Which permit (slot) this is, `0..permits`.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Sets the label of this permit's owner record (at most 88 bytes).
    pub fn set_label(&mut self, label: &str) {
        let mut n = label.len().min(layout::LABEL_MAX);
        while !label.is_char_boundary(n) {
            n -= 1;
        }
        let rec = self.sem.slot_owner(self.slot);
        // SAFETY: we hold the slot, so we are the only writer of its record.
        unsafe {
            let dst = std::ptr::addr_of_mut!((*rec).label).cast::<u8>();
            std::ptr::copy_nonoverlapping(label.as_ptr(), dst, n);
            std::ptr::addr_of_mut!((*rec).label_len).write(n as u32);
        }
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        self.sem.release(self.slot);
        log::debug!("{}: released permit {}", self.sem.path.display(), self.slot);
    }
}

impl<'a> PermitRecovery<'a> {
    /// The dead holder's record.
    pub fn previous_owner(&self) -> Option<&OwnerInfo> {
        self.previous.as_ref()
    }

    /// Declares the permit's state repaired; goes on holding the permit.
    pub fn mark_consistent(mut self) -> PermitGuard<'a> {
        let g = self.guard.take().expect("guard present until consumed");
        // SAFETY: this thread took the slot with EOWNERDEAD and still holds
        // it; PermitRecovery is not Send.
        let r = unsafe { sys::mutex_consistent(g.sem.slot_mutex(g.slot)) };
        debug_assert!(r.is_ok(), "pthread_mutex_consistent failed: {r:?}");
        g.sem.add_counters(&Counters {
            recoveries: 1,
            ..Counters::default()
        });
        g
    }
}

impl Drop for PermitRecovery<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            log::error!(
                "{}: recovery of permit {} abandoned; that permit is now not recoverable",
                g.sem.path.display(),
                g.slot
            );
            // Dropping the guard unlocks without consistent.
        }
    }
}
