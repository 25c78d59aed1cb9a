//! The file format, in one place. Nothing else in the crate knows an offset.
//!
//! Format version 2:
//!
//! ```text
//! offset  size  what
//!      0   256  Header (magic, version, state, kind, ABI tag, T's size and
//!               alignment, generation, boot id, PID namespace, ...; at 192
//!               cond_seq, reserved for condition waits)
//!    256    64  the mutex's own cache line:
//!    256    40    pthread_mutex_t (40 bytes on x86_64 glibc, 48 on aarch64)
//!    296    24    HotRecord (at 256 + HOT_AFTER_MUTEX): pid, tid, since
//!                 (bit 0: a label is set), counts [acquisitions, contended]
//!                 mod 2^32 (x86_64; none on aarch64, where only 16 bytes are
//!                 left after the mutex)
//!    320   128  OwnerRecord, the cold record: the process constants of the
//!               last holder process (pid, PID namespace, start time, and
//!               their process_key) and the label; rewritten only when
//!               another process takes the lock, or a label is set
//!    448    64  Counters: acquisitions, contended (plus the hot counts),
//!               owner deaths, recoveries, resets
//!    512     -  T, at the first offset >= 512 aligned for T
//! ```
//! A semaphore's permit slot (192 bytes, in the value region) has the same
//! shape: its mutex and hot record in its first 64 bytes, its cold record
//! in the next 128; the file's counters (448) add every permit's hot counts.
//!
//! Per acquisition the holder writes only the mutex's own line (glibc's
//! lock word, then the hot record); per release it clears the hot record's
//! pid, tid and `since` before unlocking.
//!
//! The owner records and counters themselves (their types and how a
//! holder updates them) are in [`super::records`].
//!
//! The header's fields are written once, before `state` becomes READY, and
//! are immutable after that, except `state`, `flags` and `boot_id`, which are
//! only written under the init `flock`.

use bytemuck::{Pod, Zeroable};
use std::mem::{align_of, offset_of, size_of};

pub use super::records::{Counters, HotRecord, OwnerRecord, process_key};

/// Identifies a robust-mutex file. The last byte is the format family.
pub(crate) const MAGIC: [u8; 8] = *b"RBSTMTX\x01";
/// The format version this build reads and writes.
pub(crate) const VERSION: u32 = 2;
/// The earlier format version that [`reset`](crate::reset()) converts to
/// [`VERSION`] (same geometry; only the holder's record moved). Nothing
/// else reads it.
pub(crate) const MIGRATABLE_VERSION: u32 = 1;

/// `state`: zero, as a zero-filled or half-built file has it.
pub(crate) const STATE_INIT: u32 = 0;
/// `state`: initialisation complete; the header is immutable.
pub(crate) const STATE_READY: u32 = 0x5245_4459; // "READY"-ish, not 0 and not 1
/// `state`: a reset replaced this file; the path names its successor.
pub(crate) const STATE_RETIRED: u32 = 0x5245_5449;

/// What kind of lock a file holds (the header's `kind`), as
/// [`FileInfo::kind`](crate::FileInfo::kind) and
/// [`Error::KindMismatch`](crate::Error::KindMismatch) report it.
///
/// # Examples
/// ```
/// use robust_mutex::{LockKind, SharedSemaphore};
/// # let dir = tempfile::tempdir()?;
/// let sem = SharedSemaphore::open(dir.path().join("s"), 2)?;
/// assert_eq!(sem.file_info().kind, LockKind::Semaphore);
/// assert_eq!(LockKind::Semaphore.to_string(), "semaphore");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockKind {
    /// A [`SharedMutex`](crate::SharedMutex): an ERRORCHECK robust mutex
    /// guarding a `T`.
    Mutex,
    /// A [`ReentrantMutex`](crate::ReentrantMutex): a RECURSIVE robust mutex
    /// guarding a `T`.
    Reentrant,
    /// A [`SharedSemaphore`](crate::SharedSemaphore): the value region is an
    /// array of permits, each its own robust mutex.
    Semaphore,
}

/// The crate's short name for [`LockKind`].
pub(crate) use LockKind as Kind;

