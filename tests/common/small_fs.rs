//! Small filesystems mounted on fresh temporary directories, for the
//! full-disk and read-only-mount tests (root only: they are marked
//! `#[cfg_attr(not_root, ignore = ...)]`): a tmpfs of a few pages, and an
//! ext4 image on a loop device. Unmounted when dropped.
#![allow(dead_code)] // each test binary uses a part

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A mounted small filesystem, unmounted (lazily, if still busy) on drop.
pub struct SmallFs {
    dir: tempfile::TempDir,
    /// The ext4 image's directory, removed after the unmount.
    _image: Option<tempfile::TempDir>,
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl SmallFs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. "64k")
    /// on a new directory, mode 0755.
    pub fn tmpfs(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let opts = format!("size={size},mode=0755");
        assert!(
            run("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", d]),
            "mount -t tmpfs on {d}"
        );
        SmallFs { dir, _image: None }
    }

    /// Mounts a new 4 MiB ext4 image through a loop device (for tests
    /// marked `#[cfg_attr(any(not_root, no_loop_ext4), ignore = ...)]`:
    /// build.rs found mkfs.ext4 and loop devices).
    pub fn ext4() -> SmallFs {
        let image = tempfile::tempdir().unwrap();
        let img = image.path().join("ext4.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let img = img.to_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(run("mkfs.ext4", &["-q", "-F", img]), "mkfs.ext4 {img}");
        let d = dir.path().to_str().unwrap();
        assert!(
            run("mount", &["-o", "loop", img, d]),
            "mount -o loop {img} {d}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        SmallFs {
            dir,
            _image: Some(image),
        }
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
        let path = self.join(name);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(512).unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        path
    }

    /// Writes a filler file until the filesystem is full: pages, then bytes,
    /// until ENOSPC; then `fsync` (ext4 gives back blocks it had set aside
    /// for delayed allocation) and again, until a round fits nothing.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.join("filler")).unwrap();
        loop {
            let mut wrote = 0;
            for chunk in [4096, 1] {
                let buf = vec![0x5au8; chunk];
                loop {
                    match f.write(&buf) {
                        Ok(0) => break,
                        Ok(n) => wrote += n,
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                        Err(e) => panic!("filling {}: {e}", self.path().display()),
                    }
                }
            }
            let _ = f.sync_all();
            if wrote == 0 {
                return;
            }
        }
    }

    /// Removes the filler: the filesystem has room again.
    pub fn free(&self) {
        // Truncate before unlinking: a forked child of another test (one
        // that forks without exec, e.g. to drop privileges) may still hold
        // an inherited descriptor of the filler, and an unlinked but open
        // file keeps its blocks. Truncation frees them whoever holds it.
        let filler = self.join("filler");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(0)
            .unwrap();
        std::fs::remove_file(filler).unwrap();
    }

    /// Remounts it read-only.
    pub fn remount_read_only(&self) {
        let d = self.dir.path().to_str().unwrap();
        assert!(run("mount", &["-o", "remount,ro", d]), "remount {d}");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let d = self.dir.path().to_str().unwrap().to_owned();
        if !run("umount", &[&d]) {
            // A child still has it open: detach it now, freed when closed.
            run("umount", &["-l", &d]);
        }
    }
}
