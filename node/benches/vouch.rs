//! Benchmark: what a vouch costs on real swarms, next to the bare request-response traffic it
//! rides on, measured side by side in one run on the same connections.
//!
//! ```sh
//! cargo bench -p vouchnet-node --bench vouch
//! ```
//!
//! A voucher paired directly with 100 targets (auto-accept on), and a fresh vouchee per
//! measured vouch (a vouch for a device the target already trusts would be answered from its
//! idempotency record, which is not the path to measure). All devices share this machine's
//! two cores and one disk, and everything is measured twice, in two layouts:
//!
//! - **threads**: every device in the bench's process, each on a thread of its own with its
//!   own runtime. sled 0.34 guards every database of a process with one process-wide lock
//!   (`concurrency_control`: once any transaction has run, every read takes it shared and
//!   every transaction exclusively), so here the 100 targets' stores also wait on each
//!   other, which devices on machines of their own never do.
//! - **processes**: the voucher in the bench's process; every other device in a process of
//!   its own (this binary, started again in device mode and driven over its stdin). No lock
//!   is shared, but every wake-up of a device is a switch between processes, which costs
//!   the bare traffic as much as the vouch.
//!
//! Neither is 100 machines; the two together show how much of each figure is the layout.
//!
//! - **echo**: a `Ping` from the voucher to one target (`client.ping`, what `vouchnet ping`
//!   sends), timed from the command until the target's `Ack` comes back: one
//!   request-response round trip through both event loops, on the connection the vouch
//!   uses, with no disk write and no cryptography beyond the transport's. (A sealed text
//!   is not bare any more: its receiver stores it before the `Ack`.)
//! - **echo, set up as each vouch to 1**: one echo per round, measured like the vouch to 1
//!   of that round: right after a fresh device paired with the voucher. The 200 echoes
//!   above run back to back, with every thread they touch already awake; a vouch never
//!   starts that way, so this is the like-for-like baseline, reported beside the other.
//! - **the vouch's own durable writes**: the time the voucher's and the target's stores spent
//!   in write transactions (transaction and flush) during each vouch to one target, read from
//!   their counters. The critical path has three: the voucher stores the session before it
//!   sends, the target stores its decision before it answers, the voucher stores the answer
//!   before it reports it.
//! - **small durable write**: a 16-byte write plus flush on a separate store, the unit of
//!   durability on this disk.
//! - **vouch to 1**: `vouch` until the voucher records the target's signed acceptance.
//! - **fan-out to N**: N `Ping`s sent at once to N targets, until every `Ack` is back.
//! - **vouch to N**: one vouch to N targets until the session is Completed.
//! - **100 devices' writes at once**: one small durable write on a separate store of each of
//!   the 100 targets at the same time. Every device shares one disk here, so the 100
//!   decisions the targets must each store before answering cannot overlap as they would on
//!   100 machines; this is that floor, measured.
//! - **the voucher's writes per vouch to 100**: how many durable writes the voucher's store
//!   made during each vouch to 100 targets. Answers that arrive together share one write
//!   (group commit), so this stays far below one per target.
//! - **CPU time**: of every device, read when a vouch or fan-out to 100 begins and ends,
//!   and around the 100 devices' writes at once.
//! - **the signatures a vouch needs**: one Ed25519 signature and one `verify_strict` of a
//!   certificate-sized body, twice (the voucher signs the vouch and the target checks it;
//!   the target signs its answer and the voucher checks it), measured in the same run.
//! - **where a vouch to 1 spends its time** (thread layout): every device marks the steps of
//!   a vouch's critical path as trace events (`vouchnet_node::proxy::path`); a tracing layer
//!   in this process catches them, and each vouch to 1 is cut into segments of three kinds
//!   (`support/path_split.rs`): its durable writes, its two network legs, and the work in
//!   between (checks, signatures, store reads, events). The goal leaves
//!   `1.2 × (echo + writes) − writes − network` for that work; the report shows it beside
//!   the work measured.
//! - **floors**: what the goals leave room for, from the figures above.
//!   - vouch to 1: echo + its writes + the signatures it needs, which no overhead can avoid;
//!     and, from the split, its own writes + its own network legs + those signatures.
//!   - vouch to 100: every target must answer with a signature check, a durable write and a
//!     signature, and the voucher must check 100 answers, beside the traffic of a fan-out.
//!     The CPU that costs (fan-out CPU + 100 × the signatures + the CPU of 100 writes at
//!     once), spread perfectly over the machine's cores, is a floor on the vouch's wall time
//!     here; on 100 machines the targets' share would run in parallel.
//!
//! Goals (issue 5): vouch to 1 ≤ 1.2 × (echo + its durable writes); vouch to 100 ≤ 1.5 ×
//! fan-out to 100. Medians are reported; ratios are what matter on a shared machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::{start, DataDir, NodeConfig, NodeOptions, RunningNode};
use vouchnet_protocol::{DeviceId, SessionId, Timestamp, VouchNonce};
use vouchnet_storage::Store;

