//! Worker processes: this binary re-executed as `__role kind path ...`, the
//! parent's handles on them ([`Kid`]) and on the contenders' files
//! ([`Keeper`]), and the line protocol between the two.

use crate::cases::crowd::crowd_child;
use crate::cases::handoff::pingpong;
use crate::cases::scale_files::scale_files_child;
use crate::cases::seed::seed_child;
use crate::contenders::{self, Lock, NamedSem, RawRobust, ShmFile};
use robust_mutex::SharedMutex;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// How long any "wait until the other side is blocked" may take before the
/// run is declared broken.
pub(crate) const BLOCK_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `$body` with `$l` bound to the contender `$kind`, opened at `$path`
/// by this process (its own handle, descriptor and mapping).
macro_rules! with_lock {
    (@spin $k:literal, $path:expr, |$l:ident| $body:expr) => {{
        let $l = $crate::contenders::Spin::<$k> {
            raw: $crate::contenders::RawRobust::open($path),
        };
        $body
    }};
    ($kind:expr, $path:expr, |$l:ident| $body:expr) => {
        match $kind {
            "ours" => {
                let $l = ::robust_mutex::SharedMutex::<u64>::open($path).expect("open SharedMutex");
                $body
            }
            "raw" => {
                let $l = $crate::contenders::RawRobust::open($path);
                $body
            }
            "flock" => {
                let $l = $crate::contenders::Flock {
                    shm: $crate::contenders::ShmFile::open($path),
                };
                $body
            }
            "ofd" => {
                let $l = $crate::contenders::OfdLock {
                    shm: $crate::contenders::ShmFile::open($path),
                };
                $body
            }
            "fcntl" => {
                let $l = $crate::contenders::PosixLock {
                    shm: $crate::contenders::ShmFile::open($path),
                };
                $body
            }
            "sem" => {
                let $l = $crate::contenders::NamedSem::open($path);
                $body
            }
            "replica8" => {
                let $l = $crate::contenders::Replica::<8> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "replica1" => {
                let $l = $crate::contenders::Replica::<1> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "replica2" => {
                let $l = $crate::contenders::Replica::<2> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "replica3" => {
                let $l = $crate::contenders::Replica::<3> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "replica4" => {
                let $l = $crate::contenders::Replica::<4> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "replica5" => {
                let $l = $crate::contenders::Replica::<5> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "v1" => {
                let $l = $crate::contenders::Replica::<6> {
                    raw: $crate::contenders::RawRobust::open($path),
                };
                $body
            }
            "v2" => {
                let $l =
                    $crate::contenders::V2Replica::new($crate::contenders::RawRobust::open($path));
                $body
            }
            "spin0" => with_lock!(@spin 0, $path, |$l| $body),
            "spin4" => with_lock!(@spin 4, $path, |$l| $body),
            "spin16" => with_lock!(@spin 16, $path, |$l| $body),
            "spin64" => with_lock!(@spin 64, $path, |$l| $body),
            "spin256" => with_lock!(@spin 256, $path, |$l| $body),
            k => panic!("unknown lock kind {k}"),
        }
    };
}
pub(crate) use with_lock;

/// Prints `ready`, then waits for the parent's `go` line; returns the rest
/// of that line.
pub(crate) fn ready_then_go() -> String {
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    assert!(line.starts_with("go"), "expected go, got {line:?}");
    line[2..].trim().to_owned()
}

pub(crate) fn child(args: &[String]) {
    let role = args[0].as_str();
    let kind = args[1].as_str();
    let path = PathBuf::from(&args[2]);
    let arg = |i: usize| -> u64 { args[i].parse().expect("a number") };
    match role {
        "__seed" => {
            let (n, out) = (arg(3) as usize, PathBuf::from(&args[4]));
            with_lock!(kind, &path, |l| seed_child(&l, n, &out))
        }
        "__pingpong" => {
            let ctl = ShmFile::open(Path::new(&args[3]));
            let parent = std::os::unix::process::parent_id();
            with_lock!(kind, &path, |l| {
                println!("ready");
                pingpong(&l, &ctl, false, arg(4), parent)
            })
        }
        "__hold" => with_lock!(kind, &path, |l| l.with(|_, _| {
            println!("ready");
            loop {
                // SAFETY: pause has no preconditions; we wait for SIGKILL.
                unsafe { libc::pause() };
            }
        })),
        "__crowd" => with_lock!(kind, &path, |l| crowd_child(&l)),
        "__files" => scale_files_child(arg(3) as usize, &path),
        r if r.starts_with("__cond") => crate::cases::cond::cond_child(args),
        "__asyncwait" => crate::cases::lock_async::async_child(args),
        _ => panic!("unknown role {role}"),
    }
}

pub(crate) struct Kid {
    pub(crate) child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Kid {
    pub(crate) fn spawn(args: &[&str]) -> Kid {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a child");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Kid {
            child,
            stdin,
            stdout,
        }
    }

    pub(crate) fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("child stdout");
        assert!(!s.is_empty(), "child exited early");
        s.trim().to_owned()
    }

    pub(crate) fn expect(&mut self, what: &str) {
        let l = self.line();
        assert_eq!(l, what, "unexpected line from child");
    }

    pub(crate) fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("child stdin");
        self.stdin.flush().expect("child stdin");
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait_ok(mut self) {
        let st = self.child.wait().expect("wait");
        assert!(st.success(), "child failed: {st}");
    }
}

/// The parent's handle on a contender's file: creates it, keeps it alive
/// (and the named semaphore linked), reads the final counter.
pub(crate) enum Keeper {
    Ours(SharedMutex<u64>),
    Raw(RawRobust),
    File(ShmFile),
    Sem(NamedSem),
}

impl Keeper {
    pub(crate) fn create(kind: &str, path: &Path) -> Keeper {
        match kind {
            "ours" => Keeper::Ours(SharedMutex::open(path).expect("create SharedMutex")),
            k if k == "raw"
                || k.starts_with("replica")
                || k.starts_with("spin")
                || k == "v1"
                || k == "v2" =>
            {
                Keeper::Raw(RawRobust::create(path))
            }
            "sem" => Keeper::Sem(NamedSem::create(path)),
            _ => Keeper::File(ShmFile::create(path, contenders::FILE_LEN)),
        }
    }

    /// The guarded counter, read when every child has exited.
    pub(crate) fn counter(&self) -> u64 {
        match self {
            Keeper::Ours(m) => m.with(|v, _| *v),
            Keeper::Raw(r) => r.shm.read_counter(),
            Keeper::File(f) => f.read_counter(),
            Keeper::Sem(s) => s.shm.read_counter(),
        }
    }
}

/// Voluntary context switches of this process so far (each futex sleep is one).
pub(crate) fn sleeps() -> u64 {
    // SAFETY: `ru` is a valid, writable rusage; getrusage only fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_nvcsw as u64
}
