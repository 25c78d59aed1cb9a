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
//!
//! Also here, once for every kind, the rules of issue 11: a contended wait
//! goes in slices and gives up on a stuck lock ([`LockError::Stuck`]); a
//! thread may hold at most [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD)
//! locks; a release that finds the lock word no longer naming the calling
//! thread (a guard inherited through fork, a file changed under its holder)
//! touches nothing; a release while the thread panics counts as the
//! holder's death, unless the lock was taken during that panic (as std's
//! poison flag: a `Drop` that locks and unlocks while unwinding); a contended acquisition checks that the file was not
//! truncated meanwhile.
//!
//! Here: the types and the fast path (lock, release); in `record`: the
//! holder's bookkeeping right after an acquisition (hot and cold records,
//! counts, label); in `stuck`: the contended acquisition, its wait in
//! slices and the stuck verdict; in `death`: owner death, a panic as a
//! death, and the release of a lock that is no longer ours; in `bound`:
//! the held-lock bound.

mod bound;
mod death;
mod record;
mod stuck;

pub(crate) use bound::check_room;
#[cfg(feature = "async")]
pub(crate) use death::take_last_dead;
pub(crate) use record::refresh_process_key;
pub(crate) use stuck::Suspect;

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::file::layout::{self, Counters, HOT_COUNTS, HotRecord, OwnerRecord};
use crate::identity;
use crate::owner::OwnerInfo;
use crate::sys::{self, LockFail, Locked};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where a holder's records and the counters go. The hot record always
/// lies [`layout::HOT_AFTER_MUTEX`] bytes after its mutex, in the mutex's
/// own cache line, and the cold one [`layout::RECORD_AFTER_MUTEX`] bytes
/// after it (the header's and every permit's alike), so only the mutex's
/// address is carried: the lock path keeps one pointer live across the
/// glibc call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Books {
    /// None (a bare pymutex file has only the mutex).
    None,
    /// The header's mutex: its records, the counters
    /// ([`layout::COUNTERS_AFTER_MUTEX`] bytes after it) and the state word
    /// ([`layout::STATE_BEFORE_MUTEX`] bytes before it) are the file's.
    /// Only the holder writes the records and counters: plain writes.
    Header,
    /// A semaphore's permit: its own records, and the file's cold counters,
    /// which a permit holder updates only on a rare path (a hot count's
    /// wrap, an owner death, a recovery): atomic adds.
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
    /// * for [`Books::Header`] and [`Books::Permit`], a hot record lies
    ///   [`layout::HOT_AFTER_MUTEX`] and a cold owner record
    ///   [`layout::RECORD_AFTER_MUTEX`] bytes after the mutex, both written
    ///   only by the mutex's holder; for [`Books::Header`], the file's counters
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

    /// The hot record (only for [`Books::Header`] and [`Books::Permit`]).
    #[inline(always)]
    fn hot(&self) -> NonNull<HotRecord> {
        self.at(layout::HOT_AFTER_MUTEX as isize)
    }

    /// The hot record's `pid` and `tid` as one word, its `since`, and its
    /// counts, as atomics: the holder writes them with relaxed stores (so
    /// the compiler keeps their order, and a reader in this process races
    /// with no plain write; on x86_64 the same `mov`s as plain stores).
    /// (Only for [`Books::Header`] and [`Books::Permit`].)
    #[inline(always)]
    fn hot_atomics(&self) -> (&AtomicU64, &AtomicU64, &[AtomicU32; HOT_COUNTS]) {
        let hot = self.hot().as_ptr();
        // Layout (layout's asserts): the record is `HOT_AFTER_MUTEX` (a
        // multiple of 8) bytes after a 64-byte aligned slot; `pid` (offset
        // 0) with `tid` (4) make one aligned u64, `since` (8) is aligned,
        // `counts` (16) are aligned u32s. In this process every access is
        // atomic or a racy reader's volatile copy; others only read.
        // SAFETY: the hot record lies in the live mapping for as long as
        // `self` (`new`), aligned for each atomic view as said above.
        unsafe {
            let base = hot.cast::<u8>();
            (
                AtomicU64::from_ptr(base.cast()),
                AtomicU64::from_ptr(base.add(std::mem::offset_of!(HotRecord, since)).cast()),
                &*base
                    .add(std::mem::offset_of!(HotRecord, counts))
                    .cast::<[AtomicU32; HOT_COUNTS]>(),
            )
        }
    }

    /// The cold owner record (only for [`Books::Header`] and
    /// [`Books::Permit`]).
    #[inline(always)]
    fn cold(&self) -> NonNull<OwnerRecord> {
        self.at(layout::RECORD_AFTER_MUTEX as isize)
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

    /// The file's condition sequence word (`crate::cond`): only a header
    /// mutex has one (a permit, a bare file: `None`).
    #[inline]
    pub(crate) fn cond_word(&self) -> Option<&'m AtomicU32> {
        match self.books {
            Books::Header => {
                let w = self.at::<AtomicU32>(-(layout::COND_BEFORE_MUTEX as isize));
                // SAFETY: a header mutex's file has its header, with the
                // 4-byte aligned `cond_seq`, in the same live mapping for
                // 'm (`new`); it is only ever accessed atomically.
                Some(unsafe { w.as_ref() })
            }
            Books::None | Books::Permit { .. } => None,
        }
    }

    /// Wakes every condition waiter of the file (as `notify_all`): an
    /// owner death or a holder's panic is news for them (`crate::cond`).
    /// Nothing for other kinds.
    #[cold]
    pub(crate) fn cond_broadcast(&self) {
        if let Some(w) = self.cond_word() {
            crate::cond::notify(w, true);
        }
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
    /// [`LockError::Deadlock`], [`LockError::Stuck`],
    /// [`LockError::TooManyHeld`], [`LockError::FileChanged`] or
    /// [`LockError::Io`].
    #[inline]
    pub(crate) fn acquire<'n>(
        &self,
        wait: Wait<'_>,
        name: impl Fn() -> Name<'n>,
    ) -> Result<Got, Fail> {
        // The fast path: room for one more lock, and the first try takes a
        // free lock cleanly. Anything else is one out-of-line call, which
        // gets everything by value (in registers): a `&self` or `&name`
        // argument would make the fast path store them on the stack first.
        let first = match wait {
            Wait::Cancellable(..) => None,
            _ if identity::must_check() => None,
            Wait::Try | Wait::Block | Wait::Until(_) => {
                // SAFETY: an initialised robust mutex in a live mapping (`new`).
                let rc = unsafe { sys::mutex_clocklock_rc(self.as_ptr(), &sys::PAST_DEADLINE) };
                if rc == 0 {
                    // SAFETY: the lock call just gave us the lock, cleanly.
                    return unsafe { self.took(false, false, name) };
                }
                Some(rc)
            }
        };
        Self::acquire_slow(self.mutex, self.books, wait, name, first)
    }

    /// Whether the lock word names the calling thread (as a holder through
    /// this crate, since the last fork).
    #[inline]
    pub(crate) fn held_by_caller(&self) -> bool {
        u64::from(self.word().load(Ordering::Relaxed) & sys::FUTEX_TID_MASK)
            == identity::locker_tid()
    }

    /// Bookkeeping right after the calling thread took the lock (`died`:
    /// with EOWNERDEAD): the owner record, the counters and the log. A
    /// retired file is let go again and reported as not recoverable.
    ///
    /// # Safety
    /// The calling thread has just taken this lock (with EOWNERDEAD when
    /// `died`) and holds it, and it passed [`check_room`] before (which
    /// keeps its identity cache fresh, see `identity::locker_me`).
    #[inline]
    pub(crate) unsafe fn took<'n>(
        &self,
        died: bool,
        contended: bool,
        name: impl Fn() -> Name<'n>,
    ) -> Result<Got, Fail> {
        if !died {
            // SAFETY: we hold the lock (caller's contract).
            unsafe { self.record_acquired(contended) };
            if std::thread::panicking() {
                self.took_while_panicking();
            }
            // Only a contended acquisition is logged (debug): a line per
            // clean lock would cost its level check on every fast path
            // (docs/benchmarks.md, issue 12), and say nothing useful at
            // millions of locks a second.
            if contended {
                log::debug!("{}: acquired after contention", name());
            }
            return Ok(Got::Clean);
        }
        self.took_dead(contended, name())
    }

    /// Clears the hot record (at the outermost level) and unlocks — if the lock word
    /// still names the calling thread. If it does not (a guard inherited
    /// through fork; a file truncated, reset or overwritten under its
    /// holder), nothing is touched and the answer is
    /// [`LockError::NotOwner`]. If the thread is panicking, the outermost
    /// release counts as the holder's death (see [`Self::release_cold`]).
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as above.
    ///
    /// # Safety
    /// The calling thread took the lock through this `RawMutex` and has not
    /// released it since (the guard's contract; the lock word may still say
    /// otherwise, which is checked).
    #[inline(always)]
    pub(crate) unsafe fn release<'n>(&self, name: impl Fn() -> Name<'n>) -> Result<(), LockError> {
        let w = self.word().load(Ordering::Relaxed);
        // The whole word: FUTEX_WAITERS (a contended release) also takes
        // the out-of-line path, which compares the TID bits alone.
        if u64::from(w) != identity::locker_tid() || std::thread::panicking() {
            // SAFETY: forwarded from the caller.
            return unsafe { self.release_cold(w, name()) };
        }
        // SAFETY: the word names us: we hold it (and the caller's contract).
        unsafe { self.unlock_ours() };
        Ok(())
    }

    /// [`Self::release`] for a guard's `Drop`: the same, with any error
    /// only logged (where it is found). The fast path builds no `Result` and
    /// tests one condition; everything else (not ours, waiters to wake,
    /// panicking) is one out-of-line call, so the drop stays small enough
    /// to be inlined. A clean release is not logged (see `took`); a release
    /// to waiters is (debug, "released").
    ///
    /// # Safety
    /// As [`Self::release`].
    #[inline(always)]
    pub(crate) unsafe fn release_in_drop(&self, name: impl Fn() -> Name<'m>) {
        let w = self.word().load(Ordering::Relaxed);
        // The whole word, as in `release`.
        if u64::from(w) != identity::locker_tid() || std::thread::panicking() {
            // SAFETY: forwarded from the caller.
            unsafe { Self::release_slow_in_drop(self.mutex, self.books, w, name) };
            return;
        }
        // SAFETY: the word names us: we hold it (and the caller's contract).
        unsafe { self.unlock_ours() };
    }

    /// The rest of [`Self::release_in_drop`]. Everything by value, in
    /// registers (the mutex, the books, the word, the closure): a
    /// `&self` or `&dyn` argument would make the fast path store them on
    /// the stack before its test.
    ///
    /// # Safety
    /// As [`Self::release`], for the `RawMutex` made of `mutex` and `books`.
    #[cold]
    #[inline(never)]
    unsafe fn release_slow_in_drop(
        mutex: NonNull<libc::pthread_mutex_t>,
        books: Books,
        w: u32,
        name: impl Fn() -> Name<'m>,
    ) {
        // SAFETY: the caller's `RawMutex` was made by `new` from these.
        let raw = unsafe { Self::new(mutex, books) };
        // SAFETY: forwarded from the caller. An error was logged.
        let _ = unsafe { raw.release_cold(w, name()) };
    }

    /// Clears the hot record at the outermost release (glibc's `__count`
    /// at most 1: an inner release of a re-entrant lock keeps it), counts
    /// the outermost release and unlocks.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline(always)]
    unsafe fn unlock_ours(&self) {
        let outermost = match self.books {
            Books::None => true,
            Books::Header | Books::Permit { .. } => {
                // SAFETY: we hold the lock: `__count` is ours to read.
                let outermost = unsafe { sys::mutex_count(self.as_ptr()) } <= 1;
                if outermost {
                    // We hold the lock: the only writer of the hot record.
                    let (who, since, _) = self.hot_atomics();
                    // Nobody, and no time or label bit left behind (the
                    // same cache line: one more 8-byte store).
                    who.store(0, Ordering::Relaxed);
                    since.store(0, Ordering::Relaxed);
                }
                outermost
            }
        };
        if outermost {
            identity::gave_one();
        }
        // SAFETY: we hold the lock (caller's contract).
        let rc = unsafe { sys::mutex_unlock_rc(self.as_ptr()) };
        // glibc answers an inner unlock of a re-entrant relock made inside
        // a recovery not yet marked consistent with ENOTRECOVERABLE, having
        // dropped one level all the same (the mutex stays held and the
        // outer recovery can still be completed): fine.
        debug_assert!(
            rc == 0 || (rc == libc::ENOTRECOVERABLE && !outermost),
            "pthread_mutex_unlock failed: {rc}"
        );
    }

    /// A racy snapshot of the hot and cold records (`None`: the kind has
    /// none), as a reader sees them.
    pub(crate) fn records(&self) -> Option<crate::owner::Records> {
        match self.books {
            Books::None => None,
            Books::Header | Books::Permit { .. } => {
                // SAFETY: the mutex lies in the live mapping with its
                // records at their offsets (`new`).
                Some(unsafe { crate::owner::Records::read(self.as_ptr()) })
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
