//! A real Corosync + Pacemaker cluster of three nodes for tests (issue #14):
//! the Debian packages' own daemons, each node in network namespaces of its
//! own, so a test can kill a node like a power cut and watch Pacemaker
//! react. Owns only the lab (network, per-node private directories, boot,
//! kill, queries); it must not depend on hamirror itself, so resource-agent
//! tests (`ocf:hamirror:mirror`) and Pacemaker's own agents run in it alike.
//!
//! ```text
//!   node1 10.88.0.1   node2 10.88.0.2   node3 10.88.0.3     (eth0 each)
//!        └── p1 ──────────┴── p2 ────────────┴── p3 ── br0 (ns lan)
//! ```
//!
//! What a test author needs:
//! - [`PcmkLab::available`] first: false (test skips, printing why) when not
//!   root, without `ip netns`, or without the packages; under CI (`CI` set)
//!   a missing prerequisite fails instead. `HAMIRROR_SKIP_NETNS=1` skips.
//! - [`PcmkLab::new`] builds the network and boots the three nodes;
//!   [`PcmkLab::wait_online`] waits for a DC with quorum and N nodes online.
//!   [`PcmkLab::with`] and [`Opts`] add OCF providers of the test's own
//!   (`ocf:hamirror:mirror` from the checkout, overlaid on the installed
//!   `/usr/lib/ocf/resource.d` inside the nodes only) and environment
//!   variables every agent inherits. Paths of the host (the test's temp
//!   dirs, the built binary) are visible in the nodes: only `/run`,
//!   `/dev/shm` and the directories below are private.
//! - [`PcmkLab::run`] / [`PcmkLab::run_ok`] run any command inside node i
//!   (its network, mount and UTS namespaces): `crm_mon`, `cibadmin`,
//!   `crm_resource`, `crm_attribute`, or a hamirror command. Agents see the
//!   node's own `/run`, so their state files are the node's own.
//! - [`PcmkLab::kill_node`] is a power cut (cable out, SIGKILL of every
//!   process of the node at once); [`PcmkLab::restart_node`] boots it again
//!   with its disk (`/var/lib/pacemaker`, `/var/lib/corosync`) kept and
//!   `/run`, `/dev/shm` fresh.
//! - [`PcmkLab::promoted_of`], [`PcmkLab::roles`], [`PcmkLab::mon`] read
//!   `crm_mon -1 --output-as=xml` from a live node; [`PcmkLab::wait_for`]
//!   polls; [`PcmkLab::logs`] gathers what to print when an assertion fails.
//! - Drop kills every process and deletes the namespaces (even on panic);
//!   namespaces of a run killed outright are cleaned by the next run.
//!   Labs of one test binary wait for each other (a lock the lab holds).
//!
//! How a node is isolated: its boot script runs under `ip netns exec NS
//! unshare --mount --uts --propagation private`, sets the hostname (= node
//! name, also `name:` in the nodelist), mounts fresh tmpfs on `/run`
//! (`/run/corosync.pid`: with a shared /run the second corosync refuses to
//! start; pacemaker's `/run/crm`; agents' state under `/var/run`) and
//! `/dev/shm` (libqb's IPC ring buffers, ~8 MB a node), bind-mounts the
//! node's own directories of the lab over `/etc/corosync`,
//! `/var/lib/corosync`, `/var/lib/pacemaker` and `/var/log/pacemaker`,
//! starts `corosync -f` and then `pacemakerd` (which starts its daemons,
//! some as user hacluster), and stays as `sleep infinity`: that "anchor"
//! holds the namespaces, and [`PcmkLab::run`] enters them through it. The
//! IPC sockets (`@cib_rw`, `@cpg`, `@lrmd`…) are abstract unix sockets,
//! which belong to the network namespace: the three nodes' IPC cannot
//! meet. No systemd is involved.
//!
//! Lab settings, not production ones: `stonith-enabled=false` because a lab
//! has no fencing device; in production a lost node must be fenced (IPMI,
//! SBD, a PDU, a cloud API) before its resources run elsewhere, or a node
//! that is only cut off, not dead, keeps writing. Corosync's token is 1 s
//! whatever the node count (`token_coefficient: 0`; consensus 1.2 s) and
//! `dc-deadtime` 2 s so that a failover takes 2-4 s (production defaults:
//! token 3 s + 650 ms per node beyond two, `dc-deadtime` 20 s);
//! `no-quorum-policy=stop` (the default) is written out. The properties
//! are seeded into each node's CIB before the first boot (the default
//! `dc-deadtime` would delay the first DC election by 20 s). Knet
//! transport, encrypted with a fresh random authkey shared by the three.

