//! N uncontended lock+unlock cycles of a `SharedMutex<()>`, nothing else:
//! a fixed workload for counting instructions, which (unlike times on a
//! shared VM) are exact and repeatable. See docs/benchmarks.md:
//!
//! ```sh
//! cargo build --release --example lock_loop
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/lock_loop $n 2>&1 | grep Collected
//! done   # (second - first) / 100000 = instructions per lock+unlock
//! ```

use robust_mutex::{Acquired, SharedMutex};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let m = SharedMutex::<()>::open(dir.path().join("loop.lock"))?;
    for _ in 0..n {
        match m.lock()? {
            Acquired::Clean(g) => drop(g),
            Acquired::OwnerDied(r) => drop(r.mark_consistent()),
        }
    }
    Ok(())
}
