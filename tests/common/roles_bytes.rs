//! Child roles for the library API the Python binding wraps (issue 15;
//! dispatched from `roles.rs`): byte values (`open_bytes`), releasing a
//! lock as a death (`release_as_death`) and waits that a signal ends
//! (`CancelToken::ending_on_signals`).
//!
//! The kind roles lock the kind named by [`KIND_ENV`] (see [`Kind`]):
//! `mutex` (`SharedMutex<u64>`), `sem` (a semaphore of one permit) or
//! `bare` (`BareMutex`).
//!
//! * `bytes_rw`: opens as [`OPEN_ENV`] says (`bytes:<len>`:
//!   `SharedMutex::open_bytes`; `typed`: `SharedMutex<[u64; 2]>`), locks
//!   (recovering if need be), says `was=<hex of the value's bytes>`;
//!   writes the bytes of the hex line the parent sends, unlocks, says
//!   `wrote`.
//! * `bytes_hold`: `open_bytes(16)`: locks, writes [`HALF_DONE`], says
//!   `locked`, waits to be killed.
//! * `kind_hold`: locks (recovering if need be), says `locked`; on a line
//!   from the parent releases, says `released`, waits to be killed.
//! * `kind_release_as_death`: locks (blocking), says `took=clean` or
//!   `took=died`; on a line from the parent gives up the guard (or the
//!   recovery) with `release_as_death`, says `released=<tid>` (or
//!   `released=error <e>`), waits to be killed: the process lives on.
//! * `kind_interrupted`: waits in `lock_cancellable` (`acquire_cancellable`)
//!   on a lock another process holds, on a thread of its own, with a
//!   SIGUSR1 handler; [`TOKEN_ENV`] says which token and handler:
//!   - `signals`: `CancelToken::ending_on_signals`, handler without
//!     `SA_RESTART`; `signals-timed` the same, with a timeout (twice
//!     [`WATCHDOG`]). Sends SIGUSR1 to the waiter once it sleeps in the
//!     futex (again if the signal came just outside the sleep, which
//!     nothing can end); says `result=<outcome>`, `missed=<signals sent
//!     again>`, `busy=<try_lock's outcome>`; then waits again and says
//!     `then=<outcome>` once it has the lock.
//!   - `plain` (`CancelToken::new`, no `SA_RESTART`) and `restart`
//!     (`CancelToken::ending_on_signals`, handler with `SA_RESTART`): three
//!     times, sends SIGUSR1 once the waiter sleeps in the futex, then sees
//!     the handler run and the waiter sleep in the futex again, the wait not
//!     ended; then cancels the token; says `result=<outcome>`,
//!     `still-waiting=<signals the wait outlived>` (3) and
//!     `busy=<try_lock's outcome>`.
//!
//!   An outcome is `clean`, `died` or `error <LockError:?>`. Every poll,
//!   and the resending, is bounded by [`WATCHDOG`]: past it the child says
//!   `result=hung: <what>` and exits, a bound that only catches a real hang.

