//! Signals as messages: SIGTERM, SIGINT and SIGHUP are blocked in every
//! thread (the mask is inherited, so [`block`] must run before the first
//! thread is spawned) and a dedicated thread takes them with `sigwait` and
//! sends them to the driver. No async-signal-safety puzzles, no handler
//! racing the driver. Hooks start with a clean mask: the standard library
//! resets it in every child it spawns.

use std::io;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use super::Msg;

const SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in SIGNALS {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// Blocks the daemon's signals in the calling thread and every thread it
/// creates from now on.
pub fn block() -> io::Result<()> {
    let s = set();
    // SAFETY: a valid, initialised set; old mask not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts the thread that turns signals into [`Msg::Signal`].
pub fn spawn(tx: Sender<Msg>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let s = set();
        loop {
            let mut sig = 0;
            // SAFETY: valid set and out-pointer.
            if unsafe { libc::sigwait(&s, &mut sig) } != 0 {
                continue;
            }
            if tx.send(Msg::Signal(sig)).is_err() {
                break;
            }
        }
    })
}

/// `SIGTERM` for logs.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}
