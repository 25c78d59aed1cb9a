#!/usr/bin/env python3
"""The seeds' workload, in Python: robust_mutex against posix_ipc and pymutex.

P processes (default 4) each run N cycles of: lock, counter + 1 (a u64 in
shared memory), unlock. All contenders run in ONE invocation, in interleaved
rounds (each round runs every contender once, the order rotated every round);
the table gives, per contender, the median cycles/s over the rounds with the
spread (min-max), and the median of the per-round ratios to posix_ipc (and,
for the drop-in, to pymutex) with their spread. A second row set runs one
process alone (uncontended).

Contenders (the counter's code is what each library's users write):

* ``dropin``: ``robust_mutex.pymutex`` (the pymutex drop-in):
  ``m.lock(); counter.value += 1; m.unlock()``, the counter a
  ``ctypes.c_uint64`` over an mmap'd file (as in pymutex's own test script);
* ``with_form``: ``robust_mutex.SharedMutex(path, size=8)`` in the
  with-block form, the counter as for dropin:
  ``with m.lock(): counter.value += 1``;
* ``with``: ``robust_mutex.SharedMutex(path, size=8, format='Q')``:
  ``with m.lock() as g: g.value[0] += 1``, the counter the lock's
  own value;
* ``posix_ipc``: ``posix_ipc.Semaphore`` (initial value 1):
  ``s.acquire(); counter.value += 1; s.release()``, the counter as for dropin
  (the reference of every ratio);
* ``posix_ipc_with``: the same semaphore in its own with-block,
  ``with s: counter.value += 1`` (what a with-block costs a C extension);
* ``pymutex``: pymutex itself (https://github.com/HMaker/pymutex; not on PyPI):
  as dropin. Found through ``--pymutex DIR`` or the environment variable
  ROBUST_MUTEX_PYMUTEX_PATH (a directory that holds ``pymutex/``); without
  it the row says "not run".

Each process is a fresh interpreter (this script re-run with ``--role``). It
opens its lock (the parent created every file first), says "ready", and
blocks reading a pipe whose write end the parent closes once all are ready:
all start together. A run's time is from the first process's start to the
last one's finish. After every run the final counter must be exactly P x N:
anything else stops the benchmark with an error (exit status 1).

    python python/bench/seeds.py                      # about 85 s here
    python python/bench/seeds.py --quick              # a smoke run: seconds
    python python/bench/seeds.py --pymutex /tmp/pymutex-src

Prints the markdown table for docs/benchmarks.md and the machine facts.
"""

import argparse
import ctypes
import json
import mmap
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PYMUTEX_ENV = "ROBUST_MUTEX_PYMUTEX_PATH"

# key -> (library row label, code row label)
CONTENDERS = {
    "dropin": (
        "robust_mutex.pymutex (the drop-in)",
        "`m.lock(); counter.value += 1; m.unlock()`",
    ),
    "with_form": (
        "robust_mutex.SharedMutex (with-block)",
        "`with m.lock(): counter.value += 1`",
    ),
    "with": (
        "robust_mutex.SharedMutex (with-block, its value)",
        "`with m.lock() as g: g.value[0] += 1` (format='Q')",
    ),
    "posix_ipc": (
        "posix_ipc.Semaphore(initial_value=1)",
        "`s.acquire(); counter.value += 1; s.release()`",
    ),
    "posix_ipc_with": (
        "posix_ipc.Semaphore, its with-block",
        "`with s: counter.value += 1`",
    ),
    "pymutex": (
        "pymutex (HMaker, ctypes)",
        "`m.lock(); counter.value += 1; m.unlock()`",
    ),
}
ORDER = ["dropin", "with_form", "with", "posix_ipc", "posix_ipc_with", "pymutex"]

# (contender, against, minimum ratio), judged on the median per-round ratio
# of the contended rows.
TARGETS = [
    ("dropin", "posix_ipc", 1.0),
    ("dropin", "pymutex", 2.0),
    ("with_form", "posix_ipc", 0.7),
    ("with", "posix_ipc", 0.7),
]


class BenchError(Exception):
    """A run went wrong (a wrong final counter, a child that failed)."""


def _recover():
    """The recovery callback of dropin and pymutex: nothing to repair here
    (no process dies in this benchmark)."""
    return True


# ---------------------------------------------------------------- children


def _counter(path):
    """A c_uint64 over the first 8 bytes of the mmap'd file at `path`, as the
    seeds' users keep their shared counter."""
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)
    return mm, ctypes.c_uint64.from_buffer(mm)


