//! The raw lock: one initialised robust mutex in a live mapping, and where
//! its holder's bookkeeping goes. Every kind (mutex, re-entrant, bare, each
//! semaphore permit) locks through [`RawMutex`], so the fast path, the
//! owner-death and not-recoverable handling, the owner record, the counters
//! and the lock-time logging exist once.
//!
//! In the spirit of lock_api's `RawMutex`: constructing one is the single
//! `unsafe` step (the caller vouches that the mutex is initialised and the
//! mapping outlives the value, which the lifetime `'m` then enforces);
//! locking is safe; unlocking and marking consistent are `unsafe fn`s whose
//! precondition is "the calling thread holds it".

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::file::layout::{self, Counters, OwnerRecord};
use crate::identity;
use crate::owner::OwnerInfo;
use crate::sys::{self, LockFail, Locked};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where a holder's record and the counters go. The owner record always
/// lies [`layout::RECORD_AFTER_MUTEX`] bytes after its mutex (the header's
/// and every permit's alike), so only the mutex's address is carried: the
/// lock path keeps one pointer live across the glibc call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Books {
    /// None (a bare pymutex file has only the mutex).
    None,
    /// The header's mutex: its owner record, the counters
    /// ([`layout::COUNTERS_AFTER_MUTEX`] bytes after it) and the state word
    /// ([`layout::STATE_BEFORE_MUTEX`] bytes before it) are the file's.
    /// Only the holder writes the record and counters: plain writes.
    Header,
    /// A semaphore's permit: its own owner record, and the file's counters,
    /// which every permit holder updates: atomic adds.
    Permit {
        /// The file's counters.
        counters: NonNull<Counters>,
    },
}

/// How long an acquisition may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait<'c> {
    /// Not at all: one non-blocking try.
    Try,
    /// For ever.
    Block,
    /// Until a CLOCK_MONOTONIC deadline.
    Until(&'c libc::timespec),
    /// Until the token is cancelled or the optional deadline passes.
    Cancellable(&'c CancelToken, Option<&'c libc::timespec>),
}

/// Why an acquisition did not return the lock, beyond the plain errors.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The mutex is not recoverable, or (for a header file) a reset retired
    /// it: the caller may follow a reset before reporting
    /// [`LockError::NotRecoverable`].
    NotRecoverable,
    /// Any other error, ready for the caller.
    Lock(LockError),
}

/// The lock is held by the calling thread.
#[derive(Debug)]
pub(crate) enum Got {
    /// The previous holder released it.
    Clean,
    /// The previous holder died holding it; its record, if it left one.
    OwnerDied(Option<Box<OwnerInfo>>),
}

