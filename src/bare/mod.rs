//! [`BareMutex`]: pymutex interop. A pymutex file holds the bare glibc
//! `pthread_mutex_t` (40 bytes on x86_64) and nothing else: no header, no
//! value, no owner record. pymutex creates it with `O_CREAT|O_EXCL` and mode
//! 0400, initialises ERRORCHECK + ROBUST + PSHARED in a private buffer, writes
//! those bytes with one `write`, maps the file and chmods it to 0600; its
//! loader insists on the exact size. Python (pymutex, ctypes) and Rust can
//! share one file.
//!
//! The handshake without a header (`docs/pymutex.md`):
//!
//! * **Creating**: `O_CREAT|O_EXCL` with mode 0400, our `flock`, one `pwrite`
//!   of a mutex initialised in private memory (like pymutex, so no reader
//!   ever sees a zero-filled mutex), `fchmod` to the final mode, unlock.
//! * **Opening a writable file**: it must be exactly one `pthread_mutex_t`
//!   with glibc's kind word for robust + pshared + errorcheck; anything else
//!   is a typed error and the file is not changed.
//! * **Opening a 0400 file** (the creator's mark): pymutex creators take no
//!   `flock`, so a live one cannot be told from a dead one. If its content is
//!   what a creator leaves (nothing, zeros, or the initialised mutex), the
//!   opener waits up to `init_timeout` for the mode to change; then, under our
//!   `flock`, it finishes the job: it writes a fresh mutex into an empty or
//!   zeroed file, or only chmods a file that already holds the mutex (root
//!   pymutex loaders ignore the mode and may be using it). Other content is
//!   refused at once.

mod guard;
mod open;

pub use guard::BareGuard;
pub(crate) use open::{creator_leftover, holds_mutex, is_bare_file};

use crate::cancel::CancelToken;
use crate::error::{Error, LockError};
use crate::identity;
use crate::options::OpenOptions;
use crate::outcome::{Acquired, Recovery};
use crate::owner::Records;
use crate::raw::{Books, Fail, Got, Name, RawMutex, Wait};
use crate::registry::{Key, Registry};
use crate::status::{self, Counters, LockState, Status};
use crate::sys;
use memmap2::MmapRaw;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The size of a bare (pymutex) file: exactly one glibc `pthread_mutex_t`
/// (40 bytes on x86_64 and aarch64).
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("py.lock");
/// robust_mutex::BareMutex::open(&path)?;
/// assert_eq!(std::fs::metadata(&path)?.len(), robust_mutex::BARE_SIZE as u64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const BARE_SIZE: usize = sys::MUTEX_SIZE;

/// A mapping of a bare file.
#[derive(Debug)]
pub(crate) struct BareMap {
    raw: MmapRaw,
}

impl BareMap {
    /// Whether the file still backs the mapping: its bytes can be read and
    /// are still a robust pshared errorcheck mutex (not cut and
    /// grown again to zeros). A truncation right after this check is not
    /// caught (see [`crate::registry::Mapping::intact`]).
    fn intact(&self) -> bool {
        if !self.covered() {
            return false;
        }
        // SAFETY: the file covers the mapping (just checked); a racy copy
        // of the mutex's bytes, used only to check its kind word.
        let bytes: [u8; BARE_SIZE] = unsafe { std::ptr::read_volatile(self.raw.as_ptr().cast()) };
        open::kind_ok(&bytes)
    }

    /// Whether the file still covers the mapping, so that reading it cannot
    /// fault (see [`crate::registry::Mapping`]'s `covered`).
    fn covered(&self) -> bool {
        sys::readable(self.raw.as_ptr().wrapping_add(BARE_SIZE - 1)) != Some(false)
    }

    /// The mutex: the whole file.
    fn raw(&self) -> RawMutex<'_> {
        let m = NonNull::new(self.raw.as_mut_ptr()).expect("a mapping is never at address 0");
        // SAFETY: a BareMap is only made by `attach`, for a file validated as
        // exactly one initialised robust pshared errorcheck mutex, mapped
        // for as long as `self` lives. No books: a bare file has none.
        unsafe { RawMutex::new(m.cast(), Books::None) }
    }

    /// A live thread of this process holds it. Unmapping a robust mutex that
    /// a live thread holds makes the kernel abandon that thread's robust-list
    /// walk at death (see registry.rs), so such a mapping stays.
    /// A file truncated under us counts as held: its lock word cannot be
    /// read without SIGBUS.
    fn held_here(&self) -> bool {
        if !self.covered() {
            log::warn!(
                "last handle of a bare robust mutex whose file was truncated under it; keeping it mapped"
            );
            return true;
        }
        let held = self.raw().held_by_live_thread_here();
        if held {
            log::warn!(
                "last handle of a bare robust mutex dropped while this process holds it; keeping it mapped"
            );
        }
        held
    }
}

