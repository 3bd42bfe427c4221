//! `hamirror scan` driven as a real binary on a copy of the example
//! cluster.d whose serv1 has its `root` and `state` in a temp directory.
//! Each test names what it proves. Between a change and the scan that must
//! see it settled, tests wait out the scanner's racy window (files changed
//! within 100 ms of a scan are read again next time, by design).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hamirror::index::Index;
use hamirror_wire::EntryKind;
use serde_json::Value;

struct Cluster {
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// The example configuration, with serv1's root and state in a temp dir
    /// and the roots of Fsmbd created (`/etc/samba/`, `/srv/samba/`,
    /// `/var/lib/samba/`).
    fn new() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/cluster.d");
        copy_dir(&src, &tmp.path().join("cluster.d"));
        let c = Cluster { tmp };
        let conf = c.config().join("serv1.conf");
        let mut text = fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "root = {}\nstate = {}\n",
            c.root().display(),
            c.tmp.path().join("state").display()
        ));
        fs::write(conf, text).unwrap();
        for d in ["etc/samba", "srv/samba", "var/lib/samba"] {
            fs::create_dir_all(c.root().join(d)).unwrap();
        }
        c
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("cluster.d")
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hamirror"));
        cmd.arg("--config")
            .arg(self.config())
            .args(["--node", "serv1"])
            .args(args);
        cmd.env_remove("HAMIRROR_CONFIG").env_remove("HAMIRROR_NODE");
        cmd
    }

    /// `scan SET --json` once the racy window has passed; the parsed report,
    /// the exit code and stderr.
    fn scan(&self, set: &str) -> (Value, i32, String) {
        std::thread::sleep(Duration::from_millis(150));
        scan_json(self.cmd(&["scan", set, "--json"]).output().unwrap())
    }

    fn index(&self, set: &str) -> Index {
        Index::open_set(&self.tmp.path().join("state"), set).unwrap()
    }
}

