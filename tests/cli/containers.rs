//! A lock file from another PID namespace (issue 11, item 15): refused, with
//! a message that names the command's option, which opts in.

use crate::*;

#[test]
#[cfg_attr(any(not_root, no_pidns), ignore = "needs root allowed `unshare --pid`")]
fn a_file_from_another_pid_namespace_needs_allow_foreign_pid_namespace() {
    let (_dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let in_ns = |extra: &[&str]| {
        Command::new("unshare")
            .args(["--pid", "--fork", env!("CARGO_BIN_EXE_robust-mutex"), "run"])
            .args(extra)
            .args([p(&path), "--", "echo", "ran"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let before = snapshot(&path);
    let o = in_ns(&[]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another PID namespace"), "{err}");
    assert!(err.contains("`run --allow-foreign-pid-namespace`"), "{err}");
    assert!(
        !err.contains("OpenOptions"),
        "names the library's option: {err}"
    );
    assert!(o.stdout.is_empty());
    assert_eq!(snapshot(&path), before, "the file was changed");

    let o = in_ns(&["--allow-foreign-pid-namespace"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "ran\n".into()),
        "{}",
        stderr(&o)
    );
    assert_eq!(json_status(&path).0["counters"]["acquisitions"], 1);
}