#[path = "support/path_split.rs"]
mod path_split;
use path_split::{Kind, Split, SEGMENTS};

const TARGETS: usize = 100;
const ECHO_RUNS: usize = 200;
const VOUCH_RUNS: usize = 15;
const FANOUT_RUNS: usize = 15;
const STEP: Duration = Duration::from_secs(60);

/// Signatures measured for the floor (each a sign and a `verify_strict`).
const SIGNATURE_RUNS: usize = 400;

/// Set (to the device's name) when this binary runs as one device process.
const DEVICE_ENV: &str = "VOUCHNET_BENCH_DEVICE";
/// The directory under which a device process keeps its data.
const ROOT_ENV: &str = "VOUCHNET_BENCH_ROOT";

/// Where the devices other than the voucher run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// In the bench's process, a thread each.
    Threads,
    /// A process each.
    Processes,
}

/// A node on a thread of its own with its own runtime, as on a machine of its own: a node
/// waiting on its disk or busy verifying holds up no other node's tasks.
struct ThreadNode {
    node: RunningNode,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl std::ops::Deref for ThreadNode {
    type Target = RunningNode;
    fn deref(&self) -> &RunningNode {
        &self.node
    }
}

impl ThreadNode {
    async fn start(root: &Path, name: &str) -> ThreadNode {
        let (root, name) = (root.to_path_buf(), name.to_owned());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let node = start_node(&root, &name).await;
                    let (stop, stopped) = tokio::sync::oneshot::channel();
                    let _ = started_tx.send(ThreadNode { node, stop });
                    let _ = stopped.await;
                });
            })
            .expect("node thread");
        started_rx.await.expect("node started")
    }

    async fn shutdown(self) {
        self.node.shutdown().await;
        let _ = self.stop.send(());
    }
}

/// A device other than the voucher, in either layout.
struct Device {
    device_id: DeviceId,
    name: String,
    runs: Runs,
}

enum Runs {
    /// In this process, with a store of its own for the floor's writes.
    OnThread { node: ThreadNode, floor: Store },
    /// In a process of its own, driven by one-line commands (see [`device_process`]).
    InProcess {
        child: Child,
        stdin: ChildStdin,
        stdout: Lines<BufReader<ChildStdout>>,
    },
}

/// What a device reports of itself.
#[derive(Clone, Copy, Default)]
struct DeviceMetrics {
    writes: u64,
    write_time: Duration,
    /// The device process's CPU time (zero for a device on a thread, whose CPU time is the
    /// bench process's).
    cpu: Duration,
}

impl Device {
    async fn start(layout: Layout, root: &Path, name: &str) -> Device {
        match layout {
            Layout::Threads => {
                let node = ThreadNode::start(root, name).await;
                let floor = Store::open(root.join(format!("{name}-floor"))).expect("store");
                Device {
                    device_id: node.device_id,
                    name: name.to_owned(),
                    runs: Runs::OnThread { node, floor },
                }
            }
            Layout::Processes => Self::spawn(root, name).await,
        }
    }

