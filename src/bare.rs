//! [`BareMutex`]: pymutex interop. A pymutex file holds the bare glibc
//! `pthread_mutex_t` (40 bytes on x86_64) and nothing else: no header, no
//! value, no owner record. It is made with mode 0400, initialised
//! ERRORCHECK + ROBUST + PSHARED, then chmodded to 0600; its loader insists
//! on the exact size. Python (pymutex, ctypes) and Rust can share one file.

use crate::cancel::CancelToken;
use crate::error::{Error, LockError};
use crate::handshake::{check_file, io_err, open_error};
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

/// The size of a bare file: exactly one `pthread_mutex_t`.
pub const BARE_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// A mapping of a bare file.
#[derive(Debug)]
pub(crate) struct BareMap {
    raw: MmapRaw,
}

impl BareMap {
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.raw.as_mut_ptr().cast()
    }

    /// A live thread of this process holds it (see registry.rs for why that
    /// keeps it mapped).
    fn held_here(&self) -> bool {
        // SAFETY: the mutex is the whole live mapping.
        let word = unsafe { sys::lock_word_snapshot(self.mutex()) };
        let tid = word & sys::FUTEX_TID_MASK;
        tid != 0
            && word & sys::FUTEX_OWNER_DIED == 0
            && Path::new(&format!("/proc/self/task/{tid}")).exists()
    }
}

fn registry() -> &'static Registry<BareMap> {
    static REGISTRY: OnceLock<Registry<BareMap>> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// A robust mutex in a pymutex-compatible bare file. The lock semantics are
/// those of [`SharedMutex`](crate::SharedMutex); there is no value and no
/// owner record, so [`status`](Self::status) reads the owner's TID from the
/// lock word.
///
/// # Examples
/// ```
/// use robust_mutex::{BareAcquired, BareMutex};
/// # let dir = tempfile::tempdir()?;
/// let m = BareMutex::open(dir.path().join("py.lock"))?; // pymutex can load this file
/// match m.lock()? {
///     BareAcquired::Clean(g) => drop(g),
///     BareAcquired::OwnerDied(r) => drop(r.mark_consistent()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BareMutex {
    path: PathBuf,
    key: Key,
    map: Option<Arc<BareMap>>,
}

/// What a lock of a [`BareMutex`] returns.
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub enum BareAcquired<'a> {
    /// The previous holder released it normally.
    Clean(BareGuard<'a>),
    /// The previous holder died holding it.
    OwnerDied(BareRecovery<'a>),
}

/// Holds a [`BareMutex`]; unlocks on drop. Not `Send`.
#[must_use = "if unused the mutex will immediately unlock"]
#[derive(Debug)]
pub struct BareGuard<'a> {
    mutex: &'a BareMutex,
    _not_send: PhantomData<*const ()>,
}

/// A [`BareMutex`] after its holder died. Dropping it without
/// [`mark_consistent`](Self::mark_consistent) makes the mutex not
/// recoverable, for Python and Rust alike.
#[derive(Debug)]
pub struct BareRecovery<'a> {
    guard: Option<BareGuard<'a>>,
}

