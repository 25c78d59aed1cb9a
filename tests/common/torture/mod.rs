//! Crash torture, in one place: `tests/mutex/torture.rs` runs it short
//! (about 200 kills, in `cargo test`) and `examples/torture.rs` runs it long
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
//! * **Every death while holding is reported exactly once.** Each death
//!   while holding gets an *obituary* in `T` (fields outside the hashed
//!   state) before anyone else can take the lock: a worker about to panic
//!   writes its own (incarnation, pid, tid, hash of the state it leaves) as
//!   its last act; for a kill, the supervisor writes it while the victim is
//!   stopped, from the lock word and its copy of `T`. Obituaries are
//!   numbered; a recoverer marks the one it reports (`obit_done`) in the
//!   store just before its entry. So the next locker checks, in its own
//!   critical section: Clean with an obituary pending is a missed report;
//!   OwnerDied with none pending is a false or double report; OwnerDied must
//!   find exactly the state hashed in the obituary. Only one case leaves no
//!   record: the acquirer that got the OwnerDied is itself killed before
//!   recording it (the supervisor sees that: it holds the lock but is not
//!   the latest entrant). Then the report was made, to a process that could
//!   not write it down (counted as `unseen`; the supervisor marks the
//!   obituary reported), and that acquirer's own obituary is next. A worker
//!   killed after announcing its panic but before the panic released the
//!   lock died by the kill: its obituary stays, rewritten as a kill's. At
//!   every holding death and at the end: obituaries reported = reports
//!   recorded + unseen, and the library's `owner_deaths` lies between the
//!   recorded reports and the deaths.
//! * **Panics.** With `panic_one_in` N, a worker panics inside the critical
//!   section once in N updates, at a random step of its update (before u1,
//!   after any of u1..u8, or in the middle of the payload), after writing
//!   its obituary; `catch_unwind` outside the guard's scope catches it, the
//!   incarnation ends (a panic is a death) and the process goes on as the
//!   next one (it publishes its incarnation in `lives`, read by the
//!   supervisor while it is stopped). Any other panic fails the worker.
//! * **Who is named.** `previous_owner()` must name the dead holder's pid
//!   and tid whenever `lock` had returned to it (a panicking holder always),
//!   and that pid or nobody if it died in `unlock`. If it died inside
//!   `lock`, the library may name an earlier owner whose death was already
//!   reported: a library bug (see `tests/mutex/torture.rs`), counted as
//!   "stale previous_owner() names".
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
//!
//! # The code
//!
//! * `protocol.rs`: `T`, the steps above, `classify`, the repair and
//!   `check_protocol`;
//! * `worker.rs`: the worker process and `enter` (lock, check, record,
//!   repair), which the supervisor's final acquisition uses too;
//! * `supervisor.rs`: spawning, freezing and killing workers, the books, and
//!   the final check.
#![allow(dead_code)]

mod protocol;
mod supervisor;
mod worker;

// What the test and the example use; each uses a part.
#[allow(unused_imports)]
pub use protocol::{MAX_PAYLOAD_KIB, MAX_SLOTS, check_protocol};
#[allow(unused_imports)]
pub use supervisor::{Config, Summary, clock_seed, supervise};
pub use worker::worker_if_asked;
