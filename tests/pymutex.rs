//! pymutex interop: a Python peer making pymutex's ctypes calls and Rust
//! share one bare lock file, both ways, with real SIGKILLs.

mod common;

use common::{Kid, child_role, hang, say, snapshot, temp_path};
use robust_mutex::{BareAcquired, BareMutex, Error, LockError, LockState, SharedMutex};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

#[test]
fn child_main() {
    let Some((role, path)) = child_role() else {
        return;
    };
    assert_eq!(role, "hold");
    let m = BareMutex::open(&path).unwrap();
    let g = m.lock().unwrap();
    say("locked");
    std::mem::forget(g);
    hang();
}

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import ctypes, mmap")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with ctypes is not available");
    }
    ok.then_some("python3")
}

struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn start(py: &str, cmd: &str, path: &Path) -> Peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymutex_peer.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg(cmd)
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer { child, out }
    }
    fn line(&mut self) -> String {
        let mut s = String::new();
        assert!(
            self.out.read_line(&mut s).unwrap() > 0,
            "the Python peer ended early"
        );
        s.trim_end().to_owned()
    }
    fn run(py: &str, cmd: &str, path: &Path) -> Vec<String> {
        let mut p = Peer::start(py, cmd, path);
        let mut lines = Vec::new();
        let mut s = String::new();
        while p.out.read_line(&mut s).unwrap() > 0 {
            lines.push(s.trim_end().to_owned());
            s.clear();
        }
        assert!(p.child.wait().unwrap().success());
        lines
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn files_made_by_either_side_are_loaded_by_the_other() {
    let Some(py) = python() else { return };
    let (dir, path) = temp_path("py.lock");
    assert_eq!(Peer::run(py, "create", &path), ["created"]);
    let m = BareMutex::open(&path).unwrap();
    assert!(matches!(m.try_lock().unwrap(), BareAcquired::Clean(_)));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 40);

    let ours = dir.path().join("rust.lock");
    drop(BareMutex::open(&ours).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ours).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(Peer::run(py, "trylock", &ours), ["locked"]);
}

#[test]
fn a_python_holder_blocks_us_and_its_death_reaches_us() {
    let Some(py) = python() else { return };
    let (_dir, path) = temp_path("py.lock");
    Peer::run(py, "create", &path);
    let m = BareMutex::open(&path).unwrap();
    let mut holder = Peer::start(py, "hold", &path);
    assert_eq!(holder.line(), "locked");
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    let s = m.status();
    assert_eq!(s.state, LockState::Locked);
    assert_eq!(s.owner.unwrap().pid, holder.child.id());

    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    assert_eq!(m.status().state, LockState::OwnerDead);
    let BareAcquired::OwnerDied(r) = m.lock().unwrap() else {
        panic!("the Python holder's death must be reported");
    };
    drop(r.mark_consistent());
    assert!(matches!(m.lock().unwrap(), BareAcquired::Clean(_)));
}

#[test]
fn our_holder_blocks_python_and_our_death_reaches_its_recovery_callback() {
    let Some(py) = python() else { return };
    let (_dir, path) = temp_path("py.lock");
    drop(BareMutex::open(&path).unwrap());
    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    assert_eq!(Peer::run(py, "trylock", &path), ["busy"]);
    kid.kill();
    assert_eq!(Peer::run(py, "lock", &path), ["recovered", "locked"]);
    assert_eq!(
        Peer::run(py, "trylock", &path),
        ["locked"],
        "consistent again"
    );
}

#[test]
fn bad_bare_files_are_refused_untouched() {
    let (dir, path) = temp_path("bad");
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (vec![0; 39], |e| matches!(e, Error::Truncated { .. })),
        (vec![0; 41], |e| matches!(e, Error::ForeignFile { .. })),
        (vec![0xAB; 40], |e| matches!(e, Error::Corrupt { .. })),
        (vec![0; 40], |e| matches!(e, Error::Corrupt { .. })),
    ];
    for (bytes, ok) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let before = snapshot(&path);
        let e = BareMutex::open(&path).unwrap_err();
        assert!(ok(&e), "{} bytes: {e}", bytes.len());
        assert_eq!(snapshot(&path), before);
    }
    // A header file is not a bare file, and a bare file is not a header file.
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
    assert_eq!(snapshot(&bare), before);
    // Symlinks are never followed.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&bare, &link).unwrap();
    assert!(matches!(
        BareMutex::open(&link).unwrap_err(),
        Error::Symlink { .. }
    ));
}
