//! Format version 2: a version-1 file is refused, untouched, with the way to
//! convert it; `reset` converts it, keeping the value, the kind and the
//! counters; a newer version is refused by everything, `reset` included.
//! Version-1 files come from [`common::v1`].

use crate::common::v1::{self, Kind};
use crate::common::{self, Kid, temp_path};
use robust_mutex::{
    Acquired, Error, LockKind, LockState, OpenOptions, ReentrantMutex, ResetOptions, ResetOutcome,
    SharedMutex, SharedSemaphore,
};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The waiters bit of a glibc lock word.
const FUTEX_WAITERS: u32 = 0x8000_0000;

/// The header state of a file a reset replaced.
const RETIRED: u32 = 0x5245_5449;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_robust-mutex"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error of every kind of open, and of the read-only looks, on `path`.
fn every_refusal(path: &Path, kind: Kind) -> Vec<Error> {
    let mut errors = vec![
        robust_mutex::inspect_file(path).map(drop).unwrap_err(),
        OpenOptions::new()
            .create(true)
            .open_lock_only(path)
            .map(drop)
            .unwrap_err(),
    ];
    errors.push(match kind {
        Kind::Mutex => SharedMutex::<u64>::open(path).map(drop).unwrap_err(),
        Kind::Reentrant => ReentrantMutex::<u64>::open(path).map(drop).unwrap_err(),
        Kind::Semaphore(n) => SharedSemaphore::open(path, n).map(drop).unwrap_err(),
    });
    errors.push(match kind {
        Kind::Semaphore(_) => robust_mutex::inspect_semaphore(path).map(drop).unwrap_err(),
        _ => robust_mutex::inspect(path).map(drop).unwrap_err(),
    });
    errors
}

/// Asserts that `e` is the refusal of a file of version `found`; its text.
fn unsupported(e: &Error, found: u32) -> String {
    assert!(
        matches!(e, Error::UnsupportedVersion { found: f, expected: 2, .. } if *f == found),
        "{e:?}"
    );
    e.to_string()
}

#[test]
fn a_version_1_file_is_refused_with_the_way_to_convert_it_and_left_untouched() {
    for kind in [Kind::Mutex, Kind::Reentrant, Kind::Semaphore(2)] {
        let (_dir, path) = temp_path("m");
        v1::write_v1(&path, kind);
        let before = common::snapshot(&path);
        let hint = format!("`robust-mutex reset {}`", path.display());
        for e in every_refusal(&path, kind) {
            let text = unsupported(&e, 1);
            assert!(
                text.contains(&hint)
                    && text.contains("keeps the value")
                    && text.contains("stop processes running the old version first"),
                "{text}"
            );
        }
        // The command prints the library's hint, with EX_DATAERR (65): PATH
        // is not a file this build uses, left untouched.
        let p = path.to_str().unwrap();
        for args in [&["status", p][..], &["run", p, "--", "true"]] {
            let o = cli(args);
            assert_eq!(o.status.code(), Some(65), "{args:?}: {}", stderr(&o));
            let text = stderr(&o);
            assert!(text.contains(&hint), "{args:?}: {text}");
            // Named by what was being done.
            let what = if args[0] == "status" {
                "status"
            } else {
                "open"
            };
            assert!(
                text.contains(&format!("{what} {p}: format version 1")),
                "{text}"
            );
        }
        assert_eq!(common::snapshot(&path), before, "{kind:?}");
    }
}

