//! Measurements for the crash-safe semaphore, one markdown report:
//! `cargo run --release --example semaphore_bench` (`--quick` for fewer rounds).
//!
//! 1. A blocked `acquire()` gets a SIGKILLed holder's permit: latency from
//!    the `kill(2)` to the waiter holding `Acquired::OwnerDied` (target: p99
//!    under 50 ms), with 4 and with 127 permits, and for two waiters when
//!    one thread holding two permits dies (the wake-up hand-over).
//! 2. CPU time a waiter spends while blocked (it must sleep, not poll).
//! 3. Uncontended `try_acquire` + release, with every other permit free and
//!    with 126 of 127 permits held by another process (the scan skips held
//!    permits with one load each, no system call).
//! 4. POSIX `sem_open` for comparison: a SIGKILLed holder's permit is gone.

use robust_mutex::{Acquired, SharedSemaphore};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The generic syscall number of `futex_waitv`.
const SYS_FUTEX_WAITV: &str = "449";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(&args[2..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 50 } else { 300 };
    let dir = tempfile::tempdir_in(shm()).unwrap();
    println!("# SharedSemaphore measurements\n");
    println!("{}\n", machine());
    println!(
        "Command: `cargo run --release --example semaphore_bench{}`\n",
        if quick { " -- --quick" } else { "" }
    );
    println!("## 1. SIGKILL of a holder → the blocked waiter's `Acquired::OwnerDied`\n");
    println!("| permits | waiters | kills | median | p99 | max | p99 < 50 ms |");
    println!("|---|---|---|---|---|---|---|");
    owner_death(&dir.path().join("death4"), 4, rounds);
    owner_death(&dir.path().join("death127"), 127, rounds);
    two_waiters(&dir.path().join("handover"), rounds);
    println!();
    waiting_cpu(&dir.path().join("cpu"), if quick { 3 } else { 10 });
    uncontended(
        &dir.path().join("fast"),
        if quick { 200_000 } else { 2_000_000 },
    );
    posix_comparison();
}

fn shm() -> PathBuf {
    let p = PathBuf::from("/dev/shm");
    if p.is_dir() { p } else { std::env::temp_dir() }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Machine: {} CPUs ({cpu}), Linux {}, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn report(permits: usize, waiters: usize, mut lat: Vec<Duration>) {
    lat.sort_unstable();
    let p99 = percentile(&lat, 0.99);
    println!(
        "| {permits} | {waiters} | {} | {} | **{}** | {} | {} |",
        lat.len(),
        fmt(percentile(&lat, 0.5)),
        fmt(p99),
        fmt(*lat.last().unwrap()),
        if p99 < Duration::from_millis(50) {
            "met"
        } else {
            "**NOT met**"
        }
    );
}

// ---------------------------------------------------------------------------
// Children: `child hold <path> <permits> <k>` takes k permits in one thread.
// ---------------------------------------------------------------------------

fn child(args: &[String]) {
    let path = PathBuf::from(&args[1]);
    let permits: usize = args[2].parse().unwrap();
    let k: usize = args[3].parse().unwrap();
    match args[0].as_str() {
        "hold" => {
            let sem = SharedSemaphore::open(&path, permits).unwrap();
            let held: Vec<_> = (0..k)
                .map(|_| sem.acquire().unwrap().recover_with(|_| {}))
                .collect();
            println!("held {}", held.len());
            loop {
                std::thread::park();
            }
        }
        "posix-hold" => {
            let name = std::ffi::CString::new(args[1].as_str()).unwrap();
            // SAFETY: a valid NUL-terminated name; the semaphore exists.
            let s = unsafe { libc::sem_open(name.as_ptr(), 0) };
            assert_ne!(s, libc::SEM_FAILED);
            // SAFETY: `s` is an open semaphore.
            assert_eq!(unsafe { libc::sem_wait(s) }, 0);
            println!("held 1");
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown child {other}"),
    }
}

/// Starts a child holding `k` permits and waits until it holds them.
fn spawn_holder(role: &str, path: &Path, permits: usize, k: usize) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["child", role, path.to_str().unwrap()])
        .args([permits.to_string(), k.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("held"), "child said {line:?}");
    c
}

fn kill(mut c: Child) -> Instant {
    let t0 = Instant::now();
    c.kill().unwrap();
    c.wait().unwrap();
    t0
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Spins (yielding) until thread `tid` of this process sleeps in futex_waitv.
fn wait_until_sleeping(tid: i32) {
    let file = format!("/proc/self/task/{tid}/syscall");
    while std::fs::read_to_string(&file).map_or(true, |s| {
        s.split_whitespace().next() != Some(SYS_FUTEX_WAITV)
    }) {
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------
// 1. Owner death
// ---------------------------------------------------------------------------

fn owner_death(path: &Path, permits: usize, rounds: usize) {
    let sem = SharedSemaphore::open(path, permits).unwrap();
    // Every permit but one is held by a filler process for the whole run;
    // each round a victim process takes the last one and is killed.
    let filler = (permits > 1).then(|| spawn_holder("hold", path, permits, permits - 1));
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let victim = spawn_holder("hold", path, permits, 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let (t0, t1) = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                tx.send(gettid()).unwrap();
                let p = sem.acquire().unwrap();
                let t1 = Instant::now();
                assert!(matches!(p, Acquired::OwnerDied(_)));
                drop(p.recover_with(|_| {}));
                t1
            });
            wait_until_sleeping(rx.recv().unwrap());
            let t0 = kill(victim);
            (t0, waiter.join().unwrap())
        });
        lat.push(t1.duration_since(t0));
    }
    if let Some(f) = filler {
        kill(f);
    }
    report(permits, 1, lat);
}