impl LockKind {
    /// The code stored in the header.
    pub(crate) fn code(self) -> u32 {
        match self {
            Kind::Mutex => 1,
            Kind::Reentrant => 2,
            Kind::Semaphore => 3,
        }
    }

    /// The kind of a header code.
    pub(crate) fn from_code(code: u32) -> Option<Kind> {
        [Kind::Mutex, Kind::Reentrant, Kind::Semaphore]
            .into_iter()
            .find(|k| k.code() == code)
    }

    /// A short name: `"mutex"`, `"reentrant"` or `"semaphore"` (what
    /// `robust-mutex status --json` prints).
    ///
    /// # Examples
    /// ```
    /// assert_eq!(robust_mutex::LockKind::Reentrant.as_str(), "reentrant");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Reentrant => "reentrant",
            Kind::Semaphore => "semaphore",
        }
    }

    /// The pthread type of the file's main mutex.
    pub(crate) fn mutex_kind(self) -> crate::sys::MutexKind {
        match self {
            Kind::Reentrant => crate::sys::MutexKind::Recursive,
            Kind::Mutex | Kind::Semaphore => crate::sys::MutexKind::ErrorCheck,
        }
    }
}

impl std::fmt::Display for LockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One permit of a semaphore: a robust mutex with its hot record, and its
/// holder's cold record.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
pub(crate) struct Slot {
    pub mutex: [u8; MUTEX_ROOM],
    pub owner: OwnerRecord,
}

/// Size of a [`Slot`]; slots are 64-byte aligned.
pub(crate) const SLOT_SIZE: usize = size_of::<Slot>();
const _: () = assert!(SLOT_SIZE % 64 == 0);

/// How far after its mutex a cold owner record lies: the header's and every
/// permit's alike, so a raw lock needs only its mutex's address.
pub(crate) const RECORD_AFTER_MUTEX: usize = OWNER_OFFSET - MUTEX_OFFSET;
const _: () = assert!(offset_of!(Slot, owner) - offset_of!(Slot, mutex) == RECORD_AFTER_MUTEX);
/// How far after the header's mutex the counters lie.
pub(crate) const COUNTERS_AFTER_MUTEX: usize = COUNTERS_OFFSET - MUTEX_OFFSET;
/// How far before the header's mutex the state word lies.
pub(crate) const STATE_BEFORE_MUTEX: usize = MUTEX_OFFSET - offset_of!(Header, state);
/// How far the header's condition sequence word (`cond_seq`, offset 192,
/// its own cache line) lies before the mutex (`src/cond.rs`).
pub(crate) const COND_BEFORE_MUTEX: usize = MUTEX_OFFSET - offset_of!(Header, cond_seq);

/// How far after its mutex the hot record lies, in the mutex's own 64-byte
/// slot: `size_of::<pthread_mutex_t>()` rounded up to 8 (40 on x86_64
/// glibc, 48 on aarch64).
pub const HOT_AFTER_MUTEX: usize = size_of::<libc::pthread_mutex_t>().next_multiple_of(8);
/// Where the header mutex's hot record lies.
pub const HOT_OFFSET: usize = MUTEX_OFFSET + HOT_AFTER_MUTEX;
/// How many counts the hot record holds: 2 (acquisitions, contended) where
/// they fit in the mutex's slot (x86_64), else 0 (the counts then go to the
/// cold [`Counters`] alone, as in version 1).
pub const HOT_COUNTS: usize = if MUTEX_ROOM - HOT_AFTER_MUTEX >= 16 + 8 {
    2
} else {
    0
};
const _: () = assert!(HOT_AFTER_MUTEX + size_of::<HotRecord>() <= MUTEX_ROOM);
const _: () = assert!(HOT_OFFSET % 8 == 0);

/// Bit 0 of [`HotRecord::since`]: a label is set for this acquisition.
pub const SINCE_LABELLED: u64 = 1;

/// The offset of permit `i`'s mutex, in a semaphore whose slots start at
/// `data_offset`.
pub(crate) fn slot_mutex(data_offset: usize, i: usize) -> usize {
    data_offset + i * SLOT_SIZE + offset_of!(Slot, mutex)
}

