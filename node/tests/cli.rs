//! The built `vouchnet` binary, run as separate processes on loopback with their own data
//! directories, driven only through the CLI — exactly as a script pairs two devices.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

mod cli_support;

use cli_support::{eventually, json, vouchnet, BIN};

/// A `vouchnet run` process, stopped with SIGTERM when dropped.
struct Node {
    child: Child,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Node {
    fn start(name: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        let init = json(&dir, &["init", "--name", name]);
        assert_eq!(init["name"], name);
        assert_eq!(init["created"], true);
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vouchnet run starts");
        let node = Node {
            child,
            dir,
            _tmp: tmp,
        };
        eventually("the node to listen", || {
            node.dir.join("api.addr").exists().then_some(())?;
            let id = json(&node.dir, &["id"]);
            (!id["listen_addrs"].as_array()?.is_empty()).then_some(())
        });
        node
    }

    fn id(&self) -> Value {
        json(&self.dir, &["id"])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn code_for(node: &Node, peer: &str) -> String {
    eventually("a code", || {
        let list = json(&node.dir, &["pair", "requests"]);
        list.as_array()?.iter().find(|p| p["device_id"] == peer)?["code"]
            .as_str()
            .map(str::to_owned)
    })
}

#[test]
fn two_processes_pair_through_the_cli_only() {
    let a = Node::start("laptop");
    let b = Node::start("phone");
    let a_id = a.id()["device_id"].as_str().unwrap().to_owned();
    let b_info = b.id();
    let b_id = b_info["device_id"].as_str().unwrap().to_owned();
    let b_addr = b_info["listen_addrs"][0].as_str().unwrap().to_owned();
    assert_eq!(b_info["name"], "phone");

    let asked = json(&a.dir, &["pair", &b_id, "--addr", &b_addr, "--no-wait"]);
    assert_eq!(asked["device_id"], b_id.as_str());
    assert_eq!(asked["direction"], "outbound");

    let code_on_a = code_for(&a, &b_id);
    let code_on_b = code_for(&b, &a_id);
    assert_eq!(code_on_a.len(), 6);
    let requests = json(&b.dir, &["pair", "requests"]);
    assert_eq!(requests[0]["direction"], "inbound");

    // Each side types the code the other side shows.
    let first = json(&a.dir, &["pair", "accept", &b_id, "--code", &code_on_b]);
    assert_eq!(first["state"], "waiting");
    json(&b.dir, &["pair", "accept", &a_id, "--code", &code_on_a]);

    for (me, other, other_name) in [(&a, &b_id, "phone"), (&b, &a_id, "laptop")] {
        let device = eventually("the pairing to be stored and proven", || {
            let list = json(&me.dir, &["devices"]);
            let d = list
                .as_array()?
                .iter()
                .find(|d| d["device_id"] == other.as_str())?
                .clone();
            (d["online"] == true).then_some(d)
        });
        assert_eq!(device["name"], other_name);
        assert_eq!(device["pairing_type"], "direct");
        assert_eq!(device["trust_level"], "trusted");
        assert_eq!(device["vouched_by"], Value::Null);
        assert!(device["paired_at"].as_u64().unwrap() > 0);
    }

    // A message over the new pairing.
    json(&a.dir, &["send", &b_id, "hello"]);
    let inbox = json(&b.dir, &["inbox"]);
    assert_eq!(inbox[0]["from"], a_id.as_str());
    assert_eq!(inbox[0]["from_name"], "laptop");
    assert_eq!(inbox[0]["text"], "hello");
    assert!(inbox[0]["received_at"].as_u64().unwrap() > 0);
    // The texts can be deleted, and stay deleted.
    assert_eq!(
        json(&b.dir, &["inbox", "--clear"]),
        serde_json::json!({"cleared": 1})
    );
    assert_eq!(json(&b.dir, &["inbox"]), Value::Array(vec![]));
    // One round trip over it.
    let ping = json(&a.dir, &["ping", &b_id]);
    assert_eq!(ping["device_id"], b_id.as_str());
    assert!(ping["rtt_ms"].as_f64().unwrap() > 0.0);

    let audit = json(&a.dir, &["audit", "--verify"]);
    assert_eq!(audit["ok"], true);
    assert_eq!(audit["entries"], 1);
}

#[test]
fn proxy_commands_answer_clearly_on_a_device_with_nothing_to_vouch() {
    let a = Node::start("laptop");
    let id = a.id()["device_id"].as_str().unwrap().to_owned();
    // Nothing waits for a decision, nothing is flagged, no session exists.
    assert_eq!(json(&a.dir, &["proxy", "requests"]), Value::Array(vec![]));
    assert_eq!(json(&a.dir, &["review"]), Value::Array(vec![]));
    assert_eq!(json(&a.dir, &["sessions"]), Value::Array(vec![]));
    for (args, message) in [
        (
            vec!["vouch", id.as_str(), "--all"],
            "is not a paired device",
        ),
        (vec!["proxy", "accept", "x"], "no vouch waiting"),
        (vec!["proxy", "reject", "x"], "no vouch waiting"),
        (
            vec!["review", "keep", id.as_str()],
            "is not waiting for a review",
        ),
    ] {
        let out = vouchnet(&a.dir, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_device_never_paired_is_blocked_listed_and_unblocked_through_the_cli() {
    let a = Node::start("laptop");
    // A device this one has never met: its id, from a data directory of its own.
    let other = tempfile::tempdir().unwrap();
    let stranger = json(
        &other.path().join("lost-phone"),
        &["init", "--name", "lost-phone"],
    )["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let block = json(&a.dir, &["block", &stranger]);
    assert_eq!(block["device_id"], stranger.as_str());
    assert_eq!(block["name"], Value::Null);
    assert_eq!(block["paired"], false);
    assert_eq!(block["blocked"], true);
    assert!(block["since"].is_u64(), "{block}");
    assert_eq!(
        json(&a.dir, &["blocked"]),
        Value::Array(vec![block.clone()])
    );
    let text = vouchnet(&a.dir, &["blocked"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("{stranger}  not paired  blocked since ")),
        "{text}"
    );

    let out = vouchnet(&a.dir, &["unblock", &stranger]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{stranger}  not paired  not blocked")
    );
    assert_eq!(json(&a.dir, &["blocked"]), Value::Array(vec![]));
    let again = vouchnet(&a.dir, &["unblock", &stranger]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains(&format!("{stranger} is not blocked")), "{err}");

    let audit = json(&a.dir, &["audit", "--verify"]);
    assert_eq!(audit["ok"], true);
    assert_eq!(audit["entries"], 2);
}

#[test]
fn an_invalid_configuration_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    json(dir, &["init", "--name", "x"]);
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("vouch_response_timeout = 30", "vouch_respone_timeout = 30"),
    )
    .unwrap();
    let out = vouchnet(dir, &["run", "--no-mdns"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vouch_respone_timeout"), "{err}");

    std::fs::write(&config, "auto_accept_vouched = \"yes\"\n").unwrap();
    let out = vouchnet(dir, &["run", "--no-mdns"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auto_accept_vouched"));
}

/// A QUIC address given to a build without the transport fails at start, and says how to
/// get a build that has it.
#[cfg(not(feature = "quic"))]
#[test]
fn a_quic_listen_address_in_a_build_without_quic_says_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    json(dir, &["init", "--name", "tcp-only"]);
    let addr = "/ip4/127.0.0.1/udp/0/quic-v1";
    let out = vouchnet(dir, &["run", "--no-mdns", "--listen", addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "error: cannot listen on {addr}: Multiaddr is not supported: {addr} \
             (this build has no QUIC transport: build it with `--features quic`)"
        ),
    );
}

/// A second `vouchnet run` on a data directory a running node holds exits 1 naming the lock
/// (after the bounded wait for a lock a restart may still be releasing), and changes nothing
/// the running node serves.
#[test]
fn a_second_run_on_a_data_directory_in_use_is_refused_and_the_first_keeps_serving() {
    let a = Node::start("laptop");
    let api_before = std::fs::read_to_string(a.dir.join("api.addr")).unwrap();
    let out = vouchnet(
        &a.dir,
        &["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
    );
    assert_eq!(out.status.code(), Some(1));
    let db = std::fs::canonicalize(&a.dir).unwrap().join("sync.db");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: database: the database at {} is locked by another process",
            db.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(a.dir.join("api.addr")).unwrap(),
        api_before
    );
    assert_eq!(json(&a.dir, &["devices"]), Value::Array(vec![]));
}

#[test]
fn commands_fail_clearly_when_the_node_is_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = vouchnet(dir, &["devices"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    // `id` works offline once initialised.
    let init = json(dir, &["init", "--name", "offline"]);
    let id = json(dir, &["id"]);
    assert_eq!(id["device_id"], init["device_id"]);
    assert_eq!(id["name"], "offline");
    assert_eq!(id["listen_addrs"], Value::Array(vec![]));
}

#[test]
fn the_demo_runs_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vouchnet(tmp.path(), &["demo", "--fast"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("The user confirms on each device, and they are paired"),
        "{text}"
    );
    assert!(
        text.contains("The codes differ, so the laptop refuses"),
        "{text}"
    );
    for step in [
        "The desk accepts on its own",
        "The tablet is off: its vouch waits in the laptop's queue",
        "The tv asks its user",
        "The tablet comes back and gets the vouch from the queue",
        "One direct pairing, four trusted devices",
        "The tv reads: \"hello from the phone\"",
        "Verified: intact",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    assert_eq!(
        text.matches(" proxied (vouched for by the laptop)").count(),
        3
    );
}
