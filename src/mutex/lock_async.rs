//! [`SharedMutex::lock_async`] (feature `async`): the lock as a plain
//! `Future`, and [`AsyncGuard`], which a task may hold across `.await`.
//!
//! A holder thread of the file's lane (`crate::holder`) takes and releases
//! the lock for the task, so the lock still belongs to a thread that lives
//! exactly as long as the process: the kernel releases it as a death if the
//! process dies, and the next locker gets `OwnerDied`, as for every kind.

use super::SharedMutex;
use crate::error::LockError;
use crate::holder::lane::{self, Entered, How, Lane, Outcome, Target};
use crate::identity;
use crate::outcome::{Acquired, LockGuard, Recovery};
use crate::owner::Records;
use crate::raw::{Fail, Got, Name, RawMutex, Wait, take_last_dead};
use crate::registry::{self, Mapping};
use bytemuck::Pod;
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

impl<T: Pod> SharedMutex<T> {
    /// Resolves once the lock is held, without blocking the calling thread:
    /// a holder thread the crate owns waits in the kernel, takes the lock on
    /// this task's behalf and keeps it while the [`AsyncGuard`] lives, so
    /// the guard may be held across `.await` and moved between threads.
    /// Works with any executor (tokio, async-std, smol, ...): a plain
    /// `Future`, no runtime dependency.
    ///
    /// **Cancel-safe.** Dropping the future before it resolves (a
    /// `tokio::time::timeout`, a `select!` branch not taken) abandons the
    /// wait and never leaves the lock held: a lock taken for it just then
    /// is let go, and an owner death it would have reported is passed on,
    /// so the next locker still gets `OwnerDied`. Timeouts are the
    /// runtime's: `tokio::time::timeout(d, m.lock_async())`.
    ///
    /// Within one process, tasks waiting for the same file queue in user
    /// space, first come first served, and one holder thread per file waits
    /// in the kernel for them; processes compete as usual.
    ///
    /// A task that awaits `lock_async` while it holds the same lock waits
    /// for ever (as with `tokio::sync::Mutex`): the holder thread cannot
    /// tell that task from another.
    ///
    /// # Errors
    /// As [`lock`](Self::lock): [`LockError::NotRecoverable`] (a reset is
    /// followed first), [`LockError::Stuck`], [`LockError::FileChanged`],
    /// [`LockError::Io`] (also if no holder thread could be created).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_async().await?.recover_with(|v| *v = 0);
    /// *g += 1;
    /// tokio::task::yield_now().await; // held across an .await
    /// *g += 1;
    /// drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_async(&self) -> LockFuture<'_, T> {
        LockFuture {
            mutex: self,
            step: Step::Start,
        }
    }

    /// The `Arc` of the mapping in use.
    fn current_map(&self) -> Arc<Mapping> {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map();
        maps.iter()
            .find(|m| std::ptr::eq(Arc::as_ptr(m), current))
            .expect("the current mapping is one of the handle's")
            .clone()
    }
}

/// The future of [`SharedMutex::lock_async`]: resolves to the lock, as an
/// [`Acquired`]`<`[`AsyncGuard`]`>`. `Send` when `T` is; `Unpin`. Dropping
/// it before it resolves abandons the wait (see `lock_async`).
#[must_use = "futures do nothing unless polled"]
pub struct LockFuture<'a, T: Pod> {
    mutex: &'a SharedMutex<T>,
    step: Step<'a>,
}

enum Step<'a> {
    /// Not queued yet.
    Start,
    /// Queued in `map`'s lane (of fork generation `generation`).
    Queued {
        map: &'a Mapping,
        id: u64,
        generation: u32,
    },
    /// Resolved.
    Done,
}

impl<T: Pod> std::fmt::Debug for LockFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockFuture")
            .field("path", &self.mutex.path())
            .field("queued", &matches!(self.step, Step::Queued { .. }))
            .finish_non_exhaustive()
    }
}

impl<'a, T: Pod> Future for LockFuture<'a, T> {
    type Output = Result<Acquired<AsyncGuard<'a, T>>, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match this.step {
                Step::Start => {
                    let map = this.mutex.map();
                    let lane = map.lane();
                    let id = match lane.enter(cx.waker()) {
                        Entered::Queued(id) => id,
                        Entered::Serve(id) => {
                            let target = MutexTarget::new(this.mutex);
                            if let Err(e) = lane::start(Box::new(target)) {
                                lane.abandon(id);
                                this.step = Step::Done;
                                log::error!(
                                    "{}: no holder thread for lock_async: {e}",
                                    this.mutex.name()
                                );
                                return Poll::Ready(Err(LockError::Io(e)));
                            }
                            id
                        }
                    };
                    this.step = Step::Queued {
                        map,
                        id,
                        generation: lane.generation(),
                    };
                    // The holder thread wakes us with the outcome.
                    return Poll::Pending;
                }
                Step::Queued { map, id, .. } => {
                    let Some(outcome) = map.lane().poll(id, cx.waker()) else {
                        return Poll::Pending;
                    };
                    this.step = Step::Done;
                    match this.resolve(map, outcome) {
                        Some(ready) => return Poll::Ready(ready),
                        None => this.step = Step::Start, // moved to a reset file
                    }
                }
                Step::Done => panic!("LockFuture polled after it resolved"),
            }
        }
    }
}

