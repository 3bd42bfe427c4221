//! Reading the `cluster.d` directory: which nodes exist, each node's mirror
//! sets and hooks, the reachlist, and the rules that span files (two nodes,
//! unique set names, non-overlapping roots, timers that agree). Every
//! problem is collected; nothing stops at the first one.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::conf::{self, NodeConf};
use super::exclude::{Excludes, Rule};
use super::values::{ChunkParams, human_duration};
use super::{Cluster, ConfigError, Group, Node, is_node_name};

/// One path of a set, as written in its `F` file (trailing `/` removed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetRoot {
    /// Absolute path as the cluster knows it (`/var/spool/lpd`).
    pub path: PathBuf,
    /// Written with a trailing `/`: the directory and all it contains.
    pub dir: bool,
    pub line: usize,
}

/// A mirror set: one `F<name>` file.
#[derive(Debug, Clone)]
pub struct MirrorSet {
    /// The file name, `Fsmbd`.
    pub name: String,
    pub file: PathBuf,
    pub roots: Vec<SetRoot>,
    pub chunk: ChunkParams,
    /// Refuse a sync that would delete more than this share (%) of the replica.
    pub delete_limit: u8,
    /// The `- PATTERN` / `+ PATTERN` lines: what under the roots is not mirrored.
    pub excludes: Excludes,
    /// Extended-attribute namespaces mirrored.
    pub xattrs: super::XattrNamespaces,
}

#[cfg(test)]
impl MirrorSet {
    /// A set for unit tests: `roots` as (path, is a directory), line 1 each,
    /// the default delete limit.
    pub(crate) fn for_tests(name: &str, file: PathBuf, roots: &[(&str, bool)], chunk: ChunkParams) -> MirrorSet {
        MirrorSet {
            name: name.into(),
            file,
            roots: roots
                .iter()
                .map(|&(p, dir)| SetRoot {
                    path: PathBuf::from(p),
                    dir,
                    line: 1,
                })
                .collect(),
            chunk,
            delete_limit: 50,
            excludes: Excludes::default(),
            xattrs: super::XattrNamespaces::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HookKind {
    Start,
    Stop,
    Notify,
}

/// An `S<NN>name`, `K<NN>name` or `N<NN>name` executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub kind: HookKind,
    pub order: u32,
    /// The file name, `S10ipaddr`.
    pub name: String,
    pub path: PathBuf,
}

/// One reachlist host: probed with ICMP echo, or with a TCP connect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReachHost {
    pub host: String,
    pub tcp_port: Option<u16>,
    pub line: usize,
}

/// Keys whose value must be the same in every `NODE.conf`: the arbiter on
/// each side reasons with the other side's timers.
const CLUSTER_WIDE: &[&str] = &[
    "keepalive",
    "warntime",
    "deadtime",
    "initdead",
    "takeover_delay",
    "auto_failback",
    "preferred",
    "failover",
];

pub(super) fn load(dir: &Path) -> Result<Cluster, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
            v.sort();
            v
        }
        Err(e) => {
            return Err(vec![ConfigError::file(
                dir,
                format!("cannot read the configuration directory: {e}"),
            )]);
        }
    };

    let mut nodes = Vec::new();
    let mut broken = Vec::new();
    for path in &entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(node) = name.strip_suffix(".conf") else {
            if path.is_dir()
                && !entries
                    .iter()
                    .any(|p| p.file_name().and_then(|n| n.to_str()) == Some(&format!("{name}.conf")))
            {
                warnings.push(ConfigError::file(
                    path,
                    format!("directory without a {name}.conf; ignored"),
                ));
            }
            continue;
        };
        if !is_node_name(node) {
            errors.push(ConfigError::file(
                path,
                format!("{node:?} is not a valid node name (letters, digits, '-', '_', '.')"),
            ));
            continue;
        }
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError::file(path, format!("cannot read: {e}")));
                continue;
            }
        };
        match conf::parse(path, &text, node, dir) {
            Ok(conf) => {
                let group = load_group(&dir.join(node), node, &conf, path, &mut errors, &mut warnings);
                nodes.push(Node {
                    name: node.to_string(),
                    conf_file: path.clone(),
                    conf,
                    group,
                });
            }
            Err(mut e) => {
                errors.append(&mut e);
                // Still read the node's sets and hooks so their problems are listed too.
                let fallback = conf::parse(path, "address = 0.0.0.0", node, dir).expect("minimal conf parses");
                load_group(&dir.join(node), node, &fallback, path, &mut errors, &mut warnings);
                broken.push(node.to_string());
            }
        }
    }

    let reach_file = dir.join("reachlist");
    let reachlist = load_reachlist(&reach_file, &mut errors);
    check_cluster(dir, &nodes, &broken, &mut errors, &mut warnings);

    if errors.is_empty() {
        Ok(Cluster {
            dir: dir.to_path_buf(),
            nodes,
            reachlist,
            warnings,
        })
    } else {
        Err(errors)
    }
}

