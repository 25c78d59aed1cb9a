//! A small tmpfs mounted on a fresh temporary directory, for the full-disk
//! and read-only-mount tests (root only: they are marked
//! `#[cfg_attr(not_root, ignore = ...)]`). Unmounted when dropped.
#![allow(dead_code)] // each test binary uses a part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs of a few pages, unmounted (lazily, if still busy) on drop.
pub struct SmallTmpfs {
    dir: tempfile::TempDir,
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

impl SmallTmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. "64k")
    /// on a new directory, mode 0755.
    pub fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
                d,
            ],
        );
        SmallTmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the mount.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes what a creator killed by SIGBUS on a full disk left before
    /// creation reserved its blocks: mode 0400, 512 bytes, all a hole
    /// (ftruncate, then the fault on the first store).
    pub fn sparse_leftover(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.join(name);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(512).unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        path
    }

    /// Writes a filler file until the filesystem says it is full (ENOSPC).
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.join("filler")).unwrap();
        let page = [0x5au8; 4096];
        loop {
            match f.write(&page) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last page may have gone in part: fill the rest byte by byte.
        while f.write(&[1]).is_ok_and(|n| n == 1) {}
    }

    /// Removes the filler: the filesystem has room again.
    pub fn free(&self) {
        std::fs::remove_file(self.join("filler")).unwrap();
    }

    /// Remounts it read-only.
    pub fn remount_read_only(&self) {
        let d = self.dir.path().to_str().unwrap();
        run("mount", &["-o", "remount,ro", d]);
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let d = self.dir.path().to_str().unwrap().to_owned();
        let ok = Command::new("umount")
            .arg(&d)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // A child still has it open: detach it now, freed when closed.
            let _ = Command::new("umount").args(["-l", &d]).status();
        }
    }
}
