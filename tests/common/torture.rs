//! Crash torture, in one place: `tests/torture.rs` runs it short (about 200
//! kills, in `cargo test`) and `examples/torture.rs` runs it long
//! (`cargo run --release --example torture -- --kills 100000`).
//!
//! # The processes
//!
//! P worker processes (the test binary or the example re-executed, told their
//! role by environment variables) loop: lock, check the shared [`Torture`]
//! value, make a multi-step update, unlock. A supervisor SIGKILLs random
//! workers at random times (a pause of 0 to 2 ms), half of the time whoever
//! holds the lock right then, and respawns them, until K kills; then it
//! kills the rest, takes the lock itself and checks the books. After a death
//! while holding, one time in four the next kill follows at once, aimed at
//! the new holder, which is then most likely recovering. Workers pause at
//! random between steps, now and then for up to 200 µs, so that kills also
//! land in the narrow windows (just after `lock` returns, inside a recovery,
//! inside `unlock`).
//!
//! Each kill is made in two moves: SIGSTOP, `waitpid(WUNTRACED)` until the
//! victim is stopped, then SIGKILL. While the victim is frozen the supervisor
//! reads the lock word (the kernel's truth about who holds the lock) and, if
//! the victim holds it, copies `T` out of the file (nobody else may write it
//! then). The victim still dies at the instruction where it happened to be
//! (inside `lock`, the critical section or `unlock`), and the supervisor knows
//! exactly which deaths happened while holding, and in what state they left
//! `T`. Nothing is synchronised by sleeping: the random pause before each kill
//! is the torture's randomness, and the waits are `waitpid` and the lock.
//!
//! # The update protocol (each line one 8-byte volatile store)
//!
//! ```text
//! entry   left = 0
//!         [after OwnerDied: report_by, report_named, report_lib_pid, report_hash]
//!         entry = (inc [| RECOVERED after OwnerDied], reports [+ 1])
//!         holder = (inc, pid)                 <- in-critical-section marker
//!         [after OwnerDied: the repair, below]
//! update  u1 intent_inc = inc
//!         u2 intent = (slot, n + 1)           <- the update is under way
//!         u3 counter_a = n + 1
//!         u4 payload[0..len] = pattern(n + 1), word by word, in order
//!         u5 checksum = checksum(pattern(n + 1))
//!         u6 counter_b = n + 1                <- commit point
//!         u7 tally[slot] = (count + 1, n + 1) <- the commit, counted
//!         u8 intent = 0
//! leave   x1 left = inc
//!         x2 holder = 0                       <- marker cleared, then unlock
//! ```
//!
//! So a dead holder leaves `T` in one of finitely many recognisable states
//! ([`classify`]): `counter_a ∈ {b, b + 1}`, the payload a prefix of new
//! words followed by old ones, the checksum the old one (or the new one once
//! the payload is complete), a committed update tallied or not yet.
//!
//! # The repair (deterministic)
//!
//! An uncommitted update (intent target = `counter_b + 1`) is rolled back:
//! checksum restored, payload words restored from the last new one down to
//! the first (so the state keeps its prefix shape and a repairer killed
//! mid-repair leaves a state the next one recognises), `counter_a`, intent
//! cleared. A committed one (target = `counter_b`) is rolled forward: its
//! slot's tally is bumped unless it already names that target.
//!
//! # What is checked, and how
//!
//! * **Mutual exclusion.** A Clean entrant must find the marker clear, no
//!   update under way and the state consistent, including
//!   `sum(tally) == counter`; else two processes overlapped or an owner death
//!   went unreported. The supervisor's copy of `T` at every death while
//!   holding must be a recognised state too. Workers exit with code 2 on any
//!   violation and the supervisor fails the run.
//! * **Every death while holding is reported exactly once.** The supervisor
//!   keeps the books between two consecutive holding deaths. A holding death
//!   `h` must be followed by exactly one OwnerDied: recorded in `T` by the
//!   recoverer in the same store that names it as the latest entrant
//!   (`entry = (inc, reports + 1)`), together with a hash of the whole state
//!   it found, which must equal the supervisor's copy of the state `h` left.
//!   Only one case leaves no record: the acquirer that got `h`'s OwnerDied is
//!   itself killed before recording it (the supervisor sees that: it holds
//!   the lock but is not yet the latest entrant). Then the report was made,
//!   to a process that could not write it down (counted as `unseen`), and
//!   that acquirer's own death is next in line. So, at every holding death
//!   and at the end: a recorded acquisition after no pending death must be
//!   Clean (else a false or double report), one after a pending death must
//!   come with exactly one new report (else a missed or double report), the
//!   library's `owner_deaths` counter must move in step, and
//!   `deaths while holding == recorded reports + unseen`.
//! * **Who is named.** `previous_owner()` must name the dead holder's pid
//!   whenever `lock` had returned to it (its entry is recorded), and that pid
//!   or nobody if it died in `unlock`. If it died inside `lock`, the library
//!   may name an earlier owner whose death was already reported: a library
//!   bug (see `tests/torture.rs`), counted as "stale previous_owner() names".
//! * **No hang.** Every lock is `lock_timeout(30 s)`; a worker that times
//!   out exits with code 3. The supervisor has an overall deadline, and
//!   every one of its own waits is bounded by it or by a kill it just sent.
//! * **The protocol itself.** [`check_protocol`] simulates, without
//!   processes, chains of holders each killed after every possible number
//!   of its stores, and checks that every state left is recognised and every
//!   recovery balances the books: the random torture cannot promise to reach
//!   the rare chains (a recoverer killed between recording its entry and
//!   setting its marker, then its own recoverer killed while writing its
//!   report), the simulation reaches all of them.
//! * **Nothing lost, nothing doubled.** Workers report commits through `T`
//!   only: the tally of their slot, bumped in the same critical section as the
//!   counter (u7), or by the repairer for a committed update whose writer died
//!   before u7. An update whose writer died before u6 is rolled back and
//!   counted nowhere. At the end, `counter_a == counter_b == sum(tally)`:
//!   an update two overlapping writers both tallied shows as lost, one counted
//!   twice (by its writer and a repairer, or twice by repairers) as doubled.
#![allow(dead_code)]

