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
/// glibc's `__data.__owner` value for a mutex acquired with EOWNERDEAD and
/// not yet marked consistent (nptl `pthreadP.h`).
const GLIBC_INCONSISTENT: i32 = i32::MAX;

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

/// True when glibc has marked the mutex not recoverable (reads glibc's
/// `__data.__owner`, the third int of the struct).
/// A diagnostic for `status`, and a decision for a conversion of a
/// version-1 file (`migrate`): a not-recoverable lock needs no force and
/// is not taken. A racy read: a lock marked just after it is seen as free
/// is found not recoverable by the conversion's `clocklock`.
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

/// glibc's `__data.__count` of a mutex: the nesting depth of a RECURSIVE
/// mutex's holder (1 after each first acquisition, +1 per relock, -1 per
/// unlock, 0 once released); 1 or 0 for the other kinds. Only meaningful to
/// the holder, who alone changes it.
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping.
#[inline(always)]
pub(crate) unsafe fn mutex_count(m: *mut libc::pthread_mutex_t) -> u32 {
    // Atomic, relaxed: other threads' writes to it are only those of a
    // holder, which a holder reading it never races with, and any other
    // reader only wants a snapshot.
    // SAFETY: `__count` is the aligned u32 at byte 4 of glibc's mutex on
    // every glibc architecture (asserted above); the mapping is live.
    let count = unsafe { AtomicU32::from_ptr(m.cast::<u32>().add(1)) };
    count.load(Ordering::Relaxed)
}

/// Lets go of a mutex the calling thread holds and leaves it not
/// recoverable, as an unlock after EOWNERDEAD without
/// `pthread_mutex_consistent` does: `__owner` gets glibc's "inconsistent"
/// mark, then glibc's unlock marks the mutex not recoverable and wakes its
/// waiters, and every later lock gets ENOTRECOVERABLE. For the old file of
/// a conversion, which nobody may use any more. Where `__owner` is not
/// glibc's (not glibc), a plain unlock.
///
/// # Safety
/// `m` is an initialised robust mutex in a live mapping, held by the
/// calling thread.
pub(crate) unsafe fn unlock_not_recoverable(m: *mut libc::pthread_mutex_t) -> std::io::Result<()> {
    if cfg!(target_env = "gnu") {
        // SAFETY: `__owner` is the int at byte offset 8 on every glibc
        // architecture (asserted above); while we hold the mutex only we
        // (and glibc's unlock, in this thread) write it.
        let owner = unsafe { AtomicU32::from_ptr(m.cast::<u32>().add(2)) };
        owner.store(GLIBC_INCONSISTENT as u32, Ordering::Relaxed);
    }
    // SAFETY: held by the calling thread (the caller's contract).
    unsafe { super::pthread::mutex_unlock(m) }
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

// ---------------------------------------------------------------------------
// The calling thread's robust list: a panic counts as a death
// ---------------------------------------------------------------------------
//
// glibc keeps every robust mutex a thread holds on that thread's robust
// list, which the kernel walks when the thread dies (`handle_futex_death`:
// a word naming the dead TID becomes FUTEX_OWNER_DIED, keeping
// FUTEX_WAITERS, and one waiter is woken). To make a panic count as a death
// for one mutex while the thread lives on, [`die_holding`] does exactly
// that for it, after removing it from the list the way glibc's unlock does
// (nptl/pthread_mutex_unlock.c: set `list_op_pending`, `DEQUEUE_MUTEX`,
// change the lock word, clear `list_op_pending`).
//
// glibc 2.36, 64-bit (`__PTHREAD_MUTEX_HAVE_PREV`, nptl/descr.h and
// pthreadP.h): the list is circular and doubly linked through
// `__data.__list.{__prev, __next}` of each mutex; every link points at the
// `__next` field of the next entry (the *entry* address), and the head is
// `struct pthread`'s `robust_head`, whose first word `list` plays `__next`
// and the word before it (`robust_prev`) plays `__prev`. A pointer to an
// entry minus QUEUE_PTR_ADJUST = offsetof(__pthread_list_t, __next) = 8 is
// its `__pthread_list_t`. Bit 0 of a link marks a PI mutex. The layout is
// the same for every 64-bit glibc (x86_64's `__spins, __elision` shorts and
// the generic `__spins` int both end at 24: aarch64, riscv64, ...), so the
// code is built for 64-bit Linux glibc, and each use checks at run time
// that the kernel's `futex_offset` is -LIST_NEXT (else [`die_holding`]
// refuses and the caller falls back to a plain unlock). Tested on x86_64
// glibc only. Not for x32 (`x86_64-gnux32`, 32-bit pointers) nor 32-bit
// targets, nor musl.

/// Where glibc's `__data.__list.__prev` and `__next` lie in the mutex.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod list_abi {
    /// `__data.__list.__prev` (64-bit glibc: `__lock, __count, __owner,
    /// __nusers, __kind` (5 ints), then `__spins, __elision` (2 shorts,
    /// x86_64) or `__spins` (an int, the generic layout), then the list).
    pub const LIST_PREV: usize = 24;
    /// `__data.__list.__next`: the entry address the kernel walks.
    pub const LIST_NEXT: usize = 32;
    /// offsetof(__pthread_list_t, __next).
    pub const QUEUE_PTR_ADJUST: usize = 8;
    // 40 bytes on x86_64, 48 with the generic layout (aarch64, riscv64).
    const _: () = assert!(size_of::<libc::pthread_mutex_t>() >= 40);
    const _: () = assert!(size_of::<usize>() == 8);
    const _: () = assert!(LIST_NEXT - LIST_PREV == QUEUE_PTR_ADJUST);
    const _: () = assert!(LIST_NEXT + 8 <= size_of::<libc::pthread_mutex_t>());
}

