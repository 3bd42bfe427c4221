//! The service health monitor's policy, for one group held here: when the
//! next `status` check is due, and what a run of failed checks leads to —
//! nothing yet, a restart in place, or moving the group to the peer — the
//! way Pacemaker's monitor operation with `migration-threshold` and
//! `failure-timeout` does. Pure: no hooks, no threads, no clock of its own
//! (the driver passes `now`); the driver runs the checks and carries out
//! the verdicts. Knows nothing of the arbiter: whether the peer could take
//! the group over is an input.

use std::collections::VecDeque;

use serde::Serialize;

use crate::arbiter::Millis;
use crate::config::MonitorConf;

/// What one check result leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy, as before.
    Healthy,
    /// Healthy again after `after` failed checks.
    Recovered { after: u32 },
    /// Failed, but fewer than `monitor_failures` times in a row.
    Failing { count: u32, of: u32 },
    /// Restart the group here (K hooks, then S hooks): restart `n` of the
    /// `of` allowed within the window.
    Restart { n: u32, of: u32 },
    /// The restarts are used up and the peer can take the group: move it.
    FailOver,
    /// The restarts are used up but the peer cannot take the group (dead,
    /// in standby, starting, or failed there too): restart here again
    /// rather than leave it running nowhere.
    RestartNoPeer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    Idle,
    Checking,
    Restarting,
    /// Released so the peer takes it: no more checks for this holding.
    Moving,
}

/// The monitor of one group for one holding (one epoch).
#[derive(Debug, Clone)]
pub struct Health {
    conf: MonitorConf,
    epoch: u64,
    next_due: Millis,
    /// What runs now; nothing is due meanwhile.
    busy: Busy,
    consecutive: u32,
    /// When each restart within the window was made.
    restarts: VecDeque<Millis>,
    last_check: Option<Millis>,
    last_failure: Option<(Millis, String)>,
}

/// What `status` shows of a group's monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HealthReport {
    /// `ok`, `failing`, `restarting`, `moving` (released for the peer), or
    /// `pending` before the first check.
    pub state: String,
    pub failures: u32,
    pub failures_allowed: u32,
    pub restarts: u32,
    pub restarts_allowed: u32,
    pub interval_ms: u64,
    pub last_check_ms_ago: Option<u64>,
    /// The last failure, if any: which hook, and how it ended.
    pub last_failure: Option<String>,
    pub last_failure_ms_ago: Option<u64>,
}

