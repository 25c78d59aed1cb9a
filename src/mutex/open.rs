//! Opening a [`SharedMutex`], and following a reset to its replacement
//! file.

use super::SharedMutex;
use crate::error::Error;
use crate::file;
use crate::file::layout::{DataLayout, LockKind};
use crate::options::{OpenOptions, Spec};
use crate::registry::Mapping;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

impl<T: Pod> SharedMutex<T> {
    /// Opens the mutex file at `path`, creating it (mode 0600, zeroed `T`) if
    /// it does not exist. Same as `OpenOptions::new().create(true).open(path)`.
    ///
    /// Creating the file reserves every block of it (`posix_fallocate`)
    /// before anything is mapped, so a full disk is an error here, never a
    /// SIGBUS later (see [`OpenOptions`], "Disk space").
    ///
    /// # Errors
    /// See [`OpenOptions::open`]: every cause has its own [`Error`] variant,
    /// and a rejected file is never changed. A full disk or used-up quota is
    /// [`Error::NoSpace`], whose source is the [`std::io::Error`] (kind
    /// `StorageFull` or `QuotaExceeded`); nothing is left at `path`.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<[u32; 4]>::open(dir.path().join("m"))?;
    /// assert_eq!(*m.lock_or_recover(|_| {})?, [0; 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        OpenOptions::new().create(true).open(path)
    }

    /// Opens (or creates, as `opts` say) the mutex file at `path`, holding
    /// a `T`. The same as [`OpenOptions::open`].
    ///
    /// # Errors
    /// Every cause has its own [`Error`] variant, and a rejected file is
    /// never changed: a missing file without `create`
    /// ([`Error::NotFound`]), a foreign, truncated or corrupt file, another
    /// format version, ABI, kind ([`Error::KindMismatch`]) or `T`
    /// ([`Error::TypeMismatch`]), an empty file ([`Error::Empty`]: flock(1)
    /// and `touch` leave them), a directory, FIFO, device or symlink, a
    /// network filesystem, a full or read-only filesystem
    /// ([`Error::NoSpace`], [`Error::ReadOnlyFilesystem`]), a creator still
    /// at work after the init timeout ([`Error::InitTimeout`]), or an OS
    /// error.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Error, OpenOptions, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("m");
    /// let missing = SharedMutex::<u64>::open_with(&path, &OpenOptions::new());
    /// assert!(matches!(missing, Err(Error::NotFound { .. })));
    /// let m = SharedMutex::<u64>::open_with(&path, OpenOptions::new().create_new(true))?;
    /// # drop(m);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self, Error> {
        let layout = DataLayout::of::<T>().ok_or(Error::UnsupportedType {
            align: std::mem::align_of::<T>(),
        })?;
        Self::open_spec(path.as_ref(), opts, Spec::new(LockKind::Mutex, layout))
    }

    /// Opens a file of `spec`'s kind; with `spec.any_value` or
    /// `spec.any_align`, the value's layout is the file's.
    pub(crate) fn open_spec(path: &Path, opts: &OpenOptions, spec: Spec) -> Result<Self, Error> {
        let opened = file::open(path, opts, &spec)?;
        let layout = if spec.any_value || spec.any_align {
            opened.header.data_layout()
        } else {
            spec.layout
        };
        let map = opened.map;
        Ok(SharedMutex {
            path: path.to_owned(),
            layout,
            opts: opts.clone(),
            spec,
            current: AtomicPtr::new(Arc::as_ptr(&map).cast_mut()),
            maps: Mutex::new(vec![map]),
            _value: PhantomData,
        })
    }

    /// If a reset replaced the file at our path, attach to the replacement
    /// and make it current. Returns whether the handle moved.
    #[cold]
    pub(super) fn follow_reset(&self, old: &Mapping) -> bool {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if !std::ptr::eq(self.current.load(Ordering::Acquire), old) {
            return true; // another thread of ours already moved
        }
        let Ok(st) = crate::sys::lstat(&self.path) else {
            return false;
        };
        if (st.dev, st.ino) == old.key() {
            return false;
        }
        let mut opts = self.opts.clone();
        opts.create(false).create_new(false);
        match file::open(&self.path, &opts, &self.spec) {
            Ok(o) if o.header.generation > 0 => {
                log::warn!(
                    "{}: moved to the reset mutex file (generation {})",
                    self.path.display(),
                    o.header.generation
                );
                self.current
                    .store(Arc::as_ptr(&o.map).cast_mut(), Ordering::Release);
                maps.push(o.map);
                true
            }
            _ => false,
        }
    }
}

