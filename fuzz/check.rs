//! The fuzzing property, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/open_file.rs`) and the corpus replay in `cargo test`
//! (`tests/fuzz_corpus.rs`): whatever bytes and mode a file holds, opening it
//! never panics, crashes, hangs or raises SIGBUS, and a rejected file is left
//! exactly as it was.
//!
//! Input layout: byte 0 picks the value type (low 2 bits) and, with bit 7,
//! "bit-flip mode"; bytes 1-2 pick the mode; the rest is the file's content,
//! or in bit-flip mode a list of (offset u16, xor u8) edits applied to a
//! valid file made by the library, which gets the fuzzer deep quickly.
#![allow(dead_code)]

use robust_mutex::{OpenOptions, SharedMutex};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// A value type with a large alignment.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(16))]
pub struct Aligned16 {
    pub a: [u64; 2],
}

const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
struct Snap {
    bytes: Vec<u8>,
    mode: u32,
    len: u64,
}

fn snap(path: &Path) -> Snap {
    let md = std::fs::symlink_metadata(path).unwrap();
    Snap {
        bytes: std::fs::read(path).unwrap(),
        mode: md.mode(),
        len: md.len(),
    }
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn valid_file<T: bytemuck::Pod>(dir: &Path) -> Vec<u8> {
    let p = dir.join("valid");
    drop(SharedMutex::<T>::open(&p).unwrap());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    bytes
}

fn open_and_use<T: bytemuck::Pod>(path: &Path) -> Result<(), robust_mutex::Error> {
    let m = OpenOptions::new()
        .create(true)
        .init_timeout(Duration::from_millis(50))
        .open::<T>(path)?;
    let _ = m.status();
    let _ = m.file_info();
    if let Ok(a) = m.try_lock() {
        drop(a.recover_with(|_| {}));
    }
    drop(m.lock_timeout(Duration::from_millis(1)));
    Ok(())
}

/// Runs one input. Panics on a violated property.
pub fn check(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let ty = data[0] & 3;
    let bitflip = data[0] & 0x80 != 0;
    let sel = u16::from_le_bytes([data[1], data[2]]);
    let mode = match sel % 8 {
        0 => 0o600,
        1 => 0o400,
        2 => 0o644,
        3 => 0o444,
        4 => 0o660,
        5 => 0o000,
        _ => u32::from(sel >> 3) & 0o7777,
    };
    let body = &data[3..data.len().min(3 + MAX_BODY)];
    let dir = scratch_dir();
    let content = if bitflip {
        let mut v = match ty {
            0 => valid_file::<u64>(dir.path()),
            1 => valid_file::<()>(dir.path()),
            2 => valid_file::<[u8; 4096]>(dir.path()),
            _ => valid_file::<Aligned16>(dir.path()),
        };
        for e in body.chunks_exact(3) {
            let off = usize::from(u16::from_le_bytes([e[0], e[1]]));
            if off < v.len() {
                v[off] ^= e[2];
            } else if e[2] == 0xff {
                v.truncate(off % (v.len() + 1));
            }
        }
        v
    } else {
        body.to_vec()
    };
    let path = dir.path().join("f");
    std::fs::write(&path, &content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let before = snap(&path);
    let start = Instant::now();
    let r = match ty {
        0 => open_and_use::<u64>(&path),
        1 => open_and_use::<()>(&path),
        2 => open_and_use::<[u8; 4096]>(&path),
        _ => open_and_use::<Aligned16>(&path),
    };
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "open took {:?}",
        start.elapsed()
    );
    if let Err(e) = r {
        let msg = e.to_string();
        assert!(!msg.is_empty());
        assert_eq!(snap(&path), before, "a rejected file was changed ({msg})");
    }
}
