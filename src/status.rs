//! [`Status`]: who holds the lock and what happened, read without locking.

use crate::file::layout;
use crate::identity;
pub use crate::owner::OwnerInfo;
use crate::owner::Records;
use crate::registry::Mapping;
use crate::sys;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state of the lock, from a racy snapshot of the lock word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockState {
    /// Nobody holds it.
    Unlocked,
    /// A live thread holds it.
    Locked,
    /// The holder died; the next locker gets [`Acquired::OwnerDied`](crate::Acquired::OwnerDied).
    OwnerDead,
    /// An owner died and the state was never marked consistent: every lock
    /// fails until a reset.
    NotRecoverable,
    /// The lock word names a thread that no longer exists, yet the kernel
    /// never marked the owner dead (robust-list limit, unmap while locked,
    /// OOM reaper, a file from another boot). Nobody will ever release it
    /// by itself: reset it.
    ///
    /// Only the kernel's word counts (`kill(tid, 0)` gives ESRCH, or our
    /// own `/proc` shows a zombie): a holder hidden by `/proc` options or
    /// seen through another namespace's `/proc` is never called stuck, and
    /// a dead holder's TID reused by a live thread reads as
    /// [`Locked`](Self::Locked) until that thread ends.
    Stuck,
    /// Only from a handle's `status()`: the file was cut short (or cut and
    /// grown again, zeros where the lock was) after this handle mapped it.
    /// The lock, owner record and counters are gone, and touching the
    /// missing part of the mapping would kill the process (SIGBUS), so
    /// nothing else was read. Someone with write access truncated it:
    /// stop using the handle, then remove or `reset --force` the file.
    Truncated,
}

impl LockState {
    /// A short lowercase name: `unlocked`, `locked`, `owner-dead`,
    /// `not-recoverable`, `stuck`, `truncated`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LockState::Unlocked => "unlocked",
            LockState::Locked => "locked",
            LockState::OwnerDead => "owner-dead",
            LockState::NotRecoverable => "not-recoverable",
            LockState::Stuck => "stuck",
            LockState::Truncated => "truncated",
        }
    }
}

impl std::fmt::Display for LockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifetime counters of a mutex file, updated under the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Successful acquisitions, clean or after an owner death.
    pub acquisitions: u64,
    /// Acquisitions that found the lock held and had to wait.
    pub contended: u64,
    /// Acquisitions that reported a dead owner.
    pub owner_deaths: u64,
    /// Recoveries completed with `mark_consistent`.
    pub recoveries: u64,
    /// Resets of this mutex (carried over to the replacement file).
    pub resets: u64,
}

impl From<layout::Counters> for Counters {
    fn from(c: layout::Counters) -> Self {
        Counters {
            acquisitions: c.acquisitions,
            contended: c.contended,
            owner_deaths: c.owner_deaths,
            recoveries: c.recoveries,
            resets: c.resets,
        }
    }
}

/// A snapshot of a mutex, taken without locking it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The lock's state.
    pub state: LockState,
    /// The holder (Locked), the dead holder (OwnerDead, Stuck), or `None`.
    pub owner: Option<OwnerInfo>,
    /// The counters.
    pub counters: Counters,
    /// 1 for a new file, +1 for every reset.
    pub generation: u64,
    /// The raw futex lock word (owner TID and flag bits), for diagnostics.
    pub lock_word: u32,
}

impl Status {
    /// What a handle reports once its file was truncated under it.
    pub(crate) fn truncated() -> Status {
        Status {
            state: LockState::Truncated,
            owner: None,
            counters: Counters::default(),
            generation: 0,
            lock_word: 0,
        }
    }
}

/// Reads the state of `map` without locking: [`LockState::Truncated`] if
/// the file no longer covers the mapping ([`Mapping::intact`]).
///
/// The file is checked ([`Mapping::intact`]: its last mapped byte can be
/// copied by the kernel, the header and mutex are still there) right
/// before the reads, not atomically with them: a truncation in between
/// still raises SIGBUS. That window is a few microseconds; it cannot be
/// closed without a signal handler.
pub(crate) fn snapshot(map: &Mapping) -> Status {
    if !map.intact() {
        return Status::truncated();
    }
    // SAFETY: the mapping is live, of a READY mutex or re-entrant file
    // (what a Mapping behind a mutex handle is), DATA_MIN_OFFSET or more
    // bytes long, and (just checked) still backed by the file.
    unsafe { snapshot_at(map.header().cast()) }
}

