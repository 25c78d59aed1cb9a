"""Ctrl-C interrupts a blocked lock() with KeyboardInterrupt and leaves the
lock untouched: still its holder's, counters unchanged, usable after. Other
signal handlers run during the wait too: one that returns lets the wait go
on, one that raises ends it with its exception."""

import os
import signal

import robust_mutex as rm
from conftest import wait_for_sleeper

# A child that installs the handler named by argv[2] (which acts on the
# first signal only: the test may send it again, see PROD), blocks in
# lock(), says how that ended, then (on "again") locks once more.
BLOCKED = """
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
}[sys.argv[2]]
signal.signal(sig, first_time(act))
m = rm.SharedMutex(path)
say("locking")
try:
    with m.lock() as g:
        say_json({"owner_died": g.owner_died})
except BaseException as e:
    say(type(e).__name__)
listen()
with m.lock() as g:
    say_json({"owner_died": g.owner_died})
"""


def interrupted(lock_path, child, handler, sig, answer):
    """Holds the lock in this thread, lets a child block on it with
    `handler`, sends it `sig` once it sleeps in the kernel, and waits for
    its first line after that (`answer`), sending `sig` again now and then
    until it comes; returns the handle, the guard, the child, and the status
    from before the signal."""
    m = rm.SharedMutex(lock_path)
    g = m.lock()
    c = child(BLOCKED, lock_path, handler)
    c.expect("locking")
    wait_for_sleeper(m, c.pid)
    before = m.status()
    os.kill(c.pid, sig)
    c.expect(answer, prod=lambda: os.kill(c.pid, sig))
    return m, g, c, before


def release_then_child_relocks(g, c):
    """Releases `g`; the child's next lock is clean; it exits cleanly."""
    g.unlock()
    c.say("again")
    assert c.read_json() == {"owner_died": False}
    c.finish()


def test_ctrl_c_interrupts_a_blocked_lock_and_leaves_the_lock_alone(lock_path, child):
    m, g, c, before = interrupted(lock_path, child, "ctrl-c", signal.SIGINT, "KeyboardInterrupt")

    after = m.status()
    assert after["owner"]["pid"] == os.getpid()
    assert after["state"] == before["state"]
    assert after["counters"] == before["counters"]
    assert g.held and g.consistent
    release_then_child_relocks(g, c)


def test_a_handler_that_returns_lets_the_wait_go_on(lock_path, child):
    m, g, c, _ = interrupted(lock_path, child, "returns", signal.SIGUSR1, "handled")
    assert m.status()["owner"]["pid"] == os.getpid()
    g.unlock()
    assert c.read_json() == {"owner_died": False}  # the wait got the lock
    c.say("again")
    assert c.read_json() == {"owner_died": False}
    c.finish()


def test_a_handler_that_raises_ends_the_wait_with_its_exception(lock_path, child):
    m, g, c, before = interrupted(lock_path, child, "raises", signal.SIGUSR1, "Stop")
    assert m.status()["owner"]["pid"] == os.getpid()
    assert m.status()["counters"] == before["counters"]
    release_then_child_relocks(g, c)
