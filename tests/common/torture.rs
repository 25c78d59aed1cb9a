//! Crash torture, shared by `tests/torture.rs` (short) and
//! `examples/torture.rs` (long): P worker processes update a shared `T`
//! under the lock while a supervisor SIGKILLs them at random moments.
//!
//! The update protocol writes a journal first, so that a successor can tell
//! exactly how far a dead holder got, repair deterministically, and count
//! every committed update exactly once:
//!
//! ```text
//! s1 in_cs = pid, journal = (slot, target = counter_a + 1)
//! s2 counter_a = target
//! s3 payload rewritten for target, byte by byte
//! s4 checksum = sum(payload)
//! s5 counter_b = target                        <- the update is now done
//! s6 tally[slot] = pack(count + 1, target)     <- one 8-byte store
//! s7 journal = 0, in_cs = 0
//! ```
//! A Clean entrant must find `in_cs == 0` and a consistent state (else
//! mutual exclusion or owner-death reporting failed). An OwnerDied entrant
//! checks that the state is exactly one of the intermediate states above,
//! rolls the update forward (or finds it already done), and counts it in
//! the dead slot's tally if s6 did not happen. At the end, the sum of the
//! tallies must equal the counter: nothing lost, nothing doubled.
#![allow(dead_code)]

use robust_mutex::{Acquired, LockError, SharedMutex};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PAYLOAD: usize = 4096;
pub const MAX_SLOTS: usize = 64;
/// A wait this long is a hang.
pub const HANG: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Torture {
    pub in_cs: u32,
    pub journal_slot: u32,
    pub journal_target: u64,
    pub counter_a: u64,
    pub counter_b: u64,
    pub checksum: u64,
    /// OwnerDied reports recorded by the recoverers (a recoverer killed
    /// before its first write records none; the library's own counter,
    /// bumped inside `lock`, still counts it), and the last dead pid
    /// reported (a second report of the same death is a violation).
    pub reports: u64,
    pub last_dead_pid: u64,
    pub tally: [u64; MAX_SLOTS],
    pub payload: [u8; PAYLOAD],
}

fn pattern(v: u64, i: usize) -> u8 {
    (v as u8).wrapping_mul(31).wrapping_add(i as u8)
}

fn checksum_of(v: u64) -> u64 {
    (0..PAYLOAD).map(|i| u64::from(pattern(v, i))).sum()
}

fn pack(count: u64, target: u64) -> u64 {
    (count << 32) | (target & 0xffff_ffff)
}

fn unpack(t: u64) -> (u64, u64) {
    (t >> 32, t & 0xffff_ffff)
}

/// A consistent, idle state: what a Clean entrant must see.
pub fn check_consistent(t: &Torture) -> Result<(), String> {
    if t.in_cs != 0 || t.journal_target != 0 {
        return Err(format!(
            "entered a critical section held by pid {} (journal {}): mutual exclusion or death reporting failed",
            t.in_cs, t.journal_target
        ));
    }
    if t.counter_a != t.counter_b {
        return Err(format!("copies differ: {} vs {}", t.counter_a, t.counter_b));
    }
    let v = t.counter_b;
    if t.checksum != checksum_of(v) || (0..PAYLOAD).any(|i| t.payload[i] != pattern(v, i)) {
        return Err(format!("payload or checksum wrong at counter {v}"));
    }
    Ok(())
}

