//! One mapping per file per process, and the rule that keeps a mapping alive
//! while this process may hold its mutex.
//!
//! Two mappings of one file would give one futex at two addresses, which
//! glibc's robust list handles only by luck; so handles of the same
//! (device, inode) share one [`Mapping`]. And unmapping a robust mutex that a
//! thread still holds makes the kernel abandon that thread's whole robust-list
//! walk at death, stranding every other robust mutex it holds; so when the
//! last handle goes while a thread of this process holds the lock (a
//! forgotten guard), the mapping stays.

use crate::error::Error;
use crate::file::layout::{self, Counters, Header};
use crate::raw::{Books, RawMutex};
use crate::sync::Mutex;
use crate::sys;
use memmap2::MmapRaw;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};

/// Identifies a file: (device, inode).
pub(crate) type Key = (u64, u64);

/// A live `MAP_SHARED` mapping of a ready mutex file.
#[derive(Debug)]
pub(crate) struct Mapping {
    raw: MmapRaw,
    key: Key,
    /// The start of the mapping, never null: the lock path builds its
    /// [`RawMutex`] from it without a check.
    base: NonNull<u8>,
    /// The header as the opener read (`pread`) and validated it: READY and
    /// immutable but for the boot id, which a stale-boot repair rewrites.
    header: Header,
    /// The file's async waiters in this process and their holder thread.
    #[cfg(feature = "async")]
    lane: crate::holder::lane::LaneSlot,
}

