//! Regression (found reviewing the fix for the RETIRED-file spin, commit
//! bc105dd, against the fuzz property "open never returns `InitTimeout` when
//! nobody holds the flock, and never changes a file it returns an error
//! for"): the new bound "a `Step::Retry` past the init timeout is
//! `InitTimeout`" also counts the retry that follows *our own* creation or
//! takeover of the file. With a short `init_timeout` (zero: "never wait for
//! another creator") open creates or initialises the file and then returns
//! `Err(InitTimeout)`: an error for a file it has just changed, and a
//! `create(true)` that never succeeds.
//!
//! The fuzz corpus inputs `seed-*-empty-0400`, `seed-*-t0-valid-0400` and
//! `seed-*-magic-init-0400` go through this takeover; the fuzz target's
//! 50 ms init timeout makes them fail only when the takeover itself takes
//! longer than that (a loaded machine), while a zero timeout fails every
//! time.

use robust_mutex::{Error, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn zero_timeout() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.create(true).init_timeout(Duration::ZERO);
    o
}

#[test]
fn create_with_a_zero_init_timeout_attaches_to_the_file_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    match zero_timeout().open::<u64>(&path) {
        Ok(m) => drop(m),
        Err(e) => panic!(
            "create(true) with a zero init timeout failed: {e} (the file {} was created anyway: {})",
            path.display(),
            path.exists()
        ),
    }
}

#[test]
fn a_takeover_with_a_zero_init_timeout_attaches_or_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    // A crashed creator's leftover: an empty file with the creator's mark.
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    match zero_timeout().open::<u64>(&path) {
        Ok(m) => drop(m),
        Err(e @ Error::InitTimeout { .. }) => {
            let md = std::fs::metadata(&path).unwrap();
            panic!(
                "open returned {e} after taking the file over: it is now {} bytes, mode {:o}",
                md.len(),
                md.permissions().mode() & 0o7777
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
