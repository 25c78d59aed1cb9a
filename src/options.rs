//! [`OpenOptions`]: how to open or create a mutex file.

use crate::{Error, SharedMutex};
use bytemuck::Pod;
use std::path::Path;
use std::time::Duration;

/// Options for opening or creating a [`SharedMutex`], in the style of
/// [`std::fs::OpenOptions`]: like it, `new()` neither creates nor truncates.
///
/// | policy (named-semaphores) | options |
/// |---|---|
/// | open existing | `OpenOptions::new()` |
/// | open or create | `.create(true)` (what [`SharedMutex::open`] does) |
/// | create new | `.create_new(true)` |
///
/// # Examples
/// ```
/// use robust_mutex::OpenOptions;
/// use std::time::Duration;
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("counter.lock");
/// let m = OpenOptions::new()
///     .create(true)
///     .mode(0o660)
///     .init_timeout(Duration::from_secs(2))
///     .open::<u64>(&path)?;
/// *m.lock_or_recover(|v| *v = 0)? += 1;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub(crate) create: bool,
    pub(crate) create_new: bool,
    pub(crate) mode: u32,
    pub(crate) init_timeout: Duration,
    pub(crate) allow_foreign_pid_namespace: bool,
    pub(crate) any_value: bool,
    pub(crate) kind: crate::layout::Kind,
    /// Accept every kind (reset works on any lock file).
    pub(crate) any_kind: bool,
    pub(crate) replace: bool,
    pub(crate) allow_other_owners: bool,
    pub(crate) bare: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Opens an existing file only; mode 0600 if told to create; 5 s init timeout.
    pub fn new() -> Self {
        OpenOptions {
            create: false,
            create_new: false,
            mode: 0o600,
            init_timeout: Duration::from_secs(5),
            allow_foreign_pid_namespace: false,
            any_value: false,
            kind: crate::layout::Kind::Mutex,
            any_kind: false,
            replace: false,
            allow_other_owners: false,
            bare: false,
        }
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }

    /// Create the file, failing with [`Error::AlreadyExists`] if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }

    /// Replace an existing lock file with a new, empty one (named-semaphores'
    /// "replace" policy: unlink, then create). The new file is built aside
    /// and renamed over the path, so nobody ever sees a half-made file. Only
    /// our own files are replaced: anything else is
    /// [`Error::ForeignFile`] and stays untouched. Like `sem_unlink` followed
    /// by `O_CREAT`, processes that already have the old file open go on
    /// using it; prefer [`reset`](crate::reset()) to repair a lock in use.
    pub fn replace(&mut self, replace: bool) -> &mut Self {
        self.replace = replace;
        if replace {
            self.create = true;
        }
        self
    }

    /// The file's mode once it is ready (default 0o600). While it is being
    /// initialised it has mode 0o400, the creator's mark. The mode must give
    /// the owner read and write permission.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// How long to wait for another process to finish initialising the file
    /// (default 5 s). A creator that crashed is detected at once and taken
    /// over; only a live, slow creator makes us wait.
    pub fn init_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.init_timeout = timeout;
        self
    }

    /// Accept a file owned by another user (default: refuse with
    /// [`Error::ForeignOwner`]).
    ///
    /// Whoever can write a lock file can break the lock, so by default only
    /// the file's owner uses it: a file planted in a shared directory by
    /// another user is refused. Opt in to share a lock between users, e.g.
    /// members of a group with mode 0o660.
    pub fn allow_other_owners(&mut self, allow: bool) -> &mut Self {
        self.allow_other_owners = allow;
        self
    }

    /// Accept a file created in another PID namespace (default: refuse with
    /// [`Error::PidNamespaceMismatch`]).
    ///
    /// Dangerous: the kernel stores the owner's TID as its own namespace sees
    /// it, so a process in one container and a process in another that happen
    /// to have the same TID (both PID 1, say) both look like the owner, and
    /// one can unlock the other's lock. Only opt in when the namespaces'
    /// processes never use the lock at the same time, or their PID ranges
    /// cannot overlap.
    pub fn allow_foreign_pid_namespace(&mut self, allow: bool) -> &mut Self {
        self.allow_foreign_pid_namespace = allow;
        self
    }

    /// The kinds of file this open accepts, the kind it creates first.
    pub(crate) fn accepted_kinds(&self) -> &'static [crate::layout::Kind] {
        use crate::layout::Kind;
        if self.any_kind {
            &[Kind::Mutex, Kind::Reentrant, Kind::Semaphore]
        } else if self.any_value && self.kind == Kind::Mutex {
            &[Kind::Mutex, Kind::Reentrant]
        } else {
            match self.kind {
                Kind::Mutex => &[Kind::Mutex],
                Kind::Reentrant => &[Kind::Reentrant],
                Kind::Semaphore => &[Kind::Semaphore],
            }
        }
    }

    /// Select the re-entrant kind: a robust, process-shared
    /// PTHREAD_MUTEX_RECURSIVE mutex, which the holding thread may lock again
    /// (shmlock's re-entrancy, resourcelock's `same_process_ok`). Open it with
    /// [`open_reentrant`](Self::open_reentrant); a file of the other kind is
    /// refused with [`Error::KindMismatch`].
    pub fn reentrant(&mut self, reentrant: bool) -> &mut Self {
        self.kind = if reentrant {
            crate::layout::Kind::Reentrant
        } else {
            crate::layout::Kind::Mutex
        };
        self
    }

    /// Select pymutex's bare format: the file is exactly one glibc
    /// `pthread_mutex_t`, with no header, value or owner record. Open it with
    /// [`open_bare`](Self::open_bare).
    pub fn bare(&mut self, bare: bool) -> &mut Self {
        self.bare = bare;
        self
    }

    /// Opens (or creates, as configured) a pymutex-compatible bare file (as
    /// if [`bare(true)`](Self::bare) were set).
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::ForeignFile`] for a file of another
    /// size (a bare file is exactly [`BARE_SIZE`](crate::BARE_SIZE) bytes),
    /// [`Error::Corrupt`] if it is not a robust process-shared errorcheck
    /// mutex; otherwise as [`open`](Self::open). A rejected file is untouched.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::OpenOptions::new()
    ///     .create(true)
    ///     .bare(true)
    ///     .open_bare(dir.path().join("py.lock"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_bare(&self, path: impl AsRef<Path>) -> Result<crate::BareMutex, Error> {
        crate::BareMutex::open_with(path.as_ref(), self)
    }

    /// Opens (or creates, as configured) a re-entrant mutex file at `path`,
    /// holding a `T` (as if [`reentrant(true)`](Self::reentrant) were set).
    ///
    /// # Errors
    /// As [`open`](Self::open); a plain mutex file gives [`Error::KindMismatch`].
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::OpenOptions::new()
    ///     .create(true)
    ///     .open_reentrant::<u64>(dir.path().join("r"))?;
    /// let outer = m.lock()?.recover_with(|_| {});
    /// let inner = m.lock()?.recover_with(|_| {}); // same thread: no deadlock
    /// assert_eq!(inner.depth(), 2);
    /// # drop(inner); drop(outer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_reentrant<T: Pod>(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<crate::ReentrantMutex<T>, Error> {
        let mut opts = self.clone();
        opts.kind = crate::layout::Kind::Reentrant;
        SharedMutex::open_with(path.as_ref(), &opts).map(crate::ReentrantMutex::from_inner)
    }

    /// Opens (or creates, as configured) the mutex file at `path`, holding a `T`.
    ///
    /// # Errors
    /// Every cause has its own [`Error`] variant: a missing file without
    /// `create`, a foreign, truncated or corrupt file, another format version,
    /// ABI or `T`, a directory, FIFO, device or symlink, a network filesystem,
    /// a creator still at work after the init timeout, or an OS error.
    pub fn open<T: Pod>(&self, path: impl AsRef<Path>) -> Result<SharedMutex<T>, Error> {
        if self.bare {
            return Err(Error::InvalidOptions {
                reason: "a bare (pymutex) file has no header: open it with open_bare",
            });
        }
        if self.kind != crate::layout::Kind::Mutex {
            return Err(Error::InvalidOptions {
                reason: "a re-entrant mutex is opened with open_reentrant: its guards nest, so they cannot hand out references",
            });
        }
        SharedMutex::open_with(path.as_ref(), self)
    }

    /// Opens a mutex file whatever value type it holds, as a
    /// `SharedMutex<()>`: for tools (like the `robust-mutex` command) that
    /// take the lock and read its status without touching the value. A file
    /// it creates holds no value.
    ///
    /// # Errors
    /// As [`open`](Self::open), except that the value type is never a mismatch.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("m");
    /// robust_mutex::SharedMutex::<[u64; 8]>::open(&path)?;
    /// let lock = robust_mutex::OpenOptions::new().open_lock_only(&path)?;
    /// drop(lock.lock_or_recover(|()| {})?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_lock_only(&self, path: impl AsRef<Path>) -> Result<SharedMutex<()>, Error> {
        let mut opts = self.clone();
        opts.any_value = true;
        SharedMutex::open_with(path.as_ref(), &opts)
    }
}
