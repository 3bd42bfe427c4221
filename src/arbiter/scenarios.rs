//! The fault matrix of `docs/FAILOVER.md`, on the simulator: each scenario
//! asserts who holds what afterwards, the events that explain it, and that
//! no group was ever up on both nodes at once (or, where a two-node cluster
//! cannot avoid it, no longer than the bound the docs state).

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

// ---------------------------------------------------------------- link faults

#[test]
fn crossover_cut_only_warns_and_changes_nothing() {
    let mut s = default_settled();
    let t0 = s.now();
    s.set_link(CROSSOVER, false);
    s.run_for(secs(5));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    for n in 0..2 {
        assert_eq!(
            s.count_events(
                n,
                |e| matches!(e, Event::LinkSilent { link, .. } if link == "crossover")
            ),
            1,
            "warned once"
        );
        assert_eq!(s.count_events(n, is_dead), 0);
        let warned = s.first_event(n, t0, |e| matches!(e, Event::LinkSilent { .. })).unwrap();
        assert!(warned.since(t0) <= s.cfg.timers.warntime + ms(2));
    }
    s.set_link(CROSSOVER, true);
    s.run_for(secs(1));
    assert_eq!(s.count_events(0, |e| matches!(e, Event::LinkUp { .. })), 1);
    no_overlap(&s);
}

#[test]
fn lan_cut_of_one_node_sends_it_to_standby_and_the_peer_takes_over_after_the_release() {
    for (victim, victim_group) in NODES.iter().enumerate() {
        let mut s = default_settled();
        let t0 = s.now();
        s.set_nic(victim, LAN, false);
        s.run_for(secs(3));
        let survivor = 1 - victim;
        assert_eq!(s.holding_map(), [vec![survivor], vec![survivor]], "victim {victim}");
        assert_eq!(standby(&s, victim), Some(StandbyReason::ReachWorse));
        assert!(s.locked(victim));
        assert_eq!(s.count_events(survivor, is_dead), 0, "contact kept over the crossover");
        no_overlap(&s);
        let t = s.cfg.timers;
        let took = s
            .first_event(
                survivor,
                t0,
                |e| matches!(e, Event::Acquired { group, .. } if group == victim_group),
            )
            .unwrap();
        // probe latency + score hold + release + one heartbeat + acquire.
        assert!(
            took.since(t0) <= t.probe_latency() + t.deadtime + ms(150),
            "{:?}",
            took.since(t0)
        );
    }
}

#[test]
fn both_links_of_a_running_node_cut_it_goes_to_standby_and_the_peer_takes_over() {
    // Either node isolated; hooks as slow as the release budget allows.
    for victim in 0..2 {
        let cfg = SimConfig {
            release_time: SimConfig::default().timers.release_budget() - ms(10),
            ..Default::default()
        };
        let mut s = settled(cfg);
        s.set_nic(victim, CROSSOVER, false);
        s.set_nic(victim, LAN, false);
        s.run_for(secs(3));
        let survivor = 1 - victim;
        assert_eq!(s.holding_map(), [vec![survivor], vec![survivor]], "victim {victim}");
        assert_eq!(standby(&s, victim), Some(StandbyReason::Isolated));
        assert!(s.locked(victim));
        no_overlap(&s);
        // Links back: the isolated node stays in standby (lock), the
        // survivor keeps everything.
        s.set_nic(victim, CROSSOVER, true);
        s.set_nic(victim, LAN, true);
        s.run_for(secs(3));
        assert_eq!(s.holding_map(), [vec![survivor], vec![survivor]]);
        no_overlap(&s);
    }
}

