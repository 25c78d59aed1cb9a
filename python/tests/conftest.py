# ---------------------------------------------------------------------------
# Fixtures of the pymutex drop-in and fork tests (test_pymutex*.py,
# test_fork*.py), kept at the end of this file (its top is the core tests').
# ---------------------------------------------------------------------------
import os as _os
import select as _select
import signal as _signal
import subprocess as _subprocess
import sys as _sys
import threading as _threading
import time as _time

import pytest as _pytest

#: Seconds before a wait that never ends fails the test: a hang watchdog
#: only (every wait ends on an event), so a slow machine fails nothing.
COMPAT_WATCHDOG = 60.0

#: futex(2) and futex_waitv(2): the system calls a lock waiter sleeps in.
_FUTEX_CALLS = {"x86_64": ("202", "449"), "aarch64": ("98", "449")}.get(
    _os.uname().machine, ()
)


class Kid:
    """A Python child process that speaks lines: it prints them on stdout and
    reads commands on stdin."""

    def __init__(self, args, env=None):
        self.proc = _subprocess.Popen(
            [_sys.executable, *args],
            stdin=_subprocess.PIPE,
            stdout=_subprocess.PIPE,
            env=env,
        )
        self._buf = b""

    @property
    def pid(self):
        return self.proc.pid

    def _next(self):
        """The next line, or None once the child closed its stdout."""
        deadline = _time.monotonic() + COMPAT_WATCHDOG
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - _time.monotonic()
            assert left > 0, f"child {self.pid}: no line in {COMPAT_WATCHDOG} s (hung)"
            if _select.select([fd], [], [], left)[0]:
                chunk = _os.read(fd, 4096)
                if not chunk:
                    return None
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def line(self):
        """The next line the child prints; fails if it ends first."""
        line = self._next()
        assert line is not None, (
            f"child {self.pid} ended early (exit {self.proc.wait()})"
        )
        return line

    def expect(self, want):
        got = self.line()
        assert got == want, f"child {self.pid} said {got!r}, expected {want!r}"

    def tell(self, msg):
        self.proc.stdin.write(msg.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self):
        """SIGKILL, then reap."""
        self.proc.send_signal(_signal.SIGKILL)
        self.proc.wait(COMPAT_WATCHDOG)

    def finish(self):
        """Closes its stdin; returns every line until it exits; asserts exit 0."""
        self.proc.stdin.close()
        lines = []
        while (line := self._next()) is not None:
            lines.append(line)
        assert self.proc.wait(COMPAT_WATCHDOG) == 0, (
            f"child {self.pid} failed after {lines}"
        )
        return lines


@_pytest.fixture
def kids():
    """kids(args, env=None) -> Kid: starts `python ARGS`; killed at teardown."""
    started = []

    def start(args, env=None):
        started.append(Kid(args, env))
        return started[-1]

    yield start
    for k in started:
        if k.proc.poll() is None:
            k.proc.kill()
        k.proc.wait()
        for f in (k.proc.stdin, k.proc.stdout):
            if not f.closed:
                f.close()


def _in_futex(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            return f.read().split()[0] in _FUTEX_CALLS
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@_pytest.fixture
def asleep():
    """asleep(pid, tid): returns once that thread sleeps in a futex wait
    (/proc/PID/task/TID/syscall, polled); fails after the watchdog."""

    def wait(pid, tid):
        deadline = _time.monotonic() + COMPAT_WATCHDOG
        while not _in_futex(pid, tid):
            assert _time.monotonic() < deadline, f"thread {tid} of {pid} never slept"
            _os.sched_yield()

    return wait


@_pytest.fixture
def bare_waiter():
    """bare_waiter(path): returns once a waiter sleeps (or is about to) on the
    pymutex-format lock at `path`: it set FUTEX_WAITERS (kernel futex ABI)
    in the lock word, glibc's first int, read from the file itself."""

    def wait(path):
        deadline = _time.monotonic() + COMPAT_WATCHDOG
        while True:
            with open(path, "rb") as f:
                if int.from_bytes(f.read(4), _sys.byteorder) & 0x8000_0000:
                    return
            assert _time.monotonic() < deadline, f"nobody ever waited on {path}"
            _os.sched_yield()

    return wait


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


@_pytest.fixture
def recovery():
    """recovery(result=True) -> a counting pymutex recovery callback."""
    return RecoveryCallback


def _in_thread(fn):
    out = []

    def run():
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out.append(e)

    t = _threading.Thread(target=run)
    t.start()
    t.join(COMPAT_WATCHDOG)
    assert out, "the thread hung"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


@_pytest.fixture
def in_thread():
    """in_thread(fn): runs fn in a new thread; returns or raises what it did."""
    return _in_thread
