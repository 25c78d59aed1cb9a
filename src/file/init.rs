//! Initialising a lock file: size it, zero it, write the header (state
//! INIT), initialise every mutex in place, publish READY, then chmod away
//! the creator's mark. Used by a creator, a takeover, a reset's replacement
//! (published with an atomic rename) and the stale-boot repair.

use super::layout::{self, DataLayout, Header};
use super::{io_err, write_error};
use crate::error::Error;
use crate::identity;
use crate::registry::Mapping;
use crate::sys;
use memmap2::MmapOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Fault-injection point (only with the `test-hooks` feature, which only
/// this crate's own tests turn on): with `ROBUST_MUTEX_TEST_PAUSE_AT=<step>`
/// (or several, comma-separated)
/// the creator prints `paused:<step>` on stdout and stops for ever there, so
/// a test can SIGKILL it at exactly that step; with
/// `ROBUST_MUTEX_TEST_RESUME` set too, it goes on after a line on stdin, so
/// a test can change the file while it is stopped, and does not pause at
/// that step again (a creator that retries goes through).
pub(crate) fn checkpoint(step: &str) {
    #[cfg(feature = "test-hooks")]
    static RESUMED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    #[cfg(feature = "test-hooks")]
    if std::env::var("ROBUST_MUTEX_TEST_PAUSE_AT").is_ok_and(|s| s.split(',').any(|s| s == step))
        && !RESUMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s == step)
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "paused:{step}");
        let _ = out.flush();
        drop(out);
        if std::env::var_os("ROBUST_MUTEX_TEST_RESUME").is_some() {
            // Resumable: go on after a line on stdin.
            let _ = std::io::stdin().read_line(&mut String::new());
            RESUMED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(step.to_owned());
            return;
        }
        loop {
            std::thread::park();
        }
    }
    let _ = step;
}

/// What a freshly initialised file holds besides a fresh mutex.
pub(crate) enum Fill<'a> {
    /// A new file: zeroed value, generation 1.
    Fresh,
    /// A reset's replacement: the old value, owner record and counters, the
    /// next generation, and mutexes that report OWNER_DIED to their first
    /// locker.
    Replacement {
        generation: u64,
        /// Bytes from HOT_OFFSET (the hot record, right after the mutex) to
        /// the end of the value.
        carried: &'a [u8],
        /// Bit `i`: the file's `i`-th mutex ([`Header::mutexes`]: 0 the main
        /// one, 1 + p permit p) is left owner-dead. [`MAIN_DIED`] for a
        /// reset; less only for a conversion of a version-1 file.
        owner_died: u128,
    },
}

/// [`Fill::Replacement::owner_died`] of a reset: the main mutex.
pub(crate) const MAIN_DIED: u128 = 1;

/// Sizes, maps and initialises the file behind `fd` (whose flock we hold),
/// leaving it READY with mode `mode`. The mutex is initialised in place.
///
/// Every block of the file is reserved (`posix_fallocate`) before it is
/// mapped, so a full disk is [`Error::NoSpace`] here, with the file as it
/// was, and never a SIGBUS on the first store into a page the filesystem
/// cannot supply. Only then is the length set exactly (a larger leftover
/// is cut down to size).
pub(crate) fn initialise(
    path: &Path,
    fd: &OwnedFd,
    mode: u32,
    want: DataLayout,
    kind: layout::Kind,
    fill: &Fill<'_>,
) -> Result<(), Error> {
    sys::reserve(fd, want.file_len).map_err(write_error("fallocate", path))?;
    sys::set_len(fd, want.file_len).map_err(io_err("ftruncate", path))?;
    checkpoint("sized");
    let map = MmapOptions::new()
        .len(want.file_len as usize)
        .map_raw(fd)
        .map_err(io_err("mmap", path))?;
    let base = map.as_mut_ptr();
    let generation = match fill {
        Fill::Fresh => 1,
        Fill::Replacement { generation, .. } => *generation,
    };
    // SAFETY: the mapping is `file_len` bytes long and private to us: the file
    // carries the creator's mark and we hold its flock, so no process has it
    // mapped as a mutex. Every write stays inside the mapping.
    unsafe {
        std::ptr::write_bytes(base, 0, want.file_len as usize);
        if let Fill::Replacement { carried, .. } = fill {
            // `pthread_mutex_init` below writes only the mutex, before
            // HOT_OFFSET.
            let n = carried
                .len()
                .min(want.file_len as usize - layout::HOT_OFFSET);
            std::ptr::copy_nonoverlapping(carried.as_ptr(), base.add(layout::HOT_OFFSET), n);
        }
    }
    // Our magic goes in first, with the state still INIT: from here on a
    // crashed creator's leftover is recognisable as ours.
    let header = layout::new_header(
        kind,
        want,
        generation,
        identity::boot_id(),
        identity::me().pidns_ino,
        sys::coarse_unix_ns(),
    );
    // SAFETY: the header region is the first 256 bytes of the mapping and is
    // private to us; `state` stays INIT until the release store below.
    unsafe { std::ptr::write(base.cast::<Header>(), header) };
    let died = match fill {
        Fill::Fresh => 0,
        Fill::Replacement { owner_died, .. } => *owner_died,
    };
    // Every mutex of the file: the main one (of the file's kind), then a
    // semaphore's permits (errorcheck).
    for (i, offset) in header.mutexes().enumerate() {
        let mk = if i == 0 {
            kind.mutex_kind()
        } else {
            sys::MutexKind::ErrorCheck
        };
        let mutex = base.wrapping_add(offset).cast();
        // SAFETY: each mutex lies aligned (64-byte slots in a page-aligned
        // mapping) inside the mapping, which is private to us: nobody else
        // can use it yet (see above).
        unsafe { sys::mutex_init(mutex, mk) }.map_err(io_err("pthread_mutex_init", path))?;
        if died.checked_shr(i as u32).unwrap_or(0) & 1 == 1 {
            // SAFETY: just initialised, and still private to us.
            unsafe { sys::mark_owner_died(mutex) };
        }
    }
    checkpoint("mutex_init");
    let m = Mapping::new(map, (0, 0));
    m.state()
        .store(layout::STATE_READY, std::sync::atomic::Ordering::Release);
    checkpoint("header");
    sys::fchmod(fd, mode).map_err(io_err("fchmod", path))?;
    checkpoint("chmod");
    Ok(())
}

