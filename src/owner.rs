//! [`OwnerInfo`]: who holds (or held) a lock, as its hot and cold owner
//! records say.

use crate::file::layout::{self, HotRecord, OwnerRecord};
use crate::identity;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A holder of the lock, as its owner record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnerInfo {
    /// Process id (in the holder's PID namespace).
    pub pid: u32,
    /// Thread id (in the holder's PID namespace).
    pub tid: u32,
    /// The label the holder set with [`Guard::set_label`](crate::Guard::set_label); empty when none.
    pub label: String,
    /// Inode of the holder's PID namespace.
    pub pid_namespace: u64,
    /// The holder's process start time (field 22 of `/proc/<pid>/stat`, in
    /// clock ticks since boot), which tells it apart from a later process
    /// that reuses the pid.
    pub start_time: u64,
    /// When the lock was taken (coarse wall clock: up to a 50 ms tick, plus
    /// delays, early; never late). The delays can be more than a tick: a
    /// clock thread starved of CPU, or a machine suspend (the cached time
    /// is refreshed only after the clock thread runs again), makes it early
    /// by that much too.
    pub acquired_at: SystemTime,
}

/// A lock's two owner records, read together: the hot one in the mutex's
/// cache line (who, since when) and the cold one (that process's
/// constants, the label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Zeroable)]
pub(crate) struct Records {
    pub hot: HotRecord,
    pub cold: OwnerRecord,
}

impl Records {
    /// A racy snapshot of the records of the mutex at `mutex`.
    ///
    /// # Safety
    /// `mutex` points to a mutex in a live mapping with its hot record
    /// [`layout::HOT_AFTER_MUTEX`] and its cold one
    /// [`layout::RECORD_AFTER_MUTEX`] bytes after it (a mutex or semaphore
    /// file's, not a bare file's); a read-only mapping is enough.
    pub(crate) unsafe fn read(mutex: *mut libc::pthread_mutex_t) -> Records {
        let at = |delta: usize| mutex.cast::<u8>().wrapping_add(delta).cast_const();
        // SAFETY: forwarded from the caller; the reads race with the
        // holder's writes by design and only make a diagnostic snapshot
        // (any bit pattern is a valid record).
        unsafe {
            Records {
                hot: std::ptr::read_volatile(at(layout::HOT_AFTER_MUTEX).cast()),
                cold: std::ptr::read_volatile(at(layout::RECORD_AFTER_MUTEX).cast()),
            }
        }
    }

    /// The holder the records name (`None`: nobody, hot `pid` 0). The pid,
    /// tid and acquisition time come from the hot record; the PID
    /// namespace, start time and label from the cold one when it describes
    /// the same pid (else unknown: 0, empty); the label only when the hot
    /// record says this acquisition set one.
    pub(crate) fn owner(&self) -> Option<OwnerInfo> {
        let (hot, cold) = (&self.hot, &self.cold);
        if hot.pid == 0 {
            return None;
        }
        let same = cold.pid == hot.pid;
        let labelled = same && hot.since & layout::SINCE_LABELLED != 0;
        let n = if labelled {
            (cold.label_len as usize).min(layout::LABEL_MAX)
        } else {
            0
        };
        Some(OwnerInfo {
            pid: hot.pid,
            tid: hot.tid,
            label: String::from_utf8_lossy(&cold.label[..n]).into_owned(),
            pid_namespace: if same { cold.pidns_ino } else { 0 },
            start_time: if same { cold.start_time } else { 0 },
            acquired_at: UNIX_EPOCH + Duration::from_nanos(hot.since & !layout::SINCE_LABELLED),
        })
    }
}

impl OwnerInfo {
    /// How long ago the lock was taken (zero if the clock went back).
    pub fn held_for(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.acquired_at)
            .unwrap_or_default()
    }

    /// Whether the holder's process still runs (same pid and start time).
    pub fn is_alive(&self) -> bool {
        identity::process_alive(self.pid, self.start_time)
    }
}
