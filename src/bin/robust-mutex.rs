//! `robust-mutex`: the crash-safe lock for shell scripts, in the style of
//! util-linux `flock(1)`.
//!
//! A thin layer over the library's public API. The only system calls of its
//! own are the few that controlling COMMAND needs (parent-death signal,
//! signal forwarding, waiting without reaping); they live in [`os`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use robust_mutex::{Acquired, Error, LockError, LockState, OpenOptions, SharedMutex, Status};
use std::ffi::OsString;
use std::fmt::Display;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Exit codes, documented in `--help` and docs/cli.md.
mod code {
    /// Success; `status`: unlocked.
    pub const OK: u8 = 0;
    /// `run`: the lock is held (default `--conflict-exit-code`, as flock(1));
    /// `status`: locked; `reset`/`remove`: refused (healthy / held).
    pub const HELD: u8 = 1;
    /// `status`: owner-dead, not-recoverable or stuck.
    pub const BROKEN: u8 = 2;
    /// EX_USAGE: bad command line.
    pub const USAGE: u8 = 64;
    /// EX_DATAERR: PATH is not a usable mutex file (left untouched).
    pub const DATA: u8 = 65;
    /// EX_NOINPUT: PATH does not exist.
    pub const NO_INPUT: u8 = 66;
    /// EX_UNAVAILABLE: the mutex is not recoverable or stuck; reset it.
    pub const UNAVAILABLE: u8 = 69;
    /// EX_SOFTWARE: a bug in this program.
    pub const SOFTWARE: u8 = 70;
    /// EX_CANTCREAT: `create` could not create PATH.
    pub const CANT_CREATE: u8 = 73;
    /// EX_IOERR.
    pub const IO: u8 = 74;
    /// EX_TEMPFAIL: another process is still initialising PATH.
    pub const TEMP_FAIL: u8 = 75;
    /// EX_NOPERM.
    pub const NO_PERM: u8 = 77;
    /// COMMAND exists but cannot be executed (as shells do).
    pub const CANNOT_EXECUTE: u8 = 126;
    /// COMMAND not found (as shells do).
    pub const COMMAND_NOT_FOUND: u8 = 127;
    /// 128 + N: COMMAND was killed by signal N, or the wait was abandoned on
    /// signal N (130 for SIGINT).
    pub const SIGNAL_BASE: u8 = 128;
}

const OWNER_DIED_VAR: &str = "ROBUST_MUTEX_OWNER_DIED";
const PREVIOUS_PID_VAR: &str = "ROBUST_MUTEX_PREVIOUS_OWNER_PID";

const AFTER_HELP: &str = "\
Examples:
  robust-mutex run /run/lock/backup.lock -- rsync -a /src /dst
  robust-mutex run --nonblock /run/lock/job.lock -- ./job.sh || echo busy
  robust-mutex status --json /run/lock/backup.lock
  robust-mutex reset /run/lock/backup.lock

Exit codes:
  0      success (run: COMMAND's own status; status: unlocked)
  1      run: the lock is held (--conflict-exit-code); status: locked;
         reset, remove: refused (healthy, or held; use --force)
  2      status: owner-dead, not-recoverable or stuck
  64     usage error                  65  not a usable mutex file
  66     no such file                 69  mutex not recoverable or stuck
  70     internal error               73  cannot create
  74     I/O error                    75  still being initialised
  77     permission denied
  126    COMMAND not executable       127 COMMAND not found
  128+N  COMMAND killed by signal N, or the wait abandoned on signal N
         (130: SIGINT)";

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
    Run(RunArgs),
    Status(StatusArgs),
    Watch(WatchArgs),
    Create(CreateArgs),
    Remove(RemoveArgs),
    Reset(ResetArgs),
}

