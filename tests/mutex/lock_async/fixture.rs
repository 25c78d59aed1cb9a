//! The fixture and helpers shared by `lock_async` and
//! `lock_async_accidents`: one turn for both modules ([`serial`]), a fresh
//! file and runtime per test, the hang watchdog, and the checks that every
//! lane and holder thread is idle again.

use crate::common::roles_async::{FUTEX_WAITERS, WATCHDOG, runtime, settle};
use crate::common::temp_path;
use robust_mutex::{Acquired, SharedMutex, internals};
use std::future::{Future, poll_fn};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// One test at a time in this module: they count the process's holder
/// threads and lanes.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A test's fixture: this module's turn ([`serial`], given back last), a
/// fresh `SharedMutex<u64>` file, and a 2-worker runtime.
pub(crate) struct Fixture {
    pub(crate) path: PathBuf,
    pub(crate) m: Arc<SharedMutex<u64>>,
    pub(crate) rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

pub(crate) fn fixture() -> Fixture {
    let turn = serial();
    let (dir, path) = temp_path("m");
    Fixture {
        m: Arc::new(SharedMutex::open(&path).unwrap()),
        path,
        rt: runtime(),
        _dir: dir,
        _turn: turn,
    }
}

/// Runs `f` to completion on `rt`; fails after [`WATCHDOG`] (a hang).
pub(crate) fn within<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async { tokio::time::timeout(WATCHDOG, f).await })
        .expect("hung: still running after the watchdog")
}

/// Waits until `cond` holds, yielding; fails after [`WATCHDOG`].
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "hung waiting until {what}");
        std::thread::yield_now();
    }
}

/// Waits until someone sleeps on the lock (FUTEX_WAITERS is set): here,
/// the holder thread that waits in the kernel for this process's tasks.
pub(crate) fn until_waited_on(m: &SharedMutex<u64>) {
    wait_until("a holder thread sleeps on the lock", || {
        m.status().lock_word & FUTEX_WAITERS != 0
    });
}

/// After every future and guard is gone: no lane is served, and every
/// holder thread still alive is idle (back in the pool).
pub(crate) fn settled() {
    internals::wait_lanes_idle();
    assert_eq!(internals::lanes_serving(), 0);
    // (A thread that ends after its idle time leaves the idle list just
    // before it stops counting as alive.)
    wait_until("every holder thread is idle", || {
        let (alive, idle) = internals::holder_threads();
        alive == idle
    });
}

/// The name of thread `tid` of process `pid` (`/proc/PID/task/TID/comm`).
pub(crate) fn comm(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap()
        .trim_end()
        .to_owned()
}

/// The calling thread's id.
pub(crate) fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// The guard of a clean sync acquisition; panics on `OwnerDied`.
pub(crate) fn clean_sync(
    a: Acquired<robust_mutex::Guard<'_, u64>>,
) -> robust_mutex::Guard<'_, u64> {
    match a {
        Acquired::Clean(g) => g,
        Acquired::OwnerDied(_) => panic!("expected a clean lock"),
    }
}

/// A task that takes the lock, writes `value`, holds it across an
/// `.await` and panics: its `JoinHandle` gives the panic.
pub(crate) fn panic_holding(rt: &tokio::runtime::Runtime, m: &Arc<SharedMutex<u64>>, value: u64) {
    let m = m.clone();
    let task = rt.spawn(async move {
        let (_, mut g) = settle(m.lock_async().await.unwrap());
        *g = value;
        tokio::task::yield_now().await;
        panic!("deliberate: a task panics holding an AsyncGuard");
    });
    let e = within(rt, task).unwrap_err();
    assert!(e.is_panic(), "{e}");
}

/// What [`drop_when_woken`]'s waker records.
#[derive(Default)]
struct Woken {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(w) = self.outer.lock().unwrap().take() {
            w.wake();
        }
    }
}

/// Polls `f` once; if it is pending, waits until its waker is woken (for
/// a `LockFuture`: the holder thread delivered its outcome) and drops it
/// without taking the outcome (`None`).
pub(crate) async fn drop_when_woken<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    let flag = Arc::new(Woken::default());
    let waker = Waker::from(flag.clone());
    if let Poll::Ready(out) = Pin::new(&mut f).poll(&mut Context::from_waker(&waker)) {
        return Some(out);
    }
    poll_fn(|cx| {
        *flag.outer.lock().unwrap() = Some(cx.waker().clone());
        if flag.woken.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    drop(f);
    None
}
