"""The crate's log goes to Python's logging, on logger 'robust_mutex' or its
children: an owner death is logged as a warning or an error."""

import logging
import threading

import pytest

import robust_mutex as rm
from conftest import WATCHDOG


def ours(caplog, level):
    return [
        r
        for r in caplog.records
        if (r.name == "robust_mutex" or r.name.startswith("robust_mutex.")) and r.levelno >= level
    ]


def test_an_owner_death_is_logged(lock_path, caplog):
    caplog.set_level(logging.WARNING, logger="robust_mutex")
    m = rm.SharedMutex(lock_path)
    kept = []
    t = threading.Thread(target=lambda: kept.append(m.lock().__enter__()))
    t.start()
    t.join(WATCHDOG)
    assert not t.is_alive()
    caplog.clear()
    with m.lock() as g:
        assert g.owner_died
        g.mark_consistent()
        kept.clear()
    logged = ours(caplog, logging.WARNING)
    assert logged, f"nothing logged on 'robust_mutex': {caplog.records}"
    assert any(str(t.native_id) in r.getMessage() for r in logged), [r.getMessage() for r in logged]


def test_an_exception_escaping_the_block_is_logged(lock_path, caplog):
    caplog.set_level(logging.WARNING, logger="robust_mutex")
    m = rm.SharedMutex(lock_path)
    with pytest.raises(OverflowError):
        with m.lock():
            raise OverflowError()
    assert ours(caplog, logging.WARNING), f"nothing logged on 'robust_mutex': {caplog.records}"
    caplog.clear()
    with m.lock() as g:
        g.mark_consistent()
    assert ours(caplog, logging.WARNING)
