//! A tmpfs mounted on a fresh temporary directory, for tests that need a
//! read-only filesystem (root only). Shared by the `file` and `cli` test
//! binaries.

use std::path::Path;
use std::process::Command;

/// A tmpfs on a temporary directory; unmounted (lazily, so an open
/// descriptor cannot keep it) when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

fn mount(args: &[&str], dir: &Path) {
    let st = Command::new("mount").args(args).arg(dir).status().unwrap();
    assert!(st.success(), "mount {args:?} {}: {st:?}", dir.display());
}

impl Tmpfs {
    /// Mounts a 1 MiB tmpfs, writable, world-enterable (mode 0755).
    pub fn new() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        mount(
            &["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"],
            dir.path(),
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it: one file takes every free block (the write ends in ENOSPC).
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let block = vec![0xa5u8; 64 << 10];
        let full = loop {
            if let Err(e) = f.write_all(&block) {
                break e;
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    }

    /// Remounts it read-only. Fails while a file on it is open for writing
    /// (a lock holder): make the state first, then remount.
    pub fn remount_read_only(&self) {
        mount(&["-o", "remount,ro"], self.dir.path());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
