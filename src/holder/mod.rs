//! Holder threads: the threads that take and release a lock on behalf of
//! an async task (feature `async`).
//!
//! A robust mutex belongs to the thread whose TID is in its lock word:
//! only that thread may unlock it, and the kernel releases it (marking the
//! owner dead) when that thread dies. A task hops between a runtime's
//! worker threads, so it cannot be that thread. A holder thread is: it
//! sleeps in the kernel for the task, holds the lock while the task's
//! guard lives (so the kernel still releases it if the process dies) and
//! releases it when the guard is dropped.
//!
//! Per file, a [`lane`](lane::Lane) queues the waiting tasks of this
//! process in user space and has at most one holder thread at a time: the
//! threads in use follow the locks in use, not the tasks. The threads come
//! from a pool: created lazily, reused, and ended after
//! [`IDLE_EXIT`] without work.
//!
//! Fork: a child has none of its parent's threads. The pool and the lanes
//! belong to one fork generation (`identity::fork_generation`): a child
//! starts with fresh ones and never touches the parent's (whose mutexes a
//! vanished thread may have held at the fork).

pub(crate) mod future;
pub(crate) mod lane;

use crate::identity;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The holder threads' name (`/proc/self/task/TID/comm`).
pub(crate) const THREAD_NAME: &str = "rm-holder";

/// How long an idle holder thread waits for work before it exits.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

/// A holder thread's stack: the lock paths and a logger's formatting
/// need little, and a process may have one thread per lock in use.
const STACK: usize = 256 * 1024;

/// Work for a holder thread: serve one lane until it has nothing to do.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The pool of one fork generation.
struct Pool {
    generation: u32,
    /// The idle threads' job channels (with each thread's number), last
    /// idle first.
    idle: Mutex<Vec<(usize, mpsc::Sender<Job>)>>,
    /// Numbers the threads.
    spawned: AtomicUsize,
    /// Threads alive (running a job or idle).
    alive: AtomicUsize,
    /// Lanes with a serving thread now (`wait_lanes_idle` waits for 0).
    serving: Gauge,
    /// Releases handed to holder threads and not done yet (the exit flush
    /// waits for 0).
    pending: Gauge,
}

/// A count that can be waited on until it is 0.
struct Gauge {
    count: AtomicUsize,
    /// Bumped each time the count reaches 0: what a waiter sleeps on.
    zeroed: AtomicU32,
}

impl Gauge {
    const fn new() -> Gauge {
        Gauge {
            count: AtomicUsize::new(0),
            zeroed: AtomicU32::new(0),
        }
    }

    fn up(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn down(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zeroed.fetch_add(1, Ordering::Release);
            // Shared, as the waits are (a timed wait is a shared one).
            crate::sys::futex_wake(&self.zeroed, i32::MAX, true);
        }
    }

    #[cfg(feature = "test-hooks")]
    fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until the count is 0; `false` if `deadline` passed first.
    fn wait_zero(&self, deadline: Option<&libc::timespec>) -> bool {
        loop {
            let w = self.zeroed.load(Ordering::Acquire);
            if self.count.load(Ordering::Acquire) == 0 {
                return true;
            }
            match crate::sys::futex_wait_shared(&self.zeroed, w, deadline) {
                Ok(crate::sys::Woke::TimedOut) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }
}

/// The pool of the latest fork generation that made one.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(std::ptr::null_mut());

/// This fork generation's pool, if it has made one.
fn current() -> Option<&'static Pool> {
    let p = POOL.load(Ordering::Acquire);
    // SAFETY: a non-null POOL was leaked by `Box::into_raw` in `pool` and
    // is never freed: it lives for the rest of the process.
    unsafe { p.as_ref() }.filter(|pool| pool.generation == identity::fork_generation())
}

/// This fork generation's pool.
fn pool() -> &'static Pool {
    if let Some(pool) = current() {
        return pool;
    }
    let generation = identity::fork_generation();
    let p = POOL.load(Ordering::Acquire);
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| crate::sys::at_exit(flush_at_exit));
    // None yet, or the parent's (a fork child): a fresh one. The parent's
    // is leaked: its mutex may be held by a thread the child lacks.
    let fresh = Box::into_raw(Box::new(Pool {
        generation,
        idle: Mutex::new(Vec::new()),
        spawned: AtomicUsize::new(0),
        alive: AtomicUsize::new(0),
        serving: Gauge::new(),
        pending: Gauge::new(),
    }));
    match POOL.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just leaked, never freed.
        Ok(_) => unsafe { &*fresh },
        Err(_) => {
            // Another thread installed one first: use that one.
            // SAFETY: `fresh` was never shared: ours to free.
            drop(unsafe { Box::from_raw(fresh) });
            pool()
        }
    }
}

