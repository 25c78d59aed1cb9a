//! The `run` subcommand: take the lock, run COMMAND as a child (its
//! recovery handler when the previous holder died), forward signals to it,
//! and hand the lock on in the state COMMAND's end calls for.

use crate::beacon::{self, Trees};
use crate::cli::RunArgs;
use crate::exit::{Op, code, fail, with_signal};
use crate::format::{describe_holder, path_text, warn};
use crate::signals;
use crate::tree::{self, Report, Tree};
use nix::sys::signal::Signal;
use robust_mutex::{Acquired, Guard, LockError, LockState, OpenOptions, SharedMutex};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set to 1 in a recovery COMMAND's environment.
const OWNER_DIED_VAR: &str = "ROBUST_MUTEX_OWNER_DIED";
/// The dead holder's pid, in a recovery COMMAND's environment (when known).
const PREVIOUS_PID_VAR: &str = "ROBUST_MUTEX_PREVIOUS_OWNER_PID";

/// `run`: opens (or creates) PATH, takes the lock, runs COMMAND, and
/// returns the exit code (`Err`: a failure, already reported).
pub(crate) fn run(a: &RunArgs) -> Result<u8, u8> {
    let path = a.path.as_path();
    if tree::inside_kill_tree() && !a.allow_foreign_pid_namespace {
        tree::refuse_inside("run", path);
        return Err(code::DATA);
    }
    let mut opts = OpenOptions::new();
    opts.create(!a.no_create)
        .allow_other_owners(a.allow_other_owners)
        .allow_foreign_pid_namespace(a.allow_foreign_pid_namespace);
    if let Some(mode) = a.mode {
        opts.mode(mode);
    }
    let m = opts
        .open_lock_only(path)
        .map_err(|e| fail(&e, Op::Open, path))?;
    signals::install_forwarding();
    let started = Instant::now();
    let acquired = acquire(&m, a)?;
    signals::lock_taken();
    // A holder killed with SIGKILL lost the lock a moment before the kernel
    // killed the tree of its `--kill-tree`: wait until that is gone too,
    // within what is left of --timeout (--nonblock: look once).
    let beacon_deadline = if a.nonblock {
        Some(Instant::now())
    } else {
        a.timeout.and_then(|t| started.checked_add(t))
    };
    let pt = path_text(path);
    match beacon::wait_for_trees(path, beacon_deadline) {
        Ok(Trees::Gone) => {}
        Ok(Trees::Signalled) => {}
        Ok(Trees::Deadline) => {
            warn(format_args!(
                "{pt}: processes of an earlier `run --kill-tree` (or another program's fcntl lock on PATH) still hold its tree beacon (see `fuser -v {pt}`); COMMAND not run"
            ));
            return never_ran(acquired, a.conflict_exit_code);
        }
        Ok(Trees::Patience(waited)) => warn(format_args!(
            "{pt}: processes of an earlier `run --kill-tree` (or another program's fcntl lock on PATH) still hold its tree beacon after {} s (see `fuser -v {pt}`); starting COMMAND anyway: they may still be running",
            waited.as_secs()
        )),
        Err(e) => warn(format_args!(
            "{pt}: looking for processes of an earlier `run --kill-tree`: {e}; going on"
        )),
    }
    if let Some(sig) = signals::pending_signal() {
        // A signal arrived as the lock was taken: COMMAND never starts.
        warn(format_args!(
            "{}: {} arrived as the lock was taken; COMMAND not run",
            path_text(path),
            signal_name(sig)
        ));
        return match acquired {
            Acquired::Clean(g) => {
                drop(g);
                Err(with_signal(sig))
            }
            // Nothing was repaired: hand the owner-died state on.
            Acquired::OwnerDied(r) => exit_holding(r, with_signal(sig)),
        };
    }

    let program = a.command[0].to_string_lossy().into_owned();
    let mut tree = if a.kill_tree {
        Tree::prepare(path)
    } else {
        Tree::Off
    };
    let mut cmd = match tree.command(&a.command, path) {
        Ok(cmd) => cmd,
        Err(e) => {
            warn(format_args!("run {pt}: --kill-tree: {e}"));
            // Nothing ran: as for a COMMAND that cannot be run.
            return never_ran(acquired, code::IO);
        }
    };

    match acquired {
        Acquired::Clean(mut g) => {
            if let Some(l) = &a.label {
                // Checked when the command line was parsed (cli::parse_label).
                if let Err(e) = g.set_label(l) {
                    warn(format_args!("run {}: --label: {e}", path_text(path)));
                }
            }
            // Never inherit an outer `run`'s recovery verdict.
            cmd.env_remove(OWNER_DIED_VAR).env_remove(PREVIOUS_PID_VAR);
            match spawn_and_wait(&mut cmd, &mut tree, &program, path) {
                Ok(Ended::Code(c)) => release(g, c),
                Ok(Ended::Signal(sig)) => {
                    warn(format_args!(
                        "{}: COMMAND was killed by {} while holding the lock; the next holder is told its owner died",
                        path_text(path),
                        signal_name(sig)
                    ));
                    exit_holding(g, with_signal(sig))
                }
                // COMMAND never ran: release cleanly (the guard drops).
                Err(c) => Err(c),
            }
        }
        Acquired::OwnerDied(r) => {
            let prev = r.previous_owner().map(|o| o.pid);
            warn(format_args!(
                "{}: the previous holder{} died holding the lock; running COMMAND as its recovery",
                path_text(path),
                prev.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ));
            cmd.env(OWNER_DIED_VAR, "1");
            match prev {
                Some(p) => cmd.env(PREVIOUS_PID_VAR, p.to_string()),
                None => cmd.env_remove(PREVIOUS_PID_VAR),
            };
            match spawn_and_wait(&mut cmd, &mut tree, &program, path) {
                Ok(Ended::Code(0)) => release(r.mark_consistent(), code::OK),
                Ok(ended) => {
                    // Unlock without marking consistent: not recoverable.
                    drop(r);
                    let (c, how) = match ended {
                        Ended::Code(c) => (c, format!("exited {c}")),
                        Ended::Signal(s) => {
                            (with_signal(s), format!("was killed by {}", signal_name(s)))
                        }
                    };
                    warn(format_args!(
                        "{}: recovery COMMAND {how}; the mutex is now not recoverable; after repairing, run `robust-mutex reset {}`",
                        path_text(path),
                        path_text(path)
                    ));
                    Ok(c)
                }
                // COMMAND never ran, so nothing was repaired or broken:
                // exit holding, and the kernel hands the owner-died state to
                // the next locker instead of making the mutex not recoverable.
                Err(c) => exit_holding(r, c),
            }
        }
    }
}

