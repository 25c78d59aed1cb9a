//! [`SharedSemaphore::acquire_async`] (feature `async`): a permit as a
//! plain `Future`, and [`AsyncPermit`], which a task may hold across
//! `.await`. The same lane as the mutex's (`crate::holder`): its holder
//! thread holds every permit this process's tasks hold, and takes the next
//! one for the first waiting task while a permit is free.

use super::SharedSemaphore;
use crate::error::LockError;
use crate::holder::future::{AsyncKind, Held, Waiting};
use crate::holder::lane::{Lane, Outcome, Target};
use crate::outcome::{Acquired, LockGuard, Recovery};
use crate::raw::{Fail, Got, Name, RawMutex};
use crate::registry::{self, Mapping};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

impl SharedSemaphore {
    /// Resolves once a permit is held, without blocking the calling
    /// thread: as [`SharedMutex::lock_async`](crate::SharedMutex::lock_async),
    /// a holder thread the crate owns takes the permit for this task and
    /// keeps it while the [`AsyncPermit`] lives (across `.await`, on any
    /// thread). Cancel-safe: dropping the future never leaves a permit
    /// taken, and an owner death it would have reported is passed on.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire): [`LockError::NotRecoverable`] if every
    /// permit is lost, [`LockError::Stuck`], [`LockError::FileChanged`],
    /// [`LockError::Io`] (also if no holder thread could be created).
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let a = sem.acquire_async().await?.recover_with(|_| {});
    /// let b = sem.acquire_async().await?.recover_with(|_| {});
    /// assert_ne!(a.slot(), b.slot());
    /// tokio::task::yield_now().await; // held across an .await
    /// assert_eq!(sem.status().available, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_async(&self) -> AcquireFuture<'_> {
        AcquireFuture {
            sem: self,
            waiting: Waiting::Start,
        }
    }
}

/// The future of [`SharedSemaphore::acquire_async`]: resolves to a permit,
/// as an [`Acquired`]`<`[`AsyncPermit`]`>`. `Send`, `Unpin`. Dropping it
/// before it resolves abandons the wait.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct AcquireFuture<'a> {
    sem: &'a SharedSemaphore,
    waiting: Waiting<'a>,
}

impl<'a> Future for AcquireFuture<'a> {
    type Output = Result<Acquired<AsyncPermit<'a>>, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.waiting.poll(this.sem, cx)
    }
}

impl Drop for AcquireFuture<'_> {
    fn drop(&mut self) {
        self.waiting.drop_future();
    }
}

impl<'a> AsyncKind<'a> for &'a SharedSemaphore {
    type Output = Acquired<AsyncPermit<'a>>;

    fn map(self) -> &'a Mapping {
        SharedSemaphore::map(self)
    }

    fn target(self, _map: &'a Mapping) -> Box<dyn Target> {
        let map = self.map.as_ref().expect("mapping lives until drop");
        // The holder's own handle, sharing this one's mapping.
        Box::new(SemTarget(SharedSemaphore {
            path: self.path.clone(),
            map: Some(registry::claim(map)),
            data_offset: self.data_offset,
            permits: self.permits,
        }))
    }

    fn ready(self, held: Held<'a>, got: Got) -> Self::Output {
        let permit = AsyncPermit { sem: self, held };
        match got {
            Got::Clean => Acquired::Clean(permit),
            Got::OwnerDied(previous) => {
                // SAFETY: the lane's holder thread took the permit with
                // EOWNERDEAD for this guard and holds it until the guard's
                // release; nobody has marked it consistent.
                Acquired::OwnerDied(unsafe { Recovery::new(permit, previous) })
            }
        }
    }

    fn follow_reset(self, _map: &'a Mapping) -> bool {
        false // a semaphore is replaced, never reset
    }

    fn name(self) -> Name<'a> {
        SharedSemaphore::name(self, None)
    }
}

/// A permit held for an async task; released when dropped. Made by
/// [`SharedSemaphore::acquire_async`].
///
/// `Send` and `Sync`, unlike [`PermitGuard`](crate::PermitGuard): a holder
/// thread holds the permit for it. Its drop hands the release over and
/// never blocks; dropped while its thread panics, it counts as the holder's
/// death (the next taker of that permit gets `OwnerDied`).
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
/// let sem = std::sync::Arc::new(robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?);
/// let s = sem.clone();
/// rt.block_on(rt.spawn(async move {
///     let p = s.acquire_async().await.unwrap().recover_with(|_| {});
///     tokio::task::yield_now().await; // may move to another worker thread
///     assert_eq!(p.slot(), 0);
/// }))?;
/// assert_eq!(sem.status().available, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the permit is released at once"]
pub struct AsyncPermit<'a> {
    sem: &'a SharedSemaphore,
    held: Held<'a>,
}