#[test]
fn isolated_node_with_stop_hooks_slower_than_the_budget_overlaps_by_at_most_the_excess() {
    let t = SimConfig::default().timers;
    // The budget is a worst case (both phases unlucky); 250 ms more than
    // it exceeds any actual one.
    let excess = ms(250);
    let cfg = SimConfig {
        release_time: t.release_budget() + excess,
        ..Default::default()
    };
    let mut s = settled(cfg);
    // serv2 (not preferred) isolated: serv1 acts right at deadtime.
    s.set_nic(1, CROSSOVER, false);
    s.set_nic(1, LAN, false);
    s.run_for(secs(3));
    assert_eq!(s.holding_map(), [vec![0], vec![0]]);
    let o = s.overlap(G2);
    assert!(o > Duration::ZERO && o <= excess + t.keepalive, "{o:?}");
}

#[test]
fn equal_scores_and_no_contact_the_preferred_node_acts_first() {
    // Both nodes reach every host but hear nothing of each other.
    let mut s = default_settled();
    let t = s.cfg.timers;
    let t0 = s.now();
    s.set_link(CROSSOVER, false);
    s.set_link(LAN, false);
    // A short partition (under deadtime + takeover_delay): only the
    // preferred node acts; at heal the other steps down, nothing swaps.
    s.run_for(t.deadtime + t.takeover_delay / 2);
    s.set_link(CROSSOVER, true);
    s.set_link(LAN, true);
    s.run_for(secs(2));
    assert_eq!(s.holding_map(), [vec![0], vec![0]], "preferred serv1 won");
    assert!(
        s.first_event(1, t0, |e| matches!(e, Event::SteppingDown { .. }))
            .is_some()
    );
    assert!(s.first_event(0, t0, |e| matches!(e, Event::Conflict { .. })).is_some());
    // Double holding lasted from serv1's takeover to the heal plus the
    // step-down: the bound of docs/FAILOVER.md for a partition.
    let bound = t.takeover_delay / 2 + t.keepalive + s.cfg.release_time + ms(5);
    assert!(s.overlap(G2) <= bound, "{:?} > {bound:?}", s.overlap(G2));
    let reannounced = s
        .actions(0)
        .iter()
        .filter(|(_, a)| matches!(a, Action::Reannounce { group, .. } if group == G2))
        .count();
    assert_eq!(reannounced, 2, "at the conflict and once the stale holder let go");
}

#[test]
fn equal_scores_and_a_long_partition_both_act_and_one_holder_remains_after_the_heal() {
    let mut s = default_settled();
    s.set_link(CROSSOVER, false);
    s.set_link(LAN, false);
    s.run_for(secs(3));
    // Without a third party both run everything during the partition.
    assert_eq!(s.holding_map(), [vec![0, 1], vec![0, 1]]);
    s.set_link(CROSSOVER, true);
    s.set_link(LAN, true);
    s.run_for(secs(2));
    let [a, b] = s.holding_map();
    assert_eq!((a.len(), b.len()), (1, 1), "one holder each after the heal");
    // The newer epoch won each group: serv1 took serv2's group first,
    // serv2 took serv1's group takeover_delay later.
    assert_eq!(s.holding_map(), [vec![1], vec![0]]);
}

// ---------------------------------------------------------------- freeze

#[test]
fn a_node_frozen_past_deadtime_steps_down_when_it_resumes() {
    let mut s = default_settled();
    let t = s.cfg.timers;
    s.freeze(0);
    s.run_for(secs(2));
    // serv2 took serv1's group while serv1 was frozen (and still "holding").
    assert_eq!(s.holders(G1), vec![0, 1]);
    let t_resume = s.now();
    s.resume(0);
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    let down = s
        .first_event(
            0,
            t_resume,
            |e| matches!(e, Event::SteppingDown { group, .. } if group == G1),
        )
        .expect("steps down");
    assert!(down.since(t_resume) <= t.keepalive * 2, "{:?}", down.since(t_resume));
    assert!(
        s.first_event(0, t_resume, |e| matches!(e, Event::Stalled { .. }))
            .is_some()
    );
    // The frozen node never took serv2's group on resume.
    assert_eq!(s.moves(G2), 0);
    assert!(
        s.actions(1)
            .iter()
            .any(|(at, a)| *at >= t_resume && matches!(a, Action::Reannounce { group, .. } if group == G1))
    );
    // Overlap bound: the freeze after serv2's takeover + reaction + release.
    let bound = secs(2) - t.deadtime - t.takeover_delay + t.keepalive * 2 + s.cfg.release_time + ms(30);
    assert!(s.overlap(G1) <= bound, "{:?}", s.overlap(G1));
    assert_eq!(s.overlap(G2), Duration::ZERO);
}

