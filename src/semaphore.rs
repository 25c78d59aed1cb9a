//! [`SharedSemaphore`]: a crash-safe counting semaphore in a file.
//!
//! POSIX semaphores are not crash-safe: a holder that dies keeps its permit
//! for ever. Here each of the N permits is a *slot* (`layout::Slot`): its
//! own robust ERRORCHECK mutex and owner record. Holding a permit is holding
//! its slot's mutex, so the kernel gives a dead holder's permit back, and the
//! next taker of that slot is told, as [`Permit::OwnerDied`], with the same
//! recovery contract as the mutex.
//!
//! # Taking a permit
//!
//! A scan visits every slot once, starting at a per-thread index that moves
//! on by one at each scan (so threads spread over the slots). A slot whose
//! lock word names a live owner (a TID, no `FUTEX_OWNER_DIED`) is skipped
//! with one relaxed load: no glibc call, no system call, and no
//! `FUTEX_WAITERS` left behind by a failed try. Any other slot is tried with
//! `pthread_mutex_clocklock` and an already-passed deadline (never
//! `pthread_mutex_trylock`, whose glibc version strands a not-recoverable
//! mutex): 0 is a clean permit, EOWNERDEAD a dead holder's, ENOTRECOVERABLE a
//! lost slot (skipped: the semaphore goes on with fewer permits), EDEADLK a
//! slot this thread already holds.
//!
//! # Waiting
//!
//! When every usable slot is held, the waiter sets `FUTEX_WAITERS` by CAS in
//! the lock word of every slot held by someone else (glibc's own waiter
//! protocol, as in `wait.rs`) and sleeps in one `futex_waitv` on all of them
//! and the cancel token's word. A release (glibc's unlock wakes one sleeper
//! when WAITERS is set) or a holder's death (the kernel wakes one) ends the
//! sleep; the waiter scans again.
//!
//! Both wake exactly one sleeper *per word*, while one sleeper is queued on
//! many words: it can be woken through several words at once, or be woken
//! and then take another slot, time out or be cancelled. The wake it did not
//! use would be lost, and another sleeper would sleep on beside a free or
//! dead permit. So a waiter that slept passes the wakes on when it leaves:
//! for every slot it slept on (except the one it took), if the slot is free
//! or its holder died it wakes one sleeper there, and if it is held without
//! `FUTEX_WAITERS` it sets the bit, so that the holder's release wakes one.
//! On the slot it took it sets `FUTEX_WAITERS` again (glibc's
//! `assume_other_futex_waiters`). A waiter that re-sleeps re-announces itself
//! on every held slot, which restores the same guarantee.
//!
//! # Counters
//!
//! Several permits are held at once, so the file's counters are updated with
//! atomic adds (`AtomicU64::from_ptr` on the mapped fields) and read with
//! atomic loads.

use crate::cancel::CancelToken;
use crate::error::{Error, LockError};
use crate::guard::{record_acquired, record_release};
use crate::handshake;
use crate::identity;
use crate::layout::{self, Counters, DataLayout, Kind, OwnerRecord, Slot};
use crate::options::OpenOptions;
use crate::registry::{self, Mapping};
use crate::status::{self, FileInfo, LockState, OwnerInfo};
use crate::sys::{self, LockFail, Locked};
use crate::wait;
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The most permits a semaphore can have: a blocked acquire sleeps on every
/// permit and a cancel token at once, and `futex_waitv` takes at most 128
/// words.
pub const MAX_PERMITS: usize = 127;

