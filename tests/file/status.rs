//! `status()` reaches every state for real, without locking.

use crate::common::roles::HELD_LABEL;
use crate::common::{Kid, temp_path};
use robust_mutex::{Acquired, LockState, SharedMutex};

#[test]
fn unlocked_then_locked_by_a_live_process() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let s = m.status();
    assert_eq!(s.state, LockState::Unlocked);
    assert_eq!(s.owner, None);
    assert_eq!(s.generation, 1);

    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    let s = m.status();
    assert_eq!(s.state, LockState::Locked);
    let o = s.owner.expect("owner record");
    assert_eq!(o.pid, kid.pid());
    assert!(std::path::Path::new(&format!("/proc/{}/task/{}", o.pid, o.tid)).exists());
    assert_eq!(o.label, HELD_LABEL);
    assert!(o.is_alive());
    assert!(o.held_for() < std::time::Duration::from_secs(3600));
    assert_eq!(s.counters.acquisitions, 1);
}

#[test]
fn owner_dead_after_a_kill_names_the_dead_owner_until_someone_recovers() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    let pid = kid.pid();
    kid.kill();
    let s = m.status();
    assert_eq!(s.state, LockState::OwnerDead);
    let o = s.owner.expect("the dead owner's record");
    assert_eq!((o.pid, o.label.as_str()), (pid, HELD_LABEL));
    assert!(!o.is_alive());
    drop(m.lock_or_recover(|_| {}).unwrap());
    let s = m.status();
    assert_eq!(s.state, LockState::Unlocked);
    assert_eq!((s.counters.owner_deaths, s.counters.recoveries), (1, 1));
}

#[test]
fn not_recoverable_after_an_abandoned_recovery() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    kid.kill();
    match m.lock().unwrap() {
        Acquired::OwnerDied(r) => drop(r),
        Acquired::Clean(_) => panic!("expected OwnerDied"),
    }
    assert_eq!(m.status().state, LockState::NotRecoverable);
}

#[test]
fn stuck_when_the_holder_died_without_the_kernel_marking_it() {
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let mut kid = Kid::spawn("stuck", &path);
    kid.expect("unmapped");
    kid.wait_ok();
    let s = m.status();
    assert_eq!(s.state, LockState::Stuck, "lock word {:#x}", s.lock_word);
    let tid = s.lock_word & 0x3fff_ffff;
    assert_ne!(tid, 0);
    assert_eq!(s.lock_word & 0x4000_0000, 0, "the kernel never marked it");
    assert!(!std::path::Path::new(&format!("/proc/{tid}")).exists());
}
