//! Multi-user use, tested for real: children drop to uid 65534 (nobody)
//! before exec, because root ignores mode bits. So these tests need root;
//! elsewhere they are ignored (`not_root`, set by build.rs).

use crate::common::{Kid, snapshot};
use robust_mutex::{Acquired, Error, OpenOptions, SharedMutex};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const NOBODY: u32 = 65534;
const GROUP: u32 = 4242;

/// A directory everyone may enter and create in (tempdirs are 0700).
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn as_nobody(role: &str, path: &Path, gid: u32) -> String {
    let mut k = Kid::spawn_as(role, path, &[], Some((NOBODY, gid)));
    let r = k.expect("result");
    k.wait_ok();
    r
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: children drop to uid 65534, files are chowned"
)]
fn the_default_mode_keeps_other_users_out_with_a_typed_error() {
    let dir = shared_dir();
    let path = dir.path().join("m");
    SharedMutex::<u64>::open(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    let before = snapshot(&path);
    assert_eq!(
        as_nobody("open_any_owner_and_report", &path, NOBODY),
        "permission"
    );
    assert_eq!(snapshot(&path), before);
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: children drop to uid 65534, files are chowned"
)]
fn a_group_mode_lets_the_group_in_when_the_caller_opts_in() {
    let dir = shared_dir();
    let path = dir.path().join("m");
    OpenOptions::new()
        .create(true)
        .mode(0o660)
        .open::<u64>(&path)
        .unwrap();
    chown(&path, 0, GROUP);
    // In the group: allowed once it accepts a file owned by another user.
    assert_eq!(as_nobody("open_and_report", &path, GROUP), "foreign-owner");
    assert_eq!(as_nobody("open_any_owner_and_report", &path, GROUP), "ok 0");
    // Not in the group: kept out by the mode.
    assert_eq!(
        as_nobody("open_any_owner_and_report", &path, NOBODY),
        "permission"
    );
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: children drop to uid 65534, files are chowned"
)]
fn a_file_owned_by_another_uid_is_refused_unless_the_caller_opts_in() {
    let dir = shared_dir();
    let path = dir.path().join("planted");
    SharedMutex::<u64>::open(&path).unwrap();
    chown(&path, NOBODY, NOBODY);
    let before = snapshot(&path);
    let e = SharedMutex::<u64>::open(&path).unwrap_err();
    assert!(
        matches!(e, Error::ForeignOwner { owner: NOBODY, .. }),
        "{e}"
    );
    assert_eq!(snapshot(&path), before);
    let m = OpenOptions::new()
        .allow_other_owners(true)
        .open::<u64>(&path)
        .unwrap();
    assert!(matches!(m.lock().unwrap(), Acquired::Clean(_)));
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: children drop to uid 65534, files are chowned"
)]
fn the_handshake_behaves_the_same_for_an_ordinary_user() {
    let dir = shared_dir();
    let path = dir.path().join("m");
    assert_eq!(as_nobody("open_and_report", &path, NOBODY), "ok 0");
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (NOBODY, 0o600));
    assert_eq!(as_nobody("open_and_report", &path, NOBODY), "ok 0");
}

#[test]
#[cfg_attr(
    not_root,
    ignore = "needs root: children drop to uid 65534, files are chowned"
)]
fn an_ordinary_user_takes_over_after_its_creator_crashed() {
    for step in ["created", "sized", "mutex_init", "header"] {
        let dir = shared_dir();
        let path = dir.path().join("m");
        let mut k = Kid::spawn_as(
            "create_paused",
            &path,
            &[("ROBUST_MUTEX_TEST_PAUSE_AT", step)],
            Some((NOBODY, NOBODY)),
        );
        k.expect(&format!("paused:{step}"));
        k.kill();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (NOBODY, 0o400), "{step}");
        // The same (non-root) user cannot open 0400 read-write; it must
        // still take over, not report a permission error.
        assert_eq!(
            as_nobody("open_and_report", &path, NOBODY),
            "ok 0",
            "after {step}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
