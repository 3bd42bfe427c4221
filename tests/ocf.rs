//! The OCF resource agent (`hooks/ocf/mirror`, installed as
//! `ocf:hamirror:mirror`) called the way Pacemaker calls it — environment
//! `OCF_RESKEY_*`, the action as argument, the exit code as the answer —
//! against real daemons with `failover = pacemaker` on loopback: it starts
//! the daemon, reports the roles (7 not running, 0 unpromoted, 8
//! promoted), promotes and demotes (a switchover in Pacemaker's order,
//! and a promote while the peer still holds the group), mirrors from the
//! promoted node, and stops the daemon with the last resource. Its
//! meta-data is well-formed XML that declares the promotable actions.
//! Pacemaker itself drives it in tests/pacemaker.rs.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::daemons::{Cluster, NODES};

const NOT_RUNNING: i32 = 7;
const RUNNING_PROMOTED: i32 = 8;

struct Agent<'a> {
    c: &'a Cluster,
    rsctmp: PathBuf,
}

/// The daemons the agent started are not our children: kill them however
/// the test ends.
impl Drop for Agent<'_> {
    fn drop(&mut self) {
        for i in 0..2 {
            if let Some(pid) = self.c.status(i).and_then(|s| s["pid"].as_u64()) {
                // SAFETY: plain kill(2) of a pid the daemon reported.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Agent<'_> {
    fn call(&self, node: usize, group: &str, action: &str) -> Output {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/ocf/mirror"))
            .arg(action)
            .env("OCF_RESKEY_group", group)
            .env("OCF_RESKEY_node", NODES[node])
            .env("OCF_RESKEY_config", self.c.p.cfg.dir())
            .env("OCF_RESKEY_binary", env!("CARGO_BIN_EXE_hamirror"))
            .env("OCF_RESKEY_log", self.c.log_path(node))
            .env("OCF_RESKEY_CRM_meta_timeout", "30000")
            .env("HA_RSCTMP", self.rsctmp.join(NODES[node]))
            .env("HAMIRROR_LOG", "info")
            .output()
            .unwrap();
        eprintln!(
            "{} {action} {group}: {:?} {}",
            NODES[node],
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    fn rc(&self, node: usize, group: &str, action: &str) -> i32 {
        self.call(node, group, action).status.code().unwrap_or(-1)
    }
}

#[test]
fn the_agent_starts_promotes_demotes_and_stops_real_daemons_with_ocf_exit_codes() {
    let c = Cluster::new();
    for n in NODES {
        c.p.cfg.append(&format!("{n}.conf"), "failover = pacemaker\n");
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Agent {
        c: &c,
        rsctmp: tmp.path().to_path_buf(),
    };

    // meta-data: well-formed, promotable, the parameters Pacemaker needs.
    let md = a.call(0, "", "meta-data");
    assert_eq!(md.status.code(), Some(0));
    let xml = String::from_utf8(md.stdout).unwrap();
    for needle in [
        r#"<resource-agent name="mirror""#,
        r#"<parameter name="group" required="1""#,
        r#"<action name="promote""#,
        r#"<action name="demote""#,
        r#"role="Promoted""#,
        r#"role="Unpromoted""#,
        "</resource-agent>",
    ] {
        assert!(xml.contains(needle), "{needle} missing:\n{xml}");
    }
    let parse = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parseString(sys.argv[1])",
            &xml,
        ])
        .output()
        .expect("python3");
    assert!(parse.status.success(), "{}", String::from_utf8_lossy(&parse.stderr));
    assert_eq!(a.rc(0, "", "validate-all"), 6, "no group: not configured");

    // Probes before anything ran: not running.
    assert_eq!(a.rc(0, "serv1", "monitor"), NOT_RUNNING);
    // start: the agent starts each node's daemon; both unpromoted.
    for i in 0..2 {
        assert_eq!(a.rc(i, "serv1", "start"), 0, "{}", c.logs());
        assert_eq!(a.rc(i, "serv1", "monitor"), 0);
    }
    // promote on serv1: the holder.
    assert_eq!(a.rc(0, "serv1", "promote"), 0, "{}", c.logs());
    assert_eq!(a.rc(0, "serv1", "monitor"), RUNNING_PROMOTED);
    assert_eq!(a.rc(1, "serv1", "monitor"), 0);
    assert_eq!(a.rc(0, "serv1", "promote"), 0, "promote is idempotent");
    // It mirrors from the promoted node.
    common::write(&c.p.src("srv/samba/share/under-pacemaker.txt"), b"promoted on serv1\n");
    c.converge_roots(
        "serv1 promoted mirrors to serv2",
        Duration::from_secs(20),
        &common::daemons::SERV1_ROOTS,
    );

    // A switchover in Pacemaker's order: demote there, promote here.
    assert_eq!(a.rc(0, "serv1", "demote"), 0);
    assert_eq!(a.rc(0, "serv1", "monitor"), 0);
    assert_eq!(a.rc(1, "serv1", "promote"), 0, "{}", c.logs());
    assert_eq!(a.rc(1, "serv1", "monitor"), RUNNING_PROMOTED);
    assert_eq!(c.phase(0, "serv1").as_deref(), Some("released"));
    // A promote while the peer still holds it: the peer lets go first.
    assert_eq!(a.rc(0, "serv1", "promote"), 0, "{}", c.logs());
    assert_eq!(a.rc(0, "serv1", "monitor"), RUNNING_PROMOTED);
    assert_eq!(a.rc(1, "serv1", "monitor"), 0);
    let s = c.status(1).unwrap();
    let epoch = |s: &serde_json::Value| {
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == "serv1")
            .unwrap()["epoch"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(epoch(&s), 3, "three promotions, three epochs");

    // The daemon refuses the builtin moves.
    let out = c.p.run("serv2", &["takeover", "serv1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Pacemaker"));

    // stop: demotes, and the last resource on the node stops the daemon.
    let pid = c.status(0).unwrap()["pid"].as_u64().unwrap();
    assert_eq!(a.rc(0, "serv1", "stop"), 0);
    assert_eq!(a.rc(0, "serv1", "monitor"), NOT_RUNNING);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.rc(1, "serv1", "stop"), 0);
}
