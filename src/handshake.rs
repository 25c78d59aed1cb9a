//! The initialisation handshake: create, wait, or take over. See the state
//! machine in docs/design.md.
//!
//! * A **creator** makes the file with `O_CREAT|O_EXCL`, mode 0400 (the
//!   creator's mark), holds an exclusive `flock` while it sizes, maps and
//!   initialises it, writes the header with `state = READY` last, then
//!   `fchmod`s it to the final mode and lets the flock go.
//! * An **opener** attaches only to a file that is writable (mode has the
//!   owner-write bit) *and* READY. It decides from `fstat` and the header,
//!   never from `open` failing, because root ignores mode bits.
//! * A file still carrying the mark whose flock nobody holds lost its creator:
//!   the next opener takes the flock and initialises it, provided it holds only
//!   what a crashed creator can leave (nothing, zeros, or our magic in the
//!   INIT state). Anything else is someone's data and is left untouched.

use crate::error::Error;
use crate::identity;
use crate::layout::{self, DataLayout, Header, Invalid};
use crate::options::OpenOptions;
use crate::registry::{self, Mapping};
use crate::sys;
use memmap2::MmapOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A zero-filled or half-built file bigger than this is not something our
/// creator can leave behind (it would need a `T` this large); refuse it
/// rather than read it all.
const TAKEOVER_SCAN_LIMIT: u64 = 64 << 20;

/// Look-agains after which a path that keeps changing is given up on.
const MAX_RETRIES: u32 = 64;

/// Result of a successful open.
#[derive(Debug)]
pub(crate) struct Opened {
    pub map: Arc<Mapping>,
    pub header: Header,
    /// The descriptor we opened it by (closed once the handle is built).
    pub fd: OwnedFd,
    pub stat: sys::FileStat,
}

pub(crate) fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Debug-only fault-injection point: with `ROBUST_MUTEX_TEST_PAUSE_AT=<step>`
/// the creator prints `paused:<step>` on stdout and stops for ever there, so
/// a test can SIGKILL it at exactly that step.
fn checkpoint(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ROBUST_MUTEX_TEST_PAUSE_AT").as_deref() == Ok(step) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "paused:{step}");
        let _ = out.flush();
        loop {
            std::thread::park();
        }
    }
    let _ = step;
}

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

