//! Every role a child process plays, in one place for every test binary.
//!
//! A test starts a child with [`Kid::spawn`](super::Kid::spawn) (or builds
//! the command with [`child_command`](super::child_command)): the test binary
//! itself, re-run as `--exact child_main` with the role's name and a path in
//! its environment. Each test binary has one `child_main` test that calls
//! [`run_if_child`]: in a normal test run it returns at once, in a child it
//! plays the role. A child talks back with [`say`] (lines read by
//! [`Kid::expect`](super::Kid::expect)) and waits for the parent with
//! [`listen`]; roles that wait to be killed end in [`hang`]. Nothing is
//! synchronised by sleeping.
//!
//! The roles (each on the child's path):
//!
//! * `hold`: `SharedMutex<u64>`: locks (clean), writes [`HELD_VALUE`], labels
//!   the owner [`HELD_LABEL`], says `locked`, waits to be killed.
//! * `hold_until_told`: `SharedMutex<u64>`: locks, says `locked`; on a line
//!   from the parent unlocks, says `released`, waits to be killed.
//! * `increment`: `SharedMutex<[u64; 2]>`: on a line from the parent, 2000
//!   times: lock, check both halves are equal, increment them; says `done`.
//! * `lock_clean`: `SharedMutex<u64>`: asserts the lock is clean; says `ok`.
//! * `expect_not_recoverable`: `SharedMutex<u64>`: asserts `lock` and
//!   `try_lock` are `NotRecoverable`; says `ok`.
//! * `reopen`: `SharedMutex<u64>`: locks, recovers if need be; says
//!   `got=<owner died>,<value>`.
//! * `wait_through_reset`: `SharedMutex<u64>`: says `opened`, blocks in `lock`
//!   (on a stuck mutex that a reset will replace); says
//!   `got=<owner died>,<value>,<inode of the path>`.
//! * `open_foreign_ns`: `SharedMutex<u64>`, in another PID namespace: asserts
//!   `PidNamespaceMismatch`, then opens with `allow_foreign_pid_namespace`;
//!   says `ok`.
//! * `race`: `SharedMutex<u64>`: on a line from the parent, opens (creating),
//!   increments; says `ino=<inode>`.
//! * `create_paused`: `SharedMutex<u64>`: opens (creating), expected to stop at
//!   `ROBUST_MUTEX_TEST_PAUSE_AT` (debug builds; the library says
//!   `paused:<step>`) and be killed there; panics if it was not stopped.
//! * `open_and_report`: `SharedMutex<u64>`: opens (creating) and locks; says
//!   `result=ok <value>`, `result=permission`, `result=foreign-owner` or
//!   `result=other <error>`.
//! * `open_any_owner_and_report`: as `open_and_report`, with
//!   `allow_other_owners(true)`.
//! * `stuck`: raw mapping: locks the file's mutex, unmaps it while holding and
//!   exits: the kernel cannot mark the lock owner-dead (a stuck lock); says
//!   `unmapped`.
//! * `raw_owner_died`: raw mapping: `pthread_mutex_lock` past the library (no
//!   owner record written); says `locked=<errno>`, waits to be killed.
//! * `reentrant_nest3`: `ReentrantMutex<u64>`: nests three guards, writing 1,
//!   2, 3; says `depth=3`, waits to be killed.
//! * `reentrant_try`: `ReentrantMutex<u64>`: says `blocked` if `try_lock` is
//!   `WouldBlock`, else `got`.
//! * `sem_hold`: semaphore: takes a permit labelled `worker`; says
//!   `slot=<slot>`, waits to be killed.
//! * `sem_hold_all`: semaphore: one thread takes every permit; says `held=<n>`,
//!   waits to be killed.
//! * `sem_hold_until_told`: semaphore: takes a permit, says `slot=<slot>`; on a
//!   line from the parent releases it, says `released`, waits to be killed.
//! * `sem_wait`: semaphore: waits (up to [`LONG`]) for a permit; says
//!   `got=clean:<slot>` or `got=died:<pid of the dead holder>:<slot>`, waits to
//!   be killed.
//! * `sem_acquire_broken`: semaphore of 2 permits whose permit mutex has a
//!   foreign kind word: tries `try_acquire` and `acquire_timeout` if the open
//!   succeeds; must not abort.
//! * `bare_hold`: `BareMutex`: locks, says `locked`, waits to be killed.
//! * `bare_open_wait`: `BareMutex`: opens, saying `waiting` when the open
//!   starts waiting for a live creator, then `opened`; answers each `try` line
//!   with `locked`, `busy` or `error <e>`.
//! * `bare_open_short`: `BareMutex` with a 20 ms init timeout: says `result=ok`
//!   (clean `try_lock`), `result=not-clean` or `result=error <e>`.
//! * `torture`: a crash-torture worker (its identity is in the torture's own
//!   environment variables).
//!
//! * the read-only inspection roles of [`super::roles_inspect`]
//!   (`inspect_report`).
//! * the roles of [`super::roles_changed_underneath`] (`reset_report`, `remove_report`).
//! * the cached clock's roles of [`super::roles_clock`] (`clock_*`).
//! * the roles of [`super::roles_hot`] (`lock_cycles`, `sem_cycles`,
//!   `hold_labelled_then_relock`).
//! * the roles of [`super::roles_migrate`] (`raw_lock_at`, `raw_hold_at`,
//!   `convert_and_report`).
//! * the condition waits' roles of [`super::roles_cond`] (`cond_*`).
//! * the async roles of [`super::roles_async`] (`async_*`).
//! * the roles of [`super::roles_bytes`] (`bytes_*`, `kind_*`).
//!
//! Semaphore roles open the file with [`SEM_PERMITS`] permits unless
//! [`PERMITS_ENV`] says otherwise.

