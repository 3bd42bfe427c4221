//! The `hamirror` binary: parses the command line and hands over to
//! `cli::run`. Exit codes: 0 ok, 1 partial (some files failed, named),
//! 2 failed or invalid input; `status` has the monitoring codes (0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN), so a usage error there is 3.

use clap::Parser;

fn main() {
    lean_malloc();
    hamirror::fdlimit::raise();
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

/// glibc's defaults cost a copy's peak resident memory (issue 17, 64 MiB
/// per process; measured in `docs/BENCHMARKS.md`):
/// * each thread that contends for the heap gets an arena of its own, up
///   to 8 per core, and each keeps what was freed in it: with the
///   runtime's, rayon's and the chunk threads, a 50,000-file copy held
///   40–50 MB more than its heap's peak. Two arenas keep the peak resident
///   memory near the heap's (one saves 3–5 MB more but costs the copy
///   6–14 % in time and receiver CPU: its threads wait for the lock).
/// * a block above the mmap threshold gets its own mapping, returned whole
///   when freed; but the threshold rises to the largest such block freed
///   (up to 32 MiB), after which an offer's or a scan's large vectors land
///   in the heap and their pages stay. A fixed 1 MiB (above a chunk's
///   buffer at the default chunk sizes) keeps them apart: 6–10 MB less on
///   each side, the CPU of a copy the same.
///
/// Set before any thread exists; the `MALLOC_ARENA_MAX` and
/// `MALLOC_MMAP_THRESHOLD_` environment variables, which glibc reads
/// first, override them.
fn lean_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: plain settings, made before any other thread exists.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            }
        }
    }
}
