//! The worker process: take the lock ([`enter`]: check the state, record the
//! entry or the report, repair), make an update, leave; over and over until
//! killed.

use super::protocol::{
    Live, Rng, Torture, check_consistent, classify, dawdle, hi, leave, live, record_clean,
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
/// A worker's identity: `inc slot seed supervisor-pid`.
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
            let lib_pid = r.previous_owner().map_or(0, |o| o.pid);
            if let Err(e) = classify(&r) {
                let e = format!("OwnerDied, but no half-done update leaves this state: {e}");
                std::mem::forget(r); // leave the evidence as it is
                return Err(Failure::Violation(e));
            }
            let hash = state_hash(&r);
            live(record_recovery(&mut r, inc, pid, lib_pid, hash, &mut st));
            if let Err(e) = check_consistent(&r) {
                std::mem::forget(r);
                return Err(Failure::Violation(format!("repair failed: {e}")));
            }
            Ok((r.mark_consistent(), true))
        }
    }
}

/// If this process was started as a torture worker, runs the worker (never
/// returns); else returns.
pub fn worker_if_asked() {
    let (Some(path), Ok(id)) = (std::env::var_os(ENV_PATH), std::env::var(ENV_WORKER)) else {
        return;
    };
    let f: Vec<u64> = id.split(' ').filter_map(|s| s.parse().ok()).collect();
    let [inc, slot, seed, parent] = f[..] else {
        eprintln!("torture worker: bad {ENV_WORKER}={id:?}");
        std::process::exit(EXIT_SETUP);
    };
    worker(
        Path::new(&path),
        inc as u32,
        slot as usize,
        seed,
        parent as u32,
    )
}

fn worker(path: &Path, inc: u32, slot: usize, seed: u64, parent: u32) -> ! {
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
    loop {
        let mut g = match enter(&m, inc, pid, Some(&mut rng)) {
            Ok((g, _)) => g,
            Err(f) => {
                eprintln!("torture worker {inc} (pid {pid}): {f}");
                std::process::exit(match f {
                    Failure::Violation(_) => EXIT_VIOLATION,
                    Failure::Hang(_) => EXIT_HANG,
                })
            }
        };
        let mut st = Live(Some(&mut rng));
        live(update(&mut g, inc, slot, &mut st));
        live(leave(&mut g, inc, &mut st));
        drop(g);
        dawdle(&mut rng);
    }
}
