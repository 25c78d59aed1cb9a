//! The worker process: take the lock ([`enter`]: check the state, record the
//! entry or the report, repair), make an update, leave; over and over until
//! killed.

use super::protocol::{
    Live, MAX_SLOTS, NAME_ANY, NAME_OR_NONE, NAME_STRICT, Planned, Rng, Torture, check_consistent,
    classify, dawdle, hi, leave, live, lo, own_obituary, panic_point, put, record_clean,
    record_recovery, state_hash, update,
};
use robust_mutex::{Acquired, Guard, LockError, SharedMutex};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A lock wait this long is a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// Where a worker finds the mutex file.
pub const ENV_PATH: &str = "RM_TORTURE_PATH";
/// A worker's identity: `inc slot seed supervisor-pid panic-one-in
/// fork-one-in`; it
/// may use incarnations `inc .. inc + LIVES`.
pub const ENV_WORKER: &str = "RM_TORTURE_WORKER";

/// Worker exit codes.
pub(super) const EXIT_VIOLATION: i32 = 2;
pub(super) const EXIT_HANG: i32 = 3;
const EXIT_SETUP: i32 = 4;

/// Why a locker gave up.
#[derive(Debug)]
pub enum Failure {
    /// An invariant does not hold.
    Violation(String),
    /// A lock wait exceeded [`HANG`].
    Hang(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Violation(s) => write!(f, "VIOLATION: {s}"),
            Failure::Hang(s) => write!(f, "HANG: {s}"),
        }
    }
}

/// Takes the lock as incarnation `inc`, checks the state, records the entry
/// (and the report, after an owner death), sets the marker and repairs.
/// Returns the guard and whether the previous owner died. `rng` paces the
/// steps with random pauses (workers), or not at all (the final check).
pub fn enter<'m>(
    m: &'m SharedMutex<Torture>,
    inc: u32,
    pid: u32,
    rng: Option<&mut Rng>,
) -> Result<(Guard<'m, Torture>, bool), Failure> {
    let mut st = Live(rng);
    let acquired = match m.lock_timeout(HANG) {
        Ok(a) => a,
        Err(LockError::TimedOut) => {
            return Err(Failure::Hang(format!("no lock within {HANG:?}")));
        }
        Err(e) => return Err(Failure::Violation(format!("lock failed: {e}"))),
    };
    match acquired {
        Acquired::Clean(mut g) => {
            if lo(g.obit) != lo(g.obit_done) {
                return Err(Failure::Violation(format!(
                    "a Clean lock, but incarnation {} died holding (obituary {}) and \
                     nobody was told: a missed report",
                    hi(g.obit),
                    lo(g.obit)
                )));
            }
            if g.holder != 0 || g.intent != 0 {
                return Err(Failure::Violation(format!(
                    "a Clean lock found the critical section marked as held by \
                     incarnation {} (update {:#x} under way): mutual exclusion \
                     failed, or an owner death went unreported",
                    hi(g.holder),
                    g.intent
                )));
            }
            live(record_clean(&mut g, inc, pid, &mut st));
            check_consistent(&g)
                .map_err(|e| Failure::Violation(format!("after a Clean lock: {e}")))?;
            Ok((g, false))
        }
        Acquired::OwnerDied(mut r) => {
            let (lib_pid, lib_tid) = r.previous_owner().map_or((0, 0), |o| (o.pid, o.tid));
            if let Err(e) = classify(&r) {
                let e = format!("OwnerDied, but no half-done update leaves this state: {e}");
                std::mem::forget(r); // leave the evidence as it is
                return Err(Failure::Violation(e));
            }
            let hash = state_hash(&r);
            if let Err(e) = check_obituary(&mut r, hash, lib_pid, lib_tid) {
                std::mem::forget(r);
                return Err(Failure::Violation(e));
            }
            live(record_recovery(&mut r, inc, pid, lib_pid, hash, &mut st));
            if let Err(e) = check_consistent(&r) {
                std::mem::forget(r);
                return Err(Failure::Violation(format!("repair failed: {e}")));
            }
            Ok((r.mark_consistent(), true))
        }
    }
}

