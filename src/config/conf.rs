//! The `NODE.conf` parser: `key = value` lines, `#` comments, every key
//! documented in `docs/CONFIG.md`. Produces a [`NodeConf`] with defaults
//! filled in, or every problem found with its line. Touches only the one
//! file it is given; cross-file rules live in `config::load`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::values::{ChunkParams, parse_bool, parse_duration, parse_percent};

/// Default QUIC port of the mirror receiver.
pub const DEFAULT_PORT: u16 = 7788;
/// Default UDP port of the heartbeats.
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7789;
/// Default `quiet_period`: short enough that a file written and left open
/// reaches the peer within a fraction of a second, long enough that a burst
/// of writes is read once.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_millis(100);
/// Largest `quiet_period` accepted.
pub const MAX_QUIET_PERIOD: Duration = Duration::from_secs(10);

/// Default of `hook_timeout`: long enough for a database to shut down
/// cleanly, short enough that a hung hook does not block failover forever.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The service health monitor of a group: the `monitor_*` keys of its
/// owner's `NODE.conf`, so the group is watched the same way on whichever
/// node runs it. See `docs/HOOKS.md#health-monitor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MonitorConf {
    /// How often the group's S hooks are called with `status` while it
    /// runs; zero turns the monitor off (the default, as in Pacemaker, where
    /// a resource has no monitor operation until one is configured).
    pub interval: Duration,
    /// Longest one `status` call may take; past it the call counts as failed.
    pub timeout: Duration,
    /// Consecutive failed checks before anything is done.
    pub failures: u32,
    /// Restarts in place (K hooks, then S hooks) within `window` before the
    /// next failure moves the group to the peer instead.
    pub restarts: u32,
    /// A restart older than this is forgotten (Pacemaker's failure-timeout).
    pub window: Duration,
}

impl Default for MonitorConf {
    fn default() -> Self {
        MonitorConf {
            interval: Duration::ZERO,
            timeout: Duration::from_secs(20),
            failures: 3,
            restarts: 1,
            window: Duration::from_secs(3600),
        }
    }
}

impl MonitorConf {
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

/// Failure-detection timers. The defaults aim at a client-visible outage
/// under one second after a node dies (see `docs/FAILOVER.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Timers {
    /// Interval between heartbeats on each link.
    pub keepalive: Duration,
    /// Silence on a link after which a warning is logged.
    pub warntime: Duration,
    /// Silence on all links after which the peer is declared dead.
    pub deadtime: Duration,
    /// Deadtime used right after start-up, while links come up.
    pub initdead: Duration,
    /// Extra wait of the non-preferred node before it acquires a group
    /// when scores are equal and there is no contact.
    pub takeover_delay: Duration,
}

impl Default for Timers {
    /// 50 ms heartbeats; a peer is dead after 400 ms of silence on every
    /// link (8 heartbeats lost on each). Worst-case client-visible outage
    /// after a node dies: 400 ms (+ 200 ms takeover delay when the survivor
    /// is not the preferred node) + the start hooks. Arithmetic in
    /// `docs/FAILOVER.md`.
    fn default() -> Self {
        Timers {
            keepalive: Duration::from_millis(50),
            warntime: Duration::from_millis(150),
            deadtime: Duration::from_millis(400),
            initdead: Duration::from_secs(10),
            takeover_delay: Duration::from_millis(200),
        }
    }
}

impl Timers {
    /// Consecutive failed probes before a reachlist host counts as
    /// unreachable (and successes before it counts as reachable again).
    pub const PROBE_FALL: u32 = 3;
    pub const PROBE_RISE: u32 = 3;

    /// The prober sends one round of probes every keepalive; each probe
    /// waits one keepalive for its answer.
    pub fn probe_interval(&self) -> Duration {
        self.keepalive
    }

    /// Worst case from a cut of the LAN to the reach score showing it: the
    /// last good round just before the cut, then `PROBE_FALL` failed rounds
    /// each reported one interval after it was sent.
    pub fn probe_latency(&self) -> Duration {
        self.keepalive * (Self::PROBE_FALL + 1)
    }

