//! [`remove`]: unlink a lock file of any kind, and nothing else.

use crate::error::Error;
use crate::file::{self, io_err};
use crate::sys;
use std::path::Path;

/// Removes the name `path` if it is a lock file of this crate, of any kind
/// ([`SharedMutex`](crate::SharedMutex) of any `T`,
/// [`ReentrantMutex`](crate::ReentrantMutex),
/// [`SharedSemaphore`](crate::SharedSemaphore), a pymutex-format
/// [`BareMutex`](crate::BareMutex) file, or what a crashed creator left).
/// Handles that are open keep working on the unlinked file; a later `open`
/// creates a new one. Anything else is refused and left untouched.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Symlink`], [`Error::NotRegularFile`] or
/// [`Error::ForeignFile`] (nothing is removed), or [`Error::Io`].
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("m");
/// robust_mutex::SharedMutex::<u64>::open(&path)?;
/// robust_mutex::remove(&path)?;
/// assert!(!path.exists());
///
/// std::fs::write(&path, "not a lock")?;
/// assert!(robust_mutex::remove(&path).is_err());
/// assert!(path.exists()); // untouched
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remove(path: impl AsRef<Path>) -> Result<(), Error> {
    let path = path.as_ref();
    let st = match file::checks::check_ours(path) {
        Ok(st) => st,
        Err(Error::ForeignFile { .. }) if crate::bare::is_bare_file(path)? => {
            sys::lstat(path).map_err(io_err("lstat", path))?
        }
        Err(e) => return Err(e),
    };
    // Unlink only the file we checked: the name must still lead to it.
    let now = sys::lstat(path).map_err(io_err("lstat", path))?;
    if (now.dev, now.ino) != (st.dev, st.ino) {
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(io_err("unlink", path))
}