// SAFETY: `base` is only the start address of `raw`, which is Send and Sync
// (memmap2's MmapRaw); every access through it is to the shared mapping and
// goes through pthread calls, atomics, or the lock's holder.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Wraps a mapping at least `DATA_MIN_OFFSET` bytes long.
    pub fn new(raw: MmapRaw, key: Key) -> Mapping {
        assert!(raw.len() >= layout::DATA_MIN_OFFSET);
        let base = NonNull::new(raw.as_mut_ptr()).expect("a mapping is never at address 0");
        Mapping {
            raw,
            key,
            base,
            header: bytemuck::Zeroable::zeroed(),
            #[cfg(feature = "async")]
            lane: Default::default(),
        }
    }

    /// Wraps the mapping of a READY file whose `header` the opener read
    /// (with `pread`) and validated. The mapping itself is not read: its
    /// page is first touched by a lock, or by the last handle's drop (a
    /// page fault here cost an attach about 2 µs; a file truncated under
    /// the opener cannot raise SIGBUS here either).
    fn attached(raw: MmapRaw, key: Key, header: Header) -> Mapping {
        Mapping {
            header,
            ..Mapping::new(raw, key)
        }
    }

    /// Whether the file still backs this mapping: at least as long as the
    /// mapping (`fstat` on its descriptor) and still beginning with a READY
    /// or RETIRED header. False once someone truncated the file under us
    /// (then touching the mapping's missing pages raises SIGBUS), or cut it
    /// and grew it again (zeros where the header and lock were).
    ///
    /// A truncation between this check and a later read of the mapping is
    /// not caught: the check narrows the window, it cannot close it.
    pub fn intact(&self) -> bool {
        if !self.covered() {
            return false;
        }
        // SAFETY: the file covers the mapping (just checked), so the
        // header's page is backed; a racy read, used only as a check.
        let h: Header = unsafe { std::ptr::read_volatile(self.header()) };
        if h.magic != layout::MAGIC
            || (h.state != layout::STATE_READY && h.state != layout::STATE_RETIRED)
        {
            return false;
        }
        // A file cut inside the mapping's last page reads zeros from the
        // cut on, without a fault: the mutex's glibc kind word, never 0
        // for an initialised robust mutex, says whether it survived.
        // SAFETY: the header's mutex lies in the covered mapping; a racy
        // copy of its bytes, used only as a check.
        let mutex: [u8; sys::MUTEX_SIZE] =
            unsafe { std::ptr::read_volatile(self.at(layout::MUTEX_OFFSET).cast()) };
        sys::glibc_kind_word(&mutex).is_some_and(|k| k != 0)
    }

    /// Whether the file still covers the whole mapping, so that reading any
    /// of it cannot fault: the mapping's last byte can be read
    /// ([`sys::readable`], a copy by the kernel, which fails where a load
    /// would raise SIGBUS). No descriptor is kept per file: a process may
    /// map thousands. Where the kernel refuses the copy, nothing is known
    /// and the mapping counts as covered.
    fn covered(&self) -> bool {
        let last = self
            .raw
            .as_ptr()
            .wrapping_add(self.raw.len().saturating_sub(1));
        sys::readable(last) != Some(false)
    }

    /// The file's async lane in this process (`crate::holder`).
    #[cfg(feature = "async")]
    pub fn lane(&self) -> &crate::holder::lane::Lane {
        self.lane.get()
    }

    /// The header as it was when the file was attached.
    pub fn attached_header(&self) -> &Header {
        &self.header
    }

    /// (device, inode) of the file.
    pub fn key(&self) -> Key {
        self.key
    }

    fn at(&self, offset: usize) -> *mut u8 {
        // `<=`: a zero-sized value sits exactly at the end of the mapping.
        debug_assert!(offset <= self.raw.len());
        self.raw.as_mut_ptr().wrapping_add(offset)
    }

    /// The header.
    pub fn header(&self) -> *mut Header {
        self.at(0).cast()
    }

    /// The header's state word.
    pub fn state(&self) -> &AtomicU32 {
        // SAFETY: the state word is a 4-byte aligned u32 inside the live
        // mapping (offset 12 of a page-aligned mapping), which outlives `self`'s borrow.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.header()).state)) }
    }

    /// The header's condition sequence word (`crate::cond`).
    pub fn cond(&self) -> &AtomicU32 {
        // SAFETY: `cond_seq` is a 4-byte aligned u32 inside the live
        // mapping (offset 192 of a page-aligned mapping), which outlives
        // `self`'s borrow; it is only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.header()).cond_seq)) }
    }

    /// The mutex.
    pub fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.at(layout::MUTEX_OFFSET).cast()
    }

    /// The counters.
    pub fn counters(&self) -> *mut Counters {
        self.at(layout::COUNTERS_OFFSET).cast()
    }

    /// The file's robust mutex, with its owner records and the counters.
    #[inline]
    pub fn raw(&self) -> RawMutex<'_> {
        debug_assert!(self.is_ready_lock(), "raw() of a semaphore file's mapping");
        // A Mapping wraps a READY file (the handshake initialised the mutex
        // before publishing READY, and only then attaches it), mapped for as
        // long as `self` lives, at least DATA_MIN_OFFSET long. Only the
        // holder writes the record and counters (a semaphore's main mutex is
        // never locked: its counters, shared by the permits, are never
        // written through this).
        // SAFETY: so the mutex at MUTEX_OFFSET (in bounds) is initialised,
        // with the header's record, counters and state word around it.
        unsafe { RawMutex::new(self.base.add(layout::MUTEX_OFFSET).cast(), Books::Header) }
    }

    /// Not a semaphore file: what `raw` requires. (It was a READY mutex
    /// file when attached; its header may have been zeroed since, by a
    /// truncation, which the lock path detects and reports.)
    fn is_ready_lock(&self) -> bool {
        // SAFETY: the header is the first 256 bytes of the live mapping.
        let h: Header = unsafe { std::ptr::read_volatile(self.header()) };
        h.kind != layout::Kind::Semaphore.code()
    }

    /// The value region at `offset`.
    pub fn data(&self, offset: u64) -> *mut u8 {
        self.at(offset as usize)
    }

    /// True if a live thread of this process holds the mutex (or, in a
    /// semaphore, any permit's mutex) right now. (A thread that exited
    /// holding it had it marked OWNER_DIED by the kernel.)
    ///
    /// A file truncated under us counts as held: its lock words cannot be
    /// read without SIGBUS, and unmapping a mutex this process holds would
    /// strand its other robust mutexes; the mapping stays.
    fn held_by_this_process(&self) -> bool {
        if !self.covered() {
            log::warn!(
                "last handle of a robust mutex whose file was truncated under it; keeping it mapped"
            );
            return true;
        }
        // The header as attached (the file's own may have been zeroed).
        self.header.mutexes().any(|offset| {
            let m = NonNull::new(self.at(offset).cast()).expect("mapped");
            // SAFETY: every mutex the header names lies in this live mapping
            // and was initialised before the file became READY; no books:
            // this RawMutex is only read.
            unsafe { RawMutex::new(m, Books::None) }.held_by_live_thread_here()
        })
    }
}