use robust_mutex::{Acquired, Guard, LockError, SharedMutex};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Worker slots; the tally has one entry per slot.
pub const MAX_SLOTS: usize = 64;
/// The largest payload `--payload-kib` accepts.
pub const MAX_PAYLOAD_KIB: usize = 64;
const MAX_WORDS: usize = MAX_PAYLOAD_KIB * 1024 / 8;
/// A lock wait this long is a hang.
pub const HANG: Duration = Duration::from_secs(30);
/// The supervisor's incarnation number (workers count from 2).
const SUPERVISOR_INC: u32 = 1;

/// Where a worker finds the mutex file.
pub const ENV_PATH: &str = "RM_TORTURE_PATH";
/// A worker's identity: `inc slot seed supervisor-pid`.
pub const ENV_WORKER: &str = "RM_TORTURE_WORKER";

/// Worker exit codes.
const EXIT_VIOLATION: i32 = 2;
const EXIT_HANG: i32 = 3;
const EXIT_SETUP: i32 = 4;

const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// The shared value. Every field is a `u64`, written with one volatile store.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Torture {
    /// `(inc | RECOVERED if it got OwnerDied, reports)`: the latest entrant
    /// that recorded its entry, and the number of OwnerDied reports recorded
    /// so far (one store commits both).
    pub entry: u64,
    /// `(inc, pid)` of the process inside the critical section, else 0.
    pub holder: u64,
    /// The inc of a holder past x1 (leaving); cleared by the next entrant.
    pub left: u64,
    /// Who wrote the intent (tells a repairer apart from the writer).
    pub intent_inc: u64,
    /// `(slot, target)` of the update under way, else 0.
    pub intent: u64,
    pub counter_a: u64,
    pub counter_b: u64,
    pub checksum: u64,
    /// Payload length in words, set once by the supervisor.
    pub payload_words: u64,
    /// The latest OwnerDied report: reporter's inc, the latest entrant it
    /// found (the presumed dead holder), the pid the library's
    /// `previous_owner()` named (0 for none), and a hash of the state found.
    pub report_by: u64,
    pub report_named: u64,
    pub report_lib_pid: u64,
    pub report_hash: u64,
    /// Per slot `(count, low 32 bits of the last target committed)`.
    pub tally: [u64; MAX_SLOTS],
    pub payload: [u64; MAX_WORDS],
}

fn pack(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}
fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}
fn lo(v: u64) -> u32 {
    v as u32
}
/// In `entry`: the entrant got OwnerDied. Until it sets its own marker, the
/// marker still names the dead holder (or nobody).
const RECOVERED: u32 = 1 << 31;
fn entrant(entry: u64) -> u32 {
    hi(entry) & !RECOVERED
}
fn recovered(entry: u64) -> bool {
    hi(entry) & RECOVERED != 0
}
fn pack_intent(slot: usize, target: u64) -> u64 {
    assert!(target < 1 << 48);
    ((slot as u64) << 48) | target
}
fn unpack_intent(v: u64) -> (usize, u64) {
    ((v >> 48) as usize, v & ((1 << 48) - 1))
}

/// One protocol step: a single volatile store, so the compiler neither
/// reorders nor merges the steps and a kill lands between two of them.
#[inline(always)]
fn put(dst: &mut u64, v: u64) {
    // SAFETY: `dst` is a live, aligned, exclusive reference.
    unsafe { std::ptr::write_volatile(dst, v) }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Payload word `i` for counter value `v`.
fn pattern(v: u64, i: usize) -> u64 {
    mix(v.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64))
}

fn fold(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17)
}

/// The checksum of the payload for counter value `v`.
fn checksum_of(v: u64, len: usize) -> u64 {
    (0..len).fold(0xcbf2_9ce4_8422_2325, |h, i| fold(h, pattern(v, i)))
}

fn words(t: &Torture) -> Result<usize, String> {
    match t.payload_words as usize {
        n @ 1..=MAX_WORDS => Ok(n),
        n => Err(format!("payload length {n} words is out of range")),
    }
}

/// A hash of everything a dead holder can have written: every field and the
/// used part of the payload. Recoverer and supervisor must agree on it.
pub fn state_hash(t: &Torture) -> u64 {
    let len = (t.payload_words as usize).min(MAX_WORDS);
    let all: &[u64] = bytemuck::cast_slice(bytemuck::bytes_of(t));
    let used = all.len() - MAX_WORDS + len;
    all[..used]
        .iter()
        .fold(0x8422_2325_cbf2_9ce4, |h, w| fold(h, *w))
}

fn tallied(t: &Torture) -> u64 {
    t.tally.iter().map(|v| u64::from(hi(*v))).sum()
}

/// Number of leading payload words that already hold `pattern(v)`.
fn new_prefix(t: &Torture, v: u64, len: usize) -> usize {
    (0..len)
        .find(|&i| t.payload[i] != pattern(v, i))
        .unwrap_or(len)
}

/// The idle, consistent state: what a Clean entrant must find.
pub fn check_consistent(t: &Torture) -> Result<(), String> {
    let len = words(t)?;
    let b = t.counter_b;
    if t.counter_a != b {
        return Err(format!("the copies differ: {} vs {b}", t.counter_a));
    }
    if let Some(i) = (0..len).find(|&i| t.payload[i] != pattern(b, i)) {
        return Err(format!("payload word {i} is not the one of counter {b}"));
    }
    if t.checksum != checksum_of(b, len) {
        return Err(format!("checksum is not the one of counter {b}"));
    }
    if tallied(t) != b {
        return Err(format!(
            "the tallies sum to {}, the counter is {b}: updates lost or doubled",
            tallied(t)
        ));
    }
    Ok(())
}

