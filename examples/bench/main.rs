//! Side-by-side benchmarks of `SharedMutex` against the raw glibc robust
//! mutex it is built on, `std::sync::Mutex`, `flock`, OFD and classic
//! `fcntl` locks and POSIX named semaphores. Prints ONE markdown table on
//! stdout (progress goes to stderr); every ratio in it compares figures
//! measured in the same run, interleaved where that is possible.
//!
//! ```sh
//! cargo run --release --example bench                 # cases 1-6, 8 and 9, about 3 minutes on 2 cores
//! cargo run --release --example bench -- --quick      # a smaller run, about 20 s
//! cargo run --release --example bench -- --only 7     # the bounded-spin sweep, about 2 minutes
//! cargo run --release --example bench -- --only 9     # async acquisition (issue 14), about 12 s
//! cargo run --release --example bench -- --png docs/seed-workload.png
//! ```
//!
//! Flags: `--quick`; `--dir DIR` (where the lock files go; default /dev/shm,
//! else the temp dir); `--png FILE` (plot the seed workload); `--only 1,2,...`
//! (run only these cases); `--cycles N` (seed-workload cycles per process);
//! `--kills N` (owner-death kills, at least 50); `--files N` (scale case);
//! `--rounds N` and `--crowd-ms N` (64-process rounds: 9 of 500 ms).
//!
//! Cases, as in docs/benchmarks.md: 1 uncontended lock+unlock and the price
//! of each piece of our bookkeeping; 2 the seed workload (P processes × N
//! cycles of lock, read the counter, write counter + 1, unlock); 3 handoff
//! latency between two processes; 4 owner death (SIGKILL of the holder → the
//! blocked waiter's `OwnerDied`); 5 open (attach, create); 6 scale (10,000
//! files in one process, 64 processes on one mutex); 7 (only when `--only`
//! names it) the bounded-spin sweep: raw + K expired tries before blocking;
//! 8 condition waits (issue 13): notify → wake latency against a
//! process-shared `pthread_cond_t` and a pipe, a holder's death while a
//! condition waiter sleeps, the price of a notify, an idle waiter's cost;
//! 9 async acquisition (issue 14): `lock_async` uncontended against
//! `lock()` and `tokio::sync::Mutex`, the handoff to a task waiting in
//! another process, a ticking task's lateness while 50 tasks contend.
//!
//! Child processes are this same binary re-executed with a `__role`
//! argument (never `fork` in a threaded program).
//!
//! Layout: this file holds the flags, the case selection and the run;
//! `report.rs` the table and the statistics; `procs.rs` the worker processes;
//! `plot.rs` the PNG; `cases/` one file per case.

#[path = "../../benches/contenders/mod.rs"]
mod contenders;
mod plot;
mod procs;
mod report;

mod cases {
    pub(crate) mod cancel;
    pub(crate) mod cond;
    pub(crate) mod cond_contenders;
    pub(crate) mod crowd;
    pub(crate) mod handoff;
    pub(crate) mod lock_async;
    pub(crate) mod open;
    pub(crate) mod owner_death;
    pub(crate) mod scale_files;
    pub(crate) mod seed;
    pub(crate) mod spin;
    pub(crate) mod uncontended;
}

use cases::seed::SeedTable;
use contenders::now_ns;
use report::{Report, loadavg, machine};
use std::path::PathBuf;

/// The flags, and the sizes of each case they imply.
#[derive(Debug)]
pub(crate) struct Cfg {
    pub(crate) quick: bool,
    pub(crate) dir: PathBuf,
    pub(crate) png: Option<PathBuf>,
    pub(crate) only: Vec<u32>,
    pub(crate) rounds: usize,
    pub(crate) batch_ns: u64,
    pub(crate) cycles: u64,
    pub(crate) seed_reps: usize,
    pub(crate) handoffs: u64,
    pub(crate) kills: usize,
    pub(crate) cancels: usize,
    pub(crate) open_iters: usize,
    pub(crate) files: usize,
    pub(crate) crowd_procs: usize,
    pub(crate) crowd_secs: f64,
    pub(crate) crowd_rounds: usize,
}

impl Cfg {
    pub(crate) fn parse(args: &[String]) -> Cfg {
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
            crowd_secs: num("--crowd-ms", if quick { 250 } else { 500 }) as f64 / 1e3,
            crowd_rounds: num("--rounds", if quick { 3 } else { 9 }) as usize,
        }
    }

    /// Whether case `case` runs. Case 7 (the spin sweep, about 2 minutes)
    /// runs only when asked for with `--only`.
    pub(crate) fn runs(&self, case: u32) -> bool {
        (self.only.is_empty() && case != 7) || self.only.contains(&case)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a.starts_with("__")) {
        procs::child(&args);
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
        cases::uncontended::uncontended(&cfg, dir, &mut rep);
    }
    if cfg.runs(2) {
        seed = cases::seed::seed_workload(&cfg, dir, &mut rep);
    }
    if cfg.runs(3) {
        cases::handoff::handoff(&cfg, dir, &mut rep);
    }
    if cfg.runs(4) {
        cases::owner_death::owner_death(&cfg, dir, &mut rep);
        cases::cancel::cancel(&cfg, dir, &mut rep);
    }
    if cfg.runs(5) {
        cases::open::open_costs(&cfg, dir, &mut rep);
    }
    if cfg.runs(6) {
        cases::scale_files::scale_files(&cfg, dir, &mut rep);
        cases::crowd::crowd(&cfg, dir, &mut rep);
    }
    if cfg.runs(7) {
        cases::spin::spin(&cfg, dir, &mut rep);
    }
    if cfg.runs(8) {
        cases::cond::cond(&cfg, dir, &mut rep);
    }
    if cfg.runs(9) {
        cases::lock_async::lock_async_case(&cfg, dir, &mut rep);
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
            match plot::plot(png, &seed, &cfg) {
                Ok(()) => eprintln!("wrote {}", png.display()),
                Err(e) => eprintln!("--png: no plot: {e}"),
            }
        }
    }
}
