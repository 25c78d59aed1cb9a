//! Child roles for the reviewer's findings on issue 11's raw layer: a live
//! holder that `/proc` cannot show (dispatched from `roles.rs`).
//!
//! * `hidden_proc_look`: meant to run as uid 65534 with a `/proc` mounted
//!   `hidepid=2` (the parent's live root process is invisible to it):
//!   opens the `SharedMutex<u64>` another user's live thread holds, says
//!   `status=<state>`, then `lock=<answer>` for `lock_timeout(3 s)`.
//! * `ns_thread_holds`: meant to run under `unshare -pf` without
//!   `--mount-proc` (its `/proc` is the parent namespace's): a second
//!   thread locks the `SharedMutex<u64>` and keeps it; the main thread says
//!   `status=<state>`, then `lock=<answer>` for `lock_timeout(3 s)`.

use super::say;
use robust_mutex::{Acquired, LockError, OpenOptions, SharedMutex};
use std::path::Path;
use std::time::Duration;

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    match role {
        "hidden_proc_look" => {
            let m = OpenOptions::new()
                .allow_other_owners(true)
                .open::<u64>(path)
                .unwrap();
            look_then_wait(&m);
        }
        "ns_thread_holds" => {
            let m = std::sync::Arc::new(SharedMutex::<u64>::open(path).unwrap());
            let (tx, rx) = std::sync::mpsc::channel();
            let held = m.clone();
            std::thread::spawn(move || {
                let g = held.lock().unwrap().recover_with(|_| {});
                tx.send(()).unwrap();
                std::mem::forget(g);
                super::hang();
            });
            rx.recv().unwrap();
            look_then_wait(&m);
        }
        _ => return false,
    }
    true
}

/// Says what `status` and a 3 s `lock_timeout` make of a lock a live
/// thread holds: `status=locked` and `lock=timed-out` are right.
fn look_then_wait(m: &SharedMutex<u64>) {
    say(format!("status={}", m.status().state));
    say(match m.lock_timeout(Duration::from_secs(3)) {
        Ok(Acquired::Clean(_)) => "lock=clean".to_string(),
        Ok(Acquired::OwnerDied(_)) => "lock=died".to_string(),
        Err(LockError::TimedOut) => "lock=timed-out".to_string(),
        Err(e) => format!("lock=error {e:?}"),
    });
}
