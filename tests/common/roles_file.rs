//! The roles of the file-layer tests (full disks, resets as another user),
//! dispatched from [`super::roles::run_if_child`] by one line:
//!
//! * `open_kind_report`: opens (creating) the kind named by [`KIND_ENV`]
//!   (`mutex`, `reentrant`, `semaphore`, `bare`) and takes its lock once;
//!   says `result=ok`, `result=no-space <error>` (an [`Error::NoSpace`] whose
//!   source is `StorageFull`) or `result=other <error>`. Run in a child so
//!   that a SIGBUS shows up as the child's death, not the test binary's.
//! * `reset_and_report`: `reset --force` on the path; says `result=ok`,
//!   `result=permission <path named>`, `result=dir-not-writable <dir>`,
//!   `result=changes-owner <owner>`, `result=changed-underneath` or
//!   `result=other <error>`.
//! * `hold_big_until_told`: `SharedMutex<[u8; 16384]>`: opens (a sparse
//!   copy, say), locks, sets the last byte to 7, says `locked`; on a line
//!   from the parent sets the first byte to 9, unlocks, says `released`,
//!   waits to be killed.
//! * `reset_any_owner_and_report`: as `reset_and_report`, with
//!   `allow_other_owners(true)`.

use super::say;
use robust_mutex::{BareMutex, Error, ReentrantMutex, SharedMutex, SharedSemaphore};
use std::path::Path;

/// Which kind `open_kind_report` opens.
pub const KIND_ENV: &str = "RM_KIND";

/// Plays `role` on `path` if it is one of this file's; false otherwise.
pub fn run(role: &str, path: &Path) -> bool {
    match role {
        "open_kind_report" => {
            let kind = std::env::var(KIND_ENV).unwrap();
            say(format!("result={}", open_kind(&kind, path)));
        }
        "reset_and_report" | "reset_any_owner_and_report" => {
            let r = match robust_mutex::ResetOptions::new()
                .force(true)
                .allow_other_owners(role == "reset_any_owner_and_report")
                .reset(path)
            {
                Ok(_) => "ok".to_owned(),
                Err(Error::PermissionDenied { path }) => format!("permission {}", path.display()),
                Err(Error::DirectoryNotWritable { dir, .. }) => {
                    format!("dir-not-writable {}", dir.display())
                }
                Err(Error::ResetChangesOwner { owner, .. }) => format!("changes-owner {owner}"),
                Err(Error::ChangedUnderneath { .. }) => "changed-underneath".to_owned(),
                Err(e) => format!("other {e}"),
            };
            say(format!("result={r}"));
        }
        "hold_big_until_told" => {
            let m = SharedMutex::<[u8; 16384]>::open(path).unwrap();
            let mut g = m.lock_or_recover(|_| {}).unwrap();
            g[16383] = 7;
            say("locked");
            super::listen();
            g[0] = 9;
            drop(g);
            say("released");
            super::hang();
        }
        _ => return false,
    }
    true
}

/// Opens (creating) a lock of `kind` at `path` and locks it once.
pub fn open_kind(kind: &str, path: &Path) -> String {
    let r: Result<(), Error> = match kind {
        "mutex" => SharedMutex::<u64>::open(path).map(|m| drop(m.lock())),
        "reentrant" => ReentrantMutex::<u64>::open(path).map(|m| drop(m.lock())),
        "semaphore" => SharedSemaphore::open(path, 2).map(|s| drop(s.acquire())),
        "bare" => BareMutex::open(path).map(|m| drop(m.lock())),
        other => panic!("unknown kind {other}"),
    };
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e @ Error::NoSpace { .. }) => {
            let full = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|s| s.kind() == std::io::ErrorKind::StorageFull);
            assert!(full, "NoSpace without a StorageFull source: {e:?}");
            format!("no-space {e}")
        }
        Err(e) => format!("other {e}"),
    }
}
