"""Shared helpers for the robust_mutex tests (the core API's, at the top;
other tests' fixtures may follow at the end).

Children are real processes running Python (`Child`): they talk to the test
over lines on their stdin/stdout, and they are killed with real signals.
Nothing waits for time to pass: every wait is for a line, an exit or a state
the test can see; WATCHDOG only turns a hang into a failure.
"""

import faulthandler
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import robust_mutex as rm

# Seconds before a wait that should end declares a hang. Never a pass
# condition: a slow machine only makes a test slower.
WATCHDOG = 60.0

# A poll interval (seconds) for states nobody announces (a thread asleep in
# the kernel): how often to look, not how long to wait.
POLL = 0.002

# How often (seconds) a signal is sent again while its answer does not come:
# a signal that lands between two sleeps of a wait (after its last look) is
# only noticed at the next one (docs/design.md, "Blocking").
PROD = 1.0

# The lock word's "somebody sleeps on it" bit (glibc's FUTEX_WAITERS).
FUTEX_WAITERS = 0x8000_0000

REPO = Path(__file__).resolve().parents[2]

# What every child's script starts with: the package, `path` (argv[1]), the
# two ends of the line protocol, and this directory on sys.path (for
# `from conftest import ...`).
PRELUDE = f"""\
import json, os, signal, struct, sys, threading
import robust_mutex as rm
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})

def say(word):
    sys.stdout.write(str(word) + "\\n")
    sys.stdout.flush()

def say_json(obj):
    say(json.dumps(obj))

def listen():
    return sys.stdin.readline().strip()

path = sys.argv[1]
"""


# The whole test's hang catcher (seconds), for a hang no Python code can
# see: a thread that waits holding the GIL stops every watchdog written in
# Python. faulthandler's C thread then prints every thread's traceback and
# ends the run (exit status 1).
TEST_WATCHDOG = 4 * WATCHDOG