/// Reads `DIR/NODE/`: its `F` sets and `S`/`K`/`N` hooks.
fn load_group(
    node_dir: &Path,
    node: &str,
    conf: &NodeConf,
    conf_file: &Path,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Group {
    let mut group = Group {
        name: node.to_string(),
        owner: node.to_string(),
        sets: vec![],
        start: vec![],
        stop: vec![],
        notify: vec![],
        monitor: conf.monitor,
    };
    let files = match fs::read_dir(node_dir) {
        Ok(rd) => {
            let mut v: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
            v.sort();
            v
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(ConfigError::file(
                node_dir,
                format!("no directory: node {node} has no sets and no hooks"),
            ));
            vec![]
        }
        Err(e) => {
            errors.push(ConfigError::file(node_dir, format!("cannot read: {e}")));
            vec![]
        }
    };
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            errors.push(ConfigError::file(&path, "file name is not UTF-8".into()));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if is_backup_name(&name) {
            warnings.push(ConfigError::file(&path, "looks like a backup copy; ignored".into()));
            continue;
        }
        let first = name.chars().next().unwrap_or(' ');
        match first {
            'F' => {
                if let Some(set) = load_set(&path, &name, conf, errors) {
                    let roots: Vec<(&[u8], bool, usize)> = set
                        .roots
                        .iter()
                        .map(|r| (set_path_of(&r.path), r.dir, r.line))
                        .collect();
                    for (line, msg) in set.excludes.warnings(&roots) {
                        warnings.push(ConfigError::at(&path, line, msg));
                    }
                    group.sets.push(set);
                }
            }
            'S' | 'K' | 'N' => {
                if let Some(hook) = load_hook(&path, &name, errors) {
                    match hook.kind {
                        HookKind::Start => group.start.push(hook),
                        HookKind::Stop => group.stop.push(hook),
                        HookKind::Notify => group.notify.push(hook),
                    }
                }
            }
            _ => errors.push(ConfigError::file(
                &path,
                "unexpected file; expected F<name> (mirror set), S<NN><name> (start hook), K<NN><name> (stop hook) or N<NN><name> (notify hook)".into(),
            )),
        }
    }
    for hooks in [&mut group.start, &mut group.stop, &mut group.notify] {
        hooks.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    }
    for (set, o) in &conf.set_overrides {
        if !group.sets.iter().any(|s| &s.name == set) {
            errors.push(ConfigError::at(
                conf_file,
                o.line,
                format!("`{set}.…` names a set that {} does not hold", node_dir.display()),
            ));
        }
    }
    group
}

/// A root's set path: its absolute path without the leading `/`.
fn set_path_of(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    let b = p.as_os_str().as_bytes();
    b.strip_prefix(b"/").unwrap_or(b)
}

