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