use super::{child_role, hang, listen, say, torture};
use robust_mutex::{
    Acquired, BareMutex, Error, LockError, OpenOptions, ReentrantMutex, SharedMutex,
    SharedSemaphore,
};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What `hold` writes into the value before it waits to be killed.
pub const HELD_VALUE: u64 = 42;
/// The owner label `hold` sets.
pub const HELD_LABEL: &str = "child-work";
/// The permit count of a semaphore role's file, unless [`PERMITS_ENV`] is set.
pub const SEM_PERMITS: usize = 3;
/// Overrides [`SEM_PERMITS`] for one child.
pub const PERMITS_ENV: &str = "RM_PERMITS";
/// Upper bound for anything that should happen at once (`sem_wait`'s wait).
pub const LONG: Duration = Duration::from_secs(10);

/// In a child, plays its role and returns; in a normal test run, returns at
/// once. Each test binary calls it from its `child_main` test.
pub fn run_if_child() {
    let Some((role, path)) = child_role() else {
        return;
    };
    let path = path.as_path();
    match role.as_str() {
        "hold" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let Acquired::Clean(mut g) = m.lock().unwrap() else {
                panic!("hold: expected a clean lock");
            };
            *g = HELD_VALUE;
            g.set_label(HELD_LABEL).unwrap();
            say("locked");
            hang();
        }
        "hold_until_told" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let g = m.lock_or_recover(|_| {}).unwrap();
            say("locked");
            listen();
            drop(g);
            say("released");
            hang();
        }
        // A lost update or an overlap shows up as a wrong total or unequal
        // halves.
        "increment" => {
            let m = SharedMutex::<[u64; 2]>::open(path).unwrap();
            listen();
            for _ in 0..2000 {
                let mut g = m.lock_or_recover(|_| {}).unwrap();
                assert_eq!(g[0], g[1], "mutual exclusion violated");
                g[0] += 1;
                std::hint::black_box(&mut *g);
                g[1] += 1;
            }
            say("done");
        }
        "lock_clean" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let g = m.lock().unwrap();
            assert!(matches!(g, Acquired::Clean(_)), "expected a clean lock");
            say("ok");
        }
        "expect_not_recoverable" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
            assert!(matches!(m.try_lock(), Err(LockError::NotRecoverable)));
            say("ok");
        }
        "reopen" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            let a = m.lock().unwrap();
            say(format!(
                "got={},{}",
                a.owner_died(),
                *a.recover_with(|_| {})
            ));
        }
        // Blocks in lock() on a stuck mutex; a reset must get it out, holding
        // the new mutex.
        "wait_through_reset" => {
            let m = SharedMutex::<u64>::open(path).unwrap();
            say("opened");
            let a = m.lock().unwrap();
            let died = a.owner_died();
            let g = a.recover_with(|_| {});
            let ino = std::fs::metadata(path).unwrap().ino();
            say(format!("got={died},{},{}", *g, ino));
        }
        "open_foreign_ns" => {
            let e = SharedMutex::<u64>::open(path).unwrap_err();
            assert!(matches!(e, Error::PidNamespaceMismatch { .. }), "{e}");
            let m = OpenOptions::new()
                .allow_foreign_pid_namespace(true)
                .open::<u64>(path)
                .unwrap();
            drop(m.lock_or_recover(|_| {}).unwrap());
            say("ok");
        }
        "race" => {
            listen();
            let m = SharedMutex::<u64>::open(path).unwrap();
            *m.lock_or_recover(|_| {}).unwrap() += 1;
            say(format!("ino={}", std::fs::metadata(path).unwrap().ino()));
        }
        // ROBUST_MUTEX_TEST_PAUSE_AT makes the creator stop at that step.
        "create_paused" => {
            let _ = SharedMutex::<u64>::open(path);
            panic!("the pause hook did not stop the creator");
        }
        "open_and_report" => {
            report(SharedMutex::<u64>::open(path).map(|m| *m.lock_or_recover(|_| {}).unwrap()))
        }
        "open_any_owner_and_report" => report(
            OpenOptions::new()
                .allow_other_owners(true)
                .open::<u64>(path)
                .map(|m| *m.lock_or_recover(|_| {}).unwrap()),
        ),
        "stuck" => {
            lock_then_unmap(path);
            say("unmapped");
        }
        "raw_owner_died" => {
            say(format!("locked={}", raw_lock(path, 256).0));
            hang();
        }
        "reentrant_nest3" => {
            let m = ReentrantMutex::<u64>::open(path).unwrap();
            let a = m.lock().unwrap().recover_with(|_| {});
            a.set(1);
            let b = m.lock().unwrap().recover_with(|_| {});
            b.set(2);
            let c = m.lock().unwrap().recover_with(|_| {});
            c.set(3);
            say(format!("depth={}", c.depth()));
            hang();
        }
        "reentrant_try" => {
            let m = ReentrantMutex::<u64>::open(path).unwrap();
            let r = m.try_lock();
            say(if matches!(r, Err(LockError::WouldBlock)) {
                "blocked"
            } else {
                "got"
            });
        }
        "sem_hold" => {
            let sem = semaphore(path);
            let mut p = sem.acquire().unwrap().recover_with(|_| {});
            p.set_label("worker").unwrap();
            say(format!("slot={}", p.slot()));
            hang();
        }
        "sem_hold_all" => {
            let sem = semaphore(path);
            let held: Vec<_> = (0..sem.permits())
                .map(|_| sem.try_acquire().unwrap().recover_with(|_| {}))
                .collect();
            say(format!("held={}", held.len()));
            hang();
        }
        "sem_hold_until_told" => {
            let sem = semaphore(path);
            let p = sem.acquire().unwrap().recover_with(|_| {});
            say(format!("slot={}", p.slot()));
            listen();
            drop(p);
            say("released");
            hang();
        }
        "sem_wait" => {
            let sem = semaphore(path);
            let p = sem.acquire_timeout(LONG).unwrap();
            let how = match &p {
                Acquired::Clean(_) => "clean".to_owned(),
                Acquired::OwnerDied(r) => format!("died:{}", r.previous_owner().unwrap().pid),
            };
            let g = p.recover_with(|_| {});
            say(format!("got={how}:{}", g.slot()));
            hang();
        }
        "sem_acquire_broken" => {
            let mut opts = OpenOptions::new();
            opts.create(true).init_timeout(Duration::from_millis(50));
            if let Ok(s) = SharedSemaphore::open_with(path, 2, &opts) {
                drop(s.try_acquire());
                drop(s.acquire_timeout(Duration::from_millis(1)));
            }
        }
        "bare_hold" => {
            let m = BareMutex::open(path).unwrap();
            let g = m.lock().unwrap();
            say("locked");
            std::mem::forget(g);
            hang();
        }
        "bare_open_wait" => bare_open_wait(path),
        "bare_open_short" => {
            let r = BareMutex::open_with(
                path,
                OpenOptions::new().init_timeout(Duration::from_millis(20)),
            )
            .map(|m| {
                let ok = matches!(m.try_lock(), Ok(Acquired::Clean(_)));
                if ok { "ok" } else { "not-clean" }
            });
            match r {
                Ok(s) => say(format!("result={s}")),
                Err(e) => say(format!("result=error {e}")),
            }
        }
        "torture" => {
            torture::worker_if_asked();
            panic!("a torture child without its worker environment");
        }
        other if super::roles_file::run(other, path) => {}
        other if super::roles_inspect::run(other, path) => {}
        other if super::roles_accidents::play(other, path) => {}
        other if super::roles_raw_edges::play(other, path) => {}
        other if super::roles_clock::play(other, path) => {}
        other if super::roles_changed_underneath::run(other, path) => {}
        other if super::roles_hot::play(other, path) => {}
        other if super::roles_migrate::run(other, path) => {}
        other if super::roles_cond::play(other, path) => {}
        other if super::roles_async::play(other, path) => {}
        other if super::roles_bytes::play(other, path) => {}
        other => panic!("unknown role {other}"),
    }
}

