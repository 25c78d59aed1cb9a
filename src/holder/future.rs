//! What every kind's async acquisition shares: the future's steps
//! ([`Waiting`]) and the guard's core ([`Held`]), written once over an
//! [`AsyncKind`]. The public types (`LockFuture`, `AsyncGuard`,
//! `AcquireFuture`, `AsyncPermit`) wrap them.

use super::lane::{Entered, How, Lane, Outcome, Target};
use crate::error::LockError;
use crate::identity;
use crate::raw::{Fail, Got, Name};
use crate::registry::Mapping;
use std::task::{Context, Poll};

/// A lock kind's side of an async acquisition: a handle borrowed for `'a`.
pub(crate) trait AsyncKind<'a>: Copy {
    /// What the future resolves to (the kind's `Acquired<...>`).
    type Output;

    /// The mapping in use.
    fn map(self) -> &'a Mapping;

    /// What a holder thread locks `map` through (owning a claim on it).
    fn target(self, map: &'a Mapping) -> Box<dyn Target>;

    /// The outcome for the task: the guard made from `held` for `Ok`.
    fn ready(self, held: Held<'a>, got: Got) -> Self::Output;

    /// Moves to the file a reset put in place of `map`'s: `false` if there
    /// is none (a semaphore is replaced, never reset).
    fn follow_reset(self, map: &'a Mapping) -> bool;

    /// The lock's name in the log.
    fn name(self) -> Name<'a>;
}

/// The steps of an async acquisition.
#[derive(Debug)]
pub(crate) enum Waiting<'a> {
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

impl<'a> Waiting<'a> {
    /// One poll of the future of `kind`.
    pub(crate) fn poll<K: AsyncKind<'a>>(
        &mut self,
        kind: K,
        cx: &mut Context<'_>,
    ) -> Poll<Result<K::Output, LockError>> {
        loop {
            match *self {
                Waiting::Start => {
                    let map = kind.map();
                    let lane = map.lane();
                    let id = match lane.enter(cx.waker()) {
                        Entered::Queued(id) => id,
                        Entered::Serve(id) => {
                            if let Err(e) = super::lane::start(kind.target(map)) {
                                lane.abandon(id, &e);
                                *self = Waiting::Done;
                                log::error!("{}: no holder thread: {e}", kind.name());
                                return Poll::Ready(Err(LockError::Io(e)));
                            }
                            id
                        }
                    };
                    *self = Waiting::Queued {
                        map,
                        id,
                        generation: lane.generation(),
                    };
                    // The holder thread wakes us with the outcome.
                    return Poll::Pending;
                }
                Waiting::Queued {
                    map,
                    id,
                    generation,
                } => {
                    if generation != identity::fork_generation() {
                        // Queued in the parent, polled in a fork child: the
                        // parent's lane is not ours. Queue again here.
                        *self = Waiting::Start;
                        continue;
                    }
                    let Some(outcome) = map.lane().poll(id, cx.waker()) else {
                        return Poll::Pending;
                    };
                    *self = Waiting::Done;
                    match Self::resolve(kind, map, outcome) {
                        Some(ready) => return Poll::Ready(ready),
                        None => *self = Waiting::Start, // moved to a reset file
                    }
                }
                Waiting::Done => panic!("an async lock future polled after it resolved"),
            }
        }
    }

    /// The result from the lane's outcome, or `None` to queue again on the
    /// file a reset put in place of `map`'s.
    fn resolve<K: AsyncKind<'a>>(
        kind: K,
        map: &'a Mapping,
        outcome: Outcome,
    ) -> Option<Result<K::Output, LockError>> {
        Some(match outcome {
            Ok((slot, got)) => Ok(kind.ready(
                Held {
                    map,
                    slot,
                    generation: map.lane().generation(),
                    taken_in_panic: std::thread::panicking(),
                },
                got,
            )),
            Err(Fail::Lock(e)) => Err(e),
            Err(Fail::NotRecoverable) => {
                if kind.follow_reset(map) {
                    return None;
                }
                log::error!("{}: not recoverable; reset it", kind.name());
                Err(LockError::NotRecoverable)
            }
        })
    }

    /// The future is dropped: give up its place, and a lock delivered to
    /// it and not taken.
    pub(crate) fn drop_future(&mut self) {
        if let Waiting::Queued {
            map,
            id,
            generation,
        } = *self
        {
            // A future inherited through fork has no holder here: nothing
            // of this process waits for it.
            if generation == identity::fork_generation() {
                map.lane().leave(id);
            }
        }
    }
}

/// A lock (or permit) held for a task by its lane's holder thread: what
/// every async guard wraps.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    /// The mapping whose lane's holder holds it.
    pub(crate) map: &'a Mapping,
    /// The slot (0 for a mutex, the permit for a semaphore).
    pub(crate) slot: usize,
    /// The fork generation whose holder thread holds it.
    generation: u32,
    /// Resolved while its thread was already panicking: its release
    /// during that panic is no death.
    taken_in_panic: bool,
}

impl<'a> Held<'a> {
    /// The lane whose holder thread holds it, if it is this process's (not
    /// for a guard inherited through fork).
    fn lane(&self) -> Option<&'a Lane> {
        (self.generation == identity::fork_generation()).then(|| self.map.lane())
    }

    /// [`LockGuard::mark_lock_consistent`](crate::LockGuard): asks the
    /// holder thread, which does it before any later release.
    pub(crate) fn mark_consistent(&self, name: Name<'_>) {
        match self.lane() {
            Some(lane) => lane.consistent(self.slot),
            None => {
                log::error!("{name}: not marking consistent: a recovery inherited through fork")
            }
        }
    }

    /// Whether it is held for this guard by a thread of this process.
    pub(crate) fn held_here(&self) -> bool {
        self.lane().is_some()
    }

    /// Whether it was taken while the task's thread was panicking.
    pub(crate) fn taken_in_panic(&self) -> bool {
        self.taken_in_panic
    }

    /// The guard's drop: hands the release to the holder thread (as a
    /// death if the thread panics), never blocking.
    pub(crate) fn release(&self, name: Name<'_>) {
        let Some(lane) = self.lane() else {
            log::debug!("{name}: an async guard inherited through fork was dropped; nothing done");
            return;
        };
        let how = if std::thread::panicking() && !self.taken_in_panic {
            How::Panicked
        } else {
            How::Clean
        };
        lane.release(self.slot, how);
    }
}
