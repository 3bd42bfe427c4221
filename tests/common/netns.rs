//! Helpers for the tests that run real processes in network
//! namespaces (`tests/heartbeat.rs`, `tests/cluster.rs`): running `ip`,
//! namespaces deleted on drop (and those of killed runs deleted by the next
//! run), child processes killed on drop, the monotonic clock every process
//! shares, and running code on a thread inside a namespace.
//!
//! Namespace names are `<prefix><pid>-<role>`: unique per test process, and
//! a later run can tell (by the pid) which ones belong to a dead process.
//! Needs root and iproute2; [`netns_available`] explains otherwise (or
//! skips with `HAMIRROR_SKIP_NETNS=1`).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command};

/// `CLOCK_MONOTONIC` in ms: the same clock as the daemons' log and JSON.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC is shared by every process.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `tc ARGS` (traffic control, iproute2), panicking on failure.
pub fn tc(args: &[&str]) {
    let out = Command::new("tc").args(args).output().expect("run tc");
    assert!(
        out.status.success(),
        "tc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip ARGS`; false on failure (for clean-up and idempotent steps).
pub fn try_ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().is_ok_and(|o| o.status.success())
}

/// Deletes the namespaces (and with them every veth and bridge) on drop.
#[derive(Debug, Default)]
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Creates `<prefix><pid>-<role>` with its loopback up.
    pub fn add(&mut self, prefix: &str, role: &str) -> String {
        let ns = format!("{prefix}{}-{role}", std::process::id());
        ip(&["netns", "add", &ns]);
        self.0.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Kills the child processes on drop.
#[derive(Debug, Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Skips (with the variable) or explains why the test cannot run.
pub fn netns_available() -> bool {
    if std::env::var_os("HAMIRROR_SKIP_NETNS").is_some_and(|v| v == "1") {
        eprintln!("HAMIRROR_SKIP_NETNS=1: network namespace test skipped");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip_ok = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(
        root && ip_ok,
        "this test needs root and iproute2 (`ip netns`): root={root}, ip available={ip_ok}; \
         run it as root (CI does) or set HAMIRROR_SKIP_NETNS=1 to skip it"
    );
    true
}

/// Panics with an install hint unless `tool` is on the PATH.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "this test needs `{tool}` (Debian package {package}; .ci/run installs it), or set HAMIRROR_SKIP_NETNS=1"
    );
}

/// Deletes namespaces left by runs that were killed outright (no Drop):
/// `<prefix><pid>…` whose process is gone.
pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !pid.is_empty() && !Path::new("/proc").join(&pid).exists() {
            // Daemons of the dead run (corosync, pacemaker…) outlive it;
            // deleting the name alone would leave them running.
            kill_all_in(name, std::time::Duration::from_secs(5));
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The processes in network namespace `ns`, without the caller (whose
/// threads may have entered it).
pub fn netns_pids(ns: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| *p != std::process::id())
        .collect()
}

/// SIGKILLs everything in `ns` until nothing is left (a process may fork
/// between listing and killing) or `within` has passed; true if emptied.
/// Frozen processes are thawed so that they can die.
pub fn kill_all_in(ns: &str, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        let pids = netns_pids(ns);
        if pids.is_empty() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        for p in pids {
            signal(p, libc::SIGCONT);
            signal(p, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Moves the calling thread into network namespace `ns` (only this thread:
/// the namespace of a thread is its own).
pub fn enter_netns(ns: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(Path::new("/run/netns").join(ns))?;
    // SAFETY: setns on a valid namespace descriptor; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}