/// After OwnerDied: the death must be one the torture knows of (an
/// obituary not yet reported: every death while holding has one before the
/// next locker can get the lock), the state found must be the one the dead
/// holder left, and `previous_owner()` must name it as its rule says.
fn check_obituary(t: &mut Torture, hash: u64, lib_pid: u32, lib_tid: u32) -> Result<(), String> {
    let (inc, seq) = (hi(t.obit), lo(t.obit));
    if seq == lo(t.obit_done) {
        return Err(format!(
            "OwnerDied, but nobody died holding since obituary {seq} was reported: \
             a false or double report"
        ));
    }
    if hash != t.obit_hash {
        return Err(format!(
            "OwnerDied after the death of incarnation {inc}, but the state found is not \
             the one it left (someone wrote in between)"
        ));
    }
    let (pid, tid) = (hi(t.obit_who), lo(t.obit_who));
    let ok = match t.obit_rule {
        NAME_STRICT => (lib_pid, lib_tid) == (pid, tid),
        NAME_OR_NONE => lib_pid == pid || lib_pid == 0,
        NAME_ANY => {
            if lib_pid != pid && lib_pid != 0 {
                let n = t.odd_names + 1;
                put(&mut t.odd_names, n);
            }
            true
        }
        r => return Err(format!("obituary rule {r}")),
    };
    if !ok {
        return Err(format!(
            "previous_owner() named pid {lib_pid} tid {lib_tid}; incarnation {inc} \
             (pid {pid} tid {tid}) died holding (obituary {seq}, rule {})",
            t.obit_rule
        ));
    }
    Ok(())
}

/// The payload of a planned panic.
struct PlannedPanic;

/// If this process was started as a torture worker, runs the worker (never
/// returns); else returns.
pub fn worker_if_asked() {
    let (Some(path), Ok(id)) = (std::env::var_os(ENV_PATH), std::env::var(ENV_WORKER)) else {
        return;
    };
    let f: Vec<u64> = id.split(' ').filter_map(|s| s.parse().ok()).collect();
    let [inc, slot, seed, parent, panic_one_in, fork_one_in] = f[..] else {
        eprintln!("torture worker: bad {ENV_WORKER}={id:?}");
        std::process::exit(EXIT_SETUP);
    };
    worker(
        Path::new(&path),
        inc as u32,
        slot as usize,
        seed,
        parent as u32,
        (panic_one_in, fork_one_in),
    )
}

/// Incarnations reserved per worker process: each planned panic ends one.
pub const LIVES: u32 = 64;

