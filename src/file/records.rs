//! The owner records and the counters of format version 2 (their place in
//! the file is in [`super::layout`]): the hot record in the mutex's own
//! cache line, written per acquisition; the cold record of the holder
//! process's constants and label, rewritten only when another process takes
//! the lock; and the counters.

use super::layout::{HOT_COUNTS, LABEL_MAX};
use bytemuck::{Pod, Zeroable};
use std::mem::offset_of;

/// The hot record: who holds the lock right now, in the mutex's own cache
/// line ([`HOT_AFTER_MUTEX`](super::layout::HOT_AFTER_MUTEX) bytes after it). Written by the holder only:
/// per acquisition `since` (read before the others are written), `pid`,
/// `tid` and the counts; at release `tid`, `pid` and `since` become 0. A
/// dead holder's record stays.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, PartialEq, Eq)]
pub struct HotRecord {
    /// The holder's process id (0: nobody).
    pub pid: u32,
    /// The holder's thread id (0: nobody).
    pub tid: u32,
    /// Wall clock when the lock was taken, ns since the epoch (coarse); bit
    /// 0 ([`SINCE_LABELLED`](super::layout::SINCE_LABELLED)) says the holder set a label.
    pub since: u64,
    /// Acquisitions and contended acquisitions mod 2^32 (each wrap adds
    /// 2^32 to the cold [`Counters`]); none where they do not fit.
    pub counts: [u32; HOT_COUNTS],
}

impl HotRecord {
    /// The acquisitions and contended counts it holds (0 without counts).
    pub fn count_pair(&self) -> (u64, u64) {
        let count = |i: usize| self.counts.get(i).map_or(0, |&n| u64::from(n));
        (count(HOT_ACQUISITIONS), count(HOT_CONTENDED))
    }
}

/// Index of the acquisitions in [`HotRecord::counts`].
pub const HOT_ACQUISITIONS: usize = 0;
/// Index of the contended acquisitions in [`HotRecord::counts`].
pub const HOT_CONTENDED: usize = 1;

/// The cold owner record: the process constants of the process that last
/// took the lock, and the label. The holder reads its `key` on acquisition
/// and rewrites the record only when the key is not its own process's
/// ([`process_key`]: another pid, start time or PID namespace); a label is
/// written here by `set_label`, and shown only while the hot record's
/// [`SINCE_LABELLED`](super::layout::SINCE_LABELLED) bit is set.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The process these constants describe (0: none yet).
    pub pid: u32,
    /// Bytes of `label` in use.
    pub label_len: u32,
    /// Inode of that process's PID namespace.
    pub pidns_ino: u64,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
    pub start_time: u64,
    /// [`process_key`] of these constants: what a holder compares.
    pub key: u64,
    /// Zero.
    pub reserved: u64,
    /// The label of the last acquisition that set one, UTF-8.
    pub label: [u8; LABEL_MAX],
}

/// The one-word name of a process that a cold record's `key` holds: its
/// pid and start time packed exactly (a Linux pid is below 2^22, the
/// kernel's `PID_MAX_LIMIT`; a start time in clock ticks below 2^42), XORed
/// with a bijective mix (splitmix64's finaliser) of its PID namespace's
/// inode. So two processes of one PID namespace never share a key, and two
/// of different namespaces only by a coincidence of 64 bits. Never 0 (the
/// key of a zeroed record, which no process has).
pub fn process_key(pid: u32, start_time: u64, pidns_ino: u64) -> u64 {
    let mut z = pidns_ino.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let key = ((start_time << 22) | u64::from(pid & 0x3f_ffff)) ^ z;
    key.max(1)
}

impl OwnerRecord {
    /// Rewrites the constants for the process `pid` (in PID namespace
    /// `pidns_ino`, started at `start_time`, whose [`process_key`] is
    /// `key`), with no label. (By value, not a `&Me`: the lock path then
    /// keeps its copy in registers.)
    ///
    /// The key goes to 0 first and gets its value last, with compiler
    /// fences between: a holder killed in the middle leaves a key no
    /// process has (every [`process_key`] is non-zero), so the next holder,
    /// even of the same process, rewrites the whole record. (Only the
    /// compiler could reorder these stores: the readers that matter are
    /// the later holders, after the lock's own ordering, or after our
    /// death; a racy reader may see a mix, as it may anyway.)
    #[cold]
    #[inline(never)]
    pub fn describe(&mut self, pid: u32, pidns_ino: u64, start_time: u64, key: u64) {
        use std::sync::atomic::{Ordering, compiler_fence};
        self.key = 0;
        compiler_fence(Ordering::SeqCst);
        self.pid = pid;
        self.pidns_ino = pidns_ino;
        self.start_time = start_time;
        self.label_len = 0;
        compiler_fence(Ordering::SeqCst);
        self.key = key;
    }

    /// Sets the label: at most [`LABEL_MAX`] bytes. A longer label is
    /// refused and the record keeps its previous one (never a silent cut).
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        let n = label.len();
        if n > LABEL_MAX {
            return Err(crate::LabelTooLong { len: n });
        }
        self.label[..n].copy_from_slice(label.as_bytes());
        self.label_len = n as u32;
        Ok(())
    }
}

/// The cold counters, updated only while holding the lock (no atomics
/// needed), except in a semaphore, whose several holders update them
/// atomically. The per-acquisition counts live in the hot records where
/// they fit ([`HOT_COUNTS`]): a reader adds them ([`Counters::plus_hot`]).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct Counters {
    /// Locks taken.
    pub acquisitions: u64,
    /// Locks that had to wait.
    pub contended: u64,
    /// Owner deaths reported.
    pub owner_deaths: u64,
    /// Recoveries completed (`mark_consistent`).
    pub recoveries: u64,
    /// Resets of the file.
    pub resets: u64,
    /// Zero.
    pub reserved: [u64; 3],
}

impl Counters {
    /// These counters plus a hot record's counts.
    pub fn plus_hot(mut self, hot: &HotRecord) -> Counters {
        let (a, c) = hot.count_pair();
        self.acquisitions = self.acquisitions.wrapping_add(a);
        self.contended = self.contended.wrapping_add(c);
        self
    }

    /// The offset and value of each per-acquisition counter, for adding one
    /// `Counters` to another atomically.
    pub fn fields(&self) -> [(usize, u64); 4] {
        [
            (offset_of!(Counters, acquisitions), self.acquisitions),
            (offset_of!(Counters, contended), self.contended),
            (offset_of!(Counters, owner_deaths), self.owner_deaths),
            (offset_of!(Counters, recoveries), self.recoveries),
        ]
    }
}
