//! A bounded job queue shared by processes through condition waits, that
//! survives SIGKILL of any of them at any moment: no job lost, none run
//! twice.
//!
//! ```text
//! cargo run --release --example job_queue -- [--producers N] [--consumers M]
//!     [--jobs J] [--kill] [--max-pause-us U] [--seed S] [--path P] [--short]
//! ```
//! The queue is one [`SharedMutex<Queue>`] file. Producer processes wait
//! while it is full, allocate a job id and push it; consumer processes wait
//! while it is empty, pop a job and "run" it by recording it in the file.
//! Both use [`Guard::wait_while`] and `notify_one`/`notify_all`. The
//! example re-executes itself as each of them (`job_queue producer ...`).
//! A job id is allocated in the same update that pushes it, so a producer
//! killed while it waits for room loses no id.
//!
//! One condition serves both "not full" and "not empty", so a `notify_one`
//! may wake a waiter of the other kind. It is used only when any waiter it
//! wakes can act (the queue neither empty nor full after the change), and
//! acting notifies again, so the wake-up is passed on; otherwise the
//! change is announced with `notify_all`, while the lock is still held (a
//! notifier killed before it notifies is then a holder's death, which wakes
//! the waiters). After a repair too: the dead
//! holder's change may now be complete, and it notified nobody.
//!
//! Every push and pop is journaled: the whole change is written to a
//! one-entry journal, the journal is armed (one store: the commit point),
//! the change is applied, the journal is disarmed. Whoever gets
//! [`Acquired::OwnerDied`] redoes an armed journal (every value in it is
//! absolute, so redoing it twice is doing it once), then marks the lock
//! consistent.
//!
//! With `--kill` the parent SIGKILLs random producers, consumers and the
//! lock's current holder at random moments and starts replacements, until
//! `--jobs` jobs are done; then it closes the queue (`notify_all`) and
//! checks that every job allocated was run exactly once and the queue is
//! empty. It prints a summary (a `summary:` line of `key=value` figures)
//! and exits 1 with the command that replays its random choices on any
//! violation. Defaults: 4 producers, 4 consumers, 100,000 jobs, pauses
//! of up to 2,000 µs, a seed from the clock, a temporary directory.
//! `--short` is the small run `cargo test` makes: 2 producers, 3
//! consumers, 2,000 jobs (10,000 with `--kill`).

use bytemuck::{Pod, Zeroable};
use robust_mutex::{Acquired, Guard, LockError, SharedMutex};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{Ordering, compiler_fence};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// The queue's capacity, in jobs.
const CAP: u64 = 8;
/// The most jobs a run can have (one state byte each in the file: 1 MiB).
const MAX_JOBS: usize = 1 << 20;

/// A job's state byte: never allocated.
const FREE: u8 = 0;
/// Allocated and in the queue.
const QUEUED: u8 = 1;
/// Run once; each further run adds one.
const DONE: u8 = 2;

/// The journal's `op`: nothing in flight.
const NONE: u64 = 0;
/// A push in flight (the journal holds its result).
const PUSH: u64 = 1;
/// A pop in flight.
const POP: u64 = 2;

/// No progress for this long is a hang (a watchdog, never a timing
/// assertion: a correct run makes progress every few milliseconds).
const WATCHDOG: Duration = Duration::from_secs(60);

/// One queue operation: what it writes, as absolute values, so that
/// applying it again changes nothing.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Journal {
    /// [`NONE`], [`PUSH`] or [`POP`]; written after the rest (the commit
    /// point), cleared after the operation is applied.
    op: u64,
    /// The job pushed or popped.
    job: u64,
    /// The slot a push writes.
    slot: u64,
    /// The queue's fields after the operation.
    head: u64,
    tail: u64,
    next_id: u64,
    done: u64,
    /// The job's state byte after the operation.
    state: u64,
}

