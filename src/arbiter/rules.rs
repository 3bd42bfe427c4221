//! The decision rules of `docs/FAILOVER.md`, evaluated after every input:
//! the node's mode (starting, active, standby: isolation, lower reach
//! score), then each group: release what must go first, then acquire what
//! this node is entitled to. Entitlement is exclusive for any one
//! consistent view of both nodes, and a node never acquires a group the
//! peer still claims in any form (acquiring, held, releasing): with contact,
//! that makes a double holding impossible; without contact the timers bound
//! it (`Timers::release_budget`). Pure: no I/O, no clock.
//!
//! The built-in arbiter's rules are two-node: they look at the first (and
//! only) peer. Under Pacemaker (`external`) there may be several peers, and
//! the few rules that apply look at every alive one: a newer claim on a
//! group held here makes this node step down, and a promote waits until no
//! alive peer claims the group.

use super::liveness::PeerStatus;
use super::{
    AcquireReason, Action, Arbiter, Claim, Command, CommandError, Event, Maintenance, Millis, Mode, Phase, Reach,
    ReleaseReason, Side, StandbyReason,
};

/// A reach score that says this node is cut off from the LAN.
fn isolated(r: Option<Reach>) -> bool {
    r.is_some_and(|r| r.total > 0 && r.up == 0)
}

impl Arbiter {
    pub(super) fn step(&mut self, now: Millis) {
        self.update_liveness(now);
        self.update_mode(now);
        if !self.maintenance.on {
            // Maintenance freezes every decision about groups: nothing is
            // started, stopped, handed back or retried; liveness and the
            // mode are still followed, so status stays true and decisions
            // resume from the real situation when it ends.
            self.update_groups(now);
        }
        self.refresh_advert();
    }

    /// Takes peer `k`'s maintenance register if it supersedes ours.
    pub(super) fn merge_maintenance(&mut self, now: Millis, k: usize, theirs: Maintenance) {
        if theirs.newer_than(&self.maintenance) {
            let by = self.contacts[k].name.clone();
            self.set_maintenance(now, theirs, by);
        }
    }

    fn set_maintenance(&mut self, now: Millis, m: Maintenance, by: String) {
        let was = self.maintenance.on;
        self.maintenance = m;
        self.actions.push_back(Action::WriteMaintenance {
            on: m.on,
            generation: m.generation,
        });
        if m.on == was {
            return;
        }
        let generation = m.generation;
        if m.on {
            self.worse_since = None;
            self.notify(Event::MaintenanceOn { generation, by });
        } else {
            // As after an operator command: fresh heartbeats first, then
            // decisions from what is true now.
            self.settle_until = self.settle_until.max(now + self.cfg.settle);
            self.notify(Event::MaintenanceOff { generation, by });
        }
    }

    fn enter_standby(&mut self, reason: StandbyReason) {
        self.mode = Mode::Standby { reason };
        self.worse_since = None;
        for g in &mut self.groups {
            g.requested = false;
        }
        self.actions.push_back(Action::WriteStandbyLock { reason });
        self.notify(Event::StandbyEntered { reason });
    }

    fn cleanup_pending(&self) -> bool {
        self.groups.iter().any(|g| {
            matches!(
                g.phase,
                Phase::Releasing {
                    reason: ReleaseReason::Cleanup,
                    ..
                } | Phase::Stuck {
                    reason: ReleaseReason::Cleanup,
                    ..
                }
            )
        })
    }

