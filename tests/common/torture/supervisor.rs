//! The supervisor: starts the workers, freezes and kills them at random
//! (SIGSTOP, look at the lock word and copy `T` while the victim is stopped,
//! SIGKILL), keeps the books of deaths while holding and their reports, and
//! makes the final acquisition and check.

use super::protocol::{
    Live, MAX_PAYLOAD_KIB, MAX_SLOTS, NAME_ANY, NAME_OR_NONE, NAME_STRICT, RECOVERED, Rng, State,
    Torture, checksum_of, classify, entrant, hi, leave, live, lo, pack, pattern, put, state_hash,
    tallied,
};
use super::worker::{ENV_PATH, ENV_WORKER, EXIT_HANG, EXIT_VIOLATION, HANG, LIVES, enter};
use robust_mutex::{Acquired, SharedMutex};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::mem::offset_of;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The supervisor's incarnation number (workers count from 2).
const SUPERVISOR_INC: u32 = 1;

const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

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
    /// A worker panics inside its critical section once in this many
    /// updates (0: never).
    pub panic_one_in: u64,
    /// A worker forks while holding once in this many updates (0: never);
    /// the child drops its inherited guard and exits.
    pub fork_one_in: u64,
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
            panic_one_in: 0,
            fork_one_in: 0,
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

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seed: u64,
    pub workers: usize,
    pub payload_kib: usize,
    pub panic_one_in: u64,
    /// Random kills, and kills of the survivors at the end.
    pub kills: u64,
    pub final_kills: u64,
    pub aimed: u64,
    pub deaths_holding: u64,
    /// Planned panics inside the critical section (each a death while
    /// holding), and announced panics whose worker was killed before the
    /// panic released the lock (counted as kills).
    pub panics: u64,
    pub voided_panics: u64,
    /// Forks while holding whose child dropped its inherited guard.
    pub forks: u64,
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
            "{} kills (+{} at the end) of {} workers, {} KiB payload, panics {}: {} deaths while \
             holding ({} killed + {} panicked; {} more announced a panic and were killed first), \
             {} owner-died reports ({} recorded + {} to a holder killed before recording; \
             library owner_deaths {}), 0 missed, 0 double, {} stale previous_owner() names, \
             hangs {}, lost {}, doubled {}, {} forks while holding changed nothing, \
             {} ops in {:.1} s, seed {}",
            self.kills,
            self.final_kills,
            self.workers,
            self.payload_kib,
            if self.panic_one_in == 0 {
                "off".to_string()
            } else {
                format!("1 in {} updates", self.panic_one_in)
            },
            self.deaths_holding + self.panics,
            self.deaths_holding,
            self.panics,
            self.voided_panics,
            self.reports + self.unseen,
            self.reports,
            self.unseen,
            self.lib_owner_deaths,
            self.odd_names,
            self.hangs,
            self.lost,
            self.doubled,
            self.forks,
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

/// A view of the mutex file, to copy `T` while its holder is stopped, and
/// to write that holder's obituary (the books, outside the hashed state)
/// before it is killed. The value's offset is the header's `data_offset` field (offset
/// 72, docs/design.md).
struct Peek {
    map: memmap2::MmapRaw,
    offset: usize,
}