    /// Time an isolated node has to finish its stop hooks before a
    /// preferred survivor starts the same group (add `takeover_delay` when
    /// the survivor is not preferred): the survivor acts at the earliest
    /// `deadtime - keepalive` after the cut; the isolated node starts
    /// releasing at the latest `max(warntime, probe_latency)` after it.
    /// Zero when the timers leave no time at all.
    pub fn release_budget(&self) -> Duration {
        self.deadtime
            .saturating_sub(self.keepalive)
            .saturating_sub(self.warntime.max(self.probe_latency()))
    }
}

/// Per-set settings that `NODE.conf` may override with `F<name>.<key>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOverrides {
    pub chunk: Option<ChunkParams>,
    pub delete_limit: Option<u8>,
    pub xattrs: Option<super::XattrNamespaces>,
    /// Line of the first override, to report a set that does not exist.
    pub line: usize,
}

/// Who decides where groups run (`failover`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailoverMode {
    /// hamirror's two-node arbiter (heartbeats, reachlist, timers).
    #[default]
    Builtin,
    /// Pacemaker, through the `ocf:hamirror:mirror` resource agent: the
    /// arbiter starts and stops groups only when told (`promote` and
    /// `demote`), never by itself; epochs and mirroring stay hamirror's.
    Pacemaker,
}

