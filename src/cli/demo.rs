//! `hamirror demo`: a two-node cluster on this one machine, from a built-in
//! example — loopback addresses, temporary roots and state, no root needed.
//! serv2 runs the receiver (this binary, `serve`, as a child process); serv1
//! writes files and mirrors them, changes them and mirrors only what
//! changed, then both copies are verified identical. Everything is removed
//! at the end (`--keep` leaves it for a look).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::scan::bytes;
use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::config::Cluster;
use crate::index::Index;
use crate::scan::{Quiet, ScanOptions, scan_set};
use crate::sync::{PushOptions, PushReport, push, verify};
use crate::transport::{Endpoint, Identity};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (configuration, both roots, logs) afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// Kills the receiver when the demo ends, however it ends.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes the built-in example cluster under `base`.
fn write_config(base: &Path) -> anyhow::Result<PathBuf> {
    let dir = base.join("cluster.d");
    for (i, node) in ["serv1", "serv2"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(node))?;
        let key = base.join(format!("state{}/identity.pem", i + 1));
        let id = Identity::generate(node)?;
        id.save(&key, false)?;
        let conf = format!(
            "# demo node {node}: loopback only\naddress = 127.0.0.1\nport = {}\nheartbeat_port = {}\n\
             root = {}\nstate = {}\nkey = {}\nfingerprint = {}\n",
            free_port()?,
            free_port()?,
            base.join(format!("root{}", i + 1)).display(),
            base.join(format!("state{}", i + 1)).display(),
            key.display(),
            id.fingerprint()
        );
        std::fs::write(dir.join(format!("{node}.conf")), conf)?;
    }
    std::fs::write(dir.join("serv1/Fdocs"), "# the documents share of serv1\n/srv/docs/\n")?;
    std::fs::write(dir.join("serv2/Fweb"), "/srv/www/\n")?;
    std::fs::write(dir.join("reachlist"), "127.0.0.1 tcp:22\n")?;
    Ok(dir)
}

fn say(s: &str) {
    println!("{s}");
    let _ = std::io::stdout().flush();
}

fn write_files(root: &Path) -> anyhow::Result<u64> {
    let docs = root.join("srv/docs");
    std::fs::create_dir_all(docs.join("reports/2026"))?;
    let mut total = 0u64;
    for i in 0..200 {
        let text = format!("memo {i}\n").repeat(50 + i);
        std::fs::write(docs.join(format!("memo-{i:03}.txt")), &text)?;
        total += text.len() as u64;
    }
    let mut big = Vec::with_capacity(24 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while big.len() < 24 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(docs.join("reports/2026/archive.bin"), &big)?;
    total += big.len() as u64;
    std::os::unix::fs::symlink("reports/2026/archive.bin", docs.join("latest"))?;
    Ok(total)
}

fn line(r: &PushReport) -> String {
    match r.outcome {
        "unchanged" => format!("in step, nothing sent ({:.0} ms)", r.elapsed_s * 1000.0),
        _ => format!(
            "{} pass: {} entries offered, {} chunks sent ({}), {} reused, {} deleted, {:.0} ms",
            r.outcome,
            r.send.entries_offered,
            r.send.chunks_sent,
            bytes(r.send.chunk_bytes),
            r.chunks_reused,
            r.deleted,
            r.elapsed_s * 1000.0
        ),
    }
}

pub fn run(_global: &Global, args: &DemoArgs) -> anyhow::Result<i32> {
    let tmp = tempfile::Builder::new().prefix("hamirror-demo-").tempdir()?;
    let base = tmp.path().to_path_buf();
    say(&format!("hamirror demo: a two-node cluster in {}", base.display()));
    let cfg = write_config(&base)?;
    let cluster = Arc::new(Cluster::load(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    let serv1 = cluster.node("serv1").context("serv1")?.clone();
    let serv2 = cluster.node("serv2").context("serv2")?.clone();
    let set = serv1.group.sets[0].clone();
    say("  serv1 holds group serv1 with set Fdocs (/srv/docs/); serv2 receives it");

    let log = std::fs::File::create(base.join("serv2-serve.log"))?;
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "serv2", "serve"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting serv2's receiver")?;
    let _receiver = Receiver(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", serv2.conf.port)).is_ok() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "serv2's receiver did not start; see serv2-serve.log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    say(&format!(
        "  serv2: `hamirror serve` listening on 127.0.0.1:{}",
        serv2.conf.port
    ));

    let written = write_files(&serv1.conf.root)?;
    say(&format!(
        "\n1. serv1 writes 201 files ({}) and mirrors them",
        bytes(written)
    ));
    let index = Arc::new(Index::open_set(&serv1.conf.state, &set.name)?);
    let rt = super::runtime()?;
    let endpoint = rt.block_on(async { Endpoint::client(&serv1, &serv2) })?;
    let conn = rt.block_on(endpoint.connect())?;
    let mut session = 0;
    let mut pass = |what: &str| -> anyhow::Result<PushReport> {
        let t = Instant::now();
        let scan = scan_set(&index, &set, &serv1.conf.root, &ScanOptions::default(), &Quiet)?;
        session += 1;
        let opts = PushOptions {
            session,
            ..PushOptions::default()
        };
        let r = rt.block_on(push(&conn, &serv1, "serv2", &set, "serv1", 1, index.clone(), &opts))?;
        say(&format!(
            "   {what}: scan read {} of {} files, {}; total {:.0} ms",
            scan.files_read,
            scan.files,
            line(&r),
            t.elapsed().as_secs_f64() * 1000.0
        ));
        Ok(r)
    };
    pass("first sync")?;
    std::thread::sleep(Duration::from_millis(150));
    say("\n2. nothing changed: one stat per file and one round trip");
    pass("second sync")?;

    say("\n3. serv1 inserts a line in the middle of the 24 MiB archive, renames a folder, deletes a memo");
    let docs = serv1.conf.root.join("srv/docs");
    let mut big = std::fs::read(docs.join("reports/2026/archive.bin"))?;
    big.splice(12 << 20..12 << 20, b"a new line in the middle\n".iter().copied());
    std::fs::write(docs.join("reports/2026/archive.bin"), &big)?;
    std::fs::rename(docs.join("reports"), docs.join("old-reports"))?;
    std::fs::remove_file(docs.join("latest"))?;
    std::fs::remove_file(docs.join("memo-007.txt"))?;
    let r = pass("delta sync")?;
    say(&format!(
        "   only the changed chunks crossed the link: {} of a {} file",
        bytes(r.send.chunk_bytes),
        bytes(big.len() as u64)
    ));

    say("\n4. both copies re-read and compared (hamirror verify)");
    let v = rt.block_on(verify(&conn, &serv1, "serv2", &set, "serv1", session + 1))?;
    let verdict = if v.identical() {
        "identical".to_string()
    } else {
        format!("{} differences", v.differences.len())
    };
    say(&format!(
        "   Fdocs on serv1 and serv2: {verdict} ({} entries, {})",
        v.local_entries,
        bytes(v.bytes)
    ));
    for d in &v.differences {
        say(&format!("   {}: {}", d.path, d.what));
    }
    rt.block_on(endpoint.shutdown("demo done"));

    say(&format!(
        "\nsummary: mirrored {} to serv2; the unchanged pass sent nothing; the change cost {}; trees {verdict}",
        bytes(written),
        bytes(r.send.chunk_bytes)
    ));
    if args.keep {
        let kept = tmp.keep();
        say(&format!("kept {}", kept.display()));
    }
    Ok(if v.identical() { EXIT_OK } else { EXIT_FAILED })
}
