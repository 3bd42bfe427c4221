//! Fan-out, the mirror half: one holder's set shipped to two real
//! receivers at once, each with its own queue and acknowledged generation.
//! Two pairs on loopback (`common::pair`) give two real `hamirror serve`
//! processes, serv2 of each; the holder is this process's watch engine on
//! pair A's serv1 (the library's `Engine::start_set_to` with one real QUIC
//! shipper per replica — pair B's receiver is reached with pair B's serv1
//! key, pinned there, over pair A's serv1 root). The B receiver is frozen
//! (SIGSTOP): A's replica keeps acknowledging each write while B's
//! acknowledgement stays put; thawed and pushed to again (the resync of
//! that replica alone), it catches up. Both copies end identical to the
//! holder's tree, by the tree comparison and by rsync.
//!
//! The same through three real daemons (`hamirror run`, promote, a
//! killed holder) is tests/fanout_daemons.rs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pair::{Pair, assert_trees_equal, rsync_oracle};
use hamirror::config::Cluster;
use hamirror::sync::QuicShipper;
use hamirror::watch::{Engine, Replica, WatchHandle, WatchOptions};

const ROOTS: [&str; 3] = ["etc/samba", "srv/samba", "var/lib/samba"];

/// Sends `sig` to `pid` (a receiver this test started).
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child of this process; no memory involved.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Thaws the frozen receiver on the way out, also when an assertion fails
/// (the engine's stop waits for a call in progress).
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        // SAFETY: as in `signal`.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

fn acked(h: &WatchHandle, peer: &str) -> Option<u64> {
    h.backlog_to(peer).ok().and_then(|b| b.acked)
}

/// Waits until the holder committed a generation above `after` and `peer`
/// acknowledged the newest; returns it and how long that took.
fn wait_acked(h: &WatchHandle, peer: &str, after: u64, within: Duration) -> (u64, Duration) {
    let t0 = Instant::now();
    loop {
        let g = h.status().generation;
        if g > after && acked(h, peer) == Some(g) {
            return (g, t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "{peer} did not acknowledge a generation above {after} within {within:?} (now {g}, acked {:?}, \
             shipping {:?})",
            acked(h, peer),
            h.shipping_to(Some(peer))
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[test]
fn one_holder_ships_to_two_real_replicas_and_a_frozen_one_slows_only_itself() {
    let (mut a, mut b) = (Pair::new(), Pair::new());
    a.start_serve();
    b.start_serve();
    let (ca, cb) = (
        Cluster::load(&a.cfg.dir()).unwrap(),
        Cluster::load(&b.cfg.dir()).unwrap(),
    );
    let me = ca.node("serv1").unwrap().clone();
    let mut me_for_b = cb.node("serv1").unwrap().clone();
    me_for_b.conf.root = me.conf.root.clone();
    me_for_b.conf.state = me.conf.state.clone();
    let set = me.group.sets.iter().find(|s| s.name == "Fsmbd").unwrap().clone();
    for r in ROOTS {
        std::fs::create_dir_all(a.src(r)).unwrap();
    }
    write(&a.r1(), "etc/samba/smb.conf", b"[global]\n");
    write(&a.r1(), "srv/samba/big", &common::noise(7, 3 << 20));
    write(&a.r1(), "var/lib/samba/passdb.tdb", &common::noise(8, 40_000));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replica = |name: &str, local: &hamirror::config::Node, to: &hamirror::config::Node| Replica {
        peer: name.into(),
        shipper: Box::new(QuicShipper::new(rt.handle().clone(), local, to, "serv1", 1)),
    };
    let replicas = vec![
        replica("serv2", &me, ca.node("serv2").unwrap()),
        replica("serv3", &me_for_b, cb.node("serv2").unwrap()),
    ];
    let mut engine = Engine::new(&me.conf.root, &me.conf.state, WatchOptions::for_node(&me.conf));
    let h = engine.start_set_to(&set, replicas).unwrap();
    let mut g = 0;
    for peer in ["serv2", "serv3"] {
        g = wait_acked(&h, peer, 0, Duration::from_secs(30)).0;
    }
    // In step: a write reaches both.
    write(&a.r1(), "srv/samba/before", b"both");
    let (g2, t2) = wait_acked(&h, "serv2", g, Duration::from_secs(10));
    let (g3, t3) = wait_acked(&h, "serv3", g, Duration::from_secs(10));
    assert_eq!(g2, g3);
    let (mut g, before) = (g2, [t2, t3]);

    let pid = b.serve_pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let thaw = Thaw(pid);
    let stuck = acked(&h, "serv3");
    assert_eq!(stuck, Some(g));
    let calls = h.shipping_to(Some("serv3")).1;
    let mut during = Vec::new();
    for i in 0..5 {
        write(
            &a.r1(),
            &format!("srv/samba/while-frozen-{i}"),
            &common::noise(20 + i, 100_000),
        );
        let (now, took) = wait_acked(&h, "serv2", g, Duration::from_secs(5));
        g = now;
        during.push(took);
        assert_eq!(acked(&h, "serv3"), stuck, "the frozen replica acknowledged nothing");
    }
    // A push to serv3 was started and hangs on the frozen process.
    assert!(h.shipping_to(Some("serv3")).1 > calls, "serv3 was never tried");
    let behind = h.backlog_to("serv3").unwrap();
    assert!(behind.generations >= 5 && behind.paths >= Some(5), "{behind:?}");
    assert_eq!(h.backlog_to("serv2").unwrap().paths, Some(0));

    signal(pid, libc::SIGCONT);
    drop(thaw);
    let t0 = Instant::now();
    assert!(h.push_again("serv3"));
    let (last, _) = wait_acked(&h, "serv3", stuck.unwrap(), Duration::from_secs(60));
    assert_eq!(last, g, "serv3 holds the newest generation");
    let caught_up = t0.elapsed();
    eprintln!(
        "fan-out: serv2 acked a write in {before:?} (serv2, serv3) before, {during:?} while serv3 was frozen; \
         serv3 caught up {caught_up:?} after SIGCONT"
    );
    let slowest = during.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(2), "serv2 slowed down: {during:?}");
    assert!(engine.stop_set("Fsmbd"));
    drop(engine);

    for r in ROOTS {
        for replica in [a.dst(r), b.dst(r)] {
            assert_trees_equal(&a.src(r), &replica);
            rsync_oracle(&a.src(r), &replica);
        }
    }
}
