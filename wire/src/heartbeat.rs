//! The heartbeat datagram: what a node tells its peer every keepalive on
//! every link — who it is ([`Heartbeat::sender`], an incarnation that
//! changes at every start, a sequence number, the link it was sent on) and
//! its state ([`NodeState`]: the groups it claims with their epochs, its
//! reachlist score, standby and start-up flags). A heartbeat is one UDP
//! datagram, not a frame of the QUIC conversation.
//!
//! Authentication: a keyed BLAKE3 MAC over every byte before it, with a key
//! from the shared `heartbeat_key` file ([`HeartbeatKeys`]; one key per
//! line, two accepted at once so keys can be rotated). The MAC is checked
//! before anything else is decoded, so a forged packet never reaches the
//! decoder. Replays are refused by [`ReplayWindow`], one per peer: a sliding
//! window over the sequence numbers of the peer's current incarnation, and
//! no older incarnation ever again.
//!
//! Pure bytes in, values out: no sockets, no clock. Decoding never panics.

use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};

/// First bytes of every heartbeat: tells a stray datagram from ours.
pub const MAGIC: [u8; 4] = *b"HMhb";
/// Heartbeat format version this build sends by default. Version 2 adds
/// the maintenance register ([`Maintenance`]); version 1 is still read and,
/// to a peer heard speaking it (the previous release, during a rolling
/// upgrade), sent with [`Heartbeat::seal_as`]. Any other version is refused
/// with [`HeartbeatError::Version`].
pub const VERSION: u8 = 2;
/// Oldest heartbeat format version still read and written.
pub const MIN_VERSION: u8 = 1;
/// Length of the MAC that ends every heartbeat.
pub const MAC_LEN: usize = 32;
/// Largest heartbeat accepted or produced: one unfragmented datagram.
pub const MAX_HEARTBEAT: usize = 1200;
/// Most group claims in one heartbeat.
pub const MAX_GROUPS: u64 = 16;
/// Longest node or group name.
pub const MAX_NAME: usize = 64;
/// Sequence numbers remembered behind the newest one. Heartbeats travel on
/// two links and may be reordered; 128 covers more than a second of both.
pub const WINDOW: u64 = 128;

/// Context string that turns a key from the file into the MAC key, so the
/// shared secret is never used directly (nor for anything else).
const KEY_CONTEXT: &str = "hamirror 2024 heartbeat MAC v1";

const FLAG_STANDBY: u8 = 1;
const FLAG_STARTING: u8 = 2;
const FLAG_OBSERVER: u8 = 4;
/// Version 2: the maintenance register is on.
const FLAG_MAINTENANCE: u8 = 8;
const FLAGS_V1: u8 = FLAG_STANDBY | FLAG_STARTING | FLAG_OBSERVER;
const FLAGS_V2: u8 = FLAGS_V1 | FLAG_MAINTENANCE;

/// How the sender relates to a group. Groups it has nothing to do with are
/// not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Claim {
    /// Its start hooks are running: treat as held.
    Acquiring = 1,
    /// It runs the group.
    Held = 2,
    /// Its stop hooks are running (or failed and are being retried): the
    /// group may still be partly up there, so nobody else may start it.
    Releasing = 3,
    /// An operator asked this node to take the group over: the holder
    /// should release it.
    Requested = 4,
    /// Its start hooks failed here; the peer may take the group.
    Failed = 5,
}

impl Claim {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Claim::Acquiring,
            2 => Claim::Held,
            3 => Claim::Releasing,
            4 => Claim::Requested,
            5 => Claim::Failed,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "group claim",
                    value: v.into(),
                });
            }
        })
    }

    /// Whether the group may be (partly) running on the sender.
    pub fn holds(self) -> bool {
        matches!(self, Claim::Acquiring | Claim::Held | Claim::Releasing)
    }
}

/// One group the sender has a claim on, with the epoch of that claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupClaim {
    pub group: String,
    pub epoch: u64,
    pub claim: Claim,
}

/// A reachlist score: how many of the `total` hosts answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reach {
    pub up: u16,
    pub total: u16,
}

