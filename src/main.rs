//! The `hamirror` binary: parses the command line and hands over to
//! `cli::run`. Exit codes: 0 ok, 1 partial (some files failed, named),
//! 2 failed or invalid input; `status` has the monitoring codes (0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN), so a usage error there is 3.

use clap::Parser;

fn main() {
    few_malloc_arenas();
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

/// glibc gives each thread that contends for the heap an arena of its
/// own, up to 8 per core, and keeps what was freed in each: with the
/// runtime's, rayon's and the chunk threads, a 50,000-file copy held 40–50
/// MB more than its heap's peak (issue 17, measured in
/// `docs/BENCHMARKS.md`). Two arenas keep the peak resident memory near
/// the heap's. Set before any thread exists; overridden by the
/// `MALLOC_ARENA_MAX` environment variable, which glibc reads first.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: a plain setting, made before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
