//! Shared helpers for tests that run the built `vouchnet` binary as separate processes and
//! drive it only through its CLI, as a script would.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vouchnet");
/// Deadline for one awaited condition.
pub const STEP: Duration = Duration::from_secs(60);

/// Runs `vouchnet --data-dir DIR ARGS…` to completion.
pub fn vouchnet(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("vouchnet runs")
}

/// Runs a command that must succeed, with `--json`, and parses its output.
pub fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = vouchnet(dir, &all);
    assert!(
        out.status.success(),
        "vouchnet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vouchnet {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Polls `f` until it returns `Some`, failing after [`STEP`]. Each poll is a CLI query of
/// the node's state, so this waits for an observable condition, not for time to pass.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < STEP, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `vouchnet run` process on loopback with its own data directory.
pub struct Node {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub name: String,
    pub id: String,
    extra: Vec<String>,
    /// Environment variables of the `run` process (beyond `RUST_LOG`).
    env: Vec<(String, String)>,
}

impl Node {
    /// `vouchnet init` in `root/<name>`, then `run` with `extra` flags.
    pub fn start(root: &Path, name: &str, extra: &[&str]) -> Node {
        Node::start_with_env(root, name, extra, &[])
    }

    /// [`Node::start`], with these environment variables for every `run` of it.
    pub fn start_with_env(root: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = root.join(name);
        let init = json(&dir, &["init", "--name", name]);
        let mut node = Node {
            child: None,
            dir,
            name: name.to_owned(),
            id: init["device_id"].as_str().unwrap().to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.restart(&[]);
        node
    }

    /// Starts the process again on the same data directory (after [`Node::stop`] or a kill),
    /// with the start flags plus `more`.
    pub fn restart(&mut self, more: &[&str]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .args(&self.extra)
            .args(more)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("vouchnet run starts");
        self.child = Some(child);
        let dir = self.dir.clone();
        let child = self.child.as_mut().expect("just started");
        eventually(&format!("{} to listen", self.name), || {
            if let Some(status) = child.try_wait().expect("the run process") {
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                panic!("vouchnet run exited with {status} before it listened:\n{log}");
            }
            dir.join("api.addr").exists().then_some(())?;
            let out = vouchnet(&dir, &["id", "--json"]);
            let id: Value = serde_json::from_slice(&out.stdout).ok()?;
            (!id["listen_addrs"].as_array()?.is_empty()).then_some(())
        });
    }

    /// SIGTERM, and wait for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Waits for the `run` process to exit on its own; its exit status and its log.
    pub fn exited(&mut self) -> (std::process::ExitStatus, String) {
        let status = eventually(&format!("{}'s vouchnet run to exit", self.name), || {
            self.child.as_mut().unwrap().try_wait().unwrap()
        });
        self.child = None;
        let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap();
        (status, log)
    }

    /// The ids `vouchnet blocked` lists, sorted.
    pub fn blocked_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .json(&["blocked"])
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["device_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The first listen address, ending in `/p2p/<id>`.
    pub fn addr(&self) -> String {
        json(&self.dir, &["id"])["listen_addrs"][0]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        json(&self.dir, args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The code `node` shows for its pairing with `peer`, once the keys are exchanged.
pub fn code_for(node: &Node, peer: &str) -> String {
    eventually("a code", || {
        let list = node.json(&["pair", "requests"]);
        list.as_array()?.iter().find(|p| p["device_id"] == peer)?["code"]
            .as_str()
            .map(str::to_owned)
    })
}

/// Pairs `new` with `existing` through the CLI only: `pair --no-wait`, read both codes,
/// and each side types the code the other shows. Returns the code.
pub fn pair(new: &Node, existing: &Node) -> String {
    new.json(&[
        "pair",
        &existing.id,
        "--addr",
        &existing.addr(),
        "--no-wait",
    ]);
    let code_new = code_for(new, &existing.id);
    let code_existing = code_for(existing, &new.id);
    assert_eq!(code_new, code_existing, "both screens show the same code");
    new.json(&["pair", "accept", &existing.id, "--code", &code_existing]);
    existing.json(&["pair", "accept", &new.id, "--code", &code_new]);
    for (me, other) in [(new, existing), (existing, new)] {
        eventually(
            &format!("{} to list {} as direct", me.name, other.name),
            || {
                let list = me.json(&["devices"]);
                list.as_array()?
                    .iter()
                    .any(|d| d["device_id"] == other.id.as_str() && d["pairing_type"] == "direct")
                    .then_some(())
            },
        );
    }
    code_new
}

/// The device `other` as `me` lists it, if it does.
pub fn device(me: &Node, other: &Node) -> Option<Value> {
    me.json(&["devices"])
        .as_array()?
        .iter()
        .find(|d| d["device_id"] == other.id.as_str())
        .cloned()
}

/// The id of a fresh device no node has heard of.
pub fn stranger() -> String {
    vouchnet_protocol::DeviceKeypair::generate(&mut rand_core::OsRng)
        .public()
        .device_id()
        .to_string()
}

/// The status of `device`'s vouch in a session as `vouchnet session --json` shows it, or
/// "" if the session has none for it.
pub fn vouch_status(session: &Value, device: &str) -> String {
    session["vouches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["device_id"] == device)
        .map(|v| v["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}
