"""Handles: paths (str or PathLike), value sizes of any length, and the
arguments a handle refuses."""

import os
import pathlib

import pytest

import robust_mutex as rm


def test_a_pathlike_path_and_the_handle_properties(tmp_path):
    p = tmp_path / "m.lock"
    m = rm.SharedMutex(p, 24)
    assert (m.path, m.size) == (str(p), 24)
    assert rm.SharedMutex(str(p), 24, create=False).path == str(p)
    s = rm.Semaphore(pathlib.Path(tmp_path / "s.lock"), 3)
    assert (s.path, s.permits) == (str(tmp_path / "s.lock"), 3)
    assert isinstance(rm.__version__, str) and rm.__version__


@pytest.mark.parametrize("size", [0, 1, 5, 8, 13, 4096])
def test_a_value_of_any_size_is_exactly_that_size(lock_path, size):
    m = rm.SharedMutex(lock_path, size)
    with m.lock() as g:
        assert g.value.nbytes == size
        g.value[:] = bytes(i % 251 for i in range(size))
    with rm.SharedMutex(lock_path, size).lock() as g:
        assert bytes(g.value) == bytes(i % 251 for i in range(size))
    for other in {0, size + 1, (size + 8) & ~7} - {size}:
        with pytest.raises(rm.InvalidFile) as e:
            rm.SharedMutex(lock_path, other)
        assert f"size={other}" in str(e.value)


def test_a_negative_timeout_is_a_value_error(lock_path, tmp_path):
    m = rm.SharedMutex(lock_path)
    with pytest.raises(ValueError):
        m.lock(timeout=-1)
    s = rm.Semaphore(str(tmp_path / "s.lock"), 1)
    with pytest.raises(ValueError):
        s.acquire(timeout=-0.5)
    with m.lock(timeout=0) as g:  # nothing was left held
        assert not g.owner_died


@pytest.mark.parametrize("permits", [0, -1, 128])
def test_a_permit_count_out_of_range_is_refused_and_nothing_created(lock_path, permits):
    with pytest.raises((ValueError, OverflowError)):
        rm.Semaphore(lock_path, permits)
    assert not os.path.exists(lock_path)


def test_mode_sets_the_new_files_mode(tmp_path):
    old = os.umask(0)
    try:
        rm.SharedMutex(tmp_path / "a", mode=0o640)
        rm.Semaphore(tmp_path / "b", 2, mode=0o604)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "b").st_mode & 0o777 == 0o604


def test_a_format_types_the_value(lock_path):
    m = rm.SharedMutex(lock_path, 16, format="Q")
    assert m.format == "Q"
    with m.lock() as g:
        assert (g.value.format, g.value.itemsize, len(g.value)) == ("Q", 8, 2)
        g.value[0] += 1
        g.value[1] = 2**64 - 1
    # The same bytes, seen through another handle's format.
    with rm.SharedMutex(lock_path, 16).lock() as g:
        assert g.value.format == "B"
        assert bytes(g.value) == (1).to_bytes(8, "little") + b"\xff" * 8
    with rm.SharedMutex(lock_path, 16, format="d").lock() as g:
        g.value[0] = 0.5
    with m.lock() as g:
        assert g.value[0] == 0x3FE0_0000_0000_0000


@pytest.mark.parametrize("size, fmt", [(12, "Q"), (16, "xx"), (16, "16s"), (16, "P?"), (16, "z")])
def test_a_format_that_does_not_fit_is_a_value_error(lock_path, size, fmt):
    with pytest.raises(ValueError):
        rm.SharedMutex(lock_path, size, format=fmt)
    assert not os.path.exists(lock_path)
