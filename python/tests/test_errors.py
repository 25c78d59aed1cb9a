"""Every bad input or misuse is a clear typed exception, and a file that was
rejected is left exactly as it was."""

import errno
import os
import threading

import pytest

import robust_mutex as rm
from conftest import as_nobody, run_thread


def test_open_in_a_missing_directory_is_file_not_found(tmp_path):
    path = str(tmp_path / "no-such-dir" / "m.lock")
    with pytest.raises(FileNotFoundError) as e:
        rm.SharedMutex(path)
    assert path in str(e.value)
    assert not os.path.exists(os.path.dirname(path))
    with pytest.raises(FileNotFoundError):
        rm.Semaphore(path, 2)


def test_open_without_create_of_a_missing_file_is_file_not_found(lock_path):
    with pytest.raises(FileNotFoundError) as e:
        rm.SharedMutex(lock_path, create=False)
    assert lock_path in str(e.value)
    assert not os.path.exists(lock_path)
    with pytest.raises(FileNotFoundError):
        rm.inspect(lock_path)


def assert_rejected_unchanged(path, opener):
    """`opener()` raises InvalidFile (a ValueError, naming the path) and
    leaves the file at `path` byte for byte as it was."""
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(rm.InvalidFile) as e:
        opener()
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, rm.Error)
    assert path in str(e.value)
    with open(path, "rb") as f:
        assert f.read() == before
    return e.value


def test_a_file_that_is_not_a_lock_is_invalid_and_untouched(lock_path):
    with open(lock_path, "wb") as f:
        f.write(b"# not a lock file: somebody's notes\n" * 200)
    assert_rejected_unchanged(lock_path, lambda: rm.SharedMutex(lock_path))
    assert_rejected_unchanged(lock_path, lambda: rm.Semaphore(lock_path, 2))


def test_another_value_size_is_invalid_and_untouched(lock_path):
    with rm.SharedMutex(lock_path, 16).lock() as g:
        g.value[:] = bytes(range(16))
    assert_rejected_unchanged(lock_path, lambda: rm.SharedMutex(lock_path, 24))
    assert_rejected_unchanged(lock_path, lambda: rm.SharedMutex(lock_path, 8))
    with rm.SharedMutex(lock_path, 16).lock() as g:
        assert bytes(g.value) == bytes(range(16))


def test_another_kind_or_permit_count_is_invalid_and_untouched(lock_path, tmp_path):
    rm.Semaphore(lock_path, 2)
    assert_rejected_unchanged(lock_path, lambda: rm.Semaphore(lock_path, 3))
    assert_rejected_unchanged(lock_path, lambda: rm.SharedMutex(lock_path))
    mutex_path = str(tmp_path / "mutex.lock")
    rm.SharedMutex(mutex_path)
    assert_rejected_unchanged(mutex_path, lambda: rm.Semaphore(mutex_path, 2))


def test_relocking_in_the_same_thread_is_deadlock(lock_path):
    m = rm.SharedMutex(lock_path)
    with m.lock() as g:
        for again in (m.lock, lambda: m.lock(timeout=0.05), rm.SharedMutex(lock_path).lock):
            with pytest.raises(rm.Deadlock) as e:
                again()
            assert isinstance(e.value, OSError)
            assert e.value.errno == errno.EDEADLK
        assert g.held
    with m.try_lock() as g:
        assert not g.owner_died


def test_unlock_from_another_thread_is_not_owner(lock_path):
    m = rm.SharedMutex(lock_path)
    g = m.lock()
    with pytest.raises(rm.NotOwner) as e:
        run_thread(g.unlock)
    assert isinstance(e.value, PermissionError)
    assert e.value.errno == errno.EPERM
    assert g.held
    assert m.status()["owner"]["tid"] == threading.get_native_id()
    g.unlock()
    assert not g.held
    with pytest.raises(RuntimeError):
        g.unlock()
    with m.try_lock() as g:
        assert not g.owner_died


def test_a_guard_or_permit_is_its_threads_alone(lock_path, tmp_path):
    m = rm.SharedMutex(lock_path)
    s = rm.Semaphore(str(tmp_path / "s.lock"), 1)
    with m.lock() as g, s.acquire() as p:
        for use in (lambda: g.value, g.mark_consistent, lambda: g.set_label("x"), p.release,
                    lambda: p.set_label("x")):
            with pytest.raises(rm.NotOwner) as e:
                run_thread(use)
            assert e.value.errno == errno.EPERM
        assert g.held and p.held
        assert s.status()["permits"]["held"] == 1
    assert not g.held and not p.held
    assert s.status()["permits"]["held"] == 0


def test_the_value_is_gone_after_the_block(lock_path):
    m = rm.SharedMutex(lock_path, 8)
    with m.lock() as g:
        view = g.value
        assert view.format == "B" and view.nbytes == 8 and not view.readonly
        view[0] = 1
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        view[0] = 2
    # The guard's own accessor, once released, says so as unlock() does.
    with pytest.raises(RuntimeError):
        g.value
    with m.lock() as g:
        assert g.value[0] == 1


def test_a_label_too_long_is_a_value_error(lock_path):
    with rm.SharedMutex(lock_path).lock() as g:
        g.set_label("x" * 88)
        with pytest.raises(ValueError):
            g.set_label("x" * 89)
        with pytest.raises(ValueError):
            g.set_label("é" * 45)  # 90 bytes of UTF-8


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: drops to uid 65534 in a child")
def test_a_file_of_mode_0600_is_permission_denied_to_another_user(open_dir):
    path = os.path.join(open_dir, "root-only.lock")
    rm.SharedMutex(path, mode=0o600)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "rb") as f:
        before = f.read()
    said = as_nobody(lambda: rm.SharedMutex(path))
    assert said.startswith("PermissionError: "), said
    assert path in said
    with open(path, "rb") as f:
        assert f.read() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: drops to uid 65534 in a child")
def test_creating_in_a_directory_one_may_not_write_is_permission_denied(open_dir):
    path = os.path.join(open_dir, "new.lock")
    said = as_nobody(lambda: rm.SharedMutex(path))
    assert said.startswith("PermissionError: "), said
    assert not os.path.exists(path)


def test_exception_classes_are_what_the_contract_says():
    assert issubclass(rm.WouldBlock, BlockingIOError)
    assert issubclass(rm.TimedOut, TimeoutError)
    assert issubclass(rm.Deadlock, OSError)
    assert issubclass(rm.NotOwner, PermissionError)
    assert issubclass(rm.InvalidFile, ValueError)
    for cls in (rm.WouldBlock, rm.TimedOut, rm.NotRecoverable, rm.Stuck, rm.FileChanged,
                rm.Deadlock, rm.NotOwner, rm.TooManyHeld, rm.InvalidFile):
        assert issubclass(cls, rm.Error)
    assert issubclass(rm.Error, Exception)


def test_a_thread_holding_the_most_locks_gets_too_many_held(tmp_path):
    mutexes = [rm.SharedMutex(tmp_path / f"m{i}.lock", 0) for i in range(1025)]
    guards = []
    with pytest.raises(rm.TooManyHeld) as e:
        for m in mutexes:
            guards.append(m.lock())
    assert len(guards) == 1024, "the crate's MAX_HELD_PER_THREAD"
    assert isinstance(e.value, rm.Error)
    assert mutexes[-1].status()["owner"] is None  # the refused one was not taken
    guards.pop().unlock()
    with mutexes[-1].lock() as g:
        assert not g.owner_died
    for g in guards:
        g.unlock()