impl<'a, T: Pod> LockFuture<'a, T> {
    /// The future's result from the lane's outcome, or `None` to queue
    /// again on the file a reset put in place of `map`'s.
    #[allow(clippy::type_complexity)]
    fn resolve(
        &self,
        map: &'a Mapping,
        outcome: Outcome,
    ) -> Option<Result<Acquired<AsyncGuard<'a, T>>, LockError>> {
        let guard = || AsyncGuard {
            mutex: self.mutex,
            map,
            generation: map.lane().generation(),
            taken_in_panic: std::thread::panicking(),
            _value: PhantomData,
        };
        Some(match outcome {
            Ok((_, Got::Clean)) => Ok(Acquired::Clean(guard())),
            // SAFETY: the lane's holder thread took the lock with
            // EOWNERDEAD for this ticket and holds it until the guard's
            // release command; nobody has marked it consistent.
            Ok((_, Got::OwnerDied(previous))) => Ok(Acquired::OwnerDied(unsafe {
                Recovery::new(guard(), previous)
            })),
            Err(Fail::Lock(e)) => Err(e),
            Err(Fail::NotRecoverable) => {
                if self.mutex.follow_reset(map) {
                    return None;
                }
                log::error!("{}: mutex is not recoverable; reset it", self.mutex.name());
                Err(LockError::NotRecoverable)
            }
        })
    }
}

impl<T: Pod> Drop for LockFuture<'_, T> {
    fn drop(&mut self) {
        if let Step::Queued {
            map,
            id,
            generation,
        } = self.step
        {
            // A future inherited through fork has no holder here: nothing
            // of this process waits for it.
            if generation == identity::fork_generation() {
                map.lane().leave(id);
            }
        }
    }
}

/// Holds a [`SharedMutex`]'s lock for an async task; gives access to the
/// value; releases on drop. Made by [`SharedMutex::lock_async`].
///
/// Unlike [`Guard`](crate::Guard), it is `Send` (when `T` is): it may be
/// held across `.await` while the task moves between worker threads. The
/// lock itself is held by a holder thread for it, which releases it when
/// the guard is dropped: the drop only hands the release over and never
/// blocks. Dropped while its thread panics, it counts as the holder's
/// death, as everywhere in this crate: the next locker, in any process,
/// gets `OwnerDied`.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
/// let m = std::sync::Arc::new(robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?);
/// # let m2 = m.clone();
/// let task = rt.spawn(async move {
///     let mut g = m.lock_async().await.unwrap().recover_with(|v| *v = 0);
///     *g += 1;
///     tokio::task::yield_now().await; // the guard may move to another thread here
///     *g += 1;
/// });
/// rt.block_on(task)?;
/// # assert_eq!(*m2.lock()?.recover_with(|_| {}), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the mutex will immediately unlock"]
pub struct AsyncGuard<'a, T: Pod> {
    mutex: &'a SharedMutex<T>,
    map: &'a Mapping,
    /// The fork generation whose holder thread holds the lock.
    generation: u32,
    /// Resolved while its thread was already panicking: its release
    /// during that panic is no death.
    taken_in_panic: bool,
    /// `Send`/`Sync` as `&mut T`: the guard gives `&mut T` access.
    _value: PhantomData<&'a mut T>,
}

impl<T: Pod> std::fmt::Debug for AsyncGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncGuard")
            .field("path", &self.mutex.path())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Pod> AsyncGuard<'a, T> {
    /// The value's address in the mapping.
    fn data(&self) -> *mut T {
        self.map.data(self.mutex.data_offset()).cast()
    }

    /// Sets a short label in the owner record; see
    /// [`Guard::set_label`](crate::Guard::set_label).
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let mut g = m.lock_async().await?.recover_with(|_| {});
    /// g.set_label("request 42")?;
    /// assert_eq!(m.status().owner.unwrap().label, "request 42");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        // SAFETY: the lock is held for this guard (by its holder thread,
        // which touches the record only at acquisition and release, both
        // outside the guard's life), of a mutex file (which has records).
        unsafe { self.map.raw().set_label(label) }
    }

    /// The mutex this guard locks.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// let g = m.lock_async().await?.recover_with(|_| {});
    /// assert_eq!(g.mutex().path(), m.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mutex(&self) -> &'a SharedMutex<T> {
        self.mutex
    }

    /// The lane whose holder thread holds the lock, if it is this
    /// process's (not for a guard inherited through fork).
    fn lane(&self) -> Option<&'a Lane> {
        (self.generation == identity::fork_generation()).then(|| self.map.lane())
    }
}

