//! In-process checks of the lane's hand-offs (the multi-process ones, with
//! real SIGKILLs, are in tests/mutex/lock_async.rs).

use crate::{Acquired, LockError, SharedMutex};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};

use crate::holder::test_runtime as runtime;

/// A waker that reports each wake on a channel.
struct Signal(std::sync::Mutex<mpsc::Sender<()>>);

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        let _ = self.0.lock().unwrap().send(());
    }
}

fn signal() -> (Waker, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    (Waker::from(Arc::new(Signal(std::sync::Mutex::new(tx)))), rx)
}

/// Leaves the mutex owner-dead: a thread locks it, labels its record and
/// exits holding it. Returns its TID.
fn kill_holder(m: &SharedMutex<u64>) -> u32 {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut g = m.lock().unwrap().recover_with(|_| {});
            g.set_label("the one that died").unwrap();
            std::mem::forget(g);
            nix::unistd::gettid().as_raw() as u32
        })
        .join()
        .unwrap()
    })
}

/// Polls a `lock_async` once, waits until the holder thread has taken the
/// lock for it and woken it, and drops it unseen; then waits for the lane
/// to settle.
fn drop_once_delivered(m: &SharedMutex<u64>) {
    let (waker, woken) = signal();
    {
        let mut f = pin!(m.lock_async());
        assert!(
            f.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        woken.recv().unwrap();
    }
    crate::holder::wait_lanes_idle();
}

#[test]
fn tasks_of_one_process_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SharedMutex::<[u64; 2]>::open(dir.path().join("m")).unwrap());
    let rt = runtime();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let m = m.clone();
            rt.spawn(async move {
                for _ in 0..50 {
                    let mut g = match m.lock_async().await.unwrap() {
                        Acquired::Clean(g) => g,
                        Acquired::OwnerDied(_) => panic!("nobody died"),
                    };
                    let seen = g[0];
                    tokio::task::yield_now().await;
                    g[0] = seen + 1;
                    g[1] += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    assert_eq!(*m.lock().unwrap().recover_with(|_| {}), [1000, 1000]);
    crate::holder::wait_lanes_idle();
}

#[test]
fn a_dropped_future_never_leaves_the_lock_held() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SharedMutex::<u64>::open(dir.path().join("m")).unwrap());
    let rt = runtime();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let m = m.clone();
            rt.spawn(async move {
                let mut got = 0u64;
                for i in 0..300u64 {
                    let d = std::time::Duration::from_micros((i * 7 + t * 13) % 50);
                    if let Ok(r) = tokio::time::timeout(d, m.lock_async()).await {
                        *r.unwrap().recover_with(|_| {}) += 1;
                        got += 1;
                    }
                }
                got
            })
        })
        .collect();
    let got: u64 = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).sum();
    crate::holder::wait_lanes_idle();
    let g = match m.try_lock().unwrap() {
        Acquired::Clean(g) => g,
        Acquired::OwnerDied(_) => panic!("nobody died"),
    };
    assert_eq!(*g, got);
}

#[test]
fn an_owner_death_taken_for_a_dropped_future_is_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
    let dead = kill_holder(&m);
    drop_once_delivered(&m);
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("the death must be passed on")
    };
    // The same death, named as before and counted once.
    let o = r.previous_owner().unwrap();
    assert_eq!((o.tid, o.label.as_str()), (dead, "the one that died"));
    drop(r.mark_consistent());
    assert_eq!(m.status().counters.owner_deaths, 1);
}