use super::{hang, listen, say};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use robust_mutex::{
    Acquired, BareMutex, CancelToken, LockError, LockGuard, LockState, SharedMutex,
    SharedSemaphore, Status,
};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The kind a kind role locks: `mutex`, `sem` or `bare`.
pub const KIND_ENV: &str = "RM_KIND";
/// How `bytes_rw` opens its file: `bytes:<len>` or `typed`.
pub const OPEN_ENV: &str = "RM_BYTES_OPEN";
/// `kind_interrupted`'s token and handler: `signals`, `plain` or `restart`.
pub const TOKEN_ENV: &str = "RM_TOKEN";
/// What `bytes_hold` leaves in its 16 bytes when it is killed.
pub const HALF_DONE: &[u8; 16] = b"half-done update";
/// The bound of every poll in `kind_interrupted`: only a real hang takes it.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// The three kinds whose guards have `release_as_death` and whose waits
/// take a [`CancelToken`], behind one interface for the tests.
pub trait Kind: Sized + Sync {
    /// The kind's guard.
    type Guard<'a>: LockGuard
    where
        Self: 'a;
    /// Its name in [`KIND_ENV`].
    const NAME: &'static str;
    /// Opens (creating) the lock at `path`; a semaphore has one permit.
    fn open_at(path: &Path) -> Self;
    /// Blocks until the lock is taken.
    fn lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError>;
    /// `try_lock` (`try_acquire`).
    fn try_lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError>;
    /// `lock_cancellable` (`acquire_cancellable`).
    fn lock_cancellable(
        &self,
        token: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<Self::Guard<'_>>, LockError>;
    /// Gives up what a lock call handed out as a death: the guard's or the
    /// recovery's `release_as_death`.
    fn release_as_death(got: Acquired<Self::Guard<'_>>, why: &str) -> Result<(), LockError>;
    /// The lock's state, holder and counters, read without locking.
    fn snapshot(&self) -> Snapshot;
    /// The state: for a semaphore, its one permit's.
    fn state(&self) -> LockState {
        self.snapshot().state
    }
    /// The holder's (or dead holder's) pid, where the kind knows it.
    fn holder_pid(&self) -> Option<u32> {
        self.snapshot().holder_pid
    }
    /// The file's count of owner deaths reported; `None` for a bare file,
    /// which has no counters.
    fn owner_deaths(&self) -> Option<u64> {
        self.snapshot().owner_deaths
    }
}

/// What [`Kind::snapshot`] reads.
pub struct Snapshot {
    /// The state: for a semaphore, its one permit's.
    pub state: LockState,
    /// The holder's (or dead holder's) pid, where the kind knows it.
    pub holder_pid: Option<u32>,
    /// The file's count of owner deaths reported, if it keeps counters.
    pub owner_deaths: Option<u64>,
}

impl Snapshot {
    /// From a mutex's `status()`; `counters` if the file keeps them.
    fn of(s: Status, counters: bool) -> Snapshot {
        Snapshot {
            state: s.state,
            holder_pid: s.owner.map(|o| o.pid),
            owner_deaths: counters.then_some(s.counters.owner_deaths),
        }
    }
}

/// `release_as_death` of a guard or of a recovery: inherent methods of
/// each kind's types, so written once here as a macro.
macro_rules! release_as_death {
    ($got:expr, $why:expr) => {
        match $got {
            Acquired::Clean(g) => g.release_as_death($why),
            Acquired::OwnerDied(r) => r.release_as_death($why),
        }
    };
}

impl Kind for SharedMutex<u64> {
    type Guard<'a> = robust_mutex::Guard<'a, u64>;
    const NAME: &'static str = "mutex";
    fn open_at(path: &Path) -> Self {
        SharedMutex::open(path).unwrap()
    }
    fn lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        SharedMutex::lock(self)
    }
    fn try_lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        SharedMutex::try_lock(self)
    }
    fn lock_cancellable(
        &self,
        token: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        SharedMutex::lock_cancellable(self, token, timeout)
    }
    fn release_as_death(got: Acquired<Self::Guard<'_>>, why: &str) -> Result<(), LockError> {
        release_as_death!(got, why)
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::of(self.status(), true)
    }
}

impl Kind for SharedSemaphore {
    type Guard<'a> = robust_mutex::PermitGuard<'a>;
    const NAME: &'static str = "sem";
    fn open_at(path: &Path) -> Self {
        SharedSemaphore::open(path, 1).unwrap()
    }
    fn lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        self.acquire()
    }
    fn try_lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        self.try_acquire()
    }
    fn lock_cancellable(
        &self,
        token: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        self.acquire_cancellable(token, timeout)
    }
    fn release_as_death(got: Acquired<Self::Guard<'_>>, why: &str) -> Result<(), LockError> {
        release_as_death!(got, why)
    }
    fn snapshot(&self) -> Snapshot {
        let s = self.status();
        Snapshot {
            state: s.permits[0].state,
            holder_pid: s.permits[0].owner.as_ref().map(|o| o.pid),
            owner_deaths: Some(s.counters.owner_deaths),
        }
    }
}

impl Kind for BareMutex {
    type Guard<'a> = robust_mutex::BareGuard<'a>;
    const NAME: &'static str = "bare";
    fn open_at(path: &Path) -> Self {
        BareMutex::open(path).unwrap()
    }
    fn lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        BareMutex::lock(self)
    }
    fn try_lock(&self) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        BareMutex::try_lock(self)
    }
    fn lock_cancellable(
        &self,
        token: &CancelToken,
        timeout: Option<Duration>,
    ) -> Result<Acquired<Self::Guard<'_>>, LockError> {
        BareMutex::lock_cancellable(self, token, timeout)
    }
    fn release_as_death(got: Acquired<Self::Guard<'_>>, why: &str) -> Result<(), LockError> {
        release_as_death!(got, why)
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::of(self.status(), false)
    }
}