/// The shared value (1 MiB): only ever accessed in place, never copied.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Queue {
    /// Jobs popped so far (the next pop takes `slots[head % CAP]`).
    head: u64,
    /// Jobs pushed so far (the next push writes `slots[tail % CAP]`).
    tail: u64,
    /// The next job id to allocate.
    next_id: u64,
    /// How many jobs the run allocates in all.
    target: u64,
    /// Jobs run.
    done: u64,
    /// Nonzero once the parent closed the queue: everyone leaves.
    closing: u64,
    /// `OwnerDied` outcomes repaired, and how many of them found a push or
    /// a pop in flight (and finished it).
    repairs: u64,
    finished_push: u64,
    finished_pop: u64,
    /// Impossible states met (a job allocated or run twice, a bad journal).
    violations: u64,
    journal: Journal,
    slots: [u64; CAP as usize],
    /// One byte per job id: [`FREE`], [`QUEUED`], [`DONE`] (+1 per extra run).
    state: [u8; MAX_JOBS],
}

impl Queue {
    fn len(&self) -> u64 {
        self.tail.wrapping_sub(self.head)
    }

    /// Allocates the next job id and pushes it; `step` runs between the
    /// stores (a random pause in `--kill` mode, so kills land inside).
    fn push(&mut self, step: &mut dyn FnMut()) -> u64 {
        let job = self.next_id;
        if self.state[job as usize] != FREE {
            self.violation(&format!("job {job} allocated twice"));
        }
        self.commit(
            Journal {
                op: PUSH,
                job,
                slot: self.tail % CAP,
                head: self.head,
                tail: self.tail + 1,
                next_id: job + 1,
                done: self.done,
                state: u64::from(QUEUED),
            },
            step,
        );
        job
    }

    /// Pops the oldest job and runs it (records it as run).
    fn pop(&mut self, step: &mut dyn FnMut()) -> u64 {
        let slot = self.head % CAP;
        let job = self.slots[slot as usize];
        let Some(&was) = self.state.get(job as usize) else {
            self.violation(&format!("slot {slot} holds job {job}, never allocated"));
            self.head += 1; // drop it
            return job;
        };
        if was != QUEUED {
            self.violation(&format!("job {job} popped in state {was}: run twice"));
        }
        self.commit(
            Journal {
                op: POP,
                job,
                slot,
                head: self.head + 1,
                tail: self.tail,
                next_id: self.next_id,
                done: self.done + 1,
                state: u64::from(was.saturating_add(1)),
            },
            step,
        );
        job
    }

    /// Journals `entry`, arms the journal, applies the entry, disarms it.
    /// The fences keep the compiler from moving a store across the commit
    /// point: a SIGKILL lands between any two instructions, and what this
    /// process stored before it stays stored (the mapping is shared).
    fn commit(&mut self, entry: Journal, step: &mut dyn FnMut()) {
        self.journal = Journal { op: NONE, ..entry };
        compiler_fence(Ordering::SeqCst);
        step();
        self.journal.op = entry.op;
        compiler_fence(Ordering::SeqCst);
        self.apply(&entry, step);
        compiler_fence(Ordering::SeqCst);
        step();
        self.journal.op = NONE;
    }

    /// Writes what `e` says; doing it twice is doing it once.
    fn apply(&mut self, e: &Journal, step: &mut dyn FnMut()) {
        if e.op == PUSH {
            self.slots[e.slot as usize] = e.job;
            step();
        }
        self.state[e.job as usize] = e.state as u8;
        step();
        self.head = e.head;
        step();
        self.tail = e.tail;
        step();
        self.next_id = e.next_id;
        step();
        self.done = e.done;
    }

    /// The repair after an owner death: finishes the operation in flight,
    /// if any. Idempotent: a repairer killed halfway leaves the journal
    /// armed, and the next one does it again.
    fn repair(&mut self) {
        self.repairs += 1;
        let e = self.journal;
        if e.op == NONE {
            return;
        }
        let valid = (e.op == PUSH || e.op == POP)
            && (e.job as usize) < MAX_JOBS
            && e.slot < CAP
            && e.state <= u64::from(u8::MAX);
        if !valid {
            self.violation(&format!("the journal holds nonsense: {e:?}"));
        } else {
            self.apply(&e, &mut || {});
            if e.op == PUSH {
                self.finished_push += 1;
            } else {
                self.finished_pop += 1;
            }
        }
        compiler_fence(Ordering::SeqCst);
        self.journal.op = NONE;
    }