/// A state the protocol can leave when a holder dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Nobody in the critical section; consistent.
    Quiet,
    /// Marker set, no update under way; consistent.
    Idle,
    /// u2 done.
    Intent,
    /// u3 done, no payload word yet.
    CounterA,
    /// Some payload words new, some old.
    Payload,
    /// u4 done.
    PayloadDone,
    /// u5 done.
    Checksum,
    /// u6 done: committed, not yet tallied.
    Committed,
    /// u7 done.
    Tallied,
}

/// Checks that `t` is exactly one of the states a half-done update (or a
/// half-done repair, which retraces the same states) can leave, and says
/// which. An `Err` means the state is broken in a way no single dead holder
/// can explain.
pub fn classify(t: &Torture) -> Result<State, String> {
    let len = words(t)?;
    let (a, b) = (t.counter_a, t.counter_b);
    if t.holder == 0 {
        if t.intent != 0 {
            return Err("an update is under way outside any critical section".into());
        }
        check_consistent(t)?;
        return Ok(State::Quiet);
    }
    // The marker names the latest entrant, or a dead one whose recoverer has
    // recorded its entry but not yet set its own marker.
    if hi(t.holder) != entrant(t.entry) && !recovered(t.entry) {
        return Err(format!(
            "the marker names incarnation {} but the latest entrant is {}",
            hi(t.holder),
            entrant(t.entry)
        ));
    }
    if t.intent == 0 {
        check_consistent(t)?;
        return Ok(State::Idle);
    }
    let (slot, target) = unpack_intent(t.intent);
    if slot >= MAX_SLOTS {
        return Err(format!("intent names slot {slot}"));
    }
    if target == b + 1 {
        if tallied(t) != b {
            return Err(format!("tallies sum to {}, counter {b}", tallied(t)));
        }
        let old = checksum_of(b, len);
        if a == b {
            if new_prefix(t, b, len) != len || t.checksum != old {
                return Err("payload or checksum changed before counter_a".into());
            }
            return Ok(State::Intent);
        }
        if a != target {
            return Err(format!("counter_a {a} is neither {b} nor {target}"));
        }
        let k = new_prefix(t, target, len);
        if let Some(i) = (k..len).find(|&i| t.payload[i] != pattern(b, i)) {
            return Err(format!(
                "payload word {i} is from neither value (new prefix ends at {k})"
            ));
        }
        return match (k, t.checksum) {
            (0, c) if c == old => Ok(State::CounterA),
            (k, c) if c == old && k < len => Ok(State::Payload),
            (_, c) if c == old => Ok(State::PayloadDone),
            (k, c) if k == len && c == checksum_of(target, len) => Ok(State::Checksum),
            _ => Err("checksum of neither value, or new before the payload is".into()),
        };
    }
    if target == b && b > 0 {
        if a != b || new_prefix(t, b, len) != len || t.checksum != checksum_of(b, len) {
            return Err(format!(
                "update {b} committed but its data is not all there"
            ));
        }
        let done = lo(t.tally[slot]) == target as u32;
        return match (done, tallied(t)) {
            (true, n) if n == b => Ok(State::Tallied),
            (false, n) if n + 1 == b => Ok(State::Committed),
            (_, n) => Err(format!("tallies sum to {n} at committed counter {b}")),
        };
    }
    Err(format!("intent target {target} does not fit counter {b}"))
}

/// Killed before a store: the simulated process died here.
#[derive(Debug)]
pub struct Killed;

/// How the protocol's stores are made: for real by a worker (each one 8-byte
/// volatile store, with random pauses between them), or in
/// [`check_protocol`]'s simulation, which dies after a given number.
trait Steps {
    /// One protocol store.
    fn put(&mut self, dst: &mut u64, v: u64) -> Result<(), Killed>;
    /// A short random pause, and one time in `one_in` a longer one (never
    /// if `one_in` is 0).
    fn pause(&mut self, _one_in: u64) {}
    /// A random number below `n`.
    fn below(&mut self, _n: u64) -> u64 {
        0
    }
}

/// Real stores, paced by `rng` (if any).
struct Live<'r>(Option<&'r mut Rng>);

impl Steps for Live<'_> {
    fn put(&mut self, dst: &mut u64, v: u64) -> Result<(), Killed> {
        put(dst, v);
        Ok(())
    }
    fn pause(&mut self, one_in: u64) {
        if let Some(r) = self.0.as_deref_mut() {
            dawdle(r);
            if one_in > 0 {
                linger(r, one_in);
            }
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.as_deref_mut().map_or(0, |r| r.below(n))
    }
}

/// Live steps never fail.
fn live<T>(r: Result<T, Killed>) -> T {
    r.unwrap_or_else(|_| unreachable!("live steps are never killed"))
}

/// A simulated process that is killed after `.0` more stores.
struct Budget(usize);

impl Steps for Budget {
    fn put(&mut self, dst: &mut u64, v: u64) -> Result<(), Killed> {
        if self.0 == 0 {
            return Err(Killed);
        }
        self.0 -= 1;
        *dst = v;
        Ok(())
    }
}

/// After a Clean lock (the caller checked the marker): record the entry and
/// set the marker.
fn record_clean(t: &mut Torture, inc: u32, pid: u32, st: &mut impl Steps) -> Result<(), Killed> {
    st.pause(64);
    let reports = lo(t.entry);
    st.put(&mut t.left, 0)?;
    st.put(&mut t.entry, pack(inc, reports))?;
    st.pause(64);
    st.put(&mut t.holder, pack(inc, pid))
}