/// Take the lock, run COMMAND, release the lock; exit with COMMAND's status.
///
/// PATH is created (mode 0600, or --mode) unless --no-create is given.
///
/// If the previous holder died holding the lock, COMMAND is the recovery
/// handler: it runs with ROBUST_MUTEX_OWNER_DIED=1 and
/// ROBUST_MUTEX_PREVIOUS_OWNER_PID=<pid> (when known) in its environment,
/// and the mutex is marked consistent only if COMMAND exits 0; otherwise it
/// becomes not recoverable until `robust-mutex reset PATH`.
///
/// COMMAND dies with `run` (PR_SET_PDEATHSIG=SIGKILL). SIGINT, SIGTERM,
/// SIGHUP and SIGQUIT sent to `run` are forwarded to COMMAND; during the
/// wait for the lock they abandon the wait instead. If COMMAND is killed by
/// a signal, its work may be half done: the lock is handed on in the
/// owner-died state, so the next holder recovers.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex run /run/lock/backup.lock -- rsync -a /src /dst
  robust-mutex run --nonblock --label nightly /run/lock/job.lock -- ./job.sh
  robust-mutex run --timeout 2.5 --conflict-exit-code 75 /dev/shm/x.lock -- make
  robust-mutex run /dev/shm/db.lock -- sh -c '
      if [ \"$ROBUST_MUTEX_OWNER_DIED\" = 1 ]; then ./repair.sh || exit 1; fi
      exec ./update.sh'

Exit status: COMMAND's own; the --conflict-exit-code (1) when the lock is
held; 69 when the mutex is not recoverable or stuck; 126/127 when COMMAND
cannot be run; 128+N when COMMAND is killed by signal N or the wait is
abandoned on signal N (130: SIGINT). See `robust-mutex --help` for the rest.")]
struct RunArgs {
    /// Give up after SECS seconds (fractions allowed; 0 = try once).
    #[arg(
        long,
        short = 'w',
        value_name = "SECS",
        conflicts_with = "nonblock",
        allow_negative_numbers = true,
        value_parser = parse_secs
    )]
    timeout: Option<Duration>,
    /// Fail at once if the lock is held.
    #[arg(long, short = 'n')]
    nonblock: bool,
    /// Exit code when the lock cannot be had (default 1, as flock(1)).
    #[arg(long, short = 'E', value_name = "N", default_value_t = code::HELD)]
    conflict_exit_code: u8,
    /// A label for the owner record, shown by `status`, `watch` and waiters.
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
    /// Fail if PATH does not exist, instead of creating it.
    #[arg(long)]
    no_create: bool,
    /// Mode of PATH if `run` creates it, in octal (must include 0600).
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    mode: Option<u32>,
    /// Use a lock file owned by another user (e.g. a group-shared 0660 file).
    #[arg(long)]
    allow_other_owners: bool,
    /// The lock file.
    path: PathBuf,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Show the lock's state, holder, counters and file facts (without locking).
///
/// The holder is shown with its pid, tid, label, how long it has held the
/// lock and, while it runs, its command line from /proc. For owner-dead and
/// stuck mutexes it is the dead holder.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex status /run/lock/backup.lock
  robust-mutex status --json /run/lock/backup.lock | jq .owner.pid
  if robust-mutex status /run/lock/job.lock >/dev/null; then echo free; fi

JSON keys: path, state, owner (null, or pid, tid, label, alive, cmdline,
acquired_at, acquired_at_unix, held_for_secs), counters (acquisitions,
contended, owner_deaths, recoveries, resets), lock_word, file (version,
kind, abi, generation, value_size, created_at, boot_id_matches, mode, uid).

Exit status: 0 unlocked, 1 locked, 2 owner-dead, not-recoverable or stuck;
errors as in `robust-mutex --help`.")]
struct StatusArgs {
    /// One line of JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The lock file.
    path: PathBuf,
}

/// Print one timestamped line per change of state or holder, until Ctrl-C.
///
/// Times are UTC. --count and --until-state end it earlier. Follows PATH:
/// a reset (which replaces the file) and a removal are reported, and a new
/// file at PATH is picked up.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex watch /run/lock/backup.lock
  robust-mutex watch --interval 50 --until-state unlocked /run/lock/job.lock

Output:
  2026-01-31T12:00:00.000Z unlocked
  2026-01-31T12:00:01.250Z locked pid 4242 tid 4242 (nightly)
  2026-01-31T12:00:09.100Z owner-dead pid 4242 tid 4242 (nightly)
  2026-01-31T12:00:12.800Z replaced: generation 2")]
struct WatchArgs {
    /// How often to look, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// Stop after printing N lines.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after printing a line with this state.
    #[arg(long, value_name = "STATE")]
    until_state: Option<StateArg>,
    /// The lock file.
    path: PathBuf,
}

/// Create a new lock file; fails if PATH exists.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex create /run/lock/job.lock
  robust-mutex create --mode 0660 /run/lock/shared.lock

