//! The contenders, shared by the criterion benches (`benches/*.rs`) and the
//! one-table program (`examples/bench/`, which includes this file with
//! `#[path]`).
//!
//! Every contender guards a `u64` counter that lives in a `MAP_SHARED` file,
//! at the same offset as `SharedMutex<u64>` keeps its value (512), so that
//! "lock, read the counter, write counter + 1, unlock" does the same memory
//! traffic everywhere:
//!
//! * [`RawRobust`]: a bare glibc `pthread_mutex_t`, PROCESS_SHARED + ROBUST +
//!   ERRORCHECK, at offset 256 of such a file: the limit this crate is built on.
//! * [`Flock`], [`OfdLock`], [`PosixLock`]: `flock(2)`, `fcntl(F_OFD_SETLKW)`,
//!   classic `fcntl(F_SETLKW)` on the file.
//! * [`NamedSem`]: a POSIX named semaphore (`sem_open`/`sem_wait`/`sem_post`).
//! * `std::sync::Mutex<u64>` (in-process only) and `SharedMutex` itself.
//!
//! [`replica`] re-does, step by step, the bookkeeping `SharedMutex::lock`
//! and its guard did on top of the raw mutex in format version 1, to price
//! each step, with the bench's own frozen copy of that layout
//! ([`layouts`]: also the version-2 layout replica and raw + spin K).

#![allow(dead_code)] // each bench target uses a different part

use robust_mutex::{Acquired, SharedMutex};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod layouts;
#[allow(unused_imports)] // benches/open.rs uses neither
pub use layouts::{Spin, V2Replica};
use layouts::{V1Record, v1_acquired, v1_released};
use robust_mutex::internals::{PAST_DEADLINE, pthread_mutex_clocklock};

/// Where the mutex lies (the file geometry every format version shares).
pub const MUTEX_OFFSET: usize = 256;
/// Where the guarded `u64` lies.
pub const DATA_OFFSET: usize = 512;
// The contenders must keep their mutex and value where `SharedMutex<u64>` does.
const _: () = assert!(MUTEX_OFFSET == robust_mutex::internals::MUTEX_OFFSET);
const _: () = assert!(DATA_OFFSET == robust_mutex::internals::DATA_MIN_OFFSET);
/// Length of every contender's file and mapping.
pub const FILE_LEN: usize = 4096;

/// CLOCK_MONOTONIC in nanoseconds (system-wide, so comparable across processes).
#[inline]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Clock `id` in nanoseconds.
#[inline(always)]
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The calling thread's kernel TID.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// A file of [`FILE_LEN`] (or more) bytes mapped `MAP_SHARED` read-write.
#[derive(Debug)]
pub struct ShmFile {
    /// The file's path.
    pub path: PathBuf,
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access through it is
// either atomic or serialised by the lock the bench is measuring.
unsafe impl Send for ShmFile {}
// SAFETY: as for Send.
unsafe impl Sync for ShmFile {}

impl ShmFile {
    /// Creates a new zeroed file of `len` bytes (rounded up to a page) and maps it.
    pub fn create(path: &Path, len: usize) -> ShmFile {
        let len = len.max(1).next_multiple_of(4096);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        f.set_len(len as u64).expect("ftruncate");
        ShmFile::map(path, f.into(), len)
    }

    /// Opens and maps an existing file (its own open file description, as a
    /// separate process would have). The first page is always mapped: a
    /// shorter file is fine as long as it is not empty.
    pub fn open(path: &Path) -> ShmFile {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let len = (f.metadata().expect("fstat").len() as usize)
            .max(1)
            .next_multiple_of(4096);
        ShmFile::map(path, f.into(), len)
    }

    fn map(path: &Path, fd: OwnedFd, len: usize) -> ShmFile {
        // SAFETY: a fresh shared mapping of an open descriptor; the kernel
        // picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap {}", path.display());
        ShmFile {
            path: path.to_owned(),
            fd,
            base: base.cast(),
            len,
        }
    }

    /// The descriptor.
    pub fn fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// The mapping's base address.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// The mutex at [`MUTEX_OFFSET`].
    pub fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.base.wrapping_add(MUTEX_OFFSET).cast()
    }

    /// The mutex's futex word.
    pub fn lock_word(&self) -> &AtomicU32 {
        // SAFETY: offset 256 of a page-aligned live mapping is 4-byte aligned
        // and inside it; the borrow is tied to `self`, which keeps it mapped.
        unsafe { AtomicU32::from_ptr(self.mutex().cast()) }
    }

