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

use crate::cancel::CancelToken;
use crate::error::{Error, LockError};
use crate::handshake::{check_file, io_err, open_error};
use crate::identity;
use crate::layout::{self, OwnerRecord};
use crate::options::OpenOptions;
use crate::registry::{Key, Registry};
use crate::status::{self, Counters, LockState, Status};
use crate::sys::{self, LockFail, Locked};
use memmap2::{MmapOptions, MmapRaw};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.raw.as_mut_ptr().cast()
    }

    /// A live thread of this process holds it. Unmapping a robust mutex that
    /// a live thread holds makes the kernel abandon that thread's robust-list
    /// walk at death (see registry.rs), so such a mapping stays.
    fn held_here(&self) -> bool {
        // SAFETY: the mutex is the whole live mapping.
        let word = unsafe { sys::lock_word_snapshot(self.mutex()) };
        let tid = word & sys::FUTEX_TID_MASK;
        let held = tid != 0
            && word & sys::FUTEX_OWNER_DIED == 0
            && Path::new(&format!("/proc/self/task/{tid}")).exists();
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
///
/// `BareMutex` is `Send` and `Sync`; its guards are not `Send`.
///
/// # Examples
/// ```
/// use robust_mutex::{BareAcquired, BareMutex};
/// # let dir = tempfile::tempdir()?;
/// let m = BareMutex::open(dir.path().join("py.lock"))?; // pymutex can load this file
/// let guard = match m.lock()? {
///     BareAcquired::Clean(g) => g,
///     BareAcquired::OwnerDied(r) => {
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

/// What a lock of a [`BareMutex`] returns.
///
/// # Examples
/// ```
/// use robust_mutex::{BareAcquired, BareMutex};
/// # let dir = tempfile::tempdir()?;
/// let m = BareMutex::open(dir.path().join("py.lock"))?;
/// match m.lock()? {
///     BareAcquired::Clean(g) => drop(g),
///     BareAcquired::OwnerDied(r) => drop(r.mark_consistent()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub enum BareAcquired<'a> {
    /// The previous holder released it normally.
    Clean(BareGuard<'a>),
    /// The previous holder died holding it (pymutex calls its recovery
    /// callback at this point).
    OwnerDied(BareRecovery<'a>),
}

/// Holds a [`BareMutex`]; unlocks on drop. Not `Send`: only the locking
/// thread may unlock.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
/// let g = m.lock()?.recover_with(|| {});
/// assert_eq!(g.mutex().path(), m.path());
/// drop(g); // unlocks
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<robust_mutex::BareGuard<'static>>();
/// ```
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub struct BareGuard<'a> {
    mutex: &'a BareMutex,
    _not_send: PhantomData<*const ()>,
}

/// A [`BareMutex`] after its holder died: the lock is held. Call
/// [`mark_consistent`](Self::mark_consistent) once what it protects is
/// repaired. Dropping it instead unlocks without that, which makes the mutex
/// not recoverable, for Python and Rust alike (pymutex raises
/// `InvalidSharedState`, Rust gets [`LockError::NotRecoverable`]); remove
/// the file to start again. Not `Send`.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
/// if let robust_mutex::BareAcquired::OwnerDied(r) = m.lock()? {
///     // repair the shared state here
///     drop(r.mark_consistent());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<robust_mutex::BareRecovery<'static>>();
/// ```
#[derive(Debug)]
pub struct BareRecovery<'a> {
    guard: Option<BareGuard<'a>>,
}

/// What one look at the path decided.
enum Look {
    /// Mapped: done.
    Ready(BareMutex),
    /// The file changed under us: look again now.
    Retry,
    /// Someone may be creating it: look again later; at the timeout, fail
    /// with this error (or [`Error::InitTimeout`]).
    Wait(Option<Error>),
}

/// What a bare file's bytes are, as far as the handshake cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Nothing: a creator between `open` and its write.
    Empty,
    /// Zeros: a creator that sized the file and died before initialising.
    Zeros,
    /// Exactly one robust pshared errorcheck mutex.
    Mutex,
    /// Anything else.
    Other,
}

impl BareMutex {
    /// Opens the bare file at `path`, creating it (the way pymutex does) if
    /// it is missing: `OpenOptions::new().create(true).open_bare(path)`.
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

