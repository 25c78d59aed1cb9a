//! `robust-mutex`: the crash-safe lock for shell scripts, in the style of
//! util-linux `flock(1)`.
//!
//! This file is the entry point: it parses the command line, dispatches to
//! the subcommand, and turns the outcome into the exit code. The program is
//! a thin layer over the library's public API; the only system calls of its
//! own are the few that controlling COMMAND needs (parent-death signal,
//! signal forwarding, waiting without reaping), and they live in [`os`].

mod admin;
mod beacon;
mod cli;
mod exit;
mod format;
mod ns;
mod os;
mod run;
mod signals;
mod status;
mod tree;
mod watch;

use clap::Parser;
use cli::{Cli, Cmd};
use exit::code;
use format::warn;
use std::process::ExitCode;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        warn(format_args!("internal error{at}: {what}"));
        std::process::exit(i32::from(code::SOFTWARE));
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(usage_error(&e)),
    };
    if let Some(path) = cli.cmd.path() {
        signals::catch_truncation(path);
    }
    let r = match cli.cmd {
        Cmd::Run(a) => check_mode(a.mode, a.allow_world_writable)
            .and_then(|()| cli::check_label(a.label.as_deref()).map_err(|e| usage(&e)))
            .and_then(|()| run::run(&a)),
        Cmd::Status(a) => status::status(&a.path, a.json),
        Cmd::Watch(a) => watch::watch(&a),
        Cmd::Create(a) => {
            check_mode(Some(a.mode), a.allow_world_writable).and_then(|()| create(&a.path, a.mode))
        }
        Cmd::Remove(a) => admin::remove(&a.path, a.force, a.allow_other_owners),
        Cmd::Reset(a) => admin::reset(&a.path, a.force, a.allow_other_owners),
        Cmd::TreeInit(a) => tree::init(&a),
    };
    ExitCode::from(r.unwrap_or_else(|c| c))
}

/// Refuses a world-writable `--mode` unless `--allow-world-writable`: whoever
/// can write a lock file can break the lock. (Execute and special bits and
/// modes without 0600 are the library's to refuse, `Error::InvalidMode`,
/// so they are left to it.)
fn check_mode(mode: Option<u32>, allow_world_writable: bool) -> Result<(), u8> {
    match mode {
        Some(m) if m & 0o002 != 0 && m & 0o7111 == 0 && !allow_world_writable => {
            Err(usage(&format!(
                "--mode {m:04o} is world-writable: anyone could break the lock; give --allow-world-writable to use it anyway"
            )))
        }
        _ => Ok(()),
    }
}

/// Reports a usage error found after parsing; returns its exit code.
fn usage(msg: &str) -> u8 {
    warn(format_args!("{msg} (try --help)"));
    code::USAGE
}

/// `create`, unless this process runs where no lock can be used safely.
fn create(path: &std::path::Path, mode: u32) -> Result<u8, u8> {
    if tree::inside_kill_tree() {
        tree::refuse_inside("create", path);
        return Err(code::DATA);
    }
    admin::create(path, mode)
}

/// Prints a usage error as one line (help and version as they are); returns
/// the exit code.
fn usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            code::OK
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            code::USAGE
        }
        _ => {
            let text = e.render().to_string();
            let body = text.split("\nUsage:").next().unwrap_or(&text);
            let body = body.replace("For more information, try '--help'.", "");
            let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let line = line.replace(" tip: ", "; tip: ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            warn(format_args!("{line} (try --help)"));
            code::USAGE
        }
    }
}