/// After OwnerDied (the caller classified the state, hashed it and asked the
/// library for the previous owner): record the report, set the marker,
/// repair.
fn record_recovery(
    t: &mut Torture,
    inc: u32,
    pid: u32,
    lib_pid: u32,
    hash: u64,
    st: &mut impl Steps,
) -> Result<(), Killed> {
    let named = entrant(t.entry);
    let reports = lo(t.entry) + 1;
    st.pause(4);
    st.put(&mut t.left, 0)?;
    st.put(&mut t.report_by, u64::from(inc))?;
    st.put(&mut t.report_named, u64::from(named))?;
    st.put(&mut t.report_lib_pid, u64::from(lib_pid))?;
    st.put(&mut t.report_hash, hash)?;
    st.pause(4);
    st.put(&mut t.entry, pack(inc | RECOVERED, reports))?; // the report is recorded
    st.pause(4);
    st.put(&mut t.holder, pack(inc, pid))?;
    repair(t, st)?;
    st.pause(4);
    Ok(())
}

/// Repairs a state [`classify`] accepted; leaves it consistent.
fn repair(t: &mut Torture, st: &mut impl Steps) -> Result<(), Killed> {
    if t.intent == 0 {
        return Ok(());
    }
    let len = t.payload_words as usize;
    let (slot, target) = unpack_intent(t.intent);
    let b = t.counter_b;
    if target == b + 1 {
        // Roll back, retracing the update's states backwards.
        st.put(&mut t.checksum, checksum_of(b, len))?;
        st.pause(4);
        if t.counter_a == target {
            let k = new_prefix(t, target, len);
            for i in (0..k).rev() {
                if i == k / 2 {
                    st.pause(4);
                }
                st.put(&mut t.payload[i], pattern(b, i))?;
            }
            st.pause(4);
            st.put(&mut t.counter_a, b)?;
        }
    } else {
        // Committed: make sure it is tallied exactly once.
        let (count, last) = (hi(t.tally[slot]), lo(t.tally[slot]));
        if last != target as u32 {
            st.put(&mut t.tally[slot], pack(count + 1, target as u32))?;
        }
    }
    st.pause(4);
    st.put(&mut t.intent, 0)
}

/// The update, u1..u8 (the caller holds the lock, marker set).
fn update(t: &mut Torture, inc: u32, slot: usize, st: &mut impl Steps) -> Result<(), Killed> {
    let len = t.payload_words as usize;
    let target = t.counter_b + 1;
    st.pause(0);
    st.put(&mut t.intent_inc, u64::from(inc))?;
    st.put(&mut t.intent, pack_intent(slot, target))?;
    st.pause(0);
    st.put(&mut t.counter_a, target)?;
    st.pause(0);
    let pause_at = st.below(len as u64) as usize;
    for i in 0..len {
        if i == pause_at {
            st.pause(0);
        }
        st.put(&mut t.payload[i], pattern(target, i))?;
    }
    st.pause(0);
    st.put(&mut t.checksum, checksum_of(target, len))?;
    st.pause(0);
    st.put(&mut t.counter_b, target)?; // commit point
    st.pause(0);
    let count = hi(t.tally[slot]);
    st.put(&mut t.tally[slot], pack(count + 1, target as u32))?;
    st.pause(0);
    st.put(&mut t.intent, 0)
}

/// Clears the marker (x1, x2); the caller then unlocks.
fn leave(t: &mut Torture, inc: u32, st: &mut impl Steps) -> Result<(), Killed> {
    st.pause(0);
    st.put(&mut t.left, u64::from(inc))?;
    st.pause(64);
    st.put(&mut t.holder, 0)?;
    st.pause(64);
    Ok(())
}

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

/// Small xorshift64* PRNG: reproducible from a printed seed, no dependency.
#[derive(Clone, Copy, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A short random pause, so that kills land in every step.
fn dawdle(rng: &mut Rng) {
    for _ in 0..rng.below(64) {
        std::hint::spin_loop();
    }
}

