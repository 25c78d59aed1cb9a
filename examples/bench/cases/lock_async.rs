//! Case 9 (issue 14): async acquisition, `SharedMutex::lock_async`, on
//! tokio.
//!
//! * 9a uncontended: `lock_async().await` + drop back to back, on a
//!   multi-thread runtime (2 workers; the loop in a spawned task) and on a
//!   current-thread one; one at a time with the file's lane idle before
//!   each (its holder thread back in the pool: a request after a pause);
//!   beside `lock()` + drop and `tokio::sync::Mutex` (in-process only, no
//!   crash safety) on both runtimes. Batches of about 10 ms, order rotated
//!   every round as in case 1: ns per cycle (median of the rounds), and
//!   thread switches per cycle: the process's voluntary + involuntary
//!   context switches (`getrusage(RUSAGE_SELF)`) over the batch / cycles.
//! * 9b handoff to a waiter in another process: this process (A) holds the
//!   lock, then tells the child (B) "go" over a pipe; B's waiter starts
//!   waiting; once the kernel shows it asleep in the lock wait and every
//!   thread of B asleep (`/proc/B/task/*/syscall`), A reads
//!   `CLOCK_MONOTONIC` and releases; B reads the clock as soon as its wait
//!   returns and sends it back. The contenders: `lock_async` on both sides
//!   (B's waiting task on a multi-thread runtime, 2 workers, or on a
//!   current-thread one; A's on a multi-thread runtime), sync `lock()` on
//!   both sides, and a pipe ping (A writes one byte to a FIFO B reads).
//!   Thread switches per handoff, each side: its process's context
//!   switches over the run, less those of the thread that talks over the
//!   pipe while it waits for the other side (A: from its release to B's
//!   answer; B: from its wait's return to the next "go").
//! * 9c responsiveness: 50 tasks on a 2-worker runtime contend for one
//!   lock, each holding it for 100 µs of work (a spin), with an `.await` in the
//!   middle (`lock_async`), or all in one poll (`lock()`, which blocks the
//!   worker while it waits); a task ticking on a 1 ms `tokio::time::interval`
//!   records each tick's lateness (its return − its scheduled instant).

use crate::Cfg;
use crate::cases::cond_contenders::{Cond, Pipe};
use crate::contenders::now_ns;
use crate::procs::{BLOCK_TIMEOUT, Kid};
use crate::report::{Report, fmt_ns, fmt_rate, median, met, pct, spread};
use robust_mutex::internals::{HOLDER_THREAD_NAME, holder_threads, wait_lanes_idle};
use robust_mutex::{AsyncGuard, Guard, SharedMutex};
use std::future::Future;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::runtime::{Builder, Runtime};

/// Context switches, voluntary + involuntary, of `who` (`RUSAGE_SELF`:
/// the whole process; `RUSAGE_THREAD`: the calling thread) so far.
fn switches(who: libc::c_int) -> u64 {
    // SAFETY: `ru` is a valid, writable rusage; getrusage only fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(who, &mut ru) };
    (ru.ru_nvcsw + ru.ru_nivcsw) as u64
}

fn process_switches() -> u64 {
    switches(libc::RUSAGE_SELF)
}

fn thread_switches() -> u64 {
    switches(libc::RUSAGE_THREAD)
}

/// Context switches so far of this process's threads, by kind: the holder
/// threads, tokio's workers, the others (from
/// `/proc/self/task/*/status`; threads that ended are not counted).
fn switches_by_thread() -> [u64; 3] {
    let mut by = [0; 3];
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = entry.expect("a task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let kind = match comm.trim() {
            HOLDER_THREAD_NAME => 0,
            WORKER_THREAD_NAME => 1,
            _ => 2,
        };
        by[kind] += n;
    }
    by
}

/// Tokio's worker threads' name (its default).
const WORKER_THREAD_NAME: &str = "tokio-rt-worker";

/// A tokio multi-thread runtime with 2 workers (the machine's cores).
fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Our lock through `lock_async`, a dead holder repaired by doing nothing
/// (the bench's holders keep no state).
async fn lock_async(m: &SharedMutex<u64>) -> AsyncGuard<'_, u64> {
    m.lock_async()
        .await
        .expect("lock_async")
        .recover_with(|_| ())
}

