//! Unit tests of the arbiter's contract, driven by hand (the scenarios
//! drive it through the simulator): deadlines, adverts, refusals, and a
//! property test that no input sequence panics or breaks the basics.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Timers;

fn cfg() -> ArbiterConfig {
    let mut c = ArbiterConfig::new("serv1", "serv2", Timers::default(), true);
    c.preferred = Some(Side::Local);
    c
}

fn drain(a: &mut Arbiter) -> Vec<Action> {
    std::iter::from_fn(|| a.poll_action()).collect()
}

/// Plays every hook as done at once.
fn settle_hooks(a: &mut Arbiter, now: Millis) -> Vec<Action> {
    let mut all = vec![];
    loop {
        let batch = drain(a);
        if batch.is_empty() {
            return all;
        }
        for act in &batch {
            match act {
                Action::Acquire { group, .. } => a.handle_acquired(now, group, true),
                Action::Release { group, .. } => a.handle_released(now, group, true),
                _ => {}
            }
        }
        all.extend(batch);
    }
}

fn peer_state(groups: &[(&str, u64, Claim)]) -> NodeState {
    NodeState {
        reach: Some(Reach { up: 3, total: 3 }),
        groups: groups
            .iter()
            .map(|(g, e, c)| GroupClaim {
                group: g.to_string(),
                epoch: *e,
                claim: *c,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn start_up_cleans_every_group_then_joins_on_contact() {
    let mut a = Arbiter::new(cfg(), Millis(0), Startup::default());
    let first = drain(&mut a);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|x| matches!(
        x,
        Action::Release {
            reason: ReleaseReason::Cleanup,
            ..
        }
    )));
    assert!(a.advert().starting);
    assert!(a.advert().groups.iter().all(|c| c.claim == Claim::Releasing));
    a.handle_released(Millis(5), "serv1", true);
    a.handle_released(Millis(5), "serv2", true);
    a.handle_heartbeat(Millis(10), LinkId(0), 7, peer_state(&[("serv2", 3, Claim::Held)]));
    let acts = settle_hooks(&mut a, Millis(10));
    assert!(acts.contains(&Action::Acquire {
        group: "serv1".into(),
        epoch: 1,
        reason: AcquireReason::Owner
    }));
    assert!(
        !acts
            .iter()
            .any(|x| matches!(x, Action::Acquire { group, .. } if group == "serv2"))
    );
    assert!(matches!(a.mode(), Mode::Active { .. }));
    assert_eq!(a.phase("serv1"), Some(Phase::Held { epoch: 1 }));
    let adv = a.advert();
    assert!(!adv.starting);
    assert_eq!(adv.claim("serv1").map(|c| (c.epoch, c.claim)), Some((1, Claim::Held)));
}

#[test]
fn epochs_continue_from_the_persisted_and_the_peer_s() {
    let mut epochs = std::collections::BTreeMap::new();
    epochs.insert("serv1".to_string(), 41);
    let mut a = Arbiter::new(
        cfg(),
        Millis(0),
        Startup {
            epochs,
            ..Startup::default()
        },
    );
    settle_hooks(&mut a, Millis(0));
    // The peer once held serv1 at epoch 50 and released it.
    a.handle_heartbeat(Millis(10), LinkId(1), 7, peer_state(&[("serv1", 50, Claim::Failed)]));
    let acts = settle_hooks(&mut a, Millis(10));
    assert!(
        acts.iter()
            .any(|x| matches!(x, Action::Acquire { group, epoch: 51, .. } if group == "serv1"))
    );
}

#[test]
fn poll_timeout_is_always_ahead_and_within_one_keepalive() {
    let mut a = Arbiter::new(cfg(), Millis(1000), Startup::default());
    let ka = Timers::default().keepalive;
    for step in 0..200u64 {
        let now = Millis(1000 + step * 7);
        a.handle_timeout(now);
        settle_hooks(&mut a, now);
        let t = a.poll_timeout();
        assert!(t > now && t <= now + ka, "{t:?} at {now:?}");
    }
}

#[test]
fn heartbeats_on_an_unknown_link_are_ignored() {
    let mut a = Arbiter::new(cfg(), Millis(0), Startup::default());
    settle_hooks(&mut a, Millis(0));
    a.handle_heartbeat(Millis(10), LinkId(9), 7, peer_state(&[]));
    assert!(!a.peer_alive());
}

#[test]
fn a_diagnostic_peer_is_treated_as_holding_nothing() {
    let mut a = Arbiter::new(cfg(), Millis(0), Startup::default());
    settle_hooks(&mut a, Millis(0));
    a.handle_reach(Millis(1), Reach { up: 3, total: 3 });
    let mut s = peer_state(&[("serv1", 99, Claim::Held), ("serv2", 99, Claim::Held)]);
    s.observer = true;
    a.handle_heartbeat(Millis(10), LinkId(0), 7, s);
    settle_hooks(&mut a, Millis(10));
    a.handle_timeout(Millis(200));
    settle_hooks(&mut a, Millis(200));
    // It never yields to the observer's claims and takes its group too.
    assert!(matches!(a.phase("serv1"), Some(Phase::Held { .. })));
    assert!(matches!(a.phase("serv2"), Some(Phase::Held { .. })));
}

#[test]
fn commands_are_refused_with_reasons() {
    let mut a = Arbiter::new(cfg(), Millis(0), Startup::default());
    assert_eq!(
        a.handle_command(Millis(1), Command::Takeover("serv2".into())),
        Err(CommandError::Starting)
    );
    assert_eq!(
        a.handle_command(Millis(1), Command::ClearStandby),
        Err(CommandError::NotInStandby)
    );
    a.handle_command(Millis(2), Command::Standby).unwrap();
    let acts = drain(&mut a);
    assert!(acts.contains(&Action::WriteStandbyLock {
        reason: StandbyReason::Operator
    }));
    assert_eq!(
        a.handle_command(Millis(3), Command::Takeover("serv2".into())),
        Err(CommandError::InStandby)
    );
    a.handle_command(Millis(4), Command::ClearStandby).unwrap();
    assert!(drain(&mut a).contains(&Action::ClearStandbyLock));
}

#[test]
fn a_locked_start_stays_in_standby_and_says_so() {
    let mut a = Arbiter::new(
        cfg(),
        Millis(0),
        Startup {
            standby_lock: true,
            ..Default::default()
        },
    );
    settle_hooks(&mut a, Millis(0));
    a.handle_reach(Millis(100), Reach { up: 3, total: 3 });
    a.handle_timeout(Millis(60_000));
    let acts = settle_hooks(&mut a, Millis(60_000));
    assert!(!acts.iter().any(|x| matches!(x, Action::Acquire { .. })));
    assert!(a.advert().standby);
    assert_eq!(
        a.mode(),
        Mode::Standby {
            reason: StandbyReason::Locked
        }
    );
}

#[derive(Debug, Clone)]
enum Input {
    Advance(u16),
    Heartbeat(u8, u8, Vec<(u8, u8, u8)>, bool, u8),
    Reach(u8),
    HookOk(bool),
    HookFail,
    Cmd(u8),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0u16..600).prop_map(Input::Advance),
        (
            0u8..3,
            0u8..3,
            proptest::collection::vec((0u8..3, 0u8..6, 1u8..6), 0..3),
            any::<bool>(),
            0u8..4
        )
            .prop_map(|(l, i, g, sb, r)| Input::Heartbeat(l, i, g, sb, r)),
        (0u8..4).prop_map(Input::Reach),
        any::<bool>().prop_map(Input::HookOk),
        Just(Input::HookFail),
        (0u8..4).prop_map(Input::Cmd),
    ]
}

