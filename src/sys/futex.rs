//! Futex system calls: `FUTEX_WAKE`, `FUTEX_WAIT` and `futex_waitv`. Raw `libc::syscall`,
//! because `nix` has no futex API.

use std::io;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, Ordering};

use super::glibc::{FUTEX_OWNER_DIED, FUTEX_WAITERS, lock_word};

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

/// The kernel's `struct futex_waitv` (Linux >= 5.16, `linux/futex.h`:
/// `{ __u64 val; __u64 uaddr; __u32 flags; __u32 __reserved; }`).
/// Hand-written: the `libc` crate's version has a private padding field and
/// cannot be built.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

// The kernel reads an array of these: the layout must be exactly its own.
const _: () = assert!(size_of::<FutexWaitv>() == 24);
const _: () = assert!(align_of::<FutexWaitv>() == align_of::<u64>());
const _: () = assert!(offset_of!(FutexWaitv, val) == 0);
const _: () = assert!(offset_of!(FutexWaitv, uaddr) == 8);
const _: () = assert!(offset_of!(FutexWaitv, flags) == 16);
const _: () = assert!(offset_of!(FutexWaitv, reserved) == 20);

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
    // SAFETY: `v` is a valid array of `v.len()` futex_waitv entries (layout
    // asserted above) whose addresses point at live, aligned u32 words
    // borrowed for this call; `timeout` is null or a valid timespec.
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
    woke(r)
}

/// A futex wait's answer: `r` (the system call's result, with errno) as a
/// [`Woke`], or the error.
fn woke(r: libc::c_long) -> io::Result<Woke> {
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

/// `FUTEX_WAIT_BITSET` on a process-shared `word` while it holds
/// `expected`, until woken, a signal, or the absolute CLOCK_MONOTONIC
/// `deadline` (none: no deadline). One word needs no `futex_waitv` (whose
/// array is allocated): the condition waits' sleep.
///
/// # Errors
/// Any errno but EAGAIN, EINTR and ETIMEDOUT (which are `Woke` answers).
pub(crate) fn futex_wait_shared(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<&libc::timespec>,
) -> io::Result<Woke> {
    let timeout = deadline.map_or(std::ptr::null(), |d| d as *const libc::timespec);
    // The BITSET variant takes an absolute time, on CLOCK_MONOTONIC by
    // default (FUTEX_WAIT takes a relative one).
    // SAFETY: FUTEX_WAIT_BITSET only reads the live, aligned u32 `word`
    // (borrowed for the call) and sleeps; `timeout` is null or a valid timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            timeout,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    woke(r)
}

/// `FUTEX_WAIT` on a process-private `word` while it holds `expected`, with
/// no timeout. Returns when woken, at once if `word` no longer holds
/// `expected`, on a signal, or spuriously: the caller looks again. (One
/// word needs no `futex_waitv`, whose array is allocated.)
pub(crate) fn futex_wait_private(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT only reads the live, aligned u32 `word` (borrowed
    // for the call) and sleeps; the null timeout means none.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
            0,
            0,
        );
    }
}

/// Wakes up to `n` waiters of `word`; returns how many it woke (`None`
/// if the call failed). Async-signal-safe (one syscall).
pub(crate) fn futex_wake(word: &AtomicU32, n: i32, shared: bool) -> Option<usize> {
    let op = if shared {
        libc::FUTEX_WAKE
    } else {
        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG
    };
    // SAFETY: FUTEX_WAKE only uses the address to find waiters; `word` is a
    // live aligned u32.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, n, 0, 0, 0) };
    usize::try_from(r).ok()
}
