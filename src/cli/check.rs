//! `hamirror check`: validate the configuration directory and print the
//! cluster it describes — nodes, groups, sets with their roots, hooks in run
//! order, the reachlist. Also the rules of `config::strict` (owners and
//! modes of what root reads and runs, private and unpublished heartbeat
//! keys), as `hamirror run` applies them at start. Reads the configuration
//! only.

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
        let found = crate::config::strict::check(&cluster);
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
    let _ = writeln!(
        s,
        "cluster {}: valid, nodes {}",
        c.dir.display(),
        c.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    );
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
        }
        let _ = writeln!(s, "    start: {}", hooks(&g.start));
        let _ = writeln!(s, "    stop:  {}", hooks(&g.stop));
        if !g.notify.is_empty() {
            let _ = writeln!(s, "    notify: {}", hooks(&g.notify));
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
