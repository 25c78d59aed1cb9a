//! Values of raw bytes (`SharedMutex::open_bytes`, `Guard::bytes`): what the
//! Python package's `SharedMutex(path, size)` is. Their files are ordinary
//! mutex files: typed handles and byte handles open each other's, across
//! processes; a wrong size is refused without a change.

use crate::common::roles_bytes::{HALF_DONE, OPEN_ENV, hex, unhex};
use crate::common::{Kid, snapshot, temp_path};
use robust_mutex::{Acquired, BYTES_ALIGN, Error, LockState, OpenOptions, SharedMutex};
use std::path::Path;

/// The value's size and alignment in the file's header (the file format's
/// `data_size` and `data_align`, docs/design.md), and the file's length.
fn value_layout(path: &Path) -> (u64, u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
    (u64_at(56), u64_at(64), bytes.len() as u64)
}

/// Creates a file of `bytes.len()` bytes at `path` holding `bytes`.
fn bytes_file(path: &Path, bytes: &[u8]) -> SharedMutex<()> {
    let m = SharedMutex::open_bytes(path, bytes.len()).unwrap();
    let mut g = m.lock().unwrap().recover_with(|()| {});
    g.bytes_mut().copy_from_slice(bytes);
    drop(g);
    m
}

/// Runs `bytes_rw` on `path` opened as `open`: returns what it read, after
/// it wrote `new`.
fn swap_in_child(path: &Path, open: &str, new: &[u8]) -> Vec<u8> {
    let mut kid = Kid::spawn_env("bytes_rw", path, &[(OPEN_ENV, open)]);
    let was = unhex(&kid.expect("was"));
    kid.tell(&hex(new));
    kid.expect("wrote");
    kid.wait_ok();
    was
}

#[test]
fn open_bytes_creates_a_value_of_len_bytes_aligned_to_8() {
    assert_eq!(BYTES_ALIGN, 8);
    for len in [1, 3, 16, 100, 4096, 5000] {
        let (_dir, path) = temp_path("b");
        let m = SharedMutex::open_bytes(&path, len).unwrap();
        let (size, align, file_len) = value_layout(&path);
        assert_eq!((size, align), (len as u64, 8), "len {len}");
        assert_eq!(
            file_len,
            512 + len as u64,
            "len {len}: the value ends the file"
        );
        assert_eq!(m.file_info().value_size, len as u64);
        let g = m.lock().unwrap().recover_with(|()| {});
        assert_eq!(g.bytes(), vec![0; len], "a new value is zeroed");
    }
    // The builder's form takes the options (here a mode) as usual.
    let (_dir, path) = temp_path("b");
    let m = OpenOptions::new()
        .create(true)
        .mode(0o640)
        .open_bytes(&path, 24)
        .unwrap();
    assert_eq!(crate::common::mode_of(&path), 0o640);
    assert_eq!(m.lock().unwrap().recover_with(|()| {}).bytes().len(), 24);
}

#[test]
fn a_typed_file_opens_as_bytes_in_another_process_and_back() {
    let (_dir, path) = temp_path("t");
    let typed = SharedMutex::<[u64; 2]>::open(&path).unwrap();
    *typed.lock().unwrap().recover_with(|_| {}) = [0x0102_0304_0506_0708, u64::MAX];
    let was = swap_in_child(&path, "bytes:16", b"0123456789abcdef");
    assert_eq!(
        was,
        bytemuck::bytes_of(&[0x0102_0304_0506_0708u64, u64::MAX]),
        "the byte handle sees the typed value's bytes"
    );
    let g = typed.lock().unwrap().recover_with(|_| {});
    assert_eq!(bytemuck::bytes_of(&*g), b"0123456789abcdef");
    assert_eq!(g.bytes(), b"0123456789abcdef");
}

#[test]
fn a_bytes_file_opens_as_typed_in_another_process_and_back() {
    let (_dir, path) = temp_path("b");
    let m = bytes_file(&path, b"written as bytes");
    let new = bytemuck::bytes_of(&[7u64, 9]).to_vec();
    assert_eq!(swap_in_child(&path, "typed", &new), b"written as bytes");
    assert_eq!(m.lock().unwrap().recover_with(|()| {}).bytes(), new);
    // And a second byte handle, in yet another process, sees them too.
    assert_eq!(swap_in_child(&path, "bytes:16", &[0; 16]), new);
    assert_eq!(m.lock().unwrap().recover_with(|()| {}).bytes(), [0; 16]);
}