Exit status: 0 created, 73 PATH exists or cannot be created, 64 bad mode.")]
struct CreateArgs {
    /// Mode in octal; must include 0600 (the owner reads and writes).
    #[arg(long, value_name = "OCTAL", default_value = "0600", value_parser = parse_mode)]
    mode: u32,
    /// The lock file.
    path: PathBuf,
}

/// Remove a lock file (only a robust-mutex file is ever removed).
///
/// Refuses while a live process holds the lock: a new file at PATH would
/// let the next `run` take the lock while the old holder still works.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex remove /run/lock/old.lock
  robust-mutex remove --force /run/lock/old.lock

Exit status: 0 removed, 1 refused (held; use --force), 65 not a mutex file.")]
struct RemoveArgs {
    /// Remove it even while it is held.
    #[arg(long)]
    force: bool,
    /// The lock file.
    path: PathBuf,
}

/// Repair a broken (not-recoverable or stuck) mutex.
///
/// Replaces PATH with a fresh file that keeps the value and counters; every
/// process moves to it, and the next locker runs its recovery.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex reset /run/lock/backup.lock
  robust-mutex reset --force /run/lock/backup.lock

Exit status: 0 reset, 1 refused (the mutex is not broken; use --force).")]
struct ResetArgs {
    /// Reset even a healthy mutex (its holder and waiters finish on the old file).
    #[arg(long)]
    force: bool,
    /// The lock file.
    path: PathBuf,
}

/// A state name for `watch --until-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StateArg {
    Unlocked,
    Locked,
    OwnerDead,
    NotRecoverable,
    Stuck,
}

impl StateArg {
    fn matches(self, s: LockState) -> bool {
        let name = match self {
            StateArg::Unlocked => "unlocked",
            StateArg::Locked => "locked",
            StateArg::OwnerDead => "owner-dead",
            StateArg::NotRecoverable => "not-recoverable",
            StateArg::Stuck => "stuck",
        };
        s.as_str() == name
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0600"))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => {
            // Too long to represent: as good as for ever.
            Ok(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX))
        }
        _ => Err(format!("{s:?} is not a number of seconds such as 2.5")),
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        warn(format_args!("internal error{at}: {what}"));
        std::process::exit(i32::from(code::SOFTWARE));
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(usage_error(&e)),
    };
    let r = match cli.cmd {
        Cmd::Run(a) => run(&a),
        Cmd::Status(a) => status(&a.path, a.json),
        Cmd::Watch(a) => watch(&a),
        Cmd::Create(a) => create(&a.path, a.mode),
        Cmd::Remove(a) => remove(&a.path, a.force),
        Cmd::Reset(a) => reset(&a.path, a.force),
    };
    ExitCode::from(r.unwrap_or_else(|c| c))
}

/// Prints a usage error as one line (help and version as they are); returns
/// the exit code.
fn usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            code::OK
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            code::USAGE
        }
        _ => {
            let text = e.render().to_string();
            let body = text.split("\nUsage:").next().unwrap_or(&text);
            let body = body.replace("For more information, try '--help'.", "");
            let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let line = line.replace(" tip: ", "; tip: ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            warn(format_args!("{line} (try --help)"));
            code::USAGE
        }
    }
}

/// One line on stderr. Never panics, even if stderr is gone.
fn warn(msg: impl Display) {
    let _ = writeln!(io::stderr().lock(), "robust-mutex: {msg}");
}

/// Writes `text` to stdout and flushes it.
fn emit(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// What the program was doing when the library said no.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Open,
    Create,
    Remove,
    Reset,
}

