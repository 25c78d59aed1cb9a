"""The pymutex drop-in (robust_mutex.pymutex), point by point against
pymutex's API: lock/unlock/owns_lock, the errors, timeouts, owner death and
the recovery callback, logging, Ctrl-C. Other processes are real children
(test_pymutex_kid.py) and die by real SIGKILLs; every wait ends on a line,
an event or /proc, never on a sleep."""

import errno
import io
import logging
import os
import signal
import threading

import pytest
import robust_mutex as rm
import robust_mutex.pymutex as pymutex  # noqa: PLR0402 - the drop-in's own idiom
from conftest import WATCHDOG, RecoveryCallback, run_thread, wait_for_bare_waiter

KID = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_pymutex_kid.py")
#: sizeof(pthread_mutex_t) in pymutex (64-bit glibc): the whole file.
BARE_SIZE = 40


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "pymutex.lock")


def dropin(script_child, cmd, path, *args):
    """A child process running the drop-in: test_pymutex_kid.py dropin CMD."""
    return script_child([KID, "dropin", cmd, path, *args])


def killed_holder(script_child, path):
    """A child that locked `path` through the drop-in, SIGKILLed holding."""
    k = dropin(script_child, "hold", path)
    k.expect("locked")
    k.kill()


def holding_thread(m):
    """A thread holding m (the same instance, as in pymutex's README) until
    the returned event is set."""
    held, release = threading.Event(), threading.Event()

    def hold():
        assert m.lock()
        held.set()
        release.wait(WATCHDOG)
        m.unlock()

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(WATCHDOG)
    return t, release


def test_lock_returns_true_and_owns_lock_is_a_property(path):
    cb = RecoveryCallback()
    m = pymutex.SharedMutex(path, cb)
    assert m.owns_lock is False
    assert m.lock() is True
    assert m.owns_lock is True
    m.unlock()
    assert m.owns_lock is False
    assert m.lock(blocking=False) is True
    m.unlock()
    assert m.lock(timeout=5) is True
    m.unlock()
    assert os.path.getsize(path) == BARE_SIZE  # pymutex's format: one bare mutex
    assert cb.calls == 0


def test_exceptions_are_pymutex_s_and_the_package_s():
    assert issubclass(pymutex.InvalidSharedState, rm.NotRecoverable)
    assert issubclass(pymutex.UninitializedMutexError, Exception)


@pytest.mark.parametrize("form", [{}, {"blocking": False}, {"timeout": 0.05}])
def test_relock_in_the_same_thread_raises_edeadlk(path, form):
    m = pymutex.SharedMutex(path, RecoveryCallback())
    assert m.lock()
    with pytest.raises(OSError) as e:
        m.lock(**form)
    assert e.value.errno == errno.EDEADLK
    assert m.owns_lock
    assert run_thread(lambda: m.lock(blocking=False)) is False  # still held
    m.unlock()
    assert m.lock(blocking=False) is True
    m.unlock()


def test_unlock_when_not_owned_raises_permission_error(path):
    m = pymutex.SharedMutex(path, RecoveryCallback())
    with pytest.raises(PermissionError) as e:
        m.unlock()  # never locked
    assert e.value.errno == errno.EPERM
    assert m.lock()
    # pymutex's README shares one instance between threads: another thread
    # does not hold it, so its unlock is refused and ours stands.
    with pytest.raises(PermissionError) as e:
        run_thread(m.unlock)
    assert e.value.errno == errno.EPERM
    assert m.owns_lock
    assert run_thread(lambda: m.lock(blocking=False)) is False
    m.unlock()
    with pytest.raises(PermissionError):
        m.unlock()  # twice
    assert m.owns_lock is False


def test_two_instances_in_one_thread_are_one_lock(path):
    """The lock is the thread's: a second instance in the holding thread
    relocks into EDEADLK, and cannot unlock what the first one holds."""
    a = pymutex.SharedMutex(path, RecoveryCallback())
    b = pymutex.SharedMutex(path, RecoveryCallback())
    assert a.lock()
    for form in ({}, {"blocking": False}, {"timeout": 0.05}):
        with pytest.raises(OSError) as e:
            b.lock(**form)
        assert e.value.errno == errno.EDEADLK
    with pytest.raises(PermissionError):
        b.unlock()
    assert (a.owns_lock, b.owns_lock) == (True, False)
    a.unlock()
    assert b.lock(blocking=False) is True
    b.unlock()


