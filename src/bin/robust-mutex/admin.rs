//! The administrative subcommands: `create` a lock file, `remove` one, and
//! `reset` a broken mutex.

use crate::exit::{Op, code, fail};
use crate::format::{describe_holder, emit, warn};
use crate::status::open_existing;
use robust_mutex::{LockState, OpenOptions};
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
/// file that keeps its value and counters.
pub(crate) fn reset(path: &Path, force: bool) -> Result<u8, u8> {
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