def _loop_dropin(args):
    import robust_mutex.pymutex as mutex

    m = mutex.SharedMutex(args.lock, _recover)
    _mm, counter = _counter(args.counter)

    def run(n):
        for _ in range(n):
            m.lock()
            counter.value += 1
            m.unlock()

    return run


def _loop_with(args):
    import robust_mutex as rm

    m = rm.SharedMutex(args.lock, size=8, create=False, format="Q")

    def run(n):
        for _ in range(n):
            with m.lock() as g:
                g.value[0] += 1

    return run


def _loop_with_form(args):
    import robust_mutex as rm

    m = rm.SharedMutex(args.lock, size=8, create=False)
    _mm, counter = _counter(args.counter)

    def run(n):
        for _ in range(n):
            with m.lock():
                counter.value += 1

    return run


def _loop_posix_ipc(args):
    import posix_ipc

    s = posix_ipc.Semaphore(args.lock)
    _mm, counter = _counter(args.counter)

    def run(n):
        for _ in range(n):
            s.acquire()
            counter.value += 1
            s.release()

    return run


def _loop_posix_ipc_with(args):
    import posix_ipc

    s = posix_ipc.Semaphore(args.lock)
    _mm, counter = _counter(args.counter)

    def run(n):
        for _ in range(n):
            with s:
                counter.value += 1

    return run


def _loop_pymutex(args):
    sys.path.insert(0, args.pymutex)
    from pymutex import mutex

    m = mutex.SharedMutex(args.lock, _recover)
    _mm, counter = _counter(args.counter)

    def run(n):
        for _ in range(n):
            m.lock()
            counter.value += 1
            m.unlock()

    return run


LOOPS = {
    "dropin": _loop_dropin,
    "with": _loop_with,
    "with_form": _loop_with_form,
    "posix_ipc": _loop_posix_ipc,
    "posix_ipc_with": _loop_posix_ipc_with,
    "pymutex": _loop_pymutex,
}


def child_main(args):
    """One process of a run: open, say ready, wait for the go, run, report."""
    run = LOOPS[args.role](args)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while os.read(args.go_fd, 1):  # EOF: the parent closed the write end
        pass
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic_ns()
    run(args.cycles)
    t1 = time.monotonic_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "t0": t0,
        "t1": t1,
        "nvcsw": ru1.ru_nvcsw - ru0.ru_nvcsw,
        "nivcsw": ru1.ru_nivcsw - ru0.ru_nivcsw,
        "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- parent


def _make_files(key, workdir, run_id):
    """Creates the lock (and counter) of one run; returns (lock, counter,
    cleanup, read_counter)."""
    counter = os.path.join(workdir, f"{run_id}.counter")
    if key != "with":
        with open(counter, "wb") as f:
            f.write(bytes(8))

    def read_file_counter():
        with open(counter, "rb") as f:
            return int.from_bytes(f.read(8), "little")

    if key in ("posix_ipc", "posix_ipc_with"):
        import posix_ipc

        name = f"/rm-seeds-{os.getpid()}-{run_id}"
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=1).close()
        return (
            name,
            counter,
            lambda: posix_ipc.unlink_semaphore(name),
            read_file_counter,
        )

    lock = os.path.join(workdir, f"{run_id}.lock")
    if key == "with":
        import robust_mutex as rm

        rm.SharedMutex(lock, size=8)

        def read_value():
            m = rm.SharedMutex(lock, size=8, create=False)
            with m.lock() as g:
                if g.owner_died:
                    raise BenchError(f"{key}: a process died holding the lock")
                return int.from_bytes(bytes(g.value), "little")

        return lock, None, lambda: None, read_value
    if key == "with_form":
        import robust_mutex as rm

        rm.SharedMutex(lock, size=8)
        return lock, counter, lambda: None, read_file_counter
    if key == "dropin":
        import robust_mutex.pymutex as mutex
    else:
        sys.path.insert(0, ARGS.pymutex)
        from pymutex import mutex
    m = mutex.SharedMutex(lock, _recover)
    del m
    return lock, counter, lambda: None, read_file_counter


