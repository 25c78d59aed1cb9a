//! Criterion micro-benchmarks: uncontended lock+unlock, ours against every
//! contender, in the same run. `cargo bench`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

#[path = "contenders/mod.rs"]
mod contenders;

use contenders::{Contender, Fcntl, Flock, NamedSem, RawRobust};
use criterion::{Criterion, criterion_group, criterion_main};
use robust_mutex::{Acquired, SharedMutex};

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let raw = RawRobust::open(&dir.path().join("raw"), true);
    let unit = SharedMutex::<()>::open(dir.path().join("unit")).unwrap();
    let word = SharedMutex::<u64>::open(dir.path().join("u64")).unwrap();
    let std_m = std::sync::Mutex::new(0u64);
    NamedSem::unlink("/robust-mutex-criterion");
    let sem = NamedSem::open("/robust-mutex-criterion", &dir.path().join("sem"));
    let flock = Flock::open(&dir.path().join("flock"));
    let ofd = Fcntl::open(&dir.path().join("ofd"), true);

    let mut g = c.benchmark_group("uncontended lock+unlock");
    g.bench_function("raw glibc robust", |b| {
        b.iter(|| {
            raw.lock();
            raw.unlock();
        })
    });
    g.bench_function("SharedMutex<()>", |b| {
        b.iter(|| match unit.lock() {
            Ok(Acquired::Clean(g)) => drop(g),
            _ => unreachable!(),
        })
    });
    g.bench_function("SharedMutex<u64> + increment", |b| {
        b.iter(|| {
            if let Ok(Acquired::Clean(mut g)) = word.lock() {
                *g += 1;
            }
        })
    });
    g.bench_function("std::sync::Mutex", |b| {
        b.iter(|| drop(std_m.lock().unwrap()))
    });
    g.bench_function("POSIX named semaphore", |b| {
        b.iter(|| {
            sem.lock();
            sem.unlock();
        })
    });
    g.bench_function("flock", |b| {
        b.iter(|| {
            flock.lock();
            flock.unlock();
        })
    });
    g.bench_function("OFD fcntl", |b| {
        b.iter(|| {
            ofd.lock();
            ofd.unlock();
        })
    });
    g.finish();
    NamedSem::unlink("/robust-mutex-criterion");
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
