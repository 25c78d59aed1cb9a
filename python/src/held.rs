//! A held lock kept in a Python object: the crate's guard (or recovery)
//! together with the handle it borrows, for each kind, and what can be
//! done to it. The guard stays a real crate guard: releasing it is the
//! crate's unlock, its drop, or its `release_as_death`.

use robust_mutex::{
    Acquired, Guard, LabelTooLong, LockError, LockGuard, OwnerInfo, PermitGuard, Recovery,
    SharedMutex, SharedSemaphore,
};
use self_cell::self_cell;
use std::sync::Arc;

/// A held lock: clean, or taken after an owner death and not yet marked
/// consistent.
#[derive(Debug)]
pub(crate) enum State<G: LockGuard> {
    Clean(G),
    Recovering(Recovery<G>),
}

impl<G: LockGuard> From<Acquired<G>> for State<G> {
    fn from(a: Acquired<G>) -> Self {
        match a {
            Acquired::Clean(g) => State::Clean(g),
            Acquired::OwnerDied(r) => State::Recovering(r),
        }
    }
}

impl<G: LockGuard> State<G> {
    fn previous_owner(&self) -> Option<OwnerInfo> {
        match self {
            State::Clean(_) => None,
            State::Recovering(r) => r.previous_owner().cloned(),
        }
    }
}

/// How a held lock was taken: after a death or not, and the dead owner's
/// record.
#[derive(Debug)]
pub(crate) struct Taken {
    pub owner_died: bool,
    pub previous: Option<OwnerInfo>,
}

/// What every held kind offers.
pub(crate) trait Hold {
    /// How it was taken.
    fn taken(&self) -> Taken;
    /// Not (or no longer) owner-dead.
    fn consistent(&self) -> bool;
    /// Marks a recovery consistent (nothing to do if it is).
    fn mark_consistent(&mut self);
    /// Sets the owner record's label (`Ok(false)`: the kind has none).
    fn set_label(&mut self, label: &str) -> Result<bool, LabelTooLong>;
    /// Lets go: a clean unlock, or for a recovery not marked consistent,
    /// what dropping a `Recovery` does (not recoverable).
    fn release(&mut self) -> Result<(), LockError>;
    /// Lets go as a death: the next locker gets OwnerDied.
    fn release_as_death(&mut self, why: &str) -> Result<(), LockError>;
}

/// The `Hold` operations over a `State` of guards with `unlock`,
/// `release_as_death` and `set_label`.
macro_rules! hold_state {
    ($cell:ident) => {
        impl Hold for $cell {
            fn taken(&self) -> Taken {
                let s = self.borrow_dependent().as_ref();
                Taken {
                    owner_died: matches!(s, Some(State::Recovering(_))),
                    previous: s.and_then(State::previous_owner),
                }
            }

            fn consistent(&self) -> bool {
                !matches!(self.borrow_dependent(), Some(State::Recovering(_)))
            }

            fn mark_consistent(&mut self) {
                self.with_dependent_mut(|_, s| {
                    if let Some(State::Recovering(r)) = s.take() {
                        *s = Some(State::Clean(r.mark_consistent()));
                    }
                });
            }

            fn set_label(&mut self, label: &str) -> Result<bool, LabelTooLong> {
                self.with_dependent_mut(|_, s| match s {
                    Some(State::Clean(g)) => g.set_label(label).map(|()| true),
                    Some(State::Recovering(r)) => r.set_label(label).map(|()| true),
                    None => Ok(false),
                })
            }

            fn release(&mut self) -> Result<(), LockError> {
                self.with_dependent_mut(|_, s| match s.take() {
                    Some(State::Clean(g)) => g.unlock(),
                    Some(State::Recovering(r)) => {
                        drop(r);
                        Ok(())
                    }
                    None => Ok(()),
                })
            }

            fn release_as_death(&mut self, why: &str) -> Result<(), LockError> {
                self.with_dependent_mut(|_, s| match s.take() {
                    Some(State::Clean(g)) => g.release_as_death(why),
                    Some(State::Recovering(r)) => r.release_as_death(why),
                    None => Ok(()),
                })
            }
        }
    };
}

type MutexState<'a> = Option<State<Guard<'a, ()>>>;

self_cell!(
    /// A held [`SharedMutex`] with the handle it borrows.
    pub(crate) struct HeldMutex {
        owner: Arc<SharedMutex<()>>,
        #[covariant]
        dependent: MutexState,
    }
    impl {Debug}
);
hold_state!(HeldMutex);

impl HeldMutex {
    /// The value's bytes in the mapping: address and length. The address
    /// stays valid while the handle (kept by this cell) lives.
    pub(crate) fn value_region(&mut self) -> (usize, usize) {
        self.with_dependent_mut(|_, s| {
            let bytes: &mut [u8] = match s {
                Some(State::Clean(g)) => g.bytes_mut(),
                Some(State::Recovering(r)) => r.bytes_mut(),
                None => &mut [],
            };
            (bytes.as_mut_ptr() as usize, bytes.len())
        })
    }
}

type PermitState<'a> = Option<State<PermitGuard<'a>>>;

self_cell!(
    /// A held permit of a [`SharedSemaphore`] with the handle it borrows.
    pub(crate) struct HeldPermit {
        owner: Arc<SharedSemaphore>,
        #[covariant]
        dependent: PermitState,
    }
    impl {Debug}
);
hold_state!(HeldPermit);

impl HeldPermit {
    /// The permit's slot (`None` once released).
    pub(crate) fn slot(&self) -> Option<usize> {
        match self.borrow_dependent() {
            Some(State::Clean(g)) => Some(g.slot()),
            Some(State::Recovering(r)) => Some(r.guard().slot()),
            None => None,
        }
    }
}
