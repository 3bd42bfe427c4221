//! Two nodes on 127.0.0.1 with separate roots and state, driving the real
//! binary: keys made by `hamirror init`, serv2 running `hamirror serve` as a
//! child process (killed on drop), serv1 syncing to it. Plus the full tree
//! comparison every mirror test ends with, and rsync as an independent oracle.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{TempConfig, stderr};

/// `N` distinct UDP ports that are free now (all held at once while
/// picked), and never handed out before in this test process. They are
/// taken from below the kernel's ephemeral range: a port picked with
/// bind(0) and released could be handed by the kernel to any client
/// socket (a `hamirror sync` of a test running in parallel) before our
/// daemon binds it, while ports below that range are only ever given to
/// whoever asks for them by number.
pub fn free_udp_ports<const N: usize>() -> [u16; N] {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, ephemeral_lo.max(10_000 + 4096));
    let span = u32::from(hi - lo);
    // Another test binary may run at the same time (cargo test -j, CI
    // reruns): start each process somewhere else in the span.
    let mut next = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut socks = Vec::with_capacity(N);
    let mut tried = 0;
    while socks.len() < N {
        assert!(tried < span, "no free UDP port in {lo}..{hi}");
        tried += 1;
        let port = lo + (next % span) as u16;
        next = next.wrapping_add(1);
        if given.contains(&port) {
            continue;
        }
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
            given.push(port);
            socks.push(s);
        }
    }
    std::array::from_fn(|i| socks[i].local_addr().unwrap().port())
}

pub struct Pair {
    pub cfg: TempConfig,
    pub ports: [u16; 2],
    serve: Option<Child>,
}

