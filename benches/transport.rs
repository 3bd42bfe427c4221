//! Throughput of the QUIC transport against a plain TCP copy on loopback:
//! the same bytes, in the same 1 MiB frames (`write_frame` out; in, the TCP
//! baseline reads each frame's body straight into its buffer),
//! through tokio in one process — QUIC over one uni stream and over several
//! parallel uni streams, TCP over one connection. Prints MB/s, CPU seconds
//! and the QUIC/TCP ratio. Run by `benches/transport.sh`, or:
//!
//! ```text
//! cargo bench --bench transport -- [--gib 2] [--rounds 3] [--streams 4] [--frame-kib 1024]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hamirror::transport::{Endpoint, FrameReceiver, Identity, PeerSpec, Tuning, write_frame};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

struct Opts {
    tuning: Tuning,
    shared_runtime: bool,
    bytes: u64,
    rounds: usize,
    streams: usize,
    frame: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        tuning: Tuning::default(),
        shared_runtime: false,
        bytes: 2 << 30,
        rounds: 3,
        streams: 4,
        frame: 1 << 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).and_then(|v| v.parse::<f64>().ok());
        match args[i].as_str() {
            "--gib" => o.bytes = (val().unwrap_or(2.0) * f64::from(1u32 << 30)) as u64,
            "--rounds" => o.rounds = val().unwrap_or(3.0) as usize,
            "--streams" => o.streams = val().unwrap_or(4.0) as usize,
            "--frame-kib" => o.frame = (val().unwrap_or(1024.0) * 1024.0) as usize,
            // Tuning experiments; the defaults are `Tuning::default()`.
            "--mtu" => o.tuning.mtu_upper_bound = val().unwrap_or(1452.0) as u16,
            "--stream-window-mib" => o.tuning.stream_window = (val().unwrap_or(8.0) * 1048576.0) as u32,
            "--conn-window-mib" => o.tuning.connection_window = (val().unwrap_or(32.0) * 1048576.0) as u32,
            "--send-window-mib" => o.tuning.send_window = (val().unwrap_or(32.0) * 1048576.0) as u64,
            "--ack-every" => o.tuning.ack_every = val().unwrap_or(0.0) as u32,
            "--shared-runtime" => {
                o.shared_runtime = true;
                i += 1;
                continue;
            }
            "--unfair" => {
                o.tuning.send_fairness = false;
                i += 1;
                continue;
            }
            "--sockbuf-mib" => o.tuning.socket_buffer = (val().unwrap_or(8.0) * 1048576.0) as usize,
            _ => {
                i += 1; // `--bench` and anything unknown
                continue;
            }
        }
        i += 2;
    }
    o
}

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

struct Run {
    secs: f64,
    cpu: f64,
}

impl Run {
    fn mbps(&self, bytes: u64) -> f64 {
        bytes as f64 / self.secs / 1e6
    }
}

/// The TCP baseline's reader: the header, then the body read straight
/// into a buffer of its size (the least a framed reader can do).
async fn tcp_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; hamirror_wire::frame::HEADER_LEN];
    if r.read_exact(&mut head).await.is_err() {
        return None;
    }
    let (ty, len) = hamirror_wire::frame::parse_header(head).unwrap();
    let mut body = Vec::with_capacity(len);
    let mut take = (&mut *r).take(len as u64);
    while body.len() < len {
        assert!(take.read_buf(&mut body).await.unwrap() > 0, "truncated frame");
    }
    Some((ty, body))
}

async fn tcp(o: &Opts, data: &[u8], server_rt: &Handle) -> Run {
    let listener = {
        let _in = server_rt.enter();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        TcpListener::from_std(l).unwrap()
    };
    let addr = listener.local_addr().unwrap();
    let frames = o.bytes / data.len() as u64;
    let reader = server_rt.spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut r = tokio::io::BufReader::with_capacity(256 << 10, s);
        let mut got = 0u64;
        while let Some((_, p)) = tcp_frame(&mut r).await {
            got += p.len() as u64;
        }
        got
    });
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..frames {
        write_frame(&mut s, 1, data).await.unwrap();
    }
    drop(s);
    let got = reader.await.unwrap();
    assert_eq!(got, frames * data.len() as u64);
    Run {
        secs: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu0,
    }
}

fn quic_pair(tuning: &Tuning, server_rt: &Handle) -> (Endpoint, Endpoint) {
    let a = Identity::generate("serv1").unwrap();
    let b = Identity::generate("serv2").unwrap();
    let (fa, fb) = (a.fingerprint(), b.fingerprint());
    let spec = |name: &str, fp, addrs: Vec<SocketAddr>| PeerSpec {
        name: name.into(),
        conf: format!("{name}.conf"),
        fingerprint: Some(fp),
        addrs,
    };
    let server = {
        let _in = server_rt.enter();
        Endpoint::listen(
            b,
            spec("serv1", fa, vec!["127.0.0.1:0".parse().unwrap()]),
            &["127.0.0.1:0".parse().unwrap()],
            tuning.clone(),
        )
        .unwrap()
    };
    let client = Endpoint::connector(a, spec("serv2", fb, server.local_addrs()), tuning.clone()).unwrap();
    (server, client)
}

