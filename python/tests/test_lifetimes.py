"""Guards and handles whose Python objects die in unusual places: a guard
freed without leaving its block, a guard or a drop-in instance freed by a
thread other than the one holding the lock while that thread lives."""

import gc
import queue
import threading

import pytest

import robust_mutex as rm
import robust_mutex.pymutex as pm

WATCHDOG = 60


def test_a_guard_freed_without_leaving_its_block_revokes_its_value(lock_path):
    m = rm.SharedMutex(lock_path, 8)
    v = m.lock().value  # the guard is freed at once: the lock is released
    with pytest.raises(ValueError, match="released"):
        v[0] = 42
    with m.lock() as g:
        assert not g.owner_died and bytes(g.value) == bytes(8)


class Worker:
    """A thread that runs what it is sent, in order, and stays alive."""

    def __init__(self):
        self.jobs = queue.Queue()
        self.results = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                self.results.put((True, job()))
            except BaseException as e:  # noqa: BLE001 - reported to the test
                self.results.put((False, e))

    def call(self, job):
        self.jobs.put(job)
        ok, value = self.results.get(timeout=WATCHDOG)
        if not ok:
            raise value
        return value

    def stop(self):
        self.jobs.put(None)
        self.thread.join(WATCHDOG)


@pytest.mark.parametrize("kind", ["mutex", "permit"])
def test_a_guard_freed_by_another_thread_is_released_by_its_own(lock_path, kind):
    if kind == "mutex":
        m = rm.SharedMutex(lock_path, 8)
        take, try_take = m.lock, m.try_lock
    else:
        m = rm.Semaphore(lock_path, 1)
        take, try_take = m.acquire, m.try_acquire
    w = Worker()
    try:
        box = [w.call(take)]  # held by the worker, which stays alive
        box.clear()  # the last reference dies here, in the test's thread
        gc.collect()
        # Still held: only the worker's thread can let it go.
        with pytest.raises(rm.WouldBlock):
            try_take()
        # The worker's next call into the package releases it first.
        w.call(lambda: try_take().__exit__(None, None, None))
        with try_take() as g:
            assert not g.owner_died
    finally:
        w.stop()


def test_a_dropin_instance_freed_by_another_thread_is_unlocked_by_the_holder(lock_path):
    w = Worker()
    try:
        box = [pm.SharedMutex(lock_path, lambda: True)]
        assert w.call(box[0].lock)
        box.clear()  # freed here while the worker holds the lock
        gc.collect()
        other = pm.SharedMutex(lock_path, lambda: True)
        assert not other.lock(blocking=False)
        mine = pm.SharedMutex(lock_path, lambda: True)
        # The worker's next drop-in call unlocks it first.
        assert w.call(lambda: mine.lock(blocking=False))
        w.call(mine.unlock)
        assert other.lock(blocking=False)
        other.unlock()
    finally:
        w.stop()