/// One mapping per (device, inode) per process, for bare files.
fn registry() -> &'static Registry<BareMap> {
    static REGISTRY: OnceLock<Registry<BareMap>> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// A robust mutex in a pymutex-compatible bare file: exactly one
/// `pthread_mutex_t` (PROCESS_SHARED + ROBUST + ERRORCHECK), no header, no
/// value, no owner record. Python processes using pymutex (or the same
/// `pthread_mutex_*` calls through ctypes) and Rust processes can share one
/// file, and an owner death on either side reaches the other.
///
/// The lock semantics are those of [`SharedMutex`](crate::SharedMutex).
/// What a bare file cannot have: a protected value, counters, a label, a
/// boot id (a file from an earlier boot may be [`LockState::Stuck`]: remove
/// such files at boot, or keep them in a tmpfs such as `/dev/shm`), a
/// PID-namespace check, and [`reset`](crate::reset). See `docs/pymutex.md`.
/// A lock whose holder is gone without the kernel releasing it is reported
/// as [`LockError::Stuck`] after about a second of waiting; since a bare
/// file records no PID namespace, do not share one between PID namespaces
/// (a holder in another namespace would look gone).
///
/// `BareMutex` is `Send` and `Sync`; its guards are not `Send`.
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
/// * a waiter cannot tell: a bare file has no header to check, so it gets
///   the zeroed lock as if it were free;
/// * the holder's [`BareGuard::unlock`] returns [`LockError::NotOwner`]
///   (dropping the guard logs it) and touches nothing, since the lock word
///   no longer names it.
///
/// Give write access to a lock file only to its users.
///
/// # Async
///
/// No `lock_async` for bare files: they exist to share a lock with
/// pymutex during a migration, and its users are threads. Async services
/// use [`SharedMutex::lock_async`](crate::SharedMutex) (feature `async`).
///
/// # Examples
/// ```
/// use robust_mutex::{Acquired, BareMutex};
/// # let dir = tempfile::tempdir()?;
/// let m = BareMutex::open(dir.path().join("py.lock"))?; // pymutex can load this file
/// let guard = match m.lock()? {
///     Acquired::Clean(g) => g,
///     Acquired::OwnerDied(r) => {
///         // A holder (Python or Rust) died holding it: repair what it
///         // protects, then say so.
///         r.mark_consistent()
///     }
/// };
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BareMutex {
    path: PathBuf,
    key: Key,
    map: Option<Arc<BareMap>>,
}

