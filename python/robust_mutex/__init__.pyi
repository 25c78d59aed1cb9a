"""Type stubs for robust_mutex: a crash-safe, path-named, process-shared lock.

The lock is a robust pthread mutex in a memory-mapped file (the Rust crate
`robust-mutex`). When a holder dies (SIGKILL, a crash, a thread that exits
holding it, or an exception escaping a with-block), the next locker in any
process is told so (`owner_died`) and repairs the shared state before
`mark_consistent()`.
"""

import os
from types import TracebackType
from typing import Any, Dict, Optional, Type, TypeVar, Union

_Path = Union[str, "os.PathLike[str]"]
_H = TypeVar("_H", bound="_Held")

__version__: str

# ---------------------------------------------------------------- errors

class Error(Exception):
    """Base class of this package's own errors. Errors the OS has a class
    for are raised as that class (FileNotFoundError, PermissionError,
    FileExistsError, OSError), with the path and the cause in the message."""

class WouldBlock(Error, BlockingIOError):
    """try_lock / try_acquire: another thread or process holds it (errno EAGAIN)."""

class TimedOut(Error, TimeoutError):
    """The timeout passed before the lock was acquired (errno ETIMEDOUT).
    Also: a file still being created by another process after its wait."""

class NotRecoverable(Error):
    """A holder recovered from an owner death without mark_consistent(): the
    lock stays unusable for everybody until `reset(path)`."""

class Stuck(Error):
    """The holder is gone but the kernel never released the lock (for example a
    holder in another PID namespace, or a file from before a reboot).
    `reset(path, force=True)` replaces the file."""

class FileChanged(Error):
    """The file was truncated, overwritten or reset while this thread waited."""

class Deadlock(Error, OSError):
    """The calling thread already holds this lock (errno EDEADLK)."""

class NotOwner(Error, PermissionError):
    """Releasing a lock the calling thread does not hold (errno EPERM)."""

class TooManyHeld(Error):
    """The calling thread already holds the most locks one thread may hold."""

class InvalidFile(Error, ValueError):
    """The path is not a usable lock file of the kind asked for (foreign,
    corrupt, truncated, another format version or ABI, another value size or
    permit count, ...). The file is left untouched."""

class Refused(Error):
    """reset() or remove() refused: the lock is in use or healthy (use
    force=True). A file of another user is a PermissionError."""

# ---------------------------------------------------------------- records

class Owner:
    """Who held (or holds) a lock: the owner record."""

    @property
    def pid(self) -> int: ...
    @property
    def tid(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def acquired_at(self) -> float:
        """When it took the lock, seconds since the Unix epoch."""

# ---------------------------------------------------------------- mutex

class _Held:
    """A held lock (the base of Guard and Permit): a context manager.

    Leaving the with-block releases it. An exception escaping the block
    releases it as a death: the next taker, in any process, gets
    owner_died=True. A guard dropped without leaving a block releases it
    cleanly. A guard is the taking thread's: another thread cannot use or
    release it (NotOwner)."""

    @property
    def owner_died(self) -> bool:
        """The previous holder died holding it: repair, then
        mark_consistent(). Stays True for the life of the guard."""
    @property
    def previous_owner(self) -> Optional[Owner]:
        """The dead holder's record (None if clean, or unknown)."""
    @property
    def consistent(self) -> bool:
        """False while an owner death is not yet marked consistent."""
    @property
    def held(self) -> bool:
        """Whether this guard still holds it."""
    def mark_consistent(self) -> None:
        """Declares the state repaired. Without it, leaving the block makes
        the lock not recoverable for everybody. No-op if already consistent."""
    def set_label(self, label: str) -> None:
        """A label (at most 88 bytes of UTF-8) in the owner record, shown by
        status() and to a recovering successor. ValueError if too long."""
    def __enter__(self: _H) -> _H: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Guard(_Held):
    """A held SharedMutex (what lock() returns), with its value."""

    @property
    def value(self) -> memoryview:
        """The `size` bytes beside the lock, writable, of the handle's format
        ('B' unless opened with another). Valid only
        while the lock is held: released when the guard is (a view derived
        from it, such as a cast, cannot be revoked: do not keep one)."""
    def unlock(self) -> None:
        """Releases the lock now (cleanly). NotOwner from another thread;
        RuntimeError if already released."""

class SharedMutex:
    """A robust process-shared mutex in the file at `path`, with a value of
    `size` bytes beside it. Opens the file, or creates it (mode `mode`) if it
    does not exist and `create` is true. An existing file must hold a value of
    exactly `size` bytes (else InvalidFile). Handles survive fork (the child
    gets its own usable handle)."""

    def __init__(
        self,
        path: _Path,
        size: int = 16,
        *,
        create: bool = True,
        mode: int = 0o600,
        format: str = "B",
    ) -> None:
        """`format`: the struct code of the value's memoryview ('B' bytes,
        'Q' unsigned 64-bit integers, 'd' doubles, ...; native, at most 8
        bytes, dividing `size`), so that `g.value[0] += 1` needs no cast.
        ValueError otherwise."""
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def format(self) -> str: ...
    def lock(self, timeout: Optional[float] = None) -> Guard:
        """Blocks until acquired (the GIL released), or `timeout` seconds pass
        (TimedOut). Ctrl-C raises KeyboardInterrupt, the lock untouched.
        Raises NotRecoverable, Stuck, Deadlock, FileChanged, TooManyHeld."""
    def try_lock(self) -> Guard:
        """Acquires without waiting, or raises WouldBlock."""
    def status(self) -> Dict[str, Any]:
        """What `robust-mutex status --json PATH` prints, as a dict."""

# ---------------------------------------------------------------- semaphore

class Permit(_Held):
    """One held permit of a Semaphore (what acquire() returns)."""

    @property
    def slot(self) -> int:
        """The permit's slot in the file."""
    def release(self) -> None:
        """Gives the permit back now (cleanly)."""

class Semaphore:
    """A robust counting semaphore of `permits` permits in the file at `path`:
    a dead holder's permit comes back, and its next taker gets owner_died."""

    def __init__(
        self, path: _Path, permits: int, *, create: bool = True, mode: int = 0o600
    ) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def permits(self) -> int: ...
    def acquire(self, timeout: Optional[float] = None) -> Permit: ...
    def try_acquire(self) -> Permit: ...
    def status(self) -> Dict[str, Any]: ...

# ---------------------------------------------------------------- files

def inspect(path: _Path) -> Dict[str, Any]:
    """What `robust-mutex status --json PATH` prints, as a dict, without locking
    (any kind of lock file)."""

def reset(path: _Path, force: bool = False) -> Dict[str, Any]:
    """Replaces a broken (not recoverable, stuck, corrupt) lock file with a
    fresh one, keeping its value; `force` also resets a healthy one. Returns
    {'generation': int, 'previous_state': str, ...}."""

def remove(path: _Path, force: bool = False) -> None:
    """Removes a lock file nobody holds (`force`: even a held one)."""
