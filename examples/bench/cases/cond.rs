//! Case 8 (issue 13): condition waits, against a process-shared
//! `pthread_cond_t` and a pipe (`cond_contenders.rs`).
//!
//! * 8a notify → wake between two processes: a ping-pong of messages, each
//!   sent only once the other side sleeps in the kernel;
//! * 8b a holder SIGKILLed while a condition waiter sleeps: with no lock
//!   waiter (the waiter's 50 ms tick finds the death) and with one (the
//!   broadcast made when it takes the lock with EOWNERDEAD); a
//!   `pthread_cond_t` waiter in the same spot, as a control;
//! * 8c the price of a notify: with no waiter, and with a sleeping one;
//! * 8d an idle waiter's wake-ups and CPU time per second.

use super::cond_contenders::{
    self as cc, Asleep, COND_WORD_OFFSET, Cond, KINDS, Ours, PCond, cond_label, wait_until_asleep,
};
use super::uncontended::{entry, interleave};
use crate::Cfg;
use crate::contenders::{self, MUTEX_OFFSET, ShmFile, now_ns};
use crate::procs::{BLOCK_TIMEOUT, Kid};
use crate::report::{Report, fmt_ns, median, met, pct, spread};
use robust_mutex::SharedMutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::mpsc;
use std::time::Duration;

/// The child roles of case 8: `__condpong kind path ctl total`,
/// `__condsleep kind path`, `__condidle kind path`.
pub(crate) fn cond_child(args: &[String]) {
    let (role, kind, path) = (args[0].as_str(), args[1].as_str(), Path::new(&args[2]));
    let c = cc::open(kind, path);
    match role {
        "__condpong" => {
            let ctl = ShmFile::open(Path::new(&args[3]));
            let total = args[4].parse().expect("a number");
            println!("ready");
            pong(&*c, &ctl, false, total, std::os::unix::process::parent_id());
        }
        "__condsleep" => {
            println!("ready");
            c.wait_for(u64::MAX);
        }
        "__condidle" => {
            println!("ready");
            let before = Usage::now();
            c.wait_for(1);
            let after = Usage::now();
            println!(
                "idle {} {} {} {}",
                after.wall - before.wall,
                after.thread_sleeps - before.thread_sleeps,
                after.thread_cpu - before.thread_cpu,
                after.process_cpu - before.process_cpu
            );
        }
        _ => panic!("unknown role {role}"),
    }
}

pub(crate) fn cond(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    notify_wake(cfg, dir, rep);
    holder_death(cfg, dir, rep);
    notify_cost(cfg, dir, rep);
    idle_waiter(cfg, dir, rep);
}

// ---------------------------------------------------------------------------
// 8a notify → wake
// ---------------------------------------------------------------------------

/// Messages 1..=`total`, from the parent (`first`) to the child for odd
/// ones, back for even ones. The sender waits until the other side sleeps
/// in its wait, reads the clock, changes the value under the lock, unlocks
/// and notifies; the receiver reads the clock as soon as its wait returns
/// (holding the lock, for the two with one) and stores the difference in
/// slot `64 + 8 × message` of the control file.
fn pong(c: &dyn Cond, ctl: &ShmFile, first: bool, total: u64, other: u32) {
    let t0 = ctl.atomic(8);
    let asleep = c.asleep();
    for s in 1..=total {
        if (s % 2 == 1) == first {
            assert!(
                wait_until_asleep(other, other, &asleep, BLOCK_TIMEOUT),
                "the other side never slept in its wait"
            );
            t0.store(now_ns(), Release);
            c.set(s);
            c.notify();
        } else {
            c.wait_for(s);
            let t1 = now_ns();
            ctl.atomic(64 + 8 * s as usize)
                .store(t1 - t0.load(Acquire), Relaxed);
        }
    }
}

