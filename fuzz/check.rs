//! The fuzzing property, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/open_file.rs`) and the corpus replay in `cargo test`
//! (`tests/file/fuzz_corpus.rs`), which include this file with `#[path]`.
//!
//! Whatever bytes and mode a file holds, opening it never panics, crashes,
//! raises SIGBUS or hangs, and:
//! * **on error**, the file is exactly as it was: bytes, length, mode, mtime
//!   and ctime (nothing was written, truncated or chmodded, even and back);
//!   and it is never `InitTimeout` (nobody holds a flock here);
//! * **on success**, the file is unchanged too unless open had a reason to
//!   write: it carried the creator's mark (mode 0400: a crashed creator's
//!   leftover is taken over) or its header names another boot (the stale-boot
//!   repair). The mode then has the owner-write bit; try_lock, status,
//!   lock_timeout(1 ms) and a cancellable wait work without hanging, a
//!   thread holding an errorcheck lock gets `Deadlock` from try_lock and
//!   `status()` says `Locked`; the value can be read and written; and once
//!   dropped, the file opens again.
//!
//! A watchdog aborts the process if one input runs for more than
//! [`HANG_LIMIT`], naming the input, so a hang is a crash for libFuzzer and a
//! failure (not a stuck run) for `cargo test`.
//!
//! Input layout:
//! * byte 0, bits 0-1: the value type `T` (`u64`, `()`, `[u8; 4096]`, a
//!   16-aligned struct), or for a semaphore the permit count (1, 2, 4, 127);
//! * byte 0, bits 2-4: what opens it: 0 and 5-7 `OpenOptions::open::<T>`,
//!   1 `ReentrantMutex::open_with`, 2 `SharedSemaphore::open_with`,
//!   3 `open_lock_only` (any value type), 4 `BareMutex::open_with` (pymutex format);
//! * byte 0, bit 7: bit-flip mode (below);
//! * bytes 1-2 (little-endian `sel`): the mode: `sel % 8` picks 0600, 0400
//!   (the creator's mark), 0644, 0444, 0660, 0000, or (6, 7) the arbitrary
//!   bits `(sel >> 3) & 0o7777`, setuid/setgid/sticky included;
//! * the rest (at most [`MAX_BODY`] bytes) is the file's content; in
//!   bit-flip mode it is a list of 3-byte edits `(offset u16 LE, x u8)` to a
//!   valid file that the library made for the chosen kind and `T`: offsets
//!   inside the file are XORed with `x`; beyond it, `x == 0xff` cuts the file
//!   at `offset % (len + 1)` and any other `x` extends it with zeros to
//!   `offset` and appends `x`. This gets the fuzzer past the header checks at
//!   once.
#![allow(dead_code)]

use robust_mutex::{
    BareMutex, CancelToken, Error, LockError, LockState, OpenOptions, SharedMutex, SharedSemaphore,
};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A value type with a large alignment.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(16))]
pub struct Aligned16 {
    /// Filler.
    pub a: [u64; 2],
}

/// Most content bytes taken from one input: files stay small and fast.
pub const MAX_BODY: usize = 64 * 1024;
/// The init timeout given to every open. Nobody holds a flock in the
/// fuzzer, so only a pymutex-style 0400 bare file (whose creators take no
/// flock) ever waits this long, and `InitTimeout` is always a failure.
pub const INIT_TIMEOUT: Duration = Duration::from_millis(50);
/// One input running longer than this is a hang: the watchdog aborts.
pub const HANG_LIMIT: Duration = Duration::from_secs(5);
/// Offset of the boot id in the header (docs/design.md).
const BOOT_ID: std::ops::Range<usize> = 96..112;
/// The creator's mark.
const CREATOR_MODE: u32 = 0o400;

/// What opens the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Opener {
    Mutex,
    Reentrant,
    Semaphore,
    LockOnly,
    Bare,
}

impl Opener {
    fn of(byte: u8) -> Opener {
        match (byte >> 2) & 7 {
            1 => Opener::Reentrant,
            2 => Opener::Semaphore,
            3 => Opener::LockOnly,
            4 => Opener::Bare,
            _ => Opener::Mutex,
        }
    }
}

const PERMITS: [usize; 4] = [1, 2, 4, 127];

// ---------------------------------------------------------------- watchdog