/// The cluster-wide maintenance switch as one node knows it: a register
/// that both nodes replicate through their heartbeats. Whoever sets it
/// (`hamirror maintenance on|off` on either node) raises the generation
/// past both nodes'; a node adopts the peer's register when it is
/// [`Maintenance::newer_than`] its own. Version 2 heartbeats only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Maintenance {
    pub on: bool,
    pub generation: u64,
}

impl Maintenance {
    /// Whether `self` supersedes `other`: a higher generation, or the same
    /// one and on (two settings made apart during a partition: freezing is
    /// the safe way to break the tie).
    pub fn newer_than(&self, other: &Maintenance) -> bool {
        self.generation > other.generation || (self.generation == other.generation && self.on && !other.on)
    }
}

/// What a node advertises about itself; the part of a heartbeat the
/// arbiter reasons on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// In standby: holds nothing and takes nothing over.
    pub standby: bool,
    /// Still in its start-up phase (initdead, clean-up).
    pub starting: bool,
    /// A diagnostic run (`hamirror links`), not a daemon: its claims are
    /// not real and a daemon ignores them.
    pub observer: bool,
    /// `None` until the prober has measured.
    pub reach: Option<Reach>,
    /// The maintenance register (a version 1 heartbeat carries none: off,
    /// generation 0).
    pub maintenance: Maintenance,
    pub groups: Vec<GroupClaim>,
}

impl NodeState {
    /// The sender's claim on `group`, if any.
    pub fn claim(&self, group: &str) -> Option<&GroupClaim> {
        self.groups.iter().find(|c| c.group == group)
    }
}

/// One heartbeat datagram, before sealing or after opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub sender: String,
    /// Changes at every start of the sender (e.g. its start time in µs).
    pub incarnation: u64,
    /// Raised by one for every heartbeat the sender sends, on any link.
    pub seq: u64,
    /// The link the sender sent it on (0 = crossover, 1 = LAN).
    pub link: u8,
    pub state: NodeState,
}

/// Why a datagram is not an acceptable heartbeat. None of these can be
/// cured by retrying the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeartbeatError {
    #[error("datagram of {0} bytes is too short to be a heartbeat")]
    TooShort(usize),
    #[error("datagram of {0} bytes exceeds the heartbeat limit of {MAX_HEARTBEAT}")]
    TooLong(usize),
    #[error("not a hamirror heartbeat (bad magic)")]
    BadMagic,
    #[error("heartbeat version {0} is not supported (this build speaks versions {MIN_VERSION} to {VERSION})")]
    Version(u8),
    #[error("bad MAC: forged, corrupted, or signed with a key not in this node's heartbeat key file")]
    BadMac,
    #[error("malformed heartbeat: {0}")]
    Decode(#[from] DecodeError),
    #[error("heartbeat too large to send: {0} bytes (too many or too long group names)")]
    Oversize(usize),
}

/// One MAC key, derived from a 32-byte secret of the key file.
#[derive(Clone, PartialEq, Eq)]
pub struct HeartbeatKey([u8; 32]);

impl HeartbeatKey {
    /// Derives the MAC key from a shared secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        HeartbeatKey(blake3::derive_key(KEY_CONTEXT, secret))
    }
    fn mac(&self, data: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, data)
    }

    /// The MAC a heartbeat with this `body` ends with (for tools and the
    /// fuzz target, which reaches the decoder behind the MAC with it).
    pub fn sign(&self, body: &[u8]) -> [u8; MAC_LEN] {
        *self.mac(body).as_bytes()
    }
}

impl std::fmt::Debug for HeartbeatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeartbeatKey(…)")
    }
}

/// Why a heartbeat key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyFileError {
    #[error("line {line}: expected 64 hex digits (a 32-byte key), found {len} characters")]
    BadKey { line: usize, len: usize },
    #[error("no key: expected one line of 64 hex digits (two while rotating)")]
    Empty,
    #[error("line {line}: a third key; at most two are accepted (the current one first, the other during rotation)")]
    TooMany { line: usize },
}

