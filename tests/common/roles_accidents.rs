//! Child roles for the accidents of issue 11 in the raw layer: stuck locks,
//! the held-lock bound, panics that count as deaths (dispatched from
//! `roles.rs`).
//!
//! * `hold_past_robust_limit`: locks the `SharedMutex` files `<path>.0` to
//!   `<path>.4` with raw `pthread_mutex_lock`, then 2100 more robust mutexes
//!   in anonymous shared memory, says `held`, and exits: the kernel's
//!   robust-list walk stops after 2048 entries, so the five files (locked
//!   first, walked last) stay stuck.
//! * `hold_max`: one thread takes [`MAX_HELD_PER_THREAD`] locks (permits of
//!   semaphores `<path>.sem<k>` of 127 permits, then mutex files
//!   `<path>.m<k>`), says `held=<n>`, checks that one more lock is
//!   `TooManyHeld`, says `refused`, waits to be killed.
//! * `panic_holder`: `SharedMutex<u64>`: on `go`, locks, writes 7, says
//!   `locked`; on the next line panics inside `catch_unwind` and says
//!   `panicked`; on the next line locks
//!   `<path>.a` and `<path>.b`, says `locked2`, waits to be killed.
//! * `panic_sem_holder`: semaphore (1 permit): on `go`, takes the permit and
//!   panics inside `catch_unwind`; says `panicked`, waits to be killed.
//! * `panic_nested`: `ReentrantMutex<u64>`: nests two guards and panics
//!   inside `catch_unwind`; a probe dropped between the inner and the outer
//!   guard reads the state; says `between=<state>` (`locked`: the inner
//!   release did not count as the death), `held=<n>` (this thread's held
//!   count after the panic), `panicked`, and waits to be killed.
//! * `fork_drop_then_hold`: `SharedMutex<u64>`: locks (label `parent`),
//!   forks; the fork child drops the guard and exits; says
//!   `child-done=<wait status>` and waits to be killed, still holding.
//! * `sem_stuck`: semaphore of 1 permit (or `RM_PERMITS`): locks the permit's mutex (offset
//!   512) through a raw mapping, unmaps it while holding and exits: a stuck
//!   permit; says `unmapped`.
//! * `wait_and_report`: `SharedMutex<u64>`: says `waiting`, calls `lock()`
//!   and says `got=clean`, `got=died` or `got=error <Debug of the error>`.

use super::{hang, listen, say};
use robust_mutex::{
    Acquired, LockError, MAX_HELD_PER_THREAD, ReentrantMutex, SharedMutex, SharedSemaphore,
};
use std::path::{Path, PathBuf};

/// `<path><suffix>`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    match role {
        "hold_past_robust_limit" => hold_past_robust_limit(path),
        "hold_max" => hold_max(path),
        "panic_holder" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            assert_eq!(listen(), "go");
            quietly_panic_holding(|| {
                let mut g = m.lock().unwrap().recover_with(|_| {});
                *g = 7;
                say("locked");
                listen();
                panic!("in the critical section");
            });
            say("panicked");
            listen();
            let a = SharedMutex::<u64>::open(sibling(path, ".a")).unwrap();
            let b = SharedMutex::<u64>::open(sibling(path, ".b")).unwrap();
            let ga = a.lock().unwrap().recover_with(|_| {});
            let gb = b.lock().unwrap().recover_with(|_| {});
            say("locked2");
            std::mem::forget((ga, gb));
            hang();
        }
        "panic_sem_holder" => {
            let sem = SharedSemaphore::open(path, 1).unwrap();
            assert_eq!(listen(), "go");
            quietly_panic_holding(|| {
                let _p = sem.acquire().unwrap().recover_with(|_| {});
                panic!("holding a permit");
            });
            say("panicked");
            hang();
        }
        "panic_nested" => {
            let m = ReentrantMutex::<u64>::open(path).unwrap();
            /// Reads the state when dropped (between the two guards).
            struct Probe<'a>(&'a ReentrantMutex<u64>, &'a std::cell::Cell<String>);
            impl Drop for Probe<'_> {
                fn drop(&mut self) {
                    self.1.set(self.0.status().state.to_string());
                }
            }
            let between = std::cell::Cell::new(String::new());
            quietly_panic_holding(|| {
                let _a = m.lock().unwrap().recover_with(|_| {});
                let _probe = Probe(&m, &between);
                let _b = m.lock().unwrap().recover_with(|_| {});
                panic!("two levels deep");
            });
            say(format!("between={}", between.take()));
            say(format!(
                "held={}",
                robust_mutex::internals::held_by_this_thread()
            ));
            say("panicked");
            hang();
        }
        "fork_drop_then_hold" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let mut g = m.lock().unwrap().recover_with(|_| {});
            g.set_label("parent").unwrap();
            // SAFETY: the fork child only drops the guard and leaves with
            // _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(g);
                // SAFETY: ends the fork child at once.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            say(format!("child-done={status}"));
            std::mem::forget(g);
            hang();
        }
        "sem_stuck" => {
            let n = std::env::var(super::roles::PERMITS_ENV).map_or(1, |s| s.parse().unwrap());
            drop(SharedSemaphore::open(path, n).unwrap());
            let base = super::roles::raw_map(path);
            let m = base
                .cast::<u8>()
                .wrapping_add(512)
                .cast::<libc::pthread_mutex_t>();
            // SAFETY: the first permit's initialised robust mutex lies at
            // the data offset, 512 (docs/design.md); the mapping is live
            // until the munmap right after.
            unsafe {
                assert_eq!(libc::pthread_mutex_lock(m), 0);
                assert_eq!(libc::munmap(base, 4096), 0);
            }
            say("unmapped");
        }
        "wait_and_report" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            say("waiting");
            match m.lock() {
                Ok(Acquired::Clean(_)) => say("got=clean"),
                Ok(Acquired::OwnerDied(_)) => say("got=died"),
                Err(e) => say(format!("got=error {e:?}")),
            }
        }
        _ => return false,
    }
    true
}

