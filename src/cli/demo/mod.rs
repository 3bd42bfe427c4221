//! `hamirror demo`: the README's first command. A two-node cluster on this
//! one machine from a built-in example (loopback, temporary directories, no
//! root): both nodes run the real daemon (`hamirror run`, this binary as
//! child processes); files written on serv1 are shown arriving on serv2
//! within milliseconds; serv1 is killed and serv2 takes its group over (the
//! demo's hooks print what real ones would do); serv2 writes; serv1 comes
//! back, gets serv2's changes (resync) and takes its group back (failback);
//! both copies are verified identical. Everything is removed at the end
//! (`--keep` leaves it for a look). Drives the daemons only through what an
//! operator has: files, signals and the operator socket.

mod example;
mod node;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::scan::bytes;
use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::config::Cluster;
use crate::noise::noise;
use crate::sync::verify;
use crate::transport::Endpoint;
use node::DemoNode;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (configuration, both roots, logs) afterwards.
    #[arg(long)]
    pub keep: bool,
}

fn say(s: &str) {
    println!("{s}");
    let _ = std::io::stdout().flush();
}

/// Prints the hook log lines that appeared since the last call.
struct HookLog {
    path: std::path::PathBuf,
    seen: usize,
}

impl HookLog {
    /// Prints the new lines. Stop hooks of a node that has just started
    /// (`starting`), and any of epoch 0, are its start-up clean-up:
    /// counted, not listed.
    fn show(&mut self, starting: &[&str]) {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut cleanup = 0;
        for l in text.lines().skip(self.seen) {
            self.seen += 1;
            let stop_by_starter = starting.iter().any(|n| l.starts_with(&format!("{n}: stop ")));
            if l.contains("(epoch 0)") || stop_by_starter {
                cleanup += 1;
            } else {
                say(&format!("     hook  {l}"));
            }
        }
        if cleanup > 0 {
            say(&format!(
                "     ({cleanup} stop hooks ran at start-up: a starting node first stops every group's services, \
                 so none runs twice)"
            ));
        }
    }
}

