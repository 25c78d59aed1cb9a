//! Child roles for edge cases of the raw layer: a live
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
//! * `lock_in_drop_while_unwinding`: a value whose `Drop` locks the
//!   `SharedMutex<u64>`, adds 1 and unlocks, and locks the `ReentrantMutex`
//!   `<path>.r` twice nested, is dropped by a panic (caught); then says
//!   `mutex=<clean|died>`, `reentrant=<clean|died>` for the next lock of
//!   each, and `held=<n>` (this thread's held count, 0 is right).
//! * `relock_held_while_unwinding`: `ReentrantMutex<u64>`: holds it, then
//!   panics (caught) with a value whose `Drop` relocks and unlocks it
//!   during the unwinding, before the outer guard drops; says
//!   `state=<state>` (`owner-dead`: the outer guard, taken before the
//!   panic, still counts as a death) and `held=<n>`.
//! * `panic_middle`: locks `<path>.a`, then the `SharedMutex<u64>` at
//!   `<path>`, then `<path>.b` on one thread; a panic (caught) releases
//!   only `<path>`'s; says `panicked`, waits to be killed.

use super::say;
use robust_mutex::{Acquired, LockError, OpenOptions, ReentrantMutex, SharedMutex};
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
        "lock_in_drop_while_unwinding" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let r =
                ReentrantMutex::<u64>::open(super::roles_accidents::sibling(path, ".r")).unwrap();
            struct Relocker<'a>(&'a SharedMutex<u64>, &'a ReentrantMutex<u64>);
            impl Drop for Relocker<'_> {
                fn drop(&mut self) {
                    *self.0.lock().unwrap().recover_with(|_| {}) += 1;
                    let outer = self.1.lock().unwrap().recover_with(|_| {});
                    let inner = self.1.lock().unwrap().recover_with(|_| {});
                    drop(inner);
                    drop(outer);
                }
            }
            quietly_panic(|| {
                let _relock_on_unwind = Relocker(&m, &r);
                panic!("unwinding through a Drop that locks");
            });
            let word = |died: bool| if died { "died" } else { "clean" };
            say(format!("mutex={}", word(m.lock().unwrap().owner_died())));
            say(format!(
                "reentrant={}",
                word(r.lock().unwrap().owner_died())
            ));
            say(format!(
                "held={}",
                robust_mutex::internals::held_by_this_thread()
            ));
        }
        "relock_held_while_unwinding" => {
            let r = ReentrantMutex::<u64>::open(path).unwrap();
            struct Relock<'a>(&'a ReentrantMutex<u64>);
            impl Drop for Relock<'_> {
                fn drop(&mut self) {
                    drop(self.0.lock().unwrap().recover_with(|_| {}));
                }
            }
            quietly_panic(|| {
                let _outer = r.lock().unwrap().recover_with(|_| {});
                let _relock_on_unwind = Relock(&r);
                panic!("holding it from before");
            });
            say(format!("state={}", r.status().state));
            say(format!(
                "held={}",
                robust_mutex::internals::held_by_this_thread()
            ));
        }
        "panic_middle" => {
            let a = SharedMutex::<u64>::open(super::roles_accidents::sibling(path, ".a")).unwrap();
            let m = SharedMutex::<u64>::open(path).unwrap();
            let b = SharedMutex::<u64>::open(super::roles_accidents::sibling(path, ".b")).unwrap();
            let ga = a.lock().unwrap().recover_with(|_| {});
            let mut gb = None;
            quietly_panic(|| {
                let _gm = m.lock().unwrap().recover_with(|_| {});
                gb = Some(b.lock().unwrap().recover_with(|_| {}));
                panic!("out of m only");
            });
            say("panicked");
            std::mem::forget((ga, gb));
            super::hang();
        }
        _ => return false,
    }
    true
}

/// Runs `f`, which panics, catching the panic (and keeping its message off
/// stderr).
pub fn quietly_panic(f: impl FnOnce()) {
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    assert!(r.is_err(), "it was meant to panic");
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
