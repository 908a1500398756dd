//! A node whose disk fills up (a tmpfs, see `common/tmpfs.rs`; needs root, else SKIPPED).
//!
//! The store refuses everything once a write could not be made durable, so the node stops
//! rather than go on without a memory: the command that hit the full disk gets the disk's
//! error, the event stream says `NodeStopped`, `vouchnet run` exits non-zero saying why,
//! and once the disk has room the node starts again with everything it acknowledged and
//! nothing it refused.

mod cli_support;
mod common;

use common::tmpfs::Tmpfs;
use common::{config, pair, wait_online, TestNode};
use rand_core::OsRng;
use std::time::Duration;
use vouchnet_node::events::NodeEvent;
use vouchnet_node::{DataDir, LoopExit, NodeError, NodeOptions};
use vouchnet_protocol::{DeviceId, DeviceKeypair};
use vouchnet_storage::StoreError;

fn stranger() -> DeviceId {
    DeviceKeypair::generate(&mut OsRng).public().device_id()
}

/// A node on a data directory of its own, outside `TestNode`'s temporary directory.
async fn start_at(dir: &std::path::Path, name: &str) -> TestNode {
    let node = vouchnet_node::start(NodeOptions {
        data_dir: DataDir::at(dir),
        config: config(name),
    })
    .await
    .expect("node starts");
    TestNode {
        node: Some(node),
        dir: tempfile::tempdir().unwrap(),
        name: name.to_owned(),
        config: config(name),
    }
}

/// A laptop whose data directory is an 8 MiB tmpfs, paired with a phone on the normal disk,
/// both online; `None` (SKIPPED) without root. Dropped nodes first, the tmpfs last.
struct SmallDisk {
    laptop: TestNode,
    phone: TestNode,
    data: std::path::PathBuf,
    fs: Tmpfs,
    _root: tempfile::TempDir,
}

