//! The holder's bookkeeping, once for every kind (format version 2,
//! docs/design.md "File format"): right after an acquisition, the hot
//! record in the mutex's own cache line (pid and tid, `since`, the counts),
//! the cold record only when another process held it last, and the cold
//! counters only when a hot count wraps; the label; the process key the
//! cold record is compared by.

use super::{Books, RawMutex};
use crate::file::layout::{self, Counters, HOT_COUNTS};
use crate::identity;
use crate::sys;
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

thread_local! {
    /// The calling thread's process's [`layout::process_key`], which its
    /// acquisitions compare with a cold record's: set (with the identity
    /// cache) by a thread's first lock call, and its first after a fork
    /// ([`refresh_process_key`], from `check_room`).
    static PROCESS_KEY: Cell<u64> = const { Cell::new(0) };
}

/// Sets [`PROCESS_KEY`] from the identity cache: a thread's first lock
/// call, or its first after a fork (a fork child's pid differs).
#[cold]
pub(crate) fn refresh_process_key() {
    let me = identity::me();
    PROCESS_KEY.set(layout::process_key(me.pid, me.start_time, me.pidns_ino));
}

impl RawMutex<'_> {
    /// Writes the hot record (and the cold one, if it describes another
    /// process) and bumps the counts for the calling thread, and counts the
    /// lock against its bound. A re-entrant relock (glibc's `__count` above
    /// 1) only counts an acquisition: the outer acquisition's record stays.
    ///
    /// Per acquisition only the mutex's own cache line is written: the cold
    /// record is only read (unless another process wrote it last), and the
    /// cold counters only written when a hot count wraps, on an owner death
    /// (counted by `took_dead`, first) or where the hot record holds no
    /// counts.
    ///
    /// # Safety
    /// As [`Self::took`]: the calling thread has just acquired the lock,
    /// after passing [`check_room`](super::check_room).
    #[inline(always)]
    pub(super) unsafe fn record_acquired(&self, contended: bool) {
        let now = crate::clock::coarse_now_ns;
        if let Books::None = self.books {
            identity::took_one();
            return;
        }
        // We hold the lock, so we are the only writer of the hot record.
        let (who, since_at, counts) = self.hot_atomics();
        // SAFETY: we hold the lock: glibc's `__count` is ours to read.
        if unsafe { sys::mutex_count(self.as_ptr()) } <= 1 {
            // Not a re-entrant relock (which keeps the outer acquisition's
            // record): a new holder.
            // The time before anything else: a death after the pid/tid
            // store below never leaves us with an old `since` (and an old
            // label bit). (A direct clock read here only notes a chore for
            // our next lock call: nothing slow while we hold the lock.)
            let since = now() & !layout::SINCE_LABELLED;
            // Who holds it now: from here on a death of ours names
            // us (the cold record may say "unknown" until it is rewritten).
            // The thread's facts: every lock call passed `check_room` first.
            let me = identity::locker_me();
            who.store(bytemuck::cast([me.pid, me.tid]), Ordering::Relaxed);
            since_at.store(since, Ordering::Relaxed); // the very next store
            let key = PROCESS_KEY.with(Cell::get);
            // SAFETY: the cold record lies in the live mapping (`new`); only
            // a holder writes it, and we hold the lock.
            if unsafe { self.cold().as_ref() }.key != key {
                // Another process took it last (or this pid was reused).
                self.describe_us(key);
            }
            identity::took_one();
        }
        // The counts last. A wrap to 0 first adds its 2^32 to the cold
        // counter (`carry`), then stores the 0: a reader that sees the
        // cold counter unchanged around its hot read has a sum that is not
        // short by 2^32 (readers re-read the cold counters and retry).
        match counts.get(..2) {
            Some([acq, cont]) if HOT_COUNTS >= 2 => {
                self.bump(acq, true);
                if contended {
                    self.bump(cont, false);
                }
            }
            _ => self.count_cold(contended),
        }
    }

    /// Adds one to a hot count (the holder's relaxed load and store; the
    /// acquisitions' when `acquisitions`, else the contended one's). On a
    /// wrap to 0, the cold counter gets its 2^32 first.
    #[inline(always)]
    pub(super) fn bump(&self, count: &AtomicU32, acquisitions: bool) {
        let n = count.load(Ordering::Relaxed).wrapping_add(1);
        if n == 0 {
            self.carry(acquisitions);
        }
        // After the call (the compiler keeps an atomic store after it; a
        // wrap is rare, and x86_64 keeps stores in order).
        count.store(n, Ordering::Relaxed);
    }

    /// A hot count's wrap: 2^32 to its cold counter (before the caller
    /// stores the hot 0; a release fence orders it on every target).
    #[cold]
    #[inline(never)]
    pub(super) fn carry(&self, acquisitions: bool) {
        let owed = 1 << 32;
        self.add_cold(&Counters {
            acquisitions: if acquisitions { owed } else { 0 },
            contended: if acquisitions { 0 } else { owed },
            ..Counters::default()
        });
        std::sync::atomic::fence(Ordering::Release);
    }

    /// Rewrites the cold record for the calling thread's process (whose
    /// [`layout::process_key`] is `key`). Reads the identity cache itself,
    /// so the fast path loads only the pid and tid.
    #[cold]
    #[inline(never)]
    pub(super) fn describe_us(&self, key: u64) {
        let me = identity::locker_me();
        // SAFETY: only a holder writes the cold record, and the caller
        // (`record_acquired`) holds the lock; it lies in the live mapping.
        unsafe { self.cold().as_mut() }.describe(me.pid, me.pidns_ino, me.start_time, key);
    }

    /// The cold counters' part of an acquisition where the hot record
    /// holds no counts: the whole count.
    #[cold]
    #[inline(never)]
    pub(super) fn count_cold(&self, contended: bool) {
        self.add_cold(&Counters {
            acquisitions: 1,
            contended: u64::from(contended),
            ..Counters::default()
        });
    }

    /// Adds `c` to the file's cold counters: plainly for the header's
    /// mutex (only its holder writes them), atomically for a permit.
    pub(super) fn add_cold(&self, c: &Counters) {
        match self.books {
            Books::None => {}
            Books::Header => {
                let mut counters = self.header_counters();
                // SAFETY: we hold the lock: the only writer of the counters,
                // which lie in the live mapping (`new`).
                let to = unsafe { counters.as_mut() };
                to.acquisitions = to.acquisitions.wrapping_add(c.acquisitions);
                to.contended = to.contended.wrapping_add(c.contended);
                to.owner_deaths += c.owner_deaths;
                to.recoveries += c.recoveries;
            }
            Books::Permit { counters } => self.add_shared(counters, c),
        }
    }

    pub(super) fn add_shared(&self, counters: NonNull<Counters>, c: &Counters) {
        for (field, add) in c.fields() {
            if add > 0 {
                // SAFETY: `field` is the offset of a u64 field of `Counters`,
                // 8-byte aligned in the live mapping; shared counters are
                // only accessed atomically (`new`).
                let a = unsafe {
                    AtomicU64::from_ptr(counters.as_ptr().cast::<u8>().add(field).cast())
                };
                a.fetch_add(add, Ordering::Relaxed);
            }
        }
    }

    /// Sets the label of the calling thread's acquisition: the cold
    /// record's label, and the hot record's [`layout::SINCE_LABELLED`] bit.
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) for more than
    /// [`layout::LABEL_MAX`] bytes; the record keeps its previous label.
    ///
    /// # Safety
    /// The lock is held for the caller by this process (by the calling
    /// thread, or by an async guard's holder thread, which writes the
    /// records only when it takes and releases the lock), and the kind has
    /// records.
    pub(crate) unsafe fn set_label(&self, label: &str) -> Result<(), crate::LabelTooLong> {
        debug_assert!(!matches!(self.books, Books::None));
        // SAFETY: we hold the lock (caller's contract): the only writer of
        // both records, which lie in the live mapping (`new`). The cold
        // record describes our process: our acquisition saw to it.
        unsafe {
            self.cold().as_mut().set_label(label)?;
        }
        let since = self.hot_atomics().1;
        since.store(
            since.load(Ordering::Relaxed) | layout::SINCE_LABELLED,
            Ordering::Relaxed,
        );
        Ok(())
    }
}
