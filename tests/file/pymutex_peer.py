"""A test peer that makes the calls pymutex makes through ctypes.

pymutex (github.com/HMaker/pymutex, not on PyPI) keeps one bare glibc
pthread_mutex_t in a file, with no header. Its creator opens the path with
O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC|O_TRUNC and mode 0400, initialises an
ERRORCHECK + ROBUST + PSHARED mutex in a private buffer, writes the buffer
with one write(), maps the file and chmods it to 0600. Its loader opens the
file O_RDWR (retrying PermissionError for 2 s, which is how it waits for a
creator), insists that the size is exactly sizeof(pthread_mutex_t), and maps
it. A blocking lock is a loop of pthread_mutex_timedlock calls with 1 s
CLOCK_REALTIME deadlines; a non-blocking one is pthread_mutex_trylock.
EOWNERDEAD calls the recovery callback: if it returns True,
pthread_mutex_consistent; if False, pthread_mutex_unlock (the mutex becomes
not recoverable).

usage: pymutex_peer.py COMMAND PATH [OPTIONS]

  create PATH [--stop-at STAGE] [--pause-at STAGE] [--hold]
      pymutex's creator. STAGE is "opened" (the empty 0400 file exists) or
      "written" (the 0400 file holds the initialised mutex, not yet chmodded).
      --stop-at prints STAGE and sleeps until killed; --pause-at prints STAGE
      and goes on after a line on stdin. Prints "created"; with --hold it then
      locks, prints "locked" and unlocks after a line on stdin ("unlocked").
  hold PATH       lock; print "locked"; on a stdin line "unlock": unlock,
                  print "unlocked"; on EOF sleep until killed
  lock PATH [--refuse]
                  print "waiting", then pymutex's blocking lock; on EOWNERDEAD
                  print "recovered" (the recovery callback; with --refuse it
                  returns False: print "refused", unlock, exit); print
                  "locked"; unlock
  trylock PATH    pthread_mutex_trylock: print "busy" or "locked" (after
                  "recovered" on EOWNERDEAD); unlock
  load PATH       pymutex's loader alone: "loaded", "invalid" or "timeout"

Any other outcome prints "error N" with the errno value.
"""
import ctypes
import errno
import mmap
import os
import stat
import sys
import time

EOWNERDEAD = errno.EOWNERDEAD
ENOTRECOVERABLE = errno.ENOTRECOVERABLE
PTHREAD_MUTEX_ERRORCHECK = 2
PTHREAD_MUTEX_ROBUST = 1
PTHREAD_PROCESS_SHARED = 1
# sizeof(pthread_mutex_t) on 64-bit glibc (x86_64, aarch64), as pymutex has it
SIZE = 40 if ctypes.sizeof(ctypes.c_void_p) == 8 else 24
ATTR_SIZE = 4
LOAD_TIMEOUT = 2.0
HEARTBEAT = 1.0

try:
    pt = ctypes.CDLL("libpthread.so.0", use_errno=True)  # what pymutex links
except OSError:
    pt = ctypes.CDLL("libc.so.6", use_errno=True)


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def say(msg):
    print(msg, flush=True)


def option(name):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return None


def stage(name):
    if option("--stop-at") == name:
        say(name)
        while True:
            time.sleep(3600)
    if option("--pause-at") == name:
        say(name)
        sys.stdin.readline()


def check(e):
    if e != 0:
        raise OSError(e, os.strerror(e))


def create(path):
    fd = os.open(
        path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_TRUNC,
        stat.S_IRUSR)
    stage("opened")
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    check(pt.pthread_mutexattr_init(ctypes.byref(attr)))
    check(pt.pthread_mutexattr_settype(ctypes.byref(attr), PTHREAD_MUTEX_ERRORCHECK))
    check(pt.pthread_mutexattr_setrobust(ctypes.byref(attr), PTHREAD_MUTEX_ROBUST))
    check(pt.pthread_mutexattr_setpshared(ctypes.byref(attr), PTHREAD_PROCESS_SHARED))
    buf = ctypes.create_string_buffer(SIZE)
    check(pt.pthread_mutex_init(ctypes.byref(buf), ctypes.byref(attr)))
    assert os.write(fd, buf) == SIZE
    mm = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_WRITE | mmap.PROT_READ)
    stage("written")
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    say("created")
    if "--hold" in sys.argv:
        m = ctypes.byref(ctypes.c_char.from_buffer(mm))
        lock(m)
        say("locked")
        sys.stdin.readline()
        check(pt.pthread_mutex_unlock(m))
        say("unlocked")


def load(path):
    """pymutex's loader: returns (mmap, mutex pointer), or None if invalid."""
    waited = 0.0
    while True:
        try:
            fd = os.open(path, os.O_RDWR)
            break
        except PermissionError:
            if waited >= LOAD_TIMEOUT:
                raise TimeoutError(path)
            time.sleep(0.2)
            waited += 0.2
    if os.lseek(fd, 0, os.SEEK_END) != SIZE:
        os.close(fd)
        return None
    mm = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_WRITE | mmap.PROT_READ)
    return mm, ctypes.byref(ctypes.c_char.from_buffer(mm))


def recover(m, e):
    """EOWNERDEAD or ENOTRECOVERABLE after a lock call, as pymutex handles
    them. Returns True if the lock is now held and consistent."""
    if e == ENOTRECOVERABLE:
        say("not-recoverable")
        return False
    if e != EOWNERDEAD:
        say("error %d" % e)
        return False
    say("recovered")  # the recovery callback runs here, holding the lock
    if "--refuse" in sys.argv:  # the callback returned False
        say("refused")
        check(pt.pthread_mutex_unlock(m))
        return False
    check(pt.pthread_mutex_consistent(m))
    return True


def lock(m):
    """pymutex's blocking lock: timedlock with 1 s CLOCK_REALTIME deadlines."""
    while True:
        t = time.clock_gettime(time.CLOCK_REALTIME) + HEARTBEAT
        ts = timespec(int(t), int((t - int(t)) * 1e9))
        e = pt.pthread_mutex_timedlock(m, ctypes.byref(ts))
        if e == 0:
            return True
        if e != errno.ETIMEDOUT:
            return recover(m, e)


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "create":
        return create(path)
    try:
        loaded = load(path)
    except TimeoutError:
        return say("timeout")
    if loaded is None:
        return say("invalid")
    mm, m = loaded
    if cmd == "load":
        say("loaded")
    elif cmd == "hold":
        if not lock(m):
            return
        say("locked")
        if sys.stdin.readline().strip() == "unlock":
            check(pt.pthread_mutex_unlock(m))
            say("unlocked")
            return
        while True:
            time.sleep(3600)
    elif cmd == "lock":
        say("waiting")
        if lock(m):
            say("locked")
            check(pt.pthread_mutex_unlock(m))
    elif cmd == "trylock":
        e = pt.pthread_mutex_trylock(m)
        if e == errno.EBUSY:
            say("busy")
        elif e == 0 or recover(m, e):
            say("locked")
            check(pt.pthread_mutex_unlock(m))
    else:
        raise SystemExit("unknown command " + cmd)
    del mm  # kept mapped until here, as pymutex keeps it for the object's life


main()