fn is_backup_name(name: &str) -> bool {
    name.ends_with('~')
        || [
            ".bak",
            ".orig",
            ".swp",
            ".dpkg-old",
            ".dpkg-new",
            ".dpkg-dist",
            ".rpmnew",
            ".rpmsave",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

fn load_set(path: &Path, name: &str, conf: &NodeConf, errors: &mut Vec<ConfigError>) -> Option<MirrorSet> {
    if name.len() < 2
        || !name[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        errors.push(ConfigError::file(
            path,
            "a set file is named F<name> with letters, digits, '-', '_', '.' in the name".into(),
        ));
        return None;
    }
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::file(path, format!("cannot read: {e}")));
            return None;
        }
    };
    let before = errors.len();
    let mut roots: Vec<SetRoot> = Vec::new();
    let mut excludes = Excludes::default();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        if let Some(rule) = parse_rule_line(content, i + 1) {
            match rule {
                Ok(r) => excludes.rules.push(r),
                Err(msg) => errors.push(ConfigError::at(path, i + 1, msg)),
            }
            continue;
        }
        for word in content.split_whitespace() {
            match parse_root(word) {
                Ok((p, dir)) => {
                    if let Some(prev) = roots.iter().find(|r| r.path == p) {
                        errors.push(ConfigError::at(
                            path,
                            i + 1,
                            format!("{word} is listed twice (first on line {})", prev.line),
                        ));
                    } else {
                        roots.push(SetRoot {
                            path: p,
                            dir,
                            line: i + 1,
                        });
                    }
                }
                Err(msg) => errors.push(ConfigError::at(path, i + 1, msg)),
            }
        }
    }
    if roots.is_empty() && errors.len() == before {
        errors.push(ConfigError::file(
            path,
            "the set lists no paths; expected absolute paths, directories ending in '/'".into(),
        ));
    }
    let o = conf.set_overrides.get(name);
    Some(MirrorSet {
        name: name.to_string(),
        file: path.to_path_buf(),
        roots,
        chunk: o.and_then(|o| o.chunk).unwrap_or(conf.chunk),
        delete_limit: o.and_then(|o| o.delete_limit).unwrap_or(conf.delete_limit),
        excludes,
        xattrs: o.and_then(|o| o.xattrs).unwrap_or(conf.xattrs),
    })
}

/// A `- PATTERN` or `+ PATTERN` line of an `F` file (`None`: a line of
/// paths). The pattern is the rest of the line, spaces inside kept.
fn parse_rule_line(content: &str, line: usize) -> Option<Result<Rule, String>> {
    let t = content.trim();
    let include = match t.as_bytes().first() {
        Some(b'-') => false,
        Some(b'+') => true,
        _ => return None,
    };
    let rest = &t[1..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        let sign = &t[..1];
        return Some(Err(format!(
            "{t:?}: expected `{sign} PATTERN` (a space after `{sign}`), like `- *.tmp` or `- /var/cache/x/`"
        )));
    }
    Some(Rule::parse(include, rest.trim(), line))
}

/// Validates one path word of an `F` file.
fn parse_root(word: &str) -> Result<(PathBuf, bool), String> {
    if !word.starts_with('/') {
        return Err(format!(
            "{word:?} is not an absolute path; expected a path starting with '/'"
        ));
    }
    let dir = word.ends_with('/');
    let p = Path::new(word);
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || word.contains("/./")
        || word.ends_with("/.")
    {
        return Err(format!("{word:?} contains '.' or '..'; expected a plain absolute path"));
    }
    let clean: PathBuf = p.components().collect();
    if clean == Path::new("/") {
        return Err("\"/\" cannot be mirrored as a whole; list the directories to mirror".into());
    }
    Ok((clean, dir))
}