async fn laptop_on_a_small_disk() -> Option<SmallDisk> {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("laptop");
    let fs = Tmpfs::mount_or_skip(&data, "8m")?;
    let laptop = start_at(&data, "laptop").await;
    let phone = TestNode::start("phone").await;
    pair(&laptop, &phone).await;
    wait_online(&laptop, phone.id(), true).await;
    wait_online(&phone, laptop.id(), true).await;
    Some(SmallDisk {
        laptop,
        phone,
        data,
        fs,
        _root: root,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_stops_and_starts_again_with_what_it_acknowledged() {
    // Bound in this order so that they drop in the reverse one: the nodes, then the tmpfs,
    // then the directory it was mounted on.
    let Some(SmallDisk {
        _root,
        fs,
        data,
        phone: b,
        laptop: mut a,
    }) = laptop_on_a_small_disk().await
    else {
        return;
    };
    let mut events = a.subscribe();

    // Block strangers until the full disk refuses one: those that came back blocked are
    // acknowledged, the last one is not.
    let junk = fs.fill();
    let mut acknowledged = Vec::new();
    let (refused, error) = loop {
        let device = stranger();
        match a.n().client.block(device).await {
            Ok(view) => {
                assert!(view.blocked);
                acknowledged.push(device.to_string());
            }
            Err(e) => break (device, e),
        }
        assert!(acknowledged.len() < 1_000, "the disk never filled up");
    };
    match &error {
        NodeError::Store(StoreError::Io(io)) => assert_eq!(
            io.kind(),
            std::io::ErrorKind::StorageFull,
            "the refused block says why: {io}"
        ),
        other => panic!("the refused block: {other:?}"),
    }

    // The node stops on its own, and says so on the event stream.
    let exit = tokio::time::timeout(Duration::from_secs(20), a.node.as_mut().unwrap().stopped())
        .await
        .expect("the node stops");
    let LoopExit::StoreFailed(failure) = exit else {
        panic!("the node stopped for another reason: {exit:?}");
    };
    assert_eq!(
        failure.cause,
        "storage i/o error: No space left on device (os error 28)"
    );
    assert!(failure.disk_full);
    let stopped =
        common::next_event(&mut events, |e| matches!(e, NodeEvent::NodeStopped { .. })).await;
    assert_eq!(
        stopped.event,
        NodeEvent::NodeStopped {
            reason: "store_failed".to_owned(),
            detail: failure.cause,
            disk_full: true,
        }
    );
    a.node.take().unwrap().shutdown().await;

    // Once the disk has room, it starts again: the pairing and every acknowledged block are
    // there, the refused block is not, and it works.
    std::fs::remove_file(junk).unwrap();
    let a = start_at(&data, "laptop").await;
    let mut blocked: Vec<String> = a
        .n()
        .client
        .blocked()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.device_id)
        .collect();
    blocked.sort();
    acknowledged.sort();
    assert_eq!(blocked, acknowledged);
    assert!(!blocked.contains(&refused.to_string()));
    assert!(a
        .devices()
        .await
        .iter()
        .any(|d| d.device_id == b.id().to_string()));
    a.n().client.block(refused).await.expect("writes again");
    a.n().client.dial(b.addr()).await.unwrap();
    wait_online(&a, b.id(), true).await;
    let report = a.n().client.audit_verify().await.unwrap();
    assert!(report.ok, "{:?}", report.error);
}

/// A message is acknowledged only once it is stored: every text its sender was told had
/// arrived is in the inbox after the receiver's disk filled up and it started again; the
/// text that met the full disk is refused to its sender and is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_acknowledged_only_once_stored_when_the_disk_fills_up() {
    // Bound in this order so that they drop in the reverse one: the nodes, then the tmpfs,
    // then the directory it was mounted on.
    let Some(SmallDisk {
        _root,
        fs,
        data,
        phone: b,
        laptop: mut a,
    }) = laptop_on_a_small_disk().await
    else {
        return;
    };

    let junk = fs.fill();
    let mut acknowledged = Vec::new();
    let error = loop {
        let text = format!("message {}", acknowledged.len());
        match b.n().client.send_text(a.id(), text.clone()).await {
            Ok(()) => acknowledged.push(text),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 1_000, "the disk never filled up");
    };
    // The receiver answers `unavailable` and stops at once, as its store failed: the answer
    // reaches the sender, or the connection closes before it does. Either way the sender
    // knows the text was not delivered.
    let refused = format!("{}: refused: Unavailable", a.id());
    let closed = format!(
        "{}: Connection was closed before a response was received",
        a.id()
    );
    match &error {
        NodeError::Network(why) => assert!(why == &refused || why == &closed, "{why}"),
        other => panic!("the refused text: {other:?}"),
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), a.node.as_mut().unwrap().stopped())
        .await
        .expect("the node stops");
    assert!(
        matches!(&exit, LoopExit::StoreFailed(f) if f.disk_full && f.cause.contains("No space left on device")),
        "{exit:?}"
    );
    a.node.take().unwrap().shutdown().await;

    std::fs::remove_file(junk).unwrap();
    let a = start_at(&data, "laptop").await;
    let inbox = a.n().client.inbox().await.unwrap();
    let texts: Vec<&str> = inbox.iter().map(|m| m.text.as_str()).collect();
    let kept = acknowledged.len().saturating_sub(256);
    assert_eq!(
        texts,
        acknowledged[kept..]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(inbox.iter().all(|m| m.from == b.id().to_string()));
}

/// The same through the CLI, as a script or a service manager sees it: the command that hit
/// the full disk fails with the disk's error, `vouchnet run` exits 1 saying why and that
/// nothing acknowledged is lost, does not start again while the disk is full, and once the
/// disk has room has every acknowledged block.
#[test]
fn vouchnet_run_exits_non_zero_when_its_disk_fills_up_and_starts_again_once_freed() {
    use cli_support::{vouchnet, Node};
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount_or_skip(&root.path().join("laptop"), "8m") else {
        return;
    };
    let mut a = Node::start(root.path(), "laptop", &[]);
    let junk = fs.fill();
    let mut acknowledged = Vec::new();
    let stderr = loop {
        let device = stranger().to_string();
        let out = vouchnet(&a.dir, &["block", &device, "--json"]);
        if out.status.success() {
            acknowledged.push(device);
        } else {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(acknowledged.len() < 1_000, "the disk never filled up");
    };
    assert!(
        stderr.starts_with(
            "error: storage: storage i/o error: No space left on device (os error 28)"
        ),
        "{stderr}"
    );

    let (status, log) = a.exited();
    assert_eq!(status.code(), Some(1));
    assert!(
        log.contains(
            "error: the node stopped: its store could not make a write durable (storage i/o \
             error: No space left on device (os error 28))"
        ) && log.contains("Nothing it acknowledged is lost; start it again once the disk has room"),
        "{log}"
    );

    // While the disk is still full, `run` does not start, and says why in one line.
    let again = vouchnet(&a.dir, &["run", "--no-mdns"]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some("error: database: storage i/o error: No space left on device (os error 28)"),
        "{stderr}"
    );

    std::fs::remove_file(junk).unwrap();
    a.restart(&[]);
    acknowledged.sort();
    assert_eq!(a.blocked_ids(), acknowledged);
    a.stop();
    drop(fs);
}
