//! The cluster lab: two nodes, a client and three reachlist hosts in
//! network namespaces, wired like the real thing, plus the instruments that
//! judge a failover from outside.
//!
//! ```text
//!   r1 .1   r2 .2   r3 .3   client .100          LAN 192.168.77.0/24
//!     └───────┴───────┴───────┴── br0 (ns lan) ──┬──────────┐
//!                                          p1 │          │ p2
//!                                     n1 (serv1) .11   n2 (serv2) .12
//!                                          x0 10.77.0.1 ══ x0 10.77.0.2   crossover
//! ```
//!
//! Service addresses: group serv1 192.168.77.21, group serv2 .22, moved by
//! the shipped `hooks/ipaddr`. With [`Service::Hooks`] each group's S/K
//! hooks also start/stop a small TCP responder (socat) bound to the group's
//! address that answers with the name of the node running it; with
//! [`Service::Static`] a responder (a thread of the test inside the node's
//! namespace) answers on every address of each node all the time, and not
//! while the node is frozen: only the address moves, as with keepalived.
//!
//! The instruments (client probes, address samplers) are in `observe.rs`.

// Nodes are indexed throughout (0 = serv1, 1 = serv2), in every table.
#![allow(clippy::needless_range_loop)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::netns::{
    Children, Namespaces, enter_netns, ip, monotonic_ms, netns_pids, remove_stale_namespaces, signal, try_ip,
};
pub use super::observe::Observer;

pub const NODES: [&str; 2] = ["serv1", "serv2"];
pub const SERVICE_IPS: [&str; 2] = ["192.168.77.21", "192.168.77.22"];
pub const SERVICE_PORT: u16 = 8080;
const LAN_IPS: [&str; 2] = ["192.168.77.11", "192.168.77.12"];
const CROSS_IPS: [&str; 2] = ["10.77.0.1", "10.77.0.2"];
const REACH: [&str; 3] = ["192.168.77.1", "192.168.77.2", "192.168.77.3"];
const CLIENT_IP: &str = "192.168.77.100";

/// Failure-detection timers of a run.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub keepalive_ms: u64,
    pub warntime_ms: u64,
    pub deadtime_ms: u64,
    pub takeover_delay_ms: u64,
}

impl Timers {
    pub const DEFAULT: Timers = Timers {
        keepalive_ms: 50,
        warntime_ms: 150,
        deadtime_ms: 400,
        takeover_delay_ms: 200,
    };
    /// The fastest set docs/FAILOVER.md recommends.
    pub const FAST: Timers = Timers {
        keepalive_ms: 20,
        warntime_ms: 60,
        deadtime_ms: 160,
        takeover_delay_ms: 40,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// S/K hooks start and stop a responder bound to the group's address.
    Hooks,
    /// A responder on every address of each node, always running.
    Static,
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub timers: Timers,
    pub initdead: &'static str,
    pub auto_failback: bool,
    pub hook_timeout: &'static str,
    pub service: Service,
    /// Client probe interval.
    pub probe_every: Duration,
    /// Each group gets a mirror set `F<group>data` (`/data/<group>/` under each
    /// node's `root-<node>/`) and the nodes keys and pinned fingerprints,
    /// so the daemons mirror.
    pub mirror: bool,
    /// Lines added to both `NODE.conf` files (`monitor_interval = 1s\n`).
    pub extra_conf: &'static str,
    /// Run the daemons, `status` and the hooks from an installed tree (an
    /// extracted package: `ROOT/usr/bin/hamirror`,
    /// `ROOT/usr/share/hamirror/hooks/`) instead of this build's.
    pub installed: Option<PathBuf>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            timers: Timers::DEFAULT,
            initdead: "2s",
            auto_failback: false,
            hook_timeout: "10s",
            service: Service::Hooks,
            probe_every: Duration::from_millis(50),
            mirror: false,
            extra_conf: "",
            installed: None,
        }
    }
}