/// The creator's mark: the mode a file has while it is being initialised.
pub(crate) const CREATOR_MODE: u32 = 0o400;

/// Offsets of the fixed regions.
pub(crate) const HEADER_LEN: usize = 256;
/// Where the `pthread_mutex_t` lies.
pub const MUTEX_OFFSET: usize = 256;
pub(crate) const MUTEX_ROOM: usize = 64;
/// Where the owner record lies.
pub const OWNER_OFFSET: usize = 320;
/// Where the counters lie.
pub const COUNTERS_OFFSET: usize = 448;
/// The smallest offset `T` may start at.
pub const DATA_MIN_OFFSET: usize = 512;
/// Alignment of `T` that the format supports (the mapping is page aligned).
pub(crate) const MAX_DATA_ALIGN: usize = 4096;
/// Bytes of label an owner record holds.
pub const LABEL_MAX: usize = 88;

/// The header, as it lies in the file. All integers are native-endian: the
/// ABI tag makes sure only a matching machine ever reads them.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
pub(crate) struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    /// STATE_INIT / STATE_READY / STATE_RETIRED. Accessed atomically.
    pub state: u32,
    /// Reserved for flags; zero in versions 1 and 2.
    pub flags: u32,
    /// [`Kind::code`].
    pub kind: u32,
    /// `std::env::consts::ARCH`, NUL padded.
    pub arch: [u8; 16],
    /// "gnu" or "musl", NUL padded.
    pub libc_env: [u8; 8],
    pub mutex_size: u32,
    pub pointer_width: u32,
    pub data_size: u64,
    pub data_align: u64,
    pub data_offset: u64,
    pub file_len: u64,
    /// 1 for a new file, +1 for each reset.
    pub generation: u64,
    /// `/proc/sys/kernel/random/boot_id` when the mutex was (re)initialised.
    pub boot_id: [u8; 16],
    /// Inode of the creator's `/proc/self/ns/pid`.
    pub pidns_ino: u64,
    /// Wall clock at creation, ns since the epoch.
    pub created_unix_ns: u64,
    pub reserved: [u8; 64],
    /// Reserved for condition waits (issue 13): a sequence word on its own
    /// cache line. Zero today.
    pub cond_seq: u32,
    pub reserved2: [u8; 60],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);
const _: () = assert!(offset_of!(Header, state) == 12);
const _: () = assert!(offset_of!(Header, cond_seq) == 192);
const _: () = assert!(size_of::<libc::pthread_mutex_t>() <= MUTEX_ROOM);
const _: () = assert!(align_of::<libc::pthread_mutex_t>() <= 64);
const _: () = assert!(size_of::<OwnerRecord>() == COUNTERS_OFFSET - OWNER_OFFSET);
const _: () = assert!(size_of::<Counters>() == DATA_MIN_OFFSET - COUNTERS_OFFSET);

/// The ABI tag of this build.
pub(crate) fn abi() -> Abi {
    let mut arch = [0u8; 16];
    let a = std::env::consts::ARCH.as_bytes();
    arch[..a.len().min(16)].copy_from_slice(&a[..a.len().min(16)]);
    let mut libc_env = [0u8; 8];
    let env: &[u8] = if cfg!(target_env = "gnu") {
        b"gnu"
    } else if cfg!(target_env = "musl") {
        b"musl"
    } else {
        b"other"
    };
    libc_env[..env.len()].copy_from_slice(env);
    Abi {
        arch,
        libc_env,
        mutex_size: size_of::<libc::pthread_mutex_t>() as u32,
        pointer_width: usize::BITS,
    }
}

/// Architecture, C library and mutex size: files are only shared between
/// processes that agree on all of them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abi {
    pub arch: [u8; 16],
    pub libc_env: [u8; 8],
    pub mutex_size: u32,
    pub pointer_width: u32,
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl std::fmt::Display for Abi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{} {}-bit, pthread_mutex_t {} bytes",
            text(&self.arch),
            text(&self.libc_env),
            self.pointer_width,
            self.mutex_size
        )
    }
}

