//! `hamirror allow-deletes SET`: on the node that keeps the replica of a
//! set, let the next pass that deletes anything through the mass-delete
//! guard, and start the guard's count again from there. The way to accept
//! a refused mass delete while the holder's daemon keeps retrying its push
//! (`sync --force` needs the set's index, which that daemon holds). Touches
//! only the guard's record in this node's index of the set; waits (up to
//! 30 s) while this node's receiver holds that index for a conversation.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::{EXIT_OK, Global};
use crate::index::{Index, IndexError};
use crate::plan::GuardCount;

#[derive(Debug, Args)]
pub struct AllowArgs {
    /// The set: `Fsmbd` or `smbd`.
    pub set: String,
}

/// How long to wait for this node's receiver to let go of the index.
const BUSY_WAIT: Duration = Duration::from_secs(30);

pub fn run(global: &Global, args: &AllowArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let node = super::local(&cluster, &me);
    let (_, set) = super::find_set(&cluster, &args.set)?;
    let waiting = Instant::now();
    let index = loop {
        match Index::open_set(&node.conf.state, &set.name) {
            Err(IndexError::InUse { .. }) if waiting.elapsed() < BUSY_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => break r.with_context(|| format!("node {me}: the index of {}", set.name))?,
        }
    };
    let prev = index.guard_record(&set.name)?.and_then(|r| GuardCount::decode(&r));
    index.put_guard_record(&set.name, Some(&GuardCount::allowing(prev).encode()))?;
    println!(
        "{me}: the next pass of {} that deletes anything here goes through the mass-delete guard; \
         its count starts again from there",
        set.name
    );
    Ok(EXIT_OK)
}
