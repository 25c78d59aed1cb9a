//! The report: the markdown table, number formatting, medians and
//! percentiles, the machine line and the contenders' display names.

use crate::contenders;

/// The rows of the one table, in order.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<[String; 5]>,
}

impl Report {
    pub(crate) fn row(
        &mut self,
        case: &str,
        lock: &str,
        result: String,
        ratio: String,
        target: String,
    ) {
        eprintln!("  {case} | {lock} | {result} | {ratio} | {target}");
        self.rows
            .push([case.to_owned(), lock.to_owned(), result, ratio, target]);
    }

    pub(crate) fn print(&self) {
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

pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**NOT met**" }
}

pub(crate) fn fmt_ns(ns: f64) -> String {
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

pub(crate) fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else {
        format!("{:.1} k/s", per_s / 1e3)
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// "median X, p99 Y, max Z" of sorted latencies in ns.
pub(crate) fn spread(sorted: &[u64]) -> String {
    format!(
        "median {}, p99 {}, max {}",
        fmt_ns(pct(sorted, 0.5) as f64),
        fmt_ns(pct(sorted, 0.99) as f64),
        fmt_ns(*sorted.last().unwrap_or(&0) as f64)
    )
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn machine() -> String {
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

pub(crate) fn label(kind: &str) -> &'static str {
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
        "v1" => "v1 layout replica (record + counters lines, coarse clock read)",
        "v2" => "v2 layout replica (hot fields in the mutex's line, cached time)",
        "spin0" => "raw + spin 0 (one expired try, then block)",
        "spin4" => "raw + spin 4",
        "spin16" => "raw + spin 16",
        "spin64" => "raw + spin 64",
        "spin256" => "raw + spin 256",
        _ => "?",
    }
}
