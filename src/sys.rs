//! The only module that talks to the operating system through FFI.
//!
//! Every `libc` call of the crate lives here: opening without following
//! symlinks, `fstat`, `statfs`, `flock`, `fchmod`, `ftruncate`, `pread`, the
//! pthread mutex calls (including `pthread_mutex_clocklock`, which the `libc`
//! crate does not declare), the per-thread identity used by owner records and
//! the coarse vDSO clock. Return codes become [`io::Error`] through [`cvt`],
//! the way std's `sys` layer does it; the robust-mutex codes (EOWNERDEAD,
//! ENOTRECOVERABLE, EBUSY, ETIMEDOUT, EDEADLK) are classified by
//! [`classify_lock`] before anything is converted.
//!
//! Hand-written rather than `nix`: the pthread robust calls, `clocklock` and
//! the lock-word reads are not in `nix`, and keeping every call of one kind in
//! one place makes the `unsafe` surface reviewable at a glance.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Kernel futex ABI: set in the lock word when the owner died holding it.
pub(crate) const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// Kernel futex ABI: somebody sleeps on the lock word.
pub(crate) const FUTEX_WAITERS: u32 = 0x8000_0000;
/// Kernel futex ABI: the owner's TID, in the owner's PID namespace.
pub(crate) const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// glibc's `__data.__owner` value for a mutex that was unlocked after
/// EOWNERDEAD without `pthread_mutex_consistent` (nptl `pthreadP.h`).
const GLIBC_NOTRECOVERABLE: i32 = i32::MAX - 1;

/// The kind of mutex to initialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// PTHREAD_MUTEX_ERRORCHECK: relock gives EDEADLK.
    ErrorCheck,
    /// PTHREAD_MUTEX_RECURSIVE: the owner may lock again.
    Recursive,
}