proptest! {
    #[test]
    fn no_input_sequence_panics_or_breaks_the_contract(inputs in proptest::collection::vec(input(), 1..120)) {
        let names = ["serv1", "serv2", "other"];
        let claims = [Claim::Acquiring, Claim::Held, Claim::Releasing, Claim::Requested, Claim::Failed];
        let mut now = Millis(0);
        let mut a = Arbiter::new(cfg(), now, Startup::default());
        let mut pending: Vec<Action> = vec![];
        for inp in inputs {
            match inp {
                Input::Advance(ms) => {
                    now = now + Duration::from_millis(ms.into());
                    a.handle_timeout(now);
                }
                Input::Heartbeat(link, inc, groups, standby, reach) => {
                    let state = NodeState {
                        standby,
                        reach: (reach > 0).then(|| Reach { up: u16::from(reach) - 1, total: 3 }),
                        groups: groups
                            .iter()
                            .map(|(g, e, c)| GroupClaim {
                                group: names[usize::from(*g)].into(),
                                epoch: (*e).into(),
                                claim: claims[usize::from(*c) - 1],
                            })
                            .collect(),
                        ..Default::default()
                    };
                    a.handle_heartbeat(now, LinkId(link), inc.into(), state);
                }
                Input::Reach(up) => a.handle_reach(now, Reach { up: up.into(), total: 3 }),
                Input::HookOk(first) => {
                    let pick = if first { pending.first() } else { pending.last() };
                    if let Some(act) = pick.cloned() {
                        pending.retain(|p| p != &act);
                        match act {
                            Action::Acquire { group, .. } => a.handle_acquired(now, &group, true),
                            Action::Release { group, .. } => a.handle_released(now, &group, true),
                            _ => {}
                        }
                    }
                }
                Input::HookFail => {
                    if let Some(act) = pending.pop() {
                        match act {
                            Action::Acquire { group, .. } => a.handle_acquired(now, &group, false),
                            Action::Release { group, .. } => a.handle_released(now, &group, false),
                            _ => {}
                        }
                    }
                }
                Input::Cmd(c) => {
                    let cmd = match c {
                        0 => Command::Standby,
                        1 => Command::ClearStandby,
                        2 => Command::Takeover("serv2".into()),
                        _ => Command::Takeover("nope".into()),
                    };
                    let _ = a.handle_command(now, cmd);
                }
            }
            for act in drain(&mut a) {
                if matches!(act, Action::Acquire { .. }) {
                    // Acquisitions come only from an active node.
                    prop_assert!(matches!(a.mode(), Mode::Active { .. }), "{:?} in {:?}", act, a.mode());
                }
                if matches!(act, Action::Acquire { .. } | Action::Release { .. }) {
                    pending.push(act);
                }
            }
            prop_assert!(a.poll_timeout() > now);
            // Every claim it advertises matches a phase, and back.
            for g in ["serv1", "serv2"] {
                let phase = a.phase(g).unwrap();
                let claim = a.advert().claim(g).map(|c| c.claim);
                prop_assert_eq!(phase.holds(), claim.is_some_and(|c| c.holds()), "{} {:?} {:?}", g, phase, claim);
            }
        }
    }
}