// Nodes are indexed throughout (0 = node1), in every table.
#![allow(clippy::needless_range_loop)]

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::netns::{Namespaces, ip, kill_all_in, remove_stale_namespaces};

pub const NODES: [&str; 3] = ["node1", "node2", "node3"];
pub const ADDRS: [&str; 3] = ["10.88.0.1", "10.88.0.2", "10.88.0.3"];

/// Cluster properties seeded into the CIB (see the module doc).
pub const PROPERTIES: [(&str, &str); 4] = [
    ("stonith-enabled", "false"),
    ("dc-deadtime", "2s"),
    ("cluster-recheck-interval", "30s"),
    ("no-quorum-policy", "stop"),
];

/// Tools the lab needs and the Debian package of each.
const TOOLS: [(&str, &str); 10] = [
    ("corosync", "corosync"),
    ("corosync-cmapctl", "corosync"),
    ("pacemakerd", "pacemaker"),
    ("crm_mon", "pacemaker-cli-utils"),
    ("cibadmin", "pacemaker-cli-utils"),
    ("crm_resource", "pacemaker-cli-utils"),
    ("crm_attribute", "pacemaker-cli-utils"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("ip", "iproute2"),
];

/// The test agent the lab is proven with (package pacemaker-resource-agents).
pub const STATEFUL_AGENT: &str = "/usr/lib/ocf/resource.d/pacemaker/Stateful";

/// How long a node may take to boot (corosync answering, pacemakerd started).
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// The PATH of commands run in a node: the caller's plus the sbin
/// directories, where an admin finds `crm_mon` and the daemons.
fn node_path() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    std::env::join_paths(dirs).expect("PATH")
}

/// A tool on the PATH or in /usr/sbin, /sbin (root's daemons live there
/// and a test's PATH may lack them).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&node_path())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("`{name}` not found (PcmkLab::available checks it)"))
}

/// One node's view of the cluster (`crm_mon -1 --output-as=xml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mon {
    pub dc: Option<String>,
    pub quorum: bool,
    pub online: Vec<String>,
    /// (clone or primitive id, primitive id, role, node) of every active
    /// instance.
    pub instances: Vec<(String, String, String, String)>,
}

impl Mon {
    /// Parses crm_mon's XML: one element per line, which is how every
    /// Pacemaker 2.x prints it (no XML crate among the dependencies).
    pub fn parse(xml: &str) -> Mon {
        let mut m = Mon::default();
        let mut section = "";
        let mut clone: Option<String> = None;
        let mut rsc: Option<(String, String)> = None;
        for line in xml.lines().map(str::trim) {
            match line {
                "<nodes>" => section = "nodes",
                "<resources>" => section = "resources",
                "</nodes>" | "</resources>" => section = "",
                _ => {}
            }
            if line.starts_with("<current_dc ") {
                m.dc = attr(line, "name").filter(|_| attr(line, "present").as_deref() == Some("true"));
                m.quorum = attr(line, "with_quorum").as_deref() == Some("true");
            } else if section == "nodes" && line.starts_with("<node ") {
                if attr(line, "online").as_deref() == Some("true") {
                    m.online.extend(attr(line, "name"));
                }
            } else if section == "resources" {
                if line.starts_with("<clone ") {
                    clone = attr(line, "id");
                } else if line == "</clone>" {
                    clone = None;
                } else if line.starts_with("<resource ") {
                    let id = attr(line, "id").unwrap_or_default();
                    rsc = (!line.ends_with("/>")).then(|| (id, attr(line, "role").unwrap_or_default()));
                } else if line == "</resource>" {
                    rsc = None;
                } else if line.starts_with("<node ")
                    && let Some((id, role)) = &rsc
                {
                    let top = clone.clone().unwrap_or_else(|| id.clone());
                    let node = attr(line, "name").unwrap_or_default();
                    m.instances.push((top, id.clone(), role.clone(), node));
                }
            }
        }
        m
    }

    /// (node, role) of each active instance of `resource` (a clone's or a
    /// primitive's id).
    pub fn roles(&self, resource: &str) -> Vec<(String, String)> {
        self.instances
            .iter()
            .filter(|(top, id, _, _)| top == resource || id == resource)
            .map(|(_, _, role, node)| (node.clone(), role.clone()))
            .collect()
    }
}