async fn quic(o: &Opts, data: &[u8], streams: usize, server_rt: &Handle) -> Run {
    let (server, client) = quic_pair(&o.tuning, server_rt);
    let server = std::sync::Arc::new(server);
    let srv = server.clone();
    let accepted = server_rt.spawn(async move { srv.accept().await.unwrap().unwrap() });
    let c = client.connect().await.unwrap();
    let s = accepted.await.unwrap();
    let frames = o.bytes / data.len() as u64;
    let per_stream = frames / streams as u64;
    let reader = server_rt.spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let r: FrameReceiver = s.accept_uni().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut r = r;
                let mut got = 0u64;
                while let Some((_, p)) = r.recv().await.unwrap() {
                    got += p.len() as u64;
                }
                got
            }));
        }
        let mut got = 0;
        for t in tasks {
            got += t.await.unwrap();
        }
        got
    });
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut writers = Vec::new();
    for _ in 0..streams {
        let c = c.clone();
        // One shared buffer: each frame is handed over without a copy, as
        // chunks read from a file into a Vec would be.
        let data = bytes::Bytes::from(data.to_vec());
        writers.push(tokio::spawn(async move {
            let mut w = c.open_uni().await.unwrap();
            for _ in 0..per_stream {
                w.send_bytes(1, data.clone()).await.unwrap();
            }
            w.finish().unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let got = reader.await.unwrap();
    let run = Run {
        secs: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu0,
    };
    assert_eq!(got, per_stream * streams as u64 * data.len() as u64);
    let st = c.stats();
    eprintln!(
        "    quic x{streams}: mtu {}, rtt {:?}, lost packets {}, udp bytes {:.3} GB",
        st.mtu,
        st.rtt,
        st.lost_packets,
        st.udp_bytes_sent as f64 / 1e9
    );
    c.close(0, "done");
    client.close();
    tokio::time::sleep(Duration::from_millis(50)).await;
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    let data = hamirror::noise::noise(0, o.frame - 1);
    // Sender and receiver each get a runtime with one worker, as two
    // processes on two cores would; `--shared-runtime` puts both in one
    // runtime with two workers instead.
    let runtime = |workers| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap()
    };
    let (client_rt, server_rt) = if o.shared_runtime {
        (runtime(2), None)
    } else {
        (runtime(1), Some(runtime(1)))
    };
    let server = server_rt
        .as_ref()
        .map_or_else(|| client_rt.handle().clone(), |r| r.handle().clone());
    let moved = (o.bytes / data.len() as u64) * data.len() as u64;
    println!(
        "transport benchmark: {:.2} GiB per run in {} KiB frames, {} rounds, loopback, {}",
        moved as f64 / f64::from(1u32 << 30),
        o.frame >> 10,
        o.rounds,
        if o.shared_runtime {
            "one tokio runtime with 2 workers"
        } else {
            "sender and receiver in separate 1-worker tokio runtimes"
        }
    );
    let (mut t, mut q1, mut qn) = (Vec::new(), Vec::new(), Vec::new());
    // Ratios within a round: the load of a shared machine drifts less
    // within one round than across rounds.
    let (mut r1, mut rn) = (Vec::new(), Vec::new());
    let line = |what: &str, r: &Run| {
        println!(
            "  {what:<8} {:8.0} MB/s  cpu {:5.2} s  wall {:5.2} s",
            r.mbps(moved),
            r.cpu,
            r.secs
        )
    };
    client_rt.block_on(async {
        for round in 1..=o.rounds {
            println!("round {round}");
            let r = tcp(&o, &data, &server).await;
            line("tcp", &r);
            t.push(r.mbps(moved));
            let tcp_rate = r.mbps(moved);
            let r = quic(&o, &data, 1, &server).await;
            line("quic x1", &r);
            println!("  ratio quic x1/tcp this round: {:.2}", r.mbps(moved) / tcp_rate);
            q1.push(r.mbps(moved));
            r1.push(r.mbps(moved) / tcp_rate);
            if o.streams > 1 {
                let r = quic(&o, &data, o.streams, &server).await;
                line(&format!("quic x{}", o.streams), &r);
                println!(
                    "  ratio quic x{}/tcp this round: {:.2}",
                    o.streams,
                    r.mbps(moved) / tcp_rate
                );
                qn.push(r.mbps(moved));
                rn.push(r.mbps(moved) / tcp_rate);
            }
        }
    });
    println!(
        "median: tcp {:.0} MB/s, quic x1 {:.0} MB/s; median of per-round ratios quic x1/tcp {:.2}",
        median(t),
        median(q1),
        median(r1)
    );
    if !qn.is_empty() {
        println!(
            "median: quic x{} {:.0} MB/s; median of per-round ratios quic x{}/tcp {:.2}",
            o.streams,
            median(qn),
            o.streams,
            median(rn)
        );
    }
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    println!("peak RSS of the process (both ends): {} MiB", ru.ru_maxrss / 1024);
}
