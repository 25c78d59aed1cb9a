"""A drop-in for pymutex (https://github.com/HMaker/pymutex).

Replace ``from pymutex import mutex`` with ``import robust_mutex.pymutex as mutex``
(or ``import pymutex`` with ``import robust_mutex.pymutex as pymutex``). The file
format is pymutex's own (one bare pthread_mutex_t), so both can share a lock
during a migration.
"""

from typing import Callable

from . import NotRecoverable

class InvalidSharedState(NotRecoverable):
    """The recovery callback returned False (or raised), or an earlier one did:
    the lock is not recoverable until the file is removed."""

class UninitializedMutexError(Exception):
    """Kept for compatibility: pymutex's error for an invalid mutex. This
    package raises robust_mutex.InvalidFile (a ValueError) when it opens one."""

class SharedMutex:
    def __init__(self, mutex_file: str, recover_shared_state_cb: Callable[[], bool]) -> None:
        """Opens the pymutex lock file at `mutex_file`, or creates it. The
        callback runs when the lock is taken after its holder died, with the
        lock held: True means the shared state is consistent again; False
        makes the lock not recoverable and raises InvalidSharedState."""
    @property
    def owns_lock(self) -> bool:
        """Whether this instance holds the lock (pymutex's property)."""
    def lock(self, blocking: bool = True, timeout: float = 0) -> bool:
        """Blocks until locked (timeout <= 0), or for at most `timeout`
        seconds (False when it passes); blocking=False tries once. True when
        locked. OSError(EDEADLK) if this thread holds it already;
        InvalidSharedState after an abandoned recovery. The GIL is released
        while waiting; Ctrl-C raises KeyboardInterrupt, the lock untouched."""
    def unlock(self) -> None:
        """Releases the lock. PermissionError (EPERM) if the calling thread
        does not hold it through this instance."""

def configure_default_logging() -> None:
    """As pymutex: a StreamHandler on this package's loggers ('robust_mutex',
    and 'pymutex' for code that configures it by name), level WARNING."""