/// Waits until `path` holds exactly `data`; returns how long that took.
fn arrives(path: &Path, data: &[u8], within: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if std::fs::read(path).is_ok_and(|d| d == data) {
            return Ok(t.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    anyhow::bail!("{} did not arrive within {:.0} s", path.display(), within.as_secs_f64())
}

/// Waits until `path` is gone.
fn departs(path: &Path, within: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    anyhow::bail!(
        "{} was not deleted within {:.0} s",
        path.display(),
        within.as_secs_f64()
    )
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

const WAIT: Duration = Duration::from_secs(60);

pub fn run(_global: &Global, args: &DemoArgs) -> anyhow::Result<i32> {
    let tmp = tempfile::Builder::new().prefix("hamirror-demo-").tempdir()?;
    let base = tmp.path().to_path_buf();
    let result = story(&base);
    if args.keep {
        let kept = tmp.keep();
        say(&format!("kept {} (configuration, roots, daemon logs)", kept.display()));
    }
    result
}

fn story(base: &Path) -> anyhow::Result<i32> {
    say(&format!("hamirror demo: a two-node cluster in {}", base.display()));
    let cfg = example::write(base)?;
    let cluster = Arc::new(Cluster::load(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    let conf = |n: &str| cluster.node(n).cloned().with_context(|| format!("node {n}"));
    let (c1, c2) = (conf("serv1")?, conf("serv2")?);
    let docs1 = c1.conf.root.join("srv/docs");
    let docs2 = c2.conf.root.join("srv/docs");
    std::fs::create_dir_all(&docs1)?;
    std::fs::create_dir_all(c2.conf.root.join("srv/www"))?;
    std::fs::write(
        c2.conf.root.join("srv/www/index.html"),
        "<h1>served by the web group</h1>\n",
    )?;
    say("  serv1 owns group serv1 (set Fdocs = /srv/docs/), serv2 owns group serv2 (set Fweb = /srv/www/)");
    say("  links: crossover 127.0.0.1 and LAN 127.0.0.2; auto_failback = yes; hooks only print");
    let mut hooks = HookLog {
        path: base.join(example::HOOK_LOG),
        seen: 0,
    };
    let mut n1 = DemoNode::new("serv1", &cfg, base, &c1.conf.state);
    let mut n2 = DemoNode::new("serv2", &cfg, base, &c2.conf.state);

    say("\n1. both nodes start `hamirror run` and each takes its own group");
    n1.start()?;
    n2.start()?;
    let t = n1.wait_for("taking group serv1", WAIT, |n| n.holds("serv1"))?;
    n2.wait_for("taking group serv2", WAIT, |n| n.holds("serv2"))?;
    say(&format!(
        "   serv1 holds serv1, serv2 holds serv2 ({} after start)",
        ms(t)
    ));
    hooks.show(&["serv1", "serv2"]);

    say("\n2. serv1 writes into /srv/docs; its daemon mirrors each change as it happens");
    let big = noise(7, 16 << 20);
    let t = Instant::now();
    for i in 0..100 {
        std::fs::write(
            docs1.join(format!("memo-{i:03}.txt")),
            format!("memo {i}\n").repeat(40 + i),
        )?;
    }
    std::fs::create_dir_all(docs1.join("reports"))?;
    std::fs::write(docs1.join("reports/archive.bin"), &big)?;
    arrives(&docs2.join("reports/archive.bin"), &big, WAIT)?;
    arrives(&docs2.join("memo-099.txt"), "memo 99\n".repeat(139).as_bytes(), WAIT)?;
    say(&format!(
        "   100 memos and a {} archive: all on serv2 {} after the first write",
        bytes(big.len() as u64),
        ms(t.elapsed())
    ));
    let mut lat = Vec::new();
    for i in 0..30 {
        let name = format!("note-{i:02}.txt");
        let text = format!("note {i} written at {:?}\n", Instant::now());
        std::fs::write(docs1.join(&name), &text)?;
        lat.push(arrives(&docs2.join(&name), text.as_bytes(), WAIT)?);
    }
    lat.sort();
    say(&format!(
        "   30 notes written one at a time: on serv2 after {} (median), {} (slowest)",
        ms(percentile(&lat, 0.5)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    ));

    say("\n3. serv1 is killed (SIGKILL: no stop hook runs, no goodbye)");
    n1.kill();
    let takeover = n2.wait_for("taking over group serv1", WAIT, |n| n.holds("serv1"))?;
    say(&format!(
        "   serv2 took group serv1 over {} after the kill",
        ms(takeover)
    ));
    hooks.show(&[]);

    say("\n4. the service now writes on serv2: edits a memo, adds a report, deletes a note");
    let edited = "memo 5, edited on serv2 while serv1 was down\n".repeat(10);
    std::fs::write(docs2.join("memo-005.txt"), &edited)?;
    let added = noise(11, 1 << 20);
    std::fs::write(docs2.join("reports/added-on-serv2.bin"), &added)?;
    std::fs::remove_file(docs2.join("note-00.txt"))?;
    say("   serv1 is down, so these wait in serv2's backlog");

    say("\n5. serv1 restarts: it gets serv2's changes back (resync), then takes its group back (failback)");
    let t = Instant::now();
    n1.start()?;
    arrives(&docs1.join("memo-005.txt"), edited.as_bytes(), WAIT)?;
    arrives(&docs1.join("reports/added-on-serv2.bin"), &added, WAIT)?;
    departs(&docs1.join("note-00.txt"), WAIT)?;
    say(&format!(
        "   serv1 has serv2's changes {} after its restart",
        ms(t.elapsed())
    ));
    hooks.show(&["serv1"]);
    n1.wait_for("taking group serv1 back", WAIT, |n| n.holds("serv1"))?;
    say(&format!(
        "   serv1 holds group serv1 again {} after its restart",
        ms(t.elapsed())
    ));
    hooks.show(&[]);
    std::fs::write(
        docs1.join("after-failback.txt"),
        "written on serv1 after the failback\n",
    )?;
    let l = arrives(
        &docs2.join("after-failback.txt"),
        b"written on serv1 after the failback\n",
        WAIT,
    )?;
    say(&format!(
        "   and mirrors to serv2 again: a new file arrived after {}",
        ms(l)
    ));

    say("\n6. both copies of each set re-read and compared (hamirror verify)");
    let mut identical = true;
    let rt = super::runtime()?;
    for (local, peer, set) in [(&c1, &c2, "Fdocs"), (&c2, &c1, "Fweb")] {
        let (owner, s) = cluster.find_set(set).context("demo set")?;
        let group = owner.group.name.clone();
        let v = rt.block_on(async {
            let endpoint = Endpoint::client(local, peer)?;
            let conn = endpoint.connect().await?;
            let v = verify(&conn, local, &peer.name, s, &group, 1).await;
            endpoint.shutdown("demo done").await;
            anyhow::Ok(v?)
        })?;
        let verdict = if v.identical() {
            "identical".to_string()
        } else {
            identical = false;
            format!("{} differences", v.differences.len())
        };
        say(&format!(
            "   {set} on {} and {}: {verdict} ({} entries, {})",
            local.name,
            peer.name,
            v.local_entries,
            bytes(v.bytes)
        ));
        for d in &v.differences {
            say(&format!("   {}: {}", d.path, d.what));
        }
    }
    let verdict = if identical { "trees identical" } else { "trees DIFFER" };
    say(&format!(
        "\nsummary: mirrored within {} (median), failed over in {}, resynced and failed back; {verdict}",
        ms(percentile(&lat, 0.5)),
        ms(takeover)
    ));
    node::stop_all(&mut [&mut n1, &mut n2]);
    Ok(if identical { EXIT_OK } else { EXIT_FAILED })
}