/// After an owner death: checks that the state is one a half-done update
/// leaves, and repairs it. Returns a description of what was found.
pub fn check_and_repair(t: &mut Torture) -> Result<&'static str, String> {
    if t.journal_target == 0 {
        // Died outside s1..s7 (in lock or unlock): must be consistent.
        t.in_cs = 0;
        check_consistent(t)?;
        return Ok("idle");
    }
    let target = t.journal_target;
    let slot = t.journal_slot as usize;
    let old = target - 1;
    if slot >= MAX_SLOTS || t.counter_b < old || t.counter_b > target {
        return Err(format!(
            "journal {target} slot {slot} does not fit counter_b {}",
            t.counter_b
        ));
    }
    if t.counter_a != old && t.counter_a != target {
        return Err(format!(
            "counter_a {} is neither {old} nor {target}",
            t.counter_a
        ));
    }
    if (0..PAYLOAD).any(|i| t.payload[i] != pattern(old, i) && t.payload[i] != pattern(target, i)) {
        return Err("payload byte from neither the old nor the new value".into());
    }
    if t.checksum != checksum_of(old) && t.checksum != checksum_of(target) {
        return Err("checksum of neither the old nor the new value".into());
    }
    let found = if t.counter_b == target {
        "after commit"
    } else if t.counter_a == target {
        "mid-update"
    } else {
        "before any write"
    };
    if t.counter_b == old && t.counter_a == old {
        // s1 only: nothing written; the payload must still be the old one.
        if (0..PAYLOAD).any(|i| t.payload[i] != pattern(old, i)) || t.checksum != checksum_of(old) {
            return Err("data changed before counter_a".into());
        }
    } else {
        // Roll forward.
        for i in 0..PAYLOAD {
            t.payload[i] = pattern(target, i);
        }
        t.checksum = checksum_of(target);
        t.counter_a = target;
        t.counter_b = target;
        let (count, last) = unpack(t.tally[slot]);
        if last != (target & 0xffff_ffff) {
            t.tally[slot] = pack(count + 1, target);
        }
    }
    t.journal_target = 0;
    t.in_cs = 0;
    check_consistent(t)?;
    Ok(found)
}

/// Small xorshift PRNG (no dependency; reproducible from a printed seed).
#[derive(Clone, Copy)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A worker: loops for ever; exits 2 on a violated invariant, 3 on a hang.
pub fn worker(path: &Path, slot: u32, seed: u64) -> ! {
    let m = SharedMutex::<Torture>::open(path).unwrap_or_else(|e| {
        eprintln!("worker: {e}");
        std::process::exit(4)
    });
    let pid = std::process::id();
    let mut rng = Rng(seed | 1);
    loop {
        let acquired = match m.lock_timeout(HANG) {
            Ok(a) => a,
            Err(LockError::TimedOut) => {
                eprintln!("worker {pid}: HANG: no lock in {HANG:?}");
                std::process::exit(3)
            }
            Err(e) => {
                eprintln!("worker {pid}: lock failed: {e}");
                std::process::exit(2)
            }
        };
        let mut g = match acquired {
            Acquired::Clean(g) => {
                if let Err(e) = check_consistent(&g) {
                    eprintln!("worker {pid}: VIOLATION on a clean lock: {e}");
                    std::process::exit(2)
                }
                g
            }
            Acquired::OwnerDied(mut r) => {
                r.reports += 1;
                let dead = r.previous_owner().map_or(0, |o| u64::from(o.pid));
                if dead != 0 && dead == r.last_dead_pid {
                    eprintln!("worker {pid}: VIOLATION: death of {dead} reported twice");
                    std::process::exit(2)
                }
                r.last_dead_pid = dead;
                if let Err(e) = check_and_repair(&mut r) {
                    eprintln!("worker {pid}: VIOLATION after the death of {dead}: {e}");
                    std::process::exit(2)
                }
                r.mark_consistent()
            }
        };
        // The update, with a little random work between steps so kills land
        // everywhere.
        let target = g.counter_a + 1;
        g.in_cs = pid;
        g.journal_slot = slot;
        g.journal_target = target;
        spin(&mut rng);
        g.counter_a = target;
        for i in 0..PAYLOAD {
            g.payload[i] = pattern(target, i);
        }
        spin(&mut rng);
        g.checksum = checksum_of(target);
        g.counter_b = target;
        spin(&mut rng);
        let (count, _) = unpack(g.tally[slot as usize]);
        g.tally[slot as usize] = pack(count + 1, target);
        g.journal_target = 0;
        g.in_cs = 0;
        drop(g);
        spin(&mut rng);
    }
}

fn spin(rng: &mut Rng) {
    for _ in 0..rng.below(200) {
        std::hint::spin_loop();
    }
}

