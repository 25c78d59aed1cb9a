//! [`OpenOptions`]: how to open or create a mutex file.

use crate::Error;
#[cfg(doc)]
use crate::SharedMutex;
use crate::file::layout::{DataLayout, LockKind};
use std::time::Duration;

/// Options for opening or creating a [`SharedMutex`], in the style of
/// [`std::fs::OpenOptions`]: like it, `new()` neither creates nor truncates.
///
/// | policy | options |
/// |---|---|
/// | open existing | `OpenOptions::new()` |
/// | open or create | `.create(true)` (what [`SharedMutex::open`] does) |
/// | create new | `.create_new(true)` |
///
/// # Disk space
///
/// Creating a file (and taking over one whose creator died, and
/// [`replace`](Self::replace)) reserves every block of it with
/// `posix_fallocate` *before* mapping it. A store into a mapped page that
/// the filesystem cannot supply kills the process with SIGBUS; reserving
/// first turns a full disk (ENOSPC) or a used-up quota (EDQUOT) into
/// [`Error::NoSpace`], naming the path, with the [`std::io::Error`] as its
/// source (kind `StorageFull` or `QuotaExceeded`). Nothing is left behind:
/// a creator removes its own unfinished file; a crashed creator's file
/// being taken over stays as it was, and the next open after space is
/// freed takes it over. An existing file with holes (a sparse copy) has
/// them filled before it is mapped, with the same error on a full disk.
/// A read-only filesystem is [`Error::ReadOnlyFilesystem`].
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
    pub(crate) replace: bool,
    pub(crate) allow_other_owners: bool,
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
            replace: false,
            allow_other_owners: false,
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

    /// Replace an existing lock file with a new, empty one (the "replace"
    /// creation policy: unlink, then create). The new file is built aside
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
    /// initialised it has mode 0o400, the creator's mark.
    ///
    /// The mode must give the owner read and write permission, and must not
    /// have execute, set-user-ID, set-group-ID or sticky bits (a lock file
    /// is never run); opening with such a mode fails with
    /// [`Error::InvalidMode`] before anything is touched. World-writable
    /// modes are allowed here, but whoever can write the file can break the
    /// lock; the command refuses them unless asked.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Error, OpenOptions};
    /// # let dir = tempfile::tempdir()?;
    /// let e = OpenOptions::new()
    ///     .create(true)
    ///     .mode(0o755)
    ///     .open::<u64>(dir.path().join("m"))
    ///     .unwrap_err();
    /// assert!(matches!(e, Error::InvalidMode { mode: 0o755, .. }), "{e}");
    /// assert!(!dir.path().join("m").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
}

impl OpenOptions {
    /// Checks the final mode (see [`mode`](Self::mode)); every open calls it
    /// first.
    pub(crate) fn check_mode(&self) -> Result<(), Error> {
        let mode = self.mode;
        let reason = if mode & !0o7777 != 0 {
            "not a permission mode (bits above 0o7777)"
        } else if mode & 0o7000 != 0 {
            "set-user-ID, set-group-ID and sticky bits are refused on a lock file"
        } else if mode & 0o111 != 0 {
            "execute bits are refused: a lock file is never run"
        } else if mode & 0o600 != 0o600 {
            "the owner needs read and write permission (0o600)"
        } else {
            return Ok(());
        };
        Err(Error::InvalidMode { mode, reason })
    }
}

/// What an open is for, beside the public builder: the kind of lock, the
/// value's layout, and which files it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// The kind a created file gets.
    pub kind: LockKind,
    /// The value's layout (a semaphore's: its slots).
    pub layout: DataLayout,
    /// Accept any value type (the file's own layout is used).
    pub any_value: bool,
    /// Accept a value of `layout`'s size at any alignment (raw bytes: the
    /// file's own layout is used).
    pub any_align: bool,
    /// Accept every kind (reset works on any lock file).
    pub any_kind: bool,
    /// Accept a file of the earlier format version too (a reset converts it).
    pub migrate: bool,
}

impl Spec {
    /// A file of `kind` holding a value laid out as `layout`.
    pub fn new(kind: LockKind, layout: DataLayout) -> Spec {
        Spec {
            kind,
            layout,
            any_value: false,
            any_align: false,
            any_kind: false,
            migrate: false,
        }
    }

    /// A file of `kind` (or, for a mutex, the re-entrant kind too) whatever
    /// its value; a created one holds none.
    pub fn any_value(kind: LockKind) -> Spec {
        Spec {
            any_value: true,
            ..Spec::new(kind, DataLayout::of::<()>().expect("unit layout"))
        }
    }

    /// The format versions this open accepts.
    pub fn versions(&self) -> &'static [u32] {
        use crate::file::layout::{MIGRATABLE_VERSION, VERSION};
        if self.migrate {
            &[VERSION, MIGRATABLE_VERSION]
        } else {
            &[VERSION]
        }
    }

    /// The kinds of file this open accepts, the kind it creates first.
    pub fn accepted_kinds(&self) -> &'static [LockKind] {
        if self.any_kind {
            &[LockKind::Mutex, LockKind::Reentrant, LockKind::Semaphore]
        } else if self.any_value && self.kind == LockKind::Mutex {
            &[LockKind::Mutex, LockKind::Reentrant]
        } else {
            match self.kind {
                LockKind::Mutex => &[LockKind::Mutex],
                LockKind::Reentrant => &[LockKind::Reentrant],
                LockKind::Semaphore => &[LockKind::Semaphore],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refused mode, with the reason its error gives.
    #[test]
    fn modes_with_execute_or_special_bits_are_refused_with_the_reason() {
        let reason = |mode| match OpenOptions::new().mode(mode).check_mode() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        for ok in [0o600, 0o640, 0o660, 0o666, 0o644] {
            assert_eq!(reason(ok), "ok", "{ok:o}");
        }
        for (bad, why) in [
            (0o777, "execute bits"),
            (0o700, "execute bits"),
            (0o601, "execute bits"),
            (0o610, "execute bits"),
            (0o4600, "set-user-ID"),
            (0o1600, "sticky"),
            (0o10600, "above 0o7777"),
            (0o400, "read and write"),
            (0o200, "read and write"),
        ] {
            let r = reason(bad);
            assert!(
                r.starts_with(&format!("mode {bad:#o} is not usable: ")),
                "{r}"
            );
            assert!(r.contains(why), "{bad:o}: {r}");
        }
    }
}
