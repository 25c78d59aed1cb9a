"""The child process of the pymutex tests (no tests in here: it only runs as
``python test_pymutex_kid.py IMPL COMMAND PATH [ARGS]``).

IMPL is the pymutex to use: ``dropin`` (``import robust_mutex.pymutex as
mutex``), ``pymutex`` (``from pymutex import mutex``: the real one, on
PYTHONPATH) or, for ``count`` only, ``peer`` (tests/file/pymutex_peer.py's
exact ctypes calls). The same code runs on the drop-in and on pymutex: that
is what a drop-in means. Lines printed, as the peer prints them:

  create PATH       "created"
  hold PATH         lock(); "locked"; on a stdin line "unlock": unlock(),
                    "unlocked"; on EOF it exits holding (os._exit)
  lock PATH [--refuse]
                    "waiting"; lock(); "locked"; unlock()
  trylock PATH      lock(blocking=False): "busy", or "locked" then unlock()
  count PATH COUNTER N
                    "ready"; after a stdin line, N times: lock(), +1 on the
                    u64 in the file COUNTER (read, then write), unlock();
                    "done"
  interrupt PATH [TIMEOUT]
                    "tid N"; a blocking lock(timeout=TIMEOUT) that Ctrl-C
                    interrupts: "interrupted owns=B"; after a stdin line,
                    lock(): "locked", unlock()

The recovery callback prints "recovered" (with --refuse also "refused", and
returns False). InvalidSharedState prints "not-recoverable" (unless the
callback refused). Another outcome is a traceback and exit 1.
"""

import mmap
import os
import runpy
import struct
import sys
import threading


def say(msg):
    print(msg, flush=True)


def recovered():
    say("recovered")
    if "--refuse" in sys.argv:
        say("refused")
        return False
    return True


def count_with_peer(path, counter, n):
    """`count` through the peer's own functions (its main() runs `load`)."""
    peer = os.path.join(
        os.path.dirname(__file__), "..", "..", "tests", "file", "pymutex_peer.py"
    )
    sys.argv = [peer, "load", path]
    g = runpy.run_path(peer)  # prints "loaded"
    _mm, m = g["load"](path)
    with open(counter, "r+b") as f, mmap.mmap(f.fileno(), 8) as c:
        say("ready")
        sys.stdin.readline()
        for _ in range(n):
            assert g["lock"](m)
            (v,) = struct.unpack_from("<Q", c)
            struct.pack_into("<Q", c, 0, v + 1)
            g["check"](g["pt"].pthread_mutex_unlock(m))
    say("done")


def main():
    impl, cmd, path = sys.argv[1:4]
    if impl == "peer":
        return count_with_peer(path, sys.argv[4], int(sys.argv[5]))
    if impl == "dropin":
        import robust_mutex.pymutex as mutex
    else:
        from pymutex import mutex
    try:
        m = mutex.SharedMutex(path, recovered)
        if cmd == "create":
            say("created")
        elif cmd == "hold":
            assert m.lock() is True
            say("locked")
            if sys.stdin.readline().strip() != "unlock":
                os._exit(0)  # holding: the kernel marks the owner dead
            m.unlock()
            say("unlocked")
        elif cmd == "lock":
            say("waiting")
            assert m.lock() is True
            say("locked")
            m.unlock()
        elif cmd == "trylock":
            if m.lock(blocking=False):
                say("locked")
                m.unlock()
            else:
                say("busy")
        elif cmd == "count":
            with open(sys.argv[4], "r+b") as f, mmap.mmap(f.fileno(), 8) as c:
                say("ready")
                sys.stdin.readline()
                for _ in range(int(sys.argv[5])):
                    m.lock()
                    (v,) = struct.unpack_from("<Q", c)
                    struct.pack_into("<Q", c, 0, v + 1)
                    m.unlock()
            say("done")
        elif cmd == "interrupt":
            say(f"tid {threading.get_native_id()}")
            try:
                m.lock(timeout=float(sys.argv[4]) if len(sys.argv) > 4 else 0)
                say("locked?!")
            except KeyboardInterrupt:
                say(f"interrupted owns={m.owns_lock}")
            sys.stdin.readline()
            assert m.lock() is True
            say("locked")
            m.unlock()
        else:
            raise SystemExit("unknown command " + cmd)
    except mutex.InvalidSharedState:
        if "--refuse" not in sys.argv:
            say("not-recoverable")
    sys.stdout.flush()
    os._exit(0)  # pymutex's finalizer would unmap a held lock: skip it


if __name__ == "__main__":
    main()