/// The value of `name="…"` in one XML start tag.
fn attr(line: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

/// What a test adds to every node.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// OCF providers added to the node's `/usr/lib/ocf/resource.d` (an
    /// overlay on the installed ones): (provider, directory of agents),
    /// e.g. `("hamirror", <checkout>/ocf)` for `ocf:hamirror:mirror`. The
    /// agents are copied when the lab is built.
    pub providers: Vec<(String, PathBuf)>,
    /// Environment of pacemakerd, hence of its daemons and of every agent
    /// it runs (a test binary's path, a config directory…).
    pub env: Vec<(String, String)>,
}

/// The three nodes, their namespaces and the anchor of each running node.
pub struct PcmkLab {
    pub dir: tempfile::TempDir,
    /// node1, node2, node3.
    pub node_ns: [String; 3],
    pub lan_ns: String,
    pub opts: Opts,
    /// The `sleep infinity` each node's boot script became: holds the
    /// node's mount and UTS namespaces; `None` while the node is down.
    anchors: [Option<Child>; 3],
    // Last: the namespaces go after every process in them.
    _ns: Namespaces,
    // After the namespaces: the next lab starts once this one is gone.
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// Labs of one test binary run one at a time: their namespace names share
/// the process id, and two clusters' worth of daemons at once on a small
/// machine would risk token timeouts nobody asked for.
static ONE_LAB: Mutex<()> = Mutex::new(());

impl PcmkLab {
    /// Whether the lab can run here; prints why not (the test then
    /// returns). Under CI a missing prerequisite is a failure.
    pub fn available() -> bool {
        if std::env::var_os("HAMIRROR_SKIP_NETNS").is_some_and(|v| v == "1") {
            eprintln!("SKIPPED: HAMIRROR_SKIP_NETNS=1: the Pacemaker lab needs network namespaces");
            return false;
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let missing: Vec<String> = TOOLS
            .iter()
            .filter(|(t, _)| find_tool(t).is_none())
            .map(|(t, p)| format!("{t} (package {p})"))
            .chain((!Path::new(STATEFUL_AGENT).is_file()).then(|| format!("{STATEFUL_AGENT} (package pacemaker)")))
            .collect();
        let why = if !root {
            Some("the Pacemaker lab needs root (namespaces, mounts, daemons)".to_string())
        } else if !missing.is_empty() {
            Some(format!(
                "the Pacemaker lab needs {} (apt-get install --no-install-recommends pacemaker \
                 pacemaker-cli-utils corosync; .ci/run installs them)",
                missing.join(", ")
            ))
        } else if !Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            Some("`ip netns` does not work here".to_string())
        } else {
            None
        };
        let Some(why) = why else { return true };
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        eprintln!("SKIPPED: {why}; this test is required under CI");
        false
    }

    /// Builds the network and the nodes' directories, boots the three
    /// nodes (not waiting for the cluster: see [`PcmkLab::wait_online`]).
    /// `prefix` makes the namespace names (`<prefix><pid>-n1`) unique per
    /// test.
    pub fn new(prefix: &str) -> PcmkLab {
        PcmkLab::with(prefix, Opts::default())
    }

