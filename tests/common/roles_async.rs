//! Child roles for async acquisition (issue 14, `SharedMutex::lock_async`),
//! dispatched from `roles.rs`, and the pieces the parent tests share with
//! them. All on a `SharedMutex<u64>` at the child's path, on a tokio
//! multi-thread runtime of 2 workers ([`runtime`]). Each role starts a hang
//! watchdog first: a child still running after [`WATCHDOG`] says why on
//! stderr and exits with status 3, so a parent reading from it fails
//! instead of hanging. A role waits for its holder threads to be done
//! (`internals::wait_lanes_idle`) before it says its last word, so that a
//! release handed to a holder thread is done before the process may end.
//!
//! * `async_hold`: a task takes `lock_async` (an owner death is marked
//!   consistent, the value kept), sets the value to [`SET_ENV`] if given,
//!   labels the owner [`HOLD_LABEL`], says `locked=<clean|died>`, and
//!   keeps the guard across an `.await`
//!   that never completes: waits to be killed.
//! * `async_increment`: says `ready`; on a line from the parent runs
//!   [`increment_tasks`] ([`TASKS`] tasks, [`ROUNDS_ENV`] rounds); says
//!   `done`.
//! * `async_churn`: says `ready`; on a line from the parent, [`CHURN_TASKS`]
//!   tasks lock (`lock_async`), add one, and unlock, until a second line;
//!   an owner death is marked consistent and counted. Says
//!   `done=<guards>,<deaths>`.
//! * `async_drop_exit`: `lock_async` (on the main thread's `block_on`),
//!   adds one to the value, drops the guard and exits at once (status 0),
//!   as a `#[tokio::main]` that returns right after its last critical
//!   section: no wait for the holder thread.
//! * `async_abandon_exit`: `lock_async` under a zero `tokio::time::timeout`
//!   (dropped after its first poll, the lock free: the holder thread may be
//!   taking it just then), then exits at once (status 0).
//! * `async_wait_abandon_exit`: a task waits in `lock_async` (selected
//!   against a oneshot); once its holder thread sleeps on the lock, says
//!   `waiting`; on a line from the parent (which then releases the lock)
//!   the wait is abandoned, and the process exits at once (status 0).
//! * `async_fork`: a guard (taken by `block_on` on the main thread) is held
//!   across `fork()`: the fork child drops its inherited copy (the parent
//!   still holds the lock), then waits in `lock_async` on a runtime of its
//!   own until the parent, seeing it wait, releases. Says `ok` (or panics).

use super::{hang, listen, say};
use robust_mutex::{Acquired, AsyncGuard, SharedMutex, internals};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The hang watchdog of every role and of the tests' own waits.
pub const WATCHDOG: Duration = Duration::from_secs(60);
/// The owner label `async_hold` sets.
pub const HOLD_LABEL: &str = "async-holder";
/// `async_hold`: the value to write.
pub const SET_ENV: &str = "RM_ASYNC_SET";
/// `async_increment`: the rounds per task.
pub const ROUNDS_ENV: &str = "RM_ASYNC_ROUNDS";
/// Tasks per process in [`increment_tasks`].
pub const TASKS: usize = 50;
/// Tasks of `async_churn`.
pub const CHURN_TASKS: usize = 4;
/// FUTEX_WAITERS in the lock word: a locker sleeps on it.
pub const FUTEX_WAITERS: u32 = 0x8000_0000;
/// `FUTEX_TID_MASK`: the owner's TID in the lock word.
pub const TID_MASK: u32 = 0x3fff_ffff;

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    if !role.starts_with("async_") {
        return false;
    }
    watchdog();
    let m = Arc::new(SharedMutex::<u64>::open(path).unwrap());
    let rt = runtime();
    match role {
        "async_hold" => {
            let set = std::env::var(SET_ENV).ok().map(|s| s.parse().unwrap());
            rt.spawn(async move {
                let (how, mut g) = settle(m.lock_async().await.unwrap());
                if let Some(v) = set {
                    *g = v;
                }
                g.set_label(HOLD_LABEL).unwrap();
                say(format!("locked={how}"));
                std::future::pending::<()>().await;
                drop(g);
            });
            hang();
        }
        "async_increment" => {
            let rounds = std::env::var(ROUNDS_ENV).unwrap().parse().unwrap();
            say("ready");
            listen();
            rt.block_on(increment_tasks(m, rounds));
            internals::wait_lanes_idle();
            say("done");
        }
        "async_churn" => {
            let stop = Arc::new(AtomicBool::new(false));
            let guards = Arc::new(AtomicU64::new(0));
            let deaths = Arc::new(AtomicU64::new(0));
            say("ready");
            listen();
            let tasks: Vec<_> = (0..CHURN_TASKS)
                .map(|_| {
                    let (m, stop) = (m.clone(), stop.clone());
                    let (guards, deaths) = (guards.clone(), deaths.clone());
                    rt.spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let (how, mut g) = settle(m.lock_async().await.unwrap());
                            if how == "died" {
                                deaths.fetch_add(1, Ordering::Relaxed);
                            }
                            *g += 1;
                            guards.fetch_add(1, Ordering::Relaxed);
                            drop(g);
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            listen();
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                rt.block_on(t).unwrap();
            }
            internals::wait_lanes_idle();
            say(format!(
                "done={},{}",
                guards.load(Ordering::Relaxed),
                deaths.load(Ordering::Relaxed)
            ));
        }
        "async_drop_exit" => {
            let mut g = clean(rt.block_on(m.lock_async()).unwrap());
            *g += 1;
            drop(g);
            std::process::exit(0);
        }
        "async_abandon_exit" => {
            let r =
                rt.block_on(async { tokio::time::timeout(Duration::ZERO, m.lock_async()).await });
            drop(r);
            std::process::exit(0);
        }
        "async_wait_abandon_exit" => {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let m2 = m.clone();
            let task = rt.spawn(async move {
                tokio::select! {
                    a = m2.lock_async() => drop(a),
                    _ = rx => {}
                }
            });
            while m.status().lock_word & FUTEX_WAITERS == 0 {
                std::thread::yield_now();
            }
            say("waiting");
            listen();
            let _ = tx.send(());
            rt.block_on(task).unwrap();
            std::process::exit(0);
        }
        "async_fork" => fork_with_a_guard(&m, rt),
        other => panic!("unknown role {other}"),
    }
    true
}

