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

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
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

/// The first call on a thread, or the first after a fork.
#[cold]
fn refresh(generation: u32) -> Me {
    let m = compute(generation);
    ME.set(m);
    m
}

#[cold]
fn compute(generation: u32) -> Me {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| sys::at_fork_child(after_fork_in_child));
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