/// Runs `f`, which panics holding a lock, catching the panic (and keeping
/// its message off stderr).
fn quietly_panic_holding(f: impl FnOnce()) {
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    assert!(r.is_err(), "it was meant to panic");
}

fn hold_past_robust_limit(path: &Path) {
    for i in 0..5 {
        let p = sibling(path, &format!(".{i}"));
        drop(SharedMutex::<u64>::open(&p).unwrap());
        let base = super::roles::raw_map(&p).cast::<u8>();
        let m = base.wrapping_add(256).cast::<libc::pthread_mutex_t>();
        // SAFETY: offset 256 holds the file's initialised robust mutex
        // (docs/design.md); the mapping is never unmapped.
        let rc = unsafe { libc::pthread_mutex_lock(m) };
        assert_eq!(rc, 0);
    }
    const N: usize = 2100;
    let size = std::mem::size_of::<libc::pthread_mutex_t>();
    // SAFETY: an anonymous shared mapping, checked below.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            N * size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED);
    // SAFETY: attribute calls on a local attribute object; each mutex lies
    // in the live mapping, initialised before it is locked.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        for i in 0..N {
            let m = mem
                .cast::<u8>()
                .add(i * size)
                .cast::<libc::pthread_mutex_t>();
            assert_eq!(libc::pthread_mutex_init(m, &attr), 0);
            assert_eq!(libc::pthread_mutex_lock(m), 0);
        }
    }
    say("held");
}

fn hold_max(path: &Path) {
    let sems: Vec<SharedSemaphore> = (0..MAX_HELD_PER_THREAD / 127)
        .map(|k| SharedSemaphore::open(sibling(path, &format!(".sem{k}")), 127).unwrap())
        .collect();
    let rest = MAX_HELD_PER_THREAD - sems.len() * 127;
    let mutexes: Vec<SharedMutex<u64>> = (0..rest)
        .map(|k| SharedMutex::<u64>::open(sibling(path, &format!(".m{k}"))).unwrap())
        .collect();
    let mut held = 0;
    for s in &sems {
        for _ in 0..127 {
            std::mem::forget(s.try_acquire().unwrap().recover_with(|_| {}));
            held += 1;
        }
    }
    for m in &mutexes {
        std::mem::forget(m.try_lock().unwrap().recover_with(|_| {}));
        held += 1;
    }
    say(format!("held={held}"));
    let extra = SharedMutex::<u64>::open(sibling(path, ".extra")).unwrap();
    assert!(matches!(
        extra.lock(),
        Err(LockError::TooManyHeld { held: h, max: m }) if h == m && m == MAX_HELD_PER_THREAD
    ));
    say("refused");
    hang();
}
