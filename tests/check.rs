//! `hamirror check` through the real binary: the shipped example is valid
//! and described in full; each kind of mistake is reported with its file,
//! line and what was expected, and exits 2.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TempConfig, stderr, stdout};

#[test]
fn example_configuration_is_valid_and_printed_in_run_order() {
    let c = TempConfig::example();
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("nodes serv1 and serv2"), "{s}");
    assert!(s.contains("set Fsmbd"), "{s}");
    assert!(s.contains("/var/lib/samba/  (directory"), "{s}");
    assert!(s.contains("/etc/printcap  (file"), "{s}");
    assert!(s.contains("start: S10ipaddr → S20smbd → S30lpd"), "{s}");
    assert!(s.contains("stop:  K10lpd → K20smbd → K90ipaddr"), "{s}");
    assert!(s.contains("set Fhttpd"), "{s}");
    assert!(s.contains("192.168.1.5 (tcp:445)"), "{s}");
    assert!(s.contains("delete limit 20%"), "{s}");
    assert!(
        s.contains(
            "monitor: S hooks `status` every 10s (timeout 20s); after 3 failures in a row restart, at most 1 within 1h, \
             then move to the peer"
        ),
        "{s}"
    );
    assert!(
        s.contains("monitor: off (monitor_interval = 0)"),
        "serv2's group has none: {s}"
    );
}

/// Applies `mutate` to a fresh copy of the example and asserts that `check`
/// exits 2 and reports each `expected` fragment (typically `file:line: msg`).
fn rejects(mutate: impl FnOnce(&TempConfig), expected: &[&str]) {
    let c = TempConfig::example();
    mutate(&c);
    let out = c.run(&["check"]);
    let err = stderr(&out).replace(&format!("{}/", c.dir().display()), "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected failure, got:\n{}{err}",
        stdout(&out)
    );
    for e in expected {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
}

#[test]
fn unknown_key_names_file_line_and_the_keys_expected() {
    rejects(
        |c| c.append("serv1.conf", "colour = blue\n"),
        &["serv1.conf:17: unknown key `colour`; expected one of: address"],
    );
}

#[test]
fn bad_values_name_what_was_expected() {
    rejects(
        |c| {
            c.set("serv2.conf", "port", "port = 99999");
            c.set("serv2.conf", "lan", "lan = 192.168.1");
        },
        &[
            "serv2.conf:3: `lan`: expected an IP address",
            "serv2.conf:4: `port`: expected a port from 1 to 65535",
        ],
    );
}

#[test]
fn set_paths_must_be_absolute_and_plain() {
    rejects(
        |c| c.write("serv1/Fmail", "/var/mail/\nspool/\n/var/../etc\n"),
        &[
            "serv1/Fmail:2: \"spool/\" is not an absolute path",
            "serv1/Fmail:3: \"/var/../etc\" contains '.' or '..'",
        ],
    );
}

#[test]
fn overlapping_roots_and_duplicate_set_names_are_refused() {
    rejects(
        |c| {
            c.write("serv2/Fsmbd", "/srv/other/\n");
            c.write("serv2/Flogs", "/var/www/logs/\n");
        },
        &[
            "set Fsmbd is also defined in",
            "serv2/Flogs:1: /var/www/logs overlaps /var/www",
        ],
    );
}

#[test]
fn hooks_must_be_executable_and_numbered() {
    rejects(
        |c| {
            let p = c.path("serv1/S20smbd");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            c.write("serv1/Sapache", "#!/bin/sh\n");
            std::fs::set_permissions(c.path("serv1/Sapache"), std::fs::Permissions::from_mode(0o755)).unwrap();
            c.write("serv1/README", "notes\n");
        },
        &[
            "serv1/S20smbd: hook is not executable; run: chmod +x",
            "serv1/Sapache: a hook is named S<NN><name> with a run-order number",
            "serv1/README: unexpected file; expected F<name>",
        ],
    );
}

#[test]
fn backup_copies_of_hooks_are_ignored_with_a_warning() {
    let c = TempConfig::example();
    std::fs::copy(c.path("serv1/S20smbd"), c.path("serv1/S20smbd~")).unwrap();
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("S20smbd~: looks like a backup copy; ignored"));
    assert!(!stdout(&out).contains("S20smbd~"));
}