/// Reads the state of the mutex file mapped at `base` without locking.
/// Only reads, and only Relaxed atomic loads of at most 4 bytes and
/// volatile reads: a read-only mapping (PROT_READ) is enough.
///
/// # Safety
/// `base` is the start of a live mapping, at least `DATA_MIN_OFFSET` bytes
/// long and backed by the file over that length, of a READY (or RETIRED)
/// mutex or re-entrant file.
pub(crate) unsafe fn snapshot_at(base: *mut u8) -> Status {
    let at = |offset: usize| base.wrapping_add(offset);
    let mutex = at(layout::MUTEX_OFFSET).cast::<libc::pthread_mutex_t>();
    // SAFETY: forwarded from the caller: the mutex and its records lie in
    // the live mapping, at their offsets.
    let read = || unsafe { Records::read(mutex) };
    // SAFETY: as above.
    let (state, owner, word) = unsafe { lock_state(mutex, read) };
    let header = at(0).cast::<layout::Header>();
    // SAFETY: all reads are of the live mapping (the caller's contract);
    // they race with the holder's writes by design and are only used as a
    // diagnostic snapshot.
    let generation = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*header).generation)) };
    // SAFETY: as above.
    let cold = || unsafe { std::ptr::read_volatile(at(layout::COUNTERS_OFFSET).cast()) };
    // The cold counters plus the hot counts.
    let counters = with_cold_settled(cold, |c| c.plus_hot(&read().hot));
    Status {
        state,
        owner,
        counters: counters.into(),
        generation,
        lock_word: word,
    }
}

/// `sum(cold)` of a cold counters snapshot (`cold` reads one) and hot
/// counts, where the cold acquisitions and contended counters read the
/// same after the sum as before it: a hot count that wrapped meanwhile
/// (its 2^32 goes to the cold counter first) is retried, at most 8 times
/// (then the last sum: a snapshot).
pub(crate) fn with_cold_settled(
    cold: impl Fn() -> layout::Counters,
    sum: impl Fn(layout::Counters) -> layout::Counters,
) -> layout::Counters {
    let mut total = layout::Counters::default();
    for _ in 0..8 {
        let before = cold();
        total = sum(before);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let after = cold();
        if (before.acquisitions, before.contended) == (after.acquisitions, after.contended) {
            break;
        }
    }
    total
}

/// The state of one robust mutex and its owner records, from racy snapshots
/// of the lock word, glibc's `__owner` and the records (`read` takes one).
/// Returns the raw word too.
///
/// Stuck is decided exactly: a thread that is still exiting is never called
/// stuck. The word is read before the liveness check, so its holder may have
/// died in between; but the kernel walks a dying thread's robust list before
/// the thread becomes a zombie or its TID disappears, so once the holder is
/// seen gone, a word that still names it (re-read after the check) will
/// never change by itself. If it did change, the snapshot is taken again.
///
/// A holder `/proc` cannot show is never gone ([`identity::holder_gone`]),
/// and a Stuck verdict is confirmed by a second look [`STUCK_CONFIRM`]
/// later, with the same lock word and owner record (a lock word caught
/// between a new holder's lock and its record, or a task caught exiting,
/// does not last). So a stuck lock costs its `status` (and `reset`) that
/// pause.
///
/// # Safety
/// `mutex` points into a live mapping.
pub(crate) unsafe fn lock_state(
    mutex: *mut libc::pthread_mutex_t,
    read: impl Fn() -> Records,
) -> (LockState, Option<OwnerInfo>, u32) {
    let mut looks = 0;
    let mut first = None;
    loop {
        // SAFETY: forwarded from the caller; the reads race with the
        // holder's writes by design and are only used as a diagnostic
        // snapshot.
        let (word, not_recoverable) = unsafe {
            (
                sys::lock_word_snapshot(mutex),
                sys::mutex_not_recoverable(mutex),
            )
        };
        let records = read();
        let (state, owner) = decide(word, not_recoverable, &records);
        looks += 1;
        if state != LockState::Stuck || looks >= 16 {
            return (state, owner, word);
        }
        // SAFETY: as above.
        let again = unsafe { sys::lock_word_snapshot(mutex) };
        if same_holder(again, word) {
            let seen = Some(crate::raw::Suspect::new(word, Some(&records)));
            if seen == first {
                return (state, owner, word);
            }
            first = seen;
            std::thread::sleep(STUCK_CONFIRM);
        }
    }
}

/// How long [`lock_state`] waits before it looks again at a lock that
/// looks stuck.
const STUCK_CONFIRM: Duration = Duration::from_millis(50);

