//! Process control for `run`: the only system calls this program makes
//! itself, through `nix` (raw libc only where nix lacks a call, said there).
//! The parent-death signal, waiting for COMMAND's exit without reaping it,
//! pipes and inherited descriptors, COMMAND's process group and the
//! terminal handed to it, and the init's reaping. Signals are in
//! [`crate::signals`], the PID namespace and its keeper in [`crate::ns`],
//! the tree beacon in [`crate::beacon`].

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::prctl;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::{self, Pid};
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

/// The pid of `child`, as nix spells it. Pids are below 2^22
/// (PID_MAX_LIMIT), so the cast never wraps.
pub fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
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

/// A pipe whose ends are both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// Lets `fd` pass through exec (for the one child it is meant for), or not.
pub fn set_inherited(fd: BorrowedFd<'_>, inherited: bool) -> io::Result<()> {
    let flags = if inherited {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Whether the writer of the pipe `fd` reads from still has it open: a
/// read that would block means yes, end of file means no.
pub fn writer_alive(fd: BorrowedFd<'_>) -> bool {
    let nonblocking = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut byte = [0u8; 1];
    nonblocking.is_ok() && unistd::read(fd, &mut byte) == Err(Errno::EAGAIN)
}

/// Makes a child receive SIGKILL when this process dies. Unlike
/// [`die_with_parent`] it does not compare parent pids: a child in a new
/// PID namespace sees its parent as pid 0. Its caller checks instead, after
/// exec, that we are still there ([`writer_alive`]).
pub fn die_with_parent_unchecked(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe and does not allocate.
    unsafe { cmd.pre_exec(|| Ok(prctl::set_pdeathsig(Signal::SIGKILL)?)) };
}

/// Makes COMMAND the leader of a process group of its own, so that
/// [`kill_group`] reaches what it starts (unless that leaves the group).
pub fn own_process_group(cmd: &mut Command) {
    cmd.process_group(0);
}

/// `run`'s process group, when it gave the terminal to COMMAND's group
/// ([`hand_terminal`]); 0 otherwise.
static TERMINAL_OWNER: AtomicI32 = AtomicI32::new(0);

/// With the process-group fallback: if `run`'s group has the foreground of
/// the terminal on stdin, COMMAND's new group takes it (in the child,
/// before exec, so COMMAND never starts in the background), so that
/// COMMAND may read from it and gets its Ctrl-C directly. Call after
/// [`own_process_group`]; [`take_back_terminal`] gives it back.
pub fn hand_terminal(cmd: &mut Command) {
    let stdin = io::stdin();
    if !std::io::IsTerminal::is_terminal(&stdin) {
        return;
    }
    let ours = unistd::getpgrp();
    if unistd::tcgetpgrp(stdin.as_fd()).ok() != Some(ours) {
        return; // `run` runs in the background: leave it so
    }
    TERMINAL_OWNER.store(ours.as_raw(), SeqCst);
    let hook = || -> io::Result<()> {
        // In the child, already leading its own (background) group:
        // tcsetpgrp raises SIGTTOU there unless it is blocked.
        let old = SigSet::from(Signal::SIGTTOU).thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        // SAFETY: fd 0 is borrowed for one ioctl; if it is closed, the
        // call fails with EBADF and nothing else happens.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let _ = unistd::tcsetpgrp(stdin, unistd::getpgrp());
        old.thread_set_mask()?;
        Ok(())
    };
    // SAFETY: it runs in the forked child before exec and makes only
    // async-signal-safe system calls (sigprocmask, getpgrp, ioctl).
    unsafe { cmd.pre_exec(hook) };
}

/// Gives the terminal on stdin back to `run`'s group, if
/// [`hand_terminal`] gave it away.
pub fn take_back_terminal() {
    let owner = TERMINAL_OWNER.swap(0, SeqCst);
    if owner == 0 {
        return;
    }
    // From a background group, tcsetpgrp(3) raises SIGTTOU unless blocked.
    let mask = SigSet::from(Signal::SIGTTOU).thread_swap_mask(SigmaskHow::SIG_BLOCK);
    let _ = unistd::tcsetpgrp(io::stdin().as_fd(), Pid::from_raw(owner));
    if let Ok(mask) = mask {
        let _ = mask.thread_set_mask();
    }
}

/// SIGKILLs the process group led by `child`, which has exited but is not
/// reaped yet, so its pid (and the group's id) is not anyone else's.
pub fn kill_group(child: &Child) {
    let _ = signal::killpg(pid_of(child), Signal::SIGKILL);
}

/// How a child ended, as waitpid(2) tells it.
pub enum Reaped {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number (real-time ones too).
    Signal(i32),
}

/// Reaps any one child (waitpid(-1)): its pid and how it ended; None when
/// there are no children left.
///
/// Raw libc: nix's `waitpid` fails with EINVAL on a child killed by a
/// real-time signal (it has no `Signal` for it), after the child has been
/// reaped, so its pid and status would be lost.
pub fn reap_any() -> Option<(i32, Reaped)> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid, writable c_int for the call.
        let pid = unsafe { nix::libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            let how = if nix::libc::WIFSIGNALED(status) {
                Reaped::Signal(nix::libc::WTERMSIG(status))
            } else {
                Reaped::Code(nix::libc::WEXITSTATUS(status))
            };
            return Some((pid, how));
        }
        if Errno::last() != Errno::EINTR {
            return None;
        }
    }
}

/// Takes ownership of a descriptor this process was started with (named
/// on its command line by its parent); None if `fd` is not open.
pub fn adopt_fd(fd: i32) -> Option<OwnedFd> {
    // Checked first, so that no OwnedFd ever names a closed descriptor.
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: `fd` is open (checked above), was handed to this process for
    // it alone, and nothing else in this process owns or closes it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
