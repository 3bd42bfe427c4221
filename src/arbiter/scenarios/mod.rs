//! The fault matrix of `docs/FAILOVER.md`, on the simulator: each scenario
//! asserts who holds what afterwards, the events that explain it, and that
//! no group was ever up on both nodes at once (or, where a two-node cluster
//! cannot avoid it, no longer than the bound the docs state). This file has
//! the helpers, start-up, node death and daemon restarts; the submodules
//! the other rows.

mod faults;
mod figures;
mod flapping;
mod operations;

use std::time::Duration;

use super::sim::{CROSSOVER, LAN, NODES, Sim, SimConfig};
use super::{Action, Command, CommandError, Event, Millis, Mode, ReleaseReason, StandbyReason};

const G1: &str = NODES[0];
const G2: &str = NODES[1];

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// Both nodes started together and settled: each holds its own group.
fn settled(cfg: SimConfig) -> Sim {
    let mut s = Sim::new(cfg);
    s.start(0);
    s.start(1);
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![0], vec![1]], "start-up");
    s
}

fn default_settled() -> Sim {
    settled(SimConfig::default())
}

fn no_overlap(s: &Sim) {
    assert_eq!(
        s.max_overlap(),
        Duration::ZERO,
        "a group was up on both nodes: {:?}",
        [s.holdings(G1), s.holdings(G2)]
    );
}

fn is_dead(e: &Event) -> bool {
    matches!(e, Event::PeerDead { .. })
}

fn standby(s: &Sim, n: usize) -> Option<StandbyReason> {
    match s.mode(n) {
        Some(Mode::Standby { reason }) => Some(reason),
        _ => None,
    }
}

// ---------------------------------------------------------------- start-up

#[test]
fn start_up_together_each_node_runs_its_own_group() {
    let s = default_settled();
    no_overlap(&s);
    for n in 0..2 {
        assert!(
            s.first_event(n, Millis(0), |e| matches!(e, Event::Started { contact: true }))
                .is_some()
        );
        // Clean-up stop hooks ran first, for both groups.
        let first: Vec<_> = s.actions(n).iter().take(2).map(|(_, a)| a.clone()).collect();
        assert!(first.iter().all(|a| matches!(
            a,
            Action::Release {
                reason: ReleaseReason::Cleanup,
                ..
            }
        )));
    }
}

#[test]
fn start_up_with_the_peer_absent_waits_initdead_then_takes_everything() {
    let cfg = SimConfig::default();
    let initdead = cfg.timers.initdead;
    let mut s = Sim::new(cfg);
    s.start(1); // serv2, not preferred
    s.run_for(initdead - ms(100));
    assert_eq!(
        s.holding_map(),
        [Vec::<usize>::new(), vec![]],
        "nothing before initdead"
    );
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    // The late peer joins and stays a backup (auto_failback off).
    s.start(0);
    s.run_for(secs(15));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(s.mode(0).map(|m| matches!(m, Mode::Active { .. })), Some(true));
    no_overlap(&s);
}

#[test]
fn start_up_isolated_and_alone_waits_without_a_standby_lock() {
    let mut s = Sim::new(SimConfig::default());
    s.set_nic(0, LAN, false);
    s.start(0);
    s.run_for(secs(12));
    assert_eq!(s.holding_map(), [Vec::<usize>::new(), vec![]]);
    assert!(!s.locked(0));
    assert_eq!(s.count_events(0, |e| matches!(e, Event::IsolatedAtStart)), 1);
    // The LAN comes back: it takes over everything.
    s.set_nic(0, LAN, true);
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![0], vec![0]]);
}

// ---------------------------------------------------------------- node death

/// Kills `victim` at a random phase; returns (detection, takeover) delays.
fn death(victim: usize, seed: u64) -> (Duration, Duration) {
    death_with(
        SimConfig {
            seed,
            ..Default::default()
        },
        victim,
    )
}

fn death_with(cfg: SimConfig, victim: usize) -> (Duration, Duration) {
    let phase = ms(cfg.seed * 7 % cfg.timers.keepalive.as_millis() as u64);
    let mut s = settled(cfg);
    s.run_for(phase);
    let t0 = s.now();
    s.crash(victim);
    s.run_for(secs(2));
    let survivor = 1 - victim;
    assert_eq!(s.holding_map(), [vec![survivor], vec![survivor]]);
    no_overlap(&s);
    let dead = s.first_event(survivor, t0, is_dead).expect("peer declared dead");
    let acquired = s
        .first_event(
            survivor,
            t0,
            |e| matches!(e, Event::Acquired { group, .. } if group == NODES[victim]),
        )
        .expect("took over");
    (dead.since(t0), acquired.since(t0))
}

#[test]
fn node_death_is_detected_within_deadtime_and_the_survivor_takes_over() {
    let t = SimConfig::default().timers;
    for seed in 1..=20 {
        // serv2 dies: serv1 is preferred and acts at once.
        let (dead, took) = death(1, seed);
        assert!(
            dead > t.deadtime - t.keepalive && dead <= t.deadtime + ms(2),
            "{dead:?}"
        );
        assert!(took <= t.deadtime + ms(25), "{took:?}");
        // serv1 dies: serv2 waits the takeover delay.
        let (dead, took) = death(0, seed);
        assert!(dead <= t.deadtime + ms(2), "{dead:?}");
        assert!(took >= dead + t.takeover_delay && took <= t.deadtime + t.takeover_delay + ms(25));
        assert!(took < ms(1000), "client-visible outage target: {took:?}");
    }
}

#[test]
fn a_crashed_node_restarts_as_a_backup() {
    let mut s = default_settled();
    s.crash(0);
    s.run_for(secs(2));
    s.start(0);
    s.run_for(secs(2));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert!(s.count_events(1, |e| matches!(e, Event::PeerRestarted { .. })) == 1);
    no_overlap(&s);
}

#[test]
fn a_daemon_restarted_within_deadtime_cleans_up_and_takes_its_group_back() {
    let mut s = default_settled();
    let t = s.cfg.timers;
    s.kill(0);
    s.run_for(t.deadtime / 4);
    s.start(0);
    s.run_for(secs(2));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    assert_eq!(s.count_events(1, is_dead), 0);
    assert_eq!(s.count_events(1, |e| matches!(e, Event::PeerRestarted { .. })), 1);
    no_overlap(&s);
}

#[test]
fn a_daemon_killed_for_long_leaves_its_address_up_until_its_clean_up() {
    // The documented limit: the machine keeps the service address while
    // the peer takes over; the restarted daemon's clean-up ends it.
    let mut s = default_settled();
    let t = s.cfg.timers;
    s.kill(0);
    s.run_for(secs(3));
    assert_eq!(s.holders(G1), vec![0, 1]);
    s.start(0);
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    // From the takeover (at the earliest deadtime − keepalive + delay after
    // the kill) to the end of the restarted daemon's clean-up.
    let bound = secs(3) - (t.deadtime - t.keepalive) - t.takeover_delay + s.cfg.release_time + ms(5);
    assert!(s.overlap(G1) <= bound, "{:?}", s.overlap(G1));
}
