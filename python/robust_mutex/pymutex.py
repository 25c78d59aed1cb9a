"""A drop-in for pymutex (https://github.com/HMaker/pymutex).

Replace ``from pymutex import mutex`` with ``import robust_mutex.pymutex as mutex``
(or ``import pymutex`` with ``import robust_mutex.pymutex as pymutex``): the same
``SharedMutex(mutex_file, recover_shared_state_cb)``, ``lock(blocking=True,
timeout=0)``, ``unlock()`` and ``owns_lock``. The file format is pymutex's own
(one bare pthread_mutex_t), so both can share one lock during a migration.

What changes for the better: no one-second polling (one kernel wait), the
timeout is on CLOCK_MONOTONIC, the GIL is released while waiting, Ctrl-C
interrupts a wait, a creator killed mid-creation is taken over instead of
leaving a file to remove, and a handle collected while locked never unmaps a
lock still in use.
"""

import logging as _logging

from ._errors import InvalidSharedState
from ._native import PymutexSharedMutex as SharedMutex

__all__ = [
    "InvalidSharedState",
    "SharedMutex",
    "UninitializedMutexError",
    "configure_default_logging",
]


class UninitializedMutexError(Exception):
    """Kept for compatibility: pymutex's error for an invalid mutex. This
    package raises robust_mutex.InvalidFile (a ValueError) when it opens one."""


def configure_default_logging():
    """As pymutex's: a StreamHandler at level WARNING, on this package's
    logger ('robust_mutex') and on 'pymutex' (for code that configures it by
    that name)."""
    fmt = _logging.Formatter("%(asctime)s [%(name)s] %(levelname)s: %(message)s")
    for name in ("robust_mutex", "pymutex"):
        logger = _logging.getLogger(name)
        logger.setLevel(_logging.WARNING)
        handler = _logging.StreamHandler()
        handler.setFormatter(fmt)
        logger.addHandler(handler)
