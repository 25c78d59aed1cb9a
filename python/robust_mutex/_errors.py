"""The exception classes of robust_mutex (the extension raises these)."""

import errno as _errno


class Error(Exception):
    """Base class of this package's own errors. Errors the OS has a class for
    are raised as that class (FileNotFoundError, PermissionError,
    FileExistsError, OSError), with the path and the cause in the message."""


class WouldBlock(Error, BlockingIOError):
    """try_lock / try_acquire: another thread or process holds it (errno EAGAIN)."""


class TimedOut(Error, TimeoutError):
    """The timeout passed before the lock was acquired (errno ETIMEDOUT)."""


class NotRecoverable(Error):
    """A holder recovered from an owner death without mark_consistent(): the
    lock stays unusable for everybody until ``reset(path)``."""


class Stuck(Error):
    """The holder is gone but the kernel never released the lock.
    ``reset(path, force=True)`` replaces the file."""


class FileChanged(Error):
    """The file was truncated, overwritten or reset under this thread."""


class Deadlock(Error, OSError):
    """The calling thread already holds this lock (errno EDEADLK)."""


class NotOwner(Error, PermissionError):
    """Releasing a lock the calling thread does not hold (errno EPERM)."""


class TooManyHeld(Error):
    """The calling thread already holds the most locks one thread may hold."""


class InvalidFile(Error, ValueError):
    """The path is not a usable lock file of the kind asked for. The file is
    left untouched."""


class Refused(Error):
    """reset() or remove() refused: the lock is in use or healthy (use
    force=True). A file of another user is a PermissionError."""


ERRNO = {
    "WouldBlock": _errno.EAGAIN,
    "TimedOut": _errno.ETIMEDOUT,
    "Deadlock": _errno.EDEADLK,
    "NotOwner": _errno.EPERM,
}


class InvalidSharedState(NotRecoverable):
    """pymutex's name (robust_mutex.pymutex): the recovery callback returned
    False (or raised), or an earlier one did; the lock is not recoverable
    until the file is removed."""
