//! Errors: [`Error`] when opening, [`LockError`] when locking.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a mutex file could not be opened, created or removed.
///
/// Every variant that names a file guarantees that the file was left exactly
/// as it was found: `open` never changes a file it rejects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path does not exist and creating it was not asked for.
    #[error("open {path}: no such file")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// `create_new(true)` was asked for, and the path exists.
    #[error("create {path}: the file already exists")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// The path is a symbolic link. Mutex files are opened with `O_NOFOLLOW`,
    /// so a link planted in a shared directory cannot redirect us.
    #[error("open {path}: is a symbolic link; mutex files are never opened through one")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The path is a directory, FIFO, device or socket.
    #[error("open {path}: is a {kind}, not a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, e.g. "directory".
        kind: &'static str,
    },
    /// The file's mode or owner keeps this user out.
    #[error("open {path}: permission denied")]
    PermissionDenied {
        /// The path.
        path: PathBuf,
    },
    /// A replacement for the lock file at `path` (a reset's, or
    /// [`OpenOptions::replace`](crate::OpenOptions::replace)'s) cannot be
    /// created in its directory `dir`: the caller may not write there.
    /// Nothing was changed.
    #[error("{path}: cannot create its replacement in {dir}: permission denied")]
    DirectoryNotWritable {
        /// The lock file's path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The file belongs to another user, and
    /// [`OpenOptions::allow_other_owners`](crate::OpenOptions::allow_other_owners)
    /// was not given.
    #[error(
        "open {path}: owned by uid {owner}, not by this user (uid {ours}); see OpenOptions::allow_other_owners"
    )]
    ForeignOwner {
        /// The path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// A reset of a file owned by another user, by a user other than root:
    /// the replacement would belong to the caller, locking out the owner's
    /// processes, so nothing was changed.
    #[error(
        "reset {path}: owned by uid {owner}: only root or its owner can reset it (the replacement would belong to uid {ours})"
    )]
    ResetChangesOwner {
        /// The path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// The file lives on a network or FUSE filesystem, where process-shared
    /// futexes in a `MAP_SHARED` mapping do not work across hosts.
    #[error(
        "open {path}: on a {fs} filesystem, where a shared mutex cannot work; use a local filesystem such as /dev/shm"
    )]
    UnsupportedFilesystem {
        /// The path.
        path: PathBuf,
        /// The filesystem's name, e.g. "NFS".
        fs: &'static str,
    },
    /// The file is not a robust-mutex file: it holds someone else's data.
    #[error("open {path}: not a robust-mutex file (left untouched)")]
    ForeignFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is shorter than its header says, or than any header.
    #[error("open {path}: truncated: {len} bytes, a mutex file needs {needed}")]
    Truncated {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length its header (or the format) needs.
        needed: u64,
    },
    /// The file is empty (0 bytes) and not a creator's mark (mode 0400):
    /// flock(1) and `touch` leave such files. Never changed by an open;
    /// [`reset`](crate::reset()) with `force` makes it a mutex.
    #[error(
        "open {path}: the file is empty, not a robust-mutex file (flock(1) and touch leave empty files); remove it, or run `robust-mutex reset --force {path}` to make it a mutex"
    )]
    Empty {
        /// The path.
        path: PathBuf,
    },
    /// Written by another version of the format. The file is left
    /// untouched.
    ///
    /// A version-1 file (written by robust-mutex before format version 2)
    /// is converted by [`reset`](crate::reset()) (`robust-mutex reset
    /// PATH`), which keeps its value and counters; the message says so. A
    /// file of a newer version than this build reads needs a newer
    /// robust-mutex: a reset refuses it too (it never downgrades a file).
    #[error("{}", version_text(path, *found, *expected))]
    UnsupportedVersion {
        /// The path.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// Written on another architecture or C library, whose `pthread_mutex_t`
    /// has another layout.
    #[error("open {path}: written by {found}, but this build is {expected}")]
    AbiMismatch {
        /// The path.
        path: PathBuf,
        /// The ABI in the file.
        found: String,
        /// This build's ABI.
        expected: String,
    },
    /// Holds another kind of lock (e.g. a semaphore, or a re-entrant mutex
    /// opened as a plain one).
    #[error("open {path}: holds a {found} lock, not a {expected} lock")]
    KindMismatch {
        /// The path.
        path: PathBuf,
        /// The kind in the file.
        found: crate::LockKind,
        /// The kind asked for.
        expected: crate::LockKind,
    },
    /// The options contradict each other or the type opened.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: &'static str,
    },
    /// Our magic, but the header or mutex contradicts itself.
    #[error("open {path}: corrupt mutex file: {reason} (left untouched)")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A valid mutex file, for a value of another size or alignment.
    #[error(
        "open {path}: the file holds a value of {file_size} bytes aligned to {file_align}, but T is {size} bytes aligned to {align}"
    )]
    TypeMismatch {
        /// The path.
        path: PathBuf,
        /// Size of the value in the file.
        file_size: u64,
        /// Alignment of the value in the file.
        file_align: u64,
        /// `size_of::<T>()`.
        size: u64,
        /// `align_of::<T>()`.
        align: u64,
    },
    /// A semaphore file with another number of permits.
    #[error("open {path}: the semaphore has {file} permits, not {asked}")]
    PermitMismatch {
        /// The path.
        path: PathBuf,
        /// Permits in the file.
        file: usize,
        /// Permits asked for.
        asked: usize,
    },
    /// `T`'s alignment exceeds a page (4096 bytes).
    #[error("T is aligned to {align} bytes; at most 4096 is supported")]
    UnsupportedType {
        /// `align_of::<T>()`.
        align: usize,
    },
    /// A reset found what is left of a lock file (not a creator's mark)
    /// locked with `flock` by another process, a flock(1) user say, for
    /// the whole init timeout; nothing was changed.
    #[error(
        "reset {path}: another process holds the file's flock (a flock(1) user, say) after {waited:?}; try again when it lets go"
    )]
    FlockHeld {
        /// The path.
        path: PathBuf,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// The file's creator is still initialising it (it holds the init
    /// `flock`) after the init timeout.
    #[error("open {path}: still being initialised by another process after {waited:?}")]
    InitTimeout {
        /// The path.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The final mode is not one a lock file may have: the owner must read
    /// and write it, and execute, set-user-ID, set-group-ID and sticky bits
    /// are refused (a lock file is never run; an executable one invites
    /// someone to run it). Match it with `..`
    /// (`Error::InvalidMode { mode, .. }`): more fields may come.
    #[error("mode {mode:#o} is not usable: {reason}")]
    #[non_exhaustive]
    InvalidMode {
        /// The mode asked for.
        mode: u32,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The file was created in another PID namespace. Robust futexes store
    /// namespace-local TIDs, so two namespaces can both "own" the lock.
    #[error(
        "open {path}: created in PID namespace {file_ns}, this process is in {ours}; TIDs would clash (see OpenOptions::allow_foreign_pid_namespace)"
    )]
    PidNamespaceMismatch {
        /// The path.
        path: PathBuf,
        /// The creator's PID-namespace inode.
        file_ns: u64,
        /// Ours.
        ours: u64,
    },
    /// `reset` without `force` on a mutex that is not broken.
    #[error("reset {path}: the mutex is {state}, not broken; use force to reset it anyway")]
    ResetRefused {
        /// The path.
        path: PathBuf,
        /// Its state.
        state: crate::LockState,
    },
    /// The file carries the creator's mark (mode 0400) and is not a ready
    /// lock yet: a creator is at work on it, or one died before finishing.
    /// Read-only callers ([`inspect`](crate::inspect())) report it and
    /// leave it alone; the next [`open`](crate::OpenOptions::open) waits for
    /// a live creator or takes over from a dead one.
    #[error(
        "open {path}: being created, or its creator died before finishing (mode 0400, not ready); the next open finishes it or takes it over (left untouched)"
    )]
    BeingCreated {
        /// The path.
        path: PathBuf,
    },
    /// [`remove`](crate::remove()) without
    /// [`force`](crate::RemoveOptions::force) on a lock that is held, or
    /// whose state a removal would discard (owner-dead, not recoverable,
    /// stuck: see [`remove`](crate::remove()) for each). The file is left
    /// untouched.
    #[error("remove {path}: the lock is {state}: {}", remove_refused_why(*.state, .holder, *.kind, .path))]
    RemoveRefused {
        /// The path.
        path: PathBuf,
        /// Its state (for a semaphore, its worst permit's: see
        /// [`Inspected::state`](crate::Inspected::state)).
        state: crate::LockState,
        /// The holder, or the dead holder, when its owner record names it
        /// (for a semaphore, the first such permit's).
        holder: Option<crate::OwnerInfo>,
        /// The file's kind; `None` for a bare (pymutex) file.
        kind: Option<crate::LockKind>,
    },
    /// [`reset`](crate::reset()) without `force` on a file that is empty or
    /// a mutex file cut short: it holds no lock to carry over. With `force`,
    /// a reset replaces it with a new mutex.
    #[error(
        "reset {path}: the file is {found} ({len} bytes), so it holds no lock to carry over; use force to replace it with a new mutex"
    )]
    ResetNeedsForce {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// What was found: "empty", "cut short", or "left unfinished by a
        /// creator that died".
        found: &'static str,
    },
    /// The filesystem has no room for the file's blocks (ENOSPC), or the
    /// user's disk quota is used up (EDQUOT). Creation, a takeover of a
    /// crashed creation and a reset's replacement reserve every block of the
    /// file (`posix_fallocate`) before they map it, so a full disk is this
    /// error and never a SIGBUS. Nothing is left behind that anyone could
    /// fault on: a creator removes its own new file, a takeover leaves the
    /// crashed creator's file still marked as a leftover (its contents as
    /// they were; on some filesystems, ext4 say, a failed reservation may
    /// have grown it, with allocated zeros) and the next opener takes it over
    /// once there is room; a reset leaves the old file as it was. `source` is
    /// the OS error ([`io::ErrorKind::StorageFull`] or
    /// [`io::ErrorKind::QuotaExceeded`]).
    #[error(
        "{op} {path}: no space left for the lock file ({source}); free some space and try again"
    )]
    NoSpace {
        /// What was being done: "create", "take over", "reset".
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path is on a read-only filesystem (EROFS), and opening a lock
    /// (or creating or resetting one) needs to write it.
    #[error("{op} {path}: on a read-only filesystem; a lock file must be writable")]
    ReadOnlyFilesystem {
        /// What was being done: "open", "take over", "reset".
        op: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// [`reset`](crate::reset()): while it waited for the file's lock, the
    /// path was removed or made to name another file (not by a reset). The
    /// reset gave up: nothing was changed, neither the file it had opened
    /// nor the one now at the path (which may be a live lock).
    #[error(
        "reset {path}: the file was removed or replaced while this reset waited for it; nothing was changed: look at it again"
    )]
    ChangedUnderneath {
        /// The path.
        path: PathBuf,
    },
    /// [`reset`](crate::reset()) without `force` of a version-1 file one of
    /// whose locks a live process held through the whole wait: a conversion
    /// needs every lock free. The file is left as it was.
    #[error(
        "reset {path}: converting format version 1 needs every lock free, and one stays held by a live process: stop the version-1 processes, or use force: they then find the old lock not recoverable"
    )]
    ConversionRefused {
        /// The path.
        path: PathBuf,
    },
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "mmap".
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A label longer than an owner record holds
/// ([`LabelTooLong::LIMIT`] bytes); the record keeps its previous label.
///
/// # Examples
/// ```
/// use robust_mutex::LabelTooLong;
/// # let dir = tempfile::tempdir()?;
/// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
/// let mut g = m.lock_or_recover(|v| *v = 0)?;
/// let e = g.set_label(&"x".repeat(100)).unwrap_err();
/// assert_eq!(e, LabelTooLong { len: 100 });
/// assert_eq!(e.to_string(), "label of 100 bytes is too long: an owner record holds at most 88");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "label of {len} bytes is too long: an owner record holds at most {}",
    Self::LIMIT
)]
pub struct LabelTooLong {
    /// The label's length in bytes.
    pub len: usize,
}

