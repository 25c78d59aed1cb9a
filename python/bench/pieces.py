#!/usr/bin/env python3
"""Where a Python lock cycle's time goes: each piece timed alone, uncontended.

One process, nobody else locks. Every piece is a statement timed by
``timeit`` in batches of about 20 ms; the batches of all pieces are
interleaved (the order rotated every round) and each figure is the median
ns per statement over the rounds, the bare loop (``pass``) included: the
"net" column subtracts it. Times are the thread's CPU time
(``time.thread_time``), so another process's load does not count; the host's
speed still drifts between rounds, hence the last column: the median of the
per-round ratios to posix_ipc's ``s.acquire(); s.release()`` (same round). Reading it beside ``seeds.py``'s uncontended rows
tells the PyO3 call's price, the lock's, the guard's and the memoryview's.

    python python/bench/pieces.py                  # about 15 s here
    python python/bench/pieces.py --pymutex /tmp/pymutex-src

Prints a markdown table.
"""

import argparse
import ctypes
import mmap
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import timeit

PYMUTEX_ENV = "ROBUST_MUTEX_PYMUTEX_PATH"


def _counter(path):
    with open(path, "wb") as f:
        f.write(bytes(8))
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)
    return mm, ctypes.c_uint64.from_buffer(mm)


def pieces(workdir, pymutex_dir):
    """[(group, label, statement, globals)]"""
    out = []
    _mm, counter = _counter(os.path.join(workdir, "counter"))
    mv = memoryview(_mm).cast("Q")
    base = {"counter": counter, "mv": mv}
    out.append(("python", "bare loop", "pass", base))
    out.append(
        (
            "python",
            "`counter.value += 1` (ctypes c_uint64 over mmap)",
            "counter.value += 1",
            base,
        )
    )
    out.append(
        ("python", "`mv[0] += 1` (memoryview 'Q' over mmap)", "mv[0] += 1", base)
    )
    out.append(
        (
            "python",
            "`with tl: pass` (a threading.Lock: a with-block in C)",
            "with tl: pass",
            dict(base, tl=threading.Lock()),
        )
    )

    try:
        import posix_ipc

        name = f"/rm-pieces-{os.getpid()}"
        s = posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=1)
        posix_ipc.unlink_semaphore(name)
        g = dict(base, s=s)
        out.append(
            ("posix_ipc", "`s.acquire(); s.release()`", "s.acquire(); s.release()", g)
        )
        out.append(
            ("posix_ipc", "`s.value` (a C getter: the call floor)", "s.value", g)
        )
        out.append(
            ("posix_ipc", "`with s: pass` (its context manager)", "with s: pass", g)
        )
    except ImportError:
        pass

    try:
        import robust_mutex as rm
        import robust_mutex.pymutex as dropin

        d = dropin.SharedMutex(os.path.join(workdir, "dropin.lock"), lambda: True)
        g = dict(base, d=d)
        out.append(("drop-in", "`d.lock(); d.unlock()`", "d.lock(); d.unlock()", g))
        out.append(
            (
                "drop-in",
                "`d.lock(blocking=False); d.unlock()`",
                "d.lock(blocking=False); d.unlock()",
                g,
            )
        )
        out.append(("drop-in", "`d.owns_lock` (a property)", "d.owns_lock", g))

        m = rm.SharedMutex(os.path.join(workdir, "with.lock"), size=8)
        g = dict(base, m=m)
        out.append(
            ("SharedMutex", "`m.size` (a PyO3 getter: the call floor)", "m.size", g)
        )
        out.append(
            ("SharedMutex", "`m.try_lock().unlock()`", "m.try_lock().unlock()", g)
        )
        out.append(("SharedMutex", "`m.lock().unlock()`", "m.lock().unlock()", g))
        out.append(
            (
                "SharedMutex",
                "`m.lock()` dropped (refcount frees the guard)",
                "m.lock()",
                g,
            )
        )
        out.append(("SharedMutex", "`with m.lock(): pass`", "with m.lock(): pass", g))
        out.append(
            (
                "SharedMutex",
                "`with m.lock() as g: g.value`",
                "with m.lock() as g: g.value",
                g,
            )
        )
        out.append(
            (
                "SharedMutex",
                "`with m.lock() as g: g.value.cast('Q')`",
                "with m.lock() as g: g.value.cast('Q')",
                g,
            )
        )
        out.append(
            (
                "SharedMutex",
                "`with m.lock() as g: g.value.cast('Q')[0] += 1` (seeds.py's)",
                "with m.lock() as g: g.value.cast('Q')[0] += 1",
                g,
            )
        )
        out.append(
            (
                "SharedMutex",
                "`with m.lock() as g: g.owner_died`",
                "with m.lock() as g: g.owner_died",
                g,
            )
        )
    except ImportError as e:
        print(
            f"robust_mutex not importable ({e}): its rows are left out", file=sys.stderr
        )

    if pymutex_dir and os.path.isdir(os.path.join(pymutex_dir, "pymutex")):
        sys.path.insert(0, pymutex_dir)
        from pymutex import mutex

        p = mutex.SharedMutex(os.path.join(workdir, "pymutex.lock"), lambda: True)
        out.append(
            (
                "pymutex",
                "`p.lock(); p.unlock()`",
                "p.lock(); p.unlock()",
                dict(base, p=p),
            )
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    ap.add_argument(
        "--batch-ms", type=float, default=10.0, help="length of one batch (10 ms)"
    )
    ap.add_argument("--dir", default="/dev/shm", help="where the files go (/dev/shm)")
    ap.add_argument(
        "--pymutex",
        default=os.environ.get(PYMUTEX_ENV),
        help=f"a directory holding pymutex/ (default: ${PYMUTEX_ENV})",
    )
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="rm-pieces-", dir=args.dir)
    try:
        items = pieces(workdir, args.pymutex)
        # the names become locals of timeit's function, as in seeds.py's loops
        timers = [
            timeit.Timer(
                stmt,
                setup="; ".join(f"{k} = G_{k}" for k in g) or "pass",
                timer=time.thread_time,
                globals={f"G_{k}": v for k, v in g.items()},
            )
            for _, _, stmt, g in items
        ]
        # calibrate: statements per batch
        numbers = []
        for t in timers:
            n, secs = t.autorange()
            numbers.append(max(1, int(n * args.batch_ms / 1000 / secs)))
        times = [[] for _ in items]
        for r in range(args.rounds):
            k = r % len(items)
            for i in list(range(k, len(items))) + list(range(k)):
                times[i].append(timers[i].timeit(numbers[i]) / numbers[i] * 1e9)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    floor = statistics.median(times[0])
    ref = next((i for i, it in enumerate(items) if it[0] == "posix_ipc"), None)
    print(
        f"{platform.python_implementation()} {platform.python_version()}, Linux {platform.release()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{args.rounds} interleaved rounds of {args.batch_ms:g} ms batches."
    )
    print()
    print(
        "| group | statement | ns CPU (median, min–max) | net of the bare loop "
        "| × posix_ipc acquire+release (median, min–max) |"
    )
    print("|---|---|---|---|---|")
    for (group, label, _, _), ts in zip(items, times):
        med = statistics.median(ts)
        ratio = ""
        if ref is not None:
            rs = [a / b for a, b in zip(ts, times[ref])]
            ratio = f"{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"
        print(
            f"| {group} | {label} | {med:.0f} ({min(ts):.0f}–{max(ts):.0f}) | {med - floor:.0f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