/// Prints one line for a library error, naming the path and the cause, and
/// picks its exit code.
fn fail(e: &Error, op: Op, path: &Path) -> u8 {
    let p = path.display();
    let verb = match op {
        Op::Open => "open",
        Op::Create => "create",
        Op::Remove => "remove",
        Op::Reset => "reset",
    };
    let (code, msg) = match e {
        Error::NotFound { .. } if op == Op::Create => (
            code::CANT_CREATE,
            format!("create {p}: its directory does not exist"),
        ),
        Error::NotFound { .. } => (code::NO_INPUT, e.to_string()),
        Error::AlreadyExists { .. } => (code::CANT_CREATE, e.to_string()),
        Error::PermissionDenied { .. } => (code::NO_PERM, e.to_string()),
        Error::ForeignOwner { owner, ours, .. } => (
            code::NO_PERM,
            format!(
                "{verb} {p}: owned by uid {owner}, not by this user (uid {ours}); `run --allow-other-owners` shares it"
            ),
        ),
        Error::InvalidMode { .. } => (code::USAGE, format!("{verb} {p}: {e}")),
        Error::InvalidOptions { .. } | Error::UnsupportedType { .. } => {
            (code::SOFTWARE, format!("{verb} {p}: {e}"))
        }
        Error::InitTimeout { .. } => (code::TEMP_FAIL, e.to_string()),
        Error::ResetRefused { state, .. } => (
            code::HELD,
            format!(
                "reset {p}: the mutex is {state}, not broken (not-recoverable or stuck); use --force to reset it anyway"
            ),
        ),
        Error::Io { .. } if op == Op::Create => (code::CANT_CREATE, e.to_string()),
        Error::Io { .. } => (code::IO, e.to_string()),
        // Not a robust-mutex file, corrupt, truncated, another version, ABI,
        // kind or PID namespace, a symlink, directory or device, a network
        // filesystem: all leave the file untouched.
        _ => (code::DATA, e.to_string()),
    };
    warn(msg);
    code
}