impl Header {
    /// How many permits (slots) a semaphore file has; 0 for other kinds.
    pub fn permits(&self) -> usize {
        if self.kind == Kind::Semaphore.code() {
            self.data_size as usize / SLOT_SIZE
        } else {
            0
        }
    }

    /// The offset of every mutex in the file: the main one, then each
    /// permit's (a semaphore's slots).
    pub fn mutexes(&self) -> impl Iterator<Item = usize> + use<> {
        let data = self.data_offset as usize;
        std::iter::once(MUTEX_OFFSET).chain((0..self.permits()).map(move |i| slot_mutex(data, i)))
    }

    /// Where the value lies, as this header says.
    pub fn data_layout(&self) -> DataLayout {
        DataLayout {
            size: self.data_size,
            align: self.data_align,
            offset: self.data_offset,
            file_len: self.file_len,
        }
    }

    /// The ABI this header was written by.
    pub fn abi(&self) -> Abi {
        Abi {
            arch: self.arch,
            libc_env: self.libc_env,
            mutex_size: self.mutex_size,
            pointer_width: self.pointer_width,
        }
    }
}

/// Where `T` goes and how long the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DataLayout {
    pub size: u64,
    pub align: u64,
    pub offset: u64,
    pub file_len: u64,
}

impl DataLayout {
    /// The layout for a `T` of `size` and `align`; `None` if the alignment
    /// exceeds what a page-aligned mapping can give.
    pub fn new(size: usize, align: usize) -> Option<DataLayout> {
        if align > MAX_DATA_ALIGN || !align.is_power_of_two() {
            return None;
        }
        let offset = DATA_MIN_OFFSET.next_multiple_of(align);
        let file_len = offset.checked_add(size)?;
        Some(DataLayout {
            size: size as u64,
            align: align as u64,
            offset: offset as u64,
            file_len: file_len as u64,
        })
    }

    /// The layout for `T`.
    pub fn of<T>() -> Option<DataLayout> {
        DataLayout::new(size_of::<T>(), align_of::<T>())
    }
}

/// A fresh header for a file that is about to become READY.
pub(crate) fn new_header(
    kind: Kind,
    data: DataLayout,
    generation: u64,
    boot_id: [u8; 16],
    pidns_ino: u64,
    now_unix_ns: u64,
) -> Header {
    let abi = abi();
    Header {
        magic: MAGIC,
        version: VERSION,
        state: STATE_INIT,
        flags: 0,
        kind: kind.code(),
        arch: abi.arch,
        libc_env: abi.libc_env,
        mutex_size: abi.mutex_size,
        pointer_width: abi.pointer_width,
        data_size: data.size,
        data_align: data.align,
        data_offset: data.offset,
        file_len: data.file_len,
        generation,
        boot_id,
        pidns_ino,
        created_unix_ns: now_unix_ns,
        reserved: [0; 64],
        cond_seq: 0,
        reserved2: [0; 60],
    }
}

/// Why a file is not a usable mutex file of this format and this `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Shorter than the header or than the header says.
    Truncated { len: u64, needed: u64 },
    /// Not our magic: someone else's data.
    Foreign,
    /// Our magic but another format version.
    Version { found: u32 },
    /// Our format, another architecture or C library.
    Abi { found: String },
    /// Our format, another kind of lock.
    Kind { found: Kind, expected: Kind },
    /// Our format, but the header is not READY or contradicts itself.
    Corrupt(&'static str),
    /// A valid file for another `T`.
    DataType { size: u64, align: u64 },
}

/// Checks a header read from a file of `file_len` bytes against this build
/// and `want` (`None`: any value type). `mutex_bytes` are the bytes of the
/// mutex region.
pub(crate) fn validate(
    h: &Header,
    file_len: u64,
    want: Option<DataLayout>,
    kinds: &[Kind],
    mutex_bytes: &[u8],
) -> Result<(), Invalid> {
    validate_versions(h, file_len, want, kinds, mutex_bytes, &[VERSION])
}