/// The keys of a `heartbeat_key` file: the first signs, any verifies.
#[derive(Debug, Clone)]
pub struct HeartbeatKeys {
    keys: Vec<HeartbeatKey>,
}

impl HeartbeatKeys {
    /// Parses the file's text: one key per line as 64 hex digits, `#`
    /// comments and blank lines ignored, one or two keys.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let secret = parse_hex32(line).ok_or(KeyFileError::BadKey {
                line: i + 1,
                len: line.chars().count(),
            })?;
            if keys.len() == 2 {
                return Err(KeyFileError::TooMany { line: i + 1 });
            }
            keys.push(HeartbeatKey::from_secret(&secret));
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(HeartbeatKeys { keys })
    }

    /// Keys from raw secrets, the signing one first (for tests and tools).
    pub fn from_secrets(secrets: &[[u8; 32]]) -> Result<Self, KeyFileError> {
        match secrets.len() {
            0 => Err(KeyFileError::Empty),
            1 | 2 => Ok(HeartbeatKeys {
                keys: secrets.iter().map(HeartbeatKey::from_secret).collect(),
            }),
            _ => Err(KeyFileError::TooMany { line: 3 }),
        }
    }

    /// The key outgoing heartbeats are signed with: the file's first.
    pub fn signing(&self) -> &HeartbeatKey {
        &self.keys[0]
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

impl Heartbeat {
    /// Encodes in the current [`VERSION`] and signs with `key`. Errors only
    /// if the state does not fit in one datagram ([`MAX_HEARTBEAT`]) or
    /// breaks a decoder limit.
    pub fn seal(&self, key: &HeartbeatKey) -> Result<Vec<u8>, HeartbeatError> {
        self.seal_as(key, VERSION)
    }

    /// Encodes in format `version` ([`MIN_VERSION`]..=[`VERSION`]) and
    /// signs with `key`. Version 1 has no room for the maintenance register:
    /// it is left out (the caller chose to speak to a peer that cannot
    /// know it).
    pub fn seal_as(&self, key: &HeartbeatKey, version: u8) -> Result<Vec<u8>, HeartbeatError> {
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(HeartbeatError::Version(version));
        }
        let too_long = |n: usize| HeartbeatError::Oversize(n);
        if self.sender.len() > MAX_NAME
            || self.state.groups.len() as u64 > MAX_GROUPS
            || self.state.groups.iter().any(|g| g.group.len() > MAX_NAME)
        {
            return Err(too_long(MAX_HEARTBEAT + 1));
        }
        let mut w = Writer::new();
        w.raw(&MAGIC).u8(version);
        w.str(&self.sender)
            .varint(self.incarnation)
            .varint(self.seq)
            .u8(self.link);
        let s = &self.state;
        let flags = (if s.standby { FLAG_STANDBY } else { 0 })
            | (if s.starting { FLAG_STARTING } else { 0 })
            | (if s.observer { FLAG_OBSERVER } else { 0 })
            | (if version >= 2 && s.maintenance.on {
                FLAG_MAINTENANCE
            } else {
                0
            });
        w.u8(flags);
        match s.reach {
            None => w.u8(0),
            Some(r) => w.u8(1).varint(r.up.into()).varint(r.total.into()),
        };
        if version >= 2 {
            w.varint(s.maintenance.generation);
        }
        w.varint(s.groups.len() as u64);
        for g in &s.groups {
            w.str(&g.group).varint(g.epoch).u8(g.claim as u8);
        }
        let mac = key.mac(&w.buf);
        w.raw(mac.as_bytes());
        let bytes = w.into_bytes();
        if bytes.len() > MAX_HEARTBEAT {
            return Err(too_long(bytes.len()));
        }
        Ok(bytes)
    }

    /// Checks length, magic, version and MAC (against every key), then
    /// decodes. Says nothing about replays: see [`ReplayWindow`].
    pub fn open(packet: &[u8], keys: &HeartbeatKeys) -> Result<Heartbeat, HeartbeatError> {
        if packet.len() > MAX_HEARTBEAT {
            return Err(HeartbeatError::TooLong(packet.len()));
        }
        if packet.len() < MAGIC.len() + 1 + MAC_LEN {
            return Err(HeartbeatError::TooShort(packet.len()));
        }
        if packet[..4] != MAGIC {
            return Err(HeartbeatError::BadMagic);
        }
        let version = packet[4];
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(HeartbeatError::Version(version));
        }
        let (body, mac) = packet.split_at(packet.len() - MAC_LEN);
        let mut got = [0u8; MAC_LEN];
        got.copy_from_slice(mac);
        let got = blake3::Hash::from(got);
        // blake3::Hash compares in constant time.
        if !keys.keys.iter().any(|k| k.mac(body) == got) {
            return Err(HeartbeatError::BadMac);
        }
        Ok(decode_body(&body[5..], version)?)
    }

    /// The format version a datagram claims (for a receiver that answers
    /// each peer in the version it speaks); `None` if it is not ours.
    pub fn version_of(packet: &[u8]) -> Option<u8> {
        (packet.len() > MAGIC.len() && packet[..4] == MAGIC).then(|| packet[4])
    }
}

