//! Benchmark: an idle node's memory (RSS) and its start-to-listening time, next to a bare
//! libp2p swarm with the same transports (TCP + Noise + Yamux) measured in the same run.
//!
//! ```sh
//! cargo bench -p vouchnet-node --bench idle
//! ```
//!
//! Each subject runs as its own process, started `RUNS` times:
//! - **vouchnet**: the real binary, `vouchnet run --listen /ip4/127.0.0.1/tcp/0 --no-mdns`
//!   on an initialised data directory (so key generation is not counted). It opens its
//!   database, builds the swarm and starts the control API.
//! - **bare swarm**: this benchmark re-executed as a child that builds a swarm with the same
//!   transports and only the ping behaviour.
//!
//! Start-to-listening is from `spawn` to the line announcing the first listen address;
//! RSS is read from `/proc/<pid>/status` after the process has been idle for `IDLE`.
//! Linux only (it reads /proc).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const IDLE: Duration = Duration::from_secs(2);
const CHILD_ENV: &str = "VOUCHNET_BENCH_BARE_SWARM";
const LISTENING: &str = "listening on";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        bare_swarm_child();
        return;
    }
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("idle benchmark skipped: it reads /proc (Linux only)");
        return;
    }
    let vouchnet = env!("CARGO_BIN_EXE_vouchnet");
    let mut node = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..RUNS {
        // Alternate the subjects so drift in machine load hits both alike.
        let tmp = tempfile::tempdir().expect("temporary directory");
        let init = Command::new(vouchnet)
            .arg("--data-dir")
            .arg(tmp.path())
            .args(["init", "--name", "bench"])
            .stdout(Stdio::null())
            .status()
            .expect("vouchnet init");
        assert!(init.success());
        let mut cmd = Command::new(vouchnet);
        cmd.arg("--data-dir")
            .arg(tmp.path())
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env("RUST_LOG", "info");
        node.push(measure(cmd));

        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.env(CHILD_ENV, "1");
        bare.push(measure(cmd));
    }
    report("vouchnet run", &node);
    report("bare libp2p swarm", &bare);
    let (n, b) = (median_ms(&node), median_ms(&bare));
    let (nr, br) = (median_rss(&node), median_rss(&bare));
    println!(
        "\nvouchnet vs bare swarm: start-to-listening {:+.1} ms ({:.2}x), idle RSS {:+.1} MiB ({:.2}x)",
        n - b,
        n / b,
        (nr - br) as f64 / 1024.0,
        nr as f64 / br as f64
    );
}

struct Sample {
    start_to_listening: Duration,
    rss_kib: u64,
}

/// Starts `cmd`, times it to its "listening on" line, waits `IDLE`, reads its RSS, stops it.
fn measure(mut cmd: Command) -> Sample {
    let started = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("subject starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let start_to_listening = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(LISTENING) => break started.elapsed(),
            Some(Ok(_)) => continue,
            _ => panic!("subject exited before listening"),
        }
    };
    // Keep draining stderr so the subject never blocks on a full pipe.
    let drain = std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(IDLE);
    let rss_kib = rss_kib(child.id()).expect("VmRSS in /proc");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = drain.join();
    Sample {
        start_to_listening,
        rss_kib,
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median_ms(s: &[Sample]) -> f64 {
    let mut v: Vec<f64> = s
        .iter()
        .map(|x| x.start_to_listening.as_secs_f64() * 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_rss(s: &[Sample]) -> u64 {
    let mut v: Vec<u64> = s.iter().map(|x| x.rss_kib).collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn report(name: &str, s: &[Sample]) {
    let times: Vec<String> = s
        .iter()
        .map(|x| format!("{:.1}", x.start_to_listening.as_secs_f64() * 1000.0))
        .collect();
    let rss: Vec<String> = s
        .iter()
        .map(|x| format!("{:.1}", x.rss_kib as f64 / 1024.0))
        .collect();
    println!(
        "{name:<20} start-to-listening median {:>7.1} ms [{}]   idle RSS median {:>6.1} MiB [{}]",
        median_ms(s),
        times.join(", "),
        median_rss(s) as f64 / 1024.0,
        rss.join(", ")
    );
}

/// The baseline: the same transports, ping only, nothing else (no database, no API).
fn bare_swarm_child() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(|_| libp2p::ping::Behaviour::new(libp2p::ping::Config::new()))
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .expect("listen");
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                eprintln!("{LISTENING} {address}");
            }
        }
    });
}
