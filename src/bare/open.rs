//! Opening a bare (pymutex) file: pymutex's creation handshake, without a
//! header (see the module docs of [`super`] and `docs/pymutex.md`).

use super::{BARE_SIZE, BareMap, BareMutex, registry};
use crate::error::Error;
use crate::file::init::checkpoint;
use crate::file::layout;
use crate::file::open::writable_fd;
use crate::file::{checks::check_file, io_err, open_error, remove_if_same, write_error};
use crate::options::OpenOptions;
use crate::sys;
use memmap2::MmapOptions;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Opens (or creates, as `opts` say) the bare file at `path`: the state
/// machine of the module docs.
pub(super) fn open(path: &Path, opts: &OpenOptions) -> Result<BareMutex, Error> {
    opts.check_mode()?;
    if opts.replace {
        return Err(Error::InvalidOptions {
            reason: "replace is not supported for bare (pymutex) files: remove the file instead",
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
        remove_if_same(path, &fd);
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
    checkpoint("bare_flocked");
    let r = write_mutex(path, &fd)
        .and_then(|()| sys::fchmod(&fd, opts.mode).map_err(io_err("fchmod", path)));
    if r.is_err() {
        // A full disk, say: our own half-made file must not stay behind.
        remove_if_same(path, &fd);
    }
    checkpoint("bare_written");
    // Unlinked meanwhile (by `rm`, say: a `remove` of ours waits for our
    // flock)? Then holding this file would be a lock nobody else can find.
    let unlinked = r.and_then(|()| {
        let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
        Ok(st.nlink == 0)
    });
    let _ = sys::funlock(&fd);
    if unlinked? {
        return Ok(Look::Retry);
    }
    log::debug!("created bare (pymutex) mutex file {}", path.display());
    attach(path, &fd, &st).map(Look::Ready)
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
        // mark for one `open` (see `file::open::writable_fd`); wait for it.
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
        let raw = MmapOptions::new()
            .len(BARE_SIZE)
            .map_raw(fd)
            .map_err(io_err("mmap", path))?;
        Ok::<_, Error>(BareMap { raw })
    })?;
    Ok(BareMutex {
        path: path.to_owned(),
        key,
        map: Some(map),
    })
}

/// Whether `bytes` hold glibc's kind word for a robust, process-shared
/// errorcheck mutex (only checkable on glibc).
pub(super) fn kind_ok(bytes: &[u8]) -> bool {
    static WANT: OnceLock<i32> = OnceLock::new();
    !cfg!(target_env = "gnu")
        || sys::glibc_kind_word(bytes)
            == Some(*WANT.get_or_init(|| sys::expected_kind_word(sys::MutexKind::ErrorCheck)))
}

/// Whether `path` is a bare (pymutex) file: exactly one robust
/// process-shared errorcheck mutex, or what a pymutex creator leaves while
/// it works (mode 0400, empty or zeros). Read with `pread`, never mapped.
pub(crate) fn is_bare_file(path: &Path) -> Result<bool, Error> {
    let fd = sys::open_existing(path, false).map_err(|e| open_error(path, e))?;
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    if !st.is_regular() || st.size > BARE_SIZE as u64 {
        return Ok(false);
    }
    Ok(match content(path, &fd, st.size)? {
        Content::Mutex => st.size == BARE_SIZE as u64,
        Content::Empty | Content::Zeros => st.perm() == layout::CREATOR_MODE,
        Content::Other => false,
    })
}

/// Whether the file open as `fd` (`size` bytes) holds only what a pymutex
/// creator leaves under its 0400 mark: nothing, zeros, or the mutex written
/// before the chmod. Read with `pread`, never mapped.
pub(crate) fn creator_leftover(path: &Path, fd: &OwnedFd, size: u64) -> Result<bool, Error> {
    Ok(size <= BARE_SIZE as u64 && content(path, fd, size)? != Content::Other)
}

/// Whether the file open as `fd` (`size` bytes) is exactly one robust
/// process-shared errorcheck mutex: a bare file. Read with `pread`.
pub(crate) fn holds_mutex(path: &Path, fd: &OwnedFd, size: u64) -> Result<bool, Error> {
    Ok(size == BARE_SIZE as u64 && content(path, fd, size)? == Content::Mutex)
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

/// Writes a freshly initialised mutex over the whole file in one `pwrite`
/// (never through a mapping: a full disk is [`Error::NoSpace`], no SIGBUS).
fn write_mutex(path: &Path, fd: &OwnedFd) -> Result<(), Error> {
    let bytes = sys::initialised_mutex_bytes(sys::MutexKind::ErrorCheck)
        .map_err(io_err("pthread_mutex_init", path))?;
    sys::write_all_at(fd, &bytes, 0).map_err(write_error("write", path))
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
                    lifted = writable_fd(path, fd)?;
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
