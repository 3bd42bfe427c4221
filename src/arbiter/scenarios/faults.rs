//! Link faults, isolation, partitions with equal scores, and freezes.

use super::*;

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

// ---------------------------------------------------------------- wrong key

fn key_mismatch(e: &Event) -> bool {
    matches!(e, Event::PeerKeyMismatch { .. })
}

#[test]
fn two_nodes_with_different_keys_start_nothing_and_say_why() {
    let mut s = Sim::new(SimConfig::default());
    s.set_key(1, 7);
    s.start(0);
    s.start(1);
    s.run_for(secs(30));
    // Without an authenticated word from the peer neither can know what
    // it runs: starting even its own group could double it.
    assert_eq!(s.holding_map(), [Vec::<usize>::new(), vec![]]);
    for n in 0..2 {
        assert_eq!(s.count_events(n, key_mismatch), 1, "reported once, node {n}");
        assert_eq!(s.count_events(n, |e| matches!(e, Event::Started { .. })), 0);
        assert!(matches!(s.mode(n), Some(Mode::Starting { .. })));
        assert!(s.arbiter(n).unwrap().status().peer_key_mismatch);
    }
    // The key is fixed (and the node restarted): normal start-up follows.
    s.set_key(1, 0);
    s.crash(1);
    s.start(1);
    s.run_for(secs(2));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    assert_eq!(
        s.count_events(0, |e| matches!(e, Event::PeerKeyMismatchEnded { .. })),
        1
    );
    no_overlap(&s);
}

#[test]
fn a_peer_restarted_with_another_key_keeps_its_group_from_being_taken_over() {
    let mut s = default_settled();
    s.crash(1);
    s.set_key(1, 7);
    s.start(1);
    s.run_for(secs(30));
    // serv1 keeps its own group, does not take serv2's; serv2 starts nothing.
    assert_eq!(s.holding_map(), [vec![0], vec![]]);
    assert_eq!(s.count_events(0, key_mismatch), 1);
    no_overlap(&s);
    // Then the misconfigured peer dies for real: its silence counts from
    // its last datagram, and the survivor takes over.
    s.crash(1);
    let t0 = s.now();
    s.run_for(secs(3));
    assert_eq!(s.holding_map(), [vec![0], vec![0]]);
    let took = s
        .first_event(0, t0, |e| matches!(e, Event::Acquired { group, .. } if group == G2))
        .unwrap();
    let t = s.cfg.timers;
    assert!(
        took.since(t0) <= t.deadtime + t.keepalive + ms(100),
        "{:?}",
        took.since(t0)
    );
    no_overlap(&s);
}
