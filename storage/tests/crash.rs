//! Crash test: no acknowledged vouch is lost, none is applied twice.
//!
//! The test binary runs itself as a child (`VOUCHNET_CRASH_CHILD=<dir>`) that loops over
//! vouch cycles between two stores, a voucher's and a target's:
//! 1. **enqueue**: the voucher records a session and queues the vouch (one transaction);
//! 2. **deliver**: it takes the due entry and moves the target to Waiting;
//! 3. **accept**: the target accepts (device + nonce + decision + audit);
//! 4. **answer**: the voucher records the target's signed acceptance.
//!
//! After each step returns (so after the store flushed) the child appends `<step> <cycle>`
//! to an acknowledgement log and fsyncs it, then prints a progress line. The parent kills
//! the child with SIGKILL after a seeded random number of progress lines plus a seeded
//! random spin, at least 100 times; after each kill it reopens both stores and checks:
//! - every acknowledged enqueue is still queued, or recorded as delivered (Waiting or
//!   Accepted), never both, and every Queued target has its queue entry;
//! - every acknowledged delivery left the queue; every acknowledged acceptance is a
//!   device with its nonce and decision; every acknowledged answer is Accepted;
//! - no vouch was applied twice: one device and one audit acceptance per session;
//! - both audit trails verify.
//!
//! A restarted child resumes whatever the last one left half done, so at the end a child
//! run to completion must bring every session to Accepted, each exactly once.
//!
//! Every other kill is a **power cut**: that child runs with `support/power_cut.c`
//! preloaded, and after the kill every file of the stores and the acknowledgement log is
//! put back to what it held at its last `fsync` or `fdatasync` (what a power cut keeps; a
//! plain kill keeps everything the process wrote). The same checks must hold. Without a C
//! compiler those kills stay plain, and the test says so (SKIPPED).

mod common;
#[allow(dead_code)]
mod support {
    pub mod preload;
}

use common::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vouchnet_protocol::identity::DeviceKeypair;
use vouchnet_protocol::messages::{AcceptedHow, Decision, VouchCertificate, VouchResponse};
use vouchnet_protocol::model::{QueueKind, VouchProof, VouchStatus};
use vouchnet_protocol::signing::Signed;
use vouchnet_storage::*;

const CHILD_ENV: &str = "VOUCHNET_CRASH_CHILD";
const FINISH_ENV: &str = "VOUCHNET_CRASH_FINISH";
const KILLS: usize = 110;
const SEED: u64 = 0xc7a5_4001;
/// The voucher is device 1, the target device 0; vouchees are numbered from here.
const VOUCHEE_BASE: u32 = 10_000;

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(dir) => child(Path::new(&dir), std::env::var(FINISH_ENV).is_ok()),
        Err(_) => {
            let started = Instant::now();
            let (kills, power_cuts) = parent();
            println!(
                "test crash_recovery_loses_no_acknowledged_vouch ... ok ({kills} kills, \
                 {power_cuts} of them power cuts, {:.1?})",
                started.elapsed()
            );
            println!("crash: 1 passed, 0 failed");
        }
    }
}

// ---------------------------------------------------------------------------- child

fn vouchee(i: u64) -> DeviceKeypair {
    kp32(VOUCHEE_BASE + u32::try_from(i).expect("cycle fits u32"))
}

fn accept_for(i: u64) -> AcceptVouch {
    let v = vouchee(i);
    let when = at(i * 1000);
    let cert = VouchCertificate {
        v: 1,
        session_id: sid(i),
        voucher: id(1),
        vouchee: v.device_id(),
        vouchee_key: v.public(),
        vouchee_name: name("vouchee"),
        target: id(0),
        issued_at: when,
        nonce: nonce(i),
    };
    let vouch = Signed::sign(&kp(1), &cert);
    let how = AcceptedHow::Automatic;
    let r = VouchResponse {
        v: 1,
        session_id: sid(i),
        vouch_nonce: nonce(i),
        vouch_digest: vouch.body_digest(),
        responder: id(0),
        voucher: id(1),
        vouchee: v.device_id(),
        decision: Decision::Accepted { how },
        decided_at: when,
    };
    let response = Signed::sign(&kp(0), &r);
    AcceptVouch {
        session_id: sid(i),
        voucher: id(1),
        vouchee: v.device_id(),
        vouchee_key: v.public(),
        vouchee_name: name("vouchee"),
        nonce: nonce(i),
        nonce_expires_at: when.saturating_add(Duration::from_secs(360)),
        proof: VouchProof { vouch, response },
        how,
        session_key: key(7),
        at: when,
    }
}