@pytest.mark.parametrize("holder", ["process", "thread"])
def test_a_held_lock_gives_false_without_blocking_or_after_a_timeout(
    path, script_child, holder
):
    m = pymutex.SharedMutex(path, RecoveryCallback())
    if holder == "process":
        k = dropin(script_child, "hold", path)
        k.expect("locked")
    else:
        t, release = holding_thread(m)
    assert m.lock(blocking=False) is False
    assert m.lock(blocking=False, timeout=30) is False  # not blocking: one try
    assert m.lock(timeout=0.05) is False
    if holder == "process":
        assert m.owns_lock is False
        k.say("unlock")
        k.expect("unlocked")
    else:
        release.set()
        t.join(WATCHDOG)
    assert m.lock(blocking=False) is True
    m.unlock()


@pytest.mark.parametrize("form", [{}, {"timeout": 0}, {"timeout": -1}, {"timeout": 30}])
def test_a_blocking_lock_waits_until_the_holder_releases(path, form):
    """timeout <= 0 blocks without a limit (pymutex's default); the holder
    releases only once we wait in the kernel."""
    m = pymutex.SharedMutex(path, RecoveryCallback())
    holder, release = holding_thread(m)

    def release_once_we_sleep():
        wait_for_bare_waiter(path)
        release.set()

    releaser = threading.Thread(target=release_once_we_sleep)
    releaser.start()
    assert m.lock(**form) is True
    assert release.is_set()
    m.unlock()
    holder.join(WATCHDOG)
    releaser.join(WATCHDOG)


@pytest.mark.parametrize("form", [{}, {"blocking": False}, {"timeout": 30}])
def test_a_killed_holder_calls_the_callback_once_then_locks_are_clean(
    path, script_child, form
):
    cb = RecoveryCallback(True)
    other = pymutex.SharedMutex(path, RecoveryCallback())
    held_in_cb = []

    def repair():  # runs holding the lock: another instance cannot take it
        held_in_cb.append(run_thread(lambda: other.lock(blocking=False)) is False)
        return cb()

    m = pymutex.SharedMutex(path, repair)
    killed_holder(script_child, path)
    assert m.lock(**form) is True
    assert (cb.calls, held_in_cb) == (1, [True])
    assert m.owns_lock
    m.unlock()
    assert m.lock() is True
    m.unlock()
    assert cb.calls == 1
    assert dropin(script_child, "trylock", path).lines() == [
        "locked"
    ]  # clean there too


def test_a_holder_killed_while_we_sleep_calls_the_callback(path, script_child):
    cb = RecoveryCallback(True)
    m = pymutex.SharedMutex(path, cb)
    k = dropin(script_child, "hold", path)
    k.expect("locked")

    def kill_once_we_sleep():
        wait_for_bare_waiter(path)
        k.kill()

    killer = threading.Thread(target=kill_once_we_sleep)
    killer.start()
    assert m.lock() is True
    killer.join(WATCHDOG)
    assert cb.calls == 1
    m.unlock()


def assert_not_recoverable_everywhere(m, path, script_child, cb):
    """Every later lock raises InvalidSharedState: this instance (each form,
    the non-blocking one first: glibc's trylock bug must not turn the next
    into EDEADLK), a new one, another process. The callback is not called."""
    calls = cb.calls
    for form in ({"blocking": False}, {}, {"timeout": 0.05}, {}):
        with pytest.raises(pymutex.InvalidSharedState):
            m.lock(**form)
        assert m.owns_lock is False
    with pytest.raises(pymutex.InvalidSharedState):
        pymutex.SharedMutex(path, RecoveryCallback()).lock()
    assert dropin(script_child, "lock", path).lines() == ["waiting", "not-recoverable"]
    assert dropin(script_child, "trylock", path).lines() == ["not-recoverable"]
    assert cb.calls == calls