/// A crash-safe counting semaphore with N permits, named by a file path
/// (named-semaphores' `initial_value`, where every permit starts free).
///
/// A permit whose holder dies (SIGKILL, crash, thread exit) comes back, and
/// its next taker gets [`Permit::OwnerDied`] with the dead holder's record:
/// repair whatever the application associates with that permit, then
/// [`PermitRecovery::mark_consistent`]. A recovery dropped without it loses
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
/// # Examples
/// ```
/// use robust_mutex::{Permit, SharedSemaphore};
/// # let dir = tempfile::tempdir()?;
/// let sem = SharedSemaphore::open(dir.path().join("pool"), 3)?;
/// let permit = match sem.acquire()? {
///     Permit::Clean(p) => p,
///     Permit::OwnerDied(r) => {
///         // A holder of this permit died: repair what it was doing.
///         if let Some(o) = r.previous_owner() {
///             eprintln!("pid {} died holding permit {}", o.pid, r.slot());
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

/// What an acquire returns: a permit either way, but after its previous
/// holder died, a recovery first.
#[must_use = "if unused the permit is released at once (and an OwnerDied permit is lost)"]
#[derive(Debug)]
pub enum Permit<'a> {
    /// The previous holder of this permit released it normally.
    Clean(PermitGuard<'a>),
    /// The previous holder died holding it: repair, then
    /// [`PermitRecovery::mark_consistent`].
    OwnerDied(PermitRecovery<'a>),
}

/// A held permit; released when dropped.
///
/// Not `Send`: POSIX requires the thread that locked a mutex to unlock it.
///
/// ```compile_fail
/// # let dir = tempfile::tempdir().unwrap();
/// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1).unwrap();
/// let p = sem.acquire().unwrap().recover_with(|| {});
/// std::thread::spawn(move || drop(p)); // error: PermitGuard is not Send
/// ```
#[must_use = "if unused the permit is released at once"]
pub struct PermitGuard<'a> {
    sem: &'a SharedSemaphore,
    slot: usize,
    _not_send: PhantomData<*const ()>,
}

/// A permit whose previous holder died holding it.
///
/// Repair whatever the application associates with the permit, then call
/// [`mark_consistent`](Self::mark_consistent). **Dropping it without
/// `mark_consistent` makes this permit not recoverable**: it is never handed
/// out again (acquire skips it), so the semaphore goes on with one permit
/// fewer, reported by [`SemaphoreStatus::not_recoverable`], until the file is
/// replaced ([`OpenOptions::replace`]). When every permit is lost, acquires
/// fail with [`LockError::NotRecoverable`].
///
/// Not `Send`: only the thread that took the permit may mark it consistent.
///
/// # Examples
/// A thread that exits holding a permit is a dead holder too:
/// ```
/// use robust_mutex::{Permit, SharedSemaphore};
/// # let dir = tempfile::tempdir()?;
/// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
/// std::thread::scope(|s| {
///     let worker = s.spawn(|| {
///         let mut p = sem.acquire().unwrap().recover_with(|| {});
///         p.set_label("resize job");
///         std::mem::forget(p); // exits holding it
///     });
///     worker.join().unwrap();
/// });
/// let Permit::OwnerDied(r) = sem.acquire()? else { unreachable!() };
/// let dead = r.previous_owner().unwrap();
/// assert_eq!((dead.pid, dead.label.as_str()), (std::process::id(), "resize job"));
/// // ... undo the dead worker's half-done job, then:
/// let permit = r.mark_consistent();
/// drop(permit);
/// assert!(!sem.acquire()?.owner_died());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PermitRecovery<'a> {
    guard: Option<PermitGuard<'a>>,
    previous: Option<OwnerInfo>,
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
/// `available + held + owner_dead + not_recoverable + stuck == total`.
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
    /// ([`Permit::OwnerDied`]).
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
}