fn session_for(i: u64) -> vouchnet_protocol::model::VouchingSession {
    let v = vouchee(i);
    let mut s = session(sid(i), 0, &[0], at(i * 1000));
    s.vouchee = v.device_id();
    s.vouchee_key = v.public();
    s
}

fn cycle_of(s: &vouchnet_protocol::ids::SessionId) -> u64 {
    u64::from_be_bytes(s.0[..8].try_into().expect("8 bytes"))
}

struct Child {
    voucher: Store,
    target: Store,
    log: std::fs::File,
    out: std::io::Stdout,
}

impl Child {
    /// Records an acknowledged step: only called after the store call returned.
    fn ack(&mut self, step: &str, i: u64) {
        // One write call for the whole line: `writeln!` on a file issues one per piece, and
        // a kill between them would leave a fragment that the next run's line continues.
        self.log
            .write_all(format!("{step} {i}\n").as_bytes())
            .expect("log");
        self.log.sync_data().expect("fsync log");
        writeln!(self.out, "{step} {i}").expect("progress");
        self.out.flush().expect("flush progress");
    }

    fn deliver(&mut self, i: u64) {
        let w = waiting(nonce(i), at(i * 1000 + 30_000));
        self.voucher
            .mark_delivering(vref(sid(i), 0), &w)
            .expect("deliver");
        self.ack("D", i);
    }

    fn accept(&mut self, i: u64) -> vouchnet_protocol::messages::SignedResponse {
        let response = match self.target.accept_vouch(&accept_for(i)).expect("accept") {
            AcceptOutcome::Accepted(rec) => match rec.proof {
                Some(DeviceProof::Vouch(p)) => p.response,
                other => panic!("unexpected proof {other:?}"),
            },
            AcceptOutcome::AlreadyDecided(d) => d.response.expect("accepted with a response"),
            AcceptOutcome::Refused(r) => panic!("cycle {i} refused: {r:?}"),
        };
        self.ack("A", i);
        response
    }

    fn answer(&mut self, i: u64, response: &vouchnet_protocol::messages::SignedResponse) {
        let mut s = self
            .voucher
            .session(&sid(i))
            .expect("read")
            .expect("session");
        s.targets.insert(
            id(0),
            VouchStatus::Accepted {
                response: response.clone(),
            },
        );
        self.voucher
            .record_answer(&s, &id(0), response, at(i * 1000 + 1))
            .expect("answer");
        self.ack("R", i);
    }

    /// Finishes whatever a killed predecessor left half done.
    fn resume(&mut self) -> u64 {
        let mut next = 1;
        for s in self.voucher.sessions().expect("sessions") {
            let i = cycle_of(&s.id);
            next = next.max(i + 1);
            match &s.targets[&id(0)] {
                VouchStatus::Queued => {
                    self.deliver(i);
                    let r = self.accept(i);
                    self.answer(i, &r);
                }
                VouchStatus::Waiting { .. } => {
                    let r = self.accept(i);
                    self.answer(i, &r);
                }
                VouchStatus::Accepted { .. } => {}
                other => panic!("cycle {i} in unexpected status {other:?}"),
            }
        }
        next
    }
}

