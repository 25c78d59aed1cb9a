//! A lane: one file's async waiters in this process, queued in user space,
//! and the one holder thread at a time that locks and unlocks for them.
//!
//! The state, under one std mutex (held for a few instructions only):
//! * a FIFO of tickets, one per waiting future, each with its `Waker`;
//! * outcomes delivered to a ticket and not yet taken by its future;
//! * `held`: slots (for a mutex: the lock) the serving thread holds for
//!   guards and for delivered outcomes;
//! * commands from guards, done in order by the serving thread: mark
//!   consistent, release (clean, or as a death);
//! * `serving`: whether a holder thread serves the lane.
//!
//! The serving thread loops (`serve`): it does the commands; if tickets
//! wait and a slot is free, it acquires through the kind's normal slow path
//! (stuck rule, FileChanged, OwnerDied, ...), in a wait the lane's bell can
//! cancel, and delivers the outcome to the first ticket, waking it; if no
//! ticket is left to take it, it lets the lock go at once (released clean,
//! or, after EOWNERDEAD, released as a death again, so that the next locker
//! still gets OwnerDied). With nothing to do it sleeps on the bell; with no
//! ticket and nothing held it stops serving and its thread goes back to the
//! pool.
//!
//! The bell (a [`CancelToken`]) rings for a command, when the last ticket
//! leaves (so that a kernel wait nobody wants any more ends), and for a new
//! ticket while the serving thread sleeps with a slot free (a semaphore
//! lane holding some permits; a mutex lane with a free lock never sleeps
//! with a ticket, and one holding the lock needs its release first). Starting to
//! serve is decided under the state mutex, so a ticket is never left
//! without a serving thread.

use crate::cancel::CancelToken;
use crate::error::LockError;
use crate::identity;
use crate::owner::Records;
use crate::raw::{Fail, Got, Name, RawMutex, take_last_dead};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::task::Waker;

/// An acquisition's outcome: the slot taken (0 for a mutex) and how.
pub(crate) type Outcome = Result<(usize, Got), Fail>;

/// How the serving thread releases a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// A normal unlock (of an inconsistent mutex: it becomes not
    /// recoverable, as a sync `Recovery` dropped without marking).
    Clean,
    /// As a death: the next locker gets OwnerDied. The guard was dropped
    /// while its task panicked.
    Panicked,
    /// As a death again: the lock was taken with EOWNERDEAD for a future
    /// dropped before it saw the outcome; the next locker gets OwnerDied.
    Unseen,
}

impl How {
    /// How to let go of a lock taken as `got` that nobody will use.
    fn unused(got: &Got) -> How {
        match got {
            Got::Clean => How::Clean,
            Got::OwnerDied(_) => How::Unseen,
        }
    }
}

/// What a holder thread needs to lock and unlock one file. Built by the
/// kind from its handle; it owns what it uses (the file's mapping, its
/// path), since the handle may be dropped before the thread is done.
pub(crate) trait Target: Send + 'static {
    /// The lane of the file.
    fn lane(&self) -> &Lane;

    /// Blocks until a slot is acquired, `bell` rings
    /// ([`LockError::Cancelled`]) or the acquisition fails.
    fn acquire(&self, bell: &CancelToken) -> Outcome;

    /// Slot `slot`'s raw lock.
    fn raw(&self, slot: usize) -> RawMutex<'_>;

    /// Slot `slot`'s name in the log.
    fn name(&self, slot: usize) -> Name<'_>;

    /// How many slots the calling thread may hold at once (1 for a mutex).
    fn capacity(&self) -> usize;
}

/// Releases `slot`, which the calling thread holds, as `how` says. `dead`:
/// the records its acquisition with EOWNERDEAD replaced (for
/// [`How::Unseen`]). An error was logged where it was found.
///
/// # Safety
/// The calling thread holds `slot`, taken through `target.acquire`; for
/// [`How::Unseen`], with EOWNERDEAD, and nobody has seen it since.
unsafe fn release(target: &dyn Target, slot: usize, how: How, dead: Option<Records>) {
    let raw = target.raw(slot);
    let name = || target.name(slot);
    let _ = match how {
        // SAFETY: this thread holds it (the caller's contract).
        How::Clean => unsafe { raw.release(name) },
        // SAFETY: as above.
        How::Panicked => unsafe {
            raw.release_as_death(name(), "the async task panicked holding the lock")
        },
        // SAFETY: as above, taken with EOWNERDEAD and not seen by anyone
        // (so neither marked consistent nor labelled).
        How::Unseen => unsafe { raw.pass_on_death(dead, name()) },
    };
}

enum Command {
    Consistent(usize),
    Release(usize, How),
}

struct Ticket {
    id: u64,
    waker: Waker,
}

