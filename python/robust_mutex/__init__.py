"""robust_mutex: a crash-safe, path-named, process-shared lock for Linux.

A robust pthread mutex in a memory-mapped file (the Rust crate robust-mutex),
beside a value of ``size`` bytes. When a holder dies (SIGKILL, a crash, a thread
that exits holding it, or an exception escaping its with-block), the next
locker in any process gets ``owner_died`` and repairs the value before
``mark_consistent()``::

    import robust_mutex as rm

    m = rm.SharedMutex("/dev/shm/jobs.lock", size=16)
    with m.lock(timeout=5) as g:
        if g.owner_died:
            repair(g.value)
            g.mark_consistent()
        g.value[0:8] = ...

Log records go to Python's ``logging``, logger ``robust_mutex``.
"""

import atexit as _atexit
import ctypes as _ctypes
import os as _os

from ._errors import (
    Deadlock,
    Error,
    FileChanged,
    InvalidFile,
    NotOwner,
    NotRecoverable,
    Refused,
    Stuck,
    TimedOut,
    TooManyHeld,
    WouldBlock,
)
from ._native import (
    Guard,
    Owner,
    Permit,
    Semaphore,
    SharedMutex,
    inspect,
    remove,
    reset,
    _flush_log,
    _forked,
    _set_view_factory,
)

__version__ = "0.1.0"

__all__ = [
    "Deadlock",
    "Error",
    "FileChanged",
    "Guard",
    "InvalidFile",
    "NotOwner",
    "NotRecoverable",
    "Owner",
    "Permit",
    "Refused",
    "Semaphore",
    "SharedMutex",
    "Stuck",
    "TimedOut",
    "TooManyHeld",
    "WouldBlock",
    "inspect",
    "remove",
    "reset",
]


def _view(address, size, owner, format="B"):
    """A writable memoryview (`format`) of `size` bytes at `address`,
    keeping `owner` (the handle's mapping) alive."""
    array = (_ctypes.c_ubyte * size).from_address(address)
    array._owner = owner
    view = memoryview(array).cast("B")
    return view if format == "B" else view.cast(format)


_set_view_factory(_view)
_atexit.register(_flush_log)
# A guard inherited through fork is the parent's: the child's exit of its
# block must not touch the lock.
_os.register_at_fork(after_in_child=_forked)
