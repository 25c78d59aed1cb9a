//! Case 6, first half: many mutex files open in one (fresh) process.

use crate::Cfg;
use crate::contenders::{Lock, now_ns};
use crate::procs::Kid;
use crate::report::{Report, fmt_ns};
use robust_mutex::{OpenOptions, SharedMutex};
use std::path::{Path, PathBuf};

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
pub(crate) fn scale_files_child(n: usize, dir: &Path) {
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

pub(crate) fn scale_files(cfg: &Cfg, dir: &Path, rep: &mut Report) {
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
