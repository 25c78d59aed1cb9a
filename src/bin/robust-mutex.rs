//! `robust-mutex`: the crash-safe lock for shell scripts, in the style of
//! util-linux `flock(1)`. A thin layer over the library's public API; process
//! control (parent-death signal, signal forwarding) goes through `nix`.

use clap::{Parser, Subcommand};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use robust_mutex::{
    Acquired, CancelToken, Error, LockError, LockState, OpenOptions, SharedMutex, Status,
};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, SystemTime};

/// Exit codes (documented in the README and `--help`).
mod code {
    pub const BUSY: u8 = 1; // default --conflict-exit-code; status: locked
    pub const BROKEN: u8 = 2; // status: owner-dead, not-recoverable, stuck
    pub const USAGE: u8 = 64; // EX_USAGE
    pub const DATA: u8 = 65; // EX_DATAERR: not a (valid) mutex file
    pub const NO_INPUT: u8 = 66; // EX_NOINPUT: no such file
    pub const UNAVAILABLE: u8 = 69; // EX_UNAVAILABLE: not recoverable
    pub const CANT_CREATE: u8 = 73; // EX_CANTCREAT
    pub const IO: u8 = 74; // EX_IOERR
    pub const TEMP_FAIL: u8 = 75; // EX_TEMPFAIL: still being initialised
    pub const NO_PERM: u8 = 77; // EX_NOPERM
    pub const NOT_EXECUTABLE: u8 = 126;
    pub const NOT_FOUND: u8 = 127;
}

const AFTER_HELP: &str = "\
Exit codes:
  0     success (run: COMMAND's own status)
  1     run: the lock is held (see --conflict-exit-code); status: locked;
        reset: refused (not broken; use --force)
  2     status: owner-dead, not-recoverable or stuck
  64    usage error          65  not a valid mutex file
  66    no such file         69  mutex not recoverable (reset it)
  73    cannot create        74  I/O error
  75    still being initialised by another process
  77    permission denied    126 COMMAND not executable
  127   COMMAND not found    128+N COMMAND killed by signal N
  130   wait interrupted by SIGINT";

/// A crash-safe, path-named lock for shell scripts: like flock(1), but the
/// next holder is told when the previous one died holding the lock.
#[derive(Parser, Debug)]
#[command(name = "robust-mutex", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Take the lock, run COMMAND, release the lock.
    ///
    /// If the previous holder died holding the lock, COMMAND is the recovery
    /// handler: it gets ROBUST_MUTEX_OWNER_DIED=1 and
    /// ROBUST_MUTEX_PREVIOUS_OWNER_PID in its environment, and the mutex is
    /// marked consistent only if COMMAND exits 0 (otherwise it becomes not
    /// recoverable until `robust-mutex reset`). COMMAND dies with `run`
    /// (PR_SET_PDEATHSIG), and SIGINT/SIGTERM are forwarded to it.
    #[command(after_help = "Examples:
  robust-mutex run /run/lock/backup.lock -- rsync -a /src /dst
  robust-mutex run --nonblock --label nightly /run/lock/job.lock -- ./job.sh
  robust-mutex run --timeout 2.5 --conflict-exit-code 75 /dev/shm/x.lock -- make")]
    Run {
        /// Give up after SECS seconds (fractions allowed).
        #[arg(long, short = 'w', value_name = "SECS", conflicts_with = "nonblock")]
        timeout: Option<f64>,
        /// Fail at once if the lock is held.
        #[arg(long, short = 'n')]
        nonblock: bool,
        /// Exit code when the lock cannot be had (default 1, as flock(1)).
        #[arg(long, short = 'E', value_name = "N", default_value_t = 1)]
        conflict_exit_code: u8,
        /// A label for the owner record, shown by `status`.
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
        /// Fail if PATH does not exist, instead of creating it.
        #[arg(long)]
        no_create: bool,
        /// The lock file.
        path: PathBuf,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Show the lock's state, holder, counters and file facts (no locking).
    #[command(
        after_help = "Exit status: 0 unlocked, 1 locked, 2 owner-dead/not-recoverable/stuck.

Examples:
  robust-mutex status /run/lock/backup.lock
  robust-mutex status --json /run/lock/backup.lock | jq .owner.pid"
    )]
    Status {
        /// Machine-readable output: {\"state\", \"owner\", \"counters\", \"file\"}.
        #[arg(long)]
        json: bool,
        /// The lock file.
        path: PathBuf,
    },
    /// Print one timestamped line per change of state or owner, until Ctrl-C.
    #[command(after_help = "Example:
  robust-mutex watch --interval 100 /run/lock/backup.lock")]
    Watch {
        /// How often to look, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 200)]
        interval: u64,
        /// Stop after N lines (for scripts and tests).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// The lock file.
        path: PathBuf,
    },
    /// Create a new lock file (fails if PATH exists).
    #[command(after_help = "Example:
  robust-mutex create --mode 0660 /run/lock/shared.lock")]
    Create {
        /// Final mode, in octal (must include 0600).
        #[arg(long, value_name = "OCTAL", default_value = "0600", value_parser = parse_mode)]
        mode: u32,
        /// The lock file.
        path: PathBuf,
    },
    /// Remove a lock file (only a robust-mutex file is removed).
    #[command(after_help = "Example:
  robust-mutex remove /run/lock/old.lock")]
    Remove {
        /// The lock file.
        path: PathBuf,
    },
    /// Replace a broken (not-recoverable or stuck) mutex with a fresh one,
    /// keeping its value; every process moves to the new file, and the next
    /// locker runs its recovery.
    #[command(after_help = "Example:
  robust-mutex reset /run/lock/backup.lock")]
    Reset {
        /// Reset even a healthy mutex (its holder and waiters finish on the old file).
        #[arg(long)]
        force: bool,
        /// The lock file.
        path: PathBuf,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0600"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { code::USAGE } else { 0 });
        }
    };
    let r = match cli.cmd {
        Cmd::Run {
            timeout,
            nonblock,
            conflict_exit_code,
            label,
            no_create,
            path,
            command,
        } => run(
            &path,
            &command,
            timeout,
            nonblock,
            conflict_exit_code,
            label.as_deref(),
            !no_create,
        ),
        Cmd::Status { json, path } => status(&path, json),
        Cmd::Watch {
            interval,
            count,
            path,
        } => watch(&path, interval, count),
        Cmd::Create { mode, path } => create(&path, mode),
        Cmd::Remove { path } => SharedMutex::<()>::remove(&path)
            .map(|()| 0)
            .map_err(|e| fail_open(&e)),
        Cmd::Reset { force, path } => reset(&path, force),
    };
    ExitCode::from(r.unwrap_or_else(|c| c))
}