/// A lock call's outcome as the roles say it: `clean`, `died` or
/// `error <LockError:?>`.
pub fn outcome<G: LockGuard>(r: &Result<Acquired<G>, LockError>) -> String {
    match r {
        Ok(Acquired::Clean(_)) => "clean".into(),
        Ok(Acquired::OwnerDied(_)) => "died".into(),
        Err(e) => format!("error {e:?}"),
    }
}

/// The bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a lowercase hex string.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Plays `role` if it is one of this file's; returns false otherwise.
pub fn play(role: &str, path: &Path) -> bool {
    match role {
        "bytes_rw" => bytes_rw(path),
        "bytes_hold" => {
            let m = SharedMutex::open_bytes(path, HALF_DONE.len()).unwrap();
            let mut g = m.lock().unwrap().recover_with(|()| {});
            g.bytes_mut().copy_from_slice(HALF_DONE);
            say("locked");
            hang();
        }
        "kind_hold" | "kind_release_as_death" | "kind_interrupted" => {
            match std::env::var(KIND_ENV).unwrap().as_str() {
                "mutex" => play_kind::<SharedMutex<u64>>(role, path),
                "sem" => play_kind::<SharedSemaphore>(role, path),
                "bare" => play_kind::<BareMutex>(role, path),
                other => panic!("{KIND_ENV}={other}: not a kind"),
            }
        }
        _ => return false,
    }
    true
}

fn bytes_rw(path: &Path) {
    let open = std::env::var(OPEN_ENV).unwrap();
    let write = |bytes: &mut [u8]| {
        say(format!("was={}", hex(bytes)));
        let new = unhex(&listen());
        bytes.copy_from_slice(&new);
    };
    if open == "typed" {
        let m = SharedMutex::<[u64; 2]>::open(path).unwrap();
        let mut g = m.lock_or_recover(|_| {}).unwrap();
        write(bytemuck::bytes_of_mut(&mut *g));
    } else {
        let len = open.strip_prefix("bytes:").unwrap().parse().unwrap();
        let m = SharedMutex::open_bytes(path, len).unwrap();
        let mut g = m.lock_or_recover(|()| {}).unwrap();
        write(g.bytes_mut());
    }
    say("wrote");
}

fn play_kind<K: Kind>(role: &str, path: &Path) {
    let k = K::open_at(path);
    match role {
        "kind_hold" => {
            let g = k.lock().unwrap().recover_with(|_| {});
            say("locked");
            listen();
            drop(g);
            say("released");
            hang();
        }
        "kind_release_as_death" => {
            let got = k.lock().unwrap();
            say(format!(
                "took={}",
                if got.owner_died() { "died" } else { "clean" }
            ));
            listen();
            match K::release_as_death(got, "the test's holder gives up") {
                Ok(()) => say(format!("released={}", nix::unistd::gettid())),
                Err(e) => say(format!("released=error {e:?}")),
            }
            hang();
        }
        _ => interrupted(&k),
    }
}

/// How many times `kind_interrupted`'s SIGUSR1 handler ran.
static HANDLED: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Polls `done` until it holds; past [`WATCHDOG`] says `hung=<what>` and
/// exits (a scoped waiter thread could not be joined).
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > WATCHDOG {
            hung(what);
        }
        std::thread::yield_now();
    }
}

/// Says `result=hung: <what>` and exits: the waiter thread may never end.
fn hung(what: &str) -> ! {
    say(format!("result=hung: {what}"));
    std::process::exit(3);
}

/// Whether thread `tid` of this process sleeps in the kernel in
/// `futex_waitv`, where every cancellable wait sleeps: its system call is
/// `futex_waitv` (a std channel's or mutex's wait is `futex`; a thread
/// that runs shows `running`), and its wait channel a futex function
/// (or `0` where the kernel hides wait channels).
fn sleeps_in_futex_waitv(tid: nix::unistd::Pid) -> bool {
    let task = format!("/proc/self/task/{tid}");
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    let syscall = std::fs::read_to_string(format!("{task}/syscall")).unwrap_or_default();
    (wchan.starts_with("futex") || wchan == "0")
        && syscall.split(' ').next() == Some(&libc::SYS_futex_waitv.to_string())
}

