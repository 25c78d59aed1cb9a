//! pymutex interop: a Python peer making pymutex's ctypes calls
//! (`tests/pymutex_peer.py`) and Rust share one bare lock file, both ways,
//! with real SIGKILLs. Synchronised by the peers' stdout lines, never by
//! sleeping. Skipped, with the reason printed, where python3 is missing.

mod common;

use common::{Kid, child_role, hang, listen, say, snapshot, temp_path};
use robust_mutex::{
    BARE_SIZE, BareAcquired, BareMutex, CancelToken, Error, LockError, LockState, OpenOptions,
    SharedMutex,
};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const NOBODY: u32 = 65534;
/// Kernel futex ABI: somebody sleeps on the lock word.
const FUTEX_WAITERS: u32 = 0x8000_0000;

#[test]
fn child_main() {
    let Some((role, path)) = child_role() else {
        return;
    };
    match role.as_str() {
        "hold" => {
            let m = BareMutex::open(&path).unwrap();
            let g = m.lock().unwrap();
            say("locked");
            std::mem::forget(g);
            hang();
        }
        "open-wait" => {
            // Says "waiting" when the open starts waiting for a creator.
            log::set_logger(&WAIT_SAYER).unwrap();
            log::set_max_level(log::LevelFilter::Debug);
            let m = OpenOptions::new()
                .init_timeout(Duration::from_secs(60))
                .open_bare(&path)
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
                        drop(g.recover_with(|| {}));
                        say("locked");
                    }
                    Err(LockError::WouldBlock) => say("busy"),
                    Err(e) => say(format!("error {e}")),
                }
            }
        }
        "open-short" => {
            let r = OpenOptions::new()
                .init_timeout(Duration::from_millis(20))
                .open_bare(&path)
                .map(|m| {
                    let ok = matches!(m.try_lock(), Ok(BareAcquired::Clean(_)));
                    if ok { "ok" } else { "not-clean" }
                });
            match r {
                Ok(s) => say(format!("result={s}")),
                Err(e) => say(format!("result=error {e}")),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// A logger for the "open-wait" child.
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

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import ctypes, mmap; ctypes.CDLL('libc.so.6')"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with ctypes is not available");
    }
    ok.then_some("python3")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (a second user, or root's disregard of mode bits)");
    }
    root
}

/// A Python peer process: `tests/pymutex_peer.py COMMAND PATH ARGS...`.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
    input: ChildStdin,
}