@pytest.fixture(autouse=True)
def _hang_catcher():
    faulthandler.dump_traceback_later(TEST_WATCHDOG, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


class Child:
    """A Python child process running PRELUDE + `body` with argv[1:] = args.

    It says lines on its stdout (`say` in the child, `read`/`expect` here)
    and listens on its stdin (`listen` in the child, `say` here). Its stderr
    goes to a file, shown when a step fails."""

    def __init__(self, body, *args):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(body), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self._buf = b""

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def _fail(self, why):
        pytest.fail(f"child {self.pid}: {why}; its stderr:\n{self.stderr()}")

    def read(self, prod=None):
        """The child's next line (without the newline). `prod`, if given, is
        called every PROD seconds while the line does not come."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + WATCHDOG
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"said nothing in {WATCHDOG} s (hung?)")
            ready, _, _ = select.select([fd], [], [], left if prod is None else min(left, PROD))
            if not ready and prod is not None:
                prod()
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._fail(f"exited (status {self.proc.wait()}) before saying a line")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def read_json(self):
        return json.loads(self.read())

    def expect(self, word, prod=None):
        line = self.read(prod)
        if line != word:
            self._fail(f"said {line!r}, expected {word!r}")

    def say(self, word):
        self.proc.stdin.write(f"{word}\n".encode())
        self.proc.stdin.flush()

    def kill(self, sig=signal.SIGKILL):
        """Sends `sig`; for SIGKILL, also reaps the child."""
        os.kill(self.pid, sig)
        if sig == signal.SIGKILL:
            self.wait()

    def wait(self):
        try:
            return self.proc.wait(timeout=WATCHDOG)
        except subprocess.TimeoutExpired:
            self._fail(f"did not exit in {WATCHDOG} s")

    def finish(self):
        """Waits for a clean exit (status 0)."""
        status = self.wait()
        if status != 0:
            self._fail(f"exited with status {status}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            f.close()


@pytest.fixture
def child():
    """A factory of `Child`ren, each killed at teardown if still running."""
    made = []

    def spawn(body, *args):
        c = Child(body, *args)
        made.append(c)
        return c

    yield spawn
    for c in made:
        c.close()


@pytest.fixture
def lock_path(tmp_path):
    """A path (as str) for a lock file that does not exist yet."""
    return str(tmp_path / "test.lock")


def poll_until(predicate, what):
    """Polls `predicate()` until it is true; fails after WATCHDOG."""
    deadline = time.monotonic() + WATCHDOG
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen in {WATCHDOG} s")
        time.sleep(POLL)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# futex(2) and futex_waitv(2), for kernels whose wchan shows nothing useful.
_FUTEX_SYSCALLS = {"x86_64": {"202", "449"}, "aarch64": {"98", "449"}}


def sleeps_in_futex(pid, tid=None):
    """Whether thread `tid` (default: the main thread) of process `pid` is
    asleep (state S) in a futex wait."""
    task = f"/proc/{pid}/task/{tid or pid}"
    stat = _read(f"{task}/stat")
    if ") S " not in stat:
        return False
    if "futex" in _read(f"{task}/wchan"):
        return True
    nr = _read(f"{task}/syscall").split(" ", 1)[0]
    return nr in _FUTEX_SYSCALLS.get(os.uname().machine, set())


def lock_words(status):
    """The lock words of a status() dict: a mutex's, or a semaphore's slots'."""
    if "permits" in status:
        return [slot["lock_word"] for slot in status["permits"]["slots"]]
    return [status["lock_word"]]


def waiters_bit(status):
    """Whether a status() dict's lock word(s) say somebody sleeps on it."""
    return any((w or 0) & FUTEX_WAITERS for w in lock_words(status))


def holder_pids(status):
    """The pids holding a mutex or a semaphore's permits, per its status()."""
    if "permits" in status:
        return [slot["pid"] for slot in status["permits"]["slots"] if slot["pid"] is not None]
    return [status["owner"]["pid"]] if status["owner"] else []


# A child's way to take a lock of the kind named by argv[2]: `lock` is a
# SharedMutex or a Semaphore of one permit at `path`, `take()` its blocking
# lock()/acquire().
TAKE = """
if sys.argv[2] == "mutex":
    lock = rm.SharedMutex(path, 8)
    take = lock.lock
else:
    lock = rm.Semaphore(path, 1)
    take = lock.acquire
"""


def open_kind(kind, path):
    """The parent's side of TAKE: the lock and its blocking take."""
    if kind == "mutex":
        m = rm.SharedMutex(path, 8)
        return m, m.lock
    s = rm.Semaphore(path, 1)
    return s, s.acquire


def wait_for_sleeper(m, pid, tid=None):
    """Waits until thread `tid` of `pid` sleeps in the kernel on `m` (a mutex
    or semaphore): in a futex wait, with the waiters bit set in a lock word."""
    poll_until(
        lambda: sleeps_in_futex(pid, tid) and waiters_bit(m.status()),
        f"thread {tid or pid} of {pid} asleep on the lock",
    )


def run_thread(target, *args):
    """Runs `target(*args)` in a thread and returns what it returned, or
    re-raises what it raised."""
    out = {}

    def body():
        try:
            out["value"] = target(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join(WATCHDOG)
    assert not t.is_alive(), f"thread still running after {WATCHDOG} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def as_nobody(action):
    """Runs `action()` in a forked child that dropped to uid/gid 65534 and
    returns the name of the exception it raised, or "ok". Needs root."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                action()
                said = "ok"
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                said = f"{type(e).__name__}: {e}"
            os.write(w, said.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"nobody child failed: {said}"
    return said


@pytest.fixture
def open_dir():
    """A directory anyone may enter (for a child that drops privileges)."""
    d = tempfile.mkdtemp(prefix="rm-py-tests-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cli():
    """The `robust-mutex` binary: $ROBUST_MUTEX_CLI, or target/debug's, built
    with cargo if cargo is here (a no-op when it is fresh)."""
    given = os.environ.get("ROBUST_MUTEX_CLI")
    if given:
        return given
    binary = REPO / "target" / "debug" / "robust-mutex"
    cargo = shutil.which("cargo")
    if cargo:
        built = subprocess.run(
            [cargo, "build", "--quiet", "--bin", "robust-mutex"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0 and not binary.exists():
            pytest.skip(f"the robust-mutex CLI could not be built: {built.stderr[-2000:]}")
    if not binary.exists():
        pytest.skip(f"no robust-mutex CLI at {binary} and no cargo to build it (set ROBUST_MUTEX_CLI)")
    return str(binary)


def cli_status(cli, path):
    """`robust-mutex status --json PATH`, parsed."""
    out = subprocess.run([cli, "status", "--json", str(path)], capture_output=True, text=True, timeout=WATCHDOG)
    assert out.stdout, f"status --json printed nothing (exit {out.returncode}): {out.stderr}"
    return json.loads(out.stdout)


def u64(view, at=0):
    """The little-endian u64 at byte `at` of a buffer."""
    return int.from_bytes(bytes(view[at : at + 8]), "little")


def put_u64(view, at, n):
    view[at : at + 8] = n.to_bytes(8, "little")


# ---------------------------------------------------------------------------
# The pymutex drop-in and fork tests' helpers (test_pymutex*.py, test_fork*.py).
# ---------------------------------------------------------------------------


class ScriptChild(Child):
    """A Child running a script file: `python ARGS...` (with `env`), for
    scripts that run on their own (test_pymutex_kid.py, the pymutex peer)."""

    def __init__(self, args, env=None):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
        )
        self._buf = b""

    def lines(self):
        """Closes its stdin; every line it says until it exits; fails unless
        it exits 0."""
        try:
            out, _ = self.proc.communicate(timeout=WATCHDOG)
        except subprocess.TimeoutExpired:
            self._fail(f"did not exit in {WATCHDOG} s")
        if self.proc.returncode != 0:
            self._fail(f"exited with status {self.proc.returncode}")
        rest, self._buf = self._buf + out, b""
        return rest.decode().splitlines()


@pytest.fixture
def script_child():
    """A factory of ScriptChildren, each killed at teardown if still running."""
    made = []

    def spawn(args, env=None):
        made.append(ScriptChild(args, env))
        return made[-1]

    yield spawn
    for c in made:
        c.close()


def wait_for_bare_waiter(path, pid=None, tid=None):
    """Waits until somebody sleeps on the pymutex-format lock at `path`: the
    waiters bit in its lock word (rm.inspect reads a bare file), and, given
    `pid`, thread `tid` of `pid` asleep in a futex wait."""
    poll_until(
        lambda: (
            waiters_bit(rm.inspect(path)) and (pid is None or sleeps_in_futex(pid, tid))
        ),
        f"a waiter on {path}",
    )


class RecoveryCallback:
    """A pymutex recovery callback that counts its calls and returns (or
    raises) `result`."""

    def __init__(self, result=True):
        self.calls = 0
        self.result = result

    def __call__(self):
        self.calls += 1
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result