/// "Any alignment": a file whose value a 4-aligned type made opens by its
/// size alone.
#[test]
fn a_file_of_a_less_aligned_type_opens_as_bytes() {
    let (_dir, path) = temp_path("t");
    let typed = SharedMutex::<[u32; 3]>::open(&path).unwrap();
    *typed.lock().unwrap().recover_with(|_| {}) = [1, 2, 3];
    let m = SharedMutex::open_bytes(&path, 12).unwrap();
    let g = m.lock().unwrap().recover_with(|()| {});
    assert_eq!(g.bytes(), bytemuck::bytes_of(&[1u32, 2, 3]));
}

#[test]
fn a_size_mismatch_is_type_mismatch_and_leaves_the_file_byte_for_byte() {
    let (_dir, path) = temp_path("b");
    let _m = bytes_file(&path, b"must stay as is.");
    let before = snapshot(&path);
    for len in [0, 1, 8, 15, 17, 32, 4096] {
        match SharedMutex::open_bytes(&path, len) {
            Err(Error::TypeMismatch {
                file_size, size, ..
            }) => assert_eq!((file_size, size), (16, len as u64), "len {len}"),
            other => panic!("len {len}: expected TypeMismatch, got {other:?}"),
        }
        assert_eq!(snapshot(&path), before, "len {len}: the file changed");
    }
    // A typed handle of another size is refused the same way, and so is
    // one of the size at another alignment than BYTES_ALIGN (documented:
    // only a byte handle takes any alignment).
    assert!(matches!(
        SharedMutex::<u64>::open(&path),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        SharedMutex::<[u8; 16]>::open(&path),
        Err(Error::TypeMismatch { .. })
    ));
    assert_eq!(snapshot(&path), before);

    // And a typed file opened as bytes of another size.
    let (_dir, typed_path) = temp_path("t");
    drop(SharedMutex::<[u64; 2]>::open(&typed_path).unwrap());
    let before = snapshot(&typed_path);
    let e = SharedMutex::open_bytes(&typed_path, 8).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&*typed_path.to_string_lossy()),
        "{e}"
    );
    assert_eq!(snapshot(&typed_path), before);
}

#[test]
fn a_value_of_zero_bytes_works() {
    let (_dir, path) = temp_path("b");
    let m = SharedMutex::open_bytes(&path, 0).unwrap();
    assert_eq!(value_layout(&path), (0, 8, 512));
    let mut g = m.lock().unwrap().recover_with(|()| {});
    assert!(g.bytes().is_empty());
    assert!(g.bytes_mut().is_empty());
    drop(g);
    assert_eq!(swap_in_child(&path, "bytes:0", &[]), Vec::<u8>::new());
    assert_eq!(m.status().state, LockState::Unlocked);
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
    // A unit file (a Rust `SharedMutex<()>`'s, value aligned to 1) opens as
    // zero bytes too.
    let (_dir, unit) = temp_path("u");
    drop(SharedMutex::<()>::open(&unit).unwrap());
    let u = SharedMutex::open_bytes(&unit, 0).unwrap();
    assert!(u.lock().unwrap().recover_with(|()| {}).bytes().is_empty());
}

/// The Python package's way out of a dropped recovery: the bytes file,
/// not recoverable, is reset; its bytes and layout are kept, and the open
/// handle follows to the replacement.
#[test]
fn a_not_recoverable_bytes_file_is_reset_keeping_its_bytes() {
    let (_dir, path) = temp_path("b");
    let m = SharedMutex::open_bytes(&path, 16).unwrap();
    let mut kid = Kid::spawn("bytes_hold", &path);
    kid.expect("locked");
    kid.kill();
    match m.lock().unwrap() {
        Acquired::OwnerDied(r) => drop(r),
        Acquired::Clean(_) => panic!("expected OwnerDied"),
    }
    assert_eq!(m.status().state, LockState::NotRecoverable);
    let out = robust_mutex::reset(&path, false).unwrap();
    assert_eq!(out.previous_state, LockState::NotRecoverable);
    assert_eq!(value_layout(&path), (16, 8, 528));
    assert_eq!(swap_in_child(&path, "bytes:16", &[1; 16]), HALF_DONE);
    let Acquired::Clean(g) = m.lock().unwrap() else {
        panic!("the reset file's lock is clean");
    };
    assert_eq!(g.bytes(), [1; 16]);
}