thread_local! {
    /// Where this thread's next scan starts, so that threads spread over
    /// the slots instead of all fighting for slot 0.
    static START: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The slots set in `mask`, lowest first.
fn slots_in(mut mask: u128) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

/// Sets FUTEX_WAITERS in a held slot's lock word before sleeping on it.
/// Returns the value to sleep on, or `None` if the slot is free or its
/// holder died (scan again: it can be taken now).
///
/// Unlike `wait::announce`, an owner-died word is not slept on: the kernel
/// has already sent that death's wake-up, possibly to nobody.
fn announce(word: &AtomicU32) -> Option<u32> {
    let mut w = word.load(Ordering::Relaxed);
    loop {
        if w == 0 || w & sys::FUTEX_OWNER_DIED != 0 {
            return None;
        }
        if w & sys::FUTEX_WAITERS != 0 {
            return Some(w);
        }
        match word.compare_exchange_weak(
            w,
            w | sys::FUTEX_WAITERS,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Some(w | sys::FUTEX_WAITERS),
            Err(now) => w = now,
        }
    }
}

impl SharedSemaphore {
    /// Opens the semaphore file at `path`, creating it with `permits`
    /// permits, all free, if it does not exist (named-semaphores' "open or
    /// create"). Same as `open_with(path, permits, OpenOptions::new().create(true))`.
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

    /// Opens with explicit [`OpenOptions`], whose creation policies are those
    /// of named-semaphores:
    ///
    /// | policy | options |
    /// |---|---|
    /// | open existing | `OpenOptions::new()` ([`Error::NotFound`] if missing; nothing is created) |
    /// | open or create | `.create(true)` (what [`open`](Self::open) does) |
    /// | create new | `.create_new(true)` ([`Error::AlreadyExists`] if it exists) |
    /// | replace | `.replace(true)`: a fresh semaphore with all permits free is renamed over an existing one of our files; processes that have the old file open go on using it |
    ///
    /// The options' mode, init timeout, owner and PID-namespace settings
    /// apply as for a mutex; `reentrant` is ignored.
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
        let mut opts = opts.clone();
        opts.kind = Kind::Semaphore;
        opts.any_value = false;
        let want = DataLayout::new(permits * layout::SLOT_SIZE, align_of::<Slot>())
            .expect("127 slots fit any address space");
        let opened = handshake::open(path, &opts, want).map_err(|e| match e {
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

    fn slot_offset(&self, i: usize) -> u64 {
        debug_assert!(i < self.permits);
        self.data_offset + (i * layout::SLOT_SIZE) as u64
    }

    fn slot_mutex(&self, i: usize) -> *mut libc::pthread_mutex_t {
        self.map()
            .data(self.slot_offset(i) + offset_of!(Slot, mutex) as u64)
            .cast()
    }

    fn slot_owner(&self, i: usize) -> *mut OwnerRecord {
        self.map()
            .data(self.slot_offset(i) + offset_of!(Slot, owner) as u64)
            .cast()
    }

    fn slot_word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: slot `i`'s mutex lies in the mapping, which lives as long
        // as `self` (the returned borrow).
        unsafe { sys::lock_word(self.slot_mutex(i)) }
    }

    /// Takes a free permit if there is one now; never waits.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if every usable permit is held (by others
    /// or by this thread); [`LockError::NotRecoverable`] if every permit is
    /// lost; [`LockError::Io`] for anything unexpected.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{LockError, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.try_acquire()?;
    /// assert!(matches!(sem.try_acquire(), Err(LockError::WouldBlock)));
    /// drop(p);
    /// assert!(sem.try_acquire().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Permit<'_>, LockError> {
        match self.scan(false)? {
            Scan::Got(p) => Ok(p),
            Scan::Busy { .. } => Err(LockError::WouldBlock),
        }
    }

    /// Waits, sleeping in the kernel, until a permit is free (or its holder
    /// dies) and takes it.
    ///
    /// # Errors
    /// [`LockError::Deadlock`] if every usable permit is held by the calling
    /// thread (waiting would never end); [`LockError::NotRecoverable`] if
    /// every permit is lost; [`LockError::Io`] for anything unexpected.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let p = sem.acquire()?.recover_with(|| { /* repair */ });
    /// println!("holding permit {}", p.slot());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<Permit<'_>, LockError> {
        self.acquire_inner(None, None)
    }

    /// Like [`acquire`](Self::acquire), waiting at most `timeout`, measured
    /// on CLOCK_MONOTONIC (wall-clock jumps neither stretch nor cut it).
    ///
    /// # Errors
    /// [`LockError::TimedOut`] if no permit came free in time; else as
    /// [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{LockError, SharedSemaphore};
    /// use std::time::Duration;
    /// # let dir = tempfile::tempdir()?;
    /// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.acquire_timeout(Duration::from_millis(10))?;
    /// std::thread::scope(|s| {
    ///     let other = s.spawn(|| sem.acquire_timeout(Duration::from_millis(10)).map(drop));
    ///     assert!(matches!(other.join().unwrap(), Err(LockError::TimedOut)));
    /// });
    /// # drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>, LockError> {
        self.acquire_inner(Some(sys::deadline_after(timeout)), None)
    }

    /// Like [`acquire`](Self::acquire) (or [`acquire_timeout`](Self::acquire_timeout)
    /// when `timeout` is given), but the wait can be abandoned through
    /// `cancel`, from another thread or a signal handler. The sleep is on
    /// every permit and the token at once, so a cancel ends it immediately.
    /// A cancelled acquire takes nothing and changes no permit's state.
    ///
    /// # Errors
    /// [`LockError::Cancelled`] (also if `cancel` is already cancelled);
    /// else as [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{CancelToken, LockError, SharedSemaphore};
    /// # let dir = tempfile::tempdir()?;
    /// let sem = SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let held = sem.acquire()?; // the only permit
    /// let cancel = CancelToken::new();
    /// std::thread::scope(|s| {
    ///     let waiter = s.spawn(|| sem.acquire_cancellable(&cancel, None).map(drop));
    ///     cancel.cancel();
    ///     assert!(matches!(waiter.join().unwrap(), Err(LockError::Cancelled)));
    /// });
    /// # drop(held);
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
        let mut slept_on = 0u128;
        let out = self.wait_for_permit(deadline.as_ref(), cancel, &mut slept_on);
        if slept_on != 0 {
            let taken = out.as_ref().ok().map(Permit::slot);
            self.pass_on(slept_on, taken);
        }
        out
    }

    /// Scans, and sleeps while every usable permit is held by others.
    /// `slept_on` collects the slots this call slept on.
    fn wait_for_permit(
        &self,
        deadline: Option<&libc::timespec>,
        cancel: Option<&CancelToken>,
        slept_on: &mut u128,
    ) -> Result<Permit<'_>, LockError> {
        'scan: loop {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(LockError::Cancelled);
            }
            let busy = match self.scan(*slept_on != 0)? {
                Scan::Got(p) => return Ok(p),
                Scan::Busy { others } => others,
            };
            if busy == 0 {
                // Every usable permit is this thread's own.
                return Err(LockError::Deadlock);
            }
            if deadline.is_some_and(sys::deadline_passed) {
                return Err(LockError::TimedOut); // before announcing anything
            }
            let mut words = Vec::with_capacity(busy.count_ones() as usize);
            for i in slots_in(busy) {
                let word = self.slot_word(i);
                match announce(word) {
                    Some(expected) => words.push((word, expected)),
                    None => continue 'scan, // it came free or its holder died
                }
            }
            *slept_on |= busy;
            wait::sleep(&words, cancel, deadline)?;
        }
    }

    /// Passes on the wake-ups this waiter may have absorbed from `slots`
    /// (see the module docs): wakes one sleeper on every free or owner-dead
    /// slot, and makes sure a held slot's release will wake one.
    fn pass_on(&self, slots: u128, taken: Option<usize>) {
        for i in slots_in(slots).filter(|&i| Some(i) != taken) {
            let word = self.slot_word(i);
            let mut w = word.load(Ordering::Relaxed);
            loop {
                if w == 0 || w & sys::FUTEX_OWNER_DIED != 0 {
                    // SAFETY: slot `i`'s mutex lies in the live mapping.
                    let lost = w == 0 && unsafe { sys::mutex_not_recoverable(self.slot_mutex(i)) };
                    if !lost {
                        sys::futex_wake(word, 1, true);
                    }
                    break;
                }
                if w & sys::FUTEX_WAITERS != 0 {
                    break;
                }
                match word.compare_exchange_weak(
                    w,
                    w | sys::FUTEX_WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => w = now,
                }
            }
        }
    }

    /// One pass over the slots, starting where this thread's last pass
    /// started, plus one. `after_sleep`: this call slept before.
    fn scan(&self, after_sleep: bool) -> Result<Scan<'_>, LockError> {
        let n = self.permits;
        let start = START.with(|s| {
            let v = match s.get() {
                usize::MAX => identity::me().tid as usize,
                v => v,
            };
            s.set(v.wrapping_add(1));
            v % n
        });
        let me = identity::me().tid;
        let mut others = 0u128;
        let mut lost = 0;
        for k in 0..n {
            let i = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            let word = self.slot_word(i);
            let w = word.load(Ordering::Relaxed);
            let tid = w & sys::FUTEX_TID_MASK;
            if tid != 0 && w & sys::FUTEX_OWNER_DIED == 0 {
                // Held: by another thread (busy) or by us (ERRORCHECK would
                // say EDEADLK). Skipped without a glibc call.
                if tid != me {
                    others |= 1 << i;
                }
                continue;
            }
            // SAFETY: an initialised robust mutex in the live mapping. A
            // past deadline: try once.
            match unsafe { sys::mutex_clocklock(self.slot_mutex(i), &sys::PAST_DEADLINE) } {
                Ok(how) => {
                    if after_sleep {
                        wait::after_sleep(word);
                    }
                    return Ok(Scan::Got(self.taken(
                        i,
                        how == Locked::OwnerDied,
                        after_sleep,
                    )));
                }
                Err(LockFail::Busy) => others |= 1 << i,
                Err(LockFail::Deadlock) => {}
                Err(LockFail::NotRecoverable) => lost += 1,
                Err(LockFail::Other(e)) => return Err(LockError::Io(e)),
            }
        }
        if lost == n {
            log::error!(
                "{}: every permit is not recoverable; replace the semaphore",
                self.path.display()
            );
            return Err(LockError::NotRecoverable);
        }
        Ok(Scan::Busy { others })
    }

    /// Bookkeeping for slot `slot`, just taken: the owner record, the
    /// counters, and the permit.
    fn taken(&self, slot: usize, died: bool, slept: bool) -> Permit<'_> {
        let mut counts = Counters::default();
        // SAFETY: we hold slot `slot`, whose mutex guards its owner record in
        // the live mapping; `counts` is a local scratch copy.
        let previous = unsafe { record_acquired(self.slot_owner(slot), &mut counts, died, slept) };
        self.add_counters(&counts);
        let guard = PermitGuard {
            sem: self,
            slot,
            _not_send: PhantomData,
        };
        if died {
            log::warn!(
                "{}: permit {slot}'s holder{} died holding it; recovering",
                self.path.display(),
                previous
                    .as_ref()
                    .map_or(String::new(), |o| format!(" pid {} tid {}", o.pid, o.tid))
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

    /// The file's counters, as atomics: every permit holder updates them.
    fn counter(&self, field: usize) -> &AtomicU64 {
        let p = self
            .map()
            .counters()
            .cast::<u8>()
            .wrapping_add(field)
            .cast::<u64>();
        // SAFETY: `field` is the offset of a u64 field of `Counters`, which
        // lies 8-byte aligned (offset 448 of a page-aligned mapping) in the
        // live mapping; a semaphore accesses it only atomically.
        unsafe { AtomicU64::from_ptr(p) }
    }

    fn add_counters(&self, c: &Counters) {
        for (field, add) in [
            (offset_of!(Counters, acquisitions), c.acquisitions),
            (offset_of!(Counters, contended), c.contended),
            (offset_of!(Counters, owner_deaths), c.owner_deaths),
            (offset_of!(Counters, recoveries), c.recoveries),
        ] {
            if add > 0 {
                self.counter(field).fetch_add(add, Ordering::Relaxed);
            }
        }
    }

    fn counters(&self) -> crate::Counters {
        let load = |field| self.counter(field).load(Ordering::Relaxed);
        Counters {
            acquisitions: load(offset_of!(Counters, acquisitions)),
            contended: load(offset_of!(Counters, contended)),
            owner_deaths: load(offset_of!(Counters, owner_deaths)),
            recoveries: load(offset_of!(Counters, recoveries)),
            resets: load(offset_of!(Counters, resets)),
            reserved: [0; 3],
        }
        .into()
    }

    fn release(&self, slot: usize) {
        // SAFETY: this thread holds the slot (a PermitGuard exists only while
        // it does, and is not Send); its record and mutex lie in the live mapping.
        let r = unsafe {
            record_release(self.slot_owner(slot));
            sys::mutex_unlock(self.slot_mutex(slot))
        };
        debug_assert!(r.is_ok(), "unlock failed: {r:?}");
    }

    /// A snapshot of every permit, taken without acquiring anything: how
    /// many are free, held (and by whom), held by a dead owner, lost or
    /// stuck, plus the counters.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let mut p = sem.acquire()?.recover_with(|| {});
    /// p.set_label("job 7");
    /// let s = sem.status();
    /// assert_eq!((s.total, s.available, s.held), (2, 1, 1));
    /// assert_eq!(s.holders[0].pid, std::process::id());
    /// assert_eq!(s.holders[0].label, "job 7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> SemaphoreStatus {
        let mut s = SemaphoreStatus {
            total: self.permits,
            available: 0,
            held: 0,
            holders: Vec::new(),
            owner_dead: 0,
            not_recoverable: 0,
            stuck: 0,
            permits: Vec::with_capacity(self.permits),
            counters: self.counters(),
        };
        for slot in 0..self.permits {
            // SAFETY: the slot's mutex and record lie in the live mapping.
            let (state, owner, lock_word) =
                unsafe { status::lock_state(self.slot_mutex(slot), self.slot_owner(slot)) };
            match state {
                LockState::Unlocked => s.available += 1,
                LockState::Locked => {
                    s.held += 1;
                    s.holders.extend(owner.clone());
                }
                LockState::OwnerDead => s.owner_dead += 1,
                LockState::NotRecoverable => s.not_recoverable += 1,
                LockState::Stuck => s.stuck += 1,
            }
            s.permits.push(PermitStatus {
                slot,
                state,
                owner,
                lock_word,
            });
        }
        s
    }

    /// Facts about the file from its header (kind `"semaphore"`, value size
    /// = 192 bytes per permit, generation, boot id).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// assert_eq!(sem.file_info().kind, "semaphore");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_info(&self) -> FileInfo {
        status::file_info(self.map())
    }

    /// Removes the name `path` if it is one of our lock files (named
    /// semaphores' unlink). Open handles keep working on the unlinked file;
    /// a later `open` creates a new one.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Symlink`], [`Error::NotRegularFile`] or
    /// [`Error::ForeignFile`] (nothing is removed), or [`Error::Io`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("s");
    /// robust_mutex::SharedSemaphore::open(&path, 2)?;
    /// robust_mutex::SharedSemaphore::remove(&path)?;
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(path: impl AsRef<Path>) -> Result<(), Error> {
        handshake::remove(path.as_ref())
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
    /// A bit per slot held by another thread or process.
    Busy {
        others: u128,
    },
}