impl BareMutex {
    /// Opens the bare file at `path`, creating it (pymutex's way) if missing.
    ///
    /// # Errors
    /// As [`OpenOptions::open_bare`].
    ///
    /// # Examples
    /// See [`BareMutex`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        OpenOptions::new().create(true).open_bare(path)
    }

    pub(crate) fn open_with(path: &Path, opts: &OpenOptions) -> Result<Self, Error> {
        if opts.mode & 0o600 != 0o600 || opts.mode & !0o7777 != 0 {
            return Err(Error::InvalidMode { mode: opts.mode });
        }
        let start = Instant::now();
        loop {
            let fd = match sys::open_existing(path, true) {
                Ok(fd) => Some((fd, true)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT) if opts.create || opts.create_new => {
                        create(path, opts)?;
                        None
                    }
                    Some(libc::EACCES) | Some(libc::EPERM) => {
                        let fd = sys::open_existing(path, false).map_err(|_| {
                            Error::PermissionDenied {
                                path: path.to_owned(),
                            }
                        })?;
                        Some((fd, false))
                    }
                    _ => return Err(open_error(path, e)),
                },
            };
            let Some((fd, writable)) = fd else {
                continue;
            };
            if opts.create_new {
                return Err(Error::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            let st = check_file(path, &fd, opts)?;
            if st.perm() == layout::CREATOR_MODE {
                // A creator at work, or one that died. pymutex creators take no
                // flock, so give a live one the init timeout to finish.
                let waited = start.elapsed();
                if waited < opts.init_timeout || !sys::try_flock_exclusive(&fd).unwrap_or(false) {
                    if waited >= opts.init_timeout {
                        return Err(Error::InitTimeout {
                            path: path.to_owned(),
                            waited,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                take_over(path, &fd, writable, opts)?;
                continue;
            }
            if st.perm() & 0o200 == 0 {
                return Err(Error::ForeignFile {
                    path: path.to_owned(),
                });
            }
            validate(path, &fd, st.size)?;
            if !writable {
                return Err(Error::PermissionDenied {
                    path: path.to_owned(),
                });
            }
            let key = (st.dev, st.ino);
            let map = registry().attach(key, || {
                MmapOptions::new()
                    .len(BARE_SIZE)
                    .map_raw(&fd)
                    .map(|raw| BareMap { raw })
                    .map_err(io_err("mmap", path))
            })?;
            return Ok(BareMutex {
                path: path.to_owned(),
                key,
                map: Some(map),
            });
        }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.map.as_ref().expect("mapped until drop").mutex()
    }

    /// The path.
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

    /// Blocks until the lock is acquired.
    ///
    /// # Errors
    /// As [`SharedMutex::lock`](crate::SharedMutex::lock).
    ///
    /// # Examples
    /// See [`BareMutex`].
    pub fn lock(&self) -> Result<BareAcquired<'_>, LockError> {
        // SAFETY: an initialised robust mutex in a mapping that lives as long as `self`.
        self.finish(
            unsafe { sys::mutex_lock(self.mutex()) },
            LockError::WouldBlock,
        )
    }

    /// Acquires the lock only if it is free now (never with glibc's
    /// `pthread_mutex_trylock`, which strands a not-recoverable mutex).
    ///
    /// # Errors
    /// [`LockError::WouldBlock`]; else as [`lock`](Self::lock).
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

    /// Waits at most `timeout` (CLOCK_MONOTONIC).
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

    /// A wait that `cancel` can abandon; see
    /// [`SharedMutex::lock_cancellable`](crate::SharedMutex::lock_cancellable).
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

    /// The lock's state, from the TID in the lock word (there is no owner
    /// record in a bare file: the owner's pid, label and start time come from
    /// `/proc` while it lives).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::BareMutex::open(dir.path().join("py.lock"))?;
    /// assert_eq!(m.status().state, robust_mutex::LockState::Unlocked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Status {
        // SAFETY: the mutex is the live mapping.
        let word = unsafe { sys::lock_word_snapshot(self.mutex()) };
        let tid = word & sys::FUTEX_TID_MASK;
        let mut rec: OwnerRecord = bytemuck::Zeroable::zeroed();
        if tid != 0 {
            rec.tid = tid;
            rec.pid = tgid_of(tid).unwrap_or(tid);
            rec.start_time = crate::identity::start_time_of(tid).unwrap_or(0);
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

/// The process (thread group) of thread `tid`.
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

/// Checks a writable bare file without changing it.
fn validate(path: &Path, fd: &OwnedFd, size: u64) -> Result<(), Error> {
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
    let mut buf = [0u8; BARE_SIZE];
    sys::read_at(fd, &mut buf, 0).map_err(io_err("read", path))?;
    if cfg!(target_env = "gnu")
        && sys::glibc_kind_word(&buf) != Some(sys::expected_kind_word(sys::MutexKind::ErrorCheck))
    {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "not a robust process-shared errorcheck mutex",
        });
    }
    Ok(())
}

/// Creates a bare file the way pymutex does, under our init flock.
fn create(path: &Path, opts: &OpenOptions) -> Result<(), Error> {
    let fd = match sys::create_exclusive(path, layout::CREATOR_MODE) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            return if opts.create_new {
                Err(Error::AlreadyExists {
                    path: path.to_owned(),
                })
            } else {
                Ok(())
            };
        }
        Err(e) => return Err(open_error(path, e)),
    };
    if sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
        initialise(path, &fd, opts.mode)?;
        let _ = sys::funlock(&fd);
    }
    Ok(())
}

/// A creator died leaving the 0400 mark: if the content is what it can leave
/// (nothing, zeros, or an initialised mutex of the right size), initialise it.
fn take_over(path: &Path, fd: &OwnedFd, writable: bool, opts: &OpenOptions) -> Result<(), Error> {
    let st = sys::fstat(fd).map_err(io_err("fstat", path))?;
    let result = (|| {
        if st.perm() != layout::CREATOR_MODE || st.nlink == 0 {
            return Ok(()); // finished or gone meanwhile: look again
        }
        let mut buf = vec![0u8; (st.size as usize).min(BARE_SIZE + 1)];
        let n = sys::read_at(fd, &mut buf, 0).map_err(io_err("read", path))?;
        let zeros = buf[..n].iter().all(|&b| b == 0);
        let inited = st.size == BARE_SIZE as u64
            && sys::glibc_kind_word(&buf[..n])
                == Some(sys::expected_kind_word(sys::MutexKind::ErrorCheck));
        if st.size > BARE_SIZE as u64 || !(zeros || inited) {
            return Err(Error::ForeignFile {
                path: path.to_owned(),
            });
        }
        log::warn!(
            "{}: its creator died during initialisation; taking over",
            path.display()
        );
        if writable {
            initialise(path, fd, opts.mode)
        } else {
            Err(Error::PermissionDenied {
                path: path.to_owned(),
            })
        }
    })();
    let _ = sys::funlock(fd);
    result
}

/// Sizes the file to one mutex, initialises it in place, then chmods it.
fn initialise(path: &Path, fd: &OwnedFd, mode: u32) -> Result<(), Error> {
    sys::set_len(fd, BARE_SIZE as u64).map_err(io_err("ftruncate", path))?;
    let map = MmapOptions::new()
        .len(BARE_SIZE)
        .map_raw(fd)
        .map_err(io_err("mmap", path))?;
    // SAFETY: the mapping is one pthread_mutex_t, page aligned, and nobody
    // uses it: the file carries the creator's mark and we hold its flock.
    unsafe { sys::mutex_init(map.as_mut_ptr().cast(), sys::MutexKind::ErrorCheck) }
        .map_err(io_err("pthread_mutex_init", path))?;
    sys::fchmod(fd, mode).map_err(io_err("fchmod", path))
}

impl BareGuard<'_> {
    /// The mutex this guard locks.
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
    /// Declares the protected state repaired; goes on holding the lock.
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