/// The kernel's `struct robust_list_head` (linux/futex.h).
#[repr(C)]
struct RobustListHead {
    list: usize,
    futex_offset: libc::c_long,
    list_op_pending: usize,
}

const _: () = assert!(std::mem::offset_of!(RobustListHead, futex_offset) == size_of::<usize>());
const _: () =
    assert!(std::mem::offset_of!(RobustListHead, list_op_pending) == 2 * size_of::<usize>());

/// The calling thread's robust-list head, as registered with the kernel
/// (`get_robust_list(0)`: raw syscall, nix has none), if its
/// `futex_offset` is the one our layout assumes.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn robust_head() -> Option<*mut RobustListHead> {
    let mut head: *mut RobustListHead = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list only writes the two out-parameters, which are
    // valid, writable locals.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_int,
            &mut head as *mut *mut RobustListHead,
            &mut len as *mut libc::size_t,
        )
    };
    if r != 0 || head.is_null() || len != size_of::<RobustListHead>() {
        return None;
    }
    // SAFETY: the kernel returned the calling thread's registered head: a
    // live `struct robust_list_head` inside glibc's `struct pthread`.
    let offset = unsafe { (*head).futex_offset };
    // The kernel finds the lock word at entry + futex_offset.
    (offset == -(list_abi::LIST_NEXT as libc::c_long)).then_some(head)
}

/// Reads the pointer-sized word at `addr`.
///
/// # Safety
/// `addr` is a live, aligned, pointer-sized link of this thread's robust
/// list (a list head word or a held mutex's `__list` field).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
unsafe fn link(addr: usize) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::read_volatile(addr as *const usize) }
}

/// Writes the pointer-sized word at `addr`.
///
/// # Safety
/// As for [`link`], and only this thread writes it.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
unsafe fn set_link(addr: usize, value: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::write_volatile(addr as *mut usize, value) }
}

/// The most entries a walk of our own list visits (the kernel walks 2048).
const WALK_LIMIT: usize = 1 << 16;