impl<'a> Permit<'a> {
    /// The guard, running `repair` first (and then
    /// [`mark_consistent`](PermitRecovery::mark_consistent)) if the previous
    /// holder died.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let p = sem.acquire()?.recover_with(|| eprintln!("cleaning up after a dead worker"));
    /// # drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// assert!(!sem.acquire()?.owner_died()); // a new semaphore: nobody died
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        matches!(self, Permit::OwnerDied(_))
    }

    /// Which permit (slot) this is, `0..permits`.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 3)?;
    /// let p = sem.acquire()?;
    /// assert!(p.slot() < 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn slot(&self) -> usize {
        match self {
            Permit::Clean(g) => g.slot,
            Permit::OwnerDied(r) => r.slot(),
        }
    }
}

impl std::fmt::Debug for PermitGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitGuard")
            .field("path", &self.sem.path)
            .field("slot", &self.slot)
            .finish()
    }
}

impl<'a> PermitGuard<'a> {
    /// Which permit (slot) this is, `0..permits`: e.g. an index into
    /// per-permit resources (scratch files, connections) that a recovering
    /// successor must clean up.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let a = sem.acquire()?.recover_with(|| {});
    /// let b = sem.acquire()?.recover_with(|| {});
    /// assert_ne!(a.slot(), b.slot());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The semaphore this permit belongs to.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let p = sem.acquire()?.recover_with(|| {});
    /// assert_eq!(p.semaphore().status().held, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn semaphore(&self) -> &'a SharedSemaphore {
        self.sem
    }

    /// Sets a short label in this permit's owner record (at most 88 bytes;
    /// longer text is cut at a character boundary), which
    /// [`SharedSemaphore::status`] and a recovering successor's
    /// [`PermitRecovery::previous_owner`] show.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let mut p = sem.acquire()?.recover_with(|| {});
    /// p.set_label("upload #12");
    /// assert_eq!(sem.status().holders[0].label, "upload #12");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) {
        let mut n = label.len().min(layout::LABEL_MAX);
        while !label.is_char_boundary(n) {
            n -= 1;
        }
        let rec = self.sem.slot_owner(self.slot);
        // SAFETY: we hold the slot, so we are the only writer of its owner
        // record, which lies in the live mapping; `n` <= LABEL_MAX.
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

