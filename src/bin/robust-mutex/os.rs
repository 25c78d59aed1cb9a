//! Process control for `run`: the only system calls this program makes
//! itself, through `nix` (raw libc only where nix lacks a call, said there).
//! Signal forwarding to COMMAND (and cancelling the wait for the lock on a
//! signal), the parent-death signal, waiting for COMMAND's exit without
//! reaping it, the PID namespace of `run --kill-tree` and its init's
//! reaping, and the SIGBUS handler that reports a truncated lock file.

use crate::exit::code;
use crate::format::path_text;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
// nix has no names of its own for these: the handler's signature is nix's
// `SigHandler::SigAction`, spelled with libc's `siginfo_t` (nix re-exports
// libc), and nix names no `si_code` values, so SI_KERNEL and BUS_ADRERR are
// libc's constants.
use nix::libc::{BUS_ADRERR, SI_KERNEL, siginfo_t};
use nix::sched::{self, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::{self, Pid};
use robust_mutex::CancelToken;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

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

/// SIGKILLs `child`, which has exited or not but is not reaped yet (so its
/// pid is not anyone else's).
pub fn kill(child: &Child) {
    let _ = signal::kill(pid_of(child), Signal::SIGKILL);
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

/// The kind of PID namespace this process may make for its next child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsKind {
    /// CLONE_NEWPID alone (root, or CAP_SYS_ADMIN).
    Privileged,
    /// CLONE_NEWPID with a new user namespace that maps only our own uid
    /// and gid (unprivileged user namespaces).
    User,
}

/// How far [`try_pid_namespace`] got: the step that failed.
#[derive(Clone, Copy)]
enum Step {
    Unshare = 1,
    Setgroups = 2,
    UidMap = 3,
    GidMap = 4,
}

/// The user namespace's maps, formatted before any fork (the probe's child
/// must not allocate).
struct Maps {
    uid: String,
    gid: String,
}

impl Maps {
    fn ours() -> Maps {
        let (uid, gid) = (unistd::geteuid(), unistd::getegid());
        Maps {
            uid: format!("{uid} {uid} 1"),
            gid: format!("{gid} {gid} 1"),
        }
    }
}

/// Writes `text` to a /proc file of this process. No allocation (nix's
/// `open` copies a short path to the stack), so it may run in a forked
/// child.
fn write_proc(file: &str, text: &str) -> nix::Result<()> {
    let fd = nix::fcntl::open(
        file,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    unistd::write(&fd, text.as_bytes()).map(drop)
}

/// Makes this process's next child the PID 1 of a new PID namespace:
/// privileged if allowed, else through a new user namespace with `maps`.
/// No allocation: the probe's forked child runs it too.
fn try_pid_namespace(maps: &Maps) -> Result<NsKind, (Step, Errno)> {
    match sched::unshare(CloneFlags::CLONE_NEWPID) {
        Ok(()) => return Ok(NsKind::Privileged),
        Err(Errno::EPERM) => {}
        Err(e) => return Err((Step::Unshare, e)),
    }
    user_pid_namespace(maps).map(|()| NsKind::User)
}

/// A new user namespace with `maps` and a new PID namespace for the next
/// child. No allocation (see [`try_pid_namespace`]).
fn user_pid_namespace(maps: &Maps) -> Result<(), (Step, Errno)> {
    sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID)
        .map_err(|e| (Step::Unshare, e))?;
    // From here on this process is in the new user namespace for good.
    write_proc("/proc/self/setgroups", "deny").map_err(|e| (Step::Setgroups, e))?;
    write_proc("/proc/self/uid_map", &maps.uid).map_err(|e| (Step::UidMap, e))?;
    write_proc("/proc/self/gid_map", &maps.gid).map_err(|e| (Step::GidMap, e))
}

/// The error of a failed step, naming it.
fn step_error(step: Step, e: Errno) -> io::Error {
    let what = match step {
        Step::Unshare => "unshare",
        Step::Setgroups => "writing /proc/self/setgroups",
        Step::UidMap => "writing /proc/self/uid_map",
        Step::GidMap => "writing /proc/self/gid_map",
    };
    let cause = if e == Errno::ENOSPC {
        "namespace limit reached (user.max_pid_namespaces or user.max_user_namespaces)".to_owned()
    } else {
        io::Error::from(e).to_string()
    };
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {cause}"))
}

/// Finds out, in a throwaway forked child, whether this process could make
/// a PID namespace with [`enter_pid_namespace`], and of which kind,
/// without changing anything in this process: unshare(2) cannot be undone,
/// and a user namespace whose maps are refused (e.g. Ubuntu's
/// `apparmor_restrict_unprivileged_userns`) is half made.
///
/// # Errors
/// The step that failed in the child and its errno, or fork(2)'s.
pub fn probe_pid_namespace() -> io::Result<NsKind> {
    let maps = Maps::ours();
    let (r, w) = pipe()?;
    // SAFETY: `run` has no other threads; the child only calls unshare,
    // open, write and _exit (no allocation, no locks) and never returns.
    match unsafe { unistd::fork() }? {
        unistd::ForkResult::Child => {
            let msg = match try_pid_namespace(&maps) {
                Ok(NsKind::Privileged) => [0, 0],
                Ok(NsKind::User) => [0, 1],
                // errno values are below 256 on Linux (EHWPOISON is 133).
                Err((step, e)) => [step as u8, e as i32 as u8],
            };
            let _ = unistd::write(&w, &msg);
            // SAFETY: _exit(2) never returns and runs no atexit handlers.
            unsafe { nix::libc::_exit(0) }
        }
        unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut msg = [0u8; 2];
            let mut got = 0;
            while got < msg.len() {
                match unistd::read(&r, &mut msg[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            while nix::sys::wait::waitpid(child, None) == Err(Errno::EINTR) {}
            let step = match msg[0] {
                _ if got < msg.len() => return Err(io::Error::other("the probe died")),
                0 if msg[1] == 0 => return Ok(NsKind::Privileged),
                0 => return Ok(NsKind::User),
                1 => Step::Unshare,
                2 => Step::Setgroups,
                3 => Step::UidMap,
                _ => Step::GidMap,
            };
            Err(step_error(step, Errno::from_raw(i32::from(msg[1]))))
        }
    }
}

/// Puts the next child of this process into a new PID namespace of `kind`
/// (as [`probe_pid_namespace`] found possible), as its PID 1. This process
/// itself stays in its PID namespace (for [`NsKind::User`], it enters the
/// new user namespace, for good).
///
/// # Errors
/// The step that failed and its errno.
pub fn enter_pid_namespace(kind: NsKind) -> io::Result<()> {
    let maps = Maps::ours();
    let made = match kind {
        NsKind::Privileged => {
            sched::unshare(CloneFlags::CLONE_NEWPID).map_err(|e| (Step::Unshare, e))
        }
        // Straight to the user namespace, as the probe found.
        NsKind::User => user_pid_namespace(&maps),
    };
    made.map_err(|(step, e)| step_error(step, e))
}

impl NsKind {
    /// Its name on `__tree-init --keeper`'s command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NsKind::Privileged => "privileged",
            NsKind::User => "user",
        }
    }

    /// The kind named `s` ([`NsKind::as_str`]).
    pub fn from_name(s: &str) -> Option<NsKind> {
        [NsKind::Privileged, NsKind::User]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The keeper's init, to SIGKILL when `run` dies (0: none yet or reaped).
static KEPT: AtomicI32 = AtomicI32::new(0);
/// Set when `run` died (the keeper's parent-death signal came).
static ORPHANED: AtomicBool = AtomicBool::new(false);

/// The keeper's parent-death signal: `run` is gone, so the init (when
/// started and not reaped) is SIGKILLed, which ends the namespace; the
/// keeper goes on to reap it. Async-signal-safe: atomics and kill(2).
extern "C" fn on_run_death(_: c_int) {
    let errno = Errno::last_raw();
    ORPHANED.store(true, SeqCst);
    let kept = KEPT.load(SeqCst);
    if kept > 0 {
        // Unreaped (see `unkeep`): the pid is still the init's.
        let _ = signal::kill(Pid::from_raw(kept), Signal::SIGKILL);
    }
    Errno::set_raw(errno);
}

/// The signal the keeper gets when `run` dies: one that `run` never
/// forwards and nobody else sends.
const RUN_DIED: Signal = Signal::SIGUSR2;

/// For the keeper: when `run` dies, SIGKILL the init (see [`keep`]) instead
/// of dying along with it, so that the keeper lives on until the init is
/// reaped. Returns false if `run` is already gone.
pub fn outlive_parent(alive: BorrowedFd<'_>) -> bool {
    let ours = SigAction::new(
        SigHandler::Handler(on_run_death),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: `on_run_death` is async-signal-safe (see its doc) and only
    // shares atomics with the rest of the program.
    let installed = unsafe { signal::sigaction(RUN_DIED, &ours) }.is_ok();
    installed && prctl::set_pdeathsig(RUN_DIED).is_ok() && writer_alive(alive)
}

/// The init the keeper started: SIGKILLed when `run` dies, at once if it
/// already has.
pub fn keep(init: &Child) {
    KEPT.store(pid_of(init).as_raw(), SeqCst);
    if ORPHANED.load(SeqCst) {
        kill(init);
    }
}

/// The init has exited (not reaped yet): nothing to kill any more.
pub fn unkeep() {
    KEPT.store(0, SeqCst);
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

/// The inode of this process's PID namespace (`/proc/self/ns/pid`).
pub fn pid_namespace() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
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

/// The byte of a lock file whose OFD read lock marks a living process tree
/// of `run --kill-tree`: far past any lock file's end and never written.
/// The library locks files only with flock(2), which fcntl locks ignore.
const TREE_BEACON: i64 = 1 << 62;

/// An OFD lock request on [`TREE_BEACON`] (`F_RDLCK` or `F_WRLCK`).
fn beacon_lock(kind: c_int) -> nix::libc::flock {
    // nix takes libc's `struct flock` as it is. l_pid must be 0 for OFD
    // locks; the constants are small (0..=2), so the casts never wrap.
    nix::libc::flock {
        l_type: kind as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: TREE_BEACON,
        l_len: 1,
        l_pid: 0,
    }
}

/// Opens PATH again and read-locks its tree beacon on that new open file
/// description. Every process that inherits the descriptor shares the
/// lock, which the kernel drops when the last of them has closed it or
/// died: COMMAND's whole tree in its PID namespace.
pub fn tree_beacon(path: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let fd = OwnedFd::from(f);
    fcntl(&fd, FcntlArg::F_OFD_SETLK(&beacon_lock(nix::libc::F_RDLCK)))?;
    Ok(fd)
}

/// How long [`wait_for_trees`] waits at most, without a deadline, before
/// it lets `run` go on with a word.
const TREE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How [`wait_for_trees`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trees {
    /// No tree is left (the beacon was free).
    Gone,
    /// A signal arrived (its caller sees it pending).
    Signalled,
    /// The deadline passed (at once for a deadline of now) with the beacon
    /// still held.
    Deadline,
    /// No deadline, and the beacon was still held after this long
    /// ([`TREE_PATIENCE`]).
    Patience(std::time::Duration),
}

/// Waits until no process tree of an earlier `run --kill-tree` on PATH is
/// left: a holder that was SIGKILLed lost its lock a moment before the
/// kernel killed its namespace (see `tree`). Returns at once when there is
/// none (one uncontended fcntl); else looks again until `deadline`
/// (`--timeout`'s; now: look once), or for [`TREE_PATIENCE`] without one.
/// Any fcntl lock on the beacon's byte holds it up, whoever took it.
///
/// # Errors
/// Opening PATH again, or an fcntl error other than a conflict.
pub fn wait_for_trees(path: &Path, deadline: Option<std::time::Instant>) -> io::Result<Trees> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let probe = beacon_lock(nix::libc::F_WRLCK);
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        match fcntl(&f, FcntlArg::F_OFD_SETLK(&probe)) {
            // Ours now, and released when `f` closes.
            Ok(_) => return Ok(Trees::Gone),
            Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if pending_signal().is_some() {
            return Ok(Trees::Signalled);
        }
        let now = std::time::Instant::now();
        match deadline {
            Some(d) if now >= d => return Ok(Trees::Deadline),
            Some(d) => pause = pause.min(d - now),
            None if now - start >= TREE_PATIENCE => {
                return Ok(Trees::Patience(TREE_PATIENCE));
            }
            None => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(5));
    }
}