/// Opens an existing mutex file for reading its state (never creates).
fn open_existing(path: &Path) -> Result<SharedMutex<()>, Error> {
    OpenOptions::new()
        .allow_other_owners(true)
        .open_lock_only(path)
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-01-31T12:00:01.250Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

fn with_signal(sig: i32) -> u8 {
    code::SIGNAL_BASE.saturating_add(u8::try_from(sig).unwrap_or(u8::MAX))
}

/// The owner's command line from /proc, only while that very process runs
/// (same pid and start time): a dead owner's pid may belong to someone else.
fn cmdline(o: &robust_mutex::OwnerInfo) -> Option<String> {
    if !o.is_alive() {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{}/cmdline", o.pid)).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn label_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" ({label})")
    }
}

/// Why the lock cannot be had, for one line on stderr.
fn describe_holder(s: &Status, path: &Path) -> String {
    match (&s.owner, s.state) {
        (Some(o), LockState::Stuck) => format!(
            "stuck: its holder, pid {}{}, is gone, yet the lock it took {} ago was never released; run `robust-mutex reset {}`",
            o.pid,
            label_suffix(&o.label),
            human(o.held_for()),
            path.display()
        ),
        (None, LockState::Stuck) => format!(
            "stuck: its holder is gone and the lock was never released; run `robust-mutex reset {}`",
            path.display()
        ),
        (Some(o), LockState::Locked) => format!(
            "held by pid {}{} for {}",
            o.pid,
            label_suffix(&o.label),
            human(o.held_for())
        ),
        (None, LockState::Locked) => "held (its holder is not recorded yet)".to_owned(),
        // The state changed as we gave up.
        (Some(o), state) => format!(
            "held by pid {}{} until a moment ago (now {state})",
            o.pid,
            label_suffix(&o.label)
        ),
        (None, state) => format!("held until a moment ago (now {state})"),
    }
}

// ---------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------

fn run(a: &RunArgs) -> Result<u8, u8> {
    let path = a.path.as_path();
    let mut opts = OpenOptions::new();
    opts.create(!a.no_create)
        .allow_other_owners(a.allow_other_owners);
    if let Some(mode) = a.mode {
        opts.mode(mode);
    }
    let m = opts
        .open_lock_only(path)
        .map_err(|e| fail(&e, Op::Open, path))?;
    os::install_forwarding();
    let acquired = acquire(&m, a)?;
    os::lock_taken();
    if let Some(sig) = os::pending_signal() {
        // A signal arrived as the lock was taken: COMMAND never starts.
        warn(format_args!(
            "{}: {} arrived as the lock was taken; COMMAND not run",
            path.display(),
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
    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    os::die_with_parent(&mut cmd);

    match acquired {
        Acquired::Clean(mut g) => {
            if let Some(l) = &a.label {
                g.set_label(l);
            }
            // Never inherit an outer `run`'s recovery verdict.
            cmd.env_remove(OWNER_DIED_VAR).env_remove(PREVIOUS_PID_VAR);
            match spawn_and_wait(&mut cmd, &program, path) {
                Ok(Ended::Code(c)) => Ok(c),
                Ok(Ended::Signal(sig)) => {
                    warn(format_args!(
                        "{}: COMMAND was killed by {} while holding the lock; the next holder is told its owner died",
                        path.display(),
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
                path.display(),
                prev.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ));
            cmd.env(OWNER_DIED_VAR, "1");
            match prev {
                Some(p) => cmd.env(PREVIOUS_PID_VAR, p.to_string()),
                None => cmd.env_remove(PREVIOUS_PID_VAR),
            };
            match spawn_and_wait(&mut cmd, &program, path) {
                Ok(Ended::Code(0)) => {
                    drop(r.mark_consistent());
                    Ok(code::OK)
                }
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
                        path.display(),
                        path.display()
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
fn acquire<'a>(m: &'a SharedMutex<()>, a: &RunArgs) -> Result<Acquired<'a, ()>, u8> {
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
                path.display(),
                describe_holder(&s, path)
            ));
            Err(if s.state == LockState::Stuck {
                code::UNAVAILABLE
            } else {
                a.conflict_exit_code
            })
        }
        Err(LockError::Cancelled) => {
            let sig = os::pending_signal().unwrap_or(libc::SIGINT);
            warn(format_args!(
                "{}: wait abandoned on {}; the lock was not taken",
                path.display(),
                signal_name(sig)
            ));
            Err(with_signal(sig))
        }
        Err(LockError::NotRecoverable) => {
            warn(format_args!(
                "{}: the mutex is not recoverable (an owner died and its recovery failed); after repairing, run `robust-mutex reset {}`",
                path.display(),
                path.display()
            ));
            Err(code::UNAVAILABLE)
        }
        Err(LockError::Io(e)) => {
            warn(format_args!("lock {}: {e}", path.display()));
            Err(code::IO)
        }
        Err(e) => {
            warn(format_args!("lock {}: {e}", path.display()));
            Err(code::SOFTWARE)
        }
    }
}

/// How often a long wait looks whether the lock became stuck.
const STUCK_CHECK: Duration = Duration::from_millis(500);

/// Waits (at most `timeout`) in slices; gives up early on a stuck mutex,
/// which nobody will ever release, once two looks a slice apart agree.
fn wait_for(m: &SharedMutex<()>, timeout: Option<Duration>) -> Result<Acquired<'_, ()>, LockError> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut stuck_looks = 0;
    loop {
        let left = deadline.map_or(STUCK_CHECK, |d| d.saturating_duration_since(Instant::now()));
        match m.lock_cancellable(&os::CANCEL, Some(left.min(STUCK_CHECK))) {
            Err(LockError::TimedOut) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(LockError::TimedOut);
                }
                if m.status().state == LockState::Stuck {
                    stuck_looks += 1;
                    if stuck_looks >= 2 {
                        return Err(LockError::TimedOut);
                    }
                } else {
                    stuck_looks = 0;
                }
            }
            other => return other,
        }
    }
}

/// How COMMAND ended.
enum Ended {
    Code(u8),
    Signal(i32),
}

/// Runs COMMAND and waits for it, forwarding signals meanwhile. `Err` means
/// COMMAND never ran (127 not found, 126 cannot execute), already reported.
fn spawn_and_wait(cmd: &mut Command, program: &str, path: &Path) -> Result<Ended, u8> {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let c = match e.kind() {
                io::ErrorKind::NotFound => code::COMMAND_NOT_FOUND,
                _ => code::CANNOT_EXECUTE,
            };
            warn(format_args!(
                "run {}: cannot run {program}: {e}",
                path.display()
            ));
            return Err(c);
        }
    };
    let pid = child.id() as libc::pid_t;
    os::forward_to(pid);
    // Wait without reaping first, so that no forwarded signal can reach
    // another process that reuses the pid.
    let waited = os::wait_exit_no_reap(pid);
    os::stop_forwarding();
    if let Err(e) = waited {
        warn(format_args!(
            "{}: waiting for {program}: {e}",
            path.display()
        ));
    }
    let status = loop {
        match child.wait() {
            Ok(st) => break st,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn(format_args!(
                    "{}: waiting for {program}: {e}",
                    path.display()
                ));
                return Ok(Ended::Code(code::IO));
            }
        }
    };
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Code(u8::try_from(c).unwrap_or(code::IO)),
        (None, Some(s)) => Ended::Signal(s),
        _ => Ended::Code(code::IO),
    })
}

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

