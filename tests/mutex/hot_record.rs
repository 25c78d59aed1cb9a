//! Format version 2: the holder's hot record in the mutex's own cache line.
//! Per acquisition only that line is written; the cold record (process
//! constants, label) and the counters line stay as they are; readers see
//! the same facts as before.

use crate::common::roles_hot::{CYCLES, cycle_together};
use crate::common::{Kid, temp_path};
use robust_mutex::internals::{
    COUNTERS_OFFSET, ColdRecord, DATA_MIN_OFFSET, HOT_COUNTS, HOT_OFFSET, HotRecord, MUTEX_OFFSET,
    OWNER_OFFSET, process_key,
};
use robust_mutex::{Acquired, LockState, ReentrantMutex, SharedMutex};
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Bytes `from..to` of the file, read through the file (not the mapping).
fn bytes(path: &Path, from: usize, to: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[from..to].to_vec()
}

/// Writes `b` at `offset` of the file (the mappings see it: MAP_SHARED).
fn write_at(path: &Path, offset: usize, b: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(b, offset as u64).unwrap();
}

fn cold_of(path: &Path) -> ColdRecord {
    *bytemuck::from_bytes(&bytes(path, OWNER_OFFSET, COUNTERS_OFFSET))
}

/// Where the cold record's bytes end that no acquisition may write: the
/// whole of 320..512 where the counts fit in the hot record, else (no hot
/// counts: aarch64) the cold record only.
const UNTOUCHED_END: usize = if HOT_COUNTS >= 2 {
    DATA_MIN_OFFSET
} else {
    COUNTERS_OFFSET
};

#[test]
fn a_thousand_lock_unlock_cycles_write_only_the_mutexs_own_line() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    // The first acquisition by this process writes its constants.
    drop(m.lock_or_recover(|_| {}).unwrap());
    let cold = bytes(&path, OWNER_OFFSET, UNTOUCHED_END);
    let hot = bytes(&path, MUTEX_OFFSET, OWNER_OFFSET);
    let counters = bytes(&path, COUNTERS_OFFSET, DATA_MIN_OFFSET);
    for _ in 0..1000 {
        drop(m.lock_or_recover(|_| {}).unwrap());
    }
    assert_eq!(bytes(&path, OWNER_OFFSET, UNTOUCHED_END), cold);
    if HOT_COUNTS >= 2 {
        assert_ne!(bytes(&path, MUTEX_OFFSET, OWNER_OFFSET), hot);
    } else {
        // The counts went to the cold counters; the hot line is as it was.
        assert_eq!(bytes(&path, MUTEX_OFFSET, OWNER_OFFSET), hot);
        assert_ne!(bytes(&path, COUNTERS_OFFSET, DATA_MIN_OFFSET), counters);
    }
    assert_eq!(m.status().counters.acquisitions, 1001);
}

#[test]
fn nested_reentrant_cycles_write_only_the_mutexs_own_line_and_keep_the_record() {
    let (_dir, path) = temp_path("r");
    let m = ReentrantMutex::<u64>::open(&path).unwrap();
    drop(m.lock().unwrap().recover_with(|_| {}));
    let cold = bytes(&path, OWNER_OFFSET, UNTOUCHED_END);
    let mut outer = m.lock().unwrap().recover_with(|_| {});
    outer.set_label("outer").unwrap();
    let held = m.status().owner.expect("the holder");
    for _ in 0..1000 {
        let inner = m.lock().unwrap().recover_with(|_| {});
        assert_eq!(inner.depth(), 2, "glibc's __count");
        drop(inner);
        // The inner release keeps the outer acquisition's record.
        assert_eq!(m.status().owner.as_ref(), Some(&held));
    }
    assert_eq!(outer.depth(), 1);
    drop(outer);
    assert_eq!(m.status().owner, None);
    assert_eq!(m.status().counters.acquisitions, 1002);
    // Only the label (set once) changed the cold record.
    let mut now = bytes(&path, OWNER_OFFSET, UNTOUCHED_END);
    let label = offset_of!(ColdRecord, label_len);
    now[label..label + 4].copy_from_slice(&cold[label..label + 4]);
    let text = offset_of!(ColdRecord, label);
    now[text..text + 5].copy_from_slice(&cold[text..text + 5]);
    assert_eq!(now, cold);
}

#[test]
fn counters_are_exact_across_three_processes() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    cycle_together("lock_cycles", &path, 3);
    let s = m.status();
    assert_eq!(s.counters.acquisitions, 3 * CYCLES);
    assert!(s.counters.contended <= s.counters.acquisitions);
    assert_eq!(*m.lock().unwrap().recover_with(|_| {}), 3 * CYCLES);
}

