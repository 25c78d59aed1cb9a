//! `run --kill-tree`: COMMAND's whole process tree dies with its lock.
//!
//! `run` starts this program again as a *keeper* (the hidden `__tree-init
//! --keeper`), which stays in `run`'s PID namespace, makes a new PID
//! namespace (and, unprivileged, a user namespace) and starts the program
//! once more in it as its PID 1 (`__tree-init`), which starts COMMAND as
//! PID 2, forwards signals to it, reaps whatever is orphaned in the
//! namespace, reports COMMAND's end to `run` through a pipe and exits. When
//! the init exits, or is killed (it dies with the keeper: PR_SET_PDEATHSIG),
//! the kernel SIGKILLs every process left in the namespace, and the init is
//! reapable only once all of them are gone. The keeper reaps it and only
//! then exits; `run` waits for the keeper before it unlocks, so it never
//! releases the lock while anything COMMAND started still runs.
//!
//! When `run` itself is SIGKILLed the kernel releases its lock (the robust
//! list walk of its exit) before the namespace is torn down. To close that
//! window, the tree holds a *beacon*: an OFD read lock on one byte of the
//! lock file far past its end, on a descriptor that the keeper, the init
//! and every process COMMAND starts inherit; the kernel drops it when the
//! last of them has closed it. The keeper outlives `run`: its parent-death
//! signal (SIGUSR2) is caught, SIGKILLs the init, and the keeper exits, and
//! drops its beacon, only once it has reaped the init, that is once the
//! whole namespace is gone (also the processes that closed their copy, or
//! were inside an uninterruptible system call). Every `run`, once it has
//! the lock, waits until it can write-lock that byte
//! ([`beacon::wait_for_trees`]), within `--timeout`/`--nonblock`, before it
//! starts COMMAND. What escapes: a keeper that is itself SIGKILLed (e.g.
//! `kill -9` of the whole process group, the OOM killer) drops the beacon
//! as the init is being killed, as before the keeper existed.
//!
//! The namespace is tried first in a throwaway forked child
//! ([`ns::probe_pid_namespace`]), after the pipes and the beacon are open;
//! only the keeper enters it (unshare(2) cannot be undone), so `run` itself
//! never changes namespace. If the keeper fails where the probe did not,
//! COMMAND is not run (exit 71).
//!
//! Where no PID namespace may be made (neither privileged nor unprivileged
//! user namespaces allowed, or the namespace limit reached), COMMAND leads
//! a process group of its own instead, which `run` SIGKILLs when COMMAND
//! ends: that misses processes that leave the group (setsid, setpgid), and
//! nothing kills the group when `run` is SIGKILLed. When `run` has the
//! terminal's foreground, that group gets it while COMMAND runs.

use crate::beacon;
use crate::cli::TreeInitArgs;
use crate::exit::{code, with_signal};
use crate::format::{path_text, warn};
use crate::ns::{self, NsKind};
use crate::os::{self, Reaped};
use crate::run;
use crate::signals;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command};

/// In COMMAND's environment under `--kill-tree`: the inode of the PID
/// namespace made for it, so that a `robust-mutex` inside knows where it is.
pub(crate) const TREE_NS_VAR: &str = "ROBUST_MUTEX_KILL_TREE_NS";

/// How COMMAND's tree is tied to the lock.
pub(crate) enum Tree {
    /// `--kill-tree` not given: COMMAND alone dies with `run`.
    Off,
    /// COMMAND runs under our init in a new PID namespace.
    Namespace(Pipes),
    /// No PID namespace allowed here: COMMAND leads its own process group,
    /// killed when COMMAND ends.
    Group,
}

/// `run`'s ends of the pipes to the init, and the init's ends until it is
/// started.
pub(crate) struct Pipes {
    /// The init's reports (see [`Report`]); EOF once it has exited.
    report: OwnedFd,
    /// Only `run` writes here (it never does): the init's read end sees EOF
    /// when `run` is gone.
    _alive: OwnedFd,
    /// The init's ends (report writer, alive reader), closed in `run` once
    /// the init has them.
    init_ends: Option<(OwnedFd, OwnedFd)>,
    /// The tree beacon (see [`beacon::tree_beacon`]), inherited by the keeper,
    /// the init and everything COMMAND starts; closed in `run` once the
    /// keeper has it.
    beacon: Option<OwnedFd>,
    /// The namespace that the probe found possible.
    kind: NsKind,
}

/// `__tree-init` for COMMAND, with the pipe ends `fds` (report writer,
/// alive reader); as the keeper when `keeper` is given.
fn init_command(
    fds: (i32, i32),
    path: &Path,
    command: &[OsString],
    keeper: Option<NsKind>,
) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("robust-mutex")
        .arg("__tree-init")
        .arg("--report-fd")
        .arg(fds.0.to_string())
        .arg("--alive-fd")
        .arg(fds.1.to_string())
        .arg("--path")
        .arg(path);
    if let Some(k) = keeper {
        cmd.arg("--keeper").arg(k.as_str());
    }
    cmd.arg("--").args(command);
    cmd
}

