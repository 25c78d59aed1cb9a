//! Child roles for the version-2 owner records (the hot record in the
//! mutex's cache line; dispatched from `roles.rs`).
//!
//! * `lock_cycles`: `SharedMutex<u64>`: says `ready`; on a line from the
//!   parent, [`CYCLES`] times: lock (recovering if need be), add 1, unlock;
//!   says `done`.
//! * `sem_cycles`: semaphore of [`super::roles::SEM_PERMITS`] permits: says
//!   `ready`; on a line from the parent, [`CYCLES`] times: acquire a permit,
//!   release it; says `done`.
//! * `hold_labelled_then_relock`: `SharedMutex<u64>`: locks, labels it
//!   `first`, says `labelled`; on a line unlocks and locks again without a
//!   label, says `relocked`; waits to be killed.

use super::{Kid, hang, listen, say};
use robust_mutex::{SharedMutex, SharedSemaphore};
use std::path::Path;

/// How many lock+unlock cycles `lock_cycles` and `sem_cycles` make.
pub const CYCLES: u64 = 3000;

/// Runs `role` (`lock_cycles` or `sem_cycles`) in `n` processes at once:
/// starts them all, lets them go together, and waits until each is done.
pub fn cycle_together(role: &str, path: &Path, n: usize) {
    let mut kids: Vec<Kid> = (0..n).map(|_| Kid::spawn(role, path)).collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.tell("go");
    }
    for k in &mut kids {
        k.expect("done");
    }
}

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    match role {
        "lock_cycles" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            say("ready");
            listen();
            for _ in 0..CYCLES {
                *m.lock_or_recover(|_| {}).unwrap() += 1;
            }
            say("done");
        }
        "sem_cycles" => {
            let sem = SharedSemaphore::open(path, super::roles::SEM_PERMITS).unwrap();
            say("ready");
            listen();
            for _ in 0..CYCLES {
                drop(sem.acquire().unwrap().recover_with(|_| {}));
            }
            say("done");
        }
        "hold_labelled_then_relock" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let mut g = m.lock_or_recover(|_| {}).unwrap();
            g.set_label("first").unwrap();
            say("labelled");
            listen();
            drop(g);
            let g = m.lock_or_recover(|_| {}).unwrap();
            say("relocked");
            std::mem::forget(g);
            hang();
        }
        _ => return false,
    }
    true
}
