//! Long crash-torture run: `cargo run --release --example torture -- --kills 100000`
//! Options: --kills N (default 10000), --workers P (default 8), --seed S.
//! The logic is shared with `tests/torture.rs`; see tests/common/torture.rs.

#[path = "../tests/common/torture.rs"]
mod torture;

use std::process::{Command, Stdio};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(path), Ok(slot), Ok(seed)) = (
        std::env::var_os("RM_TORTURE_PATH"),
        std::env::var("RM_SLOT"),
        std::env::var("RM_SEED"),
    ) {
        torture::worker(path.as_ref(), slot.parse().unwrap(), seed.parse().unwrap());
    }
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
            .unwrap_or(default)
    };
    let kills = flag("--kills", 10_000);
    let workers = flag("--workers", 8) as usize;
    let seed = flag(
        "--seed",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torture.lock");
    let exe = std::env::current_exe().unwrap();
    let s = torture::supervise(&path, workers, kills, seed, |slot, seed| {
        let mut c = Command::new(&exe);
        c.env("RM_TORTURE_PATH", &path)
            .env("RM_SLOT", slot.to_string())
            .env("RM_SEED", seed.to_string())
            .stdout(Stdio::null());
        c
    });
    println!("{}", s.line());
    assert_eq!(s.updates, s.tallied, "lost or doubled updates");
    assert!(s.owner_died_reports <= s.library_owner_deaths);
}