impl std::fmt::Debug for PermitRecovery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitRecovery")
            .field("permit", &self.guard)
            .field("previous_owner", &self.previous)
            .finish()
    }
}

impl<'a> PermitRecovery<'a> {
    /// The dead holder's record: pid, tid, label, when it took the permit.
    /// `None` if it died before writing one.
    ///
    /// # Examples
    /// See [`PermitRecovery`].
    pub fn previous_owner(&self) -> Option<&OwnerInfo> {
        self.previous.as_ref()
    }

    /// Which permit (slot) this is, `0..permits`.
    ///
    /// # Examples
    /// See [`PermitRecovery`].
    pub fn slot(&self) -> usize {
        self.guard.as_ref().map_or(usize::MAX, |g| g.slot)
    }

    /// Declares whatever the application associates with this permit
    /// repaired, and goes on holding the permit as a normal [`PermitGuard`].
    ///
    /// # Examples
    /// See [`PermitRecovery`].
    pub fn mark_consistent(mut self) -> PermitGuard<'a> {
        let g = self.guard.take().expect("guard present until consumed");
        // SAFETY: this thread took the slot with EOWNERDEAD (the only way a
        // PermitRecovery is made) and has not unlocked it; PermitRecovery is
        // not Send, so we are on that thread.
        let r = unsafe { sys::mutex_consistent(g.sem.slot_mutex(g.slot)) };
        debug_assert!(r.is_ok(), "pthread_mutex_consistent failed: {r:?}");
        g.sem.add_counters(&Counters {
            recoveries: 1,
            ..Counters::default()
        });
        log::warn!(
            "{}: permit {} recovered after its holder died",
            g.sem.path.display(),
            g.slot
        );
        g
    }
}

impl Drop for PermitRecovery<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            log::error!(
                "{}: recovery of permit {} abandoned without mark_consistent; that permit is now not recoverable",
                g.sem.path.display(),
                g.slot
            );
            // Dropping the guard unlocks without `consistent`: glibc marks
            // the slot's mutex not recoverable.
            drop(g);
        }
    }
}