    fn update_mode(&mut self, now: Millis) {
        match self.mode {
            Mode::Starting { since } => {
                if self.cleanup_pending() {
                    return;
                }
                // With several peers (Pacemaker) every one is heard first,
                // or initdead passes: a peer not heard yet may hold a group.
                if self.contacts.iter().all(|c| c.peer.is_alive()) {
                    self.mode = Mode::Active { since: now };
                    self.notify(Event::Started { contact: true });
                } else if now >= since + self.cfg.timers.initdead && !self.key_mismatch_blocks(now) {
                    // Under Pacemaker, quorum and fencing say who may run
                    // what: the reachlist does not hold the node back.
                    let reach = if self.cfg.external {
                        Some(Reach { up: 1, total: 1 })
                    } else {
                        self.reach
                    };
                    match reach {
                        Some(r) if r.up > 0 || r.total == 0 => {
                            self.mode = Mode::Active { since: now };
                            for c in &mut self.contacts {
                                if c.peer.status == PeerStatus::Unknown {
                                    c.peer.status = PeerStatus::Dead {
                                        since: now,
                                        incarnation: None,
                                    };
                                }
                            }
                            let contact = self.contacts.iter().any(|c| c.peer.is_alive());
                            self.notify(Event::Started { contact });
                        }
                        Some(_) if !self.isolated_noted => {
                            self.isolated_noted = true;
                            self.notify(Event::IsolatedAtStart);
                        }
                        _ => {}
                    }
                }
            }
            Mode::Active { .. } if !self.maintenance.on && !self.cfg.external => self.review_active(now),
            Mode::Active { .. } | Mode::Standby { .. } => {}
        }
    }

    /// Isolation and reach comparison while active (built-in: one peer).
    fn review_active(&mut self, now: Millis) {
        let me = self.reach;
        if self.contacts[0].peer.is_alive() {
            // Early fence: no heartbeat for warntime on any link and no
            // reachlist host either: this node is the one cut off. Stopping
            // now, before the peer's deadtime, is what gives the stop hooks
            // their budget.
            let silent = self
                .last_heard_of(0)
                .is_some_and(|t| now.since(t) >= self.cfg.timers.warntime);
            if silent && isolated(me) && now >= self.settle_until {
                self.enter_standby(StandbyReason::Isolated);
                return;
            }
            let peer = self.contacts[0].peer.alive_state();
            let worse = match (me, peer) {
                (Some(m), Some(p)) if !p.standby => p.reach.is_some_and(|pr| m.up < pr.up),
                _ => false,
            };
            if worse {
                let since = *self.worse_since.get_or_insert(now);
                if now.since(since) >= self.cfg.score_hold {
                    self.enter_standby(StandbyReason::ReachWorse);
                }
            } else {
                self.worse_since = None;
            }
        } else {
            self.worse_since = None;
            // Only around the verdict: a peer that is merely cut off acts
            // within its own deadtime (+ delay) of ours. Long after, this node
            // is the only one left, and a LAN outage is no reason to drop
            // services the LAN will want back.
            if !self.in_partition_window(now) {
                return;
            }
            let peer_last = self.contacts[0].peer.state.as_ref().and_then(|s| s.reach);
            if isolated(me) {
                self.enter_standby(StandbyReason::Isolated);
            } else if let (Some(m), Some(p)) = (me, peer_last)
                && m.up < p.up
            {
                // The peer, if it lives, saw us worse and takes over at once.
                self.enter_standby(StandbyReason::ReachWorse);
            }
        }
    }

    /// Shortly after the peer was declared dead (or found absent), when a
    /// live but cut-off peer could still be taking over.
    fn in_partition_window(&self, now: Millis) -> bool {
        match self.contacts[0].peer.status {
            PeerStatus::Dead { since, .. } => {
                now.since(since) <= self.cfg.timers.deadtime + self.cfg.timers.takeover_delay
            }
            _ => false,
        }
    }

    fn update_groups(&mut self, now: Millis) {
        for i in 0..self.groups.len() {
            match self.groups[i].phase {
                Phase::Held { epoch } => {
                    if let Some(reason) = self.release_reason(i, epoch, now) {
                        self.release(i, epoch, reason);
                    }
                }
                Phase::Stuck {
                    epoch,
                    reason,
                    retry_at,
                } if now >= retry_at => self.release(i, epoch, reason),
                _ => {}
            }
            self.end_conflict(i);
        }
        if !matches!(self.mode, Mode::Active { .. }) || now < self.settle_until {
            return;
        }
        let mismatch = self.key_mismatch_blocks(now);
        for i in 0..self.groups.len() {
            if self.groups[i].phase == Phase::Released
                && let Some(reason) = self.acquire_reason(i, now)
                && !(mismatch && reason != AcquireReason::Operator)
            {
                self.acquire(i, reason);
            }
        }
    }

