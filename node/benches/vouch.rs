//! Benchmark: what a vouch costs on real swarms, next to the bare request-response traffic it
//! rides on, measured side by side in one run on the same connections.
//!
//! ```sh
//! cargo bench -p vouchnet-node --bench vouch
//! ```
//!
//! In one process: a voucher paired directly with 100 targets (auto-accept on), and a fresh
//! vouchee per measured vouch (a vouch for a device the target already trusts would be
//! answered from its idempotency record, which is not the path to measure). Each device runs
//! on a thread of its own with its own runtime, as it would on a machine of its own; they
//! all share this machine's two cores and one disk.
//!
//! - **echo**: a sealed text from the voucher to one target, timed until the target's `Ack`
//!   comes back: one request-response round trip on the connection the vouch uses, with no
//!   disk write.
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
//! - **fan-out to N**: N sealed texts sent at once to N targets, until every `Ack` is back.
//! - **vouch to N**: one vouch to N targets until the session is Completed.
//! - **100 devices' writes at once**: one small durable write on each of 100 separate stores
//!   at the same time. Here every device shares one disk, so the 100 decisions the targets
//!   must each store before answering cannot overlap as they would on 100 machines; this is
//!   that floor, measured.
//!
//! - **the voucher's writes per vouch to 100**: how many durable writes the voucher's store
//!   made during each vouch to 100 targets. Answers that arrive together share one write
//!   (group commit), so this stays far below one per target.
//!
//! Goals (issue 5): vouch to 1 ≤ 1.2 × (echo + its durable writes); vouch to 100 ≤ 1.5 ×
//! fan-out to 100. Medians are reported; ratios are what matter on a shared machine.

use std::time::{Duration, Instant};
use vouchnet_node::events::{NodeEvent, ResourceKind};
use vouchnet_node::{start, DataDir, NodeConfig, NodeOptions, RunningNode};
use vouchnet_protocol::{DeviceId, SessionId, Timestamp, VouchNonce};

const TARGETS: usize = 100;
const ECHO_RUNS: usize = 200;
const VOUCH_RUNS: usize = 15;
const FANOUT_RUNS: usize = 15;
const STEP: Duration = Duration::from_secs(60);

/// A device running on a thread of its own, with its own runtime, as on a machine of its
/// own: a device waiting on its disk or busy verifying holds up no other device's tasks,
/// and the operating system shares the cores among the devices.
struct Device {
    node: RunningNode,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl std::ops::Deref for Device {
    type Target = RunningNode;
    fn deref(&self) -> &RunningNode {
        &self.node
    }
}

impl Device {
    async fn shutdown(self) {
        self.node.shutdown().await;
        let _ = self.stop.send(());
    }
}

async fn node(root: &std::path::Path, name: &str) -> Device {
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
                let _ = started_tx.send(Device { node, stop });
                let _ = stopped.await;
            });
        })
        .expect("device thread");
    started_rx.await.expect("device started")
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

async fn pair(new: &RunningNode, existing: &RunningNode) {
    new.client
        .pair_request(existing.device_id, existing.dial_addr())
        .await
        .expect("pair request");
    let a = code(new, existing.device_id).await;
    let b = code(existing, new.device_id).await;
    existing
        .client
        .pair_accept(new.device_id, Some(a))
        .await
        .expect("accept");
    new.client
        .pair_accept(existing.device_id, Some(b))
        .await
        .expect("accept");
    for (me, other) in [(new, existing.device_id), (existing, new.device_id)] {
        let other = other.to_string();
        until("online", || async {
            me.client
                .devices()
                .await
                .ok()?
                .iter()
                .any(|d| d.device_id == other && d.online)
                .then_some(())
        })
        .await;
    }
}

/// CPU time this process (every device, every thread) has used so far.
fn process_cpu() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Vouches for `vouchee` to `targets` and waits, on the voucher's event stream as a UI
/// would, for the session to be Completed; every target must have accepted.
async fn vouch(voucher: &RunningNode, vouchee: &RunningNode, targets: &[DeviceId]) -> Duration {
    let mut events = voucher.client.events().subscribe(None);
    let started = Instant::now();
    let outcome = voucher
        .client
        .vouch(vouchee.device_id, targets.to_vec(), false)
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
            return elapsed;
        }
    }
}

