//! [`SharedMutex::lock_async`] (feature `async`): the lock as a plain
//! `Future`, and [`AsyncGuard`], which a task may hold across `.await`.
//!
//! A holder thread of the file's lane (`crate::holder`) takes and releases
//! the lock for the task, so the lock still belongs to a thread that lives
//! exactly as long as the process: the kernel releases it as a death if the
//! process dies, and the next locker gets `OwnerDied`, as for every kind.

use super::SharedMutex;
use crate::error::LockError;
use crate::holder::future::{AsyncKind, Held, Waiting};
use crate::holder::lane::{Lane, Outcome, Target};
use crate::outcome::{Acquired, LockGuard, Recovery};
use crate::raw::{Got, Name, RawMutex, Wait};
use crate::registry::{self, Mapping};
use bytemuck::Pod;
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
            waiting: Waiting::Start,
        }
    }

    /// The `Arc` of `map`, one of this handle's mappings (the one a
    /// future queued in: not necessarily the current one, if another
    /// thread has followed a reset since).
    fn arc_of(&self, map: &Mapping) -> Arc<Mapping> {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        maps.iter()
            .find(|m| std::ptr::eq(Arc::as_ptr(m), map))
            .expect("a handle keeps every mapping it used")
            .clone()
    }
}

/// The future of [`SharedMutex::lock_async`]: resolves to the lock, as an
/// [`Acquired`]`<`[`AsyncGuard`]`>`. `Send` when `T` is; `Unpin`. Dropping
/// it before it resolves abandons the wait (see `lock_async`).
#[must_use = "futures do nothing unless polled"]
pub struct LockFuture<'a, T: Pod> {
    mutex: &'a SharedMutex<T>,
    waiting: Waiting<'a>,
}

impl<T: Pod> std::fmt::Debug for LockFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockFuture")
            .field("path", &self.mutex.path())
            .field("waiting", &self.waiting)
            .finish()
    }
}

impl<'a, T: Pod> Future for LockFuture<'a, T> {
    type Output = Result<Acquired<AsyncGuard<'a, T>>, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.waiting.poll(this.mutex, cx)
    }
}

impl<T: Pod> Drop for LockFuture<'_, T> {
    fn drop(&mut self) {
        self.waiting.drop_future();
    }
}

impl<'a, T: Pod> AsyncKind<'a> for &'a SharedMutex<T> {
    type Output = Acquired<AsyncGuard<'a, T>>;

    fn map(self) -> &'a Mapping {
        SharedMutex::map(self)
    }

    fn target(self, map: &'a Mapping) -> Box<dyn Target> {
        Box::new(MutexTarget {
            map: Some(registry::claim(&self.arc_of(map))),
            path: self.path().to_path_buf(),
        })
    }

    fn ready(self, held: Held<'a>, got: Got) -> Self::Output {
        let guard = AsyncGuard {
            mutex: self,
            held,
            _value: PhantomData,
        };
        match got {
            Got::Clean => Acquired::Clean(guard),
            Got::OwnerDied(previous) => {
                // SAFETY: the lane's holder thread took the lock with
                // EOWNERDEAD for this guard and holds it until the guard's
                // release; nobody has marked it consistent.
                Acquired::OwnerDied(unsafe { Recovery::new(guard, previous) })
            }
        }
    }

    fn follow_reset(self, map: &'a Mapping) -> bool {
        SharedMutex::follow_reset(self, map)
    }

    fn name(self) -> Name<'a> {
        SharedMutex::name(self)
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
/// "While its thread panics" is the dropping thread's state, whatever
/// panicked: a current-thread runtime dropped by a panicking `main` drops
/// its parked tasks, and their guards, during that panic, so each counts
/// as a death (their critical sections were cut short); on a multi-thread
/// runtime the workers drop them, not panicking, and they are released
/// clean.
///
/// At `exit()` (also a return from `main`) the process waits, at most a
/// second, for its holder threads to finish the releases of guards dropped
/// before; a guard still alive then, or a lock taken for a future not yet
/// polled again, is released by the kernel as a death.
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
    held: Held<'a>,
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
        self.held.map.data(self.mutex.data_offset()).cast()
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
        unsafe { self.held.map.raw().set_label(label) }
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
}

impl<T: Pod> LockGuard for AsyncGuard<'_, T> {
    type Value = T;

    fn raw_lock(&self) -> RawMutex<'_> {
        self.held.map.raw()
    }

    fn lock_name(&self) -> Name<'_> {
        self.mutex.name()
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut T)) {
        f(self);
    }

    unsafe fn mark_lock_consistent(&self) {
        self.held.mark_consistent(self.mutex.name());
    }

    fn held_for_guard(&self) -> bool {
        self.held.held_here()
    }

    fn taken_in_panic(&self) -> bool {
        self.held.taken_in_panic()
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
        // The holder thread releases it (our writes to the value happen
        // before, through the lane's mutex).
        self.held.release(self.mutex.name());
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
        let map = self.guard().held.map;
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
}

impl MutexTarget {
    fn map(&self) -> &Mapping {
        self.map.as_deref().expect("claimed until drop")
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
            .acquire(Wait::Cancellable(bell, None), || self.name(0))?;
        Ok((0, got))
    }

    fn raw(&self, _slot: usize) -> RawMutex<'_> {
        self.map().raw()
    }

    fn name(&self, _slot: usize) -> Name<'_> {
        Name {
            path: &self.path,
            permit: None,
        }
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