#[test]
fn a_short_freeze_changes_nothing() {
    let mut s = default_settled();
    let t = s.cfg.timers;
    s.freeze(1);
    s.run_for(t.deadtime - t.keepalive * 2);
    s.resume(1);
    s.run_for(secs(3));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    assert_eq!(s.count_events(0, is_dead), 0);
    assert_eq!(s.count_events(1, is_dead), 0, "its own stall is not the peer's death");
    no_overlap(&s);
}

// ---------------------------------------------------------------- standby

#[test]
fn standby_lock_survives_restarts_until_an_operator_clears_it() {
    let mut s = default_settled();
    s.command(0, Command::Standby).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert!(s.locked(0));
    no_overlap(&s);
    // Restart with the lock: standby again, the peer keeps everything.
    s.crash(0);
    s.run_for(secs(1));
    s.start(0);
    s.run_for(secs(15));
    assert_eq!(standby(&s, 0), Some(StandbyReason::Locked));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(s.command(0, Command::Takeover(G1.into())), Err(CommandError::InStandby));
    // Cleared: active again, a backup (no failback).
    s.command(0, Command::ClearStandby).unwrap();
    s.run_for(secs(2));
    assert!(!s.locked(0));
    assert!(matches!(s.mode(0), Some(Mode::Active { .. })));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(s.command(0, Command::ClearStandby), Err(CommandError::NotInStandby));
    // Now the operator moves serv1's group home.
    s.command(0, Command::Takeover(G1.into())).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    no_overlap(&s);
}

#[test]
fn a_node_starting_with_the_lock_while_the_peer_is_absent_holds_nothing() {
    let mut s = Sim::new(SimConfig::default());
    s.start(0);
    s.run_for(secs(1));
    s.command(0, Command::Standby).unwrap();
    s.crash(0);
    s.start(0);
    s.run_for(secs(20));
    assert_eq!(s.holding_map(), [Vec::<usize>::new(), vec![]]);
    assert_eq!(standby(&s, 0), Some(StandbyReason::Locked));
}

// ---------------------------------------------------------------- failback

fn failback(on: bool) -> Sim {
    let mut s = settled(SimConfig {
        auto_failback: on,
        ..Default::default()
    });
    s.crash(0);
    s.run_for(secs(2));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    s.start(0);
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]], "never right after the return");
    s.run_for(secs(12));
    s
}

#[test]
fn failback_off_keeps_the_group_on_the_survivor() {
    let s = failback(false);
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    no_overlap(&s);
}

#[test]
fn failback_on_returns_the_group_after_the_owner_is_up_for_failback_hold() {
    let s = failback(true);
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    no_overlap(&s);
    assert!(s.actions(1).iter().any(|(_, a)| matches!(
        a,
        Action::Release {
            reason: ReleaseReason::Failback,
            ..
        }
    )));
}

#[test]
fn failback_does_not_undo_an_operator_takeover() {
    let mut s = settled(SimConfig {
        auto_failback: true,
        ..Default::default()
    });
    s.command(1, Command::Takeover(G1.into())).unwrap();
    s.run_for(secs(20));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(s.moves(G1), 1);
    no_overlap(&s);
}

// ---------------------------------------------------------------- flapping

/// Toggles `links` every `period` (down, up, down, …) for `total`.
fn flap(s: &mut Sim, links: &[usize], period: Duration, total: Duration) {
    let end = s.now() + total;
    let mut up = false;
    while s.now() < end {
        for l in links {
            s.set_link(*l, up);
        }
        s.run_for(period);
        up = !up;
    }
    for l in links {
        s.set_link(*l, true);
    }
    s.run_for(secs(3));
}

