//! The operator socket: a Unix stream socket `state/control.sock` (mode
//! 0600) that `hamirror status`, `standby` and `takeover` talk to. The
//! protocol is one JSON object per line: the client sends one [`Request`],
//! the daemon answers one [`Response`] and closes. One connection at a
//! time, with short timeouts, so a stuck client cannot hold the daemon.
//!
//! The server thread only parses and forwards: every request is answered
//! by the driver (which owns the arbiter) through the daemon's channel.
//! The client side ([`call`]) is what the commands use.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Msg;
use super::status::StatusReport;

/// Longest a request line may be.
const MAX_REQUEST: u64 = 4096;
/// How long the server waits for a client's request, and for the driver.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Standby,
    ClearStandby,
    Takeover {
        group: String,
    },
    /// `hamirror maintenance on|off`.
    Maintenance {
        on: bool,
    },
    /// `hamirror promote GROUP` (failover = pacemaker).
    Promote {
        group: String,
    },
    /// `hamirror demote GROUP` (failover = pacemaker).
    Demote {
        group: String,
    },
}

/// The daemon's answer: `ok`, and either an error, a message or a status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<StatusReport>>,
}

impl Response {
    pub fn error(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(e.into()),
            message: None,
            status: None,
        }
    }
    pub fn message(m: impl Into<String>) -> Self {
        Response {
            ok: true,
            error: None,
            message: Some(m.into()),
            status: None,
        }
    }
    pub fn status(s: StatusReport) -> Self {
        Response {
            ok: true,
            error: None,
            message: None,
            status: Some(Box::new(s)),
        }
    }
}

/// Failures talking to the daemon. `NotRunning` is the common one.
#[derive(Debug, Error)]
pub enum ControlError {
    #[error("is `hamirror run` running? no socket at {}", path.display())]
    NoSocket { path: PathBuf },
    #[error("permission denied on {} (the daemon's socket is root's, mode 0600): run this as root", path.display())]
    Denied { path: PathBuf },
    #[error("is `hamirror run` running? nothing answers at {} ({source})", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the daemon at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon at {} sent an answer this command does not understand: {detail}", path.display())]
    BadAnswer { path: PathBuf, detail: String },
    #[error("cannot create the control socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Sends one request and waits (up to `timeout`) for the answer.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let io_err = |source| ControlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ControlError::NoSocket {
                path: socket.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ControlError::Denied {
                path: socket.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ControlError::NotRunning {
                path: socket.to_path_buf(),
                source,
            });
        }
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_string(req).unwrap_or_default();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .take(64 << 20)
        .read_line(&mut answer)
        .map_err(io_err)?;
    serde_json::from_str(&answer).map_err(|e| ControlError::BadAnswer {
        path: socket.to_path_buf(),
        detail: format!("{e}: {:?}", answer.chars().take(200).collect::<String>()),
    })
}

/// The listening socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. Call only while holding the daemon lock:
    /// a file left by a dead daemon is removed. The socket is created under
    /// a temporary name and renamed into place once private, so no client
    /// can connect before its mode is set.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension(format!("sock.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        std::fs::rename(&tmp, path).map_err(bind_err)?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    /// Serves requests on a thread, forwarding each to the driver.
    pub fn serve(&mut self, tx: Sender<Msg>) -> io::Result<JoinHandle<()>> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| io::Error::other("control socket already served"))?;
        std::thread::Builder::new().name("control".into()).spawn(move || {
            super::worker::normal_priority();
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if !serve_one(conn, &tx) {
                    break;
                }
            }
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one connection; false once the driver is gone.
fn serve_one(mut conn: UnixStream, tx: &Sender<Msg>) -> bool {
    let _ = conn.set_read_timeout(Some(SERVER_TIMEOUT));
    let _ = conn.set_write_timeout(Some(SERVER_TIMEOUT));
    let mut line = String::new();
    let read = match conn.try_clone() {
        Ok(c) => BufReader::new(c).take(MAX_REQUEST).read_line(&mut line),
        Err(e) => Err(e),
    };
    let mut alive = true;
    let response = match read {
        Err(e) => Response::error(format!("reading the request: {e}")),
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response::error(format!(
                "not a request ({e}); expected one JSON line like {{\"cmd\":\"status\"}}"
            )),
            Ok(req) => {
                let (rtx, rrx) = mpsc::channel();
                if tx.send(Msg::Control { req, reply: rtx }).is_err() {
                    alive = false;
                    Response::error("the daemon is shutting down")
                } else {
                    rrx.recv_timeout(SERVER_TIMEOUT)
                        .unwrap_or_else(|_| Response::error("the daemon did not answer in time"))
                }
            }
        },
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = conn.write_all(out.as_bytes());
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_form() {
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"cmd":"status"}"#);
        assert_eq!(
            serde_json::to_string(&Request::Takeover { group: "serv1".into() }).unwrap(),
            r#"{"cmd":"takeover","group":"serv1"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"clear_standby"}"#).unwrap(),
            Request::ClearStandby
        );
    }

    #[test]
    fn a_missing_socket_says_the_daemon_is_not_running() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("control.sock");
        let e = call(&p, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(
            e.to_string().starts_with("is `hamirror run` running? no socket at"),
            "{e}"
        );
        // A file left by a dead daemon: nothing listens.
        drop(UnixListener::bind(&p).unwrap());
        let e = call(&p, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("nothing answers"), "{e}");
    }

    #[test]
    fn requests_reach_the_driver_and_answers_come_back_over_a_private_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("control.sock");
        let mut sock = ControlSocket::bind(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let (tx, rx) = mpsc::channel();
        sock.serve(tx).unwrap();
        let driver = std::thread::spawn(move || {
            for _ in 0..2 {
                match rx.recv().unwrap() {
                    Msg::Control { req, reply } => {
                        let _ = reply.send(match req {
                            Request::Takeover { group } => Response::error(format!("no group {group}")),
                            other => Response::message(format!("{other:?}")),
                        });
                    }
                    _ => panic!("unexpected message"),
                }
            }
        });
        let r = call(&p, &Request::Standby, Duration::from_secs(5)).unwrap();
        assert!(r.ok);
        assert_eq!(r.message.as_deref(), Some("Standby"));
        let r = call(&p, &Request::Takeover { group: "x".into() }, Duration::from_secs(5)).unwrap();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("no group x"));
        driver.join().unwrap();
        // Garbage is answered, not fatal.
        let mut s = UnixStream::connect(&p).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        assert!(answer.contains("not a request"), "{answer}");
        drop(sock);
        assert!(!p.exists());
    }
}