fn invalid_to_error(path: &Path, inv: Invalid, want: DataLayout) -> Error {
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
            found: layout::Kind::name_of(found),
            expected: expected.name(),
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

/// What one look at the path decided.
enum Step {
    Attached(Box<Opened>),
    /// Look again now (the file changed under us).
    Retry,
    /// A live creator holds the flock: wait a little, then look again.
    Wait,
}

/// Opens or creates the mutex file at `path` for a value laid out as `want`.
pub(crate) fn open(path: &Path, opts: &OpenOptions, want: DataLayout) -> Result<Opened, Error> {
    if opts.mode & 0o600 != 0o600
        || opts.mode & !0o7777 != 0
        || opts.mode & 0o7777 == layout::CREATOR_MODE
    {
        return Err(Error::InvalidMode { mode: opts.mode });
    }
    if opts.replace {
        match check_ours(path) {
            Ok(_) => {
                publish_new_file(path, opts.mode, None, want, opts.kind, &Fill::Fresh)?;
                log::warn!("{}: replaced with a new, empty lock file", path.display());
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    let mut retries = 0u32;
    loop {
        let step = if opts.create_new {
            create_step(path, opts, want)?
        } else {
            match sys::open_existing(path, true) {
                Ok(fd) => inspect(path, fd, true, opts, want)?,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT) if opts.create => create_step(path, opts, want)?,
                    Some(libc::ENOENT) => {
                        return Err(Error::NotFound {
                            path: path.to_owned(),
                        });
                    }
                    Some(libc::EACCES) | Some(libc::EPERM) => {
                        // Not writable for us: a creator's 0400 mark (we may
                        // still wait or take over) or a file closed to us.
                        match sys::open_existing(path, false) {
                            Ok(fd) => inspect(path, fd, false, opts, want)?,
                            Err(_) => {
                                return Err(Error::PermissionDenied {
                                    path: path.to_owned(),
                                });
                            }
                        }
                    }
                    _ => return Err(open_error(path, e)),
                },
            }
        };
        match step {
            Step::Attached(o) => return Ok(*o),
            // Every retry follows a change (our own creation or takeover,
            // another process's, a reset's rename), so a few are normal even
            // with a zero init timeout; an endless stream is not.
            Step::Retry if retries >= MAX_RETRIES && start.elapsed() > opts.init_timeout => {
                return Err(Error::InitTimeout {
                    path: path.to_owned(),
                    waited: start.elapsed(),
                });
            }
            Step::Retry => retries += 1,
            Step::Wait => {
                let waited = start.elapsed();
                if waited >= opts.init_timeout {
                    return Err(Error::InitTimeout {
                        path: path.to_owned(),
                        waited,
                    });
                }
                // Polling the flock: flock(2) has no timed wait.
                std::thread::sleep(pause.min(opts.init_timeout - waited));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

pub(crate) fn open_error(path: &Path, e: io::Error) -> Error {
    let path = path.to_owned();
    match e.raw_os_error() {
        Some(libc::ELOOP) => Error::Symlink { path },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { path },
        Some(libc::ENOENT) => Error::NotFound { path },
        Some(libc::EISDIR) => Error::NotRegularFile {
            path,
            kind: "directory",
        },
        _ => Error::Io {
            op: "open",
            path,
            source: e,
        },
    }
}

/// The path is missing: try to create it ourselves.
fn create_step(path: &Path, opts: &OpenOptions, want: DataLayout) -> Result<Step, Error> {
    let fd = match sys::create_exclusive(path, layout::CREATOR_MODE) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if opts.create_new {
                return Err(Error::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            return Ok(Step::Retry);
        }
        Err(e) => return Err(open_error(path, e)),
    };
    // Between O_CREAT and flock an opener may see our mark with no flock and
    // take the initialisation over; then we simply become an opener.
    if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
        return Ok(if opts.create_new {
            Step::Wait
        } else {
            Step::Retry
        });
    }
    checkpoint("created");
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    if st.perm() != layout::CREATOR_MODE || st.size != 0 {
        // Taken over and finished before our flock: it is an ordinary open now.
        let _ = sys::funlock(&fd);
        return Ok(Step::Retry);
    }
    initialise(path, &fd, opts.mode, want, opts.kind, &Fill::Fresh)?;
    let _ = sys::funlock(&fd);
    log::debug!("created robust mutex file {}", path.display());
    if opts.create_new {
        // Attach to exactly the file we made.
        return inspect(
            path,
            fd,
            true,
            &OpenOptions {
                create_new: false,
                ..opts.clone()
            },
            want,
        );
    }
    Ok(Step::Retry)
}

/// What a freshly initialised file holds besides a fresh mutex.
pub(crate) enum Fill<'a> {
    /// A new file: zeroed value, generation 1.
    Fresh,
    /// A reset's replacement: the old value, owner record and counters, the
    /// next generation, and a mutex that reports OWNER_DIED to its first locker.
    Replacement {
        generation: u64,
        /// Bytes from OWNER_OFFSET to the end of the value.
        carried: &'a [u8],
    },
}

/// Sizes, maps and initialises the file behind `fd` (whose flock we hold),
/// leaving it READY with mode `mode`. The mutex is initialised in place.
pub(crate) fn initialise(
    path: &Path,
    fd: &OwnedFd,
    mode: u32,
    want: DataLayout,
    kind: layout::Kind,
    fill: &Fill<'_>,
) -> Result<(), Error> {
    sys::set_len(fd, want.file_len).map_err(io_err("ftruncate", path))?;
    checkpoint("sized");
    let map = MmapOptions::new()
        .len(want.file_len as usize)
        .map_raw(fd)
        .map_err(io_err("mmap", path))?;
    let base = map.as_mut_ptr();
    let generation = match fill {
        Fill::Fresh => 1,
        Fill::Replacement { generation, .. } => *generation,
    };
    // SAFETY: the mapping is `file_len` bytes long and private to us: the file
    // carries the creator's mark and we hold its flock, so no process has it
    // mapped as a mutex. Every write stays inside the mapping.
    unsafe {
        std::ptr::write_bytes(base, 0, want.file_len as usize);
        if let Fill::Replacement { carried, .. } = fill {
            let n = carried
                .len()
                .min(want.file_len as usize - layout::OWNER_OFFSET);
            std::ptr::copy_nonoverlapping(carried.as_ptr(), base.add(layout::OWNER_OFFSET), n);
        }
    }
    // Our magic goes in first, with the state still INIT: from here on a
    // crashed creator's leftover is recognisable as ours.
    let header = layout::new_header(
        kind,
        want,
        generation,
        identity::boot_id(),
        identity::me().pidns_ino,
        sys::coarse_unix_ns(),
    );
    // SAFETY: the header region is the first 256 bytes of the mapping and is
    // private to us; `state` stays INIT until the release store below.
    unsafe { std::ptr::write(base.cast::<Header>(), header) };
    let mutex = base
        .wrapping_add(layout::MUTEX_OFFSET)
        .cast::<libc::pthread_mutex_t>();
    // SAFETY: `mutex` is aligned (offset 256 of a page) and lies in the
    // mapping; nobody else can use it yet (see above).
    unsafe { sys::mutex_init(mutex, kind.mutex_kind()) }
        .map_err(io_err("pthread_mutex_init", path))?;
    if kind == layout::Kind::Semaphore {
        for i in 0..(want.size as usize / layout::SLOT_SIZE) {
            let slot = base.wrapping_add(want.offset as usize + i * layout::SLOT_SIZE);
            // SAFETY: slot `i` lies inside the value region of the mapping,
            // 64-byte aligned, and is private to us like everything here.
            unsafe { sys::mutex_init(slot.cast(), sys::MutexKind::ErrorCheck) }
                .map_err(io_err("pthread_mutex_init", path))?;
        }
    }
    if let Fill::Replacement { .. } = fill {
        // SAFETY: just initialised, and still private to us.
        unsafe { sys::mark_owner_died(mutex) };
    }
    checkpoint("mutex_init");
    let m = Mapping::new(map, (0, 0));
    m.state()
        .store(layout::STATE_READY, std::sync::atomic::Ordering::Release);
    checkpoint("header");
    sys::fchmod(fd, mode).map_err(io_err("fchmod", path))?;
    checkpoint("chmod");
    Ok(())
}

/// Reads the header and the mutex bytes without mapping anything.
fn read_header(
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

/// Decides what to do with an existing path opened as `fd`.
fn inspect(
    path: &Path,
    fd: OwnedFd,
    writable: bool,
    opts: &OpenOptions,
    want: DataLayout,
) -> Result<Step, Error> {
    let st = check_file(path, &fd, opts)?;
    if st.perm() == layout::CREATOR_MODE {
        return creator_marked(path, fd, writable, opts, want);
    }
    if st.perm() & 0o200 == 0 {
        // Read-only, but not our mark: someone else's file.
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    if st.size < layout::DATA_MIN_OFFSET as u64 {
        let (h, _, n) = read_header(path, &fd)?;
        // A cut-short mutex file still starts with (a prefix of) our magic.
        if !layout::MAGIC.starts_with(&h.magic[..n.min(8)]) {
            return Err(Error::ForeignFile {
                path: path.to_owned(),
            });
        }
        return Err(Error::Truncated {
            path: path.to_owned(),
            len: st.size,
            needed: want.file_len.max(layout::DATA_MIN_OFFSET as u64),
        });
    }
    let (header, mutex, _) = read_header(path, &fd)?;
    if header.magic == layout::MAGIC && header.state == layout::STATE_INIT {
        // Writable yet not ready: only a takeover by a non-root user makes
        // this for a moment (see `writable_fd`); wait while it holds the flock.
        if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
            return Ok(Step::Wait);
        }
        let _ = sys::funlock(&fd);
    }
    let check = if opts.any_value { None } else { Some(want) };
    layout::validate(&header, st.size, check, opts.accepted_kinds(), &mutex)
        .map_err(|i| invalid_to_error(path, i, want))?;
    if header.kind == layout::Kind::Semaphore.code() {
        check_permit_mutexes(path, &fd, &header)?;
    }
    if header.state == layout::STATE_RETIRED || st.nlink == 0 {
        // A reset renames the new file over the path *before* it marks the
        // old one RETIRED, so a RETIRED file still at the path was not left
        // by a reset: refuse it rather than look again for ever.
        let here = sys::lstat(path).is_ok_and(|now| (now.dev, now.ino) == (st.dev, st.ino));
        if here && st.nlink > 0 {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                reason: "marked as replaced by a reset, yet still at its path",
            });
        }
        // A reset replaced it between our open and now: open the new one.
        return Ok(Step::Retry);
    }
    let our_ns = identity::me().pidns_ino;
    if header.pidns_ino != our_ns && !opts.allow_foreign_pid_namespace {
        return Err(Error::PidNamespaceMismatch {
            path: path.to_owned(),
            file_ns: header.pidns_ino,
            ours: our_ns,
        });
    }
    if !writable {
        return Err(Error::PermissionDenied {
            path: path.to_owned(),
        });
    }
    let map = registry::attach((st.dev, st.ino), || {
        MmapOptions::new()
            .len(header.file_len as usize)
            .map_raw(&fd)
            .map_err(io_err("mmap", path))
    })?;
    let opened = Opened {
        map,
        header,
        fd,
        stat: st,
    };
    if header.boot_id != identity::boot_id() {
        crate::stale::repair_stale_boot(path, &opened, opts)?;
    }
    Ok(Step::Attached(Box::new(opened)))
}

/// A semaphore's permits are mutexes too: each slot's glibc kind word must
/// say robust + pshared + errorcheck, or glibc may take another locking path
/// (priority protect aborts the process) on the first acquire.
fn check_permit_mutexes(path: &Path, fd: &OwnedFd, header: &Header) -> Result<(), Error> {
    let n = header.data_size as usize / layout::SLOT_SIZE;
    let mut slots = vec![0u8; n * layout::SLOT_SIZE];
    let got = sys::read_at(fd, &mut slots, header.data_offset).map_err(io_err("read", path))?;
    let expected = sys::expected_kind_word(sys::MutexKind::ErrorCheck);
    let bad = got < slots.len()
        || (cfg!(target_env = "gnu")
            && slots
                .chunks_exact(layout::SLOT_SIZE)
                .any(|s| sys::glibc_kind_word(s) != Some(expected)));
    if bad {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "a permit's mutex is not a robust process-shared errorcheck mutex",
        });
    }
    Ok(())
}

/// The file carries the creator's mark (mode 0400).
fn creator_marked(
    path: &Path,
    fd: OwnedFd,
    writable: bool,
    opts: &OpenOptions,
    want: DataLayout,
) -> Result<Step, Error> {
    if !sys::try_flock_exclusive(&fd).map_err(io_err("flock", path))? {
        return Ok(Step::Wait); // a live creator is at work
    }
    // We hold the flock. Look again: the creator may have finished (and
    // chmodded) between our fstat and our flock, or the name may be gone.
    let st = sys::fstat(&fd).map_err(io_err("fstat", path))?;
    let still_marked = st.perm() == layout::CREATOR_MODE && st.nlink > 0;
    let leftover = still_marked && crashed_creator_leftover(path, &fd, st.size)?;
    match decide_marked(true, still_marked, leftover) {
        Marked::TakeOver => {}
        other => {
            let _ = sys::funlock(&fd);
            return match other {
                Marked::Refuse => Err(Error::ForeignFile {
                    path: path.to_owned(),
                }),
                _ => Ok(Step::Retry),
            };
        }
    }
    log::warn!(
        "{}: its creator died during initialisation; taking over",
        path.display()
    );
    // The flock stays on `fd` (flocks belong to one open file description).
    let reopened;
    let rw = if writable {
        &fd
    } else {
        reopened = writable_fd(path, &fd)?;
        &reopened
    };
    let r = initialise(path, rw, opts.mode, want, opts.kind, &Fill::Fresh);
    let _ = sys::funlock(&fd);
    r.map(|()| Step::Retry)
}

/// What to do with a file that carried the creator's mark (mode 0400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// A live creator holds the flock: wait for it.
    Wait,
    /// The file changed (finished, renamed, removed): look again.
    Retry,
    /// Its creator died; the content is its leftover: initialise it.
    TakeOver,
    /// Someone else's read-only file: refuse it, untouched.
    Refuse,
}