#[test]
fn one_link_flapping_fast_or_slow_moves_nothing_and_warnings_are_summarised() {
    for (link, period) in [
        (CROSSOVER, ms(60)),
        (CROSSOVER, ms(250)),
        (LAN, ms(200)),
        (LAN, ms(1500)),
    ] {
        let mut s = default_settled();
        flap(&mut s, &[link], period, secs(20));
        assert_eq!(s.holding_map(), [vec![0], vec![1]], "link {link} period {period:?}");
        assert_eq!(s.moves(G1) + s.moves(G2), 0);
        assert_eq!(s.count_events(0, is_dead), 0);
        let warnings = s.count_events(0, |e| matches!(e, Event::LinkSilent { .. }));
        assert!(warnings <= 2, "{warnings} warnings for period {period:?}");
        no_overlap(&s);
    }
}

#[test]
fn both_links_flapping_below_deadtime_moves_nothing() {
    let t = SimConfig::default().timers;
    for period in [ms(50), ms(120), t.deadtime - t.keepalive * 2] {
        let mut s = default_settled();
        flap(&mut s, &[CROSSOVER, LAN], period, secs(20));
        assert_eq!(s.holding_map(), [vec![0], vec![1]], "period {period:?}");
        assert_eq!(s.count_events(0, is_dead) + s.count_events(1, is_dead), 0);
        no_overlap(&s);
    }
}

#[test]
fn both_links_flapping_above_deadtime_holders_settle_after_one_move() {
    for period in [ms(700), ms(1500)] {
        let mut s = default_settled();
        flap(&mut s, &[CROSSOVER, LAN], period, secs(30));
        let [a, b] = s.holding_map();
        assert_eq!((a.len(), b.len()), (1, 1), "period {period:?}");
        // Flap damping stretches deadtime after each false death: at most
        // a few moves in 30 s, not one per flap.
        let moves = s.moves(G1) + s.moves(G2);
        let flaps = (secs(30).as_millis() / (2 * period.as_millis())) as usize;
        assert!(
            moves <= 4 && moves < flaps,
            "{moves} moves in {flaps} flaps, period {period:?}"
        );
        let deaths = s.count_events(0, is_dead);
        assert!(deaths <= 4, "{deaths} death verdicts");
    }
}

#[test]
fn lossy_slow_links_cause_no_false_failover() {
    let mut s = default_settled();
    for l in [CROSSOVER, LAN] {
        s.set_loss(l, 0.3);
        s.set_delay(l, ms(40));
    }
    s.run_for(secs(120));
    assert_eq!(s.count_events(0, is_dead) + s.count_events(1, is_dead), 0);
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
}

// ---------------------------------------------------------------- hooks and commands

#[test]
fn a_failed_start_lets_the_peer_take_the_group() {
    let mut s = Sim::new(SimConfig::default());
    s.fail_acquire(0, G1, true);
    s.start(0);
    s.start(1);
    s.run_for(secs(2));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(s.count_events(0, |e| matches!(e, Event::AcquireFailed { .. })), 1);
    no_overlap(&s);
}

#[test]
fn a_failed_stop_keeps_the_group_claimed_so_the_peer_never_starts_it() {
    let mut s = default_settled();
    s.fail_release(0, 2);
    s.command(0, Command::Standby).unwrap();
    s.run_for(secs(3));
    // Still stuck: serv2 must not have started serv1's group.
    assert_eq!(s.holders(G1), vec![0]);
    assert_eq!(s.count_events(0, |e| matches!(e, Event::ReleaseFailed { .. })), 1);
    s.run_for(secs(15));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    no_overlap(&s);
}

