"""Ctrl-C interrupts a blocked lock() (or a semaphore's acquire()) with
KeyboardInterrupt and leaves the lock untouched: still its holder's, counters unchanged, usable after. Other
signal handlers run during the wait too: one that returns lets the wait go
on, one that raises ends it with its exception."""

import os
import signal

import pytest

from conftest import TAKE, holder_pids, open_kind, wait_for_sleeper

KINDS = pytest.mark.parametrize("kind", ["mutex", "semaphore"])

# A child that installs the handler named by argv[3] (which acts on the
# first signal only: the test may send it again, see PROD), blocks taking
# the lock of kind argv[2], says how that ended, then (on "again") takes it
# once more.
BLOCKED = TAKE + """
class Stop(Exception):
    pass

def first_time(act):
    done = []
    def handler(*_):
        if not done:
            done.append(True)
            act()
    return handler

def ctrl_c():
    signal.default_int_handler(signal.SIGINT, None)

def stop():
    raise Stop()

sig, act = {
    "ctrl-c": (signal.SIGINT, ctrl_c),
    "returns": (signal.SIGUSR1, lambda: say("handled")),
    "raises": (signal.SIGUSR1, stop),
}[sys.argv[3]]
signal.signal(sig, first_time(act))
say("locking")
try:
    with take() as g:
        say_json({"owner_died": g.owner_died})
except BaseException as e:
    say(type(e).__name__)
listen()
with take() as g:
    say_json({"owner_died": g.owner_died})
"""


def interrupted(kind, lock_path, child, handler, sig, answer):
    """Holds the lock in this thread, lets a child block on it with
    `handler`, sends it `sig` once it sleeps in the kernel, and waits for
    its first line after that (`answer`), sending `sig` again now and then
    until it comes; returns the handle, the guard, the child, and the status
    from before the signal."""
    m, take = open_kind(kind, lock_path)
    g = take()
    c = child(BLOCKED, lock_path, kind, handler)
    c.expect("locking")
    wait_for_sleeper(m, c.pid)
    before = m.status()
    os.kill(c.pid, sig)
    c.expect(answer, prod=lambda: os.kill(c.pid, sig))
    return m, g, c, before


def release_then_child_relocks(g, c):
    """Releases `g`; the child's next lock is clean; it exits cleanly."""
    g.__exit__(None, None, None)
    c.say("again")
    assert c.read_json() == {"owner_died": False}
    c.finish()


@KINDS
def test_ctrl_c_interrupts_a_blocked_lock_and_leaves_the_lock_alone(lock_path, child, kind):
    m, g, c, before = interrupted(kind, lock_path, child, "ctrl-c", signal.SIGINT, "KeyboardInterrupt")

    after = m.status()
    assert holder_pids(after) == [os.getpid()]
    assert after["state"] == before["state"]
    assert after["counters"] == before["counters"]
    assert g.held and g.consistent
    release_then_child_relocks(g, c)


@KINDS
def test_a_handler_that_returns_lets_the_wait_go_on(lock_path, child, kind):
    m, g, c, _ = interrupted(kind, lock_path, child, "returns", signal.SIGUSR1, "handled")
    assert holder_pids(m.status()) == [os.getpid()]
    g.__exit__(None, None, None)
    assert c.read_json() == {"owner_died": False}  # the wait got the lock
    c.say("again")
    assert c.read_json() == {"owner_died": False}
    c.finish()


@KINDS
def test_a_handler_that_raises_ends_the_wait_with_its_exception(lock_path, child, kind):
    m, g, c, before = interrupted(kind, lock_path, child, "raises", signal.SIGUSR1, "Stop")
    assert holder_pids(m.status()) == [os.getpid()]
    assert m.status()["counters"] == before["counters"]
    release_then_child_relocks(g, c)