fn state_code(s: LockState) -> u8 {
    match s {
        LockState::Unlocked => code::OK,
        LockState::Locked => code::HELD,
        _ => code::BROKEN,
    }
}

fn status(path: &Path, json: bool) -> Result<u8, u8> {
    let m = open_existing(path).map_err(|e| fail(&e, Op::Open, path))?;
    let s = m.status();
    let info = m.file_info();
    drop(m);
    let (mode, uid) = std::fs::symlink_metadata(path)
        .map(|md| (md.mode() & 0o7777, md.uid()))
        .unwrap_or_default();
    let c = s.counters;
    let text = if json {
        let owner = s.owner.as_ref().map(|o| {
            serde_json::json!({
                "pid": o.pid,
                "tid": o.tid,
                "label": o.label,
                "alive": o.is_alive(),
                "cmdline": cmdline(o),
                "acquired_at": rfc3339(o.acquired_at),
                "acquired_at_unix": unix_secs(o.acquired_at),
                "held_for_secs": o.held_for().as_secs_f64(),
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
            "lock_word": s.lock_word,
            "file": {
                "version": info.version,
                "kind": info.kind,
                "abi": info.abi,
                "generation": info.generation,
                "value_size": info.value_size,
                "created_at": rfc3339(info.created_at),
                "boot_id_matches": info.boot_id_matches,
                "mode": format!("{mode:04o}"),
                "uid": uid,
            },
        });
        format!("{v}\n")
    } else {
        let mut t = format!("{}: {}\n", path.display(), s.state);
        if let Some(o) = &s.owner {
            let role = match s.state {
                LockState::Locked => "holder",
                _ => "dead holder",
            };
            let label = if o.label.is_empty() {
                String::new()
            } else {
                format!(", label {:?}", o.label)
            };
            t += &format!(
                "  {role}: pid {}, tid {}{label}, took it {} ago ({})\n",
                o.pid,
                o.tid,
                human(o.held_for()),
                rfc3339(o.acquired_at)
            );
            if let Some(cl) = cmdline(o) {
                t += &format!("  command: {cl}\n");
            }
        }
        match s.state {
            LockState::OwnerDead => t += "  next: the next locker runs its recovery\n",
            LockState::NotRecoverable | LockState::Stuck => {
                t += &format!("  repair: robust-mutex reset {}\n", path.display());
            }
            _ => {}
        }
        t += &format!(
            "  counters: {} acquisitions, {} contended, {} owner deaths, {} recoveries, {} resets\n",
            c.acquisitions, c.contended, c.owner_deaths, c.recoveries, c.resets
        );
        t += &format!(
            "  file: {}, format version {}, generation {}, value {} bytes, created {}\n",
            info.kind,
            info.version,
            info.generation,
            info.value_size,
            rfc3339(info.created_at)
        );
        t += &format!(
            "  ABI: {}; mode {mode:04o}, uid {uid}; boot id {}\n",
            info.abi,
            if info.boot_id_matches {
                "matches (this boot)"
            } else {
                "differs (made before the last reboot)"
            }
        );
        t
    };
    match emit(&text) {
        Ok(()) => {}
        // The reader went away (e.g. `| grep -q`): the exit status still tells.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            warn(format_args!(
                "status {}: writing the output: {e}",
                path.display()
            ));
            return Err(code::IO);
        }
    }
    Ok(state_code(s.state))
}

// ---------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------

/// A file's identity, to notice that PATH now names another file.
type FileId = (u64, u64);

