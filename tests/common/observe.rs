//! The instruments of the cluster lab: a client probe per service address
//! (a thread inside the client namespace connecting every interval) and a
//! sampler per node namespace (a thread reading the interface addresses
//! every 5 ms) recording when each node held each address — "held" meaning
//! configured on an interface that is up with carrier, the raw presence
//! recorded beside it. From their records: the client-visible outage and
//! the time both nodes held an address at once.

// Nodes are indexed throughout (0 = serv1, 1 = serv2), in every table.
#![allow(clippy::needless_range_loop)]

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lab::{Lab, NODES, SERVICE_IPS, SERVICE_PORT};
use super::netns::{enter_netns, monotonic_ms};

/// One probe of a service address: when, and which node answered.
#[derive(Debug, Clone)]
pub struct Probe {
    pub t: u64,
    pub answer: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
}

/// A change of what a node holds: bit `i` live address `i`, bit `2+i` raw.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub t: u64,
    pub bits: u8,
}

/// The running instruments of a lab.
pub struct Observer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub probes: [Arc<Mutex<Vec<Probe>>>; 2],
    pub held: [Arc<Mutex<Vec<Held>>>; 2],
    pub interval: u64,
}

fn held_bits() -> u8 {
    let targets: Vec<Ipv4Addr> = SERVICE_IPS.iter().map(|a| a.parse().unwrap()).collect();
    let mut bits = 0u8;
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return 0;
        }
        let mut p = ifap;
        while !p.is_null() {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let a = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if let Some(i) = targets.iter().position(|t| *t == a) {
                    bits |= 1 << (2 + i);
                    let f = ifa.ifa_flags;
                    if f & libc::IFF_UP as u32 != 0 && f & libc::IFF_RUNNING as u32 != 0 {
                        bits |= 1 << i;
                    }
                }
            }
            p = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    bits
}

/// The instruments stand for a client on its own machine and for an
/// observer outside the nodes: they must not be starved by what runs on
/// the nodes' two shared cores. Low real-time priority (below the daemons'
/// 39/40) when permitted.
fn instrument_priority() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: valid thread and parameter; failure leaves normal priority.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
}

impl Observer {
    pub fn start(lab: &Lab) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let interval = lab.opts.probe_every;
        let probes: [Arc<Mutex<Vec<Probe>>>; 2] = Default::default();
        let held: [Arc<Mutex<Vec<Held>>>; 2] = Default::default();
        let mut threads = vec![];
        for i in 0..2 {
            let (ns, rec, st) = (lab.node_ns[i].clone(), held[i].clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                enter_netns(&ns).expect("enter node namespace");
                instrument_priority();
                let mut last = None;
                while !st.load(Ordering::Relaxed) {
                    let b = held_bits();
                    if last != Some(b) {
                        last = Some(b);
                        rec.lock().unwrap().push(Held {
                            t: monotonic_ms(),
                            bits: b,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }));
            let (ns, rec, st) = (lab.client_ns.clone(), probes[i].clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                enter_netns(&ns).expect("enter client namespace");
                instrument_priority();
                let addr = SocketAddr::new(SERVICE_IPS[i].parse().unwrap(), SERVICE_PORT);
                let timeout = interval.mul_f64(0.8);
                let start = Instant::now();
                let mut k = 0u32;
                while !st.load(Ordering::Relaxed) {
                    let t = monotonic_ms();
                    let r = TcpStream::connect_timeout(&addr, timeout)
                        .map_err(|e| format!("connect: {e}"))
                        .and_then(|mut s| {
                            s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                            let mut out = String::new();
                            s.read_to_string(&mut out).map_err(|e| format!("read: {e}"))?;
                            let out = out.trim().to_string();
                            if out.is_empty() {
                                Err("empty answer".to_string())
                            } else {
                                Ok(out)
                            }
                        });
                    let (answer, error) = match r {
                        Ok(a) => (Some(a), None),
                        Err(e) => (None, Some(e)),
                    };
                    rec.lock().unwrap().push(Probe { t, answer, error });
                    k += 1;
                    if let Some(wait) = (interval * k).checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }));
        }
        Observer {
            stop,
            threads,
            probes,
            held,
            interval: interval.as_millis() as u64,
        }
    }

    /// The latest answer on service address `i`.
    pub fn last_answer(&self, i: usize) -> Option<String> {
        self.probes[i].lock().unwrap().last().and_then(|p| p.answer.clone())
    }