#[test]
fn reset_converts_a_free_version_1_lock_keeping_value_and_counters_and_the_first_lock_is_clean() {
    for kind in [Kind::Mutex, Kind::Reentrant] {
        let (_dir, path) = temp_path("m");
        v1::write_v1(&path, kind);
        assert_eq!(v1::v1_record_parts(&path), [true; 3]);
        let old = std::fs::File::open(&path).unwrap();
        let out = robust_mutex::reset(&path, false).unwrap();
        assert_eq!(
            (out.generation, out.previous_state, out.migrated_from),
            (2, LockState::Unlocked, Some(1)),
            "{kind:?}"
        );

        let i = robust_mutex::inspect_file(&path).unwrap();
        let file = i.file.unwrap();
        let want = match kind {
            Kind::Reentrant => LockKind::Reentrant,
            _ => LockKind::Mutex,
        };
        assert_eq!((file.version, file.kind, file.value_size), (2, want, 8));
        let s = robust_mutex::inspect(&path).unwrap();
        assert_eq!((s.state, s.generation), (LockState::Unlocked, 2));
        // The version-1 record was not carried over (its layout differs).
        assert_eq!(s.owner, None);
        assert_eq!(v1::v1_record_parts(&path), [false; 3], "{kind:?}");
        let o = cli(&["status", path.to_str().unwrap()]);
        assert!(!String::from_utf8_lossy(&o.stdout).contains(v1::LABEL));
        let c = s.counters;
        let [acquisitions, contended, owner_deaths, recoveries, resets] = v1::COUNTERS;
        assert_eq!(
            (
                c.acquisitions,
                c.contended,
                c.owner_deaths,
                c.recoveries,
                c.resets
            ),
            (
                acquisitions,
                contended,
                owner_deaths,
                recoveries,
                resets + 1
            )
        );

        // The lock was free and consistent: the first locker gets it clean.
        let value = match kind {
            Kind::Reentrant => {
                let m = ReentrantMutex::<u64>::open(&path).unwrap();
                let Acquired::Clean(g) = m.lock().unwrap() else {
                    panic!("a free version-1 lock converts to a clean one");
                };
                g.get()
            }
            _ => {
                let m = SharedMutex::<u64>::open(&path).unwrap();
                let Acquired::Clean(g) = m.lock().unwrap() else {
                    panic!("a free version-1 lock converts to a clean one");
                };
                *g
            }
        };
        assert_eq!(value, v1::VALUE);

        // The old inode is retired and its lock not recoverable: a
        // version-1 process that locks it gets ENOTRECOVERABLE, looks at the
        // path again and is refused version 2. It never uses the old lock
        // beside the new one.
        assert_eq!(v1::state_and_word(&old).0, RETIRED);
        assert_eq!(
            raw_lock_through(&old, v1::MUTEX_AT),
            libc::ENOTRECOVERABLE.to_string()
        );
    }
}

/// Locks the mutex at `offset` of the file open as `f` (an old inode, say)
/// with plain `pthread_mutex_lock` in a child; its errno.
fn raw_lock_through(f: &std::fs::File, offset: usize) -> String {
    let path = format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd());
    raw_lock_at(Path::new(&path), offset).expect("locked")
}

/// A child holding the mutex at `offset` of `path` with plain
/// `pthread_mutex_lock` (a version-1 process).
fn raw_lock_at(path: &Path, offset: usize) -> Kid {
    let offset = offset.to_string();
    Kid::spawn_env(
        "raw_lock_at",
        path,
        &[(common::roles_migrate::OFFSET_ENV, &offset)],
    )
}

/// Converts the version-1 file at `path`, one of whose locks a dead
/// holder left owner-dead, without force; checks the outcome and that
/// nothing of the version-1 records was carried.
fn convert_after_a_death(path: &Path) {
    assert_eq!(v1::v1_record_parts(path), [true; 3]);
    let out = robust_mutex::reset(path, false).unwrap();
    assert_eq!(
        (out.generation, out.previous_state, out.migrated_from),
        (2, LockState::OwnerDead, Some(1))
    );
    assert_eq!(v1::v1_record_parts(path), [false; 3]);
}

