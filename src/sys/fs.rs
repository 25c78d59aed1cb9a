//! Files: opening without following symlinks, `stat`, `flock`, ownership,
//! size and reserved blocks, positioned reads and writes. Every call goes
//! through `nix` (or std); this file has no `unsafe`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::retry;

/// The path as a C string. Checked here, before `nix` sees it, so that a NUL
/// byte keeps its own error message; `nix` then uses the `CStr` as it is.
fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The flags of every open of a named file.
fn open_flags() -> OFlag {
    OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
}

/// `open(2)` through `nix`, retried on EINTR. `mode` is passed bit for bit.
fn open(path: &CStr, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
    let mode = Mode::from_bits_retain(mode as libc::mode_t);
    retry(|| nix::fcntl::open(path, flags, mode))
}

/// Opens an existing path without following a final symlink and without
/// blocking on a FIFO. `write` selects O_RDWR over O_RDONLY.
pub(crate) fn open_existing(path: &Path, write: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let access = if write {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    };
    open(&c, access | open_flags(), 0)
}

/// Creates a new file with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, read-write,
/// with the creator's mark as its mode.
pub(crate) fn create_exclusive(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | open_flags();
    open(&c, flags, mode)
}

/// Creates an unnamed file in `dir` (O_TMPFILE), read-write.
pub(crate) fn create_unnamed(dir: &Path, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(dir)?;
    let flags = OFlag::O_RDWR | OFlag::O_TMPFILE | OFlag::O_CLOEXEC;
    open(&c, flags, mode)
}

/// Gives an unnamed (O_TMPFILE) file the name `path`; fails if it exists.
pub(crate) fn link_unnamed(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    let to = cstr(path)?;
    nix::unistd::linkat(
        AT_FDCWD,
        from.as_c_str(),
        AT_FDCWD,
        to.as_c_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// `rename(2)`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

/// The facts of a file that the handshake decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    /// Last status change, whole seconds since the epoch.
    pub ctime: i64,
}

impl FileStat {
    fn from_raw(st: &libc::stat) -> Self {
        FileStat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            nlink: st.st_nlink,
            ctime: st.st_ctime,
        }
    }
    /// The file-type bits only.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    /// True for a regular file.
    pub fn is_regular(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }
    /// A human name for the file type.
    pub fn type_name(&self) -> &'static str {
        match self.file_type() {
            libc::S_IFDIR => "directory",
            libc::S_IFIFO => "FIFO",
            libc::S_IFCHR => "character device",
            libc::S_IFBLK => "block device",
            libc::S_IFSOCK => "socket",
            libc::S_IFLNK => "symlink",
            libc::S_IFREG => "regular file",
            _ => "unknown file type",
        }
    }
    /// Permission bits (including setuid/setgid/sticky).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<FileStat> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok(FileStat::from_raw(&st))
}

/// `lstat(2)`: the facts of the name itself, without following a symlink.
pub(crate) fn lstat(path: &Path) -> io::Result<FileStat> {
    let c = cstr(path)?;
    let st = nix::sys::stat::lstat(c.as_c_str())?;
    Ok(FileStat::from_raw(&st))
}

/// Unlinks `path` only if it names the file `(dev, ino)`; `Ok(false)` (and
/// nothing unlinked) if it names another one.
///
/// Comparing with `lstat` and then calling `unlink(path)` would unlink
/// whatever a `rename` (a reset's publish) put at the name in between.
/// Instead the name is first moved, with `RENAME_NOREPLACE`, to a private
/// name in the same directory; what that name holds can no longer change
/// under us (only we know it), so the check and the unlink are of the same
/// file. A different file is moved back with `RENAME_NOREPLACE`; if the
/// name was taken meanwhile, that rename's error (EEXIST) is returned and
/// the file stays under the private name (`.<name>.rm.<pid>.<n>`), as it
/// does if this process dies between the moves. While the name is moved
/// away an opener finds nothing there and creates a new file, as it would
/// after the unlink.
///
/// # Errors
/// The system calls' errors.
pub(crate) fn unlink_if_same(path: &Path, dev: u64, ino: u64) -> io::Result<bool> {
    use nix::fcntl::{RenameFlags, renameat2};
    use nix::sys::stat::fstatat;
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let dir_path = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut private = std::ffi::OsString::from(".");
    private.push(name);
    private.push(format!(".rm.{}", std::process::id()));
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    private.push(format!(".{n}"));
    let dir = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir_path)?
    };
    let (name, private) = (Path::new(name), Path::new(&private));
    match renameat2(&dir, name, &dir, private, RenameFlags::RENAME_NOREPLACE) {
        // A filesystem without RENAME_NOREPLACE: compare, then unlink (the
        // narrow window this function exists to close stays open there).
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            let now = lstat(path)?;
            if (now.dev, now.ino) != (dev, ino) {
                return Ok(false);
            }
            std::fs::remove_file(path)?;
            return Ok(true);
        }
        r => r?,
    }
    let st = fstatat(&dir, private, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if (st.st_dev, st.st_ino) == (dev, ino) {
        unlinkat(&dir, private, UnlinkatFlags::NoRemoveDir)?;
        return Ok(true);
    }
    renameat2(&dir, private, &dir, name, RenameFlags::RENAME_NOREPLACE)?;
    Ok(false)
}