impl Pair {
    /// The example cluster on loopback: serv1 holds Fsmbd and Flpd, serv2 Fhttpd.
    pub fn new() -> Pair {
        let cfg = TempConfig::example();
        let [p1, p2, h1, h2] = free_udp_ports::<4>();
        let (ports, hb) = ([p1, p2], [h1, h2]);
        let base = cfg.tmp.path().to_path_buf();
        for (i, n) in ["serv1", "serv2"].iter().enumerate() {
            let f = format!("{n}.conf");
            let text = std::fs::read_to_string(cfg.path(&f)).unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !["address", "lan", "port", "fingerprint"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect();
            let mut text = kept.join("\n");
            text.push_str(&format!(
                "\naddress = 127.0.0.1\nport = {}\nheartbeat_port = {}\nroot = {}\nstate = {}\n",
                ports[i],
                hb[i],
                base.join(format!("r{}", i + 1)).display(),
                base.join(format!("s{}", i + 1)).display()
            ));
            std::fs::write(cfg.path(&f), text).unwrap();
        }
        for n in ["serv1", "serv2"] {
            cfg.init_node(n);
        }
        for r in ["r1", "r2"] {
            std::fs::create_dir_all(base.join(r)).unwrap();
        }
        Pair {
            cfg,
            ports,
            serve: None,
        }
    }

    pub fn r1(&self) -> PathBuf {
        self.cfg.tmp.path().join("r1")
    }
    pub fn r2(&self) -> PathBuf {
        self.cfg.tmp.path().join("r2")
    }
    pub fn state(&self, node: usize) -> PathBuf {
        self.cfg.tmp.path().join(format!("s{node}"))
    }
    /// A path under serv1's (the sender's) root.
    pub fn src(&self, rel: &str) -> PathBuf {
        self.r1().join(rel)
    }
    /// A path under serv2's (the replica's) root.
    pub fn dst(&self, rel: &str) -> PathBuf {
        self.r2().join(rel)
    }

    pub fn cmd(&self, node: &str, args: &[&str]) -> Command {
        self.cmd_bin(Path::new(env!("CARGO_BIN_EXE_hamirror")), node, args)
    }

    /// As [`Pair::cmd`], with another build of hamirror.
    pub fn cmd_bin(&self, bin: &Path, node: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg("--config").arg(self.cfg.dir()).arg("--node").arg(node).args(args);
        c.env_remove("HAMIRROR_CONFIG")
            .env_remove("HAMIRROR_NODE")
            .env("HAMIRROR_LOG", "info");
        c
    }

    pub fn run(&self, node: &str, args: &[&str]) -> Output {
        self.cmd(node, args).output().unwrap()
    }

    /// Starts serv2's receiver and waits until its port is bound.
    pub fn start_serve(&mut self) {
        self.start_serve_env(&[]);
    }

    /// [`Pair::start_serve`] with extra environment variables.
    pub fn start_serve_env(&mut self, env: &[(&str, &str)]) {
        self.start_serve_under(&[], env);
    }

    /// [`Pair::start_serve_env`], run by the program `wrapper` (with its
    /// arguments) when not empty: `setpriv --bounding-set=-mknod …`.
    pub fn start_serve_under(&mut self, wrapper: &[&str], env: &[(&str, &str)]) {
        let mut cmd = self.cmd("serv2", &["serve"]);
        if let Some((prog, args)) = wrapper.split_first() {
            let inner = cmd;
            cmd = Command::new(prog);
            cmd.args(args).arg(inner.get_program()).args(inner.get_args());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
        }
        cmd.envs(env.iter().copied());
        self.start_serve_cmd(cmd);
    }

    /// [`Pair::start_serve`] with another build of hamirror.
    pub fn start_serve_bin(&mut self, bin: &Path) {
        let cmd = self.cmd_bin(bin, "serv2", &["serve"]);
        self.start_serve_cmd(cmd);
    }

    fn start_serve_cmd(&mut self, mut cmd: Command) {
        self.stop_serve();
        let log = std::fs::File::create(self.cfg.tmp.path().join("serve.log")).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.serve = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(("127.0.0.1", self.ports[1])).is_ok() {
            assert!(
                Instant::now() < deadline,
                "serve did not bind its port:\n{}",
                self.serve_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the receiver (SIGKILL) and reaps it.
    pub fn stop_serve(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The receiver's process id, while it runs.
    pub fn serve_pid(&self) -> Option<u32> {
        self.serve.as_ref().map(Child::id)
    }

    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.cfg.tmp.path().join("serve.log")).unwrap_or_default()
    }

    /// `sync SET --json` from serv1: the parsed JSON (Null on failure), the
    /// exit code and stderr.
    pub fn sync(&self, set: &str, extra: &[&str]) -> (serde_json::Value, i32, String) {
        let mut args = vec!["sync", set, "--json"];
        args.extend_from_slice(extra);
        let out = self.run("serv1", &args);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (json, out.status.code().unwrap_or(-1), stderr(&out))
    }

    /// Syncs and asserts success.
    pub fn sync_ok(&self, set: &str) -> serde_json::Value {
        let (v, code, err) = self.sync(set, &[]);
        assert_eq!(code, 0, "sync {set} failed: {err}\nserve log:\n{}", self.serve_log());
        v
    }

    /// Ready for two `hamirror run` daemons on loopback: the example's
    /// hooks removed (none runs), a short initdead, a reachlist both reach.
    pub fn for_daemons(self) -> Pair {
        for n in ["serv1", "serv2"] {
            for e in std::fs::read_dir(self.cfg.path(n)).unwrap().flatten() {
                if e.file_name().to_string_lossy().starts_with(['S', 'K', 'N']) {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
            self.cfg.set(&format!("{n}.conf"), "initdead", "initdead = 1s");
        }
        self.cfg.write("reachlist", "127.0.0.1\n");
        self
    }

    /// Past the scanner's racy window (so a change is seen by its
    /// fingerprint), syncs Fsmbd, asserts it succeeded and that `roots` are
    /// identical on both nodes; returns the sync's JSON summary.
    pub fn mirror_fsmbd(&self, step: &str, roots: &[&str]) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(150));
        let (v, code, err) = self.sync("Fsmbd", &[]);
        assert_eq!(
            code,
            0,
            "{step}: sync failed: {err}\n{v}\nserve log:\n{}",
            self.serve_log()
        );
        self.assert_mirrored(roots);
        v
    }

    /// Asserts the Fsmbd roots are identical on both nodes, by the test's own
    /// comparison and by rsync.
    pub fn assert_mirrored(&self, roots: &[&str]) {
        for r in roots {
            assert_trees_equal(&self.src(r), &self.dst(r));
            rsync_oracle(&self.src(r), &self.dst(r));
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop_serve();
    }
}

/// What the comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    content: Vec<u8>,
}

/// Every path of a tree with what is compared, and its hard-link groups.
type Tree = (HashMap<Vec<u8>, Node>, Vec<Vec<Vec<u8>>>);

fn describe(root: &Path) -> Tree {
    let mut out = HashMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        // A tree still changing (a watcher's temp file, a writer) may lose
        // entries while it is walked; a vanished entry is simply not listed.
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let ft = m.file_type();
        let (kind, content) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
            ("dir", vec![])
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            )
        } else if ft.is_file() {
            if m.nlink() > 1 {
                inodes.entry((m.dev(), m.ino())).or_default().push(rel.clone());
            }
            ("file", std::fs::read(&p).unwrap_or_default())
        } else {
            // A device's number is its content.
            let kind = if ft.is_fifo() {
                "fifo"
            } else if ft.is_char_device() {
                "char device"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "socket"
            };
            (
                kind,
                format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev())).into_bytes(),
            )
        };
        let mode = if ft.is_symlink() { 0 } else { m.mode() & 0o7777 };
        let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        // A root directory's own mtime is compared too; a symlink's mtime is.
        out.insert(
            rel,
            Node {
                kind,
                mode,
                uid: m.uid(),
                gid: m.gid(),
                mtime_ns,
                content,
            },
        );
    }
    let mut groups: Vec<Vec<Vec<u8>>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