fn worker(
    path: &Path,
    inc: u32,
    slot: usize,
    seed: u64,
    parent: u32,
    (panic_one_in, fork_one_in): (u64, u64),
) -> ! {
    // Die with the supervisor, even if it is killed.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes
    // nothing but this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if std::os::unix::process::parent_id() != parent {
        std::process::exit(EXIT_SETUP); // the supervisor is already gone
    }
    let pid = std::process::id();
    let m = SharedMutex::<Torture>::open(path).unwrap_or_else(|e| {
        eprintln!("torture worker {inc}: open: {e}");
        std::process::exit(EXIT_SETUP)
    });
    let mut rng = Rng::new(seed);
    assert!(slot < MAX_SLOTS);
    // SAFETY: the gettid system call has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    // Planned panics unwind quietly; any other panic is reported as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<PlannedPanic>() {
            default_hook(info);
        }
    }));
    let (first, mut inc) = (inc, inc);
    // Where this worker publishes its current incarnation, outside the lock:
    // its own slot of `lives`, read by the supervisor only while this
    // process is stopped, and not part of the hashed state.
    let lives: *mut u64 = match enter(&m, inc, pid, Some(&mut rng)) {
        Ok((mut g, _)) => {
            let p = &raw mut g.lives[slot];
            put(&mut g.lives[slot], u64::from(inc));
            live(leave(&mut g, inc, &mut Live(Some(&mut rng))));
            p
        }
        Err(f) => fail(inc, pid, f),
    };
    loop {
        let planned = panic_one_in > 0 && inc + 1 < first + LIVES && rng.below(panic_one_in) == 0;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut g = match enter(&m, inc, pid, Some(&mut rng)) {
                Ok((g, _)) => g,
                Err(f) => fail(inc, pid, f),
            };
            if planned {
                let len = g.payload_words as usize;
                let left = panic_point(&mut rng, len);
                let mut st = Planned {
                    live: Live(Some(&mut rng)),
                    left,
                };
                let _ = update(&mut g, inc, slot, &mut st);
                own_obituary(&mut g, inc, pid, tid);
                // Unwinds out of the critical section: the guard's drop
                // releases the lock as a death.
                std::panic::panic_any(PlannedPanic);
            }
            if fork_one_in > 0 && rng.below(fork_one_in) == 0 {
                if let Err(e) = fork_holding(&m, &mut g, tid) {
                    fail(inc, pid, Failure::Violation(e));
                }
            }
            let mut st = Live(Some(&mut rng));
            live(update(&mut g, inc, slot, &mut st));
            live(leave(&mut g, inc, &mut st));
            drop(g);
        }));
        if let Err(payload) = r {
            if !payload.is::<PlannedPanic>() {
                std::panic::resume_unwind(payload);
            }
            // A panic is a death: this incarnation ends, the next begins.
            inc += 1;
            // SAFETY: `lives` points into the mapping `m` keeps alive; an
            // aligned u64 of this worker's own slot, which no one else
            // writes.
            unsafe { std::ptr::write_volatile(lives, u64::from(inc)) };
        }
        dawdle(&mut rng);
    }
}

/// Forks while holding `g`: the child drops its inherited guard and exits;
/// in the parent nothing may have changed: the lock word names this thread,
/// the owner record still names it, `T` is as it was.
fn fork_holding(
    m: &SharedMutex<Torture>,
    g: &mut Guard<'_, Torture>,
    tid: u32,
) -> Result<(), String> {
    let before = state_hash(g);
    let owner = m.status().owner.map(|o| (o.pid, o.tid));
    // SAFETY: the child only drops the guard (the library makes an
    // inherited guard inert) and leaves with _exit, running no other code of
    // this possibly multi-threaded process.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: `g` is not used again in the child: it leaves at once.
        unsafe { std::ptr::drop_in_place(g) };
        // SAFETY: _exit ends the child without running anything else.
        unsafe { libc::_exit(0) };
    }
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let mut st = 0;
    // SAFETY: waits for our own child; `st` is a valid out pointer.
    while unsafe { libc::waitpid(child, &mut st, 0) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {e}"));
        }
    }
    if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
        return Err(format!(
            "the fork child dropping its inherited guard ended with {st:#x}"
        ));
    }
    let s = m.status();
    if s.lock_word & 0x3fff_ffff != tid {
        return Err(format!(
            "after a fork child dropped its inherited guard, the lock word is {:#x}, \
             not this thread ({tid})",
            s.lock_word
        ));
    }
    if s.owner.map(|o| (o.pid, o.tid)) != owner {
        return Err("a fork child's drop changed the owner record".into());
    }
    if state_hash(g) != before {
        return Err("a fork child's drop changed the value".into());
    }
    let n = g.forks + 1;
    put(&mut g.forks, n);
    Ok(())
}

fn fail(inc: u32, pid: u32, f: Failure) -> ! {
    eprintln!("torture worker {inc} (pid {pid}): {f}");
    std::process::exit(match f {
        Failure::Violation(_) => EXIT_VIOLATION,
        Failure::Hang(_) => EXIT_HANG,
    })
}
