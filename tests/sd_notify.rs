//! `hamirror run` under systemd's `Type=notify` with a watchdog, without
//! systemd: the test binds the notification socket itself, hands it to the
//! real daemon in `NOTIFY_SOCKET` with `WATCHDOG_USEC`, and reads what
//! arrives — `READY=1` with a status line, `WATCHDOG=1` at half the
//! timeout, `STOPPING=1` on SIGTERM — for a path and for an abstract
//! socket. Hooks must not inherit the variables (a service's own
//! `systemd-notify` must not speak for the daemon). One node on loopback
//! (the peer absent), failover only.

mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::pair::Pair;

/// Half of it: the daemon pings every 100 ms.
const WATCHDOG_USEC: &str = "200000";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// serv1 alone, no hooks but one S hook that records its environment.
fn pair() -> Pair {
    let p = Pair::new().for_daemons();
    let env = p.cfg.tmp.path().join("hook.env");
    p.cfg.write(
        "serv1/S10env",
        &format!("#!/bin/sh\n[ \"$1\" = start ] && env > {}\nexit 0\n", env.display()),
    );
    fs::set_permissions(
        p.cfg.path("serv1/S10env"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    p
}

fn start(p: &Pair, notify_socket: &str) -> Killed {
    let log = fs::File::create(p.cfg.tmp.path().join("serv1.log")).unwrap();
    Killed(
        p.cmd("serv1", &["run", "--no-realtime", "--no-mirror"])
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn log(p: &Pair) -> String {
    fs::read_to_string(p.cfg.tmp.path().join("serv1.log")).unwrap_or_default()
}

/// Next datagram, or None after `within`.
fn next(rx: &UnixDatagram, within: Duration) -> Option<(Instant, String)> {
    rx.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = rx.recv(&mut buf).ok()?;
    Some((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()))
}

/// Waits for the daemon's exit code (SIGTERM was sent).
fn exit_code(d: &mut Killed) -> Option<i32> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Some(st) = d.0.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn run_says_ready_pings_the_watchdog_at_half_its_timeout_and_says_stopping() {
    let p = pair();
    let sock = p.cfg.tmp.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    let mut d = start(&p, sock.to_str().unwrap());

    let (_, first) = next(&rx, Duration::from_secs(10)).unwrap_or_else(|| panic!("nothing came:\n{}", log(&p)));
    assert!(first.starts_with("READY=1\nSTATUS="), "{first:?}");
    assert!(first.contains("peer serv2"), "{first:?}");
    // Control socket bound by then: the daemon answers.
    let out = p.run("serv1", &["status"]);
    assert_ne!(out.status.code(), Some(3), "{}", common::stdout(&out));

    // Pings for two seconds (initdead passes meanwhile: serv1 starts both
    // groups, running the S hook).
    let mut pings = Vec::new();
    let mut statuses = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        let Some((at, m)) = next(&rx, Duration::from_secs(1)) else {
            panic!("the pings stopped after {pings:?}:\n{}", log(&p))
        };
        match m.as_str() {
            "WATCHDOG=1" => pings.push(at),
            s if s.starts_with("STATUS=") => statuses.push(s.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        pings.len() >= 12,
        "{} pings in 2 s (every 100 ms expected)",
        pings.len()
    );
    let longest = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest < Duration::from_millis(200),
        "{longest:?} between two pings: the watchdog (200 ms) would have fired"
    );
    assert!(
        statuses.iter().any(|s| s.contains("running group serv1, serv2")),
        "{statuses:?}\n{}",
        log(&p)
    );
    let env = fs::read_to_string(p.cfg.tmp.path().join("hook.env")).unwrap();
    assert!(env.contains("HAMIRROR_GROUP="), "{env}");
    assert!(
        !env.contains("NOTIFY_SOCKET") && !env.contains("WATCHDOG_USEC"),
        "a hook inherited the daemon's notification socket:\n{env}"
    );

    // SIGTERM: STOPPING=1 at once, then the daemon exits 0.
    unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
    let mut stopping = false;
    while let Some((_, m)) = next(&rx, Duration::from_secs(2)) {
        if m.starts_with("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1:\n{}", log(&p));
    assert_eq!(exit_code(&mut d), Some(0), "{}", log(&p));
}

#[test]
fn an_abstract_notify_socket_is_reached_too() {
    let p = pair();
    let name = format!("hamirror-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes())
            .unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    let mut d = start(&p, &format!("@{name}"));
    let (_, first) = next(&rx, Duration::from_secs(10)).unwrap_or_else(|| panic!("nothing came:\n{}", log(&p)));
    assert!(first.starts_with("READY=1"), "{first:?}");
    let (_, ping) = next(&rx, Duration::from_secs(1)).unwrap();
    assert!(ping == "WATCHDOG=1" || ping.starts_with("STATUS="), "{ping:?}");
    unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
    assert_eq!(exit_code(&mut d), Some(0), "{}", log(&p));
}
