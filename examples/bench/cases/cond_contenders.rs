//! Case 8's contenders: three ways for one process to wake another that
//! waits for a change, each between two processes that opened the same
//! file(s) on their own:
//!
//! * **ours**: `SharedMutex<u64>`, `Guard::wait_while` and `notify_one`
//!   (the condition word in the file's header);
//! * **pcond**: a `pthread_cond_t` and a `pthread_mutex_t`, both
//!   `PTHREAD_PROCESS_SHARED` (the mutex also ROBUST + ERRORCHECK, as
//!   [`RawRobust`]'s), in one `MAP_SHARED` file: mutex at 256, condition
//!   variable at [`PCOND_OFFSET`], value at 512;
//! * **pipe**: two FIFOs (a pipe each way, one byte per message).
//!
//! And how a thread asleep in each looks in `/proc/<pid>/task/<tid>/syscall`
//! ([`Asleep`]), so that a measurement starts only once the other side
//! really sleeps in the kernel, not on its way there.

use crate::contenders::{MUTEX_OFFSET, RawRobust, c_path};
use robust_mutex::SharedMutex;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the condition word lies in a `SharedMutex` file (the header's
/// `cond_seq`, issue 13's design).
pub(crate) const COND_WORD_OFFSET: u64 = 192;
/// Where the pcond contender keeps its `pthread_cond_t`: after the mutex,
/// before the value.
pub(crate) const PCOND_OFFSET: usize = 320;
const _: () = assert!(
    PCOND_OFFSET >= MUTEX_OFFSET + size_of::<libc::pthread_mutex_t>()
        && PCOND_OFFSET + size_of::<libc::pthread_cond_t>() <= crate::contenders::DATA_OFFSET
);

/// The contenders' names, as `--only 8`'s rows and the child roles spell them.
pub(crate) const KINDS: [&str; 3] = ["ours", "pcond", "pipe"];

/// The row label of contender `kind`.
pub(crate) fn cond_label(kind: &str) -> &'static str {
    match kind {
        "ours" => "**SharedMutex<u64>**: wait_while + notify_one",
        "pcond" => "pthread_cond_t + robust pthread_mutex_t (PROCESS_SHARED)",
        "pipe" => "pipe (FIFO) each way, 1 byte",
        _ => "?",
    }
}

/// What a thread blocked in a contender's wait is doing in the kernel: the
/// system call, and (for futexes) where in its page the futex word lies.
#[derive(Debug, Clone)]
pub(crate) struct Asleep {
    pub(crate) nr: libc::c_long,
    pub(crate) page_offsets: Option<Range<u64>>,
}

impl Asleep {
    /// Asleep in `futex` on the word at `offset` of a mapping of the file.
    pub(crate) fn futex_at(offset: u64, len: u64) -> Asleep {
        Asleep {
            nr: libc::SYS_futex,
            page_offsets: Some(offset..offset + len),
        }
    }
}