#[test]
fn reachlist_must_exist_and_parse() {
    rejects(
        |c| std::fs::remove_file(c.path("reachlist")).unwrap(),
        &["reachlist: cannot read"],
    );
    rejects(
        |c| c.write("reachlist", "10.1.1.1\n10.1.1.2 udp:53\n"),
        &["reachlist:2: expected `tcp:PORT` after the host"],
    );
}

#[test]
fn timers_must_agree_between_nodes_and_keep_their_arithmetic() {
    rejects(
        |c| c.set("serv2.conf", "deadtime", "deadtime = 2s"),
        &["serv2.conf:9: `deadtime` is 400ms on serv1 but 2s on serv2"],
    );
    rejects(
        |c| {
            for n in ["serv1.conf", "serv2.conf"] {
                c.set(n, "deadtime", "deadtime = 100ms");
            }
        },
        &["serv1.conf:9: `deadtime` (100ms) must be more than twice `keepalive` (50ms)"],
    );
}

#[test]
fn a_cluster_has_two_nodes_or_more_only_under_pacemaker() {
    rejects(
        |c| c.write("serv3.conf", "address = 10.0.0.3\n"),
        &[
            "serv3.conf: this cluster has 3 nodes, but serv3 leaves `failover` at builtin: the built-in arbiter is \
             two-node",
            "serv1.conf: this cluster has 3 nodes, but serv1 leaves `failover` at builtin",
            "put `failover = pacemaker` in every NODE.conf",
        ],
    );
    rejects(
        |c| std::fs::remove_file(c.path("serv2.conf")).unwrap(),
        &["found 1 (serv1.conf)"],
    );
    // One node left out of Pacemaker mode is named, with its line.
    let three = |c: &TempConfig| {
        c.write(
            "serv3.conf",
            "address = 10.0.0.3\nfingerprint = sha256:1a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b\n\
             heartbeat_key = authkeys\npreferred = serv1\nfailover = pacemaker\n",
        );
        for n in ["serv1.conf", "serv2.conf"] {
            c.set(n, "auto_failback", "failover = pacemaker");
        }
    };
    rejects(
        |c| {
            three(c);
            c.set("serv2.conf", "failover", "failover = builtin");
        },
        &["serv2.conf:11: this cluster has 3 nodes, but serv2 leaves `failover` at builtin"],
    );
    // Every node in Pacemaker mode: three nodes are a cluster.
    let c = TempConfig::example();
    three(&c);
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid, nodes serv1, serv2 and serv3"),
        "{}",
        stdout(&out)
    );
    // The two-node commands say why they do not run it.
    let out = c.run(&["--node", "serv1", "sync", "Fsmbd"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("has 3 nodes; this talks to one peer, and serv1 has 2 (serv2, serv3)"),
        "{err}"
    );
    // The daemon runs it (tests/fanout_daemons.rs): here it gets past the
    // node count and stops only at this node's missing identity.
    let err = stderr(&c.run(&["--node", "serv1", "run"]));
    assert!(!err.contains("has 3 nodes") && !err.contains("more than two"), "{err}");
    assert!(err.contains("no identity key"), "{err}");
}

