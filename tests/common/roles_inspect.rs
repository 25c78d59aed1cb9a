//! Roles for the read-only inspection tests (see [`super::roles`]).
//!
//! * `inspect_report`: [`robust_mutex::inspect`] on the path; says
//!   `result=ok <state>`, `result=permission`, `result=being-created` or
//!   `result=other <error>`. Never opens the file any other way.

use super::say;
use robust_mutex::Error;
use std::path::Path;

/// Plays `role` if it is one of these; returns whether it was.
pub fn run(role: &str, path: &Path) -> bool {
    match role {
        "inspect_report" => {
            let r = match robust_mutex::inspect(path) {
                Ok(s) => format!("ok {}", s.state),
                Err(Error::PermissionDenied { .. }) => "permission".to_owned(),
                Err(Error::BeingCreated { .. }) => "being-created".to_owned(),
                Err(e) => format!("other {e}"),
            };
            say(format!("result={r}"));
        }
        _ => return false,
    }
    true
}
