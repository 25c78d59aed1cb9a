//! `robust-mutex`: the crash-safe lock for shell scripts, in the style of
//! util-linux `flock(1)`.
//!
//! This file is the entry point: it parses the command line, dispatches to
//! the subcommand, and turns the outcome into the exit code. The program is
//! a thin layer over the library's public API; the only system calls of its
//! own are the few that controlling COMMAND needs (parent-death signal,
//! signal forwarding, waiting without reaping), and they live in [`os`].

mod admin;
mod cli;
mod exit;
mod format;
mod os;
mod run;
mod status;
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
    let r = match cli.cmd {
        Cmd::Run(a) => run::run(&a),
        Cmd::Status(a) => status::status(&a.path, a.json),
        Cmd::Watch(a) => watch::watch(&a),
        Cmd::Create(a) => admin::create(&a.path, a.mode),
        Cmd::Remove(a) => admin::remove(&a.path, a.force, a.allow_other_owners),
        Cmd::Reset(a) => admin::reset(&a.path, a.force, a.allow_other_owners),
    };
    ExitCode::from(r.unwrap_or_else(|c| c))
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
