//! The `hamirror` binary: parses the command line and hands over to
//! `cli::run`. Exit codes: 0 ok, 1 partial (some files failed, named),
//! 2 failed or invalid input; `status` has the monitoring codes (0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN), so a usage error there is 3.

use clap::Parser;

fn main() {
    let args = match hamirror::cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() && is_status(std::env::args().skip(1)) {
                3
            } else {
                e.exit_code()
            };
            std::process::exit(code);
        }
    };
    std::process::exit(hamirror::cli::run(args));
}

/// Whether the command line asks for `status` (its first word that is not
/// a global option or its value): a monitoring system must not read a
/// mistyped check as CRITICAL.
fn is_status(mut args: impl Iterator<Item = String>) -> bool {
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "--node" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => return a == "status",
        }
    }
    false
}