impl BareMutex {
    /// Opens the bare file at `path`, creating it (the way pymutex does) if
    /// it is missing: `BareMutex::open_with(path, OpenOptions::new().create(true))`.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("py.lock");
    /// let created = robust_mutex::BareMutex::open(&path)?;
    /// let opened = robust_mutex::BareMutex::open(&path)?; // the same lock
    /// let g = created.try_lock()?;
    /// // An errorcheck mutex: this thread holds it already.
    /// assert!(matches!(opened.try_lock(), Err(robust_mutex::LockError::Deadlock)));
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, OpenOptions::new().create(true))
    }

    /// Opens (or creates, as `opts` say) the bare file at `path`. Honours
    /// `create`, `create_new`, `mode` (default 0600), `init_timeout` and
    /// `allow_other_owners`.
    ///
    /// # Errors
    /// * [`Error::Truncated`] (shorter) or [`Error::ForeignFile`] (longer, for
    ///   instance a [`SharedMutex`](crate::SharedMutex) file) for a file that
    ///   is not exactly [`BARE_SIZE`] bytes;
    /// * [`Error::Corrupt`] if it is not a robust process-shared errorcheck
    ///   mutex (glibc's kind word);
    /// * [`Error::ForeignFile`] for a read-only file that is not a creator's
    ///   leftover;
    /// * [`Error::InitTimeout`] if a creator holding our `flock` is still at
    ///   work after `init_timeout`;
    /// * [`Error::NotFound`], [`Error::AlreadyExists`], [`Error::Symlink`],
    ///   [`Error::NotRegularFile`], [`Error::PermissionDenied`],
    ///   [`Error::ForeignOwner`], [`Error::UnsupportedFilesystem`],
    ///   [`Error::InvalidMode`], [`Error::InvalidOptions`] (`replace`, which
    ///   bare files do not have), [`Error::Io`].
    ///
    /// A rejected file is left untouched.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{BareMutex, Error, OpenOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("py.lock");
    /// let opts = OpenOptions::new().create_new(true).mode(0o660).clone();
    /// let m = BareMutex::open_with(&path, &opts)?;
    /// assert!(matches!(
    ///     BareMutex::open_with(&path, &opts),
    ///     Err(Error::AlreadyExists { .. })
    /// ));
    /// # drop(m);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self, Error> {
        open::open(path.as_ref(), opts)
    }

    /// Unlocks the lock the calling thread holds through a guard it
    /// [leaked](BareGuard::leak). A lock word that no longer names the
    /// calling thread (the file changed under it; a fork child) is reported
    /// and nothing is unlocked, as by [`BareGuard::unlock`].
    ///
    /// # Errors
    /// [`LockError::NotOwner`], as above.
    ///
    /// # Safety
    /// The calling thread took the lock through this handle (or another
    /// handle of the same file in this process), leaked that acquisition's
    /// guard, and has not released it since.
    ///
    /// # Examples
    /// See [`BareGuard::leak`].
    pub unsafe fn unlock_leaked(&self) -> Result<(), LockError> {
        // SAFETY: the caller's contract is `release`'s: this thread took it
        // through this raw lock and has not released it (the lock word is
        // checked too).
        unsafe { self.raw().release(|| self.name()) }
    }

    /// The path it was opened by.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("py.lock");
    /// let m = robust_mutex::BareMutex::open(&path)?;
    /// assert_eq!(m.path(), path);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock's name in the log.
    fn name(&self) -> Name<'_> {
        Name {
            path: &self.path,
            permit: None,
        }
    }

    fn raw(&self) -> RawMutex<'_> {
        self.map.as_ref().expect("mapped until drop").raw()
    }

    /// Every lock call.
    #[inline]
    fn acquire(&self, wait: Wait<'_>) -> Result<Acquired<BareGuard<'_>>, LockError> {
        match self.raw().acquire(wait, || self.name()) {
            // SAFETY: `acquire` returned Ok: this thread holds the lock.
            Ok(Got::Clean) => Ok(Acquired::Clean(unsafe { BareGuard::new(self) })),
            Ok(Got::OwnerDied(previous)) => {
                // SAFETY: this thread holds the lock, taken with EOWNERDEAD
                // and not yet marked consistent.
                let r = unsafe { Recovery::new(BareGuard::new(self), previous) };
                Ok(Acquired::OwnerDied(r))
            }
            Err(Fail::Lock(e)) => Err(e),
            Err(Fail::NotRecoverable) => {
                log::error!("{}: mutex is not recoverable; remove the file", self.name());
                Err(LockError::NotRecoverable)
            }
        }
    }

    /// Blocks until the lock is acquired (`pthread_mutex_lock`).
    ///
    /// # Errors
    /// [`LockError::Deadlock`] if this thread holds it already,
    /// [`LockError::NotRecoverable`] after a recovery was abandoned (by
    /// Rust or by Python), [`LockError::Io`] for anything else.
    /// [`LockError::Stuck`] if, after about a second of waiting, the holder
    /// is found gone without the kernel having released the lock (see the
    /// variant); [`LockError::TooManyHeld`] if this thread already holds
    /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks;
    /// [`LockError::FileChanged`] if the file was truncated or overwritten
    /// while this thread waited.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock()?.recover_with(|_| {});
    /// assert!(matches!(m.lock(), Err(robust_mutex::LockError::Deadlock)));
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<Acquired<BareGuard<'_>>, LockError> {
        self.acquire(Wait::Block)
    }

    /// Acquires the lock only if it is free now. Uses `clocklock` with a
    /// past deadline, never glibc's `pthread_mutex_trylock`, which strands a
    /// not-recoverable mutex.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if another thread (of any process, Python or
    /// Rust) holds it; else as [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.try_lock()?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<Acquired<BareGuard<'_>>, LockError> {
        self.acquire(Wait::Try)
    }

    /// Waits at most `timeout` (CLOCK_MONOTONIC, so wall-clock jumps neither
    /// stretch nor cut it).
    ///
    /// # Errors
    /// [`LockError::TimedOut`]; else as [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock_timeout(std::time::Duration::from_millis(10))?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Acquired<BareGuard<'_>>, LockError> {
        self.acquire(Wait::Until(&sys::deadline_after(timeout)))
    }

    /// A wait that [`CancelToken::cancel`] can abandon (from another thread
    /// or a signal handler), with an optional timeout; see
    /// [`SharedMutex::lock_cancellable`](crate::SharedMutex::lock_cancellable).
    /// Python waiters are woken and served alike: the wait follows glibc's
    /// own protocol on the lock word.
    ///
    /// # Errors
    /// [`LockError::Cancelled`], [`LockError::TimedOut`]; else as [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock_cancellable(&robust_mutex::CancelToken::new(), None)?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_cancellable(
        &self,
        cancel: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<BareGuard<'_>>, LockError> {
        let deadline = timeout.map(sys::deadline_after);
        self.acquire(Wait::Cancellable(cancel, deadline.as_ref()))
    }

    /// The lock's state, read without locking. A bare file has no owner
    /// record, so the owner comes from the TID in the lock word and `/proc`:
    /// `owner` is `Some` while a thread of this PID namespace holds it
    /// ([`LockState::Locked`], with its pid, tid and process start time; the
    /// label is empty and `acquired_at` is unknown, the epoch) or after it
    /// vanished without the kernel marking it dead ([`LockState::Stuck`]).
    /// After an owner death the kernel clears the TID, so
    /// [`LockState::OwnerDead`] comes without an owner. `counters` are zero
    /// and `generation` is 0.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::LockState;
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// assert_eq!(m.status().state, LockState::Unlocked);
    /// let g = m.lock()?.recover_with(|_| {});
    /// let s = m.status();
    /// assert_eq!(s.state, LockState::Locked);
    /// assert_eq!(s.owner.unwrap().pid, std::process::id());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Status {
        let map = self.map.as_deref().expect("mapped until drop");
        if !map.intact() {
            return Status::truncated();
        }
        // SAFETY: the file (validated at open as exactly one robust mutex)
        // still covers the live mapping: just checked.
        unsafe { status_at(self.raw().as_ptr()) }
    }
}