    async fn spawn(root: &Path, name: &str) -> Device {
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("bench path"))
            .env(DEVICE_ENV, name)
            .env(ROOT_ENV, root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("device process");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = next_line(&mut stdout, name).await;
        let device_id = ready
            .strip_prefix("ready ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{name}: unexpected first line {ready:?}"));
        Device {
            device_id,
            name: name.to_owned(),
            runs: Runs::InProcess {
                child,
                stdin,
                stdout,
            },
        }
    }

    /// Sends a command to a device process (nothing for a device on a thread).
    async fn send(&mut self, command: &str) {
        if let Runs::InProcess { stdin, .. } = &mut self.runs {
            stdin
                .write_all(format!("{command}\n").as_bytes())
                .await
                .expect("command to a device");
            stdin.flush().await.expect("command to a device");
        }
    }

    async fn reply(&mut self) -> String {
        match &mut self.runs {
            Runs::InProcess { stdout, .. } => next_line(stdout, &self.name).await,
            Runs::OnThread { .. } => unreachable!("a device on a thread takes no commands"),
        }
    }

    /// Pairs this device with the voucher; each side confirms the code it shows.
    async fn pair(&mut self, voucher: &RunningNode) {
        let addr = voucher.dial_addr().expect("voucher listens");
        let me = self.device_id;
        let voucher_side = async move {
            let shown = code(voucher, me).await;
            voucher
                .client
                .pair_accept(me, Some(shown))
                .await
                .expect("accept");
        };
        match &self.runs {
            Runs::OnThread { node, .. } => {
                tokio::join!(pair_with(node, voucher.device_id, addr), voucher_side);
            }
            Runs::InProcess { .. } => {
                let command = format!("pair {} {addr}", voucher.device_id);
                self.send(&command).await;
                voucher_side.await;
                assert_eq!(self.reply().await, "paired", "{}", self.name);
            }
        }
        wait_online(voucher, self.device_id).await;
    }

    async fn metrics(&mut self) -> DeviceMetrics {
        match &self.runs {
            Runs::OnThread { node, .. } => {
                let m = node.store_metrics();
                DeviceMetrics {
                    writes: m.writes,
                    write_time: Duration::from_nanos(m.write_nanos),
                    cpu: Duration::ZERO,
                }
            }
            Runs::InProcess { .. } => {
                self.send("metrics").await;
                parse_metrics(&self.reply().await)
            }
        }
    }

    async fn shutdown(self) {
        match self.runs {
            Runs::OnThread { node, .. } => node.shutdown().await,
            Runs::InProcess {
                mut child, stdin, ..
            } => {
                drop(stdin);
                let status = tokio::time::timeout(STEP, child.wait())
                    .await
                    .expect("a device process exits")
                    .expect("a device process's status");
                assert!(status.success(), "{}: {status}", self.name);
            }
        }
    }
}

/// The device's side of a direct pairing with `peer`: ask, confirm the code shown, and wait
/// until the peer is online.
async fn pair_with(node: &RunningNode, peer: DeviceId, addr: libp2p::Multiaddr) {
    node.client
        .pair_request(peer, Some(addr))
        .await
        .expect("pair request");
    let shown = code(node, peer).await;
    node.client
        .pair_accept(peer, Some(shown))
        .await
        .expect("accept");
    wait_online(node, peer).await;
}

/// CPU time used so far by the bench's process (the voucher, and every device on a thread)
/// and by every device process among `targets` and `vouchee`. The processes are asked all
/// at once, so the readings are close in time.
async fn cpu_of_all(targets: &mut [Device], vouchee: Option<&mut Device>) -> Duration {
    let mut devices: Vec<&mut Device> = targets.iter_mut().collect();
    devices.extend(vouchee);
    let own = cpu_time::ProcessTime::now().as_duration();
    for d in devices.iter_mut() {
        d.send("metrics").await;
    }
    let mut total = own;
    for d in devices.iter_mut() {
        if let Runs::InProcess { .. } = d.runs {
            total += parse_metrics(&d.reply().await).cpu;
        }
    }
    total
}

/// One small durable write on a separate store of each of `devices` at once, until the last
/// is on disk.
async fn writes_at_once(devices: &mut [Device], round: usize) -> Duration {
    let started = Instant::now();
    let floors: Vec<&Store> = devices
        .iter()
        .filter_map(|d| match &d.runs {
            Runs::OnThread { floor, .. } => Some(floor),
            Runs::InProcess { .. } => None,
        })
        .collect();
    std::thread::scope(|scope| {
        for (i, floor) in floors.iter().enumerate() {
            scope.spawn(move || durable_write(floor, ((round as u64) << 32) | i as u64));
        }
    });
    for d in devices.iter_mut() {
        d.send(&format!("write {round}")).await;
    }
    for d in devices.iter_mut() {
        if let Runs::InProcess { .. } = d.runs {
            assert_eq!(d.reply().await, "written", "{}", d.name);
        }
    }
    started.elapsed()
}