impl std::fmt::Debug for AsyncPermit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncPermit")
            .field("path", &self.sem.path)
            .field("slot", &self.held.slot)
            .finish()
    }
}

impl<'a> AsyncPermit<'a> {
    /// Which permit (slot) this is, `0..permits`; see
    /// [`PermitGuard::slot`](crate::PermitGuard::slot).
    ///
    /// # Examples
    /// See [`AsyncPermit`].
    pub fn slot(&self) -> usize {
        self.held.slot
    }

    /// The semaphore this permit belongs to.
    ///
    /// # Examples
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 2)?;
    /// let p = sem.acquire_async().await?.recover_with(|_| {});
    /// assert_eq!(p.semaphore().status().held, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn semaphore(&self) -> &'a SharedSemaphore {
        self.sem
    }

    /// Sets a short label in this permit's owner record; see
    /// [`PermitGuard::set_label`](crate::PermitGuard::set_label).
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
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// let mut p = sem.acquire_async().await?.recover_with(|_| {});
    /// p.set_label("upload #12")?;
    /// assert_eq!(sem.status().holders[0].label, "upload #12");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        // SAFETY: the permit is held for this guard (by its holder thread,
        // which touches the record only at acquisition and release), and a
        // permit has records.
        unsafe { self.sem.slot(self.held.slot).set_label(label) }
    }
}

impl LockGuard for AsyncPermit<'_> {
    type Value = ();

    fn raw_lock(&self) -> RawMutex<'_> {
        self.sem.slot(self.held.slot)
    }

    fn lock_name(&self) -> Name<'_> {
        self.sem.name(Some(self.held.slot))
    }

    fn with_value(&mut self, f: &mut dyn FnMut(&mut ())) {
        f(&mut ());
    }

    unsafe fn mark_lock_consistent(&self) {
        self.held.mark_consistent(self.lock_name());
    }

    fn held_for_guard(&self) -> bool {
        self.held.held_here()
    }

    fn taken_in_panic(&self) -> bool {
        self.held.taken_in_panic()
    }
}

impl Drop for AsyncPermit<'_> {
    fn drop(&mut self) {
        self.held.release(self.lock_name());
    }
}

impl Recovery<AsyncPermit<'_>> {
    /// Sets the label of this permit's owner record while recovering; see
    /// [`PermitGuard::set_label`](crate::PermitGuard::set_label).
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
    /// let sem = robust_mutex::SharedSemaphore::open(dir.path().join("s"), 1)?;
    /// if let robust_mutex::Acquired::OwnerDied(mut r) = sem.acquire_async().await? {
    ///     r.set_label("cleaning up")?;
    ///     r.mark_consistent();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_label(&mut self, label: &str) -> Result<(), crate::LabelTooLong> {
        let guard = self.guard();
        // SAFETY: the permit is held for the recovery's guard (by its
        // holder thread), and a permit has records.
        unsafe { guard.sem.slot(guard.held.slot).set_label(label) }
    }
}

/// What a holder thread takes permits through: its own handle of the
/// semaphore, sharing the task's handle's mapping (claimed, so it stays
/// mapped while the thread may hold permits).
struct SemTarget(SharedSemaphore);

impl Target for SemTarget {
    fn lane(&self) -> &Lane {
        self.0.map().lane()
    }

    fn acquire(&self, bell: &crate::CancelToken) -> Outcome {
        // The permit's guard is forgotten: this thread holds the permit
        // until the lane releases it through the slot's raw lock.
        match self.0.acquire_cancellable(bell, None) {
            Ok(Acquired::Clean(g)) => {
                let slot = g.slot();
                std::mem::forget(g);
                Ok((slot, Got::Clean))
            }
            Ok(Acquired::OwnerDied(r)) => {
                let (g, previous) = r.into_parts();
                let slot = g.slot();
                std::mem::forget(g);
                Ok((slot, Got::OwnerDied(previous)))
            }
            Err(e) => Err(Fail::Lock(e)),
        }
    }

    fn raw(&self, slot: usize) -> RawMutex<'_> {
        self.0.slot(slot)
    }

    fn name(&self, slot: usize) -> Name<'_> {
        self.0.name(Some(slot))
    }

    fn capacity(&self) -> usize {
        self.0.permits
    }
}

#[cfg(test)]
mod tests;
