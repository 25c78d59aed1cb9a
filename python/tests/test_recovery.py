"""A recovery not marked consistent makes the lock not recoverable for every
later locker, in any process, until `rm.reset(path)`, which keeps the value."""

import os

import pytest

import robust_mutex as rm
from conftest import put_u64, u64

HOLD_AND_WAIT = """
m = rm.SharedMutex(path)
g = m.lock()
say("holding")
listen()
"""

TRY_LOCK = """
m = rm.SharedMutex(path)
try:
    with m.lock() as g:
        say_json({"owner_died": g.owner_died, "value": bytes(g.value).hex()})
        g.mark_consistent()
except rm.Error as e:
    say_json({"error": type(e).__name__, "message": str(e)})
"""


def not_recoverable(path, child):
    """A lock whose holder was SIGKILLed and whose recoverer left without
    mark_consistent(); its value holds 0x5EED then 0x4E0 (written during
    the failed recovery)."""
    with rm.SharedMutex(path).lock() as g:
        put_u64(g.value, 0, 0x5EED)
    holder = child(HOLD_AND_WAIT, path)
    holder.expect("holding")
    holder.kill()
    m = rm.SharedMutex(path)
    with m.lock() as g:
        assert g.owner_died
        put_u64(g.value, 8, 0x4E0)
        # Leaves cleanly without mark_consistent().
    return m


def test_unmarked_recovery_is_not_recoverable_for_everybody(lock_path, child):
    m = not_recoverable(lock_path, child)
    with pytest.raises(rm.NotRecoverable):
        m.lock()
    with pytest.raises(rm.NotRecoverable):
        m.try_lock()
    with pytest.raises(rm.NotRecoverable):
        m.lock(timeout=0.05)
    with pytest.raises(rm.NotRecoverable):
        rm.SharedMutex(lock_path).lock()
    assert isinstance(rm.NotRecoverable("x"), rm.Error)

    c = child(TRY_LOCK, lock_path)
    assert c.read_json()["error"] == "NotRecoverable"
    c.finish()
    assert m.status()["state"] == rm.inspect(lock_path)["state"]


def test_reset_makes_it_usable_again_and_keeps_the_value(lock_path, child):
    m = not_recoverable(lock_path, child)
    before = rm.inspect(lock_path)
    done = rm.reset(lock_path)
    assert isinstance(done["generation"], int)
    assert done["generation"] > before["file"]["generation"]
    assert isinstance(done["previous_state"], str)

    # The first locker after a reset runs its repair (owner_died), with the
    # value as it was; the handle opened before the reset follows it.
    with m.lock() as g:
        assert g.owner_died
        assert (u64(g.value, 0), u64(g.value, 8)) == (0x5EED, 0x4E0)
        g.mark_consistent()
    with m.lock() as g:
        assert not g.owner_died
        assert (u64(g.value, 0), u64(g.value, 8)) == (0x5EED, 0x4E0)

    # Another process too.
    c = child(TRY_LOCK, lock_path)
    seen = c.read_json()
    c.finish()
    assert seen == {"owner_died": False, "value": (0x5EED).to_bytes(8, "little").hex() + (0x4E0).to_bytes(8, "little").hex()}


def test_reset_refuses_a_healthy_lock_without_force(lock_path):
    m = rm.SharedMutex(lock_path)
    with m.lock() as g:
        put_u64(g.value, 0, 42)
    generation = rm.inspect(lock_path)["file"]["generation"]
    with pytest.raises(rm.Refused):
        rm.reset(lock_path)
    assert rm.inspect(lock_path)["file"]["generation"] == generation
    done = rm.reset(lock_path, force=True)
    assert done["generation"] > generation
    with m.lock() as g:
        assert u64(g.value, 0) == 42
        g.mark_consistent()


def test_remove(lock_path):
    m = rm.SharedMutex(lock_path)
    g = m.lock()
    with pytest.raises(rm.Refused):
        rm.remove(lock_path)
    assert os.path.exists(lock_path)
    g.unlock()
    rm.remove(lock_path)
    assert not os.path.exists(lock_path)


def test_an_exception_during_a_recovery_passes_the_recovery_on(lock_path, child):
    m = rm.SharedMutex(lock_path)
    with pytest.raises(ArithmeticError):
        with m.lock():
            raise ArithmeticError("the first death")
    # The recoverer dies too (an exception), before mark_consistent().
    with pytest.raises(LookupError):
        with m.lock() as g:
            assert g.owner_died
            put_u64(g.value, 0, 0x2)
            raise LookupError("died while repairing")
    # Not "not recoverable": the next locker, in another process, repairs.
    c = child(TRY_LOCK, lock_path)
    seen = c.read_json()
    c.finish()
    assert seen["owner_died"] is True
    assert bytes.fromhex(seen["value"])[:8] == (0x2).to_bytes(8, "little")
    with m.lock() as g:
        assert not g.owner_died


def test_remove_with_force_removes_a_held_lock(lock_path):
    m = rm.SharedMutex(lock_path)
    with m.lock() as g:
        rm.remove(lock_path, force=True)
        assert not os.path.exists(lock_path)
        assert g.held
    with pytest.raises(FileNotFoundError):
        rm.SharedMutex(lock_path, create=False)