fn load_hook(path: &Path, name: &str, errors: &mut Vec<ConfigError>) -> Option<Hook> {
    let kind = match &name[..1] {
        "S" => HookKind::Start,
        "K" => HookKind::Stop,
        _ => HookKind::Notify,
    };
    let digits: String = name[1..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(order) = digits.parse::<u32>() else {
        errors.push(ConfigError::file(
            path,
            format!(
                "a hook is named {}<NN><name> with a run-order number, like {}10{}",
                &name[..1],
                &name[..1],
                &name[1..]
            ),
        ));
        return None;
    };
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => errors.push(ConfigError::file(path, "a hook must be a regular file".into())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => errors.push(ConfigError::file(
            path,
            format!("hook is not executable; run: chmod +x {}", path.display()),
        )),
        Ok(_) => {
            return Some(Hook {
                kind,
                order,
                name: name.to_string(),
                path: path.to_path_buf(),
            });
        }
        Err(e) => errors.push(ConfigError::file(path, format!("cannot read: {e}"))),
    }
    None
}

fn load_reachlist(file: &Path, errors: &mut Vec<ConfigError>) -> Vec<ReachHost> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::file(
                file,
                format!("cannot read ({e}); the reachlist names the LAN hosts each node must reach, one per line, so the arbiter can tell an isolated node from a dead peer"),
            ));
            return vec![];
        }
    };
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split('#').next().unwrap_or("").split_whitespace().collect();
        let host = match words.as_slice() {
            [] => continue,
            [h] => Ok(ReachHost {
                host: h.to_string(),
                tcp_port: None,
                line: i + 1,
            }),
            [h, t] => match t
                .strip_prefix("tcp:")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0)
            {
                Some(p) => Ok(ReachHost {
                    host: h.to_string(),
                    tcp_port: Some(p),
                    line: i + 1,
                }),
                None => Err(format!("expected `tcp:PORT` after the host, found {t:?}")),
            },
            _ => Err("expected `HOST` or `HOST tcp:PORT`".to_string()),
        };
        match host {
            Ok(h) if !is_host(&h.host) => errors.push(ConfigError::at(
                file,
                i + 1,
                format!("{:?} is not an IP address or host name", h.host),
            )),
            Ok(h) => hosts.push(h),
            Err(msg) => errors.push(ConfigError::at(file, i + 1, msg)),
        }
    }
    if hosts.is_empty() && errors.is_empty() {
        errors.push(ConfigError::file(
            file,
            "the reachlist is empty; expected at least one LAN host (router, DNS server, a switch) per line".into(),
        ));
    }
    hosts
}

fn is_host(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
        || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)))
}

/// Rules that span files.
fn check_cluster(
    dir: &Path,
    nodes: &[Node],
    broken: &[String],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    check_node_count(dir, nodes, broken, errors);
    check_sets(nodes, errors);
    check_endpoints(nodes, errors);
    for n in nodes {
        check_timers(n, errors);
        if n.conf.fingerprint.is_none() {
            warnings.push(ConfigError::file(
                &n.conf_file,
                format!(
                    "no `fingerprint`: run `hamirror init` on {} and put the fingerprint it prints here",
                    n.name
                ),
            ));
        }
        if let Some(p) = &n.conf.preferred
            && !nodes.iter().any(|m| &m.name == p)
            && !broken.contains(p)
        {
            errors.push(ConfigError::at(
                &n.conf_file,
                n.conf.lines["preferred"],
                format!("`preferred` names {p:?}, which is not a node of this cluster"),
            ));
        }
    }
    if let [a, b] = nodes
        && a.conf.preferred.is_none()
        && b.conf.preferred.is_none()
    {
        warnings.push(ConfigError::file(
            &a.conf_file,
            format!(
                "no `preferred` node: when the nodes lose contact with equal reach scores both wait `takeover_delay` \
                 before taking over; set `preferred = {}` (or {}) in both files so one acts first (docs/FAILOVER.md)",
                a.name, b.name
            ),
        ));
    }
    // Every node against the first: with two nodes, the one pair.
    if let [a, rest @ ..] = nodes {
        let every = if rest.len() > 1 { "every node" } else { "both nodes" };
        for b in rest {
            for key in CLUSTER_WIDE {
                let (va, vb) = (cluster_value(&a.conf, key), cluster_value(&b.conf, key));
                if va != vb {
                    let line = b.conf.lines.get(*key).or(a.conf.lines.get(*key)).copied();
                    let file = if b.conf.lines.contains_key(*key) {
                        &b.conf_file
                    } else {
                        &a.conf_file
                    };
                    errors.push(ConfigError {
                        file: file.clone(),
                        line,
                        msg: format!(
                            "`{key}` is {va} on {} but {vb} on {}; it must be the same on {every}",
                            a.name, b.name
                        ),
                    });
                }
            }
        }
    }
}