impl LabelTooLong {
    /// The most bytes of UTF-8 a label may have.
    pub const LIMIT: usize = crate::file::layout::LABEL_MAX;
}

/// [`Error::UnsupportedVersion`]'s text: for an older file, the way to
/// convert it; for a newer one, that this build is too old.
fn version_text(path: &std::path::Path, found: u32, expected: u32) -> String {
    let p = path.display();
    if found == crate::file::layout::MIGRATABLE_VERSION && found < expected {
        let arg = shell_word(&p.to_string());
        format!(
            "open {p}: format version {found}, written by an earlier robust-mutex; this build reads version {expected}: stop processes running the old version first, then `robust-mutex reset {arg}` (or robust_mutex::reset) converts it and keeps the value"
        )
    } else if found > expected {
        format!(
            "open {p}: format version {found}, written by a newer robust-mutex; this build reads version {expected}: upgrade robust-mutex to use it"
        )
    } else {
        format!("open {p}: format version {found}, this build reads version {expected}")
    }
}

/// `s` as one word to paste into a shell command: as it is if every
/// character is plainly safe, else in single quotes (a quote inside as
/// `'\''`), with control characters escaped so that the message stays one
/// line.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_owned();
    }
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The rest of [`Error::RemoveRefused`]'s message: why, and the way out.
fn remove_refused_why(
    state: crate::LockState,
    holder: &Option<crate::OwnerInfo>,
    kind: Option<crate::LockKind>,
    path: &std::path::Path,
) -> String {
    use crate::LockState::*;
    let repair = match kind {
        Some(crate::LockKind::Mutex | crate::LockKind::Reentrant) => format!(
            "Reset it to repair (`robust-mutex reset {}`), or use force to remove it anyway",
            path.display()
        ),
        _ => "It cannot be reset: use force to remove it anyway".to_owned(),
    };
    match state {
        Locked => {
            let by = holder
                .as_ref()
                .map_or(String::new(), |o| format!(" by pid {}", o.pid));
            format!(
                "held{by}; with the file gone, the next opener would take a new lock while this one is held; use force to remove it anyway"
            )
        }
        OwnerDead => "its holder died and the next locker would run its repair; removing it discards that. Let the next locker repair it, or use force to remove it anyway".to_owned(),
        NotRecoverable => format!(
            "a recovery was abandoned and the state was never repaired; removing it would let the next opener start clean on it. {repair}"
        ),
        _ => format!(
            "its holder is gone but the lock was never released; removing it would let the next opener start clean, skipping the repair. {repair}"
        ),
    }
}