def one_run(key, procs, cycles, workdir, run_id):
    """Runs `procs` processes x `cycles` of contender `key`; checks the final
    counter; returns (cycles per second, voluntary switches per 1000 cycles,
    CPU time (user + system, all processes) per cycle in ns)."""
    lock, counter, cleanup, read_counter = _make_files(key, workdir, run_id)
    go_r, go_w = os.pipe()
    kids = []
    try:
        for _ in range(procs):
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--role",
                key,
                "--lock",
                lock,
                "--cycles",
                str(cycles),
                "--go-fd",
                str(go_r),
            ]
            if counter is not None:
                cmd += ["--counter", counter]
            if key == "pymutex":
                cmd += ["--pymutex", ARGS.pymutex]
            kids.append(
                subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, pass_fds=(go_r,), text=True
                )
            )
        os.close(go_r)
        go_r = None
        for kid in kids:
            line = kid.stdout.readline()
            if line != "ready\n":
                raise BenchError(
                    f"{key}: a child failed to start (said {line!r}, exit {kid.wait()})"
                )
        os.close(go_w)  # go
        go_w = None
        reports = []
        for kid in kids:
            line = kid.stdout.readline()
            status = kid.wait()
            if status != 0 or not line:
                raise BenchError(f"{key}: a child failed (exit status {status})")
            reports.append(json.loads(line))
        kids = []
        final = read_counter()
        if final != procs * cycles:
            raise BenchError(
                f"{key}: WRONG FINAL COUNTER {final}, expected {procs} x {cycles} = "
                f"{procs * cycles}: the lock let two processes in at once"
            )
    finally:
        for fd in (go_r, go_w):
            if fd is not None:
                os.close(fd)
        for kid in kids:
            kid.kill()
            kid.wait()
        cleanup()
    elapsed = (max(r["t1"] for r in reports) - min(r["t0"] for r in reports)) / 1e9
    total = procs * cycles
    sleeps = sum(r["nvcsw"] for r in reports) * 1000 / total
    cpu = sum(r["cpu"] for r in reports) * 1e9 / total
    return total / elapsed, sleeps, cpu


def available(key):
    """None if contender `key` can run here, else why not."""
    try:
        if key == "dropin":
            import robust_mutex.pymutex  # noqa: F401
        elif key in ("with", "with_form"):
            import robust_mutex  # noqa: F401
        elif key in ("posix_ipc", "posix_ipc_with"):
            import posix_ipc  # noqa: F401
        elif key == "pymutex":
            if not ARGS.pymutex or not os.path.isdir(
                os.path.join(ARGS.pymutex, "pymutex")
            ):
                return "not run (pymutex not found)"
    except ImportError as e:
        return f"not run ({e})"
    return None


def run_set(keys, procs, cycles, rounds, workdir, tag):
    """`rounds` interleaved rounds of every key; returns {key: [(rate, sleeps, cpu)]}."""
    results = {k: [] for k in keys}
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            rate, sleeps, cpu = one_run(k, procs, cycles, workdir, f"{tag}-{r}-{k}")
            results[k].append((rate, sleeps, cpu))
            print(
                f"  round {r + 1}/{rounds} {procs}x{cycles} {k}: {rate:,.0f} cycles/s, "
                f"{sleeps:.1f} sleeps/1k, {cpu:.0f} ns CPU per cycle",
                file=sys.stderr,
                flush=True,
            )
    return results


def _ratios(results, a, b):
    """Per-round ratios a/b (same round), or None if either did not run."""
    if a not in results or b not in results:
        return None
    return [x[0] / y[0] for x, y in zip(results[a], results[b])]


def _spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def _rate(v):
    return f"{v / 1000:,.0f} k"


def _ratio(v):
    return f"{v:.2f}×"


def table_rows(results, skipped, procs, cycles, contended):
    rows = []
    workload = (
        f"{procs} processes × {cycles:,}"
        if procs > 1
        else f"1 process × {cycles:,} (uncontended)"
    )
    for k in ORDER:
        lib, code = CONTENDERS[k]
        label = f"**{lib}**" if k in ("dropin", "with", "with_form") else lib
        if k in skipped:
            rows.append(f"| {workload} | {label}: {code} | {skipped[k]} | | | | |")
            continue
        if k not in results:
            continue
        rates = [x[0] for x in results[k]]
        sleeps = statistics.median(x[1] for x in results[k])
        cpu = statistics.median(x[2] for x in results[k])
        vs = _ratios(results, k, "posix_ipc")
        if k == "posix_ipc":
            ratio = "1 (the reference)"
        elif vs:
            ratio = _spread(vs, _ratio)
        else:
            ratio = "n/a (posix_ipc not run)"
        if k == "dropin":
            vp = _ratios(results, k, "pymutex")
            if vp:
                ratio += f"; {_spread(vp, _ratio)} pymutex"
        verdicts = []
        if contended:
            for who, against, floor in TARGETS:
                if who != k:
                    continue
                got = _ratios(results, who, against)
                if got is None:
                    verdicts.append(
                        f"≥ {floor:g}× {against}: not judged ({against} not run)"
                    )
                else:
                    met = statistics.median(got) >= floor
                    verdicts.append(
                        f"≥ {floor:g}× {against}: **{'met' if met else 'missed'}**"
                    )
        rows.append(
            f"| {workload} | {label}: {code} | {_spread(rates, _rate)} | {ratio} | "
            f"{sleeps:.1f} | {cpu:,.0f} | {'; '.join(verdicts)} |"
        )
    return rows


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions():
    out = []
    try:
        import robust_mutex

        out.append(f"robust_mutex {getattr(robust_mutex, '__version__', '?')}")
    except ImportError:
        out.append("robust_mutex not importable")
    try:
        import posix_ipc

        out.append(f"posix_ipc {posix_ipc.VERSION}")
    except ImportError:
        out.append("posix_ipc not installed")
    out.append(f"pymutex from {ARGS.pymutex}" if ARGS.pymutex else "pymutex not found")
    return ", ".join(out)


