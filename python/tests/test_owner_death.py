"""Owner death: a holder that dies (SIGKILL, a thread that exits holding the
lock, an exception escaping the with-block) is reported to the next locker,
in any process, with its record and its half-done update."""

import os
import threading

import pytest

import robust_mutex as rm
from conftest import WATCHDOG, put_u64, u64

# A child that starts a two-part update (the first u64 only), labels itself
# and waits to be killed.
HALF_UPDATE = """
m = rm.SharedMutex(path)
g = m.lock()
g.set_label("half-update")
struct.pack_into("<Q", g.value, 0, 0xAAAA)
say_json({"tid": threading.get_native_id()})
listen()
"""

# A child that locks once and reports what it saw (and the dead holder).
LOCK_AND_REPORT = """
m = rm.SharedMutex(path)
try:
    with m.lock() as g:
        prev = g.previous_owner
        say_json({
            "owner_died": g.owner_died,
            "consistent": g.consistent,
            "pid": prev.pid if prev else None,
            "value": bytes(g.value).hex(),
        })
        g.mark_consistent()
except rm.Error as e:
    say_json({"error": type(e).__name__})
"""


def fill(path, first, second):
    """Writes the value's two u64 cleanly."""
    with rm.SharedMutex(path).lock() as g:
        assert not g.owner_died
        put_u64(g.value, 0, first)
        put_u64(g.value, 8, second)


def test_sigkilled_holder_is_reported_with_its_record_and_half_update(lock_path, child):
    fill(lock_path, 1, 1)
    c = child(HALF_UPDATE, lock_path)
    holder_tid = c.read_json()["tid"]
    c.kill()

    m = rm.SharedMutex(lock_path)
    with m.lock() as g:
        assert g.owner_died
        assert not g.consistent
        prev = g.previous_owner
        assert prev is not None
        assert prev.pid == c.pid
        assert prev.tid == holder_tid
        assert prev.label == "half-update"
        assert isinstance(prev.acquired_at, float) and prev.acquired_at > 0
        # The half-update is there for the repair to see.
        assert u64(g.value, 0) == 0xAAAA
        assert u64(g.value, 8) == 1
        put_u64(g.value, 8, 0xAAAA)  # the repair: finish the update
        g.mark_consistent()
        assert g.consistent
        assert g.owner_died, "owner_died stays True for the life of the guard"

    with m.lock() as g:
        assert not g.owner_died
        assert g.consistent
        assert g.previous_owner is None
        assert (u64(g.value, 0), u64(g.value, 8)) == (0xAAAA, 0xAAAA)


def test_sigkilled_holder_is_reported_to_another_process(lock_path, child):
    fill(lock_path, 7, 7)
    holder = child(HALF_UPDATE, lock_path)
    holder.read_json()
    holder.kill()

    c = child(LOCK_AND_REPORT, lock_path)
    seen = c.read_json()
    c.finish()
    assert seen["owner_died"] and not seen["consistent"]
    assert seen["pid"] == holder.pid
    assert bytes.fromhex(seen["value"])[:8] == (0xAAAA).to_bytes(8, "little")
    with rm.SharedMutex(lock_path).lock() as g:
        assert not g.owner_died


def test_thread_exiting_holding_the_lock_is_reported_with_its_tid(lock_path):
    m = rm.SharedMutex(lock_path)
    kept = []  # keeps the guard alive: its thread exits holding the lock

    def hold():
        g = m.lock()
        g.__enter__()
        kept.append(g)

    t = threading.Thread(target=hold)
    t.start()
    t.join(WATCHDOG)
    assert not t.is_alive()
    assert len(kept) == 1

    with m.lock() as g:
        assert g.owner_died
        assert g.previous_owner is not None
        assert g.previous_owner.pid == os.getpid()
        assert g.previous_owner.tid == t.native_id
        g.mark_consistent()
        # The dead thread's guard, dropped here, must not touch our lock.
        kept.clear()
        assert m.status()["owner"]["tid"] == threading.get_native_id()
    with m.lock() as g:
        assert not g.owner_died


class Boom(Exception):
    pass


def test_exception_escaping_the_block_propagates_unchanged_and_is_a_death(lock_path, child):
    m = rm.SharedMutex(lock_path)
    boom = Boom("half done")
    with pytest.raises(Boom) as raised:
        with m.lock() as g:
            put_u64(g.value, 0, 0xBAD)
            raise boom
    assert raised.value is boom
    assert raised.value.__context__ is None, "nothing raised while handling it"

    # Another process is told.
    c = child(LOCK_AND_REPORT, lock_path)
    seen = c.read_json()
    c.finish()
    assert seen["owner_died"]
    assert seen["pid"] == os.getpid()
    assert bytes.fromhex(seen["value"])[:8] == (0xBAD).to_bytes(8, "little")

    # It marked it consistent: clean from now on.
    with m.lock() as g:
        assert not g.owner_died


def test_exception_escaping_the_block_is_a_death_in_this_process_too(lock_path):
    m = rm.SharedMutex(lock_path)
    with pytest.raises(KeyError):
        with m.lock():
            raise KeyError("k")
    with m.lock() as g:
        assert g.owner_died
        assert g.previous_owner.pid == os.getpid()
        assert g.previous_owner.tid == threading.get_native_id()
        g.mark_consistent()


def test_clean_exit_and_dropped_guard_are_no_death(lock_path):
    m = rm.SharedMutex(lock_path)
    with m.lock():
        pass
    g = m.lock()
    del g  # dropped without a block: released cleanly, as unlock() does
    g = m.lock()
    assert not g.owner_died
    g.unlock()
    assert not g.held
    with m.lock() as g:
        assert not g.owner_died
        assert g.held