impl Heartbeat {
    /// The sender named in a datagram whose MAC did not verify, for
    /// diagnosis only: it tells a peer signing with another key (a
    /// misconfiguration) from stray or hostile traffic. Anyone can forge
    /// it; never act on it as if it were authentic.
    pub fn unverified_sender(packet: &[u8]) -> Option<String> {
        if packet.len() > MAX_HEARTBEAT
            || packet.len() < MAGIC.len() + 1 + MAC_LEN
            || packet[..4] != MAGIC
            || !(MIN_VERSION..=VERSION).contains(&packet[4])
        {
            return None;
        }
        let body = &packet[5..packet.len() - MAC_LEN];
        decode_body(body, packet[4]).ok().map(|h| h.sender)
    }
}

/// The body after magic and version, in format `version` (already checked
/// to be one this build reads).
fn decode_body(body: &[u8], version: u8) -> Result<Heartbeat, DecodeError> {
    let mut r = Reader::new(body);
    let sender = r.str("sender", MAX_NAME)?.to_string();
    let incarnation = r.varint("incarnation")?;
    let seq = r.varint("sequence number")?;
    let link = r.u8("link")?;
    let flags = r.u8("flags")?;
    let known = if version >= 2 { FLAGS_V2 } else { FLAGS_V1 };
    if flags & !known != 0 {
        return Err(DecodeError::Invalid {
            what: "flags",
            value: flags.into(),
        });
    }
    let reach = match r.u8("reach tag")? {
        0 => None,
        1 => {
            let up = r.bounded("reach up", u16::MAX.into())? as u16;
            let total = r.bounded("reach total", u16::MAX.into())? as u16;
            if up > total {
                return Err(DecodeError::Invalid {
                    what: "reach up above total",
                    value: up.into(),
                });
            }
            Some(Reach { up, total })
        }
        v => {
            return Err(DecodeError::Invalid {
                what: "reach tag",
                value: v.into(),
            });
        }
    };
    let maintenance = Maintenance {
        on: flags & FLAG_MAINTENANCE != 0,
        generation: if version >= 2 {
            r.varint("maintenance generation")?
        } else {
            0
        },
    };
    // Smallest claim: empty name (1) + epoch (1) + claim (1).
    let n = r.count("group claims", MAX_GROUPS, 3)?;
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let group = r.str("group name", MAX_NAME)?.to_string();
        let epoch = r.varint("epoch")?;
        let claim = Claim::from_u8(r.u8("claim")?)?;
        groups.push(GroupClaim { group, epoch, claim });
    }
    r.finish()?;
    Ok(Heartbeat {
        sender,
        incarnation,
        seq,
        link,
        state: NodeState {
            standby: flags & FLAG_STANDBY != 0,
            starting: flags & FLAG_STARTING != 0,
            observer: flags & FLAG_OBSERVER != 0,
            reach,
            maintenance,
            groups,
        },
    })
}

