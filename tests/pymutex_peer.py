"""The calls pymutex makes through ctypes, as a test peer.

A pymutex file is one bare glibc pthread_mutex_t: created with mode 0400,
initialised ERRORCHECK + ROBUST + PSHARED, then chmodded 0600.

usage: pymutex_peer.py create|hold|trylock|lock PATH
"""
import ctypes
import mmap
import os
import sys
import time

EOWNERDEAD = 130
EBUSY = 16
PTHREAD_MUTEX_ERRORCHECK = 2
PTHREAD_PROCESS_SHARED = 1
PTHREAD_MUTEX_ROBUST = 1
SIZE = 40  # sizeof(pthread_mutex_t) on x86_64 glibc

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def say(msg):
    print(msg, flush=True)


def create(path):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o400)
    os.ftruncate(fd, SIZE)
    mm = mmap.mmap(fd, SIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    attr = ctypes.create_string_buffer(8)
    assert libc.pthread_mutexattr_init(attr) == 0
    assert libc.pthread_mutexattr_settype(attr, PTHREAD_MUTEX_ERRORCHECK) == 0
    assert libc.pthread_mutexattr_setpshared(attr, PTHREAD_PROCESS_SHARED) == 0
    assert libc.pthread_mutexattr_setrobust(attr, PTHREAD_MUTEX_ROBUST) == 0
    assert libc.pthread_mutex_init(ctypes.c_void_p(addr), attr) == 0
    os.fchmod(fd, 0o600)
    say("created")


def load(path):
    # pymutex's loader insists on the exact size.
    fd = os.open(path, os.O_RDWR)
    assert os.fstat(fd).st_size == SIZE, "not a pymutex file"
    mm = mmap.mmap(fd, SIZE)
    return mm, ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(mm)))


def recovered(m):
    # pymutex's recovery callback, then pthread_mutex_consistent.
    say("recovered")
    assert libc.pthread_mutex_consistent(m) == 0


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "create":
        return create(path)
    mm, m = load(path)
    if cmd == "hold":
        r = libc.pthread_mutex_lock(m)
        if r == EOWNERDEAD:
            recovered(m)
        say("locked")
        while True:
            time.sleep(3600)
    elif cmd == "trylock":
        r = libc.pthread_mutex_trylock(m)
        if r == EBUSY:
            say("busy")
        elif r in (0, EOWNERDEAD):
            if r == EOWNERDEAD:
                recovered(m)
            say("locked")
            libc.pthread_mutex_unlock(m)
        else:
            say("error %d" % r)
    elif cmd == "lock":
        r = libc.pthread_mutex_lock(m)
        if r == EOWNERDEAD:
            recovered(m)
        elif r != 0:
            say("error %d" % r)
            return
        say("locked")
        libc.pthread_mutex_unlock(m)


main()