#[test]
fn a_contended_acquisition_is_counted() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold_until_told", &path);
    kid.expect("locked");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| drop(m.lock().unwrap().recover_with(|_| {})));
        // The waiter sleeps on the lock word once FUTEX_WAITERS is set.
        while m.status().lock_word & 0x8000_0000 == 0 {
            std::thread::yield_now();
        }
        kid.tell("release");
        kid.expect("released");
        waiter.join().unwrap();
    });
    let c = m.status().counters;
    assert_eq!((c.acquisitions, c.contended), (2, 1));
}

#[test]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "x86")),
    ignore = "no hot counts where pthread_mutex_t takes more than 40 bytes (aarch64)"
)]
fn the_hot_counts_wrap_carries_into_the_cold_counter() {
    assert_ne!(
        HOT_COUNTS, 0,
        "no hot counts on this target: ignore it here"
    );
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    drop(m.lock_or_recover(|_| {}).unwrap());
    let counts = HOT_OFFSET + offset_of!(HotRecord, counts);
    write_at(&path, counts, &(u32::MAX - 1).to_ne_bytes());
    let before = m.status().counters.acquisitions;
    assert_eq!(before, u64::from(u32::MAX - 1));
    for _ in 0..5 {
        drop(m.lock_or_recover(|_| {}).unwrap());
    }
    assert_eq!(m.status().counters.acquisitions, before + 5);
    let cold: [u8; 8] = bytes(&path, COUNTERS_OFFSET, COUNTERS_OFFSET + 8)
        .try_into()
        .unwrap();
    assert_eq!(u64::from_ne_bytes(cold), 1 << 32, "the wrap carried");
}

#[test]
fn a_label_lasts_one_acquisition() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut g = m.lock_or_recover(|_| {}).unwrap();
    g.set_label("first").unwrap();
    assert_eq!(m.status().owner.unwrap().label, "first");
    drop(g);
    assert_eq!(m.status().owner, None);
    let g = m.lock_or_recover(|_| {}).unwrap();
    let o = m.status().owner.unwrap();
    assert_eq!((o.pid, o.label.as_str()), (std::process::id(), ""));
    drop(g);
}

#[test]
fn another_process_label_is_not_shown_after_its_release_nor_killed_unlabelled() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold_labelled_then_relock", &path);
    kid.expect("labelled");
    let o = m.status().owner.unwrap();
    assert_eq!((o.pid, o.label.as_str()), (kid.pid(), "first"));
    kid.tell("again");
    kid.expect("relocked");
    let o = m.status().owner.unwrap();
    assert_eq!((o.pid, o.label.as_str()), (kid.pid(), ""));
    let pid = kid.pid();
    kid.kill();
    let s = m.status();
    assert_eq!(s.state, LockState::OwnerDead);
    assert_eq!(s.owner.as_ref().unwrap().label, "");
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    let prev = r.previous_owner().unwrap();
    assert_eq!((prev.pid, prev.label.as_str()), (pid, ""));
    assert_ne!(prev.start_time, 0, "the dead holder's constants");
    drop(r.mark_consistent());
}

/// The cold record is rewritten when its pid, start time or PID namespace
/// is not the holder's (a reused pid, another process).
#[test]
fn a_cold_record_of_another_process_is_corrected_by_the_next_holder() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let g = m.lock_or_recover(|_| {}).unwrap();
    let mine = m.status().owner.unwrap();
    drop(g);
    let ours = cold_of(&path);
    assert_eq!(
        (ours.pid, ours.start_time, ours.pidns_ino),
        (mine.pid, mine.start_time, mine.pid_namespace)
    );
    assert_eq!(
        ours.key,
        process_key(ours.pid, ours.start_time, ours.pidns_ino)
    );
    // Records that other processes would have written (each with its key).
    let other = |pid: u32, start_time: u64, pidns_ino: u64| {
        let mut r = ours;
        (r.pid, r.start_time, r.pidns_ino) = (pid, start_time, pidns_ino);
        r.key = process_key(pid, start_time, pidns_ino);
        r
    };
    let others = [
        other(ours.pid, ours.start_time + 12345, ours.pidns_ino), // our pid, reused
        other(ours.pid, ours.start_time, ours.pidns_ino + 1),     // our pid, another namespace
        other(ours.pid + 1, ours.start_time, ours.pidns_ino),
    ];
    for other in others {
        write_at(&path, OWNER_OFFSET, bytemuck::bytes_of(&other));
        let g = m.lock_or_recover(|_| {}).unwrap();
        let o = m.status().owner.unwrap();
        assert_eq!(
            (o.pid, o.start_time, o.pid_namespace),
            (mine.pid, mine.start_time, mine.pid_namespace),
            "corrected from {other:?}"
        );
        drop(g);
        let now = cold_of(&path);
        assert_eq!(
            (now.pid, now.start_time, now.pidns_ino, now.key),
            (ours.pid, ours.start_time, ours.pidns_ino, ours.key)
        );
    }
}