/// Why an authentic heartbeat is refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Replay {
    #[error("sequence number {0} already seen")]
    Duplicate(u64),
    #[error("sequence number {seq} is older than the window (newest {newest})")]
    TooOld { seq: u64, newest: u64 },
    #[error("incarnation {got} is older than the current one ({current})")]
    OldIncarnation { got: u64, current: u64 },
}

/// What an accepted heartbeat means for the sender's incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// Same incarnation as before.
    Same,
    /// The first heartbeat of a new incarnation: the peer (re)started.
    NewIncarnation { previous: Option<u64> },
}

/// Replay protection for one peer: per incarnation, the newest sequence
/// number and a bitmap of the [`WINDOW`] before it. A newer incarnation
/// replaces the old one; an older one is always refused. Heartbeats of an
/// incarnation that has ended are then worthless to an attacker who
/// recorded them: replayed after the peer died, they cannot make it look
/// alive. The sender's incarnation must therefore only grow (the daemon
/// persists its last one, so a clock that went back cannot lock it out),
/// and a receiver that restarts resumes from the newest incarnation and
/// sequence number it persisted ([`ReplayWindow::resume`]).
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    incarnation: Option<u64>,
    newest: u64,
    seen: u128,
}

impl ReplayWindow {
    pub fn new() -> Self {
        ReplayWindow::default()
    }

    /// A window that has already seen every sequence number up to `seq`
    /// of `incarnation`: what a restarted receiver persisted. Older
    /// incarnations, and `seq` or below of this one, are refused.
    pub fn resume(incarnation: u64, seq: u64) -> Self {
        ReplayWindow {
            incarnation: Some(incarnation),
            newest: seq,
            seen: u128::MAX,
        }
    }

    /// Checks and records an authenticated heartbeat's numbers.
    pub fn check(&mut self, incarnation: u64, seq: u64) -> Result<Fresh, Replay> {
        match self.incarnation {
            Some(cur) if cur == incarnation => {}
            Some(cur) if incarnation < cur => {
                return Err(Replay::OldIncarnation {
                    got: incarnation,
                    current: cur,
                });
            }
            previous => {
                self.incarnation = Some(incarnation);
                self.newest = seq;
                self.seen = 1;
                return Ok(Fresh::NewIncarnation { previous });
            }
        }
        if seq > self.newest {
            let shift = seq - self.newest;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.newest = seq;
            return Ok(Fresh::Same);
        }
        let back = self.newest - seq;
        if back >= WINDOW {
            return Err(Replay::TooOld {
                seq,
                newest: self.newest,
            });
        }
        let bit = 1u128 << back;
        if self.seen & bit != 0 {
            return Err(Replay::Duplicate(seq));
        }
        self.seen |= bit;
        Ok(Fresh::Same)
    }

    /// The newest sequence number accepted of the current incarnation.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    pub fn incarnation(&self) -> Option<u64> {
        self.incarnation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K1: [u8; 32] = [0x11; 32];
    const K2: [u8; 32] = [0x22; 32];

    fn sample() -> Heartbeat {
        Heartbeat {
            sender: "serv1".into(),
            incarnation: 1_700_000_000_123_456,
            seq: 42,
            link: 1,
            state: NodeState {
                standby: false,
                starting: true,
                observer: false,
                reach: Some(Reach { up: 2, total: 3 }),
                maintenance: Maintenance {
                    on: true,
                    generation: 300,
                },
                groups: vec![
                    GroupClaim {
                        group: "serv1".into(),
                        epoch: 7,
                        claim: Claim::Held,
                    },
                    GroupClaim {
                        group: "serv2".into(),
                        epoch: 3,
                        claim: Claim::Releasing,
                    },
                ],
            },
        }
    }

    fn keys(s: &[[u8; 32]]) -> HeartbeatKeys {
        HeartbeatKeys::from_secrets(s).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = keys(&[K1]);
        let hb = sample();
        let bytes = hb.seal(k.signing()).unwrap();
        assert_eq!(Heartbeat::open(&bytes, &k).unwrap(), hb);
        let mut bare = hb.clone();
        bare.state = NodeState::default();
        let bytes = bare.seal(k.signing()).unwrap();
        assert_eq!(Heartbeat::open(&bytes, &k).unwrap(), bare);
    }

