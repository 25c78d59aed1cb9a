//! Signals for `run`: forwarding SIGINT, SIGTERM, SIGHUP and SIGQUIT to
//! COMMAND (and cancelling the wait for the lock on one, through
//! [`CANCEL`]), dying of a signal as COMMAND did, and the SIGBUS handler
//! that reports a truncated lock file.

use crate::exit::code;
use crate::format::path_text;
use crate::os::pid_of;
use nix::errno::Errno;
// nix has no names of its own for these: the handler's signature is nix's
// `SigHandler::SigAction`, spelled with libc's `siginfo_t` (nix re-exports
// libc), and nix names no `si_code` values, so SI_KERNEL and BUS_ADRERR are
// libc's constants.
use nix::libc::{BUS_ADRERR, SI_KERNEL, siginfo_t};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{self, Pid};
use robust_mutex::CancelToken;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::Child;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

/// The signals `run` forwards to COMMAND (as timeout(1) does), and that
/// abandon a wait for the lock.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// `TARGET` while waiting for the lock: a signal cancels the wait.
const WAITING: i32 = 0;
/// `TARGET` while no COMMAND runs and the wait is over: a signal is
/// only recorded.
const NO_TARGET: i32 = -1;

/// WAITING, NO_TARGET, or the pid of the running COMMAND.
static TARGET: AtomicI32 = AtomicI32::new(WAITING);
/// The number of the last signal that was not forwarded (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);
/// Abandons the wait for the lock.
pub static CANCEL: CancelToken = CancelToken::new();

/// The handler of [`FORWARDED`]. Async-signal-safe: atomics, errno, and
/// the `nix` wrappers of kill, getpgid and getpgrp (plain system calls that
/// neither allocate nor lock), and [`CancelToken::cancel`].
extern "C" fn on_signal(sig: c_int, info: *mut siginfo_t, _: *mut c_void) {
    // Saved and restored: the interrupted code may be about to read errno.
    let errno = Errno::last_raw();
    let target = TARGET.load(SeqCst);
    if target > 0 {
        let target = Pid::from_raw(target);
        // A terminal's Ctrl-C reaches the whole foreground process
        // group, COMMAND included: do not deliver it twice.
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t
        // (checked for null anyway), which we only read.
        let from_tty = !info.is_null() && unsafe { (*info).si_code } == SI_KERNEL;
        let same_group = unistd::getpgid(Some(target)).is_ok_and(|g| g == unistd::getpgrp());
        if !(from_tty && same_group) {
            // `target` is our child, not yet reaped (see
            // `wait_exit_no_reap`), so it is not another process reusing
            // the pid. `sig` is one of FORWARDED, so it converts.
            if let Ok(sig) = Signal::try_from(sig) {
                let _ = signal::kill(target, sig);
            }
        }
    } else {
        PENDING.store(sig, SeqCst);
        if target == WAITING {
            CANCEL.cancel(); // async-signal-safe: a store and a futex wake
        }
    }
    Errno::set_raw(errno);
}

/// Installs the forwarding handler for [`FORWARDED`]; a signal that is
/// ignored (e.g. under nohup) stays ignored, and COMMAND inherits that.
pub fn install_forwarding() {
    let ours = SigAction::new(
        SigHandler::SigAction(on_signal),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // nix's sigaction cannot only look (no null new action): ours goes
        // in, and an ignored disposition found there is put back. The
        // signal is blocked meanwhile, so it cannot reach `on_signal` in
        // between; one that arrives then is discarded when SIG_IGN returns.
        let mask = SigSet::from(sig).thread_swap_mask(SigmaskHow::SIG_BLOCK);
        // The old action is never called: it is only tested for SIG_IGN,
        // and then put back exactly as the kernel gave it.
        // SAFETY: `on_signal` is async-signal-safe (see its doc) and only
        // shares atomics with the rest of the program.
        unsafe {
            if let Ok(old) = signal::sigaction(sig, &ours) {
                if matches!(old.handler(), SigHandler::SigIgn) {
                    let _ = signal::sigaction(sig, &old);
                }
            }
        }
        if let Ok(mask) = mask {
            let _ = mask.thread_set_mask();
        }
    }
}

/// The wait is over: from now on signals are recorded, not cancelling.
pub fn lock_taken() {
    TARGET.store(NO_TARGET, SeqCst);
}

