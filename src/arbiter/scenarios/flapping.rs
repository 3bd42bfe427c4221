//! Flapping links, lossy links, and random faults that keep contact.

use super::*;

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
