//! Side-by-side benchmarks of `SharedMutex` against the raw glibc robust
//! mutex it is built on, `std::sync::Mutex`, `flock`, OFD and classic
//! `fcntl` locks and POSIX named semaphores. Prints ONE markdown table on
//! stdout (progress goes to stderr); every ratio in it compares figures
//! measured in the same run, interleaved where that is possible.
//!
//! ```sh
//! cargo run --release --example bench                 # full run, about 1 minute on 2 cores
//! cargo run --release --example bench -- --quick      # a smaller run, about 10 s
//! cargo run --release --example bench -- --png docs/seed-workload.png
//! ```
//!
//! Flags: `--quick`; `--dir DIR` (where the lock files go; default /dev/shm,
//! else the temp dir); `--png FILE` (plot the seed workload); `--only 1,2,...`
//! (run only these cases); `--cycles N` (seed-workload cycles per process);
//! `--kills N` (owner-death kills, at least 50); `--files N` (scale case).
//!
//! Cases, as in docs/benchmarks.md: 1 uncontended lock+unlock and the price
//! of each piece of our bookkeeping; 2 the seed workload (P processes × N
//! cycles of lock, read the counter, write counter + 1, unlock); 3 handoff
//! latency between two processes; 4 owner death (SIGKILL of the holder → the
//! blocked waiter's `OwnerDied`); 5 open (attach, create); 6 scale (10,000
//! files in one process, 64 processes on one mutex).
//!
//! Child processes are this same binary re-executed with a `__role`
//! argument (never `fork` in a threaded program).

#[path = "../benches/contenders/mod.rs"]
mod contenders;

use contenders::{
    Flock, Lock, NamedSem, OfdLock, PosixLock, RawRobust, Replica, ShmFile, now_ns,
    wait_until_blocked,
};
use robust_mutex::{CancelToken, LockError, OpenOptions, SharedMutex};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// How long any "wait until the other side is blocked" may take before the
/// run is declared broken.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Configuration and the report
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Cfg {
    quick: bool,
    dir: PathBuf,
    png: Option<PathBuf>,
    only: Vec<u32>,
    rounds: usize,
    batch_ns: u64,
    cycles: u64,
    seed_reps: usize,
    handoffs: u64,
    kills: usize,
    cancels: usize,
    open_iters: usize,
    files: usize,
    crowd_procs: usize,
    crowd_secs: f64,
}

impl Cfg {
    fn parse(args: &[String]) -> Cfg {
        let quick = args.iter().any(|a| a == "--quick");
        let value = |name: &str| {
            args.iter().position(|a| a == name).map(|i| {
                args.get(i + 1)
                    .unwrap_or_else(|| panic!("{name} takes a value"))
            })
        };
        let num = |name: &str, default: u64| -> u64 {
            value(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
        };
        let dir = value("--dir").map_or_else(
            || {
                let shm = PathBuf::from("/dev/shm");
                if shm.is_dir() {
                    shm
                } else {
                    std::env::temp_dir()
                }
            },
            PathBuf::from,
        );
        let only = value("--only").map_or_else(Vec::new, |v| {
            v.split(',')
                .map(|s| s.trim().parse().expect("--only takes case numbers"))
                .collect()
        });
        Cfg {
            quick,
            dir,
            png: value("--png").map(PathBuf::from),
            only,
            rounds: if quick { 11 } else { 31 },
            batch_ns: if quick { 1_000_000 } else { 2_000_000 },
            cycles: num("--cycles", if quick { 300_000 } else { 1_000_000 }),
            seed_reps: if quick { 3 } else { 9 },
            handoffs: if quick { 200 } else { 1_000 },
            kills: (num("--kills", if quick { 50 } else { 200 }) as usize).max(50),
            cancels: if quick { 50 } else { 200 },
            open_iters: if quick { 300 } else { 1_500 },
            files: num("--files", if quick { 2_000 } else { 10_000 }) as usize,
            crowd_procs: 64,
            crowd_secs: if quick { 0.25 } else { 0.5 },
        }
    }

    fn runs(&self, case: u32) -> bool {
        self.only.is_empty() || self.only.contains(&case)
    }
}

#[derive(Debug, Default)]
struct Report {
    rows: Vec<[String; 5]>,
}

impl Report {
    fn row(&mut self, case: &str, lock: &str, result: String, ratio: String, target: String) {
        eprintln!("  {case} | {lock} | {result} | {ratio} | {target}");
        self.rows
            .push([case.to_owned(), lock.to_owned(), result, ratio, target]);
    }