impl Peek {
    fn open(path: &Path) -> Result<Peek, String> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        let mut h = [0u8; 80];
        f.read_exact(&mut h).map_err(|e| e.to_string())?;
        if &h[..8] != b"RBSTMTX\x01" {
            return Err("not a robust-mutex file".into());
        }
        let offset = u64::from_ne_bytes(h[72..80].try_into().unwrap()) as usize;
        let map = memmap2::MmapOptions::new()
            .map_raw(&f)
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

impl Peek {
    /// One 8-byte store into the field at `field` of `T`. Only while the
    /// lock's holder is stopped.
    fn put(&self, field: usize, v: u64) {
        assert!(field % 8 == 0 && field + 8 <= size_of::<Torture>());
        // SAFETY: inside the mapping (checked in `open` and above), 8-byte
        // aligned (the value's offset and the field's are multiples of 8);
        // the holder, which could write `T` meanwhile, is stopped, and the
        // books' fields are written by no one else then.
        unsafe {
            std::ptr::write_volatile(
                self.map.as_mut_ptr().add(self.offset + field).cast::<u64>(),
                v,
            );
        }
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
        if inc + LIVES >= RECOVERED {
            return Err(self.fail("out of incarnation numbers"));
        }
        self.next_inc += LIVES;
        let seed = self.rng.next();
        let child = (self.spawn)()
            .env(ENV_PATH, self.path)
            .env(
                ENV_WORKER,
                format!(
                    "{inc} {slot} {seed} {} {} {}",
                    std::process::id(),
                    self.cfg.panic_one_in,
                    self.cfg.fork_one_in
                ),
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

    /// Books a stopped victim that holds the lock, and writes its obituary
    /// into `T` for the next locker to check. Its state and the library's
    /// counters are frozen: their only writer is the victim.
    fn holding_death(&mut self, slot: usize) -> Result<(), String> {
        let w = self.pool.0[slot].as_ref().unwrap();
        let t = self.peek.value();
        // Its current incarnation (a planned panic starts the next one).
        let inc = w.inc.max(t.lives[slot] as u32);
        let pid = w.pid as u32;
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
        let tid = self.m.status().lock_word & FUTEX_TID_MASK;
        let recorded = entrant(t.entry) == inc;
        let inside = hi(t.holder) == inc;
        let leaving = t.left == u64::from(inc);
        let rule = if recorded && (!leaving || inside) {
            // `lock` returned to it: its owner record is written.
            NAME_STRICT
        } else if recorded {
            // In `unlock`: the record is its own, or already cleared.
            NAME_OR_NONE
        } else {
            // Inside `lock`, maybe before the library wrote its record.
            NAME_ANY
        };
        let (seq, done) = (lo(t.obit), lo(t.obit_done));
        let reports = lo(t.entry);
        let books = u64::from(reports) + self.s.unseen;
        // Every reported obituary is a recorded report, or one made to a
        // holder killed before recording it; this one may be such a holder.
        if u64::from(done) == books + 1 && !recorded {
            self.s.unseen += 1; // it reported the obituary, not yet its entry
        } else if u64::from(done) != books {
            return Err(self.fail(format!(
                "{done} deaths reported, but {reports} reports recorded and {} made \
                 to holders killed before recording: a missed or double report",
                self.s.unseen
            )));
        }
        let next = match seq - done {
            0 => seq + 1,
            1 if hi(t.obit) == inc => {
                // Its own panic, announced; killed before the panic
                // released the lock: a kill, not a panic.
                if !recorded {
                    return Err(self.fail(format!("worker {inc} announced a panic unrecorded")));
                }
                self.s.voided_panics += 1;
                seq
            }
            1 => {
                // The lock was handed to it with an OwnerDied report for
                // the death in `obit`, and it was killed before it could
                // report it.
                if recorded {
                    return Err(self.fail(format!(
                        "worker {inc} recorded its entry without reporting obituary {seq}: \
                         a missed report"
                    )));
                }
                self.s.unseen += 1;
                self.peek
                    .put(offset_of!(Torture, obit_done), u64::from(seq));
                seq + 1
            }
            n => {
                return Err(self.fail(format!(
                    "{n} deaths while holding not yet reported: missed reports"
                )));
            }
        };
        self.peek
            .put(offset_of!(Torture, obit_hash), state_hash(&t));
        self.peek.put(offset_of!(Torture, obit_who), pack(pid, tid));
        self.peek.put(offset_of!(Torture, obit_rule), rule);
        self.peek.put(offset_of!(Torture, obit), pack(inc, next));
        self.s.deaths_holding += 1;
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
        let (mut g, _) = enter(&self.m, SUPERVISOR_INC, pid, None)
            .map_err(|f| self.fail(format!("final lock: {f}")))?;
        let t: Torture = *g;
        live(leave(&mut g, SUPERVISOR_INC, &mut Live(None)));
        drop(g);
        // Every worker is dead: the counters stay as they are.
        let lib = self.m.status().counters;
        let (deaths, done) = (u64::from(lo(t.obit)), u64::from(lo(t.obit_done)));
        let total = u64::from(lo(t.entry));
        self.s.panics = deaths - self.s.deaths_holding;
        if done != deaths || deaths != total + self.s.unseen {
            return Err(self.fail(format!(
                "{deaths} deaths while holding ({} killed), {done} reported: {total} \
                 reports recorded + {} unseen",
                self.s.deaths_holding, self.s.unseen
            )));
        }
        if lib.owner_deaths < total || lib.owner_deaths > deaths {
            return Err(self.fail(format!(
                "library owner_deaths {}: {total} reports recorded, {deaths} deaths",
                lib.owner_deaths
            )));
        }
        let tally = tallied(&t);
        self.s.reports = total;
        self.s.odd_names = t.odd_names;
        self.s.forks = t.forks;
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
    let mut run = Run {
        cfg,
        m,
        peek: Peek::open(path)?,
        pool: Pool((0..cfg.workers).map(|_| None).collect()),
        spawn,
        path,
        next_inc: SUPERVISOR_INC + 1,
        rng: Rng::new(cfg.seed),
        s: Summary {
            seed: cfg.seed,
            workers: cfg.workers,
            payload_kib: cfg.payload_kib,
            panic_one_in: cfg.panic_one_in,
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