/// One ping-pong of `trips` round trips on a fresh `kind` with a fresh
/// child; returns the one-way latencies (both directions).
fn pong_block(kind: &str, trips: u64, dir: &Path, tag: usize) -> Vec<u64> {
    let total = 2 * trips;
    let path = dir.join(format!("cond-{kind}-{tag}"));
    let ctl_path = dir.join(format!("cond-{kind}-{tag}.ctl"));
    let c = cc::create(kind, &path);
    let ctl = ShmFile::create(&ctl_path, 64 + 8 * (total as usize + 1));
    let (ps, cs) = (
        path.to_str().expect("UTF-8"),
        ctl_path.to_str().expect("UTF-8"),
    );
    let mut kid = Kid::spawn(&["__condpong", kind, ps, cs, &total.to_string()]);
    kid.expect("ready");
    pong(&*c, &ctl, true, total, kid.pid());
    kid.wait_ok();
    let v = (1..=total)
        .map(|s| ctl.atomic(64 + 8 * s as usize).load(Relaxed))
        .collect();
    drop(c);
    cc::remove(kind, &path);
    let _ = std::fs::remove_file(&ctl_path);
    v
}

fn notify_wake(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let trips: u64 = if cfg.quick { 400 } else { 2_000 };
    let blocks = if cfg.quick { 2 } else { 5 };
    let per = trips / blocks as u64;
    eprintln!(
        "case 8a: notify → wake ping-pong, {} round trips per contender in {blocks} interleaved blocks",
        per * blocks as u64
    );
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); KINDS.len()];
    for b in 0..blocks {
        for j in 0..KINDS.len() {
            let i = (b + j) % KINDS.len();
            all[i].extend(pong_block(KINDS[i], per, dir, b));
        }
    }
    for v in &mut all {
        v.sort_unstable();
    }
    let pcond_med = pct(&all[1], 0.5) as f64;
    for (kind, v) in KINDS.iter().zip(&all) {
        rep.row(
            "8a notify → sleeping waiter returns (other process; one way)",
            cond_label(kind),
            format!("{} ({} wakes)", spread(v), v.len()),
            format!(
                "{:.2}× pthread_cond (median)",
                pct(v, 0.5) as f64 / pcond_med
            ),
            String::new(),
        );
    }
}

// ---------------------------------------------------------------------------
// 8b a holder's death wakes condition waiters
// ---------------------------------------------------------------------------

/// A thread of this process serving requests: its kernel TID, a channel
/// to start one job, and one to get (clock read after, owner died) back.
struct Helper {
    tid: u32,
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<(u64, bool)>,
}

