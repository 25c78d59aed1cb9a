//! Demo: a worker is SIGKILLed in the middle of an update; the next worker is
//! told, sees exactly what was left half-done, repairs it, and carries on.
//!
//! Run with `cargo run --example crash_recovery`.

use robust_mutex::{Acquired, SharedMutex};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// The shared state: a transfer moves money from `from` to `to`; the total
/// must always be 1000. An update writes `from` first, then `to`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Ledger {
    from: u64,
    to: u64,
    transfers: u64,
}

const TOTAL: u64 = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 {
        return worker(&args[1], &args[2]);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.lock");
    let m = SharedMutex::<Ledger>::open(&path)?;
    *m.lock_or_recover(|_| {})? = Ledger {
        from: TOTAL,
        to: 0,
        transfers: 0,
    };
    println!("ledger at {}: from=1000 to=0", path.display());

    // Worker 1 takes the lock, starts a transfer, and is killed halfway.
    let exe = std::env::current_exe()?;
    let mut victim = Command::new(&exe)
        .args(["victim", path.to_str().ok_or("non-UTF-8 temp path")?])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(victim.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    println!("worker {} is mid-transfer: {}", victim.id(), line.trim());
    victim.kill()?; // SIGKILL: no destructor, no unlock, no cleanup
    victim.wait()?;
    println!("worker {} SIGKILLed while holding the lock", victim.id());
    println!("status: {}", m.status().state);

    // Worker 2 is told, repairs, and completes its own transfer.
    let survivor = Command::new(&exe)
        .args(["survivor", path.to_str().ok_or("non-UTF-8 temp path")?])
        .status()?;
    assert!(survivor.success());

    let g = m.lock_or_recover(|_| unreachable!("already repaired"))?;
    println!(
        "final: from={} to={} (total {}), {} transfers",
        g.from,
        g.to,
        g.from + g.to,
        g.transfers
    );
    assert_eq!(g.from + g.to, TOTAL);
    drop(g);
    let c = m.status().counters;
    println!(
        "counters: {} acquisitions, {} owner deaths, {} recoveries",
        c.acquisitions, c.owner_deaths, c.recoveries
    );
    Ok(())
}

fn worker(role: &str, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let m = SharedMutex::<Ledger>::open(path)?;
    match role {
        "victim" => {
            let mut g = m.lock_or_recover(|_| {})?;
            g.set_label("transfer #1")?;
            g.from -= 100; // step 1 of 2 ...
            println!("from={} to={} (100 in flight)", g.from, g.to);
            std::io::stdout().flush()?;
            loop {
                std::thread::park(); // ... step 2 never comes
            }
        }
        _ => {
            let mut g = match m.lock()? {
                Acquired::Clean(g) => g,
                Acquired::OwnerDied(mut r) => {
                    if let Some(o) = r.previous_owner() {
                        println!(
                            "worker {}: OwnerDied: pid {} ({}) died holding the lock for {:?}",
                            std::process::id(),
                            o.pid,
                            o.label,
                            o.held_for()
                        );
                    }
                    let missing = TOTAL - (r.from + r.to);
                    println!(
                        "worker {}: found from={} to={}: {missing} lost mid-transfer; rolling it back",
                        std::process::id(),
                        r.from,
                        r.to
                    );
                    r.from += missing;
                    r.mark_consistent()
                }
            };
            g.from -= 100;
            g.to += 100;
            g.transfers += 1;
            println!(
                "worker {}: transfer done: from={} to={}",
                std::process::id(),
                g.from,
                g.to
            );
        }
    }
    Ok(())
}