    #[test]
    fn frozen_layout_before_the_mac() {
        let hb = Heartbeat {
            sender: "a".into(),
            incarnation: 300,
            seq: 1,
            link: 0,
            state: NodeState {
                standby: true,
                starting: false,
                observer: false,
                reach: None,
                maintenance: Maintenance {
                    on: true,
                    generation: 5,
                },
                groups: vec![GroupClaim {
                    group: "g".into(),
                    epoch: 2,
                    claim: Claim::Held,
                }],
            },
        };
        let k = keys(&[K1]);
        // Version 1, what the previous release reads: no maintenance.
        let bytes = hb.seal_as(k.signing(), 1).unwrap();
        let body = &bytes[..bytes.len() - MAC_LEN];
        assert_eq!(
            body,
            [
                b'H', b'M', b'h', b'b', 1, 1, b'a', 0xac, 0x02, 1, 0, 1, 0, 1, 1, b'g', 2, 2
            ]
        );
        // Version 2: the maintenance flag (8) and generation after reach.
        let bytes = hb.seal(k.signing()).unwrap();
        let body = &bytes[..bytes.len() - MAC_LEN];
        assert_eq!(
            body,
            [
                b'H', b'M', b'h', b'b', 2, 1, b'a', 0xac, 0x02, 1, 0, 9, 0, 5, 1, 1, b'g', 2, 2
            ]
        );
    }

    #[test]
    fn version_1_is_read_and_written_without_the_maintenance_register() {
        let k = keys(&[K1]);
        let hb = sample();
        let v1 = hb.seal_as(k.signing(), 1).unwrap();
        assert_eq!(Heartbeat::version_of(&v1), Some(1));
        let opened = Heartbeat::open(&v1, &k).unwrap();
        assert_eq!(opened.state.maintenance, Maintenance::default());
        let mut expected = hb.clone();
        expected.state.maintenance = Maintenance::default();
        assert_eq!(opened, expected);
        let v2 = hb.seal(k.signing()).unwrap();
        assert_eq!(Heartbeat::version_of(&v2), Some(2));
        assert_eq!(Heartbeat::open(&v2, &k).unwrap(), hb);
        assert_eq!(hb.seal_as(k.signing(), 3), Err(HeartbeatError::Version(3)));
    }

    #[test]
    fn the_maintenance_flag_is_refused_in_a_version_1_body() {
        // A version 1 body cannot carry the flag: a decoder of either
        // release refuses it rather than guess.
        let k = keys(&[K1]);
        let mut w = Writer::new();
        w.raw(&MAGIC)
            .u8(1)
            .str("x")
            .varint(1)
            .varint(1)
            .u8(0)
            .u8(FLAG_MAINTENANCE)
            .u8(0)
            .varint(0);
        let mac = k.signing().sign(&w.buf);
        w.raw(&mac);
        let e = Heartbeat::open(&w.into_bytes(), &k).unwrap_err();
        assert!(
            matches!(e, HeartbeatError::Decode(DecodeError::Invalid { what: "flags", .. })),
            "{e:?}"
        );
    }

    #[test]
    fn a_newer_maintenance_register_wins_and_on_breaks_ties() {
        let m = |on, generation| Maintenance { on, generation };
        assert!(m(false, 3).newer_than(&m(true, 2)));
        assert!(!m(true, 2).newer_than(&m(false, 3)));
        assert!(m(true, 3).newer_than(&m(false, 3)));
        assert!(!m(false, 3).newer_than(&m(true, 3)));
        assert!(!m(true, 3).newer_than(&m(true, 3)));
    }

    #[test]
    fn forged_packets_are_refused() {
        let k = keys(&[K1]);
        let mut bytes = sample().seal(k.signing()).unwrap();
        // Flip the standby flag an attacker would like to set.
        let flags_at = 5 + 1 + 5 + 8 + 1 + 1;
        bytes[flags_at] ^= FLAG_STANDBY;
        assert_eq!(Heartbeat::open(&bytes, &k), Err(HeartbeatError::BadMac));
        // A MAC made up by someone without the key.
        let mut bytes = sample().seal(k.signing()).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert_eq!(Heartbeat::open(&bytes, &k), Err(HeartbeatError::BadMac));
    }