/// What a torture run found.
#[derive(Debug)]
pub struct Summary {
    pub seed: u64,
    pub workers: usize,
    pub kills: u64,
    pub owner_died_reports: u64,
    pub library_owner_deaths: u64,
    pub updates: u64,
    pub tallied: u64,
    pub hangs: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn line(&self) -> String {
        let lost = self.updates.saturating_sub(self.tallied);
        let doubled = self.tallied.saturating_sub(self.updates);
        format!(
            "{} kills of {} workers, {} owner-died reports (library: {}), {} hangs, {} lost, {} doubled, {} updates in {:.1} s, seed {}",
            self.kills,
            self.workers,
            self.owner_died_reports,
            self.library_owner_deaths,
            self.hangs,
            lost,
            doubled,
            self.updates,
            self.elapsed.as_secs_f64(),
            self.seed
        )
    }
}

/// Runs the supervisor: `workers` processes made by `spawn(slot, seed)`,
/// `kills` random SIGKILLs. Panics (with the seed) on any violated invariant.
pub fn supervise(
    path: &Path,
    workers: usize,
    kills: u64,
    seed: u64,
    spawn: impl Fn(u32, u64) -> Command,
) -> Summary {
    assert!(workers > 0 && workers <= MAX_SLOTS);
    let start = Instant::now();
    let m = SharedMutex::<Torture>::open(path).unwrap();
    drop(
        m.lock()
            .unwrap()
            .recover_with(|t| *t = bytemuck::Zeroable::zeroed()),
    );
    {
        let mut g = m.lock().unwrap().recover_with(|_| {});
        g.checksum = checksum_of(0);
        for i in 0..PAYLOAD {
            g.payload[i] = pattern(0, i);
        }
    }
    let mut rng = Rng(seed | 1);
    let start_one = |slot: usize, rng: &mut Rng| -> Child {
        spawn(slot as u32, rng.next())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn worker")
    };
    let mut pool: Vec<Child> = (0..workers).map(|s| start_one(s, &mut rng)).collect();
    let deadline = start + Duration::from_secs(3600 * 24);
    for _ in 0..kills {
        assert!(Instant::now() < deadline);
        // Randomness of timing, not synchronisation.
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        // Half the kills aim at whoever holds the lock right now (so most
        // land inside the critical section, lock or unlock); the rest at
        // random workers.
        let holder = m.status().owner.map(|o| o.pid);
        let slot = match holder.and_then(|p| pool.iter().position(|c| c.id() == p)) {
            Some(s) if rng.below(2) == 0 => s,
            _ => rng.below(workers as u64) as usize,
        };
        let child = &mut pool[slot];
        if let Some(st) = child.try_wait().unwrap() {
            panic!("worker exited by itself ({st:?}): an invariant failed (seed {seed})");
        }
        child.kill().unwrap();
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(9),
            "worker ended with {st:?} (seed {seed})"
        );
        pool[slot] = start_one(slot, &mut rng);
    }
    for mut c in pool {
        if let Some(st) = c.try_wait().unwrap() {
            panic!("worker exited by itself ({st:?}): an invariant failed (seed {seed})");
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    // The final check, as one more locker.
    let a = m.lock_timeout(HANG).expect("final lock: hang");
    let g = match a {
        Acquired::Clean(g) => {
            check_consistent(&g).unwrap_or_else(|e| panic!("{e} (seed {seed})"));
            g
        }
        Acquired::OwnerDied(mut r) => {
            check_and_repair(&mut r).unwrap_or_else(|e| panic!("{e} (seed {seed})"));
            r.reports += 1;
            r.mark_consistent()
        }
    };
    let tallied: u64 = g.tally.iter().map(|t| unpack(*t).0).sum();
    let summary = Summary {
        seed,
        workers,
        kills,
        owner_died_reports: g.reports,
        library_owner_deaths: 0,
        updates: g.counter_b,
        tallied,
        hangs: 0,
        elapsed: start.elapsed(),
    };
    drop(g);
    Summary {
        library_owner_deaths: m.status().counters.owner_deaths,
        ..summary
    }
}