/// Milliseconds since [`epoch`] at which the current input started, plus
/// one; 0 when no input is running.
static ARMED_AT: AtomicU64 = AtomicU64::new(0);
/// What the watchdog names when it fires (the replay sets the file name).
static LABEL: Mutex<String> = Mutex::new(String::new());

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Names the input being checked, for the watchdog's message.
pub fn set_label(label: &str) {
    let mut l = LABEL.lock().unwrap_or_else(|p| p.into_inner());
    l.clear();
    l.push_str(label);
}

fn arm() {
    static WATCHDOG: OnceLock<()> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        epoch();
        std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(watchdog)
            .expect("spawn the watchdog");
    });
    ARMED_AT.store(now_ms() + 1, Ordering::SeqCst);
}

fn disarm() {
    ARMED_AT.store(0, Ordering::SeqCst);
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let at = ARMED_AT.load(Ordering::SeqCst);
        if at != 0 && (now_ms() + 1).saturating_sub(at) > HANG_LIMIT.as_millis() as u64 {
            let label = LABEL
                .lock()
                .map(|l| l.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            // Written straight to the stderr handle: libtest's capture of
            // eprintln! would lose it when we abort.
            let _ = writeln!(
                std::io::stderr(),
                "\nHANG: one input ran for more than {HANG_LIMIT:?} (open, lock or drop never \
                 returned); input: {}",
                if label.is_empty() {
                    "(unnamed)"
                } else {
                    &label
                }
            );
            std::process::abort();
        }
    }
}

// ---------------------------------------------------------------- files

/// What a rejected file must keep.
#[derive(Debug, PartialEq, Eq)]
struct Snap {
    bytes: Vec<u8>,
    mode: u32,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

fn snap(path: &Path) -> Snap {
    let md = std::fs::symlink_metadata(path).expect("the fuzzed file is still there");
    Snap {
        bytes: std::fs::read(path).expect("read the fuzzed file"),
        mode: md.mode(),
        len: md.len(),
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
        ino: md.ino(),
    }
}

/// A fresh directory, on tmpfs when there is one (fast, and never a
/// network filesystem, which the library refuses).
fn scratch_dir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("rm-fuzz-");
    let shm = Path::new("/dev/shm");
    let on_shm = if shm.is_dir() {
        b.tempdir_in(shm).ok()
    } else {
        None
    };
    on_shm.unwrap_or_else(|| b.tempdir().expect("make a scratch directory"))
}

fn opts() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.create(true).init_timeout(INIT_TIMEOUT);
    o
}

/// A valid file made by the library for `opener` and `ty` (cached: the
/// process's boot id and PID namespace do not change).
fn valid_file(opener: Opener, ty: u8) -> Vec<u8> {
    type ValidFiles = HashMap<(Opener, u8), Vec<u8>>;
    static CACHE: Mutex<Option<ValidFiles>> = Mutex::new(None);
    let opener = if opener == Opener::LockOnly {
        Opener::Mutex // a lock-only open accepts any mutex file: flip those
    } else {
        opener
    };
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(v) = cache.get(&(opener, ty)) {
        return v.clone();
    }
    let dir = scratch_dir();
    let p = dir.path().join("valid");
    let o = opts();
    match opener {
        Opener::Mutex | Opener::LockOnly => match ty {
            0 => drop(o.open::<u64>(&p).unwrap()),
            1 => drop(o.open::<()>(&p).unwrap()),
            2 => drop(o.open::<[u8; 4096]>(&p).unwrap()),
            _ => drop(o.open::<Aligned16>(&p).unwrap()),
        },
        Opener::Reentrant => match ty {
            0 => drop(robust_mutex::ReentrantMutex::<u64>::open_with(&p, &o).unwrap()),
            1 => drop(robust_mutex::ReentrantMutex::<()>::open_with(&p, &o).unwrap()),
            2 => drop(robust_mutex::ReentrantMutex::<[u8; 4096]>::open_with(&p, &o).unwrap()),
            _ => drop(robust_mutex::ReentrantMutex::<Aligned16>::open_with(&p, &o).unwrap()),
        },
        Opener::Semaphore => {
            drop(SharedSemaphore::open_with(&p, PERMITS[ty as usize], &o).unwrap())
        }
        Opener::Bare => drop(robust_mutex::BareMutex::open_with(&p, &o).unwrap()),
    }
    let bytes = std::fs::read(&p).unwrap();
    cache.insert((opener, ty), bytes.clone());
    bytes
}

/// The boot id as the library writes it into a header.
fn current_boot_id() -> [u8; 16] {
    let v = valid_file(Opener::Mutex, 0);
    v[BOOT_ID].try_into().unwrap()
}

