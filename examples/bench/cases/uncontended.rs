//! Case 1: uncontended lock+unlock, the breakdown of our bookkeeping
//! (the replica on the raw mutex) and `try_lock` on a busy lock.

use crate::Cfg;
use crate::contenders::{
    self, Flock, Lock, NamedSem, OfdLock, PosixLock, RawRobust, ShmFile, now_ns,
};
use crate::report::{Report, fmt_ns, median, met};
use robust_mutex::{LockError, SharedMutex};
use std::hint::black_box;
use std::path::Path;

/// Replica level 6 is the path `SharedMutex::lock` ships: an expired
/// `clocklock` first, no lock-word snapshot. Its label here replaces
/// `contenders::REPLICA_LEVELS[6]`, written before the change shipped.
const SHIPPED_LEVEL: &str =
    "shipped: full replica, taken by an expired clocklock first (no snapshot)";

/// Mean ns per call of `f` over `n` calls.
fn batch(n: u64, mut f: impl FnMut()) -> f64 {
    let t = now_ns();
    for _ in 0..n {
        f();
    }
    (now_ns() - t) as f64 / n as f64
}

/// A timed operation: its name, its batch size and one mean per round.
pub(crate) struct Entry<'a> {
    pub(crate) name: &'a str,
    n: u64,
    f: Box<dyn FnMut(u64) -> f64 + 'a>,
    pub(crate) samples: Vec<f64>,
}

pub(crate) fn entry<'a>(name: &'a str, mut f: impl FnMut() + 'a) -> Entry<'a> {
    Entry {
        name,
        n: 0,
        f: Box::new(move |n| batch(n, &mut f)),
        samples: Vec::new(),
    }
}