fn scan_json(out: Output) -> (Value, i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (json, out.status.code().unwrap_or(-1), stderr)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// (new, changed, deleted, files_read) of a report.
fn counts(r: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {r}"));
    (n("new"), n("changed"), n("deleted"), n("files_read"))
}

#[test]
fn second_scan_reports_nothing_changed_and_reads_no_file() {
    let c = Cluster::new();
    c.write("srv/samba/share/a.txt", b"hello");
    c.write("srv/samba/share/big.bin", &vec![3u8; 3 << 20]);
    c.write("etc/samba/smb.conf", b"[global]\n");
    let (r, code, _) = c.scan("Fsmbd");
    assert_eq!(code, 0);
    // 3 files + dirs etc/samba, srv/samba, srv/samba/share, var/lib/samba
    assert_eq!(counts(&r), (7, 0, 0, 3), "{r}");
    assert_eq!((r["files"].as_u64(), r["dirs"].as_u64()), (Some(3), Some(4)));
    assert_eq!(r["bytes"].as_u64(), Some(5 + (3 << 20) + 9));
    assert_eq!(r["generation"].as_u64(), Some(1));

    let (r, code, _) = c.scan("smbd");
    assert_eq!(code, 0);
    assert_eq!(counts(&r), (0, 0, 0, 0), "{r}");
    assert_eq!(r["files_unchanged"].as_u64(), Some(3));
    assert_eq!(r["generation"].as_u64(), Some(1), "no change, no new generation");
}

#[test]
fn counts_are_exact_after_touch_edit_add_delete_and_rename() {
    let c = Cluster::new();
    for f in ["a", "b", "c", "d/e"] {
        c.write(&format!("srv/samba/{f}"), f.as_bytes());
    }
    // 4 files; dirs etc/samba, srv/samba, srv/samba/d, var/lib/samba
    assert_eq!(counts(&c.scan("Fsmbd").0), (8, 0, 0, 4));

    // touch: mtime only. The file is read, its entry changed (mtime).
    let f = fs::File::options().write(true).open(c.p("srv/samba/a")).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert_eq!(counts(&c.scan("Fsmbd").0), (0, 1, 0, 1));

    // edit in place: the directory is unchanged.
    c.write("srv/samba/b", b"bee");
    let (r, _, _) = c.scan("Fsmbd");
    assert_eq!(counts(&r), (0, 1, 0, 1));
    assert_eq!(r["generation"].as_u64(), Some(3));

    // add: a new file and its directory's mtime.
    c.write("srv/samba/f", b"new");
    assert_eq!(counts(&c.scan("Fsmbd").0), (1, 1, 0, 1));

    // delete: the file and its directory's mtime.
    fs::remove_file(c.p("srv/samba/c")).unwrap();
    assert_eq!(counts(&c.scan("Fsmbd").0), (0, 1, 1, 0));

    // rename within a directory: one new path, one deleted, the directory.
    fs::rename(c.p("srv/samba/d/e"), c.p("srv/samba/d/e2")).unwrap();
    assert_eq!(counts(&c.scan("Fsmbd").0), (1, 1, 1, 1));

    // rename a directory: its subtree moves.
    fs::rename(c.p("srv/samba/d"), c.p("srv/samba/dd")).unwrap();
    let (r, _, _) = c.scan("Fsmbd");
    assert_eq!(counts(&r), (2, 1, 2, 1), "{r}");
    assert_eq!(counts(&c.scan("Fsmbd").0), (0, 0, 0, 0));

    let index = c.index("Fsmbd");
    assert_eq!(index.generation("Fsmbd").unwrap(), 7);
    assert_eq!(
        index.changes_since("Fsmbd", 5).unwrap(),
        Some(vec![
            b"srv/samba".to_vec(),
            b"srv/samba/d".to_vec(),
            b"srv/samba/d/e".to_vec(),
            b"srv/samba/d/e2".to_vec(),
            b"srv/samba/dd".to_vec(),
            b"srv/samba/dd/e2".to_vec(),
        ])
    );
    assert!(index.verify("Fsmbd").unwrap().is_empty());
}

#[test]
fn names_with_spaces_newlines_and_invalid_utf8_are_recorded_byte_exact() {
    let c = Cluster::new();
    let names: [&[u8]; 4] = [b"two words", b"line\nbreak", b"latin1 \xe9t\xe9", b"\xff\xfe"];
    for n in names {
        let p = c.p("srv/samba").join(std::ffi::OsStr::from_bytes(n));
        fs::write(p, n).unwrap();
    }
    let (r, code, _) = c.scan("Fsmbd");
    assert_eq!((code, r["files"].as_u64()), (0, Some(4)));
    assert_eq!(counts(&c.scan("Fsmbd").0), (0, 0, 0, 0));
    let index = c.index("Fsmbd");
    for n in names {
        let mut path = b"srv/samba/".to_vec();
        path.extend_from_slice(n);
        let e = index
            .entry("Fsmbd", &path)
            .unwrap()
            .expect("entry under its exact bytes");
        assert_eq!(e.size, n.len() as u64);
    }
}

#[test]
fn hard_links_and_symlinks_are_recorded_as_such() {
    let c = Cluster::new();
    c.write("srv/samba/orig", b"data");
    fs::hard_link(c.p("srv/samba/orig"), c.p("srv/samba/link")).unwrap();
    std::os::unix::fs::symlink("orig", c.p("srv/samba/sym")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", c.p("etc/samba/abs")).unwrap();
    let (r, code, _) = c.scan("Fsmbd");
    assert_eq!(code, 0);
    assert_eq!(
        (
            r["files"].as_u64(),
            r["hardlinks"].as_u64(),
            r["symlinks"].as_u64(),
            r["files_read"].as_u64()
        ),
        (Some(1), Some(1), Some(2), Some(1))
    );
    let index = c.index("Fsmbd");
    let link = index.entry("Fsmbd", b"srv/samba/orig").unwrap().unwrap();
    assert_eq!(
        (link.kind, link.target),
        (EntryKind::HardLink, b"srv/samba/link".to_vec())
    );
    assert_eq!(
        index.entry("Fsmbd", b"srv/samba/link").unwrap().unwrap().kind,
        EntryKind::File
    );
    let abs = index.entry("Fsmbd", b"etc/samba/abs").unwrap().unwrap();
    assert_eq!((abs.kind, abs.target), (EntryKind::Symlink, b"/etc/passwd".to_vec()));
}

#[test]
fn a_socket_is_skipped_and_reported_without_failing_and_a_fifo_is_an_entry() {
    let c = Cluster::new();
    c.write("srv/samba/a", b"1");
    drop(std::os::unix::net::UnixListener::bind(c.p("srv/samba/sock")).unwrap());
    let fifo = std::ffi::CString::new(c.p("srv/samba/queue").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (r, code, stderr) = c.scan("Fsmbd");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["skipped"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["skipped"][0]["path"], "srv/samba/sock");
    assert!(stderr.contains("skipped /srv/samba/sock: socket"), "{stderr}");
    assert_eq!((r["files"].as_u64(), r["specials"].as_u64()), (Some(1), Some(1)), "{r}");
}

/// Runs the scan without the capabilities that let root ignore file
/// permissions, so that mode 000 really makes a file unreadable.
fn scan_unprivileged(c: &Cluster) -> (Value, i32, String) {
    std::thread::sleep(Duration::from_millis(150));
    let mut cmd = c.cmd(&["scan", "Fsmbd", "--json"]);
    // SAFETY: geteuid and prctl are async-signal-safe and touch no memory
    // of ours; nothing else runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() == 0 {
                // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
                for cap in [1, 2] {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    scan_json(cmd.output().unwrap())
}

#[test]
fn unreadable_paths_make_the_scan_partial_and_keep_their_state() {
    let c = Cluster::new();
    c.write("srv/samba/ok", b"fine");
    c.write("srv/samba/secret", b"s");
    c.write("srv/samba/closed/inner", b"i");
    assert_eq!(counts(&c.scan("Fsmbd").0), (7, 0, 0, 3));

    c.write("srv/samba/secret", b"changed");
    fs::set_permissions(c.p("srv/samba/secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(c.p("srv/samba/closed"), fs::Permissions::from_mode(0o000)).unwrap();
    let (r, code, stderr) = scan_unprivileged(&c);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("error: /srv/samba/secret: Permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains("error: /srv/samba/closed"), "{stderr}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(2), "{r}");
    // Nothing was deleted: closed/inner could not be listed, so it is kept.
    assert_eq!(r["deleted"].as_u64(), Some(0), "{r}");
    let index = c.index("Fsmbd");
    let secret = index.entry("Fsmbd", b"srv/samba/secret").unwrap().unwrap();
    assert_eq!(secret.size, 1, "the old entry is kept, not a torn or empty one");
    assert!(index.entry("Fsmbd", b"srv/samba/closed/inner").unwrap().is_some());
    drop(index);

    fs::set_permissions(c.p("srv/samba/secret"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(c.p("srv/samba/closed"), fs::Permissions::from_mode(0o755)).unwrap();
    let (r, code, _) = c.scan("Fsmbd");
    assert_eq!(code, 0);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_missing_root_is_a_warning_and_an_unknown_set_fails() {
    let c = Cluster::new();
    fs::remove_dir(c.p("var/lib/samba")).unwrap();
    let (r, code, stderr) = c.scan("Fsmbd");
    assert_eq!(code, 0);
    assert_eq!(r["missing_roots"][0], "var/lib/samba");
    assert!(
        stderr.contains("warning: root /var/lib/samba does not exist on serv1"),
        "{stderr}"
    );

    let out = c.cmd(&["scan", "Fnope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no set \"Fnope\"") && err.contains("Fsmbd"), "{err}");
}

#[test]
fn text_summary_names_the_counts() {
    let c = Cluster::new();
    c.write("srv/samba/a", b"12345");
    std::thread::sleep(Duration::from_millis(150));
    let out = c.cmd(&["scan", "Fsmbd"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Fsmbd (group serv1) on serv1, root "), "{text}");
    assert!(
        text.contains("1 file, 3 directories, 0 symlinks, 0 hard links, 5 B"),
        "{text}"
    );
    assert!(text.contains("new 4, changed 0, deleted 0"), "{text}");
    assert!(
        text.contains("read 1 file (5 B, 1 chunk), 0 unchanged by the quick check"),
        "{text}"
    );
    assert!(text.contains("generation 1 (was 0)"), "{text}");
}