#[test]
fn reset_converts_an_owner_dead_version_1_mutex_and_its_first_locker_recovers() {
    let (_dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Mutex);
    // A version-1 holder dies: a raw pthread lock, then SIGKILL.
    let mut kid = Kid::spawn("raw_owner_died", &path);
    assert_eq!(kid.expect("locked"), "0");
    kid.kill();
    convert_after_a_death(&path);
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("the first locker after a dead version-1 holder must repair");
    };
    // Nobody is named: the version-1 record was not carried over.
    assert_eq!(r.previous_owner().map(|o| o.pid), None);
    assert_eq!(*r, v1::VALUE);
    drop(r.mark_consistent());
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
}

/// Writes a version-1 file of `kind` at `path` whose mutex at `offset` a
/// live child holds, and checks that a reset without force (the library's
/// and the command's) waits for it, then refuses it and leaves the file as
/// it was, but for the waiters bit of that lock word (a waiter's mark, which
/// the holder's unlock clears). The holder.
fn refused_while_held(path: &Path, kind: Kind, offset: usize) -> Kid {
    v1::write_v1(path, kind);
    let holder = raw_hold_at(path, offset);
    let before = bytes_but_waiters(path, offset);
    let e = ResetOptions::new()
        .init_timeout(Duration::from_millis(50))
        .reset(path)
        .unwrap_err();
    assert!(matches!(e, Error::ConversionRefused { .. }), "{e}");
    assert!(
        e.to_string().contains("every lock") && e.to_string().contains("not recoverable"),
        "{e}"
    );
    let o = cli(&["reset", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(
        text.contains("every lock")
            && text.contains("stop the version-1 processes")
            && text.contains("--force")
            && !text.contains("not broken"),
        "{text}"
    );
    assert_eq!(bytes_but_waiters(path, offset), before);
    holder
}

/// The bytes of the file at `path`, with the waiters bit (FUTEX_WAITERS) of
/// the lock word at `offset` cleared.
fn bytes_but_waiters(path: &Path, offset: usize) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    let word = u32::from_ne_bytes(b[offset..offset + 4].try_into().unwrap());
    b[offset..offset + 4].copy_from_slice(&(word & !FUTEX_WAITERS).to_ne_bytes());
    b
}

#[test]
fn a_version_1_mutex_held_by_a_live_process_is_converted_only_with_force() {
    let (_dir, path) = temp_path("m");
    let holder = refused_while_held(&path, Kind::Mutex, v1::MUTEX_AT);

    let old = std::fs::File::open(&path).unwrap();
    let (_, held_word) = v1::state_and_word(&old);
    let out = forced_briefly(&path);
    assert_eq!(
        (out.previous_state, out.migrated_from, out.old_locks_held),
        (LockState::Locked, Some(1), 1)
    );
    // The holder finishes on the old file, which is retired; the new file's
    // first locker repairs, as after any forced reset.
    let (state, word) = v1::state_and_word(&old);
    assert_eq!(
        (state, word | FUTEX_WAITERS),
        (RETIRED, held_word | FUTEX_WAITERS)
    );
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("a forced reset's first locker repairs");
    };
    assert_eq!(*r, v1::VALUE);
    drop(holder);
}

