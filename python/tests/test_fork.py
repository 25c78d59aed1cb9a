"""Handles across fork: a SharedMutex, Semaphore or pymutex handle made in the
parent works in a child of multiprocessing's 'fork' start method; a child
SIGKILLed holding is reported to the parent; a guard the parent holds at
fork time is not the child's, so the child leaving its block (or the child's
unlock) does nothing to the parent's lock. Synchronised by pipes."""

import errno
import mmap
import multiprocessing
import os

import pytest
import robust_mutex as rm
import robust_mutex.pymutex as pymutex  # noqa: PLR0402 - the drop-in's own idiom
from conftest import WATCHDOG, put_u64, run_thread, u64

fork = multiprocessing.get_context("fork")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "fork.lock")


class Pipe:
    """Both ends of a multiprocessing pipe; recv() has the hang watchdog."""

    def __init__(self):
        self.parent, self.child = fork.Pipe()

    def recv(self):
        assert self.parent.poll(WATCHDOG), "the child said nothing (hung)"
        return self.parent.recv()


def start(target):
    p = fork.Process(target=target)
    p.start()
    return p


def joined(p):
    """Joins p; its exit code (a failed assertion in it is 1, with a traceback)."""
    p.join(WATCHDOG)
    assert p.exitcode is not None, "child hung"
    return p.exitcode


def value_file(tmp_path):
    """An 8-byte file mapped MAP_SHARED: a value beside a lock that has none."""
    with open(tmp_path / "value", "wb") as f:
        f.write(bytes(8))
    with open(tmp_path / "value", "r+b") as f:
        return mmap.mmap(f.fileno(), 8)


class Shared:
    """One kind of handle, made in the parent: take() a context manager,
    try_take() without waiting, and a value written under the lock."""

    def __init__(self, kind, path, tmp_path):
        self.kind = kind
        if kind == "mutex":
            self.h = rm.SharedMutex(path, 8)
            self.take, self.try_take = self.h.lock, self.h.try_lock
        else:
            self.h = rm.Semaphore(path, 1)
            self.take, self.try_take = self.h.acquire, self.h.try_acquire
        self.side = value_file(tmp_path)  # the semaphore's value

    def value(self, g):
        return g.value if self.kind == "mutex" else memoryview(self.side)


KINDS = ["mutex", "semaphore"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_handle_made_before_fork_works_in_the_child(path, tmp_path, kind):
    s = Shared(kind, path, tmp_path)
    with s.take() as g:  # used in the parent first: its mapping exists
        put_u64(s.value(g), 0, 1)
    pipe = Pipe()

    def child():
        with s.take() as g:
            assert not g.owner_died
            assert u64(s.value(g)) == 1
            put_u64(s.value(g), 0, 2)
            pipe.child.send("holding")
            assert pipe.child.recv() == "release"

    p = start(child)
    assert pipe.recv() == "holding"
    with pytest.raises(rm.WouldBlock):
        s.try_take()
    pipe.parent.send("release")
    assert joined(p) == 0
    with s.take() as g:
        assert not g.owner_died
        assert u64(s.value(g)) == 2


def test_a_pymutex_handle_made_before_fork_works_in_the_child(path, tmp_path):
    calls = []
    m = pymutex.SharedMutex(path, lambda: calls.append(1) or True)
    assert m.lock()
    m.unlock()
    side = memoryview(value_file(tmp_path))
    pipe = Pipe()

    def child():
        assert m.lock() is True
        assert m.owns_lock
        put_u64(side, 0, u64(side) + 41)
        pipe.child.send("holding")
        assert pipe.child.recv() == "release"
        m.unlock()

    p = start(child)
    assert pipe.recv() == "holding"
    assert m.lock(blocking=False) is False
    assert m.owns_lock is False
    pipe.parent.send("release")
    assert joined(p) == 0
    assert m.lock() is True
    assert u64(side) == 41
    m.unlock()
    assert calls == []


@pytest.mark.parametrize("kind", KINDS + ["pymutex"])
def test_a_child_killed_holding_is_reported_to_the_parent(path, tmp_path, kind):
    calls = []
    if kind == "pymutex":
        m = pymutex.SharedMutex(path, lambda: calls.append(1) or True)
    else:
        s = Shared(kind, path, tmp_path)
    pipe = Pipe()

    def child():
        if kind == "pymutex":
            assert m.lock()
        else:
            g = s.take()
            g.__enter__()
            g.set_label("forked child")
        pipe.child.send("holding")
        pipe.child.recv()  # until SIGKILLed

    p = start(child)
    assert pipe.recv() == "holding"
    p.kill()
    assert joined(p) == -9
    if kind == "pymutex":
        assert m.lock() is True
        assert calls == [1]
        m.unlock()
        assert m.lock() is True
        m.unlock()
        assert calls == [1]
        return
    with s.take() as g:
        assert g.owner_died
        assert g.previous_owner.pid == p.pid
        assert g.previous_owner.label == "forked child"
        g.mark_consistent()
    with s.take() as g:
        assert not g.owner_died


class LeaveBlock(Exception):
    pass


@pytest.mark.parametrize("how", ["cleanly", "by-exception"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_child_leaving_a_block_held_at_fork_leaves_the_parent_s_lock(
    path, tmp_path, kind, how
):
    """os.fork() inside the parent's with-block: the child leaves the block
    (as the with statement does), then tries to take it; the parent, still
    inside, checks the lock is still its own, then leaves cleanly."""
    s = Shared(kind, path, tmp_path)
    parent = os.getpid()
    r, w = os.pipe()
    left = None
    try:
        with s.take() as g:
            if os.fork() == 0:
                os.close(r)
                if how == "by-exception":
                    raise LeaveBlock()
            else:
                os.close(w)
                in_parent_after_child(s, g, r, parent)
    except BaseException as e:
        if os.getpid() == parent:
            raise
        left = None if isinstance(e, LeaveBlock) else e
    if os.getpid() != parent:
        child_after_block(s, w, left)
    with s.take() as g:
        assert not g.owner_died  # neither the child's exit of the block nor its death


def child_after_block(s, w, left):
    """In the fork child, after it left the block: reports whether leaving
    raised, and what taking the lock gives; never returns."""
    try:
        try:
            s.try_take().__exit__(None, None, None)
            took = "took it"
        except rm.WouldBlock:
            took = "busy"
        os.write(w, f"left {left!r}, {took}".encode())
    finally:
        os._exit(0)


def in_parent_after_child(s, g, r, parent):
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()  # until the child exits
    assert said == "left None, busy"
    assert g.held
    with pytest.raises(rm.WouldBlock):  # another thread: still held
        run_thread(s.try_take)
    if s.kind == "mutex":
        assert s.h.status()["owner"]["pid"] == parent


def test_a_pymutex_lock_held_at_fork_is_not_the_child_s(path):
    calls = []
    m = pymutex.SharedMutex(path, lambda: calls.append(1) or True)
    assert m.lock()
    pipe = Pipe()

    def child():
        try:
            m.unlock()
            pipe.child.send("unlocked?!")
        except PermissionError as e:
            pipe.child.send(f"unlock: errno {e.errno}")
        pipe.child.send(f"try: {m.lock(blocking=False)}")

    p = start(child)
    assert pipe.recv() == f"unlock: errno {errno.EPERM}"
    assert pipe.recv() == "try: False"
    assert joined(p) == 0
    assert m.owns_lock
    assert run_thread(lambda: m.lock(blocking=False)) is False  # still held here
    m.unlock()
    assert m.lock(blocking=False) is True
    m.unlock()
    assert calls == []
