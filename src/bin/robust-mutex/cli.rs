//! The command line: clap definitions of every subcommand and its options,
//! the help texts (with the exit-code table), and the parsers of option
//! values. Nothing here runs anything.

use crate::exit::code;
use clap::{Args, Parser, Subcommand, ValueEnum};
use robust_mutex::LockState;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  robust-mutex run /run/lock/backup.lock -- rsync -a /src /dst
  robust-mutex run --nonblock /run/lock/job.lock -- ./job.sh || echo busy
  robust-mutex status --json /run/lock/backup.lock
  robust-mutex reset /run/lock/backup.lock

Exit codes:
  0      success (run: COMMAND's own status; status: unlocked)
  1      run: the lock is held (--conflict-exit-code); status: locked;
         reset, remove: refused (healthy, held, empty or truncated;
         use --force)
  2      status: owner-dead, not-recoverable or stuck;
         remove: refused (owner-dead, not-recoverable or stuck; use --force)
  64     usage error                  65  not a usable mutex file
  66     no such file                 69  mutex not recoverable or stuck
  70     internal error               73  cannot create (or disk full)
  71     run --kill-tree: COMMAND's namespace not made after all; not run
  74     I/O error, or PATH was truncated while in use (one line says so)
  75     still being created
  77     permission denied
  126    COMMAND not executable       127 COMMAND not found
  128+N  COMMAND killed by signal N, or the wait abandoned on signal N
         (130: SIGINT)";

/// A crash-safe, path-named lock for shell scripts: like flock(1), but the
/// next holder is told when the previous one died holding the lock.
#[derive(Parser, Debug)]
#[command(name = "robust-mutex", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    Run(RunArgs),
    Status(StatusArgs),
    Watch(WatchArgs),
    Create(CreateArgs),
    Remove(RemoveArgs),
    Reset(ResetArgs),
    /// The init of `run --kill-tree`'s PID namespace (internal).
    #[command(name = "__tree-init", hide = true)]
    TreeInit(TreeInitArgs),
}

impl Cmd {
    /// The lock file the subcommand works on (none for the internal init).
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Cmd::Run(a) => Some(&a.path),
            Cmd::Status(a) => Some(&a.path),
            Cmd::Watch(a) => Some(&a.path),
            Cmd::Create(a) => Some(&a.path),
            Cmd::Remove(a) => Some(&a.path),
            Cmd::Reset(a) => Some(&a.path),
            Cmd::TreeInit(_) => None,
        }
    }
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
/// COMMAND dies with `run` (PR_SET_PDEATHSIG=SIGKILL), but what COMMAND
/// starts does not, unless --kill-tree is given. SIGINT, SIGTERM,
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

