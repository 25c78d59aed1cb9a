//! Case 7 (only with `--only 7`): the bounded-spin sweep of issue 12,
//! item 3. The raw mutex taken with an expired `clocklock`, then up to K
//! more such tries (no system call) with `std::hint::spin_loop()` between,
//! then the blocking lock; against the bare raw mutex, interleaved, at
//! P = 2, 4, 8 (the seed workload) and 64 (the crowd of case 6).

use crate::Cfg;
use crate::cases::crowd::crowd_round;
use crate::cases::seed::{SeedStats, seed_run};
use crate::report::{Report, fmt_rate, label, median};
use std::path::Path;

/// The contenders: the bare raw mutex, then K = 0 (the first expired try
/// alone), 4, 16, 64, 256.
const KINDS: [&str; 6] = ["raw", "spin0", "spin4", "spin16", "spin64", "spin256"];

pub(crate) fn spin(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let reps = cfg.seed_reps.max(if cfg.quick { 3 } else { 9 });
    eprintln!(
        "case 7: bounded spin, seed workload P = 2, 4, 8 ({} cycles per process) and {} processes ({} s), {reps} interleaved rounds",
        cfg.cycles, cfg.crowd_procs, cfg.crowd_secs
    );
    for p in [2usize, 4, 8] {
        // runs[kind] = one SeedStats per round
        let mut runs: Vec<Vec<SeedStats>> = vec![Vec::new(); KINDS.len()];
        for r in 0..reps {
            for j in 0..KINDS.len() {
                let i = (r + j) % KINDS.len();
                runs[i].push(seed_run(KINDS[i], p, cfg.cycles, dir, &format!("spin{r}")));
            }
        }
        let rows: Vec<(Vec<f64>, Vec<f64>)> = runs
            .iter()
            .map(|v| {
                (
                    v.iter().map(|s| s.rate).collect(),
                    v.iter().map(|s| s.sleeps_k).collect(),
                )
            })
            .collect();
        emit(
            rep,
            &format!("7 bounded spin, seed workload P = {p}"),
            &rows,
        );
    }
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); KINDS.len()];
    for r in 0..reps {
        for j in 0..KINDS.len() {
            let i = (r + j) % KINDS.len();
            let x = crowd_round(KINDS[i], cfg.crowd_procs, cfg.crowd_secs, dir, 100 + r);
            rounds[i].push((x.0, x.4));
        }
    }
    let rows: Vec<(Vec<f64>, Vec<f64>)> = rounds
        .iter()
        .map(|v| {
            (
                v.iter().map(|x| x.0).collect(),
                v.iter().map(|x| x.1).collect(),
            )
        })
        .collect();
    emit(
        rep,
        &format!(
            "7 bounded spin, {} processes, {} s rounds",
            cfg.crowd_procs, cfg.crowd_secs
        ),
        &rows,
    );
}

/// One row per contender: median rate and sleeps, and the median (min–max)
/// of the per-round ratios to raw (`rows[0]`).
fn emit(rep: &mut Report, case: &str, rows: &[(Vec<f64>, Vec<f64>)]) {
    let raw = &rows[0].0;
    for (kind, (rates, sleeps)) in KINDS.iter().zip(rows) {
        let rs: Vec<f64> = rates.iter().zip(raw).map(|(a, b)| a / b).collect();
        let lo = rs.iter().copied().fold(f64::MAX, f64::min);
        let hi = rs.iter().copied().fold(0.0, f64::max);
        rep.row(
            case,
            label(kind),
            format!(
                "{} cycles/s, {:.1} sleeps/1k cycles (medians of {} rounds)",
                fmt_rate(median(rates)),
                median(sleeps),
                rates.len()
            ),
            format!(
                "{:.2}× raw throughput (rounds {lo:.2}–{hi:.2})",
                median(&rs)
            ),
            String::new(),
        );
    }
}