    /// The guarded counter at [`DATA_OFFSET`].
    pub fn counter(&self) -> *mut u64 {
        self.base.wrapping_add(DATA_OFFSET).cast()
    }

    /// An atomic `u64` at `offset` (8-aligned, inside the mapping).
    pub fn atomic(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len);
        // SAFETY: aligned and inside the live mapping, checked above; the
        // borrow is tied to `self`.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    /// Reads the guarded counter (call with the lock held, or when quiet).
    pub fn read_counter(&self) -> u64 {
        // SAFETY: aligned u64 inside the live mapping.
        unsafe { std::ptr::read_volatile(self.counter()) }
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing
        // borrows the mapping past `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Initialises a PROCESS_SHARED + ROBUST + ERRORCHECK mutex in place.
///
/// # Safety
/// `m` is aligned, writable, inside a shared mapping, and not in use.
pub unsafe fn init_robust(m: *mut libc::pthread_mutex_t) {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: the attribute calls get a valid attribute object, initialised
    // first; `m` is valid per the caller's contract.
    unsafe {
        assert_eq!(libc::pthread_mutexattr_init(attr.as_mut_ptr()), 0);
        let a = attr.as_mut_ptr();
        assert_eq!(
            libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK),
            0
        );
        assert_eq!(
            libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
            0
        );
        assert_eq!(
            libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
            0
        );
        assert_eq!(libc::pthread_mutex_init(m, a), 0);
        libc::pthread_mutexattr_destroy(a);
    }
}

/// What every contender offers the benches.
pub trait Lock {
    /// The system call a waiter blocked on this lock sleeps in.
    const WAIT_SYSCALL: libc::c_long;
    /// Lock and unlock, nothing in between.
    #[inline]
    fn lock_unlock(&self) {
        self.with(|_, _| ());
    }
    /// Lock, run `f` on the shared counter (and whether the previous owner
    /// died holding the lock, as far as this lock can tell), unlock.
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R;
}

/// Locks `m`, turning an owner death into a consistent guard at once.
#[inline]
fn ours_lock<T: bytemuck::Pod>(m: &SharedMutex<T>) -> (robust_mutex::Guard<'_, T>, bool) {
    match m.lock() {
        Ok(Acquired::Clean(g)) => (g, false),
        Ok(Acquired::OwnerDied(r)) => (r.mark_consistent(), true),
        Err(e) => panic!("lock {}: {e}", m.path().display()),
    }
}

impl Lock for SharedMutex<u64> {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn lock_unlock(&self) {
        drop(ours_lock(self));
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let (mut g, died) = ours_lock(self);
        f(&mut g, died)
    }
}

impl Lock for SharedMutex<()> {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn lock_unlock(&self) {
        drop(ours_lock(self));
    }
    /// There is no counter in a `SharedMutex<()>`: `f` gets a local one.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let (_g, died) = ours_lock(self);
        let mut local = 0;
        f(&mut local, died)
    }
}

impl Lock for std::sync::Mutex<u64> {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn lock_unlock(&self) {
        drop(self.lock().unwrap_or_else(|p| p.into_inner()));
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let mut g = self.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g, false)
    }
}

/// The raw glibc robust mutex in a shared file: the limit.
#[derive(Debug)]
pub struct RawRobust {
    /// The file; the mutex is at [`MUTEX_OFFSET`], the counter at [`DATA_OFFSET`].
    pub shm: ShmFile,
}

impl RawRobust {
    /// Creates the file and initialises the mutex.
    pub fn create(path: &Path) -> RawRobust {
        let shm = ShmFile::create(path, FILE_LEN);
        // SAFETY: offset 256 of a fresh, private-so-far page: aligned, unused.
        unsafe { init_robust(shm.mutex()) };
        RawRobust { shm }
    }

    /// Attaches to a file made by [`create`](Self::create).
    pub fn open(path: &Path) -> RawRobust {
        RawRobust {
            shm: ShmFile::open(path),
        }
    }

