//! `hamirror resync --from PEER` through the real binary: serv1 holds the
//! Fsmbd group (its owner, epoch 1) and runs `hamirror serve`; serv2, the
//! replica, lost or changed data and pulls it back. After each step the
//! trees are compared in full and by rsync. Also: a push from the holder to
//! a node with changes of its own is refused (Diverged) and loses nothing.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::pair::Pair;
use common::stderr;
use common::{noise, write};

const ROOTS: &[&str] = &["srv/samba", "etc/samba", "var/lib/samba"];
const MARK: &str = ".hamirror-conflict-serv2-";
const BIG: usize = 64 << 20;

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let out = std::process::Command::new("setfattr")
        .args(["-n", name, "-v", &format!("0x{}", hex(value))])
        .arg(path)
        .output()
        .expect("setfattr (package attr)");
    assert!(out.status.success(), "setfattr: {}", stderr(&out));
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .expect("getfattr (package attr)");
    out.status.success().then_some(out.stdout)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Past the scanner's racy window, so the next scans trust fingerprints.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

/// serv1's tree: a few kinds of entries and some bulk.
fn populate(p: &Pair, big: usize) {
    let s = |r: &str| p.src(r);
    write(&s("srv/samba/small.txt"), b"hello\n");
    write(&s("srv/samba/big.bin"), &noise(1, big));
    write(&s("srv/samba/deep/a/b/c.txt"), b"deep");
    fs::create_dir_all(s("srv/samba/empty")).unwrap();
    std::os::unix::fs::symlink("small.txt", s("srv/samba/link")).unwrap();
    write(&s("srv/samba/notes.txt"), b"the holder's notes\n");
    write(&s("srv/samba/gone-there.txt"), b"serv1 will delete this\n");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    write(&s("var/lib/samba/passdb.tdb"), &noise(2, 100_000));
    settle();
}

/// The two nodes, mirrored once (serv1 → serv2), with serv1's receiver
/// running too so serv2 can pull from it.
struct Setup {
    p: Pair,
    serve1: Option<Child>,
}

impl Setup {
    fn new(big: usize) -> Setup {
        Setup::with_conf(big, "")
    }

    /// With `conf` appended to both nodes' NODE.conf.
    fn with_conf(big: usize, conf: &str) -> Setup {
        let mut p = Pair::new();
        p.cfg.append("serv1.conf", conf);
        p.cfg.append("serv2.conf", conf);
        populate(&p, big);
        p.start_serve();
        p.sync_ok("Fsmbd");
        p.assert_mirrored(ROOTS);
        let mut s = Setup { p, serve1: None };
        s.start_serve1();
        s
    }

