//! The roles of the format-conversion tests (`tests/file/migrate.rs`),
//! dispatched from [`super::roles::run_if_child`] by one line:
//!
//! * `raw_lock_at`: maps the file past the library and locks the mutex at
//!   the byte offset [`OFFSET_ENV`] names with plain `pthread_mutex_lock`
//!   (a version-1 process holding the lock, or a permit); says
//!   `locked=<errno>`, waits to be killed.
//! * `convert_and_report`: `reset` without force on the path; says
//!   `result=<generation>,<previous state>,<converted by another>` or
//!   `result=error <error>`.
//! * `raw_hold_at`: as `raw_lock_at`; then, on a line from the parent,
//!   unlocks it with `pthread_mutex_unlock`, says `unlocked=<errno>`, waits
//!   to be killed.

use super::{hang, roles::raw_lock, say};
use std::path::Path;

/// The byte offset of the mutex `raw_lock_at` locks.
pub const OFFSET_ENV: &str = "RM_MUTEX_OFFSET";

/// Plays `role` on `path` if it is one of this file's; false otherwise.
pub fn run(role: &str, path: &Path) -> bool {
    if role == "convert_and_report" {
        say(match robust_mutex::reset(path, false) {
            Ok(o) => format!(
                "result={},{},{}",
                o.generation, o.previous_state, o.converted_by_another
            ),
            Err(e) => format!("result=error {e}"),
        });
        return true;
    }
    if role != "raw_lock_at" && role != "raw_hold_at" {
        return false;
    }
    let offset: usize = std::env::var(OFFSET_ENV).unwrap().parse().unwrap();
    let (rc, m) = raw_lock(path, offset);
    say(format!("locked={rc}"));
    if role == "raw_hold_at" {
        super::listen();
        // SAFETY: locked by this thread just above, in the live mapping.
        let rc = unsafe { libc::pthread_mutex_unlock(m) };
        say(format!("unlocked={rc}"));
    }
    hang()
}
