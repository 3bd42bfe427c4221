//! The `hamirror` binary: parses the command line and hands over to
//! `cli::run`. Exit codes: 0 ok, 1 partial (some files failed, named),
//! 2 failed or invalid input.

use clap::Parser;

fn main() {
    let args = hamirror::cli::Cli::parse();
    std::process::exit(hamirror::cli::run(args));
}
