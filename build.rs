//! Finds out what some tests need from this machine, so that a test that
//! cannot run here is reported as ignored, with the reason, instead of
//! passing without having checked anything. The library does not use these
//! cfgs.
//!
//! * `no_python3`: `python3` with ctypes (and `libc.so.6` through it) does
//!   not run: the pymutex interop tests (`tests/file/pymutex.rs`);
//! * `no_pymutex`: the real pymutex (not on PyPI) is not importable;
//! * `not_root`: not built as root: the tests that act as a second user or
//!   rely on root's disregard of mode bits;
//! * `no_pidns`: `unshare --pid --fork true` fails (no unshare(1), or no
//!   CAP_SYS_ADMIN, e.g. root in a Docker container), or there is no
//!   nsenter(1): the tests of `run --kill-tree` as root and of foreign PID
//!   namespaces;
//! * `no_userns`: `unshare --user --map-root-user` cannot set the namespace
//!   limits there: the test of `--kill-tree`'s process-group fallback;
//! * `no_mount`: no tmpfs can be mounted (`unshare --mount` then `mount -t
//!   tmpfs`: no CAP_SYS_ADMIN, or no mount(8)): the tests on a small tmpfs;
//! * `no_setpriv`: `setpriv` cannot act as uid 65534 (not root, or no
//!   setpriv(1));
//! * `no_unpriv_userns`: uid 65534 cannot make a user and PID namespace
//!   (`unshare --user --map-root-user --pid --fork` through setpriv): the
//!   tests of unprivileged `--kill-tree`;
//! * `no_loop_ext4`: `mkfs.ext4` does not run or `/dev/loop-control` cannot
//!   be opened for writing: the full-disk tests on a small ext4 image;
//! * `no_flock1`: `flock(1)` does not run: the test of the empty file it
//!   leaves.
//!
//! Run again only when `PATH` changes (a python3 installed or removed in
//! place is not noticed: `cargo clean -p robust-mutex`).

use std::process::{Command, Stdio};

/// Whether `cmd args` runs and succeeds.
fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python3_runs(code: &str) -> bool {
    runs("python3", &["-c", code])
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective ...`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    let python3 = python3_runs("import ctypes, mmap; ctypes.CDLL('libc.so.6')");
    if !python3 {
        println!("cargo:rustc-cfg=no_python3");
    }
    if !python3 || !python3_runs("import pymutex") {
        println!("cargo:rustc-cfg=no_pymutex");
    }
    if effective_uid() != Some(0) {
        println!("cargo:rustc-cfg=not_root");
    }
    let cfg = |name: &str, missing: bool| {
        println!("cargo::rustc-check-cfg=cfg({name})");
        if missing {
            println!("cargo:rustc-cfg={name}");
        }
    };
    cfg("no_pidns", !runs("unshare", &["--pid", "--fork", "true"]));
    let limits =
        "echo 0 > /proc/sys/user/max_pid_namespaces && echo 0 > /proc/sys/user/max_user_namespaces";
    cfg(
        "no_userns",
        !runs(
            "unshare",
            &["--user", "--map-root-user", "sh", "-c", limits],
        ),
    );
    cfg(
        "no_mount",
        !runs(
            "unshare",
            &["--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        ),
    );
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    cfg(
        "no_setpriv",
        !runs("setpriv", &[&nobody[..], &["true"]].concat()),
    );
    let userns = [
        "unshare",
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "true",
    ];
    cfg(
        "no_unpriv_userns",
        !runs("setpriv", &[&nobody[..], &userns[..]].concat()),
    );
    let loop_devices = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .is_ok();
    cfg(
        "no_loop_ext4",
        !loop_devices || !runs("mkfs.ext4", &["-V"]) || !runs("mount", &["-V"]),
    );
    cfg("no_flock1", !runs("flock", &["-V"]));
}
