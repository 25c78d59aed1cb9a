//! Process control for `run`: the only system calls this program makes
//! itself, all through `nix`. Signal forwarding to COMMAND (and cancelling
//! the wait for the lock on a signal), the parent-death signal, and waiting
//! for COMMAND's exit without reaping it.

use nix::errno::Errno;
// nix has no names of its own for these: the handler's signature is nix's
// `SigHandler::SigAction`, spelled with libc's `siginfo_t` (nix re-exports
// libc), and nix names no `si_code` values, so SI_KERNEL is libc's constant.
use nix::libc::{SI_KERNEL, siginfo_t};
use nix::sys::prctl;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::{self, Pid};
use robust_mutex::CancelToken;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
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

/// The pid of `child`, as nix spells it. Pids are below 2^22
/// (PID_MAX_LIMIT), so the cast never wraps.
fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
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

/// Stop forwarding (before COMMAND is reaped).
pub fn stop_forwarding() {
    TARGET.store(NO_TARGET, SeqCst);
}

/// Makes COMMAND receive SIGKILL when `run` dies, and never start if
/// `run` is already dead.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = unistd::getpid();
    let hook = move || -> io::Result<()> {
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        if unistd::getppid() != parent {
            // `run` died before the prctl: never run unprotected.
            return Err(Errno::ESRCH.into());
        }
        Ok(())
    };
    // `hook` neither allocates nor takes locks (an `io::Error` from an
    // errno is a plain number).
    // SAFETY: it runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid).
    unsafe { cmd.pre_exec(hook) };
}

/// Waits until `child` has exited, leaving it unreaped (waitid with
/// WNOWAIT), so that its pid cannot be reused meanwhile.
pub fn wait_exit_no_reap(child: &Child) -> io::Result<()> {
    let pid = pid_of(child);
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            // With these valid arguments waitid(2) itself never fails with
            // EINVAL: it is nix failing to decode how the child ended (a
            // real-time signal has no `Signal`). It has exited all the same.
            Err(Errno::EINVAL) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
