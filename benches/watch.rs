//! `hamirror watch` latency, storm and idle-CPU benchmark against the
//! release binary (cargo builds it for benches), for each event source:
//!
//! 1. latency: 1,000 small files written one at a time; for each, the time
//!    from the return of its `close()` to the arrival of the log line of
//!    the commit holding it (p50 / p99 / max);
//! 2. storm: 10,000 new small files in 100 directories created as fast as
//!    possible; the time until the commits hold all of them;
//! 3. idle CPU: a 50,000-file set, watched and idle for 30 s: CPU time of
//!    the whole process (all threads) over wall time.
//!
//! Run: `cargo bench --bench watch` (needs root for fanotify; inotify
//! alone otherwise). `WATCH_BENCH_IDLE_S` changes the idle period,
//! `WATCH_BENCH_EVENTS=fanotify` runs one source only.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::node::{LocalNode, Running, num};

fn bench_node() -> LocalNode {
    let n = LocalNode::new("");
    n.cfg.write("serv1/Fbench", "/bench/\n");
    fs::create_dir_all(n.p("bench")).unwrap();
    n
}

fn start(n: &LocalNode, events: &str) -> Running {
    let w = n.watch(&["Fbench", "--events", events]);
    w.expect(0, Duration::from_secs(600), "start-up scan");
    w
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(events: &str) {
    let n = bench_node();
    fs::create_dir_all(n.p("bench/lat")).unwrap();
    let w = start(&n, events);
    w.settle(Duration::from_millis(500), Duration::from_secs(60));
    let mut lat = Vec::with_capacity(1000);
    let mut generation = 0u64;
    for i in 0..1000 {
        let from = w.len();
        fs::write(n.p(&format!("bench/lat/{i:04}")), [b'x'; 100]).unwrap();
        let closed = Instant::now();
        let (_, line, at) = w
            .wait_line(from, Duration::from_secs(30), |l| {
                l.contains(" committed ") && num(l, "generation") > generation
            })
            .unwrap_or_else(|| panic!("no commit for file {i}:\n{}", w.log().join("\n")));
        generation = num(&line, "generation");
        lat.push(at.saturating_duration_since(closed).as_secs_f64() * 1000.0);
    }
    let (_, _) = w.stop();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "watch latency ({events}): close() -> commit over {} files: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

fn storm(events: &str) {
    let n = bench_node();
    let w = start(&n, events);
    w.settle(Duration::from_millis(500), Duration::from_secs(60));
    let from = w.len();
    let t0 = Instant::now();
    for d in 0..100 {
        fs::create_dir_all(n.p(&format!("bench/storm/{d:02}"))).unwrap();
        for f in 0..100 {
            fs::write(n.p(&format!("bench/storm/{d:02}/{f:02}")), [b's'; 200]).unwrap();
        }
    }
    let created = t0.elapsed();
    // 10,000 files, 100 directories and `storm` itself.
    let want = 10_101;
    let mut seen = from;
    let mut new = 0;
    let done = loop {
        let (i, line, at) = w
            .wait_line(seen, Duration::from_secs(120), |l| l.contains(" committed "))
            .unwrap_or_else(|| panic!("storm did not converge ({new} new):\n{}", w.log().join("\n")));
        seen = i + 1;
        new += num(&line, "new");
        if new >= want {
            break at;
        }
    };
    let rescans = w.log()[from..]
        .iter()
        .filter(|l| l.contains("re-scanning whole roots"))
        .count();
    let commits = w.log()[from..].iter().filter(|l| l.contains(" committed ")).count();
    let (_, _) = w.stop();
    println!(
        "watch storm ({events}): 10,000 files created in {:.2} s; all committed {:.2} s after the first \
         ({commits} generations, {rescans} root re-scans)",
        created.as_secs_f64(),
        done.saturating_duration_since(t0).as_secs_f64()
    );
}

/// CPU seconds (user + system, all threads) of a process.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Writes 4 KiB blocks and creates files outside the set until `stop`:
/// a busy neighbour on the same filesystem.
fn neighbour(dir: std::path::PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    fs::create_dir_all(&dir).unwrap();
    let mut writes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut f = fs::File::create(dir.join(format!("n{}", writes % 100))).unwrap();
        for _ in 0..256 {
            f.write_all(&[b'n'; 4096]).unwrap();
            writes += 1;
        }
        // Not a busy loop of one core: about 25,000 writes a second.
        std::thread::sleep(Duration::from_millis(10));
    }
    writes
}

fn idle(events: &str, seconds: u64) {
    let n = bench_node();
    for d in 0..500 {
        let dir = n.p(&format!("bench/tree/{:02}/{d:03}", d / 50));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("{f:02}")), [b'i'; 1024]).unwrap();
        }
    }
    let t = Instant::now();
    let w = start(&n, events);
    let started = t.elapsed();
    w.settle(Duration::from_secs(2), Duration::from_secs(300));
    let c0 = cpu_seconds(w.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds(w.pid()) - c0;
    let wall = t0.elapsed().as_secs_f64();
    // The same with a busy neighbour elsewhere on the filesystem.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, s2) = (n.cfg.tmp.path().join("neighbour"), stop.clone());
    let busy = std::thread::spawn(move || neighbour(dir, s2));
    let c1 = cpu_seconds(w.pid());
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let busy_cpu = cpu_seconds(w.pid()) - c1;
    let busy_wall = t1.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = busy.join().unwrap();
    let rss = fs::read_to_string(format!("/proc/{}/status", w.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_default();
    let (_, log) = w.stop();
    let startup = log
        .iter()
        .find(|l| l.contains("start-up scan"))
        .cloned()
        .unwrap_or_default();
    println!(
        "watch idle ({events}): 50,000 files, 500 directories: {:.3}% of a core over {wall:.0} s \
         ({cpu:.3} s CPU); RSS {rss} KiB; start-up (first run, empty index) {:.1} s: {}",
        cpu / wall * 100.0,
        started.as_secs_f64(),
        startup.split("INFO ").nth(1).unwrap_or(&startup)
    );
    println!(
        "watch idle ({events}) with a neighbour writing {:.0} blocks/s outside the set: {:.3}% of a core \
         ({busy_cpu:.3} s CPU over {busy_wall:.0} s)",
        writes as f64 / busy_wall,
        busy_cpu / busy_wall * 100.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let all = if root { "inotify,fanotify" } else { "inotify" };
    let sources = std::env::var("WATCH_BENCH_EVENTS").unwrap_or_else(|_| all.to_string());
    let sources: Vec<&str> = sources.split(',').collect();
    let idle_s = std::env::var("WATCH_BENCH_IDLE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("?")
            .trim()
    );
    for events in &sources {
        latency(events);
        storm(events);
        idle(events, idle_s);
    }
}
