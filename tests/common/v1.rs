//! Files of format version 1, as robust-mutex wrote them before format
//! version 2 moved the holder's per-acquisition fields into the mutex's own
//! cache line.
//!
//! Both versions share the geometry (header 0..256, mutex at 256, owner
//! record 320..448, counters 448..512, value at 512 or later; a semaphore's
//! 192-byte slots of mutex + record) and every header field up to
//! `created_unix_ns`. So a version-1 file is made the way version 1 made
//! it: today's code writes a fresh file (boot id, PID namespace, ABI tag,
//! initialised mutexes), then [`write_v1`] patches in what differs: the
//! version number, an empty spare area after each `pthread_mutex_t` (version
//! 1 never wrote there) and version 1's owner record:
//!
//! ```text
//! offset  size  version-1 OwnerRecord (128 bytes)
//!      0     4  pid          4  4  tid       8  8  pidns_ino
//!     16     8  start_time  24  8  acquired_unix_ns
//!     32     4  label_len   36  4  depth    40 88  label
//! ```

use robust_mutex::{ReentrantMutex, SharedMutex, SharedSemaphore};
use std::path::Path;

/// Offset of the header's `version`.
pub const VERSION_AT: usize = 8;
/// The main mutex, its owner record, the counters, the value.
pub const MUTEX_AT: usize = 256;
pub const RECORD_AT: usize = 320;
pub const COUNTERS_AT: usize = 448;
pub const VALUE_AT: usize = 512;
/// A semaphore's slot: mutex (64 bytes) then owner record (128).
pub const SLOT_SIZE: usize = 192;

/// The counters a version-1 file is given: acquisitions, contended,
/// owner deaths, recoveries, resets.
pub const COUNTERS: [u64; 5] = [41_000_000_007, 13, 3, 2, 0];
/// The value a version-1 mutex file holds.
pub const VALUE: u64 = 0x5EED_0001;
/// The label of the version-1 record, which names a holder ([`HOLDER`])
/// although the lock is free: nothing of it may reach a converted file.
pub const LABEL: &str = "v1-holder";
/// The pid and tid the version-1 record names.
pub const HOLDER: (u32, u32) = (0x7A7A_0001, 0x7A7A_0002);

/// Which kind of version-1 file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SharedMutex<u64>`.
    Mutex,
    /// `ReentrantMutex<u64>`.
    Reentrant,
    /// `SharedSemaphore` with this many permits.
    Semaphore(usize),
}

/// Writes a version-1 file of `kind` at `path` (which must not exist):
/// unlocked, holding [`VALUE`] (a mutex) and [`COUNTERS`], each lock with
/// a record naming [`HOLDER`], labelled [`LABEL`].
pub fn write_v1(path: &Path, kind: Kind) {
    match kind {
        Kind::Mutex => drop(SharedMutex::<u64>::open(path).unwrap()),
        Kind::Reentrant => drop(ReentrantMutex::<u64>::open(path).unwrap()),
        Kind::Semaphore(n) => drop(SharedSemaphore::open(path, n).unwrap()),
    }
    let mut b = std::fs::read(path).unwrap();
    b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&1u32.to_ne_bytes());
    let mutexes: Vec<usize> = match kind {
        Kind::Semaphore(n) => std::iter::once(MUTEX_AT)
            .chain((0..n).map(|i| VALUE_AT + i * SLOT_SIZE))
            .collect(),
        _ => vec![MUTEX_AT],
    };
    let spare = size_of::<libc::pthread_mutex_t>();
    for &m in &mutexes {
        b[m + spare..m + 64].fill(0);
        b[m + 64..m + 192].copy_from_slice(&record());
    }
    for (i, c) in COUNTERS.iter().enumerate() {
        let at = COUNTERS_AT + 8 * i;
        b[at..at + 8].copy_from_slice(&c.to_ne_bytes());
    }
    if !matches!(kind, Kind::Semaphore(_)) {
        b[VALUE_AT..VALUE_AT + 8].copy_from_slice(&VALUE.to_ne_bytes());
    }
    std::fs::write(path, &b).unwrap();
}

/// A version-1 owner record naming [`HOLDER`], labelled [`LABEL`].
fn record() -> [u8; 128] {
    let mut r = [0u8; 128];
    r[0..4].copy_from_slice(&HOLDER.0.to_ne_bytes());
    r[4..8].copy_from_slice(&HOLDER.1.to_ne_bytes());
    r[36..40].copy_from_slice(&1u32.to_ne_bytes()); // depth
    r[8..16].copy_from_slice(&4_026_531_836u64.to_ne_bytes()); // pidns_ino
    r[16..24].copy_from_slice(&777u64.to_ne_bytes()); // start_time
    r[24..32].copy_from_slice(&1_700_000_000_000_000_000u64.to_ne_bytes());
    r[32..36].copy_from_slice(&(LABEL.len() as u32).to_ne_bytes());
    r[40..40 + LABEL.len()].copy_from_slice(LABEL.as_bytes());
    r
}

/// Sets the header's version of the file at `path` to `v`.
pub fn set_version(path: &Path, v: u32) {
    let mut b = std::fs::read(path).unwrap();
    b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&v.to_ne_bytes());
    std::fs::write(path, &b).unwrap();
}

/// The header's `state` and the main mutex's lock word of the file open
/// as `f` (read with pread: the old inode of a replaced file too).
pub fn state_and_word(f: &std::fs::File) -> (u32, u32) {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 12).unwrap();
    let state = u32::from_ne_bytes(b);
    f.read_exact_at(&mut b, MUTEX_AT as u64).unwrap();
    (state, u32::from_ne_bytes(b))
}

/// Which parts of the version-1 records ([`HOLDER`]'s pid and tid,
/// [`LABEL`]) the file at `path` holds anywhere.
pub fn v1_record_parts(path: &Path) -> [bool; 3] {
    let b = std::fs::read(path).unwrap();
    let has = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    [
        has(&HOLDER.0.to_ne_bytes()),
        has(&HOLDER.1.to_ne_bytes()),
        has(LABEL.as_bytes()),
    ]
}