/// Our lock through `lock`, likewise.
fn lock(m: &SharedMutex<u64>) -> Guard<'_, u64> {
    m.lock().expect("lock").recover_with(|_| ())
}

pub(crate) fn lock_async_case(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    uncontended(cfg, dir, rep);
    handoff(cfg, dir, rep);
    responsiveness(cfg, dir, rep);
}

// ---------------------------------------------------------------------------
// 9a uncontended
// ---------------------------------------------------------------------------

/// `n` cycles of `cycle`: (ns per cycle, process context switches per cycle).
async fn cycles<F: Future<Output = ()>>(n: u64, mut cycle: impl FnMut() -> F) -> (f64, f64) {
    let (s0, t0) = (process_switches(), now_ns());
    for _ in 0..n {
        cycle().await;
    }
    let (t1, s1) = (now_ns(), process_switches());
    ((t1 - t0) as f64 / n as f64, (s1 - s0) as f64 / n as f64)
}

/// Runs `fut` as a task on a worker of `rt` (not on this thread).
fn on_worker<F>(rt: &Runtime, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(fut)).expect("the task")
}

/// One at a time: waits until the lane is idle and its
/// holder thread listed idle in the pool again.
fn pool_quiet() {
    wait_lanes_idle();
    let start = Instant::now();
    loop {
        let (alive, idle) = holder_threads();
        if idle >= alive || start.elapsed() > BLOCK_TIMEOUT {
            return;
        }
        std::thread::yield_now();
    }
}

/// The switches of tokio workers waiting in [`pool_quiet`] for
/// [`cycles_idle_lane`], which are not counted.
static QUIET_SWITCHES: AtomicU64 = AtomicU64::new(0);

/// `n` cycles of `lock_async().await` + drop, each after [`pool_quiet`]
/// (not timed; the switches of the thread that waits in it not counted:
/// they are added to [`QUIET_SWITCHES`]).
async fn cycles_idle_lane(m: &SharedMutex<u64>, n: u64) -> (f64, f64) {
    pool_quiet();
    let (mut ns, mut quiet) = (0, 0);
    let s0 = process_switches();
    for _ in 0..n {
        let t = now_ns();
        drop(lock_async(m).await);
        ns += now_ns() - t;
        let th = thread_switches();
        pool_quiet();
        quiet += thread_switches() - th;
    }
    let sw = process_switches() - s0 - quiet;
    QUIET_SWITCHES.fetch_add(quiet, Relaxed);
    (ns as f64 / n as f64, sw as f64 / n as f64)
}

/// A timed loop: `run(n)` does `n` cycles and returns (ns, switches) per
/// cycle.
struct Timed<'a> {
    label: &'static str,
    run: Box<dyn FnMut(u64) -> (f64, f64) + 'a>,
    n: u64,
    ns: Vec<f64>,
    sw: Vec<f64>,
    /// Switches of the holder threads, the workers and the others over
    /// every batch (from [`switches_by_thread`]), and the batches' cycles.
    by_thread: [u64; 3],
    cycles: u64,
}

fn timed<'a>(label: &'static str, run: impl FnMut(u64) -> (f64, f64) + 'a) -> Timed<'a> {
    Timed {
        label,
        run: Box::new(run),
        n: 0,
        ns: Vec::new(),
        sw: Vec::new(),
        by_thread: [0; 3],
        cycles: 0,
    }
}

