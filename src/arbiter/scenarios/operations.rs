//! Standby and its lock, failback, hook failures and operator commands.

use super::*;

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

// ---------------------------------------------------------------- maintenance

fn maintenance_on(s: &Sim, n: usize) -> bool {
    s.arbiter(n).is_some_and(|a| a.maintenance().on)
}

#[test]
fn maintenance_set_on_one_node_freezes_both_and_a_dead_peer_is_not_taken_over_until_it_ends() {
    let mut s = default_settled();
    s.command(0, Command::Maintenance(true)).unwrap();
    s.run_for(ms(200));
    assert!(maintenance_on(&s, 0) && maintenance_on(&s, 1), "the peer adopts it");
    assert_eq!(
        s.count_events(1, |e| matches!(e, Event::MaintenanceOn { by, .. } if by == G1)),
        1,
        "told once, naming who set it"
    );
    // serv1's machine dies while an admin works: serv2 sees it dead but
    // starts nothing.
    s.crash(0);
    s.run_for(secs(10));
    assert_eq!(s.count_events(1, is_dead), 1);
    assert_eq!(s.holding_map(), [vec![], vec![1]], "frozen: serv1's group stays down");
    // The admin ends it on the survivor: decisions resume from what is true.
    let t0 = s.now();
    s.command(1, Command::Maintenance(false)).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    let took = s
        .first_event(1, t0, |e| matches!(e, Event::Acquired { group, .. } if group == G1))
        .unwrap();
    assert!(
        took.since(t0) <= s.cfg.timers.keepalive * 3 + ms(100),
        "{:?}",
        took.since(t0)
    );
    no_overlap(&s);
}

#[test]
fn in_maintenance_a_lost_lan_sends_nobody_to_standby_and_operator_moves_are_refused() {
    let mut s = default_settled();
    s.command(1, Command::Maintenance(true)).unwrap();
    s.run_for(ms(200));
    s.set_nic(0, LAN, false);
    s.run_for(secs(5));
    assert_eq!(standby(&s, 0), None, "no reach verdict in maintenance");
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    for n in 0..2 {
        assert_eq!(
            s.command(n, Command::Takeover(NODES[1 - n].into())),
            Err(CommandError::InMaintenance)
        );
        assert_eq!(s.command(n, Command::Standby), Err(CommandError::InMaintenance));
    }
    // Ended from the other node: the verdict the LAN cut calls for now.
    s.command(0, Command::Maintenance(false)).unwrap();
    s.run_for(secs(3));
    assert!(!maintenance_on(&s, 0) && !maintenance_on(&s, 1));
    assert_eq!(standby(&s, 0), Some(StandbyReason::ReachWorse));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    no_overlap(&s);
}

#[test]
fn the_newer_maintenance_setting_wins_after_a_partition_and_survives_a_power_cycle() {
    let mut s = default_settled();
    s.command(0, Command::Maintenance(true)).unwrap();
    s.run_for(ms(200));
    // Apart, serv2 ends it and sets it again (two steps newer); serv1 sees
    // nothing of that.
    s.set_link(CROSSOVER, false);
    s.set_link(LAN, false);
    s.command(1, Command::Maintenance(false)).unwrap();
    s.command(1, Command::Maintenance(true)).unwrap();
    s.command(0, Command::Maintenance(false)).unwrap();
    s.run_for(ms(100));
    assert!(!maintenance_on(&s, 0) && maintenance_on(&s, 1));
    s.set_link(CROSSOVER, true);
    s.set_link(LAN, true);
    s.run_for(ms(300));
    let g = |n| s.arbiter(n).unwrap().maintenance();
    assert_eq!(g(0), g(1));
    assert!(g(0).on, "generation 3 (serv2) beats generation 2 (serv1)");
    // Persisted: a node that powers up again is still frozen.
    s.crash(1);
    s.start(1);
    assert!(maintenance_on(&s, 1));
    s.run_for(secs(2));
    assert_eq!(
        s.holding_map(),
        [vec![0], vec![]],
        "serv2's group not restarted in maintenance"
    );
}

// ---------------------------------------------------------------- failover = pacemaker

fn external() -> Sim {
    let mut s = Sim::new(SimConfig {
        external: true,
        ..SimConfig::default()
    });
    s.start(0);
    s.start(1);
    s.run_for(secs(2));
    s
}

#[test]
fn under_pacemaker_nothing_starts_by_itself_and_promote_demote_move_groups_without_overlap() {
    let mut s = external();
    assert_eq!(
        s.holding_map(),
        [Vec::<usize>::new(), vec![]],
        "nobody owns anything: Pacemaker decides"
    );
    s.command(0, Command::Promote(G1.into())).unwrap();
    s.command(1, Command::Promote(G2.into())).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    // Promote again where it runs: nothing to do. Builtin commands refused.
    s.command(0, Command::Promote(G1.into())).unwrap();
    assert_eq!(s.command(0, Command::Takeover(G2.into())), Err(CommandError::External));
    assert_eq!(s.command(0, Command::Standby), Err(CommandError::External));
    // A switchover as Pacemaker orders it: demote there, promote here.
    s.command(0, Command::Demote(G1.into())).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![], vec![1]], "demoted, not taken by anyone");
    s.command(1, Command::Promote(G1.into())).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    // Promote while the peer still runs it: the peer lets go first.
    s.command(0, Command::Promote(G1.into())).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    no_overlap(&s);
}

#[test]
fn under_pacemaker_a_dead_peer_is_not_taken_over_until_promoted_and_a_lower_score_is_no_reason_to_stand_by() {
    let mut s = external();
    s.command(0, Command::Promote(G1.into())).unwrap();
    s.command(1, Command::Promote(G2.into())).unwrap();
    s.run_for(secs(1));
    s.set_nic(1, LAN, false);
    s.run_for(secs(3));
    assert_eq!(standby(&s, 1), None);
    assert_eq!(s.holding_map(), [vec![0], vec![1]]);
    s.set_nic(1, LAN, true);
    s.crash(0);
    s.run_for(secs(5));
    assert_eq!(s.count_events(1, is_dead), 1);
    assert_eq!(
        s.holding_map(),
        [vec![], vec![1]],
        "waits for Pacemaker (and its fencing)"
    );
    s.command(1, Command::Promote(G1.into())).unwrap();
    s.run_for(secs(1));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    // The old holder comes back: it starts nothing, and its stale epoch
    // could not win anyway.
    s.start(0);
    s.run_for(secs(3));
    assert_eq!(s.holding_map(), [vec![1], vec![1]]);
    assert_eq!(
        s.command(0, Command::Demote(G2.into())),
        Ok(()),
        "demoting what does not run here is fine"
    );
    no_overlap(&s);
}
