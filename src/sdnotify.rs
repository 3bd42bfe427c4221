//! The systemd notification protocol (`sd_notify(3)`), by hand: one unix
//! datagram of `KEY=value` lines to the socket `$NOTIFY_SOCKET` names (a
//! path, or an abstract name written with a leading `@`). The daemon says
//! `READY=1` once it runs, `WATCHDOG=1` from its main loop at half of
//! `$WATCHDOG_USEC` (so systemd restarts a daemon whose loop hangs),
//! `STATUS=` a one-line summary, and `STOPPING=1` when it begins to shut
//! down. Without `$NOTIFY_SOCKET` (not under systemd, `Type=simple`)
//! nothing is sent. Sending never fails the daemon: a lost notification is
//! logged once. Knows nothing of the cluster.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Where notifications go, and the watchdog's pace.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half the watchdog timeout systemd set for this process, if any.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
    failed: bool,
}

impl Notifier {
    /// The notifier systemd asked for, if any. Takes `NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC` and `WATCHDOG_PID` out of the environment so that
    /// hooks and services started from them do not inherit them (a
    /// service's own `systemd-notify` must not speak for this daemon).
    ///
    /// # Safety
    /// Changes the environment: call while the process has one thread.
    pub unsafe fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        let path = path?;
        let path = path.to_string_lossy();
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(path.as_ref()),
        };
        let (socket, addr) = match (UnixDatagram::unbound(), addr) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("NOTIFY_SOCKET={path} unusable ({e}): systemd will not hear from this daemon");
                return None;
            }
        };
        let for_us = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()));
        Some(Notifier {
            socket,
            addr,
            watchdog: watchdog_interval(usec.as_deref()).filter(|_| for_us),
            last_ping: None,
            last_status: String::new(),
            failed: false,
        })
    }

    /// How often [`Notifier::watchdog`] must be called at least.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&mut self, msg: &str) {
        if let Err(e) = self.socket.send_to_addr(msg.as_bytes(), &self.addr)
            && !self.failed
        {
            self.failed = true;
            tracing::warn!("cannot notify systemd ({e}); the watchdog may restart this daemon");
        }
    }

    /// The daemon runs: configuration loaded, sockets bound, heartbeats
    /// going.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// The one-line summary `systemctl status` shows; sent when it changed.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            self.send(&format!("STATUS={}", one_line(status)));
        }
    }

    /// Call from the main loop: pings the watchdog when half its timeout
    /// has passed since the last ping.
    pub fn watchdog(&mut self, now: Instant) {
        let Some(every) = self.watchdog else { return };
        if self.last_ping.is_none_or(|t| now.duration_since(t) >= every) {
            self.last_ping = Some(now);
            self.send("WATCHDOG=1");
        }
    }

    /// The daemon begins to shut down (it releases its groups first).
    pub fn stopping(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }
}

/// Half of `WATCHDOG_USEC` (systemd's advice: ping at half the timeout).
fn watchdog_interval(usec: Option<&str>) -> Option<Duration> {
    let us: u64 = usec?.trim().parse().ok().filter(|us| *us > 0)?;
    Some(Duration::from_micros(us / 2))
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_and_not_without_one() {
        assert_eq!(watchdog_interval(Some("20000000")), Some(Duration::from_secs(10)));
        assert_eq!(watchdog_interval(Some("0")), None);
        assert_eq!(watchdog_interval(Some("ten")), None);
        assert_eq!(watchdog_interval(None), None);
    }

    #[test]
    fn messages_reach_a_path_socket_and_the_watchdog_keeps_its_pace() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&p).unwrap(),
            watchdog: Some(Duration::from_millis(100)),
            last_ping: None,
            last_status: String::new(),
            failed: false,
        };
        let t0 = Instant::now();
        n.ready("active");
        n.watchdog(t0);
        n.watchdog(t0 + Duration::from_millis(50)); // too early: nothing
        n.status("active");
        n.status("a\nb");
        n.watchdog(t0 + Duration::from_millis(100));
        n.stopping("stopping");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..5 {
            let len = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(
            got,
            [
                "READY=1\nSTATUS=active",
                "WATCHDOG=1",
                "STATUS=a b",
                "WATCHDOG=1",
                "STOPPING=1\nSTATUS=stopping"
            ]
        );
    }
}
