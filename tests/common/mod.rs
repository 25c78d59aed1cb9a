//! Shared test plumbing: child processes made by re-running the test binary.
//!
//! A test file defines `#[test] fn child_main()` that calls [`child_main`]
//! with its own role table. The parent spawns `current_exe --exact child_main`
//! with `RM_CHILD_ROLE` set; the child talks back with lines that start
//! `@@` on stdout (libtest's own lines are skipped) and reads commands from
//! stdin. Synchronisation is by these pipes only, never by sleeping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub const ROLE: &str = "RM_CHILD_ROLE";
pub const PATH: &str = "RM_CHILD_PATH";

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
        let mut cmd = Command::new(&exe);
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.args([
            "--exact",
            "child_main",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .env(PATH, path)
        .stdin(Stdio::piped())
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
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "child ended before saying {msg:?}");
            let l = line.trim_end();
            let l = l.strip_prefix("@@").unwrap_or(l);
            if l == msg {
                return String::new();
            }
            if let Some(rest) = l.strip_prefix(&format!("{msg}=")) {
                return rest.to_owned();
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

/// In a child: locks the mutex of the file at `path` through a private raw
/// mapping, then unmaps it while holding the lock and returns. When the
/// process exits, the kernel's robust-list walk faults on the unmapped entry
/// and gives up, so the lock word keeps naming a dead TID: a stuck lock.
pub fn lock_then_unmap(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = 4096;
    // SAFETY: maps a file we opened; checked for MAP_FAILED below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: offset 256 holds an initialised robust mutex (docs/design.md);
    // the mapping is live until the munmap right after.
    unsafe {
        let m = base.cast::<u8>().add(256).cast::<libc::pthread_mutex_t>();
        assert_eq!(libc::pthread_mutex_lock(m), 0);
        assert_eq!(libc::munmap(base, len), 0);
    }
}
