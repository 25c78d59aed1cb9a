//! `status()` reaches every state for real, without locking; `inspect()`
//! reads the same states from the path alone, read-only, and changes nothing.

use crate::common::roles::HELD_LABEL;
use crate::common::small_fs::SmallFs;
use crate::common::{Kid, snapshot, temp_path};
use robust_mutex::{
    Acquired, BareMutex, Error, Inspected, LockKind, LockState, ReentrantMutex, SharedMutex,
    SharedSemaphore, Status,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const NOBODY: u32 = 65534;

/// `inspect` of `path` agrees with the handle's `status()` and leaves the
/// file exactly as it was.
fn inspect_agrees(path: &Path, handle: &Status) -> Status {
    let before = snapshot(path);
    let s = robust_mutex::inspect(path).unwrap();
    assert_eq!(snapshot(path), before, "inspect changed the file");
    assert_eq!((s.state, &s.owner), (handle.state, &handle.owner));
    assert_eq!(
        (s.counters, s.generation),
        (handle.counters, handle.generation)
    );
    s
}

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
    let o = s.owner.clone().expect("owner record");
    assert_eq!(o.pid, kid.pid());
    assert!(std::path::Path::new(&format!("/proc/{}/task/{}", o.pid, o.tid)).exists());
    assert_eq!(o.label, HELD_LABEL);
    assert!(o.is_alive());
    assert!(o.held_for() < std::time::Duration::from_secs(3600));
    assert_eq!(s.counters.acquisitions, 1);
    inspect_agrees(&path, &s);
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
    inspect_agrees(&path, &m.status());
    drop(m.lock_or_recover(|_| {}).unwrap());
    let s = m.status();
    assert_eq!(s.state, LockState::Unlocked);
    assert_eq!((s.counters.owner_deaths, s.counters.recoveries), (1, 1));
}

/// Makes `path` a mutex file whose holder, a child, was killed holding it;
/// returns the dead holder's pid.
pub(crate) fn owner_dead_file(path: &Path) -> u32 {
    SharedMutex::<u64>::open(path).unwrap();
    let mut kid = Kid::spawn("hold", path);
    kid.expect("locked");
    let pid = kid.pid();
    kid.kill();
    pid
}

/// Makes `path` a mutex file that is not recoverable: its holder died and
/// the recovery was dropped without `mark_consistent`.
pub(crate) fn not_recoverable_file(path: &Path) {
    owner_dead_file(path);
    match SharedMutex::<u64>::open(path).unwrap().lock().unwrap() {
        Acquired::OwnerDied(r) => drop(r),
        Acquired::Clean(_) => panic!("expected OwnerDied"),
    }
}

#[test]
fn not_recoverable_after_an_abandoned_recovery() {
    let (_dir, path) = temp_path("m");
    not_recoverable_file(&path);
    let m = SharedMutex::<u64>::open(&path).unwrap();
    assert_eq!(m.status().state, LockState::NotRecoverable);
    inspect_agrees(&path, &m.status());
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
    inspect_agrees(&path, &s);
}

#[test]
fn inspect_reads_every_kind_and_changes_nothing() {
    let (dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    assert_eq!(
        inspect_agrees(&path, &m.status()).state,
        LockState::Unlocked
    );
    let g = m.lock().unwrap();
    let s = inspect_agrees(&path, &m.status());
    assert_eq!(s.state, LockState::Locked);
    assert_eq!(s.owner.unwrap().pid, std::process::id());
    let i = robust_mutex::inspect_file(&path).unwrap();
    let info = i.file.expect("a mutex file has a header");
    assert_eq!(
        (info.kind, info.value_size, info.generation),
        (LockKind::Mutex, 8, 1)
    );
    assert_eq!(info, m.file_info());
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!((i.mode, i.uid, i.len), (0o600, md.uid(), md.len()));
    assert_eq!((i.dev, i.ino), (md.dev(), md.ino()));
    drop(g);

    let r = dir.path().join("r");
    let rm = ReentrantMutex::<u32>::open(&r).unwrap();
    let _g = rm.lock().unwrap();
    assert_eq!(inspect_agrees(&r, &rm.status()).state, LockState::Locked);
    let i = robust_mutex::inspect_file(&r).unwrap();
    assert_eq!(i.file.unwrap().kind, LockKind::Reentrant);

    let b = dir.path().join("b");
    let bm = BareMutex::open(&b).unwrap();
    let _g = bm.lock().unwrap();
    let s = inspect_agrees(&b, &bm.status());
    assert_eq!(s.state, LockState::Locked);
    assert_eq!(s.owner.unwrap().pid, std::process::id());
    assert!(
        robust_mutex::inspect_file(&b).unwrap().file.is_none(),
        "a bare file has no header"
    );

    let sp = dir.path().join("s");
    let sem = SharedSemaphore::open(&sp, 3).unwrap();
    let _p = sem.acquire().unwrap();
    let before = snapshot(&sp);
    let s = robust_mutex::inspect_semaphore(&sp).unwrap();
    assert_eq!(s, sem.status());
    assert_eq!((s.total, s.available, s.held), (3, 2, 1));
    let i = robust_mutex::inspect_file(&sp).unwrap();
    assert!(matches!(&i.lock, Inspected::Semaphore(x) if *x == s));
    assert_eq!(
        i.lock.state(),
        LockState::Locked,
        "a semaphore with a permit in use"
    );
    assert_eq!(i.file.unwrap().kind, LockKind::Semaphore);
    let e = robust_mutex::inspect(&sp).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                found: LockKind::Semaphore,
                ..
            }
        ),
        "{e}"
    );
    let e = robust_mutex::inspect_semaphore(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                expected: LockKind::Semaphore,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(snapshot(&sp), before);
}

