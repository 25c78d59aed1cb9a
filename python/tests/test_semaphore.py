"""rm.Semaphore: a robust counting semaphore. A SIGKILLed holder's permit
comes back and its next taker gets owner_died; timeouts and an exception
escaping the with-block behave as the mutex's."""

import errno
import os
import threading

import pytest

import robust_mutex as rm
from conftest import WATCHDOG

HOLD_A_PERMIT = """
s = rm.Semaphore(path, 2)
p = s.acquire()
p.set_label("permit-holder")
say_json({"slot": p.slot, "tid": threading.get_native_id()})
listen()
"""


def test_two_permits_held_then_a_sigkilled_holder_gives_its_back(lock_path, child):
    s = rm.Semaphore(lock_path, 2)
    assert s.permits == 2
    mine = s.try_acquire()
    assert mine.held and not mine.owner_died

    c = child(HOLD_A_PERMIT, lock_path)
    theirs = c.read_json()
    assert theirs["slot"] != mine.slot

    # Both permits are held: a third taker is refused or times out.
    with pytest.raises(rm.WouldBlock) as e:
        s.try_acquire()
    assert isinstance(e.value, BlockingIOError)
    assert e.value.errno == errno.EAGAIN
    with pytest.raises(rm.TimedOut) as e:
        s.acquire(timeout=0.05)
    assert isinstance(e.value, TimeoutError)
    assert s.status()["permits"]["held"] == 2

    c.kill()
    with s.try_acquire() as p:
        assert p.owner_died
        assert not p.consistent
        assert p.slot == theirs["slot"]
        assert p.previous_owner.pid == c.pid
        assert p.previous_owner.tid == theirs["tid"]
        assert p.previous_owner.label == "permit-holder"
        p.mark_consistent()
        assert p.consistent
    with s.try_acquire() as p:
        assert not p.owner_died
        assert p.previous_owner is None
    mine.release()
    assert not mine.held


def test_exception_escaping_a_permit_block_is_a_death(lock_path):
    s = rm.Semaphore(lock_path, 1)
    boom = RuntimeError("half done")
    with pytest.raises(RuntimeError) as raised:
        with s.acquire():
            raise boom
    assert raised.value is boom
    with s.acquire(timeout=WATCHDOG) as p:
        assert p.owner_died
        assert p.previous_owner.pid == os.getpid()
        p.mark_consistent()
    with s.acquire() as p:
        assert not p.owner_died


def test_unmarked_permit_recovery_is_not_recoverable(lock_path):
    s = rm.Semaphore(lock_path, 1)
    with pytest.raises(ZeroDivisionError):
        with s.acquire():
            1 / 0
    with s.acquire() as p:
        assert p.owner_died  # leaves without mark_consistent()
    with pytest.raises(rm.NotRecoverable):
        s.acquire()


def test_a_thread_exiting_with_a_permit_gives_it_back(lock_path):
    s = rm.Semaphore(lock_path, 1)
    kept = []
    t = threading.Thread(target=lambda: kept.append(s.acquire().__enter__()))
    t.start()
    t.join(WATCHDOG)
    assert not t.is_alive() and len(kept) == 1
    with s.acquire(timeout=WATCHDOG) as p:
        assert p.owner_died
        assert p.previous_owner.tid == t.native_id
        p.mark_consistent()
        kept.clear()


def test_permits_are_counted(lock_path):
    s = rm.Semaphore(lock_path, 3)
    held = [s.try_acquire() for _ in range(3)]
    assert sorted(p.slot for p in held) == [0, 1, 2]
    assert s.status()["permits"]["available"] == 0
    with pytest.raises(rm.WouldBlock):
        s.try_acquire()
    held.pop().release()
    assert s.status()["permits"]["available"] == 1
    with s.try_acquire():
        pass
    for p in held:
        p.release()
    assert s.status()["permits"]["available"] == 3