#[test]
fn a_clean_lock_taken_for_a_dropped_future_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let m = SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
    drop_once_delivered(&m);
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn a_panic_holding_an_async_guard_is_a_death() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SharedMutex::<u64>::open(dir.path().join("m")).unwrap());
    let rt = runtime();
    let m2 = m.clone();
    let task = rt.spawn(async move {
        let mut g = m2.lock_async().await.unwrap().recover_with(|_| {});
        *g = 7;
        tokio::task::yield_now().await;
        panic!("half-way through an update");
    });
    assert!(rt.block_on(task).unwrap_err().is_panic());
    let r = rt.block_on(m.lock_async()).unwrap();
    let Acquired::OwnerDied(r) = r else {
        panic!("a panic while holding must be reported")
    };
    assert_eq!(r.previous_owner().map(|o| o.pid), Some(std::process::id()));
    assert_eq!(*r.mark_consistent(), 7);
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn recovery_is_marked_consistent_by_the_holder_thread() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SharedMutex::<u64>::open(dir.path().join("m")).unwrap());
    kill_holder(&m);
    let rt = runtime();
    let m2 = m.clone();
    rt.block_on(rt.spawn(async move {
        let Acquired::OwnerDied(r) = m2.lock_async().await.unwrap() else {
            panic!("the holder died")
        };
        let mut g = r.mark_consistent();
        tokio::task::yield_now().await;
        *g = 1;
    }))
    .unwrap();
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
    assert_eq!(m.status().counters.recoveries, 1);
}

#[test]
fn an_abandoned_async_recovery_makes_the_lock_not_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    let m = SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
    kill_holder(&m);
    let rt = runtime();
    drop(rt.block_on(m.lock_async()).unwrap());
    crate::holder::wait_lanes_idle();
    assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
    assert!(matches!(
        rt.block_on(m.lock_async()),
        Err(LockError::NotRecoverable)
    ));
}

#[test]
fn futures_guards_and_recoveries_are_send() {
    fn send<T: Send>() {}
    send::<crate::LockFuture<'static, u64>>();
    send::<crate::AsyncGuard<'static, u64>>();
    send::<crate::Recovery<crate::AsyncGuard<'static, u64>>>();
    send::<Acquired<crate::AsyncGuard<'static, u64>>>();
    fn unpin<T: Unpin>() {}
    unpin::<crate::LockFuture<'static, u64>>();
}

#[test]
fn a_queued_future_polled_again_is_still_pending_then_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let m = SharedMutex::<u64>::open(dir.path().join("m")).unwrap();
    let rt = runtime();
    let held = rt.block_on(m.lock_async()).unwrap();
    let (waker, woken) = signal();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(m.lock_async());
    assert!(f.as_mut().poll(&mut cx).is_pending());
    assert!(f.as_mut().poll(&mut cx).is_pending());
    drop(held);
    woken.recv().unwrap();
    assert!(matches!(
        f.as_mut().poll(&mut cx),
        Poll::Ready(Ok(Acquired::Clean(_)))
    ));
}

/// A future queued in the parent and polled in a fork child queues again
/// in the child's own lane (the parent's is not the child's): it is served.
#[test]
fn a_future_inherited_through_fork_queues_again_in_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let (held_tx, held) = mpsc::channel();
    let (go_tx, go) = mpsc::channel::<()>();
    let p2 = path.clone();
    let holder = std::thread::spawn(move || {
        let m2 = SharedMutex::<u64>::open(&p2).unwrap();
        let g = m2.lock().unwrap().recover_with(|_| {});
        held_tx.send(()).unwrap();
        go.recv().unwrap();
        drop(g);
    });
    held.recv().unwrap();
    let (waker, _woken) = signal();
    let mut f = Box::pin(m.lock_async());
    assert!(
        f.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    // SAFETY: the child only polls, reads two atomics and `_exit`s.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let pending = f
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending();
            let served = crate::holder::lanes_serving() == 1;
            std::mem::forget(f);
            // SAFETY: ends the child at once, without the parent's atexit work.
            unsafe { libc::_exit(if pending && served { 0 } else { 7 }) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            go_tx.send(()).unwrap();
            holder.join().unwrap();
            assert!(matches!(rt_block_on(f), Ok(Acquired::Clean(_))));
            assert_eq!(
                st,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "the child's copy of the future was not served in the child"
            );
        }
    }
}

fn rt_block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}
