//! What attaching to a ready file touches: its system calls only. The
//! checks read the header with `pread`; the mapping is first touched by a
//! lock (or the last handle's drop), never by the open.

use crate::common::temp_path;
use nix::sys::resource::{UsageWho, getrusage};
use robust_mutex::{OpenOptions, SharedMutex};

/// Minor page faults this thread has taken so far.
fn faults_so_far() -> i64 {
    getrusage(UsageWho::RUSAGE_THREAD)
        .unwrap()
        .minor_page_faults()
}

#[test]
fn attaching_to_a_ready_file_faults_none_of_its_pages_in() {
    let (_dir, path) = temp_path("m");
    drop(SharedMutex::<u64>::open(&path).unwrap());
    let opts = OpenOptions::new();
    // Warm the heap and stack this path uses; then count a few attaches'
    // faults, the handle kept until after the count (its drop reads the
    // lock word). The fewest: a stray fault (heap growth, page migration)
    // must not fail this; an attach that reads the mapping faults every time.
    for _ in 0..3 {
        drop(opts.open::<u64>(&path).unwrap());
    }
    let fewest = (0..5)
        .map(|_| {
            let before = faults_so_far();
            let m = opts.open::<u64>(&path).unwrap();
            let faults = faults_so_far() - before;
            drop(m);
            faults
        })
        .min()
        .unwrap();
    assert_eq!(fewest, 0, "an attach read its mapping");
    // The handle still works: the first lock faults the page in.
    let m = opts.open::<u64>(&path).unwrap();
    *m.lock_or_recover(|_| {}).unwrap() += 1;
    assert_eq!(*m.lock_or_recover(|_| {}).unwrap(), 1);
}
