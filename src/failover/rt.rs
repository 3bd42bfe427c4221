//! Keeping the heartbeat and probe threads on time under load: real-time
//! scheduling (`SCHED_FIFO`) for the calling thread and locked memory for
//! the process, both failing soft (the caller logs the error and goes on at
//! normal priority), plus the shared monotonic clock in milliseconds.
//! Linux only; no tokio.

use std::io;

use crate::arbiter::Millis;

/// `SCHED_FIFO` priority of the heartbeat thread: above ordinary
/// real-time work, below the kernel's own threads (50) and watchdogs (99).
pub const HEARTBEAT_PRIORITY: i32 = 40;
/// The prober and the arbiter driver run just below the heartbeats.
pub const PROBE_PRIORITY: i32 = 39;

/// Puts the calling thread in `SCHED_FIFO` at `priority`. Needs
/// `CAP_SYS_NICE` or an `RLIMIT_RTPRIO`; fails with `EPERM` otherwise (and
/// in containers without real-time budget). Our threads sleep in `poll`
/// between packets, and the kernel's real-time throttling keeps 5 % of the
/// CPU for others even if one spun.
pub fn set_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pthread_self() is always valid for the calling thread and
    // `param` outlives the call.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Locks the process's memory so a heartbeat never waits for a page to
/// come back from swap. Uses `MCL_ONFAULT` where the kernel has it, so only
/// pages actually touched are locked (a daemon with large transient mirror
/// buffers should weigh this; see `docs/FAILOVER.md`).
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: mlockall has no memory-safety preconditions.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    if first.raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above; kernels before 4.4 lack MCL_ONFAULT.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
            return Ok(());
        }
        return Err(io::Error::last_os_error());
    }
    Err(first)
}

/// `CLOCK_MONOTONIC` in milliseconds: the arbiter's time base, and the same
/// clock in every process of the machine (tests compare timestamps across
/// processes).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// [`monotonic_ms`] as an arbiter time.
pub fn now() -> Millis {
    Millis(monotonic_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = monotonic_ms();
        assert!(b >= a + 4, "{a} {b}");
    }

    #[test]
    fn realtime_either_works_or_says_why() {
        // On CI as root it works; elsewhere it must fail with an error, not
        // panic. Run in a throwaway thread so the test runner's stays normal.
        let r = std::thread::spawn(|| set_realtime(PROBE_PRIORITY)).join().unwrap();
        if let Err(e) = r {
            assert!(e.raw_os_error().is_some(), "{e}");
        }
    }
}
