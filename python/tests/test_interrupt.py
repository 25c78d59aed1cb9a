"""Ctrl-C interrupts a blocked lock() with KeyboardInterrupt and leaves the
lock untouched: still its holder's, counters unchanged, usable after."""

import os
import signal

import robust_mutex as rm
from conftest import wait_for_sleeper

BLOCK_THEN_RETRY = """
signal.signal(signal.SIGINT, signal.default_int_handler)
m = rm.SharedMutex(path)
say("locking")
try:
    m.lock()
    say("acquired?!")
except KeyboardInterrupt:
    say("interrupted")
listen()
with m.lock() as g:
    say_json({"owner_died": g.owner_died})
"""


def test_ctrl_c_interrupts_a_blocked_lock_and_leaves_the_lock_alone(lock_path, child):
    m = rm.SharedMutex(lock_path)
    g = m.lock()
    c = child(BLOCK_THEN_RETRY, lock_path)
    c.expect("locking")
    wait_for_sleeper(m, c.pid)
    before = m.status()

    os.kill(c.pid, signal.SIGINT)
    c.expect("interrupted")

    after = m.status()
    assert after["owner"]["pid"] == os.getpid()
    assert after["state"] == before["state"]
    assert after["counters"] == before["counters"]
    assert g.held and g.consistent

    g.unlock()
    c.say("again")
    assert c.read_json() == {"owner_died": False}
    c.finish()


def test_other_signal_handlers_run_and_the_wait_goes_on(lock_path, child):
    # A handler that returns: the wait resumes and gets the lock.
    c = child(
        """
        signal.signal(signal.SIGUSR1, lambda *_: say("handled"))
        m = rm.SharedMutex(path)
        say("locking")
        with m.lock() as g:
            say_json({"owner_died": g.owner_died})
        """,
        lock_path,
    )
    m = rm.SharedMutex(lock_path)
    g = m.lock()
    c.expect("locking")
    wait_for_sleeper(m, c.pid)
    os.kill(c.pid, signal.SIGUSR1)
    c.expect("handled")
    assert m.status()["owner"]["pid"] == os.getpid()
    g.unlock()
    assert c.read_json() == {"owner_died": False}
    c.finish()


def test_a_handler_that_raises_ends_the_wait_with_its_exception(lock_path, child):
    c = child(
        """
        class Stop(Exception):
            pass
        def stop(*_):
            raise Stop()
        signal.signal(signal.SIGUSR1, stop)
        m = rm.SharedMutex(path)
        say("locking")
        try:
            m.lock()
            say("acquired?!")
        except Stop:
            say("stopped")
        """,
        lock_path,
    )
    m = rm.SharedMutex(lock_path)
    with m.lock():
        c.expect("locking")
        wait_for_sleeper(m, c.pid)
        os.kill(c.pid, signal.SIGUSR1)
        c.expect("stopped")
        c.finish()
        assert m.status()["owner"]["pid"] == os.getpid()
