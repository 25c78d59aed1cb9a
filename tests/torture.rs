//! Crash torture, short version (about 200 kills); see tests/common/torture.rs.
//! The long run is `cargo run --release --example torture -- --kills 100000`.

mod common;
#[path = "common/torture.rs"]
mod torture;

use std::process::Command;

#[test]
fn child_main() {
    if let Some((role, path)) = common::child_role() {
        assert_eq!(role, "torture");
        let slot = std::env::var("RM_SLOT").unwrap().parse().unwrap();
        let seed = std::env::var("RM_SEED").unwrap().parse().unwrap();
        torture::worker(&path, slot, seed);
    }
}

#[test]
fn two_hundred_random_kills_lose_nothing_and_double_nothing() {
    let (_dir, path) = common::temp_path("torture");
    let seed = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("torture seed {seed} (rerun with TORTURE_SEED={seed})");
    let exe = std::env::current_exe().unwrap();
    let s = torture::supervise(&path, 8, 200, seed, |slot, seed| {
        let mut c = Command::new(&exe);
        c.args(["--exact", "child_main", "--nocapture", "-q"])
            .env(common::ROLE, "torture")
            .env(common::PATH, &path)
            .env("RM_SLOT", slot.to_string())
            .env("RM_SEED", seed.to_string())
            .stdout(std::process::Stdio::null());
        c
    });
    eprintln!("{}", s.line());
    assert_eq!(
        s.updates,
        s.tallied,
        "lost or doubled updates: {}",
        s.line()
    );
    // Every report names a distinct death (checked by the workers); the
    // library saw at least as many as were recorded, and no more than kills.
    assert!(
        s.owner_died_reports <= s.library_owner_deaths,
        "{}",
        s.line()
    );
    assert!(s.library_owner_deaths <= s.kills + 1, "{}", s.line());
    assert!(s.updates > 0, "no progress at all: {}", s.line());
}