/// serv1 runs both groups (serv2 died earlier) and then hears serv2
/// again, restarted (a new incarnation), saying `state`. Returns the
/// actions and events that follow.
fn survivor_hearing(state: NodeState) -> (Arbiter, Vec<Action>, u64) {
    let mut a = Arbiter::new(cfg(), Millis(0), Startup::default());
    settle_hooks(&mut a, Millis(0));
    a.handle_reach(Millis(5), Reach { up: 3, total: 3 });
    a.handle_heartbeat(Millis(10), LinkId(0), 7, peer_state(&[("serv2", 3, Claim::Held)]));
    settle_hooks(&mut a, Millis(10));
    let mut t = 10;
    while a.phase("serv2") != Some(Phase::Held { epoch: 4 }) {
        t += 50;
        a.handle_timeout(Millis(t));
        settle_hooks(&mut a, Millis(t));
        assert!(t < 5_000, "serv2's group was not taken over");
    }
    t += 50;
    a.handle_heartbeat(Millis(t), LinkId(0), 8, state);
    let acts = drain(&mut a);
    (a, acts, t)
}

fn conflicts(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|x| matches!(x, Action::Notify(Event::Conflict { .. })))
        .count()
}

fn reannounces(acts: &[Action]) -> usize {
    acts.iter().filter(|x| matches!(x, Action::Reannounce { .. })).count()
}

