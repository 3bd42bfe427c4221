//! The daemon's durable state in the node's `state` directory: the group
//! epochs (`epochs`), the standby lock (`standby.lock`), the maintenance
//! register with the groups kept running under it (`maintenance`), the single-daemon
//! lock (`daemon.lock`, an `flock`) and the path of the operator socket
//! (`control.sock`). Every write that must survive a crash goes through a
//! temporary file, `fsync`, `rename` and an `fsync` of the directory, so a
//! power cut leaves either the old or the new version, never a torn one.
//!
//! Plain blocking file I/O: the hook worker calls it (off the driver's
//! real-time thread). Knows nothing of the arbiter beyond names.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::failover::STANDBY_LOCK;

/// File of the last epoch of each group this node acquired.
pub const EPOCHS: &str = "epochs";
/// The maintenance register and the groups held under it.
pub const MAINTENANCE: &str = "maintenance";
/// The operator socket (`hamirror status`, `standby`, `takeover`).
pub const CONTROL_SOCKET: &str = "control.sock";
/// Held with `flock` by the running daemon.
pub const DAEMON_LOCK: &str = "daemon.lock";

/// A failure of the state directory. `retryable` says whether trying again
/// as is can help (a full disk may clear; a permission problem will not).
#[derive(Debug, Error)]
pub enum StateError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another `hamirror run` holds {} (pid in the file: {pid}); one daemon per node and state directory",
        path.display()
    )]
    AlreadyRunning { path: PathBuf, pid: String },
}

impl StateError {
    pub fn retryable(&self) -> bool {
        match self {
            StateError::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound | io::ErrorKind::ReadOnlyFilesystem
            ),
            StateError::AlreadyRunning { .. } => false,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The node's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating it with mode 0700 if missing) the state directory.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create directory", dir))?;
        }
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join(CONTROL_SOCKET)
    }

    /// Takes the single-daemon lock; held as long as the returned file is
    /// open (the kernel drops it when the process dies, however it dies).
    pub fn lock_daemon(&self) -> Result<File, StateError> {
        let path = self.dir.join(DAEMON_LOCK);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        // SAFETY: flock on a valid, open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                return Err(StateError::AlreadyRunning { path, pid });
            }
            return Err(io_err("lock", &path)(e));
        }
        let _ = f.set_len(0);
        let _ = writeln!(f, "{}", std::process::id());
        Ok(f)
    }

    /// Whether the standby lock is present.
    pub fn standby_lock(&self) -> bool {
        self.dir.join(STANDBY_LOCK).exists()
    }

    /// Writes the standby lock durably, with the reason inside for people.
    pub fn write_standby_lock(&self, reason: &str) -> Result<(), StateError> {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = format!(
            "# hamirror standby lock: this node stays in standby until an operator runs\n\
             # `hamirror standby --clear`.\nreason = {reason}\nsince_unix = {since}\n"
        );
        self.write_atomic(STANDBY_LOCK, text.as_bytes())
    }

    /// Removes the standby lock (durably); absent already is fine.
    pub fn clear_standby_lock(&self) -> Result<(), StateError> {
        let path = self.dir.join(STANDBY_LOCK);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// The persisted epochs. A missing file is an empty map; lines that do
    /// not parse are skipped and returned as remarks (an epoch that is lower
    /// than it should be is corrected by the peer's heartbeats).
    pub fn load_epochs(&self) -> Result<(BTreeMap<String, u64>, Vec<String>), StateError> {
        let path = self.dir.join(EPOCHS);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeMap::new(), vec![])),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut map = BTreeMap::new();
        let mut remarks = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            match (words.next(), words.next().map(str::parse::<u64>), words.next()) {
                (Some(g), Some(Ok(e)), None) => {
                    map.insert(g.to_string(), e);
                }
                _ => remarks.push(format!("{}:{}: ignored: {content:?}", path.display(), i + 1)),
            }
        }
        Ok((map, remarks))
    }

    /// Persists the epochs (all groups, one line each).
    pub fn save_epochs(&self, epochs: &BTreeMap<String, u64>) -> Result<(), StateError> {
        let mut text = String::from("# hamirror: last epoch of each group acquired on this node\n");
        for (g, e) in epochs {
            text.push_str(&format!("{g} {e}\n"));
        }
        self.write_atomic(EPOCHS, text.as_bytes())
    }

    /// The persisted maintenance register and the groups held here under
    /// it, as written by [`StateDir::save_maintenance`]. The groups are only
    /// returned if they were written during this boot (`boot_id`): after a
    /// reboot nothing of theirs runs. Missing file: off, generation 0.
    /// Lines that do not parse are returned as remarks.
    pub fn load_maintenance(&self, boot_id: &str) -> Result<MaintenanceFile, StateError> {
        let path = self.dir.join(MAINTENANCE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(MaintenanceFile::default()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut out = MaintenanceFile::default();
        let mut held = BTreeMap::new();
        let mut same_boot = false;
        for (i, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let ok = match content.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("on", v)) => v.parse().map(|v| out.on = v).is_ok(),
                Some(("generation", v)) => v.parse().map(|v| out.generation = v).is_ok(),
                Some(("boot_id", v)) => {
                    same_boot = v == boot_id;
                    true
                }
                Some(("held", v)) => v.split_whitespace().all(|w| {
                    w.rsplit_once(':')
                        .and_then(|(g, e)| Some((g.to_string(), e.parse::<u64>().ok()?)))
                        .map(|(g, e)| held.insert(g, e))
                        .is_some()
                }),
                _ => false,
            };
            if !ok {
                out.remarks
                    .push(format!("{}:{}: ignored: {content:?}", path.display(), i + 1));
            }
        }
        if same_boot {
            out.held = held;
        }
        Ok(out)
    }

    /// Persists the maintenance register and the groups held here under it
    /// (with this boot's id, see [`StateDir::load_maintenance`]).
    pub fn save_maintenance(
        &self,
        on: bool,
        generation: u64,
        held: &BTreeMap<String, u64>,
        boot_id: &str,
    ) -> Result<(), StateError> {
        let held: Vec<String> = held.iter().map(|(g, e)| format!("{g}:{e}")).collect();
        let text = format!(
            "# hamirror maintenance mode (`hamirror maintenance on|off` on either node).\n\
             # While on, failover decisions are frozen; `held` lists the groups whose\n\
             # services stay up here across a restart of the daemon in this boot.\n\
             on = {on}\ngeneration = {generation}\nboot_id = {boot_id}\nheld = {}\n",
            held.join(" ")
        );
        self.write_atomic(MAINTENANCE, text.as_bytes())
    }

    /// Temporary file, fsync, rename, fsync of the directory.
    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), StateError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err("rename into", &path))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", &self.dir))
    }
}

