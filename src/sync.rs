//! Synchronisation primitives, swapped for loom's under `--cfg loom` so that
//! the pure in-process logic (the mapping registry) can be model-checked.
//! loom cannot model pthread mutexes or system calls, and nothing here
//! pretends it does.

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
