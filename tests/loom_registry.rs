//! loom model of the per-process mapping registry: one value per file,
//! counted handles, and the keep-alive rule for a held lock.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_registry`.
//! loom models the registry's mutex and the threads' interleavings; it does
//! not (cannot) model pthread mutexes or system calls, so the "this process
//! holds the lock" fact is an atomic flag here.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use robust_mutex::loom_api::Registry;
use std::sync::Arc;

/// A stand-in for a mapping: counts how many exist for the key.
struct FakeMap {
    live: Arc<AtomicUsize>,
}

impl FakeMap {
    fn new(live: &Arc<AtomicUsize>) -> FakeMap {
        let before = live.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "two mappings of one file in one process");
        FakeMap { live: live.clone() }
    }
}

impl Drop for FakeMap {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

const KEY: (u64, u64) = (1, 42);

#[test]
fn racing_opens_and_closes_never_make_two_mappings() {
    loom::model(|| {
        let reg = Arc::new(Registry::<FakeMap>::default());
        let live = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let reg = reg.clone();
                let live = live.clone();
                thread::spawn(move || {
                    let m = reg
                        .attach(KEY, || Ok::<_, ()>(FakeMap::new(&live)))
                        .unwrap();
                    reg.detach(KEY, m, |_| false)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Everyone let go and nobody holds the lock: nothing is mapped.
        assert!(!reg.contains(KEY));
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn a_held_lock_keeps_the_mapping_after_the_last_handle() {
    loom::model(|| {
        let reg = Arc::new(Registry::<FakeMap>::default());
        let live = Arc::new(AtomicUsize::new(0));
        // Thread A forgets a guard (holds the lock) and drops its handle;
        // thread B opens and closes concurrently.
        let held = Arc::new(AtomicBool::new(false));
        let a = {
            let (reg, live, held) = (reg.clone(), live.clone(), held.clone());
            thread::spawn(move || {
                let m = reg
                    .attach(KEY, || Ok::<_, ()>(FakeMap::new(&live)))
                    .unwrap();
                held.store(true, Ordering::SeqCst); // lock + mem::forget(guard)
                reg.detach(KEY, m, |_| held.load(Ordering::SeqCst));
            })
        };
        let b = {
            let (reg, live, held) = (reg.clone(), live.clone(), held.clone());
            thread::spawn(move || {
                let m = reg
                    .attach(KEY, || Ok::<_, ()>(FakeMap::new(&live)))
                    .unwrap();
                reg.detach(KEY, m, |_| held.load(Ordering::SeqCst));
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        // The lock is still held, so the mapping must still exist, exactly once,
        // and a new open must share it.
        assert!(reg.contains(KEY));
        assert_eq!(live.load(Ordering::SeqCst), 1);
        let again = reg
            .attach(KEY, || Ok::<_, ()>(FakeMap::new(&live)))
            .unwrap();
        assert_eq!(live.load(Ordering::SeqCst), 1);
        drop(again);
    });
}

#[test]
fn a_failed_open_leaves_no_entry_behind() {
    loom::model(|| {
        let reg = Arc::new(Registry::<FakeMap>::default());
        let live = Arc::new(AtomicUsize::new(0));
        // One open fails to map; the other succeeds. Whichever runs first,
        // a failure registers nothing and a success is shared or made once.
        let t = {
            let reg = reg.clone();
            thread::spawn(move || {
                if let Ok(shared) = reg.attach(KEY, || Err::<FakeMap, _>("mmap failed")) {
                    reg.detach(KEY, shared, |_| false);
                }
            })
        };
        let m = reg
            .attach(KEY, || Ok::<_, &str>(FakeMap::new(&live)))
            .unwrap();
        reg.detach(KEY, m, |_| false);
        t.join().unwrap();
        assert!(!reg.contains(KEY));
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}
