//! Incarnations that survive restarts, in the node's `state` directory:
//! this node's last incarnation (`incarnation`), so the next one is always
//! larger even when the wall clock went back, and the newest incarnation
//! and sequence number accepted from the peer (`peer-incarnation`), so a
//! restarted receiver still refuses heartbeats recorded from an earlier
//! incarnation of the peer (see `ReplayWindow` in the wire crate and the
//! threat model in docs/FAILOVER.md). With several peers (fan-out under
//! Pacemaker) each has its own file, `peer-incarnation.NODE`.
//!
//! Writes are durable (temporary file, fsync, rename, fsync of the
//! directory). The peer's numbers are written by [`PeerRecorder`], a thread
//! of its own, so a slow disk never delays the heartbeat thread. Plain
//! blocking file I/O; knows nothing of sockets or the arbiter.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

/// This node's last incarnation.
pub const OWN_FILE: &str = "incarnation";
/// The newest incarnation and sequence number accepted from the peer.
pub const PEER_FILE: &str = "peer-incarnation";

fn write_durably(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The numbers on the first non-comment line of `dir/name`; `None` if the
/// file is missing or unreadable as numbers.
fn read_numbers(dir: &Path, name: &str) -> Option<Vec<u64>> {
    let text = fs::read_to_string(dir.join(name)).ok()?;
    let line = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())?;
    line.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// The incarnation of this run: microseconds since the Unix epoch, or one
/// more than the last persisted one if that is larger (the clock went
/// back), written durably before any heartbeat carries it.
pub fn next_own(state: &Path) -> io::Result<u64> {
    let now = super::new_incarnation();
    let last = read_numbers(state, OWN_FILE).and_then(|v| v.first().copied());
    let next = match last {
        Some(l) if l >= now => l + 1,
        _ => now,
    };
    write_durably(
        state,
        OWN_FILE,
        &format!("# hamirror: this node's last incarnation (heartbeats)\n{next}\n"),
    )?;
    Ok(next)
}

/// The file of a peer's numbers: [`PEER_FILE`] for the one peer of a
/// two-node cluster (`None`), `peer-incarnation.NODE` for one of several.
pub fn peer_file(name: Option<&str>) -> String {
    match name {
        None => PEER_FILE.to_string(),
        Some(n) => format!("{PEER_FILE}.{n}"),
    }
}

/// The peer's newest (incarnation, sequence number) a previous run
/// accepted, if it persisted any.
pub fn load_peer(state: &Path) -> Option<(u64, u64)> {
    load_peer_from(state, PEER_FILE)
}

/// [`load_peer`] from the file named `file` (see [`peer_file`]).
pub fn load_peer_from(state: &Path, file: &str) -> Option<(u64, u64)> {
    match read_numbers(state, file)?.as_slice() {
        [i, s] => Some((*i, *s)),
        _ => None,
    }
}

/// Persists the peer's numbers off the caller's thread: the latest value
/// sent wins; dropping it writes the last one and waits for the write.
#[derive(Debug)]
pub struct PeerRecorder {
    tx: Option<Sender<(u64, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl PeerRecorder {
    pub fn start(state: PathBuf, errors: impl Fn(String) + Send + 'static) -> io::Result<PeerRecorder> {
        Self::start_in(state, PEER_FILE.to_string(), errors)
    }

    /// [`PeerRecorder::start`] writing to `file` (see [`peer_file`]).
    pub fn start_in(
        state: PathBuf,
        file: String,
        errors: impl Fn(String) + Send + 'static,
    ) -> io::Result<PeerRecorder> {
        let (tx, rx) = mpsc::channel::<(u64, u64)>();
        let thread = std::thread::Builder::new()
            .name("peer-incarnation".into())
            .spawn(move || {
                let mut failing = false;
                while let Ok(mut v) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        v = newer;
                    }
                    let text = format!(
                        "# hamirror: newest heartbeat incarnation and sequence number accepted from the peer\n{} {}\n",
                        v.0, v.1
                    );
                    match write_durably(&state, &file, &text) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            errors(format!(
                                "cannot persist the peer's incarnation in {}: {e} (after a restart, heartbeats \
                                 recorded from an earlier run of the peer could be replayed)",
                                state.display()
                            ));
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(PeerRecorder {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn record(&self, incarnation: u64, seq: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((incarnation, seq));
        }
    }
}

impl Drop for PeerRecorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_incarnation_grows_even_when_the_clock_went_back() {
        let d = tempfile::tempdir().unwrap();
        let a = next_own(d.path()).unwrap();
        let b = next_own(d.path()).unwrap();
        assert!(b > a);
        // A last incarnation far in the future: the clock went back.
        let future = super::super::new_incarnation() + 3_600_000_000;
        fs::write(d.path().join(OWN_FILE), format!("{future}\n")).unwrap();
        assert_eq!(next_own(d.path()).unwrap(), future + 1);
        assert_eq!(read_numbers(d.path(), OWN_FILE), Some(vec![future + 1]));
    }

    #[test]
    fn peer_numbers_are_persisted_latest_first_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_peer(d.path()), None);
        {
            let r = PeerRecorder::start(d.path().to_path_buf(), |_| {}).unwrap();
            r.record(5, 10);
            r.record(6, 1);
            r.record(6, 99);
        }
        assert_eq!(load_peer(d.path()), Some((6, 99)));
        fs::write(d.path().join(PEER_FILE), "garbage\n").unwrap();
        assert_eq!(load_peer(d.path()), None);
    }
}
