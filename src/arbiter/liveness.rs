//! Is the peer alive, and on which links? Per-link silence warnings with
//! flap summarising, the dead verdict after `deadtime` of silence on every
//! link, flap damping (a peer that "comes back from the dead" without
//! having restarted stretches the next deadtime), and the key mismatch: a
//! peer whose datagrams keep arriving but fail authentication is alive and
//! misconfigured, not dead. Part of the pure arbiter:
//! times come from the caller.

use std::collections::VecDeque;

use super::{Arbiter, Event, LinkId, Millis, NodeState};

#[derive(Debug, Clone)]
pub(super) struct Link {
    pub name: String,
    pub last_heard: Option<Millis>,
    /// Warned as silent (or would have been, while flapping).
    pub silent: bool,
    /// When a datagram of the peer that failed authentication last came.
    pub key_mismatch_last: Option<Millis>,
    /// Recent silence onsets, for flap detection.
    onsets: VecDeque<Millis>,
    flapping: bool,
}

impl Link {
    pub fn new(name: &str) -> Self {
        Link {
            name: name.to_string(),
            last_heard: None,
            silent: false,
            key_mismatch_last: None,
            onsets: VecDeque::new(),
            flapping: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerStatus {
    /// Not heard since this node started.
    Unknown,
    Alive {
        incarnation: u64,
        since: Millis,
    },
    /// Declared dead at `since`; `incarnation` is the one that went silent
    /// (`None`: never heard, initdead passed).
    Dead {
        since: Millis,
        incarnation: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub status: PeerStatus,
    /// Its latest heartbeat content (kept after death: its last reach score
    /// matters then).
    pub state: Option<NodeState>,
    pub flap_level: u32,
    pub flap_changed: Millis,
    pub unknown_groups: Vec<String>,
    /// The last two datagrams of the peer that failed authentication
    /// (older first), on any link.
    pub key_mismatch: [Option<Millis>; 2],
    /// A key mismatch was reported and has not ended yet.
    pub key_mismatch_noted: bool,
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            status: PeerStatus::Unknown,
            state: None,
            flap_level: 0,
            flap_changed: Millis(0),
            unknown_groups: vec![],
            key_mismatch: [None, None],
            key_mismatch_noted: false,
        }
    }
}

impl Peer {
    pub fn is_alive(&self) -> bool {
        matches!(self.status, PeerStatus::Alive { .. })
    }

    /// The peer's current state when it is alive.
    pub fn alive_state(&self) -> Option<&NodeState> {
        if self.is_alive() { self.state.as_ref() } else { None }
    }
}

impl Arbiter {
    pub(super) fn on_bad_key(&mut self, now: Millis, link: LinkId) {
        if let Some(l) = self.links.get_mut(usize::from(link.0)) {
            l.key_mismatch_last = Some(now);
        }
        self.peer.key_mismatch = [self.peer.key_mismatch[1], Some(now)];
        if !self.peer.key_mismatch_noted && self.key_mismatch(now) {
            self.peer.key_mismatch_noted = true;
            let link = self.cfg.links.get(usize::from(link.0)).cloned().unwrap_or_default();
            self.notify(Event::PeerKeyMismatch { link });
        }
    }

    /// The peer keeps sending datagrams that fail authentication: two
    /// within `deadtime`, the latter within `deadtime` of `now`. A peer in
    /// that state is alive as far as anyone can tell, so its death cannot
    /// be concluded from the silence of its authentic heartbeats.
    pub(super) fn key_mismatch(&self, now: Millis) -> bool {
        let d = self.cfg.timers.deadtime;
        matches!(self.peer.key_mismatch, [Some(a), Some(b)] if b.since(a) < d && now.since(b) < d)
    }

    /// No takeover on the strength of the peer's silence: it is not silent,
    /// it signs with another key.
    pub(super) fn key_mismatch_blocks(&self, now: Millis) -> bool {
        self.key_mismatch(now) && !self.peer.is_alive()
    }

    pub(super) fn on_heartbeat(&mut self, now: Millis, link: LinkId, incarnation: u64, mut state: NodeState) {
        let prev_heard = self.last_heard_any();
        if prev_heard.is_some_and(|t| now.since(t) >= self.cfg.timers.warntime) {
            // Contact had a hole on every link: damping eases only after
            // `flap_decay` without any.
            self.peer.flap_changed = now;
        }
        let Some(l) = self.links.get_mut(usize::from(link.0)) else {
            return;
        };
        l.last_heard = Some(now);
        if l.silent {
            l.silent = false;
            if !l.flapping {
                let link = l.name.clone();
                self.notify(Event::LinkUp { link });
            }
        }
        if state.observer && !self.cfg.observer {
            // A diagnostic run holds nothing real: never yield to it.
            state.groups.clear();
            state.standby = true;
        }
        match self.peer.status {
            PeerStatus::Unknown => {
                self.peer.status = PeerStatus::Alive {
                    incarnation,
                    since: now,
                };
                self.notify(Event::PeerAlive { incarnation });
            }
            PeerStatus::Alive { incarnation: i, .. } if i == incarnation => {}
            PeerStatus::Alive { .. } => {
                self.peer.status = PeerStatus::Alive {
                    incarnation,
                    since: now,
                };
                self.peer_changed();
                self.notify(Event::PeerRestarted { incarnation });
            }
            PeerStatus::Dead { incarnation: i, .. } => {
                self.peer.status = PeerStatus::Alive {
                    incarnation,
                    since: now,
                };
                if i == Some(incarnation) {
                    self.peer.flap_level = (self.peer.flap_level + 1).min(self.cfg.max_flap_level);
                    self.peer.flap_changed = now;
                    self.notify(Event::PeerReturned {
                        silent_ms: prev_heard.map_or(0, |t| now.since(t).as_millis() as u64),
                        flap_level: self.peer.flap_level,
                        deadtime_ms: self.cfg.deadtime(self.peer.flap_level).as_millis() as u64,
                    });
                } else if i.is_some() {
                    self.notify(Event::PeerRestarted { incarnation });
                } else {
                    self.notify(Event::PeerAlive { incarnation });
                }
            }
        }
        for c in &state.groups {
            match self.groups.iter_mut().find(|g| g.conf.name == c.group) {
                Some(g) => g.epoch = g.epoch.max(c.epoch),
                None if !self.peer.unknown_groups.contains(&c.group) => {
                    self.peer.unknown_groups.push(c.group.clone());
                    let group = c.group.clone();
                    self.notify(Event::UnknownGroup { group });
                }
                None => {}
            }
        }
        self.peer.state = Some(state);
    }

    /// The peer restarted or died: what we knew about its situation is void.
    fn peer_changed(&mut self) {
        for g in &mut self.groups {
            g.failed_here = false;
            g.caught_up = false;
        }
    }

    pub(super) fn last_heard_any(&self) -> Option<Millis> {
        self.links.iter().filter_map(|l| l.last_heard).max()
    }

    /// Warnings per link, the dead verdict, and the easing of flap damping.
    pub(super) fn update_liveness(&mut self, now: Millis) {
        if self.peer.key_mismatch_noted && !self.key_mismatch(now) {
            self.peer.key_mismatch_noted = false;
            self.notify(Event::PeerKeyMismatchEnded);
        }
        let warntime = self.cfg.timers.warntime;
        let contact_since = match self.peer.status {
            PeerStatus::Alive { since, .. } => Some(since),
            _ => None,
        };
        let window = self.cfg.link_flap_window;
        let onsets_to_flap = self.cfg.link_flap_onsets;
        let planned = self
            .peer
            .state
            .as_ref()
            .is_some_and(|s| s.standby && s.groups.is_empty());
        let mut events = Vec::new();
        for l in &mut self.links {
            // A link never heard is measured from when the peer came alive.
            let reference = l.last_heard.or(contact_since);
            if !l.silent && reference.is_some_and(|r| now.since(r) >= warntime) {
                l.silent = true;
                l.onsets.push_back(now);
                while l.onsets.front().is_some_and(|t| now.since(*t) > window) {
                    l.onsets.pop_front();
                }
                // While flapping, individual silences are not reported.
                if !l.flapping {
                    if l.onsets.len() >= onsets_to_flap {
                        l.flapping = true;
                        events.push(Event::LinkFlapping { link: l.name.clone() });
                    } else {
                        events.push(Event::LinkSilent {
                            link: l.name.clone(),
                            silent_ms: now.since(reference.unwrap_or(now)).as_millis() as u64,
                            planned,
                        });
                    }
                }
            }
            if l.flapping && l.onsets.back().is_none_or(|t| now.since(*t) >= window) {
                l.flapping = false;
                l.onsets.clear();
                events.push(Event::LinkStable {
                    link: l.name.clone(),
                    up: !l.silent,
                });
            }
        }
        for e in events {
            self.notify(e);
        }

        if let PeerStatus::Alive { incarnation, since } = self.peer.status {
            let deadtime = self.cfg.deadtime(self.peer.flap_level);
            let last = self.last_heard_any().unwrap_or(since);
            if now.since(last) >= deadtime && now >= self.settle_until {
                self.peer.status = PeerStatus::Dead {
                    since: now,
                    incarnation: Some(incarnation),
                };
                self.peer_changed();
                self.notify(Event::PeerDead {
                    silent_ms: now.since(last).as_millis() as u64,
                    deadtime_ms: deadtime.as_millis() as u64,
                    planned,
                });
            } else if self.peer.flap_level > 0 && now.since(self.peer.flap_changed.max(since)) >= self.cfg.flap_decay {
                self.peer.flap_level -= 1;
                self.peer.flap_changed = now;
                self.notify(Event::FlapDampingEased {
                    flap_level: self.peer.flap_level,
                    deadtime_ms: self.cfg.deadtime(self.peer.flap_level).as_millis() as u64,
                });
            }
        }
    }

    /// Deadlines of this part, for `poll_timeout`.
    pub(super) fn liveness_deadlines(&self, out: &mut Vec<Millis>) {
        if let [_, Some(b)] = self.peer.key_mismatch
            && self.peer.key_mismatch_noted
        {
            out.push(b + self.cfg.timers.deadtime);
        }
        let warntime = self.cfg.timers.warntime;
        let contact_since = match self.peer.status {
            PeerStatus::Alive { since, .. } => Some(since),
            _ => None,
        };
        for l in &self.links {
            if !l.silent
                && let Some(r) = l.last_heard.or(contact_since)
            {
                out.push(r + warntime);
            }
            if l.flapping
                && let Some(t) = l.onsets.back()
            {
                out.push(*t + self.cfg.link_flap_window);
            }
        }
        if let PeerStatus::Alive { since, .. } = self.peer.status {
            let last = self.last_heard_any().unwrap_or(since);
            out.push(last + self.cfg.deadtime(self.peer.flap_level));
            out.push(last + warntime);
            if self.peer.flap_level > 0 {
                out.push(self.peer.flap_changed.max(since) + self.cfg.flap_decay);
            }
        }
    }
}