/// Waits until thread `tid` of process `pid` sleeps as `how` says (the
/// system call number, and the first argument's offset in its page: the
/// mappings are page-aligned at file offset 0). False after `timeout`.
pub(crate) fn wait_until_asleep(pid: u32, tid: u32, how: &Asleep, timeout: Duration) -> bool {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let start = Instant::now();
    let mut buf = String::new();
    loop {
        buf.clear();
        if let Ok(mut f) = File::open(&path) {
            let _ = f.read_to_string(&mut buf);
            let mut fields = buf.split_whitespace();
            let nr = fields.next().and_then(|s| s.parse::<libc::c_long>().ok());
            let arg0 = fields
                .next()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
            let at = |r: &Range<u64>| arg0.is_some_and(|a| r.contains(&(a & 0xfff)));
            if nr == Some(how.nr) && how.page_offsets.as_ref().is_none_or(at) {
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

/// A process-shared "value changed" signal between two processes.
pub(crate) trait Cond {
    /// Makes the change: under the lock, value = `v` (the pipe has no value).
    fn set(&self, v: u64);
    /// Wakes the other side.
    fn notify(&self);
    /// Returns once the value is at least `v` (the pipe: once a byte came),
    /// sleeping in the kernel meanwhile.
    fn wait_for(&self, v: u64);
    /// How a thread in [`wait_for`](Self::wait_for) looks asleep.
    fn asleep(&self) -> Asleep;
}

/// Our condition wait.
#[derive(Debug)]
pub(crate) struct Ours(pub(crate) SharedMutex<u64>);

impl Ours {
    /// Our lock, a dead holder repaired by doing nothing (the bench's
    /// holders hold no state).
    pub(crate) fn guard(&self) -> robust_mutex::Guard<'_, u64> {
        self.0.lock().expect("lock").recover_with(|_| ())
    }
}

impl Cond for Ours {
    fn set(&self, v: u64) {
        *self.guard() = v;
    }
    fn notify(&self) {
        self.0.notify_one();
    }
    fn wait_for(&self, v: u64) {
        let g = self.guard().wait_while(|x| *x < v).expect("wait_while");
        drop(g.recover_with(|_| ()));
    }
    fn asleep(&self) -> Asleep {
        Asleep::futex_at(COND_WORD_OFFSET, 4)
    }
}

/// `pthread_cond_t` + robust `pthread_mutex_t`, both process-shared, in
/// [`RawRobust`]'s file.
#[derive(Debug)]
pub(crate) struct PCond {
    pub(crate) raw: RawRobust,
}

impl PCond {
    /// Creates the file: the robust mutex, then the condition variable.
    pub(crate) fn create(path: &Path) -> PCond {
        let raw = RawRobust::create(path);
        let c = PCond { raw };
        let mut attr = std::mem::MaybeUninit::<libc::pthread_condattr_t>::uninit();
        // SAFETY: the attribute object is initialised before use and
        // destroyed once; the condition variable lies aligned inside the
        // live mapping, in a file no other process has opened yet.
        unsafe {
            assert_eq!(libc::pthread_condattr_init(attr.as_mut_ptr()), 0);
            let a = attr.as_mut_ptr();
            assert_eq!(
                libc::pthread_condattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(libc::pthread_cond_init(c.cond(), a), 0);
            libc::pthread_condattr_destroy(a);
        }
        c
    }

    /// Attaches to a file made by [`create`](Self::create).
    pub(crate) fn open(path: &Path) -> PCond {
        PCond {
            raw: RawRobust::open(path),
        }
    }

    pub(crate) fn cond(&self) -> *mut libc::pthread_cond_t {
        self.raw.shm.base().wrapping_add(PCOND_OFFSET).cast()
    }

    /// The value (call with the mutex held).
    fn value(&self) -> u64 {
        // SAFETY: aligned u64 inside the live mapping; the caller holds the mutex.
        unsafe { std::ptr::read_volatile(self.raw.shm.counter()) }
    }

    /// One `pthread_cond_wait` (or, with `deadline` on CLOCK_REALTIME, the
    /// condition variable's clock, `pthread_cond_timedwait`); the caller
    /// holds the mutex. An owner death found on the way back is marked
    /// consistent and reported. Returns (owner died, timed out).
    pub(crate) fn wait_once(&self, deadline: Option<&libc::timespec>) -> (bool, bool) {
        let m = self.raw.shm.mutex();
        // SAFETY: an initialised process-shared condition variable and a
        // robust mutex this thread holds, both in the live mapping.
        let r = unsafe {
            match deadline {
                None => libc::pthread_cond_wait(self.cond(), m),
                Some(d) => libc::pthread_cond_timedwait(self.cond(), m, d),
            }
        };
        match r {
            0 => (false, false),
            libc::ETIMEDOUT => (false, true),
            libc::EOWNERDEAD => {
                // SAFETY: held after EOWNERDEAD, on this thread.
                unsafe { libc::pthread_mutex_consistent(m) };
                (true, false)
            }
            e => panic!(
                "pthread_cond_wait: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        }
    }

    /// `pthread_cond_signal`.
    pub(crate) fn signal(&self) {
        // SAFETY: an initialised process-shared condition variable in the live mapping.
        unsafe { libc::pthread_cond_signal(self.cond()) };
    }
}

impl Cond for PCond {
    fn set(&self, v: u64) {
        self.raw.lock();
        // SAFETY: we hold the mutex that guards the value, aligned inside the mapping.
        unsafe { std::ptr::write_volatile(self.raw.shm.counter(), v) };
        self.raw.unlock();
    }
    fn notify(&self) {
        self.signal();
    }
    fn wait_for(&self, v: u64) {
        self.raw.lock();
        while self.value() < v {
            self.wait_once(None);
        }
        self.raw.unlock();
    }
    fn asleep(&self) -> Asleep {
        Asleep::futex_at(
            PCOND_OFFSET as u64,
            size_of::<libc::pthread_cond_t>() as u64,
        )
    }
}

/// A pipe each way: FIFOs `<path>.a2b` and `<path>.b2a`, opened `O_RDWR`
/// (on Linux that never blocks for the other end).
#[derive(Debug)]
pub(crate) struct Pipe {
    rx: File,
    tx: File,
}

fn fifo(path: &Path, end: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(end);
    PathBuf::from(s)
}

impl Pipe {
    /// Makes the two FIFOs.
    pub(crate) fn create(path: &Path) {
        for end in [".a2b", ".b2a"] {
            let c = c_path(&fifo(path, end));
            // SAFETY: a valid NUL-terminated path. Raw libc: std has no mkfifo.
            let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
        }
    }

    /// Opens side A (`first`) or B of the FIFOs at `path`.
    pub(crate) fn open(path: &Path, first: bool) -> Pipe {
        let open = |end: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(fifo(path, end))
                .expect("open a FIFO")
        };
        let (a2b, b2a) = (open(".a2b"), open(".b2a"));
        if first {
            Pipe { rx: b2a, tx: a2b }
        } else {
            Pipe { rx: a2b, tx: b2a }
        }
    }

    /// Removes the two FIFOs.
    pub(crate) fn remove(path: &Path) {
        for end in [".a2b", ".b2a"] {
            let _ = std::fs::remove_file(fifo(path, end));
        }
    }
}

impl Cond for Pipe {
    fn set(&self, _: u64) {}
    fn notify(&self) {
        (&self.tx).write_all(&[1]).expect("pipe write");
    }
    fn wait_for(&self, _: u64) {
        let mut b = [0u8];
        (&self.rx).read_exact(&mut b).expect("pipe read");
    }
    fn asleep(&self) -> Asleep {
        Asleep {
            nr: libc::SYS_read,
            page_offsets: None,
        }
    }
}

/// The parent's side of contender `kind` on a fresh `path`: creates it.
pub(crate) fn create(kind: &str, path: &Path) -> Box<dyn Cond> {
    match kind {
        "ours" => Box::new(Ours(SharedMutex::open(path).expect("create SharedMutex"))),
        "pcond" => Box::new(PCond::create(path)),
        "pipe" => {
            Pipe::create(path);
            Box::new(Pipe::open(path, true))
        }
        k => panic!("unknown condition kind {k}"),
    }
}

/// The child's side of contender `kind` at `path`, made by [`create`].
pub(crate) fn open(kind: &str, path: &Path) -> Box<dyn Cond> {
    match kind {
        "ours" => Box::new(Ours(SharedMutex::open(path).expect("open SharedMutex"))),
        "pcond" => Box::new(PCond::open(path)),
        "pipe" => Box::new(Pipe::open(path, false)),
        k => panic!("unknown condition kind {k}"),
    }
}

/// Removes what [`create`] made.
pub(crate) fn remove(kind: &str, path: &Path) {
    if kind == "pipe" {
        Pipe::remove(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}
