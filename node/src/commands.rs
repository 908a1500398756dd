//! What each CLI command does. Everything but `init`, `run`, `demo` (and `id` when the node
//! is not running) goes through the running node's control API.
//!
//! Output: text for people by default, or with `--json` the exact JSON documented in
//! docs/cli.md. Errors go to stderr and make the process exit non-zero (see `main.rs`).

use crate::api_client::{ApiCallError, ApiClient, EventStream};
use crate::cli::{
    Cli, Command, PairArgs, PairCommand, ProxyCommand, ReviewArgs, ReviewCommand, RunArgs,
    VouchArgs,
};
use crate::config::NodeConfig;
use crate::datadir::{DataDir, DataDirError};
use crate::event_loop::LoopExit;
use crate::views::{
    AuditEntryView, AuditVerifyView, BlockView, ConfirmProxyOutcome, DeviceView, InboxMessage,
    NodeInfo, PairingRequestView, PeerView, PingView, ProxyRequestView, ReviewOutcome, ReviewView,
    TrustChainView, VouchOutcome,
};
use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};

/// The message a failed command prints after `error: `: the error and its causes, joined
/// with `: `, leaving out a cause whose text the message already holds. Most of the
/// project's errors already name their cause in their own text (`database: storage i/o
/// error: No space left on device`), and printing the chain as well said everything two or
/// three times.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// Runs a parsed command line.
pub async fn execute(cli: Cli) -> Result<()> {
    let dir = DataDir::resolve(cli.data_dir.clone())?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Init { name } => init(&dir, name, &out),
        Command::Run(args) => run(&dir, *args).await,
        Command::Id => id(&dir, &out).await,
        Command::Peers => peers(&dir, &out).await,
        Command::Pair(args) => pair(&dir, args, &out).await,
        Command::Devices => devices(&dir, &out).await,
        Command::Trust { device_id, level } => {
            let v = api(&dir)?
                .action(
                    "network.device.setTrust",
                    json!({"device_id": device_id, "trust_level": level}),
                )
                .await?;
            let d: DeviceView = parse(v)?;
            out.show(&d, || {
                format!("{} ({}) is now {}", d.name, d.device_id, d.trust_level)
            })
        }
        Command::Block { device_id } => {
            block_action(&dir, &out, "network.device.block", &device_id).await
        }
        Command::Unblock { device_id } => {
            block_action(&dir, &out, "network.device.unblock", &device_id).await
        }
        Command::Blocked => {
            let list: Vec<BlockView> = parse(api(&dir)?.get("/v1/blocked").await?)?;
            out.show(&list, || {
                if list.is_empty() {
                    return "No blocked devices.".to_owned();
                }
                list.iter().map(block_line).collect::<Vec<_>>().join("\n")
            })
        }
        Command::Unpair { device_id } => {
            api(&dir)?
                .action("network.device.unpair", json!({"device_id": device_id}))
                .await?;
            out.show(&json!({"device_id": device_id, "unpaired": true}), || {
                format!("Unpaired {device_id}")
            })
        }
        Command::Vouch(args) => vouch(&dir, args, &out).await,
        Command::Sessions => {
            let v = api(&dir)?.get("/v1/sessions").await?;
            let list: Vec<crate::sessions::SessionView> = parse(v)?;
            out.show(&list, || {
                if list.is_empty() {
                    return "No vouching sessions.".to_owned();
                }
                list.iter()
                    .map(|s| format!("{}  {}  {}", s.id, s.vouchee_name, s.state))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Session { id } => {
            let v = api(&dir)?.get(&format!("/v1/sessions/{id}")).await?;
            let s: crate::sessions::SessionView = parse(v)?;
            out.show(&s, || {
                let mut text = format!(
                    "Session {}: vouching for {} ({}), {}",
                    s.id,
                    s.vouchee_name,
                    s.vouchee,
                    s.state.replace('_', " ")
                );
                for v in &s.vouches {
                    text.push_str(&format!("\n  {}  {}", v.device_id, v.status));
                    if let Some(r) = &v.reason {
                        text.push_str(&format!(" ({r})"));
                    }
                }
                text
            })
        }
        Command::Proxy(cmd) => proxy(&dir, cmd, &out).await,
        Command::Review(args) => review(&dir, args, &out).await,
        Command::Dial { addr } => {
            api(&dir)?
                .action("network.dial", json!({"addr": addr}))
                .await?;
            out.show(&json!({"addr": addr, "dialed": true}), || {
                format!("Dialling {addr}")
            })
        }
        Command::Audit { verify, chains } => audit(&dir, verify, chains, &out).await,
        Command::Events { since } => events(&dir, since, &out).await,
        Command::Send { device_id, text } => {
            api(&dir)?
                .action(
                    "network.message.send",
                    json!({"device_id": device_id, "text": text}),
                )
                .await?;
            out.show(&json!({"device_id": device_id, "sent": true}), || {
                format!("Sent to {device_id}")
            })
        }
        Command::Ping { device_id } => {
            let view: PingView = parse(
                api(&dir)?
                    .action("network.device.ping", json!({"device_id": device_id}))
                    .await?,
            )?;
            out.show(&view, || {
                format!("Reply from {} in {:.3} ms", view.device_id, view.rtt_ms)
            })
        }
        Command::Inbox { clear: true } => {
            let result = api(&dir)?
                .action("network.message.clearInbox", json!({}))
                .await?;
            let cleared = result["cleared"].as_u64().unwrap_or(0);
            out.show(&result, || match cleared {
                1 => "Deleted 1 text.".to_owned(),
                n => format!("Deleted {n} texts."),
            })
        }
        Command::Inbox { clear: false } => {
            let list: Vec<InboxMessage> = parse(api(&dir)?.get("/v1/inbox").await?)?;
            out.show(&list, || {
                if list.is_empty() {
                    return "No messages.".to_owned();
                }
                list.iter()
                    .map(|m| {
                        let text = printable(&m.text);
                        let from = match &m.from_name {
                            Some(name) => format!("{name} ({})", m.from),
                            None => m.from.clone(),
                        };
                        format!("{}  {from}: {text}", fmt_time(m.received_at))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Demo { fast } => crate::demo::run(fast).await,
        Command::Ui { open } => ui(&dir, open, &out).await,
    }
}

/// Text or JSON output.
struct Output {
    json: bool,
}

impl Output {
    fn show<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?;
        } else {
            writeln!(stdout, "{}", text())?;
        }
        Ok(())
    }
}

fn api(dir: &DataDir) -> Result<ApiClient> {
    Ok(ApiClient::from_data_dir(dir)?)
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).context("unexpected answer from the node")
}

/// A name for a new device: the host name, made a valid display name.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vouchnet device".to_owned());
    let mut name: String = host.chars().filter(|c| !c.is_control()).collect();
    while name.len() > vouchnet_protocol::messages::MAX_NAME_LEN {
        name.pop();
    }
    name
}

fn init(dir: &DataDir, name: Option<String>, out: &Output) -> Result<()> {
    if let Some(n) = &name {
        vouchnet_protocol::messages::DisplayName::new(n.clone())
            .map_err(|e| anyhow!("invalid --name: {e}"))?;
    }
    let (keypair, created) = dir.load_or_create_identity()?;
    let config_existed = dir.path(crate::datadir::CONFIG_FILE).exists();
    if !config_existed {
        NodeConfig::write_default(dir, name.as_deref().unwrap_or(&default_name()))?;
    } else if name.is_some() {
        eprintln!(
            "note: {} exists; change `name` there",
            dir.path(crate::datadir::CONFIG_FILE).display()
        );
    }
    let config = NodeConfig::load(dir)?;
    let device_id = keypair.device_id().to_string();
    let data_dir = dir.root().display().to_string();
    let v = json!({"device_id": device_id, "name": config.name, "data_dir": data_dir, "created": created});
    out.show(&v, || {
        let what = if created {
            "Created"
        } else {
            "Already initialised:"
        };
        format!("{what} device {} ({device_id}) in {data_dir}", config.name)
    })
}

async fn run(dir: &DataDir, args: RunArgs) -> Result<()> {
    let mut config = NodeConfig::load(dir)?;
    if !dir.is_initialised() {
        dir.load_or_create_identity()?;
        NodeConfig::write_default(dir, args.config.name.as_deref().unwrap_or(&default_name()))?;
        config = NodeConfig::load(dir)?;
    }
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.peers.extend(args.peer);
    if args.no_mdns {
        config.mdns = false;
    }
    if let Some(api) = args.api {
        config.api = api;
    }
    config.apply(&args.config)?;
    let mut node = crate::node::start(crate::node::NodeOptions {
        data_dir: dir.clone(),
        config: config.clone(),
    })
    .await?;
    let token = dir.create_api_token(&mut rand_core::OsRng)?;
    let api = match crate::api::serve(
        node.client.clone(),
        token,
        config.api,
        config.api_allow_remote,
    )
    .await
    {
        Ok(api) => api,
        Err(e) => {
            node.shutdown().await;
            dir.clear_api_files();
            return Err(e.into());
        }
    };
    dir.write_api_addr(api.addr)?;
    tracing::info!(
        "{} ({}) is running; stop with Ctrl-C",
        config.name,
        node.device_id
    );
    // Until a signal, or until the node stops on its own (its store failed).
    let exit = tokio::select! {
        () = wait_for_stop() => None,
        exit = node.stopped() => Some(exit),
    };
    api.shutdown().await;
    node.shutdown().await;
    dir.clear_api_files();
    match exit {
        None | Some(LoopExit::Stopped) => Ok(()),
        Some(LoopExit::StoreFailed(failure)) => Err(anyhow!(
            "the node stopped: its store could not make a write durable ({}). Nothing \
             it acknowledged is lost; {}",
            failure.cause,
            crate::event_loop::store_failure_advice(&failure)
        )),
        Some(LoopExit::Crashed(why)) => Err(anyhow!("the node stopped: {why}")),
    }
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn id(dir: &DataDir, out: &Output) -> Result<()> {
    let info: NodeInfo = match ApiClient::from_data_dir(dir) {
        Ok(client) => parse(client.get("/v1/node").await?)?,
        Err(ApiCallError::DataDir(DataDirError::NotRunning(_))) => {
            let keypair = dir.load_identity()?;
            let config = NodeConfig::load(dir)?;
            NodeInfo {
                device_id: keypair.device_id().to_string(),
                name: config.name,
                listen_addrs: Vec::new(),
                fingerprint: keypair.public().fingerprint(),
            }
        }
        Err(e) => return Err(e.into()),
    };
    out.show(&info, || {
        let mut text = format!(
            "Device id:   {}\nName:        {}\nFingerprint: {}",
            info.device_id, info.name, info.fingerprint
        );
        if info.listen_addrs.is_empty() {
            text.push_str("\nNot running.");
        } else {
            text.push_str("\nListening on:");
            for a in &info.listen_addrs {
                text.push_str(&format!("\n  {a}"));
            }
        }
        text
    })
}

async fn peers(dir: &DataDir, out: &Output) -> Result<()> {
    let list: Vec<PeerView> = parse(api(dir)?.get("/v1/peers").await?)?;
    out.show(&list, || {
        if list.is_empty() {
            return "No devices nearby or connected.".to_owned();
        }
        list.iter()
            .map(|p| {
                let mut flags = Vec::new();
                if p.nearby {
                    flags.push("nearby");
                }
                if p.connected {
                    flags.push("connected");
                }
                if p.paired {
                    flags.push(if p.online { "paired, online" } else { "paired" });
                }
                format!(
                    "{}  [{}]  {}",
                    p.device_id,
                    flags.join(", "),
                    p.addrs.join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `block` and `unblock`: the action, then the device's block as it now stands.
async fn block_action(dir: &DataDir, out: &Output, action: &str, device_id: &str) -> Result<()> {
    let v = api(dir)?
        .action(action, json!({"device_id": device_id}))
        .await?;
    let b: BlockView = parse(v)?;
    out.show(&b, || block_line(&b))
}

fn block_line(b: &BlockView) -> String {
    let who = match &b.name {
        Some(name) => format!("{name} ({})", b.device_id),
        None => b.device_id.clone(),
    };
    let paired = if b.paired { "paired" } else { "not paired" };
    match b.since {
        Some(since) if b.blocked => format!("{who}  {paired}  blocked since {}", fmt_time(since)),
        _ => format!("{who}  {paired}  not blocked"),
    }
}

/// What a failed key proof means for the user, and what to do about it.
fn key_proof_hint(reason: &str, device: &str) -> String {
    match reason {
        "not_paired_on_peer" => format!(
            "it no longer holds this pairing (it was reset, or unpaired this device): pair \
             again with `vouchnet pair {device}`, or unpair it"
        ),
        "timeout" => "it connected but did not prove its key in time".to_owned(),
        other => format!("it connected but failed to prove it holds the pairing key ({other})"),
    }
}

async fn devices(dir: &DataDir, out: &Output) -> Result<()> {
    let list: Vec<DeviceView> = parse(api(dir)?.get("/v1/devices").await?)?;
    out.show(&list, || {
        if list.is_empty() {
            return "No paired devices.".to_owned();
        }
        list.iter()
            .map(|d| {
                format!(
                    "{}  {}  {}  {}  {}  paired {}{}{}",
                    d.name,
                    d.device_id,
                    d.pairing_type,
                    d.trust_level,
                    if d.online { "online" } else { "offline" },
                    fmt_time(d.paired_at),
                    d.vouched_by
                        .as_ref()
                        .map(|v| format!(" (vouched by {v})"))
                        .unwrap_or_default(),
                    d.key_proof_failed
                        .as_deref()
                        .map(|why| format!("\n    {}", key_proof_hint(why, &d.device_id)))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

// ------------------------------------------------------------------------------------------
// Pairing

async fn pair(dir: &DataDir, args: PairArgs, out: &Output) -> Result<()> {
    let client = api(dir)?;
    match args.command {
        Some(PairCommand::Requests) => {
            let list: Vec<PairingRequestView> = parse(client.get("/v1/pairings").await?)?;
            out.show(&list, || {
                if list.is_empty() {
                    return "No pairings in progress.".to_owned();
                }
                list.iter()
                    .map(|p| {
                        format!(
                            "{}  {}  {}  code {}  {}",
                            p.device_id,
                            p.name.as_deref().unwrap_or("?"),
                            p.direction,
                            p.code.as_deref().unwrap_or("(not yet)"),
                            p.stage
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Some(PairCommand::Accept { device_id, code }) => {
            pair_accept(&client, &device_id, code, out).await
        }
        Some(PairCommand::Reject { device_id }) => {
            client
                .action("network.pair.reject", json!({"device_id": device_id}))
                .await?;
            out.show(
                &json!({"device_id": device_id, "state": "rejected"}),
                || format!("Pairing with {device_id} rejected."),
            )
        }
        None => {
            let device_id = args
                .device_id
                .expect("clap requires a device id without a subcommand");
            // Subscribe before asking, so the code prompt cannot be missed.
            let events = if args.no_wait {
                None
            } else {
                Some(client.events(None).await?)
            };
            let v = client
                .action(
                    "network.pair.request",
                    json!({"device_id": device_id, "addr": args.addr}),
                )
                .await?;
            match events {
                None => {
                    let pairing: Value = v["pairing"].clone();
                    out.show(&pairing, || {
                        format!(
                            "Asked {device_id} to pair. When both devices show a code, compare them and run\n  vouchnet pair accept {device_id} --code <the code shown on the other device>"
                        )
                    })
                }
                Some(events) => wait_for_pairing(&client, events, &device_id, out).await,
            }
        }
    }
}

/// What the user answered to "do the codes match?".
enum Answer {
    Yes,
    Code(String),
    No,
}

fn read_answer() -> Answer {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return Answer::No;
    }
    let line = line.trim();
    if line.len() == 6 && line.bytes().all(|b| b.is_ascii_digit()) {
        return Answer::Code(line.to_owned());
    }
    match line.to_ascii_lowercase().as_str() {
        "y" | "yes" => Answer::Yes,
        _ => Answer::No,
    }
}

fn interactive(out: &Output) -> bool {
    !out.json && std::io::stdin().is_terminal()
}

async fn confirm_or_reject(client: &ApiClient, device_id: &str, answer: Answer) -> Result<Value> {
    match answer {
        Answer::Yes => Ok(client
            .action("network.pair.accept", json!({"device_id": device_id}))
            .await?),
        Answer::Code(code) => Ok(client
            .action(
                "network.pair.accept",
                json!({"device_id": device_id, "code": code}),
            )
            .await?),
        Answer::No => {
            client
                .action("network.pair.reject", json!({"device_id": device_id}))
                .await?;
            bail!("pairing with {device_id} rejected; nothing was stored")
        }
    }
}

fn ask_prompt(name: &str, code: &str) {
    print!(
        "Pairing with {name}. This device shows the code\n\n    {code}\n\nDoes {name} show the same code? Type y, or the code {name} shows (anything else rejects) [y/N]: "
    );
    let _ = std::io::stdout().flush();
}

async fn wait_for_pairing(
    client: &ApiClient,
    mut events: EventStream,
    device_id: &str,
    out: &Output,
) -> Result<()> {
    let mut shown_code: Option<String> = None;
    loop {
        let ev = events
            .next()
            .await
            .ok_or_else(|| anyhow!("the node stopped"))??;
        let for_us =
            ev["device_id"].as_str() == Some(device_id) || ev["id"].as_str() == Some(device_id);
        if !for_us {
            continue;
        }
        match ev["type"].as_str() {
            Some("PairingConfirmationRequired") => {
                let code = ev["code"].as_str().unwrap_or_default().to_owned();
                let name = ev["name"].as_str().unwrap_or("the other device").to_owned();
                shown_code = Some(code.clone());
                if interactive(out) {
                    ask_prompt(&name, &code);
                    let answer = tokio::select! {
                        a = tokio::task::spawn_blocking(read_answer) => a?,
                        ev = next_failure(&mut events, device_id) => {
                            bail!("\npairing with {device_id} failed: {}", ev?)
                        }
                    };
                    let result = confirm_or_reject(client, device_id, answer).await?;
                    if result["state"] == "waiting" {
                        println!("Confirmed. Waiting for {name} to confirm…");
                    }
                } else {
                    eprintln!(
                        "Code: {code} (pairing with {name}). Confirm on this device with\n  vouchnet pair accept {device_id} --code <the code shown on {name}>"
                    );
                }
            }
            Some("PairingFailed") => {
                bail!(
                    "pairing with {device_id} failed: {}",
                    ev["reason"].as_str().unwrap_or("unknown")
                )
            }
            Some("ResourceChanged") if ev["resource"] == "device" => {
                let name = ev["data"]["name"].as_str().unwrap_or(device_id).to_owned();
                let result = json!({"device_id": device_id, "state": "paired", "code": shown_code});
                return out.show(&result, || format!("Paired with {name} ({device_id})."));
            }
            _ => {}
        }
    }
}

/// The next `PairingFailed` for `device_id` (other events are skipped).
async fn next_failure(events: &mut EventStream, device_id: &str) -> Result<String> {
    loop {
        let ev = events
            .next()
            .await
            .ok_or_else(|| anyhow!("the node stopped"))??;
        if ev["type"] == "PairingFailed" && ev["device_id"].as_str() == Some(device_id) {
            return Ok(ev["reason"].as_str().unwrap_or("unknown").to_owned());
        }
    }
}

async fn pair_accept(
    client: &ApiClient,
    device_id: &str,
    code: Option<String>,
    out: &Output,
) -> Result<()> {
    let answer = match code {
        Some(code) => Answer::Code(code),
        None if interactive(out) => {
            let list: Vec<PairingRequestView> = parse(client.get("/v1/pairings").await?)?;
            let p = list
                .iter()
                .find(|p| p.device_id == device_id)
                .ok_or_else(|| anyhow!("no pairing in progress with {device_id}"))?;
            let code = p
                .code
                .clone()
                .ok_or_else(|| anyhow!("no code yet for {device_id}; try again in a moment"))?;
            ask_prompt(p.name.as_deref().unwrap_or("the other device"), &code);
            tokio::task::spawn_blocking(read_answer).await?
        }
        None => Answer::Yes,
    };
    let result = confirm_or_reject(client, device_id, answer).await?;
    let state = result["state"].as_str().unwrap_or_default().to_owned();
    out.show(&result, || match state.as_str() {
        "paired" => format!("Paired with {device_id}."),
        _ => format!("Confirmed. The pairing completes when {device_id} confirms too."),
    })
}

// ------------------------------------------------------------------------------------------
// Proxy pairing, review, audit, events

async fn vouch(dir: &DataDir, args: VouchArgs, out: &Output) -> Result<()> {
    let v = api(dir)?
        .action(
            "network.pair.vouch",
            json!({"vouchee": args.vouchee, "to": args.to, "all": args.all}),
        )
        .await?;
    let outcome: VouchOutcome = parse(v)?;
    out.show(&outcome, || {
        format!(
            "Vouching for {} in session {}. Follow it with\n  vouchnet session {}",
            args.vouchee, outcome.session_id, outcome.session_id
        )
    })
}

async fn proxy(dir: &DataDir, cmd: ProxyCommand, out: &Output) -> Result<()> {
    let client = api(dir)?;
    let (id, accept) = match cmd {
        ProxyCommand::Requests => {
            let list: Vec<ProxyRequestView> = parse(client.get("/v1/proxy/requests").await?)?;
            return out.show(&list, || {
                if list.is_empty() {
                    return "No vouches waiting for you.".to_owned();
                }
                list.iter()
                    .map(|p| {
                        format!(
                            "{}  {} ({}) vouches for {} ({}); answer before {}",
                            p.id,
                            p.voucher_name,
                            p.voucher,
                            p.vouchee_name,
                            p.vouchee,
                            fmt_time(p.deadline)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ProxyCommand::Accept { id } => (id, true),
        ProxyCommand::Reject { id } => (id, false),
    };
    let v = client
        .action(
            "network.pair.confirmProxy",
            json!({"id": id, "accept": accept}),
        )
        .await?;
    let o: ConfirmProxyOutcome = parse(v)?;
    out.show(&o, || match &o.reason {
        None => format!("{}: {}", o.vouchee, o.decision),
        Some(r) => format!("{}: {} ({r})", o.vouchee, o.decision),
    })
}

async fn review(dir: &DataDir, args: ReviewArgs, out: &Output) -> Result<()> {
    let client = api(dir)?;
    let (device_id, keep) = match args.command {
        None => {
            let list: Vec<ReviewView> = parse(client.get("/v1/review").await?)?;
            return out.show(&list, || {
                if list.is_empty() {
                    return "No device waits for a review.".to_owned();
                }
                let mut text = String::from(
                    "The device that vouched for these was unpaired. Keep or remove each with\n  vouchnet review keep|remove <DEVICE_ID>",
                );
                for r in &list {
                    text.push_str(&format!(
                        "\n{}  {}  (vouched for by {})",
                        r.name, r.device_id, r.voucher
                    ));
                }
                text
            });
        }
        Some(ReviewCommand::Keep { device_id }) => (device_id, true),
        Some(ReviewCommand::Remove { device_id }) => (device_id, false),
    };
    let v = client
        .action(
            "network.device.review",
            json!({"device_id": device_id, "keep": keep}),
        )
        .await?;
    let o: ReviewOutcome = parse(v)?;
    out.show(&o, || format!("{}: {}", o.device_id, o.decision))
}

/// A trust chain in text: the device, then each step with its evidence.
fn chains_text(chains: &[TrustChainView]) -> String {
    let mut text = String::from("Trust chains:");
    if chains.is_empty() {
        text.push_str("\n  (no device)");
    }
    for c in chains {
        let name = c.name.as_deref().unwrap_or("(removed device)");
        let mut status = c.pairing_type.clone();
        if let Some(t) = &c.trust_level {
            status.push_str(&format!(", {t}"));
        }
        if let Some(v) = &c.vouched_by {
            status.push_str(&format!(", vouched by {v}"));
        }
        text.push_str(&format!("\n  {name} ({}) — {status}", c.device_id));
        for step in &c.steps {
            text.push_str(&format!(
                "\n    #{:<4} {}  {}",
                step.seq,
                fmt_time(step.at),
                step.what
            ));
            for e in &step.evidence {
                text.push_str(&format!("\n           {} by {}: {}", e.kind, e.by, e.value));
            }
        }
    }
    text
}

async fn audit(dir: &DataDir, verify: bool, chains: bool, out: &Output) -> Result<()> {
    let client = api(dir)?;
    if chains {
        let list: Vec<TrustChainView> = parse(client.get("/v1/audit/chains").await?)?;
        return out.show(&list, || chains_text(&list));
    }
    if verify {
        let report: AuditVerifyView = parse(client.get("/v1/audit?verify=true").await?)?;
        out.show(&report, || match &report.error {
            None => format!(
                "Audit trail verified: {} entries, chain intact.",
                report.entries
            ),
            Some(e) => format!("Audit trail FAILED verification: {e}"),
        })?;
        if !report.ok {
            bail!("the audit trail does not verify");
        }
        return Ok(());
    }
    let list: Vec<AuditEntryView> = parse(client.get("/v1/audit").await?)?;
    if out.json {
        return out.show(&list, String::new);
    }
    let chains: Vec<TrustChainView> = parse(client.get("/v1/audit/chains").await?)?;
    out.show(&list, || {
        if list.is_empty() {
            return "The audit trail is empty.".to_owned();
        }
        let entries = list
            .iter()
            .map(|e| format!("  #{:<4} {}  {}", e.seq, fmt_time(e.at), e.event))
            .collect::<Vec<_>>()
            .join("\n");
        format!("{}\n\nEntries:\n{entries}", chains_text(&chains))
    })
}

async fn events(dir: &DataDir, since: Option<u64>, out: &Output) -> Result<()> {
    let mut stream = api(dir)?.events(since).await?;
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let mut stdout = std::io::stdout().lock();
        if out.json {
            writeln!(stdout, "{ev}")?;
        } else {
            writeln!(stdout, "{}", describe_event(&ev))?;
        }
        stdout.flush()?;
    }
    Ok(())
}

/// A text another device wrote, made safe for a terminal: control characters (escape
/// sequences, carriage returns, line breaks) and the bidirectional overrides that can make
/// text read differently from what it is are shown as `\u{…}` escapes, so a message can
/// neither drive the terminal nor pass for another line of output.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn describe_event(ev: &Value) -> String {
    let seq = ev["seq"].as_u64().unwrap_or(0);
    let s = |k: &str| ev[k].as_str().unwrap_or("").to_owned();
    let what = match ev["type"].as_str().unwrap_or("") {
        "ResourceChanged" => format!("{} {} changed: {}", s("resource"), s("id"), ev["data"]),
        "ResourceDeleted" => format!("{} {} removed", s("resource"), s("id")),
        "PairingConfirmationRequired" => format!(
            "pairing with {} ({}): code {} — confirm with `vouchnet pair accept {} --code <code on the other device>`",
            s("name"),
            s("device_id"),
            s("code"),
            s("device_id")
        ),
        "PairingFailed" => format!("pairing with {} failed: {}", s("device_id"), s("reason")),
        "KeyProofFailed" => format!("{} failed to prove it holds the pairing key: {}", s("device_id"), s("reason")),
        "MessageReceived" => format!(
            "message from {} ({}): {}",
            s("from_name"),
            s("from"),
            printable(&s("text"))
        ),
        "ProxyPairingVouchingReady" => format!(
            "{} ({}) can be vouched for — `vouchnet vouch {} --all` (session {})",
            s("vouchee_name"),
            s("vouchee"),
            s("vouchee"),
            s("session_id")
        ),
        "ProxyPairingConfirmationRequired" => format!(
            "{} ({}) vouches for {} ({}) — `vouchnet proxy accept {}` or `proxy reject {}`",
            s("voucher_name"),
            s("voucher"),
            s("vouchee_name"),
            s("vouchee"),
            s("id"),
            s("id")
        ),
        "ProxyMessageRefused" => format!(
            "{} from {} refused: {}",
            s("message"),
            s("from"),
            s("reason")
        ),
        "DeviceReviewRequired" => format!(
            "{} was vouched for by {}, which was unpaired — `vouchnet review keep|remove {}`",
            s("device_id"),
            s("voucher"),
            s("device_id")
        ),
        other => format!("{other}: {ev}"),
    };
    format!("[{seq}] {what}")
}

/// `vouchnet ui`: a one-time login link to the web UI (see `api::ui`).
async fn ui(dir: &DataDir, open: bool, out: &Output) -> Result<()> {
    let v = api(dir)?
        .action(crate::api::ui::LOGIN_ACTION, json!({}))
        .await?;
    let path = v["path"]
        .as_str()
        .context("unexpected answer from the node")?;
    let url = format!(
        "http://{}{path}",
        crate::api::ui::browser_addr(dir.read_api_addr()?)
    );
    let expires_in = v["expires_in"].as_u64().unwrap_or(0);
    out.show(&json!({"url": url, "expires_in": expires_in}), || {
        format!(
            "Open this link in a browser on this device (it works once, for {} minutes):\n\n  {url}\n",
            expires_in / 60
        )
    })?;
    if open {
        if let Err(e) = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| s.success().then_some(()).ok_or(s.to_string()))
        {
            eprintln!("note: could not open a browser ({e}); open the link above by hand");
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the Unix epoch.
pub fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_as_utc_dates() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_time(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn an_error_names_each_cause_once() {
        // A cause its wrapper already quotes is not repeated.
        let full = std::io::Error::from_raw_os_error(28);
        let start = crate::node::StartError::Store(vouchnet_storage::StoreError::Io(full));
        assert_eq!(
            error_message(&anyhow::Error::new(start)),
            "database: storage i/o error: No space left on device (os error 28)"
        );
        // A context that does not quote its cause is followed by it.
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let read = anyhow::Error::new(missing).context("cannot read config.toml");
        assert_eq!(
            error_message(&read),
            "cannot read config.toml: no such file"
        );
    }

    #[test]
    fn a_full_disk_asks_for_room_and_a_failing_one_for_a_check() {
        use crate::event_loop::store_failure_advice;
        use vouchnet_storage::{StoreError, StoreFailure};
        let failure =
            |errno| StoreFailure::of(&StoreError::Io(std::io::Error::from_raw_os_error(errno)));
        assert_eq!(
            store_failure_advice(&failure(28)),
            "start it again once the disk has room"
        );
        assert_eq!(
            store_failure_advice(&failure(5)),
            "check the disk, and start it again once it works"
        );
    }

    #[test]
    fn texts_from_other_devices_cannot_drive_the_terminal() {
        assert_eq!(
            printable("plain text, ünïcode ok"),
            "plain text, ünïcode ok"
        );
        assert_eq!(
            printable("\u{1b}[2Jwiped\r\nfake line\t!"),
            "\\u{1b}[2Jwiped\\u{d}\\u{a}fake line\\u{9}!"
        );
        assert_eq!(printable("a\u{202E}cba\u{2066}"), "a\\u{202e}cba\\u{2066}");
        let ev = json!({"seq": 1, "type": "MessageReceived", "from": "X", "from_name": "tv", "text": "hi\u{7}\n"});
        assert_eq!(
            describe_event(&ev),
            "[1] message from tv (X): hi\\u{7}\\u{a}"
        );
    }

    #[test]
    fn events_are_described_in_one_line() {
        let ev = json!({"seq": 3, "type": "PairingFailed", "device_id": "X", "reason": "timeout"});
        assert_eq!(describe_event(&ev), "[3] pairing with X failed: timeout");
    }
}