/// [`validate`], accepting any of `versions` (a reset accepts
/// [`MIGRATABLE_VERSION`] too, to convert it).
pub(crate) fn validate_versions(
    h: &Header,
    file_len: u64,
    want: Option<DataLayout>,
    kinds: &[Kind],
    mutex_bytes: &[u8],
    versions: &[u32],
) -> Result<(), Invalid> {
    if h.magic != MAGIC {
        return Err(Invalid::Foreign);
    }
    if !versions.contains(&h.version) {
        return Err(Invalid::Version { found: h.version });
    }
    if h.abi() != abi() {
        return Err(Invalid::Abi {
            found: h.abi().to_string(),
        });
    }
    let kind = match Kind::from_code(h.kind) {
        Some(k) if kinds.contains(&k) => k,
        Some(found) => {
            return Err(Invalid::Kind {
                found,
                expected: kinds[0],
            });
        }
        None => return Err(Invalid::Corrupt("unknown lock kind")),
    };
    if h.state != STATE_READY && h.state != STATE_RETIRED {
        return Err(Invalid::Corrupt("header is not in the ready state"));
    }
    let theirs = DataLayout::new(h.data_size as usize, h.data_align as usize)
        .filter(|l| l.offset == h.data_offset && l.file_len == h.file_len)
        .ok_or(Invalid::Corrupt("header's data layout is inconsistent"))?;
    if file_len < theirs.file_len {
        return Err(Invalid::Truncated {
            len: file_len,
            needed: theirs.file_len,
        });
    }
    if h.generation == 0 {
        return Err(Invalid::Corrupt("generation is zero"));
    }
    if cfg!(target_env = "gnu")
        && crate::sys::glibc_kind_word(mutex_bytes) != Some(expected_kind(kind))
    {
        {
            return Err(Invalid::Corrupt(
                "the mutex is not a robust process-shared errorcheck mutex",
            ));
        }
    }
    if want.is_some_and(|w| theirs.size != w.size || theirs.align != w.align) {
        return Err(Invalid::DataType {
            size: theirs.size,
            align: theirs.align,
        });
    }
    Ok(())
}

fn expected_kind(kind: Kind) -> i32 {
    use std::sync::OnceLock;
    static ERRORCHECK: OnceLock<i32> = OnceLock::new();
    static RECURSIVE: OnceLock<i32> = OnceLock::new();
    let mk = kind.mutex_kind();
    let cell = match mk {
        crate::sys::MutexKind::ErrorCheck => &ERRORCHECK,
        crate::sys::MutexKind::Recursive => &RECURSIVE,
    };
    *cell.get_or_init(|| crate::sys::expected_kind_word(mk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_layout_aligns_t_and_never_overlaps_the_counters() {
        assert_eq!(DataLayout::new(0, 1).unwrap().file_len, 512);
        assert_eq!(DataLayout::new(8, 8).unwrap().offset, 512);
        assert_eq!(DataLayout::new(8, 1024).unwrap().offset, 1024);
        assert_eq!(DataLayout::new(1, 4096).unwrap().offset, 4096);
        assert!(DataLayout::new(1, 8192).is_none());
    }

    #[test]
    fn a_new_header_validates_and_rejects_another_type() {
        let l = DataLayout::of::<u64>().unwrap();
        let mut h = new_header(Kind::Mutex, l, 1, [0; 16], 0, 0);
        h.state = STATE_READY;
        let mut m = [0u8; 64];
        let k = expected_kind(Kind::Mutex).to_ne_bytes();
        m[16..20].copy_from_slice(&k);
        m[12..16].copy_from_slice(&k);
        assert_eq!(
            validate(&h, l.file_len, Some(l), &[Kind::Mutex], &m),
            Ok(())
        );
        assert_eq!(validate(&h, l.file_len, None, &[Kind::Mutex], &m), Ok(()));
        let other = DataLayout::of::<u32>().unwrap();
        assert!(matches!(
            validate(&h, l.file_len, Some(other), &[Kind::Mutex], &m),
            Err(Invalid::DataType { .. })
        ));
        assert!(matches!(
            validate(&h, 100, Some(l), &[Kind::Mutex], &m),
            Err(Invalid::Truncated { .. })
        ));
        h.magic[0] ^= 1;
        assert_eq!(
            validate(&h, l.file_len, Some(l), &[Kind::Mutex], &m),
            Err(Invalid::Foreign)
        );
    }
}
