//! `hamirror verify SET`: re-read every file of a set on this node and on
//! the peer and report every difference in content or metadata. Writes
//! nothing — unless `--repair`: then the differences are mended by a full
//! push (`sync SET --full`, run from the holder) and the set verified again.
//! Exit: 0 identical (or repaired), 1 differences (each listed), 2 failed.

use clap::Args;

use super::scan::bytes;
use super::{EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Global};
use crate::sync::verify;
use crate::transport::Endpoint;

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The set to verify: `Fsmbd` or `smbd`.
    pub set: String,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Mend what differs: push the whole set (`sync SET --full`, which makes
    /// the peer re-check its copy), then verify again. Run it on the node
    /// that holds the set's group.
    #[arg(long)]
    pub repair: bool,
}

pub fn run(global: &Global, args: &VerifyArgs) -> anyhow::Result<i32> {
    let code = verify_once(global, args)?;
    if !args.repair || code != EXIT_PARTIAL {
        return Ok(code);
    }
    eprintln!("repairing: hamirror sync {} --full", args.set);
    let sync = super::sync::SyncArgs {
        set: args.set.clone(),
        dry_run: false,
        force: false,
        full: true,
        json: false,
        jobs: None,
    };
    let pushed = super::sync::run(global, &sync)?;
    if pushed == EXIT_FAILED {
        return Ok(EXIT_FAILED);
    }
    eprintln!("verifying again");
    verify_once(
        global,
        &VerifyArgs {
            repair: false,
            ..args.clone()
        },
    )
}

fn verify_once(global: &Global, args: &VerifyArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let node = super::local(&cluster, &me).clone();
    let (owner, set) = super::find_set(&cluster, &args.set)?;
    let (group, set) = (owner.group.name.clone(), set.clone());
    let owner_is_me = owner.name == me;
    let peer = cluster.sole_peer(&me).map_err(anyhow::Error::msg)?.clone();
    let result = super::runtime()?.block_on(async {
        let endpoint = Endpoint::client(&node, &peer)?;
        let conn = endpoint.connect().await?;
        let r = verify(&conn, &node, &peer.name, &set, &group, 1).await;
        endpoint.finish(&conn, "done").await;
        anyhow::Ok(r)
    })?;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hamirror: verify of {} with {} failed: {e}", set.name, peer.name);
            return Ok(EXIT_FAILED);
        }
    };
    // For the metrics: the last verify of each set, with its outcome.
    if let Err(e) = crate::daemon::metrics::record_verify(&node.conf.state, &set.name, report.differences.len() as u64)
    {
        tracing::debug!("verify result not recorded in {}: {e}", node.conf.state.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for d in &report.differences {
            println!("{}: {}", d.path, d.what);
        }
        for (p, why) in &report.local_unreadable {
            println!("/{p}: unreadable on {me}: {why}");
        }
        for (p, why) in &report.peer_unreadable {
            println!("/{p}: unreadable on {}: {why}", peer.name);
        }
        let verdict = if report.identical() {
            "identical".to_string()
        } else {
            format!("{} differences", report.differences.len())
        };
        println!(
            "{} on {me} and {}: {verdict} ({} entries, {} read on each side, {:.3} s)",
            set.name,
            peer.name,
            report.local_entries,
            bytes(report.bytes),
            report.elapsed_s
        );
    }
    if !report.identical() && !args.repair && !args.json {
        println!(
            "to make {}'s copy match, run on the holder: hamirror verify {} --repair",
            if owner_is_me { peer.name.as_str() } else { me.as_str() },
            args.set
        );
    }
    Ok(if report.identical() { EXIT_OK } else { EXIT_PARTIAL })
}