#[test]
fn missing_configuration_directory_is_a_clear_error() {
    let out = common::hamirror(std::path::Path::new("/nonexistent/cluster.d"), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/cluster.d: cannot read the configuration directory"));
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    let c = TempConfig::example();
    let out = c.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let help = c.run(&["--help"]);
    let s = stdout(&help);
    assert!(s.contains("Exit codes: 0 ok, 1 partial"), "{s}");
    assert!(s.contains("--config <DIR>"), "{s}");
}

#[test]
fn every_problem_is_listed_even_when_a_node_conf_is_broken() {
    rejects(
        |c| {
            c.append("serv1.conf", "colour = blue\n");
            c.write("serv1/Fweb", "/var/www2/x/ relative\n");
        },
        &[
            "serv1.conf:17: unknown key `colour`",
            "serv1/Fweb:1: \"relative\" is not an absolute path",
            "2 problems found",
        ],
    );
}

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_published_example_key_is_refused_with_its_line_and_the_fix() {
    let example = std::fs::read_to_string(common::example_dir().join("authkeys")).unwrap();
    rejects(
        |c| {
            c.write("authkeys", &example);
            chmod(&c.path("authkeys"), 0o600);
        },
        &[
            "authkeys:6: this is the example key published with hamirror",
            "head -c 32 /dev/urandom",
        ],
    );
}

#[test]
fn heartbeat_key_files_must_not_be_readable_by_everyone_and_group_readable_warns() {
    rejects(
        |c| chmod(&c.path("authkeys"), 0o644),
        &[
            "authkeys: heartbeat key file is readable by everyone (mode 644)",
            "run: chmod 600",
        ],
    );
    let c = TempConfig::example();
    chmod(&c.path("authkeys"), 0o640);
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("readable by its group (mode 640); run: chmod 600"));
    // A missing key file is an error, not a surprise at daemon start.
    rejects(
        |c| std::fs::remove_file(c.path("authkeys")).unwrap(),
        &["authkeys: cannot read the heartbeat key file's metadata"],
    );
}

#[test]
fn strict_modes_refuse_what_others_could_change_naming_the_file_and_the_fix() {
    rejects(
        |c| {
            chmod(&c.path("serv1/S20smbd"), 0o775);
            chmod(&c.path("serv2.conf"), 0o646);
            chmod(&c.path("serv2"), 0o777);
            chmod(&c.path("serv1/Fsmbd"), 0o664);
        },
        &[
            "serv1/S20smbd: hook is writable by its group (mode 775): whoever can write it controls what root runs; \
             run: chmod go-w ",
            "serv2.conf: node configuration is writable by others (mode 646)",
            "serv2: group directory is writable by group and others (mode 777)",
            "serv1/Fsmbd: set file is writable by its group",
        ],
    );
    rejects(
        |c| chmod(c.dir().as_path(), 0o770),
        &["configuration directory is writable by its group (mode 770)"],
    );
}

#[test]
fn strict_modes_refuse_files_owned_by_another_user() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give a file away");
        return;
    }
    rejects(
        |c| std::os::unix::fs::chown(c.path("serv1/K10lpd"), Some(4321), None).unwrap(),
        &[
            "serv1/K10lpd: hook is owned by uid 4321, not by root",
            "run: chown root ",
        ],
    );
}

#[test]
fn run_refuses_to_start_on_the_same_problems() {
    let c = TempConfig::example();
    chmod(&c.path("serv1/S10ipaddr"), 0o777);
    let out = c.run(&["--node", "serv1", "run", "--no-realtime"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(
        err.contains("serv1/S10ipaddr: hook is writable by group and others"),
        "{err}"
    );
    assert!(err.contains("chmod go-w"), "{err}");
}

/// `run` refuses to mirror without this node's identity key: `check` on
/// that node says so first (not about the peer's: that is on the peer).
#[test]
fn a_missing_identity_key_of_this_node_is_refused_when_the_cluster_mirrors() {
    let c = TempConfig::example();
    let state = c.tmp.path().join("state");
    c.append("serv1.conf", &format!("state = {}\n", state.display()));
    let out = c.run(&["--node", "serv1", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no identity key at {}/identity.pem", state.display()))
            && err.contains("run `hamirror init` on serv1"),
        "{err}"
    );
    // Not looked for by a machine that is no node of the cluster.
    assert_eq!(c.run(&["--node", "elsewhere", "check"]).status.code(), Some(0));
    // Nor serv2's on serv1 (it is missing here too: /var/lib/hamirror/serv2).
    let out = c.run(&["--node", "serv1", "init"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = c.run(&["--node", "serv1", "check", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