/// Prints one line for an open-time error and picks its exit code.
fn fail_open(e: &Error) -> u8 {
    eprintln!("robust-mutex: {e}");
    match e {
        Error::NotFound { .. } => code::NO_INPUT,
        Error::AlreadyExists { .. } => code::CANT_CREATE,
        Error::PermissionDenied { .. } | Error::ForeignOwner { .. } => code::NO_PERM,
        Error::InvalidMode { .. } | Error::InvalidOptions { .. } => code::USAGE,
        Error::InitTimeout { .. } => code::TEMP_FAIL,
        Error::ResetRefused { .. } => code::BUSY,
        Error::Io { .. } => code::IO,
        _ => code::DATA,
    }
}

fn open_existing(path: &Path) -> Result<SharedMutex<()>, u8> {
    OpenOptions::new()
        .allow_other_owners(true)
        .open_lock_only(path)
        .map_err(|e| fail_open(&e))
}

// ---------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------

/// The signal handler's view: the child to forward to, or the token that
/// abandons a wait, and which signal arrived.
static CHILD: AtomicI32 = AtomicI32::new(0);
static GOT_SIGNAL: AtomicI32 = AtomicI32::new(0);
static CANCEL: CancelToken = CancelToken::new();

extern "C" fn on_signal(sig: libc_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // Forward to COMMAND; we keep waiting for it (and keep the lock).
        if let Ok(s) = Signal::try_from(sig) {
            let _ = signal::kill(Pid::from_raw(child), s);
        }
    } else {
        GOT_SIGNAL.store(sig, Ordering::SeqCst);
        CANCEL.cancel(); // async-signal-safe: abandons the wait
    }
}

#[allow(non_camel_case_types)]
type libc_int = std::ffi::c_int;

fn install_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `on_signal` only touches atomics and calls the
        // async-signal-safe kill(2) and CancelToken::cancel (a store and a
        // futex wake).
        let _ = unsafe { signal::sigaction(s, &action) };
    }
}