/// What the log calls a lock: its path, and a permit's index.
#[derive(Debug, Clone, Copy)]
pub struct Name<'a> {
    /// The path the lock was opened by.
    pub(crate) path: &'a Path,
    /// The permit, for a semaphore.
    pub(crate) permit: Option<usize>,
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.permit {
            Some(i) => write!(f, "{}: permit {i}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// An initialised robust, process-shared mutex in a mapping that lives for
/// `'m`, with its bookkeeping.
#[derive(Debug, Clone, Copy)]
pub struct RawMutex<'m> {
    mutex: NonNull<libc::pthread_mutex_t>,
    books: Books,
    _mapping: PhantomData<&'m ()>,
}

impl<'m> RawMutex<'m> {
    /// # Safety
    /// * `mutex` points to a robust, process-shared mutex initialised by
    ///   `sys::mutex_init`, inside a MAP_SHARED mapping that stays mapped
    ///   for `'m`;
    /// * for [`Books::Header`] and [`Books::Permit`], an owner record lies
    ///   [`layout::RECORD_AFTER_MUTEX`] bytes after the mutex, written only
    ///   by the mutex's holder; for [`Books::Header`], the file's counters
    ///   and state word lie at their offsets from it; for
    ///   [`Books::Permit`], `counters` points into the same mapping and is
    ///   only accessed atomically.
    #[inline]
    pub(crate) unsafe fn new(mutex: NonNull<libc::pthread_mutex_t>, books: Books) -> Self {
        RawMutex {
            mutex,
            books,
            _mapping: PhantomData,
        }
    }

    /// A field `delta` bytes from the mutex (`new`'s contract says which).
    #[inline(always)]
    fn at<T>(&self, delta: isize) -> NonNull<T> {
        // SAFETY: `new`'s caller vouched that the field lies in the same
        // live mapping, so the offset stays in bounds (and non-null).
        unsafe { self.mutex.cast::<u8>().offset(delta).cast() }
    }

    /// The header's counters.
    #[inline(always)]
    fn header_counters(&self) -> NonNull<Counters> {
        self.at(layout::COUNTERS_AFTER_MUTEX as isize)
    }

    /// The mutex's address (for the few sys calls that take it).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.as_ptr()
    }

    /// The futex lock word.
    #[inline]
    pub(crate) fn word(&self) -> &'m AtomicU32 {
        // SAFETY: the mutex lies in a mapping that lives for 'm (`new`).
        unsafe { sys::lock_word(self.as_ptr()) }
    }

    /// One non-blocking try, without bookkeeping: an already-expired
    /// `pthread_mutex_clocklock`, answered by glibc itself with no system
    /// call (never `pthread_mutex_trylock`: its glibc version leaves a
    /// not-recoverable mutex locked by the caller).
    #[inline]
    pub(crate) fn try_once(&self) -> Result<Locked, LockFail> {
        // SAFETY: an initialised robust mutex in a live mapping (`new`).
        unsafe { sys::mutex_clocklock(self.as_ptr(), &sys::PAST_DEADLINE) }
    }

    /// Locks as `wait` allows, then writes the owner record and counters.
    /// `Ok` means the calling thread holds the lock.
    ///
    /// # Errors
    /// [`Fail::NotRecoverable`] for a not-recoverable or retired mutex;
    /// else [`LockError::WouldBlock`] (`Try`), [`LockError::TimedOut`]
    /// (`Until`, `Cancellable`), [`LockError::Cancelled`],
    /// [`LockError::Deadlock`] or [`LockError::Io`].
    #[inline]
    pub(crate) fn acquire<'n>(
        &self,
        wait: Wait<'_>,
        name: impl Fn() -> Name<'n>,
    ) -> Result<Got, Fail> {
        let (r, contended) = match wait {
            // Try once without blocking and block only if it is busy:
            // `contended` is then exact, and no load of the lock word sits
            // in front of glibc's CAS on the fast path (measured: 1.23x ->
            // 1.12x raw glibc, docs/benchmarks.md).
            Wait::Block => match self.try_once() {
                // SAFETY: an initialised robust mutex in a live mapping.
                Err(LockFail::Busy) => (unsafe { sys::mutex_lock(self.as_ptr()) }, true),
                r => (r, false),
            },
            Wait::Try => (self.try_once(), false),
            Wait::Until(deadline) => {
                let contended = self.word().load(Ordering::Relaxed) != 0;
                // SAFETY: an initialised robust mutex in a live mapping.
                let r = unsafe { sys::mutex_clocklock(self.as_ptr(), deadline) };
                (r, contended)
            }
            Wait::Cancellable(cancel, deadline) => {
                // SAFETY: an initialised robust mutex in a live mapping.
                unsafe { crate::wait::lock_cancellable(self.as_ptr(), cancel, deadline) }
                    .map_err(Fail::Lock)?
            }
        };
        match r {
            // SAFETY: the lock call just gave us the lock (`how` says how).
            Ok(how) => unsafe { self.took(how == Locked::OwnerDied, contended, name) },
            Err(LockFail::Busy) => {
                let e = match wait {
                    Wait::Try | Wait::Block => LockError::WouldBlock,
                    Wait::Until(_) | Wait::Cancellable(..) => LockError::TimedOut,
                };
                log::debug!("{}: {e}", name());
                Err(Fail::Lock(e))
            }
            Err(LockFail::Deadlock) => Err(Fail::Lock(LockError::Deadlock)),
            Err(LockFail::NotRecoverable) => Err(Fail::NotRecoverable),
            Err(LockFail::Other(e)) => Err(Fail::Lock(LockError::Io(e))),
        }
    }

    /// Bookkeeping right after the calling thread took the lock (`died`:
    /// with EOWNERDEAD): the owner record, the counters and the log. A
    /// retired file is let go again and reported as not recoverable.
    ///
    /// # Safety
    /// The calling thread has just taken this lock (with EOWNERDEAD when
    /// `died`) and holds it.
    #[inline]
    pub(crate) unsafe fn took<'n>(
        &self,
        died: bool,
        contended: bool,
        name: impl Fn() -> Name<'n>,
    ) -> Result<Got, Fail> {
        if !died {
            // SAFETY: we hold the lock (caller's contract).
            unsafe { self.record_acquired(false, contended) };
            // One relaxed load of log's max level when logging is off.
            log::debug!(
                "{}: acquired{}",
                name(),
                if contended { " after contention" } else { "" }
            );
            return Ok(Got::Clean);
        }
        self.took_dead(contended, name())
    }

    #[cold]
    fn took_dead(&self, contended: bool, name: Name<'_>) -> Result<Got, Fail> {
        if let Books::Header = self.books {
            let state = self.at::<AtomicU32>(-(layout::STATE_BEFORE_MUTEX as isize));
            // SAFETY: the state word lies in the live mapping (`new`).
            if unsafe { state.as_ref() }.load(Ordering::Acquire) == layout::STATE_RETIRED {
                // A reset woke us on the old file: let go (leaving the old
                // mutex not recoverable, so every other old waiter bounces
                // too) and let the caller move to the new file.
                // SAFETY: EOWNERDEAD gave us the old mutex.
                let _ = unsafe { sys::mutex_unlock(self.as_ptr()) };
                return Err(Fail::NotRecoverable);
            }
        }
        // SAFETY: EOWNERDEAD gave us the lock.
        let previous = unsafe { self.record_acquired(true, contended) };
        match &previous {
            Some(o) => log::warn!(
                "{name}: previous owner pid {} tid {}{} died holding the lock; recovering",
                o.pid,
                o.tid,
                if o.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.label)
                }
            ),
            None => log::warn!("{name}: previous owner died holding the lock; recovering"),
        }
        Ok(Got::OwnerDied(previous))
    }

    /// Writes the owner record and bumps the counters for the calling
    /// thread. Returns the dead owner's record when `died`.
    ///
    /// # Safety
    /// The calling thread has just acquired the lock.
    #[inline(always)]
    unsafe fn record_acquired(&self, died: bool, contended: bool) -> Option<Box<OwnerInfo>> {
        let now = sys::coarse_unix_ns;
        if let Books::None = self.books {
            return None;
        }
        // Once, before the match: one inlined thread-local read.
        let me = identity::me();
        let mut record = self.at::<OwnerRecord>(layout::RECORD_AFTER_MUTEX as isize);
        // SAFETY: we hold the lock, so we are the only writer of the record,
        // which lies in the live mapping (`new`).
        let r = unsafe { record.as_mut() };
        let previous = match self.books {
            Books::None => None,
            Books::Header => {
                let mut counters = self.header_counters();
                // SAFETY: as for the record: only the holder writes them.
                r.acquired(&me, died, contended, now, unsafe { counters.as_mut() })
            }
            Books::Permit { counters } => {
                let mut c = Counters::default();
                let previous = r.acquired(&me, died, contended, now, &mut c);
                self.add_shared(counters, &c);
                previous
            }
        };
        // Boxed: the outcome stays small on the clean path.
        previous.map(|r| Box::new(OwnerInfo::from_record(&r)))
    }

    fn add_shared(&self, counters: NonNull<Counters>, c: &Counters) {
        for (field, add) in c.fields() {
            if add > 0 {
                // SAFETY: `field` is the offset of a u64 field of `Counters`,
                // 8-byte aligned in the live mapping; shared counters are
                // only accessed atomically (`new`).
                let a = unsafe {
                    AtomicU64::from_ptr(counters.as_ptr().cast::<u8>().add(field).cast())
                };
                a.fetch_add(add, Ordering::Relaxed);
            }
        }
    }

    /// Clears (one level of) the owner record and unlocks.
    ///
    /// # Safety
    /// The calling thread holds the lock, acquired through this `RawMutex`.
    #[inline]
    pub(crate) unsafe fn release(&self) {
        if !matches!(self.books, Books::None) {
            let mut record = self.at::<OwnerRecord>(layout::RECORD_AFTER_MUTEX as isize);
            // SAFETY: we hold the lock: the only writer of the record.
            unsafe { record.as_mut() }.released();
        }
        // SAFETY: we hold the lock (caller's contract).
        let r = unsafe { sys::mutex_unlock(self.as_ptr()) };
        debug_assert!(r.is_ok(), "unlock failed: {r:?}");
    }

    /// `pthread_mutex_consistent`, plus one recovery on the counters.
    ///
    /// # Safety
    /// The calling thread acquired the lock with EOWNERDEAD and has neither
    /// unlocked it nor marked it consistent since (glibc does not check).
    pub(crate) unsafe fn mark_consistent(&self, name: Name<'_>) {
        // SAFETY: caller's contract.
        let r = unsafe { sys::mutex_consistent(self.as_ptr()) };
        debug_assert!(r.is_ok(), "pthread_mutex_consistent failed: {r:?}");
        let one = Counters {
            recoveries: 1,
            ..Counters::default()
        };
        match self.books {
            Books::None => {}
            Books::Header => {
                let mut counters = self.header_counters();
                // SAFETY: we hold the lock: the only writer of the counters.
                unsafe { counters.as_mut() }.recoveries += 1;
            }
            Books::Permit { counters } => self.add_shared(counters, &one),
        }
        log::warn!("{name}: recovered after owner death");
    }

    /// The owner record (for reads by its holder, and by `status`).
    pub(crate) fn record(&self) -> Option<NonNull<OwnerRecord>> {
        match self.books {
            Books::None => None,
            Books::Header | Books::Permit { .. } => {
                Some(self.at(layout::RECORD_AFTER_MUTEX as isize))
            }
        }
    }

    /// Whether a live thread of this process holds the mutex right now (a
    /// thread that exited holding it had it marked OWNER_DIED by the kernel).
    /// Such a mutex's mapping must never be unmapped: the kernel would
    /// abandon that thread's robust-list walk at its death.
    pub(crate) fn held_by_live_thread_here(&self) -> bool {
        let word = self.word().load(Ordering::Relaxed);
        let tid = word & sys::FUTEX_TID_MASK;
        tid != 0
            && word & sys::FUTEX_OWNER_DIED == 0
            && Path::new(&format!("/proc/self/task/{tid}")).exists()
    }

    /// Whether glibc has marked the mutex not recoverable (a racy read).
    pub(crate) fn is_not_recoverable(&self) -> bool {
        // SAFETY: the mutex lies in the live mapping (`new`).
        unsafe { sys::mutex_not_recoverable(self.as_ptr()) }
    }
}