async fn fan_out(voucher: &RunningNode, targets: &[DeviceId]) -> Duration {
    let started = Instant::now();
    let sends = targets
        .iter()
        .map(|t| voucher.client.send_text(*t, "ping".to_owned()));
    for r in futures::future::join_all(sends).await {
        r.expect("sealed text acknowledged");
    }
    started.elapsed()
}

/// One small durable write on each of `stores` at once, until the last is on disk.
fn writes_at_once(stores: &[vouchnet_storage::Store], round: u64) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, store) in stores.iter().enumerate() {
            scope.spawn(move || durable_write(store, (round << 32) | i as u64));
        }
    });
    started.elapsed()
}

/// Time the stores of `nodes` have spent writing, and how many writes.
fn write_totals(nodes: &[&RunningNode]) -> (Duration, u64) {
    nodes.iter().fold((Duration::ZERO, 0), |(time, count), n| {
        let m = n.store_metrics();
        (time + Duration::from_nanos(m.write_nanos), count + m.writes)
    })
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path();
    let voucher = node(root, "voucher").await;
    let mut targets = Vec::new();
    for i in 0..TARGETS {
        let t = node(root, &format!("target{i}")).await;
        pair(&t, &voucher).await;
        targets.push(t);
    }
    let ids: Vec<DeviceId> = targets.iter().map(|t| t.device_id).collect();
    println!("voucher paired directly with {TARGETS} targets");

    let store = vouchnet_storage::Store::open(root.join("bench-store")).expect("store");
    let mut echo = Vec::new();
    let mut writes = Vec::new();
    for i in 0..ECHO_RUNS {
        echo.push(fan_out(&voucher, &ids[..1]).await);
        writes.push(durable_write(&store, i as u64));
    }

    let floor_stores: Vec<vouchnet_storage::Store> = (0..TARGETS)
        .map(|i| vouchnet_storage::Store::open(root.join(format!("floor{i}"))).expect("store"))
        .collect();
    let mut at_once = Vec::new();
    let mut vouch1_writes = Vec::new();
    let mut vouch1_write_count = Vec::new();
    let mut vouch1 = Vec::new();
    let mut vouch10 = Vec::new();
    let mut vouch100 = Vec::new();
    let mut fan10 = Vec::new();
    let mut fan100 = Vec::new();
    // CPU time of the whole process during each vouch to 100 and fan-out to 100.
    let (mut vouch100_cpu, mut fan100_cpu) = (Vec::new(), Vec::new());
    // The voucher's own durable writes during each vouch to 100 (group commit: far fewer
    // than one per target).
    let mut vouch100_voucher_writes = Vec::new();
    let mut echo_fresh = Vec::new();
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
                let fresh = node(root, &format!("vouchee{next}")).await;
                next += 1;
                pair(&fresh, &voucher).await;
                echo_fresh.push(fan_out(&voucher, &ids[..1]).await);
                fresh.shutdown().await;
            }
            if round < VOUCH_RUNS {
                let vouchee = node(root, &format!("vouchee{next}")).await;
                next += 1;
                pair(&vouchee, &voucher).await;
                let measured = [&*voucher, &*targets[0]];
                let (time_before, count_before) = write_totals(&measured);
                let cpu = process_cpu();
                let voucher_writes = voucher.store_metrics().writes;
                out.push(vouch(&voucher, &vouchee, &ids[..n]).await);
                if n == TARGETS {
                    vouch100_cpu.push(process_cpu() - cpu);
                    vouch100_voucher_writes.push(voucher.store_metrics().writes - voucher_writes);
                }
                if n == 1 {
                    let (time_after, count_after) = write_totals(&measured);
                    vouch1_writes.push(time_after - time_before);
                    vouch1_write_count.push(count_after - count_before);
                }
                vouchee.shutdown().await;
            }
            if let Some(fan) = fan {
                if round < FANOUT_RUNS {
                    let cpu = process_cpu();
                    fan.push(fan_out(&voucher, &ids[..n]).await);
                    if n == TARGETS {
                        fan100_cpu.push(process_cpu() - cpu);
                    }
                    if n == TARGETS {
                        at_once.push(writes_at_once(&floor_stores, round as u64));
                    }
                }
            }
        }
    }

    let (echo, write) = (median(echo), median(writes));
    let own_writes = median(vouch1_writes);
    let mut counts = vouch1_write_count.clone();
    counts.sort_unstable();
    let (v1, v10, v100) = (median(vouch1), median(vouch10), median(vouch100));
    let (f10, f100, floor100) = (median(fan10), median(fan100), median(at_once));
    let budget1 = echo + own_writes;
    println!("\nmedians ({ECHO_RUNS} echoes and small writes, {VOUCH_RUNS} vouches per size, {FANOUT_RUNS} fan-outs per size):");
    println!(
        "  echo (sealed text, one round trip)        {:>9.3} ms",
        ms(echo)
    );
    println!(
        "  echo, set up as each vouch to 1           {:>9.3} ms",
        ms(median(echo_fresh.clone()))
    );
    println!(
        "  small durable write (16 B + flush)        {:>9.3} ms",
        ms(write)
    );
    println!(
        "  the vouch's own durable writes            {:>9.3} ms  ({}..{} writes per vouch)",
        ms(own_writes),
        counts.first().copied().unwrap_or(0),
        counts.last().copied().unwrap_or(0)
    );
    println!(
        "  vouch to 1 target                         {:>9.3} ms",
        ms(v1)
    );
    println!(
        "  fan-out to 10 targets                     {:>9.3} ms",
        ms(f10)
    );
    println!(
        "  vouch to 10 targets                       {:>9.3} ms",
        ms(v10)
    );
    println!(
        "  fan-out to {TARGETS} targets                    {:>9.3} ms",
        ms(f100)
    );
    println!(
        "  {TARGETS} devices' durable writes at once       {:>9.3} ms",
        ms(floor100)
    );
    println!(
        "  vouch to {TARGETS} targets                      {:>9.3} ms",
        ms(v100)
    );
    println!(
        "  CPU time (all devices): vouch to {TARGETS} {:.1} ms, fan-out to {TARGETS} {:.1} ms",
        ms(median(vouch100_cpu)),
        ms(median(fan100_cpu))
    );
    vouch100_voucher_writes.sort_unstable();
    println!(
        "  the voucher's durable writes per vouch to {TARGETS}: median {}, {}..{}",
        vouch100_voucher_writes[vouch100_voucher_writes.len() / 2],
        vouch100_voucher_writes.first().copied().unwrap_or(0),
        vouch100_voucher_writes.last().copied().unwrap_or(0)
    );
    println!("\nratios:");
    println!(
        "  vouch to 1 / (echo + its durable writes)        = {:.2}  (goal <= 1.20)",
        v1.as_secs_f64() / budget1.as_secs_f64()
    );
    println!(
        "  vouch to 1 / (echo set up alike + its writes)   = {:.2}",
        v1.as_secs_f64() / (median(echo_fresh) + own_writes).as_secs_f64()
    );
    println!(
        "  vouch to 1 / (echo + 3 small durable writes)    = {:.2}",
        v1.as_secs_f64() / (echo + write * 3).as_secs_f64()
    );
    println!(
        "  vouch to 10 / fan-out to 10                     = {:.2}",
        v10.as_secs_f64() / f10.as_secs_f64()
    );
    println!(
        "  vouch to {TARGETS} / fan-out to {TARGETS}                   = {:.2}  (goal <= 1.50)",
        v100.as_secs_f64() / f100.as_secs_f64()
    );
    println!(
        "  vouch to {TARGETS} / (fan-out + {TARGETS} writes at once)   = {:.2}",
        v100.as_secs_f64() / (f100 + floor100).as_secs_f64()
    );
    for t in targets {
        t.shutdown().await;
    }
    voucher.shutdown().await;
}