#[test]
fn operator_takeover_moves_a_group_without_overlap() {
    let mut s = default_settled();
    s.command(0, Command::Takeover(G2.into())).unwrap();
    assert_eq!(
        s.command(0, Command::Takeover(G1.into())),
        Err(CommandError::AlreadyHeld(G1.into()))
    );
    assert_eq!(
        s.command(0, Command::Takeover("nope".into())),
        Err(CommandError::UnknownGroup("nope".into()))
    );
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![0], vec![0]]);
    no_overlap(&s);
}

#[test]
fn a_lone_survivor_keeps_its_groups_through_a_lan_outage() {
    let mut s = default_settled();
    s.crash(0);
    s.run_for(secs(3));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    // One reachlist host goes away, then the whole LAN: no standby.
    s.set_reach(1, 2);
    s.run_for(secs(1));
    s.set_nic(1, LAN, false);
    s.run_for(secs(3));
    s.set_nic(1, LAN, true);
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(standby(&s, 1), None);
}

/// min / median / max in ms.
fn spread(mut v: Vec<u64>) -> (u64, u64, u64) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The figures quoted in docs/FAILOVER.md and docs/BENCHMARKS.md, over 100
/// random phases each (`cargo test --lib figures -- --nocapture`). Start
/// and stop hooks take 20 ms each.
#[test]
fn figures_of_detection_and_takeover_times() {
    let t = SimConfig::default().timers;
    let (mut det, mut take_pref, mut take_other) = (vec![], vec![], vec![]);
    let (mut lan_cut, mut isolated_release, mut isolated_take) = (vec![], vec![], vec![]);
    for seed in 1..=100 {
        let (d, took) = death(1, seed);
        det.push(d.as_millis() as u64);
        take_pref.push(took.as_millis() as u64);
        let (_, took) = death(0, seed);
        take_other.push(took.as_millis() as u64);

        let mut s = settled(SimConfig {
            seed,
            ..Default::default()
        });
        s.run_for(ms(seed % 50));
        let t0 = s.now();
        s.set_nic(0, LAN, false);
        s.run_for(secs(3));
        let took = s
            .first_event(1, t0, |e| matches!(e, Event::Acquired { group, .. } if group == G1))
            .unwrap();
        lan_cut.push(took.since(t0).as_millis() as u64);

        let mut s = settled(SimConfig {
            seed,
            ..Default::default()
        });
        s.run_for(ms(seed % 50));
        let t0 = s.now();
        s.set_nic(1, CROSSOVER, false);
        s.set_nic(1, LAN, false);
        s.run_for(secs(3));
        let rel = s
            .actions(1)
            .iter()
            .find(|(at, a)| *at >= t0 && matches!(a, Action::Release { group, .. } if group == G2))
            .map(|(at, _)| *at)
            .unwrap();
        let acq = s
            .actions(0)
            .iter()
            .find(|(at, a)| *at >= t0 && matches!(a, Action::Acquire { group, .. } if group == G2))
            .map(|(at, _)| *at)
            .unwrap();
        isolated_release.push(rel.since(t0).as_millis() as u64);
        isolated_take.push(acq.since(t0).as_millis() as u64);
        no_overlap(&s);
    }
    let rows = [
        ("node death: peer declared dead", spread(det)),
        ("node death: preferred survivor has the group up", spread(take_pref)),
        ("node death: other survivor has the group up", spread(take_other)),
        ("LAN cut of one node: peer has its group up", spread(lan_cut)),
        (
            "isolated node (preferred peer): starts releasing",
            spread(isolated_release.clone()),
        ),
        (
            "isolated node (preferred peer): peer starts acquiring",
            spread(isolated_take.clone()),
        ),
    ];
    eprintln!("timers {t:?}");
    for (what, (lo, med, hi)) in &rows {
        eprintln!("{what:<55} min {lo:>4} ms  median {med:>4} ms  max {hi:>4} ms");
    }
    let margin: Vec<u64> = isolated_take
        .iter()
        .zip(&isolated_release)
        .map(|(a, r)| a - r)
        .collect();
    let (lo, med, hi) = spread(margin);
    eprintln!(
        "{:<55} min {lo:>4} ms  median {med:>4} ms  max {hi:>4} ms",
        "isolated node: release budget actually left"
    );
    assert!(
        lo >= t.release_budget().as_millis() as u64,
        "budget {lo} ms below the stated worst case"
    );
    assert!(rows[2].1.2 < 1000, "outage target");
    assert!(rows[0].1.2 <= t.deadtime.as_millis() as u64 + 2);
}