/// The pure decision for a creator-marked file, after trying its flock.
/// `got_flock`: our non-blocking exclusive flock succeeded; `still_marked`:
/// re-checked under the flock, the file still has mode 0400 and a name;
/// `leftover`: its content is only what a crashed creator can leave.
/// Kept free of system calls so the loom model runs exactly this code.
pub fn decide_marked(got_flock: bool, still_marked: bool, leftover: bool) -> Marked {
    match (got_flock, still_marked, leftover) {
        (false, _, _) => Marked::Wait,
        (true, false, _) => Marked::Retry,
        (true, true, true) => Marked::TakeOver,
        (true, true, false) => Marked::Refuse,
    }
}

/// True if the file holds only what a crashed creator can leave: nothing,
/// zeros, or our magic with the header in the INIT (or, before the chmod,
/// READY) state.
fn crashed_creator_leftover(path: &Path, fd: &OwnedFd, size: u64) -> Result<bool, Error> {
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

/// Root opened the file read-write at once; another user who owns a 0400
/// file gets a read-write descriptor by lifting the mark for the length of
/// one `open`, while we hold the flock on `fd`.
fn writable_fd(path: &Path, fd: &OwnedFd) -> Result<OwnedFd, Error> {
    use std::os::fd::AsRawFd;
    sys::fchmod(fd, 0o600).map_err(|_| Error::PermissionDenied {
        path: path.to_owned(),
    })?;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&proc_path);
    let restore = sys::fchmod(fd, layout::CREATOR_MODE);
    let rw: OwnedFd = rw.map_err(io_err("reopen", path))?.into();
    restore.map_err(io_err("fchmod", path))?;
    Ok(rw)
}