/// The namespaces, the configuration and the node processes of one case.
pub struct Lab {
    pub opts: Opts,
    pub dir: tempfile::TempDir,
    /// n1, n2.
    pub node_ns: [String; 2],
    pub lan_ns: String,
    pub client_ns: String,
    daemons: [Option<Child>; 2],
    others: Children,
    responders: [Option<Arc<Responder>>; 2],
    // Last: the namespaces go after every process in them.
    _ns: Namespaces,
}

impl Lab {
    /// The hamirror binary the lab runs.
    pub fn bin(&self) -> PathBuf {
        match &self.opts.installed {
            Some(root) => root.join("usr/bin/hamirror"),
            None => PathBuf::from(env!("CARGO_BIN_EXE_hamirror")),
        }
    }

    /// Where the shipped hooks (`ipaddr`…) are.
    pub fn hooks_dir(&self) -> PathBuf {
        match &self.opts.installed {
            Some(root) => root.join("usr/share/hamirror/hooks"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks"),
        }
    }

    /// Builds the network and writes the configuration; starts nothing.
    pub fn new(prefix: &str, opts: Opts) -> Lab {
        remove_stale_namespaces(prefix);
        let mut ns = Namespaces::default();
        let lan = ns.add(prefix, "lan");
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan, "link", "set", "br0", "up"]);
        let mut plug = |role: &str, port: &str, addr: &str| -> String {
            let n = ns.add(prefix, role);
            ip(&[
                "link", "add", "l0", "netns", &n, "type", "veth", "peer", "name", port, "netns", &lan,
            ]);
            ip(&["-n", &lan, "link", "set", port, "master", "br0"]);
            ip(&["-n", &lan, "link", "set", port, "up"]);
            ip(&["-n", &n, "addr", "add", &format!("{addr}/24"), "dev", "l0"]);
            ip(&["-n", &n, "link", "set", "l0", "up"]);
            n
        };
        let n1 = plug("n1", "p1", LAN_IPS[0]);
        let n2 = plug("n2", "p2", LAN_IPS[1]);
        let client = plug("cl", "pc", CLIENT_IP);
        for (i, r) in REACH.iter().enumerate() {
            plug(&format!("r{}", i + 1), &format!("pr{}", i + 1), r);
        }
        ip(&[
            "link", "add", "x0", "netns", &n1, "type", "veth", "peer", "name", "x0", "netns", &n2,
        ]);
        for (n, a) in [(&n1, CROSS_IPS[0]), (&n2, CROSS_IPS[1])] {
            ip(&["-n", n, "addr", "add", &format!("{a}/24"), "dev", "x0"]);
            ip(&["-n", n, "link", "set", "x0", "up"]);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let lab = Lab {
            opts,
            dir,
            node_ns: [n1, n2],
            lan_ns: lan,
            client_ns: client,
            daemons: [None, None],
            others: Children::default(),
            responders: [None, None],
            _ns: ns,
        };
        lab.write_config();
        lab
    }