    /// Whether peer `k`'s claim on a group we hold wins: newer epoch, or
    /// the same epoch and that peer owns the group.
    fn peer_wins(&self, i: usize, k: usize, ours: u64, theirs: u64) -> bool {
        let conf = &self.groups[i].conf;
        let owns = conf.owner == Side::Peer && conf.owner_node.as_ref().is_none_or(|o| *o == self.contacts[k].name);
        theirs > ours || (theirs == ours && owns)
    }

    fn release_reason(&mut self, i: usize, epoch: u64, now: Millis) -> Option<ReleaseReason> {
        if !matches!(self.mode, Mode::Active { .. }) {
            return Some(ReleaseReason::Standby);
        }
        if self.groups[i].demote {
            return Some(ReleaseReason::Demoted);
        }
        let name = self.groups[i].conf.name.clone();
        // Every alive peer's claim: any newer one wins; the first holding
        // one is the conflict (one peer with the built-in arbiter).
        let mut holding = None;
        for k in 0..self.contacts.len() {
            let Some(peer) = self.contacts[k].peer.alive_state() else {
                continue;
            };
            let Some(c) = peer.claim(&name).filter(|c| c.claim.holds()).cloned() else {
                continue;
            };
            // A releasing peer never wins, but it may still answer for the
            // group's addresses: a conflict to re-announce after.
            if c.claim != Claim::Releasing && self.peer_wins(i, k, epoch, c.epoch) {
                self.notify(Event::SteppingDown {
                    group: name,
                    epoch,
                    peer_epoch: c.epoch,
                });
                return Some(ReleaseReason::StaleEpoch);
            }
            holding.get_or_insert((c, peer.starting));
        }
        if let Some((c, peer_starting)) = holding {
            if !self.groups[i].conflict && c.claim == Claim::Releasing && peer_starting {
                // A peer back from a reboot or a crash stopping what it may
                // have left running (its start-up clean-up): routine, not a
                // conflict. It may still have answered for the addresses
                // until now, so they are re-announced once it has let go.
                self.groups[i].conflict = true;
            } else if !self.groups[i].conflict {
                self.groups[i].conflict = true;
                self.actions.push_back(Action::Reannounce {
                    group: name.clone(),
                    epoch,
                });
                self.notify(Event::Conflict {
                    group: name,
                    epoch,
                    peer_epoch: c.epoch,
                });
            }
            return None;
        }
        let requested = self.contacts.iter().any(|c| {
            c.peer
                .alive_state()
                .is_some_and(|p| !p.standby && p.claim(&name).is_some_and(|c| c.claim == Claim::Requested))
        });
        if requested {
            return Some(ReleaseReason::PeerRequest);
        }
        // Failback is the built-in arbiter's: one peer.
        let g = &self.groups[i];
        let first = &self.contacts[0].peer;
        let PeerStatus::Alive { since, .. } = first.status else {
            return None;
        };
        let peer = first.alive_state()?;
        let claim = peer.claim(&name);
        let peer_standby = peer.standby;
        let peer_starting = peer.starting;
        let peer_reach = peer.reach;
        let failback = !self.cfg.external
            && self.cfg.auto_failback
            && !g.manual
            && g.conf.owner == Side::Peer
            && now.since(since) >= self.cfg.failback_hold
            && !peer_standby
            && !peer_starting
            && claim.as_ref().is_none_or(|c| c.claim != Claim::Failed)
            && matches!((self.reach, peer_reach), (Some(m), Some(p)) if p.up >= m.up)
            && (!self.cfg.failback_needs_resync || g.caught_up);
        failback.then_some(ReleaseReason::Failback)
    }

