//! Criterion micro benchmarks of opening: attaching to an existing ready
//! file (no other handle in this process, so every open maps the file), and
//! creating plus initialising a new one, against the raw floors (open +
//! fstat + mmap; open(O_CREAT) + ftruncate + mmap + pthread_mutex_init) and
//! the crate's attach steps re-done one by one.
//!
//! `cargo bench --bench open`.

#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

mod contenders;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use robust_mutex::SharedMutex;
use std::cell::Cell;
use std::time::Duration;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let b = tempfile::Builder::new().prefix("rmbench").tempdir_in(shm);
    b.or_else(|_| tempfile::tempdir())
        .expect("a scratch directory")
}

/// Unlinks its path when dropped (after the timing, with the routine's output).
struct Unlink(std::path::PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open(c: &mut Criterion) {
    let dir = scratch_dir();
    let ready = dir.path().join("ready");
    drop(SharedMutex::<u64>::open(&ready).expect("create"));
    let ready_c = contenders::c_path(&ready);

    // PerIteration: each handle is dropped (outside the timing) before the
    // next open, so every open really maps the file; a handle kept alive
    // would let the next open share its mapping through the registry.
    let mut g = c.benchmark_group("attach");
    g.bench_function("SharedMutex<u64>::open (existing)", |b| {
        b.iter_batched(
            || (),
            |()| SharedMutex::<u64>::open(&ready).expect("open"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("raw open+fstat+mmap", |b| {
        b.iter_batched(
            || (),
            |()| contenders::raw_attach(&ready_c),
            BatchSize::PerIteration,
        )
    });
    for (level, name) in contenders::ATTACH_LEVELS.iter().enumerate() {
        g.bench_function(*name, |b| {
            b.iter_batched(
                || (),
                |()| contenders::replica_attach(&ready_c, level),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let n = Cell::new(0u64);
    let fresh = |tag: &str| {
        n.set(n.get() + 1);
        dir.path().join(format!("{tag}-{}", n.get()))
    };
    let mut g = c.benchmark_group("create");
    g.bench_function("SharedMutex<u64>::open (new file)", |b| {
        b.iter_batched(
            || fresh("ours"),
            |p| {
                let m = SharedMutex::<u64>::open(&p).expect("create");
                (m, Unlink(p))
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("raw open(O_CREAT)+ftruncate+mmap+init", |b| {
        b.iter_batched(
            || fresh("raw"),
            |p| (contenders::raw_create(&p), Unlink(p)),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = open
}
criterion_main!(benches);
