//! The administrative subcommands: `create` a lock file, `remove` one, and
//! `reset` a broken mutex.

use crate::exit::{Op, code, fail};
use crate::format::{describe_holder, emit, warn};
use crate::status::open_existing;
use robust_mutex::{LockState, OpenOptions, ResetOptions};
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

/// `remove`: removes the lock file at PATH, refusing while it is held
/// unless `force`.
pub(crate) fn remove(path: &Path, force: bool) -> Result<u8, u8> {
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
    robust_mutex::remove(path)
        .map(|()| code::OK)
        .map_err(|e| fail(&e, Op::Remove, path))
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
    let text = format!(
        "{}: reset ({before}), now generation {}; the next locker runs its recovery\n",
        path.display(),
        out.generation
    );
    // The reset is done; a closed stdout does not undo it.
    let _ = emit(&text);
    Ok(code::OK)
}