impl Helper {
    fn spawn<'s, 'e>(
        s: &'s std::thread::Scope<'s, 'e>,
        job: impl Fn() -> (u64, bool) + Send + 's,
    ) -> Helper {
        let (go, go_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        s.spawn(move || {
            tid_tx.send(contenders::gettid() as u32).expect("send");
            for () in go_rx {
                done_tx.send(job()).expect("send");
            }
        });
        Helper {
            tid: tid_rx.recv().expect("helper tid"),
            go,
            done,
        }
    }

    fn start(&self) {
        self.go.send(()).expect("go");
    }

    fn result(&self) -> (u64, bool) {
        self.done.recv().expect("helper result")
    }
}

/// The latencies (kill → return) of one kind of waiter, and how many were
/// told the owner died.
#[derive(Default)]
struct Deaths {
    lat: Vec<u64>,
    told: usize,
}

impl Deaths {
    fn push(&mut self, t0: u64, (t1, died): (u64, bool)) {
        self.lat.push(t1 - t0);
        self.told += usize::from(died);
    }
}

/// `ns` as a timespec.
fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// A condition waiter's longest sleep before it looks at the lock word
/// (the crate's `cond::TICK`).
const TICK_NS: u64 = 50_000_000;

/// `kills` times: a condition waiter thread sleeps in `wait_while` on a
/// condition only a repair can end (the value unchanged); a child takes
/// the lock and says so; with `lock_waiter`, a second thread blocks in
/// `lock()`; then a pseudo-random pause of up to one tick. Once the kernel
/// shows the waiters asleep, t0 is read just before kill(SIGKILL). Whoever
/// is told `OwnerDied` repairs (value + 1).
fn ours_deaths(
    m: &Ours,
    path: &Path,
    kills: usize,
    lock_waiter: bool,
    cond: &mut Deaths,
    lock: &mut Deaths,
) {
    let me = std::process::id();
    let ps = path.to_str().expect("UTF-8");
    let on_cond = Asleep::futex_at(COND_WORD_OFFSET, 4);
    let on_lock = Asleep::futex_at(MUTEX_OFFSET as u64, 4);
    let mut rng = now_ns() | 1;
    std::thread::scope(|s| {
        let cw = Helper::spawn(s, || {
            let g = m.guard();
            let start = *g;
            let r = g.wait_while(|v| *v == start).expect("wait_while");
            let t1 = now_ns();
            let died = r.owner_died();
            drop(r.recover_with(|v| *v += 1));
            (t1, died)
        });
        let lw = Helper::spawn(s, || {
            let r = m.0.lock().expect("lock");
            let t1 = now_ns();
            let died = r.owner_died();
            drop(r.recover_with(|v| *v += 1));
            (t1, died)
        });
        for _ in 0..kills {
            cw.start();
            assert!(wait_until_asleep(me, cw.tid, &on_cond, BLOCK_TIMEOUT));
            let mut kid = Kid::spawn(&["__hold", "ours", ps]);
            kid.expect("ready");
            if lock_waiter {
                lw.start();
                assert!(wait_until_asleep(me, lw.tid, &on_lock, BLOCK_TIMEOUT));
            }
            // A death comes at any point of the waiter's tick: wait a
            // pseudo-random part of one first (then it may be between two
            // ticks: asleep again?).
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            std::thread::sleep(Duration::from_nanos(rng % TICK_NS));
            assert!(wait_until_asleep(me, cw.tid, &on_cond, BLOCK_TIMEOUT));
            let t0 = now_ns();
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // unreaped child, so it cannot have been reused.
            unsafe { libc::kill(kid.pid() as libc::pid_t, libc::SIGKILL) };
            cond.push(t0, cw.result());
            if lock_waiter {
                lock.push(t0, lw.result());
            }
            let _ = kid.child.wait();
        }
    });
}

/// The control: a `pthread_cond_timedwait` waiter (timeout 300 ms after it
/// starts waiting) while a child holding the mutex is killed. Returns how
/// many returned well before their timeout, and how many were told
/// EOWNERDEAD on the way back.
fn pcond_deaths(path: &Path, kills: usize) -> (usize, usize) {
    const TIMEOUT_NS: u64 = 300_000_000;
    let c = PCond::create(path);
    let me = std::process::id();
    let ps = path.to_str().expect("UTF-8");
    let (mut early, mut told) = (0, 0);
    std::thread::scope(|s| {
        let w = Helper::spawn(s, || {
            c.raw.lock();
            let ts = timespec(contenders::clock_ns(libc::CLOCK_REALTIME) + TIMEOUT_NS);
            let (died, _) = c.wait_once(Some(&ts));
            let t1 = now_ns();
            c.raw.unlock();
            (t1, died)
        });
        for _ in 0..kills {
            w.start();
            assert!(wait_until_asleep(me, w.tid, &c.asleep(), BLOCK_TIMEOUT));
            let mut kid = Kid::spawn(&["__hold", "raw", ps]);
            kid.expect("ready");
            let t0 = now_ns();
            // SAFETY: as in `ours_deaths`.
            unsafe { libc::kill(kid.pid() as libc::pid_t, libc::SIGKILL) };
            let (t1, died) = w.result();
            let _ = kid.child.wait();
            // It slept about 5 ms (a process start) before the kill: a
            // return well before its timeout is a wake-up.
            if t1 - t0 < TIMEOUT_NS / 2 {
                early += 1;
            }
            told += usize::from(died);
        }
    });
    drop(c);
    let _ = std::fs::remove_file(path);
    (early, told)
}

fn holder_death(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let kills = (cfg.kills / 2).max(50);
    let blocks = if cfg.quick { 2 } else { 4 };
    let per = kills.div_ceil(blocks);
    let controls = if cfg.quick { 4 } else { 10 };
    eprintln!(
        "case 8b: holder death → condition waiter, {} kills without and with a lock waiter in {blocks} interleaved blocks; {controls} pthread_cond_t controls",
        per * blocks
    );
    let path = dir.join("cond-death");
    let m = Ours(SharedMutex::open(&path).expect("create SharedMutex"));
    let (mut alone, mut unused) = (Deaths::default(), Deaths::default());
    let (mut cond, mut lock) = (Deaths::default(), Deaths::default());
    for b in 0..blocks {
        for j in 0..2 {
            if (b + j) % 2 == 0 {
                ours_deaths(&m, &path, per, false, &mut alone, &mut unused);
            } else {
                ours_deaths(&m, &path, per, true, &mut cond, &mut lock);
            }
        }
    }
    let (early, told) = pcond_deaths(&dir.join("cond-death-pcond"), controls);
    drop(m);
    let _ = std::fs::remove_file(&path);
    for d in [&mut alone, &mut cond, &mut lock] {
        d.lat.sort_unstable();
    }
    let stats = |d: &Deaths| {
        format!(
            "{} ({} kills; OwnerDied told {})",
            spread(&d.lat),
            d.lat.len(),
            d.told
        )
    };
    let case = "8b SIGKILL of holder → condition waiter returns";
    let max_alone = *alone.lat.last().unwrap_or(&u64::MAX);
    rep.row(
        case,
        "**SharedMutex<u64>**, no lock waiter (its 50 ms tick)",
        stats(&alone),
        String::new(),
        format!("max ≤ 100 ms: {}", met(max_alone <= 100_000_000)),
    );
    let lock_med = pct(&lock.lat, 0.5) as f64;
    rep.row(
        case,
        "**SharedMutex<u64>**, a lock waiter too (broadcast at its EOWNERDEAD)",
        stats(&cond),
        format!(
            "{:.2}× the lock waiter's own return (median)",
            pct(&cond.lat, 0.5) as f64 / lock_med
        ),
        "≈ owner-death latency".to_owned(),
    );
    rep.row(
        case,
        "(the lock waiter of that row: lock() → OwnerDied)",
        stats(&lock),
        "1.00×".to_owned(),
        String::new(),
    );
    rep.row(
        case,
        "pthread_cond_t waiter (timedwait, 300 ms), control",
        format!(
            "woken by the death: {early}/{controls}; EOWNERDEAD on return (at its timeout): {told}/{controls}"
        ),
        String::new(),
        String::new(),
    );
    assert_eq!(alone.told, alone.lat.len(), "a lone waiter missed a death");
    assert_eq!(
        cond.told + lock.told,
        cond.lat.len(),
        "a death was reported other than once"
    );
}

// ---------------------------------------------------------------------------
// 8c the price of a notify
// ---------------------------------------------------------------------------

/// A child sleeping in `kind`'s wait, which ends at value `u64::MAX`.
fn sleeper(kind: &str, path: &Path) -> Kid {
    let mut kid = Kid::spawn(&["__condsleep", kind, path.to_str().expect("UTF-8")]);
    kid.expect("ready");
    kid
}

/// `n` notifies, each of a child asleep in its wait (which wakes, and waits
/// again): the notifier's time in the call.
fn notify_sleeping(c: &dyn Cond, kid: &Kid, n: usize, out: &mut Vec<u64>) {
    let asleep = c.asleep();
    for _ in 0..n {
        assert!(wait_until_asleep(
            kid.pid(),
            kid.pid(),
            &asleep,
            BLOCK_TIMEOUT
        ));
        let t0 = now_ns();
        c.notify();
        out.push(now_ns() - t0);
    }
}

fn notify_cost(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let n = if cfg.quick { 200 } else { 1_000 };
    let blocks = if cfg.quick { 2 } else { 5 };
    eprintln!(
        "case 8c: notify cost: {} rounds of batches with no waiter; {n} notifies of a sleeping waiter per contender in {blocks} blocks",
        cfg.rounds
    );
    let p = |name: &str| dir.join(name);
    let fresh = Ours(SharedMutex::open(p("notify-fresh")).expect("open"));
    let used_path = p("notify-ours");
    let used = Ours(SharedMutex::open(&used_path).expect("open"));
    let pfresh = PCond::create(&p("notify-pfresh"));
    let pused_path = p("notify-pcond");
    let pused = PCond::create(&pused_path);
    // With a sleeping waiter, interleaved blocks; the same files then have
    // had a waiter, who left.
    let (mut with_ours, mut with_pcond) = (Vec::new(), Vec::new());
    for b in 0..blocks {
        for j in 0..2 {
            let (c, path, out): (&dyn Cond, &PathBuf, &mut Vec<u64>) = if (b + j) % 2 == 0 {
                (&used, &used_path, &mut with_ours)
            } else {
                (&pused, &pused_path, &mut with_pcond)
            };
            let kind = if (b + j) % 2 == 0 { "ours" } else { "pcond" };
            let kid = sleeper(kind, path);
            notify_sleeping(c, &kid, n / blocks, out);
            c.set(u64::MAX);
            c.notify();
            kid.wait_ok();
            c.set(0);
        }
    }
    let word = ShmFile::create(&p("notify-atomic"), contenders::FILE_LEN);
    let a = word.atomic(0);
    let mut es = vec![
        entry("ours fresh", || fresh.0.notify_one()),
        entry("ours used", || used.0.notify_one()),
        entry("pcond fresh", || pfresh.signal()),
        entry("pcond used", || pused.signal()),
        entry("atomic", || {
            a.fetch_add(2, Relaxed);
        }),
        entry("syscall", || {
            // SAFETY: getppid has no preconditions.
            std::hint::black_box(unsafe { libc::getppid() });
        }),
    ];
    interleave(cfg, &mut es);
    let get = |name: &str| &es.iter().find(|e| e.name == name).expect("entry").samples;
    let ratio =
        |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
    let (atomic, syscall) = (get("atomic"), median(get("syscall")));
    let case = "8c notify, no waiter asleep";
    for (name, id, target) in [
        (
            "**SharedMutex::notify_one**, no waiter ever",
            "ours fresh",
            true,
        ),
        (
            "**SharedMutex::notify_one**, after a waiter slept and left",
            "ours used",
            false,
        ),
        ("pthread_cond_signal, no waiter ever", "pcond fresh", false),
        (
            "pthread_cond_signal, after a waiter left",
            "pcond used",
            false,
        ),
        ("(floor) a shared atomic fetch_add", "atomic", false),
        ("(reference) getppid(), a system call", "syscall", false),
    ] {
        let s = get(id);
        let r = ratio(s, atomic);
        rep.row(
            case,
            name,
            fmt_ns(median(s)),
            format!("{r:.2}× an atomic"),
            if target {
                format!(
                    "no system call (< ⅓ of getppid): {}",
                    met(median(s) < syscall / 3.0)
                )
            } else {
                String::new()
            },
        );
    }
    let case = "8c notify, a waiter asleep (the notifier's time in the call)";
    for (name, v) in [
        ("**SharedMutex::notify_one**", &mut with_ours),
        ("pthread_cond_signal", &mut with_pcond),
    ] {
        v.sort_unstable();
        rep.row(
            case,
            name,
            format!(
                "median {}, p99 {} ({} notifies)",
                fmt_ns(pct(v, 0.5) as f64),
                fmt_ns(pct(v, 0.99) as f64),
                v.len()
            ),
            String::new(),
            String::new(),
        );
    }
}

// ---------------------------------------------------------------------------
// 8d an idle waiter
// ---------------------------------------------------------------------------

/// The calling thread's (and process's) resource use so far.
struct Usage {
    wall: u64,
    thread_sleeps: u64,
    thread_cpu: u64,
    process_cpu: u64,
}

impl Usage {
    fn now() -> Usage {
        let ru = |who| {
            // SAFETY: `ru` is a valid, writable rusage; getrusage only fills it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { libc::getrusage(who, &mut ru) };
            ru
        };
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
        let (thread, process) = (ru(libc::RUSAGE_THREAD), ru(libc::RUSAGE_SELF));
        Usage {
            wall: now_ns(),
            thread_sleeps: thread.ru_nvcsw as u64,
            thread_cpu: contenders::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID),
            process_cpu: tv(process.ru_utime) + tv(process.ru_stime),
        }
    }
}