    /// Waits until the client gets `node`'s answer on address `i`.
    pub fn wait_answer(&self, lab: &Lab, i: usize, node: &str, timeout: Duration) -> u64 {
        lab.wait(
            &format!("client answered by {node} on {}", SERVICE_IPS[i]),
            timeout,
            |_| self.last_answer(i).as_deref() == Some(node),
        )
    }

    /// Client-visible outage of address `i` after `from`: the longest time
    /// between two answered probes, less one probe interval (so a run
    /// without a lost probe counts 0). Resolution: one interval.
    pub fn outage(&self, i: usize, from: u64) -> Outage {
        let p = self.probes[i].lock().unwrap();
        let mut last_ok: Option<u64> = p.iter().rev().find(|x| x.t < from && x.answer.is_some()).map(|x| x.t);
        let mut worst = Outage::default();
        let mut failed = 0;
        for x in p.iter().filter(|x| x.t >= from) {
            match (&x.answer, last_ok) {
                (Some(_), Some(ok)) => {
                    let gap = (x.t - ok).saturating_sub(self.interval);
                    if failed > 0 && gap > worst.ms {
                        worst = Outage {
                            ms: gap,
                            lost_probes: failed,
                            ended_at: Some(x.t),
                        };
                    }
                    failed = 0;
                    last_ok = Some(x.t);
                }
                (Some(_), None) => last_ok = Some(x.t),
                (None, _) => failed += 1,
            }
        }
        if failed > 0 {
            let last = p.last().map_or(from, |x| x.t);
            worst = Outage {
                ms: last - last_ok.unwrap_or(from),
                lost_probes: failed,
                ended_at: None,
            };
        }
        worst
    }

    /// How long, after `from`, both nodes held service address `i` at once
    /// (`live`: up with carrier; else merely configured).
    pub fn overlap(&self, i: usize, from: u64, live: bool) -> u64 {
        let bit = if live { 1u8 << i } else { 1u8 << (2 + i) };
        let a = self.held[0].lock().unwrap().clone();
        let b = self.held[1].lock().unwrap().clone();
        let now = monotonic_ms();
        let mut times: Vec<u64> = a.iter().chain(b.iter()).map(|h| h.t.max(from)).collect();
        times.push(from);
        times.sort_unstable();
        times.dedup();
        let state_at = |v: &[Held], t: u64| v.iter().rev().find(|h| h.t <= t).is_some_and(|h| h.bits & bit != 0);
        let mut total = 0;
        for (k, &t) in times.iter().enumerate() {
            let end = times.get(k + 1).copied().unwrap_or(now);
            if state_at(&a, t) && state_at(&b, t) {
                total += end - t;
            }
        }
        total
    }

    /// The longest run, after `from`, of probes of address `i` whose
    /// connection failed (nobody reachable at the address: it moved,
    /// vanished, or ARP points elsewhere) — as opposed to a connection
    /// accepted but answered late (a slow service on a loaded machine).
    pub fn unreachable_run(&self, i: usize, from: u64) -> u32 {
        let p = self.probes[i].lock().unwrap();
        let (mut run, mut worst) = (0, 0);
        for x in p.iter().filter(|x| x.t >= from) {
            if x.error.as_deref().is_some_and(|e| e.starts_with("connect")) {
                run += 1;
                worst = worst.max(run);
            } else {
                run = 0;
            }
        }
        worst
    }

    /// Whether `node` held service address `i` (live) without a break from
    /// `from` until now.
    pub fn held_throughout(&self, node: usize, i: usize, from: u64) -> bool {
        let bit = 1u8 << i;
        let h = self.held[node].lock().unwrap();
        h.iter().rev().find(|x| x.t <= from).is_some_and(|x| x.bits & bit != 0)
            && h.iter().filter(|x| x.t > from).all(|x| x.bits & bit != 0)
    }

    /// When the sampler first saw `node` without service address `i`
    /// (configured or not) at or after `from`: a measurement that starts
    /// after a change must start when the sampler saw it.
    pub fn cleared(&self, node: usize, i: usize, from: u64) -> u64 {
        let bit = 1u8 << (2 + i);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            {
                let h = self.held[node].lock().unwrap();
                let before = h.iter().rev().find(|x| x.t <= from);
                if before.is_none_or(|x| x.bits & bit == 0) {
                    return from;
                }
                if let Some(x) = h.iter().find(|x| x.t > from && x.bits & bit == 0) {
                    return x.t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} still holds {}",
                NODES[node],
                SERVICE_IPS[i]
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A client-visible outage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outage {
    pub ms: u64,
    pub lost_probes: u32,
    /// When service came back (None: still down at the end).
    pub ended_at: Option<u64>,
}