fn describe_holder(s: &Status) -> String {
    match &s.owner {
        Some(o) => {
            let label = if o.label.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.label)
            };
            format!("held by pid {}{label} for {}", o.pid, human(o.held_for()))
        }
        None => format!("held ({})", s.state),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} min", s / 60.0)
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    path: &Path,
    command: &[String],
    timeout: Option<f64>,
    nonblock: bool,
    conflict: u8,
    label: Option<&str>,
    create: bool,
) -> Result<u8, u8> {
    let timeout = match timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => {
            eprintln!("robust-mutex: --timeout {t}: not a number of seconds");
            return Err(code::USAGE);
        }
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    let m = OpenOptions::new()
        .create(create)
        .open_lock_only(path)
        .map_err(|e| fail_open(&e))?;
    install_handlers();
    let got = if nonblock {
        m.try_lock()
    } else {
        m.lock_cancellable(&CANCEL, timeout)
    };
    let acquired = match got {
        Ok(a) => a,
        Err(LockError::WouldBlock) | Err(LockError::TimedOut) => {
            eprintln!(
                "robust-mutex: {}: {}",
                path.display(),
                describe_holder(&m.status())
            );
            return Err(conflict);
        }
        Err(LockError::Cancelled) => {
            let sig = GOT_SIGNAL.load(Ordering::SeqCst);
            eprintln!(
                "robust-mutex: {}: wait abandoned ({}); the lock was not taken",
                path.display(),
                Signal::try_from(sig).map_or("signal", |s| s.as_str())
            );
            return Err(128 + sig as u8);
        }
        Err(LockError::NotRecoverable) => {
            eprintln!(
                "robust-mutex: {}: the mutex is not recoverable (a recovery failed); run `robust-mutex reset {}`",
                path.display(),
                path.display()
            );
            return Err(code::UNAVAILABLE);
        }
        Err(e) => {
            eprintln!("robust-mutex: {}: {e}", path.display());
            return Err(code::IO);
        }
    };
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid, kill, sigaction).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid().as_raw() != parent {
                // `run` died before the prctl: never run unprotected.
                let _ = signal::kill(nix::unistd::getpid(), Signal::SIGKILL);
            }
            for s in [Signal::SIGINT, Signal::SIGTERM] {
                let _ = signal::sigaction(
                    s,
                    &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
                );
            }
            Ok(())
        });
    }
    let recovery = match acquired {
        Acquired::Clean(mut g) => {
            if let Some(l) = label {
                g.set_label(l);
            }
            return spawn_and_wait(&mut cmd, path).map(|(st, _)| st);
        }
        Acquired::OwnerDied(r) => r,
    };
    let prev = recovery.previous_owner().map_or(0, |o| o.pid);
    eprintln!(
        "robust-mutex: {}: the previous holder (pid {prev}) died holding the lock; running COMMAND as its recovery",
        path.display()
    );
    cmd.env("ROBUST_MUTEX_OWNER_DIED", "1")
        .env("ROBUST_MUTEX_PREVIOUS_OWNER_PID", prev.to_string());
    match spawn_and_wait(&mut cmd, path) {
        Ok((0, _)) => {
            let mut g = recovery.mark_consistent();
            if let Some(l) = label {
                g.set_label(l);
            }
            Ok(0)
        }
        Ok((st, _)) => {
            drop(recovery); // unlock without consistent: not recoverable
            eprintln!(
                "robust-mutex: {}: recovery COMMAND failed (exit {st}); the mutex is now not recoverable; run `robust-mutex reset {}`",
                path.display(),
                path.display()
            );
            Ok(st)
        }
        Err(c) => {
            // COMMAND never ran, so nothing was repaired: exit while still
            // holding, and the kernel hands the owner-died state to the next
            // locker instead of making the mutex not recoverable.
            let _ = std::io::stderr().flush();
            std::process::exit(i32::from(c));
        }
    }
}

/// Runs COMMAND and waits for it; the exit code as a shell reports it.
fn spawn_and_wait(cmd: &mut std::process::Command, path: &Path) -> Result<(u8, ()), u8> {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let name = cmd.get_program().to_string_lossy().into_owned();
            eprintln!("robust-mutex: {}: cannot run {name}: {e}", path.display());
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound => code::NOT_FOUND,
                _ => code::NOT_EXECUTABLE,
            });
        }
    };
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let st = loop {
        match child.wait() {
            Ok(st) => break st,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("robust-mutex: {}: waiting for COMMAND: {e}", path.display());
                break std::process::ExitStatus::from_raw(code::IO as i32 * 256);
            }
        }
    };
    CHILD.store(0, Ordering::SeqCst);
    let c = match (st.code(), st.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.saturating_add(s as u8),
        _ => code::IO,
    };
    Ok((c, ()))
}

// ---------------------------------------------------------------------------
// status, watch
// ---------------------------------------------------------------------------