def parent_main(args):
    keys = [k for k in ORDER if not args.only or k in args.only]
    skipped = {}
    for k in keys:
        why = available(k)
        if why:
            skipped[k] = why
    runnable = [k for k in keys if k not in skipped]
    if not runnable:
        raise BenchError("no contender can run: " + "; ".join(skipped.values()))
    load0 = os.getloadavg()
    start = time.monotonic()
    os.makedirs(args.dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="rm-seeds-", dir=args.dir)
    try:
        contended = run_set(
            runnable, args.procs, args.cycles, args.rounds, workdir, "c"
        )
        alone = None
        if args.uncontended_cycles > 0:
            alone = run_set(
                runnable, 1, args.uncontended_cycles, args.rounds, workdir, "u"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - start
    load1 = os.getloadavg()

    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0))
    libc = " ".join(platform.libc_ver())
    print(
        f"Machine: {platform.python_implementation()} {platform.python_version()}, "
        f"{usable} of {cpus} CPUs ({_cpu_model()}), Linux {platform.release()}, {libc}; "
        f"{_versions()}; files in {args.dir}."
    )
    print(
        f"Tree: git commit {_git_commit()}. Load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
        f" → {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {wall:.0f} s wall, "
        f"{args.rounds} interleaved rounds."
    )
    print("Every final counter was exactly processes × cycles.")
    print()
    print(
        f"| workload | contender | cycles/s: median of {args.rounds} (min–max) "
        f"| ratio to posix_ipc: median of per-round ratios (min–max) "
        f"| sleeps per 1k cycles (median) | CPU ns per cycle (median) | target |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in table_rows(contended, skipped, args.procs, args.cycles, True):
        print(row)
    if alone is not None:
        for row in table_rows(alone, skipped, 1, args.uncontended_cycles, False):
            print(row)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--procs", type=int, default=4, help="processes of the contended runs (4)"
    )
    p.add_argument(
        "--cycles",
        type=int,
        default=300_000,
        help="cycles per process, contended (300,000)",
    )
    p.add_argument(
        "--uncontended-cycles",
        type=int,
        default=1_000_000,
        help="cycles of the one-process runs (1,000,000; 0: skip them)",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few seconds (1 round, 5,000 and 20,000 cycles): "
        "checks every contender and counter, its figures mean nothing",
    )
    p.add_argument(
        "--dir",
        default="/dev/shm",
        help="where the lock and counter files go (/dev/shm)",
    )
    p.add_argument(
        "--pymutex",
        default=os.environ.get(PYMUTEX_ENV),
        help=f"a directory holding pymutex/ (default: ${PYMUTEX_ENV})",
    )
    p.add_argument(
        "--only",
        type=lambda s: s.split(","),
        help="a comma-separated subset of " + ",".join(ORDER),
    )
    # a child's arguments (this script re-run by itself)
    p.add_argument("--role", choices=ORDER, help=argparse.SUPPRESS)
    p.add_argument("--lock", help=argparse.SUPPRESS)
    p.add_argument("--counter", help=argparse.SUPPRESS)
    p.add_argument("--go-fd", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.cycles, args.uncontended_cycles = 1, 5_000, 20_000
    if args.only:
        bad = [k for k in args.only if k not in ORDER]
        if bad:
            p.error(
                f"--only: unknown contender {', '.join(bad)} (choose from {', '.join(ORDER)})"
            )
    if args.pymutex:
        args.pymutex = os.path.abspath(args.pymutex)
    if (
        args.procs < 1
        or args.cycles < 1
        or args.rounds < 1
        or args.uncontended_cycles < 0
    ):
        p.error("--procs, --cycles and --rounds must be at least 1")
    return args


ARGS = None

if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    if ARGS.role:
        child_main(ARGS)
    else:
        try:
            parent_main(ARGS)
        except BenchError as e:
            print(f"seeds.py: error: {e}", file=sys.stderr)
            sys.exit(1)
