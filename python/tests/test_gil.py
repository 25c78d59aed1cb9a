"""The GIL is released while lock() (or a semaphore's acquire()) waits: a
thread blocked there does not stop the other threads running Python.

The scenario runs in a child process: were the GIL held by the blocked
thread, no Python would run in that process (not even a watchdog), so the
test's process watches it from outside and a hang fails after WATCHDOG."""

import pytest

from conftest import TAKE

GIL_SCENARIO = TAKE + """
import queue
from conftest import holder_pids, wait_for_sleeper

g = take()
got = {}

def blocked():
    # B: waits in take() while main holds it.
    with take() as gb:
        got["owner_died"] = gb.owner_died
        got["tid"] = threading.get_native_id()

def echo(inbox, outbox):
    # C: answers each number with the next one.
    for n in iter(inbox.get, None):
        outbox.put(n + 1)

b = threading.Thread(target=blocked)
b.start()
# Main keeps running Python while B sleeps in the kernel on the lock...
wait_for_sleeper(lock, os.getpid(), b.native_id)
inbox, outbox = queue.Queue(), queue.Queue()
c = threading.Thread(target=echo, args=(inbox, outbox))
c.start()
n = 0
for _ in range(1000):
    inbox.put(n)
    n = outbox.get()
inbox.put(None)
c.join()
# ...and B is still waiting, with the lock still main's.
assert b.is_alive() and "tid" not in got
assert holder_pids(lock.status()) == [os.getpid()]
g.__exit__(None, None, None)
b.join(60)
assert not b.is_alive()
say_json({"count": n, "b_tid": b.native_id, **got})
"""


@pytest.mark.parametrize("kind", ["mutex", "semaphore"])
def test_a_thread_blocked_in_lock_does_not_hold_the_gil(lock_path, child, kind):
    c = child(GIL_SCENARIO, lock_path, kind)
    seen = c.read_json()
    c.finish()
    assert seen["count"] == 1000
    assert seen["tid"] == seen["b_tid"]
    assert seen["owner_died"] is False
