//! Format version 2 for the permits: each permit's hot record lies in its
//! mutex's own cache line and counts its acquisitions; the file's counters
//! line and the permit's cold record are not written per acquisition.

use crate::common::roles_hot::{CYCLES, cycle_together};
use crate::common::temp_path;
use robust_mutex::SharedSemaphore;
use robust_mutex::internals::{COUNTERS_OFFSET, DATA_MIN_OFFSET, HOT_COUNTS};
use std::path::Path;

/// Permit 0's slot: its mutex line at the start of the value region (512),
/// its cold record in the next 128 bytes.
const SLOT0: usize = DATA_MIN_OFFSET;

fn bytes(path: &Path, from: usize, to: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[from..to].to_vec()
}

#[test]
fn a_thousand_permit_cycles_write_only_the_permits_own_line() {
    let (_dir, path) = temp_path("s");
    let sem = SharedSemaphore::open(&path, 1).unwrap();
    drop(sem.acquire().unwrap().recover_with(|_| {}));
    let counters = bytes(&path, COUNTERS_OFFSET, DATA_MIN_OFFSET);
    let cold = bytes(&path, SLOT0 + 64, SLOT0 + 192);
    let hot = bytes(&path, SLOT0, SLOT0 + 64);
    for _ in 0..1000 {
        drop(sem.acquire().unwrap().recover_with(|_| {}));
    }
    assert_eq!(bytes(&path, SLOT0 + 64, SLOT0 + 192), cold);
    if HOT_COUNTS >= 2 {
        // No atomic add to the shared counters line on the fast path.
        assert_eq!(bytes(&path, COUNTERS_OFFSET, DATA_MIN_OFFSET), counters);
        assert_ne!(bytes(&path, SLOT0, SLOT0 + 64), hot);
    } else {
        // No hot counts on this target: the cold counters count.
        assert_ne!(bytes(&path, COUNTERS_OFFSET, DATA_MIN_OFFSET), counters);
    }
    assert_eq!(sem.status().counters.acquisitions, 1001);
}

#[test]
fn permit_counts_are_summed_exactly_across_three_processes() {
    let (_dir, path) = temp_path("s");
    let sem = SharedSemaphore::open(&path, crate::common::roles::SEM_PERMITS).unwrap();
    cycle_together("sem_cycles", &path, 3);
    let c = sem.status().counters;
    assert_eq!(c.acquisitions, 3 * CYCLES);
    assert!(c.contended <= c.acquisitions);
}