fn state_code(s: LockState) -> u8 {
    match s {
        LockState::Unlocked => 0,
        LockState::Locked => code::BUSY,
        _ => code::BROKEN,
    }
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn status(path: &Path, json: bool) -> Result<u8, u8> {
    let m = open_existing(path)?;
    let s = m.status();
    let info = m.file_info();
    let md = std::fs::metadata(path).ok();
    let (mode, uid) = md
        .as_ref()
        .map(|md| {
            use std::os::unix::fs::MetadataExt;
            (md.mode() & 0o7777, md.uid())
        })
        .unwrap_or_default();
    let c = s.counters;
    if json {
        let owner = s.owner.as_ref().map(|o| {
            serde_json::json!({
                "pid": o.pid,
                "tid": o.tid,
                "label": o.label,
                "held_for_secs": o.held_for().as_secs_f64(),
                "acquired_at_unix": unix_secs(o.acquired_at),
                "alive": o.is_alive(),
                "cmdline": cmdline(o.pid),
            })
        });
        let v = serde_json::json!({
            "path": path.display().to_string(),
            "state": s.state.as_str(),
            "owner": owner,
            "counters": {
                "acquisitions": c.acquisitions,
                "contended": c.contended,
                "owner_deaths": c.owner_deaths,
                "recoveries": c.recoveries,
                "resets": c.resets,
            },
            "file": {
                "version": info.version,
                "kind": info.kind,
                "abi": info.abi,
                "generation": info.generation,
                "value_size": info.value_size,
                "mode": format!("{mode:04o}"),
                "uid": uid,
                "boot_id_matches": info.boot_id_matches,
            },
        });
        println!("{v}");
    } else {
        println!("{}: {}", path.display(), s.state);
        if let Some(o) = &s.owner {
            let role = if s.state == LockState::Locked {
                "holder"
            } else {
                "dead holder"
            };
            println!(
                "  {role}: pid {} tid {}{}, held for {}",
                o.pid,
                o.tid,
                if o.label.is_empty() {
                    String::new()
                } else {
                    format!(", label {:?}", o.label)
                },
                human(o.held_for())
            );
            if let Some(cl) = cmdline(o.pid) {
                println!("  command: {cl}");
            }
        }
        if matches!(s.state, LockState::NotRecoverable | LockState::Stuck) {
            println!("  repair: robust-mutex reset {}", path.display());
        }
        println!(
            "  counters: {} acquisitions, {} contended, {} owner deaths, {} recoveries, {} resets",
            c.acquisitions, c.contended, c.owner_deaths, c.recoveries, c.resets
        );
        println!(
            "  file: {} v{}, generation {}, {}, mode {mode:04o}, uid {uid}, boot id {}",
            info.kind,
            info.version,
            info.generation,
            info.abi,
            if info.boot_id_matches {
                "matches"
            } else {
                "from an earlier boot"
            }
        );
    }
    Ok(state_code(s.state))
}

fn watch(path: &Path, interval: u64, count: Option<u64>) -> Result<u8, u8> {
    let m = open_existing(path)?;
    let mut last: Option<(LockState, Option<(u32, u32)>)> = None;
    let mut printed = 0u64;
    loop {
        let s = m.status();
        let key = (s.state, s.owner.as_ref().map(|o| (o.pid, o.tid)));
        if last.as_ref() != Some(&key) {
            let when = unix_secs(SystemTime::now());
            let who = s.owner.as_ref().map_or(String::new(), |o| {
                let label = if o.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.label)
                };
                format!(" pid {} tid {}{label}", o.pid, o.tid)
            });
            println!("{when:.3} {}{who}", s.state);
            let _ = std::io::stdout().flush();
            last = Some(key);
            printed += 1;
            if count.is_some_and(|n| printed >= n) {
                return Ok(0);
            }
        }
        std::thread::sleep(Duration::from_millis(interval.max(1)));
    }
}

// ---------------------------------------------------------------------------
// create, reset
// ---------------------------------------------------------------------------

fn create(path: &Path, mode: u32) -> Result<u8, u8> {
    OpenOptions::new()
        .create_new(true)
        .mode(mode)
        .open_lock_only(path)
        .map(|_| 0)
        .map_err(|e| fail_open(&e))
}

fn reset(path: &Path, force: bool) -> Result<u8, u8> {
    match robust_mutex::reset(path, force) {
        Ok(out) => {
            println!(
                "{}: reset ({} before), now generation {}; the next locker runs its recovery",
                path.display(),
                out.previous_state,
                out.generation
            );
            Ok(0)
        }
        Err(e) => Err(fail_open(&e)),
    }
}
