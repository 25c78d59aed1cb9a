//! The administrative subcommands: `create` a lock file, `remove` one, and
//! `reset` a broken mutex.

use crate::exit::{Op, code, fail, state_code};
use crate::format::{emit, human, label_suffix, path_text, warn};
use robust_mutex::{
    Error, LockKind, LockState, OpenOptions, OwnerInfo, RemoveOptions, ResetOptions,
};
use std::path::Path;

/// `create`: makes a new lock file at PATH with `mode`; fails if PATH exists.
pub(crate) fn create(path: &Path, mode: u32) -> Result<u8, u8> {
    OpenOptions::new()
        .create_new(true)
        .mode(mode)
        .open_lock_only(path)
        .map(|_| code::OK)
        .map_err(|e| fail(&e, Op::Create, path))
}

/// `remove`: removes the lock file at PATH, refusing (without `force`) a
/// held lock (exit 1), a broken one whose repair it would discard (exit 2:
/// owner-dead, not-recoverable, stuck) and (without `allow_other_owners`)
/// another user's file (exit 77). The file is judged read-only; a refused
/// file is left untouched.
pub(crate) fn remove(path: &Path, force: bool, allow_other_owners: bool) -> Result<u8, u8> {
    let removed = RemoveOptions::new()
        .force(force)
        .allow_other_owners(allow_other_owners)
        .remove(path);
    let p = path_text(path);
    match removed {
        Ok(()) => Ok(code::OK),
        Err(Error::RemoveRefused {
            state,
            holder,
            kind,
            ..
        }) => {
            warn(remove_refused(path, state, holder.as_ref(), kind));
            Err(state_code(state))
        }
        Err(Error::ForeignOwner { owner, ours, .. }) => {
            warn(format_args!(
                "remove {p}: owned by uid {owner}, not by this user (uid {ours}); `remove --allow-other-owners` removes it"
            ));
            Err(code::NO_PERM)
        }
        Err(e) => Err(fail(&e, Op::Remove, path)),
    }
}

/// Why `remove` refused PATH, in `state`, and the way out: one line.
fn remove_refused(
    path: &Path,
    state: LockState,
    holder: Option<&OwnerInfo>,
    kind: Option<LockKind>,
) -> String {
    let p = path_text(path);
    let who = |dead: &str| {
        holder.map_or(String::new(), |o| {
            format!(", {dead}pid {}{}", o.pid, label_suffix(&o.label))
        })
    };
    let repair = if matches!(kind, Some(LockKind::Mutex | LockKind::Reentrant)) {
        format!("Use `robust-mutex reset {p}` to repair, or --force to remove it anyway")
    } else {
        "It cannot be reset: use --force to remove it anyway".to_owned()
    };
    match state {
        LockState::Locked => format!(
            "remove {p}: held{}, for {}; a new file would let the next `run` take the lock while it is held; use --force to remove it anyway",
            holder.map_or(String::new(), |o| format!(
                " by pid {}{}",
                o.pid,
                label_suffix(&o.label)
            )),
            holder.map_or("a moment".to_owned(), |o| human(o.held_for())),
        ),
        LockState::OwnerDead => format!(
            "remove {p}: the lock is owner-dead{}: the next locker would run its repair; removing it discards that. Let the next locker repair it, or use --force to remove it anyway",
            who("its holder was ")
        ),
        LockState::NotRecoverable => format!(
            "remove {p}: the lock is not-recoverable: a recovery was abandoned and never redone; removing it would let the next `run` start clean on unrepaired state. {repair}"
        ),
        _ => format!(
            "remove {p}: the lock is {state}{}: its holder is gone but the lock was never released; removing it would let the next `run` start clean, skipping the repair. {repair}",
            who("its holder was ")
        ),
    }
}

/// `reset`: replaces a broken mutex (any mutex with `force`) with a fresh
/// file that keeps its value and counters; with `force`, also what is left
/// of a lock file (empty or truncated). Another user's file only with
/// `allow_other_owners`.
pub(crate) fn reset(path: &Path, force: bool, allow_other_owners: bool) -> Result<u8, u8> {
    let out = ResetOptions::new()
        .force(force)
        .allow_other_owners(allow_other_owners)
        .reset(path)
        .map_err(|e| fail(&e, Op::Reset, path))?;
    let before = match out.remnant_len {
        Some(0) => "it was empty".to_owned(),
        Some(n) => format!("{n} bytes were left of it"),
        None => format!("{} before", out.previous_state),
    };
    let text = match out.migrated_from {
        Some(v) if out.converted_by_another => format!(
            "{}: already converted from format version {v} by another reset; now generation {}, {}; nothing done\n",
            path_text(path),
            out.generation,
            out.previous_state
        ),
        // A free version-1 lock converts to a clean one.
        Some(v) => {
            format!(
                "{}: converted from format version {v} ({before}), now generation {}; {}\n",
                path_text(path),
                out.generation,
                if out.previous_state == LockState::Unlocked {
                    "the next locker gets it clean"
                } else {
                    "the next locker runs its recovery"
                }
            ) + &still_held(out.old_locks_held)
        }
        None => format!(
            "{}: reset ({before}), now generation {}; the next locker runs its recovery\n",
            path_text(path),
            out.generation
        ),
    };
    // The reset is done; a closed stdout does not undo it.
    let _ = emit(&text);
    Ok(code::OK)
}

/// What `reset` adds when a forced conversion gave up waiting for
/// version-1 holders of the old file's locks.
fn still_held(n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    format!(
        "warning: {n} lock(s) of the old version-1 file still held after waiting: when its holder unlocks, other version-1 processes can take it and keep using the old file; stop the version-1 processes\n"
    )
}
