//! Long crash-torture run; the logic (shared with `tests/mutex/torture.rs`) and
//! what it checks are in tests/common/torture/.
//!
//! ```text
//! cargo run --release --example torture -- --kills 100000
//!     [--workers 8] [--seed S] [--payload-kib 4] [--max-pause-us 2000]
//!     [--deadline-secs N] [--panic-one-in N] [--fork-one-in N]
//! ```
//! Prints the seed first, then a one-line summary and where the kills
//! landed; exits 1 (with the seed) if any invariant failed.

#[path = "../tests/common/torture/mod.rs"]
mod torture;

use std::process::Command;
use std::time::Duration;

const USAGE: &str = "usage: torture [--kills N] [--workers P] [--seed S] [--payload-kib K] \
                     [--max-pause-us U] [--deadline-secs D] [--panic-one-in N] [--fork-one-in N]";

fn main() {
    torture::worker_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = torture::Config::new(8, 10_000, torture::clock_seed());
    let mut deadline = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        let Some(v) = value else {
            eprintln!("{flag}: needs a number\n{USAGE}");
            std::process::exit(2);
        };
        match flag.as_str() {
            "--kills" => cfg.kills = v,
            "--workers" => cfg.workers = v as usize,
            "--seed" => cfg.seed = v,
            "--payload-kib" => cfg.payload_kib = v as usize,
            "--max-pause-us" => cfg.max_pause = Duration::from_micros(v),
            "--deadline-secs" => deadline = Some(Duration::from_secs(v)),
            "--panic-one-in" => cfg.panic_one_in = v,
            "--fork-one-in" => cfg.fork_one_in = v,
            _ => {
                eprintln!("unknown option {flag}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if !(1..=torture::MAX_SLOTS).contains(&cfg.workers)
        || !(1..=torture::MAX_PAYLOAD_KIB).contains(&cfg.payload_kib)
    {
        eprintln!(
            "--workers 1..={} and --payload-kib 1..={}\n{USAGE}",
            torture::MAX_SLOTS,
            torture::MAX_PAYLOAD_KIB
        );
        std::process::exit(2);
    }
    let fresh = torture::Config::new(cfg.workers, cfg.kills, cfg.seed);
    cfg.deadline = deadline.unwrap_or(fresh.deadline);
    println!(
        "torture: {} kills of {} workers, {} KiB payload, panic one in {} updates, seed {}",
        cfg.kills, cfg.workers, cfg.payload_kib, cfg.panic_one_in, cfg.seed
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("torture.lock");
    let exe = std::env::current_exe().expect("current_exe");
    let spawn = || Command::new(&exe);
    match torture::supervise(&path, &cfg, &spawn) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("torture FAILED: {e}");
            std::process::exit(1);
        }
    }
}