/// Unlocks after COMMAND ended with `code`. A lock word that no longer
/// names us means the file was truncated or overwritten while COMMAND ran
/// (the exclusion it relied on was lost): that is said as the SIGBUS
/// handler says it, with exit 74, never passed over as success.
fn release(g: Guard<'_, ()>, code: u8) -> Result<u8, u8> {
    match g.unlock() {
        Ok(()) => Ok(code),
        Err(LockError::NotOwner { .. }) => signals::truncated_exit(),
        Err(e) => {
            warn(format_args!("unlock: {e}"));
            Err(code::IO)
        }
    }
}

/// COMMAND was never started: a clean lock is released, an owner-died one
/// handed on (nothing was repaired). Returns (or exits with) `code`.
fn never_ran(acquired: Acquired<Guard<'_, ()>>, code: u8) -> Result<u8, u8> {
    match acquired {
        Acquired::Clean(g) => {
            drop(g);
            Err(code)
        }
        Acquired::OwnerDied(r) => exit_holding(r, code),
    }
}

/// Exits at once, still holding the lock: the kernel releases it in the
/// owner-died state, so the next holder recovers.
fn exit_holding<T>(held: T, code: u8) -> ! {
    // Not dropped: dropping would release the lock (or, for a Recovery, make
    // the mutex not recoverable).
    std::mem::forget(held);
    std::process::exit(i32::from(code))
}

/// Waits for the lock as asked; every failure is reported and turned into
/// the exit code.
fn acquire<'a>(m: &'a SharedMutex<()>, a: &RunArgs) -> Result<Acquired<Guard<'a, ()>>, u8> {
    let path = a.path.as_path();
    let got = if a.nonblock {
        m.try_lock()
    } else {
        wait_for(m, a.timeout)
    };
    match got {
        Ok(acquired) => Ok(acquired),
        Err(LockError::WouldBlock | LockError::TimedOut) => {
            let s = m.status();
            warn(format_args!(
                "{}: {}",
                path_text(path),
                describe_holder(&s, path)
            ));
            Err(if s.state == LockState::Stuck {
                code::UNAVAILABLE
            } else {
                a.conflict_exit_code
            })
        }
        Err(LockError::Stuck { .. }) => {
            let s = m.status();
            warn(format_args!(
                "{}: {}",
                path_text(path),
                describe_holder(&s, path)
            ));
            Err(code::UNAVAILABLE)
        }
        // The file was truncated or overwritten under the wait: the same
        // line and code as the SIGBUS handler's.
        Err(LockError::FileChanged { .. }) => signals::truncated_exit(),
        Err(LockError::Cancelled) => {
            let sig = signals::pending_signal().unwrap_or(Signal::SIGINT as i32);
            warn(format_args!(
                "{}: wait abandoned on {}; the lock was not taken",
                path_text(path),
                signal_name(sig)
            ));
            Err(with_signal(sig))
        }
        Err(LockError::NotRecoverable) => {
            warn(format_args!(
                "{}: the mutex is not recoverable (an owner died and its recovery failed); after repairing, run `robust-mutex reset {}`",
                path_text(path),
                path_text(path)
            ));
            Err(code::UNAVAILABLE)
        }
        Err(LockError::Io(e)) => {
            warn(format_args!("lock {}: {e}", path_text(path)));
            Err(code::IO)
        }
        Err(e) => {
            warn(format_args!("lock {}: {e}", path_text(path)));
            Err(code::SOFTWARE)
        }
    }
}

