//! Full and read-only filesystems, on a real small tmpfs and ext4 (so root
//! only):
//! creation reserves the file's blocks before it maps anything, so a full
//! disk is a typed error ([`Error::NoSpace`]), never a SIGBUS, and leaves
//! nothing that crashes anyone later; once space is freed, opening works.

use crate::common::roles_file::KIND_ENV;
use crate::common::small_fs::SmallFs;
use crate::common::{Kid, snapshot};
use robust_mutex::{Error, SharedMutex};
use std::path::Path;

const KINDS: [&str; 4] = ["mutex", "reentrant", "semaphore", "bare"];

/// Opens (creating) `kind` at `path` in a child: a SIGBUS kills the child,
/// and `expect` then fails naming the kind.
fn open_in_child(kind: &str, path: &Path) -> String {
    let mut kid = Kid::spawn_env("open_kind_report", path, &[(KIND_ENV, kind)]);
    let r = kid.expect("result");
    kid.wait_ok();
    r
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn creating_any_kind_on_a_full_tmpfs_is_a_typed_error_and_works_once_space_is_freed() {
    creating_any_kind_on_a_full_disk("tmpfs", SmallFs::tmpfs("64k"));
}

#[test]
#[cfg_attr(
    any(not_root, no_loop_ext4),
    ignore = "needs root, mkfs.ext4 and loop devices: mounts an ext4 image"
)]
fn creating_any_kind_on_a_full_ext4_is_a_typed_error_and_works_once_space_is_freed() {
    creating_any_kind_on_a_full_disk("ext4", SmallFs::ext4());
}