/// Two nodes, or more when every one of them leaves the decisions to
/// Pacemaker: the built-in arbiter knows one peer only.
fn check_node_count(dir: &Path, nodes: &[Node], broken: &[String], errors: &mut Vec<ConfigError>) {
    let count = nodes.len() + broken.len();
    if count == 2 {
        return;
    }
    if count > 2 {
        let builtin: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.conf.failover != crate::config::FailoverMode::Pacemaker)
            .collect();
        for n in &builtin {
            errors.push(ConfigError {
                file: n.conf_file.clone(),
                line: n.conf.lines.get("failover").copied(),
                msg: format!(
                    "this cluster has {count} nodes, but {} leaves `failover` at {}: the built-in arbiter is \
                     two-node; with more nodes put `failover = pacemaker` in every NODE.conf and let Pacemaker \
                     decide (docs/PACEMAKER.md)",
                    n.name,
                    n.conf.failover.name()
                ),
            });
        }
        // A node whose file did not parse was reported already.
        return;
    }
    let mut names: Vec<_> = nodes
        .iter()
        .map(|n| &n.name)
        .chain(broken)
        .map(|n| format!("{n}.conf"))
        .collect();
    names.sort();
    errors.push(ConfigError::file(
        dir,
        format!(
            "a cluster has at least two nodes, each with a NODE.conf (more than two only with \
             `failover = pacemaker`); found {count} ({})",
            names.join(", ")
        ),
    ));
}

fn cluster_value(c: &NodeConf, key: &str) -> String {
    let t = &c.timers;
    match key {
        "keepalive" => human_duration(t.keepalive),
        "warntime" => human_duration(t.warntime),
        "deadtime" => human_duration(t.deadtime),
        "initdead" => human_duration(t.initdead),
        "takeover_delay" => human_duration(t.takeover_delay),
        "auto_failback" => if c.auto_failback { "yes" } else { "no" }.to_string(),
        "preferred" => c.preferred.clone().unwrap_or_else(|| "(unset)".into()),
        "failover" => c.failover.name().to_string(),
        _ => unreachable!("CLUSTER_WIDE lists only the keys above"),
    }
}

