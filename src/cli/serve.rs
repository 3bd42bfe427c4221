//! `hamirror serve`: run this node's receiver in the foreground. Accepts
//! mirror conversations from the peer (pinned key) on `address`/`lan` and
//! `port`, applies what the group's holder sends, answers verifies. Logs
//! through tracing; stops cleanly on SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::{EXIT_OK, Global};
use crate::sync::{OwnerHolds, Server};
use crate::transport::Endpoint;

#[derive(Debug, Args)]
pub struct ServeArgs {}

pub fn run(global: &Global, _args: &ServeArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let cluster = Arc::new(cluster);
    let local = super::local(&cluster, &me).clone();
    let peer = cluster.sole_peer(&me).map_err(anyhow::Error::msg)?.clone();
    super::runtime()?.block_on(async move {
        let endpoint = Endpoint::server(&local, &peer).with_context(|| format!("starting the receiver of {me}"))?;
        let addrs: Vec<String> = endpoint.local_addrs().iter().map(ToString::to_string).collect();
        tracing::info!(node = %me, peer = %peer.name, "receiving on {}", addrs.join(", "));
        let server = Server::new(cluster.clone(), &me, Arc::new(OwnerHolds::new(&cluster)));
        tokio::select! {
            _ = server.run(&endpoint) => {}
            _ = super::shutdown_signal() => tracing::info!("stopping"),
        }
        endpoint.close();
        Ok(EXIT_OK)
    })
}