    /// A conflict we won ends when the peer no longer claims the group:
    /// re-announce so clients that learnt the stale holder's address move.
    fn end_conflict(&mut self, i: usize) {
        let g = &self.groups[i];
        if !g.conflict {
            return;
        }
        let still = self.contacts.iter().any(|c| {
            c.peer
                .alive_state()
                .and_then(|p| p.claim(&g.conf.name))
                .is_some_and(|c| c.claim.holds())
        });
        if still {
            return;
        }
        let g = &mut self.groups[i];
        g.conflict = false;
        if let Phase::Held { epoch } = g.phase {
            let group = g.conf.name.clone();
            self.actions.push_back(Action::Reannounce { group, epoch });
        }
    }

    fn acquire_reason(&self, i: usize, now: Millis) -> Option<AcquireReason> {
        let g = &self.groups[i];
        if g.failed_here && !g.requested {
            return None;
        }
        if self.cfg.external {
            return self.acquire_external(i);
        }
        let first = &self.contacts[0].peer;
        match first.status {
            PeerStatus::Alive { .. } => {
                let peer = first.state.as_ref()?;
                let claim = peer.claim(&g.conf.name);
                if claim.is_some_and(|c| c.claim.holds()) {
                    return None;
                }
                let peer_requests = claim.is_some_and(|c| c.claim == Claim::Requested) && !peer.standby;
                if g.requested && !(peer_requests && g.conf.owner == Side::Peer) {
                    return Some(AcquireReason::Operator);
                }
                if peer_requests || self.cfg.external {
                    return None;
                }
                match g.conf.owner {
                    Side::Local => Some(AcquireReason::Owner),
                    Side::Peer if peer.standby => Some(AcquireReason::PeerStandby),
                    Side::Peer if claim.is_some_and(|c| c.claim == Claim::Failed) => Some(AcquireReason::PeerFailed),
                    Side::Peer => None,
                }
            }
            PeerStatus::Dead { since, incarnation } => {
                if g.requested {
                    return Some(AcquireReason::Operator);
                }
                if self.cfg.external {
                    // Pacemaker decides (after fencing the peer).
                    return None;
                }
                let me = self.reach?;
                if isolated(Some(me)) {
                    // Nobody could use it; and the LAN may be the peer's way out.
                    return None;
                }
                let peer_last = first.state.as_ref().and_then(|s| s.reach);
                let better = peer_last.is_some_and(|p| me.up > p.up);
                let delay = if better || self.cfg.preferred == Some(Side::Local) {
                    std::time::Duration::ZERO
                } else {
                    self.cfg.timers.takeover_delay
                };
                if now < since + delay {
                    return None;
                }
                Some(if incarnation.is_none() {
                    AcquireReason::PeerAbsent
                } else {
                    AcquireReason::PeerDead
                })
            }
            PeerStatus::Unknown => None,
        }
    }

    /// Under Pacemaker a group starts here only when asked (`promote`),
    /// and only once no alive peer claims it: one that holds it is let go
    /// first (its Pacemaker demotes it, or it steps down before the newer
    /// epoch this node takes), whichever peer it is. Before any peer was
    /// heard or declared absent, nothing starts.
    fn acquire_external(&self, i: usize) -> Option<AcquireReason> {
        let g = &self.groups[i];
        if !g.requested {
            return None;
        }
        if self.contacts.iter().all(|c| c.peer.status == PeerStatus::Unknown) {
            return None;
        }
        for (k, c) in self.contacts.iter().enumerate() {
            let Some(peer) = c.peer.alive_state() else {
                continue;
            };
            let claim = peer.claim(&g.conf.name);
            if claim.is_some_and(|c| c.claim.holds()) {
                return None;
            }
            // Both asked for it: its owner goes first.
            let requests = claim.is_some_and(|c| c.claim == Claim::Requested) && !peer.standby;
            let owns =
                g.conf.owner == Side::Peer && g.conf.owner_node.as_ref().is_none_or(|o| *o == self.contacts[k].name);
            if requests && owns {
                return None;
            }
        }
        Some(AcquireReason::Operator)
    }