/// Device mode: one node in this process, answering the bench's commands on stdin, one line
/// each, until stdin closes.
///
/// - `pair <DEVICE_ID> <ADDR>`: asks that device to pair, confirms the code shown, answers
///   `paired` once the other is online;
/// - `metrics`: answers `metrics <writes> <write nanoseconds> <process CPU nanoseconds>`;
/// - `write <N>`: one small durable write on a store of its own, answers `written`.
fn device_process(name: String) {
    let root = PathBuf::from(std::env::var_os(ROOT_ENV).expect("device root"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let node = start_node(&root, &name).await;
        let floor = Store::open(root.join(format!("{name}-floor"))).expect("store");
        let mut out = tokio::io::stdout();
        let mut say = async |line: String| {
            out.write_all(format!("{line}\n").as_bytes())
                .await
                .expect("stdout");
            out.flush().await.expect("stdout");
        };
        say(format!("ready {}", node.device_id)).await;
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.expect("stdin") {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["pair", id, addr] => {
                    let id: DeviceId = id.parse().expect("device id");
                    pair_with(&node, id, addr.parse().expect("address")).await;
                    say("paired".to_owned()).await;
                }
                ["metrics"] => {
                    let m = node.store_metrics();
                    let cpu = cpu_time::ProcessTime::now().as_duration().as_nanos();
                    say(format!("metrics {} {} {cpu}", m.writes, m.write_nanos)).await;
                }
                ["write", round] => {
                    durable_write(&floor, round.parse().expect("round"));
                    say("written".to_owned()).await;
                }
                _ => panic!("{name}: unknown command {line:?}"),
            }
        }
        node.shutdown().await;
    });
}

async fn wait_online(node: &RunningNode, peer: DeviceId) {
    let peer = peer.to_string();
    until("online", || async {
        node.client
            .devices()
            .await
            .ok()?
            .iter()
            .any(|d| d.device_id == peer && d.online)
            .then_some(())
    })
    .await;
}

async fn start_node(root: &std::path::Path, name: &str) -> RunningNode {
    let config = NodeConfig {
        name: name.to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        auto_accept_vouched: true,
        max_pending_prompts: 1024,
        max_incoming_connections: 1024,
        // The benchmark measures cost, not the per-peer limits a LAN node keeps.
        frames_per_second: 1_000_000,
        frame_burst: 1_000_000,
        ..NodeConfig::default()
    };
    start(NodeOptions {
        data_dir: DataDir::at(root.join(name)),
        config,
    })
    .await
    .expect("node starts")
}

async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn code(node: &RunningNode, peer: DeviceId) -> String {
    let peer = peer.to_string();
    until("a code", || async {
        node.client
            .pair_requests()
            .await
            .ok()?
            .into_iter()
            .find(|p| p.device_id == peer)?
            .code
    })
    .await
}

/// One Ed25519 signature and one `verify_strict` over a body the size of a vouch
/// certificate, under a domain tag, as the vouch and its answer each need: the median.
fn signature_pair() -> Duration {
    use rand_core::OsRng;
    use vouchnet_protocol::signing::{sign_bytes, verify_bytes};
    let key = vouchnet_protocol::DeviceKeypair::generate(&mut OsRng);
    let public = key.public();
    let body = [0x5au8; 260];
    let mut times = Vec::with_capacity(SIGNATURE_RUNS);
    for _ in 0..SIGNATURE_RUNS {
        let started = Instant::now();
        let signature = sign_bytes(&key, "vouchnet/bench/v1", &body);
        verify_bytes(&public, "vouchnet/bench/v1", &body, &signature).expect("verifies");
        times.push(started.elapsed());
    }
    median(times)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Vouches for `vouchee` to `targets` and waits, on the voucher's event stream as a UI
/// would, for the session to be Completed; every target must have accepted. Returns when
/// it started, and how long it took.
async fn vouch(
    voucher: &RunningNode,
    vouchee: DeviceId,
    targets: &[DeviceId],
) -> (Instant, Duration) {
    let mut events = voucher.client.events().subscribe(None);
    let started = Instant::now();
    let outcome = voucher
        .client
        .vouch(vouchee, targets.to_vec(), false)
        .await
        .expect("vouch");
    loop {
        let event = tokio::time::timeout(STEP, events.live.recv())
            .await
            .expect("an event before the deadline");
        let view = match event {
            Ok(envelope) => match &envelope.event {
                NodeEvent::ResourceChanged {
                    resource: ResourceKind::VouchingSession,
                    id,
                    data,
                } if *id == outcome.session_id => data.clone(),
                _ => continue,
            },
            // Fell behind the stream: read the session instead.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let sid = SessionId::from_hex(&outcome.session_id).expect("session id");
                let s = voucher.client.session(sid).await.expect("session");
                serde_json::to_value(vouchnet_node::sessions::view(&s)).expect("view")
            }
            Err(e) => panic!("event stream closed: {e}"),
        };
        if view["state"] == "completed" {
            let elapsed = started.elapsed();
            let accepted = view["vouches"]
                .as_array()
                .expect("vouches")
                .iter()
                .filter(|v| v["status"] == "accepted")
                .count();
            assert_eq!(accepted, targets.len(), "every target accepts");
            return (started, elapsed);
        }
    }
}