fn uncontended(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let batch_ns = 5 * cfg.batch_ns;
    eprintln!(
        "case 9a: uncontended lock_async / lock / tokio::sync::Mutex ({} rounds of about {} each, interleaved)",
        cfg.rounds,
        fmt_ns(batch_ns as f64)
    );
    let path = dir.join("async-uncontended");
    let m = Arc::new(SharedMutex::<u64>::open(&path).expect("create SharedMutex"));
    let tm = Arc::new(tokio::sync::Mutex::new(0u64));
    let (mt, ct) = (multi_thread(), current_thread());
    let mut es = vec![
        timed(
            "**lock_async().await** + drop, back to back: multi-thread runtime (2 workers), in a task",
            |n| {
                let m = m.clone();
                on_worker(&mt, async move {
                    let r = &*m;
                    cycles(n, move || async move { drop(lock_async(r).await) }).await
                })
            },
        ),
        timed(
            "**lock_async().await** + drop, back to back: current-thread runtime",
            |n| {
                let r = &*m;
                ct.block_on(cycles(n, move || async move { drop(lock_async(r).await) }))
            },
        ),
        timed(
            "**lock_async().await** + drop, one at a time, the lane idle before each: multi-thread runtime",
            |n| {
                let m = m.clone();
                on_worker(&mt, async move { cycles_idle_lane(&m, n).await })
            },
        ),
        timed("**lock()** + drop (sync, SharedMutex<u64>)", |n| {
            let r = &*m;
            let (s0, t0) = (process_switches(), now_ns());
            for _ in 0..n {
                drop(std::hint::black_box(lock(r)));
            }
            let (t1, s1) = (now_ns(), process_switches());
            ((t1 - t0) as f64 / n as f64, (s1 - s0) as f64 / n as f64)
        }),
        timed(
            "tokio::sync::Mutex lock().await + drop (in-process only, no crash safety): multi-thread runtime, in a task",
            |n| {
                let tm = tm.clone();
                on_worker(&mt, async move {
                    let r = &*tm;
                    cycles(n, move || async move { drop(r.lock().await) }).await
                })
            },
        ),
        timed(
            "tokio::sync::Mutex lock().await + drop: current-thread runtime",
            |n| {
                let r = &*tm;
                ct.block_on(cycles(n, move || async move { drop(r.lock().await) }))
            },
        ),
    ];
    for e in es.iter_mut() {
        (e.run)(20);
        let (est, _) = (e.run)(200);
        e.n = ((batch_ns as f64 / est.max(0.5)) as u64).clamp(50, 5_000_000);
    }
    let k = es.len();
    for round in 0..cfg.rounds {
        for j in 0..k {
            let e = &mut es[(round + j) % k];
            let before = switches_by_thread();
            let (ns, sw) = (e.run)(e.n);
            let mut after = switches_by_thread();
            after[1] -= QUIET_SWITCHES.swap(0, Relaxed);
            e.ns.push(ns);
            e.sw.push(sw);
            for (t, (a, b)) in e.by_thread.iter_mut().zip(after.iter().zip(before)) {
                *t += a.saturating_sub(b);
            }
            e.cycles += e.n;
        }
    }
    let sync_ns = es[3].ns.clone();
    let alive = holder_threads().0;
    for e in &es {
        let ratios: Vec<f64> = e.ns.iter().zip(&sync_ns).map(|(a, b)| a / b).collect();
        let per = |n: u64| n as f64 / e.cycles as f64;
        rep.row(
            "9a uncontended lock + drop (one process, nobody else locks)",
            e.label,
            format!(
                "{} per cycle; {:.2} thread switches per cycle (holder threads {:.2}, tokio workers {:.2}, other threads {:.2}; {} cycles per batch)",
                fmt_ns(median(&e.ns)),
                median(&e.sw),
                per(e.by_thread[0]),
                per(e.by_thread[1]),
                per(e.by_thread[2]),
                e.n
            ),
            format!("{:.1}× lock() (median)", median(&ratios)),
            String::new(),
        );
    }
    drop(es);
    wait_lanes_idle();
    eprintln!("  (holder threads alive after 9a: {alive})");
    drop(m);
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------
// 9b handoff to a waiter in another process
// ---------------------------------------------------------------------------

/// The handoff contenders, as the child role spells them.
const KINDS: [&str; 4] = ["async", "async1", "sync", "pipe"];

fn handoff_label(kind: &str) -> &'static str {
    match kind {
        "async" => "**lock_async** both sides (B's task on a multi-thread runtime, 2 workers)",
        "async1" => "**lock_async** both sides (B's task on a current-thread runtime)",
        "sync" => "lock() both sides (SharedMutex<u64>)",
        "pipe" => "pipe ping (FIFO, 1 byte; no lock)",
        _ => "?",
    }
}

