//! Criterion micro benchmarks: uncontended lock+unlock of `SharedMutex`
//! against every contender, and the price of each piece of the crate's
//! bookkeeping, re-done step by step on the raw glibc mutex.
//!
//! `cargo bench --bench uncontended`. Criterion reports absolute times; the
//! ratios the issue asks for come from `cargo run --release --example bench`,
//! which measures every contender interleaved, in one run.

#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

mod contenders;

use contenders::{Flock, Lock, NamedSem, OfdLock, PosixLock, RawRobust, ShmFile};
use criterion::{Criterion, criterion_group, criterion_main};
use robust_mutex::SharedMutex;
use std::hint::black_box;
use std::time::Duration;

/// Every contender, built in one scratch directory.
struct Contenders {
    _dir: tempfile::TempDir,
    ours_unit: SharedMutex<()>,
    ours_u64: SharedMutex<u64>,
    raw: RawRobust,
    std: std::sync::Mutex<u64>,
    flock: Flock,
    ofd: OfdLock,
    posix: PosixLock,
    sem: NamedSem,
    replica_path: std::path::PathBuf,
    v2: contenders::V2Replica,
    spin: contenders::Spin<64>,
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let b = tempfile::Builder::new().prefix("rmbench").tempdir_in(shm);
    b.or_else(|_| tempfile::tempdir())
        .expect("a scratch directory")
}

fn contenders() -> Contenders {
    let dir = scratch_dir();
    let p = |n: &str| dir.path().join(n);
    let file = |n: &str| {
        drop(ShmFile::create(&p(n), contenders::FILE_LEN));
        ShmFile::open(&p(n))
    };
    Contenders {
        ours_unit: SharedMutex::open(p("ours-unit")).expect("open"),
        ours_u64: SharedMutex::open(p("ours-u64")).expect("open"),
        raw: RawRobust::create(&p("raw")),
        std: std::sync::Mutex::new(0),
        flock: Flock { shm: file("flock") },
        ofd: OfdLock { shm: file("ofd") },
        posix: PosixLock { shm: file("fcntl") },
        sem: NamedSem::create(&p("sem")),
        replica_path: p("raw"),
        v2: contenders::V2Replica::new(RawRobust::create(&p("raw-v2"))),
        spin: contenders::Spin {
            raw: RawRobust::create(&p("raw-spin")),
        },
        _dir: dir,
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

fn uncontended(c: &mut Criterion) {
    let k = contenders();
    let mut g = c.benchmark_group("lock_unlock");
    g.bench_function("SharedMutex<()>", |b| b.iter(|| k.ours_unit.lock_unlock()));
    g.bench_function("raw glibc robust", |b| b.iter(|| k.raw.lock_unlock()));
    g.bench_function("std Mutex", |b| b.iter(|| k.std.lock_unlock()));
    g.bench_function("sem_wait+sem_post", |b| b.iter(|| k.sem.lock_unlock()));
    g.bench_function("flock", |b| b.iter(|| k.flock.lock_unlock()));
    g.bench_function("OFD fcntl", |b| b.iter(|| k.ofd.lock_unlock()));
    g.bench_function("classic fcntl", |b| b.iter(|| k.posix.lock_unlock()));
    g.finish();

    let inc = |v: &mut u64, _: bool| *v = black_box(*v) + 1;
    let mut g = c.benchmark_group("lock_increment_unlock");
    g.bench_function("SharedMutex<u64>", |b| b.iter(|| k.ours_u64.with(inc)));
    g.bench_function("raw glibc robust", |b| b.iter(|| k.raw.with(inc)));
    g.bench_function("std Mutex", |b| b.iter(|| k.std.with(inc)));
    g.bench_function("sem_wait+sem_post", |b| b.iter(|| k.sem.with(inc)));
    g.bench_function("flock", |b| b.iter(|| k.flock.with(inc)));
    g.bench_function("OFD fcntl", |b| b.iter(|| k.ofd.with(inc)));
    g.bench_function("classic fcntl", |b| b.iter(|| k.posix.with(inc)));
    g.finish();

    let (raw, path) = (&k.raw, k.replica_path.as_path());
    let mut g = c.benchmark_group("breakdown");
    let names = contenders::REPLICA_LEVELS;
    g.bench_function(names[0], |b| b.iter(|| contenders::replica::<0>(raw, path)));
    g.bench_function(names[1], |b| b.iter(|| contenders::replica::<1>(raw, path)));
    g.bench_function(names[2], |b| b.iter(|| contenders::replica::<2>(raw, path)));
    g.bench_function(names[3], |b| b.iter(|| contenders::replica::<3>(raw, path)));
    g.bench_function(names[4], |b| b.iter(|| contenders::replica::<4>(raw, path)));
    g.bench_function(names[5], |b| b.iter(|| contenders::replica::<5>(raw, path)));
    g.bench_function(names[6], |b| b.iter(|| contenders::replica::<6>(raw, path)));
    g.bench_function("SharedMutex<()> itself", |b| {
        b.iter(|| k.ours_unit.lock_unlock())
    });
    g.finish();

    // The owner-record layouts side by side (issue 12), and a spin that
    // runs only after a failed first try (free uncontended).
    let mut g = c.benchmark_group("layouts");
    g.bench_function("raw glibc robust", |b| b.iter(|| k.raw.lock_unlock()));
    g.bench_function("v1 layout replica", |b| {
        b.iter(|| contenders::replica::<6>(raw, path))
    });
    g.bench_function("v2 layout replica", |b| b.iter(|| k.v2.lock_unlock()));
    g.bench_function("raw + spin 64", |b| b.iter(|| k.spin.lock_unlock()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended
}
criterion_main!(benches);
