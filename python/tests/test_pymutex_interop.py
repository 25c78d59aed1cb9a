"""One lock file shared by the drop-in and pymutex, both ways: pymutex's
exact ctypes calls (tests/file/pymutex_peer.py, always) and the real pymutex
(when ROBUST_MUTEX_PYMUTEX_PATH names a directory holding pymutex/). Either
side creates, the other loads; mutual exclusion with exact counts; a
SIGKILLed holder on either side reaches the other side's recovery."""

import os
import stat

import pytest
import robust_mutex.pymutex as pymutex  # noqa: PLR0402 - the drop-in's own idiom
from conftest import RecoveryCallback, wait_for_bare_waiter

HERE = os.path.dirname(os.path.abspath(__file__))
KID = os.path.join(HERE, "test_pymutex_kid.py")
PEER = os.path.join(HERE, "..", "..", "tests", "file", "pymutex_peer.py")
REAL = os.environ.get("ROBUST_MUTEX_PYMUTEX_PATH")

SIDES = [
    "peer",
    pytest.param(
        "pymutex",
        marks=pytest.mark.skipif(
            not REAL,
            reason="ROBUST_MUTEX_PYMUTEX_PATH is unset (a directory holding pymutex/: "
            "github.com/HMaker/pymutex is not on PyPI); the peer making its exact "
            "ctypes calls runs instead",
        ),
    ),
]
#: Per side: enough for two unlocked sides to lose updates (they did, here).
COUNT = 10_000


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "shared.lock")


def other(script_child, side, cmd, path, *args):
    """The other side: the peer script, or the real pymutex in
    test_pymutex_kid.py (the same commands and lines)."""
    if side == "peer":
        return script_child([PEER, cmd, path, *args])
    return script_child(
        [KID, "pymutex", cmd, path, *args], env=dict(os.environ, PYTHONPATH=REAL)
    )


def dropin(script_child, cmd, path, *args):
    return script_child([KID, "dropin", cmd, path, *args])


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("side", SIDES)
def test_a_file_the_other_side_created_is_loaded_by_the_drop_in(
    tmp_path, path, script_child, side
):
    assert other(script_child, side, "create", path).lines() == ["created"]
    cb = RecoveryCallback()
    m = pymutex.SharedMutex(path, cb)
    assert m.lock() is True
    assert other(script_child, side, "trylock", path).lines() == ["busy"]
    m.unlock()
    assert other(script_child, side, "trylock", path).lines() == ["locked"]
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0
    # A fresh file of either side is the same bytes, size and mode.
    ours = str(tmp_path / "ours.lock")
    theirs = str(tmp_path / "theirs.lock")
    pymutex.SharedMutex(ours, cb)
    other(script_child, side, "create", theirs).lines()
    assert read(ours) == read(theirs)
    assert (mode(ours), mode(theirs)) == (0o600, 0o600)


@pytest.mark.parametrize("side", SIDES)
def test_a_file_the_drop_in_created_is_loaded_by_the_other_side(
    path, script_child, side
):
    cb = RecoveryCallback()
    m = pymutex.SharedMutex(path, cb)
    holder = other(script_child, side, "hold", path)
    holder.expect("locked")
    assert m.lock(blocking=False) is False
    assert m.lock(timeout=0.05) is False
    holder.say("unlock")
    holder.expect("unlocked")
    assert m.lock() is True
    assert other(script_child, side, "trylock", path).lines() == ["busy"]
    m.unlock()
    assert other(script_child, side, "lock", path).lines() == ["waiting", "locked"]
    assert cb.calls == 0


@pytest.mark.parametrize("side", SIDES)
def test_both_sides_exclude_each_other_exact_counts(tmp_path, path, script_child, side):
    pymutex.SharedMutex(path, RecoveryCallback())
    counter = str(tmp_path / "counter")
    with open(counter, "wb") as f:
        f.write(bytes(8))
    ours = dropin(script_child, "count", path, counter, str(COUNT))
    if side == "peer":
        theirs = script_child([KID, "peer", "count", path, counter, str(COUNT)])
        theirs.expect("loaded")  # the peer's main() ran its loader
    else:
        theirs = other(script_child, side, "count", path, counter, str(COUNT))
    for k in (ours, theirs):
        k.expect("ready")
    for k in (ours, theirs):
        k.say("go")
    for k in (ours, theirs):
        assert k.lines() == ["done"]
    assert int.from_bytes(read(counter), "little") == 2 * COUNT


def kill_then_lock(holder, start_waiter, waiting, path):
    """SIGKILLs `holder` (a child that said "locked") after the waiter that
    start_waiter() starts is asleep in its lock, or before it starts; the
    waiter's lines."""
    holder.expect("locked")
    if not waiting:
        holder.kill()
        return start_waiter().lines()
    waiter = start_waiter()
    waiter.expect("waiting")
    wait_for_bare_waiter(path)
    holder.kill()
    return ["waiting", *waiter.lines()]


@pytest.mark.parametrize("waiting", [False, True], ids=["after", "asleep"])
@pytest.mark.parametrize("side", SIDES)
def test_the_other_side_s_killed_holder_reaches_our_callback(
    path, script_child, side, waiting
):
    cb = RecoveryCallback()
    m = pymutex.SharedMutex(path, cb)
    holder = other(script_child, side, "hold", path)
    lines = kill_then_lock(
        holder, lambda: dropin(script_child, "lock", path), waiting, path
    )
    assert lines == ["waiting", "recovered", "locked"]
    assert other(script_child, side, "trylock", path).lines() == [
        "locked"
    ]  # clean again
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0


@pytest.mark.parametrize("waiting", [False, True], ids=["after", "asleep"])
@pytest.mark.parametrize("side", SIDES)
def test_our_killed_holder_reaches_the_other_side_s_callback(
    path, script_child, side, waiting
):
    other(script_child, side, "create", path).lines()
    holder = dropin(script_child, "hold", path)
    lines = kill_then_lock(
        holder, lambda: other(script_child, side, "lock", path), waiting, path
    )
    assert lines == ["waiting", "recovered", "locked"]
    cb = RecoveryCallback()
    m = pymutex.SharedMutex(path, cb)
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0


@pytest.mark.parametrize("side", SIDES)
def test_their_refused_recovery_is_not_recoverable_for_us(path, script_child, side):
    cb = RecoveryCallback(True)
    m = pymutex.SharedMutex(path, cb)
    holder = dropin(script_child, "hold", path)
    holder.expect("locked")
    holder.kill()
    refuser = other(script_child, side, "lock", path, "--refuse")
    assert refuser.lines() == ["waiting", "recovered", "refused"]
    with pytest.raises(pymutex.InvalidSharedState):
        m.lock()
    with pytest.raises(pymutex.InvalidSharedState):
        m.lock(blocking=False)
    assert cb.calls == 0


@pytest.mark.parametrize("side", SIDES)
def test_our_refused_recovery_is_not_recoverable_for_them(path, script_child, side):
    cb = RecoveryCallback(False)
    m = pymutex.SharedMutex(path, cb)
    holder = other(script_child, side, "hold", path)
    holder.expect("locked")
    holder.kill()
    with pytest.raises(pymutex.InvalidSharedState):
        m.lock()
    assert cb.calls == 1
    assert other(script_child, side, "lock", path).lines() == [
        "waiting",
        "not-recoverable",
    ]
