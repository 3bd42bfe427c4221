//! Hysteresis for the reachlist prober: a host changes between reachable
//! and unreachable only after `rise` (resp. `fall`) consecutive results
//! that say so, so one lost echo reply does not move the reach score.
//! Pure logic over probe results; the sockets are in `probe.rs`. The
//! simulator uses it too, so simulated scores lag reality exactly as real
//! ones do.

use hamirror_wire::heartbeat::Reach;

/// The debounced state of one host.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    state: Option<bool>,
    oks: u32,
    fails: u32,
    rise: u32,
    fall: u32,
}

impl Hysteresis {
    /// A host of unknown state; `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            state: None,
            oks: 0,
            fails: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Feeds one probe result; returns the new state when it changed
    /// (including the first determination).
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.oks = self.oks.saturating_add(1);
            self.fails = 0;
        } else {
            self.fails = self.fails.saturating_add(1);
            self.oks = 0;
        }
        let next = match self.state {
            Some(true) if self.fails >= self.fall => Some(false),
            Some(false) if self.oks >= self.rise => Some(true),
            None if self.oks >= self.rise => Some(true),
            None if self.fails >= self.fall => Some(false),
            s => s,
        };
        if next != self.state {
            self.state = next;
            next
        } else {
            None
        }
    }

    /// `None` until the first `rise` successes or `fall` failures in a row.
    pub fn state(&self) -> Option<bool> {
        self.state
    }
}

/// The reach score over all hosts, round by round.
#[derive(Debug, Clone)]
pub struct ReachTracker {
    hosts: Vec<Hysteresis>,
    rounds: u32,
    settle_rounds: u32,
    grace_rounds: u32,
    /// A score was reported: the start-up grace is over for good.
    reported: bool,
}

impl ReachTracker {
    pub fn new(hosts: usize, rise: u32, fall: u32) -> Self {
        ReachTracker {
            hosts: (0..hosts).map(|_| Hysteresis::new(rise, fall)).collect(),
            rounds: 0,
            settle_rounds: rise.max(fall),
            grace_rounds: 0,
            reported: false,
        }
    }

    /// At start-up, report no score for up to `rounds` rounds unless every
    /// host already answers: a node's own network takes a moment to come up
    /// after a boot (link negotiation, neighbour discovery), and a score of
    /// 0 reported then would send a healthy node to standby as "worse".
    pub fn with_startup_grace(mut self, rounds: u32) -> Self {
        self.grace_rounds = rounds;
        self
    }

    /// Feeds one round (one result per host, in order). Returns the score
    /// once enough rounds have passed for every host to have a state; a
    /// host still undecided then (it answers every other time) counts as
    /// unreachable.
    pub fn round(&mut self, results: &[bool]) -> Option<Reach> {
        for (h, ok) in self.hosts.iter_mut().zip(results) {
            h.record(*ok);
        }
        self.rounds = self.rounds.saturating_add(1);
        let settled = self.rounds >= self.settle_rounds;
        let all_up = self.hosts.iter().all(|h| h.state() == Some(true));
        self.reported |= settled && (all_up || self.rounds >= self.grace_rounds);
        self.reported.then(|| self.score())
    }

    pub fn score(&self) -> Reach {
        let up = self.hosts.iter().filter(|h| h.state() == Some(true)).count();
        Reach {
            up: up.min(u16::MAX as usize) as u16,
            total: self.hosts.len().min(u16::MAX as usize) as u16,
        }
    }

    /// Each host's debounced state.
    pub fn states(&self) -> impl Iterator<Item = Option<bool>> + '_ {
        self.hosts.iter().map(Hysteresis::state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_waits_out_the_start_up_grace_unless_every_host_answers() {
        let mut t = ReachTracker::new(2, 2, 2).with_startup_grace(6);
        // The network is still coming up: nothing reported as 0/2.
        for _ in 0..5 {
            assert_eq!(t.round(&[false, false]), None);
        }
        // Grace over: what is known counts.
        assert_eq!(t.round(&[true, false]), Some(Reach { up: 0, total: 2 }));
        let mut t = ReachTracker::new(2, 2, 2).with_startup_grace(100);
        assert_eq!(t.round(&[true, true]), None);
        // Everyone answers: reported at once, grace or not.
        assert_eq!(t.round(&[true, true]), Some(Reach { up: 2, total: 2 }));
        // From then on every round is reported, a loss included.
        assert_eq!(t.round(&[false, true]), Some(Reach { up: 2, total: 2 }));
        assert_eq!(t.round(&[false, true]), Some(Reach { up: 1, total: 2 }));
    }

    #[test]
    fn one_lost_reply_does_not_change_the_state() {
        let mut h = Hysteresis::new(3, 3);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
        for _ in 0..10 {
            assert_eq!(h.record(false), None);
            assert_eq!(h.record(false), None);
            assert_eq!(h.record(true), None);
        }
        assert_eq!(h.state(), Some(true));
    }

    #[test]
    fn fall_consecutive_failures_make_a_host_unreachable_and_rise_successes_bring_it_back() {
        let mut h = Hysteresis::new(2, 3);
        h.record(true);
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None, "a single success does not count");
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
    }

    #[test]
    fn state_is_unknown_until_decided() {
        let mut h = Hysteresis::new(3, 3);
        for ok in [true, false, true, false] {
            assert_eq!(h.record(ok), None);
        }
        assert_eq!(h.state(), None);
        h.record(false);
        assert_eq!(h.record(false), Some(false));
    }

    #[test]
    fn tracker_reports_after_settling_and_counts_undecided_hosts_as_down() {
        let mut t = ReachTracker::new(3, 3, 3);
        assert_eq!(t.round(&[true, true, false]), None);
        assert_eq!(t.round(&[true, false, false]), None);
        // Host 1 answered every other time: undecided, counted as down.
        assert_eq!(t.round(&[true, true, false]), Some(Reach { up: 1, total: 3 }));
        assert_eq!(t.states().collect::<Vec<_>>(), vec![Some(true), None, Some(false)]);
        // Losing every host takes `fall` rounds to show.
        assert_eq!(t.round(&[false, false, false]), Some(Reach { up: 1, total: 3 }));
        assert_eq!(t.round(&[false, false, false]), Some(Reach { up: 1, total: 3 }));
        assert_eq!(t.round(&[false, false, false]), Some(Reach { up: 0, total: 3 }));
    }
}