async fn fan_out(voucher: &RunningNode, targets: &[DeviceId]) -> Duration {
    let started = Instant::now();
    let pings = targets.iter().map(|t| voucher.client.ping(*t));
    for r in futures::future::join_all(pings).await {
        r.expect("ping acknowledged");
    }
    started.elapsed()
}

fn durable_write(store: &vouchnet_storage::Store, i: u64) -> Duration {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&i.to_be_bytes());
    let started = Instant::now();
    store
        .remember_nonce(&VouchNonce(nonce), Timestamp::from_secs(4_000_000_000))
        .expect("write");
    store.flush().expect("flush");
    started.elapsed()
}

async fn next_line(stdout: &mut Lines<BufReader<ChildStdout>>, name: &str) -> String {
    tokio::time::timeout(STEP, stdout.next_line())
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer before the deadline"))
        .expect("a device's stdout")
        .unwrap_or_else(|| panic!("{name}: the device process ended"))
}

fn parse_metrics(line: &str) -> DeviceMetrics {
    let numbers: Vec<u64> = line
        .strip_prefix("metrics ")
        .map(|rest| rest.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let [writes, write_nanos, cpu_nanos] = numbers[..] else {
        panic!("unexpected metrics line {line:?}");
    };
    DeviceMetrics {
        writes,
        write_time: Duration::from_nanos(write_nanos),
        cpu: Duration::from_nanos(cpu_nanos),
    }
}

/// The medians of one layout's run.
struct Figures {
    layout: Layout,
    echo: Duration,
    echo_fresh: Duration,
    write: Duration,
    own_writes: Duration,
    own_write_counts: (u64, u64),
    vouch1: Duration,
    fan10: Duration,
    vouch10: Duration,
    fan100: Duration,
    floor100: Duration,
    vouch100: Duration,
    vouch100_cpu: Duration,
    fan100_cpu: Duration,
    /// CPU time of all devices during the 100 writes at once.
    floor100_cpu: Duration,
    /// One signature and one signature check.
    signature_pair: Duration,
    /// Median, least and most.
    voucher_writes100: (u64, u64, u64),
    /// Where a vouch to 1 spends its time (thread layout only).
    split: Option<SplitMedians>,
}

/// The medians of the vouches to 1 cut into segments: of each segment, and of each
/// vouch's total per kind.
struct SplitMedians {
    segments: [Duration; SEGMENTS.len()],
    writes: Duration,
    network: Duration,
    work: Duration,
}

impl SplitMedians {
    fn of(splits: &[Split]) -> Option<SplitMedians> {
        if splits.is_empty() {
            return None;
        }
        let by = |f: &dyn Fn(&Split) -> Duration| median(splits.iter().map(f).collect());
        Some(SplitMedians {
            segments: std::array::from_fn(|i| by(&|s: &Split| s.segments[i])),
            writes: by(&|s: &Split| s.total(Kind::Write)),
            network: by(&|s: &Split| s.total(Kind::Network)),
            work: by(&|s: &Split| s.total(Kind::Work)),
        })
    }

    /// What the goal leaves for the work: 1.2 × (`echo` + writes) − writes − network.
    fn room_for_work(&self, echo: Duration) -> Option<Duration> {
        ((echo + self.writes).mul_f64(1.2)).checked_sub(self.writes + self.network)
    }
}

async fn measure(layout: Layout, root: &Path) -> Figures {
    let voucher = ThreadNode::start(root, "voucher").await;
    let mut targets = Vec::new();
    for i in 0..TARGETS {
        let mut t = Device::start(layout, root, &format!("target{i}")).await;
        t.pair(&voucher).await;
        targets.push(t);
    }
    let ids: Vec<DeviceId> = targets.iter().map(|t| t.device_id).collect();

    let store = Store::open(root.join("bench-store")).expect("store");
    let mut echo = Vec::new();
    let mut writes = Vec::new();
    for i in 0..ECHO_RUNS {
        echo.push(fan_out(&voucher, &ids[..1]).await);
        writes.push(durable_write(&store, i as u64));
    }

    let mut at_once = Vec::new();
    let mut vouch1_writes = Vec::new();
    let mut vouch1_write_count = Vec::new();
    let mut vouch1 = Vec::new();
    let mut vouch10 = Vec::new();
    let mut vouch100 = Vec::new();
    let mut fan10 = Vec::new();
    let mut fan100 = Vec::new();
    // CPU time of every device during each vouch to 100 and fan-out to 100.
    let (mut vouch100_cpu, mut fan100_cpu) = (Vec::new(), Vec::new());
    let mut floor100_cpu = Vec::new();
    // The voucher's own durable writes during each vouch to 100 (group commit: far fewer
    // than one per target).
    let mut vouch100_voucher_writes = Vec::new();
    let mut echo_fresh = Vec::new();
    // Each vouch to 1 cut into its path's segments (thread layout only).
    let mut splits = Vec::new();
    let mut next = 0;
    for round in 0..VOUCH_RUNS.max(FANOUT_RUNS) {
        // Interleave the subjects so drift in machine load hits them alike.
        for (n, out, fan) in [
            (1usize, &mut vouch1, None),
            (10, &mut vouch10, Some(&mut fan10)),
            (TARGETS, &mut vouch100, Some(&mut fan100)),
        ] {
            if round < VOUCH_RUNS && n == 1 {
                // An echo measured in the state each vouch to 1 starts from: just after a
                // fresh device paired with the voucher (the back-to-back echoes above keep
                // every thread busy, which a vouch never finds).
                let mut fresh = Device::start(layout, root, &format!("vouchee{next}")).await;
                next += 1;
                fresh.pair(&voucher).await;
                echo_fresh.push(fan_out(&voucher, &ids[..1]).await);
                fresh.shutdown().await;
            }
            if round < VOUCH_RUNS {
                let mut vouchee = Device::start(layout, root, &format!("vouchee{next}")).await;
                next += 1;
                vouchee.pair(&voucher).await;
                let voucher_before = voucher.store_metrics();
                let target_before = targets[0].metrics().await;
                let cpu_before = if n == TARGETS {
                    cpu_of_all(&mut targets, Some(&mut vouchee)).await
                } else {
                    Duration::ZERO
                };
                path_split::take();
                let (started, took) = vouch(&voucher, vouchee.device_id, &ids[..n]).await;
                out.push(took);
                if n == 1 {
                    splits.extend(Split::of(&path_split::take(), started, started + took));
                }
                if n == TARGETS {
                    let cpu = cpu_of_all(&mut targets, Some(&mut vouchee)).await;
                    vouch100_cpu.push(cpu - cpu_before);
                    vouch100_voucher_writes
                        .push(voucher.store_metrics().writes - voucher_before.writes);
                }
                if n == 1 {
                    let voucher_after = voucher.store_metrics();
                    let target_after = targets[0].metrics().await;
                    vouch1_writes.push(
                        Duration::from_nanos(
                            voucher_after.write_nanos - voucher_before.write_nanos,
                        ) + (target_after.write_time - target_before.write_time),
                    );
                    vouch1_write_count.push(
                        voucher_after.writes - voucher_before.writes + target_after.writes
                            - target_before.writes,
                    );
                }
                vouchee.shutdown().await;
            }
            if let Some(fan) = fan {
                if round < FANOUT_RUNS {
                    let cpu_before = if n == TARGETS {
                        cpu_of_all(&mut targets, None).await
                    } else {
                        Duration::ZERO
                    };
                    fan.push(fan_out(&voucher, &ids[..n]).await);
                    if n == TARGETS {
                        let cpu_after = cpu_of_all(&mut targets, None).await;
                        fan100_cpu.push(cpu_after - cpu_before);
                        at_once.push(writes_at_once(&mut targets, round).await);
                        floor100_cpu.push(cpu_of_all(&mut targets, None).await - cpu_after);
                    }
                }
            }
        }
    }
    for t in targets {
        t.shutdown().await;
    }
    voucher.shutdown().await;

    vouch1_write_count.sort_unstable();
    vouch100_voucher_writes.sort_unstable();
    Figures {
        layout,
        echo: median(echo),
        echo_fresh: median(echo_fresh),
        write: median(writes),
        own_writes: median(vouch1_writes),
        own_write_counts: (
            vouch1_write_count[0],
            vouch1_write_count[vouch1_write_count.len() - 1],
        ),
        vouch1: median(vouch1),
        split: SplitMedians::of(&splits),
        fan10: median(fan10),
        vouch10: median(vouch10),
        fan100: median(fan100),
        floor100: median(at_once),
        vouch100: median(vouch100),
        vouch100_cpu: median(vouch100_cpu),
        fan100_cpu: median(fan100_cpu),
        floor100_cpu: median(floor100_cpu),
        signature_pair: signature_pair(),
        voucher_writes100: (
            vouch100_voucher_writes[vouch100_voucher_writes.len() / 2],
            vouch100_voucher_writes[0],
            vouch100_voucher_writes[vouch100_voucher_writes.len() - 1],
        ),
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Prints both layouts side by side: medians, then the ratios.
fn report(runs: &[Figures]) {
    println!(
        "\nmedians ({ECHO_RUNS} echoes and small writes, {VOUCH_RUNS} vouches per size, \
         {FANOUT_RUNS} fan-outs per size); devices as:"
    );
    let row = |label: &str, f: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = runs.iter().map(|r| format!("{:>14}", f(r))).collect();
        println!("  {label:<46}{}", cells.join(""));
    };
    row("", &|r| format!("{:?}", r.layout).to_lowercase());
    let time = |label: &str, f: fn(&Figures) -> Duration| {
        row(label, &|r| format!("{:.3} ms", ms(f(r))));
    };
    time("echo (ping, one round trip)", |r| r.echo);
    time("echo, set up as each vouch to 1", |r| r.echo_fresh);
    time("small durable write (16 B + flush)", |r| r.write);
    time("the vouch's own durable writes", |r| r.own_writes);
    row("  (writes per vouch to 1, least..most)", &|r| {
        format!("{}..{}", r.own_write_counts.0, r.own_write_counts.1)
    });
    time("vouch to 1 target", |r| r.vouch1);
    time("fan-out to 10 targets", |r| r.fan10);
    time("vouch to 10 targets", |r| r.vouch10);
    time(&format!("fan-out to {TARGETS} targets"), |r| r.fan100);
    time(&format!("{TARGETS} devices' durable writes at once"), |r| {
        r.floor100
    });
    time(&format!("vouch to {TARGETS} targets"), |r| r.vouch100);
    time(
        &format!("CPU time, all devices: fan-out to {TARGETS}"),
        |r| r.fan100_cpu,
    );
    time(&format!("CPU time, all devices: vouch to {TARGETS}"), |r| {
        r.vouch100_cpu
    });
    time(
        &format!("CPU time, all devices: {TARGETS} writes at once"),
        |r| r.floor100_cpu,
    );
    time("one signature + one verify_strict", |r| r.signature_pair);
    row(
        &format!("voucher's durable writes per vouch to {TARGETS}"),
        &|r| {
            let (m, lo, hi) = r.voucher_writes100;
            format!("{m} ({lo}..{hi})")
        },
    );
    println!("\nratios:");
    let ratio_row = |label: &str, f: fn(&Figures) -> f64| {
        row(label, &|r| format!("{:.2}", f(r)));
    };
    ratio_row("vouch to 1 / (echo + its writes), goal <= 1.20", |r| {
        ratio(r.vouch1, r.echo + r.own_writes)
    });
    ratio_row("vouch to 1 / (echo set up alike + its writes)", |r| {
        ratio(r.vouch1, r.echo_fresh + r.own_writes)
    });
    ratio_row("vouch to 1 / (echo + 3 small durable writes)", |r| {
        ratio(r.vouch1, r.echo + r.write * 3)
    });
    ratio_row(
        "floor: (echo + writes + 2 signatures) / (echo + writes)",
        |r| {
            ratio(
                r.echo + r.own_writes + r.signature_pair * 2,
                r.echo + r.own_writes,
            )
        },
    );
    ratio_row("vouch to 10 / fan-out to 10", |r| ratio(r.vouch10, r.fan10));
    ratio_row(
        &format!("vouch to {TARGETS} / fan-out to {TARGETS}, goal <= 1.50"),
        |r| ratio(r.vouch100, r.fan100),
    );
    ratio_row(
        &format!("vouch to {TARGETS} / (fan-out + writes at once)"),
        |r| ratio(r.vouch100, r.fan100 + r.floor100),
    );
    ratio_row("CPU: vouch to 100 / fan-out to 100", |r| {
        ratio(r.vouch100_cpu, r.fan100_cpu)
    });
    ratio_row(
        &format!("{TARGETS} writes at once / fan-out to {TARGETS}"),
        |r| ratio(r.floor100, r.fan100),
    );
    ratio_row(
        &format!("floor: CPU a vouch to {TARGETS} needs / cores / fan-out"),
        |r| ratio(vouch100_cpu_floor(r), r.fan100),
    );
    ratio_row(&format!("vouch to {TARGETS} / that floor"), |r| {
        ratio(r.vouch100, vouch100_cpu_floor(r))
    });
    report_split(&row);
}

/// Prints one row of the report: a label, then a cell per layout.
type Row<'a> = dyn Fn(&str, &dyn Fn(&Figures) -> String) + 'a;

/// Prints where a vouch to 1 spent its time, and how much room the goal leaves for its
/// work once its writes and its network legs are paid.
fn report_split(row: &Row) {
    println!(
        "\nwhere a vouch to 1 spends its time (medians, from the devices' path steps; only \
         devices on threads are seen):"
    );
    let split_row = |label: &str, f: &dyn Fn(&SplitMedians, &Figures) -> String| {
        row(label, &|r| {
            r.split.as_ref().map_or_else(|| "-".to_owned(), |s| f(s, r))
        });
    };
    let ms3 = |d: Duration| format!("{:.3} ms", ms(d));
    for (i, (label, _, _, _)) in SEGMENTS.iter().enumerate() {
        split_row(label, &|s, _| ms3(s.segments[i]));
    }
    split_row("all its durable writes", &|s, _| ms3(s.writes));
    split_row("all its network legs", &|s, _| ms3(s.network));
    split_row("all its work", &|s, _| ms3(s.work));
    split_row("  of which 2 signatures + 2 verify_strict", &|_, r| {
        ms3(r.signature_pair * 2)
    });
    split_row("work the goal leaves room for (echo)", &|s, r| {
        s.room_for_work(r.echo)
            .map_or_else(|| "none".to_owned(), ms3)
    });
    split_row("work the goal leaves room for (echo alike)", &|s, r| {
        s.room_for_work(r.echo_fresh)
            .map_or_else(|| "none".to_owned(), ms3)
    });
    split_row(
        "floor: (writes + network + 2 sig.) / (echo + writes)",
        &|s, r| {
            format!(
                "{:.2}",
                ratio(
                    s.writes + s.network + r.signature_pair * 2,
                    r.echo + s.writes
                )
            )
        },
    );
}

/// The least wall time a vouch to [`TARGETS`] can take on this machine: the CPU it cannot
/// do without (the fan-out's traffic, two signatures and two checks per target, and every
/// target's durable write), spread perfectly over the cores. On 100 machines the targets'
/// share would run in parallel instead.
fn vouch100_cpu_floor(r: &Figures) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let signatures = r.signature_pair * 2 * TARGETS as u32;
    (r.fan100_cpu + signatures + r.floor100_cpu) / cores
}

fn main() {
    if let Ok(name) = std::env::var(DEVICE_ENV) {
        return device_process(name);
    }
    path_split::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runs = rt.block_on(async {
        let mut runs = Vec::new();
        for layout in [Layout::Threads, Layout::Processes] {
            let tmp = tempfile::tempdir().expect("temporary directory");
            println!("{layout:?}: a voucher paired directly with {TARGETS} targets");
            runs.push(measure(layout, tmp.path()).await);
        }
        runs
    });
    report(&runs);
}