/// A process-wide table of shared values by (device, inode): one value per
/// file, counted handles, and a keep-alive rule for the last detach. Generic
/// so that loom can model it with a stand-in for the mapping.
#[derive(Debug)]
pub struct Registry<V> {
    entries: Mutex<HashMap<Key, Entry<V>>>,
}

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    handles: usize,
}

impl<V> Default for Registry<V> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V> Registry<V> {
    fn lock(&self) -> crate::sync::MutexGuard<'_, HashMap<Key, Entry<V>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`, shared if registered, else made by `make` (under
    /// the table's lock, so two threads never make two values for one key).
    pub fn attach<E>(&self, key: Key, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        let mut reg = self.lock();
        if let Some(e) = reg.get_mut(&key) {
            e.handles += 1;
            return Ok(e.value.clone());
        }
        let value = Arc::new(make()?);
        reg.insert(
            key,
            Entry {
                value: value.clone(),
                handles: 1,
            },
        );
        Ok(value)
    }

    /// Gives back one handle's claim, consuming the handle's `Arc`. The last
    /// claim removes the value from the table and drops it (unmaps) while the
    /// table is still locked, so no other thread can map the file again before
    /// the old mapping is gone — unless `held(value)` says this process still
    /// holds its lock: then it stays registered for the life of the process.
    /// Returns whether it stayed.
    pub fn detach(&self, key: Key, value: Arc<V>, held: impl FnOnce(&V) -> bool) -> bool {
        let mut reg = self.lock();
        let Some(e) = reg.get_mut(&key) else {
            return false;
        };
        if !Arc::ptr_eq(&e.value, &value) {
            return false;
        }
        e.handles = e.handles.saturating_sub(1);
        if e.handles > 0 || held(&value) {
            return true;
        }
        let removed = reg.remove(&key);
        drop(value);
        drop(removed);
        false
    }

    /// One more claim on `value`, registered under `key`, as a handle
    /// has (given back with [`Self::detach`]).
    #[cfg(feature = "async")]
    pub fn claim(&self, key: Key, value: &Arc<V>) -> Arc<V> {
        let mut reg = self.lock();
        if let Some(e) = reg.get_mut(&key) {
            if Arc::ptr_eq(&e.value, value) {
                e.handles += 1;
            }
        }
        value.clone()
    }

    /// Whether `key` is registered.
    #[cfg(any(test, loom))]
    pub fn contains(&self, key: Key) -> bool {
        self.lock().contains_key(&key)
    }
}

fn registry() -> &'static Registry<Mapping> {
    static REGISTRY: OnceLock<Registry<Mapping>> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The mapping of `key`, shared if this process has one, else made by `map`
/// from the READY file whose validated header is `header` (and whose length
/// covers the mapping).
pub(crate) fn attach(
    key: Key,
    header: &Header,
    map: impl FnOnce() -> Result<MmapRaw, Error>,
) -> Result<Arc<Mapping>, Error> {
    registry().attach(key, || Ok(Mapping::attached(map()?, key, *header)))
}

/// A claim on a mapping a handle holds, as a handle's (an async holder
/// thread's, which may outlive the handle), given back with [`detach`].
#[cfg(feature = "async")]
pub(crate) fn claim(map: &Arc<Mapping>) -> Arc<Mapping> {
    registry().claim(map.key(), map)
}

/// Gives back a handle's claim on a mapping. The last claim unmaps it, unless
/// a thread of this process holds its mutex: then it stays mapped (and
/// registered, so a later open shares it) for the life of the process.
pub(crate) fn detach(map: Arc<Mapping>) {
    let kept = registry().detach(map.key(), map, |m| {
        let held = m.held_by_this_process();
        if held && m.covered() {
            log::warn!(
                "last handle of a robust mutex dropped while this process holds it; keeping it mapped"
            );
        }
        held
    });
    let _ = kept;
}

/// Whether a mapping of `key` is registered.
#[cfg(test)]
pub(crate) fn is_mapped(key: Key) -> bool {
    registry().contains(key)
}
