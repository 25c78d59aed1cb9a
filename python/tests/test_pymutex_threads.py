"""Threads and the drop-in: pymutex's README program (one instance shared by
two threads) with exact counts, and a thread that exits holding the lock
(through the drop-in, or inside a SharedMutex with-block) reported to the
next locker."""

import gc
import os
import struct
import threading

import pytest
import robust_mutex as rm
import robust_mutex.pymutex as pymutex  # noqa: PLR0402 - the drop-in's own idiom
from conftest import WATCHDOG, RecoveryCallback, run_thread

KID = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_pymutex_kid.py")
TIMES = 20_000


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "threads.lock")


def run_threads(*threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join(WATCHDOG)
        assert not t.is_alive(), "a thread hung"


def test_pymutex_readme_example_ends_at_zero(path):
    """pymutex's README example, as it is (its sleep(0.1) was only there to
    let both threads queue behind the main thread's lock)."""

    class Counter:
        def __init__(self):
            self.value = 0

    def increment_thread(mutex, counter, times):
        for _ in range(times):
            mutex.lock()
            counter.value += 1
            mutex.unlock()

    def decrement_thread(mutex, counter, times):
        for _ in range(times):
            mutex.lock()
            counter.value -= 1
            mutex.unlock()

    cb = RecoveryCallback()
    mutex = pymutex.SharedMutex(path, cb)
    counter = Counter()
    t1 = threading.Thread(target=increment_thread, args=(mutex, counter, TIMES))
    t2 = threading.Thread(target=decrement_thread, args=(mutex, counter, TIMES))
    mutex.lock()  # make the threads wait
    t1.start()
    t2.start()
    mutex.unlock()  # let threads work
    t1.join(WATCHDOG)
    t2.join(WATCHDOG)
    assert not (t1.is_alive() or t2.is_alive())
    assert counter.value == 0
    assert cb.calls == 0


def test_one_instance_shared_by_threads_counts_exactly(path):
    """Two threads, one instance, +1 each time with the GIL given up between
    the read and the write: only the lock keeps the count exact."""
    mutex = pymutex.SharedMutex(path, RecoveryCallback())
    box = bytearray(8)

    def add(times):
        for _ in range(times):
            assert mutex.lock()
            (v,) = struct.unpack_from("<Q", box)
            os.sched_yield()  # releases the GIL: the other thread runs
            struct.pack_into("<Q", box, 0, v + 1)
            mutex.unlock()

    run_threads(*(threading.Thread(target=add, args=(TIMES // 4,)) for _ in range(2)))
    assert struct.unpack("<Q", box)[0] == 2 * (TIMES // 4)


@pytest.mark.parametrize(
    "next_locker", ["same instance", "new instance", "other process"]
)
def test_a_thread_that_exits_holding_the_drop_in_lock_is_reported(
    path, script_child, next_locker
):
    cb = RecoveryCallback()
    m = pymutex.SharedMutex(path, cb)
    t = threading.Thread(target=lambda: m.lock() or pytest.fail("not locked"))
    run_threads(t)  # it returned holding the lock: the kernel marks its death
    if next_locker == "other process":
        lines = script_child([KID, "dropin", "lock", path]).lines()
        assert lines == ["waiting", "recovered", "locked"]
        assert cb.calls == 0
    else:
        n = m if next_locker == "same instance" else pymutex.SharedMutex(path, cb)
        assert n.lock() is True  # not EDEADLK: the dead thread held it, not us
        assert cb.calls == 1
        assert n.owns_lock
        n.unlock()
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls <= 1


def test_an_instance_collected_while_another_thread_holds_leaves_it_held(path):
    """pymutex unmaps the file when a locked instance is collected, so the
    kernel can no longer mark the holder's death (its README: undefined
    behaviour). Here the lock stays its holder's, and the holder's later
    death is still reported."""
    cb = RecoveryCallback()
    box = [pymutex.SharedMutex(path, cb)]
    held, leave = threading.Event(), threading.Event()

    def hold():
        assert box[0].lock()
        held.set()
        leave.wait(WATCHDOG)  # then exits holding

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(WATCHDOG)
    box.clear()
    gc.collect()  # collected here, not in the holder's thread
    m = pymutex.SharedMutex(path, cb)
    assert m.lock(blocking=False) is False
    leave.set()
    t.join(WATCHDOG)
    assert m.lock(timeout=WATCHDOG) is True
    assert cb.calls == 1
    m.unlock()


def test_an_instance_collected_by_its_holding_thread_unlocks(path):
    """As a dropped guard does (the drop-in's choice, documented in its
    source): the next lock is clean."""
    cb = RecoveryCallback()
    a = pymutex.SharedMutex(path, cb)
    assert a.lock()
    del a
    gc.collect()
    m = pymutex.SharedMutex(path, cb)
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0


def test_a_thread_that_exits_inside_a_with_block_is_reported(path):
    m = rm.SharedMutex(path, 8)
    kept = []  # keeps its guard alive: a dropped guard would unlock cleanly

    def enter():
        g = m.lock()
        g.__enter__()
        g.value[0:8] = struct.pack("<Q", 5)
        g.set_label("thread")
        kept.append(g)

    t = threading.Thread(target=enter)
    run_threads(t)
    with m.lock(timeout=WATCHDOG) as g:
        assert g.owner_died
        assert (g.previous_owner.pid, g.previous_owner.tid) == (
            os.getpid(),
            t.native_id,
        )
        assert g.previous_owner.label == "thread"
        assert struct.unpack("<Q", bytes(g.value[0:8]))[0] == 5
        g.mark_consistent()
    with m.lock() as g:
        assert not g.owner_died
        kept.clear()  # the dead thread's guard, dropped here, is not this hold
        assert g.held
        with pytest.raises(rm.WouldBlock):
            run_thread(m.try_lock)
    with m.lock() as g:
        assert not g.owner_died
