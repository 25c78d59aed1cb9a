//! Process and thread identity, liveness, the fork hook, and spawning a
//! thread with every signal blocked. Everything goes
//! through `nix` except `pthread_atfork`, which `nix` does not wrap.

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The calling process's pid.
pub(crate) fn getpid() -> u32 {
    nix::unistd::getpid().as_raw() as u32
}

/// The calling thread's kernel TID.
pub(crate) fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// The current uid.
pub(crate) fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether the kernel says there is no task `tid` in the caller's PID
/// namespace: `kill(tid, 0)` fails with ESRCH. Every other answer (success,
/// EPERM for another user's task) means it exists. (`kill` takes any TID,
/// not only a thread-group leader's.)
pub(crate) fn no_such_task(tid: u32) -> bool {
    match libc::pid_t::try_from(tid) {
        Ok(t) if t > 0 => kill(Pid::from_raw(t), None) == Err(Errno::ESRCH),
        _ => false,
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`; EPERM still means it exists).
pub(crate) fn pid_exists(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // Signal 0 (`None`) performs only the existence and permission check.
    matches!(kill(Pid::from_raw(p), None), Ok(()) | Err(Errno::EPERM))
}

/// Spawns `f` on a new thread named `name` with a `stack`-byte stack
/// (std's minimum if smaller), with every signal blocked in it: the
/// calling thread blocks them all around the spawn (a new thread inherits
/// its creator's mask) and restores its own mask after, so no
/// process-directed signal is ever delivered to the new thread. Through
/// nix's `pthread_sigmask` and std's `thread::Builder`.
///
/// # Errors
/// The mask could not be set (then nothing was spawned), or the thread
/// could not be created (`RLIMIT_NPROC`, a seccomp filter, no memory).
pub(crate) fn spawn_signals_blocked(
    name: &str,
    stack: usize,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(stack)
        .spawn(f);
    let restored = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    debug_assert!(restored.is_ok(), "pthread_sigmask restore: {restored:?}");
    spawned.map(drop) // detached: it runs until the process ends
}

/// Registers `child` to run in the child after every `fork()`.
pub(crate) fn at_fork_child(child: unsafe extern "C" fn()) {
    // SAFETY: the handler is a plain function that only touches atomics,
    // which is async-signal-safe and fine after fork.
    let r = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    debug_assert_eq!(r, 0);
}

/// Runs `f` at `exit()` (also on a return from `main`), before the
/// process ends. (`atexit(3)`: neither std nor nix offers it.)
#[cfg(feature = "async")]
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function that lives for the whole process.
    let r = unsafe { libc::atexit(f) };
    debug_assert_eq!(r, 0);
}

/// Whether the byte at `addr`, in one of this process's own mappings, can
/// be read without a fault: the kernel copies it for us
/// (`process_vm_readv` on our own pid, which needs no ptrace permission
/// within a thread group), and a page that a user access would take a
/// SIGBUS on (a file truncated under its mapping) is EFAULT there instead.
/// `None` where the call is refused (a seccomp filter, an old kernel): then
/// nothing is known.
pub(crate) fn readable(addr: *const u8) -> Option<bool> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    let mut byte = [0u8; 1];
    let local = &mut [std::io::IoSliceMut::new(&mut byte)];
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: 1,
    }];
    match process_vm_readv(nix::unistd::getpid(), local, &remote) {
        Ok(1) => Some(true),
        Ok(_) | Err(Errno::EFAULT) => Some(false),
        Err(_) => None,
    }
}
