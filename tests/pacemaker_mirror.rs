//! hamirror under real Pacemaker (issue #14): the Pacemaker lab
//! (`tests/common/pacemaker.rs`, three Corosync + Pacemaker nodes in
//! network namespaces) runs a promotable clone of `ocf:hamirror:mirror`
//! (this repository's `hooks/ocf/mirror`) for group node1 on the two data
//! nodes, node1 and node2, with `failover = pacemaker`; node3 gives quorum
//! only. A writer writes to the promoted node's set and keeps a log; once
//! the holder reports a batch acknowledged, the promoted node loses power.
//! Pacemaker promotes the other node; every acknowledged write is there.
//! The survivor writes on; the dead node boots again, rejoins unpromoted,
//! gets back what changed (hamirror's resync), and both copies compare
//! identical, by the tree comparison and by the rsync oracle.
//!
//! The same with three data nodes (`clone-max=3`, fan-out: the holder
//! mirrors to both others): the promoted node loses power, Pacemaker
//! promotes one of the two replicas, every acknowledged write is there and
//! on the third node too; the returning node resyncs, and all three copies
//! end identical.
//!
//! Needs what tests/pacemaker.rs needs (root, netns, the packages); skips
//! without them, fails under CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::pacemaker::{ADDRS, NODES, Opts, PcmkLab};
use serde_json::Value;

const CLONE: &str = "mirror-node1-clone";
const FAILOVER_MAX: Duration = Duration::from_secs(30);
const SETTLE_MAX: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_hamirror");

/// The promotable clone of the hamirror agent for group node1 on the first
/// `data` nodes (with 2, node3 holds no data and gives quorum only).
fn clone_xml(config: &Path, data: usize) -> String {
    format!(
        r#"<clone id="{CLONE}">
  <meta_attributes id="hm-clone-meta">
    <nvpair id="hm-promotable" name="promotable" value="true"/>
    <nvpair id="hm-promoted-max" name="promoted-max" value="1"/>
    <nvpair id="hm-clone-max" name="clone-max" value="{data}"/>
    <nvpair id="hm-target-role" name="target-role" value="Stopped"/>
  </meta_attributes>
  <primitive id="mirror-node1" class="ocf" provider="hamirror" type="mirror">
    <instance_attributes id="hm-params">
      <nvpair id="hm-group" name="group" value="node1"/>
      <nvpair id="hm-config" name="config" value="{config}"/>
      <nvpair id="hm-binary" name="binary" value="{BIN}"/>
      <nvpair id="hm-log" name="log" value="/var/log/pacemaker/hamirror.log"/>
    </instance_attributes>
    <operations>
      <op id="hm-monitor-promoted" name="monitor" interval="2s" role="Promoted" timeout="20s"/>
      <op id="hm-monitor-unpromoted" name="monitor" interval="3s" role="Unpromoted" timeout="20s"/>
      <op id="hm-start" name="start" interval="0" timeout="60s"/>
      <op id="hm-promote" name="promote" interval="0" timeout="60s"/>
      <op id="hm-demote" name="demote" interval="0" timeout="60s"/>
      <op id="hm-stop" name="stop" interval="0" timeout="60s"/>
    </operations>
  </primitive>
</clone>"#,
        config = config.display()
    )
}

const LOCATION_XML: &str =
    r#"<rsc_location id="hm-not-on-node3" rsc="mirror-node1-clone" node="node3" score="-INFINITY"/>"#;