    fn acquire(&mut self, i: usize, reason: AcquireReason) {
        let g = &mut self.groups[i];
        g.epoch += 1;
        g.phase = Phase::Acquiring { epoch: g.epoch };
        g.manual = reason == AcquireReason::Operator;
        self.actions.push_back(Action::Acquire {
            group: g.conf.name.clone(),
            epoch: g.epoch,
            reason,
        });
    }

    fn release(&mut self, i: usize, epoch: u64, reason: ReleaseReason) {
        let g = &mut self.groups[i];
        g.demote = false;
        g.phase = Phase::Releasing { epoch, reason };
        self.actions.push_back(Action::Release {
            group: g.conf.name.clone(),
            epoch,
            reason,
        });
    }

    pub(super) fn on_acquired(&mut self, group: &str, ok: bool) {
        let Some(g) = self.groups.iter_mut().find(|g| g.conf.name == group) else {
            return;
        };
        let Phase::Acquiring { epoch } = g.phase else {
            return;
        };
        g.requested = false;
        let group = g.conf.name.clone();
        if ok {
            g.phase = Phase::Held { epoch };
            self.notify(Event::Acquired { group, epoch });
        } else {
            g.phase = Phase::Released;
            g.failed_here = true;
            g.manual = false;
            self.notify(Event::AcquireFailed { group, epoch });
        }
    }

    pub(super) fn on_released(&mut self, now: Millis, group: &str, ok: bool) {
        let retry_at = now + self.cfg.release_retry;
        let Some(g) = self.groups.iter_mut().find(|g| g.conf.name == group) else {
            return;
        };
        let Phase::Releasing { epoch, reason } = g.phase else {
            return;
        };
        let group = g.conf.name.clone();
        if ok {
            g.phase = Phase::Released;
            g.manual = false;
            g.conflict = false;
            if reason == ReleaseReason::Unhealthy {
                g.failed_here = true;
            }
            self.notify(Event::Released { group, epoch, reason });
        } else {
            // Still claimed (the advert says Releasing), so the peer keeps
            // off it until a retry succeeds.
            g.phase = Phase::Stuck {
                epoch,
                reason,
                retry_at,
            };
            self.notify(Event::ReleaseFailed { group, epoch });
        }
    }

    pub(super) fn on_unhealthy(&mut self, group: &str) {
        let Some(i) = self.groups.iter().position(|g| g.conf.name == group) else {
            return;
        };
        if self.maintenance.on {
            return;
        }
        let Phase::Held { epoch } = self.groups[i].phase else {
            return;
        };
        self.notify(Event::Unhealthy {
            group: group.to_string(),
            epoch,
        });
        self.release(i, epoch, ReleaseReason::Unhealthy);
    }