/// Why a lock was not acquired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// `try_lock`: another thread or process holds the lock.
    #[error("the mutex is locked by another thread or process")]
    WouldBlock,
    /// `lock_timeout`: the lock was not free before the deadline.
    #[error("timed out waiting for the mutex")]
    TimedOut,
    /// The calling thread already holds the lock (ERRORCHECK's EDEADLK).
    #[error("the calling thread already holds the mutex")]
    Deadlock,
    /// A previous owner died and its successor released the lock without
    /// marking the state consistent. Only a reset brings the mutex back.
    #[error(
        "the mutex is not recoverable: an owner died and the state was never repaired; reset it"
    )]
    NotRecoverable,
    /// The wait was abandoned through a [`CancelToken`](crate::CancelToken).
    /// The lock was not taken and its state is unchanged.
    #[error("the wait for the mutex was cancelled")]
    Cancelled,
    /// A signal interrupted the wait, and its [`CancelToken`](crate::CancelToken)
    /// ends waits on signals ([`CancelToken::ending_on_signals`](crate::CancelToken::ending_on_signals)).
    /// The lock was not taken.
    #[error("the wait for the mutex was interrupted by a signal")]
    Interrupted,
    /// An unexpected OS error.
    #[error("mutex operation failed: {0}")]
    Io(#[from] io::Error),
    /// The lock word names a thread that no longer exists, and the kernel
    /// never marked the owner dead (its robust-list walk stopped: more than
    /// 2048 held locks, the mapping unmapped while held, the OOM reaper; a
    /// holder without a robust list; a file from a crashed boot). Nobody
    /// will ever release it: waiting would never end. Found within about a
    /// second of waiting; never reported for a holder that is merely
    /// exiting, nor for a file shared with another PID namespace
    /// (`allow_foreign_pid_namespace`: its TIDs are not ours to check).
    #[error("{}", stuck_text(path, *permit, *tid, remedy))]
    Stuck {
        /// The dead holder's TID (in this PID namespace).
        tid: u32,
        /// The lock's path.
        path: PathBuf,
        /// The permit, for a semaphore.
        permit: Option<usize>,
        /// The way out, in words: reset a mutex file, replace a semaphore,
        /// recreate a bare file.
        remedy: &'static str,
    },
    /// The calling thread already holds
    /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD) locks: one more
    /// might not be released by the kernel if the thread died.
    #[error(
        "this thread already holds {held} locks, the most one thread may hold ({max}): the kernel could not release more at its death"
    )]
    TooManyHeld {
        /// Locks the thread holds.
        held: usize,
        /// [`MAX_HELD_PER_THREAD`](crate::MAX_HELD_PER_THREAD).
        max: usize,
    },
    /// An unlock found the lock word no longer naming the calling thread:
    /// the file was truncated, reset or otherwise overwritten under the
    /// holder (or the guard was inherited through `fork`). Nothing was
    /// unlocked and the owner record was left as it was.
    #[error(
        "unlock {path}: this thread no longer holds the lock: the file was truncated, reset or otherwise changed under the holder (or the guard came through fork); nothing was unlocked"
    )]
    NotOwner {
        /// The lock's path.
        path: PathBuf,
    },
    /// After waiting, the file's header no longer said READY: the file was
    /// truncated or overwritten while in use. The lock was let go at once;
    /// it protects nothing any more.
    #[error(
        "{path}: the file was truncated or overwritten while in use; its lock protects nothing now: replace it (`robust-mutex reset --force {path}` or robust_mutex::reset)"
    )]
    FileChanged {
        /// The lock's path.
        path: PathBuf,
    },
}

/// [`LockError::Stuck`]'s text: the dead TID and the way out.
fn stuck_text(path: &std::path::Path, permit: Option<usize>, tid: u32, remedy: &str) -> String {
    let p = path.display();
    let what = match permit {
        Some(i) => format!("permit {i}"),
        None => "the lock".to_owned(),
    };
    let remedy = remedy.replace("<path>", &p.to_string());
    format!(
        "{p}: {what} is stuck: its holder, thread {tid}, is gone and the kernel never released it; {remedy}"
    )
}