/// cluster.d for the first `data` nodes on the lab's addresses, `failover =
/// pacemaker`, group node1 with one set, identities made by `hamirror init`.
fn write_config(dir: &Path, data: usize) -> PathBuf {
    let c = dir.join("cluster.d");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("authkeys"),
        "7b2c0d9e2b7a4c3d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f\n",
    )
    .unwrap();
    std::fs::set_permissions(c.join("authkeys"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(c.join("reachlist"), format!("{}\n", ADDRS[2])).unwrap();
    for (i, node) in NODES[..data].iter().enumerate() {
        let root = root(dir, i);
        std::fs::create_dir_all(root.join("data/node1")).unwrap();
        std::fs::create_dir_all(root.join("data/node2")).unwrap();
        std::fs::create_dir_all(c.join(node)).unwrap();
        std::fs::write(c.join(node).join(format!("F{node}data")), format!("/data/{node}/\n")).unwrap();
        let conf = c.join(format!("{node}.conf"));
        std::fs::write(
            &conf,
            format!(
                "address = {}\nstate = {}\nroot = {}\nheartbeat_key = authkeys\nkeepalive = 100ms\n\
                 warntime = 300ms\ndeadtime = 1s\ntakeover_delay = 400ms\ninitdead = 2s\nfailover = pacemaker\n",
                ADDRS[i],
                dir.join(format!("state-{node}")).display(),
                root.display()
            ),
        )
        .unwrap();
    }
    for node in &NODES[..data] {
        let conf = c.join(format!("{node}.conf"));
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&c)
            .args(["--node", node, "init"])
            .output()
            .unwrap();
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let fp = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .expect("init prints the fingerprint")
            .to_string();
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!("fingerprint = {fp}\n"));
        std::fs::write(&conf, text).unwrap();
    }
    let check = Command::new(BIN)
        .arg("--config")
        .arg(&c)
        .args(["--node", "node1", "check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    c
}

fn root(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("root-{}", NODES[i]))
}

/// Group node1's set on node `i`.
fn set_dir(dir: &Path, i: usize) -> PathBuf {
    root(dir, i).join("data/node1")
}

fn status(config: &Path, lab: &PcmkLab, i: usize) -> Option<Value> {
    let o = lab.run(i, &[BIN, "--config", &config.to_string_lossy(), "status", "--json"]);
    serde_json::from_slice(&o.stdout).ok()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Writes `n` files named `PREFIX-k` into `set`, each with its name inside;
/// returns the names (the writer's log).
fn write_batch(set: &Path, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let name = format!("{prefix}-{k:03}");
            std::fs::write(set.join(&name), format!("{name}\n").repeat(k + 1)).unwrap();
            name
        })
        .collect()
}

fn assert_logged(set: &Path, log: &[String], what: &str) {
    for name in log {
        let got = std::fs::read_to_string(set.join(name)).unwrap_or_default();
        let k: usize = name.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(got, format!("{name}\n").repeat(k + 1), "{what}: {name} lost or torn");
    }
}

#[test]
fn pacemaker_moves_the_mirror_no_acknowledged_write_is_lost_and_the_returning_node_resyncs() {
    moves_the_mirror("hmpm", 2);
}

#[test]
fn with_three_data_nodes_the_mirror_fans_out_and_follows_pacemaker() {
    moves_the_mirror("hmp3", 3);
}

