//! Attacks on the heartbeats and misconfigurations that look like them, on
//! two real `hamirror run` daemons in the netns lab (`tests/common/lab.rs`):
//! heartbeats of an earlier incarnation of serv1, recorded on the crossover
//! and replayed after serv1 died, must not keep serv2 from taking over —
//! neither while serv2 runs on nor after serv2's daemon restarted; and
//! two nodes with different heartbeat keys must not both start every group
//! (split brain) but report the mismatch.
//!
//! Needs root, iproute2 and arping (like tests/cluster.rs); set
//! HAMIRROR_SKIP_NETNS=1 to skip. One case at a time (a lock); namespaces
//! `hmat<pid>-…`, deleted on drop.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::lab::{Lab, Opts, Service};
use common::netns::{enter_netns, monotonic_ms, netns_available, require_tool};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `heartbeat_port` is not set in the lab: the default.
const HEARTBEAT_PORT: u16 = 7789;
const SERV1_CROSSOVER: [u8; 4] = [10, 77, 0, 1];
const SERV2_CROSSOVER: &str = "10.77.0.2";

fn lab() -> Option<Lab> {
    if !netns_available() {
        return None;
    }
    require_tool("arping", "iputils-arping");
    Some(Lab::new(
        "hmat",
        Opts {
            service: Service::Static,
            ..Default::default()
        },
    ))
}

/// Records, inside namespace `ns`, the UDP payloads that `src` sends to
/// the heartbeat port on interface `dev` (an AF_PACKET socket: what a
/// sniffer on the cable sees), until `stop`.
fn capture(
    ns: String,
    dev: &'static str,
    src: [u8; 4],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        enter_netns(&ns).expect("enter namespace");
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto.into()) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no interface {dev} in {ns}");
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binding a valid socket to a properly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setting a timeval option of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut out = vec![];
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 17 || p[12..16] != src {
                continue;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p.len() < ihl + 8 || u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]) != HEARTBEAT_PORT {
                continue;
            }
            out.push(p[ihl + 8..].to_vec());
        }
        out
    })
}

/// Sends `packets` from inside `ns` to `to`, one every `every`.
fn replay(ns: String, to: String, packets: Vec<Vec<u8>>, every: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        enter_netns(&ns).expect("enter namespace");
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for p in packets {
            let _ = s.send_to(&p, &to);
            std::thread::sleep(every);
        }
    })
}

