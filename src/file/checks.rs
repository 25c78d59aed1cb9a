//! What an opener checks before it trusts a path: file type, owner,
//! filesystem, header, permits, and whether a 0400 file is a crashed
//! creator's leftover. Everything here reads; nothing writes.

use super::layout::{self, DataLayout, Header, Invalid};
use super::{io_err, open_error};
use crate::error::Error;
use crate::options::OpenOptions;
use crate::sys;
use std::os::fd::OwnedFd;
use std::path::Path;

/// A zero-filled or half-built file bigger than this is not something our
/// creator can leave behind (it would need a `T` this large); refuse it
/// rather than read it all.
const TAKEOVER_SCAN_LIMIT: u64 = 64 << 20;

/// Names the filesystems where a MAP_SHARED futex cannot work across hosts.
fn remote_fs_name(f_type: i64) -> Option<&'static str> {
    Some(match f_type {
        0x6969 => "NFS",
        0x517B => "SMB",
        0xFE53_4D42 => "SMB2",
        0xFF53_4D42 => "CIFS",
        0x6573_5546 => "FUSE",
        0x00C3_6400 => "Ceph",
        0x0102_1997 => "9P",
        0x5346_414F => "AFS",
        0x0116_1970 => "GFS2",
        0x7461_636F => "OCFS2",
        _ => return None,
    })
}

pub(crate) fn invalid_to_error(path: &Path, inv: Invalid, want: DataLayout) -> Error {
    let path = path.to_owned();
    match inv {
        Invalid::Truncated { len, needed } => Error::Truncated { path, len, needed },
        Invalid::Foreign => Error::ForeignFile { path },
        Invalid::Version { found } => Error::UnsupportedVersion {
            path,
            found,
            expected: layout::VERSION,
        },
        Invalid::Abi { found } => Error::AbiMismatch {
            path,
            found,
            expected: layout::abi().to_string(),
        },
        Invalid::Kind { found, expected } => Error::KindMismatch {
            path,
            found,
            expected,
        },
        Invalid::Corrupt(reason) => Error::Corrupt { path, reason },
        Invalid::DataType { size, align } => Error::TypeMismatch {
            path,
            file_size: size,
            file_align: align,
            size: want.size,
            align: want.align,
        },
    }
}

/// Reads the header and the mutex bytes without mapping anything.
pub(crate) fn read_header(
    path: &Path,
    fd: &OwnedFd,
) -> Result<(Header, [u8; layout::MUTEX_ROOM], usize), Error> {
    let mut buf = [0u8; layout::DATA_MIN_OFFSET];
    let n = sys::read_at(fd, &mut buf, 0).map_err(io_err("read", path))?;
    let header: Header = bytemuck::pod_read_unaligned(&buf[..layout::HEADER_LEN]);
    let mut mutex = [0u8; layout::MUTEX_ROOM];
    mutex.copy_from_slice(&buf[layout::MUTEX_OFFSET..layout::MUTEX_OFFSET + layout::MUTEX_ROOM]);
    Ok((header, mutex, n))
}

/// The checks every open makes first: a regular file, owned by us (unless
/// allowed), on a local filesystem. Returns its stat.
pub(crate) fn check_file(
    path: &Path,
    fd: &OwnedFd,
    opts: &OpenOptions,
) -> Result<sys::FileStat, Error> {
    let st = sys::fstat(fd).map_err(io_err("fstat", path))?;
    if !st.is_regular() {
        return Err(Error::NotRegularFile {
            path: path.to_owned(),
            kind: st.type_name(),
        });
    }
    let ours = sys::geteuid();
    if st.uid != ours && !opts.allow_other_owners {
        return Err(Error::ForeignOwner {
            path: path.to_owned(),
            owner: st.uid,
            ours,
        });
    }
    if let Some(fs) = sys::fs_type(fd).ok().and_then(remote_fs_name) {
        return Err(Error::UnsupportedFilesystem {
            path: path.to_owned(),
            fs,
        });
    }
    Ok(st)
}

/// A semaphore's permits are mutexes too: each slot's glibc kind word must
/// say robust + pshared + errorcheck, or glibc may take another locking path
/// (priority protect aborts the process) on the first acquire.
pub(crate) fn check_permit_mutexes(
    path: &Path,
    fd: &OwnedFd,
    header: &Header,
) -> Result<(), Error> {
    // The value region holds the slots; read it once, never map it.
    let base = header.data_offset as usize;
    let mut region = vec![0u8; header.data_size as usize];
    let got = sys::read_at(fd, &mut region, base as u64).map_err(io_err("read", path))?;
    let expected = sys::expected_kind_word(sys::MutexKind::ErrorCheck);
    let bad = got < region.len()
        || (cfg!(target_env = "gnu")
            && header.mutexes().skip(1).any(|offset| {
                let at = offset - base;
                let mutex = region.get(at..at + layout::MUTEX_ROOM).unwrap_or(&[]);
                sys::glibc_kind_word(mutex) != Some(expected)
            }));
    if bad {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "a permit's mutex is not a robust process-shared errorcheck mutex",
        });
    }
    Ok(())
}

/// The verdict on a file that is RETIRED or has no name left (`st`): a reset
/// replaced it between an open and now (`Ok`: look at the path again), or
/// it is RETIRED yet still at its path, which a reset never leaves (a reset
/// renames the new file over the path before it marks the old one RETIRED):
/// [`Error::Corrupt`], so that nobody looks again for ever.
pub(crate) fn replaced_by_reset(path: &Path, st: &sys::FileStat) -> Result<(), Error> {
    let here = sys::lstat(path).is_ok_and(|now| (now.dev, now.ino) == (st.dev, st.ino));
    if here && st.nlink > 0 {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "marked as replaced by a reset, yet still at its path",
        });
    }
    Ok(())
}

