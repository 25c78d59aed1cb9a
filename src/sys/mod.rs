//! The crate's operating-system layer. Every system call and foreign
//! function of the library goes through this module.
//!
//! # Through `nix` or std
//!
//! Every call that [`nix`] or std wraps goes through that wrapper. `nix`
//! errors become [`io::Error`] with `io::Error::from(Errno)`.
//!
//! - Files, in [`fs`]:
//!   - `open` (`nix::fcntl::open`): with `O_NOFOLLOW|O_CLOEXEC|O_NOCTTY|O_NONBLOCK`,
//!     with `O_CREAT|O_EXCL`, and with `O_TMPFILE`;
//!   - `fstat`, `lstat` and `fchmod` (`nix::sys::stat`), and `fstatfs`
//!     (`nix::sys::statfs`);
//!   - `flock` (`nix::fcntl::flock`);
//!   - `fchown`, `ftruncate` and `lseek(SEEK_HOLE)` (`nix::unistd`), and
//!     `posix_fallocate` and `fallocate` (`nix::fcntl`);
//!   - `pread` and `pwrite` (`nix::sys::uio`);
//!   - `linkat`, which names an `O_TMPFILE` file through `/proc/self/fd`
//!     (`nix::unistd::linkat`), and `rename` (`std::fs::rename`).
//! - Processes, in [`process`]: `getpid`, `gettid` and `geteuid`
//!   (`nix::unistd`), and the liveness probe `kill(pid, 0)`
//!   (`nix::sys::signal::kill(pid, None)`).
//! - Clocks, in [`clock`]: `clock_gettime(CLOCK_MONOTONIC)` for deadlines
//!   (`nix::time::clock_gettime`).
//! - The cached clock's thread (`crate::clock`), in [`process`]: spawned
//!   by std's `thread::Builder` with every signal blocked around the
//!   spawn (`nix::sys::signal::pthread_sigmask`).
//!
//! # Raw `libc`, and why
//!
//! Raw `libc` is used only where `nix` 0.32 has no API:
//!
//! - Pthread mutexes, in [`pthread`]:
//!   `pthread_mutexattr_{init,settype,setpshared,setrobust,destroy}` and
//!   `pthread_mutex_{init,unlock,consistent}`. nix's `pthread` module
//!   has only `pthread_self` and `pthread_kill`. `pthread_mutex_clocklock`
//!   (glibc >= 2.30) is missing from the `libc` crate too, so it is declared
//!   by hand in that file.
//! - Futexes, in [`futex`]: `syscall(SYS_futex, FUTEX_WAKE, ..)`,
//!   `FUTEX_WAIT_BITSET` on a shared word (condition waits, `crate::cond`) and
//!   `syscall(SYS_futex_waitv, ..)`, and `FUTEX_WAIT` on a private word
//!   (the cached clock's parked thread). nix has no futex API. The
//!   `struct futex_waitv` array is built from a hand-written `#[repr(C)]`
//!   struct, and its layout is checked at compile time.
//! - The fork hook, in [`process`]: `pthread_atfork`. nix does not wrap it.
//! - The owner record's timestamp, in [`clock`]:
//!   `clock_gettime(CLOCK_REALTIME_COARSE)` runs on acquisitions without a
//!   cached time (`crate::clock`), and
//!   nix's wrapper is not inlinable (it measured 7 more instructions per
//!   lock+unlock); this one call stays a direct vDSO call.
//! - glibc's mutex layout, in [`glibc`]: raw reads (and, for recovery,
//!   writes) of the lock word (`__lock`), `__owner` and `__kind` inside
//!   `pthread_mutex_t`, and, for a panic that counts as a death, the
//!   calling thread's robust list (`syscall(SYS_get_robust_list, ..)` and
//!   glibc's `__list` links). These are glibc and kernel ABI, which no
//!   wrapper crate models.
//!
//! The `libc` crate also still supplies plain types and constants, such as
//! `pthread_mutex_t`, `timespec`, the `S_IF*` file-type bits and the errno
//! values of the lock calls.
//!
//! The pthread lock calls' return codes (EOWNERDEAD, ENOTRECOVERABLE, EBUSY,
//! ETIMEDOUT, EDEADLK) are classified into [`Locked`] or [`LockFail`] before
//! anything is converted to [`io::Error`].

use std::io;

mod clock;
mod fs;
mod futex;
mod glibc;
mod process;
mod pthread;

pub(crate) use clock::{PAST_DEADLINE, coarse_unix_ns, deadline_after, deadline_passed};
pub(crate) use fs::{
    FileStat, create_exclusive, create_unnamed, fchmod, fchown, fill_holes, fs_type, fstat,
    funlock, has_hole_before, link_unnamed, lstat, open_existing, read_at, rename, reserve,
    set_len, try_flock_exclusive, unlink_if_same, write_all_at,
};
pub(crate) use futex::{
    FutexWait, Woke, futex_wait_private, futex_wait_shared, futex_waitv, futex_wake,
    release_dead_owner,
};
pub(crate) use glibc::{
    Death, FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS, die_holding, expected_kind_word,
    forget_held, glibc_kind_word, lock_word, lock_word_snapshot, mark_owner_died, mutex_count,
    mutex_not_recoverable, unlock_not_recoverable,
};
#[cfg(feature = "async")]
pub(crate) use process::at_exit;
pub(crate) use process::{
    at_fork_child, geteuid, getpid, gettid, no_such_task, pid_exists, readable,
    spawn_signals_blocked,
};
/// For the crate's own benches (`crate::internals`), which time glibc's call
/// directly.
#[cfg(feature = "test-hooks")]
pub use pthread::pthread_mutex_clocklock;
pub(crate) use pthread::{
    LockFail, Locked, MUTEX_SIZE, MutexKind, classify_lock, initialised_mutex_bytes,
    mutex_clocklock, mutex_clocklock_rc, mutex_consistent, mutex_init, mutex_unlock,
    mutex_unlock_rc,
};

/// Converts a pthread-style return (0 or an errno value) into a `Result`.
fn cvt_nz(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Runs a `nix` call, retrying it on EINTR, and converts its error into an
/// [`io::Error`] (the retry the former `cvt_r` did for raw `libc` calls).
fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => {}
            other => return other.map_err(io::Error::from),
        }
    }
}
