//! Files that outlived a reboot.
//!
//! A mutex file on a disk path survives a crash of the whole machine with its
//! lock word still naming a TID from the old boot, which nothing will ever
//! release. The header records the boot id; an opener that sees another boot
//! id re-initialises the mutex under the init flock, keeps `T`, the owner
//! record (now the previous owner) and the counters, and leaves the lock word
//! in the owner-died state so that the first locker runs its repair code.

use crate::error::Error;
use crate::file::Opened;
use crate::identity;
use crate::options::OpenOptions;
use crate::sys;
use std::path::Path;

/// Re-initialises the mutex of a file whose header names another boot.
///
/// Sound because every process of this boot must pass this check, under the
/// flock, before it can lock: so while the stored boot id is stale, no
/// process of this boot can be using the mutex.
pub(crate) fn repair_stale_boot(
    path: &Path,
    opened: &Opened,
    opts: &OpenOptions,
) -> Result<(), Error> {
    let fd = &opened.fd;
    let io = |op| {
        move |source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    crate::file::wait_for_flock(path, fd, opts.init_timeout)?;
    let map = &opened.map;
    // SAFETY: the header lies at the start of the live mapping; this only
    // computes a field address.
    let field = unsafe { std::ptr::addr_of_mut!((*map.header()).boot_id) };
    let current = identity::boot_id();
    // SAFETY: the boot id lies in the header of the live mapping; it is only
    // written under the flock, which we hold.
    let stored = unsafe { std::ptr::read_volatile(field) };
    let result = if stored == current {
        Ok(()) // another process repaired it while we waited
    } else {
        log::warn!(
            "{}: mutex file from an earlier boot; re-initialising the mutex and keeping the value",
            path.display()
        );
        let kind = crate::file::layout::Kind::from_code(opened.header.kind)
            .unwrap_or(crate::file::layout::Kind::Mutex);
        // The file's mutexes: the main one, and for a semaphore one per permit.
        let mutexes: Vec<*mut libc::pthread_mutex_t> = opened
            .header
            .mutexes()
            .map(|offset| map.data(offset as u64).cast())
            .collect();
        let mut r = Ok(());
        for (i, &m) in mutexes.iter().enumerate() {
            // SAFETY: no process of this boot uses these mutexes (see
            // above), so they may be initialised in place; each lies aligned
            // inside the mapping.
            let held = unsafe { sys::lock_word_snapshot(m) } & sys::FUTEX_TID_MASK != 0;
            let mk = if i == 0 {
                kind.mutex_kind()
            } else {
                sys::MutexKind::ErrorCheck
            };
            // SAFETY: as above.
            r = unsafe { sys::mutex_init(m, mk) }.map_err(io("pthread_mutex_init"));
            if r.is_err() {
                break;
            }
            // The main mutex always reports the crash; a permit only if it
            // was held when the machine went down.
            if i == 0 || held {
                // SAFETY: just initialised and unused by anyone (see above).
                unsafe { sys::mark_owner_died(m) };
            }
        }
        // SAFETY: the boot id lies in the header; published last, under the flock.
        r.map(|()| unsafe { std::ptr::write_volatile(field, current) })
    };
    let _ = sys::funlock(fd);
    result
}