/// The `f_type` of the filesystem holding `fd` (`fstatfs(2)`).
pub(crate) fn fs_type(fd: &OwnedFd) -> io::Result<i64> {
    let st = nix::sys::statfs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    Ok(st.filesystem_type().0 as i64)
}

/// `flock(fd, arg)` on the caller's descriptor, retried on EINTR.
///
/// nix deprecates `fcntl::flock` in favour of `Flock<T>`, which takes the
/// descriptor by value and unlocks when dropped. That does not fit here: the
/// callers keep their `OwnedFd`, hold the lock across other calls and release
/// it explicitly with [`funlock`], so the plain call is used on purpose.
#[allow(deprecated)]
fn flock(fd: &OwnedFd, arg: FlockArg) -> io::Result<()> {
    retry(|| nix::fcntl::flock(fd.as_raw_fd(), arg))
}

/// Takes an exclusive `flock(2)` (`LOCK_EX|LOCK_NB`) without blocking.
/// `Ok(false)` means another open file description holds it. Released only
/// by [`funlock`] or by closing the open file description.
pub(crate) fn try_flock_exclusive(fd: &OwnedFd) -> io::Result<bool> {
    match flock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(Errno::EWOULDBLOCK as i32) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a `flock(2)` (`LOCK_UN`).
pub(crate) fn funlock(fd: &OwnedFd) -> io::Result<()> {
    flock(fd, FlockArg::Unlock)
}

/// `fchmod(2)`.
pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    let mode = Mode::from_bits_retain(mode as libc::mode_t);
    retry(|| nix::sys::stat::fchmod(fd, mode))
}

/// `fchown(2)`; `None` leaves that id as it is.
pub(crate) fn fchown(fd: &OwnedFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let (uid, gid) = (uid.map(Uid::from_raw), gid.map(Gid::from_raw));
    retry(|| nix::unistd::fchown(fd, uid, gid))
}

/// A length as an `off_t`.
fn off(len: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))
}

/// `ftruncate(2)`.
pub(crate) fn set_len(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = off(len)?;
    retry(|| nix::unistd::ftruncate(fd, len))
}

/// Reserves the blocks of bytes `0..len` (`posix_fallocate(3)`), growing
/// the file to `len` if it is shorter. Holes in that range are filled with
/// allocated zeros; data is never changed. After it, no store into a shared
/// mapping of that range can fault for want of space (SIGBUS): a full disk
/// is ENOSPC (or EDQUOT) here instead. glibc falls back to writing a byte
/// per block where the filesystem has no `fallocate`.
pub(crate) fn reserve(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = off(len)?;
    retry(|| nix::fcntl::posix_fallocate(fd, 0, len))
}

/// Fills the holes of bytes `0..len` of a file that others may be using
/// (`fallocate(2)` with `FALLOC_FL_KEEP_SIZE`: allocates, never writes
/// data, and never grows a file that shrank meanwhile). `Ok(false)`
/// where the filesystem has no `fallocate` (EOPNOTSUPP): then nothing is
/// done, because glibc's `posix_fallocate` emulation would write a zero
/// byte per block, racing with the file's other users.
pub(crate) fn fill_holes(fd: &OwnedFd, len: u64) -> io::Result<bool> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let len = off(len)?;
    match retry(|| fallocate(fd, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, len)) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether bytes `0..len` of the file hold a hole (`lseek(SEEK_HOLE)`),
/// which a store through a shared mapping would have to allocate. A
/// filesystem without hole support reports none (its end of file).
pub(crate) fn has_hole_before(fd: &OwnedFd, len: u64) -> io::Result<bool> {
    use nix::unistd::{Whence, lseek};
    match lseek(fd, 0, Whence::SeekHole) {
        Ok(at) => Ok((at as u64) < len),
        // Past the end (ENXIO: an empty file): nothing to map there.
        Err(Errno::ENXIO) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many were read
/// (fewer only at end of file). Never touches a mapping, so a short file
/// cannot raise SIGBUS.
pub(crate) fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let off = (offset + done as u64) as libc::off_t;
        let n = retry(|| nix::sys::uio::pread(fd, &mut buf[done..], off))?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// `pwrite(2)` of all of `buf` at `offset` (one call for a buffer this
/// small; loops on short writes).
pub(crate) fn write_all_at(fd: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let off = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let n = retry(|| nix::sys::uio::pwrite(fd, &buf[done..], off))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlink_if_same_unlinks_only_the_file_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        std::fs::write(&path, b"old").unwrap();
        let old = lstat(&path).unwrap();
        // What a reset's rename does: another file at the name.
        let new = dir.path().join("new");
        std::fs::write(&new, b"new").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert!(!unlink_if_same(&path, old.dev, old.ino).unwrap());
        // The replacement is back at its name, and nothing else is left.
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let now = lstat(&path).unwrap();
        assert!(unlink_if_same(&path, now.dev, now.ino).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