--kill-tree: COMMAND runs as PID 2 of a new PID namespace, under a small
init (PID 1) that forwards signals and reaps, itself watched by a keeper
outside the namespace. When COMMAND ends or is killed, or `run` is
killed, the kernel kills everything COMMAND started, and `run` releases
the lock only once all of it is gone. If `run` itself is SIGKILLed, the
kernel frees the lock before the tree is gone; the tree (its keeper) holds
a beacon lock on the file until the whole namespace is gone, and the next
`run` waits for it before it starts its COMMAND; a library locker does not
wait. Only a keeper killed itself (kill -9 of the whole process group, the
OOM killer) drops the beacon a moment early. The wait for a beacon counts
against --timeout (-n: looks once) and ends with the conflict code;
without either, `run` warns after 10 s and starts COMMAND anyway. Any
fcntl lock on that byte (see `fuser -v PATH`) holds it up too.
It needs root or unprivileged user namespaces. Unprivileged, COMMAND runs
in a new user namespace that maps only your own uid and gid: set-user-ID
and file-capability programs (sudo, ping) do not gain privilege,
setgroups(2) is denied, files of other users (root's too) appear as owned
by 65534 (nobody), and /proc is not remounted, so `$$` (2) differs from the
pid `ps` shows. Where no namespace can be made, `run` says so and falls
back to killing COMMAND's process group when COMMAND ends (which misses
processes that leave the group, and does nothing when `run` is SIGKILLed;
that group gets the terminal's foreground while COMMAND runs). If the
namespace cannot be made after all, COMMAND is not run (exit 71). Inside
the namespace no lock can be used (a nested `robust-mutex run` or
`create` is refused): to nest locks as with flock(1), leave --kill-tree
off the outer run.

Exit status: COMMAND's own; the --conflict-exit-code (1) when the lock is
held (or a --kill-tree beacon outlasts -n/--timeout); 69 when the mutex
is not recoverable or stuck; 71 when --kill-tree's namespace could not be
made after all (COMMAND not run); 74 when PATH was truncated while in use;
126/127 when COMMAND cannot be run; 128+N when COMMAND is killed by
signal N or the wait is abandoned on signal N (130: SIGINT). See `robust-mutex --help` for the rest.")]
pub(crate) struct RunArgs {
    /// Give up after SECS seconds (fractions allowed; 0 = try once).
    #[arg(
        long,
        short = 'w',
        value_name = "SECS",
        conflicts_with = "nonblock",
        allow_negative_numbers = true,
        value_parser = parse_secs
    )]
    pub(crate) timeout: Option<Duration>,
    /// Fail at once if the lock is held.
    #[arg(long, short = 'n')]
    pub(crate) nonblock: bool,
    /// Exit code when the lock cannot be had (default 1, as flock(1)).
    #[arg(long, short = 'E', value_name = "N", default_value_t = code::HELD)]
    pub(crate) conflict_exit_code: u8,
    /// A label for the owner record, shown by `status`, `watch` and waiters
    /// (at most 88 bytes; control characters are shown escaped).
    #[arg(long, value_name = "TEXT")]
    pub(crate) label: Option<String>,
    /// Fail if PATH does not exist, instead of creating it.
    #[arg(long)]
    pub(crate) no_create: bool,
    /// Mode of PATH if `run` creates it, in octal (must include 0600; no
    /// execute bits; world-writable only with --allow-world-writable).
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub(crate) mode: Option<u32>,
    /// Accept a world-writable --mode (anyone could then break the lock).
    #[arg(long)]
    pub(crate) allow_world_writable: bool,
    /// Use a lock file owned by another user (e.g. a group-shared 0660 file).
    #[arg(long)]
    pub(crate) allow_other_owners: bool,
    /// Use a lock file created in another PID namespace (another container).
    /// Unsafe if processes of both namespaces use it: their thread ids can
    /// clash, and one could unlock the other's lock.
    #[arg(long)]
    pub(crate) allow_foreign_pid_namespace: bool,
    /// Run COMMAND in its own PID namespace, so that everything it starts
    /// dies with it, before the lock is released; see --kill-tree below.
    #[arg(long)]
    pub(crate) kill_tree: bool,
    /// The lock file.
    pub(crate) path: PathBuf,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

/// Show the lock's state, holder, counters and file facts (without locking).
///
/// The holder is shown with its pid, tid, label, how long it has held the
/// lock and, while it runs, its command line from /proc. For owner-dead and
/// stuck mutexes it is the dead holder. Works for every kind of lock file
/// (mutex, re-entrant, semaphore, bare pymutex file). Only reads: read
/// permission is enough, a read-only mount too, and nothing is ever written.
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
A semaphore adds permits (total, available, held, owner_dead,
not_recoverable, stuck, holders, slots) and its state is its worst
permit's; a bare file has file.kind \"bare\" and no counters.

Exit status: 0 unlocked, 1 locked, 2 owner-dead, not-recoverable or stuck;
75 being created (or its creator died: the next opener takes it over);
errors as in `robust-mutex --help`.")]
pub(crate) struct StatusArgs {
    /// One line of JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// The lock file.
    pub(crate) path: PathBuf,
}

/// Print one timestamped line per change of state or holder, until Ctrl-C.
///
/// Times are UTC. --count and --until-state end it earlier. Follows PATH:
/// a reset (which replaces the file), a removal and a file being created are
/// reported, and a new file at PATH is picked up. Only reads, as `status`.
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
pub(crate) struct WatchArgs {
    /// How often to look, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) interval: u64,
    /// Stop after printing N lines.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Stop after printing a line with this state.
    #[arg(long, value_name = "STATE")]
    pub(crate) until_state: Option<StateArg>,
    /// The lock file.
    pub(crate) path: PathBuf,
}

/// Create a new lock file; fails if PATH exists.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex create /run/lock/job.lock
  robust-mutex create --mode 0660 /run/lock/shared.lock

