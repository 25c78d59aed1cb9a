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

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::file::layout::{self, Counters, OwnerRecord};
use crate::identity;
use crate::owner::OwnerInfo;
use crate::sys::{self, LockFail, Locked};
use std::marker::PhantomData;
use std::mem::offset_of;
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

/// What one stuck check saw of a lock whose holder looked gone: the lock
/// word (FUTEX_WAITERS aside, which waiters set at any time) and the owner
/// record's identity fields. Two equal ones a slice apart make it stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suspect {
    word: u32,
    record: Option<(u32, u32, u64, u64, u64)>,
}

impl Suspect {
    /// From a lock word and the owner record (`None`: the kind has none).
    pub(crate) fn new(word: u32, record: Option<&OwnerRecord>) -> Suspect {
        Suspect {
            word: word & !sys::FUTEX_WAITERS,
            record: record.map(|r| (r.pid, r.tid, r.pidns_ino, r.start_time, r.acquired_unix_ns)),
        }
    }
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
            _ if identity::room() == 0 => None,
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

    /// The rest of [`Self::acquire`]: `first` is the code of its first
    /// try ([`Self::try_once`]), if it made one (then the thread had room
    /// for one more lock).
    ///
    /// # Errors
    /// As [`Self::acquire`].
    #[cold]
    #[inline(never)]
    fn acquire_slow<'n>(
        mutex: NonNull<libc::pthread_mutex_t>,
        books: Books,
        wait: Wait<'_>,
        name: impl Fn() -> Name<'n>,
        first: Option<libc::c_int>,
    ) -> Result<Got, Fail> {
        // SAFETY: the caller's `RawMutex` was made by `new` from these.
        let raw = unsafe { Self::new(mutex, books) };
        raw.acquire_rest(wait, name, first)
    }

    /// [`Self::acquire_slow`] on the `RawMutex`.
    fn acquire_rest<'n>(
        &self,
        wait: Wait<'_>,
        name: impl Fn() -> Name<'n>,
        mut first: Option<libc::c_int>,
    ) -> Result<Got, Fail> {
        let mut try_once = || {
            first
                .take()
                .map_or_else(|| self.try_once(), sys::classify_lock)
        };
        check_room(|| self.held_by_caller()).map_err(Fail::Lock)?;
        let (r, contended) = match wait {
            // Try once without blocking and wait only if it is busy:
            // `contended` is then exact, and no load of the lock word sits
            // in front of glibc's CAS on the fast path (measured: 1.23x ->
            // 1.12x raw glibc, docs/benchmarks.md).
            Wait::Block => match try_once() {
                Err(LockFail::Busy) => (self.wait_in_slices(None, &name)?, true),
                r => (r, false),
            },
            Wait::Try => (try_once(), false),
            Wait::Until(deadline) => match try_once() {
                Err(LockFail::Busy) => (self.wait_in_slices(Some(deadline), &name)?, true),
                r => (r, false),
            },
            Wait::Cancellable(cancel, deadline) => {
                let (r, slept) = crate::wait::lock_cancellable(self, cancel, deadline, &name)
                    .map_err(Fail::Lock)?;
                if slept && r.is_ok() {
                    self.unchanged_after_wait(name())?;
                }
                (r, slept)
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

    /// The contended wait: `pthread_mutex_clocklock` in slices of at most
    /// [`crate::wait::SLICE`] (or up to `deadline`, if sooner), looking after
    /// each whole slice that timed out whether the lock is stuck, so that a
    /// wait never hangs silently. Returns the last lock call's answer
    /// (`Busy` once the deadline passed).
    #[cold]
    #[inline(never)]
    fn wait_in_slices<'n>(
        &self,
        deadline: Option<&libc::timespec>,
        name: &impl Fn() -> Name<'n>,
    ) -> Result<Result<Locked, LockFail>, Fail> {
        let mut seen = None;
        loop {
            let (until, is_deadline) = crate::wait::slice_end(deadline);
            // SAFETY: an initialised robust mutex in a live mapping (`new`).
            let r = unsafe { sys::mutex_clocklock(self.as_ptr(), &until) };
            if r.is_ok() {
                self.unchanged_after_wait(name())?;
            }
            if !matches!(r, Err(LockFail::Busy)) || is_deadline {
                return Ok(r);
            }
            if let Some(e) = self.stuck(name(), &mut seen) {
                return Err(Fail::Lock(e));
            }
        }
    }

    /// If the lock is stuck — its word names a thread of this PID namespace
    /// that is gone, and the kernel never marked it dead — the error that
    /// says so (and logs it). Exact for a thread that is merely exiting:
    /// the kernel walks a dying thread's robust list before its TID
    /// disappears, so a word re-read after seeing the holder gone is final
    /// (see `status::lock_state`). Never for a file or holder of another
    /// PID namespace, whose TIDs we cannot see.
    ///
    /// Called after each whole slice of a wait, with `seen` kept by the
    /// waiter across its slices: the verdict needs the holder gone
    /// ([`identity::holder_gone`]: only the kernel's ESRCH, or a zombie in
    /// our own `/proc`) at two calls in a row with the same lock word and
    /// the same owner record (so about a second).
    #[cold]
    pub(crate) fn stuck(&self, name: Name<'_>, seen: &mut Option<Suspect>) -> Option<LockError> {
        let verdict = self.looks_stuck();
        let confirmed = verdict.is_some() && verdict == *seen;
        *seen = verdict;
        let tid = verdict.filter(|_| confirmed)?.word & sys::FUTEX_TID_MASK;
        let e = LockError::Stuck {
            tid,
            path: name.path.to_path_buf(),
            permit: name.permit,
            remedy: match self.books {
                Books::Header => "run `robust-mutex reset <path>` (or robust_mutex::reset)",
                Books::Permit { .. } => {
                    "replace the semaphore (OpenOptions::replace(true)) and reopen it"
                }
                Books::None => "remove the file and create it again (a bare file has no reset)",
            },
        };
        log::error!("{e}");
        Some(e)
    }

    /// One look for [`Self::stuck`]: what it saw if the holder named by the
    /// lock word is gone and the word, re-read, still names it.
    #[cold]
    fn looks_stuck(&self) -> Option<Suspect> {
        let ours = identity::me().pidns_ino;
        if self.file_pid_namespace().is_some_and(|ns| ns != ours) || ours == 0 {
            return None;
        }
        let mut w = self.word().load(Ordering::Acquire);
        for _ in 0..16 {
            let tid = w & sys::FUTEX_TID_MASK;
            if tid == 0 || w & sys::FUTEX_OWNER_DIED != 0 {
                return None;
            }
            let record = self.record().map(|r| {
                // SAFETY: the record lies in the live mapping; a racy read,
                // only used to name the holder.
                unsafe { std::ptr::read_volatile(r.as_ptr()) }
            });
            let named = record.filter(|r| r.tid == tid && r.pid != 0);
            if named.is_some_and(|r| r.pidns_ino != ours) {
                return None;
            }
            if !identity::holder_gone(tid) {
                return None;
            }
            let again = self.word().load(Ordering::Acquire);
            if crate::status::same_holder(again, w) {
                return Some(Suspect::new(w, record.as_ref()));
            }
            w = again;
        }
        None
    }

    /// The file's header (a mutex's own, or a permit's semaphore's).
    fn header(&self) -> Option<NonNull<layout::Header>> {
        match self.books {
            Books::None => None,
            Books::Header => Some(self.at(-(layout::MUTEX_OFFSET as isize))),
            Books::Permit { counters } => {
                // SAFETY: `counters` lies COUNTERS_OFFSET bytes into the
                // live mapping, after the header (`new`).
                Some(unsafe { counters.cast::<u8>().sub(layout::COUNTERS_OFFSET).cast() })
            }
        }
    }

    /// The PID namespace the file was created in (`None`: a bare file,
    /// which does not say).
    fn file_pid_namespace(&self) -> Option<u64> {
        let h = self.header()?;
        // SAFETY: the header lies in the live mapping; the field is
        // immutable once the file is READY.
        Some(unsafe { std::ptr::addr_of!((*h.as_ptr()).pidns_ino).read_volatile() })
    }

    /// Whether the file's header stopped saying READY (or RETIRED) under
    /// us: it was truncated or overwritten. (A bare file has no header.)
    #[cold]
    fn file_changed(&self) -> bool {
        let Some(h) = self.header() else {
            return false;
        };
        // SAFETY: the state word is a 4-byte aligned u32 of the header, in
        // the live mapping; it is only accessed atomically.
        let state = unsafe {
            AtomicU32::from_ptr(
                h.as_ptr()
                    .cast::<u8>()
                    .add(offset_of!(layout::Header, state))
                    .cast(),
            )
        };
        let s = state.load(Ordering::Acquire);
        s != layout::STATE_READY && s != layout::STATE_RETIRED
    }

    /// Right after the calling thread took the lock following a wait (and
    /// before any bookkeeping): if the file changed under us meanwhile
    /// (truncated or overwritten: the header no longer says READY), lets
    /// the lock go at once and says so. Never on the fast path.
    ///
    /// # Errors
    /// [`LockError::FileChanged`], as above.
    #[cold]
    #[inline(never)]
    pub(crate) fn unchanged_after_wait(&self, name: Name<'_>) -> Result<(), Fail> {
        if !self.file_changed() {
            return Ok(());
        }
        // SAFETY: the calling thread just took the lock (this function's
        // callers run it right after a lock call returned it).
        let _ = unsafe { sys::mutex_unlock(self.as_ptr()) };
        let e = LockError::FileChanged {
            path: name.path.to_path_buf(),
        };
        log::error!("{e}");
        Err(Fail::Lock(e))
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
            unsafe { self.record_acquired(false, contended) };
            if std::thread::panicking() {
                self.took_while_panicking();
            }
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

    /// The calling thread, already panicking, has just taken this lock and
    /// written its record: unless it held it already (a re-entrant relock,
    /// depth 2 or more now), its release during this panic will be a plain
    /// unlock.
    #[cold]
    #[inline(never)]
    fn took_while_panicking(&self) {
        if self.depth() > 1 {
            return; // a relock of a lock held from before: its outermost release decides
        }
        identity::taken_while_panicking(self.as_ptr() as usize);
    }

    /// Whether the calling thread took this lock while already panicking
    /// (and still holds it): its release during the panic is no death.
    pub(crate) fn taken_while_panicking(&self) -> bool {
        identity::was_taken_while_panicking(self.as_ptr() as usize, false)
    }

    /// The owner record's nesting depth (0 for a kind without a record).
    fn depth(&self) -> u32 {
        self.record().map_or(0, |r| {
            // SAFETY: the record lies in the live mapping; a racy read, but
            // only its holder (the caller) writes it.
            unsafe { std::ptr::addr_of!((*r.as_ptr()).depth).read_volatile() }
        })
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
        if std::thread::panicking() {
            self.took_while_panicking();
        }
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
    /// thread, and counts the lock against its bound (a re-entrant relock
    /// only once). Returns the dead owner's record when `died`.
    ///
    /// # Safety
    /// As [`Self::took`]: the calling thread has just acquired the lock,
    /// after passing [`check_room`].
    #[inline(always)]
    unsafe fn record_acquired(&self, died: bool, contended: bool) -> Option<Box<OwnerInfo>> {
        let now = sys::coarse_unix_ns;
        if let Books::None = self.books {
            identity::took_one();
            return None;
        }
        let mut record = self.at::<OwnerRecord>(layout::RECORD_AFTER_MUTEX as isize);
        // SAFETY: we hold the lock, so we are the only writer of the record,
        // which lies in the live mapping (`new`).
        let r = unsafe { record.as_mut() };
        // The thread's facts, copied once before the match and before any
        // write to the record (every lock call passed `check_room` first).
        let me = identity::locker_me();
        let previous = match self.books {
            Books::None => None,
            Books::Header => {
                let mut counters = self.header_counters();
                // SAFETY: as for the record: only the holder writes them.
                let previous = r.acquired(&me, died, contended, now, unsafe { counters.as_mut() });
                if r.depth == 1 {
                    identity::took_one(); // not a re-entrant relock
                }
                previous
            }
            Books::Permit { counters } => {
                let mut c = Counters::default();
                let previous = r.acquired(&me, died, contended, now, &mut c);
                self.add_shared(counters, &c);
                identity::took_one();
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

    /// Clears (one level of) the owner record and unlocks — if the lock word
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
        log::debug!("{}: released", name());
        Ok(())
    }

    /// [`Self::release`] for a guard's `Drop`: the same, with any error
    /// only logged (where it is found), and the debug line "released"
    /// written here for every kind. The fast path builds no `Result` and
    /// tests one condition; everything else (not ours, panicking, debug
    /// logging on) is one out-of-line call, so the drop stays small enough
    /// to be inlined.
    ///
    /// # Safety
    /// As [`Self::release`].
    #[inline(always)]
    pub(crate) unsafe fn release_in_drop(&self, name: impl Fn() -> Name<'m>) {
        let w = self.word().load(Ordering::Relaxed);
        // The whole word, as in `release`.
        if u64::from(w) != identity::locker_tid()
            || std::thread::panicking()
            || log::max_level() >= log::LevelFilter::Debug
        {
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

    /// Clears one level of the owner record, counts the outermost release
    /// and unlocks.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline(always)]
    unsafe fn unlock_ours(&self) {
        let outermost = match self.books {
            Books::None => true,
            Books::Header | Books::Permit { .. } => {
                let mut record = self.at::<OwnerRecord>(layout::RECORD_AFTER_MUTEX as isize);
                // SAFETY: we hold the lock: the only writer of the record.
                unsafe { record.as_mut() }.released()
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

    /// The release paths off the fast one: the word (`w`) is not exactly
    /// the calling thread's TID (it names another thread, or us with
    /// FUTEX_WAITERS set), the thread is panicking, or debug logging is on.
    ///
    /// A panic that unwinds out of a critical section leaves what the lock
    /// protects as half-done as a crash would, so the outermost release
    /// during a panic does what the kernel does for a dying thread: the
    /// mutex leaves this thread's robust list and its word becomes
    /// FUTEX_OWNER_DIED (a waiter is woken). The owner record stays: the
    /// next locker, in any process, gets `OwnerDied` naming this thread.
    ///
    /// # Safety
    /// As [`Self::release`].
    #[cold]
    #[inline(never)]
    unsafe fn release_cold(&self, w: u32, name: Name<'_>) -> Result<(), LockError> {
        let tid = w & sys::FUTEX_TID_MASK;
        if u64::from(tid) == identity::locker_tid() {
            if !std::thread::panicking() {
                // Ours: a waiter or debug logging brought us here.
                // SAFETY: the word names us (and the caller's contract).
                unsafe { self.unlock_ours() };
                log::debug!("{name}: released");
                return Ok(());
            }
            // Ours, and the thread is panicking.
            let depth = self.record().map_or(1, |r| {
                // SAFETY: we hold the lock: the record is ours to read.
                unsafe { r.as_ref() }.depth
            });
            if depth > 1 || identity::was_taken_while_panicking(self.as_ptr() as usize, true) {
                // A nested re-entrant guard (the outermost one counts), or
                // a lock taken during this panic (a Drop that locks, does
                // its update and unlocks): a plain release.
                // SAFETY: we hold the lock.
                unsafe { self.unlock_ours() };
                return Ok(());
            }
            // SAFETY: we hold the lock (the word names us), in the live
            // mapping.
            match unsafe { sys::die_holding(self.as_ptr(), tid) } {
                sys::Death::Done => {
                    identity::gave_one();
                    log::error!(
                        "{name}: the holder panicked holding the lock: released as a death; the next locker gets OwnerDied"
                    );
                }
                sys::Death::Refused => {
                    log::error!(
                        "{name}: the holder panicked holding the lock, and this platform cannot mark it dead: released as if clean"
                    );
                    // SAFETY: we hold the lock.
                    unsafe { self.unlock_ours() };
                }
            }
            return Ok(());
        }
        // Not ours. If it is on this thread's robust list, the file changed
        // under us: take it off (so the kernel's walk at our death never
        // reads it) without touching the word or the record, which are
        // someone else's now.
        // SAFETY: every entry of our robust list is a mutex we hold, in a
        // mapping kept alive while held (registry.rs).
        let on_our_list = unsafe { sys::forget_held(self.as_ptr()) };
        // Credit the held count once per lock: only the guard that took it
        // off our list (nested re-entrant guards all come here; a guard
        // inherited through fork was never counted here). Where the list
        // cannot be read, guess: not a fork child's.
        if on_our_list.unwrap_or(!identity::is_fork_child()) {
            identity::gave_one();
        }
        if on_our_list != Some(true) && identity::is_fork_child() {
            log::debug!("{name}: a guard inherited through fork was dropped; nothing done");
        } else {
            log::error!(
                "{name}: the lock word ({w:#x}) no longer names this thread: the file was truncated, reset or otherwise changed under the holder; nothing unlocked"
            );
        }
        Err(LockError::NotOwner {
            path: name.path.to_path_buf(),
        })
    }

    /// `pthread_mutex_consistent`, plus one recovery on the counters.
    ///
    /// # Safety
    /// The calling thread acquired the lock with EOWNERDEAD and has neither
    /// unlocked it nor marked it consistent since (glibc does not check).
    pub(crate) unsafe fn mark_consistent(&self, name: Name<'_>) {
        if !self.held_by_caller() {
            // A recovery inherited through fork, or a file changed under
            // us: glibc's consistent would not check, so we do.
            log::error!("{name}: not marking consistent: this thread does not hold the lock");
            return;
        }
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

/// The held-lock bound, checked before every lock call of every kind: one
/// thread-local load and compare on the fast path. `held_already` says
/// whether the lock asked for is the calling thread's already (a re-entrant
/// relock adds nothing to the robust list; an errorcheck relock is
/// `Deadlock` anyway).
///
/// # Errors
/// [`LockError::TooManyHeld`].
#[inline(always)]
pub(crate) fn check_room(held_already: impl FnOnce() -> bool) -> Result<(), LockError> {
    if identity::room() == 0 {
        return no_room(held_already);
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn no_room(held_already: impl FnOnce() -> bool) -> Result<(), LockError> {
    if identity::init_locker() || held_already() {
        return Ok(());
    }
    let e = LockError::TooManyHeld {
        held: identity::held(),
        max: identity::MAX_HELD_PER_THREAD,
    };
    log::error!("{e}");
    Err(e)
}