    fn start_serve1(&mut self) {
        let log = fs::File::create(self.p.cfg.tmp.path().join("serve1.log")).unwrap();
        let child = self
            .p
            .cmd("serv1", &["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.serve1 = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(("127.0.0.1", self.p.ports[0])).is_ok() {
            assert!(Instant::now() < deadline, "serv1's serve did not bind");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn serve1_log(&self) -> String {
        fs::read_to_string(self.p.cfg.tmp.path().join("serve1.log")).unwrap_or_default()
    }

    /// `resync --from serv1 Fsmbd --json` on serv2.
    fn resync(&self, extra: &[&str]) -> (serde_json::Value, i32, String) {
        let mut args = vec!["resync", "--from", "serv1", "Fsmbd", "--json"];
        args.extend_from_slice(extra);
        let out = self.p.run("serv2", &args);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (json, out.status.code().unwrap_or(-1), stderr(&out))
    }

    fn resync_ok(&self, extra: &[&str]) -> serde_json::Value {
        let (v, code, err) = self.resync(extra);
        assert_eq!(code, 0, "resync failed: {err}\nserv1 log:\n{}", self.serve1_log());
        v
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut c) = self.serve1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The paths under `root` (relative, sorted) whose name matches `wanted`.
fn find(root: &Path, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            if wanted(&e.file_name().to_string_lossy()) {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The conflict copies under a root.
fn conflict_copies(root: &Path) -> Vec<String> {
    find(root, |name| name.contains(".hamirror-conflict-"))
}

/// Temp files left under a root.
fn temp_files(root: &Path) -> Vec<String> {
    find(root, |name| name.ends_with(".hamirror-tmp"))
}

fn set0(v: &serde_json::Value) -> &serde_json::Value {
    &v["sets"][0]
}

#[test]
fn a_damaged_replica_is_restored_exactly_with_discard_mine() {
    let s = Setup::new(3 << 20);
    let d = |r: &str| s.p.dst(r);
    fs::remove_file(d("srv/samba/small.txt")).unwrap();
    fs::remove_dir_all(d("srv/samba/deep")).unwrap();
    let mut big = fs::read(d("srv/samba/big.bin")).unwrap();
    big.truncate(1 << 20);
    big[1000] ^= 0xff;
    fs::write(d("srv/samba/big.bin"), &big).unwrap();
    write(&d("srv/samba/stray.txt"), b"not on the holder");
    fs::remove_file(d("etc/samba/smb.conf")).unwrap();
    settle();

    let v = s.resync_ok(&["--discard-mine"]);
    let r = set0(&v);
    assert_eq!(r["outcome"], "full", "{v}");
    assert_eq!(r["complete"], true, "{v}");
    assert_eq!(v["conflicts"], 0, "{v}");
    s.p.assert_mirrored(ROOTS);
    assert!(conflict_copies(&s.p.r2()).is_empty());
    // The truncated file was rebuilt from the 1 MiB this node still held:
    // far less than the file came over.
    assert!(
        r["bytes_received"].as_u64().unwrap() < 2_300_000,
        "received {} of a 3 MiB file",
        r["bytes_received"]
    );
}

#[test]
fn a_resync_with_nothing_to_do_is_one_round_trip() {
    let s = Setup::new(1 << 20);
    // The first resync records the holder's position; the second finds it.
    s.resync_ok(&[]);
    let v = s.resync_ok(&[]);
    assert_eq!(set0(&v)["outcome"], "unchanged", "{v}");
    assert_eq!(set0(&v)["complete"], true, "{v}");
    // Hello, HelloOk, Goodbye: no entry offered, no chunk.
    assert_eq!(set0(&v)["offered"], 0, "{v}");
    assert_eq!(set0(&v)["chunks_received"], 0, "{v}");
    s.p.assert_mirrored(ROOTS);
}

#[test]
fn a_resync_waits_while_another_process_of_this_node_holds_the_index() {
    let s = Setup::new(1 << 20);
    fs::write(s.p.src("srv/samba/late.txt"), b"written on the holder\n").unwrap();
    // Another process of serv2 (its daemon applying a push, say) holds
    // the set's index for a second.
    let held = hamirror::index::Index::open_set(&s.p.state(2), "Fsmbd").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(held);
    });
    let started = Instant::now();
    let (v, code, err) = s.resync(&[]);
    release.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Fsmbd is in use on serv2"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
    assert_eq!(set0(&v)["complete"], true, "{v}");
    assert_eq!(
        fs::read(s.p.dst("srv/samba/late.txt")).unwrap(),
        b"written on the holder\n"
    );
}

/// The one conflict copy of `rel` under `root` (its full relative path).
fn copy_of(root: &Path, rel: &str) -> String {
    let copies: Vec<String> = conflict_copies(root)
        .into_iter()
        .filter(|c| c.starts_with(&format!("{rel}{MARK}")))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "conflict copies of {rel} under {}: {copies:?}",
        root.display()
    );
    copies[0].clone()
}

#[test]
fn unmirrored_changes_are_refused_by_a_push_then_kept_as_conflict_copies_on_both_nodes() {
    let s = Setup::with_conf(1 << 20, "xattrs = user\n");
    let (src, dst) = (|r: &str| s.p.src(r), |r: &str| s.p.dst(r));
    // serv2 wrote while it believed it held the group (its watcher
    // committed the writes: `scan` stands in for it).
    write(&dst("srv/samba/notes.txt"), b"serv2's notes\n");
    set_xattr(&dst("srv/samba/notes.txt"), "user.author", b"serv2");
    fs::set_permissions(dst("srv/samba/notes.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    write(&dst("srv/samba/mine-only.txt"), b"only serv2 has this\n");
    write(&dst("srv/samba/gone-there.txt"), b"serv2 changed this\n");
    fs::remove_file(dst("srv/samba/small.txt")).unwrap();
    // Meanwhile serv1 wrote too.
    write(&src("srv/samba/notes.txt"), b"serv1's notes\n");
    fs::remove_file(src("srv/samba/gone-there.txt")).unwrap();
    write(&src("srv/samba/small.txt"), b"serv1 changed small\n");
    settle();
    let out = s.p.run("serv2", &["scan", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The holder's push would overwrite serv2's writes: refused, clearly.
    let (_, code, err) = s.p.sync("Fsmbd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Diverged") && err.contains("hamirror resync --from serv1"),
        "{err}"
    );
    assert_eq!(fs::read(dst("srv/samba/notes.txt")).unwrap(), b"serv2's notes\n");
    assert!(dst("srv/samba/mine-only.txt").exists());

    let v = s.resync_ok(&[]);
    assert_eq!(v["conflicts"], 3, "{v}");
    let mut named: Vec<String> = set0(&v)["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            "srv/samba/gone-there.txt",
            "srv/samba/mine-only.txt",
            "srv/samba/notes.txt"
        ],
        "{v}"
    );
    assert_eq!(set0(&v)["conflicts_delivered"], 3, "{v}");
    // The holder's versions are in place; serv2's are beside them, on both.
    for (root, who) in [(s.p.r2(), "serv2"), (s.p.r1(), "serv1")] {
        let at = |r: &str| root.join(r);
        assert_eq!(
            fs::read(at("srv/samba/notes.txt")).unwrap(),
            b"serv1's notes\n",
            "{who}"
        );
        assert_eq!(
            fs::read(at("srv/samba/small.txt")).unwrap(),
            b"serv1 changed small\n",
            "{who}"
        );
        assert!(!at("srv/samba/gone-there.txt").exists(), "{who}");
        assert!(!at("srv/samba/mine-only.txt").exists(), "{who}");
        let c = copy_of(&root, "srv/samba/notes.txt");
        assert_eq!(fs::read(at(&c)).unwrap(), b"serv2's notes\n", "{who}");
        // The copy keeps the attributes of the version it keeps.
        assert_eq!(
            get_xattr(&at(&c), "user.author").as_deref(),
            Some(&b"serv2"[..]),
            "{who}: {c}"
        );
        assert_eq!(
            fs::metadata(at(&c)).unwrap().permissions().mode() & 0o7777,
            0o640,
            "{who}: {c}"
        );
        let c = copy_of(&root, "srv/samba/mine-only.txt");
        assert_eq!(fs::read(at(&c)).unwrap(), b"only serv2 has this\n", "{who}");
        let c = copy_of(&root, "srv/samba/gone-there.txt");
        assert_eq!(fs::read(at(&c)).unwrap(), b"serv2 changed this\n", "{who}");
        // Deleted on serv2 but changed on serv1: no copy, serv1's file kept.
        assert!(
            conflict_copies(&root)
                .iter()
                .all(|c| !c.starts_with("srv/samba/small.txt")),
            "{who}"
        );
    }
    // serv2 is in step again: the holder's next push is accepted and
    // settles the directory times; the trees are then identical.
    s.p.sync_ok("Fsmbd");
    s.p.assert_mirrored(ROOTS);
    // Nothing new: no conflicts of conflicts, no second copies.
    let again = s.resync_ok(&[]);
    assert_eq!(again["conflicts"], 0, "{again}");
    assert_eq!(conflict_copies(&s.p.r2()).len(), 3);
    s.p.assert_mirrored(ROOTS);
}

#[test]
fn discard_mine_takes_the_peers_side_whole() {
    let s = Setup::new(1 << 20);
    let dst = |r: &str| s.p.dst(r);
    write(&dst("srv/samba/notes.txt"), b"serv2's notes\n");
    write(&dst("srv/samba/mine-only.txt"), b"only serv2 has this\n");
    settle();
    let out = s.p.run("serv2", &["scan", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = s.resync_ok(&["--discard-mine"]);
    assert_eq!(v["conflicts"], 0, "{v}");
    assert!(conflict_copies(&s.p.r2()).is_empty());
    assert!(conflict_copies(&s.p.r1()).is_empty());
    s.p.assert_mirrored(ROOTS);
    // In step: the holder's push goes through again.
    let v = s.p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "unchanged", "{v}");
}

#[test]
fn dry_run_itemizes_and_changes_nothing() {
    let s = Setup::new(1 << 20);
    let dst = |r: &str| s.p.dst(r);
    write(&dst("srv/samba/notes.txt"), b"serv2's notes\n");
    fs::remove_file(dst("srv/samba/small.txt")).unwrap();
    write(&s.p.src("srv/samba/added.txt"), b"new on serv1");
    settle();
    let before = common::pair::tree_differences(&s.p.r1(), &s.p.r2());
    let out = s.p.run("serv2", &["resync", "--from", "serv1", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains(">f /srv/samba/added.txt"), "{text}");
    assert!(text.contains(">f /srv/samba/small.txt"), "{text}");
    assert!(text.contains("!conflict /srv/samba/notes.txt"), "{text}");
    assert!(text.contains("(dry run)"), "{text}");
    assert_eq!(common::pair::tree_differences(&s.p.r1(), &s.p.r2()), before);
    assert!(conflict_copies(&s.p.r2()).is_empty());
    assert!(!dst("srv/samba/added.txt").exists());
    assert_eq!(fs::read(dst("srv/samba/notes.txt")).unwrap(), b"serv2's notes\n");
}

#[test]
fn a_resync_reuses_the_chunks_this_node_holds() {
    let s = Setup::new(16 << 20);
    let src = |r: &str| s.p.src(r);
    // serv1 (the holder) changes 4 KiB inside the big file and adds a
    // renamed copy of it: serv2 holds nearly every chunk already.
    let mut big = fs::read(src("srv/samba/big.bin")).unwrap();
    big[8 << 20..(8 << 20) + 4096].copy_from_slice(&noise(7, 4096));
    write(&src("srv/samba/big.bin"), &big);
    write(&src("srv/samba/moved/big-copy.bin"), &big);
    settle();
    let v = s.resync_ok(&[]);
    let r = set0(&v);
    assert_eq!(r["complete"], true, "{v}");
    let received = r["bytes_received"].as_u64().unwrap();
    assert!(received < 1 << 20, "received {received} bytes for 32 MiB of files");
    assert!(v["udp_bytes_received"].as_u64().unwrap() < 2 << 20, "{v}");
    assert!(r["chunks_reused"].as_u64().unwrap() > 0, "{v}");
    s.p.assert_mirrored(ROOTS);
}

/// Waits until `dir` holds a temp file with at least `bytes` written.
fn wait_for_partial(dir: &Path, bytes: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(".hamirror-tmp")
                && e.metadata().map(|m| m.blocks() * 512 >= bytes).unwrap_or(false)
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_puller_killed_mid_pull_completes_on_the_next_run_and_leaves_no_temp_file() {
    let s = Setup::new(1 << 20);
    write(&s.p.src("srv/samba/huge.bin"), &noise(9, BIG));
    settle();
    let mut run =
        s.p.cmd("serv2", &["resync", "--from", "serv1", "Fsmbd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let reached = wait_for_partial(&s.p.dst("srv/samba"), (BIG / 3) as u64);
    let _ = run.kill();
    let status = run.wait().unwrap();
    assert!(reached, "the pull never got a third of the way");
    assert!(!status.success(), "the resync was killed before it finished");
    assert!(
        !s.p.dst("srv/samba/huge.bin").exists(),
        "no partial file under the real name"
    );
    let v = s.resync_ok(&[]);
    let received = set0(&v)["bytes_received"].as_u64().unwrap();
    assert!(
        received <= (BIG as u64) * 2 / 3 + (1 << 20),
        "resumed: received {received} of {BIG} bytes again"
    );
    assert!(temp_files(&s.p.r2()).is_empty(), "{:?}", temp_files(&s.p.r2()));
    assert_eq!(v["conflicts"], 0, "an interrupted pull is not a conflict: {v}");
    s.p.assert_mirrored(ROOTS);
}

mod wire_checks {
    //! The holder's side at the wire level, as serv1 (its real key) against
    //! serv2's `hamirror serve` (serv2 holds group serv2 = Fhttpd, epoch 1).

    use std::sync::Arc;

    use hamirror::config::Cluster;
    use hamirror::transport::{Connection, Endpoint, FrameReceiver, FrameSender};
    use hamirror_wire::entry::file_hash;
    use hamirror_wire::{
        ChunkRef, Chunking, Entry, EntryKind, ErrorCode, Hello, Listing, Message, Mode, OfferEnd, PROTOCOL_VERSION,
        Position,
    };

    use super::*;

    fn hello(mode: Mode, set: &str, group: &str, epoch: u64) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            mode,
            dry_run: false,
            force: false,
            session: 1,
            from: "serv1".into(),
            to: "serv2".into(),
            set: set.into(),
            group: group.into(),
            epoch,
            chunking: Chunking {
                min: 16 << 10,
                avg: 64 << 10,
                max: 256 << 10,
            },
            offer: (mode == Mode::Conflicts).then_some(Position {
                index: 7,
                generation: 1,
            }),
            acked: None,
        }
    }

    fn file(path: &str, data: &[u8]) -> Entry {
        let chunks = vec![ChunkRef {
            hash: *blake3::hash(data).as_bytes(),
            len: data.len() as u32,
        }];
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            size: data.len() as u64,
            file_hash: file_hash(&chunks),
            chunks,
            target: vec![],
            xattrs: vec![],
        }
    }

    async fn send(tx: &mut FrameSender, m: &Message) {
        tx.send(m.msg_type() as u8, &m.payload()).await.unwrap();
    }

    async fn recv(rx: &mut FrameReceiver) -> Message {
        let (ty, p) = rx.recv().await.unwrap().expect("a message");
        Message::decode(ty, &p).unwrap()
    }

    fn as_serv1<F, Fut>(p: &Pair, script: F)
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let cluster = Arc::new(Cluster::load(&p.cfg.dir()).unwrap());
        let (me, peer) = (cluster.node("serv1").unwrap(), cluster.node("serv2").unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let ep = Endpoint::client(me, peer).unwrap();
            let conn = ep.connect().await.unwrap();
            script(conn.clone()).await;
            conn.close(0, "done");
        });
    }

    fn refused(m: Message, code: ErrorCode, text: &str) {
        match m {
            Message::Error(e) => {
                assert_eq!(e.code, code, "{}", e.reason);
                assert!(e.reason.contains(text), "{:?} lacks {text:?}", e.reason);
            }
            other => panic!("expected a {code} refusal, got {other:?}"),
        }
    }

    #[test]
    fn pulls_and_conflict_copies_go_only_to_the_holder_at_a_current_epoch() {
        let mut p = Pair::new();
        p.start_serve();
        let cases = [
            (
                hello(Mode::Pull, "Fsmbd", "serv1", 1),
                ErrorCode::NotHolder,
                "serv2 does not hold group serv1",
            ),
            (
                hello(Mode::Conflicts, "Fsmbd", "serv1", 1),
                ErrorCode::NotHolder,
                "resync from the holder",
            ),
            (
                hello(Mode::Pull, "Fhttpd", "serv2", 2),
                ErrorCode::StaleEpoch,
                "only knows epoch 1",
            ),
        ];
        for (h, code, text) in cases {
            as_serv1(&p, |conn| async move {
                let (mut tx, mut rx) = conn.open_control().await.unwrap();
                send(&mut tx, &Message::Hello(h)).await;
                refused(recv(&mut rx).await, code, text);
            });
        }
    }

    #[test]
    fn a_conflict_delivery_never_overwrites_never_deletes_and_takes_only_marked_files() {
        let mut p = Pair::new();
        write(&p.dst("var/www/index.html"), b"the holder's page");
        settle();
        p.start_serve();
        // An unmarked file, and a marked name already holding other data.
        let taken = "var/www/a.hamirror-conflict-serv1-20261121T234500Z";
        write(&p.dst(taken), b"already here");
        settle();
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = conn.open_control().await.unwrap();
            send(&mut tx, &Message::Hello(hello(Mode::Conflicts, "Fhttpd", "serv2", 1))).await;
            assert!(matches!(recv(&mut rx).await, Message::HelloOk(_)));
            let offered = vec![file("var/www/index.html", b"pwned"), file(taken, b"different")];
            send(&mut tx, &Message::Entries(offered)).await;
            let end = OfferEnd {
                generation: 1,
                listing: Listing::Full,
                entries: 2,
                deletes: 0,
                bytes: 14,
                set_entries: 2,
                set_bytes: 14,
                empty_roots: vec![],
            };
            send(&mut tx, &Message::OfferEnd(end)).await;
            let applied = loop {
                match recv(&mut rx).await {
                    Message::NeedEnd(n) => assert_eq!(n.chunks, 0, "nothing refused is fetched"),
                    Message::Applied(a) => break a,
                    other => panic!("unexpected {other:?}"),
                }
            };
            assert!(!applied.complete);
            assert_eq!((applied.files, applied.failures.total), (0, 2), "{applied:?}");
        });
        assert_eq!(fs::read(p.dst("var/www/index.html")).unwrap(), b"the holder's page");
        assert_eq!(fs::read(p.dst(taken)).unwrap(), b"already here");
        // Deletes are refused outright.
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = conn.open_control().await.unwrap();
            send(&mut tx, &Message::Hello(hello(Mode::Conflicts, "Fhttpd", "serv2", 1))).await;
            assert!(matches!(recv(&mut rx).await, Message::HelloOk(_)));
            send(&mut tx, &Message::Deletes(vec![b"var/www/index.html".to_vec()])).await;
            let end = OfferEnd {
                generation: 1,
                listing: Listing::Delta { base: 0 },
                entries: 0,
                deletes: 1,
                bytes: 0,
                set_entries: 1,
                set_bytes: 0,
                empty_roots: vec![],
            };
            send(&mut tx, &Message::OfferEnd(end)).await;
            refused(recv(&mut rx).await, ErrorCode::Protocol, "may not delete");
        });
        assert!(p.dst("var/www/index.html").exists());
    }
}
