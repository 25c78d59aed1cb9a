//! The contended acquisition: everything after the fast path's first try
//! failed, or the thread had no room for one more lock. A wait goes in
//! slices and gives up on a stuck lock ([`LockError::Stuck`]); a lock taken
//! after a wait is checked for a file that changed meanwhile
//! ([`LockError::FileChanged`]).

use super::{Books, Fail, Got, Name, RawMutex, Wait, check_room};
use crate::error::LockError;
use crate::file::layout;
use crate::identity;
use crate::owner::Records;
use crate::sys::{self, LockFail, Locked};
use std::mem::offset_of;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// What one stuck check saw of a lock whose holder looked gone: the lock
/// word (FUTEX_WAITERS aside, which waiters set at any time) and the owner
/// records. Two equal ones a slice apart make it stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suspect {
    word: u32,
    records: Option<Records>,
}

impl Suspect {
    /// From a lock word and the owner records (`None`: the kind has none).
    pub(crate) fn new(word: u32, records: Option<&Records>) -> Suspect {
        Suspect {
            word: word & !sys::FUTEX_WAITERS,
            records: records.copied(),
        }
    }
}

impl RawMutex<'_> {
    /// The rest of [`Self::acquire`]: `first` is the code of its first
    /// try ([`Self::try_once`]), if it made one (then the thread had room
    /// for one more lock).
    ///
    /// # Errors
    /// As [`Self::acquire`].
    #[cold]
    #[inline(never)]
    pub(super) fn acquire_slow<'n>(
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
            // A racy read, only used to name the holder.
            let records = self.records();
            let named = records.and_then(|r| r.owner()).filter(|o| o.tid == tid);
            // 0: unknown (the cold record describes another process, or
            // a rewrite of it was cut short), not another namespace.
            if named.is_some_and(|o| o.pid_namespace != 0 && o.pid_namespace != ours) {
                return None;
            }
            if !identity::holder_gone(tid) {
                return None;
            }
            let again = self.word().load(Ordering::Acquire);
            if crate::status::same_holder(again, w) {
                return Some(Suspect::new(w, records.as_ref()));
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
}
