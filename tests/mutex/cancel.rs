//! Cancellable waits: from another thread and from a signal handler; the
//! lock's state is unchanged afterwards.

use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, CancelToken, LockError, LockState, SharedMutex};
use std::time::Duration;

/// Waits until a waiter sleeps on the lock word (FUTEX_WAITERS set).
fn wait_for_sleeper(m: &SharedMutex<u64>) {
    while m.status().lock_word & 0x8000_0000 == 0 {
        std::thread::yield_now();
    }
}

#[test]
fn a_blocked_lock_is_cancelled_from_another_thread_and_changes_nothing() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold_until_told", &path);
    kid.expect("locked");
    let before = m.status();
    let cancel = CancelToken::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| m.lock_cancellable(&cancel, None).map(|_| ()));
        wait_for_sleeper(&m);
        cancel.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(LockError::Cancelled)));
    });
    let after = m.status();
    assert_eq!(after.state, LockState::Locked);
    assert_eq!(after.owner, before.owner);
    assert_eq!(after.counters, before.counters);

    // A cancelled token cancels at once until reset; then waits work again.
    assert!(matches!(
        m.lock_cancellable(&cancel, None),
        Err(LockError::Cancelled)
    ));
    cancel.reset();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| m.lock_cancellable(&cancel, None).map(|a| a.owner_died()));
        wait_for_sleeper(&m);
        kid.tell("release");
        assert!(
            !waiter.join().unwrap().unwrap(),
            "a clean hand-over after the holder released"
        );
    });
}

#[test]
fn a_cancellable_wait_still_times_out_and_still_sees_owner_death() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold_until_told", &path);
    kid.expect("locked");
    let cancel = CancelToken::new();
    assert!(matches!(
        m.lock_cancellable(&cancel, Some(Duration::from_millis(50))),
        Err(LockError::TimedOut)
    ));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| match m.lock_cancellable(&cancel, None).unwrap() {
            Acquired::OwnerDied(r) => {
                drop(r.mark_consistent());
                true
            }
            Acquired::Clean(_) => false,
        });
        wait_for_sleeper(&m);
        kid.kill();
        assert!(waiter.join().unwrap(), "the killed holder must be reported");
    });
}

static SIGNAL_TOKEN: CancelToken = CancelToken::new();

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGNAL_TOKEN.cancel();
}

#[test]
fn a_signal_handler_can_cancel_a_wait() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold_until_told", &path);
    kid.expect("locked");
    // SAFETY: installs a handler that only calls the async-signal-safe cancel().
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            // SAFETY: pthread_self() and gettid() have no preconditions.
            let tid = unsafe { libc::gettid() };
            (tid, m.lock_cancellable(&SIGNAL_TOKEN, None).map(|_| ()))
        });
        wait_for_sleeper(&m);
        // SAFETY: sends SIGUSR1 to this process; the handler is installed.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        let (_, r) = waiter.join().unwrap();
        assert!(matches!(r, Err(LockError::Cancelled)), "{r:?}");
    });
    assert_eq!(m.status().state, LockState::Locked);
}