    #[test]
    fn wrong_key_is_refused() {
        let bytes = sample().seal(keys(&[K2]).signing()).unwrap();
        assert_eq!(Heartbeat::open(&bytes, &keys(&[K1])), Err(HeartbeatError::BadMac));
    }

    #[test]
    fn truncated_and_padded_packets_are_refused() {
        let k = keys(&[K1]);
        let bytes = sample().seal(k.signing()).unwrap();
        for n in 0..bytes.len() {
            assert!(Heartbeat::open(&bytes[..n], &k).is_err(), "accepted {n} bytes");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Heartbeat::open(&long, &k).is_err());
        assert_eq!(
            Heartbeat::open(&vec![0u8; MAX_HEARTBEAT + 1], &k),
            Err(HeartbeatError::TooLong(MAX_HEARTBEAT + 1))
        );
    }

    #[test]
    fn other_versions_and_strangers_are_named() {
        let k = keys(&[K1]);
        let mut bytes = sample().seal(k.signing()).unwrap();
        bytes[4] = 9;
        assert_eq!(Heartbeat::open(&bytes, &k), Err(HeartbeatError::Version(9)));
        bytes[0] = b'X';
        assert_eq!(Heartbeat::open(&bytes, &k), Err(HeartbeatError::BadMagic));
    }

    #[test]
    fn authentic_but_malformed_bodies_are_decode_errors() {
        // Signed garbage (a buggy peer): the MAC passes, the decoder refuses.
        let k = keys(&[K1]);
        let mut w = Writer::new();
        w.raw(&MAGIC).u8(VERSION).str("x").varint(1).varint(1).u8(0).u8(0x80);
        let mac = k.signing().mac(&w.buf);
        w.raw(mac.as_bytes());
        assert!(matches!(Heartbeat::open(&w.buf, &k), Err(HeartbeatError::Decode(_))));
    }

    #[test]
    fn key_rotation_accepts_both_keys_and_signs_with_the_first() {
        let old = keys(&[K1]);
        let rotating = keys(&[K2, K1]);
        let new = keys(&[K2]);
        let from_old = sample().seal(old.signing()).unwrap();
        let from_rotating = sample().seal(rotating.signing()).unwrap();
        assert!(Heartbeat::open(&from_old, &rotating).is_ok());
        assert!(Heartbeat::open(&from_rotating, &rotating).is_ok());
        assert!(Heartbeat::open(&from_rotating, &new).is_ok());
        assert_eq!(Heartbeat::open(&from_rotating, &old), Err(HeartbeatError::BadMac));
    }

    #[test]
    fn key_file_parsing() {
        let hex1 = "3b1f0e2d4c5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let hex2 = "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff";
        let k = HeartbeatKeys::parse(&format!("# comment\n\n{hex1}\n  {hex2}  # old key\n")).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(HeartbeatKeys::parse("# nothing\n").unwrap_err(), KeyFileError::Empty);
        assert_eq!(
            HeartbeatKeys::parse("abcd\n").unwrap_err(),
            KeyFileError::BadKey { line: 1, len: 4 }
        );
        let bad_digit = format!("{}g", &hex1[..63]);
        assert!(HeartbeatKeys::parse(&bad_digit).is_err());
        assert_eq!(
            HeartbeatKeys::parse(&format!("{hex1}\n{hex2}\n{hex1}\n")).unwrap_err(),
            KeyFileError::TooMany { line: 3 }
        );
        // The file's secret is not the MAC key itself.
        let raw = blake3::keyed_hash(&parse_hex32(hex1).unwrap(), b"x");
        assert_ne!(k.signing().mac(b"x"), raw);
    }