/// Two waiters; one thread holding both permits dies. The kernel wakes one
/// waiter per permit, possibly the same one twice: measured until both hold
/// a permit.
fn two_waiters(path: &Path, rounds: usize) {
    let sem = SharedSemaphore::open(path, 2).unwrap();
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let victim = spawn_holder("hold", path, 2, 2);
        let (tx, rx) = std::sync::mpsc::channel();
        let both = std::sync::Barrier::new(2);
        let (t0, t1) = std::thread::scope(|s| {
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let (tx, sem, both) = (tx.clone(), &sem, &both);
                    s.spawn(move || {
                        tx.send(gettid()).unwrap();
                        let p = sem.acquire().unwrap();
                        let t1 = Instant::now();
                        let g = p.recover_with(|_| {});
                        both.wait(); // hold it until the other has one too
                        drop(g);
                        t1
                    })
                })
                .collect();
            for _ in 0..2 {
                wait_until_sleeping(rx.recv().unwrap());
            }
            let t0 = kill(victim);
            let t1 = waiters.into_iter().map(|w| w.join().unwrap()).max();
            (t0, t1.unwrap())
        });
        lat.push(t1.duration_since(t0));
    }
    report(2, 2, lat);
}

// ---------------------------------------------------------------------------
// 2. CPU while waiting
// ---------------------------------------------------------------------------

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn waiting_cpu(path: &Path, rounds: usize) {
    let sem = SharedSemaphore::open(path, 8).unwrap();
    let holder = spawn_holder("hold", path, 8, 8);
    let wait = Duration::from_millis(200);
    let mut cpu = Vec::new();
    for _ in 0..rounds {
        let c0 = thread_cpu();
        assert!(sem.acquire_timeout(wait).is_err());
        cpu.push(thread_cpu() - c0);
    }
    kill(holder);
    cpu.sort_unstable();
    println!("## 2. CPU spent by a waiter blocked on 8 held permits\n");
    println!(
        "{rounds} waits of {}: CPU time per wait median **{}**, max {} (a poll every \
         millisecond would cost far more).\n",
        fmt(wait),
        fmt(percentile(&cpu, 0.5)),
        fmt(*cpu.last().unwrap())
    );
}

// ---------------------------------------------------------------------------
// 3. Uncontended
// ---------------------------------------------------------------------------

fn ns_per_op(iters: usize, mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed() / iters as u32);
    }
    best
}

fn uncontended(path: &Path, iters: usize) {
    println!("## 3. Uncontended `try_acquire` + release (best of 5 × {iters})\n");
    println!("| permits | held by another process | ns per acquire+release |");
    println!("|---|---|---|");
    for (permits, held) in [(1, 0), (4, 0), (127, 0), (127, 126)] {
        let p = path.with_extension(format!("{permits}-{held}"));
        let sem = SharedSemaphore::open(&p, permits).unwrap();
        let other = (held > 0).then(|| spawn_holder("hold", &p, permits, held));
        let t = ns_per_op(iters, || {
            drop(sem.try_acquire().unwrap());
        });
        println!("| {permits} | {held} | {} |", fmt(t));
        if let Some(o) = other {
            kill(o);
        }
    }
    println!();
}

// ---------------------------------------------------------------------------
// 4. POSIX semaphores
// ---------------------------------------------------------------------------

fn posix_comparison() {
    let name = format!("/rm-sem-bench-{}", std::process::id());
    let c = std::ffi::CString::new(name.as_str()).unwrap();
    // SAFETY: a valid name; creates a new semaphore with 2 permits.
    let s = unsafe { libc::sem_open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 2) };
    assert_ne!(s, libc::SEM_FAILED);
    let value = || {
        let mut v = 0;
        // SAFETY: `s` is an open semaphore and `v` writable.
        unsafe { libc::sem_getvalue(s, &mut v) };
        v
    };
    let before = value();
    let holder = spawn_holder("posix-hold", Path::new(&name), 0, 1);
    let held = value();
    kill(holder);
    let after = value();
    // SAFETY: `s` is open; the name is ours.
    unsafe {
        libc::sem_close(s);
        libc::sem_unlink(c.as_ptr());
    }
    println!("## 4. POSIX semaphore (`sem_open`, 2 permits), holder SIGKILLed\n");
    println!(
        "value before {before}, while held {held}, after the holder's death **{after}**: \
         the dead holder's permit is gone for ever. A `SharedSemaphore` gives it back \
         as `Acquired::OwnerDied` (section 1).\n"
    );
}