/// One time in `one_in`, a longer pause (up to 200 µs, busy), so that the
/// supervisor, which reacts in tens of microseconds, can also land kills in
/// the narrow windows: between `lock` returning and the first store, inside
/// a recovery, in `unlock`.
fn linger(rng: &mut Rng, one_in: u64) {
    if rng.below(one_in) == 0 {
        let until = Instant::now() + Duration::from_micros(rng.below(200));
        while Instant::now() < until {
            std::hint::spin_loop();
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

/// Checks the protocol itself, without processes or timing: simulates
/// chains of up to `depth` consecutive holders each killed after every
/// possible number of its stores (0 = inside `lock`; all of them = inside
/// `unlock`), the first one having locked Clean and each next one getting
/// OwnerDied, and a last one that recovers and completes. Every state a
/// death leaves must be one [`classify`] recognises; every recovery must end
/// consistent; the reports counted must equal the deaths; the tallies must
/// equal the counter. Returns the number of death states checked.
pub fn check_protocol(depth: usize) -> Result<u64, String> {
    let len = 6;
    let mut t = Box::new(<Torture as bytemuck::Zeroable>::zeroed());
    t.payload_words = len as u64;
    for i in 0..len {
        t.payload[i] = pattern(0, i);
    }
    t.checksum = checksum_of(0, len);
    // Two clean updates first, so that tallies and counter are not zero.
    for inc in [2, 3] {
        let mut st = Budget(usize::MAX);
        record_clean(&mut t, inc, inc, &mut st).unwrap();
        update(&mut t, inc, inc as usize, &mut st).unwrap();
        leave(&mut t, inc, &mut st).unwrap();
    }
    check_consistent(&t)?;
    let mut checked = 0;
    explore(&t, depth, 4, false, 0, &mut checked)?;
    Ok(checked)
}

/// One life of incarnation `inc` on `t` (locked Clean, or after the death of
/// the previous holder): entry, update, leave.
fn life(t: &mut Torture, inc: u32, died: bool, st: &mut Budget) -> Result<(), Killed> {
    if died {
        let hash = state_hash(t);
        record_recovery(t, inc, inc, 0, hash, st)?;
    } else {
        record_clean(t, inc, inc, st)?;
    }
    update(t, inc, inc as usize % 3, st)?;
    leave(t, inc, st)
}

/// Explores every death point of incarnation `inc` entering `t` (Clean, or
/// after a death if `died`); `reports` is the number of OwnerDied reports
/// that must be recorded in `t` by now.
fn explore(
    t: &Torture,
    depth: usize,
    inc: u32,
    died: bool,
    reports: u32,
    checked: &mut u64,
) -> Result<(), String> {
    let ctx = |e: String| format!("incarnation {inc}, {reports} reports: {e}");
    if died {
        classify(t).map_err(ctx)?;
        *checked += 1;
    } else if t.holder != 0 || t.intent != 0 {
        return Err(ctx("a Clean lock would find the marker set".into()));
    }
    if depth == 0 {
        // The last one completes; then the books must balance.
        let mut t = Box::new(*t);
        life(&mut t, inc, died, &mut Budget(usize::MAX)).unwrap();
        check_consistent(&t).map_err(ctx)?;
        let want = reports + u32::from(died);
        if t.holder != 0 || lo(t.entry) != want {
            return Err(ctx(format!("{} reports recorded, {want} due", lo(t.entry))));
        }
        return Ok(());
    }
    for stores in 0.. {
        let mut next = Box::new(*t);
        let completed = life(&mut next, inc, died, &mut Budget(stores)).is_ok();
        // A report is recorded with the entry; a recoverer killed before
        // that made the report unseen (the supervisor's `unseen`).
        let reports = reports + u32::from(died && entrant(next.entry) == inc);
        // Killed after `stores` stores, still holding (if it completed, it
        // dies in `unlock`, before the lock word is released).
        explore(&next, depth - 1, inc + 1, true, reports, checked)?;
        if completed {
            // Or it unlocked and the next one locks Clean.
            return explore(&next, depth - 1, inc + 1, false, reports, checked);
        }
    }
    unreachable!()
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    pub kills: u64,
    pub seed: u64,
    pub payload_kib: usize,
    /// Upper bound of the random pause before each kill.
    pub max_pause: Duration,
    /// The whole run must end within this.
    pub deadline: Duration,
}

impl Config {
    pub fn new(workers: usize, kills: u64, seed: u64) -> Config {
        Config {
            workers,
            kills,
            seed,
            payload_kib: 4,
            max_pause: Duration::from_millis(2),
            deadline: Duration::from_secs(300) + Duration::from_millis(20 * kills),
        }
    }
}

/// Where a holding victim was when it died, from the state it left.
fn kill_point(t: &Torture, inc: u32, state: State) -> &'static str {
    if entrant(t.entry) != inc {
        return "in lock, or after it before recording its entry";
    }
    if t.holder != 0 && hi(t.holder) != inc {
        return "recovering (entry recorded, marker not yet set)";
    }
    match state {
        State::Quiet if t.left == u64::from(inc) => "in unlock (marker cleared)",
        State::Quiet => "entering (entry recorded, marker not yet set)",
        State::Idle if t.left == u64::from(inc) => "leaving (x1 done)",
        State::Idle => "critical section, no update under way",
        _ if t.intent_inc != u64::from(inc) => "repairing a dead holder's update",
        State::Intent => "u2: intent recorded",
        State::CounterA => "u3: counter_a written",
        State::Payload => "u4: payload half rewritten",
        State::PayloadDone => "u4: payload rewritten",
        State::Checksum => "u5: checksum written",
        State::Committed => "u6: committed, not yet tallied",
        State::Tallied => "u7: tallied",
    }
}

/// A death while holding whose report the books wait for.
#[derive(Debug, Clone)]
struct Death {
    inc: u32,
    pid: u32,
    /// Whether it had recorded its entry (else it died inside `lock`, or
    /// before its first store).
    recorded: bool,
    /// Whether it had set its marker and not cleared it.
    inside: bool,
    /// Whether it was past x1 (in unlock, or about to be).
    leaving: bool,
    /// The latest entrant recorded in the state it left.
    latest: u32,
    hash: u64,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seed: u64,
    pub workers: usize,
    pub payload_kib: usize,
    /// Random kills, and kills of the survivors at the end.
    pub kills: u64,
    pub final_kills: u64,
    pub aimed: u64,
    pub deaths_holding: u64,
    /// OwnerDied reports recorded in `T` (by workers and the final check).
    pub reports: u64,
    /// OwnerDied reports made to a holder that was killed before recording.
    pub unseen: u64,
    /// The library's counters at the end.
    pub lib_owner_deaths: u64,
    pub lib_recoveries: u64,
    pub lib_acquisitions: u64,
    /// Reports whose `previous_owner()` named a process other than the dead
    /// holder (possible only when it died inside `lock`).
    pub odd_names: u64,
    pub hangs: u64,
    pub lost: u64,
    pub doubled: u64,
    pub updates: u64,
    pub elapsed: Duration,
    /// Where holding victims died, and how many victims held nothing.
    pub kill_points: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// The one-line summary.
    pub fn line(&self) -> String {
        format!(
            "{} kills (+{} at the end) of {} workers, {} KiB payload: {} deaths while holding, \
             {} owner-died reports ({} recorded + {} to a holder killed before recording; \
             library owner_deaths {}), 0 missed, 0 double, {} stale previous_owner() names, \
             hangs {}, lost {}, doubled {}, {} ops in {:.1} s, seed {}",
            self.kills,
            self.final_kills,
            self.workers,
            self.payload_kib,
            self.deaths_holding,
            self.reports + self.unseen,
            self.reports,
            self.unseen,
            self.lib_owner_deaths,
            self.odd_names,
            self.hangs,
            self.lost,
            self.doubled,
            self.updates,
            self.elapsed.as_secs_f64(),
            self.seed
        )
    }

    /// Where the kills landed.
    pub fn kill_points_line(&self) -> String {
        let mut s = String::from("kill points:");
        for (k, v) in &self.kill_points {
            s += &format!(" {k}: {v};");
        }
        s.pop();
        s
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.line(), self.kill_points_line())
    }
}

/// A read-only view of the mutex file, to copy `T` while its holder is
/// stopped. The value's offset is the header's `data_offset` field (offset
/// 72, docs/design.md).
struct Peek {
    map: memmap2::MmapRaw,
    offset: usize,
}

impl Peek {
    fn open(path: &Path) -> Result<Peek, String> {
        let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut h = [0u8; 80];
        f.read_exact(&mut h).map_err(|e| e.to_string())?;
        if &h[..8] != b"RBSTMTX\x01" {
            return Err("not a robust-mutex file".into());
        }
        let offset = u64::from_ne_bytes(h[72..80].try_into().unwrap()) as usize;
        let map = memmap2::MmapOptions::new()
            .map_raw_read_only(&f)
            .map_err(|e| e.to_string())?;
        if offset % 8 != 0 || offset + size_of::<Torture>() > map.len() {
            return Err(format!("data offset {offset} does not fit the file"));
        }
        Ok(Peek { map, offset })
    }

    /// A copy of `T`. Meaningful only while the lock's holder is stopped.
    fn value(&self) -> Box<Torture> {
        let mut t = Box::new(<Torture as bytemuck::Zeroable>::zeroed());
        // SAFETY: `offset + size_of::<Torture>()` lies inside the mapping
        // (checked in `open`); the destination is our own box; they do not
        // overlap. Nobody writes the source meanwhile: its only writer, the
        // lock holder, is stopped (if another process wrote, mutual exclusion
        // failed and the torn copy fails the hash check).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(self.offset),
                std::ptr::from_mut::<Torture>(&mut *t).cast::<u8>(),
                size_of::<Torture>(),
            );
        }
        t
    }
}

