//! `vouchnet demo`: a small network of real nodes in one process, on loopback, and a
//! walk-through of what vouchnet does, in plain words.
//!
//! Every step runs the same code as `vouchnet run` (real swarms, real pairing machines, a
//! real database per device in a temporary directory); only the person confirming codes is
//! played by the demo. The temporary directories are removed at the end.

use crate::config::NodeConfig;
use crate::datadir::DataDir;
use crate::events::NodeEvent;
use crate::node::{start, NodeOptions, RunningNode};
use anyhow::{anyhow, bail, Context, Result};
use std::future::Future;
use std::time::Duration;
use vouchnet_protocol::DeviceId;

/// Longest the demo waits for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

struct Demo {
    fast: bool,
    step: usize,
}

impl Demo {
    async fn say(&mut self, title: &str, text: &str) {
        self.step += 1;
        println!("\n{}. {title}\n", self.step);
        for line in text.lines() {
            println!("   {line}");
        }
        if !self.fast {
            // A pause for the reader, not for synchronisation.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }

    fn note(&self, text: &str) {
        println!("   {text}");
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("timed out: {what}"))?
}

/// Polls `f` until it yields a value.
async fn until<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    within(what, async {
        loop {
            if let Some(v) = f().await? {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}

async fn start_device(root: &std::path::Path, name: &str) -> Result<RunningNode> {
    let config = NodeConfig {
        name: name.to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        ..NodeConfig::default()
    };
    let data_dir = DataDir::at(root.join(name));
    start(NodeOptions { data_dir, config })
        .await
        .with_context(|| format!("starting {name}"))
}

async fn code_on(node: &RunningNode, peer: DeviceId) -> Result<String> {
    let peer = peer.to_string();
    until("a code to appear", || async {
        let list = node.client.pair_requests().await?;
        Ok(list
            .into_iter()
            .find(|p| p.device_id == peer)
            .and_then(|p| p.code))
    })
    .await
}

async fn online(node: &RunningNode, peer: DeviceId, want: bool) -> Result<()> {
    let peer = peer.to_string();
    until("presence to change", || async {
        let list = node.client.devices().await?;
        Ok(list
            .iter()
            .any(|d| d.device_id == peer && d.online == want)
            .then_some(()))
    })
    .await
}

fn short(id: DeviceId) -> String {
    let s = id.to_string();
    format!("{}…{}", &s[..8], &s[s.len() - 6..])
}

/// Runs the demo. `fast` skips the pauses between steps.
pub async fn run(fast: bool) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut demo = Demo { fast, step: 0 };
    println!("vouchnet demo: three devices on this computer, talking over loopback TCP.");

    let laptop = start_device(tmp.path(), "laptop").await?;
    let mut phone = start_device(tmp.path(), "phone").await?;
    let tablet = start_device(tmp.path(), "tablet").await?;
    let (l, p, t) = (laptop.device_id, phone.device_id, tablet.device_id);
    demo.say(
        "Three devices start",
        &format!(
            "Each device has its own key; its device id is derived from it:\n  laptop  {}\n  phone   {}\n  tablet  {}\nNobody trusts anybody yet.",
            short(l),
            short(p),
            short(t)
        ),
    )
    .await;

    // ---- Direct pairing
    let mut laptop_events = laptop.client.events().subscribe(None);
    phone.client.pair_request(l, laptop.dial_addr()).await?;
    demo.say(
        "The phone asks the laptop to pair",
        "They exchange fresh keys. The phone first commits to its key, so that no one in\nbetween can steer the code both devices will show.",
    )
    .await;
    let code_phone = code_on(&phone, l).await?;
    let code_laptop = within("the laptop's prompt", async {
        loop {
            let env = laptop_events.live.recv().await?;
            if let NodeEvent::PairingConfirmationRequired { code, name, .. } = &env.event {
                demo.note(&format!(
                    "The laptop asks its user: \"{name} wants to pair. Does it show {code}?\""
                ));
                return Ok(code.clone());
            }
        }
    })
    .await?;
    demo.say(
        "Both screens show a 6-digit code",
        &format!("laptop: {code_laptop}\nphone:  {code_phone}\nThe person holding both devices checks that the codes are the same."),
    )
    .await;
    if code_laptop != code_phone {
        bail!("the codes differ; this is a bug");
    }
    laptop
        .client
        .pair_accept(p, Some(code_phone.clone()))
        .await?;
    phone
        .client
        .pair_accept(l, Some(code_laptop.clone()))
        .await?;
    online(&laptop, p, true).await?;
    online(&phone, l, true).await?;
    let devices = laptop.client.devices().await?;
    demo.say(
        "The user confirms on each device, and they are paired",
        &format!(
            "Each stored a key only the two of them know. The laptop now lists:\n  {} ({}), {} pairing, {}, {}.\nOn connecting they proved to each other that they hold that key, so each\nshows the other as online.",
            devices[0].name,
            short(p),
            devices[0].pairing_type,
            devices[0].trust_level,
            if devices[0].online { "online" } else { "offline" }
        ),
    )
    .await;

    // ---- A man in the middle
    tablet.client.pair_request(l, laptop.dial_addr()).await?;
    let code_laptop = code_on(&laptop, t).await?;
    let code_tablet = code_on(&tablet, l).await?;
    demo.say(
        "Someone else tries",
        &format!(
            "The tablet asks the laptop to pair too. The laptop shows {code_laptop}; suppose the user\nthinks this is the phone asking again, and reads the phone's screen: {code_phone}."
        ),
    )
    .await;
    match laptop.client.pair_accept(t, Some(code_phone.clone())).await {
        Err(crate::error::NodeError::CodeMismatch) => {}
        other => bail!("expected the laptop to refuse, got {other:?}"),
    }
    until("the tablet to hear the refusal", || async {
        Ok(tablet
            .client
            .pair_requests()
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    demo.note(&format!("(The tablet itself showed {code_tablet}.)"));
    demo.say(
        "The codes differ, so the laptop refuses",
        "Nothing was stored on either side. An attacker in between would face the same\nwall: it cannot make both codes equal, it gets one blind guess in a million.",
    )
    .await;

    // ---- Presence
    let phone_dir = DataDir::at(tmp.path().join("phone"));
    phone.shutdown().await;
    online(&laptop, p, false).await?;
    demo.say(
        "The phone goes away",
        "Its last connection closed, so the laptop shows it offline.",
    )
    .await;
    let config = NodeConfig {
        name: "phone".to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        ..NodeConfig::default()
    };
    phone = start(NodeOptions {
        data_dir: phone_dir,
        config,
    })
    .await?;
    online(&laptop, p, true).await?;
    online(&phone, l, true).await?;
    demo.say(
        "The phone comes back",
        "It redialled the laptop where it last saw it, both proved their key again, and\neach shows the other online. A device that cannot prove the key never counts as\nonline; that failure is audited and shown to the user.",
    )
    .await;

    // ---- A sealed message
    phone
        .client
        .send_text(l, "hello from the phone".into())
        .await?;
    let inbox = laptop.client.inbox().await?;
    demo.say(
        "A message between paired devices",
        &format!(
            "The phone sends a short text sealed with their key. The laptop reads: \"{}\"",
            inbox.last().map(|m| m.text.as_str()).unwrap_or("")
        ),
    )
    .await;

    let audit = laptop.client.audit().await?;
    let verified = laptop.client.audit_verify().await?;
    let mut trail = String::from("Every trust decision is in a hash-chained audit trail:");
    for e in &audit {
        trail.push_str(&format!("\n  #{} {}", e.seq, e.event));
    }
    trail.push_str(&format!(
        "\nVerified: {} ({} entries).",
        if verified.ok { "intact" } else { "BROKEN" },
        verified.entries
    ));
    demo.say("The laptop's audit trail", &trail).await;

    demo.say(
        "What comes next",
        "Vouching: the laptop will be able to introduce the phone to the tablet once the\ntablet is paired with the laptop, so the phone and tablet trust each other without\ncomparing codes. That part (proxy pairing) is not yet available in this version.",
    )
    .await;

    laptop.shutdown().await;
    phone.shutdown().await;
    tablet.shutdown().await;
    println!("\nDone. The demo's devices and their data are removed.");
    Ok(())
}
