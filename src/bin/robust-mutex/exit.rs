//! Exit codes: the table of codes, and the mapping from a library error, a
//! lock state or a signal to the code the program exits with.

use crate::format::{path_text, warn};
use robust_mutex::{Error, LockState};
use std::path::Path;

/// Exit codes, documented in `--help` (see [`crate::cli`]) and the README's
/// "Exit codes" table.
pub(crate) mod code {
    /// Success; `status`: unlocked.
    pub const OK: u8 = 0;
    /// `run`: the lock is held (default `--conflict-exit-code`, as flock(1));
    /// `status`: locked; `reset`/`remove`: refused (healthy / held; `reset`:
    /// empty or truncated).
    pub const HELD: u8 = 1;
    /// `status`: owner-dead, not-recoverable or stuck; `remove`: refused
    /// for that.
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
    /// EX_OSERR: `run --kill-tree`'s keeper could not make COMMAND's
    /// namespace (though the probe could); COMMAND was not run.
    pub const OS_ERR: u8 = 71;
    /// EX_CANTCREAT: `create` could not create PATH; no space for a lock
    /// file (any command).
    pub const CANT_CREATE: u8 = 73;
    /// EX_IOERR; also: PATH was truncated while in use (the command's
    /// mapping of it faulted: SIGBUS, caught, one line, this code).
    pub const IO: u8 = 74;
    /// EX_TEMPFAIL: another process is still initialising PATH, or PATH
    /// carries the creator's mark (being created, or its creator died).
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

/// What the program was doing when the library said no.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Open,
    /// `status`: a read-only look (otherwise as `Open`).
    Status,
    Create,
    Remove,
    Reset,
}

/// Prints one line for a library error, naming the path and the cause, and
/// picks its exit code.
pub(crate) fn fail(e: &Error, op: Op, path: &Path) -> u8 {
    let p = path_text(path);
    let verb = match op {
        Op::Open => "open",
        Op::Status => "status",
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
        // A reset creates its replacement in the file's directory.
        Error::DirectoryNotWritable { .. } => (code::NO_PERM, format!("{verb} {e}")),
        Error::PermissionDenied { .. } => (code::NO_PERM, e.to_string()),
        Error::ResetChangesOwner { .. } => (code::NO_PERM, e.to_string()),
        Error::ForeignOwner { owner, ours, .. } => (
            code::NO_PERM,
            format!(
                "{verb} {p}: owned by uid {owner}, not by this user (uid {ours}); `{} --allow-other-owners` {}",
                if op == Op::Reset { "reset" } else { "run" },
                if op == Op::Reset {
                    "resets it"
                } else {
                    "shares it"
                },
            ),
        ),
        Error::NoSpace { .. } => (code::CANT_CREATE, e.to_string()),
        Error::ReadOnlyFilesystem { .. } if op == Op::Create => (code::CANT_CREATE, e.to_string()),
        Error::ReadOnlyFilesystem { .. } => (code::IO, e.to_string()),
        Error::ResetNeedsForce { len, found, .. } => (
            code::HELD,
            format!(
                "reset {p}: the file is {found} ({len} bytes), so it holds no lock to carry over; use --force to replace it with a new mutex"
            ),
        ),
        Error::Truncated { .. } if matches!(op, Op::Open | Op::Status) => (
            code::DATA,
            format!("{e}; `robust-mutex reset --force {p}` replaces it with a new mutex"),
        ),
        Error::InvalidMode { .. } => (code::USAGE, format!("{verb} {p}: {e}")),
        // remove judges a file it cannot read the lock of only with --force.
        Error::PidNamespaceMismatch { .. } | Error::Corrupt { .. } | Error::Truncated { .. }
            if op == Op::Remove =>
        {
            (
                code::DATA,
                format!("{e}; `robust-mutex remove --force {p}` removes it anyway"),
            )
        }
        Error::PidNamespaceMismatch { file_ns, ours, .. } => (
            code::DATA,
            format!(
                "{verb} {p}: created in another PID namespace ({file_ns}; this process is in {ours}), where thread ids can clash with ours; only `run --allow-foreign-pid-namespace` uses such a file (safe only if the other namespace's processes never use it meanwhile)"
            ),
        ),
        Error::InvalidOptions { .. } | Error::UnsupportedType { .. } => {
            (code::SOFTWARE, format!("{verb} {p}: {e}"))
        }
        // The library's text names `open`; say what was being done.
        Error::BeingCreated { .. } => (code::TEMP_FAIL, as_verb(e, verb, &p)),
        // Another format version: PATH is not a file this build uses
        // (untouched); the text says how to convert it, or to upgrade.
        Error::UnsupportedVersion { .. } => (code::DATA, as_verb(e, verb, &p)),
        Error::InitTimeout { .. } | Error::FlockHeld { .. } | Error::ChangedUnderneath { .. } => {
            (code::TEMP_FAIL, e.to_string())
        }
        Error::ResetRefused { state, .. } => (
            code::HELD,
            format!(
                "reset {p}: the mutex is {state}, not broken (not-recoverable or stuck); use --force to reset it anyway"
            ),
        ),
        Error::ConversionRefused { .. } => (
            code::HELD,
            format!(
                "reset {p}: converting format version 1 needs every lock free, and one stays held by a live process: stop the version-1 processes, or use --force: they then find the old lock not recoverable"
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

/// The library's text of `e`, which begins `open PATH: `, beginning with
/// `verb` instead.
fn as_verb(e: &Error, verb: &str, p: &str) -> String {
    let text = e.to_string();
    let why = text.strip_prefix(&format!("open {p}: ")).unwrap_or(&text);
    format!("{verb} {p}: {why}")
}

/// The exit code for COMMAND killed by signal `sig`, or a wait abandoned on
/// it: 128 + N, as shells do.
pub(crate) fn with_signal(sig: i32) -> u8 {
    code::SIGNAL_BASE.saturating_add(u8::try_from(sig).unwrap_or(u8::MAX))
}

/// `status`'s exit code for a lock state: 0 unlocked, 1 locked, 2 broken.
pub(crate) fn state_code(s: LockState) -> u8 {
    match s {
        LockState::Unlocked => code::OK,
        LockState::Locked => code::HELD,
        _ => code::BROKEN,
    }
}
