//! The contenders, implemented with the same care as the product: each lives
//! in the same kind of MAP_SHARED file (lock at offset 256, a u64 counter at
//! offset 512), so the only difference measured is the lock.
//! Shared by `benches/uncontended.rs` (criterion) and `examples/bench.rs`.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A lock plus a u64 counter in shared memory.
pub trait Contender {
    fn name(&self) -> &'static str;
    fn lock(&self);
    fn unlock(&self);
    /// The shared counter (only touched between lock and unlock).
    fn counter(&self) -> *mut u64;
}

/// A 4 KiB MAP_SHARED mapping of a file.
pub struct Shared {
    base: *mut u8,
    _file: File,
}

impl Shared {
    pub fn open(path: &Path) -> Shared {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        file.set_len(4096).unwrap();
        // SAFETY: maps 4096 bytes of a file we just sized to 4096; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Shared {
            base: base.cast(),
            _file: file,
        }
    }
    pub fn at(&self, off: usize) -> *mut u8 {
        self.base.wrapping_add(off)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no lock is held.
        unsafe { libc::munmap(self.base.cast(), 4096) };
    }
}

/// The limit: a raw glibc robust + pshared + errorcheck mutex.
pub struct RawRobust {
    pub map: Shared,
}

impl RawRobust {
    /// `init`: initialise the mutex (the first process only).
    pub fn open(path: &Path, init: bool) -> RawRobust {
        let map = Shared::open(path);
        if init {
            let m = map.at(256).cast::<libc::pthread_mutex_t>();
            // SAFETY: `m` is aligned, inside the mapping, and unused until now;
            // the attribute object lives for the block and is destroyed.
            unsafe {
                let mut a: libc::pthread_mutexattr_t = std::mem::zeroed();
                libc::pthread_mutexattr_init(&mut a);
                libc::pthread_mutexattr_setpshared(&mut a, libc::PTHREAD_PROCESS_SHARED);
                libc::pthread_mutexattr_setrobust(&mut a, libc::PTHREAD_MUTEX_ROBUST);
                libc::pthread_mutexattr_settype(&mut a, libc::PTHREAD_MUTEX_ERRORCHECK);
                assert_eq!(libc::pthread_mutex_init(m, &a), 0);
                libc::pthread_mutexattr_destroy(&mut a);
            }
        }
        RawRobust { map }
    }
    pub fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.map.at(256).cast()
    }
}

impl Contender for RawRobust {
    fn name(&self) -> &'static str {
        "raw glibc robust mutex"
    }
    #[inline]
    fn lock(&self) {
        // SAFETY: an initialised robust mutex in a live mapping.
        let r = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        if r == libc::EOWNERDEAD {
            // SAFETY: we own it after EOWNERDEAD.
            unsafe { libc::pthread_mutex_consistent(self.mutex()) };
        }
    }
    #[inline]
    fn unlock(&self) {
        // SAFETY: locked by this thread.
        unsafe { libc::pthread_mutex_unlock(self.mutex()) };
    }
    fn counter(&self) -> *mut u64 {
        self.map.at(512).cast()
    }
}

/// flock(2) on the file.
pub struct Flock {
    pub map: Shared,
    file: File,
}

impl Flock {
    pub fn open(path: &Path) -> Flock {
        Flock {
            map: Shared::open(path),
            file: File::open(path).unwrap(),
        }
    }
}

impl Contender for Flock {
    fn name(&self) -> &'static str {
        "flock"
    }
    fn lock(&self) {
        // SAFETY: flock on an open descriptor.
        let r = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0);
    }
    fn unlock(&self) {
        // SAFETY: flock on an open descriptor.
        let r = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
        assert_eq!(r, 0);
    }
    fn counter(&self) -> *mut u64 {
        self.map.at(512).cast()
    }
}

/// fcntl record locks: OFD (Linux >= 3.16) or classic POSIX.
pub struct Fcntl {
    pub map: Shared,
    file: File,
    ofd: bool,
}

impl Fcntl {
    pub fn open(path: &Path, ofd: bool) -> Fcntl {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        Fcntl {
            map: Shared::open(path),
            file,
            ofd,
        }
    }
    fn set(&self, ty: libc::c_short) {
        // SAFETY: a zeroed flock struct is valid; fcntl reads it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = ty;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 0;
        fl.l_len = 1;
        let cmd = if self.ofd {
            libc::F_OFD_SETLKW
        } else {
            libc::F_SETLKW
        };
        // SAFETY: fcntl with a valid flock struct on an open descriptor.
        let r = unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &fl) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    }
}

impl Contender for Fcntl {
    fn name(&self) -> &'static str {
        if self.ofd {
            "OFD fcntl"
        } else {
            "classic fcntl"
        }
    }
    fn lock(&self) {
        self.set(libc::F_WRLCK as libc::c_short);
    }
    fn unlock(&self) {
        self.set(libc::F_UNLCK as libc::c_short);
    }
    fn counter(&self) -> *mut u64 {
        self.map.at(512).cast()
    }
}

/// A POSIX named semaphore with one permit (not crash-safe).
pub struct NamedSem {
    pub map: Shared,
    sem: *mut libc::sem_t,
}

impl NamedSem {
    pub fn open(name: &str, path: &Path) -> NamedSem {
        let c = CString::new(name).unwrap();
        // SAFETY: a valid name; O_CREAT with mode and initial value 1.
        let sem = unsafe { libc::sem_open(c.as_ptr(), libc::O_CREAT, 0o600 as libc::c_uint, 1) };
        assert_ne!(sem, libc::SEM_FAILED);
        NamedSem {
            map: Shared::open(path),
            sem,
        }
    }
    pub fn unlink(name: &str) {
        let c = CString::new(name).unwrap();
        // SAFETY: a valid name.
        unsafe { libc::sem_unlink(c.as_ptr()) };
    }
}

impl Contender for NamedSem {
    fn name(&self) -> &'static str {
        "POSIX named semaphore"
    }
    fn lock(&self) {
        // SAFETY: an open semaphore.
        while unsafe { libc::sem_wait(self.sem) } != 0 {}
    }
    fn unlock(&self) {
        // SAFETY: an open semaphore.
        unsafe { libc::sem_post(self.sem) };
    }
    fn counter(&self) -> *mut u64 {
        self.map.at(512).cast()
    }
}