struct Worker {
    pid: i32,
    inc: u32,
}

/// The live workers, by slot; killed and reaped on drop (also on a panic).
struct Pool(Vec<Option<Worker>>);

impl Drop for Pool {
    fn drop(&mut self) {
        for w in self.0.iter_mut().filter_map(Option::take) {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(w.pid, libc::SIGKILL);
                libc::waitpid(w.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn describe_exit(st: i32) -> String {
    if libc::WIFEXITED(st) {
        match libc::WEXITSTATUS(st) {
            EXIT_VIOLATION => "exited 2: an invariant was violated (see its stderr)".into(),
            EXIT_HANG => "exited 3: a lock wait hung (see its stderr)".into(),
            c => format!("exited {c} by itself"),
        }
    } else if libc::WIFSIGNALED(st) {
        format!("was killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("ended with wait status {st:#x}")
    }
}

fn in_process(pid: i32, tid: u32) -> bool {
    tid != 0 && Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

fn waitpid(pid: i32, flags: i32) -> Result<(i32, i32), String> {
    loop {
        let mut st = 0;
        // SAFETY: waits for our own child; `st` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        if r >= 0 {
            return Ok((r, st));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid({pid}): {e}"));
        }
    }
}

fn signal(pid: i32, sig: i32) -> Result<(), String> {
    // SAFETY: sends a signal to our own (unreaped) child.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// The supervisor's run.
struct Run<'a> {
    cfg: &'a Config,
    m: SharedMutex<Torture>,
    peek: Peek,
    pool: Pool,
    spawn: &'a dyn Fn() -> Command,
    path: &'a Path,
    next_inc: u32,
    rng: Rng,
    // The books.
    pending: Option<Death>,
    reports_seen: u32,
    lib_deaths_seen: u64,
    s: Summary,
}

impl Run<'_> {
    fn fail(&self, what: impl fmt::Display) -> String {
        format!(
            "{what} (after {} kills; seed {}: rerun with this seed to replay the same choices)",
            self.s.kills, self.cfg.seed
        )
    }

    fn start(&mut self, slot: usize) -> Result<(), String> {
        let inc = self.next_inc;
        if inc >= RECOVERED {
            return Err(self.fail("out of incarnation numbers"));
        }
        self.next_inc += 1;
        let seed = self.rng.next();
        let child = (self.spawn)()
            .env(ENV_PATH, self.path)
            .env(
                ENV_WORKER,
                format!("{inc} {slot} {seed} {}", std::process::id()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        // The child is reaped with waitpid; std's handle is not needed.
        self.pool.0[slot] = Some(Worker {
            pid: child.id() as i32,
            inc,
        });
        Ok(())
    }

    /// Fails if any worker ended by itself.
    fn check_alive(&mut self) -> Result<(), String> {
        for slot in 0..self.pool.0.len() {
            let Some(w) = &self.pool.0[slot] else {
                continue;
            };
            let (inc, pid) = (w.inc, w.pid);
            let (r, st) = waitpid(pid, libc::WNOHANG)?;
            if r == pid {
                self.pool.0[slot] = None;
                if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == EXIT_HANG {
                    self.s.hangs += 1;
                }
                return Err(self.fail(format!("worker {inc} (pid {pid}) {}", describe_exit(st))));
            }
        }
        Ok(())
    }

    /// Whether the lock word names a thread of process `pid`.
    fn holds(&self, pid: i32) -> bool {
        let tid = self.m.status().lock_word & FUTEX_TID_MASK;
        in_process(pid, tid)
    }

    fn stop(&mut self, slot: usize) -> Result<(), String> {
        let w = self.pool.0[slot].as_ref().unwrap();
        let (inc, pid) = (w.inc, w.pid);
        signal(pid, libc::SIGSTOP)?;
        let (_, st) = waitpid(pid, libc::WUNTRACED)?;
        if libc::WIFSTOPPED(st) {
            return Ok(());
        }
        self.pool.0[slot] = None;
        if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == EXIT_HANG {
            self.s.hangs += 1;
        }
        Err(self.fail(format!("worker {inc} (pid {pid}) {}", describe_exit(st))))
    }

    fn kill(&mut self, slot: usize) -> Result<(), String> {
        let w = self.pool.0[slot].take().unwrap();
        signal(w.pid, libc::SIGKILL)?;
        let (_, st) = waitpid(w.pid, 0)?;
        if libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL {
            Ok(())
        } else {
            Err(self.fail(format!(
                "worker {} (pid {}) {} before the SIGKILL",
                w.inc,
                w.pid,
                describe_exit(st)
            )))
        }
    }

    /// Books a stopped victim that holds the lock. Its state and the
    /// library's counters are frozen: their only writer is the victim.
    fn holding_death(&mut self, slot: usize) -> Result<(), String> {
        let w = self.pool.0[slot].as_ref().unwrap();
        let (inc, pid) = (w.inc, w.pid as u32);
        let t = self.peek.value();
        let state = classify(&t).map_err(|e| {
            self.fail(format!(
                "worker {inc} stopped holding the lock, in a state no step of \
                 the protocol leaves: {e}"
            ))
        })?;
        *self
            .s
            .kill_points
            .entry(kill_point(&t, inc, state))
            .or_default() += 1;
        let lib_deaths = self.m.status().counters.owner_deaths;
        let death = Death {
            inc,
            pid,
            recorded: entrant(t.entry) == inc,
            inside: hi(t.holder) == inc,
            leaving: t.left == u64::from(inc),
            latest: entrant(t.entry),
            hash: state_hash(&t),
        };
        self.settle(&t, lib_deaths, death.recorded)?;
        self.s.deaths_holding += 1;
        self.pending = Some(death);
        Ok(())
    }

    /// The books between two holding deaths (or the last one and the final
    /// acquisition): `t` and `lib_deaths` as of now; `recorded` says whether
    /// the latest acquisition recorded its entry.
    fn settle(&mut self, t: &Torture, lib_deaths: u64, recorded: bool) -> Result<(), String> {
        let reports = lo(t.entry);
        let d_rep = reports.wrapping_sub(self.reports_seen);
        let d_lib = lib_deaths.wrapping_sub(self.lib_deaths_seen);
        match &self.pending {
            None if d_rep != 0 || d_lib != 0 => {
                return Err(self.fail(format!(
                    "{d_rep} owner-died reports recorded (library: {d_lib}) with no \
                     death pending: a false or double report"
                )));
            }
            None => {}
            Some(h) if recorded && (d_rep != 1 || d_lib != 1) => {
                return Err(self.fail(format!(
                    "the death of worker {} while holding was followed by {d_rep} \
                     recorded reports (library: {d_lib}), not exactly 1: {}",
                    h.inc,
                    if d_rep == 0 {
                        "a missed report"
                    } else {
                        "a double report"
                    }
                )));
            }
            Some(h) if d_rep > 1 || d_lib > 1 || d_lib < u64::from(d_rep) => {
                return Err(self.fail(format!(
                    "the death of worker {} while holding was followed by {d_rep} \
                     recorded reports and {d_lib} library reports",
                    h.inc
                )));
            }
            Some(_) => {
                if d_rep == 0 {
                    // Reported to the acquirer we just found in `lock`: it
                    // could not record it, and its own death is next in line.
                    self.s.unseen += 1;
                } else {
                    self.check_report(t)?;
                }
            }
        }
        self.reports_seen = reports;
        self.lib_deaths_seen = lib_deaths;
        self.pending = None;
        Ok(())
    }

    /// The report just recorded must describe the pending death.
    fn check_report(&mut self, t: &Torture) -> Result<(), String> {
        let h = self.pending.clone().unwrap();
        if t.report_hash != h.hash {
            return Err(self.fail(format!(
                "worker {} recovered after the death of worker {} but did not find \
                 the state it left (someone wrote in between)",
                t.report_by, h.inc
            )));
        }
        if t.report_named != u64::from(h.latest) {
            return Err(self.fail(format!(
                "the report names entrant {}, the dead holder's state names {}",
                t.report_named, h.latest
            )));
        }
        let named = t.report_lib_pid as u32;
        if h.recorded && (!h.leaving || h.inside) {
            // `lock` returned to it, so the library had written its owner
            // record, and had not cleared it yet.
            if named != h.pid {
                return Err(self.fail(format!(
                    "previous_owner() named pid {named}; the dead holder was worker {} pid {}",
                    h.inc, h.pid
                )));
            }
        } else if h.recorded {
            // Died in `unlock`: the record is its own, or already cleared.
            if named != h.pid && named != 0 {
                return Err(self.fail(format!(
                    "previous_owner() named pid {named}; worker {} pid {} died in unlock",
                    h.inc, h.pid
                )));
            }
        } else if named != h.pid && named != 0 {
            // Died inside `lock`, maybe before the library wrote its owner
            // record: the record may still describe an earlier owner.
            self.s.odd_names += 1;
        }
        Ok(())
    }

    /// One kill: of whoever holds the lock if `aim` (and someone does), else
    /// of a random live worker. The slot stays empty until [`Run::refill`].
    /// Returns whether the victim held the lock.
    fn kill_one(&mut self, aim: bool) -> Result<bool, String> {
        let live: Vec<usize> = (0..self.pool.0.len())
            .filter(|&s| self.pool.0[s].is_some())
            .collect();
        if live.is_empty() {
            return Ok(false);
        }
        let mut slot = live[self.rng.below(live.len() as u64) as usize];
        if aim {
            let tid = self.m.status().lock_word & FUTEX_TID_MASK;
            let holder = live.iter().copied().find(|&s| {
                self.pool.0[s]
                    .as_ref()
                    .is_some_and(|w| in_process(w.pid, tid))
            });
            if let Some(s) = holder {
                slot = s;
                self.s.aimed += 1;
            }
        }
        self.stop(slot)?;
        let pid = self.pool.0[slot].as_ref().unwrap().pid;
        let holding = self.holds(pid);
        if holding {
            self.holding_death(slot)?;
        } else {
            *self.s.kill_points.entry("not holding").or_default() += 1;
        }
        self.kill(slot)?;
        self.s.kills += 1;
        Ok(holding)
    }

    /// Respawns the killed workers.
    fn refill(&mut self) -> Result<(), String> {
        for slot in 0..self.pool.0.len() {
            if self.pool.0[slot].is_none() {
                self.start(slot)?;
            }
        }
        Ok(())
    }

    /// Stops every worker, books the one holding (if any), kills them all.
    fn kill_all(&mut self) -> Result<(), String> {
        for slot in 0..self.pool.0.len() {
            self.stop(slot)?;
        }
        for slot in 0..self.pool.0.len() {
            let pid = self.pool.0[slot].as_ref().unwrap().pid;
            if self.holds(pid) {
                self.holding_death(slot)?;
            }
        }
        for slot in 0..self.pool.0.len() {
            self.kill(slot)?;
            self.s.final_kills += 1;
        }
        Ok(())
    }

    /// The final acquisition, with the same checks as a worker's, and the
    /// books closed.
    fn finish(&mut self) -> Result<(), String> {
        let pid = std::process::id();
        let (mut g, died) = enter(&self.m, SUPERVISOR_INC, pid, None)
            .map_err(|f| self.fail(format!("final lock: {f}")))?;
        if died != self.pending.is_some() {
            let e = match &self.pending {
                Some(h) => format!(
                    "worker {} died holding, but the final lock was Clean",
                    h.inc
                ),
                None => "the final lock reported an owner death nobody died".into(),
            };
            return Err(self.fail(e));
        }
        let t: Torture = *g;
        live(leave(&mut g, SUPERVISOR_INC, &mut Live(None)));
        drop(g);
        // Every worker is dead: the counters stay as they are.
        let lib = self.m.status().counters;
        self.settle(&t, lib.owner_deaths, true)?;
        let total = u64::from(lo(t.entry));
        if self.s.deaths_holding != total + self.s.unseen {
            return Err(self.fail(format!(
                "{} deaths while holding, but {total} reports recorded + {} unseen",
                self.s.deaths_holding, self.s.unseen
            )));
        }
        let tally = tallied(&t);
        self.s.reports = total;
        self.s.lib_owner_deaths = lib.owner_deaths;
        self.s.lib_recoveries = lib.recoveries;
        self.s.lib_acquisitions = lib.acquisitions;
        self.s.updates = t.counter_b;
        self.s.lost = tally.saturating_sub(t.counter_b);
        self.s.doubled = t.counter_b.saturating_sub(tally);
        if self.s.lost + self.s.doubled != 0 || t.counter_a != t.counter_b {
            return Err(self.fail(format!(
                "counter {} / {}, tallies {tally}: {} lost, {} doubled",
                t.counter_a, t.counter_b, self.s.lost, self.s.doubled
            )));
        }
        Ok(())
    }
}

/// Runs the torture on a new file at `path`. `spawn` makes the command that
/// re-executes this program; the supervisor adds the worker's environment.
/// Returns the summary, or what went wrong (with the seed).
pub fn supervise(
    path: &Path,
    cfg: &Config,
    spawn: &dyn Fn() -> Command,
) -> Result<Summary, String> {
    assert!(
        (1..=MAX_SLOTS).contains(&cfg.workers),
        "1..={MAX_SLOTS} workers"
    );
    assert!(
        (1..=MAX_PAYLOAD_KIB).contains(&cfg.payload_kib),
        "payload 1..={MAX_PAYLOAD_KIB} KiB"
    );
    let start = Instant::now();
    let m = SharedMutex::<Torture>::open(path).map_err(|e| e.to_string())?;
    {
        let Ok(Acquired::Clean(mut g)) = m.lock_timeout(HANG) else {
            return Err("a new file must lock clean".into());
        };
        if g.entry != 0 || g.payload_words != 0 {
            return Err(format!("{} is not a new file", path.display()));
        }
        let len = cfg.payload_kib * 1024 / 8;
        put(&mut g.payload_words, len as u64);
        for i in 0..len {
            put(&mut g.payload[i], pattern(0, i));
        }
        put(&mut g.checksum, checksum_of(0, len));
        put(&mut g.entry, pack(SUPERVISOR_INC, 0));
    }
    let lib_deaths_seen = m.status().counters.owner_deaths;
    let mut run = Run {
        cfg,
        m,
        peek: Peek::open(path)?,
        pool: Pool((0..cfg.workers).map(|_| None).collect()),
        spawn,
        path,
        next_inc: SUPERVISOR_INC + 1,
        rng: Rng::new(cfg.seed),
        pending: None,
        reports_seen: 0,
        lib_deaths_seen,
        s: Summary {
            seed: cfg.seed,
            workers: cfg.workers,
            payload_kib: cfg.payload_kib,
            ..Summary::default()
        },
    };
    let max_pause = cfg.max_pause.as_micros() as u64;
    let mut burst = false;
    while run.s.kills < cfg.kills {
        if start.elapsed() > cfg.deadline {
            return Err(run.fail(format!(
                "HANG: the run did not finish within its deadline of {:?}",
                cfg.deadline
            )));
        }
        run.check_alive()?;
        if !burst {
            run.refill()?;
            // The torture's randomness, not synchronisation.
            std::thread::sleep(Duration::from_micros(run.rng.below(max_pause + 1)));
        }
        // Half the kills aim at the holder. After a death while holding,
        // one time in four the next kill follows at once (before the dead
        // one is even respawned) and aims at the new holder, which is then
        // most likely recovering.
        let aim = burst || run.rng.below(2) == 0;
        let holding = run.kill_one(aim)?;
        burst = holding && run.rng.below(4) == 0;
    }
    run.refill()?;
    run.kill_all()?;
    run.finish()?;
    run.s.elapsed = start.elapsed();
    Ok(run.s)
}

/// A seed from the clock, for runs not given one.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
