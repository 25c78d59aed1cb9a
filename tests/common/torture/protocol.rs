//! The update protocol: the shared value [`Torture`], its steps (each one
//! 8-byte volatile store), [`classify`] of the states a dead holder can leave,
//! the deterministic repair, and [`check_protocol`], which explores every
//! death point of chains of holders without processes or timing.

use std::mem::offset_of;
use std::time::{Duration, Instant};

/// Worker slots; the tally has one entry per slot.
pub const MAX_SLOTS: usize = 64;
/// The largest payload `--payload-kib` accepts.
pub const MAX_PAYLOAD_KIB: usize = 64;
const MAX_WORDS: usize = MAX_PAYLOAD_KIB * 1024 / 8;

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
    /// The latest obituary: `(inc of the dead holder, sequence number)`,
    /// written by a worker about to panic holding the lock (its last act),
    /// or by the supervisor while a holding victim is stopped. Not part of
    /// the protocol's state (not hashed): the torture's own books.
    pub obit: u64,
    /// `(pid, tid)` of the dead holder.
    pub obit_who: u64,
    /// [`state_hash`] of the state it left.
    pub obit_hash: u64,
    /// How strictly `previous_owner()` must name it: [`NAME_STRICT`],
    /// [`NAME_OR_NONE`], [`NAME_ANY`].
    pub obit_rule: u64,
    /// The sequence number of the latest obituary reported (by a recoverer,
    /// just before it records its entry; or by the supervisor for a report
    /// made to a holder it killed before it could record one).
    pub obit_done: u64,
    /// Reports whose `previous_owner()` named neither the dead holder nor
    /// nobody (allowed only under [`NAME_ANY`]).
    pub odd_names: u64,
    /// Forks made while holding, each checked to change nothing.
    pub forks: u64,
    /// Per slot, the worker's current incarnation (a panic ends one; the
    /// worker goes on as the next), written by the worker outside the lock.
    pub lives: [u64; MAX_SLOTS],
    /// Per slot `(count, low 32 bits of the last target committed)`.
    pub tally: [u64; MAX_SLOTS],
    pub payload: [u64; MAX_WORDS],
}

/// `previous_owner()` must name the dead holder's pid and tid.
pub(super) const NAME_STRICT: u64 = 0;
/// Its pid, or nobody (it died in `unlock`).
pub(super) const NAME_OR_NONE: u64 = 1;
/// Anyone (it died inside `lock`, maybe before the library wrote its
/// record: see the stale-name library bug).
pub(super) const NAME_ANY: u64 = 2;

pub(super) fn pack(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}
pub(super) fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}
pub(super) fn lo(v: u64) -> u32 {
    v as u32
}
/// In `entry`: the entrant got OwnerDied. Until it sets its own marker, the
/// marker still names the dead holder (or nobody).
pub(super) const RECOVERED: u32 = 1 << 31;
pub(super) fn entrant(entry: u64) -> u32 {
    hi(entry) & !RECOVERED
}
pub(super) fn recovered(entry: u64) -> bool {
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
pub(super) fn put(dst: &mut u64, v: u64) {
    // SAFETY: `dst` is a live, aligned, exclusive reference.
    unsafe { std::ptr::write_volatile(dst, v) }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Payload word `i` for counter value `v`.
pub(super) fn pattern(v: u64, i: usize) -> u64 {
    mix(v.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64))
}

fn fold(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17)
}

/// The checksum of the payload for counter value `v`.
pub(super) fn checksum_of(v: u64, len: usize) -> u64 {
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
/// The books (obituaries, lives) are left out: they are not protocol state,
/// and the supervisor writes some of them while the holder is stopped.
pub fn state_hash(t: &Torture) -> u64 {
    let len = (t.payload_words as usize).min(MAX_WORDS);
    let all: &[u64] = bytemuck::cast_slice(bytemuck::bytes_of(t));
    let used = all.len() - MAX_WORDS + len;
    let books = offset_of!(Torture, obit) / 8..offset_of!(Torture, tally) / 8;
    all[..books.start]
        .iter()
        .chain(&all[books.end..used])
        .fold(0x8422_2325_cbf2_9ce4, |h, w| fold(h, *w))
}

pub(super) fn tallied(t: &Torture) -> u64 {
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
pub(super) trait Steps {
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
pub(super) struct Live<'r>(pub(super) Option<&'r mut Rng>);

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

/// Live stores that stop (as if killed) after `left` of them: a worker that
/// will panic at that step of its update.
pub(super) struct Planned<'r> {
    pub(super) live: Live<'r>,
    pub(super) left: usize,
}

impl Steps for Planned<'_> {
    fn put(&mut self, dst: &mut u64, v: u64) -> Result<(), Killed> {
        if self.left == 0 {
            return Err(Killed);
        }
        self.left -= 1;
        self.live.put(dst, v)
    }
    fn pause(&mut self, one_in: u64) {
        self.live.pause(one_in);
    }
    fn below(&mut self, n: u64) -> u64 {
        self.live.below(n)
    }
}

/// How many stores of its update a worker that will panic makes first:
/// each of the update's steps about equally often (before u1, after u1,
/// u2, u3, in the middle of u4, after u4, u5, u6, u7, u8).
pub(super) fn panic_point(rng: &mut Rng, len: usize) -> usize {
    match rng.below(10) {
        n @ 0..=3 => n as usize,
        4 => 3 + 1 + rng.below(len.saturating_sub(1).max(1) as u64) as usize,
        n => len + n as usize - 2,
    }
}

/// The obituary a worker writes for itself just before it panics holding
/// the lock, after its last store to the protocol's state.
pub(super) fn own_obituary(t: &mut Torture, inc: u32, pid: u32, tid: u32) {
    let hash = state_hash(t);
    let seq = lo(t.obit) + 1;
    put(&mut t.obit_hash, hash);
    put(&mut t.obit_who, pack(pid, tid));
    put(&mut t.obit_rule, NAME_STRICT);
    put(&mut t.obit, pack(inc, seq)); // the announcement
}

/// Live steps never fail.
pub(super) fn live<T>(r: Result<T, Killed>) -> T {
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
pub(super) fn record_clean(
    t: &mut Torture,
    inc: u32,
    pid: u32,
    st: &mut impl Steps,
) -> Result<(), Killed> {
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
pub(super) fn record_recovery(
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
    st.put(&mut t.obit_done, u64::from(lo(t.obit)))?; // the obituary is reported
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
pub(super) fn update(
    t: &mut Torture,
    inc: u32,
    slot: usize,
    st: &mut impl Steps,
) -> Result<(), Killed> {
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
pub(super) fn leave(t: &mut Torture, inc: u32, st: &mut impl Steps) -> Result<(), Killed> {
    st.pause(0);
    st.put(&mut t.left, u64::from(inc))?;
    st.pause(64);
    st.put(&mut t.holder, 0)?;
    st.pause(64);
    Ok(())
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
pub(super) fn dawdle(rng: &mut Rng) {
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
