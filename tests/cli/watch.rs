//! `robust-mutex watch`: transitions, resets, removals and new files, and a
//! reader that goes away.

use crate::small_fs::SmallFs;
use crate::*;

#[test]
fn watch_prints_each_transition() {
    let (_dir, path) = temp_path("l");
    cli(&["create", p(&path)]);
    let mut w = Watch::start(&[
        "--interval",
        "5",
        "--until-state",
        "not-recoverable",
        p(&path),
    ]);
    assert_eq!(w.expect("unlocked", |l| l == "unlocked"), "unlocked");
    let mut h = Holder::start(&path, &["--label", "w"]);
    let locked = format!("locked pid {} tid ", h.pid());
    w.expect("the holder", |l| {
        l.starts_with(&locked) && l.ends_with(" (w)")
    });
    h.kill_run();
    let dead = format!("owner-dead pid {} tid ", h.pid());
    w.expect("the owner death", |l| l.starts_with(&dead));
    cli(&["run", p(&path), "--", "false"]);
    w.expect("not-recoverable", |l| l == "not-recoverable");
    assert_eq!(w.proc.wait_exit().code(), Some(0), "--until-state ends it");
}

#[test]
fn watch_follows_a_reset_a_removal_and_a_new_file() {
    let (_dir, path) = temp_path("l");
    make_not_recoverable(&path);
    let mut w = Watch::start(&["--interval", "5", p(&path)]);
    w.expect("not-recoverable", |l| l == "not-recoverable");
    assert_eq!(cli(&["reset", p(&path)]).status.code(), Some(0));
    w.expect("the replacement", |l| l == "replaced: generation 2");
    w.expect("owner-dead", |l| l.starts_with("owner-dead"));
    // Owner-dead after the reset: only a forced remove discards that.
    assert_eq!(cli(&["remove", p(&path)]).status.code(), Some(2));
    assert_eq!(cli(&["remove", "--force", p(&path)]).status.code(), Some(0));
    w.expect("the removal", |l| l == "removed");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    w.expect("the new file", |l| l == "created: generation 1");
    w.expect("unlocked", |l| l == "unlocked");
}

#[test]
fn watch_stops_quietly_when_its_reader_goes_away() {
    let (_dir, path) = temp_path("l");
    cli(&["create", p(&path)]);
    let mut w = Watch::start(&["--interval", "5", p(&path)]);
    w.expect("unlocked", |l| l == "unlocked");
    let mut err = w.proc.0.stderr.take().unwrap();
    drop(w.out); // the reader goes away, like `| head -1`
    let _h = Holder::start(&path, &[]); // a change to print
    let st = w.proc.wait_exit();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut err, &mut text).unwrap();
    assert_eq!((st.code(), text.as_str()), (Some(0), ""), "no panic");
}

#[test]
#[cfg_attr(
    any(not_root, no_mount),
    ignore = "needs root allowed to mount a tmpfs"
)]
fn watch_works_on_a_read_only_mount() {
    let fs = SmallFs::tmpfs("1m");
    let dead = fs.path().join("dead");
    let mut h = Holder::start(&dead, &[]);
    h.kill_run();
    let pid = h.pid();
    drop(h);
    fs.remount_read_only();
    let before = snapshot(&dead);
    let mut w = Watch::start(&["--interval", "5", "--count", "1", p(&dead)]);
    let dead_line = format!("owner-dead pid {pid} tid ");
    w.expect("the owner death", |l| l.starts_with(&dead_line));
    assert_eq!(w.proc.wait_exit().code(), Some(0));
    assert_eq!(snapshot(&dead), before);
}

/// `watch` on what a crashed creator left: one line saying so, the file
/// untouched (whoever owns it); it goes on watching for the file to become
/// ready.
#[test]
fn watch_leaves_an_abandoned_creation_alone() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    watch_reports_it_being_created(&path);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root: chowns a file to uid 65534")]
fn watch_leaves_another_users_abandoned_creation_alone() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    watch_reports_it_being_created(&path);
}

fn watch_reports_it_being_created(path: &Path) {
    let before = (snapshot(path), std::fs::metadata(path).unwrap().uid());
    let mut w = Watch::start(&["--interval", "5", "--count", "1", p(path)]);
    w.expect("being created", |l| l.starts_with("being created"));
    assert_eq!(w.proc.wait_exit().code(), Some(0));
    assert_eq!(
        (snapshot(path), std::fs::metadata(path).unwrap().uid()),
        before
    );
}