/// Builds a new, READY file as an unnamed `O_TMPFILE` beside `path` and
/// publishes it over `path` with `rename` (atomic). `owner`: chown it to this
/// uid and gid (when running as root).
pub(crate) fn publish_new_file(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    want: DataLayout,
    kind: layout::Kind,
    fill: &Fill<'_>,
) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let fd =
        sys::create_unnamed(&dir, layout::CREATOR_MODE).map_err(io_err("open O_TMPFILE", path))?;
    if let Some((uid, gid)) = owner {
        if sys::geteuid() == 0 && (uid, gid) != (0, 0) {
            sys::fchown(&fd, uid, gid).map_err(io_err("fchown", path))?;
        }
    }
    initialise(path, &fd, mode, want, kind, fill)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.new-{}-{}",
        std::process::id(),
        sys::coarse_unix_ns()
    ));
    sys::link_unnamed(&fd, &tmp).map_err(io_err("link", path))?;
    if let Err(e) = sys::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("rename", path)(e));
    }
    Ok(())
}

/// Checks that `path` names one of our files (any kind, any `T`, or a
/// crashed creator's leftover) and returns its stat; anything else is an error.
fn check_ours(path: &Path) -> Result<sys::FileStat, Error> {
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

/// Unlinks `path` if it is a robust-mutex file (of any `T`).
pub(crate) fn remove(path: &Path) -> Result<(), Error> {
    let st = check_ours(path)?;
    // Unlink only the file we checked: the name must still lead to it.
    let now = sys::lstat(path).map_err(io_err("lstat", path))?;
    if (now.dev, now.ino) != (st.dev, st.ino) {
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(io_err("unlink", path))
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

    #[test]
    fn the_creator_mark_decision_table() {
        assert_eq!(decide_marked(false, true, true), Marked::Wait);
        assert_eq!(decide_marked(true, false, true), Marked::Retry);
        assert_eq!(decide_marked(true, true, true), Marked::TakeOver);
        assert_eq!(decide_marked(true, true, false), Marked::Refuse);
    }
}
