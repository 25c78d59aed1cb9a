//! Roles for reset, remove and inspect against files that change under them (see [`super::roles`]).
//!
//! * `reset_report`, `reset_force_report`: [`robust_mutex::reset`] on the
//!   path (without or with force); says `result=ok <generation> <remnant>`
//!   or `result=error <Debug of the error>`.
//! * `remove_report`: [`robust_mutex::RemoveOptions::remove`]; says
//!   `result=ok` or `result=error <Debug of the error>`.
//! * `create_then_hold`, `bare_create_then_hold`: opens (creating) a
//!   `SharedMutex<u64>` or a `BareMutex` (run with the pause hooks,
//!   `ROBUST_MUTEX_TEST_PAUSE_AT` and `ROBUST_MUTEX_TEST_RESUME`), locks it,
//!   says `locked` and waits to be killed.

use super::say;
use std::path::Path;

/// Plays `role` if it is one of these; returns whether it was.
pub fn run(role: &str, path: &Path) -> bool {
    match role {
        "reset_report" | "reset_force_report" => {
            let force = role == "reset_force_report";
            match robust_mutex::reset(path, force) {
                Ok(o) => say(format!(
                    "result=ok {} {}",
                    o.generation,
                    o.remnant_len.is_some()
                )),
                Err(e) => say(format!("result=error {e:?}")),
            }
        }
        "remove_report" => match robust_mutex::RemoveOptions::new().remove(path) {
            Ok(()) => say("result=ok"),
            Err(e) => say(format!("result=error {e:?}")),
        },
        "create_then_hold" => {
            let m = robust_mutex::SharedMutex::<u64>::open(path).unwrap();
            let g = m.lock().unwrap();
            say("locked");
            std::mem::forget(g);
            super::hang();
        }
        "bare_create_then_hold" => {
            let m = robust_mutex::BareMutex::open(path).unwrap();
            let g = m.lock().unwrap();
            say("locked");
            std::mem::forget(g);
            super::hang();
        }
        _ => return false,
    }
    true
}