#[test]
fn fast_timers_fail_over_within_a_quarter_second() {
    let fast = crate::config::Timers {
        keepalive: ms(20),
        warntime: ms(60),
        deadtime: ms(160),
        initdead: secs(5),
        takeover_delay: ms(40),
    };
    let (mut pref, mut other) = (vec![], vec![]);
    for seed in 1..=50 {
        let cfg = SimConfig {
            timers: fast,
            seed,
            ..Default::default()
        };
        pref.push(death_with(cfg.clone(), 1).1.as_millis() as u64);
        other.push(death_with(cfg, 0).1.as_millis() as u64);
    }
    let (p, o) = (spread(pref), spread(other));
    eprintln!("fast timers: preferred survivor {p:?} ms, other {o:?} ms (min, median, max)");
    assert!(p.2 <= 200 && o.2 <= 250, "{p:?} {o:?}");
}

/// Random link, reach, operator and hook-speed faults for a minute, always
/// leaving at least one link between the nodes: with contact, no group may
/// ever be up on both nodes, and after healing each group has one holder.
#[test]
fn random_faults_with_contact_never_double_hold() {
    let mut total_moves = 0;
    for seed in 1..=40 {
        let mut s = settled(SimConfig {
            seed,
            auto_failback: seed % 2 == 0,
            ..Default::default()
        });
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut cross_up, mut lan_nic) = (true, [true, true]);
        for _ in 0..60 {
            let node = next(2) as usize;
            match next(7) {
                0 if lan_nic == [true, true] => {
                    cross_up = !cross_up;
                    s.set_link(CROSSOVER, cross_up);
                }
                1 if cross_up => {
                    lan_nic[node] = !lan_nic[node];
                    s.set_nic(node, LAN, lan_nic[node]);
                }
                2 => s.set_reach(node, next(4) as u16),
                3 => {
                    let _ = s.command(node, Command::Standby);
                }
                4 => {
                    let _ = s.command(node, Command::ClearStandby);
                }
                5 => {
                    let _ = s.command(node, Command::Takeover(NODES[next(2) as usize].into()));
                }
                _ => s.slow_hooks(node, ms(next(300)), ms(next(300))),
            }
            s.run_for(ms(50 + next(1500)));
        }
        total_moves += s.moves(G1) + s.moves(G2);
        assert_eq!(
            s.max_overlap(),
            Duration::ZERO,
            "seed {seed}: {:?}",
            [s.holdings(G1), s.holdings(G2)]
        );
        assert_eq!(
            s.count_events(0, is_dead) + s.count_events(1, is_dead),
            0,
            "seed {seed}"
        );
        // Heal everything and clear both standby locks.
        s.set_link(CROSSOVER, true);
        for n in 0..2 {
            s.set_nic(n, LAN, true);
            s.set_reach(n, 3);
            s.slow_hooks(n, Duration::ZERO, Duration::ZERO);
        }
        s.run_for(secs(2));
        for n in 0..2 {
            let _ = s.command(n, Command::ClearStandby);
        }
        s.run_for(secs(15));
        assert_eq!(s.max_overlap(), Duration::ZERO, "seed {seed}");
        let [a, b] = s.holding_map();
        assert_eq!((a.len(), b.len()), (1, 1), "seed {seed}: {:?}", s.holding_map());
    }
    assert!(
        total_moves > 100,
        "the faults moved groups around ({total_moves} moves)"
    );
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