    fn print(&self) {
        println!("| case | lock | result | ratio (same run) | target |");
        println!("|---|---|---|---|---|");
        let cell = |c: &String| c.replace('|', "\\|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                cell(&r[0]),
                cell(&r[1]),
                cell(&r[2]),
                cell(&r[3]),
                cell(&r[4])
            );
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**NOT met**" }
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else {
        format!("{:.1} k/s", per_s / 1e3)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    format!(
        "{} CPUs ({cpu}), Linux {}, glibc {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        glibc.to_string_lossy()
    )
}

// ---------------------------------------------------------------------------
// Children: this binary re-executed as `__role kind path ...`
// ---------------------------------------------------------------------------

/// Runs `$body` with `$l` bound to the contender `$kind`, opened at `$path`
/// by this process (its own handle, descriptor and mapping).
macro_rules! with_lock {
    ($kind:expr, $path:expr, |$l:ident| $body:expr) => {
        match $kind {
            "ours" => {
                let $l = SharedMutex::<u64>::open($path).expect("open SharedMutex");
                $body
            }
            "raw" => {
                let $l = RawRobust::open($path);
                $body
            }
            "flock" => {
                let $l = Flock {
                    shm: ShmFile::open($path),
                };
                $body
            }
            "ofd" => {
                let $l = OfdLock {
                    shm: ShmFile::open($path),
                };
                $body
            }
            "fcntl" => {
                let $l = PosixLock {
                    shm: ShmFile::open($path),
                };
                $body
            }
            "sem" => {
                let $l = NamedSem::open($path);
                $body
            }
            "replica8" => {
                let $l = Replica::<8> {
                    raw: RawRobust::open($path),
                };
                $body
            }
            "replica1" => {
                let $l = Replica::<1> {
                    raw: RawRobust::open($path),
                };
                $body
            }
            "replica2" => {
                let $l = Replica::<2> {
                    raw: RawRobust::open($path),
                };
                $body
            }
            "replica3" => {
                let $l = Replica::<3> {
                    raw: RawRobust::open($path),
                };
                $body
            }
            "replica4" => {
                let $l = Replica::<4> {
                    raw: RawRobust::open($path),
                };
                $body
            }
            "replica5" => {
                let $l = Replica::<5> {
                    raw: RawRobust::open($path),
                };
                $body
            }
            k => panic!("unknown lock kind {k}"),
        }
    };
}

fn label(kind: &str) -> &'static str {
    match kind {
        "ours" => "**SharedMutex<u64>**",
        "raw" => "raw glibc robust",
        "flock" => "flock",
        "ofd" => "OFD fcntl",
        "fcntl" => "classic fcntl",
        "sem" => "POSIX named semaphore",
        "replica1" => "replica: raw + lock-word snapshot",
        "replica8" => contenders::PRIVATE_RECORD_LEVEL,
        "replica2" => "replica: … + owner record",
        "replica3" => "replica: … + counters",
        "replica4" => "replica: … + coarse clock",
        "replica5" => "replica: … + log checks (full)",
        _ => "?",
    }
}

/// Prints `ready`, then waits for the parent's `go` line; returns the rest
/// of that line.
fn ready_then_go() -> String {
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    assert!(line.starts_with("go"), "expected go, got {line:?}");
    line[2..].trim().to_owned()
}

fn child(args: &[String]) {
    let role = args[0].as_str();
    let kind = args[1].as_str();
    let path = PathBuf::from(&args[2]);
    let arg = |i: usize| -> u64 { args[i].parse().expect("a number") };
    match role {
        "__seed" => {
            let (n, out) = (arg(3) as usize, PathBuf::from(&args[4]));
            with_lock!(kind, &path, |l| seed_child(&l, n, &out))
        }
        "__pingpong" => {
            let ctl = ShmFile::open(Path::new(&args[3]));
            let parent = std::os::unix::process::parent_id();
            with_lock!(kind, &path, |l| {
                println!("ready");
                pingpong(&l, &ctl, false, arg(4), parent)
            })
        }
        "__hold" => with_lock!(kind, &path, |l| l.with(|_, _| {
            println!("ready");
            loop {
                // SAFETY: pause has no preconditions; we wait for SIGKILL.
                unsafe { libc::pause() };
            }
        })),
        "__crowd" => with_lock!(kind, &path, |l| crowd_child(&l)),
        "__files" => scale_files_child(arg(3) as usize, &path),
        _ => panic!("unknown role {role}"),
    }
}

struct Kid {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Kid {
    fn spawn(args: &[&str]) -> Kid {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a child");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Kid {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("child stdout");
        assert!(!s.is_empty(), "child exited early");
        s.trim().to_owned()
    }

    fn expect(&mut self, what: &str) {
        let l = self.line();
        assert_eq!(l, what, "unexpected line from child");
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("child stdin");
        self.stdin.flush().expect("child stdin");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ok(mut self) {
        let st = self.child.wait().expect("wait");
        assert!(st.success(), "child failed: {st}");
    }
}

/// The parent's handle on a contender's file: creates it, keeps it alive
/// (and the named semaphore linked), reads the final counter.
enum Keeper {
    Ours(SharedMutex<u64>),
    Raw(RawRobust),
    File(ShmFile),
    Sem(NamedSem),
}

impl Keeper {
    fn create(kind: &str, path: &Path) -> Keeper {
        match kind {
            "ours" => Keeper::Ours(SharedMutex::open(path).expect("create SharedMutex")),
            "raw" | "replica1" | "replica2" | "replica3" | "replica4" | "replica5" | "replica8" => {
                Keeper::Raw(RawRobust::create(path))
            }
            "sem" => Keeper::Sem(NamedSem::create(path)),
            _ => Keeper::File(ShmFile::create(path, contenders::FILE_LEN)),
        }
    }