fn child(dir: &Path, finish: bool) {
    let voucher = Store::open(dir.join("voucher")).expect("open voucher");
    let target = Store::open(dir.join("target")).expect("open target");
    if target.device(&id(1)).expect("read").is_none() {
        target.pair_direct(&direct(1, at(0))).expect("pair voucher");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acks.log"))
        .expect("log");
    let mut c = Child {
        voucher,
        target,
        log,
        out: std::io::stdout(),
    };
    writeln!(c.out, "open").expect("progress");
    let mut i = c.resume();
    if finish {
        return;
    }
    loop {
        let s = session_for(i);
        let e = queue_entry(sid(i), id(0), QueueKind::Vouch, at(i * 1000));
        c.voucher
            .write(|tx| {
                tx.record_vouched(&s, at(i * 1000))?;
                tx.enqueue(&e)?;
                Ok(())
            })
            .expect("enqueue");
        c.ack("E", i);
        for due in c.voucher.due(at(i * 1000), 8).expect("due") {
            c.deliver(cycle_of(&due.session_id));
        }
        let r = c.accept(i);
        c.answer(i, &r);
        i += 1;
    }
}

// ---------------------------------------------------------------------------- parent

/// Where the children's stderr goes: beside `dir`, whose files a power cut rolls back.
fn stderr_of(dir: &Path) -> PathBuf {
    dir.with_extension("stderr")
}

fn spawn(dir: &Path, finish: bool, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.env(CHILD_ENV, dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(stderr_of(dir))
                .expect("stderr file"),
        ));
    if finish {
        cmd.env(FINISH_ENV, "1");
    }
    cmd.spawn().expect("spawn child")
}

fn acked(dir: &Path) -> BTreeMap<String, BTreeSet<u64>> {
    let text = std::fs::read_to_string(dir.join("acks.log")).unwrap_or_default();
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    // Only complete lines: a kill may cut the last one short.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut parts = line.split_whitespace();
        let (Some(step), Some(i)) = (parts.next(), parts.next()) else {
            panic!("malformed ack line {line:?}");
        };
        out.entry(step.to_owned())
            .or_default()
            .insert(i.parse().expect("cycle number"));
    }
    out
}

fn check_invariants(dir: &Path, full_verify: bool) -> usize {
    let acks = acked(dir);
    let get = |k: &str| acks.get(k).cloned().unwrap_or_default();
    let voucher = Store::open(dir.join("voucher")).expect("voucher store reopens after a kill");
    let target = Store::open(dir.join("target")).expect("target store reopens after a kill");

    // Voucher: queued ⇔ entry present; delivered ⇒ no entry.
    let sessions: BTreeMap<u64, _> = voucher
        .sessions()
        .expect("sessions")
        .into_iter()
        .map(|s| (cycle_of(&s.id), s))
        .collect();
    let mut queued = 0;
    for (i, s) in &sessions {
        let entry = voucher.queue_entry(vref(sid(*i), 0)).expect("read");
        match &s.targets[&id(0)] {
            VouchStatus::Queued => {
                assert!(entry.is_some(), "cycle {i}: Queued without its queue entry");
                queued += 1;
            }
            VouchStatus::Waiting { .. } | VouchStatus::Accepted { .. } => {
                assert!(
                    entry.is_none(),
                    "cycle {i}: delivered but still queued (would deliver twice)"
                );
            }
            other => panic!("cycle {i}: unexpected status {other:?}"),
        }
    }
    assert_eq!(voucher.depth().expect("depth"), queued, "depth counter");
    assert_eq!(
        voucher.queue_entries().expect("entries").len() as u64,
        queued
    );
    for i in get("E") {
        assert!(sessions.contains_key(&i), "acknowledged enqueue {i} lost");
    }
    for i in get("D") {
        assert!(
            matches!(
                sessions[&i].targets[&id(0)],
                VouchStatus::Waiting { .. } | VouchStatus::Accepted { .. }
            ),
            "acknowledged delivery {i} not recorded"
        );
    }
    for i in get("R") {
        assert!(
            matches!(sessions[&i].targets[&id(0)], VouchStatus::Accepted { .. }),
            "acknowledged answer {i} lost"
        );
    }

    // Target: every acknowledged acceptance is there; none applied twice.
    for i in get("A") {
        let d = target.device(&vouchee(i).device_id()).expect("read");
        assert!(d.is_some(), "acknowledged acceptance {i} lost");
        assert!(
            target.nonce_seen(&nonce(i)).expect("read"),
            "nonce of {i} lost"
        );
        assert!(
            target
                .decision(&sid(i), &vouchee(i).device_id())
                .expect("read")
                .is_some(),
            "decision of {i} lost"
        );
    }
    let mut accepted_sessions = BTreeMap::new();
    for e in target.audit_entries(0, usize::MAX).expect("audit") {
        if let AuditEvent::VouchAccepted { session, .. } = e.event {
            *accepted_sessions.entry(cycle_of(&session)).or_insert(0u32) += 1;
        }
    }
    assert!(
        accepted_sessions.values().all(|n| *n == 1),
        "a vouch applied twice: {accepted_sessions:?}"
    );
    let proxied = target.devices().expect("devices").len() - 1;
    assert_eq!(
        proxied,
        accepted_sessions.len(),
        "device records and audited acceptances differ"
    );
    for (i, s) in &sessions {
        if matches!(s.targets[&id(0)], VouchStatus::Accepted { .. }) {
            assert!(
                accepted_sessions.contains_key(i),
                "voucher saw acceptance {i} the target does not have"
            );
        }
    }
    if full_verify {
        voucher.verify_audit().expect("voucher audit verifies");
        target.verify_audit().expect("target audit verifies");
    }
    sessions.len()
}