#[test]
fn a_peer_back_from_a_reboot_cleaning_up_is_no_conflict_but_is_reannounced_after() {
    let mut cleaning = peer_state(&[("serv2", 3, Claim::Releasing)]);
    cleaning.starting = true;
    let (mut a, acts, t) = survivor_hearing(cleaning);
    assert_eq!(conflicts(&acts), 0, "{acts:?}");
    assert_eq!(reannounces(&acts), 0, "{acts:?}");
    assert_eq!(
        a.phase("serv2"),
        Some(Phase::Held { epoch: 4 }),
        "the survivor keeps it"
    );
    // The clean-up is done: the addresses are announced again once.
    let mut done = peer_state(&[]);
    done.starting = true;
    a.handle_heartbeat(Millis(t + 50), LinkId(0), 8, done);
    let acts = drain(&mut a);
    assert_eq!(reannounces(&acts), 1, "{acts:?}");
    assert_eq!(conflicts(&acts), 0, "{acts:?}");
}

#[test]
fn a_peer_that_still_holds_the_group_is_a_conflict() {
    // Frozen, not rebooted: it comes back active and holding.
    let (_, acts, _) = survivor_hearing(peer_state(&[("serv2", 3, Claim::Held)]));
    assert_eq!(conflicts(&acts), 1, "{acts:?}");
    assert_eq!(reannounces(&acts), 1, "{acts:?}");
}

#[test]
fn a_peer_that_stopped_after_handing_everything_over_is_silent_at_info_level() {
    let levels = |standby: bool, groups: &[(&str, u64, Claim)]| {
        let mut a = Arbiter::new(cfg(), Millis(0), Startup::default());
        settle_hooks(&mut a, Millis(0));
        let mut st = peer_state(groups);
        st.standby = standby;
        a.handle_heartbeat(Millis(10), LinkId(0), 7, st.clone());
        a.handle_heartbeat(Millis(10), LinkId(1), 7, st);
        settle_hooks(&mut a, Millis(10));
        let mut out = vec![];
        for t in (60..=1_000).step_by(50) {
            a.handle_timeout(Millis(t));
            for act in settle_hooks(&mut a, Millis(t)) {
                if let Action::Notify(e @ (Event::LinkSilent { .. } | Event::PeerDead { .. })) = act {
                    out.push((e.name(), e.level()));
                }
            }
        }
        out
    };
    let planned = levels(true, &[]);
    assert!(planned.iter().any(|(n, _)| n == "peer_dead"), "{planned:?}");
    assert!(planned.iter().all(|(_, l)| *l == Level::Info), "{planned:?}");
    let crash = levels(false, &[("serv2", 3, Claim::Held)]);
    assert!(crash.contains(&("peer_dead".to_string(), Level::Critical)), "{crash:?}");
    assert!(
        crash.contains(&("link_silent".to_string(), Level::Warning)),
        "{crash:?}"
    );
}

// ------------------------------------------------------------- maintenance

