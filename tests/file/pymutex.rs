//! pymutex interop: a Python peer making pymutex's ctypes calls
//! (`tests/file/pymutex_peer.py`) and Rust share one bare lock file, both
//! ways, with real SIGKILLs. Synchronised by the peers' stdout lines, never
//! by sleeping. Ignored, with the reason, where python3 is missing (and the
//! tests that need root, where not built as root: see build.rs).
//! The bare file without a Python peer is tested in `bare.rs`.

use crate::common::{Kid, mode_of, temp_path};
use robust_mutex::{
    Acquired, BARE_SIZE, BareMutex, CancelToken, LockError, LockState, OpenOptions, SharedMutex,
};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;
/// Kernel futex ABI: somebody sleeps on the lock word.
const FUTEX_WAITERS: u32 = 0x8000_0000;

/// The Python interpreter. Where it does not run with ctypes, the tests that
/// need it are ignored (`no_python3`, set by build.rs).
const PY: &str = "python3";

/// A Python peer process: `tests/file/pymutex_peer.py COMMAND PATH ARGS...`.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
    input: ChildStdin,
}

impl Peer {
    fn start(py: &str, cmd: &str, path: &Path, args: &[&str]) -> Peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/file/pymutex_peer.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg(cmd)
            .arg(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let input = child.stdin.take().unwrap();
        Peer { child, out, input }
    }

    /// The next line the peer prints.
    fn line(&mut self) -> String {
        let mut s = String::new();
        assert!(
            self.out.read_line(&mut s).unwrap() > 0,
            "the Python peer ended early"
        );
        s.trim_end().to_owned()
    }

    fn tell(&mut self, msg: &str) {
        writeln!(self.input, "{msg}").unwrap();
        self.input.flush().unwrap();
    }

    /// SIGKILLs the peer and reaps it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Every line until the peer exits; asserts it exited 0.
    fn finish(mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut s = String::new();
        while self.out.read_line(&mut s).unwrap() > 0 {
            lines.push(s.trim_end().to_owned());
            s.clear();
        }
        assert!(
            self.child.wait().unwrap().success(),
            "peer failed: {lines:?}"
        );
        lines
    }