    /// Opens (or creates, as `opts` say) the bare file at `path`; the same
    /// as [`OpenOptions::open_bare`]. Honours `create`, `create_new`, `mode`
    /// (default 0600), `init_timeout` and `allow_other_owners`.
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
    ///   [`Error::InvalidMode`], [`Error::InvalidOptions`] (`replace` or
    ///   `reentrant`, which bare files do not have), [`Error::Io`].
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
        let path = path.as_ref();
        if opts.mode & 0o600 != 0o600 || opts.mode & !0o7777 != 0 {
            return Err(Error::InvalidMode { mode: opts.mode });
        }
        if opts.replace {
            return Err(Error::InvalidOptions {
                reason: "replace is not supported for bare (pymutex) files: remove the file instead",
            });
        }
        if opts.kind != layout::Kind::Mutex || opts.any_kind {
            return Err(Error::InvalidOptions {
                reason: "a bare (pymutex) file holds an errorcheck mutex: it cannot be re-entrant",
            });
        }
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        let mut created = false;
        let mut final_look = false;
        let mut announced = false;
        loop {
            let look = if opts.create_new && !created {
                try_create(path, opts, &mut created)?
            } else {
                match sys::open_existing(path, true) {
                    Ok(fd) => inspect(path, fd, true, opts, final_look)?,
                    Err(e) => match e.raw_os_error() {
                        Some(libc::ENOENT) if opts.create || opts.create_new => {
                            try_create(path, opts, &mut created)?
                        }
                        Some(libc::EACCES) | Some(libc::EPERM) => {
                            // Not writable for us: a creator's 0400 mark (we
                            // may still wait, or take over) or a closed file.
                            match sys::open_existing(path, false) {
                                Ok(fd) => inspect(path, fd, false, opts, final_look)?,
                                Err(_) => {
                                    return Err(Error::PermissionDenied {
                                        path: path.to_owned(),
                                    });
                                }
                            }
                        }
                        _ => return Err(open_error(path, e)),
                    },
                }
            };
            match look {
                Look::Ready(m) => return Ok(m),
                Look::Retry => {}
                Look::Wait(on_timeout) => {
                    let waited = start.elapsed();
                    if waited >= opts.init_timeout {
                        if !final_look {
                            // One more look that may take over.
                            final_look = true;
                            continue;
                        }
                        return Err(on_timeout.unwrap_or(Error::InitTimeout {
                            path: path.to_owned(),
                            waited,
                        }));
                    }
                    if !announced {
                        announced = true;
                        log::debug!(
                            "{}: waiting up to {:?} for its creator to finish",
                            path.display(),
                            opts.init_timeout
                        );
                    }
                    // Polling: a pymutex creator gives no signal but the chmod.
                    std::thread::sleep(pause.min(opts.init_timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.map.as_ref().expect("mapped until drop").mutex()
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

    fn finish(
        &self,
        r: Result<Locked, LockFail>,
        busy: LockError,
    ) -> Result<BareAcquired<'_>, LockError> {
        // Built only once the lock is ours: dropping a guard unlocks.
        let guard = || BareGuard {
            mutex: self,
            _not_send: PhantomData,
        };
        match r {
            Ok(Locked::Clean) => Ok(BareAcquired::Clean(guard())),
            Ok(Locked::OwnerDied) => {
                log::warn!(
                    "{}: previous owner died holding the lock; recovering",
                    self.path.display()
                );
                Ok(BareAcquired::OwnerDied(BareRecovery {
                    guard: Some(guard()),
                }))
            }
            Err(LockFail::Busy) => Err(busy),
            Err(LockFail::Deadlock) => Err(LockError::Deadlock),
            Err(LockFail::NotRecoverable) => Err(LockError::NotRecoverable),
            Err(LockFail::Other(e)) => Err(LockError::Io(e)),
        }
    }

    /// Blocks until the lock is acquired (`pthread_mutex_lock`).
    ///
    /// # Errors
    /// [`LockError::Deadlock`] if this thread holds it already,
    /// [`LockError::NotRecoverable`] after a recovery was abandoned (by
    /// Rust or by Python), [`LockError::Io`] for anything else.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock()?.recover_with(|| {});
    /// assert!(matches!(m.lock(), Err(robust_mutex::LockError::Deadlock)));
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<BareAcquired<'_>, LockError> {
        // SAFETY: an initialised robust mutex in a mapping that lives as long as `self`.
        self.finish(
            unsafe { sys::mutex_lock(self.mutex()) },
            LockError::WouldBlock,
        )
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
    pub fn try_lock(&self) -> Result<BareAcquired<'_>, LockError> {
        // SAFETY: as in `lock`.
        let r = unsafe { sys::mutex_clocklock(self.mutex(), &sys::PAST_DEADLINE) };
        self.finish(r, LockError::WouldBlock)
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
    pub fn lock_timeout(&self, timeout: Duration) -> Result<BareAcquired<'_>, LockError> {
        // SAFETY: as in `lock`.
        let r = unsafe { sys::mutex_clocklock(self.mutex(), &sys::deadline_after(timeout)) };
        self.finish(r, LockError::TimedOut)
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
    ) -> Result<BareAcquired<'_>, LockError> {
        let deadline = timeout.map(sys::deadline_after);
        // SAFETY: as in `lock`.
        let (r, _) =
            unsafe { crate::wait::lock_cancellable(self.mutex(), cancel, deadline.as_ref())? };
        self.finish(r, LockError::TimedOut)
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
    /// let g = m.lock()?.recover_with(|| {});
    /// let s = m.status();
    /// assert_eq!(s.state, LockState::Locked);
    /// assert_eq!(s.owner.unwrap().pid, std::process::id());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Status {
        // SAFETY: the mutex is the live mapping.
        let word = unsafe { sys::lock_word_snapshot(self.mutex()) };
        let tid = word & sys::FUTEX_TID_MASK;
        let mut rec: OwnerRecord = bytemuck::Zeroable::zeroed();
        if tid != 0 {
            // The holder's process: its start time names it (a thread's own
            // start time would not match the process's).
            let pid = tgid_of(tid).unwrap_or(tid);
            rec.tid = tid;
            rec.pid = pid;
            rec.start_time = identity::start_time_of(pid).unwrap_or(0);
            rec.pidns_ino = identity::pid_namespace();
            rec.depth = 1;
        }
        // SAFETY: the mutex is the live mapping; `rec` is a local record.
        let (state, owner, word) = unsafe { status::lock_state(self.mutex(), &rec) };
        let owner = owner.filter(|_| state != LockState::NotRecoverable);
        Status {
            state,
            owner,
            counters: Counters::default(),
            generation: 0,
            lock_word: word,
        }
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

/// Creates the file if nobody did: `O_CREAT|O_EXCL` with the creator's mark.
/// `created` records that our `O_EXCL` made the file, so `create_new` does
/// not refuse our own file when someone else finished it.
fn try_create(path: &Path, opts: &OpenOptions, created: &mut bool) -> Result<Look, Error> {
    match sys::create_exclusive(path, layout::CREATOR_MODE) {
        Ok(fd) => {
            *created = true;
            create(path, fd, opts)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if opts.create_new && !*created {
                Err(Error::AlreadyExists {
                    path: path.to_owned(),
                })
            } else {
                Ok(Look::Retry)
            }
        }
        Err(e) => Err(open_error(path, e)),
    }
}

/// Initialises the file we just made with `O_EXCL`, under our flock, and
/// maps exactly that file.
fn create(path: &Path, fd: OwnedFd, opts: &OpenOptions) -> Result<Look, Error> {
    if let Err(e) = check_file(path, &fd, opts) {
        // On a network filesystem, say: our empty file must not stay behind.
        remove_ours(path, &fd);
        return Err(e);
    }
    // Between O_CREAT and flock an opener that has waited out its timeout
    // may take the initialisation over; then we simply become an opener.
    if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
        return Ok(Look::Retry);
    }
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    if st.perm() != layout::CREATOR_MODE || st.size != 0 || st.nlink == 0 {
        let _ = sys::funlock(&fd);
        return Ok(Look::Retry);
    }
    let r = write_mutex(path, &fd)
        .and_then(|()| sys::fchmod(&fd, opts.mode).map_err(io_err("fchmod", path)));
    let _ = sys::funlock(&fd);
    r?;
    log::debug!("created bare (pymutex) mutex file {}", path.display());
    attach(path, &fd, &st).map(Look::Ready)
}

/// Unlinks `path` if it still names the file open as `fd`.
fn remove_ours(path: &Path, fd: &OwnedFd) {
    if let (Ok(a), Ok(b)) = (sys::fstat(fd), sys::lstat(path)) {
        if (a.dev, a.ino) == (b.dev, b.ino) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Decides what to do with an existing path opened as `fd` (read-write if
/// `writable`). `final_look`: the init timeout has passed.
fn inspect(
    path: &Path,
    fd: OwnedFd,
    writable: bool,
    opts: &OpenOptions,
    final_look: bool,
) -> Result<Look, Error> {
    let st = check_file(path, &fd, opts)?;
    if st.perm() == layout::CREATOR_MODE {
        if content(path, &fd, st.size)? == Content::Other {
            return Err(Error::ForeignFile {
                path: path.to_owned(),
            });
        }
        // A creator at work, or one that died. pymutex creators take no
        // flock, so a live one gets the init timeout to finish; a creator of
        // ours holds the flock, and we never take over from it.
        if !final_look || !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
            return Ok(Look::Wait(None));
        }
        take_over(path, &fd, writable, opts)?;
        return Ok(Look::Retry);
    }
    if st.perm() & 0o200 == 0 {
        // Read-only, but not the creator's mark: someone else's file.
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    let found = content(path, &fd, st.size)?;
    if let Err(e) = validate(path, st.size, found) {
        // Empty or zeros under a held flock: a non-root takeover lifts the
        // mark for one `open` (see `lift_mark`); wait for it.
        if matches!(found, Content::Empty | Content::Zeros) {
            if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
                return Ok(Look::Wait(Some(e)));
            }
            let _ = sys::funlock(&fd);
        }
        return Err(e);
    }
    if st.nlink == 0 {
        return Ok(Look::Retry); // removed meanwhile: open what the path names now
    }
    if !writable {
        return Err(Error::PermissionDenied {
            path: path.to_owned(),
        });
    }
    attach(path, &fd, &st).map(Look::Ready)
}

/// Maps the bare file open as `fd` (one mapping per file per process).
fn attach(path: &Path, fd: &OwnedFd, st: &sys::FileStat) -> Result<BareMutex, Error> {
    let key = (st.dev, st.ino);
    let map = registry().attach(key, || {
        MmapOptions::new()
            .len(BARE_SIZE)
            .map_raw(fd)
            .map(|raw| BareMap { raw })
            .map_err(io_err("mmap", path))
    })?;
    Ok(BareMutex {
        path: path.to_owned(),
        key,
        map: Some(map),
    })
}

/// Whether `bytes` hold glibc's kind word for a robust, process-shared
/// errorcheck mutex (only checkable on glibc).
fn kind_ok(bytes: &[u8]) -> bool {
    static WANT: OnceLock<i32> = OnceLock::new();
    !cfg!(target_env = "gnu")
        || sys::glibc_kind_word(bytes)
            == Some(*WANT.get_or_init(|| sys::expected_kind_word(sys::MutexKind::ErrorCheck)))
}

/// Classifies the file's bytes (read with `pread`, never mapped).
fn content(path: &Path, fd: &OwnedFd, size: u64) -> Result<Content, Error> {
    if size > BARE_SIZE as u64 {
        return Ok(Content::Other);
    }
    let mut buf = [0u8; BARE_SIZE];
    let n = sys::read_at(fd, &mut buf, 0).map_err(io_err("read", path))?;
    let b = &buf[..n];
    Ok(if n == 0 {
        Content::Empty
    } else if b.iter().all(|&x| x == 0) {
        Content::Zeros
    } else if n == BARE_SIZE && kind_ok(b) {
        Content::Mutex
    } else {
        Content::Other
    })
}

/// Checks a writable bare file, given its size and content.
fn validate(path: &Path, size: u64, found: Content) -> Result<(), Error> {
    if size < BARE_SIZE as u64 {
        return Err(Error::Truncated {
            path: path.to_owned(),
            len: size,
            needed: BARE_SIZE as u64,
        });
    }
    if size > BARE_SIZE as u64 {
        // A header file of ours, or anything else: not a bare mutex.
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    match found {
        Content::Mutex => Ok(()),
        Content::Empty | Content::Zeros => Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "all zero: the mutex was never initialised",
        }),
        Content::Other => Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "not a robust process-shared errorcheck mutex",
        }),
    }
}

/// Writes a freshly initialised mutex over the whole file in one `pwrite`.
fn write_mutex(path: &Path, fd: &OwnedFd) -> Result<(), Error> {
    let bytes = sys::initialised_mutex_bytes(sys::MutexKind::ErrorCheck)
        .map_err(io_err("pthread_mutex_init", path))?;
    sys::write_all_at(fd, &bytes, 0).map_err(io_err("write", path))
}

/// A creator left the 0400 mark and the init timeout has passed; we hold the
/// flock on `fd`. Empty or zeroed: write a fresh mutex, then chmod. Already
/// holding the mutex (the creator stopped before its chmod): only chmod,
/// because pymutex loaders running as root ignore the mode and may be using
/// it. Releases the flock.
fn take_over(path: &Path, fd: &OwnedFd, writable: bool, opts: &OpenOptions) -> Result<(), Error> {
    let result = (|| {
        let st = sys::fstat(fd).map_err(io_err("fstat", path))?;
        if st.perm() != layout::CREATOR_MODE || st.nlink == 0 {
            return Ok(()); // finished or gone meanwhile: look again
        }
        match content(path, fd, st.size)? {
            Content::Other => Err(Error::ForeignFile {
                path: path.to_owned(),
            }),
            Content::Mutex => {
                log::warn!(
                    "{}: its creator stopped before making it writable; finishing the job",
                    path.display()
                );
                sys::fchmod(fd, opts.mode).map_err(io_err("fchmod", path))
            }
            Content::Empty | Content::Zeros => {
                log::warn!(
                    "{}: its creator died during initialisation; taking over",
                    path.display()
                );
                let lifted;
                let rw = if writable {
                    fd
                } else {
                    lifted = lift_mark(path, fd)?;
                    &lifted
                };
                write_mutex(path, rw)?;
                sys::fchmod(rw, opts.mode).map_err(io_err("fchmod", path))
            }
        }
    })();
    let _ = sys::funlock(fd);
    result
}

/// Root opened the file read-write at once; a user who owns a 0400 file
/// gets a read-write descriptor by lifting the mark for the length of one
/// `open`, while we hold the flock on `fd` (openers that see the lifted
/// mode and no mutex wait while the flock is held).
fn lift_mark(path: &Path, fd: &OwnedFd) -> Result<OwnedFd, Error> {
    use std::os::fd::AsRawFd;
    sys::fchmod(fd, 0o600).map_err(|_| Error::PermissionDenied {
        path: path.to_owned(),
    })?;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&proc_path);
    let restore = sys::fchmod(fd, layout::CREATOR_MODE);
    let rw: OwnedFd = rw.map_err(io_err("reopen", path))?.into();
    restore.map_err(io_err("fchmod", path))?;
    Ok(rw)
}

impl<'a> BareAcquired<'a> {
    /// The guard, running `repair` first if the previous holder died (then
    /// marking the mutex consistent), like pymutex's recovery callback
    /// returning `True`.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock()?.recover_with(|| eprintln!("a holder died; repaired"));
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover_with(self, repair: impl FnOnce()) -> BareGuard<'a> {
        match self {
            BareAcquired::Clean(g) => g,
            BareAcquired::OwnerDied(r) => {
                repair();
                r.mark_consistent()
            }
        }
    }
}

