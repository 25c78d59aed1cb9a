//! [`OwnerInfo`]: who holds (or held) a lock, as its owner record says.

use crate::file::layout::{self, OwnerRecord};
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
    /// When the lock was taken (coarse wall clock: up to a 50 ms tick, plus delays, early; never late).
    pub acquired_at: SystemTime,
}

impl OwnerInfo {
    pub(crate) fn from_record(r: &OwnerRecord) -> OwnerInfo {
        let n = (r.label_len as usize).min(layout::LABEL_MAX);
        OwnerInfo {
            pid: r.pid,
            tid: r.tid,
            label: String::from_utf8_lossy(&r.label[..n]).into_owned(),
            pid_namespace: r.pidns_ino,
            start_time: r.start_time,
            acquired_at: UNIX_EPOCH + Duration::from_nanos(r.acquired_unix_ns),
        }
    }

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
