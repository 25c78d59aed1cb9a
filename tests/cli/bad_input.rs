//! Bad input to every subcommand: missing files, someone else's files and
//! symlinks, bad modes, commands that cannot run, usage errors, and help.

use crate::*;

#[test]
fn bad_input_gets_a_clear_error_and_never_creates_or_changes_a_file() {
    let (dir, path) = temp_path("missing");
    for args in [
        vec!["status", p(&path)],
        vec!["status", "--json", p(&path)],
        vec!["watch", "--count", "1", p(&path)],
        vec!["reset", p(&path)],
        vec!["reset", "--force", p(&path)],
        vec!["remove", p(&path)],
        vec!["run", "--no-create", p(&path), "--", "true"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(66), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(p(&path)), "names the path: {err}");
        assert!(err.contains("no such file"), "names the cause: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    assert!(!path.exists());

    // Someone else's file, and a symlink to it: untouched.
    let data = dir.path().join("data");
    std::fs::write(&data, b"precious data\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let before = snapshot(&data);
    for f in [&data, &link] {
        for args in [
            vec!["status", p(f)],
            vec!["watch", p(f)],
            vec!["run", p(f), "--", "true"],
            vec!["run", "--no-create", p(f), "--", "true"],
            vec!["reset", p(f)],
            vec!["reset", "--force", p(f)],
            vec!["remove", p(f)],
            vec!["remove", "--force", p(f)],
            vec!["create", p(f)],
        ] {
            let o = cli(&args);
            let want = if args[0] == "create" { 73 } else { 65 };
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(want), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains(p(f)), "names the path: {err}");
            assert_eq!(snapshot(&data), before, "{args:?} changed the file");
        }
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

    // Bad modes: a usage error, and no file.
    let m = dir.path().join("m");
    for bad in ["0999", "0400", "abc", "17777"] {
        for args in [
            vec!["create", "--mode", bad, p(&m)],
            vec!["run", "--mode", bad, p(&m), "--", "true"],
        ] {
            let o = cli(&args);
            assert_eq!(o.status.code(), Some(64), "{args:?}");
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
            assert!(!m.exists(), "{args:?}");
        }
    }
    assert_eq!(cli(&["create", p(&m)]).status.code(), Some(0));
    let o = cli(&["create", p(&m)]);
    assert_eq!(o.status.code(), Some(73));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = cli(&["create", p(&dir.path().join("no/such/dir/x"))]);
    assert_eq!(o.status.code(), Some(73), "{}", stderr(&o));

    // COMMANDs that cannot run: as shells do, and the lock is released.
    let o = cli(&["run", p(&m), "--", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("/no/such/command"), "{}", stderr(&o));
    let script = dir.path().join("not-executable");
    std::fs::write(&script, b"#!/bin/sh\necho never\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cli(&["run", p(&m), "--", p(&script)]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let (v, _) = json_status(&m);
    assert_eq!(v["state"], "unlocked", "the lock was released");

    // Usage errors: one line, exit 64.
    for args in [
        vec!["bogus"],
        vec!["run", p(&m)],
        vec!["run", "--bogus", p(&m), "--", "true"],
        vec!["run", "--timeout", "-1", p(&m), "--", "true"],
        vec!["run", "--timeout", "soon", p(&m), "--", "true"],
        vec!["run", "-n", "--timeout", "1", p(&m), "--", "true"],
        vec!["run", "--conflict-exit-code", "256", p(&m), "--", "true"],
        vec!["watch", "--interval", "0", p(&m)],
        vec!["watch", "--until-state", "dizzy", p(&m)],
        vec!["status"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    // Help everywhere, with examples.
    for sub in ["run", "status", "watch", "create", "remove", "reset"] {
        let o = cli(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub}");
        assert!(stdout(&o).contains("Examples:"), "{sub}: {}", stdout(&o));
    }
    let o = cli(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit codes:"));

    assert_eq!(cli(&["remove", p(&m)]).status.code(), Some(0));
    assert!(!m.exists());
}

#[test]
fn modes_with_execute_bits_are_refused_and_world_writable_ones_need_a_flag() {
    let (dir, _) = temp_path("unused");
    let m = dir.path().join("m");
    let creates = |mode: &str, extra: &[&str]| -> [Vec<String>; 2] {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut create = words(&["create", "--mode", mode]);
        create.extend(words(extra));
        create.push(p(&m).to_owned());
        let mut run = words(&["run", "--mode", mode]);
        run.extend(words(extra));
        run.extend(words(&[p(&m), "--", "true"]));
        [create, run]
    };
    // Execute (and special) bits: refused always, saying why.
    for (bad, why) in [
        ("0777", "execute bits"),
        ("0755", "execute bits"),
        ("0700", "execute bits"),
        ("0610", "execute bits"),
        ("4600", "set-user-ID"),
    ] {
        for args in creates(bad, &["--allow-world-writable"]) {
            let o = bin().args(&args).output().unwrap();
            assert_eq!(o.status.code(), Some(64), "{args:?}");
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(why), "{args:?}: {err}");
            assert!(!m.exists(), "{args:?}");
        }
    }
    // World-writable: refused unless asked for, naming the option.
    for args in creates("0666", &[]) {
        let o = bin().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("world-writable"), "{err}");
        assert!(err.contains("--allow-world-writable"), "{err}");
        assert!(!m.exists(), "{args:?}");
    }
    for args in creates("0666", &["--allow-world-writable"]) {
        let o = bin().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(json_status(&m).0["file"]["mode"], "0666");
        // (`run` finds the file `create` made.)
    }
    assert_eq!(cli(&["remove", p(&m)]).status.code(), Some(0));
}