/// The `*_and_report` roles' answer.
fn report(result: Result<u64, Error>) {
    match result {
        Ok(v) => say(format!("result=ok {v}")),
        Err(Error::PermissionDenied { .. }) => say("result=permission"),
        Err(Error::ForeignOwner { .. }) => say("result=foreign-owner"),
        Err(e) => say(format!("result=other {e}")),
    }
}

/// The semaphore roles' file: [`SEM_PERMITS`] permits unless [`PERMITS_ENV`]
/// says otherwise.
fn semaphore(path: &Path) -> SharedSemaphore {
    let permits = std::env::var(PERMITS_ENV).map_or(SEM_PERMITS, |s| s.parse().unwrap());
    SharedSemaphore::open(path, permits).unwrap()
}

fn bare_open_wait(path: &Path) {
    // Says "waiting" when the open starts waiting for a creator.
    log::set_logger(&WAIT_SAYER).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let m = BareMutex::open_with(
        path,
        OpenOptions::new().init_timeout(Duration::from_secs(60)),
    )
    .unwrap();
    if !WAITED.load(Ordering::SeqCst) {
        // It must have waited: fail the parent, never hang it.
        say("waiting");
        say("opened-without-waiting");
        return;
    }
    say("opened");
    while listen() == "try" {
        match m.try_lock() {
            Ok(g) => {
                drop(g.recover_with(|_| {}));
                say("locked");
            }
            Err(LockError::WouldBlock) => say("busy"),
            Err(e) => say(format!("error {e}")),
        }
    }
}

