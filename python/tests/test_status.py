"""status() and inspect(path): the dict `robust-mutex status --json PATH`
prints, with the same keys, and the holder shown while held."""

import os
import threading

import robust_mutex as rm
from conftest import cli_status


def keys(d):
    """The key structure of a JSON value: nested dicts' keys, recursively
    (lists by their first item)."""
    if isinstance(d, dict):
        return {k: keys(v) for k, v in d.items()}
    if isinstance(d, list):
        return [keys(d[0])] if d else []
    return None


def same_keys(a, b):
    """Whether two JSON values have the same key structure, where a None on
    either side matches anything (e.g. "owner": null while free)."""
    if a is None or b is None:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_keys(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return all(same_keys(x, y) for x, y in zip(a, b))
    return not isinstance(a, (dict, list)) and not isinstance(b, (dict, list))


def test_mutex_status_has_the_cli_keys_and_shows_the_holder(lock_path, cli):
    m = rm.SharedMutex(lock_path, 24)
    with m.lock() as g:
        g.set_label("status-test")
        ours, theirs, inspected = m.status(), cli_status(cli, lock_path), rm.inspect(lock_path)
    assert ours.keys() == theirs.keys() == inspected.keys()
    assert same_keys(keys(ours), keys(theirs)), (ours, theirs)
    assert same_keys(keys(inspected), keys(theirs)), (inspected, theirs)
    for d in (ours, theirs, inspected):
        assert d["path"] == lock_path
        assert d["state"] == "locked"
        assert d["owner"]["pid"] == os.getpid()
        assert d["owner"]["tid"] == threading.get_native_id()
        assert d["owner"]["label"] == "status-test"
        assert d["file"]["value_size"] == 24
    assert ours["counters"] == theirs["counters"] == inspected["counters"]

    free, theirs = m.status(), cli_status(cli, lock_path)
    assert free.keys() == theirs.keys()
    assert same_keys(keys(free), keys(theirs))
    assert free["owner"] is None and theirs["owner"] is None
    assert free["state"] == theirs["state"] != "locked"
    assert free["counters"]["acquisitions"] == ours["counters"]["acquisitions"]


def test_status_after_an_owner_death(lock_path, child, cli):
    m = rm.SharedMutex(lock_path)
    c = child(
        """
        g = rm.SharedMutex(path).lock()
        say("holding")
        listen()
        """,
        lock_path,
    )
    c.expect("holding")
    c.kill()
    ours, theirs = m.status(), cli_status(cli, lock_path)
    assert same_keys(keys(ours), keys(theirs))
    assert ours["state"] == theirs["state"]
    assert ours["owner"]["pid"] == theirs["owner"]["pid"] == c.pid
    assert ours["owner"]["alive"] is False
    with m.lock() as g:
        g.mark_consistent()
    assert m.status()["counters"]["owner_deaths"] == 1
    assert m.status()["counters"]["recoveries"] == 1


def test_semaphore_status_has_the_cli_keys(lock_path, cli):
    s = rm.Semaphore(lock_path, 2)
    with s.acquire() as p:
        ours, theirs, inspected = s.status(), cli_status(cli, lock_path), rm.inspect(lock_path)
        slot = p.slot
    assert same_keys(keys(ours), keys(theirs)), (ours, theirs)
    assert same_keys(keys(inspected), keys(theirs)), (inspected, theirs)
    for d in (ours, theirs, inspected):
        assert d["permits"]["total"] == 2
        assert d["permits"]["held"] == 1
        assert d["permits"]["slots"][slot]["pid"] == os.getpid()


def test_inspect_reads_without_locking(lock_path):
    m = rm.SharedMutex(lock_path)
    with m.lock():
        before = rm.inspect(lock_path)["counters"]
        assert rm.inspect(lock_path)["counters"] == before
        assert rm.inspect(lock_path)["owner"]["pid"] == os.getpid()


def test_a_bare_file_says_when_it_was_taken_is_unknown(lock_path):
    import robust_mutex.pymutex as pm

    m = pm.SharedMutex(lock_path, lambda: True)
    assert m.lock()
    try:
        owner = rm.inspect(lock_path)["owner"]
        assert owner["pid"] == os.getpid()
        # No owner record in pymutex's format: no time, rather than 1970.
        assert owner["acquired_at"] is None
        assert owner["acquired_at_unix"] is None
        assert owner["held_for_secs"] is None
    finally:
        m.unlock()
