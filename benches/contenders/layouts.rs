//! The owner-record layouts side by side, replicated on the raw mutex with
//! the bench's OWN copies of the structs and offsets, so that the old
//! layout stays measurable after the crate moves on (issue 12):
//!
//! * [`V1Record`] / [`V1Counters`]: format version 1. Per acquisition the
//!   holder writes the owner record (its own cache line, at
//!   [`V1_OWNER_OFFSET`]), the counters (another line, at
//!   [`V1_COUNTERS_OFFSET`]) and a `CLOCK_REALTIME_COARSE` read.
//! * [`V2Hot`]: format version 2 (docs/design.md, issue 12). Per acquisition
//!   the holder writes only the mutex's own 64-byte line: tid, pid, `since`
//!   from a cached process-wide time (one relaxed load of a static) and the
//!   counts, right after the `pthread_mutex_t`. The cold record at
//!   [`V1_OWNER_OFFSET`] (same place, process-constant fields) is read and
//!   rewritten only when its process constants are not the holder's.
//! * [`Spin`]: the raw mutex with a bounded spin of expired-clocklock tries
//!   before blocking (issue 12, item 3).
//!
//! Both replicas take the lock the way the crate ships it (an expired
//! `clocklock` first, then the blocking lock, so `contended` is exact) and
//! do the same log-level checks: they differ only in what they write.

use super::{Lock, RawRobust, ShmFile};
use robust_mutex::internals::{PAST_DEADLINE, pthread_mutex_clocklock};
use std::cell::Cell;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Version 1's owner record offset in the file (one cache line after the mutex).
pub const V1_OWNER_OFFSET: usize = 320;
/// Version 1's counters offset in the file.
pub const V1_COUNTERS_OFFSET: usize = 448;
/// Version 1's label bytes.
pub const V1_LABEL_MAX: usize = 88;

/// Version 1's owner record, as it was at commit 7124cd7
/// (`src/file/layout.rs`), frozen here.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct V1Record {
    /// The holder's process id (0: nobody).
    pub pid: u32,
    /// Zero when nobody holds the lock.
    pub tid: u32,
    /// Inode of the holder's PID namespace.
    pub pidns_ino: u64,
    /// The holder's start time (clock ticks since boot).
    pub start_time: u64,
    /// Wall clock when the lock was taken, ns since the epoch.
    pub acquired_unix_ns: u64,
    /// Bytes of `label` in use.
    pub label_len: u32,
    /// Nesting depth of a re-entrant holder.
    pub depth: u32,
    /// The holder's label.
    pub label: [u8; V1_LABEL_MAX],
}

/// Version 1's counters, as at commit 7124cd7, frozen here.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct V1Counters {
    /// Locks taken.
    pub acquisitions: u64,
    /// Locks that had to wait.
    pub contended: u64,
    /// Owner deaths reported.
    pub owner_deaths: u64,
    /// Recoveries completed.
    pub recoveries: u64,
    /// Resets of the file.
    pub resets: u64,
    /// Zero.
    pub reserved: [u64; 3],
}

const _: () = assert!(size_of::<V1Record>() == V1_COUNTERS_OFFSET - V1_OWNER_OFFSET);
const _: () = assert!(size_of::<V1Counters>() == super::DATA_OFFSET - V1_COUNTERS_OFFSET);

/// Where version 2's hot record starts after the mutex: the size of
/// `pthread_mutex_t` rounded up to 8 (40 on x86_64, 48 on aarch64).
pub const HOT_AFTER_MUTEX: usize = size_of::<libc::pthread_mutex_t>().next_multiple_of(8);
/// How many `u32` counts fit in the hot record (2 on x86_64, 0 on aarch64).
pub const HOT_COUNTS: usize = if HOT_AFTER_MUTEX + 24 <= 64 { 2 } else { 0 };

/// Version 2's hot record, in the mutex's own line (issue 12's design).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct V2Hot {
    /// The holder's kernel TID (0: not held).
    pub tid: u32,
    /// The holder's process id.
    pub pid: u32,
    /// Coarse wall clock at acquisition, ns; bit 0: a label is set.
    pub since: u64,
    /// Acquisitions and contended acquisitions, mod 2^32.
    pub counts: [u32; HOT_COUNTS],
}

const _: () = assert!(HOT_AFTER_MUTEX + size_of::<V2Hot>() <= 64);

/// The calling thread's identity, cached (the bench's own copy of the
/// crate's identity cache: the children are exec'd, never forked).
#[derive(Clone, Copy, Debug)]
pub struct BenchMe {
    /// Process id.
    pub pid: u32,
    /// Kernel thread id (0: not filled in yet).
    pub tid: u32,
    /// Inode of `/proc/self/ns/pid`.
    pub pidns_ino: u64,
    /// Field 22 of `/proc/self/stat`.
    pub start_time: u64,
}