#[test]
fn the_command_converts_a_version_1_file_and_says_so() {
    let (_dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Mutex);
    let o = cli(&["reset", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("converted from format version 1") && text.contains("generation 2"),
        "{text}"
    );
    assert_eq!(robust_mutex::inspect(&path).unwrap().counters.resets, 1);
}

#[test]
fn a_newer_version_is_refused_by_everything_and_never_downgraded() {
    for kind in [Kind::Mutex, Kind::Semaphore(2)] {
        let (_dir, path) = temp_path("m");
        v1::write_v1(&path, kind);
        v1::set_version(&path, 3);
        let before = common::snapshot(&path);
        for e in every_refusal(&path, kind) {
            let text = unsupported(&e, 3);
            assert!(
                text.contains("newer") && text.contains("upgrade") && !text.contains("reset"),
                "{text}"
            );
        }
        for force in [false, true] {
            let e = robust_mutex::reset(&path, force).unwrap_err();
            assert!(
                matches!(e, Error::UnsupportedVersion { found: 3, .. }),
                "{e}"
            );
        }
        let p = path.to_str().unwrap();
        for args in [&["status", p][..], &["reset", "--force", p]] {
            let o = cli(args);
            assert_eq!(o.status.code(), Some(65), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("upgrade"), "{}", stderr(&o));
        }
        assert_eq!(common::snapshot(&path), before);
    }
}

/// The offset of permit `i`'s mutex in a semaphore file.
fn permit_at(i: usize) -> usize {
    v1::VALUE_AT + i * v1::SLOT_SIZE
}

#[test]
fn reset_converts_a_version_1_semaphore_keeping_counters_and_a_dead_holders_permit() {
    let (_dir, path) = temp_path("s");
    v1::write_v1(&path, Kind::Semaphore(3));
    // A version-1 holder of permit 1 dies.
    let mut kid = raw_lock_at(&path, permit_at(1));
    assert_eq!(kid.expect("locked"), "0");
    kid.kill();
    let old = std::fs::File::open(&path).unwrap();
    convert_after_a_death(&path);

    let sem = SharedSemaphore::open(&path, 3).unwrap();
    let s = sem.status();
    let states: Vec<LockState> = s.permits.iter().map(|p| p.state).collect();
    use LockState::{OwnerDead, Unlocked};
    assert_eq!(states, [Unlocked, OwnerDead, Unlocked]);
    assert!(s.permits.iter().all(|p| p.owner.is_none()), "{s:?}");
    assert_eq!(
        (s.counters.acquisitions, s.counters.resets),
        (v1::COUNTERS[0], 1)
    );
    // Every permit can be taken; the dead holder's is repaired by its taker.
    let mut died = 0;
    let mut guards = Vec::new();
    for _ in 0..3 {
        match sem.try_acquire().unwrap() {
            Acquired::Clean(g) => guards.push(g),
            Acquired::OwnerDied(r) => {
                died += 1;
                guards.push(r.mark_consistent());
            }
        }
    }
    assert_eq!(died, 1);

    // Every permit of the old file is lost: version-1 processes still on
    // it find no permit, rather than three beside the new file's three.
    assert_eq!(v1::state_and_word(&old).0, RETIRED);
    for i in 0..3 {
        assert_eq!(
            raw_lock_through(&old, permit_at(i)),
            libc::ENOTRECOVERABLE.to_string(),
            "permit {i}"
        );
    }
}

#[test]
fn a_version_1_semaphore_with_a_live_holder_is_converted_only_with_force() {
    let (_dir, path) = temp_path("s");
    let holder = refused_while_held(&path, Kind::Semaphore(2), permit_at(0));
    let out = forced_briefly(&path);
    assert_eq!((out.migrated_from, out.old_locks_held), (Some(1), 1));
    // The live holder's permit comes back owner-dead in the new file.
    let s = robust_mutex::inspect_semaphore(&path).unwrap();
    let states: Vec<LockState> = s.permits.iter().map(|p| p.state).collect();
    assert_eq!(states, [LockState::OwnerDead, LockState::Unlocked]);
    drop(holder);
}

#[test]
fn what_is_left_of_a_version_1_file_is_replaced_only_with_force_keeping_its_kind() {
    let (_dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Reentrant);
    // Cut short in the value, as `truncate -s 515` leaves it.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(515).unwrap();
    let before = common::snapshot(&path);
    let e = robust_mutex::reset(&path, false).unwrap_err();
    assert!(matches!(e, Error::ResetNeedsForce { len: 515, .. }), "{e}");
    assert_eq!(common::snapshot(&path), before);
    let out = robust_mutex::reset(&path, true).unwrap();
    assert_eq!((out.generation, out.remnant_len), (2, Some(515)));
    let file = robust_mutex::inspect_file(&path).unwrap().file.unwrap();
    assert_eq!(
        (file.version, file.kind, file.value_size),
        (2, LockKind::Reentrant, 8)
    );
}

/// A forced reset of `path` in a child, stopped right after it opened the
/// file; `change` runs while it is stopped; then it goes on. Its result
/// (`reset_and_report`) and `change`'s.
fn reset_paused_after_open<T>(path: &Path, change: impl FnOnce() -> T) -> (String, T) {
    let mut kid = Kid::spawn_env(
        "reset_and_report",
        path,
        &[
            ("ROBUST_MUTEX_TEST_PAUSE_AT", "reset_opened"),
            ("ROBUST_MUTEX_TEST_RESUME", "1"),
        ],
    );
    kid.expect("paused:reset_opened");
    let changed = change();
    kid.tell("go");
    let r = kid.expect("result");
    kid.wait_ok();
    (r, changed)
}

/// A free mutex file of format `version` (1 or 2), holding [`v1::VALUE`].
fn mutex_of_version(version: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Mutex);
    v1::set_version(&path, version);
    (dir, path)
}

