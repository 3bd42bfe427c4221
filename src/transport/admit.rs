//! Which source addresses may start a QUIC handshake with this node: only
//! the peer's configured link addresses (crossover and LAN). Anything else
//! is refused on its first packet, before any TLS work — a host on the
//! network that is not the peer costs the listener no handshake and learns
//! nothing about its key — and the refusals are logged at most once per
//! address per minute, with a count, so a flood cannot fill the log.
//!
//! Pure logic: the caller passes the time in. Knows nothing of quinn.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// At most one log line per address per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Addresses remembered for rate-limiting; beyond, the rest share one line
/// (a spoofing flood could name any number of addresses).
const MAX_TRACKED: usize = 1024;

/// The addresses the peer may connect from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    allowed: Vec<IpAddr>,
}

impl Admission {
    pub fn new(allowed: impl IntoIterator<Item = IpAddr>) -> Admission {
        let mut allowed: Vec<IpAddr> = allowed.into_iter().map(|a| a.to_canonical()).collect();
        allowed.sort();
        allowed.dedup();
        Admission { allowed }
    }

    /// Whether `from` is one of the peer's addresses (an IPv4 address seen
    /// as IPv4-mapped IPv6 on a dual-stack socket counts as itself). The
    /// port is not checked: the peer connects from any port.
    pub fn admits(&self, from: IpAddr) -> bool {
        self.allowed.contains(&from.to_canonical())
    }

    pub fn allowed(&self) -> &[IpAddr] {
        &self.allowed
    }
}

/// What to log for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine {
    /// A line about this address, counting the refusals of it that were
    /// not logged since its previous line.
    Address { unlogged: u64 },
    /// The table of addresses is full: a line for all the others,
    /// counting theirs.
    Others { unlogged: u64 },
}

/// Rate-limits refusal log lines per source address.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: HashMap<IpAddr, (Instant, u64)>,
    others: Option<(Instant, u64)>,
}

impl RefusalLog {
    pub fn new() -> RefusalLog {
        RefusalLog::default()
    }

    /// Notes a refusal of `from` at `now`; `Some` when a line is due.
    pub fn note(&mut self, from: IpAddr, now: Instant) -> Option<LogLine> {
        let from = from.to_canonical();
        if !self.seen.contains_key(&from) && self.seen.len() >= MAX_TRACKED {
            self.seen.retain(|_, (at, _)| now.duration_since(*at) < LOG_EVERY);
        }
        if !self.seen.contains_key(&from) && self.seen.len() >= MAX_TRACKED {
            return due(&mut self.others, now).map(|unlogged| LogLine::Others { unlogged });
        }
        let mut slot = self.seen.get(&from).copied();
        let line = due(&mut slot, now).map(|unlogged| LogLine::Address { unlogged });
        if let Some(s) = slot {
            self.seen.insert(from, s);
        }
        line
    }
}

/// One refusal against a (last line, unlogged since) slot: the count of
/// unlogged refusals when a line is due.
fn due(slot: &mut Option<(Instant, u64)>, now: Instant) -> Option<u64> {
    match slot {
        Some((at, unlogged)) if now.duration_since(*at) < LOG_EVERY => {
            *unlogged += 1;
            None
        }
        Some((at, unlogged)) => {
            let n = *unlogged;
            *at = now;
            *unlogged = 0;
            Some(n)
        }
        None => {
            *slot = Some((now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_peers_addresses_are_admitted_whatever_the_socket_family() {
        let a = Admission::new([ip("10.77.0.2"), ip("192.168.77.12"), ip("10.77.0.2")]);
        assert_eq!(a.allowed().len(), 2);
        assert!(a.admits(ip("10.77.0.2")));
        assert!(a.admits(ip("::ffff:192.168.77.12")));
        assert!(!a.admits(ip("10.77.0.3")));
        assert!(!a.admits(ip("::1")));
        assert!(!Admission::new([]).admits(ip("127.0.0.1")));
    }

    #[test]
    fn one_line_per_address_per_minute_with_the_count_of_the_rest() {
        let mut log = RefusalLog::new();
        let t0 = Instant::now();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert_eq!(log.note(a, t0), Some(LogLine::Address { unlogged: 0 }));
        for s in 1..=5 {
            assert_eq!(log.note(a, t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(
            log.note(b, t0 + Duration::from_secs(2)),
            Some(LogLine::Address { unlogged: 0 })
        );
        assert_eq!(
            log.note(a, t0 + LOG_EVERY + Duration::from_secs(1)),
            Some(LogLine::Address { unlogged: 5 })
        );
        assert_eq!(log.note(a, t0 + LOG_EVERY + Duration::from_secs(2)), None);
    }

    #[test]
    fn a_flood_of_addresses_shares_one_line_and_memory_stays_bounded() {
        let mut log = RefusalLog::new();
        let t0 = Instant::now();
        let mut lines = 0;
        for i in 0..10_000u32 {
            let from = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            if log.note(from, t0).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, MAX_TRACKED + 1);
        assert!(log.seen.len() <= MAX_TRACKED);
        // A minute on, old addresses make room again.
        let later = t0 + LOG_EVERY;
        assert_eq!(
            log.note(ip("203.0.113.9"), later),
            Some(LogLine::Address { unlogged: 0 })
        );
    }
}
