//! Is each peer alive, and on which links? (One [`Contact`] per other
//! node: exactly one with the built-in arbiter, one per node under
//! Pacemaker.) Per-link silence warnings with
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

/// One other node: its links and its liveness, each tracked on its own.
#[derive(Debug, Clone)]
pub(super) struct Contact {
    pub name: String,
    pub links: Vec<Link>,
    pub peer: Peer,
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
    /// The peer's name for events when there is more than one (`None` in
    /// a two-node cluster: its events stay as they always were).
    pub(super) fn peer_label(&self, k: usize) -> Option<String> {
        (self.contacts.len() > 1).then(|| self.contacts[k].name.clone())
    }

    pub(super) fn on_bad_key(&mut self, now: Millis, k: usize, link: LinkId) {
        let Some(c) = self.contacts.get_mut(k) else {
            return;
        };
        if let Some(l) = c.links.get_mut(usize::from(link.0)) {
            l.key_mismatch_last = Some(now);
        }
        c.peer.key_mismatch = [c.peer.key_mismatch[1], Some(now)];
        if !c.peer.key_mismatch_noted && self.key_mismatch_of(k, now) {
            self.contacts[k].peer.key_mismatch_noted = true;
            let link = self.cfg.links.get(usize::from(link.0)).cloned().unwrap_or_default();
            let peer = self.peer_label(k);
            self.notify(Event::PeerKeyMismatch { link, peer });
        }
    }

    /// Peer `k` keeps sending datagrams that fail authentication: two
    /// within `deadtime`, the latter within `deadtime` of `now`. A peer in
    /// that state is alive as far as anyone can tell, so its death cannot
    /// be concluded from the silence of its authentic heartbeats.
    pub(super) fn key_mismatch_of(&self, k: usize, now: Millis) -> bool {
        let d = self.cfg.timers.deadtime;
        matches!(self.contacts[k].peer.key_mismatch, [Some(a), Some(b)] if b.since(a) < d && now.since(b) < d)
    }

    /// No takeover on the strength of a peer's silence: it is not silent,
    /// it signs with another key.
    pub(super) fn key_mismatch_blocks(&self, now: Millis) -> bool {
        (0..self.contacts.len()).any(|k| self.key_mismatch_of(k, now) && !self.contacts[k].peer.is_alive())
    }

    pub(super) fn on_heartbeat(&mut self, now: Millis, k: usize, link: LinkId, incarnation: u64, mut state: NodeState) {
        let prev_heard = self.last_heard_of(k);
        let label = self.peer_label(k);
        let warntime = self.cfg.timers.warntime;
        let observer = self.cfg.observer;
        let Some(c) = self.contacts.get_mut(k) else {
            return;
        };
        if prev_heard.is_some_and(|t| now.since(t) >= warntime) {
            // Contact had a hole on every link: damping eases only after
            // `flap_decay` without any.
            c.peer.flap_changed = now;
        }
        let Some(l) = c.links.get_mut(usize::from(link.0)) else {
            return;
        };
        l.last_heard = Some(now);
        let mut events = Vec::new();
        if l.silent {
            l.silent = false;
            if !l.flapping {
                events.push(Event::LinkUp {
                    link: l.name.clone(),
                    peer: label.clone(),
                });
            }
        }
        if state.observer && !observer {
            // A diagnostic run holds nothing real: never yield to it.
            state.groups.clear();
            state.standby = true;
        }
        let mut changed = false;
        let p = &mut c.peer;
        match p.status {
            PeerStatus::Unknown => {
                p.status = PeerStatus::Alive {
                    incarnation,
                    since: now,
                };
                events.push(Event::PeerAlive {
                    incarnation,
                    peer: label.clone(),
                });
            }
            PeerStatus::Alive { incarnation: i, .. } if i == incarnation => {}
            PeerStatus::Alive { .. } => {
                p.status = PeerStatus::Alive {
                    incarnation,
                    since: now,
                };
                changed = true;
                events.push(Event::PeerRestarted {
                    incarnation,
                    peer: label.clone(),
                });
            }
            PeerStatus::Dead { incarnation: i, .. } => {
                p.status = PeerStatus::Alive {
                    incarnation,
                    since: now,
                };
                if i == Some(incarnation) {
                    p.flap_level = (p.flap_level + 1).min(self.cfg.max_flap_level);
                    p.flap_changed = now;
                    events.push(Event::PeerReturned {
                        silent_ms: prev_heard.map_or(0, |t| now.since(t).as_millis() as u64),
                        flap_level: p.flap_level,
                        deadtime_ms: self.cfg.deadtime(p.flap_level).as_millis() as u64,
                        peer: label.clone(),
                    });
                } else if i.is_some() {
                    events.push(Event::PeerRestarted {
                        incarnation,
                        peer: label.clone(),
                    });
                } else {
                    events.push(Event::PeerAlive {
                        incarnation,
                        peer: label.clone(),
                    });
                }
            }
        }
        if changed {
            self.peer_changed();
        }
        for e in events {
            self.notify(e);
        }
        let mut unknown = Vec::new();
        for cl in &state.groups {
            match self.groups.iter_mut().find(|g| g.conf.name == cl.group) {
                Some(g) => g.epoch = g.epoch.max(cl.epoch),
                None if !self.contacts[k].peer.unknown_groups.contains(&cl.group) => {
                    self.contacts[k].peer.unknown_groups.push(cl.group.clone());
                    unknown.push(cl.group.clone());
                }
                None => {}
            }
        }
        for group in unknown {
            self.notify(Event::UnknownGroup { group });
        }
        self.contacts[k].peer.state = Some(state);
    }