fn interrupted<K: Kind>(k: &K) {
    let mode = std::env::var(TOKEN_ENV).unwrap();
    let (token, flags) = match mode.as_str() {
        "signals" | "signals-timed" => (CancelToken::ending_on_signals(), SaFlags::empty()),
        "plain" => (CancelToken::new(), SaFlags::empty()),
        "restart" => (CancelToken::ending_on_signals(), SaFlags::SA_RESTART),
        other => panic!("{TOKEN_ENV}={other}: not a mode"),
    };
    let ends_on_signals = mode.starts_with("signals");
    // A timeout that only a hang reaches: the signal must still end the
    // wait with Interrupted, not TimedOut.
    let timeout = (mode == "signals-timed").then_some(2 * WATCHDOG);
    let sa = SigAction::new(SigHandler::Handler(count_signal), flags, SigSet::empty());
    // SAFETY: the handler only adds to an atomic (async-signal-safe); this
    // child process has no other use for SIGUSR1.
    unsafe { nix::sys::signal::sigaction(Signal::SIGUSR1, &sa) }.unwrap();
    let (ids_tx, ids) = std::sync::mpsc::channel();
    let (results_tx, results) = std::sync::mpsc::channel();
    let (again_tx, again) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let token = &token;
        s.spawn(move || {
            // Through libc: nix's `pthread` feature is not enabled here.
            // SAFETY: pthread_self has no preconditions.
            let thread = unsafe { libc::pthread_self() };
            ids_tx.send((nix::unistd::gettid(), thread)).unwrap();
            let first = k.lock_cancellable(token, timeout);
            let was_interrupted = matches!(first, Err(LockError::Interrupted));
            results_tx.send(outcome(&first)).unwrap();
            drop(first);
            // As a binding does after running the signal handlers' work:
            // wait again.
            if was_interrupted && again.recv().is_ok() {
                results_tx
                    .send(outcome(&k.lock_cancellable(token, timeout)))
                    .unwrap();
            }
        });
        let again_tx = again_tx;
        let (tid, thread) = ids.recv().unwrap();
        let sleeps = || sleeps_in_futex_waitv(tid);
        let signal = || {
            // SAFETY: `thread` is the waiter's, alive until the scope ends
            // (after the last signal); SIGUSR1's handler is installed.
            // Through libc: nix's `pthread` feature is not enabled here.
            assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
        };
        let (result, how) = if ends_on_signals {
            let mut sent = 0;
            let start = Instant::now();
            loop {
                if start.elapsed() > WATCHDOG {
                    hung("the wait's end: no signal ended it");
                }
                until("a sleep", sleeps);
                signal();
                sent += 1;
                let mut got = None;
                // Either the wait ended, or the handler ran and the waiter
                // sleeps again: the signal came just outside its sleep.
                until("the wait's end", || {
                    got = results.try_recv().ok();
                    got.is_some()
                        || (HANDLED.load(Ordering::SeqCst) == sent && sleeps() && {
                            got = results.try_recv().ok();
                            true
                        })
                });
                if let Some(r) = got {
                    break (r, format!("missed={}", sent - 1));
                }
            }
        } else {
            let mut ended = None;
            let mut rounds = 0;
            while rounds < 3 && ended.is_none() {
                until("a sleep", sleeps);
                signal();
                rounds += 1;
                until("the handler", || HANDLED.load(Ordering::SeqCst) == rounds);
                until("the next sleep", || {
                    ended = results.try_recv().ok();
                    ended.is_some() || sleeps()
                });
            }
            let outlived = if ended.is_some() { rounds - 1 } else { rounds };
            let r = ended.unwrap_or_else(|| {
                token.cancel();
                results.recv().unwrap()
            });
            (r, format!("still-waiting={outlived}"))
        };
        say(format!("result={result}"));
        say(how);
        say(format!("busy={}", outcome(&k.try_lock())));
        if ends_on_signals {
            again_tx.send(()).unwrap();
            say(format!("then={}", results.recv().unwrap()));
        }
        drop(again_tx);
    });
}
