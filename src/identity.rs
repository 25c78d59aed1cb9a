//! Facts about the calling process and thread that owner records carry:
//! pid, tid, PID-namespace inode, process start time, boot id.
//!
//! Reading them costs system calls and `/proc` reads, so they are cached per
//! thread. A `fork()` makes every cached value wrong in the child; an
//! `atfork` child handler bumps a generation number that the cache checks.

use crate::sys;
use std::cell::Cell;
use std::os::unix::fs::MetadataExt;
use std::sync::Once;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

/// Runs in the child after every `fork()`, on the forking thread, which is
/// the child's only thread: it invalidates the identity cache and forgets
/// the locks the parent's thread held (the child holds none of them: glibc
/// gives it an empty robust list), and the cached clock's thread
/// (`crate::clock`). Only atomics and const-initialised thread-locals
/// without destructors: fine in a fork child.
extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    crate::clock::after_fork_in_child();
    LOCKER_TID.set(NO_TID);
    ROOM.set(0);
}

/// How many `fork()`s lie between the first user of this crate in this
/// process's line and this process (0: none): what the async holder pool
/// and lanes compare, to never use a parent's.
#[cfg(feature = "async")]
pub(crate) fn fork_generation() -> u32 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Whether this process is a fork child of a process that used this crate
/// (it has seen a `fork()` since the library was first used in its line).
pub(crate) fn is_fork_child() -> bool {
    FORK_GENERATION.load(Ordering::Relaxed) != 0
}

// ---------------------------------------------------------------------------
// The calling thread as a lock holder: its TID for the release check, and
// how many more locks it may take (the held-lock bound)
// ---------------------------------------------------------------------------

/// A value no lock word can hold, masked or not (a word is 32 bits): what
/// [`locker_tid`] is before the thread's first lock and after a fork. The
/// release fast path compares the whole word with [`locker_tid`], so the
/// sentinel must not be a `u32`.
const NO_TID: u64 = u64::MAX;

thread_local! {
    /// The calling thread's TID once it has locked anything through this
    /// crate (else [`NO_TID`]); reset in a fork child.
    static LOCKER_TID: Cell<u64> = const { Cell::new(NO_TID) };
    /// How many more locks the thread may take: [`MAX_HELD_PER_THREAD`]
    /// minus the ones it holds (0 before its first lock: the first check
    /// initialises it).
    static ROOM: Cell<u32> = const { Cell::new(0) };
}

/// The most locks (of every kind, each semaphore permit counting one, a
/// re-entrant nesting counting once) that one thread may hold at a time;
/// the next lock call gives [`LockError::TooManyHeld`](crate::LockError::TooManyHeld).
///
/// Why: a thread's held robust mutexes sit on its robust list, and when it
/// dies the kernel walks at most `ROBUST_LIST_LIMIT` = 2048 entries of that
/// list; locks taken beyond it would stay locked by a dead thread for ever
/// (stuck). 1024 is half of that: it leaves 1024 entries for robust mutexes
/// that other code (a C library, pymutex through ctypes) takes on the same
/// thread without this crate seeing them, and no sane design holds a
/// thousand locks on one thread.
///
/// # Examples
/// ```
/// assert!(robust_mutex::MAX_HELD_PER_THREAD < 2048);
/// ```
pub const MAX_HELD_PER_THREAD: usize = 1024;

/// The calling thread's TID if it ever locked through this crate (since
/// the last fork), else a value no lock word equals. One thread-local
/// load: the release path compares it with the lock word.
#[inline(always)]
pub(crate) fn locker_tid() -> u64 {
    LOCKER_TID.with(Cell::get)
}

/// Bit 31 of `ROOM`: the thread owes the clock a resume (its direct clock
/// read, made while holding a lock, found the process locks often), to be
/// done at its next lock call's entry, before the lock is taken. It makes
/// `ROOM` negative as an `i32`, so [`must_check`]'s one compare sees it;
/// the ±1 of [`took_one`] and [`gave_one`] never reach it.
const CLOCK_CHORE: u32 = 1 << 31;

/// How many more locks the calling thread may take (0 also before its
/// first lock: see [`init_locker`]).
pub(crate) fn room() -> u32 {
    ROOM.with(Cell::get) & !CLOCK_CHORE
}

/// Whether a lock call must take the out-of-line check: no room left, the
/// thread's first lock call (or its first after a fork), or a clock chore
/// owed ([`take_clock_chore`]). One thread-local compare.
#[inline(always)]
pub(crate) fn must_check() -> bool {
    ROOM.with(Cell::get) as i32 <= 0
}

/// The calling thread owes the clock a resume at its next lock call.
#[cold]
pub(crate) fn owe_clock_chore() {
    ROOM.with(|r| r.set(r.get() | CLOCK_CHORE));
}