    pub(super) fn on_command(&mut self, now: Millis, cmd: Command) -> Result<(), CommandError> {
        if self.maintenance.on
            && matches!(
                cmd,
                Command::Standby | Command::Takeover(_) | Command::Promote(_) | Command::Demote(_)
            )
        {
            return Err(CommandError::InMaintenance);
        }
        match (&cmd, self.cfg.external) {
            (Command::Standby | Command::Takeover(_), true) => return Err(CommandError::External),
            (Command::Promote(_) | Command::Demote(_), false) => return Err(CommandError::NotExternal),
            _ => {}
        }
        match cmd {
            Command::Promote(group) => match self.groups.iter_mut().find(|g| g.conf.name == group) {
                Some(g) if matches!(g.phase, Phase::Held { .. } | Phase::Acquiring { .. }) => {
                    g.demote = false;
                    Ok(())
                }
                Some(g) if g.phase.holds() => Err(CommandError::StillReleasing(group)),
                _ => self.request(now, group),
            },
            Command::Demote(group) => {
                let Some(i) = self.groups.iter().position(|g| g.conf.name == group) else {
                    return Err(CommandError::UnknownGroup(group));
                };
                let g = &mut self.groups[i];
                g.requested = false;
                match g.phase {
                    Phase::Held { epoch } => self.release(i, epoch, ReleaseReason::Demoted),
                    Phase::Acquiring { .. } => g.demote = true,
                    _ => {}
                }
                Ok(())
            }
            Command::Maintenance(on) => {
                if self.maintenance.on != on {
                    // Past both registers (ours is never behind the peer's
                    // after a merge), so the peer adopts it.
                    let m = Maintenance {
                        on,
                        generation: self.maintenance.generation + 1,
                    };
                    let by = self.cfg.local.clone();
                    self.set_maintenance(now, m, by);
                }
                Ok(())
            }
            Command::Standby | Command::Shutdown => {
                if !matches!(self.mode, Mode::Standby { .. }) {
                    self.enter_standby(StandbyReason::Operator);
                }
                Ok(())
            }
            Command::ClearStandby => {
                if !matches!(self.mode, Mode::Standby { .. }) {
                    return Err(CommandError::NotInStandby);
                }
                self.actions.push_back(Action::ClearStandbyLock);
                self.notify(Event::StandbyCleared);
                // Through Starting: turns active at once with contact; without,
                // after initdead if no peer was ever heard, else at once.
                let since = if self.contacts.iter().all(|c| c.peer.status == PeerStatus::Unknown) {
                    now
                } else {
                    Millis(now.0.saturating_sub(self.cfg.timers.initdead.as_millis() as u64))
                };
                self.mode = Mode::Starting { since };
                self.settle_until = self.settle_until.max(now + self.cfg.settle);
                Ok(())
            }
            Command::Takeover(group) => self.request(now, group),
        }
    }

    /// `takeover` (and `promote`): ask for the group here; the peer
    /// releases it if it holds it, then this node starts it.
    fn request(&mut self, now: Millis, group: String) -> Result<(), CommandError> {
        let Some(i) = self.groups.iter().position(|g| g.conf.name == group) else {
            return Err(CommandError::UnknownGroup(group));
        };
        match self.mode {
            Mode::Standby { .. } => return Err(CommandError::InStandby),
            Mode::Starting { .. } => return Err(CommandError::Starting),
            Mode::Active { .. } => {}
        }
        let g = &mut self.groups[i];
        if g.phase.holds() {
            return Err(CommandError::AlreadyHeld(group));
        }
        g.requested = true;
        g.failed_here = false;
        self.settle_until = self.settle_until.max(now + self.cfg.settle);
        Ok(())
    }

    pub(super) fn next_deadline(&self) -> Millis {
        let mut out = vec![self.last_step + self.cfg.timers.keepalive, self.settle_until];
        self.liveness_deadlines(&mut out);
        if let Mode::Starting { since } = self.mode {
            out.push(since + self.cfg.timers.initdead);
        }
        if let Some(s) = self.worse_since {
            out.push(s + self.cfg.score_hold);
        }
        for c in &self.contacts {
            match c.peer.status {
                PeerStatus::Dead { since, .. } => out.push(since + self.cfg.timers.takeover_delay),
                PeerStatus::Alive { since, .. } if self.cfg.auto_failback => out.push(since + self.cfg.failback_hold),
                _ => {}
            }
        }
        for g in &self.groups {
            if let Phase::Stuck { retry_at, .. } = g.phase {
                out.push(retry_at);
            }
        }
        out.into_iter()
            .filter(|t| *t > self.last_step)
            .min()
            .unwrap_or(self.last_step + self.cfg.timers.keepalive)
    }
}
