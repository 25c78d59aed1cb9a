"""One lock file shared by the drop-in and pymutex, both ways: pymutex's
exact ctypes calls (tests/file/pymutex_peer.py, always) and the real pymutex
(when ROBUST_MUTEX_PYMUTEX_PATH names a directory holding pymutex/). Either
side creates, the other loads; mutual exclusion with exact counts; a
SIGKILLed holder on either side reaches the other side's recovery."""

import os
import stat

import pytest
import robust_mutex.pymutex as pymutex  # noqa: PLR0402 - the drop-in's own idiom

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


def other(kids, side, cmd, path, *args):
    """The other side: the peer script, or the real pymutex in
    test_pymutex_kid.py (the same commands and lines)."""
    if side == "peer":
        return kids([PEER, cmd, path, *args])
    return kids(
        [KID, "pymutex", cmd, path, *args], env=dict(os.environ, PYTHONPATH=REAL)
    )


def dropin(kids, cmd, path, *args):
    return kids([KID, "dropin", cmd, path, *args])


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("side", SIDES)
def test_a_file_the_other_side_created_is_loaded_by_the_drop_in(
    tmp_path, path, kids, side, recovery
):
    assert other(kids, side, "create", path).finish() == ["created"]
    cb = recovery()
    m = pymutex.SharedMutex(path, cb)
    assert m.lock() is True
    assert other(kids, side, "trylock", path).finish() == ["busy"]
    m.unlock()
    assert other(kids, side, "trylock", path).finish() == ["locked"]
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0
    # A fresh file of either side is the same bytes, size and mode.
    ours = str(tmp_path / "ours.lock")
    theirs = str(tmp_path / "theirs.lock")
    pymutex.SharedMutex(ours, cb)
    other(kids, side, "create", theirs).finish()
    assert read(ours) == read(theirs)
    assert (mode(ours), mode(theirs)) == (0o600, 0o600)


@pytest.mark.parametrize("side", SIDES)
def test_a_file_the_drop_in_created_is_loaded_by_the_other_side(
    path, kids, side, recovery
):
    cb = recovery()
    m = pymutex.SharedMutex(path, cb)
    holder = other(kids, side, "hold", path)
    holder.expect("locked")
    assert m.lock(blocking=False) is False
    assert m.lock(timeout=0.05) is False
    holder.tell("unlock")
    holder.expect("unlocked")
    assert m.lock() is True
    assert other(kids, side, "trylock", path).finish() == ["busy"]
    m.unlock()
    assert other(kids, side, "lock", path).finish() == ["waiting", "locked"]
    assert cb.calls == 0


@pytest.mark.parametrize("side", SIDES)
def test_both_sides_exclude_each_other_exact_counts(
    tmp_path, path, kids, side, recovery
):
    pymutex.SharedMutex(path, recovery())
    counter = str(tmp_path / "counter")
    with open(counter, "wb") as f:
        f.write(bytes(8))
    ours = dropin(kids, "count", path, counter, str(COUNT))
    if side == "peer":
        theirs = kids([KID, "peer", "count", path, counter, str(COUNT)])
        theirs.expect("loaded")  # the peer's main() ran its loader
    else:
        theirs = other(kids, side, "count", path, counter, str(COUNT))
    for k in (ours, theirs):
        k.expect("ready")
    for k in (ours, theirs):
        k.tell("go")
    for k in (ours, theirs):
        assert k.finish() == ["done"]
    assert int.from_bytes(read(counter), "little") == 2 * COUNT


def kill_then_lock(holder, start_waiter, waiting, bare_waiter, path):
    """SIGKILLs `holder` (a child that said "locked") after the waiter that
    start_waiter() starts is asleep in its lock, or before it starts; the
    waiter's lines."""
    holder.expect("locked")
    if not waiting:
        holder.kill()
        return start_waiter().finish()
    waiter = start_waiter()
    waiter.expect("waiting")
    bare_waiter(path)
    holder.kill()
    return ["waiting", *waiter.finish()]


@pytest.mark.parametrize("waiting", [False, True], ids=["after", "asleep"])
@pytest.mark.parametrize("side", SIDES)
def test_the_other_side_s_killed_holder_reaches_our_callback(
    path, kids, bare_waiter, side, waiting, recovery
):
    cb = recovery()
    m = pymutex.SharedMutex(path, cb)
    holder = other(kids, side, "hold", path)
    lines = kill_then_lock(
        holder, lambda: dropin(kids, "lock", path), waiting, bare_waiter, path
    )
    assert lines == ["waiting", "recovered", "locked"]
    assert other(kids, side, "trylock", path).finish() == ["locked"]  # clean again
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0


@pytest.mark.parametrize("waiting", [False, True], ids=["after", "asleep"])
@pytest.mark.parametrize("side", SIDES)
def test_our_killed_holder_reaches_the_other_side_s_callback(
    path, kids, bare_waiter, side, waiting, recovery
):
    other(kids, side, "create", path).finish()
    holder = dropin(kids, "hold", path)
    lines = kill_then_lock(
        holder, lambda: other(kids, side, "lock", path), waiting, bare_waiter, path
    )
    assert lines == ["waiting", "recovered", "locked"]
    cb = recovery()
    m = pymutex.SharedMutex(path, cb)
    assert m.lock(blocking=False) is True
    m.unlock()
    assert cb.calls == 0


@pytest.mark.parametrize("side", SIDES)
def test_their_refused_recovery_is_not_recoverable_for_us(path, kids, side, recovery):
    cb = recovery(True)
    m = pymutex.SharedMutex(path, cb)
    holder = dropin(kids, "hold", path)
    holder.expect("locked")
    holder.kill()
    refuser = other(kids, side, "lock", path, "--refuse")
    assert refuser.finish() == ["waiting", "recovered", "refused"]
    with pytest.raises(pymutex.InvalidSharedState):
        m.lock()
    with pytest.raises(pymutex.InvalidSharedState):
        m.lock(blocking=False)
    assert cb.calls == 0


@pytest.mark.parametrize("side", SIDES)
def test_our_refused_recovery_is_not_recoverable_for_them(path, kids, side, recovery):
    cb = recovery(False)
    m = pymutex.SharedMutex(path, cb)
    holder = other(kids, side, "hold", path)
    holder.expect("locked")
    holder.kill()
    with pytest.raises(pymutex.InvalidSharedState):
        m.lock()
    assert cb.calls == 1
    assert other(kids, side, "lock", path).finish() == ["waiting", "not-recoverable"]
