//! Case 6, second half: 64 processes on one mutex, and its breakdown
//! (the replica on the raw mutex).

use crate::Cfg;
use crate::contenders::{Lock, now_ns};
use crate::procs::{Keeper, Kid, ready_then_go, sleeps};
use crate::report::{Report, fmt_ns, fmt_rate, label, median};
use std::hint::black_box;
use std::path::Path;

pub(crate) fn crowd_child<L: Lock>(l: &L) {
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
pub(crate) fn crowd_round(
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

pub(crate) fn crowd(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let procs = cfg.crowd_procs;
    let rounds = cfg.crowd_rounds;
    eprintln!(
        "case 6: {procs} processes on one mutex, {rounds} interleaved rounds of {} s per lock",
        cfg.crowd_secs
    );
    // raw and ours first (the main rows), then the breakdown: the old and
    // the new owner-record layout replicated on the raw mutex, and the
    // control (a v1-style record in process-private memory).
    let kinds = ["raw", "ours", "v1", "v2", "replica2", "replica8"];
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
            let note = if *kind == "v2" {
                let v1 = &res[kinds.iter().position(|k| *k == "v1").expect("v1")];
                let r: Vec<f64> = v.iter().zip(v1).map(|(a, b)| a.0 / b.0).collect();
                format!("{:.2}× the v1 replica (per-round ratios)", median(&r))
            } else {
                String::new()
            };
            rep.row(
                "6b 64-process breakdown (replicas on raw mutex)",
                label(kind),
                format!(
                    "{} cycles/s (median round), {sleeps_k:.1} sleeps/1k cycles (median round)",
                    fmt_rate(median(&rates))
                ),
                ratio,
                note,
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
