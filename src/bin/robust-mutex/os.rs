//! Process control for `run`: the only system calls this program makes
//! itself. Signal forwarding to COMMAND (and cancelling the wait for the
//! lock on a signal), the parent-death signal, and waiting for COMMAND's
//! exit without reaping it.

use robust_mutex::CancelToken;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

/// The signals `run` forwards to COMMAND (as timeout(1) does), and that
/// abandon a wait for the lock.
const FORWARDED: [c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// `TARGET` while waiting for the lock: a signal cancels the wait.
const WAITING: i32 = 0;
/// `TARGET` while no COMMAND runs and the wait is over: a signal is
/// only recorded.
const NO_TARGET: i32 = -1;

/// WAITING, NO_TARGET, or the pid of the running COMMAND.
static TARGET: AtomicI32 = AtomicI32::new(WAITING);
/// The last signal that was not forwarded (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);
/// Abandons the wait for the lock.
pub static CANCEL: CancelToken = CancelToken::new();

extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno slot; saving
    // and restoring it keeps the interrupted code's errno intact.
    let errno = unsafe { *libc::__errno_location() };
    let target = TARGET.load(SeqCst);
    if target > 0 {
        // A terminal's Ctrl-C reaches the whole foreground process
        // group, COMMAND included: do not deliver it twice.
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t
        // (checked for null anyway), which we only read.
        let from_tty = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
        // SAFETY: getpgid and getpgrp take no pointers and are
        // async-signal-safe.
        let same_group = unsafe { libc::getpgid(target) == libc::getpgrp() };
        if !(from_tty && same_group) {
            // SAFETY: kill is async-signal-safe; `target` is our child,
            // not yet reaped (see `wait_exit_no_reap`), so it is not
            // another process reusing the pid.
            unsafe { libc::kill(target, sig) };
        }
    } else {
        PENDING.store(sig, SeqCst);
        if target == WAITING {
            CANCEL.cancel(); // async-signal-safe: a store and a futex wake
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Installs the forwarding handler for [`FORWARDED`]; a signal that is
/// ignored (e.g. under nohup) stays ignored, and COMMAND inherits that.
pub fn install_forwarding() {
    for sig in FORWARDED {
        // SAFETY: an all-zero `sigaction` is a valid value of the C
        // struct; sigaction(2) only reads `act` and writes `old`, both
        // valid for the call; `on_signal` is async-signal-safe (atomics,
        // kill, getpgid, getpgrp, CancelToken::cancel).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
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

/// Forward signals to `pid` from now on, starting with one that arrived
/// while COMMAND was being started.
pub fn forward_to(pid: libc::pid_t) {
    TARGET.store(pid, SeqCst);
    let sig = PENDING.swap(0, SeqCst);
    if sig != 0 {
        // SAFETY: kill takes no pointers; `pid` is our unreaped child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Stop forwarding (before COMMAND is reaped).
pub fn stop_forwarding() {
    TARGET.store(NO_TARGET, SeqCst);
}

/// Makes COMMAND receive SIGKILL when `run` dies, and never start if
/// `run` is already dead.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    let hook = move || -> io::Result<()> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only and is
        // async-signal-safe.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid takes no arguments and cannot fail.
        if unsafe { libc::getppid() } != parent {
            // `run` died before the prctl: never run unprotected.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: `hook` runs in the forked child before exec; it only makes
    // async-signal-safe system calls, and neither allocates nor takes locks.
    unsafe { cmd.pre_exec(hook) };
}

/// Waits until child `pid` has exited, leaving it unreaped (waitid with
/// WNOWAIT), so that its pid cannot be reused meanwhile.
pub fn wait_exit_no_reap(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of the C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`, valid for the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
