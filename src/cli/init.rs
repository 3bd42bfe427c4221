//! `hamirror init`: create this node's identity (an Ed25519 key and a
//! self-signed certificate in one PEM file at the `key` path of its
//! `NODE.conf`, mode 0600) and print the fingerprint to put in that
//! `NODE.conf`; `--show` prints the fingerprint of the existing key. Uses
//! the configuration and `transport::identity` only; no network.

use clap::Args;

use super::{EXIT_OK, Global, local};
use crate::config::Node;
use crate::transport::{Fingerprint, Identity};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Replace an existing key. The peer refuses this node until the new
    /// fingerprint is in this node's NODE.conf.
    #[arg(long)]
    pub force: bool,
    /// Print the fingerprint of the existing key (and whether NODE.conf
    /// has it); create nothing.
    #[arg(long, conflicts_with = "force")]
    pub show: bool,
}

pub fn run(global: &Global, args: &InitArgs) -> anyhow::Result<i32> {
    let (cluster, name) = global.load_local()?;
    let node = local(&cluster, &name);
    let path = &node.conf.key;
    if args.show {
        let id = Identity::load(path)?;
        println!("{}", id.fingerprint());
        eprintln!("{}", conf_status(node, id.fingerprint()));
        return Ok(EXIT_OK);
    }
    let id = Identity::generate(&name)?;
    id.save(path, args.force)?;
    let fp = id.fingerprint();
    println!(
        "created {}: a new Ed25519 key and self-signed certificate for {name}",
        path.display()
    );
    println!("fingerprint: {fp}");
    println!(
        "put this line in {} (the peer pins {name}'s key from it; the cluster.d directory must be the same on both nodes):",
        node.conf_file.display()
    );
    println!("fingerprint = {fp}");
    Ok(EXIT_OK)
}

/// Whether the node's own `NODE.conf` carries this key's fingerprint.
fn conf_status(node: &Node, fp: Fingerprint) -> String {
    let conf = node.conf_file.display();
    match node.conf.fingerprint.as_deref() {
        Some(c) if c == fp.to_string() => format!("{conf} has this fingerprint: the peer accepts this key"),
        Some(c) => format!(
            "{conf} says `fingerprint = {c}`, which is not this key: the peer refuses this node until it says `fingerprint = {fp}`"
        ),
        None => format!("{conf} has no fingerprint yet: add `fingerprint = {fp}` to it"),
    }
}