/// The signal that abandoned the wait, or arrived while no COMMAND ran.
pub fn pending_signal() -> Option<i32> {
    match PENDING.load(SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Forward signals to `child` from now on, starting with one that arrived
/// while COMMAND was being started.
pub fn forward_to(child: &Child) {
    let pid = pid_of(child);
    TARGET.store(pid.as_raw(), SeqCst);
    let sig = PENDING.swap(0, SeqCst);
    if let Ok(sig) = Signal::try_from(sig) {
        // `pid` is our unreaped child.
        let _ = signal::kill(pid, sig);
    }
}

/// SIGKILLs `child`, which has exited or not but is not reaped yet (so its
/// pid is not anyone else's).
pub fn kill(child: &Child) {
    let _ = signal::kill(pid_of(child), Signal::SIGKILL);
}

/// Stop forwarding (before COMMAND is reaped).
pub fn stop_forwarding() {
    TARGET.store(NO_TARGET, SeqCst);
}

/// The line the SIGBUS handler writes, formatted before anything is mapped:
/// the handler itself may only write(2) and _exit(2).
static TRUNCATED_LINE: OnceLock<Box<[u8]>> = OnceLock::new();

/// The handler of SIGBUS: a fault on a mapped file past its end (`si_code`
/// BUS_ADRERR) means someone truncated PATH while this program used it.
/// Async-signal-safe: an atomic load (`OnceLock::get` after it was set),
/// write(2) and _exit(2).
extern "C" fn on_sigbus(_: c_int, info: *mut siginfo_t, _: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (checked
    // for null anyway), which we only read.
    let past_end = !info.is_null() && unsafe { (*info).si_code } == BUS_ADRERR;
    if past_end {
        if let Some(line) = TRUNCATED_LINE.get() {
            // SAFETY: fd 2 is borrowed for one write(2); if it is closed,
            // write fails with EBADF and nothing else happens.
            let stderr = unsafe { BorrowedFd::borrow_raw(2) };
            let _ = unistd::write(stderr, line);
        }
        // nix has no `_exit`; `std::process::exit` is not async-signal-safe.
        // SAFETY: _exit(2) is async-signal-safe and never returns.
        unsafe { nix::libc::_exit(i32::from(code::IO)) };
    }
    // Another bus error (a bug, not truncation): die of it as before. With
    // the default action back, the faulting access faults again.
    // SAFETY: SIG_DFL is no handler; sigaction is async-signal-safe.
    let _ = unsafe { signal::signal(Signal::SIGBUS, SigHandler::SigDfl) };
}

/// Ends the program as the SIGBUS handler does: PATH (as given to
/// [`catch_truncation`]) was truncated while in use; exit 74.
pub fn truncated_exit() -> ! {
    if let Some(line) = TRUNCATED_LINE.get() {
        let _ = io::Write::write_all(&mut io::stderr(), line);
    }
    std::process::exit(i32::from(code::IO))
}

/// From now on a SIGBUS from a truncated mapping ends the program with one
/// line, "robust-mutex: PATH was truncated while in use", and exit code 74,
/// instead of a silent "Bus error" (135). Call before PATH is mapped.
pub fn catch_truncation(path: &Path) {
    let line = format!(
        "robust-mutex: {} was truncated while in use\n",
        path_text(path)
    );
    let _ = TRUNCATED_LINE.set(line.into_bytes().into_boxed_slice());
    let ours = SigAction::new(
        SigHandler::SigAction(on_sigbus),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    // SAFETY: `on_sigbus` is async-signal-safe (see its doc) and reads only
    // `TRUNCATED_LINE`, set above, before the handler is installed.
    let _ = unsafe { signal::sigaction(Signal::SIGBUS, &ours) };
}

/// Ends this process as `sig` would (so that its parent sees the same
/// signal); 128+N when `sig` has no `Signal` (a real-time one).
pub fn die_of(sig: c_int) -> ! {
    if let Ok(s) = Signal::try_from(sig) {
        // SAFETY: SIG_DFL is no handler; nothing else runs in this process.
        let _ = unsafe { signal::signal(s, SigHandler::SigDfl) };
        let _ = SigSet::from(s).thread_unblock();
        let _ = signal::raise(s);
    }
    std::process::exit(i32::from(crate::exit::with_signal(sig)))
}