fn creating_any_kind_on_a_full_disk(name: &str, fs: SmallFs) {
    fs.fill();
    for kind in KINDS {
        let path = fs.join(kind);
        let r = open_in_child(kind, &path);
        assert!(r.starts_with("no-space "), "{name}, {kind}: {r}");
        assert!(r.contains(path.to_str().unwrap()), "{name}, {kind}: {r}");
        // Nothing left behind: the creator removed its own empty file.
        assert!(!path.exists(), "{name}, {kind}: a file was left behind");
    }
    fs.free();
    for kind in KINDS {
        assert_eq!(open_in_child(kind, &fs.join(kind)), "ok", "{name}, {kind}");
    }
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_crashed_creators_sparse_leftover_on_a_full_disk_is_refused_then_taken_over() {
    let fs = SmallFs::tmpfs("64k");
    let path = fs.sparse_leftover("left.lock");
    fs.fill();
    let before = snapshot(&path);
    for kind in ["mutex", "reentrant", "semaphore"] {
        let r = open_in_child(kind, &path);
        assert!(r.starts_with("no-space take over "), "{kind}: {r}");
        assert_eq!(snapshot(&path), before, "{kind}: the leftover changed");
    }
    fs.free();
    assert_eq!(open_in_child("mutex", &path), "ok");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    assert!(!m.lock().unwrap().owner_died());
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_sparse_copy_of_a_mutex_file_on_a_full_disk_is_refused_not_mapped() {
    // A valid file whose value pages are holes (`cp --sparse=always`):
    // writing the value through the mapping would need new pages.
    let fs = SmallFs::tmpfs("64k");
    let path = fs.join("sparse.lock");
    sparse_copy(&path);
    fs.fill();
    let before = snapshot(&path);
    let e = SharedMutex::<[u8; 16384]>::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSpace {
                op: "fill holes in",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(snapshot(&path), before);
    fs.free();
    let m = SharedMutex::<[u8; 16384]>::open(&path).unwrap();
    m.lock_or_recover(|_| {}).unwrap()[16383] = 1;
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_read_only_filesystem_is_named_as_such() {
    let fs = SmallFs::tmpfs("64k");
    let existing = fs.join("m");
    SharedMutex::<u64>::open(&existing).unwrap();
    fs.remount_read_only();
    let new = fs.join("new");
    let e = SharedMutex::<u64>::open(&new).unwrap_err();
    assert!(
        matches!(&e, Error::ReadOnlyFilesystem { path, .. } if *path == new),
        "{e}"
    );
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = SharedMutex::<u64>::open(&existing).unwrap_err();
    assert!(matches!(e, Error::ReadOnlyFilesystem { .. }), "{e}");
    let e = robust_mutex::reset(&existing, true).unwrap_err();
    assert!(
        matches!(e, Error::ReadOnlyFilesystem { op: "reset", .. }),
        "{e}"
    );
    assert!(e.to_string().starts_with("reset "), "{e}");
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_reset_on_a_full_disk_leaves_the_old_file_as_it_was() {
    let fs = SmallFs::tmpfs("64k");
    let path = fs.join("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    *m.lock_or_recover(|_| {}).unwrap() = 9;
    let cut = fs.join("cut");
    std::fs::copy(&path, &cut).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(10)
        .unwrap();
    fs.fill();
    for p in [&path, &cut] {
        let before = snapshot(p);
        let e = robust_mutex::reset(p, true).unwrap_err();
        assert!(matches!(e, Error::NoSpace { op: "reset", .. }), "{e}");
        assert_eq!(snapshot(p), before);
    }
    // No temporary file was left beside them.
    let names: Vec<_> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(*m.lock_or_recover(|_| {}).unwrap(), 9);
    fs.free();
    assert_eq!(robust_mutex::reset(&path, true).unwrap().generation, 2);
    robust_mutex::reset(&cut, true).unwrap();
}

/// A conversion of a version-1 file takes its free lock only once the
/// replacement's blocks are reserved: on a full disk the refused file is
/// byte for byte as it was, and converts once space is freed.
#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_conversion_on_a_full_disk_leaves_the_version_1_file_as_it_was() {
    use crate::common::v1;
    let fs = SmallFs::tmpfs("64k");
    let paths = [fs.join("m"), fs.join("s")];
    v1::write_v1(&paths[0], v1::Kind::Mutex);
    v1::write_v1(&paths[1], v1::Kind::Semaphore(2));
    fs.fill();
    for p in &paths {
        let before = snapshot(p);
        let e = robust_mutex::reset(p, false).unwrap_err();
        assert!(matches!(e, Error::NoSpace { op: "reset", .. }), "{e}");
        assert_eq!(snapshot(p), before);
    }
    fs.free();
    for p in &paths {
        let out = robust_mutex::reset(p, false).unwrap();
        assert_eq!(out.migrated_from, Some(1));
    }
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a small tmpfs"
)]
fn a_creator_failing_for_space_while_an_opener_waits_leaves_it_a_clear_error() {
    // The creator has made its file (the mark, no blocks yet) and holds its
    // flock; the disk fills; an opener finds the mark and waits. Then the
    // creator runs out of space: the opener must end with a clear error (or
    // a good file), never stuck or with a half-made file.
    let fs = SmallFs::tmpfs("64k");
    let path = fs.join("m");
    let resumable = |step| {
        [
            ("ROBUST_MUTEX_TEST_PAUSE_AT", step),
            ("ROBUST_MUTEX_TEST_RESUME", "1"),
            (KIND_ENV, "mutex"),
        ]
    };
    let mut creator = Kid::spawn_env("open_kind_report", &path, &resumable("created"));
    creator.expect("paused:created");
    fs.fill();
    let mut opener = Kid::spawn_env("open_kind_report", &path, &resumable("open_wait"));
    opener.expect("paused:open_wait");
    creator.tell("go");
    let r = creator.expect("result");
    assert!(r.starts_with("no-space create "), "creator: {r}");
    creator.wait_ok();
    opener.tell("go");
    let r = opener.expect("result");
    assert!(r.starts_with("no-space "), "opener: {r}");
    opener.wait_ok();
    assert!(!path.exists(), "a half-made file was left");
    fs.free();
    assert_eq!(open_in_child("mutex", &path), "ok");
}

#[test]
fn attaching_to_a_sparse_copy_another_process_holds_keeps_its_value() {
    // A sparse copy (value pages are holes) is opened by a holder, which
    // fills the holes, locks and writes; a second process attaches while
    // it holds the lock mapped: it must wait for the lock and then see
    // exactly what the holder wrote (no zeroed value, no SIGBUS).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.lock");
    sparse_copy(&path);
    let mut holder = Kid::spawn("hold_big_until_told", &path);
    holder.expect("locked");
    let m = SharedMutex::<[u8; 16384]>::open(&path).unwrap();
    assert!(
        matches!(m.try_lock(), Err(robust_mutex::LockError::WouldBlock)),
        "the holder's lock is seen"
    );
    holder.tell("go");
    holder.expect("released");
    let g = m.lock_or_recover(|_| {}).unwrap();
    assert_eq!((g[0], g[16383]), (9, 7));
    assert!(g[1..16383].iter().all(|&b| b == 0));
    drop(g);
    holder.kill();
}

#[test]
fn filling_the_holes_of_a_file_cut_short_meanwhile_never_grows_it_back() {
    // An opener sees a sparse copy's holes; before it fills them the file
    // is cut short (to its header page). Filling must not grow it back
    // with zeros (which would zero the lock word of a later file, say).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.lock");
    sparse_copy(&path);
    let mut kid = Kid::spawn_env(
        "hold_big_until_told",
        &path,
        &[
            ("ROBUST_MUTEX_TEST_PAUSE_AT", "holes_seen,holes_filled"),
            ("ROBUST_MUTEX_TEST_RESUME", "1"),
        ],
    );
    kid.expect("paused:holes_seen");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    kid.tell("go");
    kid.expect("paused:holes_filled");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    kid.kill();
}

/// Writes at `path` a sparse copy of a new `SharedMutex<[u8; 16384]>` file:
/// its header page only, the value pages left as holes (`cp
/// --sparse=always`), so writing the value through a mapping needs new
/// pages.
fn sparse_copy(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("orig");
    SharedMutex::<[u8; 16384]>::open(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let f = std::fs::File::create(path).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
    f.write_all_at(&bytes[..4096], 0).unwrap();
}
