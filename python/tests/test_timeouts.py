"""Waiting that gives up: lock(timeout) raises TimedOut (a TimeoutError),
try_lock raises WouldBlock (a BlockingIOError, errno EAGAIN). Only the
exception types are checked, never how long anything took."""

import errno
import threading

import pytest

import robust_mutex as rm
from conftest import WATCHDOG


class HeldByThread:
    """`m` held by another thread of this process until the block ends."""

    def __init__(self, m):
        self.m = m
        self.held = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._hold)

    def _hold(self):
        with self.m.lock():
            self.held.set()
            self.release.wait(WATCHDOG)

    def __enter__(self):
        self.thread.start()
        assert self.held.wait(WATCHDOG)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(WATCHDOG)
        assert not self.thread.is_alive()


def test_lock_timeout_on_a_held_lock_raises_timed_out(lock_path):
    m = rm.SharedMutex(lock_path)
    with HeldByThread(m):
        with pytest.raises(rm.TimedOut) as e:
            m.lock(timeout=0.05)
        assert isinstance(e.value, TimeoutError)
        assert isinstance(e.value, rm.Error)
        with pytest.raises(TimeoutError):
            m.lock(timeout=0)
    # Nothing was left behind: free and clean.
    with m.lock(timeout=WATCHDOG) as g:
        assert not g.owner_died


def test_try_lock_on_a_held_lock_raises_would_block(lock_path, child):
    m = rm.SharedMutex(lock_path)
    with HeldByThread(m):
        with pytest.raises(rm.WouldBlock) as e:
            m.try_lock()
        assert isinstance(e.value, BlockingIOError)
        assert isinstance(e.value, rm.Error)
        assert e.value.errno == errno.EAGAIN

        # The same from another process.
        c = child(
            """
            m = rm.SharedMutex(path)
            for attempt in (m.try_lock, lambda: m.lock(timeout=0.05)):
                try:
                    attempt()
                    say("acquired?!")
                except (rm.WouldBlock, rm.TimedOut) as e:
                    say(type(e).__name__)
            """,
            lock_path,
        )
        c.expect("WouldBlock")
        c.expect("TimedOut")
        c.finish()
    with m.try_lock() as g:
        assert not g.owner_died


def test_lock_with_a_timeout_on_a_free_lock_acquires(lock_path):
    m = rm.SharedMutex(lock_path)
    with m.lock(timeout=0.05) as g:
        assert g.held
    with m.lock(timeout=0) as g:
        assert g.held
    with m.try_lock() as g:
        assert g.held
