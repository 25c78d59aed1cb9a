//! Roles for the fixes to reset, remove and inspect (see [`super::roles`]).
//!
//! * `reset_report`, `reset_force_report`: [`robust_mutex::reset`] on the
//!   path (without or with force); says `result=ok <generation> <remnant>`
//!   or `result=error <Debug of the error>`.
//! * `remove_report`: [`robust_mutex::RemoveOptions::remove`]; says
//!   `result=ok` or `result=error <Debug of the error>`.

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
        _ => return false,
    }
    true
}