fn file_id(path: &Path) -> io::Result<FileId> {
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Opens PATH and learns which file it opened.
fn open_watched(path: &Path) -> Result<(SharedMutex<()>, FileId), Error> {
    let mut tries = 0;
    loop {
        let before = file_id(path).ok();
        let m = open_existing(path)?;
        let after = file_id(path).ok();
        tries += 1;
        match after {
            Some(id) if before == after || tries >= 10 => return Ok((m, id)),
            // Replaced while we opened it: open again.
            _ => continue,
        }
    }
}

/// What `watch` compares from one look to the next: state and holder tenure.
type Seen = (LockState, Option<(u32, u32, String, SystemTime)>);

fn watch(a: &WatchArgs) -> Result<u8, u8> {
    let path = a.path.as_path();
    let mut current = Some(open_watched(path).map_err(|e| fail(&e, Op::Open, path))?);
    let mut last: Option<Seen> = None;
    let mut printed = 0u64;
    let mut print = |line: String, state: Option<LockState>| -> Result<bool, u8> {
        let text = format!("{} {line}\n", rfc3339(SystemTime::now()));
        match emit(&text) {
            Ok(()) => {}
            // The reader went away (e.g. `| head -3`): a normal way to stop.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(code::OK),
            Err(e) => {
                warn(format_args!(
                    "watch {}: writing the output: {e}",
                    path.display()
                ));
                return Err(code::IO);
            }
        }
        printed += 1;
        let done = a.count.is_some_and(|n| printed >= n)
            || state.is_some_and(|s| a.until_state.is_some_and(|u| u.matches(s)));
        Ok(done)
    };
    loop {
        // Has PATH been removed, or replaced (by a reset)?
        let now = file_id(path);
        match (&current, now) {
            (Some((_, id)), Ok(n)) if *id == n => {}
            (Some(_), Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                current = None;
                last = None;
                if print("removed".into(), None)? {
                    return Ok(code::OK);
                }
            }
            (None, Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
            (was, _) => {
                let had = was.is_some();
                match open_watched(path) {
                    Ok((m, id)) => {
                        let line = if had {
                            format!("replaced: generation {}", m.status().generation)
                        } else {
                            format!("created: generation {}", m.status().generation)
                        };
                        current = Some((m, id));
                        last = None;
                        if print(line, None)? {
                            return Ok(code::OK);
                        }
                    }
                    // Gone again before we could open it: look next time.
                    Err(Error::NotFound { .. }) => {
                        if had {
                            current = None;
                            last = None;
                            if print("removed".into(), None)? {
                                return Ok(code::OK);
                            }
                        }
                    }
                    Err(e) => return Err(fail(&e, Op::Open, path)),
                }
            }
        }
        if let Some((m, _)) = &current {
            let s = m.status();
            let seen: Seen = (
                s.state,
                s.owner
                    .as_ref()
                    .map(|o| (o.pid, o.tid, o.label.clone(), o.acquired_at)),
            );
            if last.as_ref() != Some(&seen) {
                let who = s.owner.as_ref().map_or(String::new(), |o| {
                    format!(" pid {} tid {}{}", o.pid, o.tid, label_suffix(&o.label))
                });
                last = Some(seen);
                if print(format!("{}{who}", s.state), Some(s.state))? {
                    return Ok(code::OK);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(a.interval));
    }
}

// ---------------------------------------------------------------------------
// create, remove, reset
// ---------------------------------------------------------------------------

fn create(path: &Path, mode: u32) -> Result<u8, u8> {
    OpenOptions::new()
        .create_new(true)
        .mode(mode)
        .open_lock_only(path)
        .map(|_| code::OK)
        .map_err(|e| fail(&e, Op::Create, path))
}

fn remove(path: &Path, force: bool) -> Result<u8, u8> {
    if !force {
        let m = open_existing(path).map_err(|e| fail(&e, Op::Remove, path))?;
        let s = m.status();
        drop(m);
        if s.state == LockState::Locked {
            warn(format_args!(
                "remove {}: {}; a new file would let the next `run` take the lock while it is held; use --force to remove it anyway",
                path.display(),
                describe_holder(&s, path)
            ));
            return Err(code::HELD);
        }
    }
    SharedMutex::<()>::remove(path)
        .map(|()| code::OK)
        .map_err(|e| fail(&e, Op::Remove, path))
}

fn reset(path: &Path, force: bool) -> Result<u8, u8> {
    let out = robust_mutex::reset(path, force).map_err(|e| fail(&e, Op::Reset, path))?;
    let text = format!(
        "{}: reset ({} before), now generation {}; the next locker runs its recovery\n",
        path.display(),
        out.previous_state,
        out.generation
    );
    // The reset is done; a closed stdout does not undo it.
    let _ = emit(&text);
    Ok(code::OK)
}

// ---------------------------------------------------------------------------
// Process control: the only system calls this program makes itself.
// ---------------------------------------------------------------------------

mod os {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn seconds_and_modes() {
        assert_eq!(parse_secs("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_secs("1e30"), Ok(Duration::MAX));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs("inf").is_err());
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
