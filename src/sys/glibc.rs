//! Reads (and, for recovery, writes) of glibc's `pthread_mutex_t` layout:
//! the futex lock word, `__owner` and `__kind`. This is glibc ABI, not an
//! API: no wrapper crate models it, so it is done here with raw pointers.

use std::sync::atomic::{AtomicU32, Ordering};

use super::pthread::{MutexKind, mutex_init};

/// Kernel futex ABI: set in the lock word when the owner died holding it.
pub(crate) const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// Kernel futex ABI: somebody sleeps on the lock word.
pub(crate) const FUTEX_WAITERS: u32 = 0x8000_0000;
/// Kernel futex ABI: the owner's TID, in the owner's PID namespace.
pub(crate) const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// glibc's `__data.__owner` value for a mutex that was unlocked after
/// EOWNERDEAD without `pthread_mutex_consistent` (nptl `pthreadP.h`).
const GLIBC_NOTRECOVERABLE: i32 = i32::MAX - 1;

/// Byte offset of `__data.__kind`: 16 on 64-bit glibc, 12 on 32-bit glibc.
const KIND_OFFSET: usize = if cfg!(target_pointer_width = "64") {
    16
} else {
    12
};

// The reads below view the mutex as u32 words: `__lock` at byte 0, `__owner`
// at byte 8 and `__kind` at `KIND_OFFSET`. So the struct must be aligned for
// an `AtomicU32` and long enough to hold all three.
const _: () = assert!(align_of::<libc::pthread_mutex_t>() >= align_of::<AtomicU32>());
const _: () = assert!(size_of::<libc::pthread_mutex_t>() >= KIND_OFFSET + 4);
const _: () = assert!(size_of::<libc::pthread_mutex_t>() >= 8 + 4);

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
    // `struct __pthread_mutex_s` on every glibc architecture (inside the
    // struct and 4-byte aligned: asserted above); the mapping is live.
    let owner = unsafe { AtomicU32::from_ptr(m.cast::<u32>().add(2)) };
    owner.load(Ordering::Relaxed) as i32 == GLIBC_NOTRECOVERABLE
}

/// The mutex's kind word as glibc stores it (`__data.__kind`), for validating
/// a file before trusting it. `bytes` are the mutex bytes copied from a file.
pub(crate) fn glibc_kind_word(bytes: &[u8]) -> Option<i32> {
    let b = bytes.get(KIND_OFFSET..KIND_OFFSET + 4)?;
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