/// Whether this process runs inside the PID namespace that a `run
/// --kill-tree` made for its COMMAND (where no lock can be used safely).
pub(crate) fn inside_kill_tree() -> bool {
    let ours = ns::pid_namespace();
    std::env::var(TREE_NS_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|ns| Some(ns) == ours)
}

/// The one line for a lock used from inside a `--kill-tree` namespace.
pub(crate) fn refuse_inside(verb: &str, path: &Path) {
    warn(format_args!(
        "{verb} {}: this process runs inside the PID namespace of an outer `robust-mutex run --kill-tree`, where thread ids clash with other namespaces' and no lock can be used safely; drop --kill-tree from the outer run to nest locks (or give --allow-foreign-pid-namespace, unsafe)",
        path_text(path)
    ));
}

impl Tree {
    /// Sets up what `--kill-tree` asks for: a new PID namespace (tried in
    /// a throwaway child; the keeper makes the real one), or the
    /// process-group fallback (said once, on stderr).
    pub(crate) fn prepare(path: &Path) -> Tree {
        let ready = (|| -> io::Result<Pipes> {
            let (report, report_w) = os::pipe()?;
            let (alive_r, alive) = os::pipe()?;
            Ok(Pipes {
                report,
                _alive: alive,
                init_ends: Some((report_w, alive_r)),
                beacon: Some(beacon::tree_beacon(path)?),
                kind: ns::probe_pid_namespace()?,
            })
        })();
        match ready {
            Ok(p) => Tree::Namespace(p),
            Err(e) => {
                warn(format_args!(
                    "run {}: --kill-tree: no PID namespace can be made here ({e}); only COMMAND's process group is killed, which misses processes that leave it or outlive a killed `run`",
                    path_text(path)
                ));
                Tree::Group
            }
        }
    }

    /// The process `run` starts for COMMAND: COMMAND itself, or the keeper
    /// of its namespace, which starts the init, which starts COMMAND.
    pub(crate) fn command(&self, command: &[OsString], path: &Path) -> io::Result<Command> {
        let mut cmd;
        match self {
            Tree::Namespace(p) => {
                let (report_w, alive_r) = p.init_ends.as_ref().ok_or(io::ErrorKind::Other)?;
                os::set_inherited(report_w.as_fd(), true)?;
                os::set_inherited(alive_r.as_fd(), true)?;
                if let Some(b) = &p.beacon {
                    os::set_inherited(b.as_fd(), true)?;
                }
                let fds = (report_w.as_raw_fd(), alive_r.as_raw_fd());
                // Not tied to `run`'s life by PR_SET_PDEATHSIG: the keeper
                // outlives `run` until the namespace is gone.
                cmd = init_command(fds, path, command, Some(p.kind));
            }
            Tree::Off | Tree::Group => {
                cmd = Command::new(&command[0]);
                cmd.args(&command[1..]);
                os::die_with_parent(&mut cmd);
                if matches!(self, Tree::Group) {
                    os::own_process_group(&mut cmd);
                    os::hand_terminal(&mut cmd);
                }
            }
        }
        Ok(cmd)
    }

    /// Right after the spawn: `run` lets go of the init's pipe ends.
    pub(crate) fn started(&mut self) {
        if let Tree::Namespace(p) = self {
            p.init_ends = None;
            p.beacon = None;
        }
    }

    /// Waits until COMMAND has ended and everything it started is gone (as
    /// far as this mode reaches), leaving `child` unreaped. Returns the
    /// init's report for a namespace: `None` otherwise, or when the init
    /// ended without one (it was killed).
    pub(crate) fn wait(&mut self, child: &Child) -> io::Result<Option<Report>> {
        match self {
            Tree::Off => os::wait_exit_no_reap(child).map(|()| None),
            Tree::Group => {
                let r = os::wait_exit_no_reap(child);
                os::take_back_terminal();
                os::kill_group(child);
                r.map(|()| None)
            }
            Tree::Namespace(p) => {
                let report = read_report(&p.report);
                // The init exits by itself after its report (EOF: it has);
                // the keeper reaps it, which the kernel allows only once
                // every other process in the namespace is gone, and exits.
                os::wait_exit_no_reap(child)?;
                Ok(report)
            }
        }
    }
}

