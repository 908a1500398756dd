//! Benchmark: what a vouch costs on real swarms, next to the bare request-response traffic it
//! rides on, measured side by side in one run on the same connections.
//!
//! ```sh
//! cargo bench -p vouchnet-node --bench vouch
//! ```
//!
//! In one process: a voucher paired directly with 100 targets (auto-accept on), and a fresh
//! vouchee per measured vouch (a vouch for a device the target already trusts would be
//! answered from its idempotency record, which is not the path to measure).
//!
//! - **echo**: a sealed text from the voucher to one target, timed until the target's `Ack`
//!   comes back: one request-response round trip on the connection the vouch uses, with no
//!   disk write.
//! - **durable write**: a small sled write plus `flush`, the unit of durability the vouch path
//!   needs; the critical path of one vouch has three (the voucher persists the session before
//!   sending, the target persists its decision before answering, the voucher persists the
//!   answer before reporting it).
//! - **vouch to 1**: `vouch` until the voucher records the target's signed acceptance.
//! - **fan-out to N**: N sealed texts sent at once to N targets, until every `Ack` is back.
//! - **vouch to N**: one vouch to N targets until the session is Completed.
//!
//! Goals (issue 5): vouch to 1 ≤ 1.2 × (echo + 3 × durable write); vouch to 100 ≤ 1.5 × fan-out
//! to 100. Medians are reported; ratios are what matter on a shared machine.

use std::time::{Duration, Instant};
use vouchnet_node::{start, DataDir, NodeConfig, NodeOptions, RunningNode};
use vouchnet_protocol::model::{SessionState, VouchStatus};
use vouchnet_protocol::{DeviceId, SessionId, Timestamp, VouchNonce};

const TARGETS: usize = 100;
const ECHO_RUNS: usize = 200;
const VOUCH_RUNS: usize = 15;
const FANOUT_RUNS: usize = 15;
const STEP: Duration = Duration::from_secs(60);

async fn node(root: &std::path::Path, name: &str) -> RunningNode {
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits until the session's vouches to `targets` are all terminal (accepted expected).
async fn completed(voucher: &RunningNode, sid: SessionId, n: usize) {
    let mut events = voucher.client.events().subscribe(None);
    loop {
        let s = voucher.client.session(sid).await.expect("session");
        let accepted = s
            .targets
            .values()
            .filter(|st| matches!(st, VouchStatus::Accepted { .. }))
            .count();
        if s.state == SessionState::Completed {
            assert_eq!(accepted, n, "every target accepts");
            return;
        }
        tokio::time::timeout(STEP, events.live.recv())
            .await
            .expect("an event before the deadline")
            .expect("event stream open");
    }
}

async fn vouch(voucher: &RunningNode, vouchee: &RunningNode, targets: &[DeviceId]) -> Duration {
    let started = Instant::now();
    let outcome = voucher
        .client
        .vouch(vouchee.device_id, targets.to_vec(), false)
        .await
        .expect("vouch");
    let sid = SessionId::from_hex(&outcome.session_id).expect("session id");
    completed(voucher, sid, targets.len()).await;
    started.elapsed()
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

    let mut vouch1 = Vec::new();
    let mut vouch10 = Vec::new();
    let mut vouch100 = Vec::new();
    let mut fan10 = Vec::new();
    let mut fan100 = Vec::new();
    let mut next = 0;
    for round in 0..VOUCH_RUNS.max(FANOUT_RUNS) {
        // Interleave the subjects so drift in machine load hits them alike.
        for (n, out, fan) in [
            (1usize, &mut vouch1, None),
            (10, &mut vouch10, Some(&mut fan10)),
            (TARGETS, &mut vouch100, Some(&mut fan100)),
        ] {
            if round < VOUCH_RUNS {
                let vouchee = node(root, &format!("vouchee{next}")).await;
                next += 1;
                pair(&vouchee, &voucher).await;
                out.push(vouch(&voucher, &vouchee, &ids[..n]).await);
                vouchee.shutdown().await;
            }
            if let Some(fan) = fan {
                if round < FANOUT_RUNS {
                    fan.push(fan_out(&voucher, &ids[..n]).await);
                }
            }
        }
    }

    let (echo, write) = (median(echo), median(writes));
    let (v1, v10, v100) = (median(vouch1), median(vouch10), median(vouch100));
    let (f10, f100) = (median(fan10), median(fan100));
    let budget1 = echo + write * 3;
    println!("\nmedians ({ECHO_RUNS} echoes and writes, {VOUCH_RUNS} vouches per size, {FANOUT_RUNS} fan-outs per size):");
    println!(
        "  echo (sealed text, one round trip)   {:>9.3} ms",
        ms(echo)
    );
    println!(
        "  durable write (sled write + flush)   {:>9.3} ms",
        ms(write)
    );
    println!("  vouch to 1 target                    {:>9.3} ms", ms(v1));
    println!("  fan-out to 10 targets                {:>9.3} ms", ms(f10));
    println!("  vouch to 10 targets                  {:>9.3} ms", ms(v10));
    println!(
        "  fan-out to {TARGETS} targets               {:>9.3} ms",
        ms(f100)
    );
    println!(
        "  vouch to {TARGETS} targets                 {:>9.3} ms",
        ms(v100)
    );
    println!("\nratios:");
    println!(
        "  vouch to 1 / (echo + 3 durable writes) = {:.2}  (goal <= 1.20)",
        v1.as_secs_f64() / budget1.as_secs_f64()
    );
    println!(
        "  vouch to 10 / fan-out to 10           = {:.2}",
        v10.as_secs_f64() / f10.as_secs_f64()
    );
    println!(
        "  vouch to {TARGETS} / fan-out to {TARGETS}         = {:.2}  (goal <= 1.50)",
        v100.as_secs_f64() / f100.as_secs_f64()
    );
    for t in targets {
        t.shutdown().await;
    }
    voucher.shutdown().await;
}
