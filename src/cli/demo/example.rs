//! The demo's built-in example cluster: two nodes on loopback (crossover
//! 127.0.0.1, "LAN" 127.0.0.2), temporary roots and state directories, a
//! heartbeat key, a reachlist probed by TCP connect (no root needed), and
//! S/K hooks that only print what a real hook would do into a shared log.
//! Writes files only under the demo's base directory; knows nothing of the
//! daemon beyond the config format (docs/CONFIG.md).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::transport::Identity;

/// The file every demo hook appends its line to.
pub const HOOK_LOG: &str = "hooks.log";

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A hook that says what it would do, as a line in the shared hook log.
/// `reannounce` (after a conflict) concerns only the address hook.
fn hook(path: &Path, log: &Path, what: &str) -> anyhow::Result<()> {
    let again = if what.contains("service IP") {
        "re-announce the service IP (gratuitous ARP)"
    } else {
        ""
    };
    let script = format!(
        "#!/bin/sh\n# demo hook: a real one would {what}\n\
         what='{what}'\n\
         if [ \"$1\" = reannounce ]; then what='{again}'; fi\n\
         [ -n \"$what\" ] || exit 0\n\
         echo \"$HAMIRROR_NODE: $1 group $HAMIRROR_GROUP (epoch $HAMIRROR_EPOCH): would $what\" >> '{}'\n",
        log.display()
    );
    std::fs::write(path, script)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn go_minus_w(p: &Path) -> anyhow::Result<()> {
    let m = std::fs::metadata(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m.permissions().mode() & !0o022))?;
    if m.is_dir() {
        for e in std::fs::read_dir(p)? {
            go_minus_w(&e?.path())?;
        }
    }
    Ok(())
}

/// Writes the example under `base` and returns the config directory.
pub fn write(base: &Path) -> anyhow::Result<PathBuf> {
    let dir = base.join("cluster.d");
    let log = base.join(HOOK_LOG);
    // A port nobody listens on: the TCP probe counts a refusal as "reached".
    let probe = free_port()?;
    for (i, node) in ["serv1", "serv2"].iter().enumerate() {
        let n = i + 1;
        std::fs::create_dir_all(dir.join(node))?;
        let key = base.join(format!("state{n}/identity.pem"));
        let id = Identity::generate(node)?;
        id.save(&key, false)?;
        let conf = format!(
            "# demo node {node}: loopback only\n\
             address = 127.0.0.1\nlan = 127.0.0.2\nport = {}\nheartbeat_port = {}\n\
             root = {}\nstate = {}\nkey = {}\nfingerprint = {}\n\
             heartbeat_key = authkeys\ninitdead = 3s\nauto_failback = yes\npreferred = serv1\n",
            free_port()?,
            free_port()?,
            base.join(format!("root{n}")).display(),
            base.join(format!("state{n}")).display(),
            key.display(),
            id.fingerprint()
        );
        std::fs::write(dir.join(format!("{node}.conf")), conf)?;
    }
    std::fs::write(dir.join("serv1/Fdocs"), "# the documents share of serv1\n/srv/docs/\n")?;
    std::fs::write(dir.join("serv2/Fweb"), "# the web site of serv2\n/srv/www/\n")?;
    for (node, service) in [("serv1", "smbd"), ("serv2", "nginx")] {
        hook(
            &dir.join(node).join("S10ipaddr"),
            &log,
            "add the service IP and send gratuitous ARP",
        )?;
        hook(
            &dir.join(node).join(format!("S20{service}")),
            &log,
            &format!("start {service}"),
        )?;
        hook(
            &dir.join(node).join(format!("K10{service}")),
            &log,
            &format!("stop {service}"),
        )?;
        hook(&dir.join(node).join("K90ipaddr"), &log, "remove the service IP")?;
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("authkeys"), format!("{hex}\n"))?;
    std::fs::set_permissions(dir.join("authkeys"), std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(dir.join("reachlist"), format!("127.0.0.1 tcp:{probe}\n"))?;
    // `run` refuses files others could change, whatever the umask.
    go_minus_w(&dir)?;
    Ok(dir)
}