/// The child role `__asyncwait kind path`: B, the waiting side.
pub(crate) fn async_child(args: &[String]) {
    let (kind, path) = (args[1].as_str(), Path::new(&args[2]));
    match kind {
        "async" => {
            let m = Arc::new(SharedMutex::<u64>::open(path).expect("open SharedMutex"));
            let rt = multi_thread();
            on_worker(&rt, async move {
                let r = &*m;
                waiter(move || async move { lock_async(r).await }).await
            });
        }
        "async1" => {
            let m = SharedMutex::<u64>::open(path).expect("open SharedMutex");
            let r = &m;
            current_thread().block_on(waiter(move || async move { lock_async(r).await }));
        }
        "sync" => {
            let m = SharedMutex::<u64>::open(path).expect("open SharedMutex");
            let r = &m;
            // No runtime thread: `block_on` polls on this thread, and
            // `lock()` blocks it.
            current_thread().block_on(waiter(move || std::future::ready(lock(r))));
        }
        "pipe" => {
            let p = Pipe::open(path, false);
            let r = &p;
            current_thread().block_on(waiter(move || {
                r.wait_for(0);
                std::future::ready(())
            }));
        }
        _ => panic!("unknown handoff kind {kind}"),
    }
}

/// B's loop: on each "go" from A, waits (`wait`), reads the clock when the
/// wait returns, releases, answers the clock read. On "end": answers
/// `switches <process> <excluded> <rounds>`, the excluded ones being this
/// thread's from each wait's return to the next line from A.
async fn waiter<G, F: Future<Output = G>>(mut wait: impl FnMut() -> F) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut go = || {
        line.clear();
        stdin.lock().read_line(&mut line).expect("stdin");
        line.trim() == "go"
    };
    println!("ready");
    let (mut excluded, mut rounds) = (0, 0);
    let mut more = go();
    let s0 = process_switches();
    while more {
        let g = wait().await;
        let t1 = now_ns();
        let th = thread_switches();
        drop(g);
        println!("{t1}");
        more = go();
        excluded += thread_switches() - th;
        rounds += 1;
    }
    println!("switches {} {excluded} {rounds}", process_switches() - s0);
}

/// Which of B's threads waits for the handoff, and in which system call.
#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// B's main thread.
    Main(libc::c_long),
    /// A holder thread of B's lanes.
    Holder(libc::c_long),
}