    /// A file of the lab (state, run, logs): `state-serv1/standby.lock`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The cluster configuration directory.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cluster.d")
    }

    /// The processes running in node `i`'s namespace (its daemon, hooks,
    /// services, announcements) — everything that dies with the node.
    pub fn node_pids(&self, i: usize) -> Vec<u32> {
        netns_pids(&self.node_ns[i])
    }

    /// Node `i` freezes (SIGSTOP of everything in it, and its static
    /// responder stops answering), as a paused VM.
    pub fn freeze(&self, i: usize) -> Vec<u32> {
        let pids = self.node_pids(i);
        for p in &pids {
            signal(*p, libc::SIGSTOP);
        }
        if let Some(r) = &self.responders[i] {
            r.paused.store(true, Ordering::Relaxed);
        }
        pids
    }

    pub fn thaw(&self, i: usize, pids: &[u32]) {
        for p in pids {
            signal(*p, libc::SIGCONT);
        }
        if let Some(r) = &self.responders[i] {
            r.paused.store(false, Ordering::Relaxed);
        }
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let c = self.config();
        let t = self.opts.timers;
        std::fs::create_dir_all(d.join("run")).unwrap();
        std::fs::create_dir_all(&c).unwrap();
        for (i, node) in NODES.iter().enumerate() {
            std::fs::write(
                c.join(format!("{node}.conf")),
                format!(
                    "address = {}\nlan = {}\nstate = {}\nheartbeat_key = authkeys\nkeepalive = {}ms\nwarntime = {}ms\n\
                     deadtime = {}ms\ntakeover_delay = {}ms\ninitdead = {}\npreferred = serv1\nauto_failback = {}\n\
                     hook_timeout = {}\n{}",
                    CROSS_IPS[i],
                    LAN_IPS[i],
                    d.join(format!("state-{node}")).display(),
                    t.keepalive_ms,
                    t.warntime_ms,
                    t.deadtime_ms,
                    t.takeover_delay_ms,
                    self.opts.initdead,
                    if self.opts.auto_failback { "yes" } else { "no" },
                    self.opts.hook_timeout,
                    self.opts.extra_conf,
                ),
            )
            .unwrap();
            let g = c.join(node);
            std::fs::create_dir_all(&g).unwrap();
            let ipaddr = self.hooks_dir().join("ipaddr");
            let ipaddr = ipaddr.display();
            let addr = SERVICE_IPS[i];
            script(&g.join("S10ipaddr"), &format!("exec {ipaddr} \"$1\" {addr}/24 l0"));
            script(&g.join("K90ipaddr"), &format!("exec {ipaddr} \"$1\" {addr}/24 l0"));
            if self.opts.service == Service::Hooks {
                let svc = d.join("svc");
                script(
                    &g.join("S20svc"),
                    &format!("exec {} \"$1\" {node} {addr}", svc.display()),
                );
                script(
                    &g.join("K10svc"),
                    &format!("exec {} \"$1\" {node} {addr}", svc.display()),
                );
            }
            script(
                &g.join("N50log"),
                &format!(
                    "echo \"$HAMIRROR_NODE $1 $HAMIRROR_GROUP $HAMIRROR_EPOCH\" >> {}",
                    d.join("events.log").display()
                ),
            );
        }
        let run = d.join("run");
        script(
            &d.join("svc"),
            &format!(
                r#"# svc start|stop|status|reannounce GROUP ADDRESS: the test's TCP service, a
# responder bound to the group's address that answers with the node's name.
act=$1 group=$2 addr=$3
pidf={run}/svc-$HAMIRROR_NODE-$group.pid
case "$act" in
start)
  if [ -e {run}/hang-$HAMIRROR_NODE-$group ]; then echo $$ > {run}/hung.pid; exec sleep 600; fi
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then exit 0; fi
  setsid socat TCP-LISTEN:{port},bind=$addr,reuseaddr,fork SYSTEM:"echo $HAMIRROR_NODE" </dev/null >/dev/null 2>&1 &
  echo $! > "$pidf"
  i=0
  while [ $i -lt 200 ]; do
    ss -Hltn "sport = :{port}" | grep -qF "$addr:{port}" && exit 0
    sleep 0.01; i=$((i+1))
  done
  echo "responder did not start" >&2; exit 1 ;;
stop)
  [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null
  rm -f "$pidf"; exit 0 ;;
status)
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then exit 0; fi
  echo "the responder of $group is not running"; exit 3 ;;
*) exit 0 ;;
esac"#,
                run = run.display(),
                port = SERVICE_PORT
            ),
        );
        std::fs::write(
            c.join("authkeys"),
            "5a1c0d9e2b7a4c3d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f\n",
        )
        .unwrap();
        std::fs::set_permissions(c.join("authkeys"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(c.join("reachlist"), REACH.join("\n") + "\n").unwrap();
        if self.opts.mirror {
            self.write_mirror_config();
        }
    }

    /// Mirror sets, roots and keys (see [`Opts::mirror`]).
    fn write_mirror_config(&self) {
        let c = self.config();
        for node in NODES {
            std::fs::write(c.join(node).join(format!("F{node}data")), format!("/data/{node}/\n")).unwrap();
            let root = self.mirror_root(node);
            for g in NODES {
                std::fs::create_dir_all(root.join("data").join(g)).unwrap();
            }
            let conf = c.join(format!("{node}.conf"));
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(&format!("root = {}\n", root.display()));
            std::fs::write(&conf, &text).unwrap();
            let out = Command::new(self.bin())
                .arg("--config")
                .arg(&c)
                .args(["--node", node, "init"])
                .output()
                .expect("run hamirror init");
            assert!(out.status.success(), "init {node}: {}", super::stderr(&out));
            let stdout = super::stdout(&out);
            let fp = stdout
                .split_whitespace()
                .find(|w| w.starts_with("sha256:"))
                .expect("init prints the fingerprint");
            text.push_str(&format!("fingerprint = {fp}\n"));
            std::fs::write(&conf, text).unwrap();
        }
    }

    /// Node `node`'s root (with [`Opts::mirror`]): its sets lie under it.
    pub fn mirror_root(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("root-{node}"))
    }

    /// A responder on every address of node `i`, answering its name
    /// ([`Service::Static`]): a thread of this process inside the node's
    /// namespace (a process forking a shell per connection is too slow to
    /// answer within a 20 ms probe on two busy cores). It answers nothing
    /// while the node is frozen; once started it runs for the lab's life
    /// (a dead node's cables are out, so nobody reaches it).
    pub fn start_static_responder(&mut self, i: usize) {
        if self.responders[i].is_some() {
            return;
        }
        let r = Arc::new(Responder::default());
        let (ns, r2) = (self.node_ns[i].clone(), r.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter_netns(&ns).expect("enter node namespace");
            let l = std::net::TcpListener::bind(("0.0.0.0", SERVICE_PORT)).expect("bind responder");
            let _ = tx.send(());
            let mut held = vec![];
            while !r2.stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&l),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; 100 ms so a dropped lab ends us.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                let Ok((mut c, _)) = l.accept() else { continue };
                if r2.paused.load(Ordering::Relaxed) {
                    // A frozen service: the kernel accepted, nobody answers.
                    held.push(c);
                    continue;
                }
                held.clear();
                let _ = std::io::Write::write_all(&mut c, format!("{}\n", NODES[i]).as_bytes());
            }
        });
        rx.recv().expect("responder started");
        self.responders[i] = Some(r);
    }

    /// Starts `hamirror run` on node `i` (log appended to `serv1.log`).
    pub fn start(&mut self, i: usize) {
        assert!(self.daemons[i].is_none(), "{} already running", NODES[i]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{}.log", NODES[i])))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node_ns[i]])
            .arg(self.bin())
            .arg("--config")
            .arg(self.config())
            .args(["--node", NODES[i], "run"])
            .env("HAMIRROR_LOG", "info")
            .env("HAMIRROR_RUN_DIR", self.path("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hamirror run");
        self.daemons[i] = Some(child);
    }

    pub fn daemon_pid(&self, i: usize) -> u32 {
        self.daemons[i].as_ref().expect("daemon running").id()
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        let mut c = self.daemons[i].take()?;
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not exit after SIGTERM:\n{}", NODES[i], self.log(i));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL of the daemon.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.daemons[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pids of node `i`'s responders (from the svc hook's pid files).
    pub fn responder_pids(&self, i: usize) -> Vec<u32> {
        NODES
            .iter()
            .filter_map(|g| std::fs::read_to_string(self.path(&format!("run/svc-{}-{g}.pid", NODES[i]))).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// Node `i` dies: both cables out, every process in it killed (its
    /// daemon, services and a gratuitous ARP still being sent).
    pub fn node_dies(&mut self, i: usize) {
        self.cut_lan(i);
        ip(&["-n", &self.node_ns[i], "link", "set", "x0", "down"]);
        for p in self.node_pids(i) {
            signal(p, libc::SIGKILL);
        }
        self.kill(i);
    }

    /// Node `i` boots again: no service address left, cables in, daemon
    /// (and with [`Service::Static`] the responder) started. Returns the
    /// time the node was clean (before the cables).
    pub fn node_reboots(&mut self, i: usize) -> u64 {
        let clean = self.reboot_clean(i);
        if self.opts.service == Service::Static {
            self.start_static_responder(i);
        }
        self.start(i);
        clean
    }

    /// The part of a reboot before any software starts: no service address
    /// left, cables in. Returns the time the node was clean.
    pub fn reboot_clean(&mut self, i: usize) -> u64 {
        for a in SERVICE_IPS {
            try_ip(&["-n", &self.node_ns[i], "addr", "del", &format!("{a}/24"), "dev", "l0"]);
        }
        for g in NODES {
            let _ = std::fs::remove_file(self.path(&format!("run/svc-{}-{g}.pid", NODES[i])));
        }
        let clean = monotonic_ms();
        self.heal_lan(i);
        ip(&["-n", &self.node_ns[i], "link", "set", "x0", "up"]);
        clean
    }

    /// Starts `args` inside node `i`'s namespace (killed with the lab).
    pub fn spawn_in(&mut self, i: usize, args: &[&str], log: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(log))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node_ns[i]])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a process in a node");
        self.others.0.push(child);
    }

    /// Makes every link of node `i` drop all traffic while the carrier
    /// stays up (a switch port taken out of its VLAN, a bad route): the LAN
    /// port leaves the bridge, the crossover addresses get blackhole routes.
    /// No interface goes down; nothing is heard.
    pub fn blackhole(&self, i: usize, on: bool) {
        let other = 1 - i;
        let port = ["p1", "p2"][i];
        if on {
            ip(&["-n", &self.lan_ns, "link", "set", port, "nomaster"]);
        } else {
            ip(&["-n", &self.lan_ns, "link", "set", port, "master", "br0"]);
        }
        let verb = if on { "add" } else { "del" };
        for (n, to) in [(i, other), (other, i)] {
            ip(&[
                "-n",
                &self.node_ns[n],
                "route",
                verb,
                "blackhole",
                &format!("{}/32", CROSS_IPS[to]),
            ]);
        }
    }

    /// Split brain: the nodes stop hearing each other on every link while
    /// both still reach the reachlist hosts and the client (the crossover
    /// goes down; each node's route to the other's LAN address becomes a
    /// blackhole). `false` heals it.
    pub fn split(&self, on: bool) {
        let verb = if on { "add" } else { "del" };
        for i in 0..2 {
            ip(&[
                "-n",
                &self.node_ns[i],
                "route",
                verb,
                "blackhole",
                &format!("{}/32", LAN_IPS[1 - i]),
            ]);
        }
        ip(&[
            "-n",
            &self.node_ns[0],
            "link",
            "set",
            "x0",
            if on { "down" } else { "up" },
        ]);
    }

    /// Pulls node `i`'s LAN cable (its switch port goes down).
    pub fn cut_lan(&self, i: usize) {
        ip(&["-n", &self.lan_ns, "link", "set", ["p1", "p2"][i], "down"]);
    }

    pub fn heal_lan(&self, i: usize) {
        ip(&["-n", &self.lan_ns, "link", "set", ["p1", "p2"][i], "up"]);
    }

    pub fn cut_crossover(&self) {
        ip(&["-n", &self.node_ns[0], "link", "set", "x0", "down"]);
    }

    pub fn heal_crossover(&self) {
        ip(&["-n", &self.node_ns[0], "link", "set", "x0", "up"]);
    }

    /// `hamirror status --json` of node `i`, or None if it does not answer.
    /// Any health verdict (exit 0 OK, 1 WARNING, 2 CRITICAL) is an answer:
    /// tests read the report of degraded clusters on purpose.
    pub fn status(&self, i: usize) -> Option<Value> {
        let out = Command::new(self.bin())
            .arg("--config")
            .arg(self.config())
            .args(["--node", NODES[i], "status", "--json"])
            .output()
            .ok()?;
        if !matches!(out.status.code(), Some(0..=2)) {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `hamirror status` (text) of node `i`: its exit code and stdout.
    pub fn status_code(&self, i: usize) -> (Option<i32>, String) {
        let out = Command::new(self.bin())
            .arg("--config")
            .arg(self.config())
            .args(["--node", NODES[i], "status"])
            .output()
            .expect("run hamirror status");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `hamirror ARGS` as node `i`; (success, stdout + stderr).
    pub fn command(&self, i: usize, args: &[&str]) -> (bool, String) {
        let out = Command::new(self.bin())
            .arg("--config")
            .arg(self.config())
            .args(["--node", NODES[i]])
            .args(args)
            .output()
            .expect("run hamirror");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The daemon log of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.path(&format!("{}.log", NODES[i]))).unwrap_or_default()
    }

    /// Both logs and the notify hooks' record, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..2 {
            let _ = writeln!(s, "===== {} log =====\n{}", NODES[i], self.log(i));
        }
        let ev = std::fs::read_to_string(self.path("events.log")).unwrap_or_default();
        let _ = writeln!(s, "===== notify hooks =====\n{ev}");
        s
    }

    /// Polls `f` every 50 ms until it holds; panics with the logs after
    /// `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Lab) -> bool) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if f(self) {
                return monotonic_ms();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for: {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The phase of `group` on node `i` and the holder it reports.
    pub fn group(&self, i: usize, group: &str) -> Option<(String, Option<String>)> {
        let s = self.status(i)?;
        let g = s["groups"].as_array()?.iter().find(|g| g["group"] == group)?.clone();
        Some((
            g["phase"].as_str().unwrap_or("").to_string(),
            g["holder"].as_str().map(str::to_string),
        ))
    }

    /// Whether node `i` runs `group` (phase held) by its own account.
    pub fn holds(&self, i: usize, group: &str) -> bool {
        self.group(i, group).is_some_and(|(p, _)| p == "held")
    }

    pub fn mode(&self, i: usize) -> Option<(String, Option<String>)> {
        let s = self.status(i)?;
        Some((
            s["mode"].as_str().unwrap_or("").to_string(),
            s["standby_reason"].as_str().map(str::to_string),
        ))
    }

    /// Both daemons up, each running its own group.
    pub fn wait_both_running_own_groups(&self) {
        self.wait("each node running its own group", Duration::from_secs(15), |l| {
            l.holds(0, "serv1") && l.holds(1, "serv2") && l.group(0, "serv2").is_some_and(|(p, _)| p == "released")
        });
    }

    /// Starts the instruments.
    pub fn observe(&self) -> Observer {
        Observer::start(self)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for r in self.responders.iter().flatten() {
            r.stop.store(true, Ordering::Relaxed);
        }
        for i in 0..2 {
            if let Some(c) = &self.daemons[i] {
                // A frozen daemon must be able to die.
                signal(c.id(), libc::SIGCONT);
            }
            self.kill(i);
        }
        for i in 0..2 {
            for p in self.responder_pids(i) {
                signal(p, libc::SIGCONT);
                signal(p, libc::SIGKILL);
            }
        }
        for i in 0..2 {
            for p in self.node_pids(i) {
                signal(p, libc::SIGCONT);
                signal(p, libc::SIGKILL);
            }
        }
    }
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Controls of a static responder.
#[derive(Debug, Default)]
pub struct Responder {
    pub paused: AtomicBool,
    pub stop: AtomicBool,
}