#[test]
fn a_daemon_restarted_in_maintenance_keeps_what_it_held_and_cleans_nothing_up() {
    let cfg = ArbiterConfig::new("serv1", "serv2", Timers::default(), true);
    let startup = Startup {
        epochs: BTreeMap::from([("serv1".to_string(), 4), ("serv2".to_string(), 2)]),
        maintenance: Maintenance {
            on: true,
            generation: 3,
        },
        kept: BTreeMap::from([("serv1".to_string(), 5)]),
        ..Startup::default()
    };
    let mut a = Arbiter::new(cfg.clone(), Millis(0), startup.clone());
    assert_eq!(a.phase("serv1"), Some(Phase::Held { epoch: 5 }));
    assert_eq!(a.phase("serv2"), Some(Phase::Released));
    let actions: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
    assert!(
        !actions
            .iter()
            .any(|x| matches!(x, Action::Release { .. } | Action::Acquire { .. })),
        "{actions:?}"
    );
    assert_eq!(a.advert().maintenance, startup.maintenance);
    assert_eq!(
        a.advert().claim("serv1").map(|c| (c.claim, c.epoch)),
        Some((Claim::Held, 5))
    );
    // Long after initdead, with no peer: still nothing decided.
    a.handle_reach(Millis(100), Reach { up: 1, total: 1 });
    a.handle_timeout(Millis(60_000));
    assert!(std::iter::from_fn(|| a.poll_action()).all(|x| matches!(x, Action::Notify(_))));
    assert_eq!(a.phase("serv2"), Some(Phase::Released));
    // The health monitor giving up is ignored too.
    a.handle_unhealthy(Millis(60_001), "serv1");
    assert_eq!(a.phase("serv1"), Some(Phase::Held { epoch: 5 }));
    // Out of maintenance the same start-up cleans up as always; the kept
    // list means nothing then.
    let off = Startup {
        maintenance: Maintenance::default(),
        ..startup
    };
    let mut b = Arbiter::new(cfg, Millis(0), off);
    let releases = std::iter::from_fn(|| b.poll_action())
        .filter(|x| {
            matches!(
                x,
                Action::Release {
                    reason: ReleaseReason::Cleanup,
                    ..
                }
            )
        })
        .count();
    assert_eq!(releases, 2);
}

#[test]
fn a_peer_setting_is_adopted_only_when_newer_and_an_observer_is_never_followed() {
    let cfg = ArbiterConfig::new("serv1", "serv2", Timers::default(), false);
    let mut a = Arbiter::new(cfg, Millis(0), Startup::default());
    let peer = |on, generation, observer| NodeState {
        maintenance: Maintenance { on, generation },
        observer,
        ..NodeState::default()
    };
    a.handle_heartbeat(Millis(10), LinkId(0), 1, peer(true, 9, true));
    assert!(!a.maintenance().on, "a diagnostic run cannot freeze the cluster");
    a.handle_heartbeat(Millis(20), LinkId(0), 1, peer(true, 2, false));
    assert_eq!(
        a.maintenance(),
        Maintenance {
            on: true,
            generation: 2
        }
    );
    let written: Vec<Action> = std::iter::from_fn(|| a.poll_action())
        .filter(|x| matches!(x, Action::WriteMaintenance { .. }))
        .collect();
    assert_eq!(
        written,
        vec![Action::WriteMaintenance {
            on: true,
            generation: 2
        }]
    );
    a.handle_command(Millis(30), Command::Maintenance(false)).unwrap();
    assert_eq!(
        a.maintenance(),
        Maintenance {
            on: false,
            generation: 3
        }
    );
    // The peer's older word does not undo it; the peer adopts ours.
    a.handle_heartbeat(Millis(40), LinkId(0), 1, peer(true, 2, false));
    assert!(!a.maintenance().on);
    assert_eq!(
        a.advert().maintenance,
        Maintenance {
            on: false,
            generation: 3
        }
    );
    // Asking for what is in force changes nothing.
    a.handle_command(Millis(50), Command::Maintenance(false)).unwrap();
    assert_eq!(a.maintenance().generation, 3);
}