/// Waits until B's waiting thread sleeps in its system call and every
/// other thread of B sleeps too (none running or runnable outside a
/// system call). False after `timeout`.
fn wait_until_waiting(pid: u32, want: Waiting, timeout: Duration) -> bool {
    let start = Instant::now();
    let task = format!("/proc/{pid}/task");
    loop {
        let (mut found, mut all) = (false, true);
        for entry in std::fs::read_dir(&task).expect("/proc/PID/task") {
            let dir = entry.expect("a task").path();
            let syscall = std::fs::read_to_string(dir.join("syscall")).unwrap_or_default();
            let nr = syscall
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<libc::c_long>().ok());
            if nr.is_none_or(|n| n < 0) {
                all = false;
                break;
            }
            found |= match want {
                Waiting::Main(x) => nr == Some(x) && dir.ends_with(pid.to_string()),
                Waiting::Holder(x) => {
                    nr == Some(x)
                        && std::fs::read_to_string(dir.join("comm"))
                            .is_ok_and(|c| c.trim() == HOLDER_THREAD_NAME)
                }
            };
        }
        if found && all {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

/// One block's figures.
#[derive(Default)]
struct Handoffs {
    lat: Vec<u64>,
    /// A's context switches from its release to B's answer, its talking
    /// thread's excluded.
    a_switches: u64,
    /// B's process switches, and those of its talking thread excluded.
    b_switches: u64,
    b_excluded: u64,
}

/// A's loop: `n` times acquire, "go", wait until B sleeps in its wait,
/// clock, release, B's clock read.
async fn releaser<G, F: Future<Output = G>>(
    kid: &mut Kid,
    n: u64,
    want: Waiting,
    mut acquire: impl FnMut() -> F,
    mut release: impl FnMut(G),
    out: &mut Handoffs,
) {
    for _ in 0..n {
        let g = acquire().await;
        kid.send("go");
        assert!(
            wait_until_waiting(kid.pid(), want, BLOCK_TIMEOUT),
            "the other process never slept in its wait ({want:?})"
        );
        let (s0, th0) = (process_switches(), thread_switches());
        let t0 = now_ns();
        release(g);
        let t1: u64 = kid.line().parse().expect("a clock read");
        // The thread's window lies inside the process's.
        let th1 = thread_switches();
        out.a_switches += (process_switches() - s0).saturating_sub(th1 - th0);
        out.lat.push(t1 - t0);
    }
    kid.send("end");
    let l = kid.line();
    let f: Vec<u64> = l
        .strip_prefix("switches ")
        .expect("switches")
        .split(' ')
        .map(|s| s.parse().expect("a number"))
        .collect();
    assert_eq!(f[2], n, "rounds");
    out.b_switches += f[0];
    out.b_excluded += f[1];
}

fn handoff_block(kind: &str, n: u64, dir: &Path, tag: usize, out: &mut Handoffs) {
    let path = dir.join(format!("async-handoff-{kind}-{tag}"));
    let ps = path.to_str().expect("UTF-8");
    if kind == "pipe" {
        Pipe::create(&path);
        let p = Pipe::open(&path, true);
        let mut kid = Kid::spawn(&["__asyncwait", kind, ps]);
        kid.expect("ready");
        let want = Waiting::Main(libc::SYS_read);
        current_thread().block_on(releaser(
            &mut kid,
            n,
            want,
            || std::future::ready(()),
            |()| p.notify(),
            out,
        ));
        kid.wait_ok();
        Pipe::remove(&path);
        return;
    }
    let m = SharedMutex::<u64>::open(&path).expect("create SharedMutex");
    let mut kid = Kid::spawn(&["__asyncwait", kind, ps]);
    kid.expect("ready");
    let r = &m;
    if kind == "sync" {
        let want = Waiting::Main(libc::SYS_futex);
        current_thread().block_on(releaser(
            &mut kid,
            n,
            want,
            || std::future::ready(lock(r)),
            drop,
            out,
        ));
    } else {
        let want = Waiting::Holder(libc::SYS_futex_waitv);
        multi_thread().block_on(releaser(
            &mut kid,
            n,
            want,
            move || async move { lock_async(r).await },
            drop,
            out,
        ));
    }
    kid.wait_ok();
    wait_lanes_idle();
    drop(m);
    let _ = std::fs::remove_file(&path);
}

fn handoff(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let blocks = if cfg.quick { 2 } else { 5 };
    let per = cfg.handoffs / blocks as u64;
    eprintln!(
        "case 9b: handoff to a waiter in another process, {} handoffs per contender in {blocks} interleaved blocks",
        per * blocks as u64
    );
    let mut all: Vec<Handoffs> = KINDS.iter().map(|_| Handoffs::default()).collect();
    for b in 0..blocks {
        for j in 0..KINDS.len() {
            let i = (b + j) % KINDS.len();
            handoff_block(KINDS[i], per, dir, b, &mut all[i]);
        }
    }
    for h in &mut all {
        h.lat.sort_unstable();
    }
    let sync_med = pct(&all[2].lat, 0.5) as f64;
    for (kind, h) in KINDS.iter().zip(&all) {
        let n = h.lat.len() as f64;
        rep.row(
            "9b handoff: release → a waiter in another process runs",
            handoff_label(kind),
            format!(
                "{} ({} handoffs); thread switches per handoff: releasing side {:.2}, waiting side {:.2}",
                spread(&h.lat),
                h.lat.len(),
                h.a_switches as f64 / n,
                (h.b_switches - h.b_excluded) as f64 / n
            ),
            format!(
                "{:.2}× lock() (median)",
                pct(&h.lat, 0.5) as f64 / sync_med
            ),
            String::new(),
        );
    }
}

// ---------------------------------------------------------------------------
// 9c responsiveness
// ---------------------------------------------------------------------------

/// Tasks contending for the lock.
const TASKS: usize = 50;
/// Work done while holding the lock, per cycle.
const HOLD_NS: u64 = 100_000;
/// The most a tick may be late: the "a few ms".
const LATE_TARGET_NS: u64 = 5_000_000;

/// Spins for `ns` (work under the lock).
fn work(ns: u64) {
    let end = now_ns() + ns;
    while now_ns() < end {
        std::hint::spin_loop();
    }
}

/// Ticks of a 1 ms interval for `secs`: each one's lateness, in ns.
async fn ticker(secs: f64) -> Vec<u64> {
    let mut iv = tokio::time::interval(Duration::from_millis(1));
    iv.tick().await; // the first tick is at once
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut late = Vec::new();
    while tokio::time::Instant::now() < end {
        let due = iv.tick().await;
        late.push((tokio::time::Instant::now() - due).as_nanos() as u64);
    }
    late
}

/// Runs the ticker for `secs` on a fresh 2-worker runtime while
/// [`TASKS`] tasks lock `m` as `how` says ("async", "sync", or "none"):
/// the sorted lateness, and lock cycles per second.
fn crowd(how: &str, m: &Arc<SharedMutex<u64>>, secs: f64) -> (Vec<u64>, f64) {
    let rt = multi_thread();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let n = if how == "none" { 0 } else { TASKS };
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (m, stop, done) = (m.clone(), stop.clone(), done.clone());
            let sync = how == "sync";
            rt.spawn(async move {
                while !stop.load(Relaxed) {
                    if sync {
                        {
                            let mut g = lock(&m);
                            work(HOLD_NS);
                            *g += 1;
                        }
                        tokio::task::yield_now().await;
                    } else {
                        let mut g = lock_async(&m).await;
                        work(HOLD_NS / 2);
                        tokio::task::yield_now().await; // held across an .await
                        work(HOLD_NS / 2);
                        *g += 1;
                        drop(g);
                    }
                    done.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    let t0 = now_ns();
    let mut late = on_worker(&rt, ticker(secs));
    let rate = done.load(Relaxed) as f64 / ((now_ns() - t0) as f64 / 1e9);
    stop.store(true, Relaxed);
    for t in tasks {
        rt.block_on(t).expect("a contending task");
    }
    wait_lanes_idle();
    late.sort_unstable();
    (late, rate)
}

fn responsiveness(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let secs = if cfg.quick { 1.0 } else { 3.0 };
    eprintln!(
        "case 9c: a 1 ms ticker while {TASKS} tasks contend on 2 workers, {secs} s each: none, lock_async, lock()"
    );
    let path = dir.join("async-crowd");
    let m = Arc::new(SharedMutex::<u64>::open(&path).expect("create SharedMutex"));
    let case = "9c a task ticking on a 1 ms interval, 2 workers: tick lateness";
    let mut floor_max = 0;
    for how in ["none", "async", "sync"] {
        let (late, rate) = crowd(how, &m, secs);
        let max = *late.last().unwrap_or(&u64::MAX);
        if how == "none" {
            floor_max = max;
        }
        let (label, target) = match how {
            "none" => (
                "(floor) nobody else on the runtime".to_owned(),
                String::new(),
            ),
            "async" => (
                format!(
                    "**{TASKS} tasks in lock_async().await**, each holding it for {} of work with an .await inside",
                    fmt_ns(HOLD_NS as f64)
                ),
                format!(
                    "max ≤ {}: {} (the floor's max: {})",
                    fmt_ns(LATE_TARGET_NS as f64),
                    met(max <= LATE_TARGET_NS),
                    fmt_ns(floor_max as f64)
                ),
            ),
            _ => (
                format!(
                    "{TASKS} tasks in lock() (blocks the worker), each holding it for {} of work",
                    fmt_ns(HOLD_NS as f64)
                ),
                String::new(),
            ),
        };
        rep.row(
            case,
            &label,
            if how == "none" {
                format!("{} ({} ticks)", spread(&late), late.len())
            } else {
                format!(
                    "{} ({} ticks); {} lock cycles",
                    spread(&late),
                    late.len(),
                    fmt_rate(rate)
                )
            },
            String::new(),
            target,
        );
    }
    drop(m);
    let _ = std::fs::remove_file(&path);
}