impl BareGuard<'_> {
    /// The mutex this guard locks.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = m.lock()?.recover_with(|| {});
    /// assert_eq!(g.mutex().status().state, robust_mutex::LockState::Locked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutex(&self) -> &BareMutex {
        self.mutex
    }
}

impl Drop for BareGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex; the mapping is live.
        let r = unsafe { sys::mutex_unlock(self.mutex.mutex()) };
        debug_assert!(r.is_ok(), "unlock failed: {r:?}");
    }
}

impl<'a> BareRecovery<'a> {
    /// Declares the protected state repaired (`pthread_mutex_consistent`)
    /// and goes on holding the lock.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// let g = match m.lock()? {
    ///     robust_mutex::BareAcquired::Clean(g) => g,
    ///     robust_mutex::BareAcquired::OwnerDied(r) => r.mark_consistent(),
    /// };
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mark_consistent(mut self) -> BareGuard<'a> {
        let g = self.guard.take().expect("guard present until consumed");
        // SAFETY: this thread took the mutex with EOWNERDEAD and holds it;
        // BareRecovery is not Send.
        let r = unsafe { sys::mutex_consistent(g.mutex.mutex()) };
        debug_assert!(r.is_ok(), "pthread_mutex_consistent failed: {r:?}");
        g
    }
}

impl Drop for BareRecovery<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            log::error!(
                "{}: recovery abandoned; the mutex is now not recoverable",
                g.mutex.path.display()
            );
        }
    }
}