    /// [`PcmkLab::new`] with agents and environment of the test's own.
    pub fn with(prefix: &str, opts: Opts) -> PcmkLab {
        let one_at_a_time = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale_namespaces(prefix);
        let mut ns = Namespaces::default();
        let lan = ns.add(prefix, "lan");
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan, "link", "set", "br0", "up"]);
        let node_ns: [String; 3] = std::array::from_fn(|i| {
            let n = ns.add(prefix, &format!("n{}", i + 1));
            let port = format!("p{}", i + 1);
            ip(&[
                "link", "add", "eth0", "netns", &n, "type", "veth", "peer", "name", &port, "netns", &lan,
            ]);
            ip(&["-n", &lan, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &lan, "link", "set", &port, "up"]);
            ip(&["-n", &n, "addr", "add", &format!("{}/24", ADDRS[i]), "dev", "eth0"]);
            ip(&["-n", &n, "link", "set", "eth0", "up"]);
            n
        });
        let mut lab = PcmkLab {
            dir: tempfile::tempdir().expect("temp dir"),
            node_ns,
            lan_ns: lan,
            opts,
            anchors: [None, None, None],
            _ns: ns,
            _one_at_a_time: one_at_a_time,
        };
        lab.write_nodes();
        for i in 0..3 {
            lab.start_node(i);
        }
        lab
    }

    /// Node `i`'s directory in the lab: its disk (`etc-corosync`,
    /// `lib-corosync`, `lib-pacemaker`, `log-pacemaker`), boot script and
    /// logs (`corosync.log`, `log-pacemaker/pacemaker.log`, `*.out`).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(NODES[i])
    }

    fn write_nodes(&self) {
        let mut key = vec![0u8; 256];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut key).unwrap();
        let cib = seed_cib();
        let (uid, gid) = hacluster();
        for i in 0..3 {
            let d = self.node_dir(i);
            for sub in ["etc-corosync", "lib-corosync", "log-pacemaker"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
            }
            for sub in ["cib", "pengine", "blackbox", "cores"] {
                let p = d.join("lib-pacemaker").join(sub);
                std::fs::create_dir_all(&p).unwrap();
                own(&p, uid, gid, 0o750);
            }
            own(&d.join("log-pacemaker"), uid, gid, 0o770);
            let cib_xml = d.join("lib-pacemaker/cib/cib.xml");
            std::fs::write(&cib_xml, &cib).unwrap();
            own(&cib_xml, uid, gid, 0o600);
            let authkey = d.join("etc-corosync/authkey");
            std::fs::write(&authkey, &key).unwrap();
            std::fs::set_permissions(&authkey, std::fs::Permissions::from_mode(0o400)).unwrap();
            std::fs::write(d.join("etc-corosync/corosync.conf"), corosync_conf(&d)).unwrap();
            for (provider, from) in &self.opts.providers {
                let to = d.join("ocf").join(provider);
                std::fs::create_dir_all(&to).unwrap();
                for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("agents of {provider}: {from:?}: {e}")) {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
            let boot = d.join("boot.sh");
            std::fs::write(&boot, boot_script(i, &d, &self.opts)).unwrap();
            std::fs::set_permissions(&boot, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Boots node `i` and waits until corosync answers and pacemakerd is
    /// started.
    fn start_node(&mut self, i: usize) {
        assert!(self.anchors[i].is_none(), "{} is already up", NODES[i]);
        let d = self.node_dir(i);
        let _ = std::fs::remove_file(d.join("up"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("boot.out"))
            .unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node_ns[i]])
            .arg(tool("unshare"))
            .args(["--mount", "--uts", "--propagation", "private", "/bin/sh"])
            .arg(d.join("boot.sh"))
            .env("PATH", node_path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start a node's boot script");
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !d.join("up").exists() {
            let gone = child.try_wait().unwrap();
            if gone.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                kill_all_in(&self.node_ns[i], Duration::from_secs(10));
                panic!("{} did not boot ({gone:?}):\n{}", NODES[i], self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.anchors[i] = Some(child);
    }

    /// Whether node `i` is running (not killed).
    pub fn is_up(&self, i: usize) -> bool {
        self.anchors[i].is_some()
    }

    /// Runs `args` inside node `i` (its network, mount and UTS namespaces).
    pub fn run(&self, i: usize, args: &[&str]) -> Output {
        let anchor = self.anchors[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{} is down: nothing runs in it", NODES[i]));
        Command::new(tool("nsenter"))
            .args(["-t", &anchor.id().to_string(), "-n", "-m", "-u", "--"])
            .args(args)
            .env("PATH", node_path())
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// [`PcmkLab::run`] that must succeed; its stdout.
    pub fn run_ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.run(i, args);
        assert!(
            o.status.success(),
            "on {}: {} failed ({}):\n{}{}",
            NODES[i],
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The first node that is up.
    pub fn any_up(&self) -> usize {
        (0..3).find(|i| self.is_up(*i)).expect("every node is down")
    }

    /// Node `i`'s view of the cluster; None if crm_mon fails (no cluster
    /// connection yet).
    pub fn mon(&self, i: usize) -> Option<Mon> {
        let o = self.run(i, &["crm_mon", "-1", "--output-as=xml"]);
        o.status
            .success()
            .then(|| Mon::parse(&String::from_utf8_lossy(&o.stdout)))
    }

    /// The node running `resource` (a clone's or primitive's id) in role
    /// Promoted, as the first live node sees it.
    pub fn promoted_of(&self, resource: &str) -> Option<String> {
        self.roles(resource)
            .into_iter()
            .find(|(_, role)| role == "Promoted")
            .map(|(node, _)| node)
    }

    /// (node, role) of each active instance of `resource`, as the first
    /// live node sees it.
    pub fn roles(&self, resource: &str) -> Vec<(String, String)> {
        self.mon(self.any_up()).map(|m| m.roles(resource)).unwrap_or_default()
    }

    /// Polls `f` every 200 ms until it gives a value; panics with the logs
    /// after `timeout`. Returns the value and how long it took.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Self) -> Option<T>) -> (T, Duration) {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return (v, start.elapsed());
            }
            if start.elapsed() > timeout {
                let views: String = (0..3)
                    .filter(|i| self.is_up(*i))
                    .map(|i| {
                        let o = self.run(i, &["crm_mon", "-1"]);
                        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                        format!("----- crm_mon -1 on {} ({}):\n{out}{err}\n", NODES[i], o.status)
                    })
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n{views}{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every live node sees a DC with quorum and exactly `n`
    /// nodes online (which must be the live ones); returns how long it took.
    pub fn wait_online(&self, n: usize, timeout: Duration) -> Duration {
        let what = format!("a DC with quorum and {n} nodes online, seen by every live node");
        self.wait_for(&what, timeout, |l| {
            let up: Vec<usize> = (0..3).filter(|i| l.is_up(*i)).collect();
            let want: Vec<String> = up.iter().map(|i| NODES[*i].to_string()).collect();
            up.iter()
                .all(|i| {
                    l.mon(*i).is_some_and(|m| {
                        let mut online = m.online.clone();
                        online.sort();
                        m.dc.is_some() && m.quorum && online.len() == n && online == want
                    })
                })
                .then_some(())
        })
        .1
    }

    /// Power cut of node `i`: its cable out, every process of it SIGKILLed
    /// at once; its mounts vanish with its last process.
    pub fn kill_node(&mut self, i: usize) {
        ip(&["-n", &self.lan_ns, "link", "set", &format!("p{}", i + 1), "down"]);
        assert!(
            kill_all_in(&self.node_ns[i], Duration::from_secs(10)),
            "processes of {} survive SIGKILL",
            NODES[i]
        );
        if let Some(mut c) = self.anchors[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Boots a killed node again: cable in, same disk, fresh `/run` and
    /// `/dev/shm`.
    pub fn restart_node(&mut self, i: usize) {
        assert!(!self.is_up(i), "{} is up: kill it first", NODES[i]);
        ip(&["-n", &self.lan_ns, "link", "set", &format!("p{}", i + 1), "up"]);
        self.start_node(i);
    }

    /// Boot output and the last notices, warnings and errors of each node's
    /// corosync and pacemaker logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..3 {
            let d = self.node_dir(i);
            let read = |p: &str| std::fs::read_to_string(d.join(p)).unwrap_or_default();
            let _ = writeln!(s, "===== {} ({}) =====", NODES[i], d.display());
            for f in ["boot.out", "corosync.out", "pacemakerd.out"] {
                let t = read(f);
                if !t.trim().is_empty() {
                    let _ = writeln!(s, "--- {f}\n{t}");
                }
            }
            let _ = writeln!(
                s,
                "--- corosync.log (tail)\n{}",
                tail(&read("corosync.log"), 15, |_| true)
            );
            let important = |l: &str| ["notice:", "warning:", "error:", "crit:"].iter().any(|k| l.contains(k));
            let pcmk = read("log-pacemaker/pacemaker.log");
            let _ = writeln!(s, "--- pacemaker.log (notices, tail)\n{}", tail(&pcmk, 25, important));
            // The hamirror daemon the agent started, when there is one.
            let hm = read("log-pacemaker/hamirror.log");
            if !hm.trim().is_empty() {
                let _ = writeln!(s, "--- hamirror.log (tail)\n{}", tail(&hm, 40, |_| true));
            }
        }
        s
    }
}

impl Drop for PcmkLab {
    fn drop(&mut self) {
        for i in 0..3 {
            kill_all_in(&self.node_ns[i], Duration::from_secs(10));
            if let Some(mut c) = self.anchors[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The last `n` lines of `text` that `keep` accepts.
fn tail(text: &str, n: usize, keep: impl Fn(&str) -> bool) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The uid and gid Pacemaker's daemons run as (created by the package).
fn hacluster() -> (u32, u32) {
    let name = std::ffi::CString::new("hacluster").unwrap();
    // SAFETY: getpwnam with a valid C string; the record is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "user hacluster is missing (the pacemaker package creates it)"
    );
    // SAFETY: non-null record from getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn own(p: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An empty CIB of the installed Pacemaker's schema with [`PROPERTIES`].
/// Written without its `.sig`: Pacemaker accepts a cib.xml without one
/// and signs the CIB at its first write.
fn seed_cib() -> String {
    let o = Command::new(tool("cibadmin"))
        .arg("--empty")
        .output()
        .expect("run cibadmin");
    assert!(
        o.status.success(),
        "cibadmin --empty: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let empty = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut set = String::from("<crm_config>\n      <cluster_property_set id=\"cib-bootstrap-options\">\n");
    for (name, value) in PROPERTIES {
        let _ = writeln!(
            set,
            "        <nvpair id=\"cib-bootstrap-options-{name}\" name=\"{name}\" value=\"{value}\"/>"
        );
    }
    set.push_str("      </cluster_property_set>\n    </crm_config>");
    assert!(empty.contains("<crm_config/>"), "unexpected empty CIB:\n{empty}");
    empty.replace("<crm_config/>", &set)
}

fn corosync_conf(d: &Path) -> String {
    let mut nodes = String::new();
    for (i, (name, addr)) in NODES.iter().zip(ADDRS).enumerate() {
        let _ = write!(
            nodes,
            "  node {{\n    name: {name}\n    nodeid: {}\n    ring0_addr: {addr}\n  }}\n",
            i + 1
        );
    }
    format!(
        "# The Pacemaker test lab (tests/common/pacemaker.rs): fast failure detection.\n\
         totem {{\n  version: 2\n  cluster_name: hamirror-lab\n  transport: knet\n  crypto_cipher: aes256\n  \
         crypto_hash: sha256\n  token: 1000\n  token_coefficient: 0\n  join: 50\n}}\n\
         nodelist {{\n{nodes}}}\n\
         quorum {{\n  provider: corosync_votequorum\n  two_node: 0\n}}\n\
         logging {{\n  to_stderr: no\n  to_syslog: no\n  to_logfile: yes\n  logfile: {}\n  timestamp: hires\n}}\n",
        d.join("corosync.log").display()
    )
}

/// Node `i`'s boot (see the module doc); `d` is its directory.
fn boot_script(i: usize, d: &Path, opts: &Opts) -> String {
    let mut extra = String::new();
    if !opts.providers.is_empty() {
        // The test's providers over the installed ones, read-only.
        let _ = writeln!(
            extra,
            "mount -t overlay pcmk-lab-ocf -o lowerdir={}:{OCF} {OCF}",
            d.join("ocf").display(),
            OCF = "/usr/lib/ocf/resource.d"
        );
    }
    for (k, v) in &opts.env {
        let _ = writeln!(extra, "export {k}='{}'", v.replace('\'', r"'\''"));
    }
    let d = d.display();
    format!(
        r#"#!/bin/sh
# Boots {node} of the Pacemaker test lab: runs in its network namespace and
# in mount and UTS namespaces of its own (tests/common/pacemaker.rs).
set -e
hostname {node}
mount -t tmpfs -o mode=0755 pcmk-lab-run /run
mount -t tmpfs -o mode=1777 pcmk-lab-shm /dev/shm
mount --bind {d}/etc-corosync /etc/corosync
mount --bind {d}/lib-corosync /var/lib/corosync
mount --bind {d}/lib-pacemaker /var/lib/pacemaker
mount --bind {d}/log-pacemaker /var/log/pacemaker
{extra}{corosync} -f >>{d}/corosync.out 2>&1 &
n=0
until {cmapctl} -g totem.cluster_name >/dev/null 2>&1; do
  n=$((n+1))
  [ $n -lt 400 ] || {{ echo "corosync did not answer within 20 s" >&2; exit 1; }}
  sleep 0.05
done
{pacemakerd} >>{d}/pacemakerd.out 2>&1 &
touch {d}/up
exec sleep infinity
"#,
        node = NODES[i],
        corosync = tool("corosync").display(),
        cmapctl = tool("corosync-cmapctl").display(),
        pacemakerd = tool("pacemakerd").display(),
    )
}