/// True if the file holds only what a crashed creator can leave: nothing,
/// zeros, or our magic with the header in the INIT (or, before the chmod,
/// READY) state.
pub(crate) fn crashed_creator_leftover(
    path: &Path,
    fd: &OwnedFd,
    size: u64,
) -> Result<bool, Error> {
    if size == 0 {
        return Ok(true);
    }
    if size > TAKEOVER_SCAN_LIMIT {
        return Ok(false);
    }
    let mut buf = vec![0u8; size as usize];
    let n = sys::read_at(fd, &mut buf, 0).map_err(io_err("read", path))?;
    let buf = &buf[..n];
    if buf.iter().all(|&b| b == 0) {
        return Ok(true);
    }
    if buf.len() >= layout::HEADER_LEN {
        let h: Header = bytemuck::pod_read_unaligned(&buf[..layout::HEADER_LEN]);
        // INIT: died before finishing; READY: died between the READY store
        // and the chmod. Either way nobody attached (openers wait for the
        // mode to change), so initialising again is safe.
        return Ok(h.magic == layout::MAGIC
            && (h.state == layout::STATE_INIT || h.state == layout::STATE_READY));
    }
    // A creator writes the header in one store after sizing the file, so a
    // short file with bytes in it is not ours.
    Ok(false)
}

/// Checks that `path` names one of our files (any kind, any `T`, or a
/// crashed creator's leftover) and returns its stat; anything else is an error.
pub(crate) fn check_ours(path: &Path) -> Result<sys::FileStat, Error> {
    let fd = sys::open_existing(path, false).map_err(|e| open_error(path, e))?;
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    if !st.is_regular() {
        return Err(Error::NotRegularFile {
            path: path.to_owned(),
            kind: st.type_name(),
        });
    }
    let (h, _, n) = read_header(path, &fd)?;
    let half_built =
        st.perm() == layout::CREATOR_MODE && crashed_creator_leftover(path, &fd, st.size)?;
    let ours = n >= layout::HEADER_LEN && h.magic == layout::MAGIC;
    if !ours && !half_built {
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    Ok(st)
}

/// What a reset finds at a path, judged from `pread`s, never mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// As long as its header says (or no header to say otherwise): opened
    /// and judged as a mutex file, with every typed error of an open.
    Whole,
    /// What is left of one of our files, holding no lock to carry over:
    /// empty, cut short (our magic, or a prefix of it, at the start), or a
    /// crashed creator's leftover. `kept`: what its header still shows.
    Remnant(Option<Kept>),
}

/// The kind, value layout and generation a remnant's header still shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    pub kind: layout::Kind,
    pub layout: DataLayout,
    pub generation: u64,
}

/// A header that is whole and our own, if it is: this version (or the one
/// a reset converts: same geometry) and ABI, a known kind, a
/// self-consistent layout.
fn kept_from(h: &Header) -> Option<Kept> {
    let ok = h.magic == layout::MAGIC
        && (h.version == layout::VERSION || h.version == layout::MIGRATABLE_VERSION)
        && h.abi() == layout::abi();
    let kind = layout::Kind::from_code(h.kind).filter(|_| ok)?;
    let data = DataLayout::new(h.data_size as usize, h.data_align as usize)
        .filter(|l| *l == h.data_layout())?;
    Some(Kept {
        kind,
        layout: data,
        generation: h.generation,
    })
}

/// Sorts the file open as `fd` (stat `st`) for a reset. Someone else's
/// data is [`Error::ForeignFile`]: a reset never replaces it.
pub(crate) fn found_for_reset(
    path: &Path,
    fd: &OwnedFd,
    st: &sys::FileStat,
) -> Result<Found, Error> {
    let foreign = || {
        Err(Error::ForeignFile {
            path: path.to_owned(),
        })
    };
    if st.size == 0 {
        return Ok(Found::Remnant(None));
    }
    let (h, _, n) = read_header(path, fd)?;
    let kept = if n >= layout::HEADER_LEN {
        kept_from(&h)
    } else {
        None
    };
    if st.perm() == layout::CREATOR_MODE {
        return if crashed_creator_leftover(path, fd, st.size)? {
            Ok(Found::Remnant(kept))
        } else {
            foreign()
        };
    }
    // The whole magic, never a prefix: a file of a few bytes that happen to
    // start like it ("R") is someone else's.
    if n < layout::MAGIC.len() || h.magic != layout::MAGIC {
        return foreign();
    }
    Ok(match kept {
        _ if n < layout::HEADER_LEN => Found::Remnant(None),
        Some(k) if st.size < k.layout.file_len => Found::Remnant(Some(k)),
        _ => Found::Whole,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_fuse_filesystems_are_named_and_local_ones_pass() {
        // statfs f_type values from linux/magic.h.
        assert_eq!(remote_fs_name(0x6969), Some("NFS"));
        assert_eq!(remote_fs_name(0xFF53_4D42), Some("CIFS"));
        assert_eq!(remote_fs_name(0xFE53_4D42), Some("SMB2"));
        assert_eq!(remote_fs_name(0x6573_5546), Some("FUSE"));
        for local in [
            0x0102_1994, /* tmpfs */
            0xEF53,      /* ext4 */
            0x5846_5342, /* xfs */
        ] {
            assert_eq!(remote_fs_name(local), None);
        }
    }
}