fn status_events(lab: &Lab, i: usize) -> Vec<String> {
    lab.status(i)
        .and_then(|s| s["events"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Starts both daemons and records, for `secs` seconds, serv1's heartbeats
/// on the crossover as serv2 receives them (at least ten a second).
fn record_serv1(lab: &mut Lab, secs: u64) -> Vec<Vec<u8>> {
    for i in 0..2 {
        lab.start_static_responder(i);
        lab.start(i);
    }
    lab.wait_both_running_own_groups();
    let stop = Arc::new(AtomicBool::new(false));
    let sniffer = capture(lab.node_ns[1].clone(), "x0", SERV1_CROSSOVER, stop.clone());
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let recorded = sniffer.join().unwrap();
    assert!(
        recorded.len() as u64 >= 10 * secs,
        "recorded only {} heartbeats",
        recorded.len()
    );
    recorded
}

#[test]
fn heartbeats_of_an_earlier_incarnation_replayed_after_the_death_do_not_stop_the_takeover() {
    let _g = serial();
    let Some(mut lab) = lab() else { return };
    // An attacker on the crossover records serv1's heartbeats (its first
    // incarnation) as serv2 receives them.
    let recorded = record_serv1(&mut lab, 4);

    // serv1's daemon restarts (a new incarnation) and rejoins.
    lab.kill(0);
    lab.start(0);
    lab.wait("serv2 sees serv1 restarted", Duration::from_secs(10), |l| {
        status_events(l, 1).iter().any(|e| e == "peer_restarted")
    });
    lab.wait_both_running_own_groups();

    // serv1 dies; the attacker replays the old heartbeats at their pace.
    lab.node_dies(0);
    let t0 = monotonic_ms();
    let every = Duration::from_millis(Opts::default().timers.keepalive_ms);
    let replaying = Instant::now() + every * recorded.len() as u32;
    let attacker = replay(
        lab.node_ns[1].clone(),
        format!("{SERV2_CROSSOVER}:{HEARTBEAT_PORT}"),
        recorded,
        every,
    );
    // deadtime 400 + takeover delay 200 + the hooks: well within the
    // replay's 4 s.
    let took = lab.wait("serv2 takes serv1's group over", Duration::from_millis(2500), |l| {
        l.holds(1, "serv1")
    });
    assert!(
        Instant::now() < replaying,
        "the takeover must happen while the replay still runs"
    );
    let log = lab.log(1);
    assert!(
        log.contains("incarnation") && log.contains("older than the current one"),
        "serv2 names the replay:\n{log}"
    );
    eprintln!("takeover {} ms after the death, during the replay", took - t0);
    attacker.join().unwrap();
    assert!(lab.holds(1, "serv1") && lab.holds(1, "serv2"));
    assert_eq!(lab.status(1).unwrap()["peer_alive"], false);
}

#[test]
fn a_restarted_survivor_still_refuses_the_dead_peers_recorded_heartbeats() {
    let _g = serial();
    let Some(mut lab) = lab() else { return };
    let recorded = record_serv1(&mut lab, 6);

    // serv1 dies; serv2 takes over, then its daemon is restarted (an
    // upgrade, say) while the attacker replays serv1's last heartbeats:
    // the new daemon has never seen them in this process.
    lab.node_dies(0);
    lab.wait("serv2 takes serv1's group over", Duration::from_secs(5), |l| {
        l.holds(1, "serv1")
    });
    assert_eq!(lab.stop(1), Some(0));
    let every = Duration::from_millis(Opts::default().timers.keepalive_ms);
    let replaying = Instant::now() + every * recorded.len() as u32;
    let attacker = replay(
        lab.node_ns[1].clone(),
        format!("{SERV2_CROSSOVER}:{HEARTBEAT_PORT}"),
        recorded,
        every,
    );
    lab.start(1);
    // Clean-up, initdead (2 s), then every group: within the replay's 6 s.
    lab.wait("the restarted serv2 runs both groups", Duration::from_secs(5), |l| {
        l.holds(1, "serv1") && l.holds(1, "serv2")
    });
    assert!(
        Instant::now() < replaying,
        "the takeover must happen while the replay still runs"
    );
    let st = lab.status(1).unwrap();
    assert_eq!(st["peer_alive"], false, "{st}");
    assert!(lab.log(1).contains("replay"), "{}", lab.log(1));
    attacker.join().unwrap();
}

#[test]
fn nodes_with_different_heartbeat_keys_start_nothing_of_each_other_and_say_so() {
    let _g = serial();
    let Some(mut lab) = lab() else { return };
    // serv2 gets a key file of its own with another key.
    let c = lab.config();
    std::fs::write(
        c.join("authkeys2"),
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::set_permissions(c.join("authkeys2"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let conf = c.join("serv2.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("heartbeat_key = authkeys", "heartbeat_key = authkeys2");
    std::fs::write(&conf, text).unwrap();

    for i in 0..2 {
        lab.start_static_responder(i);
        lab.start(i);
    }
    // initdead is 2 s: give it that and more.
    std::thread::sleep(Duration::from_secs(5));
    for (i, node) in ["serv1", "serv2"].iter().enumerate() {
        let st = lab.status(i).expect("status");
        for g in ["serv1", "serv2"] {
            assert!(
                !lab.holds(i, g),
                "{node} started group {g}: split brain\n{}",
                lab.logs()
            );
        }
        assert_eq!(st["peer_alive"], false, "{node}");
        assert_eq!(st["peer_key_mismatch"], true, "{node}: {st}");
        assert!(
            st["links"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["key_mismatch_ms_ago"].is_u64()),
            "{node}: both links see it: {st}"
        );
        assert!(status_events(&lab, i).iter().any(|e| e == "peer_key_mismatch"));
        let (code, text) = lab.status_code(i);
        assert!(text.contains("MISCONFIGURED") && text.contains("WRONG KEY"), "{text}");
        // A misconfigured peer blocks failover: CRITICAL, named first.
        assert_eq!(code, Some(2), "{text}");
        assert!(text.starts_with("CRITICAL: peer"), "{text}");
        let log = lab.log(i);
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("fail authentication"))
            .collect();
        // One per link (rate-limited), naming the address and the fix.
        assert_eq!(errors.len(), 2, "{node}:\n{log}");
        assert!(errors.iter().all(|l| l.contains("heartbeat_key")), "{errors:?}");
    }
}