thread_local! {
    static ME: Cell<BenchMe> = const {
        Cell::new(BenchMe { pid: 0, tid: 0, pidns_ino: 0, start_time: 0 })
    };
}

/// The calling thread's [`BenchMe`].
#[inline(always)]
pub fn me() -> BenchMe {
    let m = ME.get();
    if m.tid != 0 { m } else { me_slow() }
}

#[cold]
#[inline(never)]
fn me_slow() -> BenchMe {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Field 22, counted after the parenthesised command name.
    let start_time = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(19))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let m = BenchMe {
        pid: std::process::id(),
        tid: super::gettid() as u32,
        pidns_ino: std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino()),
        start_time,
    };
    ME.set(m);
    m
}

/// `CLOCK_REALTIME_COARSE` in ns: version 1's per-acquisition clock read.
#[inline(always)]
pub fn coarse_realtime_ns() -> u64 {
    super::clock_ns(libc::CLOCK_REALTIME_COARSE)
}

/// Version 2's cached process-wide coarse time. The design keeps it fresh
/// with a clock thread; the replica sets it once per process (when its
/// contender is made), so the price of a lock is the one relaxed load and
/// the clock thread's own cost is not in these figures.
static NOW: AtomicU64 = AtomicU64::new(0);

fn start_cached_clock() {
    if NOW.load(Ordering::Relaxed) == 0 {
        NOW.store(coarse_realtime_ns() & !1, Ordering::Relaxed);
    }
}

/// Takes `m` the way the crate ships it: an expired `clocklock` first (no
/// system call), the blocking lock only if busy. Returns (rc, contended).
#[inline(always)]
fn take(m: *mut libc::pthread_mutex_t) -> (libc::c_int, bool) {
    // SAFETY: an initialised robust mutex in a live mapping; a valid timespec.
    match unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &PAST_DEADLINE) } {
        // SAFETY: as above.
        libc::ETIMEDOUT => (unsafe { libc::pthread_mutex_lock(m) }, true),
        rc => (rc, false),
    }
}

#[inline(always)]
fn died(rc: libc::c_int) -> bool {
    match rc {
        0 => false,
        libc::EOWNERDEAD => true,
        e => panic!("lock: {e}"),
    }
}

impl ShmFile {
    /// Version 1's owner record (and version 2's cold record) in this file.
    pub fn v1_owner(&self) -> *mut V1Record {
        self.base().wrapping_add(V1_OWNER_OFFSET).cast()
    }

    /// Version 1's counters in this file.
    pub fn v1_counters(&self) -> *mut V1Counters {
        self.base().wrapping_add(V1_COUNTERS_OFFSET).cast()
    }

    /// Version 2's hot record, in the mutex's own line.
    pub fn v2_hot(&self) -> *mut V2Hot {
        self.mutex()
            .cast::<u8>()
            .wrapping_add(HOT_AFTER_MUTEX)
            .cast()
    }

    /// glibc's `__data.__count` (byte 4 of the mutex): 1 after a first
    /// acquisition, more after a relock of a recursive mutex.
    pub fn glibc_count(&self) -> *const u32 {
        self.mutex().cast::<u8>().wrapping_add(4).cast()
    }
}

/// Version 1's per-acquisition writes, as the crate did them at 7124cd7.
///
/// # Safety
/// The caller holds the lock guarding `rec` and `c`, valid for writes.
#[inline(always)]
pub unsafe fn v1_acquired(
    rec: *mut V1Record,
    c: *mut V1Counters,
    died: bool,
    contended: bool,
    p: u8,
) {
    let me = me();
    // SAFETY: caller's contract: we are the only writer.
    let (r, c) = unsafe { (&mut *rec, &mut *c) };
    if p >= 3 {
        c.acquisitions += 1;
    }
    if !died && r.depth > 0 && r.tid == me.tid && r.pid == me.pid {
        r.depth += 1;
        return;
    }
    if p >= 3 {
        c.contended += u64::from(contended);
        c.owner_deaths += u64::from(died);
    }
    r.pid = me.pid;
    r.tid = me.tid;
    r.pidns_ino = me.pidns_ino;
    r.start_time = me.start_time;
    if p >= 4 {
        r.acquired_unix_ns = coarse_realtime_ns();
    }
    r.label_len = 0;
    r.depth = 1;
}

/// Version 1's release.
///
/// # Safety
/// The caller holds the lock guarding `rec`, valid for writes.
#[inline(always)]
pub unsafe fn v1_released(rec: *mut V1Record) {
    // SAFETY: caller's contract.
    let r = unsafe { &mut *rec };
    r.depth = r.depth.saturating_sub(1);
    if r.depth == 0 {
        r.tid = 0;
        r.pid = 0;
    }
}