impl FailoverMode {
    pub fn parse(s: &str) -> Result<FailoverMode, String> {
        match s.trim() {
            "builtin" => Ok(FailoverMode::Builtin),
            "pacemaker" => Ok(FailoverMode::Pacemaker),
            other => Err(format!("expected `builtin` or `pacemaker`, found {other:?}")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            FailoverMode::Builtin => "builtin",
            FailoverMode::Pacemaker => "pacemaker",
        }
    }
}

/// Everything one `NODE.conf` says, with defaults filled in.
#[derive(Debug, Clone)]
pub struct NodeConf {
    pub address: IpAddr,
    pub lan: Option<IpAddr>,
    pub port: u16,
    pub heartbeat_port: u16,
    pub root: PathBuf,
    pub state: PathBuf,
    pub key: PathBuf,
    pub fingerprint: Option<String>,
    pub heartbeat_key: Option<PathBuf>,
    pub timers: Timers,
    pub auto_failback: bool,
    pub preferred: Option<String>,
    /// Who decides where groups run: hamirror's own arbiter, or Pacemaker
    /// (through the `ocf:hamirror:mirror` resource agent).
    pub failover: FailoverMode,
    pub chunk: ChunkParams,
    pub delete_limit: u8,
    /// Extended-attribute namespaces mirrored (`xattrs`).
    pub xattrs: super::XattrNamespaces,
    pub rescan_interval: Duration,
    /// How long a file must go without writes before `watch` reads it when
    /// it was not closed (a closed file is read at once).
    pub quiet_period: Duration,
    /// Longest a single hook may run before its whole process group is
    /// killed and the hook counts as failed. Node-local (hooks differ).
    pub hook_timeout: Duration,
    /// The health monitor of this node's group.
    pub monitor: MonitorConf,
    /// Where the daemon serves Prometheus metrics (`GET /metrics`); off
    /// when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A file the daemon rewrites with the metrics (node_exporter's
    /// textfile collector); off when unset.
    pub metrics_textfile: Option<PathBuf>,
    pub set_overrides: BTreeMap<String, SetOverrides>,
    /// The line each key was set on, for messages about cross-file rules.
    pub lines: BTreeMap<String, usize>,
}

/// The keys `NODE.conf` accepts, for the "expected one of" message.
pub const KEYS: &[&str] = &[
    "address",
    "lan",
    "port",
    "heartbeat_port",
    "root",
    "state",
    "key",
    "fingerprint",
    "heartbeat_key",
    "keepalive",
    "warntime",
    "deadtime",
    "initdead",
    "takeover_delay",
    "auto_failback",
    "preferred",
    "failover",
    "chunk",
    "delete_limit",
    "xattrs",
    "rescan_interval",
    "quiet_period",
    "hook_timeout",
    "monitor_interval",
    "monitor_timeout",
    "monitor_failures",
    "monitor_restarts",
    "monitor_window",
    "metrics_listen",
    "metrics_textfile",
];

/// Parses `text` (the contents of `file`) for node `node`. Relative paths
/// are resolved against `config_dir`.
pub fn parse(file: &Path, text: &str, node: &str, config_dir: &Path) -> Result<NodeConf, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut values: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut overrides: BTreeMap<String, SetOverrides> = BTreeMap::new();
    let err = |line: usize, msg: String| ConfigError::at(file, line, msg);

    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            errors.push(err(line, format!("expected `key = value`, found {content:?}")));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            errors.push(err(line, format!("`{key}` has no value")));
            continue;
        }
        if let Some((set, opt)) = key.split_once('.').filter(|(s, _)| s.starts_with('F')) {
            let o = overrides.entry(set.to_string()).or_insert_with(|| SetOverrides {
                line,
                ..Default::default()
            });
            match opt {
                "chunk" => match ChunkParams::parse(value) {
                    Ok(p) => o.chunk = Some(p),
                    Err(e) => errors.push(err(line, format!("`{key}`: {e}"))),
                },
                "delete_limit" => match parse_percent(value) {
                    Ok(p) => o.delete_limit = Some(p),
                    Err(e) => errors.push(err(line, format!("`{key}`: {e}"))),
                },
                "xattrs" => match super::XattrNamespaces::parse(value) {
                    Ok(x) => o.xattrs = Some(x),
                    Err(e) => errors.push(err(line, format!("`{key}`: {e}"))),
                },
                _ => errors.push(err(
                    line,
                    format!(
                        "unknown set option `{opt}` in `{key}`; expected F<name>.chunk, F<name>.delete_limit or F<name>.xattrs"
                    ),
                )),
            }
            continue;
        }
        if !KEYS.contains(&key) {
            errors.push(err(
                line,
                format!("unknown key `{key}`; expected one of: {}", KEYS.join(", ")),
            ));
            continue;
        }
        if let Some((_, first)) = values.get(key) {
            errors.push(err(line, format!("`{key}` is set twice (first on line {first})")));
            continue;
        }
        values.insert(key.to_string(), (value.to_string(), line));
    }

    // Typed extraction: each helper records an error and yields None.
    let mut get = |key: &str, parse: &dyn Fn(&str) -> Result<(), String>| -> Option<(String, usize)> {
        let (v, line) = values.get(key)?.clone();
        match parse(&v) {
            Ok(()) => Some((v, line)),
            Err(e) => {
                errors.push(err(line, format!("`{key}`: {e}")));
                None
            }
        }
    };
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("expected an IP address, found {s:?}"))
    };
    let port = |s: &str| match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("expected a port from 1 to 65535, found {s:?}")),
    };
    let dur = |s: &str| parse_duration(s).map(|_| ());
    let positive = |s: &str| match parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0".to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    let boolean = |s: &str| parse_bool(s).map(|_| ());
    let fp = |s: &str| {
        if crate::config::is_fingerprint(s) {
            Ok(())
        } else {
            Err(format!(
                "expected a fingerprint like sha256:<64 hex digits> (as printed by `hamirror init`), found {s:?}"
            ))
        }
    };
    let name = |s: &str| {
        if crate::config::is_node_name(s) {
            Ok(())
        } else {
            Err(format!(
                "expected a node name (letters, digits, '-', '_', '.'), found {s:?}"
            ))
        }
    };
    let chunk = |s: &str| ChunkParams::parse(s).map(|_| ());
    let pct = |s: &str| parse_percent(s).map(|_| ());
    let path = |s: &str| {
        if s.contains('\0') {
            Err("path contains NUL".into())
        } else {
            Ok(())
        }
    };

    let address = get("address", &ip);
    let lan = get("lan", &ip);
    let port_v = get("port", &port);
    let hb_port = get("heartbeat_port", &port);
    let root = get("root", &path);
    let state = get("state", &path);
    let key = get("key", &path);
    let fingerprint = get("fingerprint", &fp);
    let heartbeat_key = get("heartbeat_key", &path);
    let keepalive = get("keepalive", &dur);
    let warntime = get("warntime", &dur);
    let deadtime = get("deadtime", &dur);
    let initdead = get("initdead", &dur);
    let takeover_delay = get("takeover_delay", &dur);
    let auto_failback = get("auto_failback", &boolean);
    let preferred = get("preferred", &name);
    let failover = get("failover", &|s: &str| FailoverMode::parse(s).map(|_| ()));
    let chunk_v = get("chunk", &chunk);
    let delete_limit = get("delete_limit", &pct);
    let xattrs = get("xattrs", &|s: &str| super::XattrNamespaces::parse(s).map(|_| ()));
    let rescan = get("rescan_interval", &dur);
    let quiet = get("quiet_period", &|s: &str| match parse_duration(s) {
        Ok(d) if d <= MAX_QUIET_PERIOD => Ok(()),
        Ok(_) => Err(format!(
            "at most {}s (it delays every change `watch` sees)",
            MAX_QUIET_PERIOD.as_secs()
        )),
        Err(e) => Err(e),
    });
    let hook_timeout = get("hook_timeout", &positive);
    let count = |lo: u32| {
        move |s: &str| match s.trim().parse::<u32>() {
            Ok(n) if (lo..=1000).contains(&n) => Ok(()),
            _ => Err(format!("expected a whole number from {lo} to 1000, found {s:?}")),
        }
    };
    let monitor_interval = get("monitor_interval", &|s: &str| match parse_duration(s) {
        Ok(d) if !d.is_zero() && d < Duration::from_millis(100) => {
            Err("0 (off) or at least 100ms: every check runs the S hooks".to_string())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    });
    let monitor_timeout = get("monitor_timeout", &positive);
    let monitor_failures = get("monitor_failures", &count(1));
    let monitor_restarts = get("monitor_restarts", &count(0));
    let monitor_window = get("monitor_window", &positive);
    let metrics_listen = get("metrics_listen", &|s: &str| {
        s.parse::<std::net::SocketAddr>()
            .map(|_| ())
            .map_err(|_| format!("expected ADDRESS:PORT like 127.0.0.1:9798 or [::1]:9798, found {s:?}"))
    });
    let metrics_textfile = get("metrics_textfile", &path);

    if address.is_none() && !values.contains_key("address") {
        errors.push(ConfigError::file(
            file,
            "missing required key `address` (this node's crossover-link IP address)".to_string(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { config_dir.join(p) }
    };
    let d = Timers::default();
    let td = |v: Option<(String, usize)>, def: Duration| v.map_or(def, |(s, _)| parse_duration(&s).expect("validated"));
    let state_dir = state.map_or_else(|| PathBuf::from("/var/lib/hamirror").join(node), |(s, _)| resolve(&s));
    Ok(NodeConf {
        address: address.expect("checked above").0.parse().expect("validated"),
        lan: lan.map(|(s, _)| s.parse().expect("validated")),
        port: port_v.map_or(DEFAULT_PORT, |(s, _)| s.parse().expect("validated")),
        heartbeat_port: hb_port.map_or(DEFAULT_HEARTBEAT_PORT, |(s, _)| s.parse().expect("validated")),
        root: root.map_or_else(|| PathBuf::from("/"), |(s, _)| resolve(&s)),
        key: key.map_or_else(|| state_dir.join("identity.pem"), |(s, _)| resolve(&s)),
        state: state_dir,
        fingerprint: fingerprint.map(|(s, _)| s),
        heartbeat_key: heartbeat_key.map(|(s, _)| resolve(&s)),
        timers: Timers {
            keepalive: td(keepalive, d.keepalive),
            warntime: td(warntime, d.warntime),
            deadtime: td(deadtime, d.deadtime),
            initdead: td(initdead, d.initdead),
            takeover_delay: td(takeover_delay, d.takeover_delay),
        },
        auto_failback: auto_failback.is_some_and(|(s, _)| parse_bool(&s).expect("validated")),
        preferred: preferred.map(|(s, _)| s),
        failover: failover.map_or(FailoverMode::Builtin, |(s, _)| {
            FailoverMode::parse(&s).expect("validated")
        }),
        chunk: chunk_v.map_or_else(ChunkParams::default, |(s, _)| {
            ChunkParams::parse(&s).expect("validated")
        }),
        delete_limit: delete_limit.map_or(50, |(s, _)| parse_percent(&s).expect("validated")),
        xattrs: xattrs.map_or_else(super::XattrNamespaces::default, |(s, _)| {
            super::XattrNamespaces::parse(&s).expect("validated")
        }),
        rescan_interval: td(rescan, Duration::from_secs(3600)),
        quiet_period: td(quiet, DEFAULT_QUIET_PERIOD),
        hook_timeout: td(hook_timeout, DEFAULT_HOOK_TIMEOUT),
        monitor: {
            let m = MonitorConf::default();
            let n = |v: Option<(String, usize)>, def: u32| v.map_or(def, |(s, _)| s.trim().parse().expect("validated"));
            MonitorConf {
                interval: td(monitor_interval, m.interval),
                timeout: td(monitor_timeout, m.timeout),
                failures: n(monitor_failures, m.failures),
                restarts: n(monitor_restarts, m.restarts),
                window: td(monitor_window, m.window),
            }
        },
        metrics_listen: metrics_listen.map(|(s, _)| s.parse().expect("validated")),
        metrics_textfile: metrics_textfile.map(|(s, _)| resolve(&s)),
        set_overrides: overrides,
        lines: values.into_iter().map(|(k, (_, l))| (k, l)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<NodeConf, Vec<ConfigError>> {
        parse(Path::new("/c/serv1.conf"), text, "serv1", Path::new("/c"))
    }

    #[test]
    fn defaults_fill_in_and_relative_paths_resolve_against_the_config_dir() {
        let c = p("address = 10.0.0.1\nroot = roots/serv1 # comment\n").unwrap();
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.root, PathBuf::from("/c/roots/serv1"));
        assert_eq!(c.state, PathBuf::from("/var/lib/hamirror/serv1"));
        assert_eq!(c.key, PathBuf::from("/var/lib/hamirror/serv1/identity.pem"));
        assert_eq!(c.timers, Timers::default());
        assert!(!c.auto_failback);
        assert_eq!(c.hook_timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(c.lines["root"], 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let errs = p("address = nope\nport = 0\nfrobnicate = 1\njust words\nkeepalive = soon\n").unwrap_err();
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(3), Some(4), Some(1), Some(2), Some(5)], "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .starts_with("/c/serv1.conf:3: unknown key `frobnicate`"),
            "{}",
            errs[0]
        );
        assert!(errs[2].msg.contains("expected an IP address"));
    }

    #[test]
    fn failover_is_builtin_or_pacemaker() {
        assert_eq!(p("address = 10.0.0.1\n").unwrap().failover, FailoverMode::Builtin);
        let c = p("address = 10.0.0.1\nfailover = pacemaker\n").unwrap();
        assert_eq!(c.failover, FailoverMode::Pacemaker);
        let errs = p("address = 10.0.0.1\nfailover = corosync\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].msg.contains("expected `builtin` or `pacemaker`"), "{errs:?}");
    }

    #[test]
    fn missing_address_and_duplicate_keys_are_errors() {
        let errs = p("port = 1\nport = 2\n").unwrap_err();
        assert!(errs.iter().any(|e| e.msg.contains("set twice (first on line 1)")));
        assert!(errs.iter().any(|e| e.msg.contains("missing required key `address`")));
    }

    #[test]
    fn the_monitor_is_off_by_default_and_its_keys_are_checked() {
        let c = p("address = 10.0.0.1\n").unwrap();
        assert!(!c.monitor.enabled());
        let c = p("address = 10.0.0.1\nmonitor_interval = 5s\nmonitor_failures = 2\nmonitor_restarts = 0\n").unwrap();
        assert_eq!(c.monitor.interval, Duration::from_secs(5));
        assert_eq!((c.monitor.failures, c.monitor.restarts), (2, 0));
        assert_eq!(c.monitor.timeout, Duration::from_secs(20));
        let errs =
            p("address = 10.0.0.1\nmonitor_interval = 10ms\nmonitor_failures = 0\nmonitor_restarts = x\n").unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text[0].contains(":2:") && text[0].contains("at least 100ms"),
            "{text:?}"
        );
        assert!(
            text[1].contains(":3:") && text[1].contains("from 1 to 1000"),
            "{text:?}"
        );
        assert!(
            text[2].contains(":4:") && text[2].contains("from 0 to 1000"),
            "{text:?}"
        );
    }

    #[test]
    fn metrics_are_off_by_default_and_take_an_address_and_a_file() {
        let c = p("address = 10.0.0.1\n").unwrap();
        assert_eq!((c.metrics_listen, c.metrics_textfile.clone()), (None, None));
        let c =
            p("address = 10.0.0.1\nmetrics_listen = 127.0.0.1:9798\nmetrics_textfile = /var/lib/n/h.prom\n").unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9798".parse().unwrap()));
        assert_eq!(c.metrics_textfile, Some(PathBuf::from("/var/lib/n/h.prom")));
        let errs = p("address = 10.0.0.1\nmetrics_listen = 9798\n").unwrap_err();
        assert!(
            errs[0].to_string().contains(":2:") && errs[0].to_string().contains("ADDRESS:PORT"),
            "{errs:?}"
        );
    }

    #[test]
    fn hook_timeout_is_read_and_must_be_positive() {
        let c = p("address = 10.0.0.1\nhook_timeout = 90s\n").unwrap();
        assert_eq!(c.hook_timeout, Duration::from_secs(90));
        let errs = p("address = 10.0.0.1\nhook_timeout = 0\n").unwrap_err();
        assert!(
            errs[0].to_string().contains("`hook_timeout`: must be longer than 0"),
            "{errs:?}"
        );
    }

    #[test]
    fn set_overrides_are_parsed() {
        let c = p("address = ::1\nFsmbd.chunk = 8K/32K/128K\nFsmbd.delete_limit = 10%\n").unwrap();
        let o = &c.set_overrides["Fsmbd"];
        assert_eq!(o.chunk.unwrap().avg, 32 << 10);
        assert_eq!(o.delete_limit, Some(10));
        assert!(p("address = ::1\nFsmbd.colour = red\n").is_err());
    }

    #[test]
    fn xattrs_have_a_default_a_node_value_and_a_set_override() {
        use crate::config::XattrNamespaces;
        assert_eq!(p("address = ::1\n").unwrap().xattrs, XattrNamespaces::default());
        let c = p("address = ::1\nxattrs = user\nFsmbd.xattrs = none\n").unwrap();
        assert_eq!(c.xattrs.to_string(), "user");
        assert!(c.set_overrides["Fsmbd"].xattrs.unwrap().is_none());
        let errs = p("address = ::1\nxattrs = user bogus\n").unwrap_err();
        assert!(
            errs[0].to_string().contains("`xattrs`: unknown namespace \"bogus\""),
            "{errs:?}"
        );
    }

    #[test]
    fn quiet_period_has_a_default_and_a_bound() {
        assert_eq!(p("address = ::1\n").unwrap().quiet_period, DEFAULT_QUIET_PERIOD);
        assert_eq!(
            p("address = ::1\nquiet_period = 20ms\n").unwrap().quiet_period,
            Duration::from_millis(20)
        );
        let errs = p("address = ::1\nquiet_period = 1m\n").unwrap_err();
        assert!(errs[0].msg.contains("at most 10s"), "{errs:?}");
    }
}