/// Whether the calling thread owed the clock a resume (now no longer).
pub(crate) fn take_clock_chore() -> bool {
    let r = ROOM.with(Cell::get);
    ROOM.with(|c| c.set(r & !CLOCK_CHORE));
    r & CLOCK_CHORE != 0
}

/// The calling thread took one more lock.
#[inline(always)]
pub(crate) fn took_one() {
    // `with`, not `LocalKey::set`, which is not inlined.
    ROOM.with(|r| r.set(r.get().wrapping_sub(1)));
}

/// The calling thread let one lock go.
#[inline(always)]
pub(crate) fn gave_one() {
    ROOM.with(|r| r.set(r.get().wrapping_add(1)));
}

/// The first lock call on a thread (or the first after a fork): caches its
/// TID and gives it the full room. Returns false if the thread was already
/// initialised (its room is really used up).
#[cold]
pub(crate) fn init_locker() -> bool {
    if LOCKER_TID.get() != NO_TID {
        return false;
    }
    register_fork_handler();
    LOCKER_TID.set(u64::from(sys::gettid()));
    ROOM.set(MAX_HELD_PER_THREAD as u32);
    // What `locker_me` relies on: a thread with room (or holding a
    // lock) has its identity cache fresh.
    me();
    true
}

/// How many locks the calling thread holds through this crate.
pub(crate) fn held() -> usize {
    if LOCKER_TID.get() == NO_TID {
        0
    } else {
        MAX_HELD_PER_THREAD - room() as usize
    }
}

thread_local! {
    /// The addresses of the mutexes the thread took (outermost) while it
    /// was already panicking and has not released during that panic: their
    /// release during the unwinding is a plain unlock, not a death (as
    /// std's poison flag, which only poisons a lock whose guard saw the
    /// panic start). Touched only by a thread that panics.
    static TAKEN_WHILE_PANICKING: std::cell::RefCell<Vec<usize>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The calling thread, already panicking, took the mutex at `addr`.
#[cold]
pub(crate) fn taken_while_panicking(addr: usize) {
    TAKEN_WHILE_PANICKING.with_borrow_mut(|v| {
        if !v.contains(&addr) {
            v.push(addr);
        }
    });
}

/// Whether the calling thread took the mutex at `addr` while already
/// panicking (and has not released it since); `forget`: and it is being
/// released now.
#[cold]
pub(crate) fn was_taken_while_panicking(addr: usize, forget: bool) -> bool {
    TAKEN_WHILE_PANICKING
        .try_with(|v| {
            let mut v = v.borrow_mut();
            let i = v.iter().position(|&a| a == addr);
            if let (Some(i), true) = (i, forget) {
                v.swap_remove(i);
            }
            i.is_some()
        })
        .unwrap_or(false)
}

/// Registers [`after_fork_in_child`] (once per process).
pub(crate) fn register_fork_handler() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| sys::at_fork_child(after_fork_in_child));
}

/// What an owner record says about its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    generation: u32,
    /// Process id.
    pub pid: u32,
    /// Kernel thread id.
    pub tid: u32,
    /// Inode of `/proc/self/ns/pid`.
    pub pidns_ino: u64,
    /// Field 22 of `/proc/self/stat`.
    pub start_time: u64,
}

impl Me {
    const UNSET: Me = Me {
        generation: u32::MAX,
        pid: 0,
        tid: 0,
        pidns_ino: 0,
        start_time: 0,
    };
}

thread_local! {
    static ME: Cell<Me> = const { Cell::new(Me::UNSET) };
}

/// The calling thread's facts, cached. On the lock path: one relaxed load
/// and one thread-local read (`LocalKey::get`, which inlines where a
/// `with` closure did not).
#[inline(always)]
pub fn me() -> Me {
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    let m = ME.get();
    if m.generation == generation {
        m
    } else {
        refresh(generation)
    }
}

/// [`me`] for the lock path: the calling thread's facts, without the
/// fork-generation test.
///
/// Only for a thread that passed the held-lock check
/// ([`crate::raw::check_room`]) and has not forked since: that check ran
/// [`init_locker`] on the thread since its last fork (a fork child's
/// handler resets `ROOM` and `LOCKER_TID`, so the child's first lock runs
/// it again), and [`init_locker`] refreshed the cache. So no staleness
/// test here (debug builds assert it).
///
/// A copy, taken before the caller's first write to the owner record:
/// reading the cache in place after that write measured slower (about
/// +2 ns per lock+unlock here, for 2 fewer instructions).
#[inline(always)]
pub(crate) fn locker_me() -> Me {
    let m = ME.get();
    debug_assert_eq!(
        m.generation,
        FORK_GENERATION.load(Ordering::Relaxed),
        "the identity cache is stale: locker_me before check_room"
    );
    m
}

/// The first call on a thread, or the first after a fork.
#[cold]
fn refresh(generation: u32) -> Me {
    let m = compute(generation);
    ME.set(m);
    m
}