/// Version 2's layout on the raw mutex: the shipped acquisition, then the
/// hot writes in the mutex's own line; the cold record only read (and
/// rewritten when another process held the lock last).
#[derive(Debug)]
pub struct V2Replica {
    /// The raw mutex (hot record in its line, cold record at 320).
    pub raw: RawRobust,
}

impl V2Replica {
    /// Wraps an opened raw mutex file.
    pub fn new(raw: RawRobust) -> V2Replica {
        start_cached_clock();
        V2Replica { raw }
    }

    /// Acquires; returns whether the owner died.
    #[inline(always)]
    pub fn acquire(&self) -> bool {
        let shm = &self.raw.shm;
        let (rc, contended) = take(shm.mutex());
        let died = died(rc);
        // SAFETY: we hold the lock, the only writer of the hot and cold
        // records and the counters, all inside the live mapping.
        unsafe {
            let hot = &mut *shm.v2_hot();
            if HOT_COUNTS == 2 {
                hot.counts[0] = hot.counts[0].wrapping_add(1);
            } else {
                (*shm.v1_counters()).acquisitions += 1;
            }
            // A relock of a recursive mutex: glibc's count says so.
            if std::ptr::read_volatile(shm.glibc_count()) <= 1 {
                if HOT_COUNTS == 2 {
                    if hot.counts[0] == 0 {
                        (*shm.v1_counters()).acquisitions += 1 << 32;
                    }
                    hot.counts[1] = hot.counts[1].wrapping_add(u32::from(contended));
                } else {
                    (*shm.v1_counters()).contended += u64::from(contended);
                }
                if died {
                    (*shm.v1_counters()).owner_deaths += 1;
                }
                let me = me();
                let cold = &mut *shm.v1_owner();
                if cold.pid != me.pid
                    || cold.start_time != me.start_time
                    || cold.pidns_ino != me.pidns_ino
                {
                    cold_rewrite(cold, &me);
                }
                hot.tid = me.tid;
                hot.pid = me.pid;
                hot.since = NOW.load(Ordering::Relaxed);
            }
        }
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "{}: acquired{}",
                shm.path.display(),
                if contended { " after contention" } else { "" }
            );
        }
        died
    }

    /// Releases (the caller holds the lock).
    #[inline(always)]
    pub fn release(&self) {
        let shm = &self.raw.shm;
        // SAFETY: the caller holds the lock (the only writer of the record).
        unsafe {
            if std::ptr::read_volatile(shm.glibc_count()) <= 1 {
                let hot = &mut *shm.v2_hot();
                hot.tid = 0;
                hot.pid = 0;
                hot.since = 0;
            }
        }
        self.raw.unlock();
        log::debug!("{}: released", shm.path.display());
    }
}

/// The cold record's process constants, rewritten for a new process.
#[cold]
#[inline(never)]
fn cold_rewrite(cold: &mut V1Record, me: &BenchMe) {
    cold.pid = me.pid;
    cold.pidns_ino = me.pidns_ino;
    cold.start_time = me.start_time;
    cold.label_len = 0;
}

impl Lock for V2Replica {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let r = self.raw.while_held(self.acquire(), f);
        self.release();
        r
    }
}

/// The raw mutex taken with a bounded spin: an expired `clocklock` (no
/// system call), and if busy up to `K` more, each after one
/// `std::hint::spin_loop()`, then the blocking `pthread_mutex_lock`.
/// `K = 0` is the shipped acquisition on the raw mutex (one expired try,
/// then block), which separates the spin from the first try.
#[derive(Debug)]
pub struct Spin<const K: u32> {
    /// The raw mutex.
    pub raw: RawRobust,
}

impl<const K: u32> Spin<K> {
    /// Acquires; returns whether the owner died.
    #[inline(always)]
    pub fn acquire(&self) -> bool {
        let m = self.raw.shm.mutex();
        // SAFETY: an initialised robust mutex in a live mapping; a valid timespec.
        let try_once =
            || unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &PAST_DEADLINE) };
        let mut rc = try_once();
        let mut k = 0;
        while rc == libc::ETIMEDOUT && k < K {
            std::hint::spin_loop();
            rc = try_once();
            k += 1;
        }
        if rc == libc::ETIMEDOUT {
            // SAFETY: as above.
            rc = unsafe { libc::pthread_mutex_lock(m) };
        }
        died(rc)
    }
}

impl<const K: u32> Lock for Spin<K> {
    const WAIT_SYSCALL: libc::c_long = libc::SYS_futex;
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut u64, bool) -> R) -> R {
        let r = self.raw.while_held(self.acquire(), f);
        self.raw.unlock();
        r
    }
}