    fn run(py: &str, cmd: &str, path: &Path, args: &[&str]) -> Vec<String> {
        Peer::start(py, cmd, path, args).finish()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn short_timeout() -> OpenOptions {
    OpenOptions::new()
        .init_timeout(Duration::from_millis(20))
        .clone()
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
fn files_made_by_either_side_are_loaded_by_the_other() {
    let py = PY;
    let (dir, theirs) = temp_path("py.lock");
    assert_eq!(Peer::run(py, "create", &theirs, &[]), ["created"]);
    let ours = dir.path().join("rust.lock");
    drop(BareMutex::open(&ours).unwrap());
    // Byte for byte the same file, with the same mode and size.
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    assert_eq!(std::fs::read(&ours).unwrap().len(), BARE_SIZE);
    assert_eq!((mode_of(&ours), mode_of(&theirs)), (0o600, 0o600));

    let m = BareMutex::open(&theirs).unwrap();
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
    assert_eq!(Peer::run(py, "load", &ours, &[]), ["loaded"]);
    assert_eq!(Peer::run(py, "trylock", &ours, &[]), ["locked"]);
    assert_eq!(Peer::run(py, "lock", &ours, &[]), ["waiting", "locked"]);
    // And a header file is not something pymutex loads.
    let header = dir.path().join("header");
    SharedMutex::<u64>::open(&header).unwrap();
    assert_eq!(Peer::run(py, "load", &header, &[]), ["invalid"]);
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
fn a_python_holder_blocks_us_and_its_death_reaches_us() {
    let py = PY;
    let (_dir, path) = temp_path("py.lock");
    Peer::run(py, "create", &path, &[]);
    let m = BareMutex::open(&path).unwrap();
    let mut holder = Peer::start(py, "hold", &path, &[]);
    assert_eq!(holder.line(), "locked");
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(5)),
        Err(LockError::TimedOut)
    ));
    let s = m.status();
    assert_eq!(s.state, LockState::Locked);
    let owner = s.owner.unwrap();
    assert_eq!(
        (owner.pid, owner.tid),
        (holder.child.id(), holder.child.id())
    );
    assert!(owner.is_alive());

    // A waiter asleep in a cancellable wait is woken by the death.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            match m.lock_cancellable(&CancelToken::new(), None) {
                Ok(Acquired::OwnerDied(r)) => drop(r.mark_consistent()),
                other => panic!("the Python holder's death must be reported: {other:?}"),
            };
        });
        // Asleep: it set FUTEX_WAITERS in the lock word (glibc's protocol).
        while m.status().lock_word & FUTEX_WAITERS == 0 && !waiter.is_finished() {
            std::thread::yield_now();
        }
        holder.kill();
        waiter.join().unwrap();
    });
    assert_eq!(m.status().state, LockState::Unlocked);
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
    assert_eq!(Peer::run(py, "trylock", &path, &[]), ["locked"]);
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
fn our_holder_blocks_python_and_our_death_reaches_its_recovery_callback() {
    let py = PY;
    let (_dir, path) = temp_path("py.lock");
    drop(BareMutex::open(&path).unwrap());
    let mut kid = Kid::spawn("bare_hold", &path);
    kid.expect("locked");
    assert_eq!(Peer::run(py, "trylock", &path, &[]), ["busy"]);
    // pymutex's blocking lock waits for us...
    let mut waiter = Peer::start(py, "lock", &path, &[]);
    assert_eq!(waiter.line(), "waiting");
    let m = BareMutex::open(&path).unwrap();
    while m.status().lock_word & FUTEX_WAITERS == 0 && waiter.child.try_wait().unwrap().is_none() {
        std::thread::yield_now(); // until it sleeps in the kernel
    }
    // ...and our death reaches its recovery callback.
    kid.kill();
    assert_eq!(waiter.finish(), ["recovered", "locked"]);
    assert_eq!(
        Peer::run(py, "trylock", &path, &[]),
        ["locked"],
        "consistent again"
    );
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
fn an_abandoned_recovery_is_not_recoverable_on_either_side() {
    let py = PY;
    // Rust gives up: pymutex sees ENOTRECOVERABLE (its InvalidSharedState).
    let (dir, path) = temp_path("a.lock");
    let m = BareMutex::open(&path).unwrap();
    let holder = Peer::start(py, "hold", &path, &[]);
    let mut holder = holder;
    assert_eq!(holder.line(), "locked");
    holder.kill();
    let Acquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("owner death not reported");
    };
    drop(r);
    assert_eq!(m.status().state, LockState::NotRecoverable);
    assert_eq!(
        Peer::run(py, "lock", &path, &[]),
        ["waiting", "not-recoverable"]
    );
    assert!(matches!(m.try_lock(), Err(LockError::NotRecoverable)));

    // pymutex's callback returns False: Rust sees NotRecoverable.
    let path = dir.path().join("b.lock");
    drop(BareMutex::open(&path).unwrap());
    let mut kid = Kid::spawn("bare_hold", &path);
    kid.expect("locked");
    kid.kill();
    assert_eq!(
        Peer::run(py, "lock", &path, &["--refuse"]),
        ["waiting", "recovered", "refused"]
    );
    let m = BareMutex::open(&path).unwrap();
    assert!(matches!(m.lock(), Err(LockError::NotRecoverable)));
    assert_eq!(m.status().state, LockState::NotRecoverable);
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
fn a_live_pymutex_creator_is_waited_for_not_taken_over() {
    let py = PY;
    let (_dir, path) = temp_path("py.lock");
    let mut creator = Peer::start(py, "create", &path, &["--pause-at", "opened", "--hold"]);
    assert_eq!(creator.line(), "opened");
    assert_eq!(
        (mode_of(&path), std::fs::metadata(&path).unwrap().len()),
        (0o400, 0)
    );
    let mut kid = Kid::spawn("bare_open_wait", &path);
    kid.expect("waiting");
    creator.tell("go");
    assert_eq!(creator.line(), "created");
    assert_eq!(creator.line(), "locked");
    kid.expect("opened");
    // The creator's lock is in the mutex we mapped: nothing re-initialised it.
    kid.tell("try");
    kid.expect("busy");
    creator.tell("unlock");
    assert_eq!(creator.finish(), ["unlocked"]);
    kid.tell("try");
    kid.expect("locked");
    kid.wait_ok();
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
fn a_pymutex_creator_killed_mid_creation_is_taken_over() {
    let py = PY;
    for stage in ["opened", "written"] {
        let (_dir, path) = temp_path("py.lock");
        let mut creator = Peer::start(py, "create", &path, &["--stop-at", stage]);
        assert_eq!(creator.line(), stage);
        creator.kill();
        assert_eq!(mode_of(&path), 0o400, "{stage}");
        let m = robust_mutex::BareMutex::open_with(&path, &short_timeout()).unwrap();
        assert_eq!(mode_of(&path), 0o600, "{stage}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), BARE_SIZE as u64);
        assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
        assert_eq!(Peer::run(py, "trylock", &path, &[]), ["locked"], "{stage}");
    }
    // Our own creator's leftovers: an empty or a zeroed 0400 file.
    for len in [0, BARE_SIZE] {
        let (_dir, path) = temp_path("rust.lock");
        std::fs::write(&path, vec![0u8; len]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        // A zero init timeout still takes over (after one more look).
        let m = BareMutex::open_with(
            &path,
            OpenOptions::new().init_timeout(Duration::ZERO).mode(0o640),
        )
        .unwrap();
        assert_eq!(mode_of(&path), 0o640);
        assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
        assert_eq!(Peer::run(py, "trylock", &path, &[]), ["locked"]);
    }
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
#[cfg_attr(
    all(not(no_python3), not_root),
    ignore = "needs root (a second user, or root's disregard of mode bits)"
)]
fn a_creator_stopped_before_its_chmod_keeps_a_root_pymutex_users_lock() {
    let py = PY;
    let (_dir, path) = temp_path("py.lock");
    let mut creator = Peer::start(py, "create", &path, &["--stop-at", "written"]);
    assert_eq!(creator.line(), "written");
    // pymutex running as root ignores the 0400 mark and uses the file at once.
    let mut holder = Peer::start(py, "hold", &path, &[]);
    assert_eq!(holder.line(), "locked");
    creator.kill();
    // We finish the creator's job (chmod) without re-initialising the mutex.
    let m = robust_mutex::BareMutex::open_with(&path, &short_timeout()).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    holder.kill();
    assert!(matches!(m.lock().unwrap(), Acquired::OwnerDied(_)));
}

#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
#[cfg_attr(
    all(not(no_python3), not_root),
    ignore = "needs root (a second user, or root's disregard of mode bits)"
)]
fn an_ordinary_user_takes_over_its_dead_creators_file() {
    let py = PY;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let empty = dir.path().join("empty.lock");
    std::fs::write(&empty, b"").unwrap();
    let written = dir.path().join("written.lock");
    let mut creator = Peer::start(py, "create", &written, &["--stop-at", "written"]);
    assert_eq!(creator.line(), "written");
    creator.kill();
    for path in [&empty, &written] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        // Not root: open(O_RDWR) fails on 0400, yet it must take over.
        let mut k = Kid::spawn_as("bare_open_short", path, &[], Some((NOBODY, NOBODY)));
        assert_eq!(k.expect("result"), "ok", "{}", path.display());
        k.wait_ok();
        let md = std::fs::metadata(path).unwrap();
        assert_eq!(
            (md.uid(), md.mode() & 0o7777, md.len()),
            (NOBODY, 0o600, 40)
        );
        assert_eq!(Peer::run(py, "trylock", path, &[]), ["locked"]);
    }
}