/// The scenario of the module docs with `data` data nodes (2 or 3).
fn moves_the_mirror(prefix: &str, data: usize) {
    // One lab at a time (both use the same addresses and CPU).
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    if !PcmkLab::available() {
        return;
    }
    let t0 = Instant::now();
    let mut lab = PcmkLab::with(
        prefix,
        Opts {
            providers: vec![(
                "hamirror".into(),
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/ocf")),
            )],
            ..Opts::default()
        },
    );
    let dir = lab.dir.path().to_path_buf();
    let config = write_config(&dir, data);
    lab.wait_online(3, SETTLE_MAX);
    let xml = clone_xml(&config, data);
    // Created stopped, kept off node3 unless it holds data, then started:
    // never placed there.
    lab.run_ok(0, &["cibadmin", "--create", "-o", "resources", "--xml-text", &xml]);
    if data == 2 {
        lab.run_ok(
            0,
            &["cibadmin", "--create", "-o", "constraints", "--xml-text", LOCATION_XML],
        );
    }
    lab.run_ok(
        0,
        &[
            "crm_resource",
            "--resource",
            CLONE,
            "--meta",
            "--set-parameter",
            "target-role",
            "--parameter-value",
            "Started",
        ],
    );
    let (first, _) = lab.wait_for("one node promoted, the others unpromoted", SETTLE_MAX, |l| {
        let roles = l.roles(CLONE);
        (roles.len() == data && roles.iter().filter(|r| r.1 == "Unpromoted").count() == data - 1)
            .then(|| roles.iter().find(|r| r.1 == "Promoted").map(|r| r.0.clone()))
            .flatten()
    });
    let p = NODES.iter().position(|n| *n == first).unwrap();
    assert!(p < data, "never on a node without data");
    // hamirror agrees: the group is held where Pacemaker promoted it.
    let st = status(&config, &lab, p).expect("the agent started the daemon");
    assert_eq!(st["failover"], "pacemaker");
    let held = |st: &Value| {
        st["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "node1" && g["phase"] == "held")
    };
    assert!(held(&st), "{st}");

    // Writes on the holder, acknowledged by the replica: a generation
    // committed after the writes began, acknowledged, nothing pending. (An
    // ack alone may be the promotion's first push, scanned before them.)
    let set_of = |st: Value| {
        st["sets"]
            .as_array()?
            .iter()
            .find(|x| x["set"] == "Fnode1data")
            .cloned()
    };
    let before = status(&config, &lab, p)
        .and_then(set_of)
        .and_then(|set| set["generation"].as_u64())
        .unwrap_or(0);
    let mut log = write_batch(&set_dir(&dir, p), "acked", 40);
    let written = now_ms();
    lab.wait_for("the batch acknowledged", SETTLE_MAX, |l| {
        let set = status(&config, l, p).and_then(set_of)?;
        let generation = set["generation"].as_u64()?;
        let acked = set["replicas"]
            .as_array()?
            .iter()
            .all(|r| r["acked_generation"].as_u64().is_some_and(|a| a >= generation));
        (generation > before && acked && set["pending_files"] == 0 && set["last_ack_unix_ms"].as_u64()? > written)
            .then_some(())
    });
    // More writes, not waited for: they may or may not make it.
    write_batch(&set_dir(&dir, p), "unacked", 10);
    lab.kill_node(p);
    let (second, failover) = lab.wait_for("a replica promoted", FAILOVER_MAX, |l| {
        l.promoted_of(CLONE).filter(|n| *n != NODES[p])
    });
    let s = NODES.iter().position(|n| *n == second).unwrap();
    assert!(s < data, "{second} holds no data");
    for i in (0..data).filter(|i| *i != p) {
        assert_logged(&set_dir(&dir, i), &log, &format!("on {} after the failover", NODES[i]));
    }
    lab.wait_for("hamirror holds it on the survivor", SETTLE_MAX, |l| {
        status(&config, l, s).filter(held).map(|_| ())
    });

    // The survivor writes on; the dead node comes back.
    log.extend(write_batch(&set_dir(&dir, s), "survivor", 20));
    lab.restart_node(p);
    lab.wait_online(3, SETTLE_MAX);
    lab.wait_for(
        "the returning node unpromoted, the survivor still promoted",
        SETTLE_MAX,
        |l| {
            let roles = l.roles(CLONE);
            (roles.len() == data
                && roles.contains(&(NODES[s].to_string(), "Promoted".to_string()))
                && roles.contains(&(NODES[p].to_string(), "Unpromoted".to_string())))
            .then_some(())
        },
    );
    // hamirror's resync brings the returning copy in step (and, with
    // three, the other replica is mirrored to all along).
    let a = set_dir(&dir, s);
    for i in (0..data).filter(|i| *i != s) {
        let b = set_dir(&dir, i);
        lab.wait_for(&format!("{}'s copy in step", NODES[i]), SETTLE_MAX, |_| {
            common::pair::tree_differences(&a, &b).is_empty().then_some(())
        });
        assert_logged(&b, &log, &format!("on {}", NODES[i]));
        common::pair::rsync_oracle(&a, &b);
    }
    eprintln!(
        "pacemaker + hamirror, {data} data nodes: failover {failover:.1?}, total {:.1?}",
        t0.elapsed()
    );
}