    fn violation(&mut self, what: &str) {
        self.violations += 1;
        eprintln!("job_queue: pid {}: VIOLATION: {what}", std::process::id());
    }
}

// ---------------------------------------------------------------- locking

/// The guard, repaired first if its previous holder died. After a repair
/// everyone is woken: the dead holder's change may now be complete, and it
/// notified nobody.
fn repaired<'a>(m: &'a SharedMutex<Queue>, a: Acquired<Guard<'a, Queue>>) -> Guard<'a, Queue> {
    match a {
        Acquired::Clean(g) => g,
        Acquired::OwnerDied(mut r) => {
            r.repair();
            let g = r.mark_consistent();
            m.notify_all();
            g
        }
    }
}

fn locked(m: &SharedMutex<Queue>) -> Result<Guard<'_, Queue>, LockError> {
    Ok(repaired(m, m.lock()?))
}

/// The parent's lock: a lock held for [`WATCHDOG`] is a hang.
fn parent_locked(m: &SharedMutex<Queue>) -> Result<Guard<'_, Queue>, String> {
    match m.lock_timeout(WATCHDOG) {
        Ok(a) => Ok(repaired(m, a)),
        Err(e) => Err(format!(
            "the parent's lock: {e} (status: {})",
            m.status().state
        )),
    }
}

/// Waits while `blocked` holds; repairs after any owner death met on the
/// way (the condition is not evaluated on a half-written value).
fn wait_while_repairing<'a>(
    m: &'a SharedMutex<Queue>,
    mut g: Guard<'a, Queue>,
    mut blocked: impl FnMut(&Queue) -> bool,
) -> Result<Guard<'a, Queue>, LockError> {
    loop {
        match g.wait_while(|q| blocked(q))? {
            Acquired::Clean(g) => return Ok(g),
            died => g = repaired(m, died),
        }
    }
}

// ------------------------------------------------- producers and consumers

/// `job_queue producer|consumer PATH SEED PARENT-PID KILL-MODE`.
fn child(args: &[String]) -> Result<(), String> {
    let [role, path, seed, parent, kill] = args else {
        return Err(format!("bad child arguments {args:?}"));
    };
    let number = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let (seed, parent, kill) = (number(seed)?, number(parent)?, kill == "1");
    // Die with the parent, whatever happens to it.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("prctl: {e}"))?;
    if u64::from(nix::unistd::getppid().as_raw().unsigned_abs()) != parent {
        return Ok(()); // the parent is gone already
    }
    let m = SharedMutex::<Queue>::open(path).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    // In --kill mode, pauses between the stores of an update, so that the
    // parent's kills of the holder land inside one.
    let mut step = move || {
        if kill {
            dawdle(&mut rng);
        }
    };
    let r = match role.as_str() {
        "producer" => produce(&m, &mut step),
        "consumer" => consume(&m, &mut step),
        _ => return Err(format!("unknown role {role}")),
    };
    r.map_err(|e| format!("{role}: {e}"))
}

fn produce(m: &SharedMutex<Queue>, step: &mut dyn FnMut()) -> Result<(), LockError> {
    loop {
        let g = locked(m)?;
        let mut g = wait_while_repairing(m, g, |q| {
            q.len() >= CAP && q.next_id < q.target && q.closing == 0
        })?;
        if g.next_id >= g.target || g.closing != 0 {
            drop(g);
            // A notify_one may have woken us for nothing: pass it on.
            m.notify_all();
            return Ok(());
        }
        let job = g.push(step);
        // Whoever wakes can act (consumers: a job is there; producers: there
        // is room, or they leave with a notify_all), unless the queue is
        // full: then a woken producer would sleep again, so wake everyone.
        let full = g.len() >= CAP;
        notify(m, full);
        drop(g);
        tell_parent("queued", job);
    }
}