#[cold]
fn compute(generation: u32) -> Me {
    register_fork_handler();
    let pid = sys::getpid();
    Me {
        generation,
        pid,
        tid: sys::gettid(),
        pidns_ino: pid_namespace(),
        start_time: start_time_of(pid).unwrap_or(0),
    }
}

/// The inode of `/proc/self/ns/pid` (0 if it cannot be read).
pub(crate) fn pid_namespace() -> u64 {
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
/// Together with the pid it names one process, whatever pid reuse does.
pub(crate) fn start_time_of(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` from field 3 (the state) on. The command
/// name (field 2) may hold spaces and parentheses, so the split starts after
/// the last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True if the process `pid` that started at `start_time` still runs.
pub(crate) fn process_alive(pid: u32, start_time: u64) -> bool {
    if !sys::pid_exists(pid) {
        return false;
    }
    if !proc_is_ours() {
        // Another namespace's /proc: its entry for `pid` is someone else.
        return true;
    }
    match stat_fields(pid) {
        Some(f) => {
            // A zombie (Z) or dying (X) process holds nothing: the kernel
            // already ran its robust-list cleanup. Not yet reaped is not alive.
            let dead = matches!(f.first().map(String::as_str), Some("Z" | "X"));
            let same = f.get(22 - 3).and_then(|t| t.parse::<u64>().ok());
            !dead && (start_time == 0 || same == Some(start_time))
        }
        // Exists but /proc is unreadable (hidepid): trust kill(2).
        None => true,
    }
}

/// Whether this process's `/proc` shows this process's PID namespace:
/// `/proc/self` names our own pid. Not so after `unshare -pf` without
/// `--mount-proc` (the parent namespace's `/proc`, where our TIDs name
/// other tasks), nor without a `/proc` at all.
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        == Some(sys::getpid())
}

/// Whether the holder named by a lock word's `tid` is gone.
///
/// Only a positive answer counts; whatever cannot be told is "alive":
/// * the kernel has no task `tid` (`kill(tid, 0)` says ESRCH);
/// * `/proc` (only if it is this namespace's, see [`proc_is_ours`]) shows
///   task `tid` as a zombie or dying (the kernel walks a dying thread's
///   robust list in `exit_mm`, before it becomes a zombie).
///
/// A `/proc` that hides the task (`hidepid=2`: ENOENT for a live process
/// of another user) or is unreadable says nothing. Nor does the owner
/// record: when task `tid` exists but is not a thread of the record's
/// process (`tgkill` ESRCH, or that pid started at another time), either
/// the recorded holder died unreleased and its TID was reused (stuck), or
/// the record is stale and a live holder that writes none (a raw pthread
/// or pymutex peer) reuses the TID. Only the second is safe to assume: a
/// reset of a live holder's lock would give it two holders. Such a stuck
/// lock is found once the reusing thread ends.
pub(crate) fn holder_gone(tid: u32) -> bool {
    if sys::no_such_task(tid) {
        return true;
    }
    proc_is_ours()
        && stat_fields(tid)
            .is_some_and(|f| matches!(f.first().map(String::as_str), Some("Z" | "X")))
}

/// `/proc/sys/kernel/random/boot_id` as 16 bytes.
///
/// With the `test-hooks` feature (this crate's own tests only), honours
/// `ROBUST_MUTEX_TEST_BOOT_ID` (32 hex digits, dashes allowed), so tests can
/// fake a reboot. No user's build ever reads it.
pub(crate) fn boot_id() -> [u8; 16] {
    static BOOT_ID: OnceLock<[u8; 16]> = OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        #[cfg(feature = "test-hooks")]
        if let Some(id) = std::env::var("ROBUST_MUTEX_TEST_BOOT_ID")
            .ok()
            .and_then(|s| parse_uuid(&s))
        {
            return id;
        }
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| parse_uuid(&s))
            .unwrap_or([0; 16])
    })
}

/// Parses a UUID's 32 hex digits, ignoring dashes and whitespace.
pub(crate) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_reads_field_22_even_with_odd_command_names() {
        assert!(start_time_of(std::process::id()).unwrap() > 0);
        assert!(process_alive(
            std::process::id(),
            start_time_of(std::process::id()).unwrap()
        ));
        assert!(!process_alive(std::process::id(), 1));
    }

    #[test]
    fn parse_uuid_accepts_the_kernel_format_only() {
        let id = parse_uuid("0b0f3e36-8a4e-4a5c-9d8d-11c1a8b0f5e2\n").unwrap();
        assert_eq!(id[0], 0x0b);
        assert_eq!(id[15], 0xe2);
        assert!(parse_uuid("nope").is_none());
    }

    #[test]
    fn cached_identity_matches_the_kernel() {
        let m = me();
        assert_eq!(m.pid, std::process::id());
        assert_eq!(m.tid, sys::gettid());
        let other = std::thread::spawn(me).join().unwrap();
        assert_ne!(other.tid, m.tid);
        assert_eq!(other.pid, m.pid);
    }
}