/// Whether two readings of a lock word name the same holder in the same
/// state (FUTEX_WAITERS aside: waiters set it at any time).
pub(crate) fn same_holder(a: u32, b: u32) -> bool {
    a & !sys::FUTEX_WAITERS == b & !sys::FUTEX_WAITERS
}

/// The state of a lock from its word and glibc's not-recoverable mark
/// alone, with no owner record to read (a version-1 file being converted):
/// [`decide`]'s verdict, in its order, without the owner. A thread still
/// named in the word that `/proc` shows gone is `Stuck` (confirm it with a
/// second reading of the word, as [`lock_state`] does).
pub(crate) fn word_state(word: u32, not_recoverable: bool) -> LockState {
    let tid = word & sys::FUTEX_TID_MASK;
    if not_recoverable && tid == 0 {
        LockState::NotRecoverable
    } else if word & sys::FUTEX_OWNER_DIED != 0 {
        LockState::OwnerDead
    } else if tid == 0 {
        LockState::Unlocked
    } else if identity::holder_gone(tid) {
        LockState::Stuck
    } else {
        LockState::Locked
    }
}

/// [`lock_state`]'s decision for one snapshot.
fn decide(word: u32, not_recoverable: bool, records: &Records) -> (LockState, Option<OwnerInfo>) {
    let tid = word & sys::FUTEX_TID_MASK;
    if not_recoverable && tid == 0 {
        (LockState::NotRecoverable, None)
    } else if word & sys::FUTEX_OWNER_DIED != 0 {
        (LockState::OwnerDead, records.owner())
    } else if tid == 0 {
        (LockState::Unlocked, None)
    } else if let Some(owner) = records.owner().filter(|o| o.tid == tid) {
        let gone = identity::holder_gone(tid);
        let state = if gone {
            LockState::Stuck
        } else {
            LockState::Locked
        };
        (state, Some(owner))
    } else if identity::holder_gone(tid) {
        (LockState::Stuck, None)
    } else {
        // The holder is between taking the lock and writing its record.
        (LockState::Locked, None)
    }
}

/// Facts about a mutex file, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileInfo {
    /// Format version.
    pub version: u32,
    /// The kind of lock.
    pub kind: crate::LockKind,
    /// Architecture, C library and `pthread_mutex_t` size of the writer.
    pub abi: String,
    /// 1 for a new file, +1 for every reset.
    pub generation: u64,
    /// Size of the value in bytes.
    pub value_size: u64,
    /// Whether the file was (re)initialised during the current boot.
    pub boot_id_matches: bool,
    /// Inode of the creator's PID namespace.
    pub pid_namespace: u64,
    /// When the file was created (wall clock).
    pub created_at: SystemTime,
}

/// Reads the header facts of `map`.
pub(crate) fn file_info(map: &Mapping) -> FileInfo {
    let h = if map.intact() {
        // The fields are immutable after READY except the boot id, a racy
        // read of which is only a diagnostic.
        // SAFETY: the header is the first 256 bytes of the live mapping,
        // still backed by the file (just checked).
        unsafe { std::ptr::read_volatile(map.header()) }
    } else {
        // Truncated under us: what it was when attached.
        *map.attached_header()
    };
    file_info_of(&h)
}

/// The facts a header gives.
pub(crate) fn file_info_of(h: &layout::Header) -> FileInfo {
    FileInfo {
        version: h.version,
        kind: layout::Kind::from_code(h.kind).unwrap_or(layout::Kind::Mutex),
        abi: h.abi().to_string(),
        generation: h.generation,
        value_size: h.data_size,
        boot_id_matches: h.boot_id == identity::boot_id(),
        pid_namespace: h.pidns_ino,
        created_at: UNIX_EPOCH + Duration::from_nanos(h.created_unix_ns),
    }
}

#[cfg(test)]
mod word_state_tests {
    use super::{LockState, word_state};
    use crate::sys;

    #[test]
    fn word_state_judges_as_decide_does_in_the_same_order() {
        let me = sys::gettid();
        let died = sys::FUTEX_OWNER_DIED;
        // Not recoverable wins over a leftover owner-died bit, as in `decide`.
        assert_eq!(word_state(died, true), LockState::NotRecoverable);
        assert_eq!(word_state(0, true), LockState::NotRecoverable);
        assert_eq!(word_state(died, false), LockState::OwnerDead);
        assert_eq!(word_state(0, false), LockState::Unlocked);
        assert_eq!(word_state(me, false), LockState::Locked);
        assert_eq!(
            word_state(me | sys::FUTEX_WAITERS, false),
            LockState::Locked
        );
    }
}