/// A tokio multi-thread runtime of 2 workers (as the services).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// How a lock came (`died` or `clean`), and its guard, marked consistent
/// (the value kept) if the owner died.
pub fn settle(a: Acquired<AsyncGuard<'_, u64>>) -> (&'static str, AsyncGuard<'_, u64>) {
    match a {
        Acquired::Clean(g) => ("clean", g),
        Acquired::OwnerDied(r) => ("died", r.mark_consistent()),
    }
}

/// The guard of a clean acquisition; panics on `OwnerDied`.
pub fn clean(a: Acquired<AsyncGuard<'_, u64>>) -> AsyncGuard<'_, u64> {
    match a {
        Acquired::Clean(g) => g,
        Acquired::OwnerDied(r) => panic!(
            "expected a clean lock, the owner died: {:?}",
            r.previous_owner()
        ),
    }
}

/// [`TASKS`] tasks, each `rounds` times: `lock_async`, read the value,
/// yield (the guard held across the `.await`, the task free to move to
/// another worker), write what it read plus one, drop. A lost update shows
/// as a short total; an owner death panics.
pub async fn increment_tasks(m: Arc<SharedMutex<u64>>, rounds: u64) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    let mut g = clean(m.lock_async().await.unwrap());
                    let seen = *g;
                    tokio::task::yield_now().await;
                    *g = seen + 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// `async_fork`: see the module docs. The fork child tells this process
/// through a pipe that it dropped its copy; this process says `ok` when
/// both are done.
fn fork_with_a_guard(m: &SharedMutex<u64>, rt: tokio::runtime::Runtime) {
    use nix::unistd::{ForkResult, fork, pipe, read, write};
    let mut g = clean(rt.block_on(m.lock_async()).unwrap());
    *g = 1;
    let holder = m.status().lock_word & TID_MASK;
    let (to_parent_r, to_parent_w) = pipe().unwrap();
    // SAFETY: the child runs only the closure below, on this thread: it
    // touches this process's locks only through the library's fork-aware
    // paths (an inherited guard is inert, lanes and holder threads are per
    // fork generation), builds its own runtime, and leaves with _exit.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // The inherited copy: inert, the parent keeps the lock.
                drop(g);
                assert!(matches!(
                    m.try_lock(),
                    Err(robust_mutex::LockError::WouldBlock)
                ));
                assert_eq!(m.status().lock_word & TID_MASK, holder);
                write(&to_parent_w, b"d").unwrap();
                let rt = runtime();
                let mut g = clean(rt.block_on(m.lock_async()).unwrap());
                assert_eq!(*g, 2, "the parent's write after the fork");
                *g = 3;
                drop(g);
                internals::wait_lanes_idle();
            }))
            .is_ok();
            // SAFETY: ends the fork child at once, running none of the
            // parent's destructors (its runtime is not this process's).
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        ForkResult::Parent { child } => {
            let mut b = [0u8];
            assert_eq!(read(&to_parent_r, &mut b).unwrap(), 1, "fork child failed");
            // The child's drop changed nothing here.
            assert_eq!(m.status().lock_word & TID_MASK, holder);
            assert_eq!(*g, 1);
            // The child's holder thread sleeps on the lock word.
            while m.status().lock_word & FUTEX_WAITERS == 0 {
                std::thread::yield_now();
            }
            *g = 2;
            drop(g);
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            assert_eq!(*clean(rt.block_on(m.lock_async()).unwrap()), 3);
            internals::wait_lanes_idle();
            say("ok");
        }
    }
}

/// Exits the process with status 3 if it is still running after
/// [`WATCHDOG`].
fn watchdog() {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("async role: still running after {WATCHDOG:?}: hung");
        std::process::exit(3);
    });
}