/// The file content an input describes.
fn content(data: &[u8], opener: Opener, ty: u8) -> Vec<u8> {
    let body = &data[3..data.len().min(3 + MAX_BODY)];
    if data[0] & 0x80 == 0 {
        return body.to_vec();
    }
    let mut v = valid_file(opener, ty);
    for e in body.chunks_exact(3) {
        let off = usize::from(u16::from_le_bytes([e[0], e[1]]));
        if off < v.len() {
            v[off] ^= e[2];
        } else if e[2] == 0xff {
            v.truncate(off % (v.len() + 1));
        } else {
            v.resize(off, 0);
            v.push(e[2]);
        }
    }
    v
}

fn mode_of(sel: u16, root: bool) -> u32 {
    let mode = match sel % 8 {
        0 => 0o600,
        1 => 0o400,
        2 => 0o644,
        3 => 0o444,
        4 => 0o660,
        5 => 0o000,
        _ => u32::from(sel >> 3) & 0o7777,
    };
    // Root reads any file; anyone else needs owner-read to take snapshots.
    if root { mode } else { mode | 0o400 }
}

// ---------------------------------------------------------------- the property

/// Runs one input. Panics (or, for a hang, aborts) on a violated property.
/// Returns what happened, for the replay's summary: `"accepted"`, or the
/// name of the error the open returned (`None`: too short to be an input).
pub fn check(data: &[u8]) -> Option<&'static str> {
    if data.len() < 3 {
        return None;
    }
    let opener = Opener::of(data[0]);
    let ty = data[0] & 3;
    let sel = u16::from_le_bytes([data[1], data[2]]);
    let content = content(data, opener, ty);
    let boot_id = current_boot_id();

    let dir = scratch_dir();
    let root = std::fs::metadata(dir.path())
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let mode = mode_of(sel, root);
    let path = dir.path().join("f");
    std::fs::write(&path, &content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let before = snap(&path);

    // open may write only to take over a crashed creator's file (mode 0400)
    // or to repair a file from another boot (a header: not a bare file).
    let may_write = mode & 0o7777 == CREATOR_MODE
        || (opener != Opener::Bare
            && content
                .get(BOOT_ID)
                .is_some_and(|b| b != boot_id.as_slice()));

    arm();
    let r = open_and_use(opener, ty, &path, &before, may_write);
    disarm();

    match r {
        Ok(()) => Some("accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(
                !matches!(e, Error::InitTimeout { .. }),
                "waited for a creator that cannot exist: {msg}"
            );
            assert_eq!(snap(&path), before, "a rejected file was changed ({msg})");
            Some(error_name(&e))
        }
    }
}

fn error_name(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "NotFound",
        Error::AlreadyExists { .. } => "AlreadyExists",
        Error::ForeignFile { .. } => "ForeignFile",
        Error::Truncated { .. } => "Truncated",
        Error::Empty { .. } => "Empty",
        Error::UnsupportedVersion { .. } => "UnsupportedVersion",
        Error::AbiMismatch { .. } => "AbiMismatch",
        Error::KindMismatch { .. } => "KindMismatch",
        Error::Corrupt { .. } => "Corrupt",
        Error::TypeMismatch { .. } => "TypeMismatch",
        Error::PermitMismatch { .. } => "PermitMismatch",
        Error::PidNamespaceMismatch { .. } => "PidNamespaceMismatch",
        Error::ForeignOwner { .. } => "ForeignOwner",
        Error::PermissionDenied { .. } => "PermissionDenied",
        _ => "other error",
    }
}

/// After a successful open, before any lock: the file is as it was unless
/// open had a reason to write, and its mode lets the owner write.
fn after_open(path: &Path, before: &Snap, may_write: bool) {
    let now = snap(path);
    assert!(
        now.mode & 0o200 != 0,
        "attached to a file without owner-write: mode {:o}",
        now.mode
    );
    if !may_write {
        assert_eq!(&now, before, "open changed a ready file of this boot");
    }
}