/// The alignment a file made by [`SharedMutex::open_bytes`] gives its value.
pub const BYTES_ALIGN: usize = 8;

impl SharedMutex<()> {
    /// Opens the mutex file at `path` whose value is `len` raw bytes,
    /// creating it (mode 0600, zeroed bytes aligned to [`BYTES_ALIGN`]) if it
    /// does not exist. For values whose size is known only at run time, and
    /// for bindings (the Python package's `SharedMutex(path, size)`): read
    /// and write the value with [`Guard::bytes`](crate::Guard::bytes) and [`Guard::bytes_mut`](crate::Guard::bytes_mut).
    /// Same as `OpenOptions::new().create(true).open_bytes(path, len)`.
    ///
    /// An existing file must hold a value of exactly `len` bytes, at any
    /// alignment, so a file a typed `SharedMutex<[u64; 2]>` made is opened by
    /// `open_bytes(path, 16)`; a file made here is opened by a typed handle
    /// whose `T` is `len` bytes aligned to [`BYTES_ALIGN`].
    ///
    /// # Errors
    /// As [`OpenOptions::open`]; [`Error::TypeMismatch`] when the file's
    /// value is not `len` bytes; [`Error::InvalidOptions`] if no file can
    /// be that long.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Acquired, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("m");
    /// let m = SharedMutex::open_bytes(&path, 16)?;
    /// let Acquired::Clean(mut g) = m.lock()? else { unreachable!() };
    /// g.bytes_mut()[..5].copy_from_slice(b"hello");
    /// drop(g);
    /// let typed = SharedMutex::<[u64; 2]>::open(&path)?;
    /// assert_eq!(&bytemuck::bytes_of(&*typed.lock_or_recover(|_| {})?)[..5], b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_bytes(path: impl AsRef<Path>, len: usize) -> Result<Self, Error> {
        OpenOptions::new().create(true).open_bytes(path, len)
    }
}

/// The shorthands for opening a [`SharedMutex`] from the builder.
impl OpenOptions {
    /// Opens (or creates, as configured) the mutex file at `path`, holding a `T`.
    ///
    /// # Errors
    /// Every cause has its own [`Error`] variant: a missing file without
    /// `create`, a foreign, truncated or corrupt file, another format version,
    /// ABI or `T`, a directory, FIFO, device or symlink, a network filesystem,
    /// a creator still at work after the init timeout, or an OS error.
    pub fn open<T: Pod>(&self, path: impl AsRef<Path>) -> Result<SharedMutex<T>, Error> {
        SharedMutex::open_with(path, self)
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
        SharedMutex::open_spec(path.as_ref(), self, Spec::any_value(LockKind::Mutex))
    }

    /// Opens (or creates, as configured) a mutex file whose value is `len`
    /// raw bytes: see [`SharedMutex::open_bytes`].
    ///
    /// # Errors
    /// As [`open`](Self::open); [`Error::TypeMismatch`] when the file's
    /// value is not `len` bytes; [`Error::InvalidOptions`] if no file can
    /// be that long (past `off_t`), before anything is looked at or made.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("m");
    /// let m = robust_mutex::OpenOptions::new().create(true).mode(0o660).open_bytes(&path, 64)?;
    /// assert_eq!(m.lock_or_recover(|()| {})?.bytes().len(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_bytes(&self, path: impl AsRef<Path>, len: usize) -> Result<SharedMutex<()>, Error> {
        let layout = DataLayout::new(len, BYTES_ALIGN)
            .filter(|l| libc::off_t::try_from(l.file_len).is_ok())
            .ok_or(Error::InvalidOptions {
                reason: "the value's length is too large for a file",
            })?;
        let spec = Spec {
            any_align: true,
            ..Spec::new(LockKind::Mutex, layout)
        };
        SharedMutex::open_spec(path.as_ref(), self, spec)
    }
}
