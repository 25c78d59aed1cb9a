//! Roles for the read-only inspection tests (see [`super::roles`]).
//!
//! * `inspect_report`: [`robust_mutex::inspect`] on the path; says
//!   `result=ok <state>`, `result=permission`, `result=being-created` or
//!   `result=other <error>`. Never opens the file any other way.
//! * `many_files`: with its open-file limit lowered to 256, opens 600
//!   distinct `SharedMutex<u64>` files in the directory `path` (creating
//!   them), keeps every handle and takes each one's `status()`; says
//!   `opened=<n>` (600 when no handle costs a descriptor) or
//!   `failed=<n> <error>`.

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
        "many_files" => {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
            setrlimit(Resource::RLIMIT_NOFILE, 256, hard).unwrap();
            let mut kept = Vec::new();
            for i in 0..600 {
                match robust_mutex::SharedMutex::<u64>::open(path.join(format!("{i}.lock"))) {
                    Ok(m) => {
                        assert_eq!(m.status().state, robust_mutex::LockState::Unlocked);
                        kept.push(m);
                    }
                    Err(e) => {
                        say(format!("failed={i} {e}"));
                        return true;
                    }
                }
            }
            say(format!("opened={}", kept.len()));
        }
        _ => return false,
    }
    true
}