    /// The guarded counter, read when every child has exited.
    fn counter(&self) -> u64 {
        match self {
            Keeper::Ours(m) => m.with(|v, _| *v),
            Keeper::Raw(r) => r.shm.read_counter(),
            Keeper::File(f) => f.read_counter(),
            Keeper::Sem(s) => s.shm.read_counter(),
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Uncontended lock+unlock, and the breakdown
// ---------------------------------------------------------------------------

/// Mean ns per call of `f` over `n` calls.
fn batch(n: u64, mut f: impl FnMut()) -> f64 {
    let t = now_ns();
    for _ in 0..n {
        f();
    }
    (now_ns() - t) as f64 / n as f64
}

struct Entry<'a> {
    name: &'a str,
    n: u64,
    f: Box<dyn FnMut(u64) -> f64 + 'a>,
    samples: Vec<f64>,
}

fn entry<'a>(name: &'a str, mut f: impl FnMut() + 'a) -> Entry<'a> {
    Entry {
        name,
        n: 0,
        f: Box::new(move |n| batch(n, &mut f)),
        samples: Vec::new(),
    }
}

fn uncontended(cfg: &Cfg, dir: &Path, rep: &mut Report) {
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
        entry("clock", || {
            black_box(now_ns());
        }),
    ];
    // Calibrate: about `batch_ns` per batch.
    for e in &mut es {
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
            "≤ 1.25× raw: {}; ≥ 50× faster than flock: {}",
            met(r_unit <= 1.25),
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
        contenders::REPLICA_LEVELS[6],
        fmt_ns(median(&l6)),
        format!(
            "{:+.1} ns vs full replica; {:.2}× raw",
            median(&d),
            ratio(&l6, &raw_s)
        ),
        "≈ what SharedMutex<()> would cost with the proposed patch".to_owned(),
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
    busy_try(cfg, dir, rep);
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

// ---------------------------------------------------------------------------
// 2. The seed workload
// ---------------------------------------------------------------------------

/// Voluntary context switches of this process so far (each futex sleep is one).
fn sleeps() -> u64 {
    // SAFETY: `ru` is a valid, writable rusage; getrusage only fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_nvcsw as u64
}

fn seed_child<L: Lock>(l: &L, n: usize, out: &Path) {
    let mut lat: Vec<u32> = Vec::with_capacity(n);
    ready_then_go();
    let slept = sleeps();
    let start = now_ns();
    let mut prev = start;
    for _ in 0..n {
        l.with(|v, _| *v = black_box(*v) + 1);
        let t = now_ns();
        lat.push((t - prev).min(u64::from(u32::MAX)) as u32);
        prev = t;
    }
    let bytes: Vec<u8> = lat.iter().flat_map(|x| x.to_le_bytes()).collect();
    let slept = sleeps() - slept;
    std::fs::write(out, bytes).expect("write latencies");
    println!("done {start} {prev} {slept}");
}

#[derive(Debug, Clone, Copy)]
struct SeedStats {
    rate: f64,
    /// Voluntary context switches (futex sleeps) per 1,000 cycles.
    sleeps_k: f64,
    mean: f64,
    p50: u64,
    p99: u64,
    max: u64,
}

fn seed_run(kind: &str, procs: usize, n: u64, dir: &Path, tag: &str) -> SeedStats {
    let path = dir.join(format!("seed-{kind}-{procs}-{tag}"));
    let keeper = Keeper::create(kind, &path);
    let ps = path.to_str().expect("UTF-8 path");
    let outs: Vec<String> = (0..procs).map(|i| format!("{ps}.lat{i}")).collect();
    let mut kids: Vec<Kid> = outs
        .iter()
        .map(|o| Kid::spawn(&["__seed", kind, ps, &n.to_string(), o]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.send("go");
    }
    let (mut start, mut end, mut slept) = (u64::MAX, 0, 0);
    for k in &mut kids {
        let l = k.line();
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("number"))
            .collect();
        start = start.min(f[0]);
        end = end.max(f[1]);
        slept += f[2];
    }
    for k in kids {
        k.wait_ok();
    }
    let total = procs as u64 * n;
    assert_eq!(
        keeper.counter(),
        total,
        "{kind}, P = {procs}: the final counter is not exact"
    );
    let mut lat: Vec<u64> = Vec::with_capacity(total as usize);
    for o in &outs {
        let b = std::fs::read(o).expect("latencies");
        lat.extend(
            b.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        );
        let _ = std::fs::remove_file(o);
    }
    let _ = std::fs::remove_file(&path);
    let mean = lat.iter().sum::<u64>() as f64 / lat.len() as f64;
    let max = lat.iter().copied().max().unwrap_or(0);
    let mut nth = |q: f64| {
        let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        *lat.select_nth_unstable(i).1
    };
    SeedStats {
        rate: total as f64 / ((end - start) as f64 / 1e9),
        sleeps_k: slept as f64 * 1000.0 / total as f64,
        mean,
        p50: nth(0.5),
        p99: nth(0.99),
        max,
    }
}

type SeedTable = Vec<(&'static str, usize, SeedStats)>;

fn seed_workload(cfg: &Cfg, dir: &Path, rep: &mut Report) -> SeedTable {
    let kinds = ["raw", "ours", "flock"];
    let procs = [1usize, 2, 4, 8];
    // The contended breakdown: the replica levels at these P.
    let levels = ["replica1", "replica2", "replica3", "replica4", "replica5"];
    let level_procs = [2usize, 4];
    eprintln!(
        "case 2: seed workload, {} cycles per process ({} for flock), {} repetition(s)",
        cfg.cycles,
        cfg.cycles / 10,
        cfg.seed_reps
    );
    // runs[(kind, P)] = one SeedStats per repetition
    let mut runs: Vec<((&str, usize), Vec<SeedStats>)> = Vec::new();
    for r in 0..cfg.seed_reps {
        for &p in &procs {
            let extra = if level_procs.contains(&p) {
                &levels[..]
            } else {
                &[]
            };
            // Rotate the order each repetition: no contender always runs first.
            let mut order: Vec<&str> = kinds.iter().chain(extra).copied().collect();
            let len = order.len();
            order.rotate_left(r % len);
            for kind in order {
                let n = if kind == "flock" {
                    cfg.cycles / 10
                } else {
                    cfg.cycles
                };
                let s = seed_run(kind, p, n, dir, &r.to_string());
                match runs.iter_mut().find(|(k, _)| *k == (kind, p)) {
                    Some((_, v)) => v.push(s),
                    None => runs.push(((kind, p), vec![s])),
                }
            }
        }
    }
    let of = |kind: &str, p: usize| -> &Vec<SeedStats> {
        &runs.iter().find(|(k, _)| *k == (kind, p)).expect("run").1
    };
    let mut table = SeedTable::new();
    for &p in &procs {
        let case = format!("2 seed workload, P = {p}");
        let raw = of("raw", p);
        for &kind in &kinds {
            let v = of(kind, p);
            // Report the repetition with the median throughput.
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[a].rate.total_cmp(&v[b].rate));
            let s = v[idx[idx.len() / 2]];
            let rs: Vec<f64> = v.iter().zip(raw).map(|(a, b)| a.rate / b.rate).collect();
            let r = median(&rs);
            let spread = if rs.len() > 1 && kind != "raw" {
                format!(
                    " (runs {:.2}–{:.2})",
                    rs.iter().cloned().fold(f64::MAX, f64::min),
                    rs.iter().cloned().fold(0.0, f64::max)
                )
            } else {
                String::new()
            };
            let target = if kind == "ours" && p == 4 {
                format!("≥ 0.9× raw: {}", met(r >= 0.9))
            } else {
                String::new()
            };
            let n = if kind == "flock" {
                cfg.cycles / 10
            } else {
                cfg.cycles
            };
            rep.row(
                &case,
                label(kind),
                format!(
                    "{} cycles/s; mean {}, median {}, p99 {}, max {}; {:.1} sleeps/1k cycles; counter exact ({p}×{n})",
                    fmt_rate(s.rate),
                    fmt_ns(s.mean),
                    fmt_ns(s.p50 as f64),
                    fmt_ns(s.p99 as f64),
                    fmt_ns(s.max as f64),
                    s.sleeps_k
                ),
                format!("{r:.2}× raw throughput{spread}"),
                target,
            );
            table.push((kind, p, s));
        }
    }
    for &p in &level_procs {
        let case = format!("2b contended breakdown, P = {p}");
        let raw = of("raw", p);
        for kind in std::iter::once("raw").chain(levels).chain(["ours"]) {
            let v = of(kind, p);
            let rs: Vec<f64> = v.iter().zip(raw).map(|(a, b)| a.rate / b.rate).collect();
            let rates: Vec<f64> = v.iter().map(|s| s.rate).collect();
            let (lo, hi) = (
                rs.iter().cloned().fold(f64::MAX, f64::min),
                rs.iter().cloned().fold(0.0, f64::max),
            );
            let name = match kind {
                "raw" => "raw glibc robust (level 0)",
                "ours" => "**SharedMutex<u64>**",
                k => label(k),
            };
            rep.row(
                &case,
                name,
                format!(
                    "{} cycles/s, {:.1} sleeps/1k cycles (medians of {} runs)",
                    fmt_rate(median(&rates)),
                    median(&v.iter().map(|s| s.sleeps_k).collect::<Vec<_>>()),
                    v.len()
                ),
                format!("{:.2}× raw throughput (runs {lo:.2}–{hi:.2})", median(&rs)),
                String::new(),
            );
        }
    }
    table
}

// ---------------------------------------------------------------------------
// 3. Handoff between two processes
// ---------------------------------------------------------------------------

/// Ping-pong of lock ownership between this process and `other` (a
/// process whose main thread takes part). Acquisition `s` (counted in the
/// control file) is a handoff for every `s > 0`: its latency, from the
/// releaser's clock read just before unlocking to the blocked waiter's clock
/// read just after acquiring, lands in slot `s`.
fn pingpong<L: Lock>(l: &L, ctl: &ShmFile, first: bool, total: u64, other: u32) {
    let seq = ctl.atomic(0);
    let t0 = ctl.atomic(8);
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    if !first {
        while seq.load(Acquire) < 1 {
            std::thread::yield_now();
        }
    }
    loop {
        let mine = l.with(|_, _| {
            let now = now_ns();
            let s = seq.load(Acquire);
            if s > 0 {
                ctl.atomic(64 + 8 * s as usize)
                    .store(now - t0.load(Acquire), Relaxed);
            }
            seq.store(s + 1, Release);
            if s + 1 >= total {
                return None;
            }
            assert!(
                wait_until_blocked(other, other, L::WAIT_SYSCALL, BLOCK_TIMEOUT),
                "the other process never blocked on the lock"
            );
            t0.store(now_ns(), Release);
            Some(s + 1)
        });
        let Some(mine) = mine else { return };
        while seq.load(Acquire) == mine {
            std::thread::yield_now();
        }
        if seq.load(Acquire) >= total {
            return;
        }
    }
}

/// One ping-pong of `handoffs` handoffs on a fresh `kind` lock with a fresh
/// child; returns the latencies.
fn handoff_block(kind: &str, handoffs: u64, dir: &Path, tag: usize) -> Vec<u64> {
    let total = handoffs + 1;
    let path = dir.join(format!("handoff-{kind}-{tag}"));
    let ctl_path = dir.join(format!("handoff-{kind}-{tag}.ctl"));
    let keeper = Keeper::create(kind, &path);
    let ctl = ShmFile::create(&ctl_path, 64 + 8 * (total as usize + 1));
    let (ps, cs) = (
        path.to_str().expect("UTF-8"),
        ctl_path.to_str().expect("UTF-8"),
    );
    let mut kid = Kid::spawn(&["__pingpong", kind, ps, cs, &total.to_string()]);
    kid.expect("ready");
    let other = kid.pid();
    with_lock!(kind, &path, |l| pingpong(&l, &ctl, true, total, other));
    kid.wait_ok();
    let v = (1..total)
        .map(|s| {
            ctl.atomic(64 + 8 * s as usize)
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    drop(keeper);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&ctl_path);
    v
}

fn handoff(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let kinds = ["raw", "ours", "sem", "flock", "ofd", "fcntl"];
    let blocks = if cfg.quick { 2 } else { 5 };
    let per = cfg.handoffs / blocks as u64;
    eprintln!(
        "case 3: handoff ping-pong, {} handoffs per lock in {blocks} interleaved blocks",
        per * blocks as u64
    );
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    for b in 0..blocks {
        for j in 0..kinds.len() {
            let i = (b + j) % kinds.len();
            let v = handoff_block(kinds[i], per, dir, b);
            all[i].extend(v);
        }
    }
    for v in &mut all {
        v.sort_unstable();
    }
    let raw_med = pct(&all[0], 0.5) as f64;
    for (kind, v) in kinds.iter().zip(&all) {
        rep.row(
            "3 handoff: release → blocked waiter acquires (other process)",
            label(kind),
            format!(
                "median {}, p99 {}, max {} ({} handoffs)",
                fmt_ns(pct(v, 0.5) as f64),
                fmt_ns(pct(v, 0.99) as f64),
                fmt_ns(*v.last().unwrap_or(&0) as f64),
                v.len()
            ),
            format!("{:.2}× raw (median)", pct(v, 0.5) as f64 / raw_med),
            String::new(),
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Owner death (and cancelling a wait)
// ---------------------------------------------------------------------------

/// `kills` times: a child takes the lock and says so over its stdout pipe;
/// a waiter thread here blocks in lock(); once the kernel shows it asleep,
/// t0 is read just before kill(SIGKILL); t1 is the waiter's first clock read
/// after its lock call returns. Returns (sorted t1 − t0, deaths reported).
fn death<L: Lock + Sync>(l: &L, kind: &str, path: &Path, kills: usize) -> (Vec<u64>, usize) {
    use std::sync::mpsc;
    let me = std::process::id();
    let mut lat = Vec::with_capacity(kills);
    let mut reported = 0;
    std::thread::scope(|s| {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (res_tx, res_rx) = mpsc::channel::<(u64, bool)>();
        let (tid_tx, tid_rx) = mpsc::channel::<u32>();
        s.spawn(move || {
            tid_tx.send(contenders::gettid() as u32).expect("send");
            for () in go_rx {
                let r = l.with(|_, died| (now_ns(), died));
                res_tx.send(r).expect("send");
            }
        });
        let tid = tid_rx.recv().expect("waiter tid");
        let ps = path.to_str().expect("UTF-8");
        for _ in 0..kills {
            let mut kid = Kid::spawn(&["__hold", kind, ps]);
            kid.expect("ready");
            go_tx.send(()).expect("go");
            assert!(
                wait_until_blocked(me, tid, L::WAIT_SYSCALL, BLOCK_TIMEOUT),
                "the waiter never blocked"
            );
            let t0 = now_ns();
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // unreaped child, so it cannot have been reused.
            unsafe { libc::kill(kid.pid() as libc::pid_t, libc::SIGKILL) };
            let (t1, died) = res_rx.recv().expect("waiter result");
            let _ = kid.child.wait();
            lat.push(t1 - t0);
            reported += usize::from(died);
        }
        drop(go_tx);
    });
    lat.sort_unstable();
    (lat, reported)
}

fn owner_death(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let blocks = if cfg.quick { 2 } else { 4 };
    let per = cfg.kills.div_ceil(blocks);
    let flock_per = (per / 4).max(10);
    eprintln!(
        "case 4: owner death, {} kills per robust lock in {blocks} interleaved blocks",
        per * blocks
    );
    let case = "4 owner death: SIGKILL of holder → waiter returns";
    let kinds = ["raw", "ours", "flock"];
    let paths: Vec<PathBuf> = kinds
        .iter()
        .map(|k| dir.join(format!("death-{k}")))
        .collect();
    let keepers: Vec<Keeper> = kinds
        .iter()
        .zip(&paths)
        .map(|(k, p)| Keeper::create(k, p))
        .collect();
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    let mut reported = vec![0usize; kinds.len()];
    for b in 0..blocks {
        for j in 0..kinds.len() {
            let i = (b + j) % kinds.len();
            let (kind, path) = (kinds[i], &paths[i]);
            let kills = if kind == "flock" { flock_per } else { per };
            let (v, r) = with_lock!(kind, path, |l| death(&l, kind, path, kills));
            lat[i].extend(v);
            reported[i] += r;
        }
    }
    drop(keepers);
    for v in &mut lat {
        v.sort_unstable();
    }
    let raw_p50 = pct(&lat[0], 0.5) as f64;
    for (i, kind) in kinds.iter().enumerate() {
        let v = &lat[i];
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        let told = if *kind == "flock" {
            "released, death NOT reported".to_owned()
        } else {
            format!("EOWNERDEAD reported {}/{}", reported[i], v.len())
        };
        rep.row(
            case,
            label(kind),
            format!(
                "median {}, p99 {}, max {} ({} kills; {told})",
                fmt_ns(p50 as f64),
                fmt_ns(p99 as f64),
                fmt_ns(*v.last().unwrap_or(&0) as f64),
                v.len()
            ),
            format!("{:.2}× raw (median)", p50 as f64 / raw_p50),
            if *kind == "ours" {
                format!("p99 < 1 ms: {}", met(p99 < 1_000_000))
            } else {
                String::new()
            },
        );
        if *kind == "ours" {
            assert_eq!(reported[i], v.len(), "an owner death went unreported");
        }
    }

    // Cancelling a blocked wait: CancelToken::cancel → LockError::Cancelled.
    let path = dir.join("cancel");
    let m = SharedMutex::<u64>::open(&path).expect("open");
    let mut kid = Kid::spawn(&["__hold", "ours", path.to_str().expect("UTF-8")]);
    kid.expect("ready");
    let me = std::process::id();
    let mut lat = Vec::with_capacity(cfg.cancels);
    for _ in 0..cfg.cancels {
        let token = CancelToken::new();
        std::thread::scope(|s| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
            let (m, token) = (&m, &token);
            let waiter = s.spawn(move || {
                tid_tx.send(contenders::gettid() as u32).expect("send");
                let r = m.lock_cancellable(token, None).map(drop);
                let t1 = now_ns();
                assert!(matches!(r, Err(LockError::Cancelled)), "{r:?}");
                t1
            });
            let tid = tid_rx.recv().expect("tid");
            assert!(wait_until_blocked(
                me,
                tid,
                libc::SYS_futex_waitv,
                BLOCK_TIMEOUT
            ));
            let t0 = now_ns();
            token.cancel();
            lat.push(waiter.join().expect("waiter") - t0);
        });
    }
    // SAFETY: our unreaped child.
    unsafe { libc::kill(kid.pid() as libc::pid_t, libc::SIGKILL) };
    let _ = kid.child.wait();
    lat.sort_unstable();
    rep.row(
        "4b cancel a blocked wait (CancelToken::cancel → Cancelled)",
        "**SharedMutex<u64>**",
        format!(
            "median {}, p99 {}, max {} ({} cancels)",
            fmt_ns(pct(&lat, 0.5) as f64),
            fmt_ns(pct(&lat, 0.99) as f64),
            fmt_ns(*lat.last().unwrap_or(&0) as f64),
            cfg.cancels
        ),
        String::new(),
        String::new(),
    );
}

// ---------------------------------------------------------------------------
// 5. Open
// ---------------------------------------------------------------------------

fn open_costs(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    eprintln!("case 5: open, {} iterations (interleaved)", cfg.open_iters);
    let ready = dir.join("attach-ready");
    drop(SharedMutex::<u64>::open(&ready).expect("create"));
    let ready_c = contenders::c_path(&ready);
    let sem_path = dir.join("attach-sem");
    let sem = NamedSem::create(&sem_path);
    let sem_name = contenders::sem_name(&sem_path);
    let fresh = dir.join("fresh");
    std::fs::create_dir(&fresh).expect("mkdir");

    let names = [
        "ours attach",
        "raw attach",
        "flock open",
        "sem attach",
        "L0",
        "L1",
        "L2",
        "L3",
        "L4",
        "ns stat",
        "ours create",
        "raw create",
        "sem create",
        "ours drop",
        "raw drop",
    ];
    let mut s: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    let time = |f: &mut dyn FnMut()| {
        let t = now_ns();
        f();
        now_ns() - t
    };
    for i in 0..cfg.open_iters {
        let mut keep_ours = None;
        s[0].push(time(&mut || {
            keep_ours = Some(OpenOptions::new().open::<u64>(&ready).expect("attach"))
        }));
        s[13].push(time(&mut || drop(keep_ours.take())));
        let mut keep = None;
        s[1].push(time(&mut || keep = Some(contenders::raw_attach(&ready_c))));
        s[14].push(time(&mut || {
            if let Some(m) = keep.take() {
                m.touch();
            }
        }));
        let mut keep_f = None;
        s[2].push(time(&mut || {
            keep_f = Some(std::fs::File::open(&ready).expect("open"))
        }));
        drop(keep_f);
        s[3].push(time(&mut || {
            // SAFETY: a valid name of an existing semaphore; closed at once.
            let p = unsafe { libc::sem_open(sem_name.as_ptr(), 0) };
            assert_ne!(p, libc::SEM_FAILED);
            // SAFETY: `p` came from sem_open.
            unsafe { libc::sem_close(p) };
        }));
        for level in 0..5 {
            let mut keep = None;
            s[4 + level].push(time(&mut || {
                keep = contenders::replica_attach(&ready_c, level)
            }));
            drop(keep);
        }
        s[9].push(time(&mut contenders::proc_ns_stat));
        let p = fresh.join(format!("ours-{i}"));
        let mut keep_ours = None;
        s[10].push(time(&mut || {
            keep_ours = Some(SharedMutex::<u64>::open(&p).expect("create"))
        }));
        drop(keep_ours);
        let p = fresh.join(format!("raw-{i}"));
        let mut keep = None;
        s[11].push(time(&mut || keep = Some(contenders::raw_create(&p))));
        drop(keep);
        let name = std::ffi::CString::new(format!("/rmbench-create-{}-{i}", std::process::id()))
            .expect("no NUL");
        s[12].push(time(&mut || {
            // SAFETY: a valid name; the variadic mode and value are passed as
            // promoted unsigned ints; the semaphore is closed at once.
            let p = unsafe {
                libc::sem_open(
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL,
                    0o600 as libc::c_uint,
                    1 as libc::c_uint,
                )
            };
            assert_ne!(p, libc::SEM_FAILED);
            // SAFETY: `p` came from sem_open.
            unsafe { libc::sem_close(p) };
        }));
        // SAFETY: a valid name.
        unsafe { libc::sem_unlink(name.as_ptr()) };
    }
    drop(sem);
    let _ = std::fs::remove_dir_all(&fresh);
    for v in &mut s {
        v.sort_unstable();
    }
    let med = |i: usize| pct(&s[i], 0.5) as f64;
    let show = |i: usize| {
        format!(
            "median {}, p99 {}",
            fmt_ns(med(i)),
            fmt_ns(pct(&s[i], 0.99) as f64)
        )
    };
    let case = "5 open: attach to an existing ready file";
    rep.row(
        case,
        "**SharedMutex<u64>::open**",
        show(0),
        format!("{:.2}× raw floor", med(0) / med(1)),
        format!("< 20 µs: {}", met(med(0) < 20_000.0)),
    );
    for (i, name) in [
        (1, "raw floor: open + fstat + mmap + close"),
        (2, "flock user: open()"),
        (3, "sem_open existing + sem_close"),
    ] {
        rep.row(
            case,
            name,
            show(i),
            format!("{:.2}× raw floor", med(i) / med(1)),
            String::new(),
        );
    }
    rep.row(
        case,
        "drop of the last handle (held check faults the page in; munmap)",
        show(13),
        format!(
            "{:.2}× raw read-word + munmap ({})",
            med(13) / med(14),
            fmt_ns(med(14))
        ),
        String::new(),
    );
    let case = "5b attach steps (replica, cumulative)";
    for level in 0..5 {
        let step = if level == 0 {
            String::new()
        } else {
            format!("step {}; ", fmt_ns(med(4 + level) - med(3 + level)))
        };
        rep.row(
            case,
            contenders::ATTACH_LEVELS[level],
            show(4 + level),
            format!("{step}{:.0}% of ours", 100.0 * med(4 + level) / med(0)),
            String::new(),
        );
    }
    rep.row(
        case,
        "(removed by 42e4aee) stat /proc/self/ns/pid, once per attach, twice per create",
        show(9),
        format!("{:.0}% of today's attach", 100.0 * med(9) / med(0)),
        String::new(),
    );
    let case = "5 open: create + initialise a new file";
    rep.row(
        case,
        "**SharedMutex<u64>::open**",
        show(10),
        format!("{:.2}× raw floor", med(10) / med(11)),
        String::new(),
    );
    rep.row(
        case,
        "raw floor: open(O_CREAT|O_EXCL) + ftruncate + mmap + mutex_init",
        show(11),
        "1.00× raw floor".to_owned(),
        String::new(),
    );
    rep.row(
        case,
        "sem_open(O_CREAT|O_EXCL) + sem_close",
        show(12),
        format!("{:.2}× raw floor", med(12) / med(11)),
        String::new(),
    );
}

// ---------------------------------------------------------------------------
// 6. Scale
// ---------------------------------------------------------------------------

/// (VmSize, VmRSS, RssAnon, RssFile + RssShmem) in KiB.
fn mem_kib() -> [u64; 4] {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    [
        get("VmSize:"),
        get("VmRSS:"),
        get("RssAnon:"),
        get("RssFile:") + get("RssShmem:"),
    ]
}

/// In a fresh child process (so that the memory deltas are not hidden by a
/// heap the other cases warmed): opens `n` new mutex files in `dir`, locks
/// each once, reads /proc/self/status, drops them all, attaches to them all
/// again. Prints the figures on one line.
fn scale_files_child(n: usize, dir: &Path) {
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.join(i.to_string())).collect();
    let mut times = Vec::with_capacity(n);
    let mut attach = Vec::with_capacity(n);
    let mut all = Vec::with_capacity(n);
    let before = mem_kib();
    for p in &paths {
        let t = now_ns();
        all.push(SharedMutex::<u64>::open(p).expect("create"));
        times.push(now_ns() - t);
    }
    for m in &all {
        m.with(|v, _| *v += 1);
    }
    let after = mem_kib();
    let t = now_ns();
    drop(all);
    let drop_ns = (now_ns() - t) / n as u64;
    let mut all = Vec::with_capacity(n);
    for p in &paths {
        let t = now_ns();
        all.push(OpenOptions::new().open::<u64>(p).expect("attach"));
        attach.push(now_ns() - t);
    }
    drop(all);
    let tenth = (n / 10).max(1);
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
    let d: Vec<u64> = (0..4).map(|i| after[i].saturating_sub(before[i])).collect();
    println!(
        "{} {} {} {} {} {} {drop_ns} {} {} {} {}",
        mean(&times),
        mean(&times[..tenth]),
        mean(&times[n - tenth..]),
        mean(&attach),
        mean(&attach[..tenth]),
        mean(&attach[n - tenth..]),
        d[0],
        d[1],
        d[2],
        d[3]
    );
}

fn scale_files(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let n = cfg.files;
    eprintln!("case 6: {n} mutex files in one (fresh) process");
    let d = dir.join("many");
    std::fs::create_dir(&d).expect("mkdir");
    let ds = d.to_str().expect("UTF-8");
    let mut kid = Kid::spawn(&["__files", "ours", ds, &n.to_string()]);
    let f: Vec<f64> = kid
        .line()
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    kid.wait_ok();
    let _ = std::fs::remove_dir_all(&d);
    let case = format!("6 scale: {n} mutex files open in one process");
    rep.row(
        &case,
        "**SharedMutex<u64>::open**, create",
        format!(
            "mean {} per file (first tenth {}, last tenth {})",
            fmt_ns(f[0]),
            fmt_ns(f[1]),
            fmt_ns(f[2])
        ),
        format!("last/first tenth {:.2}×", f[2] / f[1]),
        String::new(),
    );
    rep.row(
        &case,
        "**SharedMutex<u64>::open**, attach",
        format!(
            "mean {} per file (first tenth {}, last tenth {}); drop {} per handle",
            fmt_ns(f[3]),
            fmt_ns(f[4]),
            fmt_ns(f[5]),
            fmt_ns(f[6])
        ),
        format!("last/first tenth {:.2}×", f[5] / f[4]),
        String::new(),
    );
    let per = |kib: f64| kib * 1024.0 / n as f64;
    rep.row(
        &case,
        "memory per mutex (/proc/self/status delta, each locked once)",
        format!(
            "VmSize {:.0} B, VmRSS {:.0} B (RssAnon {:.0} B + RssFile/RssShmem {:.0} B)",
            per(f[7]),
            per(f[8]),
            per(f[9]),
            per(f[10])
        ),
        "the 4 KiB page is shared memory (/dev/shm), counted once per machine".to_owned(),
        String::new(),
    );
}

fn crowd_child<L: Lock>(l: &L) {
    let deadline: u64 = ready_then_go().parse().expect("deadline");
    let slept = sleeps();
    let (mut count, mut worst) = (0u64, 0u64);
    let end = loop {
        let t0 = now_ns();
        let t1 = l.with(|v, _| {
            let t1 = now_ns();
            *v = black_box(*v) + 1;
            t1
        });
        count += 1;
        worst = worst.max(t1 - t0);
        if t1 >= deadline {
            break now_ns();
        }
    };
    println!("done {count} {worst} {end} {}", sleeps() - slept);
}

/// One round: `procs` children of `kind` on a fresh lock for `secs`.
/// Returns (cycles/s, worst wait ns, per-process min and max cycles,
/// sleeps per 1,000 cycles).
fn crowd_round(
    kind: &str,
    procs: usize,
    secs: f64,
    dir: &Path,
    tag: usize,
) -> (f64, u64, u64, u64, f64) {
    let path = dir.join(format!("crowd-{kind}-{tag}"));
    let keeper = Keeper::create(kind, &path);
    let ps = path.to_str().expect("UTF-8");
    let mut kids: Vec<Kid> = (0..procs)
        .map(|_| Kid::spawn(&["__crowd", kind, ps]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    let go = now_ns();
    let deadline = go + (secs * 1e9) as u64;
    for k in &mut kids {
        k.send(&format!("go {deadline}"));
    }
    let mut counts = Vec::with_capacity(procs);
    let (mut worst, mut end, mut slept) = (0u64, 0u64, 0u64);
    for k in &mut kids {
        let f: Vec<u64> = k
            .line()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("number"))
            .collect();
        counts.push(f[0]);
        worst = worst.max(f[1]);
        end = end.max(f[2]);
        slept += f[3];
    }
    for k in kids {
        k.wait_ok();
    }
    let total: u64 = counts.iter().sum();
    assert_eq!(
        keeper.counter(),
        total,
        "{kind}: the final counter is not exact"
    );
    drop(keeper);
    let _ = std::fs::remove_file(&path);
    // From "go" to the last process's last release.
    let rate = total as f64 / ((end - go) as f64 / 1e9);
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    (rate, worst, min, max, slept as f64 * 1000.0 / total as f64)
}

fn crowd(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let procs = cfg.crowd_procs;
    let rounds = if cfg.quick { 2 } else { 4 };
    eprintln!(
        "case 6: {procs} processes on one mutex, {rounds} interleaved rounds of {} s per lock",
        cfg.crowd_secs
    );
    let kinds = ["raw", "ours", "replica1", "replica2", "replica8"];
    type Round = (f64, u64, u64, u64, f64);
    let mut res: Vec<Vec<Round>> = vec![Vec::new(); kinds.len()];
    for r in 0..rounds {
        for j in 0..kinds.len() {
            let i = (r + j) % kinds.len();
            res[i].push(crowd_round(kinds[i], procs, cfg.crowd_secs, dir, r));
        }
    }
    let case = format!(
        "6 scale: {procs} processes on one mutex, {rounds} rounds of {} s",
        cfg.crowd_secs
    );
    for (i, kind) in kinds.iter().enumerate() {
        let v = &res[i];
        let rates: Vec<f64> = v.iter().map(|x| x.0).collect();
        let ratios: Vec<f64> = v.iter().zip(&res[0]).map(|(a, b)| a.0 / b.0).collect();
        let sleeps_k = median(&v.iter().map(|x| x.4).collect::<Vec<_>>());
        let spread = if *kind == "raw" {
            String::new()
        } else {
            format!(
                " (rounds {:.2}–{:.2})",
                ratios.iter().cloned().fold(f64::MAX, f64::min),
                ratios.iter().cloned().fold(0.0, f64::max)
            )
        };
        let ratio = format!("{:.2}× raw throughput{spread}", median(&ratios));
        if i >= 2 {
            rep.row(
                "6b 64-process breakdown (replica on raw mutex)",
                label(kind),
                format!(
                    "{} cycles/s (median round), {sleeps_k:.1} sleeps/1k cycles",
                    fmt_rate(median(&rates))
                ),
                ratio,
                String::new(),
            );
            continue;
        }
        let worst = v.iter().map(|x| x.1).max().unwrap_or(0);
        let min = v.iter().map(|x| x.2).min().unwrap_or(0);
        let max = v.iter().map(|x| x.3).max().unwrap_or(0);
        rep.row(
            &case,
            label(kind),
            format!(
                "{} cycles/s (median round), {sleeps_k:.1} sleeps/1k cycles; worst wait {}; per process per round min {min} / max {max} cycles; counters exact",
                fmt_rate(median(&rates)),
                fmt_ns(worst as f64)
            ),
            ratio,
            if min == 0 {
                "someone starved".to_owned()
            } else {
                "nobody starved: every process got the lock every round".to_owned()
            },
        );
    }
}

// ---------------------------------------------------------------------------
// The plot
// ---------------------------------------------------------------------------

fn plot(png: &Path, seed: &SeedTable, cfg: &Cfg) -> Result<(), String> {
    use plotters::prelude::*;
    let font = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .ok_or("no TrueType font found (install fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be loaded")?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(png, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let title = format!(
        "Seed workload: P processes × N cycles of lock, counter += 1, unlock (N = {}; flock {}; median-throughput run of {})",
        cfg.cycles,
        cfg.cycles / 10,
        cfg.seed_reps
    );
    let root = root.titled(&title, ("sans-serif", 17)).map_err(|x| e(&x))?;
    let panels = root.split_evenly((1, 2));
    let series = [
        ("ours", "SharedMutex<u64>", RGBColor(0xd6, 0x27, 0x28)),
        ("raw", "raw glibc robust mutex", RGBColor(0x1f, 0x77, 0xb4)),
        ("flock", "flock", RGBColor(0x7f, 0x7f, 0x7f)),
    ];
    for (panel, (ylabel, pick, legend_at)) in panels.iter().zip([
        (
            "cycles per second (all processes)",
            0usize,
            SeriesLabelPosition::LowerRight,
        ),
        (
            "p99 per-cycle latency (ns)",
            1,
            SeriesLabelPosition::UpperRight,
        ),
    ]) {
        let val = |s: &SeedStats| if pick == 0 { s.rate } else { s.p99 as f64 };
        let ys: Vec<f64> = seed.iter().map(|(_, _, s)| val(s).max(1.0)).collect();
        // Whole decades, plus a spare one where the legend goes.
        let lo = ys.iter().cloned().fold(f64::MAX, f64::min).log10().floor();
        let hi = ys.iter().cloned().fold(0.0, f64::max).log10().ceil();
        let (lo, hi) = if pick == 0 {
            (lo - 1.0, hi)
        } else {
            (lo, hi + 1.0)
        };
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.8f64..8.5f64, (10f64.powf(lo)..10f64.powf(hi)).log_scale())
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("P (processes)")
            .y_desc(ylabel)
            .x_labels(9)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1e6 {
                    format!("{:.0}M", y / 1e6)
                } else if *y >= 1e3 {
                    format!("{:.0}k", y / 1e3)
                } else {
                    format!("{y:.0}")
                }
            })
            .draw()
            .map_err(|x| e(&x))?;
        for (kind, name, color) in series {
            let pts: Vec<(f64, f64)> = seed
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, p, s)| (*p as f64, val(s)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

// ---------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a.starts_with("__")) {
        child(&args);
        return;
    }
    let cfg = Cfg::parse(&args);
    let tmp = tempfile::Builder::new()
        .prefix("rmbench")
        .tempdir_in(&cfg.dir)
        .expect("a scratch directory");
    let dir = tmp.path();
    let load_before = loadavg();
    let started = now_ns();
    let mut rep = Report::default();
    let mut seed = SeedTable::new();
    if cfg.runs(1) {
        uncontended(&cfg, dir, &mut rep);
    }
    if cfg.runs(2) {
        seed = seed_workload(&cfg, dir, &mut rep);
    }
    if cfg.runs(3) {
        handoff(&cfg, dir, &mut rep);
    }
    if cfg.runs(4) {
        owner_death(&cfg, dir, &mut rep);
    }
    if cfg.runs(5) {
        open_costs(&cfg, dir, &mut rep);
    }
    if cfg.runs(6) {
        scale_files(&cfg, dir, &mut rep);
        crowd(&cfg, dir, &mut rep);
    }
    let secs = (now_ns() - started) as f64 / 1e9;
    rep.rows.insert(
        0,
        [
            "run".to_owned(),
            "—".to_owned(),
            format!(
                "{}; files in {}; load avg {load_before} → {}; {:.0} s{}",
                machine(),
                cfg.dir.display(),
                loadavg(),
                secs,
                if cfg.quick { "; --quick" } else { "" }
            ),
            "ratios: medians of per-round ratios".to_owned(),
            String::new(),
        ],
    );
    rep.print();
    if let Some(png) = &cfg.png {
        if seed.is_empty() {
            eprintln!("--png: case 2 was not run; no plot");
        } else {
            match plot(png, &seed, &cfg) {
                Ok(()) => eprintln!("wrote {}", png.display()),
                Err(e) => eprintln!("--png: no plot: {e}"),
            }
        }
    }
}