/// The state of the bare mutex at `mutex`, without locking. Only Relaxed
/// loads of at most 4 bytes: a read-only mapping is enough.
///
/// # Safety
/// `mutex` is the start of a live mapping of a bare file, backed by the file
/// over `BARE_SIZE` bytes.
pub(crate) unsafe fn status_at(mutex: *mut libc::pthread_mutex_t) -> Status {
    // SAFETY: forwarded from the caller.
    let tid = unsafe { sys::lock_word_snapshot(mutex) } & sys::FUTEX_TID_MASK;
    let mut rec: Records = bytemuck::Zeroable::zeroed();
    if tid != 0 {
        // The holder's process: its start time names it (a thread's own
        // start time would not match the process's).
        let pid = tgid_of(tid).unwrap_or(tid);
        rec.hot.tid = tid;
        rec.hot.pid = pid;
        rec.cold.pid = pid;
        rec.cold.start_time = identity::start_time_of(pid).unwrap_or(0);
        rec.cold.pidns_ino = identity::pid_namespace();
    }
    // SAFETY: the mutex is in the live mapping; `rec` are local records.
    let (state, owner, word) = unsafe { status::lock_state(mutex, || rec) };
    let owner = owner.filter(|_| state != LockState::NotRecoverable);
    Status {
        state,
        owner,
        counters: Counters::default(),
        generation: 0,
        lock_word: word,
    }
}

/// The process (thread group) of thread `tid`, from `/proc/<tid>/status`.
fn tgid_of(tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Drop for BareMutex {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            registry().detach(self.key, m, BareMap::held_here);
        }
    }
}