#[derive(Default)]
struct State {
    serving: bool,
    next_id: u64,
    queue: VecDeque<Ticket>,
    done: Vec<(u64, Outcome)>,
    held: usize,
    commands: VecDeque<Command>,
    /// The serving thread sleeps with a slot free and no ticket: the next
    /// ticket rings the bell.
    wants_tickets: bool,
    /// The serving thread is in `Target::acquire`.
    acquiring: bool,
    /// ... and the last ticket left meanwhile: counted as a pending
    /// release until the acquisition's end is settled.
    abandoned: bool,
}

/// One file's async waiters in this process, and its serving thread.
pub(crate) struct Lane {
    /// The fork generation the lane belongs to.
    generation: u32,
    state: Mutex<State>,
    bell: CancelToken,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

/// What [`Lane::enter`] asks of the caller.
#[derive(Debug)]
pub(crate) enum Entered {
    /// Queued behind a serving thread.
    Queued(u64),
    /// Queued, and the lane needs a serving thread: start one with
    /// [`start`] (or undo with [`Lane::abandon`]).
    Serve(u64),
}

impl Lane {
    fn new(generation: u32) -> Lane {
        Lane {
            generation,
            state: Mutex::new(State::default()),
            bell: CancelToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a waiter woken through `waker`.
    pub(crate) fn enter(&self, waker: &Waker) -> Entered {
        let waker = waker.clone(); // the executor's code: not under the mutex
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_back(Ticket { id, waker });
        if st.serving {
            if std::mem::take(&mut st.wants_tickets) {
                drop(st);
                self.bell.cancel();
            }
            return Entered::Queued(id);
        }
        st.serving = true;
        super::serving_started();
        Entered::Serve(id)
    }

    /// Undoes [`Self::enter`]'s `Serve` when no thread could be started
    /// (`e`): ticket `id` is withdrawn, and every ticket queued meanwhile
    /// behind it (seeing the lane served) gets the same error, instead of
    /// waiting for a thread that will not come.
    pub(crate) fn abandon(&self, id: u64, e: &std::io::Error) {
        let mut st = self.lock();
        let queued: Vec<Ticket> = st.queue.drain(..).filter(|t| t.id != id).collect();
        for t in &queued {
            let e = std::io::Error::new(e.kind(), format!("no holder thread: {e}"));
            st.done.push((t.id, Err(Fail::Lock(LockError::Io(e)))));
        }
        st.serving = false;
        drop(st);
        super::serving_ended();
        wake_all(queued.into_iter().map(|t| t.waker));
    }

    /// The outcome for ticket `id`, if delivered; else `waker` is the one
    /// to wake.
    pub(crate) fn poll(&self, id: u64, waker: &Waker) -> Option<Outcome> {
        let mut st = self.lock();
        if let Some(i) = st.done.iter().position(|(d, _)| *d == id) {
            return Some(st.done.swap_remove(i).1);
        }
        let mut old = None;
        if let Some(t) = st.queue.iter_mut().find(|t| t.id == id) {
            if !t.waker.will_wake(waker) {
                old = Some(std::mem::replace(&mut t.waker, waker.clone()));
            }
        }
        drop(st);
        drop(old); // a waker's drop is the executor's code: not under the mutex
        None
    }

    /// The future of ticket `id` is gone (dropped before it took its
    /// outcome): its place in the queue is given up, and a lock delivered
    /// to it is let go (a death passed on as a death).
    pub(crate) fn leave(&self, id: u64) {
        let mut st = self.lock();
        if let Some(i) = st.queue.iter().position(|t| t.id == id) {
            let gone = st.queue.remove(i);
            let last = st.queue.is_empty();
            if last && st.acquiring && !st.abandoned {
                // The serving thread may take the lock for nobody now and
                // let it go: an exit must wait for that too (the exit
                // flush), or it would end the process holding it.
                st.abandoned = true;
                super::release_pending();
            }
            drop(st);
            drop(gone); // its waker: not under the mutex
            if last {
                // End a kernel wait that nobody wants any more.
                self.bell.cancel();
            }
            return;
        }
        if let Some(i) = st.done.iter().position(|(d, _)| *d == id) {
            let (_, outcome) = st.done.swap_remove(i);
            if let Ok((slot, got)) = outcome {
                let how = How::unused(&got);
                super::release_pending();
                st.commands.push_back(Command::Release(slot, how));
                drop(st);
                self.bell.cancel();
            }
        }
    }

    /// A guard's release of `slot`, done by the serving thread.
    pub(crate) fn release(&self, slot: usize, how: How) {
        super::release_pending();
        self.command(Command::Release(slot, how));
    }

    /// A recovery's `mark_consistent` of `slot`, done by the serving
    /// thread before any later release.
    pub(crate) fn consistent(&self, slot: usize) {
        self.command(Command::Consistent(slot));
    }

    fn command(&self, c: Command) {
        self.lock().commands.push_back(c);
        self.bell.cancel();
    }

    /// Whether the lane belongs to this fork generation (else it is a
    /// parent's, whose serving thread this process lacks).
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// The serving thread's acquisition ended without an outcome to
    /// deliver. Returns whether the last ticket left during it (then an
    /// exit is waiting for this: `release_done` once settled).
    fn acquired(&self) -> bool {
        let mut st = self.lock();
        st.acquiring = false;
        std::mem::take(&mut st.abandoned)
    }

    /// Sleeps until the bell rings (at once if it rang since its reset).
    fn sleep(&self) {
        crate::sys::futex_wait_private(self.bell.word(), 0);
    }
}

/// Hands a lane to a pool thread, which serves it through `target` until
/// it has nothing to do.
///
/// # Errors
/// The OS error if no holder thread could be created.
pub(crate) fn start(target: Box<dyn Target>) -> std::io::Result<()> {
    super::run(Box::new(move || serve(&*target)))
}

/// Ends the lane's service if the serving loop unwinds (a bug): every
/// waiter is told, instead of waiting for ever; the thread dies, so the
/// kernel releases what it held as a death.
struct Unwinding<'a>(&'a Lane);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut st = self.0.lock();
        let waiting: Vec<Ticket> = st.queue.drain(..).collect();
        for t in &waiting {
            let e = std::io::Error::other("robust-mutex: the lock's holder thread panicked");
            st.done.push((t.id, Err(Fail::Lock(LockError::Io(e)))));
        }
        st.serving = false;
        drop(st);
        super::serving_ended();
        wake_all(waiting.into_iter().map(|t| t.waker));
    }
}