    /// A peer restarted or died: what we knew about its situation is void.
    fn peer_changed(&mut self) {
        for g in &mut self.groups {
            g.failed_here = false;
            g.caught_up = false;
        }
    }

    /// When peer `k` was last heard, on any link.
    pub(super) fn last_heard_of(&self, k: usize) -> Option<Millis> {
        self.contacts.get(k)?.links.iter().filter_map(|l| l.last_heard).max()
    }

    /// Warnings per link, the dead verdict, and the easing of flap damping,
    /// for every peer.
    pub(super) fn update_liveness(&mut self, now: Millis) {
        for k in 0..self.contacts.len() {
            self.update_contact(now, k);
        }
    }

    fn update_contact(&mut self, now: Millis, k: usize) {
        let label = self.peer_label(k);
        if self.contacts[k].peer.key_mismatch_noted && !self.key_mismatch_of(k, now) {
            self.contacts[k].peer.key_mismatch_noted = false;
            self.notify(Event::PeerKeyMismatchEnded { peer: label.clone() });
        }
        let warntime = self.cfg.timers.warntime;
        let window = self.cfg.link_flap_window;
        let onsets_to_flap = self.cfg.link_flap_onsets;
        let c = &mut self.contacts[k];
        let contact_since = match c.peer.status {
            PeerStatus::Alive { since, .. } => Some(since),
            _ => None,
        };
        let planned = c.peer.state.as_ref().is_some_and(|s| s.standby && s.groups.is_empty());
        let mut events = Vec::new();
        for l in &mut c.links {
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
                        events.push(Event::LinkFlapping {
                            link: l.name.clone(),
                            peer: label.clone(),
                        });
                    } else {
                        events.push(Event::LinkSilent {
                            link: l.name.clone(),
                            silent_ms: now.since(reference.unwrap_or(now)).as_millis() as u64,
                            planned,
                            peer: label.clone(),
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
                    peer: label.clone(),
                });
            }
        }
        for e in events {
            self.notify(e);
        }

        let c = &self.contacts[k];
        if let PeerStatus::Alive { incarnation, since } = c.peer.status {
            let flap_level = c.peer.flap_level;
            let flap_changed = c.peer.flap_changed;
            let deadtime = self.cfg.deadtime(flap_level);
            let last = self.last_heard_of(k).unwrap_or(since);
            if now.since(last) >= deadtime && now >= self.settle_until {
                self.contacts[k].peer.status = PeerStatus::Dead {
                    since: now,
                    incarnation: Some(incarnation),
                };
                self.peer_changed();
                self.notify(Event::PeerDead {
                    silent_ms: now.since(last).as_millis() as u64,
                    deadtime_ms: deadtime.as_millis() as u64,
                    planned,
                    peer: label,
                });
            } else if flap_level > 0 && now.since(flap_changed.max(since)) >= self.cfg.flap_decay {
                let p = &mut self.contacts[k].peer;
                p.flap_level -= 1;
                p.flap_changed = now;
                let flap_level = p.flap_level;
                self.notify(Event::FlapDampingEased {
                    flap_level,
                    deadtime_ms: self.cfg.deadtime(flap_level).as_millis() as u64,
                    peer: label,
                });
            }
        }
    }

    /// Deadlines of this part, for `poll_timeout`.
    pub(super) fn liveness_deadlines(&self, out: &mut Vec<Millis>) {
        let warntime = self.cfg.timers.warntime;
        for (k, c) in self.contacts.iter().enumerate() {
            if let [_, Some(b)] = c.peer.key_mismatch
                && c.peer.key_mismatch_noted
            {
                out.push(b + self.cfg.timers.deadtime);
            }
            let contact_since = match c.peer.status {
                PeerStatus::Alive { since, .. } => Some(since),
                _ => None,
            };
            for l in &c.links {
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
            if let PeerStatus::Alive { since, .. } = c.peer.status {
                let last = self.last_heard_of(k).unwrap_or(since);
                out.push(last + self.cfg.deadtime(c.peer.flap_level));
                out.push(last + warntime);
                if c.peer.flap_level > 0 {
                    out.push(c.peer.flap_changed.max(since) + self.cfg.flap_decay);
                }
            }
        }
    }
}
