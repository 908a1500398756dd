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
use vouchnet_protocol::model::{SessionState, VouchStatus};
use vouchnet_protocol::{DeviceId, SessionId};

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

async fn start_device(
    root: &std::path::Path,
    name: &str,
    auto_accept: bool,
) -> Result<RunningNode> {
    let config = NodeConfig {
        name: name.to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        auto_accept_vouched: auto_accept,
        queue_poll_interval: 1,
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

/// Pairs `new` with `existing` directly, each side confirming the code the other shows.
async fn pair_directly(new: &RunningNode, existing: &RunningNode) -> Result<String> {
    new.client
        .pair_request(existing.device_id, existing.dial_addr())
        .await?;
    let code_new = code_on(new, existing.device_id).await?;
    let code_existing = code_on(existing, new.device_id).await?;
    if code_new != code_existing {
        bail!("the codes differ; this is a bug");
    }
    existing
        .client
        .pair_accept(new.device_id, Some(code_new.clone()))
        .await?;
    new.client
        .pair_accept(existing.device_id, Some(code_existing))
        .await?;
    online(new, existing.device_id, true).await?;
    online(existing, new.device_id, true).await?;
    Ok(code_new)
}

/// The status of the vouch to `target` in session `sid`, as the voucher's CLI shows it.
async fn vouch_status(voucher: &RunningNode, sid: SessionId, target: DeviceId) -> Result<String> {
    let session = voucher.client.session(sid).await?;
    Ok(session
        .targets
        .get(&target)
        .map(status_name)
        .unwrap_or("unknown")
        .to_owned())
}

fn status_name(s: &VouchStatus) -> &'static str {
    match s {
        VouchStatus::Selected => "selected",
        VouchStatus::Waiting {
            user_prompted: true,
            ..
        } => "waiting for its user",
        VouchStatus::Waiting { .. } => "waiting",
        VouchStatus::Queued => "queued",
        VouchStatus::Accepted { .. } => "accepted",
        VouchStatus::Rejected { .. } => "rejected",
        VouchStatus::Expired => "expired",
    }
}

async fn wait_status(
    voucher: &RunningNode,
    sid: SessionId,
    target: DeviceId,
    want: &str,
) -> Result<()> {
    until(&format!("the vouch to become {want}"), || async {
        Ok((vouch_status(voucher, sid, target).await? == want).then_some(()))
    })
    .await
}

/// Where `node` listens, as another device on the LAN would learn it.
fn addr_of(node: &RunningNode) -> Result<libp2p::Multiaddr> {
    node.dial_addr()
        .ok_or_else(|| anyhow!("the node is not listening"))
}

fn short(id: DeviceId) -> String {
    let s = id.to_string();
    format!("{}…{}", &s[..8], &s[s.len() - 6..])
}

/// Runs the demo. `fast` skips the pauses between steps.
pub async fn run(fast: bool) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut demo = Demo { fast, step: 0 };
    println!("vouchnet demo: a household's devices on this computer, talking over loopback TCP.");

    let laptop = start_device(tmp.path(), "laptop", true).await?;
    let desk = start_device(tmp.path(), "desk", true).await?;
    let tv = start_device(tmp.path(), "tv", false).await?;
    let mut tablet = start_device(tmp.path(), "tablet", true).await?;
    let (l, d, v, t) = (
        laptop.device_id,
        desk.device_id,
        tv.device_id,
        tablet.device_id,
    );
    demo.say(
        "Four devices start",
        &format!(
            "Each device has its own key; its device id is derived from it:\n  laptop  {}\n  desk    {}\n  tv      {}\n  tablet  {}\nNobody trusts anybody yet.",
            short(l), short(d), short(v), short(t)
        ),
    )
    .await;

    for other in [&desk, &tv, &tablet] {
        pair_directly(other, &laptop).await?;
    }
    demo.say(
        "The laptop is paired directly with the desk, the tv and the tablet",
        "Each pair compared a 6-digit code once, the way the next step shows in detail.\nThe tv is set to ask its user before it trusts a device vouched for by another\n(auto_accept_vouched = false); the desk and the tablet accept such vouches on their own.",
    )
    .await;

    tablet.shutdown().await;
    online(&laptop, t, false).await?;
    demo.say(
        "The tablet is switched off",
        "Its last connection closed, so the laptop shows it offline.",
    )
    .await;

    // ---- Direct pairing of a new device
    let phone = start_device(tmp.path(), "phone", true).await?;
    let p = phone.device_id;
    let mut laptop_events = laptop.client.events().subscribe(None);
    phone.client.pair_request(l, laptop.dial_addr()).await?;
    demo.say(
        "A new phone asks the laptop to pair",
        &format!("The phone ({}) and the laptop exchange fresh keys. The phone first commits to its key,\nso that no one in between can steer the code both devices will show.", short(p)),
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
    demo.say(
        "The user confirms on each device, and they are paired",
        "Each stored a key only the two of them know. On connecting they proved to each\nother that they hold that key, so each shows the other as online.",
    )
    .await;

    // ---- A man in the middle
    let stranger = start_device(tmp.path(), "stranger", true).await?;
    let s = stranger.device_id;
    stranger.client.pair_request(l, laptop.dial_addr()).await?;
    let code_for_stranger = code_on(&laptop, s).await?;
    demo.say(
        "Someone else tries",
        &format!(
            "A stranger's device asks the laptop to pair too. The laptop shows {code_for_stranger}; suppose the\nuser thinks this is the phone asking again, and reads the phone's screen: {code_phone}."
        ),
    )
    .await;
    match laptop.client.pair_accept(s, Some(code_phone.clone())).await {
        Err(crate::error::NodeError::CodeMismatch) => {}
        other => bail!("expected the laptop to refuse, got {other:?}"),
    }
    until("the stranger to hear the refusal", || async {
        Ok(stranger
            .client
            .pair_requests()
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    demo.say(
        "The codes differ, so the laptop refuses",
        "Nothing was stored on either side. An attacker in between would face the same\nwall: it cannot make both codes equal, it gets one blind guess in a million.",
    )
    .await;
    stranger.shutdown().await;

    // ---- Vouching
    let ready = within("the vouching prompt", async {
        loop {
            let env = laptop_events.live.recv().await?;
            if let NodeEvent::ProxyPairingVouchingReady { .. } = &env.event {
                return Ok(());
            }
        }
    })
    .await;
    if ready.is_ok() {
        demo.note("The laptop asks its user: \"Introduce the phone to your other devices?\"");
    }
    // The phone is on the same LAN as the desk and the tv (mDNS would tell it where).
    phone.client.dial(addr_of(&desk)?).await?;
    phone.client.dial(addr_of(&tv)?).await?;
    let outcome = laptop.client.vouch(p, Vec::new(), true).await?;
    let sid = SessionId::from_hex(&outcome.session_id)
        .ok_or_else(|| anyhow!("bad session id {}", outcome.session_id))?;
    demo.say(
        "The laptop vouches for the phone to the desk, the tv and the tablet",
        "For each of them it signs a vouch naming the phone, its key and that one device,\nwith the time and a fresh random nonce, and sends it.",
    )
    .await;

    wait_status(&laptop, sid, d, "accepted").await?;
    demo.say(
        "The desk accepts on its own",
        "It checked that the laptop is paired with it directly and trusted, the signature,\nthat the vouch is fresh, meant for it and never seen before, and that it does not\nknow the phone already. It answered with its own signed acceptance.",
    )
    .await;

    wait_status(&laptop, sid, t, "queued").await?;
    demo.say(
        "The tablet is off: its vouch waits in the laptop's queue",
        "The queue is on disk, so even a restart of the laptop would not lose it.",
    )
    .await;

    let prompt = until("the tv to ask its user", || async {
        Ok(tv.client.proxy_requests().await?.into_iter().next())
    })
    .await?;
    wait_status(&laptop, sid, v, "waiting for its user").await?;
    demo.say(
        "The tv asks its user",
        &format!(
            "\"{} vouches for {}. Trust it?\" The tv told the laptop that a person is\nbeing asked, so the laptop waits for the answer instead of giving up after 30 s.",
            prompt.voucher_name, prompt.vouchee_name
        ),
    )
    .await;
    tv.client.confirm_proxy(prompt.id.clone(), true).await?;
    wait_status(&laptop, sid, v, "accepted").await?;
    demo.note("The user says yes; the tv's signed acceptance reaches the laptop.");

    let tablet_dir = DataDir::at(tmp.path().join("tablet"));
    let config = NodeConfig {
        name: "tablet".to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        mdns: false,
        ..NodeConfig::default()
    };
    tablet = start(NodeOptions {
        data_dir: tablet_dir,
        config,
    })
    .await?;
    tablet.client.dial(addr_of(&phone)?).await?;
    wait_status(&laptop, sid, t, "accepted").await?;
    let session = laptop.client.session(sid).await?;
    if session.state != SessionState::Completed {
        until("the session to complete", || async {
            Ok((laptop.client.session(sid).await?.state == SessionState::Completed).then_some(()))
        })
        .await?;
    }
    demo.say(
        "The tablet comes back and gets the vouch from the queue",
        "It reconnected to the laptop, which signed the vouch afresh and delivered it; the\ntablet accepted. Every vouch has an answer, so the session is complete, and the\nlaptop told the phone who accepted it, with each device's signed acceptance.",
    )
    .await;

    // ---- The phone's view and a sealed message
    let mut listed = String::from("The phone now lists:");
    until("the phone to list three vouched devices", || async {
        let devices = phone.client.devices().await?;
        Ok((devices
            .iter()
            .filter(|d| d.pairing_type == "proxied")
            .count()
            == 3)
            .then_some(()))
    })
    .await?;
    for dev in phone.client.devices().await? {
        listed.push_str(&format!(
            "\n  {:<7} {}{}",
            dev.name,
            dev.pairing_type,
            dev.vouched_by
                .as_deref()
                .map(|_| " (vouched for by the laptop)".to_owned())
                .unwrap_or_default()
        ));
    }
    demo.say("One direct pairing, four trusted devices", &listed)
        .await;

    online(&phone, v, true).await?;
    phone
        .client
        .send_text(v, "hello from the phone".into())
        .await?;
    let inbox = tv.client.inbox().await?;
    demo.say(
        "The phone sends a sealed message to the tv",
        &format!(
            "They never compared codes. Their key came from the vouch, and on first contact\nthey replaced it with a fresh exchange, so even the laptop cannot read it.\nThe tv reads: \"{}\"",
            inbox.last().map(|m| m.text.as_str()).unwrap_or("")
        ),
    )
    .await;

    // ---- Audit
    let audit = tv.client.audit().await?;
    let mut trail =
        String::from("Every trust decision is in a hash-chained audit trail. The tv's:");
    for e in &audit {
        trail.push_str(&format!("\n  #{} {}", e.seq, e.event));
    }
    let mut all_ok = true;
    for (name, node) in [
        ("laptop", &laptop),
        ("desk", &desk),
        ("tv", &tv),
        ("tablet", &tablet),
        ("phone", &phone),
    ] {
        let verified = node.client.audit_verify().await?;
        all_ok &= verified.ok;
        trail.push_str(&format!(
            "\n  {name}: {} entries, {}",
            verified.entries,
            if verified.ok { "verified" } else { "BROKEN" }
        ));
    }
    trail.push_str(&format!(
        "\nVerified: {}.",
        if all_ok { "intact" } else { "BROKEN" }
    ));
    demo.say("The audit trails", &trail).await;
    if !all_ok {
        bail!("an audit trail did not verify");
    }

    for node in [laptop, desk, tv, tablet, phone] {
        node.shutdown().await;
    }
    println!("\nDone. The demo's devices and their data are removed.");
    Ok(())
}