/// The next actions release a group as a stale holder.
fn assert_steps_down(a: &mut Arbiter) {
    let acts = drain(a);
    let stale = |x: &Action| {
        matches!(
            x,
            Action::Release {
                reason: ReleaseReason::StaleEpoch,
                ..
            }
        )
    };
    assert!(acts.iter().any(stale), "{acts:?}");
}

/// serv2 under Pacemaker with two peers: serv1 (first) and serv3.
fn three_nodes() -> ArbiterConfig {
    let mut c = ArbiterConfig::new("serv2", "serv1", Timers::default(), false);
    c.external = true;
    c.groups[1].owner_node = Some("serv1".into());
    c.more_peers.push(PeerConf {
        name: "serv3".into(),
        links: vec!["crossover".into()],
    });
    c.groups.push(GroupConf {
        name: "serv3".into(),
        owner: Side::Peer,
        owner_node: Some("serv3".into()),
    });
    c
}

#[test]
fn with_several_peers_promote_waits_for_any_holder_takes_a_newer_epoch_and_yields_to_a_newer_one() {
    let cfg = three_nodes();
    let ka = cfg.timers.keepalive.as_millis() as u64;
    let deadtime = cfg.timers.deadtime.as_millis() as u64;
    let mut a = Arbiter::new(cfg, Millis(0), Startup::default());
    let cleanup = settle_hooks(&mut a, Millis(0));
    assert_eq!(
        cleanup.iter().filter(|x| matches!(x, Action::Release { .. })).count(),
        3
    );
    let serv1 = |t: u64, a: &mut Arbiter| {
        a.handle_heartbeat_from(Millis(t), 0, LinkId(0), 11, peer_state(&[("serv1", 3, Claim::Held)]))
    };
    // serv3 once failed to start serv1 at epoch 5: not a holding, but an
    // epoch the next holder must pass.
    let serv3 = |t: u64, a: &mut Arbiter, claim: (&str, u64, Claim)| {
        a.handle_heartbeat_from(Millis(t), 1, LinkId(0), 33, peer_state(&[claim]))
    };
    let failed = ("serv1", 5, Claim::Failed);
    let mut t = 10;
    serv1(t, &mut a);
    serv3(t, &mut a, failed);
    let events = drain(&mut a);
    for p in ["serv1", "serv3"] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Action::Notify(Event::PeerAlive { peer: Some(n), .. }) if n == p)),
            "{events:?}"
        );
    }
    assert!(matches!(a.mode(), Mode::Active { .. }));
    let st = a.status();
    assert_eq!(
        st.peers.iter().map(|p| (p.name.as_str(), p.alive)).collect::<Vec<_>>(),
        [("serv1", true), ("serv3", true)]
    );
    let g = st.groups.iter().find(|g| g.group == "serv1").unwrap();
    assert_eq!(
        (g.peer_claim, g.claimed_by.as_deref()),
        (Some(Claim::Held), Some("serv1"))
    );

    // Promoted while serv1 (alive) holds it: it waits.
    a.handle_command(Millis(t), Command::Promote("serv1".into())).unwrap();
    for _ in 0..10 {
        t += ka;
        serv1(t, &mut a);
        serv3(t, &mut a, failed);
        a.handle_timeout(Millis(t));
        assert!(
            !drain(&mut a).iter().any(|x| matches!(x, Action::Acquire { .. })),
            "started while serv1 holds it"
        );
    }
    // serv1 falls silent; serv3 does not. Once serv1 is dead the group
    // starts here, at an epoch above both peers' (3 and 5).
    let mut acquired = None;
    let mut dead = false;
    for _ in 0..(2 * deadtime / ka + 10) {
        t += ka;
        serv3(t, &mut a, failed);
        a.handle_timeout(Millis(t));
        for x in settle_hooks(&mut a, Millis(t)) {
            match x {
                Action::Notify(Event::PeerDead { peer, .. }) => {
                    assert_eq!(peer.as_deref(), Some("serv1"));
                    dead = true;
                }
                Action::Acquire { group, epoch, reason } => {
                    assert!(dead, "acquired before serv1 was declared dead");
                    acquired = Some((group, epoch, reason));
                }
                _ => {}
            }
        }
        if acquired.is_some() {
            break;
        }
    }
    assert_eq!(acquired, Some(("serv1".to_string(), 6, AcquireReason::Operator)));
    assert_eq!(a.phase("serv1"), Some(Phase::Held { epoch: 6 }));
    assert!(a.status().peers[1].alive, "serv3 stays alive");

    // serv3 holds it at a newer epoch (Pacemaker promoted it too): this
    // node steps down.
    t += ka;
    serv3(t, &mut a, ("serv1", 9, Claim::Held));
    assert_steps_down(&mut a);
}

