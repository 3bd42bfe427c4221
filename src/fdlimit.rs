//! The open files limit: raised for this process at start, given back as
//! it was to the processes it starts (hooks).
//!
//! The usual soft limit is 1,024 (systemd's default, for the sake of
//! programs that use `select(2)`), the hard one much higher; systemd's
//! documentation asks programs that need more descriptors to raise their
//! own soft limit, and to give children the original. hamirror needs more
//! than a select loop would: every transfer, watch and index holds some,
//! and a receiver keeps the old versions a pass replaced open until it has
//! answered (`apply::retired`, bounded by a quarter of this limit). Knows
//! nothing else; never fails (a limit it cannot change stays as it was).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

use rustix::process::{Resource, Rlimit};

/// The soft limit asked for (or the hard limit, if lower).
pub const WANT: u64 = 65_536;

/// The limit as this process found it, before [`raise`].
static ORIGINAL: OnceLock<Rlimit> = OnceLock::new();

/// Raises the soft open files limit to [`WANT`] (at most the hard limit),
/// once, remembering the original for [`restore_in_child`].
pub fn raise() {
    let now = rustix::process::getrlimit(Resource::Nofile);
    if ORIGINAL.set(now).is_err() {
        return;
    }
    let target = now.maximum.map_or(WANT, |hard| hard.min(WANT));
    if now.current.is_none_or(|soft| soft >= target) {
        return;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: now.maximum,
    };
    if let Err(e) = rustix::process::setrlimit(Resource::Nofile, raised) {
        tracing::debug!("open files limit not raised: {e}");
    }
}

/// Makes `cmd`'s process start with the open files limit this process had
/// before [`raise`].
pub fn restore_in_child(cmd: &mut Command) {
    let Some(&original) = ORIGINAL.get() else {
        return;
    };
    if rustix::process::getrlimit(Resource::Nofile).current == original.current {
        return;
    }
    // SAFETY: the closure runs between fork and exec; it makes one system
    // call (prlimit64, async-signal-safe) on plain data and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || rustix::process::setrlimit(Resource::Nofile, original).map_err(std::io::Error::from));
    }
}
