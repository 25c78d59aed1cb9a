//! The fault-injection hooks (`ROBUST_MUTEX_TEST_PAUSE_AT`,
//! `ROBUST_MUTEX_TEST_BOOT_ID`) exist only in this crate's own test builds
//! (the `test-hooks` feature, turned on by its dev-dependency on itself). A
//! stray variable in a user's environment must do nothing: this builds a
//! small downstream program in debug mode, against this crate as a plain
//! dependency, and runs it with both variables set.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const MAIN: &str = r#"
use robust_mutex::{Acquired, SharedMutex};
fn main() {
    let mut args = std::env::args().skip(1);
    let (what, path) = (args.next().unwrap(), args.next().unwrap());
    match what.as_str() {
        // Creates the file; a live PAUSE_AT hook would stop it for ever.
        "create" => {
            let m = SharedMutex::<u64>::open(&path).unwrap();
            *m.lock().unwrap().recover_with(|_| {}) = 7;
        }
        // A live BOOT_ID hook would make this look like another boot: the
        // file would be repaired and the lock handed over as owner-died.
        "lock" => {
            let m = SharedMutex::<u64>::open(&path).unwrap();
            match m.lock().unwrap() {
                Acquired::Clean(g) => assert_eq!(*g, 7),
                Acquired::OwnerDied(_) => panic!("the boot-id hook was honoured"),
            }
        }
        _ => unreachable!(),
    }
    println!("ok");
}
"#;

#[test]
fn a_downstream_debug_build_ignores_the_test_hook_variables() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Under this crate's target dir, so a rebuild is incremental.
    let crate_dir = here.join("target/downstream-hooks");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"downstream-hooks\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             [dependencies]\nrobust-mutex = {{ path = {:?}, default-features = false }}\n\
             [workspace]\n",
            here.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(crate_dir.join("src/main.rs"), MAIN).unwrap();
    // Our lock file pins the same dependency versions (nothing to fetch).
    std::fs::copy(here.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&crate_dir)
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(built.success(), "building the downstream crate failed");
    let exe = crate_dir.join("target/debug/downstream-hooks");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    for what in ["create", "lock"] {
        let mut kid = Command::new(&exe)
            .args([what, path.to_str().unwrap()])
            .env("ROBUST_MUTEX_TEST_PAUSE_AT", "created")
            .env(
                "ROBUST_MUTEX_TEST_BOOT_ID",
                "00000000-0000-4000-8000-000000000001",
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // A live pause hook prints "paused:created" and parks for ever:
        // the first line tells, without waiting on a clock.
        let mut line = String::new();
        BufReader::new(kid.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line != "ok\n" {
            let _ = kid.kill();
        }
        let status = kid.wait().unwrap();
        assert_eq!(line, "ok\n", "{what}: the program printed {line:?}");
        assert!(status.success(), "{what}: {status}");
    }
}