#[test]
fn inspect_refuses_what_open_refuses_and_changes_nothing() {
    let (dir, path) = temp_path("x");
    std::fs::write(&path, "not a lock").unwrap();
    let before = snapshot(&path);
    let e = robust_mutex::inspect(&path).unwrap_err();
    assert!(matches!(e, Error::ForeignFile { .. }), "{e}");
    assert_eq!(snapshot(&path), before);
    // What flock(1) and touch leave: named empty, as an open names it.
    let empty = dir.path().join("empty");
    std::fs::File::create(&empty).unwrap();
    let before = snapshot(&empty);
    let e = robust_mutex::inspect(&empty).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    assert_eq!(snapshot(&empty), before);
    let e = robust_mutex::inspect(dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = robust_mutex::inspect(dir.path()).unwrap_err();
    assert!(matches!(e, Error::NotRegularFile { .. }), "{e}");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = robust_mutex::inspect(&link).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    // A mutex file cut short: typed, untouched, never mapped.
    let m = dir.path().join("m");
    SharedMutex::<u64>::open(&m).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&m)
        .unwrap()
        .set_len(300)
        .unwrap();
    let before = snapshot(&m);
    let e = robust_mutex::inspect(&m).unwrap_err();
    assert!(matches!(e, Error::Truncated { len: 300, .. }), "{e}");
    assert_eq!(snapshot(&m), before);
}

/// A creator at each step of its work, and the same file once the creator
/// is gone: reported as being created, never taken over, converted or
/// mapped.
#[test]
fn inspect_reports_a_creation_in_progress_or_abandoned_and_leaves_it_alone() {
    for step in ["created", "sized", "mutex_init", "header"] {
        let (_dir, path) = temp_path("m");
        let mut k = Kid::spawn_env(
            "create_paused",
            &path,
            &[("ROBUST_MUTEX_TEST_PAUSE_AT", step)],
        );
        k.expect(&format!("paused:{step}"));
        for creator in ["alive", "dead"] {
            let before = snapshot(&path);
            let e = robust_mutex::inspect(&path).unwrap_err();
            assert!(
                matches!(e, Error::BeingCreated { .. }),
                "{step}, {creator}: {e}"
            );
            assert!(e.to_string().contains("being created"), "{e}");
            let e = robust_mutex::inspect_semaphore(&path).unwrap_err();
            assert!(
                matches!(e, Error::BeingCreated { .. }),
                "{step}, {creator}: {e}"
            );
            assert_eq!(snapshot(&path), before, "{step}, {creator}");
            assert_eq!(crate::common::mode_of(&path), 0o400);
            if creator == "alive" {
                let _ = k.child.kill();
                let _ = k.child.wait();
            }
        }
    }
    // What a pymutex creator leaves: an empty 0400 file, or its mutex
    // written and the chmod not yet done.
    let (_dir, path) = temp_path("b");
    BareMutex::open(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let before = snapshot(&path);
    let e = robust_mutex::inspect(&path).unwrap_err();
    assert!(matches!(e, Error::BeingCreated { .. }), "{e}");
    assert_eq!(snapshot(&path), before);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: chowns a file to uid 65534")]
fn inspect_leaves_another_users_abandoned_creation_alone() {
    let (_dir, path) = temp_path("planted");
    std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = snapshot(&path);
    let e = robust_mutex::inspect(&path).unwrap_err();
    assert!(matches!(e, Error::BeingCreated { .. }), "{e}");
    assert_eq!(snapshot(&path), before);
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!((md.uid(), md.gid(), md.len()), (NOBODY, NOBODY, 0));
}

/// A monitoring account with read permission only: a root-owned 0644 file,
/// held by a root process, read by uid 65534.
#[test]
#[cfg_attr(not_root, ignore = "needs root: a child drops to uid 65534")]
fn inspect_needs_only_read_permission() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("m");
    robust_mutex::OpenOptions::new()
        .create(true)
        .mode(0o644)
        .open::<u64>(&path)
        .unwrap();
    let mut holder = Kid::spawn("hold", &path);
    holder.expect("locked");
    let before = snapshot(&path);
    let mut k = Kid::spawn_as("inspect_report", &path, &[], Some((NOBODY, NOBODY)));
    assert_eq!(k.expect("result"), "ok locked");
    k.wait_ok();
    assert_eq!(snapshot(&path), before);
    holder.kill();
    let mut k = Kid::spawn_as("inspect_report", &path, &[], Some((NOBODY, NOBODY)));
    assert_eq!(k.expect("result"), "ok owner-dead");
    k.wait_ok();
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a tmpfs"
)]
fn inspect_works_on_a_read_only_mount() {
    let fs = SmallFs::tmpfs("1m");
    let (free, dead, sem, bare) = (
        fs.path().join("free"),
        fs.path().join("dead"),
        fs.path().join("sem"),
        fs.path().join("bare"),
    );
    SharedMutex::<u64>::open(&free).unwrap();
    SharedMutex::<u64>::open(&dead).unwrap();
    let mut k = Kid::spawn("hold", &dead);
    k.expect("locked");
    k.kill();
    SharedSemaphore::open(&sem, 2).unwrap();
    BareMutex::open(&bare).unwrap();
    fs.remount_read_only();
    let before: Vec<_> = [&free, &dead, &sem, &bare].map(|p| snapshot(p)).into();
    assert_eq!(
        robust_mutex::inspect(&free).unwrap().state,
        LockState::Unlocked
    );
    let s = robust_mutex::inspect(&dead).unwrap();
    assert_eq!(s.state, LockState::OwnerDead);
    assert_eq!(s.owner.unwrap().label, HELD_LABEL);
    assert_eq!(robust_mutex::inspect_semaphore(&sem).unwrap().available, 2);
    assert_eq!(
        robust_mutex::inspect(&bare).unwrap().state,
        LockState::Unlocked
    );
    let after: Vec<_> = [&free, &dead, &sem, &bare].map(|p| snapshot(p)).into();
    assert_eq!(after, before);
}