/// Waits (at most `timeout`). The library ends the wait by itself on a
/// stuck mutex, which nobody will ever release ([`LockError::Stuck`],
/// within about a second), and on a signal through [`signals::CANCEL`]; a file
/// truncated under the wait faults on its next look at the lock word, which
/// the SIGBUS handler turns into its one line.
fn wait_for(
    m: &SharedMutex<()>,
    timeout: Option<Duration>,
) -> Result<Acquired<Guard<'_, ()>>, LockError> {
    m.lock_cancellable(&signals::CANCEL, timeout)
}

/// How COMMAND ended.
enum Ended {
    Code(u8),
    Signal(i32),
}

/// Runs COMMAND and waits for it (and, with `--kill-tree`, for the end of
/// everything it started), forwarding signals meanwhile. `Err` means
/// COMMAND never ran (127 not found, 126 cannot execute), already reported.
fn spawn_and_wait(
    cmd: &mut Command,
    tree: &mut Tree,
    program: &str,
    path: &Path,
) -> Result<Ended, u8> {
    let spawned = cmd.spawn();
    tree.started();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Err(cannot_run(&e, program, path)),
    };
    signals::forward_to(&child);
    // Wait without reaping first, so that no forwarded signal can reach
    // another process that reuses the pid.
    let waited = tree.wait(&child);
    signals::stop_forwarding();
    let report = waited.as_ref().ok().copied().flatten();
    if let Err(e) = waited {
        warn(format_args!(
            "{}: waiting for {program}: {e}",
            path_text(path)
        ));
    }
    let status = loop {
        match child.wait() {
            Ok(st) => break st,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn(format_args!(
                    "{}: waiting for {program}: {e}",
                    path_text(path)
                ));
                return Ok(Ended::Code(code::IO));
            }
        }
    };
    Ok(match (report, status.code(), status.signal()) {
        // The init of COMMAND's namespace told how COMMAND ended.
        (Some(Report::NeverRan(c)), _, _) => return Err(c),
        (Some(Report::Exited(c)), _, _) => Ended::Code(c),
        (Some(Report::Killed(s)), _, _) => Ended::Signal(s),
        (None, Some(c), _) => Ended::Code(u8::try_from(c).unwrap_or(code::IO)),
        (None, None, Some(s)) => Ended::Signal(s),
        _ => Ended::Code(code::IO),
    })
}

/// Reports that COMMAND (`program`) could not be started; returns the exit
/// code, as shells have it: 127 not found, 126 cannot execute.
pub(crate) fn cannot_run(e: &io::Error, program: &str, path: &Path) -> u8 {
    warn(format_args!(
        "run {}: cannot run {program}: {e}",
        path_text(path)
    ));
    match e.kind() {
        io::ErrorKind::NotFound => code::COMMAND_NOT_FOUND,
        _ => code::CANNOT_EXECUTE,
    }
}

/// A signal's name for messages (`SIGINT`), or `signal N` for the rarer ones.
fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(
            s @ (Signal::SIGHUP
            | Signal::SIGINT
            | Signal::SIGQUIT
            | Signal::SIGILL
            | Signal::SIGABRT
            | Signal::SIGBUS
            | Signal::SIGFPE
            | Signal::SIGKILL
            | Signal::SIGSEGV
            | Signal::SIGPIPE
            | Signal::SIGALRM
            | Signal::SIGTERM
            | Signal::SIGXCPU),
        ) => s.as_str().to_owned(),
        _ => format!("signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_codes() {
        assert_eq!(signal_name(2), "SIGINT");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(24), "SIGXCPU");
        // Named by number: the rarer ones, real-time ones, and nonsense.
        assert_eq!(signal_name(10), "signal 10");
        assert_eq!(signal_name(34), "signal 34");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(with_signal(2), 130);
        assert_eq!(with_signal(1000), 255);
    }
}
