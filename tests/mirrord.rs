//! Mirroring inside `hamirror run`: two real daemons on loopback (separate
//! roots and state, one link), the example cluster's sets, hooks that do
//! nothing. A file written into the holder's set reaches the peer; after
//! the holder is killed and the peer takes its group over, the old
//! holder's pushes are refused (it is not the holder any more), the new
//! holder mirrors back to the old one when it returns (resync), and after
//! an operator takeover the direction flips again. Extended attributes
//! and ACLs travel with the files each way. Every phase ends with a full
//! tree comparison and the rsync oracle; but a takeover on the receiver in
//! the middle of a push stops the old holder's installs there, and what
//! was installed is compared file by file with the sender's.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemons::Cluster;
use common::write;

/// Runs `setfattr` or `setfacl` (packages attr, acl) on `path`.
fn attr_tool(cmd: &str, args: &[&str], path: &Path) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed (apt-get install attr acl): {e}"));
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_holder_mirrors_the_old_holder_is_refused_after_a_takeover_and_gets_the_changes_back() {
    let mut c = Cluster::new();
    c.start(0);
    c.start(1);
    c.wait("each node holds its own group", Duration::from_secs(20), |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });

    // Each holder's writes reach the peer.
    write(&c.p.src("srv/samba/share/a.txt"), b"written on serv1\n");
    write(&c.p.src("etc/samba/smb.conf"), b"[global]\n");
    write(&c.p.src("etc/samba/lmhosts"), b"127.0.0.1 localhost\n");
    write(&c.p.dst("var/www/index.html"), b"<h1>serv2</h1>\n");
    attr_tool(
        "setfattr",
        &["-n", "user.DOSATTRIB", "-v", "A20"],
        &c.p.src("srv/samba/share/a.txt"),
    );
    attr_tool("setfacl", &["-d", "-m", "u:1234:rwx"], &c.p.src("srv/samba/share"));
    c.converge("both holders' first writes", Duration::from_secs(20));

    // status shows each set of the held group in step, over the crossover.
    c.wait("serv1's Fsmbd backlog empty in status", Duration::from_secs(10), |c| {
        c.status(0).is_some_and(|s| {
            s["mirroring"] == true
                && s["sets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["set"] == "Fsmbd" && b["pending_files"] == 0 && b["shipping"] == "ok")
        })
    });
    // Both up, each group on its owner, every set in step: OK, exit 0.
    c.wait("serv1's status OK", Duration::from_secs(10), |c| {
        c.p.run("serv1", &["status"]).status.code() == Some(0)
    });
    let text = c.p.run("serv1", &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with("OK\n")
            && text.contains("Fsmbd")
            && text.contains("backlog 0 files / 0 bytes")
            && text.contains("shipping ok over"),
        "{text}"
    );

    // serv1 dies; serv2 takes its group over and writes into it.
    c.kill(0);
    c.wait("serv2 holds serv1's group", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    // Serving both groups without a peer: WARNING, exit 1, saying why.
    let out = c.p.run("serv2", &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("WARNING: ")
            && text.contains("peer serv1 not heard")
            && text.contains("group serv1 runs on serv2, not on its owner serv1"),
        "{text}"
    );
    write(
        &c.p.dst("srv/samba/share/b.txt"),
        b"written on serv2 after the takeover\n",
    );
    write(&c.p.dst("srv/samba/share/a.txt"), b"changed on serv2\n");
    fs::remove_file(c.p.dst("etc/samba/lmhosts")).unwrap();
    attr_tool(
        "setfattr",
        &["-n", "user.DOSATTRIB", "-v", "A21"],
        &c.p.dst("srv/samba/share/b.txt"),
    );
    attr_tool("setfacl", &["-m", "u:1234:rw"], &c.p.dst("srv/samba/share/a.txt"));

    // The old holder, stale, tries to push its copy: refused.
    let out = c.p.run("serv1", &["sync", "Fsmbd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the stale holder's push went through: {err}"
    );
    assert!(err.contains("does not hold group serv1"), "{err}");
    assert_eq!(
        fs::read(c.p.dst("srv/samba/share/a.txt")).unwrap(),
        b"changed on serv2\n",
        "the refused push changed the new holder's data"
    );

    // serv1 returns as a backup: serv2 mirrors everything back to it.
    c.start(0);
    c.converge("resync to the returned node", Duration::from_secs(30));
    assert_eq!(
        fs::read(c.p.src("srv/samba/share/b.txt")).unwrap(),
        b"written on serv2 after the takeover\n"
    );
    assert!(!c.p.src("etc/samba/lmhosts").exists());
    assert!(
        fs::read_to_string(c.log_path(1)).unwrap().contains("resync done"),
        "{}",
        c.logs()
    );

    // The operator gives the group back: the direction flips again.
    let out = c.p.run("serv1", &["takeover", "serv1"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    c.wait("serv1 holds its group again", Duration::from_secs(10), |c| {
        c.phase(0, "serv1").as_deref() == Some("held")
    });
    write(&c.p.src("srv/samba/share/c.txt"), b"serv1 again\n");
    c.converge(
        "serv1 mirrors again after taking its group back",
        Duration::from_secs(20),
    );
}

#[test]
fn a_node_restarted_from_an_old_state_is_refused_as_sender_and_as_holder() {
    let mut c = Cluster::new();
    c.start(0);
    c.start(1);
    c.wait("each node holds its own group", Duration::from_secs(20), |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });
    let a = "srv/samba/share/a.txt";
    write(&c.p.src(a), b"v1 on serv1\n");
    c.converge("the first copy", Duration::from_secs(20));

    // serv1's state as it is now (it holds its group at epoch 1), kept aside.
    c.kill(0);
    let old = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    copy(&c.p.state(1), &old.path().join("state"));

    // The group moves to serv2 (epoch 2), back to serv1 (3), to serv2 (4).
    c.wait("serv2 holds serv1's group", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    write(&c.p.dst(a), b"v2 on serv2\n");
    c.start(0);
    c.converge("serv1 back as a backup", Duration::from_secs(30));
    let out = c.p.run("serv1", &["takeover", "serv1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait("serv1 holds its group again", Duration::from_secs(10), |c| {
        c.phase(0, "serv1").as_deref() == Some("held")
    });
    write(&c.p.src(a), b"v3 on serv1\n");
    c.converge("serv1's change mirrored", Duration::from_secs(20));
    c.kill(0);
    c.wait("serv2 holds serv1's group once more", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    write(&c.p.dst(a), b"v4 on serv2\n");

    // serv1 comes back from the old state directory (epoch 1, an old index).
    fs::remove_dir_all(c.p.state(1)).unwrap();
    copy(&old.path().join("state"), &c.p.state(1));
    // As a sender: refused, and nothing of serv2's copy changes.
    let out = c.p.run("serv1", &["sync", "--force", "Fsmbd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the stale node's push went through: {err}");
    assert!(err.contains("does not hold group serv1"), "{err}");
    assert_eq!(fs::read(c.p.dst(a)).unwrap(), b"v4 on serv2\n");
    // As a holder: its daemon starts as a backup of the newer epoch and
    // gets the holder's copy; it never takes the group.
    c.start(0);
    let t0 = Instant::now();
    c.converge("the stale node gets the holder's copy", Duration::from_secs(30));
    assert_eq!(fs::read(c.p.src(a)).unwrap(), b"v4 on serv2\n");
    while t0.elapsed() < Duration::from_secs(3) {
        assert_ne!(c.phase(0, "serv1").as_deref(), Some("held"), "{}", c.logs());
        assert_eq!(c.phase(1, "serv1").as_deref(), Some("held"), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = c.status(1).unwrap();
    let g = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "serv1")
        .unwrap()
        .clone();
    assert!(g["epoch"].as_u64().unwrap() >= 4, "{g}");
}

/// `GET /metrics` from `addr`, with a plain socket (no HTTP client needed).
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The value of the sample `key` (name and labels exactly as printed).
fn metric(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn the_metrics_endpoint_and_textfile_show_the_cluster_and_move_while_a_set_is_written() {
    let mut c = Cluster::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let textfile = c.p.cfg.tmp.path().join("hamirror.prom");
    c.p.cfg.append(
        "serv1.conf",
        &format!("metrics_listen = {addr}\nmetrics_textfile = {}\n", textfile.display()),
    );
    c.start(0);
    c.start(1);
    c.wait("each node holds its own group", Duration::from_secs(20), |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });
    let first = scrape(&addr);
    assert_eq!(metric(&first, "hamirror_peer_alive"), Some(1.0), "{first}");
    assert_eq!(
        metric(&first, r#"hamirror_group_held{group="serv1"}"#),
        Some(1.0),
        "{first}"
    );
    assert_eq!(
        metric(&first, r#"hamirror_group_holder{group="serv2",holder="serv2"}"#),
        Some(1.0)
    );
    let hb = |t: &str| metric(t, r#"hamirror_heartbeats_received_total{link="crossover"}"#).unwrap();

    // Written, then mirrored: the peer's acknowledgement moves forward.
    c.wait("a first acknowledgement of Fsmbd", Duration::from_secs(10), |_| {
        metric(
            &scrape(&addr),
            r#"hamirror_set_last_ack_timestamp_seconds{set="Fsmbd",group="serv1"}"#,
        )
        .is_some()
    });
    let before = scrape(&addr);
    let acked = |t: &str| {
        metric(
            t,
            r#"hamirror_set_last_ack_timestamp_seconds{set="Fsmbd",group="serv1"}"#,
        )
        .unwrap()
    };
    std::thread::sleep(Duration::from_millis(1100));
    write(&c.p.src("srv/samba/share/m.txt"), &vec![7u8; 300_000]);
    c.converge("the write", Duration::from_secs(20));
    c.wait("the acknowledgement to move", Duration::from_secs(10), |_| {
        acked(&scrape(&addr)) > acked(&before)
    });
    let after = scrape(&addr);
    assert!(hb(&after) > hb(&first), "heartbeats counted:\n{after}");
    assert_eq!(
        metric(&after, r#"hamirror_set_backlog_files{set="Fsmbd",group="serv1"}"#),
        Some(0.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, r#"hamirror_set_shipping_ok{set="Fsmbd",group="serv1"}"#),
        Some(1.0)
    );

    // A verify's outcome shows up too.
    let out = c.p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let t = scrape(&addr);
    assert_eq!(
        metric(&t, r#"hamirror_set_verify_differences{set="Fsmbd"}"#),
        Some(0.0),
        "{t}"
    );

    // The textfile carries the same families.
    c.wait("the textfile", Duration::from_secs(10), |_| {
        fs::read_to_string(&textfile).is_ok_and(|t| t.contains("hamirror_set_verify_differences{set=\"Fsmbd\"} 0"))
    });
    let file = fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        metric(&file, r#"hamirror_group_held{group="serv1"}"#),
        Some(1.0),
        "{file}"
    );
}

/// The files directly in `root` whose names are final (not a receiver's
/// dot-prefixed temp file), sorted.
fn final_files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A push applied in windows of one file (an install and index commit
/// every four files) to a daemon that takes the sender's group over in
/// the middle of it: from the takeover on, nothing more of that sender is
/// installed (each batch install asks again who holds the group), the
/// push fails naming the holder, every file installed before is complete
/// and equal to the sender's, and every temp file left is in the
/// receiver's journal (the next run removes it).
#[test]
fn a_takeover_on_the_receiver_mid_push_stops_the_installs_of_the_old_holder() {
    const N: u64 = 3000;
    let mut c = Cluster::new();
    // serv2 declares serv1 dead only after 4 s: time for serv1's command
    // line push (its daemon killed) to begin.
    for n in ["serv1", "serv2"] {
        c.p.cfg.set(&format!("{n}.conf"), "deadtime", "deadtime = 4s");
        c.p.cfg.set(&format!("{n}.conf"), "initdead", "initdead = 4s");
    }
    c.start(0);
    c.start_env(1, &[("HAMIRROR_APPLY_WINDOW", "1")]);
    c.wait("each node holds its own group", Duration::from_secs(20), |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });
    write(&c.p.src("etc/samba/smb.conf"), b"[global]\n");
    c.converge("the first copy", Duration::from_secs(20));

    c.kill(0);
    let share = "srv/samba/share";
    for i in 0..N {
        write(&c.p.src(&format!("{share}/f{i:05}")), &common::noise(i, 2000));
    }
    let push =
        c.p.cmd("serv1", &["sync", "Fsmbd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut at_takeover = None;
    let t0 = Instant::now();
    while at_takeover.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no takeover\n{}", c.logs());
        if c.phase(1, "serv1").as_deref() == Some("held") {
            at_takeover = Some(final_files(&c.p.dst(share)).len());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = push.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let (at, end) = (at_takeover.unwrap(), final_files(&c.p.dst(share)));
    eprintln!("{at} files installed at the takeover, {} at the end, of {N}", end.len());
    assert!(
        at > 0 && at as u64 + 300 < N,
        "the takeover came at {at} of {N} files: not in the middle of the push (machine too slow or too fast?)\n{err}"
    );
    assert_eq!(out.status.code(), Some(2), "the push went through: {err}");
    assert!(err.contains("does not hold group serv1"), "{err}");
    // A batch being installed as the view changed, and the status poll's
    // lag, account for a few files; the push would have gone on to N (and
    // did, but for its last batch, before installs asked again).
    assert!(
        end.len() <= at + 100,
        "{} files installed after the takeover ({at} before)\n{}",
        end.len() - at,
        c.logs()
    );
    for name in &end {
        let rel = format!("{share}/{name}");
        assert_eq!(
            fs::read(c.p.dst(&rel)).unwrap(),
            fs::read(c.p.src(&rel)).unwrap(),
            "{rel}"
        );
    }
    let journal = fs::read_to_string(c.p.state(2).join("journal/Fsmbd")).unwrap_or_default();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for e in fs::read_dir(c.p.dst(share)).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            let listed = journal.lines().any(|l| l == hex(&format!("{share}/{name}")));
            assert!(listed, "temp file {name} is not in the journal");
        }
    }
}
