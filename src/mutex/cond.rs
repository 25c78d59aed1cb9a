//! Condition waits on a [`SharedMutex`]'s value: [`Guard::wait`] and its
//! variants, [`SharedMutex::notify_one`] and [`SharedMutex::notify_all`].
//! The protocol (a futex sequence word in the header, no waiter
//! bookkeeping, a death is a notification) is in `crate::cond`.

use super::{Guard, SharedMutex};
use crate::cancel::CancelToken;
use crate::cond::{self, Slept};
use crate::error::LockError;
use crate::file::init::checkpoint;
use crate::file::layout;
use crate::outcome::Acquired;
use crate::raw::Wait;
use crate::sys;
use bytemuck::Pod;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Whether a wait that timed out relocks (`wait_timeout`) or returns
/// without the lock (`wait_cancellable`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnTimeout {
    Relock,
    Return,
}

impl<'a, T: Pod> Guard<'a, T> {
    /// Unlocks, sleeps until notified (or a spurious wake-up), relocks.
    ///
    /// The relock is a normal [`lock`](SharedMutex::lock): if a holder died
    /// meanwhile, the first waiter to relock gets [`Acquired::OwnerDied`]
    /// and repairs. A holder's death wakes every waiter (within about
    /// 50 ms when nobody was waiting for the lock itself, at once
    /// otherwise), as do [`notify_one`](SharedMutex::notify_one) and
    /// [`notify_all`](SharedMutex::notify_all).
    ///
    /// Spurious wake-ups happen: after a notification whose woken waiter
    /// died before relocking, every waiter returns within about 50 ms, so
    /// that none is lost. Check the condition again after every return, or
    /// use [`wait_while`](Self::wait_while), which does.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] if the lock word no longer names this thread
    /// (the file changed under the holder; nothing is unlocked, nothing
    /// waited); else as [`lock`](SharedMutex::lock), for the relock.
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Acquired, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("ready.lock");
    /// let m = SharedMutex::<u32>::open(&path)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let other = SharedMutex::<u32>::open(&path).unwrap(); // another process, in real life
    ///         *other.lock_or_recover(|v| *v = 0).unwrap() = 1;
    ///         other.notify_all();
    ///     });
    ///     let mut g = m.lock_or_recover(|v| *v = 0)?;
    ///     while *g == 0 {
    ///         g = match g.wait()? {
    ///             Acquired::Clean(g) => g,
    ///             Acquired::OwnerDied(r) => r.mark_consistent(), // repair first, in real life
    ///         };
    ///     }
    ///     Ok::<(), robust_mutex::LockError>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(self) -> Result<Acquired<Guard<'a, T>>, LockError> {
        Ok(self.wait_for(None, None, OnTimeout::Relock)?.0)
    }

    /// As [`wait`](Self::wait), for at most `timeout` (CLOCK_MONOTONIC:
    /// a wall-clock jump neither stretches nor cuts it). The bool is "timed
    /// out"; the lock is held again either way.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u32>::open(dir.path().join("m"))?;
    /// let g = m.lock_or_recover(|_| {})?;
    /// let (again, timed_out) = g.wait_timeout(std::time::Duration::from_millis(1))?;
    /// if timed_out {
    ///     // nobody notified in time; we hold the lock again either way
    /// }
    /// # drop(again);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(
        self,
        timeout: Duration,
    ) -> Result<(Acquired<Guard<'a, T>>, bool), LockError> {
        let deadline = sys::deadline_after(timeout);
        let (a, slept) = self.wait_for(None, Some(&deadline), OnTimeout::Relock)?;
        Ok((a, slept == Slept::TimedOut))
    }

    /// Waits while `condition(&mut value)` holds: returns (holding the
    /// lock) as soon as it does not, or at once with
    /// [`Acquired::OwnerDied`] if a holder died meanwhile (the condition is
    /// then not evaluated: the value may be half-written; repair it). It
    /// hides spurious wake-ups.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{Acquired, SharedMutex};
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("jobs.lock");
    /// let m = SharedMutex::<u32>::open(&path)?; // jobs queued
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let producer = SharedMutex::<u32>::open(&path).unwrap();
    ///         *producer.lock_or_recover(|v| *v = 0).unwrap() += 1;
    ///         producer.notify_one();
    ///     });
    ///     let g = m.lock_or_recover(|v| *v = 0)?;
    ///     match g.wait_while(|jobs| *jobs == 0)? {
    ///         Acquired::Clean(mut g) => *g -= 1, // take the job
    ///         Acquired::OwnerDied(r) => drop(r.mark_consistent()), // repair, in real life
    ///     }
    ///     Ok::<(), robust_mutex::LockError>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_while(
        mut self,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> Result<Acquired<Guard<'a, T>>, LockError> {
        loop {
            if !condition(&mut self) {
                return Ok(Acquired::Clean(self));
            }
            match self.wait()? {
                Acquired::Clean(g) => self = g,
                died @ Acquired::OwnerDied(_) => return Ok(died),
            }
        }
    }

    /// As [`wait_while`](Self::wait_while), for at most `timeout`
    /// (CLOCK_MONOTONIC). The bool is "timed out with the condition still
    /// true" (with [`Acquired::OwnerDied`], whose value is not evaluated:
    /// "the time ran out"); the lock is held again either way.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u32>::open(dir.path().join("m"))?;
    /// let g = m.lock_or_recover(|_| {})?;
    /// let short = std::time::Duration::from_millis(1);
    /// let (g, timed_out) = g.wait_while_timeout(short, |jobs| *jobs == 0)?;
    /// assert!(timed_out); // nobody queued a job
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_while_timeout(
        mut self,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> Result<(Acquired<Guard<'a, T>>, bool), LockError> {
        let deadline = sys::deadline_after(timeout);
        loop {
            if !condition(&mut self) {
                return Ok((Acquired::Clean(self), false));
            }
            let (a, slept) = self.wait_for(None, Some(&deadline), OnTimeout::Relock)?;
            match a {
                Acquired::Clean(g) => self = g,
                died @ Acquired::OwnerDied(_) => return Ok((died, slept == Slept::TimedOut)),
            }
            if slept == Slept::TimedOut {
                let still = condition(&mut self);
                return Ok((Acquired::Clean(self), still));
            }
        }
    }

    /// As [`wait`](Self::wait) (or, with `timeout`, for at most that long),
    /// but the wait can be abandoned through `cancel`, from another thread
    /// or a signal handler, like [`lock_cancellable`](SharedMutex::lock_cancellable).
    /// A cancel or the timeout, while asleep or while relocking, returns an
    /// error *without* the lock (it was released when the wait began).
    ///
    /// # Errors
    /// [`LockError::Cancelled`], [`LockError::TimedOut`] (without the
    /// lock); else as [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// use robust_mutex::{CancelToken, LockError};
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u32>::open(dir.path().join("m"))?;
    /// let cancel = CancelToken::new();
    /// cancel.cancel(); // e.g. from a Ctrl-C handler
    /// let g = m.lock_or_recover(|_| {})?;
    /// assert!(matches!(g.wait_cancellable(&cancel, None), Err(LockError::Cancelled)));
    /// assert!(m.try_lock().is_ok()); // the lock was let go
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_cancellable(
        self,
        cancel: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<Guard<'a, T>>, LockError> {
        let deadline = timeout.map(sys::deadline_after);
        Ok(self
            .wait_for(Some(cancel), deadline.as_ref(), OnTimeout::Return)?
            .0)
    }

    /// Every wait: note the sequence while holding the lock, let the lock
    /// go, sleep (`crate::cond::sleep`), relock as `lock` (or
    /// `lock_cancellable`) would.
    fn wait_for(
        self,
        cancel: Option<&CancelToken>,
        deadline: Option<&libc::timespec>,
        on_timeout: OnTimeout,
    ) -> Result<(Acquired<Guard<'a, T>>, Slept), LockError> {
        let (mutex, map) = (self.mutex, self.map);
        let word = map.cond();
        // Read while holding the lock: a change made under the lock after
        // our release, then notified, moves the word from this value.
        let seen = word.load(Ordering::Acquire);
        self.unlock()?;
        // A reset retired the file (before our wait, or while we slept: it
        // wakes the sleepers): the notifiers are on the replacement now,
        // so move there before sleeping, and before relocking.
        let retired = || map.state().load(Ordering::Acquire) == layout::STATE_RETIRED;
        let moved = retired() && mutex.follow_reset(map);
        let slept = if moved {
            Slept::Notified // a spurious wake-up: relock on the new file, look again
        } else {
            cond::sleep(word, seen, map.raw(), &|| mutex.name(), cancel, deadline)?
        };
        checkpoint("cond_woken");
        if slept == Slept::TimedOut && on_timeout == OnTimeout::Return {
            return Err(LockError::TimedOut);
        }
        if !moved && retired() {
            mutex.follow_reset(map);
        }
        let relock = match cancel {
            Some(c) => Wait::Cancellable(c, deadline),
            None => Wait::Block,
        };
        match mutex.acquire(relock) {
            Ok(a) => Ok((a, slept)),
            Err(e @ (LockError::Cancelled | LockError::TimedOut)) => {
                if slept == Slept::Notified {
                    // We may have taken a notify_one's wake-up, and leave
                    // without acting on it: pass one on.
                    cond::notify(mutex.map().cond(), false);
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

impl<T: Pod> SharedMutex<T> {
    /// Wakes one process or thread waiting in [`Guard::wait`] (or a
    /// variant) on this file, if any: make the change under the lock
    /// first, then notify, with the lock held or after unlocking. A
    /// waiter killed while asleep is not the one woken (but in the
    /// microseconds before the kernel has taken it off the queue; then the
    /// others learn at their next 50 ms tick). When nobody waits, this is
    /// one atomic add, with no system call.
    ///
    /// If the notifier may die, notify *while holding the lock*: a death
    /// between the unlock and the notify would leave the change
    /// unannounced, while a death before the notify with the lock held is a
    /// holder's death, which wakes every waiter.
    ///
    /// A file has one condition: if its waiters wait for different things
    /// (producers for "not full", consumers for "not empty"), a
    /// `notify_one` may wake one that cannot act. Use
    /// [`notify_all`](Self::notify_all) then, or `notify_one` only when any
    /// waiter can act (`examples/job_queue.rs` does both).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u32>::open(dir.path().join("jobs"))?;
    /// *m.lock_or_recover(|v| *v = 0)? += 1; // queue a job
    /// m.notify_one(); // wake one consumer
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify_one(&self) {
        self.notify(false);
    }

    /// Wakes every process and thread waiting in [`Guard::wait`] (or a
    /// variant) on this file. As [`notify_one`](Self::notify_one)
    /// otherwise.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = robust_mutex::SharedMutex::<u32>::open(dir.path().join("config"))?;
    /// *m.lock_or_recover(|v| *v = 0)? = 1; // version 1 published
    /// m.notify_all();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify_all(&self) {
        self.notify(true);
    }

    fn notify(&self, all: bool) {
        let mut map = self.map();
        // A reset moved the waiters to the replacement (it woke them on
        // the retired file): notify there.
        if map.state().load(Ordering::Acquire) == layout::STATE_RETIRED && self.follow_reset(map) {
            map = self.map();
        }
        cond::notify(map.cond(), all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::mpsc;

    /// A new mutex file in a temporary directory: the directory (kept
    /// alive), its path, a handle.
    fn new_file() -> (tempfile::TempDir, PathBuf, SharedMutex<u32>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let m = SharedMutex::<u32>::open(&path).unwrap();
        (dir, path, m)
    }

    /// A holder thread that exits holding the lock (the kernel marks it
    /// FUTEX_OWNER_DIED and wakes nobody: no lock waiter) is seen by a
    /// condition waiter, which relocks and gets `OwnerDied`.
    #[test]
    fn a_holder_thread_exiting_wakes_a_condition_waiter_with_owner_died() {
        let (_dir, path, m) = new_file();
        let (locked, told) = mpsc::channel();
        let path = &path;
        std::thread::scope(|s| {
            s.spawn(move || {
                told.recv().unwrap();
                let other = SharedMutex::<u32>::open(path).unwrap();
                // Taken once the waiter's wait let it go; never released.
                std::mem::forget(other.lock().unwrap());
            });
            let g = m.lock_or_recover(|_| {}).unwrap();
            locked.send(()).unwrap();
            match g.wait_while(|v| *v == 0).unwrap() {
                Acquired::OwnerDied(r) => drop(r.mark_consistent()),
                Acquired::Clean(_) => panic!("the holder died: expected OwnerDied"),
            }
        });
    }

    /// Bit 0 ("a waiter may sleep") survives a notify_one that woke
    /// someone, and is cleared by the first one that finds nobody asleep:
    /// a file whose waiters have gone costs no system call per notify.
    #[test]
    fn a_notify_one_that_finds_nobody_asleep_clears_the_sleepers_bit() {
        let (_dir, path, m) = new_file();
        let (locked, told) = mpsc::channel();
        let path = &path;
        std::thread::scope(|s| {
            let waiter = s.spawn(move || {
                let other = SharedMutex::<u32>::open(path).unwrap();
                let g = other.lock_or_recover(|_| {}).unwrap();
                locked.send(crate::sys::gettid()).unwrap();
                drop(g.wait_while(|v| *v == 0).unwrap());
            });
            let tid = told.recv().unwrap();
            // Until the kernel shows it asleep in the futex call (202).
            let asleep = || {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                    .is_ok_and(|s| s.split(' ').next() == Some("202"))
            };
            while !asleep() {
                std::thread::yield_now();
            }
            *m.lock_or_recover(|_| {}).unwrap() = 1;
            m.notify_one();
            waiter.join().unwrap();
        });
        let word = m.map().cond();
        // The waiter slept, and our wake reached it: bit 0 stayed set
        // (unless its tick timer fired just then: it re-arms after our add).
        m.notify_one(); // nobody asleep now
        assert_eq!(word.load(Ordering::Relaxed) & cond::SLEEPERS, 0);
    }

    /// notify_one after a change wakes the waiter; a notification with
    /// nobody asleep leaves bit 0 clear.
    #[test]
    fn notify_one_wakes_a_waiter_in_wait_while() {
        let (_dir, path, m) = new_file();
        m.notify_one();
        assert_eq!(m.map().cond().load(Ordering::Relaxed), cond::STEP);
        let (locked, told) = mpsc::channel();
        let path = &path;
        std::thread::scope(|s| {
            s.spawn(move || {
                told.recv().unwrap();
                let other = SharedMutex::<u32>::open(path).unwrap();
                for _ in 0..100 {
                    *other.lock_or_recover(|_| {}).unwrap() += 1;
                    other.notify_one();
                }
            });
            let g = m.lock_or_recover(|_| {}).unwrap();
            locked.send(()).unwrap();
            let Acquired::Clean(g) = g.wait_while(|v| *v < 100).unwrap() else {
                panic!("nobody died");
            };
            assert_eq!(*g, 100);
        });
    }
}