/// Calibrates each entry to about `cfg.batch_ns` per batch, then times
/// `cfg.rounds` rounds of one batch each, the order rotating every round.
pub(crate) fn interleave(cfg: &Cfg, es: &mut [Entry<'_>]) {
    for e in es.iter_mut() {
        (e.f)(1_000);
        let est = (e.f)(2_000).max(0.5);
        e.n = ((cfg.batch_ns as f64 / est) as u64).clamp(200, 5_000_000);
    }
    let k = es.len();
    for round in 0..cfg.rounds {
        for j in 0..k {
            let e = &mut es[(round + j) % k];
            let v = (e.f)(e.n);
            e.samples.push(v);
        }
    }
}

pub(crate) fn uncontended(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    eprintln!(
        "case 1: uncontended lock+unlock ({} rounds, interleaved)",
        cfg.rounds
    );
    let p = |n: &str| dir.join(n);
    let file = |n: &str| ShmFile::create(&p(n), contenders::FILE_LEN);
    let ours_unit = SharedMutex::<()>::open(p("ours-unit")).expect("open");
    let ours_u64 = SharedMutex::<u64>::open(p("ours-u64")).expect("open");
    let raw = RawRobust::create(&p("raw"));
    let std_m = std::sync::Mutex::new(0u64);
    let sem = NamedSem::create(&p("sem"));
    let flock = Flock { shm: file("flock") };
    let ofd = OfdLock { shm: file("ofd") };
    let posix = PosixLock { shm: file("fcntl") };
    let rp = p("raw");
    let v2 = contenders::V2Replica::new(RawRobust::create(&p("raw-v2")));
    let spin = contenders::Spin::<64> {
        raw: RawRobust::create(&p("raw-spin")),
    };
    let inc = |v: &mut u64, _: bool| *v = black_box(*v) + 1;

    let mut es = vec![
        entry("SharedMutex<()>", || ours_unit.lock_unlock()),
        entry("raw", || raw.lock_unlock()),
        entry("std", || std_m.lock_unlock()),
        entry("sem", || sem.lock_unlock()),
        entry("flock", || flock.lock_unlock()),
        entry("ofd", || ofd.lock_unlock()),
        entry("fcntl", || posix.lock_unlock()),
        entry("SharedMutex<u64>+1", || ours_u64.with(inc)),
        entry("raw+1", || raw.with(inc)),
        entry("std+1", || std_m.with(inc)),
        entry("sem+1", || sem.with(inc)),
        entry("flock+1", || flock.with(inc)),
        entry("ofd+1", || ofd.with(inc)),
        entry("fcntl+1", || posix.with(inc)),
        entry("L1", || contenders::replica::<1>(&raw, &rp)),
        entry("L2", || contenders::replica::<2>(&raw, &rp)),
        entry("L3", || contenders::replica::<3>(&raw, &rp)),
        entry("L4", || contenders::replica::<4>(&raw, &rp)),
        entry("L5", || contenders::replica::<5>(&raw, &rp)),
        entry("L6", || contenders::replica::<6>(&raw, &rp)),
        entry("V2", || v2.lock_unlock()),
        entry("spin", || spin.lock_unlock()),
        entry("clock", || {
            black_box(now_ns());
        }),
    ];
    interleave(cfg, &mut es);
    let get = |name: &str| -> Vec<f64> {
        es.iter()
            .find(|e| e.name == name)
            .expect("entry")
            .samples
            .clone()
    };
    let ratio =
        |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());

    let raw_s = get("raw");
    let unit_s = get("SharedMutex<()>");
    let flock_s = get("flock");
    let r_unit = ratio(&unit_s, &raw_s);
    let vs_flock = ratio(&flock_s, &unit_s);
    let case = "1 uncontended lock+unlock";
    rep.row(
        case,
        "**SharedMutex<()>**",
        fmt_ns(median(&unit_s)),
        format!("{r_unit:.2}× raw; {vs_flock:.0}× faster than flock"),
        format!(
            "≤ 1.10× raw: {}; ≥ 50× faster than flock: {}",
            met(r_unit <= 1.10),
            met(vs_flock >= 50.0)
        ),
    );
    for (name, id) in [
        ("raw glibc robust", "raw"),
        ("std::sync::Mutex (in-process)", "std"),
        ("POSIX named semaphore", "sem"),
        ("flock", "flock"),
        ("OFD fcntl", "ofd"),
        ("classic fcntl", "fcntl"),
    ] {
        let s = get(id);
        rep.row(
            case,
            name,
            fmt_ns(median(&s)),
            format!("{:.2}× raw", ratio(&s, &raw_s)),
            String::new(),
        );
    }
    let case = "1 uncontended lock, +1, unlock";
    let raw_inc = get("raw+1");
    let ours_inc = get("SharedMutex<u64>+1");
    rep.row(
        case,
        "**SharedMutex<u64>**",
        fmt_ns(median(&ours_inc)),
        format!(
            "{:.2}× raw; {:.0}× faster than flock",
            ratio(&ours_inc, &raw_inc),
            ratio(&get("flock+1"), &ours_inc)
        ),
        String::new(),
    );
    for (name, id) in [
        ("raw glibc robust", "raw+1"),
        ("std::sync::Mutex (in-process)", "std+1"),
        ("POSIX named semaphore", "sem+1"),
        ("flock", "flock+1"),
        ("OFD fcntl", "ofd+1"),
        ("classic fcntl", "fcntl+1"),
    ] {
        let s = get(id);
        rep.row(
            case,
            name,
            fmt_ns(median(&s)),
            format!("{:.2}× raw", ratio(&s, &raw_inc)),
            String::new(),
        );
    }
    // The breakdown: each level adds one piece, replicated on the raw mutex.
    let case = "1b breakdown (replica on raw mutex)";
    let levels = [
        raw_s.clone(),
        get("L1"),
        get("L2"),
        get("L3"),
        get("L4"),
        get("L5"),
    ];
    for (i, s) in levels.iter().enumerate() {
        let step = if i == 0 {
            String::new()
        } else {
            let d: Vec<f64> = s.iter().zip(&levels[i - 1]).map(|(a, b)| a - b).collect();
            format!("step {:+.1} ns; ", median(&d))
        };
        rep.row(
            case,
            contenders::REPLICA_LEVELS[i],
            fmt_ns(median(s)),
            format!("{step}{:.2}× raw", ratio(s, &raw_s)),
            String::new(),
        );
    }
    let l6 = get("L6");
    let d: Vec<f64> = l6.iter().zip(&levels[5]).map(|(a, b)| a - b).collect();
    rep.row(
        case,
        SHIPPED_LEVEL,
        fmt_ns(median(&l6)),
        format!(
            "{:+.1} ns vs full replica; {:.2}× raw",
            median(&d),
            ratio(&l6, &raw_s)
        ),
        "≈ the fast path SharedMutex::lock ships (expired clocklock first)".to_owned(),
    );
    let d: Vec<f64> = unit_s.iter().zip(&levels[5]).map(|(a, b)| a - b).collect();
    rep.row(
        case,
        "SharedMutex<()> itself (replica + handle/guard plumbing)",
        fmt_ns(median(&unit_s)),
        format!("step {:+.1} ns; {r_unit:.2}× raw", median(&d)),
        String::new(),
    );
    rep.row(
        case,
        "(reference) clock_gettime(CLOCK_MONOTONIC)",
        fmt_ns(median(&get("clock"))),
        "one read per cycle is inside every case-2 latency".to_owned(),
        String::new(),
    );
    layouts(rep, &raw_s, &l6, &get("V2"), &unit_s, &get("spin"));
    busy_try(cfg, dir, rep);
}

