//! Shared test plumbing: child processes made by re-running the test binary.
//!
//! Every test binary that includes this module has a
//! `#[test] fn child_main()` that calls [`roles::run_if_child`], where all
//! the roles a child can play are. The parent spawns
//! `current_exe --exact child_main` with `RM_CHILD_ROLE` set ([`Kid`],
//! [`child_command`]); the child talks back with lines that start `@@` on
//! stdout (libtest's own lines are skipped) and reads commands from stdin.
//! Synchronisation is by these pipes only, never by sleeping.
//!
//! Also here: [`torture`], the crash torture (run short by the mutex tests,
//! long by `examples/torture.rs`), and file snapshots.
#![allow(dead_code)]

pub mod roles;
pub mod roles_accidents;
pub mod roles_async;
pub mod roles_bytes;
pub mod roles_changed_underneath;
pub mod roles_clock;
pub mod roles_cond;
pub mod roles_file;
pub mod roles_hot;
pub mod roles_inspect;
pub mod roles_migrate;
pub mod roles_raw_edges;
pub mod small_fs;
pub mod torture;
pub mod v1;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub const ROLE: &str = "RM_CHILD_ROLE";
pub const PATH: &str = "RM_CHILD_PATH";

/// The test binary's arguments that make it run only `child_main`.
pub const CHILD_ARGS: [&str; 5] = [
    "--exact",
    "child_main",
    "--nocapture",
    "--test-threads=1",
    "-q",
];

/// The command that re-runs this test binary as a child playing `role` on
/// `path` (see [`roles`]).
pub fn child_command(role: &str, path: &Path) -> Command {
    child_command_at(&std::env::current_exe().unwrap(), role, path)
}

/// [`child_command`] with the test binary at `exe`.
fn child_command_at(exe: &Path, role: &str, path: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(CHILD_ARGS).env(ROLE, role).env(PATH, path);
    cmd
}

/// A child process running one role.
pub struct Kid {
    pub child: Child,
    out: BufReader<ChildStdout>,
    input: Option<ChildStdin>,
    /// A copy of the test binary for another user; removed with the Kid.
    _exe_dir: Option<tempfile::TempDir>,
}

impl Kid {
    /// Starts `role` on `path` with extra environment variables.
    pub fn spawn_env(role: &str, path: &Path, env: &[(&str, &str)]) -> Kid {
        Kid::spawn_as(role, path, env, None)
    }

    /// Starts `role` as another user: `(uid, gid)` set before exec.
    ///
    /// The test binary is run from a copy in a fresh world-readable
    /// directory, because the checkout it was built in may not be reachable
    /// by that user.
    pub fn spawn_as(
        role: &str,
        path: &Path,
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Kid {
        let mut exe = std::env::current_exe().unwrap();
        let mut exe_dir = None;
        if user.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let d = tempfile::tempdir().unwrap();
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let copy = d.path().join("test-child");
            std::fs::copy(&exe, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            exe = copy;
            exe_dir = Some(d);
        }
        let mut cmd = child_command_at(&exe, role, path);
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // A fresh copy can be briefly "busy": another test thread's fork may
        // still hold the copy's write descriptor until it execs.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.expect("spawn child"),
            }
        };
        let out = BufReader::new(child.stdout.take().unwrap());
        let input = child.stdin.take();
        Kid {
            child,
            out,
            input,
            _exe_dir: exe_dir,
        }
    }

    pub fn spawn(role: &str, path: &Path) -> Kid {
        Kid::spawn_env(role, path, &[])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one is `@@<msg>` (or exactly `<msg>`, for lines the
    /// library's debug hooks print). Returns the text after a `<msg>=` prefix
    /// if the line has one. Panics if the child ends first.
    pub fn expect(&mut self, msg: &str) -> String {
        match self.read_until(msg, false) {
            Ok(s) => s,
            Err(_) => panic!("child ended before saying {msg:?}"),
        }
    }

    /// As [`Kid::expect`], but a `paused:<step>` line first (the library's
    /// test hook stopped the child at `step`) gives `Err(Some(step))`, and
    /// the child's end `Err(None)`, for the caller to say what went wrong.
    pub fn expect_or_paused(&mut self, msg: &str) -> Result<String, Option<String>> {
        self.read_until(msg, true)
    }

    /// The lines up to `msg` (see [`Kid::expect_or_paused`]).
    fn read_until(&mut self, msg: &str, stop_at_pause: bool) -> Result<String, Option<String>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line).unwrap() == 0 {
                return Err(None);
            }
            let l = line.trim_end();
            let l = l.strip_prefix("@@").unwrap_or(l);
            if l == msg {
                return Ok(String::new());
            }
            if let Some(rest) = l.strip_prefix(&format!("{msg}=")) {
                return Ok(rest.to_owned());
            }
            if let Some(step) = l.strip_prefix("paused:").filter(|_| stop_at_pause) {
                return Err(Some(step.to_owned()));
            }
        }
    }

    /// Sends one line on the child's stdin.
    pub fn tell(&mut self, msg: &str) {
        let i = self.input.as_mut().unwrap();
        writeln!(i, "{msg}").unwrap();
        i.flush().unwrap();
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the child; asserts it exited 0.
    pub fn wait_ok(mut self) {
        drop(self.input.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "child failed: {st:?}");
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child: says `msg` to the parent.
pub fn say(msg: impl AsRef<str>) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "@@{}", msg.as_ref()).unwrap();
    o.flush().unwrap();
}

/// In a child: waits for one line from the parent (or EOF).
pub fn listen() -> String {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).unwrap();
    s.trim_end().to_owned()
}

/// In a child: blocks until killed.
pub fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

/// In a child: the role and path, if this process is a child.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE).ok()?;
    let path = PathBuf::from(std::env::var_os(PATH)?);
    Some((role, path))
}

/// A fresh temporary directory and a path inside it.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    (dir, p)
}

/// The permission bits of the file at `path` (with setuid, setgid, sticky).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// What a rejected file must keep: its bytes (the first MiB of a huge
/// file), mode, length and modification time.
#[derive(Debug, PartialEq, Eq)]
pub struct FileSnapshot {
    bytes: Vec<u8>,
    mode: u32,
    len: u64,
    mtime: (i64, i64),
}

/// Takes a [`FileSnapshot`], to prove a rejected file was left untouched.
pub fn snapshot(path: &Path) -> FileSnapshot {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).unwrap();
    let mut bytes = Vec::new();
    if md.is_file() {
        std::fs::File::open(path)
            .unwrap()
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .unwrap();
    }
    FileSnapshot {
        bytes,
        mode: md.mode(),
        len: md.len(),
        mtime: (md.mtime(), md.mtime_nsec()),
    }
}

/// Runs `f` in a `fork()` child of this test process and asserts that it
/// returned without panicking. The child leaves with `_exit` (no parent's
/// destructors run); `f` must only do what is safe in a fork child of a
/// multi-threaded process (the test harness's other threads are gone).
pub fn in_fork_child(f: impl FnOnce()) {
    // SAFETY: the child runs only `f` (the caller's contract above) and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
        // SAFETY: ends the child at once, running no parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the fork child failed: {status:#x}"
    );
}
