//! Labels, paths and command lines cannot forge output (issue 11, item
//! 12): control characters are shown escaped, one event per line; a label
//! longer than an owner record holds is refused, naming the limit.

use crate::*;

const EVIL: &str = "a\nb\x1b[31mc\\d";
const SHOWN: &str = "a\\nb\\x1b[31mc\\\\d";

/// No raw control character but the newlines that end lines.
fn clean(s: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() && c != '\n'),
        "a raw control character in {s:?}"
    );
}

#[test]
fn a_label_with_control_characters_is_shown_escaped_everywhere() {
    let (_dir, path) = temp_path("l");
    let h = Holder::start(&path, &["--label", EVIL]);

    // A waiter's message: one line.
    let o = cli(&["run", "--nonblock", p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    clean(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("pid {} ({SHOWN})", h.pid())), "{err}");

    // remove's refusal names the holder the same way.
    let o = cli(&["remove", p(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    clean(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("({SHOWN})")), "{err}");

    // status: the holder line and the command line (`run`'s own argv holds
    // the label too).
    let o = cli(&["status", p(&path)]);
    let out = stdout(&o);
    clean(&out);
    assert!(out.contains(&format!(", label \"{SHOWN}\", ")), "{out}");
    let command = out.lines().find(|l| l.starts_with("  command: ")).unwrap();
    // (Quoted: a newline splits words as a space does.)
    assert!(
        command.contains(&format!("--label '{SHOWN}' ")),
        "{command}"
    );
    assert_eq!(
        out.lines().filter(|l| !l.starts_with("  ")).count(),
        1,
        "{out}"
    );
    // JSON keeps the label as it is (JSON escapes it itself).
    assert_eq!(json_status(&path).0["owner"]["label"], EVIL);

    // watch: one event, one line.
    let o = cli(&["watch", "--count", "1", p(&path)]);
    let out = stdout(&o);
    clean(&out);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.ends_with(&format!(
            " locked pid {} tid {} ({SHOWN})\n",
            h.pid(),
            h.pid()
        )),
        "{out}"
    );
}

#[test]
fn a_path_with_control_characters_is_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x\ny\x1b[2J.lock");
    let shown = format!("{}/x\\ny\\x1b[2J.lock", p(dir.path()));
    let _h = Holder::start(&path, &[]);
    let o = cli(&["run", "-n", p(&path), "--", "true"]);
    let err = stderr(&o);
    clean(&err);
    assert!(
        err.starts_with(&format!("robust-mutex: {shown}: held by")),
        "{err}"
    );
    let out = stdout(&cli(&["status", p(&path)]));
    clean(&out);
    assert!(out.starts_with(&format!("{shown}: locked\n")), "{out}");
}

#[test]
fn an_over_long_label_is_refused_naming_the_limit() {
    let (_dir, path) = temp_path("l");
    for (len, ok) in [(88, true), (89, false), (100_000, false)] {
        let label = "x".repeat(len);
        let o = cli(&["run", "--label", &label, p(&path), "--", "true"]);
        if ok {
            assert_eq!(o.status.code(), Some(0), "{len}: {}", stderr(&o));
            continue;
        }
        assert_eq!(o.status.code(), Some(64), "{len}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("--label is {len} bytes")), "{err}");
        assert!(err.contains("at most 88 bytes"), "{err}");
        assert!(
            err.len() < 200,
            "the label is not repeated: {} bytes",
            err.len()
        );
    }
    // A multi-byte label counts bytes, not characters: 30 × 3 bytes = 90.
    let o = cli(&["run", "--label", &"€".repeat(30), p(&path), "--", "true"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
}