/// Sleeps of one tick each on `word`'s first `u32` (which stays 0) for
/// about `secs`: the wall time, the number of sleeps and this thread's
/// CPU time.
fn bare_ticks(word: &ShmFile, secs: f64) -> Usage {
    let before = Usage::now();
    let end = before.wall + (secs * 1e9) as u64;
    let mut n = 0;
    while now_ns() < end {
        let ts = timespec(now_ns() + TICK_NS);
        // SAFETY: FUTEX_WAIT_BITSET only reads the aligned u32 at the start
        // of the live mapping and sleeps; `ts` is a valid timespec.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.base(),
                libc::FUTEX_WAIT_BITSET,
                0u32,
                &ts,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        n += 1;
    }
    let after = Usage::now();
    Usage {
        wall: after.wall - before.wall,
        thread_sleeps: n,
        thread_cpu: after.thread_cpu - before.thread_cpu,
        process_cpu: after.process_cpu - before.process_cpu,
    }
}

fn idle_waiter(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let secs = if cfg.quick { 1.0 } else { 2.0 };
    eprintln!("case 8d: idle waiters, one per contender, side by side for {secs} s");
    let paths: Vec<PathBuf> = KINDS
        .iter()
        .map(|k| dir.join(format!("idle-{k}")))
        .collect();
    let conds: Vec<Box<dyn Cond>> = KINDS
        .iter()
        .zip(&paths)
        .map(|(k, p)| cc::create(k, p))
        .collect();
    let mut kids: Vec<Kid> = KINDS
        .iter()
        .zip(&paths)
        .map(|(k, p)| Kid::spawn(&["__condidle", k, p.to_str().expect("UTF-8")]))
        .collect();
    for (kid, c) in kids.iter_mut().zip(&conds) {
        kid.expect("ready");
        assert!(wait_until_asleep(
            kid.pid(),
            kid.pid(),
            &c.asleep(),
            BLOCK_TIMEOUT
        ));
    }
    // Meanwhile, the floor: this thread sleeps the same sleeps on a word
    // of a shared file (FUTEX_WAIT_BITSET, absolute CLOCK_MONOTONIC, one
    // tick each), with nothing around them.
    let word = ShmFile::create(&dir.join("idle-floor"), contenders::FILE_LEN);
    let floor = bare_ticks(&word, secs);
    let _ = std::fs::remove_file(dir.join("idle-floor"));
    for c in &conds {
        c.set(1);
        c.notify();
    }
    let case = "8d an idle waiter (wait, never notified)";
    let per_wake = |cpu: f64, wakes: f64| {
        if wakes > 0.0 {
            format!("{} CPU per wake-up", fmt_ns(cpu / wakes))
        } else {
            String::new()
        }
    };
    rep.row(
        case,
        "(floor) futex sleeps of one tick on a shared file's word, this thread",
        format!(
            "{:.1} wake-ups/s; CPU {}/s (thread) over {:.1} s",
            floor.thread_sleeps as f64 / (floor.wall as f64 / 1e9),
            fmt_ns(floor.thread_cpu as f64 / (floor.wall as f64 / 1e9)),
            floor.wall as f64 / 1e9
        ),
        per_wake(floor.thread_cpu as f64, floor.thread_sleeps as f64),
        String::new(),
    );
    for ((kind, mut kid), path) in KINDS.iter().zip(kids).zip(&paths) {
        let f: Vec<f64> = kid
            .line()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("a number"))
            .collect();
        kid.wait_ok();
        cc::remove(kind, path);
        let wall = f[0] / 1e9;
        // The last sleep, the one the final notify ends, is not a wake-up.
        let wakes = (f[1] - 1.0).max(0.0) / wall;
        rep.row(
            case,
            cond_label(kind),
            format!(
                "{wakes:.1} wake-ups/s; CPU {}/s (thread), {}/s (process) over {wall:.1} s",
                fmt_ns(f[2] / wall),
                fmt_ns(f[3] / wall),
            ),
            per_wake(f[2], f[1] - 1.0),
            if *kind == "ours" {
                format!("≈ 20/s (the 50 ms tick): {}", met(wakes <= 25.0))
            } else {
                String::new()
            },
        );
    }
}