/// Builds a new, READY file as an unnamed `O_TMPFILE` beside `path` and
/// publishes it over `path` with `rename` (atomic): [`prepare_new_file`],
/// then [`publish_prepared`].
///
/// # Errors
/// As [`prepare_new_file`] and [`publish_prepared`]. The file at `path` is
/// then as it was.
pub(crate) fn publish_new_file(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    want: DataLayout,
    kind: layout::Kind,
    fill: &Fill<'_>,
) -> Result<(), Error> {
    let prepared = prepare_new_file(path, owner, want)?;
    publish_prepared(path, prepared, mode, want, kind, fill)
}

/// A replacement in the making: an unnamed file beside its path, owned as
/// asked, its blocks reserved.
#[derive(Debug)]
pub(crate) struct Prepared {
    fd: OwnedFd,
    dir: PathBuf,
}

/// Makes the unnamed `O_TMPFILE` that will replace `path`, gives it the
/// `owner`'s uid and gid (root), or at least the gid (a member of that
/// group), and reserves its blocks for a file laid out as `want`: every
/// error of a full disk, a read-only one or a forbidden directory comes
/// here, before anything is read or taken from the file it replaces.
///
/// # Errors
/// [`Error::ResetChangesOwner`] when only root could give it `owner`;
/// [`Error::DirectoryNotWritable`] when the caller may not create files in
/// the directory; [`Error::NoSpace`], [`Error::ReadOnlyFilesystem`];
/// [`Error::Io`] otherwise. Nothing is left behind.
pub(crate) fn prepare_new_file(
    path: &Path,
    owner: Option<(u32, u32)>,
    want: DataLayout,
) -> Result<Prepared, Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if let Some((uid, _)) = owner {
        let ours = sys::geteuid();
        if ours != 0 && uid != ours {
            // Only root can give the replacement the old owner.
            return Err(Error::ResetChangesOwner {
                path: path.to_owned(),
                owner: uid,
                ours,
            });
        }
    }
    let fd =
        sys::create_unnamed(&dir, layout::CREATOR_MODE).map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Error::DirectoryNotWritable {
                path: path.to_owned(),
                dir: dir.clone(),
            },
            _ => write_error("create (O_TMPFILE) a replacement for", path)(e),
        })?;
    if let Some((uid, gid)) = owner {
        let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
        if sys::geteuid() == 0 && (uid, gid) != (st.uid, st.gid) {
            sys::fchown(&fd, Some(uid), Some(gid)).map_err(io_err("fchown", path))?;
        } else if gid != st.gid {
            // Not root: keep the group where we may (a member of it), so a
            // lock shared by a group stays shared.
            let _ = sys::fchown(&fd, None, Some(gid));
        }
    }
    sys::reserve(&fd, want.file_len).map_err(write_error("fallocate", path))?;
    Ok(Prepared { fd, dir })
}

/// Initialises the file [`prepare_new_file`] made (for `want`) and
/// publishes it over `path` with `rename` (atomic).
///
/// Nothing is ever left behind but the published file: the unnamed file
/// vanishes with its descriptor on any error, and it is named only for the
/// one `rename`, under a short name ([`temp_name`]) so that a `path` whose
/// own name is `NAME_MAX` bytes long works too.
///
/// # Errors
/// [`Error::PermissionDenied`] for a rename refused (a sticky directory);
/// [`Error::NoSpace`], [`Error::ReadOnlyFilesystem`]; [`Error::Io`]
/// otherwise. The file at `path` is then as it was.
pub(crate) fn publish_prepared(
    path: &Path,
    prepared: Prepared,
    mode: u32,
    want: DataLayout,
    kind: layout::Kind,
    fill: &Fill<'_>,
) -> Result<(), Error> {
    let Prepared { fd, dir } = prepared;
    initialise(path, &fd, mode, want, kind, fill)?;
    let mut attempt = 0u32;
    let tmp = loop {
        let tmp = dir.join(temp_name(attempt));
        match sys::link_unnamed(&fd, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempt < 16 => attempt += 1,
            Err(e) => return Err(write_error("link", path)(e)),
        }
    };
    if let Err(e) = sys::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(match e.raw_os_error() {
            // A sticky directory and a file of another user.
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
                path: path.to_owned(),
            },
            _ => write_error("rename", path)(e),
        });
    }
    Ok(())
}

/// A short name for a replacement between its `link` and its `rename`:
/// `.robust-mutex.<pid>.<n>` in hex, at most 36 bytes whatever the length
/// of the lock file's own name. The `link` fails if it exists, so a name
/// left by a process killed in between only makes us try the next `n`.
fn temp_name(attempt: u32) -> String {
    let n = sys::coarse_unix_ns() ^ u64::from(attempt).rotate_left(32);
    format!(
        ".robust-mutex.{:x}.{:x}",
        std::process::id(),
        n & 0xffff_ffff_ffff
    )
}