/// Runs the kills; returns how many, and how many of them were power cuts.
fn parent() -> (usize, usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = tmp.path().join("run");
    std::fs::create_dir(&dir).expect("run directory");
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).expect("images directory");
    let library = support::preload::build(tmp.path(), "power_cut", "power cuts of the crash test");
    let power_cut_env = library
        .as_deref()
        .map(|library| support::preload::power_cut_env(library, &dir, &images));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(SEED);
    let (mut kills, mut power_cuts) = (0, 0);
    while kills < KILLS {
        let power_cut = power_cut_env.filter(|_| kills % 2 == 1);
        if power_cut.is_some() {
            // What the last child left is on disk by now, as after a clean shutdown.
            support::preload::baseline(&dir, &images);
        }
        let mut child = spawn(&dir, false, power_cut.as_ref().map_or(&[], |e| &e[..]));
        let lines: usize = if rng.gen_bool(0.1) {
            0
        } else {
            rng.gen_range(1..=24)
        };
        let spin: u32 = rng.gen_range(0..200_000);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        for _ in 0..lines {
            line.clear();
            if out.read_line(&mut line).expect("read progress") == 0 {
                break;
            }
        }
        for _ in 0..spin {
            std::hint::spin_loop();
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() != Some(9) {
                let err = std::fs::read_to_string(stderr_of(&dir)).unwrap_or_default();
                panic!("child ended by itself ({status:?}) before the kill:\n{err}");
            }
        }
        if power_cut.is_some() {
            support::preload::restore(&dir, &images);
            power_cuts += 1;
        }
        kills += 1;
        check_invariants(&dir, kills % 10 == 0);
    }
    // A last child resumes and finishes everything; then every session is Accepted once.
    let mut finisher = spawn(&dir, true, &[]);
    let status = finisher.wait().expect("finisher");
    assert!(
        status.success(),
        "finisher failed: {}",
        std::fs::read_to_string(stderr_of(&dir)).unwrap_or_default()
    );
    let sessions = check_invariants(&dir, true);
    let voucher = Store::open(dir.join("voucher")).expect("open");
    assert_eq!(voucher.depth().expect("depth"), 0);
    for s in voucher.sessions().expect("sessions") {
        assert!(
            matches!(s.targets[&id(0)], VouchStatus::Accepted { .. }),
            "cycle {} unfinished",
            cycle_of(&s.id)
        );
    }
    assert!(
        sessions > KILLS / 2,
        "the children made progress ({sessions} cycles)"
    );
    (kills, power_cuts)
}