fn open_and_use(
    opener: Opener,
    ty: u8,
    path: &Path,
    before: &Snap,
    may_write: bool,
) -> Result<(), Error> {
    match opener {
        Opener::Mutex => match ty {
            0 => use_mutex(path, before, may_write, true, |p| opts().open::<u64>(p)),
            1 => use_mutex(path, before, may_write, true, |p| opts().open::<()>(p)),
            2 => use_mutex(path, before, may_write, true, |p| {
                opts().open::<[u8; 4096]>(p)
            }),
            _ => use_mutex(path, before, may_write, true, |p| {
                opts().open::<Aligned16>(p)
            }),
        },
        // A lock-only open also accepts a re-entrant file: no errorcheck.
        Opener::LockOnly => use_mutex(path, before, may_write, false, |p| opts().open_lock_only(p)),
        Opener::Reentrant => match ty {
            0 => use_reentrant::<u64>(path, before, may_write),
            1 => use_reentrant::<()>(path, before, may_write),
            2 => use_reentrant::<[u8; 4096]>(path, before, may_write),
            _ => use_reentrant::<Aligned16>(path, before, may_write),
        },
        Opener::Semaphore => use_semaphore(PERMITS[ty as usize], path, before, may_write),
        Opener::Bare => use_bare(path, before, may_write),
    }
}

fn use_mutex<T: bytemuck::Pod>(
    path: &Path,
    before: &Snap,
    may_write: bool,
    errorcheck: bool,
    open: impl Fn(&Path) -> Result<SharedMutex<T>, Error>,
) -> Result<(), Error> {
    let m = open(path)?;
    after_open(path, before, may_write);
    let _ = m.status();
    let _ = m.file_info();
    if let Ok(a) = m.try_lock() {
        let mut g = a.recover_with(|_| {});
        *g = std::hint::black_box(*g); // read and write every byte of the value
        if errorcheck {
            assert!(
                matches!(m.try_lock(), Err(LockError::Deadlock)),
                "an errorcheck mutex held by this thread did not report Deadlock"
            );
            assert_eq!(m.status().state, LockState::Locked, "held by us");
        }
        drop(g);
    }
    drop(m.lock_timeout(Duration::from_millis(1)));
    drop(m.lock_cancellable(&CancelToken::new(), Some(Duration::from_millis(1))));
    let _ = m.status();
    drop(m);
    drop(open(path).expect("a file that opened once opens again"));
    Ok(())
}

fn use_reentrant<T: bytemuck::Pod>(
    path: &Path,
    before: &Snap,
    may_write: bool,
) -> Result<(), Error> {
    let m = robust_mutex::ReentrantMutex::<T>::open_with(path, &opts())?;
    after_open(path, before, may_write);
    let _ = m.status();
    if let Ok(a) = m.try_lock() {
        let g = a.recover_with(|_| {});
        g.set(g.get());
        if let Ok(inner) = m.try_lock() {
            drop(inner.recover_with(|_| {}));
        }
        drop(m.lock_timeout(Duration::from_millis(1)));
        assert_eq!(m.status().state, LockState::Locked, "held by us");
        drop(g);
    }
    drop(m.lock_timeout(Duration::from_millis(1)));
    drop(m.lock_cancellable(&CancelToken::new(), Some(Duration::from_millis(1))));
    drop(m);
    drop(
        robust_mutex::ReentrantMutex::<T>::open_with(path, &opts())
            .expect("a file that opened once opens again"),
    );
    Ok(())
}

fn use_semaphore(permits: usize, path: &Path, before: &Snap, may_write: bool) -> Result<(), Error> {
    let s = SharedSemaphore::open_with(path, permits, &opts())?;
    after_open(path, before, may_write);
    let _ = s.status();
    let _ = s.file_info();
    let first = s.try_acquire().ok().map(|p| p.recover_with(|_| {}));
    let second = s
        .acquire_timeout(Duration::from_millis(1))
        .ok()
        .map(|p| p.recover_with(|_| {}));
    let _ = s.status();
    drop(s.acquire_cancellable(&CancelToken::new(), Some(Duration::from_millis(1))));
    drop((first, second));
    drop(s);
    drop(
        SharedSemaphore::open_with(path, permits, &opts())
            .expect("a file that opened once opens again"),
    );
    Ok(())
}

fn use_bare(path: &Path, before: &Snap, may_write: bool) -> Result<(), Error> {
    let m = robust_mutex::BareMutex::open_with(path, &opts())?;
    after_open(path, before, may_write);
    let _ = m.status();
    if let Ok(a) = m.try_lock() {
        let g = a.recover_with(|_| {});
        assert!(
            matches!(m.try_lock(), Err(LockError::Deadlock)),
            "an errorcheck mutex held by this thread did not report Deadlock"
        );
        drop(g);
    }
    drop(m.lock_timeout(Duration::from_millis(1)));
    drop(m.lock_cancellable(&CancelToken::new(), Some(Duration::from_millis(1))));
    drop(m);
    drop(BareMutex::open_with(path, &opts()).expect("a file that opened once opens again"));
    Ok(())
}