/// Runs `job` on an idle holder thread, or on a new one.
///
/// # Errors
/// The OS error if no thread could be created.
pub(crate) fn run(job: Job) -> std::io::Result<()> {
    let pool = pool();
    let mut job = job;
    loop {
        let next = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some((_, tx)) = next else { break };
        match tx.send(job) {
            Ok(()) => return Ok(()),
            // That thread has just exited after its idle time: try another.
            Err(mpsc::SendError(j)) => job = j,
        }
    }
    pool.alive.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .stack_size(STACK)
        .spawn(move || worker(pool, job));
    if let Err(e) = spawned {
        pool.alive.fetch_sub(1, Ordering::Relaxed);
        return Err(e);
    }
    Ok(())
}

/// A holder thread: runs its first job, then waits for more while it is
/// listed idle; exits after [`IDLE_EXIT`] without one.
fn worker(pool: &'static Pool, first: Job) {
    let me = pool.spawned.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Job>();
    ME.set(Some((me, tx.clone())));
    let mut job = first;
    loop {
        job();
        // Unless the job listed this thread already (`going_idle`).
        if !LISTED.replace(false) {
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((me, tx.clone()));
        }
        job = match rx.recv_timeout(IDLE_EXIT) {
            Ok(j) => j,
            Err(_) => {
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = idle.iter().position(|(n, _)| *n == me) {
                    // Still listed: nobody will send. Leave.
                    idle.swap_remove(i);
                    pool.alive.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                drop(idle);
                // Taken from the list just now: its job is on the way.
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => {
                        pool.alive.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        };
    }
}

thread_local! {
    /// A holder thread's number and job channel.
    static ME: std::cell::Cell<Option<(usize, mpsc::Sender<Job>)>> =
        const { std::cell::Cell::new(None) };
    /// Whether the current job has listed its thread idle already.
    static LISTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The calling holder thread's job is about to end (a lane stops being
/// served, decided under its mutex): it is listed idle at once, so that a
/// ticket arriving right after finds it and no new thread is made. A job
/// sent meanwhile runs after the current one returns.
pub(crate) fn going_idle() {
    let Some((me, tx)) = ME.take() else { return };
    pool()
        .idle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((me, tx.clone()));
    ME.set(Some((me, tx)));
    LISTED.set(true);
}

/// A release is handed to a holder thread.
pub(crate) fn release_pending() {
    pool().pending.up();
}

/// A holder thread did a release it was handed.
pub(crate) fn release_done() {
    pool().pending.down();
}

/// How long the exit flush waits for the holder threads at most.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// At `exit()`: lets the holder threads finish the releases that dropped
/// guards handed them. Without it, a process that drops its last guard and
/// returns from `main` at once would end (`exit_group`) before its holder
/// unlocked, and the next locker would get OwnerDied for a clean release.
/// A guard still alive at exit is a death, and reported as one. Bounded:
/// a holder that does not answer within [`FLUSH_LIMIT`] is left to the
/// kernel.
extern "C" fn flush_at_exit() {
    let Some(pool) = current() else { return };
    let deadline = crate::sys::deadline_after(FLUSH_LIMIT);
    if !pool.pending.wait_zero(Some(&deadline)) {
        log::warn!("exit: holder threads did not finish their releases in time");
    }
}

/// A lane starts being served.
pub(crate) fn serving_started() {
    pool().serving.up();
}

/// A lane stops being served.
pub(crate) fn serving_ended() {
    pool().serving.down();
}

/// The unit tests' runtime: tokio's multi-thread one with 2 workers.
#[cfg(test)]
pub(crate) fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Threads alive and idle (test hooks).
#[cfg(feature = "test-hooks")]
pub(crate) fn threads() -> (usize, usize) {
    let pool = pool();
    let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).len();
    (pool.alive.load(Ordering::Relaxed), idle)
}

/// Lanes being served now (test hooks).
#[cfg(feature = "test-hooks")]
pub(crate) fn lanes_serving() -> usize {
    pool().serving.get()
}

/// Blocks until no lane is being served (test hooks).
#[cfg(feature = "test-hooks")]
pub(crate) fn wait_lanes_idle() {
    pool().serving.wait_zero(None);
}