/// Case 1d: the old and the new owner-record layout side by side, each
/// replicated on the raw mutex (`contenders::layouts`), and the raw mutex
/// with a bounded spin (which only runs after a first try failed).
fn layouts(rep: &mut Report, raw: &[f64], v1: &[f64], v2: &[f64], unit: &[f64], spin: &[f64]) {
    let case = "1d owner-record layouts, uncontended (replicas on raw mutex)";
    let ratio =
        |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
    for (name, s, note) in [
        ("raw glibc robust", raw, String::new()),
        (
            "v1 layout replica (= 1b shipped: record + counters lines, coarse clock read)",
            v1,
            String::new(),
        ),
        (
            "v2 layout replica (hot fields in the mutex's line, cached time)",
            v2,
            format!("{:.2}× the v1 replica", ratio(v2, v1)),
        ),
        ("**SharedMutex<()>** (this tree)", unit, String::new()),
        (
            "raw + spin 64 (spins only after a failed first try)",
            spin,
            String::new(),
        ),
    ] {
        rep.row(
            case,
            name,
            fmt_ns(median(s)),
            format!("{:.2}× raw", ratio(s, raw)),
            note,
        );
    }
}

/// `try_lock` on a lock another thread holds: the "would block" answer.
fn busy_try(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let ours = SharedMutex::<u64>::open(dir.join("busy-ours")).expect("open");
    let raw = RawRobust::create(&dir.join("busy-raw"));
    let n = if cfg.quick { 50 } else { 200 };
    let (mut t_ours, mut t_raw) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (ours, raw) = (&ours, &raw);
        s.spawn(move || {
            ours.with(|_, _| {
                raw.with(|_, _| {
                    held_tx.send(()).expect("send");
                    done_rx.recv().expect("recv");
                })
            })
        });
        held_rx.recv().expect("held");
        for _ in 0..7 {
            t_ours.push(batch(n, || {
                let r = ours.try_lock();
                assert!(matches!(r, Err(LockError::WouldBlock)), "{r:?}");
            }));
            t_raw.push(batch(n, || {
                // SAFETY: an initialised robust mutex held by another thread.
                let r = unsafe { libc::pthread_mutex_trylock(raw.shm.mutex()) };
                assert_eq!(r, libc::EBUSY);
            }));
        }
        done_tx.send(()).expect("send");
    });
    let (o, r) = (median(&t_ours), median(&t_raw));
    let case = "1c try_lock on a lock another thread holds";
    rep.row(
        case,
        "**SharedMutex<u64>::try_lock** → WouldBlock",
        fmt_ns(o),
        format!("{:.0}× raw trylock", o / r),
        String::new(),
    );
    rep.row(
        case,
        "raw pthread_mutex_trylock → EBUSY",
        fmt_ns(r),
        "1.00×".to_owned(),
        String::new(),
    );
}
