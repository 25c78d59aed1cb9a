//! Case 2: the seed workload (P processes × N cycles of lock, read the
//! counter, write counter + 1, unlock) and its contended breakdown.

use crate::Cfg;
use crate::contenders::{Lock, now_ns};
use crate::procs::{Keeper, Kid, ready_then_go, sleeps};
use crate::report::{Report, fmt_ns, fmt_rate, label, median, met};
use std::hint::black_box;
use std::path::Path;

pub(crate) fn seed_child<L: Lock>(l: &L, n: usize, out: &Path) {
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
pub(crate) struct SeedStats {
    pub(crate) rate: f64,
    /// Voluntary context switches (futex sleeps) per 1,000 cycles.
    pub(crate) sleeps_k: f64,
    pub(crate) mean: f64,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
}

pub(crate) fn seed_run(kind: &str, procs: usize, n: u64, dir: &Path, tag: &str) -> SeedStats {
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

pub(crate) type SeedTable = Vec<(&'static str, usize, SeedStats)>;

pub(crate) fn seed_workload(cfg: &Cfg, dir: &Path, rep: &mut Report) -> SeedTable {
    let kinds = ["raw", "ours", "flock"];
    let procs = [1usize, 2, 4, 8];
    // The contended breakdown: the replica levels at these P.
    let levels = ["replica1", "replica2", "replica3", "replica4", "replica5"];
    let level_procs = [2usize, 4];
    // The old and the new owner-record layout side by side (issue 12), at P = 4.
    let layouts = ["v1", "v2"];
    let layout_p = 4usize;
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
            let extra2 = if p == layout_p { &layouts[..] } else { &[] };
            // Rotate the order each repetition: no contender always runs first.
            let mut order: Vec<&str> = kinds.iter().chain(extra).chain(extra2).copied().collect();
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
        let extra2 = if p == layout_p { &layouts[..] } else { &[] };
        for &kind in kinds.iter().chain(extra2) {
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
                format!("≥ 0.95× raw: {}", met(r >= 0.95))
            } else if kind == "v2" {
                format!(
                    "{:.2}× the v1 replica (per-run ratios)",
                    median(
                        &v.iter()
                            .zip(of("v1", p))
                            .map(|(a, b)| a.rate / b.rate)
                            .collect::<Vec<_>>()
                    )
                )
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