impl<T: Pod> LockGuard for AsyncGuard<'_, T> {
    type Value = T;

    fn raw_lock(&self) -> RawMutex<'_> {
        self.map.raw()
    }

    fn lock_name(&self) -> Name<'_> {
        self.mutex.name()
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut T)) {
        f(self);
    }

    unsafe fn mark_lock_consistent(&self) {
        match self.lane() {
            // Done by the holder thread before any later release.
            Some(lane) => lane.consistent(0),
            None => log::error!(
                "{}: not marking consistent: a recovery inherited through fork",
                self.mutex.name()
            ),
        }
    }

    fn held_for_guard(&self) -> bool {
        self.lane().is_some()
    }

    fn taken_in_panic(&self) -> bool {
        self.taken_in_panic
    }
}

impl<T: Pod> Deref for AsyncGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // The holder thread's acquisition happened before the outcome
        // reached this guard (through the lane's mutex).
        // SAFETY: the lock is held for this guard, so no cooperating thread
        // or process writes the value; it lies aligned in the live mapping;
        // `T: Pod` makes every bit pattern valid.
        unsafe { &*self.data() }
    }
}

impl<T: Pod> DerefMut for AsyncGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes this the only
        // reference in this process.
        unsafe { &mut *self.data() }
    }
}

impl<T: Pod> Drop for AsyncGuard<'_, T> {
    fn drop(&mut self) {
        let Some(lane) = self.lane() else {
            log::debug!(
                "{}: an async guard inherited through fork was dropped; nothing done",
                self.mutex.name()
            );
            return;
        };
        let how = if std::thread::panicking() && !self.taken_in_panic {
            How::Panicked
        } else {
            How::Clean
        };
        // The holder thread releases it (our writes to the value happen
        // before, through the lane's mutex).
        lane.release(0, how);
    }
}

impl<T: Pod> Recovery<AsyncGuard<'_, T>> {
    /// Sets the label of the owner record while recovering; see
    /// [`Guard::set_label`](crate::Guard::set_label).
    ///
    /// # Errors
    /// [`LabelTooLong`](crate::LabelTooLong) when `label` is longer than
    /// [`LabelTooLong::LIMIT`](crate::LabelTooLong::LIMIT) (88) bytes.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let m = robust_mutex::SharedMutex::<u64>::open(dir.path().join("m"))?;
    /// if let robust_mutex::Acquired::OwnerDied(mut r) = m.lock_async().await? {
    ///     r.set_label("repairing")?;
    ///     *r = 0;
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        let map = self.guard().map;
        // SAFETY: the lock is held for the recovery's guard (by its holder
        // thread), of a mutex file (which has records).
        unsafe { map.raw().set_label(label) }
    }
}

/// What a holder thread locks a [`SharedMutex`] through: the file's
/// mapping (claimed as a handle's, so it stays registered and mapped while
/// the thread may hold its lock) and its path.
struct MutexTarget {
    map: Option<Arc<Mapping>>,
    path: PathBuf,
    /// The dead holder's records, while this thread holds a lock it took
    /// with EOWNERDEAD (put back if nobody sees that death).
    dead: Cell<Option<Records>>,
}

impl MutexTarget {
    fn new<T: Pod>(mutex: &SharedMutex<T>) -> Self {
        MutexTarget {
            map: Some(registry::claim(&mutex.current_map())),
            path: mutex.path().to_path_buf(),
            dead: Cell::new(None),
        }
    }

    fn map(&self) -> &Mapping {
        self.map.as_deref().expect("claimed until drop")
    }

    fn name(&self) -> Name<'_> {
        Name {
            path: &self.path,
            permit: None,
        }
    }
}

impl Target for MutexTarget {
    fn lane(&self) -> &Lane {
        self.map().lane()
    }

    fn acquire(&self, bell: &crate::CancelToken) -> Outcome {
        let got = self
            .map()
            .raw()
            .acquire(Wait::Cancellable(bell, None), || self.name())?;
        if let Got::OwnerDied(_) = got {
            self.dead.set(take_last_dead());
        }
        Ok((0, got))
    }

    unsafe fn release(&self, _slot: usize, how: How) {
        let raw = self.map().raw();
        // An error was logged where it was found.
        let _ = match how {
            // SAFETY: this thread holds the lock (the caller's contract).
            How::Clean => unsafe { raw.release(|| self.name()) },
            // SAFETY: as above.
            How::Panicked => unsafe {
                raw.release_as_death(self.name(), "the async task panicked holding the lock")
            },
            // SAFETY: as above, taken with EOWNERDEAD and not seen by
            // anyone (so neither marked consistent nor labelled).
            How::Unseen => unsafe { raw.pass_on_death(self.dead.take(), self.name()) },
        };
    }

    unsafe fn consistent(&self, _slot: usize) {
        // SAFETY: this thread took it with EOWNERDEAD and holds it (the
        // caller's contract).
        unsafe { self.map().raw().mark_consistent(self.name()) }
    }

    fn capacity(&self) -> usize {
        1
    }
}

impl Drop for MutexTarget {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            registry::detach(map);
        }
    }
}

#[cfg(test)]
mod tests;