/// Field 22 of `/proc/<pid>/stat`: the process start time.
fn start_time_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().parse().unwrap()
}

/// What every reader must say of the holder `pid` (labelled `label`), from
/// `status`, `inspect` (and, once it is dead, `previous_owner`).
fn check_facts(path: &Path, m: &SharedMutex<u64>, pid: u32, label: &str, since: SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let o = m.status().owner.expect("the holder");
    assert_eq!((o.pid, o.label.as_str()), (pid, label));
    assert_ne!(o.tid, 0);
    let ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    assert_eq!(o.pid_namespace, ns);
    assert_eq!(o.start_time, start_time_of(pid));
    // The coarse clock may lag a tick behind.
    assert!(o.acquired_at > since - Duration::from_secs(1) && o.acquired_at <= SystemTime::now());
    assert_eq!(robust_mutex::inspect(path).unwrap().owner, Some(o));
}

#[test]
fn readers_show_the_same_facts_for_a_live_a_killed_and_a_panicked_holder() {
    use crate::common::roles::HELD_LABEL;
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let t0 = SystemTime::now();
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    let pid = kid.pid();
    check_facts(&path, &m, pid, HELD_LABEL, t0);
    let live = m.status().owner;
    // Its record outlives it (read while its /proc entry is still there).
    let start = start_time_of(pid);
    kid.kill();
    let s = m.status();
    assert_eq!((s.state, &s.owner), (LockState::OwnerDead, &live));
    assert_eq!(robust_mutex::inspect(&path).unwrap().owner, live);
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    assert_eq!(r.previous_owner(), live.as_ref());
    assert_eq!(live.unwrap().start_time, start);
    drop(r.mark_consistent());

    let mut kid = Kid::spawn("panic_holder", &path);
    kid.tell("go");
    kid.expect("locked");
    check_facts(&path, &m, kid.pid(), "", t0);
    let live = m.status().owner;
    kid.tell("panic");
    kid.expect("panicked");
    let s = m.status();
    assert_eq!((s.state, &s.owner), (LockState::OwnerDead, &live));
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied");
    };
    assert_eq!(r.previous_owner(), live.as_ref());
    drop(r.mark_consistent());
    kid.kill();
}

/// A reset carries everything after the old mutex: the hot record (so the
/// first locker of the replacement is told who died) and the hot counts.
#[test]
fn a_reset_keeps_the_dead_holders_record_and_every_count() {
    use crate::common::roles::HELD_LABEL;
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    for _ in 0..10 {
        drop(m.lock_or_recover(|_| {}).unwrap());
    }
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    let pid = kid.pid();
    kid.kill();
    let dead = m.status().owner;
    assert_eq!(m.status().counters.acquisitions, 11);
    robust_mutex::reset(&path, true).unwrap();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("expected OwnerDied after a reset");
    };
    let prev = r.previous_owner().unwrap();
    assert_eq!((prev.pid, prev.label.as_str()), (pid, HELD_LABEL));
    assert_eq!(Some(prev), dead.as_ref());
    drop(r.mark_consistent());
    let c = m.status().counters;
    assert_eq!((c.acquisitions, c.resets), (12, 1));
}

/// A fork child takes the lock as a process of its own: its first lock
/// rewrites the cold record the parent left (its pid and start time).
#[test]
fn a_fork_childs_lock_describes_the_child_not_its_parent() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    drop(m.lock_or_recover(|_| {}).unwrap());
    // The child only locks (no lock the harness's threads might hold),
    // reads the status and the file.
    crate::common::in_fork_child(|| {
        let me = std::process::id();
        let g = m.lock_or_recover(|_| {}).unwrap();
        let o = m.status().owner.unwrap();
        assert_eq!((o.pid, o.start_time), (me, start_time_of(me)));
        assert_ne!(o.pid_namespace, 0);
        drop(g);
        let c = cold_of(&path);
        assert_eq!((c.pid, c.start_time), (me, start_time_of(me)));
    });
    // And the parent's next lock describes the parent again.
    let _g = m.lock_or_recover(|_| {}).unwrap();
    let o = m.status().owner.unwrap();
    let me = std::process::id();
    assert_eq!((o.pid, o.start_time), (me, start_time_of(me)));
}
