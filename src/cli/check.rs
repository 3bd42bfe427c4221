//! `hamirror check`: validate the configuration directory and print the
//! cluster it describes — nodes, groups, sets with their roots, hooks in run
//! order, the reachlist. Also the rules of `config::strict` (owners and
//! modes of what root reads and runs, private and unpublished heartbeat
//! keys), as `hamirror run` applies them at start, this node's identity
//! key when the cluster mirrors (`run` needs it), and whether the roots of
//! this node's own sets exist (warnings, never an error). Reads the
//! configuration only.

use clap::Args;

use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::config::values::human_duration;
use crate::config::{Cluster, Hook};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print only problems, nothing when the configuration is valid.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(global: &Global, args: &CheckArgs) -> anyhow::Result<i32> {
    let loaded = Cluster::load(&global.config).and_then(|cluster| {
        // Ownership, modes and keys: only for a configuration that loads
        // (the paths come from it).
        let mut found = crate::config::strict::check(&cluster);
        found.errors.extend(missing_identity(&cluster, &global.node_name()));
        if found.errors.is_empty() {
            let mut cluster = cluster;
            cluster.warnings.extend(found.warnings);
            Ok(cluster)
        } else {
            for w in cluster.warnings.iter().chain(&found.warnings) {
                eprintln!("warning: {w}");
            }
            Err(crate::config::ConfigErrors(found.errors))
        }
    });
    match loaded {
        Ok(cluster) => {
            for w in &cluster.warnings {
                eprintln!("warning: {w}");
            }
            for w in missing_roots(&cluster, &global.node_name()) {
                eprintln!("warning: {w}");
            }
            if !args.quiet {
                print!("{}", describe(&cluster));
            }
            Ok(EXIT_OK)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            let n = errors.0.len();
            eprintln!(
                "{} is invalid: {n} problem{} found",
                global.config.display(),
                if n == 1 { "" } else { "s" }
            );
            Ok(EXIT_FAILED)
        }
    }
}

/// The roots of the sets this node (`me`, when it is one of the cluster's)
/// owns that do not exist here, or are not what the set file says (a
/// directory listed as a file or the other way round), one warning each
/// naming the set file and line. Only warnings: the configuration is still
/// valid, the path may be created later (a disk mounted by a start hook),
/// and sets the peer owns are only received here, so their paths may
/// legitimately not exist yet.
fn missing_roots(c: &Cluster, me: &str) -> Vec<String> {
    let Some(n) = c.node(me) else { return vec![] };
    let mut out = Vec::new();
    for set in &n.group.sets {
        for r in &set.roots {
            let local = n.local_path(&r.path);
            let what = match std::fs::symlink_metadata(&local) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
                Err(e) => format!("cannot be examined: {e}"),
                Ok(m) if r.dir && !m.is_dir() => "is listed as a directory (with a trailing /) but is not one".into(),
                Ok(m) if !r.dir && m.is_dir() => "is a directory but is listed as a file (add a trailing /)".into(),
                Ok(_) => continue,
            };
            out.push(format!(
                "{}:{}: {}{} {what} on {me} (at {}): nothing of it is mirrored until it does",
                set.file.display(),
                r.line,
                r.path.display(),
                if r.dir { "/" } else { "" },
                local.display()
            ));
        }
    }
    out
}

/// This node's identity key, when the cluster mirrors anything and the
/// key is missing: `hamirror run` would refuse to start (the mirror
/// transport pins each node's key), so `check` says it first. Only for the
/// node `check` runs on (the peer's key is on the peer).
fn missing_identity(c: &Cluster, me: &str) -> Option<crate::config::ConfigError> {
    let n = c.node(me)?;
    let mirrors = c.nodes.iter().any(|n| !n.group.sets.is_empty());
    (mirrors && !n.conf.key.exists()).then(|| {
        crate::config::ConfigError::file(
            &n.conf_file,
            format!(
                "no identity key at {} (the cluster mirrors sets: the peer pins this node's key): run \
                 `hamirror init` on {me} and put the fingerprint line it prints in {}",
                n.conf.key.display(),
                n.conf_file.display()
            ),
        )
    })
}

fn hooks(list: &[Hook]) -> String {
    if list.is_empty() {
        "(none)".into()
    } else {
        list.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(" → ")
    }
}

/// The human description `check` prints for a valid cluster.
pub fn describe(c: &Cluster) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "cluster {}: valid, nodes {}", c.dir.display(), {
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => names.join(""),
        }
    });
    for n in &c.nodes {
        let k = &n.conf;
        let lan = k.lan.map(|l| format!(", lan {l}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "\nnode {}: address {}{lan}, port {}, heartbeat port {}",
            n.name, k.address, k.port, k.heartbeat_port
        );
        let _ = writeln!(s, "  root {}, state {}", k.root.display(), k.state.display());
        let fp = k.fingerprint.as_deref().unwrap_or("(none: run `hamirror init`)");
        let _ = writeln!(s, "  key {}, fingerprint {fp}", k.key.display());
        let g = &n.group;
        let _ = writeln!(s, "  group {} (owner {})", g.name, g.owner);
        for set in &g.sets {
            let _ = writeln!(
                s,
                "    set {}: chunks {}, delete limit {}%",
                set.name, set.chunk, set.delete_limit
            );
            for r in &set.roots {
                let what = if r.dir { "directory" } else { "file" };
                let _ = writeln!(
                    s,
                    "      {}{}  ({what}, at {})",
                    r.path.display(),
                    if r.dir { "/" } else { "" },
                    n.local_path(&r.path).display()
                );
            }
            for r in &set.excludes.rules {
                let what = if r.include { "include" } else { "exclude" };
                let _ = writeln!(s, "      {what} {}  (line {})", r.text, r.line);
            }
        }
        let _ = writeln!(s, "    start: {}", hooks(&g.start));
        let _ = writeln!(s, "    stop:  {}", hooks(&g.stop));
        if !g.notify.is_empty() {
            let _ = writeln!(s, "    notify: {}", hooks(&g.notify));
        }
        let m = g.monitor;
        if m.enabled() {
            let _ = writeln!(
                s,
                "    monitor: S hooks `status` every {} (timeout {}); after {} failures in a row restart, at most {} \
                 within {}, then move to the peer",
                human_duration(m.interval),
                human_duration(m.timeout),
                m.failures,
                m.restarts,
                human_duration(m.window)
            );
        } else {
            let _ = writeln!(s, "    monitor: off (monitor_interval = 0)");
        }
    }
    let t = c
        .nodes
        .first()
        .map(|n| (n.conf.timers, n.conf.auto_failback, n.conf.preferred.clone()));
    if let Some((t, fb, pref)) = t {
        let _ = writeln!(
            s,
            "\ntimers: keepalive {}, warntime {}, deadtime {}, initdead {}, takeover delay {}; auto_failback {}; preferred {}",
            human_duration(t.keepalive),
            human_duration(t.warntime),
            human_duration(t.deadtime),
            human_duration(t.initdead),
            human_duration(t.takeover_delay),
            if fb { "yes" } else { "no" },
            pref.as_deref().unwrap_or("(none)")
        );
    }
    let hosts: Vec<String> = c
        .reachlist
        .iter()
        .map(|h| match h.tcp_port {
            Some(p) => format!("{} (tcp:{p})", h.host),
            None => format!("{} (icmp)", h.host),
        })
        .collect();
    let _ = writeln!(s, "reachlist: {}", hosts.join(", "));
    s
}