fn consume(m: &SharedMutex<Queue>, step: &mut dyn FnMut()) -> Result<(), LockError> {
    loop {
        let g = locked(m)?;
        let mut g = wait_while_repairing(m, g, |q| q.len() == 0 && q.closing == 0)?;
        if g.len() == 0 {
            return Ok(()); // closed and empty
        }
        let job = g.pop(step);
        // As for producers: a woken consumer finding nothing would sleep
        // again and keep the wake-up, so an empty queue wakes everyone.
        let empty = g.len() == 0;
        notify(m, empty);
        drop(g);
        tell_parent("ran", job);
    }
}

/// Wakes one waiter, or all of them if `everyone`, while the caller still
/// holds the lock: a process killed between its change and this call is
/// then a holder's death, which wakes the waiters too (a notify after the
/// unlock would leave such a change unannounced).
fn notify(m: &SharedMutex<Queue>, everyone: bool) {
    if everyone {
        m.notify_all();
    } else {
        m.notify_one();
    }
}

/// Tells the parent (a write error, the parent gone, is ignored).
fn tell_parent(what: &str, job: u64) {
    let _ = writeln!(std::io::stdout().lock(), "{what} {job}");
}

/// Busy pauses of random length (up to about 200 µs once in 32 steps),
/// never a sleep: they only move where the parent's kills land.
fn dawdle(rng: &mut Rng) {
    let spins = if rng.below(32) == 0 {
        rng.below(20_000)
    } else {
        rng.below(200)
    };
    for _ in 0..spins {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------- the run

#[derive(Clone, Debug)]
struct Config {
    producers: usize,
    consumers: usize,
    jobs: u64,
    kill: bool,
    max_pause_us: u64,
    seed: u64,
    path: Option<PathBuf>,
}

const USAGE: &str = "usage: job_queue [--producers N] [--consumers M] [--jobs J] [--kill] \
                     [--max-pause-us U] [--seed S] [--path P] [--short]";

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let short = args.iter().any(|a| a == "--short");
        let kill = args.iter().any(|a| a == "--kill");
        let mut c = Config {
            producers: if short { 2 } else { 4 },
            consumers: if short { 3 } else { 4 },
            jobs: match (short, kill) {
                (true, false) => 2_000,
                (true, true) => 10_000,
                (false, _) => 100_000,
            },
            kill,
            max_pause_us: 2_000,
            seed: clock_seed(),
            path: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--short" || flag == "--kill" {
                continue;
            }
            let value = it.next().ok_or(format!("{flag}: needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--producers" => c.producers = number()? as usize,
                "--consumers" => c.consumers = number()? as usize,
                "--jobs" => c.jobs = number()?,
                "--max-pause-us" => c.max_pause_us = number()?,
                "--seed" => c.seed = number()?,
                "--path" => c.path = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if c.producers == 0 || c.consumers == 0 || c.producers + c.consumers > 64 {
            return Err("--producers and --consumers: at least 1 each, at most 64 in all".into());
        }
        if !(1..=MAX_JOBS as u64).contains(&c.jobs) {
            return Err(format!("--jobs: 1 to {MAX_JOBS}"));
        }
        Ok(c)
    }

    /// The command that replays this run's random choices.
    fn replay(&self) -> String {
        format!(
            "cargo run --example job_queue -- --producers {} --consumers {} --jobs {}{} \
             --max-pause-us {} --seed {}",
            self.producers,
            self.consumers,
            self.jobs,
            if self.kill { " --kill" } else { "" },
            self.max_pause_us,
            self.seed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// What a child's reader thread tells the parent.
enum Event {
    Line(u64, String),
    /// The child's stdout closed: it exited (or was killed).
    Eof(u64),
}

struct Kid {
    serial: u64,
    role: Role,
    child: Child,
}

/// The parent's side: the children, their reports, the figures.
struct Parent<'a> {
    cfg: &'a Config,
    exe: PathBuf,
    path: &'a Path,
    m: &'a SharedMutex<Queue>,
    rng: Rng,
    kids: Vec<Kid>,
    serial: u64,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Reports per job: "queued j" and "ran j" lines.
    queued: Vec<u8>,
    ran: Vec<u8>,
    ran_reports: u64,
    doubled_reports: u64,
    kills: u64,
    holder_kills: u64,
    producer_kills: u64,
    consumer_kills: u64,
    /// Victims found asleep in the kernel in a futex wait (on the
    /// condition, mostly; or waiting for the lock) just before the kill.
    asleep_kills: u64,
}

impl Parent<'_> {
    fn spawn(&mut self, role: Role) -> Result<(), String> {
        self.serial += 1;
        let serial = self.serial;
        let mut child = Command::new(&self.exe)
            .arg(role.name())
            .arg(self.path)
            .arg(self.rng.next().to_string())
            .arg(std::process::id().to_string())
            .arg(if self.cfg.kill { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", role.name()))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(Event::Line(serial, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Eof(serial));
        });
        self.kids.push(Kid {
            serial,
            role,
            child,
        });
        Ok(())
    }

    /// Handles one event: a report, or a child that exited by itself (it
    /// must have succeeded).
    fn handle(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::Line(serial, line) => {
                let (what, job) = line.split_once(' ').unwrap_or((&line, ""));
                let job = job.parse::<usize>().ok().filter(|&j| j < self.ran.len());
                let (Some(job), "queued" | "ran") = (job, what) else {
                    return Err(format!("child #{serial} said {line:?}"));
                };
                let seen = if what == "ran" {
                    self.ran_reports += 1;
                    &mut self.ran[job]
                } else {
                    &mut self.queued[job]
                };
                *seen = seen.saturating_add(1);
                if *seen > 1 {
                    self.doubled_reports += 1;
                    eprintln!("job_queue: job {job} reported \"{what}\" {} times", *seen);
                }
            }
            Event::Eof(serial) => {
                // Killed children were reaped and removed already.
                if let Some(i) = self.kids.iter().position(|k| k.serial == serial) {
                    let mut k = self.kids.swap_remove(i);
                    let status = k.child.wait().map_err(|e| format!("wait: {e}"))?;
                    if !status.success() {
                        return Err(format!("{} #{serial} exited: {status}", k.role.name()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Kills a child: the lock's holder (when it is one of ours) one time in
    /// three, else a random producer or consumer; reaps it and starts a
    /// replacement.
    fn kill_one(&mut self) -> Result<(), String> {
        if self.kids.is_empty() {
            return Ok(());
        }
        let choice = self.rng.below(3);
        let holder = self.m.status().owner.map(|o| o.pid);
        let of_role = |kids: &[Kid], r: Role| -> Vec<usize> {
            (0..kids.len()).filter(|&i| kids[i].role == r).collect()
        };
        let holding = self
            .kids
            .iter()
            .position(|k| holder.is_some_and(|pid| k.child.id() == pid));
        let i = match (choice, holding) {
            (0, Some(i)) => {
                self.holder_kills += 1;
                i
            }
            _ => {
                let role = if choice == 1 {
                    Role::Producer
                } else {
                    Role::Consumer
                };
                let mut pool = of_role(&self.kids, role);
                if pool.is_empty() {
                    pool = (0..self.kids.len()).collect();
                }
                pool[self.rng.below(pool.len() as u64) as usize]
            }
        };
        let mut k = self.kids.swap_remove(i);
        if asleep_in_futex(k.child.id()) {
            self.asleep_kills += 1;
        }
        k.child.kill().map_err(|e| format!("kill: {e}"))?;
        k.child.wait().map_err(|e| format!("wait: {e}"))?;
        self.kills += 1;
        match k.role {
            Role::Producer => self.producer_kills += 1,
            Role::Consumer => self.consumer_kills += 1,
        }
        self.spawn(k.role)
    }

    /// Processes whatever the children said so far.
    fn drain(&mut self) -> Result<(), String> {
        while let Ok(e) = self.rx.try_recv() {
            self.handle(e)?;
        }
        Ok(())
    }

    /// The next event, or a hang.
    fn next_event(&mut self) -> Result<(), String> {
        match self.rx.recv_timeout(WATCHDOG) {
            Ok(e) => self.handle(e),
            Err(RecvTimeoutError::Timeout) => Err(self.hang()),
            Err(RecvTimeoutError::Disconnected) => Err("the event channel closed".into()),
        }
    }

    fn hang(&self) -> String {
        let st = self.m.status();
        let queue = match self.m.try_lock() {
            Ok(a) => {
                let g = repaired(self.m, a);
                format!(
                    "head {} tail {} next_id {} done {} closing {} journal op {}",
                    g.head, g.tail, g.next_id, g.done, g.closing, g.journal.op
                )
            }
            Err(e) => format!("try_lock: {e}"),
        };
        format!(
            "no progress for {WATCHDOG:?} (lock {}, owner {:?}; {queue}; {} children alive)",
            st.state,
            st.owner.map(|o| o.pid),
            self.kids.len()
        )
    }

    /// Sets `closing` and wakes everyone, then waits for every child to
    /// leave.
    fn close(&mut self) -> Result<(), String> {
        parent_locked(self.m)?.closing = 1;
        self.m.notify_all();
        while !self.kids.is_empty() {
            self.next_event()?;
        }
        // Reports written just before an exit may still be in the channel.
        self.drain()
    }

    fn done(&self) -> Result<u64, String> {
        Ok(parent_locked(self.m)?.done)
    }

    /// Without kills: every "ran" line is one job run; close when all
    /// `jobs` were reported.
    fn run_quiet(&mut self) -> Result<(), String> {
        while self.ran_reports < self.cfg.jobs {
            self.next_event()?;
        }
        self.close()
    }

    /// With kills: a random pause, a kill, a replacement, until the file
    /// says all jobs were run (a killed consumer's last report may be lost);
    /// at least one kill.
    fn run_killing(&mut self) -> Result<(), String> {
        let (mut last, mut since) = (0, Instant::now());
        loop {
            let pause = self.rng.below(self.cfg.max_pause_us + 1);
            std::thread::sleep(Duration::from_micros(pause));
            self.kill_one()?;
            self.drain()?;
            let done = self.done()?;
            if done >= self.cfg.jobs {
                return self.close();
            }
            if done != last {
                (last, since) = (done, Instant::now());
            } else if since.elapsed() > WATCHDOG {
                return Err(self.hang());
            }
        }
    }

    /// The final checks, on the file and on the reports; returns the
    /// violations found (none: an empty list).
    fn check(&self) -> Result<Vec<String>, String> {
        let g = parent_locked(self.m)?;
        let jobs = self.cfg.jobs;
        let mut bad = Vec::new();
        if g.violations != 0 {
            bad.push(format!("{} violations met by the processes", g.violations));
        }
        if g.journal.op != NONE {
            bad.push(format!("the journal is still armed: {:?}", g.journal));
        }
        if g.next_id != jobs || g.done != jobs || g.head != g.tail {
            bad.push(format!(
                "next_id {} done {} head {} tail {}: expected {jobs} allocated and run, the queue empty",
                g.next_id, g.done, g.head, g.tail
            ));
        }
        let lost = (0..jobs as usize).filter(|&j| g.state[j] < DONE).count();
        let twice = (0..jobs as usize).filter(|&j| g.state[j] > DONE).count();
        let beyond = g.state[jobs as usize..]
            .iter()
            .filter(|&&s| s != FREE)
            .count();
        if lost + twice + beyond != 0 {
            bad.push(format!(
                "{lost} jobs never run, {twice} run more than once, {beyond} beyond the last allocated"
            ));
        }
        if self.doubled_reports != 0 {
            bad.push(format!("{} jobs reported twice", self.doubled_reports));
        }
        if !self.cfg.kill {
            let unreported = (0..jobs as usize)
                .filter(|&j| self.ran[j] != 1 || self.queued[j] != 1)
                .count();
            if unreported != 0 {
                bad.push(format!(
                    "{unreported} jobs not reported queued and run once"
                ));
            }
        }
        Ok(bad)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("producer" | "consumer")
    ) {
        return match child(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("job_queue: pid {}: {e}", std::process::id());
                ExitCode::from(3)
            }
        };
    }
    let cfg = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("job_queue: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "job_queue: {} jobs, {} producers, {} consumers, a queue of {CAP}{}, seed {}",
        cfg.jobs,
        cfg.producers,
        cfg.consumers,
        if cfg.kill { ", random kills" } else { "" },
        cfg.seed
    );
    match run(&cfg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("job_queue FAILED; replay with: {}", cfg.replay());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("job_queue FAILED: {e}\nreplay with: {}", cfg.replay());
            ExitCode::FAILURE
        }
    }
}

/// One run: true if every check held.
fn run(cfg: &Config) -> Result<bool, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let path = cfg
        .path
        .clone()
        .unwrap_or_else(|| dir.path().join("job_queue.lock"));
    let m = SharedMutex::<Queue>::open(&path).map_err(|e| e.to_string())?;
    {
        // A new file is zero; a --path given may hold an earlier run's.
        let mut g = parent_locked(&m)?;
        bytemuck::bytes_of_mut(&mut *g).fill(0);
        g.target = cfg.jobs;
    }
    let (tx, rx) = channel();
    let mut p = Parent {
        cfg,
        exe: std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?,
        path: &path,
        m: &m,
        rng: Rng::new(cfg.seed),
        kids: Vec::new(),
        serial: 0,
        tx,
        rx,
        queued: vec![0; cfg.jobs as usize],
        ran: vec![0; cfg.jobs as usize],
        ran_reports: 0,
        doubled_reports: 0,
        kills: 0,
        holder_kills: 0,
        producer_kills: 0,
        consumer_kills: 0,
        asleep_kills: 0,
    };
    let start = Instant::now();
    let r = (|| {
        for _ in 0..cfg.producers {
            p.spawn(Role::Producer)?;
        }
        for _ in 0..cfg.consumers {
            p.spawn(Role::Consumer)?;
        }
        if cfg.kill {
            p.run_killing()
        } else {
            p.run_quiet()
        }
    })();
    let secs = start.elapsed().as_secs_f64();
    if let Err(e) = r {
        for k in &mut p.kids {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
        return Err(e);
    }
    let bad = p.check()?;
    let g = parent_locked(&m)?;
    println!(
        "job_queue: {} jobs run {}; {} kills ({} holders, {} producers, {} consumers; \
         {} asleep in a futex wait), {} processes; {} OwnerDied repairs ({} finished a push, \
         {} a pop); {secs:.1} s",
        cfg.jobs,
        if bad.is_empty() {
            "exactly once each, none lost, the queue empty"
        } else {
            "WITH VIOLATIONS"
        },
        p.kills,
        p.holder_kills,
        p.producer_kills,
        p.consumer_kills,
        p.asleep_kills,
        p.serial,
        g.repairs,
        g.finished_push,
        g.finished_pop
    );
    println!(
        "summary: jobs={} failed_checks={} kills={} holder_kills={} asleep_kills={} \
         processes={} repairs={} finished_push={} finished_pop={} violations={} \
         secs={secs:.1} seed={}",
        cfg.jobs,
        bad.len(),
        p.kills,
        p.holder_kills,
        p.asleep_kills,
        p.serial,
        g.repairs,
        g.finished_push,
        g.finished_pop,
        g.violations,
        cfg.seed
    );
    for b in &bad {
        eprintln!("job_queue: VIOLATION: {b}");
    }
    Ok(bad.is_empty())
}

/// Whether process `pid`'s main thread (the only one that waits) is in a
/// futex call (`/proc/<pid>/syscall`, a racy snapshot: a figure, never a
/// check).
fn asleep_in_futex(pid: u32) -> bool {
    let nr = libc::SYS_futex.to_string();
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(nr.as_str()))
}

// ------------------------------------------------------------- randomness

/// splitmix64: reproducible from a printed seed, no dependency.
#[derive(Clone, Copy, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    t.map_or(1, |d| d.as_nanos() as u64)
}
