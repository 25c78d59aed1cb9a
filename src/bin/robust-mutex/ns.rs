//! The PID namespace of `run --kill-tree` (privileged, or inside a new
//! user namespace), and its keeper: the process that SIGKILLs the
//! namespace's init when `run` dies, then reaps it.

use crate::os::{pid_of, pipe, writer_alive};
use crate::signals::kill;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{self, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{self, Pid};
use std::ffi::c_int;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

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

/// The inode of this process's PID namespace (`/proc/self/ns/pid`).
pub fn pid_namespace() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}