#[test]
fn a_reset_never_overwrites_the_live_lock_that_replaced_the_file_it_opened() {
    use std::os::unix::fs::MetadataExt;
    // A conversion (version 1) or a plain reset (version 2) opens the file;
    // meanwhile the file is removed and a new lock made at the path, which
    // its user holds. The reset must give up and leave the new lock alone.
    for version in [1, 2] {
        let (_dir, path) = mutex_of_version(version);
        let (r, (holder, ino, before)) = reset_paused_after_open(&path, || {
            std::fs::remove_file(&path).unwrap();
            let mut holder = Kid::spawn("hold", &path);
            holder.expect("locked");
            let ino = std::fs::metadata(&path).unwrap().ino();
            (holder, ino, common::snapshot(&path))
        });
        assert_eq!(r, "changed-underneath", "version {version}");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino, "replaced");
        assert_eq!(common::snapshot(&path), before);
        holder.kill();
    }
}

#[test]
fn a_reset_never_brings_back_the_file_removed_while_it_waited() {
    for version in [1, 2] {
        let (_dir, path) = mutex_of_version(version);
        let (r, ()) = reset_paused_after_open(&path, || std::fs::remove_file(&path).unwrap());
        assert_eq!(r, "changed-underneath", "version {version}");
        assert!(!path.exists(), "version {version}: brought back");
    }
}

/// A forced reset of `path` that waits only briefly for held locks (a
/// holder that never lets go is then counted in `old_locks_held`).
fn forced_briefly(path: &Path) -> ResetOutcome {
    ResetOptions::new()
        .force(true)
        .init_timeout(Duration::from_millis(50))
        .reset(path)
        .unwrap()
}

/// A child holding the mutex at `offset` of `path` with plain
/// `pthread_mutex_lock` (a version-1 process) until told to unlock it.
fn raw_hold_at(path: &Path, offset: usize) -> Kid {
    let offset = offset.to_string();
    let mut kid = Kid::spawn_env(
        "raw_hold_at",
        path,
        &[(common::roles_migrate::OFFSET_ENV, &offset)],
    );
    assert_eq!(kid.expect("locked"), "0");
    kid
}

/// Longer than any wait in these tests: only a real hang reaches it.
const PATIENT: Duration = Duration::from_secs(60);

/// Resets `path` in a thread, waiting up to [`PATIENT`] for its locks.
fn reset_in_thread(
    path: &Path,
    force: bool,
) -> std::thread::JoinHandle<Result<ResetOutcome, Error>> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        ResetOptions::new()
            .force(force)
            .init_timeout(PATIENT)
            .reset(&path)
    })
}