/// The logger of the `bare_open_wait` child.
struct WaitSayer;

impl log::Log for WaitSayer {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.args().to_string().contains("waiting up to") && !WAITED.swap(true, Ordering::SeqCst) {
            say("waiting");
        }
    }
    fn flush(&self) {}
}

static WAIT_SAYER: WaitSayer = WaitSayer;
static WAITED: AtomicBool = AtomicBool::new(false);

/// Maps the first page of the mutex file at `path` privately to this
/// process (read-write, shared), past the library.
pub fn raw_map(path: &Path) -> *mut libc::c_void {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: maps a file we opened; checked for MAP_FAILED below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    base
}

/// Locks the mutex of the file at `path` through a raw mapping, then unmaps
/// it while holding the lock and returns. When the process exits, the
/// kernel's robust-list walk faults on the unmapped entry and gives up, so
/// the lock word keeps naming a dead TID: a stuck lock.
fn lock_then_unmap(path: &Path) {
    let base = raw_map(path);
    // SAFETY: offset 256 holds an initialised robust mutex (docs/design.md);
    // the mapping is live until the munmap right after.
    unsafe {
        let m = base.cast::<u8>().add(256).cast::<libc::pthread_mutex_t>();
        assert_eq!(libc::pthread_mutex_lock(m), 0);
        assert_eq!(libc::munmap(base, 4096), 0);
    }
}

/// Locks the file's mutex at byte `offset` (256: the main one) with plain
/// `pthread_mutex_lock` through a raw mapping, bypassing the library;
/// returns the error number (0, EOWNERDEAD) and the mutex.
/// The state of a process killed inside `SharedMutex::lock` right after
/// `pthread_mutex_lock` returned EOWNERDEAD and before the library wrote its
/// owner record: the lock is ours (the kernel knows, the robust list has it),
/// the record is untouched. The mapping is never unmapped: the process hangs
/// until killed.
pub fn raw_lock(path: &Path, offset: usize) -> (i32, *mut libc::pthread_mutex_t) {
    assert!(offset + 64 <= 4096, "raw_map maps one page");
    let m = raw_map(path).cast::<u8>().wrapping_add(offset).cast();
    // SAFETY: the caller names the offset of an initialised robust,
    // process-shared mutex of the file (256: the main one, docs/design.md),
    // inside the live one-page mapping, which is never unmapped.
    (unsafe { libc::pthread_mutex_lock(m) }, m)
}