/// Timer arithmetic the arbiter relies on (reasoning in `docs/FAILOVER.md`).
fn check_timers(n: &Node, errors: &mut Vec<ConfigError>) {
    let t = &n.conf.timers;
    let line = |k: &str| n.conf.lines.get(k).copied();
    let mut bad = |key: &str, msg: String| {
        errors.push(ConfigError {
            file: n.conf_file.clone(),
            line: line(key),
            msg,
        })
    };
    if n.conf.failover == super::FailoverMode::Pacemaker && n.conf.auto_failback {
        bad(
            "auto_failback",
            "`auto_failback` cannot be used with `failover = pacemaker`: where a group runs is Pacemaker's \
             decision (use resource-stickiness and location scores there)"
                .into(),
        );
    }
    if t.keepalive.is_zero() {
        bad("keepalive", "`keepalive` must be greater than 0".into());
        return;
    }
    if t.deadtime <= t.keepalive * 2 {
        bad(
            "deadtime",
            format!(
                "`deadtime` ({}) must be more than twice `keepalive` ({}), or one late heartbeat declares the peer dead",
                human_duration(t.deadtime),
                human_duration(t.keepalive)
            ),
        );
    }
    if t.warntime < t.keepalive || t.warntime >= t.deadtime {
        bad(
            "warntime",
            format!(
                "`warntime` ({}) must lie between `keepalive` ({}) and `deadtime` ({})",
                human_duration(t.warntime),
                human_duration(t.keepalive),
                human_duration(t.deadtime)
            ),
        );
    }
    if t.deadtime > t.keepalive * 2 && t.release_budget() < t.keepalive {
        // The never-both-hold rule without contact: an isolated node must be
        // able to stop its groups before the survivor starts them.
        let need = t.keepalive * 2 + t.warntime.max(t.probe_latency());
        bad(
            "deadtime",
            format!(
                "`deadtime` ({}) leaves an isolated node no time to stop its groups before the peer takes them over: \
                 it must be at least 2 × keepalive + max(warntime, {} × keepalive) = {} (see docs/FAILOVER.md, release budget)",
                human_duration(t.deadtime),
                super::Timers::PROBE_FALL + 1,
                human_duration(need)
            ),
        );
    }
    if t.takeover_delay < t.keepalive * 2 {
        bad(
            "takeover_delay",
            format!(
                "`takeover_delay` ({}) must be at least twice `keepalive` ({}), so a link that heals meanwhile delivers a heartbeat before the non-preferred node acts",
                human_duration(t.takeover_delay),
                human_duration(t.keepalive)
            ),
        );
    }
    if t.initdead < t.deadtime {
        bad(
            "initdead",
            format!(
                "`initdead` ({}) must be at least `deadtime` ({})",
                human_duration(t.initdead),
                human_duration(t.deadtime)
            ),
        );
    }
}

/// Set names unique across nodes; no path mirrored by two sets.
fn check_sets(nodes: &[Node], errors: &mut Vec<ConfigError>) {
    let mut by_name: BTreeMap<&str, &MirrorSet> = BTreeMap::new();
    let all: Vec<&MirrorSet> = nodes.iter().flat_map(|n| &n.group.sets).collect();
    for s in &all {
        if let Some(prev) = by_name.insert(&s.name, s) {
            errors.push(ConfigError::file(
                &s.file,
                format!(
                    "set {} is also defined in {}; a set name must be unique in the cluster",
                    s.name,
                    prev.file.display()
                ),
            ));
        }
    }
    let roots: Vec<(&MirrorSet, &SetRoot)> = all.iter().flat_map(|s| s.roots.iter().map(move |r| (*s, r))).collect();
    for (i, (a, ra)) in roots.iter().enumerate() {
        for (b, rb) in &roots[i + 1..] {
            let overlap = (ra.dir && rb.path.starts_with(&ra.path))
                || (rb.dir && ra.path.starts_with(&rb.path))
                || ra.path == rb.path;
            if overlap {
                errors.push(ConfigError::at(
                    &b.file,
                    rb.line,
                    format!(
                        "{} overlaps {} ({}:{}); a path may belong to one set only",
                        rb.path.display(),
                        ra.path.display(),
                        a.file.display(),
                        ra.line
                    ),
                ));
            }
        }
    }
}

/// Two nodes sharing an address (one test machine) need distinct ports.
fn check_endpoints(nodes: &[Node], errors: &mut Vec<ConfigError>) {
    let mut seen: BTreeMap<(std::net::IpAddr, u16), &str> = BTreeMap::new();
    for n in nodes {
        let c = &n.conf;
        let mut eps = vec![
            (c.address, c.port, "port"),
            (c.address, c.heartbeat_port, "heartbeat_port"),
        ];
        if let Some(lan) = c.lan {
            eps.push((lan, c.port, "port"));
            eps.push((lan, c.heartbeat_port, "heartbeat_port"));
        }
        eps.dedup();
        for (ip, port, key) in eps {
            if let Some(other) = seen.insert((ip, port), &n.name) {
                errors.push(ConfigError {
                    file: n.conf_file.clone(),
                    line: c.lines.get(key).copied(),
                    msg: format!("{ip} port {port} is already used by {other}; two nodes on one address need different `port` and `heartbeat_port`"),
                });
            }
        }
    }
}