/// A file from an earlier boot is repaired by its next opener, which marks
/// it owner-dead; `inspect` says so and repairs nothing.
#[test]
fn inspect_of_a_file_from_an_earlier_boot_repairs_nothing() {
    let (_dir, path) = temp_path("m");
    SharedMutex::<u64>::open(&path).unwrap();
    Kid::spawn("stuck", &path).wait_ok();
    let before = snapshot(&path);
    let boot = [(
        "ROBUST_MUTEX_TEST_BOOT_ID",
        "00112233-4455-6677-8899-aabbccddeeff",
    )];
    let mut k = Kid::spawn_env("inspect_report", &path, &boot);
    assert_eq!(k.expect("result"), "ok owner-dead");
    k.wait_ok();
    assert_eq!(snapshot(&path), before);
}

/// Cuts the file at `path` to `len` bytes, as `truncate -s` would.
fn cut(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// A library process asking a mapped handle for its status after someone
/// truncated the file: a typed state, not SIGBUS.
#[test]
fn status_of_a_handle_whose_file_was_truncated_says_so_instead_of_dying() {
    let (dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    cut(&path, 0);
    let s = m.status();
    assert_eq!((s.state, &s.owner), (LockState::Truncated, &None));
    // Cut, then grown back: zeros where the header and the mutex were.
    cut(&path, 520);
    assert_eq!(m.status().state, LockState::Truncated);

    let r = dir.path().join("r");
    let rm = ReentrantMutex::<u64>::open(&r).unwrap();
    cut(&r, 100);
    assert_eq!(rm.status().state, LockState::Truncated);

    let sp = dir.path().join("s");
    let sem = SharedSemaphore::open(&sp, 2).unwrap();
    cut(&sp, 0);
    let s = sem.status();
    assert!(s.truncated);
    assert_eq!((s.available, s.permits.len()), (0, 0));

    let b = dir.path().join("b");
    let bm = BareMutex::open(&b).unwrap();
    cut(&b, 0);
    assert_eq!(bm.status().state, LockState::Truncated);
    cut(&b, robust_mutex::BARE_SIZE as u64);
    assert_eq!(bm.status().state, LockState::Truncated);
}

#[test]
fn a_process_may_keep_hundreds_more_lock_files_open_than_descriptors() {
    // No handle keeps a descriptor: a process with the usual soft limit
    // (1024) can hold thousands of lock files. Here: 600 under a limit of
    // 256, each one's status() read (which must still notice truncation
    // without a descriptor: see the test above).
    let dir = tempfile::tempdir().unwrap();
    let mut kid = Kid::spawn("many_files", dir.path());
    // A child that fails says `failed=<n> <error>` and ends: `expect` then
    // panics with the child's end.
    assert_eq!(kid.expect("opened"), "600");
    kid.wait_ok();
}