#[test]
fn a_conversion_without_force_waits_for_a_busy_version_1_lock() {
    // A version-1 process holds the lock for a moment: the conversion waits
    // for it rather than calling it held.
    let (_dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Mutex);
    let mut holder = raw_hold_at(&path, v1::MUTEX_AT);
    let reset = reset_in_thread(&path, false);
    holder.tell("unlock");
    assert_eq!(holder.expect("unlocked"), "0");
    let out = reset.join().unwrap().unwrap();
    assert_eq!(
        (out.previous_state, out.migrated_from, out.old_locks_held),
        (LockState::Unlocked, Some(1), 0)
    );
    let m = SharedMutex::<u64>::open(&path).unwrap();
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
}

#[test]
fn a_forced_conversion_waits_for_the_version_1_holder_and_leaves_its_lock_not_recoverable() {
    // Without this, the holder's unlock would leave the old lock free and
    // consistent, and version-1 processes (which read RETIRED only on
    // EOWNERDEAD) would go on using the old file beside the new one.
    for (kind, offset) in [
        (Kind::Mutex, v1::MUTEX_AT),
        (Kind::Semaphore(2), permit_at(1)),
    ] {
        let (_dir, path) = temp_path("m");
        v1::write_v1(&path, kind);
        let old = std::fs::File::open(&path).unwrap();
        let mut holder = raw_hold_at(&path, offset);
        let reset = reset_in_thread(&path, true);
        holder.tell("unlock");
        assert_eq!(holder.expect("unlocked"), "0");
        let out = reset.join().unwrap().unwrap();
        assert_eq!((out.migrated_from, out.old_locks_held), (Some(1), 0));
        assert_eq!(
            raw_lock_through(&old, offset),
            libc::ENOTRECOVERABLE.to_string(),
            "{kind:?}"
        );
    }
}

#[test]
fn a_forced_conversion_says_when_a_version_1_holder_kept_the_old_lock() {
    let (_dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Mutex);
    let _holder = raw_hold_at(&path, v1::MUTEX_AT);
    // The holder never lets go: the conversion stops waiting and says so.
    let out = forced_briefly(&path);
    assert_eq!((out.migrated_from, out.old_locks_held), (Some(1), 1));
    // And the command (which waits its default 5 s).
    let (_dir2, path2) = temp_path("m");
    v1::write_v1(&path2, Kind::Mutex);
    let _holder2 = raw_hold_at(&path2, v1::MUTEX_AT);
    let o = cli(&["reset", "--force", path2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("still held"), "{text}");
}

#[test]
fn a_conversion_that_waited_while_another_converted_the_file_reports_the_new_file() {
    // One conversion opens the version-1 file and is stopped there; another
    // converts it; the new file's user holds its lock. The first one, let
    // go, converts nothing and says so, with the new file's generation and
    // state (not the retired file's not-recoverable locks).
    let (_dir, path) = temp_path("m");
    v1::write_v1(&path, Kind::Mutex);
    let mut kid = Kid::spawn_env(
        "convert_and_report",
        &path,
        &[
            ("ROBUST_MUTEX_TEST_PAUSE_AT", "reset_opened"),
            ("ROBUST_MUTEX_TEST_RESUME", "1"),
        ],
    );
    kid.expect("paused:reset_opened");
    let out = robust_mutex::reset(&path, false).unwrap();
    assert_eq!((out.generation, out.converted_by_another), (2, false));
    let m = SharedMutex::<u64>::open(&path).unwrap();
    let g = m.lock().unwrap();
    kid.tell("go");
    assert_eq!(kid.expect("result"), "2,locked,true");
    kid.wait_ok();
    drop(g);
}

#[test]
fn the_way_to_convert_quotes_a_path_that_a_shell_would_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a b'c");
    v1::write_v1(&path, Kind::Mutex);
    let text = unsupported(&SharedMutex::<u64>::open(&path).unwrap_err(), 1);
    let quoted = format!("'{}/a b'\\''c'", dir.path().display());
    assert!(
        text.contains(&format!("`robust-mutex reset {quoted}`")),
        "{text}"
    );
}