#[test]
fn with_several_peers_an_equal_epoch_goes_to_the_groups_owner_only() {
    let mut a = Arbiter::new(three_nodes(), Millis(0), Startup::default());
    settle_hooks(&mut a, Millis(0));
    a.handle_heartbeat_from(Millis(10), 0, LinkId(0), 11, peer_state(&[]));
    a.handle_heartbeat_from(Millis(10), 1, LinkId(0), 33, peer_state(&[]));
    a.handle_command(Millis(10), Command::Promote("serv1".into())).unwrap();
    let mut t = 10;
    while a.phase("serv1") != Some(Phase::Held { epoch: 1 }) {
        t += 50;
        assert!(t < 10_000, "never started");
        a.handle_heartbeat_from(Millis(t), 0, LinkId(0), 11, peer_state(&[]));
        a.handle_heartbeat_from(Millis(t), 1, LinkId(0), 33, peer_state(&[]));
        settle_hooks(&mut a, Millis(t));
    }
    // serv3 claims serv1 at the same epoch: serv3 does not own serv1, so
    // this node keeps it (and calls it a conflict).
    a.handle_heartbeat_from(
        Millis(t + 1),
        1,
        LinkId(0),
        33,
        peer_state(&[("serv1", 1, Claim::Held)]),
    );
    let acts = drain(&mut a);
    assert!(
        acts.iter().any(|x| matches!(x, Action::Notify(Event::Conflict { .. }))),
        "{acts:?}"
    );
    assert!(!acts.iter().any(|x| matches!(x, Action::Release { .. })), "{acts:?}");
    // serv1, its owner, at the same epoch wins.
    a.handle_heartbeat_from(
        Millis(t + 2),
        0,
        LinkId(0),
        11,
        peer_state(&[("serv1", 1, Claim::Held)]),
    );
    assert_steps_down(&mut a);
}

#[test]
fn with_several_peers_a_node_starts_once_every_peer_is_heard_or_initdead_passed() {
    let cfg = three_nodes();
    let initdead = cfg.timers.initdead.as_millis() as u64;
    let mut a = Arbiter::new(cfg, Millis(0), Startup::default());
    settle_hooks(&mut a, Millis(0));
    a.handle_heartbeat_from(Millis(10), 0, LinkId(0), 11, peer_state(&[]));
    assert!(matches!(a.mode(), Mode::Starting { .. }), "serv3 not heard yet");
    assert_eq!(
        a.handle_command(Millis(10), Command::Promote("serv1".into())),
        Err(CommandError::Starting)
    );
    let mut t = 10;
    while t < initdead + 100 && matches!(a.mode(), Mode::Starting { .. }) {
        t += 50;
        a.handle_heartbeat_from(Millis(t), 0, LinkId(0), 11, peer_state(&[]));
    }
    assert!(matches!(a.mode(), Mode::Active { .. }));
    assert!(t >= initdead, "active at {t} ms, before initdead");
    let st = a.status();
    assert_eq!(
        st.peers.iter().map(|p| p.alive).collect::<Vec<_>>(),
        [true, false],
        "serv3 absent"
    );
}