/// The names in `dir`: empty when nothing was left behind.
fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// A length no file can have (past `off_t`, or past `usize` with the
/// header) is refused before anything is made, saying so; one a file could
/// have but the filesystem refuses is the OS's error from the creation,
/// which is undone. Either way no file is left.
#[test]
fn a_huge_len_is_a_typed_error_and_leaves_no_file() {
    for len in [usize::MAX, usize::MAX - 511, isize::MAX as usize - 511] {
        let (dir, path) = temp_path("b");
        let e = SharedMutex::open_bytes(&path, len).unwrap_err();
        assert!(
            matches!(e, Error::InvalidOptions { .. }),
            "len {len:#x}: {e:?}"
        );
        assert!(e.to_string().contains("too large"), "len {len:#x}: {e}");
        assert_eq!(names_in(dir.path()), Vec::<std::ffi::OsString>::new());
        // An existing file is not touched either.
        let _m = bytes_file(&path, b"sixteen bytes...");
        let before = snapshot(&path);
        let e = SharedMutex::open_bytes(&path, len).unwrap_err();
        assert!(
            matches!(e, Error::InvalidOptions { .. }),
            "len {len:#x}: {e:?}"
        );
        assert_eq!(snapshot(&path), before);
    }
    // The filesystem refuses these (ext4: EFBIG; a tmpfs with a size:
    // ENOSPC).
    for len in [1 << 62, 1 << 50, 1 << 47] {
        let (dir, path) = temp_path("b");
        let e = SharedMutex::open_bytes(&path, len).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "len {len:#x}: {e:?}");
        assert_eq!(names_in(dir.path()), Vec::<std::ffi::OsString>::new());
    }
}

#[test]
fn guard_bytes_are_the_typed_guards_bytes() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Job {
        id: u64,
        state: u32,
        tries: u16,
        flags: [u8; 2],
    }
    let (_dir, path) = temp_path("t");
    let m = SharedMutex::<Job>::open(&path).unwrap();
    let mut g = m.lock().unwrap().recover_with(|_| {});
    *g = Job {
        id: 0xdead_beef,
        state: 3,
        tries: 2,
        flags: [1, 0],
    };
    assert_eq!(g.bytes(), bytemuck::bytes_of(&*g));
    g.bytes_mut()[12..14].copy_from_slice(&9u16.to_ne_bytes());
    assert_eq!(g.tries, 9, "bytes_mut writes the typed value");
    assert_eq!(g.bytes(), bytemuck::bytes_of(&*g));
    // A unit value has no bytes.
    let (_dir, unit) = temp_path("u");
    let u = SharedMutex::<()>::open(&unit).unwrap();
    assert!(u.lock().unwrap().recover_with(|()| {}).bytes().is_empty());
}

#[test]
fn bytes_a_killed_holder_left_are_repaired_through_the_recovery() {
    let (_dir, path) = temp_path("b");
    let m = SharedMutex::open_bytes(&path, 16).unwrap();
    let mut kid = Kid::spawn("bytes_hold", &path);
    kid.expect("locked");
    let pid = kid.pid();
    kid.kill();
    let Acquired::OwnerDied(mut r) = m.lock().unwrap() else {
        panic!("expected OwnerDied after the holder's SIGKILL");
    };
    assert_eq!(r.previous_owner().unwrap().pid, pid);
    assert_eq!(
        r.bytes_mut(),
        HALF_DONE,
        "the dead holder's write is visible"
    );
    r.bytes_mut().copy_from_slice(b"repaired........");
    drop(r.mark_consistent());
    assert_eq!(
        swap_in_child(&path, "bytes:16", &[0; 16]),
        b"repaired........"
    );
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
}