/// With the real pymutex, where it is installed (it is not on PyPI; the
/// peer above makes the same calls).
#[test]
#[cfg_attr(no_python3, ignore = "python3 with ctypes not found")]
#[cfg_attr(
    all(not(no_python3), no_pymutex),
    ignore = "pymutex is not installed (it is not on PyPI)"
)]
fn the_real_pymutex_shares_our_file() {
    let py = PY;
    // ARGV: PATH try|lock. Creates the file if missing, the pymutex way.
    let script = "import pymutex, sys\n\
                  cb = lambda: print('recovered', flush=True) or True\n\
                  m = pymutex.SharedMutex(sys.argv[1], cb)\n\
                  ok = m.lock(blocking=sys.argv[2] == 'lock')\n\
                  print('locked' if ok else 'busy', flush=True)\n\
                  ok and m.unlock()\n";
    let run = |path: &Path, how: &str| {
        let out = Command::new(py)
            .args(["-c", script])
            .arg(path)
            .arg(how)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Our file, their lock calls.
    let (dir, path) = temp_path("rust.lock");
    let m = BareMutex::open(&path).unwrap();
    let g = m.lock().unwrap().recover_with(|_| {});
    assert_eq!(run(&path, "try"), "busy\n");
    drop(g);
    assert_eq!(run(&path, "try"), "locked\n");
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
    // Their file; our holder's death reaches their recovery callback.
    let theirs = dir.path().join("py.lock");
    assert_eq!(run(&theirs, "try"), "locked\n");
    assert_eq!(mode_of(&theirs), 0o600);
    let mut kid = Kid::spawn("bare_hold", &theirs);
    kid.expect("locked");
    assert_eq!(run(&theirs, "try"), "busy\n");
    kid.kill();
    assert_eq!(run(&theirs, "lock"), "recovered\nlocked\n");
    let m = BareMutex::open(&theirs).unwrap();
    assert!(matches!(m.try_lock().unwrap(), Acquired::Clean(_)));
}