/// Waits until every one of `roots` is identical under `a` and `b` (the
/// tree comparison, then rsync for attributes and ACLs), then checks it
/// once more with the rsync oracle. Past `timeout` it fails with what
/// still differs and the `logs`.
pub fn converge_roots(a: &Path, b: &Path, roots: &[&str], what: &str, timeout: Duration, logs: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut diffs: Vec<String> = roots
            .iter()
            .flat_map(|r| tree_differences(&a.join(r), &b.join(r)))
            .collect();
        if diffs.is_empty() {
            // Attributes and ACLs, which only rsync compares.
            diffs = roots
                .iter()
                .map(|r| rsync_differences(&a.join(r), &b.join(r)))
                .filter(|d| !d.trim().is_empty())
                .collect();
        }
        if diffs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: trees still differ after {timeout:?}:\n{}\n{}",
            diffs.join("\n"),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in roots {
        rsync_oracle(&a.join(r), &b.join(r));
    }
}

/// Asserts two trees are identical: every path with its kind, mode, owner,
/// mtime (ns), content or symlink target, and the hard-link groups.
pub fn assert_trees_equal(a: &Path, b: &Path) {
    let diffs = tree_differences(a, b);
    assert!(
        diffs.is_empty(),
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        diffs.join("\n")
    );
}

/// Every difference between two trees (empty when identical).
pub fn tree_differences(a: &Path, b: &Path) -> Vec<String> {
    let (ta, ga) = describe(a);
    let (tb, gb) = describe(b);
    let mut paths: Vec<&Vec<u8>> = ta.keys().chain(tb.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut diffs = Vec::new();
    for p in paths {
        let show = String::from_utf8_lossy(p);
        match (ta.get(p), tb.get(p)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let what = if x.kind != y.kind {
                    format!("kind {} vs {}", x.kind, y.kind)
                } else if x.content != y.content {
                    format!("content differs ({} vs {} bytes)", x.content.len(), y.content.len())
                } else {
                    format!(
                        "meta {:o} {}:{} {} vs {:o} {}:{} {}",
                        x.mode, x.uid, x.gid, x.mtime_ns, y.mode, y.uid, y.gid, y.mtime_ns
                    )
                };
                diffs.push(format!("/{show}: {what}"));
            }
            (Some(_), None) => diffs.push(format!("/{show}: missing on the replica")),
            (None, Some(_)) => diffs.push(format!("/{show}: only on the replica")),
            (None, None) => {}
        }
    }
    if ga != gb {
        diffs.push(format!("hard-link groups differ: {ga:?} vs {gb:?}"));
    }
    diffs
}

/// rsync as an independent oracle: a checksum dry run with deletes and hard
/// links, itemizing any difference, must print nothing.
pub fn rsync_oracle(a: &Path, b: &Path) {
    let items = rsync_differences(a, b);
    assert!(
        items.trim().is_empty(),
        "rsync sees differences between {} and {}:\n{items}",
        a.display(),
        b.display()
    );
}

/// What rsync's checksum dry run (with deletes, hard links, ACLs, xattrs,
/// numeric owners) itemizes between two trees: empty when they are the same.
pub fn rsync_differences(a: &Path, b: &Path) -> String {
    let mut cmd = Command::new("rsync");
    cmd.args(["-anc", "-HAX", "--numeric-ids", "--delete", "--itemize-changes"])
        .arg(format!("{}/", a.display()))
        .arg(format!("{}/", b.display()));
    itemized(cmd)
}

/// Runs an rsync dry run and returns its itemized lines (its notes such as
/// "cannot delete non-empty directory" are not differences).
fn itemized(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .expect("rsync is needed as the test oracle (apt-get install rsync)");
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("cannot delete non-empty directory: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// [`rsync_differences`] for a set with exclude rules: rsync's checksum
/// dry run over the directory `roots` (set paths such as `srv/samba`), each
/// named as `A/./ROOT/` with `--relative` so that rsync sees the same
/// paths as hamirror (relative to `/`), and `rules` passed unchanged as
/// `--filter` rules (`- *.tmp`, `+ keep.log`, `- /var/lib/samba/cache/`):
/// the same text in an F file and in rsync's filter must select the same
/// paths. rsync's own notes (such as "cannot delete non-empty directory")
/// go to stderr and are not differences.
pub fn rsync_differences_filtered(a: &Path, b: &Path, roots: &[&str], rules: &[&str]) -> String {
    let mut cmd = Command::new("rsync");
    cmd.args([
        "-anc",
        "-HAX",
        "--numeric-ids",
        "--delete",
        "--itemize-changes",
        "--relative",
        "--no-implied-dirs",
    ]);
    for r in rules {
        cmd.arg(format!("--filter={r}"));
    }
    for r in roots {
        cmd.arg(format!("{}/./{r}/", a.display()));
    }
    cmd.arg(format!("{}/", b.display()));
    itemized(cmd)
}