/// Unlinks `entry` from the list at `head`, finding its neighbours by
/// walking the list both ways (so it works even when the entry's own links
/// were overwritten under us). Returns false if it is not on the list.
///
/// # Safety
/// `head` is the calling thread's robust-list head; every entry on the list
/// lies in live memory.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
unsafe fn unlink(head: *mut RobustListHead, entry: usize, clear_links: bool) -> bool {
    use list_abi::QUEUE_PTR_ADJUST as ADJ;
    let h = head as usize;
    // The predecessor: the entry (or the head) whose `__next` is `entry`.
    let mut pred = None;
    let mut cur = h;
    for _ in 0..WALK_LIMIT {
        // SAFETY: `cur` is the head or an entry of this thread's list.
        let next = unsafe { link(cur) } & !1;
        if next == entry {
            pred = Some(cur);
            break;
        }
        if next == h || next == 0 {
            break;
        }
        cur = next;
    }
    // The successor: the entry (or the head) whose `__prev` is `entry`.
    let mut succ = None;
    let mut cur = h;
    for _ in 0..WALK_LIMIT {
        // SAFETY: as above; `cur - ADJ` is its `__prev` (for the head:
        // glibc's `robust_prev`, the word right before `robust_head`).
        let prev = unsafe { link(cur - ADJ) } & !1;
        if prev == entry {
            succ = Some(cur);
            break;
        }
        if prev == h || prev == 0 {
            break;
        }
        cur = prev;
    }
    let (Some(pred), Some(succ)) = (pred, succ) else {
        return false;
    };
    // SAFETY: `pred`, `succ` and (when `clear_links`) `entry` are links of
    // this thread's list, which only this thread changes; the order is
    // DEQUEUE_MUTEX's.
    unsafe {
        // Keep the PI bit of the link to `succ` (bit 0 of a link describes
        // the entry it points to) if the entry still has it. Without
        // `clear_links` (forget_held: the file changed under us) the entry
        // is not read at all — its page may no longer be backed by the
        // file (SIGBUS) and its links may be another holder's — so that
        // bit is lost: only a robust PI mutex that other code on this
        // thread took right before this one (ours are never PI) is then
        // treated as non-PI by the kernel's walk at our death, which marks
        // it OWNER_DIED with a FUTEX_WAKE rather than the PI hand-off, so
        // its waiters (in the kernel's PI queue) may stay asleep. A known
        // gap, kept: reading the entry could kill the process.
        let own_next = if clear_links { link(entry) } else { 0 };
        let pi_bit = if own_next & !1 == succ {
            own_next & 1
        } else {
            0
        };
        set_link(succ - ADJ, pred);
        set_link(pred, succ | pi_bit);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if clear_links {
            set_link(entry - ADJ, 0);
            set_link(entry, 0);
        }
    }
    true
}

/// What [`die_holding`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Death {
    /// The mutex is FUTEX_OWNER_DIED and off the thread's robust list.
    Done,
    /// Not possible here (an ABI this code does not know, or the mutex was
    /// not on the list): nothing was changed.
    Refused,
}

/// Does for one mutex what the kernel does for every robust mutex of a
/// thread that dies: off the robust list, lock word from our TID to
/// FUTEX_OWNER_DIED (keeping FUTEX_WAITERS), one waiter woken. The owner
/// record, `__owner` and `__count` are left alone, as a death leaves them.
///
/// # Safety
/// `m` is an initialised robust mutex in a live shared mapping, held by the
/// calling thread (its lock word names `tid`, the caller's TID).
pub(crate) unsafe fn die_holding(m: *mut libc::pthread_mutex_t, tid: u32) -> Death {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        let Some(head) = robust_head() else {
            return Death::Refused;
        };
        let entry = m as usize + list_abi::LIST_NEXT;
        // SAFETY: `head` is ours (robust_head); only this thread uses it.
        // As glibc's unlock: announce the pending operation first, so that
        // a death in the middle still reaches this mutex.
        unsafe { (*head).list_op_pending = entry };
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: the mutex is ours and on our list, in live memory
        // (caller's contract); so is every other entry of the list.
        if !unsafe { unlink(head, entry, true) } {
            // SAFETY: as above.
            unsafe { (*head).list_op_pending = 0 };
            return Death::Refused;
        }
        // SAFETY: the mapping is live (caller's contract).
        let word = unsafe { lock_word(m) };
        let mut w = word.load(Ordering::Relaxed);
        while w & FUTEX_TID_MASK == tid {
            let dead = FUTEX_OWNER_DIED | (w & FUTEX_WAITERS);
            match word.compare_exchange_weak(w, dead, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & FUTEX_WAITERS != 0 {
            super::futex::futex_wake(word, 1, true);
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { (*head).list_op_pending = 0 };
        Death::Done
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        let _ = (m, tid);
        Death::Refused
    }
}

/// Takes `m` off the calling thread's robust list without touching the
/// mutex (its lock word no longer names us: the file was changed under the
/// holder), so that the kernel's walk at our death never reads it. Returns
/// whether it was on the list: `Some(false)` for a guard inherited through
/// fork (the entry is on the parent's list, not ours) or a nested
/// re-entrant guard whose sibling already took it off; `None` where the
/// list cannot be read (an ABI this code does not know).
///
/// # Safety
/// Every entry of the calling thread's robust list lies in live memory.
pub(crate) unsafe fn forget_held(m: *mut libc::pthread_mutex_t) -> Option<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        let head = robust_head()?;
        // SAFETY: forwarded from the caller; the entry's own links are not
        // touched (another holder may own them now).
        Some(unsafe { unlink(head, m as usize + list_abi::LIST_NEXT, false) })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        let _ = m;
        None
    }
}