/// Converts a `-1`-means-errno return into a `Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], retrying on EINTR.
fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Converts a pthread-style return (0 or an errno value) into a `Result`.
fn cvt_nz(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

const OPEN_FLAGS: libc::c_int =
    libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;

/// Opens an existing path without following a final symlink and without
/// blocking on a FIFO. `write` selects O_RDWR over O_RDONLY.
pub(crate) fn open_existing(path: &Path, write: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt_r(|| unsafe { libc::open(c.as_ptr(), access | OPEN_FLAGS) })?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a new file with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, read-write,
/// with the creator's mark as its mode.
pub(crate) fn create_exclusive(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | OPEN_FLAGS;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt_r(|| unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates an unnamed file in `dir` (O_TMPFILE), read-write.
pub(crate) fn create_unnamed(dir: &Path, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(dir)?;
    let flags = libc::O_RDWR | libc::O_TMPFILE | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt_r(|| unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives an unnamed (O_TMPFILE) file the name `path`; fails if it exists.
pub(crate) fn link_unnamed(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    let to = cstr(path)?;
    // SAFETY: both strings are valid and NUL-terminated for the whole call.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
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
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is an open descriptor and `st` is writable memory of the right size.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    Ok(FileStat::from_raw(unsafe { st.assume_init_ref() }))
}

/// `lstat(2)`: the facts of the name itself, without following a symlink.
pub(crate) fn lstat(path: &Path) -> io::Result<FileStat> {
    let c = cstr(path)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is NUL-terminated and `st` is writable memory of the right size.
    cvt(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: lstat succeeded, so it initialised `st`.
    Ok(FileStat::from_raw(unsafe { st.assume_init_ref() }))
}

/// The `f_type` of the filesystem holding `fd` (`fstatfs(2)`).
pub(crate) fn fs_type(fd: &OwnedFd) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fd` is an open descriptor and `st` is writable memory of the right size.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init_ref() };
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    Ok(st.f_type as i64)
}

/// Takes an exclusive `flock(2)` without blocking. `Ok(false)` means another
/// open file description holds it.
pub(crate) fn try_flock_exclusive(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    match cvt_r(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a `flock(2)`.
pub(crate) fn funlock(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    cvt_r(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) }).map(drop)
}

/// `fchmod(2)`.
pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on an open descriptor has no memory-safety preconditions.
    cvt_r(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// `ftruncate(2)`.
pub(crate) fn set_len(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    // SAFETY: ftruncate on an open descriptor has no memory-safety preconditions.
    cvt_r(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many were read
/// (fewer only at end of file). Never touches a mapping, so a short file
/// cannot raise SIGBUS.
pub(crate) fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let off = (offset + done as u64) as libc::off_t;
        // SAFETY: `rest` is valid writable memory of `rest.len()` bytes.
        let n = cvt_r(|| unsafe {
            libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), off) as libc::c_int
        })?;
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// `rename(2)`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

// ---------------------------------------------------------------------------
// pthread mutexes
// ---------------------------------------------------------------------------

unsafe extern "C" {
    /// glibc >= 2.30. Not declared by the `libc` crate. Waits against `clock`
    /// (we pass CLOCK_MONOTONIC), so wall-clock jumps neither stretch nor cut
    /// a wait, unlike `pthread_mutex_timedlock`.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Frees a `pthread_mutexattr_t` on every path out of [`mutex_init`].
struct AttrGuard(libc::pthread_mutexattr_t);

impl Drop for AttrGuard {
    fn drop(&mut self) {
        // SAFETY: the attribute was initialised by pthread_mutexattr_init and
        // is destroyed exactly once, here.
        let r = unsafe { libc::pthread_mutexattr_destroy(&mut self.0) };
        debug_assert_eq!(r, 0);
    }
}

/// Initialises a robust, process-shared mutex of `kind` in place.
///
/// # Safety
/// `m` points to writable memory of `size_of::<pthread_mutex_t>()` bytes,
/// suitably aligned, inside a MAP_SHARED mapping, that no thread or process
/// is using as a mutex (it is being created or provably abandoned).
pub(crate) unsafe fn mutex_init(m: *mut libc::pthread_mutex_t, kind: MutexKind) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is writable memory for an attribute object.
    cvt_nz(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
    // SAFETY: pthread_mutexattr_init succeeded, so `attr` is initialised.
    let mut attr = AttrGuard(unsafe { attr.assume_init() });
    let ty = match kind {
        MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
        MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
    };
    // SAFETY: `attr.0` is an initialised attribute object.
    cvt_nz(unsafe { libc::pthread_mutexattr_settype(&mut attr.0, ty) })?;
    // SAFETY: as above.
    cvt_nz(unsafe {
        libc::pthread_mutexattr_setpshared(&mut attr.0, libc::PTHREAD_PROCESS_SHARED)
    })?;
    // SAFETY: as above.
    cvt_nz(unsafe { libc::pthread_mutexattr_setrobust(&mut attr.0, libc::PTHREAD_MUTEX_ROBUST) })?;
    // SAFETY: the caller guarantees `m` is valid, aligned and unused; `attr`
    // is initialised. The mutex is initialised where it lives, never copied.
    cvt_nz(unsafe { libc::pthread_mutex_init(m, &attr.0) })
}

/// What a successful lock call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The lock is ours and the state consistent.
    Clean,
    /// EOWNERDEAD: the lock is ours, the previous owner died holding it.
    OwnerDied,
}

/// Why a lock call did not return the lock.
#[derive(Debug)]
pub(crate) enum LockFail {
    /// EBUSY or ETIMEDOUT.
    Busy,
    /// EDEADLK: this thread already holds it.
    Deadlock,
    /// ENOTRECOVERABLE.
    NotRecoverable,
    /// Anything else.
    Other(io::Error),
}

/// Classifies a pthread lock return code before converting it.
fn classify_lock(rc: libc::c_int) -> Result<Locked, LockFail> {
    match rc {
        0 => Ok(Locked::Clean),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        libc::EBUSY | libc::ETIMEDOUT => Err(LockFail::Busy),
        libc::EDEADLK => Err(LockFail::Deadlock),
        libc::ENOTRECOVERABLE => Err(LockFail::NotRecoverable),
        e => Err(LockFail::Other(io::Error::from_raw_os_error(e))),
    }
}

/// `pthread_mutex_lock`.
///
/// # Safety
/// `m` points to an initialised robust mutex in a live mapping.
#[inline]
pub(crate) unsafe fn mutex_lock(m: *mut libc::pthread_mutex_t) -> Result<Locked, LockFail> {
    // SAFETY: forwarded from the caller's contract.
    classify_lock(unsafe { libc::pthread_mutex_lock(m) })
}

/// `pthread_mutex_clocklock(CLOCK_MONOTONIC)` with an absolute deadline.
///
/// Also used with an already-passed deadline in place of
/// `pthread_mutex_trylock`, whose glibc implementation leaves a
/// not-recoverable mutex locked by the caller (the "trylock bug").
///
/// # Safety
/// `m` points to an initialised robust mutex in a live mapping.
#[inline]
pub(crate) unsafe fn mutex_clocklock(
    m: *mut libc::pthread_mutex_t,
    deadline: &libc::timespec,
) -> Result<Locked, LockFail> {
    // SAFETY: forwarded from the caller's contract; `deadline` is a valid timespec.
    classify_lock(unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, deadline) })
}

/// `pthread_mutex_unlock`.
///
/// # Safety
/// `m` points to an initialised robust mutex in a live mapping, locked by
/// the calling thread.
#[inline]
pub(crate) unsafe fn mutex_unlock(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: forwarded from the caller's contract.
    cvt_nz(unsafe { libc::pthread_mutex_unlock(m) })
}

/// `pthread_mutex_consistent`.
///
/// # Safety
/// `m` points to a robust mutex that the calling thread acquired with
/// EOWNERDEAD and has not yet unlocked (glibc does not check the caller).
pub(crate) unsafe fn mutex_consistent(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: forwarded from the caller's contract.
    cvt_nz(unsafe { libc::pthread_mutex_consistent(m) })
}

/// The futex lock word of a glibc mutex (the first `int`), as an atomic.
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping; the word is only read
/// or, by [`mark_owner_died`], written while nobody can be using the mutex.
#[inline]
pub(crate) unsafe fn lock_word<'a>(m: *mut libc::pthread_mutex_t) -> &'a AtomicU32 {
    // SAFETY: glibc's `__data.__lock` is the first 4-byte aligned int of the
    // struct; the caller guarantees the mapping lives for 'a.
    unsafe { AtomicU32::from_ptr(m.cast::<u32>()) }
}

/// A racy snapshot of the lock word (diagnostics and the contended counter).
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping.
#[inline]
pub(crate) unsafe fn lock_word_snapshot(m: *mut libc::pthread_mutex_t) -> u32 {
    // SAFETY: forwarded from the caller's contract.
    unsafe { lock_word(m) }.load(Ordering::Relaxed)
}

/// Puts a freshly initialised, unlocked mutex into the state the kernel
/// leaves when an owner dies (FUTEX_OWNER_DIED in the lock word), so that the
/// next locker gets EOWNERDEAD and runs the application's repair code. Used
/// after a reset and when a file outlived a reboot.
///
/// # Safety
/// `m` was just initialised by [`mutex_init`] and no other thread or process
/// can be using it yet.
pub(crate) unsafe fn mark_owner_died(m: *mut libc::pthread_mutex_t) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { lock_word(m) }.store(FUTEX_OWNER_DIED, Ordering::Release);
}

/// True when glibc has marked the mutex not recoverable (diagnostics only:
/// reads glibc's `__data.__owner`, the third int of the struct).
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping.
pub(crate) unsafe fn mutex_not_recoverable(m: *mut libc::pthread_mutex_t) -> bool {
    // SAFETY: `__owner` is the int at byte offset 8 of glibc's
    // `struct __pthread_mutex_s` on every glibc architecture; the mapping is live.
    let owner = unsafe { AtomicU32::from_ptr(m.cast::<u32>().add(2)) };
    owner.load(Ordering::Relaxed) as i32 == GLIBC_NOTRECOVERABLE
}

/// The mutex's kind word as glibc stores it (`__data.__kind`), for validating
/// a file before trusting it. `bytes` are the mutex bytes copied from a file.
pub(crate) fn glibc_kind_word(bytes: &[u8]) -> Option<i32> {
    // __kind: offset 16 on 64-bit glibc, 12 on 32-bit glibc.
    let off = if cfg!(target_pointer_width = "64") {
        16
    } else {
        12
    };
    let b = bytes.get(off..off + 4)?;
    Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// The `__kind` value glibc stores for our attribute set
/// (ERRORCHECK | ROBUST | PSHARED), computed by initialising a scratch mutex.
pub(crate) fn expected_kind_word(kind: MutexKind) -> i32 {
    let mut scratch = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
    // SAFETY: `scratch` is private, aligned, zeroed memory nobody else uses;
    // it is never locked, only inspected.
    let ok = unsafe { mutex_init(scratch.as_mut_ptr(), kind) }.is_ok();
    // SAFETY: the scratch mutex is plain memory of the right size.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            scratch.as_ptr().cast::<u8>(),
            std::mem::size_of::<libc::pthread_mutex_t>(),
        )
    };
    if ok {
        glibc_kind_word(bytes).unwrap_or(-1)
    } else {
        -1
    }
}

/// Absolute CLOCK_MONOTONIC deadline `d` from now, saturating.
pub(crate) fn deadline_after(d: Duration) -> libc::timespec {
    let now = monotonic_now();
    let total = now
        .checked_add(d)
        .unwrap_or(Duration::from_secs(i64::MAX as u64 / 2));
    libc::timespec {
        tv_sec: total.as_secs() as libc::time_t,
        tv_nsec: total.subsec_nanos() as libc::c_long,
    }
}

/// A deadline that has already passed: `clocklock` then only tries once.
/// Negative, so that glibc answers ETIMEDOUT itself: with `{0, 0}` it asks
/// the kernel, whose FUTEX_WAIT on an expired absolute timeout still sleeps
/// until the next timer tick (about 20 µs per busy probe, measured).
pub(crate) const PAST_DEADLINE: libc::timespec = libc::timespec {
    tv_sec: -1,
    tv_nsec: 0,
};

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is writable; clock_gettime (vDSO) only writes it.
    let r = unsafe { libc::clock_gettime(id, &mut ts) };
    debug_assert_eq!(r, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CLOCK_MONOTONIC now.
pub(crate) fn monotonic_now() -> Duration {
    clock(libc::CLOCK_MONOTONIC)
}

/// Wall-clock time since the epoch, from the coarse vDSO clock (a few ns;
/// jiffy resolution is plenty for "held for 2.3 s").
#[inline]
pub(crate) fn coarse_unix_ns() -> u64 {
    clock(libc::CLOCK_REALTIME_COARSE).as_nanos() as u64
}

/// The calling process's pid.
pub(crate) fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// The calling thread's kernel TID.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// The current uid.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether process `pid` exists (`kill(pid, 0)`; EPERM still means it exists).
pub(crate) fn pid_exists(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Registers `child` to run in the child after every `fork()`.
pub(crate) fn at_fork_child(child: unsafe extern "C" fn()) {
    // SAFETY: the handler is a plain function that only touches atomics,
    // which is async-signal-safe and fine after fork.
    let r = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    debug_assert_eq!(r, 0);
}

/// `fchown(2)`.
pub(crate) fn fchown(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on an open descriptor has no memory-safety preconditions.
    cvt_r(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// Wakes every waiter on a process-shared futex word.
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping.
pub(crate) unsafe fn futex_wake_all(m: *mut libc::pthread_mutex_t) {
    // SAFETY: FUTEX_WAKE only reads the address to find waiters; it lies in
    // a live shared mapping (forwarded from the caller).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            m.cast::<u32>(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0,
            0,
            0,
        );
    }
}

/// For a reset of a stuck mutex: turns a lock word that names `dead_tid` into
/// the owner-died state, as the kernel would have, and wakes its waiters so
/// they leave the old mutex. Returns false if the word changed meanwhile.
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping, and the thread
/// `dead_tid` in its word is known to be gone.
pub(crate) unsafe fn release_dead_owner(m: *mut libc::pthread_mutex_t, word: u32) -> bool {
    let new = FUTEX_OWNER_DIED | (word & FUTEX_WAITERS);
    // SAFETY: forwarded from the caller.
    let w = unsafe { lock_word(m) };
    let ok = w
        .compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok();
    // SAFETY: forwarded from the caller.
    unsafe { futex_wake_all(m) };
    ok
}

// ---------------------------------------------------------------------------
// Futex waits on several words at once (cancellable waits)
// ---------------------------------------------------------------------------

/// The kernel's `struct futex_waitv` (Linux >= 5.16). Hand-written: the
/// `libc` crate's version has a private padding field and cannot be built.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;

/// One futex word to wait on, and the value it must still hold.
#[derive(Debug)]
pub(crate) struct FutexWait<'a> {
    pub word: &'a AtomicU32,
    pub expected: u32,
    /// False for a word in process-private memory (faster hashing).
    pub shared: bool,
}

/// How a multi-futex wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken through word `i` (or spuriously): look again.
    Woken(usize),
    /// A word no longer held its expected value: look again.
    Changed,
    /// Interrupted by a signal: look again.
    Interrupted,
    /// The CLOCK_MONOTONIC deadline passed.
    TimedOut,
}

/// `futex_waitv(2)`: sleeps until one of `waits` is woken, one no longer
/// holds its expected value, a signal arrives, or `deadline` (absolute,
/// CLOCK_MONOTONIC) passes. At most 128 words.
pub(crate) fn futex_waitv(
    waits: &[FutexWait<'_>],
    deadline: Option<&libc::timespec>,
) -> io::Result<Woke> {
    let v: Vec<FutexWaitv> = waits
        .iter()
        .map(|w| FutexWaitv {
            val: u64::from(w.expected),
            uaddr: w.word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32 | if w.shared { 0 } else { FUTEX2_PRIVATE },
            reserved: 0,
        })
        .collect();
    let timeout = deadline.map_or(std::ptr::null(), |d| d as *const libc::timespec);
    // SAFETY: `v` is a valid array of `v.len()` futex_waitv entries whose
    // addresses point at live, aligned u32 words borrowed for this call;
    // `timeout` is null or a valid timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            v.as_ptr(),
            v.len() as libc::c_uint,
            0 as libc::c_uint,
            timeout,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return Ok(Woke::Woken(r as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Woke::Changed),
        Some(libc::EINTR) => Ok(Woke::Interrupted),
        Some(libc::ETIMEDOUT) => Ok(Woke::TimedOut),
        _ => Err(e),
    }
}

/// Wakes up to `n` waiters of `word`. Async-signal-safe (one syscall).
pub(crate) fn futex_wake(word: &AtomicU32, n: i32, shared: bool) {
    let op = if shared {
        libc::FUTEX_WAKE
    } else {
        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG
    };
    // SAFETY: FUTEX_WAKE only uses the address to find waiters; `word` is a
    // live aligned u32.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), op, n, 0, 0, 0);
    }
}

/// Whether `deadline` (CLOCK_MONOTONIC) has passed.
pub(crate) fn deadline_passed(deadline: &libc::timespec) -> bool {
    let now = monotonic_now();
    let d = Duration::new(deadline.tv_sec as u64, deadline.tv_nsec as u32);
    now >= d
}

// ---------------------------------------------------------------------------
// Bare (pymutex) files: src/bare.rs
// ---------------------------------------------------------------------------

/// The size of one `pthread_mutex_t`, the whole of a bare (pymutex) file.
pub(crate) const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// The bytes of a freshly initialised robust, process-shared mutex of
/// `kind`, made in private memory. glibc's `pthread_mutex_init` stores no
/// address (it clears the mutex and sets `__kind`), so these bytes are a
/// valid unlocked mutex wherever they are written: pymutex creates its files
/// this way, initialising a buffer and writing it with one `write`.
pub(crate) fn initialised_mutex_bytes(kind: MutexKind) -> io::Result<[u8; MUTEX_SIZE]> {
    let mut scratch = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
    // SAFETY: `scratch` is private, aligned, zeroed memory that nobody uses
    // as a mutex; it is only copied out below, never locked.
    unsafe { mutex_init(scratch.as_mut_ptr(), kind) }?;
    let mut out = [0u8; MUTEX_SIZE];
    // SAFETY: `scratch` is MUTEX_SIZE bytes of initialised plain memory and
    // `out` is a distinct array of the same length.
    unsafe {
        std::ptr::copy_nonoverlapping(scratch.as_ptr().cast::<u8>(), out.as_mut_ptr(), MUTEX_SIZE)
    };
    Ok(out)
}

/// `pwrite(2)` of all of `buf` at `offset` (one call for a buffer this
/// small; loops on short writes).
pub(crate) fn write_all_at(fd: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let off = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: `rest` is valid readable memory of `rest.len()` bytes.
        let n = cvt_r(|| unsafe {
            libc::pwrite(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), off) as libc::c_int
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n as usize;
    }
    Ok(())
}
