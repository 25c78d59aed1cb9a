//! How the program words things and writes them: durations, UTC
//! timestamps, a holder in one line, and the two ways out (`emit` to
//! stdout, `warn` to stderr). Shared by every subcommand.

use robust_mutex::{LockState, Status};
use std::fmt::Display;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

/// One line on stderr. Never panics, even if stderr is gone. Control and
/// format characters in the message (from a path, a command line, a usage
/// error) are escaped as [`escape`] does, so it is always exactly one line;
/// backslashes are left alone, so that text escaped already (a label,
/// through [`label_suffix`]) shows as it does on stdout.
pub(crate) fn warn(msg: impl Display) {
    let line = escape_with(&msg.to_string(), false);
    let _ = writeln!(io::stderr().lock(), "robust-mutex: {line}");
}

/// `s` with every character that could forge output escaped: control
/// characters (`\n`, `\r`, `\t`, `\x1b` and the rest as `\xNN` or
/// `\u{NNNN}`), the invisible format characters that reorder or hide text
/// (bidirectional overrides, zero-width spaces), and the backslash itself
/// (`\\`), so an escape in the output always means one in the input.
pub(crate) fn escape(s: &str) -> String {
    escape_with(s, true)
}

/// [`escape`], doubling backslashes or not.
fn escape_with(s: &str, backslash: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' if backslash => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || is_format_char(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode format characters that change how the text around them shows:
/// zero-width ones, bidirectional marks, embeddings, overrides and
/// isolates, and the byte-order mark.
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A path for a message: as `Path::display`, with [`escape`] applied.
pub(crate) fn path_text(p: &Path) -> String {
    escape(&p.display().to_string())
}

/// Writes `text` to stdout and flushes it.
pub(crate) fn emit(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

/// ` (label)`, escaped, or nothing for an empty label.
pub(crate) fn label_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" ({})", escape(label))
    }
}

/// Why the lock cannot be had, for one line on stderr.
pub(crate) fn describe_holder(s: &Status, path: &Path) -> String {
    match (&s.owner, s.state) {
        (Some(o), LockState::Stuck) => format!(
            "stuck: its holder, pid {}{}, is gone, yet the lock it took {} ago was never released; run `robust-mutex reset {}`",
            o.pid,
            label_suffix(&o.label),
            human(o.held_for()),
            path_text(path)
        ),
        (None, LockState::Stuck) => format!(
            "stuck: its holder is gone and the lock was never released; run `robust-mutex reset {}`",
            path_text(path)
        ),
        (Some(o), LockState::Locked) => format!(
            "held by pid {}{} for {}",
            o.pid,
            label_suffix(&o.label),
            human(o.held_for())
        ),
        (None, LockState::Locked) => "held (its holder is not recorded yet)".to_owned(),
        // The state changed as we gave up.
        (Some(o), state) => format!(
            "held by pid {}{} until a moment ago (now {state})",
            o.pid,
            label_suffix(&o.label)
        ),
        (None, state) => format!("held until a moment ago (now {state})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_one_line_and_no_live_escape_codes() {
        assert_eq!(escape("nightly backup #3 é"), "nightly backup #3 é");
        assert_eq!(escape("a\nb\x1b[31mc"), "a\\nb\\x1b[31mc");
        assert_eq!(escape("\r\t\0\x7f\u{85}"), "\\r\\t\\x00\\x7f\\x85");
        assert_eq!(
            escape("a\\nb"),
            "a\\\\nb",
            "a backslash in the input is doubled"
        );
        assert_eq!(escape("x\u{202e}y\u{200b}"), "x\\u{202e}y\\u{200b}");
        assert_eq!(label_suffix(""), "");
        assert_eq!(label_suffix("a\nb"), " (a\\nb)");
        // What `warn` does to a line: escaped text stays as it is.
        assert_eq!(escape_with(&label_suffix("a\\b\n"), false), " (a\\\\b\\n)");
        assert_eq!(escape_with("p\\q\x1b", false), "p\\q\\x1b");
    }
}
