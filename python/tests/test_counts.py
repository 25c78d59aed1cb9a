"""Mutual exclusion under contention: N workers x 2000 with-blocks, each a
read-modify-write of a u64 in the value, end at exactly N x 2000."""

import struct
import threading

import robust_mutex as rm
from conftest import WATCHDOG, u64

WORKERS = 4
ROUNDS = 2000

# A worker process: says "ready", waits for "go", counts, says "done".
COUNTER = """
m = rm.SharedMutex(path, 8)
rounds = int(sys.argv[2])
say("ready")
listen()
for _ in range(rounds):
    with m.lock() as g:
        (n,) = struct.unpack_from("<Q", g.value)
        struct.pack_into("<Q", g.value, 0, n + 1)
say_json(m.status()["counters"])
"""


def test_exact_count_from_processes(lock_path, child):
    rm.SharedMutex(lock_path, 8)
    workers = [child(COUNTER, lock_path, ROUNDS) for _ in range(WORKERS)]
    for w in workers:
        w.expect("ready")
    for w in workers:
        w.say("go")
    for w in workers:
        w.read_json()
        w.finish()
    m = rm.SharedMutex(lock_path, 8)
    with m.lock() as g:
        assert not g.owner_died
        assert u64(g.value) == WORKERS * ROUNDS
    counters = m.status()["counters"]
    assert counters["acquisitions"] >= WORKERS * ROUNDS
    assert counters["owner_deaths"] == 0


def count_in_threads(handle):
    """WORKERS threads, each counting ROUNDS times with the handle `handle()`
    gives it; returns what they raised."""
    go = threading.Barrier(WORKERS, timeout=WATCHDOG)
    errors = []

    def count():
        try:
            m = handle()
            go.wait()
            for _ in range(ROUNDS):
                with m.lock() as g:
                    (n,) = struct.unpack_from("<Q", g.value)
                    struct.pack_into("<Q", g.value, 0, n + 1)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    threads = [threading.Thread(target=count) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WATCHDOG)
        assert not t.is_alive()
    return errors


def test_exact_count_from_threads_sharing_a_handle(lock_path):
    m = rm.SharedMutex(lock_path, 8)
    assert count_in_threads(lambda: m) == []
    with m.lock() as g:
        assert not g.owner_died
        assert u64(g.value) == WORKERS * ROUNDS


def test_exact_count_from_threads_with_their_own_handles(lock_path):
    rm.SharedMutex(lock_path, 8)
    assert count_in_threads(lambda: rm.SharedMutex(lock_path, 8)) == []
    with rm.SharedMutex(lock_path, 8).lock() as g:
        assert u64(g.value) == WORKERS * ROUNDS
