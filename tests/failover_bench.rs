//! Failover benchmarks against keepalived, in the lab of `tests/cluster.rs`
//! (same namespaces, same client, same measurements). Ignored by default;
//! `benches/failover.sh` runs them in release mode and keeps the output:
//!
//! * `bench_outage_after_node1_dies`: client-visible outage of serv1's
//!   address after node1 dies, N runs each (default 5,
//!   `HAMIRROR_BENCH_RUNS`) of hamirror with the default and the fast
//!   timers and of keepalived with VRRPv2 `advert_int 1` and VRRPv3
//!   `advert_int 0.1`;
//! * `bench_both_held_per_fault_case`: for every fault case, how long both
//!   nodes had the service address at once (live: up with carrier), for
//!   hamirror and both keepalived settings (`HAMIRROR_BENCH_FAULTS=Freeze,…`
//!   selects cases);
//! * `bench_false_failovers_under_load`: 5 minutes (`HAMIRROR_BENCH_LOAD_SECS`)
//!   of CPU load on every core plus a TCP stream saturating the crossover
//!   (shaped to 1 Gbit/s), with hamirror and keepalived (VRRPv3, 0.1 s,
//!   on a second address) side by side; counts takeovers and warnings;
//! * `bench_false_failovers_under_mirror_load`: the same CPU load with the
//!   daemons' own mirror as the traffic (a stream of new files shipped by
//!   serv1 over a crossover shaped to 100 Mbit/s); counts takeovers.
//!
//! Both run the same service: a responder on every address of each node;
//! only the address moves (hamirror: `hooks/ipaddr`; keepalived: its VIP).
//!
//! Needs root, iproute2, socat, arping, keepalived, iperf3, stress-ng.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::lab::{Lab, NODES, Observer, Opts, Service, Timers};
use common::netns::{monotonic_ms, netns_available, require_tool};