#[cfg(test)]
mod timer_tests {
    use super::*;

    fn node(timers: &str) -> Node {
        let file = Path::new("/c/serv1.conf");
        let text = format!("address = 10.0.0.1\n{timers}");
        let conf = conf::parse(file, &text, "serv1", Path::new("/c")).expect("parses");
        Node {
            name: "serv1".into(),
            conf_file: file.to_path_buf(),
            conf,
            group: Group {
                name: "serv1".into(),
                owner: "serv1".into(),
                sets: vec![],
                start: vec![],
                stop: vec![],
                notify: vec![],
                monitor: Default::default(),
            },
        }
    }

    fn errors(timers: &str) -> Vec<String> {
        let mut errors = Vec::new();
        check_timers(&node(timers), &mut errors);
        errors.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn the_defaults_and_the_examples_pass() {
        assert!(errors("").is_empty(), "{:?}", errors(""));
        let fast = "keepalive = 20ms\nwarntime = 60ms\ndeadtime = 160ms\ntakeover_delay = 40ms\ninitdead = 5s\n";
        assert!(errors(fast).is_empty(), "{:?}", errors(fast));
        let classic = "keepalive = 1\nwarntime = 5\ndeadtime = 10\ntakeover_delay = 2\ninitdead = 60\n";
        assert!(errors(classic).is_empty(), "{:?}", errors(classic));
    }

    #[test]
    fn auto_failback_is_refused_under_pacemaker() {
        let e = errors("failover = pacemaker\nauto_failback = yes\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("/c/serv1.conf:3: ") && e[0].contains("Pacemaker's decision"),
            "{e:?}"
        );
        assert!(errors("failover = pacemaker\n").is_empty());
    }

    #[test]
    fn deadtime_of_two_keepalives_or_less_is_rejected() {
        let e = errors("keepalive = 100ms\nwarntime = 150ms\ndeadtime = 200ms\n");
        assert!(e[0].contains("more than twice `keepalive`"), "{e:?}");
        assert!(e[0].starts_with("/c/serv1.conf:4: "), "{e:?}");
    }

    #[test]
    fn deadtime_without_a_release_budget_is_rejected() {
        // 50 ms keepalive: the prober needs 200 ms to see an isolated LAN,
        // so deadtime must be at least 100 + 200 = 300 ms.
        let e = errors("keepalive = 50ms\nwarntime = 100ms\ndeadtime = 250ms\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("no time to stop its groups") && e[0].contains("= 300ms"),
            "{e:?}"
        );
        assert!(errors("keepalive = 50ms\nwarntime = 100ms\ndeadtime = 300ms\n").is_empty());
        // A late warntime also eats the budget: 2 × 50 + 280 = 380 ms.
        let e = errors("keepalive = 50ms\nwarntime = 280ms\ndeadtime = 350ms\n");
        assert!(e.iter().any(|m| m.contains("= 380ms")), "{e:?}");
    }

    #[test]
    fn short_takeover_delay_and_misordered_timers_are_rejected() {
        let e = errors("takeover_delay = 50ms\n");
        assert!(
            e.iter()
                .any(|m| m.contains("`takeover_delay` (50ms) must be at least twice")),
            "{e:?}"
        );
        let e = errors("warntime = 400ms\n");
        assert!(
            e.iter().any(|m| m.contains("`warntime` (400ms) must lie between")),
            "{e:?}"
        );
        let e = errors("initdead = 300ms\n");
        assert!(
            e.iter().any(|m| m.contains("`initdead` (300ms) must be at least")),
            "{e:?}"
        );
        let e = errors("keepalive = 0\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }
}