/// `__tree-init --keeper`: `run`'s child, outside the namespace. Makes the
/// namespace, starts the init in it (which dies with the keeper), and
/// exits only once it has reaped the init, which the kernel allows only
/// after every process in the namespace is gone: until then the keeper
/// holds the tree beacon, even when COMMAND's tree closed it and the init
/// is dying. When `run` dies, the keeper SIGKILLs the init and still waits
/// (its parent-death signal is caught, not fatal).
fn keeper(a: &TreeInitArgs, kind: NsKind, mut report: File, alive: &OwnedFd) -> Result<u8, u8> {
    if !ns::outlive_parent(alive.as_fd()) {
        return Err(code::SOFTWARE); // `run` is gone: the lock is not held
    }
    let never = |report: &mut File, e: io::Error| {
        warn(format_args!(
            "run {}: --kill-tree: COMMAND's namespace could not be made ({e}); COMMAND not run",
            path_text(&a.path)
        ));
        let _ = writeln!(report, "never {}", code::OS_ERR);
        Err(code::OS_ERR)
    };
    if let Err(e) = ns::enter_pid_namespace(kind) {
        return never(&mut report, e);
    }
    signals::install_forwarding();
    signals::lock_taken();
    let mut cmd = init_command((a.report_fd, a.alive_fd), &a.path, &a.command, None);
    os::die_with_parent_unchecked(&mut cmd);
    let mut init = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return never(&mut report, e),
    };
    // Only the init reports now: its end is the pipe's EOF for `run`.
    drop(report);
    ns::keep(&init);
    signals::forward_to(&init);
    let waited = os::wait_exit_no_reap(&init);
    signals::stop_forwarding();
    ns::unkeep();
    let status = loop {
        match init.wait() {
            Ok(st) => break st,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(code::IO),
        }
    };
    if waited.is_err() {
        return Err(code::IO);
    }
    match (status.code(), status.signal()) {
        (Some(c), _) => Ok(u8::try_from(c).unwrap_or(code::IO)),
        // `run` tells a killed init by its keeper's death of the same signal.
        (None, Some(s)) => signals::die_of(s),
        _ => Err(code::IO),
    }
}

/// What the init reports about COMMAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// COMMAND could not be started (126 or 127); the init said why.
    NeverRan(u8),
    /// COMMAND exited with this code.
    Exited(u8),
    /// COMMAND was killed by this signal.
    Killed(i32),
}

/// Reads the init's reports until it closes the pipe; the last one counts.
fn read_report(fd: &OwnedFd) -> Option<Report> {
    let file = File::from(fd.try_clone().ok()?);
    let mut last = None;
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let (what, n) = (words.next(), words.next().and_then(|n| n.parse().ok()));
        last = match (what, n) {
            (Some("never"), Some(n)) => Some(Report::NeverRan(
                u8::try_from(n).unwrap_or(code::CANNOT_EXECUTE),
            )),
            (Some("exit"), Some(n)) => Some(Report::Exited(u8::try_from(n).unwrap_or(code::IO))),
            (Some("signal"), Some(n)) => Some(Report::Killed(n)),
            _ => last,
        };
    }
    last
}

/// `__tree-init`: PID 1 of `run --kill-tree`'s namespace. Starts COMMAND
/// (PID 2), forwards the signals `run` forwards, reaps every orphan, and
/// exits with COMMAND's status after reporting it; the kernel then kills
/// what is left.
pub(crate) fn init(a: &TreeInitArgs) -> Result<u8, u8> {
    let (Some(report), Some(alive)) = (os::adopt_fd(a.report_fd), os::adopt_fd(a.alive_fd)) else {
        warn("__tree-init is started by `robust-mutex run --kill-tree` only");
        return Err(code::USAGE);
    };
    if let Some(kind) = &a.keeper {
        let Some(kind) = NsKind::from_name(kind) else {
            warn("__tree-init is started by `robust-mutex run --kill-tree` only");
            return Err(code::USAGE);
        };
        return keeper(a, kind, File::from(report), &alive);
    }
    let mut report = File::from(report);
    // Neither pipe end may reach COMMAND: the report's EOF tells `run` that
    // this init is gone, and COMMAND must not keep it open.
    let hidden = os::set_inherited(report.as_fd(), false)
        .and_then(|()| os::set_inherited(alive.as_fd(), false));
    if hidden.is_err() || !os::writer_alive(alive.as_fd()) {
        // `run` died before our parent-death signal was set: the lock is no
        // longer held, so COMMAND must not start.
        return Err(code::SOFTWARE);
    }
    drop(alive);
    signals::install_forwarding();
    signals::lock_taken();
    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    if let Some(ns) = ns::pid_namespace() {
        cmd.env(TREE_NS_VAR, ns.to_string());
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let c = run::cannot_run(&e, &a.command[0].to_string_lossy(), &a.path);
            let _ = writeln!(report, "never {c}");
            return Err(c);
        }
    };
    let _ = writeln!(report, "started");
    signals::forward_to(&child);
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    while let Some((reaped, how)) = os::reap_any() {
        if reaped != pid {
            continue; // an orphan of COMMAND's
        }
        signals::stop_forwarding();
        return Ok(match how {
            Reaped::Code(c) => {
                let c = u8::try_from(c).unwrap_or(code::IO);
                let _ = writeln!(report, "exit {c}");
                c
            }
            Reaped::Signal(s) => {
                let _ = writeln!(report, "signal {s}");
                with_signal(s)
            }
        });
    }
    // No children left, yet COMMAND was never reaped: cannot happen.
    Err(code::SOFTWARE)
}
