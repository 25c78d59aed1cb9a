//! Case 3: handoff latency, release → blocked waiter acquires, between two
//! processes.

use crate::Cfg;
use crate::contenders::{Lock, ShmFile, now_ns, wait_until_blocked};
use crate::procs::{BLOCK_TIMEOUT, Keeper, Kid, with_lock};
use crate::report::{Report, label, pct, spread};
use std::path::Path;

/// Ping-pong of lock ownership between this process and `other` (a
/// process whose main thread takes part). Acquisition `s` (counted in the
/// control file) is a handoff for every `s > 0`: its latency, from the
/// releaser's clock read just before unlocking to the blocked waiter's clock
/// read just after acquiring, lands in slot `s`.
pub(crate) fn pingpong<L: Lock>(l: &L, ctl: &ShmFile, first: bool, total: u64, other: u32) {
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

pub(crate) fn handoff(cfg: &Cfg, dir: &Path, rep: &mut Report) {
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
            format!("{} ({} handoffs)", spread(v), v.len()),
            format!("{:.2}× raw (median)", pct(v, 0.5) as f64 / raw_med),
            String::new(),
        );
    }
}