const SEC: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Setup {
    Hamirror(Timers, &'static str),
    Keepalived { v3: bool, advert: &'static str },
}

impl Setup {
    fn name(&self) -> String {
        match self {
            Setup::Hamirror(_, n) => format!("hamirror ({n} timers)"),
            Setup::Keepalived { v3, advert } => {
                format!("keepalived (VRRPv{}, advert_int {advert})", if *v3 { 3 } else { 2 })
            }
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn tools() -> bool {
    if !netns_available() {
        return false;
    }
    for (t, p) in [
        ("socat", "socat"),
        ("arping", "iputils-arping"),
        ("keepalived", "keepalived"),
        ("iperf3", "iperf3"),
        ("stress-ng", "stress-ng"),
    ] {
        require_tool(t, p);
    }
    true
}

/// keepalived's configuration for node `i`: one VRRP instance moving `vip`.
fn keepalived_conf(lab: &Lab, i: usize, v3: bool, advert: &str, vip: &str, vrid: u8) -> PathBuf {
    let path = lab.path(&format!("keepalived-{}-{vrid}.conf", NODES[i]));
    std::fs::write(
        &path,
        format!(
            "global_defs {{\n  router_id {node}\n  vrrp_version {ver}\n}}\n\
             vrrp_instance G{vrid} {{\n  state BACKUP\n  interface l0\n  virtual_router_id {vrid}\n  \
             priority {prio}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {vip}/24 dev l0\n  }}\n}}\n",
            node = NODES[i],
            ver = if v3 { 3 } else { 2 },
            prio = if i == 0 { 150 } else { 100 },
        ),
    )
    .unwrap();
    path
}

fn start_keepalived(lab: &mut Lab, i: usize, v3: bool, advert: &str, vip: &str, vrid: u8) {
    let conf = keepalived_conf(lab, i, v3, advert, vip, vrid);
    let tag = format!("{}-{vrid}", NODES[i]);
    let pid = |k: &str| lab.path(&format!("keepalived-{tag}.{k}.pid")).display().to_string();
    let (main, vrrp, chk) = (pid("main"), pid("vrrp"), pid("check"));
    // A killed predecessor's pid files (its zombie may still hold the pid)
    // would make keepalived refuse to start.
    for p in [&main, &vrrp, &chk] {
        let _ = std::fs::remove_file(p);
    }
    let args = [
        "keepalived",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--vrrp",
        "--use-file",
        &conf.display().to_string(),
        "--pid",
        &main,
        "--vrrp_pid",
        &vrrp,
        "--checkers_pid",
        &chk,
    ]
    .map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn_in(i, &args, &format!("keepalived-{tag}.log"));
}

/// A lab running `setup` on both nodes, the client answered by serv1 on
/// serv1's address.
fn cluster(setup: Setup, opts: Opts) -> (Lab, Observer) {
    let timers = match setup {
        Setup::Hamirror(t, _) => t,
        Setup::Keepalived { .. } => Timers::DEFAULT,
    };
    let mut lab = Lab::new(
        "hmbe",
        Opts {
            timers,
            service: Service::Static,
            probe_every: Duration::from_millis(20),
            ..opts
        },
    );
    for i in 0..2 {
        lab.start_static_responder(i);
    }
    start(&mut lab, setup, 0);
    start(&mut lab, setup, 1);
    if let Setup::Hamirror(..) = setup {
        lab.wait_both_running_own_groups();
    }
    let obs = lab.observe();
    obs.wait_answer(&lab, 0, "serv1", 15 * SEC);
    // Let both sides settle (keepalived's backup to hear a few adverts).
    std::thread::sleep(SEC);
    (lab, obs)
}

fn start(lab: &mut Lab, setup: Setup, i: usize) {
    match setup {
        Setup::Hamirror(..) => lab.start(i),
        Setup::Keepalived { v3, advert } => start_keepalived(lab, i, v3, advert, "192.168.77.21", 51),
    }
}

fn reboot(lab: &mut Lab, setup: Setup, i: usize) -> u64 {
    let clean = lab.reboot_clean(i);
    lab.start_static_responder(i);
    start(lab, setup, i);
    clean
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: benches/failover.sh"]
fn bench_outage_after_node1_dies() {
    if !tools() {
        return;
    }
    let runs = env_u64("HAMIRROR_BENCH_RUNS", 5) as usize;
    let setups = [
        Setup::Hamirror(Timers::DEFAULT, "default"),
        Setup::Hamirror(Timers::FAST, "fast"),
        Setup::Keepalived { v3: false, advert: "1" },
        Setup::Keepalived {
            v3: true,
            advert: "0.1",
        },
    ];
    let mut rows = vec![];
    // node1 (serv1, preferred) dies and serv2 takes over; for hamirror
    // also the other way round (the preferred node survives: no
    // takeover_delay).
    let mut cases: Vec<(Setup, usize)> = setups.iter().map(|s| (*s, 0)).collect();
    cases.insert(1, (setups[0], 1));
    cases.insert(3, (setups[1], 1));
    for (setup, victim) in cases {
        let survivor = NODES[1 - victim];
        let mut outages = vec![];
        for run in 0..runs {
            let (mut lab, obs) = cluster(setup, Opts::default());
            if victim == 1 {
                obs.wait_answer(&lab, 1, "serv2", 5 * SEC);
            }
            let t0 = monotonic_ms();
            lab.node_dies(victim);
            obs.wait_answer(&lab, victim, survivor, 20 * SEC);
            let o = obs.outage(victim, t0);
            eprintln!(
                "{}, {} dies, run {}: outage {} ms ({} probes lost)",
                setup.name(),
                NODES[victim],
                run + 1,
                o.ms,
                o.lost_probes
            );
            outages.push(o.ms);
            obs.stop();
        }
        let all = outages.clone();
        let (min, max) = (*all.iter().min().unwrap(), *all.iter().max().unwrap());
        rows.push(format!(
            "| {}, {} dies | {} ms | {min}–{max} ms | {} |",
            setup.name(),
            NODES[victim],
            median(&mut outages),
            all.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    println!("\n| setup | median outage | range | runs (ms) |\n| --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Dies,
    LanCut,
    CrossoverCut,
    Freeze,
    AllLinksCut,
    Blackhole,
    Returns,
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::Dies => "node1 dies (killed, links down)",
            Fault::LanCut => "node1's LAN cut 8 s, then back",
            Fault::CrossoverCut => "crossover cut 5 s",
            Fault::Freeze => "node1 frozen 8 s (SIGSTOP), resumed",
            Fault::AllLinksCut => "all node1's links cut 8 s (carrier lost), then back",
            Fault::Blackhole => "all node1's links drop everything 8 s (carrier up), then back",
            Fault::Returns => "node1 dies, then returns",
        }
    }
}

/// One fault case; returns (live overlap, configured overlap, outage,
/// who answers on serv1's address at the end).
fn fault_case(setup: Setup, fault: Fault) -> (u64, u64, u64, Option<String>) {
    let (mut lab, obs) = cluster(setup, Opts::default());
    let hold = 8 * SEC;
    let settle = 8 * SEC;
    let t0 = monotonic_ms();
    let mut from = t0;
    match fault {
        Fault::Dies => {
            lab.node_dies(0);
            obs.wait_answer(&lab, 0, "serv2", 20 * SEC);
            std::thread::sleep(2 * SEC);
        }
        Fault::LanCut => {
            lab.cut_lan(0);
            std::thread::sleep(hold);
            lab.heal_lan(0);
            std::thread::sleep(settle);
        }
        Fault::CrossoverCut => {
            lab.cut_crossover();
            std::thread::sleep(5 * SEC);
            lab.heal_crossover();
            std::thread::sleep(2 * SEC);
        }
        Fault::Freeze => {
            let pids = lab.freeze(0);
            std::thread::sleep(hold);
            lab.thaw(0, &pids);
            std::thread::sleep(settle);
        }
        Fault::AllLinksCut => {
            lab.cut_lan(0);
            lab.cut_crossover();
            std::thread::sleep(hold);
            lab.heal_lan(0);
            lab.heal_crossover();
            std::thread::sleep(settle);
        }
        Fault::Blackhole => {
            lab.blackhole(0, true);
            std::thread::sleep(hold);
            lab.blackhole(0, false);
            std::thread::sleep(settle);
        }
        Fault::Returns => {
            lab.node_dies(0);
            obs.wait_answer(&lab, 0, "serv2", 20 * SEC);
            std::thread::sleep(SEC);
            from = obs.cleared(0, 0, reboot(&mut lab, setup, 0));
            std::thread::sleep(settle);
        }
    }
    let r = (
        obs.overlap(0, from, true),
        obs.overlap(0, from, false),
        obs.outage(0, from).ms,
        obs.last_answer(0),
    );
    obs.stop();
    r
}

#[test]
#[ignore = "benchmark: benches/failover.sh"]
fn bench_both_held_per_fault_case() {
    if !tools() {
        return;
    }
    let setups = [
        Setup::Hamirror(Timers::DEFAULT, "default"),
        Setup::Keepalived { v3: false, advert: "1" },
        Setup::Keepalived {
            v3: true,
            advert: "0.1",
        },
    ];
    let faults = [
        Fault::Dies,
        Fault::LanCut,
        Fault::CrossoverCut,
        Fault::Freeze,
        Fault::AllLinksCut,
        Fault::Blackhole,
        Fault::Returns,
    ];
    let mut out = String::from("\n| fault |");
    for s in &setups {
        out.push_str(&format!(" {} |", s.name()));
    }
    out.push_str("\n| --- |");
    for _ in &setups {
        out.push_str(" --- |");
    }
    // HAMIRROR_BENCH_FAULTS=Freeze,Blackhole runs only those.
    let only = std::env::var("HAMIRROR_BENCH_FAULTS").unwrap_or_default();
    for f in faults {
        if !only.is_empty() && !only.split(',').any(|o| o == format!("{f:?}")) {
            continue;
        }
        out.push_str(&format!("\n| {} |", f.name()));
        for s in setups {
            let (live, raw, outage, end) = fault_case(s, f);
            eprintln!(
                "{} / {}: both held {live} ms live ({raw} ms configured), outage {outage} ms, answered by {end:?} at the end",
                f.name(),
                s.name()
            );
            out.push_str(&format!(
                " **{live} ms** ({raw} ms configured); outage {outage} ms; ends on {} |",
                end.as_deref().unwrap_or("nobody")
            ));
        }
    }
    println!("{out}");
}

#[test]
#[ignore = "benchmark: benches/failover.sh"]
fn bench_false_failovers_under_load() {
    if !tools() {
        return;
    }
    let secs = env_u64("HAMIRROR_BENCH_LOAD_SECS", 300);
    let (mut lab, obs) = cluster(Setup::Hamirror(Timers::DEFAULT, "default"), Opts::default());
    // keepalived beside it, on a second address, at its fastest setting.
    for i in 0..2 {
        start_keepalived(&mut lab, i, true, "0.1", "192.168.77.23", 52);
    }
    std::thread::sleep(3 * SEC);
    // A 1 Gbit/s crossover (like a GbE cable), filled by TCP both ways.
    shape_crossover(&lab, "1gbit");
    let t0 = monotonic_ms();
    let log_len = [lab.log(0).len(), lab.log(1).len()];
    let ka_log = |lab: &Lab, i: usize| {
        std::fs::read_to_string(lab.path(&format!("keepalived-{}-52.log", NODES[i]))).unwrap_or_default()
    };
    assert!(
        ka_log(&lab, 0).contains("Entering MASTER STATE"),
        "keepalived on serv1 never became master:\n{}",
        ka_log(&lab, 0)
    );
    let ka_len = [ka_log(&lab, 0).len(), ka_log(&lab, 1).len()];
    let t = secs.to_string();
    lab.spawn_in(1, &["iperf3", "-s", "-B", "10.77.0.2"], "iperf3-server.log");
    std::thread::sleep(Duration::from_millis(300));
    lab.spawn_in(
        0,
        &["iperf3", "-c", "10.77.0.2", "-t", &t, "--bidir", "-P", "4"],
        "iperf3-client.log",
    );
    let mut stress = std::process::Command::new("stress-ng")
        .args([
            "--cpu",
            "0",
            "--cpu-load",
            "100",
            "--vm",
            "1",
            "--vm-bytes",
            "256M",
            "--timeout",
        ])
        .arg(format!("{secs}s"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stress-ng");
    std::thread::sleep(Duration::from_secs(secs));
    let _ = stress.wait();
    std::thread::sleep(SEC);
    let (report, false_failovers) = failover_table(&lab, log_len);
    let mut ka = String::new();
    for i in 0..2 {
        let log = ka_log(&lab, i)[ka_len[i]..].to_string();
        ka.push_str(&format!(
            "\nkeepalived (VRRPv3, 0.1 s) on {}: {} transitions to MASTER, {} to BACKUP",
            NODES[i],
            count(&log, "Entering MASTER STATE"),
            count(&log, "Entering BACKUP STATE")
        ));
    }
    let iperf = std::fs::read_to_string(lab.path("iperf3-client.log")).unwrap_or_default();
    let summary: Vec<&str> = iperf
        .lines()
        .filter(|l| l.contains("sender") || l.contains("receiver"))
        .collect();
    println!(
        "{report}\n\nhamirror false failovers in {secs} s: {false_failovers}; client outage of serv1's address: {} ms, \
         of serv2's: {} ms{ka}\n\niperf3 over the crossover:\n{}",
        obs.outage(0, t0).ms,
        obs.outage(1, t0).ms,
        summary.join("\n")
    );
    obs.stop();
}

fn count(text: &str, pat: &str) -> usize {
    text.lines().filter(|l| l.contains(pat)).count()
}

/// Shapes the crossover to `rate` (like a cable of that speed) with the
/// default priority queueing (pfifo_fast: three bands by SO_PRIORITY)
/// behind the shaper.
fn shape_crossover(lab: &Lab, rate: &str) {
    for ns in &lab.node_ns {
        common::netns::tc(&[
            "-n", ns, "qdisc", "replace", "dev", "x0", "root", "handle", "1:", "tbf", "rate", rate, "burst", "256kb",
            "latency", "50ms",
        ]);
        common::netns::tc(&[
            "-n",
            ns,
            "qdisc",
            "add",
            "dev",
            "x0",
            "parent",
            "1:1",
            "handle",
            "10:",
            "pfifo_fast",
        ]);
    }
}

/// The failover events in each daemon's log since `log_len`, as a table,
/// and the number of false failovers (peer declared dead, takeovers,
/// standby).
fn failover_table(lab: &Lab, log_len: [usize; 2]) -> (String, usize) {
    let mut report = String::from(
        "\n| node | peer_dead | acquire | standby | link_silent warnings | stalled |\n| --- | --- | --- | --- | --- | --- |",
    );
    let mut false_failovers = 0;
    for i in 0..2 {
        let log = lab.log(i)[log_len[i]..].to_string();
        let dead = count(&log, "event peer_dead");
        false_failovers += dead + count(&log, "action acquire") + count(&log, "event standby_entered");
        report.push_str(&format!(
            "\n| {} | {dead} | {} | {} | {} | {} |",
            NODES[i],
            count(&log, "action acquire"),
            count(&log, "event standby_entered"),
            count(&log, "event link_silent"),
            count(&log, "event stalled"),
        ));
    }
    (report, false_failovers)
}

/// Keeps the mirror's pipe full: writes new `size`-byte files of fresh
/// (incompressible, never seen) content into `src` (built beside it, then
/// renamed in) whenever fewer than `PENDING` of them are missing on the
/// replica `dst`, and deletes the oldest once more than `KEEP` have
/// arrived there, until `stop`. Files are never rewritten in place, so a
/// push is never chasing a file that changes under it.
fn writer(src: PathBuf, dst: PathBuf, size: usize, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    const PENDING: u64 = 4;
    const KEEP: u64 = 8;
    let scratch = src.parent().unwrap().join("writer-scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let name = |n: u64| format!("big-{n:06}.bin");
    let arrived = |n: u64| std::fs::metadata(dst.join(name(n))).is_ok_and(|m| m.len() == size as u64);
    // xorshift: fast enough to make every file new.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; size];
    let (mut next, mut oldest, mut first_missing) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        while first_missing < next && arrived(first_missing) {
            first_missing += 1;
        }
        if next - first_missing < PENDING {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            let tmp = scratch.join("next");
            std::fs::write(&tmp, &buf).unwrap();
            std::fs::rename(&tmp, src.join(name(next))).unwrap();
            next += 1;
            continue;
        }
        while first_missing - oldest > KEEP {
            std::fs::remove_file(src.join(name(oldest))).unwrap();
            oldest += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 6's load case with the daemon's own mirror as the traffic: for
/// `HAMIRROR_BENCH_LOAD_SECS` (default 300) every core busy (stress-ng) and
/// serv1's daemon mirroring a stream of new 32 MiB files (always four
/// waiting: the link never idles) to serv2 over a crossover shaped to
/// `HAMIRROR_BENCH_XOVER` (default 100mbit). Counts false failovers (target
/// 0) and reports what the mirror moved.
#[test]
#[ignore = "benchmark; run benches/failover.sh mirror-load"]
fn bench_false_failovers_under_mirror_load() {
    if !tools() {
        return;
    }
    let secs = env_u64("HAMIRROR_BENCH_LOAD_SECS", 300);
    let rate = std::env::var("HAMIRROR_BENCH_XOVER").unwrap_or_else(|_| "100mbit".into());
    let (lab, obs) = cluster(
        Setup::Hamirror(Timers::DEFAULT, "default"),
        Opts {
            mirror: true,
            ..Opts::default()
        },
    );
    shape_crossover(&lab, &rate);
    let t0 = monotonic_ms();
    let log_len = [lab.log(0).len(), lab.log(1).len()];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = {
        let (src, dst) = (
            lab.mirror_root(NODES[0]).join("data/serv1"),
            lab.mirror_root(NODES[1]).join("data/serv1"),
        );
        let stop = stop.clone();
        std::thread::spawn(move || writer(src, dst, 32 << 20, stop))
    };
    let mut stress = std::process::Command::new("stress-ng")
        .args(["--cpu", "0", "--cpu-load", "100", "--timeout"])
        .arg(format!("{secs}s"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stress-ng");
    let mut peak_pending = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(5 * SEC);
        if let Some(s) = lab.status(0)
            && let Some(b) = s["sets"]
                .as_array()
                .and_then(|a| a.iter().find(|b| b["set"] == "Fserv1data"))
        {
            peak_pending = peak_pending.max(b["pending_bytes"].as_u64().unwrap_or(0));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = w.join();
    let _ = stress.wait();
    std::thread::sleep(SEC);
    let (report, false_failovers) = failover_table(&lab, log_len);
    // What the mirror moved: the chunk bytes of every push serv1 logged.
    let log0 = lab.log(0)[log_len[0]..].to_string();
    let (mut shipped, mut pushes) = (0u64, 0u64);
    for l in log0
        .lines()
        .filter(|l| l.contains(" shipped ") && l.contains("set=Fserv1data"))
    {
        pushes += 1;
        shipped += l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let failed = count(&log0, "shipping failed");
    println!(
        "{report}\n\nhamirror false failovers in {secs} s of CPU load + mirror transfer: {false_failovers}; \
         client outage of serv1's address: {} ms, of serv2's: {} ms\nmirror over the crossover ({rate}): {pushes} \
         pushes ({failed} failed), {:.1} MiB of chunks in {secs} s = {:.1} Mbit/s; peak backlog {:.1} MiB",
        obs.outage(0, t0).ms,
        obs.outage(1, t0).ms,
        shipped as f64 / (1 << 20) as f64,
        shipped as f64 * 8.0 / secs as f64 / 1e6,
        peak_pending as f64 / (1 << 20) as f64,
    );
    let logs = concat!(env!("CARGO_MANIFEST_DIR"), "/target/mirror-load-logs.txt");
    std::fs::write(logs, lab.logs()).unwrap();
    println!("daemon logs: {logs}");
    assert_eq!(false_failovers, 0, "false failovers under load\n{}", lab.logs());
    obs.stop();
}