/// What [`StateDir::load_maintenance`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceFile {
    pub on: bool,
    pub generation: u64,
    /// Groups held under maintenance in this boot, with their epochs.
    pub held: BTreeMap<String, u64>,
    pub remarks: Vec<String>,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); empty if unknown,
/// which never matches a recorded one.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip_and_bad_lines_are_reported_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(&tmp.path().join("st")).unwrap();
        assert!(s.load_epochs().unwrap().0.is_empty());
        let mut m = BTreeMap::new();
        m.insert("serv1".to_string(), 7);
        m.insert("serv2".to_string(), 2);
        s.save_epochs(&m).unwrap();
        assert_eq!(s.load_epochs().unwrap().0, m);
        assert!(!tmp.path().join("st/.epochs.tmp").exists());
        fs::write(tmp.path().join("st/epochs"), "serv1 9\nserv2 x\n# c\n").unwrap();
        let (m2, remarks) = s.load_epochs().unwrap();
        assert_eq!(m2.get("serv1"), Some(&9));
        assert_eq!(m2.get("serv2"), None);
        assert_eq!(remarks.len(), 1, "{remarks:?}");
        assert!(remarks[0].contains(":2: ignored"), "{remarks:?}");
    }

    #[test]
    fn the_maintenance_register_round_trips_and_its_groups_only_within_one_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        assert_eq!(s.load_maintenance("b1").unwrap(), MaintenanceFile::default());
        let held = BTreeMap::from([("serv1".to_string(), 7), ("db-2".to_string(), 3)]);
        s.save_maintenance(true, 4, &held, "b1").unwrap();
        let same = s.load_maintenance("b1").unwrap();
        assert_eq!((same.on, same.generation, &same.held), (true, 4, &held));
        assert!(same.remarks.is_empty(), "{:?}", same.remarks);
        let rebooted = s.load_maintenance("b2").unwrap();
        assert_eq!((rebooted.on, rebooted.generation), (true, 4));
        assert!(rebooted.held.is_empty(), "a reboot stopped them");
        fs::write(tmp.path().join(MAINTENANCE), "on = maybe\ngeneration = 2\nheld = g:x\n").unwrap();
        let bad = s.load_maintenance("").unwrap();
        assert_eq!((bad.on, bad.generation), (false, 2));
        assert_eq!(bad.remarks.len(), 2, "{:?}", bad.remarks);
        assert!(bad.remarks[0].contains(":1: ignored"), "{:?}", bad.remarks);
        assert!(!boot_id().is_empty());
    }

    #[test]
    fn standby_lock_is_written_and_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        assert!(!s.standby_lock());
        s.write_standby_lock("operator").unwrap();
        assert!(s.standby_lock());
        assert!(
            fs::read_to_string(tmp.path().join(STANDBY_LOCK))
                .unwrap()
                .contains("reason = operator")
        );
        s.clear_standby_lock().unwrap();
        assert!(!s.standby_lock());
        s.clear_standby_lock().unwrap();
    }

    #[test]
    fn a_second_daemon_lock_is_refused_while_the_first_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        let held = s.lock_daemon().unwrap();
        let err = s.lock_daemon().unwrap_err();
        assert!(matches!(err, StateError::AlreadyRunning { .. }), "{err}");
        assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
        drop(held);
        s.lock_daemon().unwrap();
    }

    #[test]
    fn a_new_state_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        StateDir::open(&d).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