impl Peer {
    fn start(py: &str, cmd: &str, path: &Path, args: &[&str]) -> Peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymutex_peer.py");
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

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn short_timeout() -> OpenOptions {
    OpenOptions::new()
        .init_timeout(Duration::from_millis(20))
        .clone()
}

#[test]
fn files_made_by_either_side_are_loaded_by_the_other() {
    let Some(py) = python() else { return };
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
    assert_eq!((mode(&ours), mode(&theirs)), (0o600, 0o600));

    let m = BareMutex::open(&theirs).unwrap();
    assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
    assert_eq!(Peer::run(py, "load", &ours, &[]), ["loaded"]);
    assert_eq!(Peer::run(py, "trylock", &ours, &[]), ["locked"]);
    assert_eq!(Peer::run(py, "lock", &ours, &[]), ["waiting", "locked"]);
    // And a header file is not something pymutex loads.
    let header = dir.path().join("header");
    SharedMutex::<u64>::open(&header).unwrap();
    assert_eq!(Peer::run(py, "load", &header, &[]), ["invalid"]);
}

#[test]
fn a_python_holder_blocks_us_and_its_death_reaches_us() {
    let Some(py) = python() else { return };
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
                Ok(BareAcquired::OwnerDied(r)) => drop(r.mark_consistent()),
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
    assert!(matches!(m.lock().unwrap(), BareAcquired::Clean(_)));
    assert_eq!(Peer::run(py, "trylock", &path, &[]), ["locked"]);
}

#[test]
fn our_holder_blocks_python_and_our_death_reaches_its_recovery_callback() {
    let Some(py) = python() else { return };
    let (_dir, path) = temp_path("py.lock");
    drop(BareMutex::open(&path).unwrap());
    let mut kid = Kid::spawn("hold", &path);
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
    assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
}

#[test]
fn an_abandoned_recovery_is_not_recoverable_on_either_side() {
    let Some(py) = python() else { return };
    // Rust gives up: pymutex sees ENOTRECOVERABLE (its InvalidSharedState).
    let (dir, path) = temp_path("a.lock");
    let m = BareMutex::open(&path).unwrap();
    let holder = Peer::start(py, "hold", &path, &[]);
    let mut holder = holder;
    assert_eq!(holder.line(), "locked");
    holder.kill();
    let BareAcquired::OwnerDied(r) = m.lock().unwrap() else {
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
    let mut kid = Kid::spawn("hold", &path);
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
fn a_live_pymutex_creator_is_waited_for_not_taken_over() {
    let Some(py) = python() else { return };
    let (_dir, path) = temp_path("py.lock");
    let mut creator = Peer::start(py, "create", &path, &["--pause-at", "opened", "--hold"]);
    assert_eq!(creator.line(), "opened");
    assert_eq!(
        (mode(&path), std::fs::metadata(&path).unwrap().len()),
        (0o400, 0)
    );
    let mut kid = Kid::spawn("open-wait", &path);
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
fn a_pymutex_creator_killed_mid_creation_is_taken_over() {
    let Some(py) = python() else { return };
    for stage in ["opened", "written"] {
        let (_dir, path) = temp_path("py.lock");
        let mut creator = Peer::start(py, "create", &path, &["--stop-at", stage]);
        assert_eq!(creator.line(), stage);
        creator.kill();
        assert_eq!(mode(&path), 0o400, "{stage}");
        let m = short_timeout().open_bare(&path).unwrap();
        assert_eq!(mode(&path), 0o600, "{stage}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), BARE_SIZE as u64);
        assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
        assert_eq!(Peer::run(py, "trylock", &path, &[]), ["locked"], "{stage}");
    }
    // Our own creator's leftovers: an empty or a zeroed 0400 file.
    for len in [0, BARE_SIZE] {
        let (_dir, path) = temp_path("rust.lock");
        std::fs::write(&path, vec![0u8; len]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        // A zero init timeout still takes over (after one more look).
        let m = OpenOptions::new()
            .init_timeout(Duration::ZERO)
            .mode(0o640)
            .open_bare(&path)
            .unwrap();
        assert_eq!(mode(&path), 0o640);
        assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
        assert_eq!(Peer::run(py, "trylock", &path, &[]), ["locked"]);
    }
}

#[test]
fn a_creator_stopped_before_its_chmod_keeps_a_root_pymutex_users_lock() {
    let Some(py) = python() else { return };
    if !is_root() {
        return;
    }
    let (_dir, path) = temp_path("py.lock");
    let mut creator = Peer::start(py, "create", &path, &["--stop-at", "written"]);
    assert_eq!(creator.line(), "written");
    // pymutex running as root ignores the 0400 mark and uses the file at once.
    let mut holder = Peer::start(py, "hold", &path, &[]);
    assert_eq!(holder.line(), "locked");
    creator.kill();
    // We finish the creator's job (chmod) without re-initialising the mutex.
    let m = short_timeout().open_bare(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    holder.kill();
    assert!(matches!(m.lock().unwrap(), BareAcquired::OwnerDied(_)));
}

#[test]
fn an_ordinary_user_takes_over_its_dead_creators_file() {
    let Some(py) = python() else { return };
    if !is_root() {
        return;
    }
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
        let mut k = Kid::spawn_as("open-short", path, &[], Some((NOBODY, NOBODY)));
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

#[test]
fn bad_bare_files_are_refused_untouched() {
    let (dir, path) = temp_path("bad");
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(Vec<u8>, u32, Expect)> = vec![
        (vec![], 0o600, |e| {
            matches!(e, Error::Truncated { len: 0, .. })
        }),
        (vec![0; 39], 0o600, |e| matches!(e, Error::Truncated { .. })),
        (vec![0; 41], 0o600, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
        (vec![0xAB; 40], 0o600, |e| {
            matches!(e, Error::Corrupt { .. })
        }),
        (vec![0; 40], 0o600, |e| matches!(e, Error::Corrupt { .. })),
        (vec![0; 40], 0o444, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
        // Read-only with the creator's mark but content no creator leaves:
        // refused at once, without waiting for the init timeout.
        (vec![0xAB; 40], 0o400, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
        (vec![0; 4096], 0o400, |e| {
            matches!(e, Error::ForeignFile { .. })
        }),
    ];
    for (bytes, perm, ok) in cases {
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm)).unwrap();
        let before = snapshot(&path);
        let e = BareMutex::open(&path).unwrap_err();
        assert!(ok(&e), "{} bytes, mode {perm:o}: {e}", bytes.len());
        assert_eq!(snapshot(&path), before);
    }
    // A garbage kind word in an otherwise plausible mutex.
    let good = dir.path().join("good");
    drop(BareMutex::open(&good).unwrap());
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[16] ^= 0x01; // __kind on 64-bit glibc: errorcheck becomes recursive
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let before = snapshot(&path);
    assert!(matches!(
        BareMutex::open(&path).unwrap_err(),
        Error::Corrupt { .. }
    ));
    assert_eq!(snapshot(&path), before);
    // Not regular files.
    assert!(matches!(
        BareMutex::open(dir.path()).unwrap_err(),
        Error::NotRegularFile { .. }
    ));
    // Symlinks are never followed, and their target is not touched.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let before = snapshot(&good);
    assert!(matches!(
        BareMutex::open(&link).unwrap_err(),
        Error::Symlink { .. }
    ));
    assert_eq!(snapshot(&good), before);
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        BareMutex::open(&dangling).unwrap_err(),
        Error::Symlink { .. }
    ));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn header_files_and_bare_files_are_told_apart() {
    let (dir, _) = temp_path("x");
    let header = dir.path().join("header");
    SharedMutex::<u64>::open(&header).unwrap();
    let before = snapshot(&header);
    assert!(matches!(
        BareMutex::open(&header).unwrap_err(),
        Error::ForeignFile { .. }
    ));
    assert_eq!(snapshot(&header), before);

    let bare = dir.path().join("bare");
    drop(BareMutex::open(&bare).unwrap());
    let before = snapshot(&bare);
    let e = SharedMutex::<u64>::open(&bare).unwrap_err();
    assert!(
        matches!(e, Error::ForeignFile { .. } | Error::Truncated { .. }),
        "{e}"
    );
    let e = OpenOptions::new().open_lock_only(&bare).unwrap_err();
    assert!(
        matches!(e, Error::ForeignFile { .. } | Error::Truncated { .. }),
        "{e}"
    );
    assert_eq!(snapshot(&bare), before);
}

#[test]
fn open_options_are_honoured() {
    let (dir, path) = temp_path("new.lock");
    assert!(matches!(
        OpenOptions::new().open_bare(&path).unwrap_err(),
        Error::NotFound { .. }
    ));
    let m = OpenOptions::new()
        .create_new(true)
        .mode(0o660)
        .open_bare(&path)
        .unwrap();
    assert_eq!(mode(&path), 0o660);
    assert!(matches!(
        BareMutex::open_with(&path, OpenOptions::new().create_new(true)).unwrap_err(),
        Error::AlreadyExists { .. }
    ));
    // A second handle in the process shares the mapping, hence the lock.
    let again = OpenOptions::new().open_bare(&path).unwrap();
    let g = m.try_lock().unwrap();
    assert!(matches!(again.try_lock(), Err(LockError::Deadlock)));
    drop(g);
    let other = dir.path().join("other.lock");
    for (opts, want) in [
        (OpenOptions::new().create(true).mode(0o400).clone(), "mode"),
        (
            OpenOptions::new().create(true).mode(0o10600).clone(),
            "mode",
        ),
        (
            OpenOptions::new().create(true).reentrant(true).clone(),
            "options",
        ),
        (
            OpenOptions::new().create(true).replace(true).clone(),
            "options",
        ),
    ] {
        let e = opts.open_bare(&other).unwrap_err();
        let got = match e {
            Error::InvalidMode { .. } => "mode",
            Error::InvalidOptions { .. } => "options",
            _ => "other",
        };
        assert_eq!(got, want, "{e}");
        assert!(!other.exists());
    }
}

#[test]
fn status_names_a_holder_on_any_thread() {
    let (_dir, path) = temp_path("t.lock");
    let m = BareMutex::open(&path).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // Owned by this closure: a failed assertion drops it, which ends
        // the holder thread instead of hanging the scope.
        let release_tx = release_tx;
        let m = &m;
        s.spawn(move || {
            let g = m.lock().unwrap().recover_with(|| {});
            // SAFETY: gettid has no preconditions.
            locked_tx.send(unsafe { libc::gettid() } as u32).unwrap();
            release_rx.recv().unwrap();
            drop(g);
        });
        let tid = locked_rx.recv().unwrap();
        let st = m.status();
        assert_eq!(st.state, LockState::Locked, "{st:?}");
        let owner = st.owner.unwrap();
        assert_eq!((owner.pid, owner.tid), (std::process::id(), tid));
        assert!(owner.is_alive());
        assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
        release_tx.send(()).unwrap();
    });
    assert_eq!(m.status().state, LockState::Unlocked);
}

/// With the real pymutex, where it is installed (it is not on PyPI; the
/// peer above makes the same calls).
#[test]
fn the_real_pymutex_shares_our_file() {
    let Some(py) = python() else { return };
    let have = Command::new(py)
        .args(["-c", "import pymutex"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("skipped: `import pymutex` fails (pymutex is not installed)");
        return;
    }
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
    let g = m.lock().unwrap().recover_with(|| {});
    assert_eq!(run(&path, "try"), "busy\n");
    drop(g);
    assert_eq!(run(&path, "try"), "locked\n");
    assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
    // Their file; our holder's death reaches their recovery callback.
    let theirs = dir.path().join("py.lock");
    assert_eq!(run(&theirs, "try"), "locked\n");
    assert_eq!(mode(&theirs), 0o600);
    let mut kid = Kid::spawn("hold", &theirs);
    kid.expect("locked");
    assert_eq!(run(&theirs, "try"), "busy\n");
    kid.kill();
    assert_eq!(run(&theirs, "lock"), "recovered\nlocked\n");
    let m = BareMutex::open(&theirs).unwrap();
    assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
}