impl Health {
    /// Monitoring starts when the group is held: the first check is one
    /// interval after `now`, so a service has that long to come up.
    pub fn new(conf: MonitorConf, epoch: u64, now: Millis) -> Self {
        Health {
            conf,
            epoch,
            next_due: now + conf.interval,
            busy: Busy::Idle,
            consecutive: 0,
            restarts: VecDeque::new(),
            last_check: None,
            last_failure: None,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When the next check is due, or `None` while one (or a restart) runs.
    pub fn due(&self) -> Option<Millis> {
        (self.busy == Busy::Idle).then_some(self.next_due)
    }

    /// A check or a restart was handed to the worker.
    pub fn begin(&mut self) {
        self.busy = Busy::Checking;
    }

    /// A check finished: `Err` carries what failed. `peer_can_take` says
    /// whether moving the group would leave it running somewhere.
    pub fn checked(&mut self, now: Millis, result: Result<(), String>, peer_can_take: bool) -> Verdict {
        self.busy = Busy::Idle;
        self.last_check = Some(now);
        self.next_due = now + self.conf.interval;
        let failure = match result {
            Ok(()) => {
                let after = std::mem::take(&mut self.consecutive);
                return if after > 0 {
                    Verdict::Recovered { after }
                } else {
                    Verdict::Healthy
                };
            }
            Err(f) => f,
        };
        self.last_failure = Some((now, failure));
        self.consecutive += 1;
        if self.consecutive < self.conf.failures {
            return Verdict::Failing {
                count: self.consecutive,
                of: self.conf.failures,
            };
        }
        self.forget_old(now);
        let used = self.restarts.len() as u32;
        if used < self.conf.restarts {
            self.restart(now);
            return Verdict::Restart {
                n: used + 1,
                of: self.conf.restarts,
            };
        }
        if peer_can_take {
            self.busy = Busy::Moving;
            return Verdict::FailOver;
        }
        self.restart(now);
        Verdict::RestartNoPeer
    }

    fn restart(&mut self, now: Millis) {
        self.consecutive = 0;
        self.restarts.push_back(now);
        self.busy = Busy::Restarting;
    }

    fn forget_old(&mut self, now: Millis) {
        while self.restarts.front().is_some_and(|t| now.since(*t) >= self.conf.window) {
            self.restarts.pop_front();
        }
    }

    /// A restart succeeded: the next check is one interval away, as after
    /// a start.
    pub fn restarted(&mut self, now: Millis) {
        self.busy = Busy::Idle;
        self.next_due = now + self.conf.interval;
    }

    pub fn report(&self, now: Millis) -> HealthReport {
        let restarts = self
            .restarts
            .iter()
            .filter(|t| now.since(**t) < self.conf.window)
            .count() as u32;
        let state = if self.busy == Busy::Restarting {
            "restarting"
        } else if self.busy == Busy::Moving {
            "moving"
        } else if self.consecutive > 0 {
            "failing"
        } else if self.last_check.is_none() {
            "pending"
        } else {
            "ok"
        };
        HealthReport {
            state: state.to_string(),
            failures: self.consecutive,
            failures_allowed: self.conf.failures,
            restarts,
            restarts_allowed: self.conf.restarts,
            interval_ms: self.conf.interval.as_millis() as u64,
            last_check_ms_ago: self.last_check.map(|t| now.0.saturating_sub(t.0)),
            last_failure: self.last_failure.as_ref().map(|(_, f)| f.clone()),
            last_failure_ms_ago: self.last_failure.as_ref().map(|(t, _)| now.0.saturating_sub(t.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn conf(failures: u32, restarts: u32) -> MonitorConf {
        MonitorConf {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            failures,
            restarts,
            window: Duration::from_secs(3600),
        }
    }

    fn fail(h: &mut Health, at: u64, peer: bool) -> Verdict {
        assert!(h.due().is_some(), "a check must be due before it runs");
        h.begin();
        h.checked(
            Millis(at),
            Err("S20smbd exited 3 (program is not running)".into()),
            peer,
        )
    }

    #[test]
    fn the_first_check_waits_one_interval_and_checks_follow_each_other() {
        let mut h = Health::new(conf(3, 1), 4, Millis(1000));
        assert_eq!(h.due(), Some(Millis(11_000)));
        h.begin();
        assert_eq!(h.due(), None, "nothing is due while a check runs");
        assert_eq!(h.checked(Millis(11_500), Ok(()), true), Verdict::Healthy);
        assert_eq!(
            h.due(),
            Some(Millis(21_500)),
            "the interval runs from the end of a check"
        );
        assert_eq!(h.report(Millis(12_000)).state, "ok");
    }

    #[test]
    fn failures_below_the_threshold_do_nothing_and_a_success_resets_them() {
        let mut h = Health::new(conf(3, 1), 1, Millis(0));
        assert_eq!(fail(&mut h, 10, true), Verdict::Failing { count: 1, of: 3 });
        assert_eq!(fail(&mut h, 20, true), Verdict::Failing { count: 2, of: 3 });
        let r = h.report(Millis(25));
        assert_eq!((r.state.as_str(), r.failures), ("failing", 2));
        assert!(r.last_failure.unwrap().contains("S20smbd"));
        h.begin();
        assert_eq!(h.checked(Millis(30), Ok(()), true), Verdict::Recovered { after: 2 });
        assert_eq!(fail(&mut h, 40, true), Verdict::Failing { count: 1, of: 3 });
    }

    #[test]
    fn the_threshold_restarts_first_then_moves_the_group() {
        let mut h = Health::new(conf(2, 1), 1, Millis(0));
        fail(&mut h, 10, true);
        assert_eq!(fail(&mut h, 20, true), Verdict::Restart { n: 1, of: 1 });
        assert_eq!(h.due(), None, "nothing is checked while the restart runs");
        assert_eq!(h.report(Millis(21)).state, "restarting");
        h.restarted(Millis(30));
        assert_eq!(h.due(), Some(Millis(10_030)));
        fail(&mut h, 10_040, true);
        assert_eq!(fail(&mut h, 10_050, true), Verdict::FailOver);
        assert_eq!(h.due(), None, "a group being moved is not checked again");
        assert_eq!(h.report(Millis(10_060)).state, "moving");
    }

    #[test]
    fn without_a_peer_to_take_it_the_group_is_restarted_again() {
        let mut h = Health::new(conf(1, 0), 1, Millis(0));
        assert_eq!(fail(&mut h, 10, false), Verdict::RestartNoPeer);
        h.restarted(Millis(20));
        assert_eq!(fail(&mut h, 30, true), Verdict::FailOver);
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let mut h = Health::new(conf(1, 1), 1, Millis(0));
        assert_eq!(fail(&mut h, 10, true), Verdict::Restart { n: 1, of: 1 });
        h.restarted(Millis(20));
        assert_eq!(h.report(Millis(30)).restarts, 1);
        let later = 10 + 3_600_000;
        assert_eq!(h.report(Millis(later)).restarts, 0);
        assert_eq!(fail(&mut h, later, true), Verdict::Restart { n: 1, of: 1 });
    }
}