    #[test]
    fn oversize_state_is_refused_when_sealing() {
        let mut hb = sample();
        hb.state.groups = (0..17)
            .map(|i| GroupClaim {
                group: format!("g{i}"),
                epoch: 1,
                claim: Claim::Held,
            })
            .collect();
        assert!(matches!(
            hb.seal(keys(&[K1]).signing()),
            Err(HeartbeatError::Oversize(_))
        ));
    }

    #[test]
    fn replays_are_refused_and_reordering_is_tolerated() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(5, 10), Ok(Fresh::NewIncarnation { previous: None }));
        assert_eq!(w.check(5, 10), Err(Replay::Duplicate(10)));
        assert_eq!(w.check(5, 12), Ok(Fresh::Same));
        // 11 came late over the other link: still accepted, once.
        assert_eq!(w.check(5, 11), Ok(Fresh::Same));
        assert_eq!(w.check(5, 11), Err(Replay::Duplicate(11)));
        assert_eq!(w.check(5, 12 + WINDOW), Ok(Fresh::Same));
        assert_eq!(
            w.check(5, 12),
            Err(Replay::TooOld {
                seq: 12,
                newest: 12 + WINDOW
            })
        );
        // A big jump forgets the whole window but stays monotonic.
        assert_eq!(w.check(5, 1_000_000), Ok(Fresh::Same));
        assert_eq!(w.check(5, 1_000_000), Err(Replay::Duplicate(1_000_000)));
    }

    #[test]
    fn incarnations_only_move_forward_even_after_a_long_silence() {
        let mut w = ReplayWindow::new();
        w.check(5, 100).unwrap();
        // A restart: new incarnation, sequence numbers start again.
        assert_eq!(w.check(6, 0), Ok(Fresh::NewIncarnation { previous: Some(5) }));
        assert_eq!(w.check(6, 1), Ok(Fresh::Same));
        // Recorded packets of the previous incarnation are replays, however
        // long the current one has been silent (the peer may be dead: the
        // window has no clock and needs none).
        for seq in [101, 102, 5_000] {
            assert_eq!(w.check(5, seq), Err(Replay::OldIncarnation { got: 5, current: 6 }));
        }
        assert_eq!(w.incarnation(), Some(6));
    }

    #[test]
    fn a_resumed_window_refuses_what_the_previous_run_had_seen() {
        // The receiver restarted; it persisted incarnation 6 up to seq 40.
        let mut w = ReplayWindow::resume(6, 40);
        assert_eq!(w.check(5, 1_000), Err(Replay::OldIncarnation { got: 5, current: 6 }));
        assert!(w.check(6, 40).is_err());
        assert!(w.check(6, 39).is_err());
        assert!(w.check(6, 1).is_err());
        assert_eq!(w.check(6, 41), Ok(Fresh::Same));
        assert_eq!(w.check(7, 0), Ok(Fresh::NewIncarnation { previous: Some(6) }));
    }

    #[test]
    fn the_sender_of_a_packet_with_a_bad_mac_can_be_read_for_diagnosis() {
        let bytes = sample().seal(keys(&[K2]).signing()).unwrap();
        assert_eq!(Heartbeat::open(&bytes, &keys(&[K1])), Err(HeartbeatError::BadMac));
        assert_eq!(Heartbeat::unverified_sender(&bytes).as_deref(), Some("serv1"));
        assert_eq!(Heartbeat::unverified_sender(&bytes[..10]), None);
        assert_eq!(Heartbeat::unverified_sender(&[b'x'; 64]), None);
    }

    proptest! {
        #[test]
        fn open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let k = keys(&[K1]);
            let _ = Heartbeat::open(&data, &k);
        }

        #[test]
        fn decoder_never_panics_on_authentic_garbage(
            version in MIN_VERSION..=VERSION,
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = decode_body(&data, version);
        }

        #[test]
        fn window_accepts_each_sequence_number_at_most_once(seqs in proptest::collection::vec(0u64..300, 1..200)) {
            let mut w = ReplayWindow::new();
            let mut accepted = std::collections::HashSet::new();
            for s in seqs {
                if w.check(1, s).is_ok() {
                    prop_assert!(accepted.insert(s), "{} accepted twice", s);
                }
            }
        }
    }
}