def test_a_callback_returning_false_makes_the_lock_not_recoverable(path, script_child):
    cb = RecoveryCallback(False)
    m = pymutex.SharedMutex(path, cb)
    killed_holder(script_child, path)
    with pytest.raises(pymutex.InvalidSharedState) as e:
        m.lock()
    assert isinstance(e.value, rm.NotRecoverable)
    assert cb.calls == 1
    assert m.owns_lock is False
    with pytest.raises(PermissionError):
        m.unlock()  # the failed lock left nothing held
    assert_not_recoverable_everywhere(m, path, script_child, cb)


class Boom(Exception):
    pass


def test_a_raising_callback_propagates_and_the_lock_is_not_recoverable(
    path, script_child
):
    boom = Boom("cannot repair")
    cb = RecoveryCallback(boom)
    m = pymutex.SharedMutex(path, cb)
    killed_holder(script_child, path)
    with pytest.raises(Boom) as e:
        m.lock()
    assert e.value is boom
    assert cb.calls == 1
    assert m.owns_lock is False
    assert_not_recoverable_everywhere(m, path, script_child, cb)


def test_configure_default_logging_adds_a_handler_and_an_owner_death_warns(
    path, script_child, caplog
):
    loggers = [logging.getLogger(n) for n in ("robust_mutex", "pymutex")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    try:
        pymutex.configure_default_logging()
        added = [h for lg, before, _ in saved for h in lg.handlers if h not in before]
        assert added, "configure_default_logging() added no handler"
        assert all(isinstance(h, logging.StreamHandler) for h in added)
        shown = io.StringIO()
        for h in added:
            h.setStream(shown)
        m = pymutex.SharedMutex(path, RecoveryCallback(True))
        killed_holder(script_child, path)
        with caplog.at_level(logging.WARNING):
            assert m.lock()
        m.unlock()
        ours = [
            r
            for r in caplog.records
            if r.name.split(".")[0] in ("robust_mutex", "pymutex")
        ]
        assert any(r.levelno >= logging.WARNING for r in ours), caplog.records
        assert shown.getvalue(), "the default handler showed nothing"
    finally:
        for lg, before, level in saved:
            for h in lg.handlers[:]:
                if h not in before:
                    lg.removeHandler(h)
            lg.setLevel(level)


@pytest.mark.parametrize("timeout", ["0", "600"])
def test_ctrl_c_interrupts_a_blocked_lock_and_leaves_the_lock_alone(
    path, script_child, timeout
):
    cb = RecoveryCallback(True)
    m = pymutex.SharedMutex(path, cb)
    assert m.lock()
    k = dropin(script_child, "interrupt", path, timeout)
    tid = int(k.read().split()[1])
    wait_for_bare_waiter(path, k.pid, tid)
    os.kill(k.pid, signal.SIGINT)
    k.expect("interrupted owns=False")
    # Still ours: another process is refused, and we hold it.
    assert dropin(script_child, "trylock", path).lines() == ["busy"]
    assert m.owns_lock
    with pytest.raises(OSError) as e:
        m.lock(blocking=False)
    assert e.value.errno == errno.EDEADLK
    # The interrupted child locks normally once we release: no death.
    k.say("again")
    wait_for_bare_waiter(path, k.pid, tid)
    m.unlock()
    k.expect("locked")
    assert k.lines() == []
    assert m.lock() is True
    m.unlock()
    assert cb.calls == 0


@pytest.mark.parametrize("content", [b"\x00" * 17, b"x" * BARE_SIZE * 2, None])
def test_a_file_that_is_not_a_pymutex_lock_is_refused_untouched(path, content):
    if content is None:  # a robust_mutex file with its header
        rm.SharedMutex(path, 8)
    else:
        with open(path, "wb") as f:
            f.write(content)
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(ValueError) as e:  # pymutex's error; ours is InvalidFile
        pymutex.SharedMutex(path, RecoveryCallback())
    assert isinstance(e.value, rm.InvalidFile)
    with open(path, "rb") as f:
        assert f.read() == before