/// The serving loop (module docs).
fn serve(target: &dyn Target) {
    let lane = target.lane();
    let _unwinding = Unwinding(lane);
    // The records each slot held with EOWNERDEAD replaced, until it is
    // marked consistent or released.
    let mut dead: Vec<(usize, Option<Records>)> = Vec::new();
    fn take_dead(slot: usize, dead: &mut Vec<(usize, Option<Records>)>) -> Option<Records> {
        let i = dead.iter().position(|(s, _)| *s == slot)?;
        dead.swap_remove(i).1
    }
    loop {
        lane.bell.reset();
        let commands = std::mem::take(&mut lane.lock().commands);
        for c in commands {
            match c {
                Command::Consistent(slot) => {
                    take_dead(slot, &mut dead);
                    // SAFETY: a Consistent command comes from the Recovery
                    // of a slot this thread took with EOWNERDEAD and holds
                    // (its release, if any, is a later command).
                    unsafe { target.raw(slot).mark_consistent(target.name(slot)) };
                }
                Command::Release(slot, how) => {
                    let d = take_dead(slot, &mut dead);
                    // A Release comes once per slot this thread delivered
                    // and holds: from its guard, or from its future dropped
                    // before taking it (Unseen: with EOWNERDEAD, untouched).
                    // SAFETY: so this thread holds `slot`, as `release` asks.
                    unsafe { release(target, slot, how, d) };
                    lane.lock().held -= 1;
                    super::release_done();
                }
            }
        }
        let mut st = lane.lock();
        st.wants_tickets = false;
        if !st.commands.is_empty() {
            continue;
        }
        if st.queue.is_empty() || st.held >= target.capacity() {
            if st.queue.is_empty() && st.held == 0 {
                super::going_idle();
                st.serving = false;
                drop(st);
                super::serving_ended();
                return;
            }
            // Asleep with a slot free: a new ticket must ring.
            st.wants_tickets = st.queue.is_empty();
            drop(st);
            lane.sleep();
            continue;
        }
        st.acquiring = true;
        drop(st);
        let outcome = target.acquire(&lane.bell);
        if let Ok((slot, Got::OwnerDied(_))) = &outcome {
            dead.push((*slot, take_last_dead()));
        }
        let (unused, abandoned) = match outcome {
            // The bell rang: look again.
            Err(Fail::Lock(LockError::Cancelled)) => (None, lane.acquired()),
            // Every usable slot is held here (a semaphore whose other
            // permits are lost): wait for a release.
            Err(Fail::Lock(LockError::Deadlock)) => {
                let abandoned = lane.acquired();
                lane.sleep();
                (None, abandoned)
            }
            outcome => deliver(lane, outcome),
        };
        if let Some((slot, how)) = unused {
            let d = take_dead(slot, &mut dead);
            // SAFETY: `acquire` just gave this thread `slot` and no ticket
            // took it (Unseen: with EOWNERDEAD, untouched).
            unsafe { release(target, slot, how, d) };
        }
        if abandoned {
            super::release_done();
        }
    }
}