Exit status: 0 created, 73 PATH exists or cannot be created, 64 bad mode.")]
pub(crate) struct CreateArgs {
    /// Mode in octal; must include 0600 (the owner reads and writes); no
    /// execute bits; world-writable only with --allow-world-writable.
    #[arg(long, value_name = "OCTAL", default_value = "0600", value_parser = parse_mode)]
    pub(crate) mode: u32,
    /// Accept a world-writable --mode (anyone could then break the lock).
    #[arg(long)]
    pub(crate) allow_world_writable: bool,
    /// The lock file.
    pub(crate) path: PathBuf,
}

/// Remove a lock file (only a robust-mutex file is ever removed).
///
/// Refuses while a live process holds the lock: a new file at PATH would
/// let the next `run` take the lock while the old holder still works. Refuses
/// an owner-dead, not-recoverable or stuck lock: the repair it awaits would
/// be lost (`reset` repairs). Refuses another user's file. The file is
/// judged without writing to it, and a refused file is left untouched.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex remove /run/lock/old.lock
  robust-mutex remove --force /run/lock/old.lock

Exit status: 0 removed, 1 refused (held), 2 refused (owner-dead,
not-recoverable or stuck), 77 another user's file (--allow-other-owners),
65 not a mutex file.")]
pub(crate) struct RemoveArgs {
    /// Remove it even while it is held, owner-dead, not-recoverable or stuck.
    #[arg(long)]
    pub(crate) force: bool,
    /// Remove it even if another user owns it.
    #[arg(long)]
    pub(crate) allow_other_owners: bool,
    /// The lock file.
    pub(crate) path: PathBuf,
}

/// Repair a broken (not-recoverable or stuck) mutex.
///
/// Replaces PATH with a fresh file that keeps the value and counters; every
/// process moves to it, and the next locker runs its recovery. With
/// --force, also replaces what is left of a lock file: an empty file (as
/// flock(1) and touch leave) or a truncated one. Never someone else's data.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  robust-mutex reset /run/lock/backup.lock
  robust-mutex reset --force /run/lock/backup.lock

Exit status: 0 reset, 1 refused (the mutex is not broken, or the file is
empty or truncated; use --force), 73 no space for the new file, 77 another
user's file (--allow-other-owners) or a directory this user cannot write.")]
pub(crate) struct ResetArgs {
    /// Reset even a healthy mutex (its holder and waiters finish on the old
    /// file), and replace an empty or truncated file.
    #[arg(long)]
    pub(crate) force: bool,
    /// Reset a file owned by another user (as root only: the new file keeps
    /// its owner).
    #[arg(long)]
    pub(crate) allow_other_owners: bool,
    /// The lock file.
    pub(crate) path: PathBuf,
}

/// `__tree-init`: PID 1 of `run --kill-tree`'s namespace.
#[derive(Args, Debug)]
pub(crate) struct TreeInitArgs {
    /// Where the init reports how COMMAND started and ended.
    #[arg(long)]
    pub(crate) report_fd: i32,
    /// Read end of a pipe only `run` writes: EOF means `run` is gone.
    #[arg(long)]
    pub(crate) alive_fd: i32,
    /// The lock file, for messages.
    #[arg(long)]
    pub(crate) path: PathBuf,
    /// Be the keeper instead (`privileged` or `user`): make the namespace,
    /// start the init in it, and exit only once the init is reaped.
    #[arg(long, value_name = "KIND")]
    pub(crate) keeper: Option<String>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub(crate) command: Vec<OsString>,
}

/// A state name for `watch --until-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    Unlocked,
    Locked,
    OwnerDead,
    NotRecoverable,
    Stuck,
}

impl StateArg {
    pub(crate) fn matches(self, s: LockState) -> bool {
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

/// The most bytes a label may have (an owner record's room).
pub(crate) const LABEL_LIMIT: usize = robust_mutex::LabelTooLong::LIMIT;

/// Refuses a `--label` longer than an owner record holds (checked after
/// parsing, so that the message does not repeat a huge label).
pub(crate) fn check_label(label: Option<&str>) -> Result<(), String> {
    match label {
        Some(l) if l.len() > LABEL_LIMIT => Err(format!(
            "--label is {} bytes; a label holds at most {LABEL_LIMIT} bytes",
            l.len()
        )),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_label(Some(&"é".repeat(44))).is_ok());
        let e = check_label(Some(&"é".repeat(45))).unwrap_err();
        assert!(
            e.contains("90 bytes") && e.contains("at most 88 bytes"),
            "{e}"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
