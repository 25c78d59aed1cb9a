//! The pthread mutex calls: raw `libc`, because `nix` has no pthread mutex
//! API, plus `pthread_mutex_clocklock`, which the `libc` crate lacks and is
//! declared here by hand.

use std::io;

use super::cvt_nz;

unsafe extern "C" {
    /// glibc >= 2.30. Not declared by the `libc` crate. Waits against `clock`
    /// (we pass CLOCK_MONOTONIC), so wall-clock jumps neither stretch nor cut
    /// a wait, unlike `pthread_mutex_timedlock`.
    pub fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The kind of mutex to initialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// PTHREAD_MUTEX_ERRORCHECK: relock gives EDEADLK.
    ErrorCheck,
    /// PTHREAD_MUTEX_RECURSIVE: the owner may lock again.
    Recursive,
}

/// Frees a `pthread_mutexattr_t` on every path out of [`mutex_init`].
struct AttrGuard(libc::pthread_mutexattr_t);

impl Drop for AttrGuard {
    fn drop(&mut self) {
        // SAFETY: the attribute was initialised by pthread_mutexattr_init and
        // is destroyed exactly once, here.
        let r = unsafe { libc::pthread_mutexattr_destroy(&mut self.0) };
        debug_assert_eq!(r, 0);
    }
}

/// Initialises a robust, process-shared mutex of `kind` in place.
///
/// # Safety
/// `m` points to writable memory of `size_of::<pthread_mutex_t>()` bytes,
/// suitably aligned, inside a MAP_SHARED mapping, that no thread or process
/// is using as a mutex (it is being created or provably abandoned).
pub(crate) unsafe fn mutex_init(m: *mut libc::pthread_mutex_t, kind: MutexKind) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is writable memory for an attribute object.
    cvt_nz(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
    // SAFETY: pthread_mutexattr_init succeeded, so `attr` is initialised.
    let mut attr = AttrGuard(unsafe { attr.assume_init() });
    let ty = match kind {
        MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
        MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
    };
    // SAFETY: `attr.0` is an initialised attribute object.
    cvt_nz(unsafe { libc::pthread_mutexattr_settype(&mut attr.0, ty) })?;
    // SAFETY: as above.
    cvt_nz(unsafe {
        libc::pthread_mutexattr_setpshared(&mut attr.0, libc::PTHREAD_PROCESS_SHARED)
    })?;
    // SAFETY: as above.
    cvt_nz(unsafe { libc::pthread_mutexattr_setrobust(&mut attr.0, libc::PTHREAD_MUTEX_ROBUST) })?;
    // SAFETY: the caller guarantees `m` is valid, aligned and unused; `attr`
    // is initialised. The mutex is initialised where it lives, never copied.
    cvt_nz(unsafe { libc::pthread_mutex_init(m, &attr.0) })
}

/// What a successful lock call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The lock is ours and the state consistent.
    Clean,
    /// EOWNERDEAD: the lock is ours, the previous owner died holding it.
    OwnerDied,
}

/// Why a lock call did not return the lock.
#[derive(Debug)]
pub(crate) enum LockFail {
    /// EBUSY or ETIMEDOUT.
    Busy,
    /// EDEADLK: this thread already holds it.
    Deadlock,
    /// ENOTRECOVERABLE.
    NotRecoverable,
    /// Anything else.
    Other(io::Error),
}

/// Classifies a pthread lock return code before converting it.
pub(crate) fn classify_lock(rc: libc::c_int) -> Result<Locked, LockFail> {
    match rc {
        0 => Ok(Locked::Clean),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        libc::EBUSY | libc::ETIMEDOUT => Err(LockFail::Busy),
        libc::EDEADLK => Err(LockFail::Deadlock),
        libc::ENOTRECOVERABLE => Err(LockFail::NotRecoverable),
        e => Err(LockFail::Other(io::Error::from_raw_os_error(e))),
    }
}

/// `pthread_mutex_clocklock(CLOCK_MONOTONIC)` with an absolute deadline.
///
/// Also used with an already-passed deadline in place of
/// `pthread_mutex_trylock`, whose glibc implementation leaves a
/// not-recoverable mutex locked by the caller (the "trylock bug").
///
/// # Safety
/// `m` points to an initialised robust mutex in a live mapping.
#[inline]
pub(crate) unsafe fn mutex_clocklock(
    m: *mut libc::pthread_mutex_t,
    deadline: &libc::timespec,
) -> Result<Locked, LockFail> {
    // SAFETY: forwarded from the caller's contract; `deadline` is a valid timespec.
    classify_lock(unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, deadline) })
}

/// [`mutex_clocklock`], returning glibc's code as is: for the lock fast
/// path, which only tests it for 0 and leaves the rest to
/// [`classify_lock`] out of line.
///
/// # Safety
/// As [`mutex_clocklock`].
#[inline(always)]
pub(crate) unsafe fn mutex_clocklock_rc(
    m: *mut libc::pthread_mutex_t,
    deadline: &libc::timespec,
) -> libc::c_int {
    // SAFETY: forwarded from the caller's contract; `deadline` is a valid timespec.
    unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, deadline) }
}

/// `pthread_mutex_unlock`.
///
/// # Safety
/// `m` points to an initialised robust mutex in a live mapping, locked by
/// the calling thread.
#[inline]
pub(crate) unsafe fn mutex_unlock(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: forwarded from the caller's contract.
    cvt_nz(unsafe { libc::pthread_mutex_unlock(m) })
}

/// `pthread_mutex_unlock`, returning its code as is: for the release fast
/// path, which must not build an `io::Error` it only checks in debug builds.
///
/// # Safety
/// As [`mutex_unlock`].
#[inline(always)]
pub(crate) unsafe fn mutex_unlock_rc(m: *mut libc::pthread_mutex_t) -> libc::c_int {
    // SAFETY: forwarded from the caller's contract.
    unsafe { libc::pthread_mutex_unlock(m) }
}

/// `pthread_mutex_consistent`.
///
/// # Safety
/// `m` points to a robust mutex that the calling thread acquired with
/// EOWNERDEAD and has not yet unlocked (glibc does not check the caller).
pub(crate) unsafe fn mutex_consistent(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: forwarded from the caller's contract.
    cvt_nz(unsafe { libc::pthread_mutex_consistent(m) })
}

// ---------------------------------------------------------------------------
// Bare (pymutex) files: src/bare/
// ---------------------------------------------------------------------------

/// The size of one `pthread_mutex_t`, the whole of a bare (pymutex) file.
pub(crate) const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// The bytes of a freshly initialised robust, process-shared mutex of
/// `kind`, made in private memory. glibc's `pthread_mutex_init` stores no
/// address (it clears the mutex and sets `__kind`), so these bytes are a
/// valid unlocked mutex wherever they are written: pymutex creates its files
/// this way, initialising a buffer and writing it with one `write`.
pub(crate) fn initialised_mutex_bytes(kind: MutexKind) -> io::Result<[u8; MUTEX_SIZE]> {
    let mut scratch = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
    // SAFETY: `scratch` is private, aligned, zeroed memory that nobody uses
    // as a mutex; it is only copied out below, never locked.
    unsafe { mutex_init(scratch.as_mut_ptr(), kind) }?;
    let mut out = [0u8; MUTEX_SIZE];
    // SAFETY: `scratch` is MUTEX_SIZE bytes of initialised plain memory and
    // `out` is a distinct array of the same length.
    unsafe {
        std::ptr::copy_nonoverlapping(scratch.as_ptr().cast::<u8>(), out.as_mut_ptr(), MUTEX_SIZE)
    };
    Ok(out)
}