/// Gives `outcome` to the first ticket (an error about the lock itself to
/// every ticket). Returns the slot taken for nobody, to let go, if no
/// ticket is left, and whether an exit waits for that ([`Lane::acquired`]).
fn deliver(lane: &Lane, outcome: Outcome) -> (Option<(usize, How)>, bool) {
    let mut st = lane.lock();
    st.acquiring = false;
    let abandoned = std::mem::take(&mut st.abandoned);
    let mut woken = Vec::new();
    if let Err(e) = &outcome {
        // Stuck, changed or not recoverable: news for every waiter (each
        // then follows a reset or reports it), not only the first.
        while st.queue.len() > 1 {
            let Some(copy) = copy_for_all(e) else { break };
            let t = st.queue.pop_back().expect("len > 1");
            st.done.push((t.id, Err(copy)));
            woken.push(t.waker);
        }
    }
    let unused = match st.queue.pop_front() {
        Some(t) => {
            if outcome.is_ok() {
                st.held += 1;
            }
            st.done.push((t.id, outcome));
            woken.push(t.waker);
            None
        }
        None => outcome.ok().map(|(slot, got)| (slot, How::unused(&got))),
    };
    drop(st);
    wake_all(woken);
    (unused, abandoned)
}

/// Wakes each task, outside the lane's mutex. A waker is the executor's
/// code: one that panics (or polls the task inline, which then panics) is
/// logged and does not take the holder thread down with the locks it holds.
fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    for w in wakers {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_err() {
            log::error!("robust-mutex: a task's waker panicked; the task was told nothing more");
        }
    }
}

/// A copy of an error that concerns the lock rather than one waiter.
fn copy_for_all(e: &Fail) -> Option<Fail> {
    Some(match e {
        Fail::NotRecoverable => Fail::NotRecoverable,
        Fail::Lock(LockError::NotRecoverable) => Fail::Lock(LockError::NotRecoverable),
        Fail::Lock(LockError::Stuck {
            tid,
            path,
            permit,
            remedy,
        }) => Fail::Lock(LockError::Stuck {
            tid: *tid,
            path: path.clone(),
            permit: *permit,
            remedy,
        }),
        Fail::Lock(LockError::FileChanged { path }) => {
            Fail::Lock(LockError::FileChanged { path: path.clone() })
        }
        Fail::Lock(_) => return None,
    })
}

/// A mapping's lane, made at its first use, one per fork generation.
#[derive(Debug, Default)]
pub(crate) struct LaneSlot(AtomicPtr<Lane>);

impl LaneSlot {
    /// This fork generation's lane.
    pub(crate) fn get(&self) -> &Lane {
        identity::register_fork_handler();
        let generation = identity::fork_generation();
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` below
        // and is freed only by `Drop` (which has `&mut self`).
        if let Some(lane) = unsafe { p.as_ref() } {
            if lane.generation == generation {
                return lane;
            }
        }
        // None yet, or a parent's (a fork child): a fresh one. A parent's is
        // leaked: its mutex may be held by a thread this process lacks.
        let fresh = Box::into_raw(Box::new(Lane::new(generation)));
        match self
            .0
            .compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: just installed; freed only by `Drop`.
            Ok(_) => unsafe { &*fresh },
            Err(_) => {
                // SAFETY: `fresh` was never shared: ours to free.
                drop(unsafe { Box::from_raw(fresh) });
                self.get()
            }
        }
    }
}

impl Drop for LaneSlot {
    fn drop(&mut self) {
        let p = *self.0.get_mut();
        if p.is_null() {
            return;
        }
        // SAFETY: installed by `get` from `Box::into_raw`, and `&mut self`
        // means no `&Lane` from `get` is alive (each borrows the slot).
        let lane = unsafe { Box::from_raw(p) };
        if lane.generation != identity::fork_generation() {
            // A parent's, inherited through fork: leave it untouched.
            std::mem::forget(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that queued behind one whose lane could start no holder
    /// thread is given that error, not left waiting for a thread.
    #[test]
    fn a_failed_start_answers_every_ticket_queued_behind_it() {
        let lane = Lane::new(identity::fork_generation());
        let w = Waker::noop();
        let Entered::Serve(first) = lane.enter(w) else {
            panic!("the first ticket starts the service")
        };
        let Entered::Queued(second) = lane.enter(w) else {
            panic!("the lane looks served")
        };
        lane.abandon(first, &std::io::Error::from(std::io::ErrorKind::WouldBlock));
        match lane.poll(second, w) {
            Some(Err(Fail::Lock(LockError::Io(e)))) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock)
            }
            other => panic!("the queued ticket must get the error, got {other:?}"),
        }
        assert!(!lane.lock().serving);
    }
}
