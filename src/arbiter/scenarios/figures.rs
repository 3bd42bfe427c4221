//! The detection and takeover figures quoted in the docs.

use super::*;

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