    /// `pthread_mutex_lock`; on EOWNERDEAD marks it consistent and says so.
    #[inline]
    pub fn lock(&self) -> bool {
        // SAFETY: an initialised robust mutex in a live mapping.
        match unsafe { libc::pthread_mutex_lock(self.shm.mutex()) } {
            0 => false,
            libc::EOWNERDEAD => {
                // SAFETY: we hold it after EOWNERDEAD, on this thread.
                unsafe { libc::pthread_mutex_consistent(self.shm.mutex()) };
                true
            }
            e => panic!(
                "pthread_mutex_lock: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        }
    }

    /// Runs `f` on the counter while the caller holds the lock, which it
    /// took with EOWNERDEAD if `died` (then marked consistent first).
    #[inline(always)]
    pub fn while_held<R>(&self, died: bool, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        if died {
            // SAFETY: held after EOWNERDEAD, on this thread (caller's word).
            unsafe { libc::pthread_mutex_consistent(self.shm.mutex()) };
        }
        // SAFETY: the caller holds the lock that guards the counter, which
        // lies aligned inside the live mapping.
        f(unsafe { &mut *self.shm.counter() }, died)
    }

    /// `pthread_mutex_unlock`.
    #[inline]
    pub fn unlock(&self) {
        // SAFETY: this thread holds the mutex (the callers pair lock/unlock).
        let r = unsafe { libc::pthread_mutex_unlock(self.shm.mutex()) };
        debug_assert_eq!(r, 0);
    }
}

impl Lock for RawRobust {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn lock_unlock(&self) {
        self.lock();
        self.unlock();
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let died = self.lock();
        // SAFETY: we hold the lock that guards the counter, which lies
        // aligned inside the live mapping.
        let r = f(unsafe { &mut *self.shm.counter() }, died);
        self.unlock();
        r
    }
}

fn retry_eintr(mut f: impl FnMut() -> libc::c_int, what: &str) {
    loop {
        if f() == 0 {
            return;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            panic!("{what}: {e}");
        }
    }
}

/// `flock(2)` on the file; the counter lives in its mapping.
#[derive(Debug)]
pub struct Flock {
    /// The file (opened by this process: its own open file description).
    pub shm: ShmFile,
}

impl Lock for Flock {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_flock;
    #[inline]
    fn lock_unlock(&self) {
        self.with(|_, _| ());
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let fd = self.shm.fd();
        // SAFETY: flock on an open descriptor.
        retry_eintr(|| unsafe { libc::flock(fd, libc::LOCK_EX) }, "flock");
        // SAFETY: the exclusive flock guards the counter (in the live mapping).
        let r = f(unsafe { &mut *self.shm.counter() }, false);
        // SAFETY: as above.
        retry_eintr(|| unsafe { libc::flock(fd, libc::LOCK_UN) }, "flock");
        r
    }
}

fn whole_file(ty: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is valid (and l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

fn fcntl_lock(fd: libc::c_int, wait_cmd: libc::c_int, set_cmd: libc::c_int, lock: bool) {
    let fl = whole_file(if lock { libc::F_WRLCK } else { libc::F_UNLCK });
    let cmd = if lock { wait_cmd } else { set_cmd };
    // SAFETY: fcntl with a lock command and a valid `struct flock`.
    retry_eintr(|| unsafe { libc::fcntl(fd, cmd, &fl) }, "fcntl");
}

/// Open-file-description locks: `fcntl(F_OFD_SETLKW)` on the whole file.
#[derive(Debug)]
pub struct OfdLock {
    /// The file (opened by this process).
    pub shm: ShmFile,
}

impl Lock for OfdLock {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_fcntl;
    #[inline]
    fn lock_unlock(&self) {
        self.with(|_, _| ());
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        fcntl_lock(self.shm.fd(), libc::F_OFD_SETLKW, libc::F_OFD_SETLK, true);
        // SAFETY: the write lock guards the counter (in the live mapping).
        let r = f(unsafe { &mut *self.shm.counter() }, false);
        fcntl_lock(self.shm.fd(), libc::F_OFD_SETLKW, libc::F_OFD_SETLK, false);
        r
    }
}

/// Classic POSIX record locks: `fcntl(F_SETLKW)` on the whole file. They
/// belong to the process, so they exclude other processes only.
#[derive(Debug)]
pub struct PosixLock {
    /// The file (opened by this process).
    pub shm: ShmFile,
}

impl Lock for PosixLock {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_fcntl;
    #[inline]
    fn lock_unlock(&self) {
        self.with(|_, _| ());
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        fcntl_lock(self.shm.fd(), libc::F_SETLKW, libc::F_SETLK, true);
        // SAFETY: the write lock guards the counter (in the live mapping).
        let r = f(unsafe { &mut *self.shm.counter() }, false);
        fcntl_lock(self.shm.fd(), libc::F_SETLKW, libc::F_SETLK, false);
        r
    }
}

/// A POSIX named semaphore with value 1, guarding the counter in a file.
#[derive(Debug)]
pub struct NamedSem {
    sem: *mut libc::sem_t,
    name: CString,
    unlink_on_drop: bool,
    /// The counter's file.
    pub shm: ShmFile,
}

// SAFETY: a sem_t from sem_open may be used from any thread.
unsafe impl Send for NamedSem {}
// SAFETY: as for Send; sem_wait/sem_post are thread-safe.
unsafe impl Sync for NamedSem {}

/// The semaphore name the benches derive from the counter file's path.
pub fn sem_name(path: &Path) -> CString {
    let mut s = String::from("/rmbench");
    s.push_str(&path.to_string_lossy().replace('/', "_"));
    CString::new(s).expect("no NUL")
}

impl NamedSem {
    /// Creates the semaphore (value 1) named after `path`, and the counter file.
    pub fn create(path: &Path) -> NamedSem {
        let shm = ShmFile::create(path, FILE_LEN);
        let name = sem_name(path);
        // SAFETY: valid NUL-terminated name; the variadic mode and value are
        // passed as the C ABI expects (promoted unsigned ints).
        let sem = unsafe {
            libc::sem_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
                1 as libc::c_uint,
            )
        };
        assert_ne!(
            sem,
            libc::SEM_FAILED,
            "sem_open: {}",
            std::io::Error::last_os_error()
        );
        NamedSem {
            sem,
            name,
            unlink_on_drop: true,
            shm,
        }
    }

    /// Opens the semaphore made by [`create`](Self::create) for `path`.
    pub fn open(path: &Path) -> NamedSem {
        let shm = ShmFile::open(path);
        let name = sem_name(path);
        // SAFETY: valid NUL-terminated name.
        let sem = unsafe { libc::sem_open(name.as_ptr(), 0) };
        assert_ne!(
            sem,
            libc::SEM_FAILED,
            "sem_open: {}",
            std::io::Error::last_os_error()
        );
        NamedSem {
            sem,
            name,
            unlink_on_drop: false,
            shm,
        }
    }
}

impl Drop for NamedSem {
    fn drop(&mut self) {
        // SAFETY: `sem` came from sem_open and is closed once; the name is valid.
        unsafe {
            libc::sem_close(self.sem);
            if self.unlink_on_drop {
                libc::sem_unlink(self.name.as_ptr());
            }
        }
    }
}

impl Lock for NamedSem {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn lock_unlock(&self) {
        self.with(|_, _| ());
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        // SAFETY: a live semaphore from sem_open.
        retry_eintr(|| unsafe { libc::sem_wait(self.sem) }, "sem_wait");
        // SAFETY: the semaphore (value 1) guards the counter in the live mapping.
        let r = f(unsafe { &mut *self.shm.counter() }, false);
        // SAFETY: as above.
        unsafe { libc::sem_post(self.sem) };
        r
    }
}

/// Waits until thread `tid` of process `pid` sleeps in system call `nr`
/// (from `/proc/<pid>/task/<tid>/syscall`), i.e. it is blocked on the lock
/// and not merely about to be. False after `timeout`.
pub fn wait_until_blocked(pid: u32, tid: u32, nr: libc::c_long, timeout: Duration) -> bool {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let want = nr.to_string();
    let start = Instant::now();
    let mut buf = String::new();
    loop {
        buf.clear();
        if let Ok(mut f) = File::open(&path) {
            let _ = f.read_to_string(&mut buf);
            if buf.split_whitespace().next() == Some(want.as_str()) {
                return true;
            }
        }
        if start.elapsed() > timeout {
            return false;
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

// ---------------------------------------------------------------------------
// The replica: SharedMutex's bookkeeping re-done on the raw mutex, step by step
// ---------------------------------------------------------------------------

/// The replica's steps, cumulative: each level adds one piece of what
/// `SharedMutex::lock` + `Guard::drop` did on top of the raw mutex in
/// format version 1 ([`layouts::V1Record`], [`layouts::V1Counters`]). Level 6
/// is level 5 taken the way the shipped fast path takes it: no load of the
/// lock word; `pthread_mutex_clocklock` with an expired deadline, and only a
/// busy lock falls back to `pthread_mutex_lock` (so `contended` is exact).
pub const REPLICA_LEVELS: [&str; 7] = [
    "raw lock+unlock (pthread_mutex_lock/unlock)",
    "+ lock-word snapshot (contended flag)",
    "+ owner record (cached pid/tid/ns/start; write, clear)",
    "+ counters (acquisitions, contended, deaths)",
    "+ coarse wall clock in the record",
    "+ log level checks = full replica",
    "shipped: full replica, taken by an expired clocklock first (no snapshot)",
];

/// Level 8, a control for the multi-process cases: level 2 (snapshot +
/// owner record) with the record written to process-private memory instead
/// of the shared file, i.e. the same instructions without the cache line
/// that every new holder must pull from the previous holder's core.
pub const PRIVATE_RECORD_LEVEL: &str = "control: level 2 with the owner record in private memory";

/// The effective level of `L`: which pieces of the bookkeeping it does.
const fn pieces(l: u8) -> u8 {
    match l {
        6 => 5,
        8 => 2,
        l => l,
    }
}

thread_local! {
    static PRIVATE_RECORD: std::cell::UnsafeCell<V1Record> =
        // SAFETY: V1Record is plain integers and bytes: all-zero is valid.
        const { std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }) };
}

/// One lock+unlock of `raw` with the first `L` pieces of the crate's
/// bookkeeping (see [`REPLICA_LEVELS`]). `path` is only for the log calls.
#[inline(always)]
pub fn replica<const L: u8>(raw: &RawRobust, path: &Path) {
    let died = replica_acquire::<L>(raw, path);
    if died {
        // SAFETY: held after EOWNERDEAD, on this thread.
        unsafe { libc::pthread_mutex_consistent(raw.shm.mutex()) };
    }
    replica_release::<L>(raw, path);
}

/// The acquiring half of [`replica`]; returns whether the owner died.
#[inline(always)]
pub fn replica_acquire<const L: u8>(raw: &RawRobust, path: &Path) -> bool {
    let shm = &raw.shm;
    let p = pieces(L);
    let (rc, contended) = if L == 6 {
        // SAFETY: an initialised robust mutex in a live mapping; a valid timespec.
        match unsafe { pthread_mutex_clocklock(shm.mutex(), libc::CLOCK_MONOTONIC, &PAST_DEADLINE) }
        {
            // SAFETY: as above.
            libc::ETIMEDOUT => (unsafe { libc::pthread_mutex_lock(shm.mutex()) }, true),
            rc => (rc, false),
        }
    } else {
        let before = p >= 1 && shm.lock_word().load(Ordering::Relaxed) != 0;
        // SAFETY: an initialised robust mutex in a live mapping.
        (unsafe { libc::pthread_mutex_lock(shm.mutex()) }, before)
    };
    let died = match rc {
        0 => false,
        libc::EOWNERDEAD => true,
        e => panic!("lock: {e}"),
    };
    if p >= 2 {
        // SAFETY: we hold the lock, the only writer of record and counters,
        // which lie inside the live mapping (or, for level 8, in this
        // thread's private record).
        unsafe { v1_acquired(owner_of::<L>(shm), shm.v1_counters(), died, contended, p) };
    }
    if p >= 5 {
        log::debug!(
            "{}: acquired{}",
            path.display(),
            if contended { " after contention" } else { "" }
        );
    }
    died
}

/// The releasing half of [`replica`]. The caller holds the lock.
#[inline(always)]
pub fn replica_release<const L: u8>(raw: &RawRobust, path: &Path) {
    let shm = &raw.shm;
    let p = pieces(L);
    if p >= 2 {
        // SAFETY: the caller holds the lock (the only writer of the record).
        unsafe { v1_released(owner_of::<L>(shm)) };
    }
    // SAFETY: held by this thread.
    let r = unsafe { libc::pthread_mutex_unlock(shm.mutex()) };
    debug_assert_eq!(r, 0);
    if p >= 5 {
        log::debug!("{}: released", path.display());
    }
}

/// The replica at level `L` as a contender in its own right, for the
/// multi-process cases: the raw mutex's file, with the crate's bookkeeping
/// re-done up to level `L`.
#[derive(Debug)]
pub struct Replica<const L: u8> {
    /// The raw mutex (owner record and counters at the crate's offsets).
    pub raw: RawRobust,
}

impl<const L: u8> Lock for Replica<L> {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn lock_unlock(&self) {
        replica::<L>(&self.raw, &self.raw.shm.path);
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let died = replica_acquire::<L>(&self.raw, &self.raw.shm.path);
        let r = self.raw.while_held(died, f);
        replica_release::<L>(&self.raw, &self.raw.shm.path);
        r
    }
}

/// Where level `L` keeps its owner record.
#[inline(always)]
fn owner_of<const L: u8>(shm: &ShmFile) -> *mut V1Record {
    if L == 8 {
        PRIVATE_RECORD.with(|r| r.get())
    } else {
        shm.v1_owner()
    }
}

// ---------------------------------------------------------------------------
// Open: the raw floors and the crate's attach steps, replicated
// ---------------------------------------------------------------------------

/// The attach steps `SharedMutex::open` takes on an existing ready file,
/// cumulative (see `replica_attach`).
pub const ATTACH_LEVELS: [&str; 5] = [
    "open(O_RDWR|O_NOFOLLOW|O_CLOEXEC) + close",
    "+ fstat",
    "+ geteuid + fstatfs",
    "+ pread header (512 B)",
    "+ mmap (munmap at drop, untimed) = syscall replica",
];

/// What every attach and create did until commit 42e4aee: look up this
/// process's PID namespace by `stat`ing `/proc/self/ns/pid`.
pub fn proc_ns_stat() {
    std::hint::black_box(std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).ok());
}

/// A mapping made by the open floors; unmapped on drop (outside the timing).
#[derive(Debug)]
pub struct Mapped(*mut libc::c_void);

impl Mapped {
    /// Reads the lock word once (faults the page in, as a lock would).
    pub fn touch(&self) {
        // SAFETY: offset 256 lies inside the live 520-byte mapping.
        std::hint::black_box(unsafe {
            std::ptr::read_volatile(self.0.cast::<u8>().add(MUTEX_OFFSET).cast::<u32>())
        });
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: a mapping of 520 bytes made by this module, unmapped once.
        unsafe { libc::munmap(self.0, 520) };
    }
}

/// Maps the first 520 bytes of `fd` shared read-write and closes `fd`.
///
/// # Safety
/// `fd` is an open descriptor of a file of at least 520 bytes, owned by the caller.
unsafe fn map_and_close(fd: libc::c_int) -> Mapped {
    // SAFETY: forwarded from the caller; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            520,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the caller's descriptor, closed once here.
    unsafe { libc::close(fd) };
    Mapped(p)
}

/// Re-does the first `level + 1` steps of attaching to the ready file at
/// `path` (see [`ATTACH_LEVELS`]); the mapping (last level only) is returned
/// so that its munmap falls outside the timing, as a handle's drop does.
pub fn replica_attach(path: &CString, level: usize) -> Option<Mapped> {
    // SAFETY: every call gets valid pointers to live buffers; the fd is ours
    // and closed once.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        );
        assert!(fd >= 0);
        if level >= 1 {
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            libc::fstat(fd, st.as_mut_ptr());
        }
        if level >= 2 {
            std::hint::black_box(libc::geteuid());
            let mut sf = std::mem::MaybeUninit::<libc::statfs>::uninit();
            libc::fstatfs(fd, sf.as_mut_ptr());
        }
        if level >= 3 {
            let mut buf = [0u8; 512];
            libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            std::hint::black_box(&buf);
        }
        if level >= 4 {
            Some(map_and_close(fd))
        } else {
            libc::close(fd);
            None
        }
    }
}

/// The floor of "create and initialise a robust mutex file": open(O_CREAT|
/// O_EXCL) + ftruncate + mmap + pthread_mutex_init + close.
pub fn raw_create(path: &Path) -> Mapped {
    let c = cstring(path);
    // SAFETY: valid path; the fd is ours and handed to map_and_close; the
    // mutex is initialised in a fresh page nobody else uses.
    unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        );
        assert!(fd >= 0, "create {}", path.display());
        assert_eq!(libc::ftruncate(fd, 520), 0);
        let m = map_and_close(fd);
        init_robust(m.0.cast::<u8>().add(MUTEX_OFFSET).cast());
        m
    }
}

/// The floor of "attach to a ready robust mutex file": open + fstat + mmap + close.
pub fn raw_attach(path: &CString) -> Mapped {
    // SAFETY: valid path; the fd is ours and handed to map_and_close.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        assert!(fd >= 0);
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        libc::fstat(fd, st.as_mut_ptr());
        map_and_close(fd)
    }
}

/// A C string of `path`.
pub fn c_path(path: &Path) -> CString {
    cstring(path)
}
