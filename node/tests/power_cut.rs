//! A power cut under `vouchnet run`: everything the node acknowledged is there after it.
//!
//! `kill -9` alone cannot test this: the kernel keeps what the process wrote, synced or
//! not. A power cut keeps only what was synced. `storage/tests/support/power_cut.c`,
//! preloaded into the laptop's `vouchnet run`, copies each file of its database every time
//! an `fsync` or `fdatasync` of it returns; the test kills the process and puts every file
//! back to that copy (a file never synced is removed). `sync_file_range`, which sled uses to write its
//! log, does not count: it persists neither the file's size nor the disk's write cache.
//!
//! Acknowledged before the cut: a vouch queued for an offline device (the command said
//! "queued"), three blocked devices, a text another device was told was delivered. After
//! the cut and a restart all of them are there, the audit trail verifies, and the queued
//! vouch still reaches its device when it comes back.

mod cli_support;
mod common;

use cli_support::*;
use common::preload;

/// `vouchnet init` writes its files to a temporary name and renames them into place. A
/// power cut keeps a rename only once the directory is synced, so the directory must be
/// synced after each rename: else the identity key could be gone after the cut.
#[test]
fn init_syncs_the_directory_after_renaming_its_files_into_place() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(library) = preload::build(tmp.path(), "power_cut", "init's sync test") else {
        return;
    };
    let log = tmp.path().join("synced.log");
    let dir = tmp.path().join("laptop");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vouchnet"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["init", "--name", "laptop"])
        .env("LD_PRELOAD", &library)
        .env("VOUCHNET_SYNC_LOG", &log)
        .output()
        .expect("vouchnet init");
    assert!(out.status.success(), "{out:?}");
    let synced = std::fs::read_to_string(&log).unwrap();
    let synced: Vec<&str> = synced.lines().collect();
    let dir = dir.to_str().unwrap();
    for file in ["identity.key", "config.toml"] {
        let written = format!("{dir}/{file}");
        let tmp = format!(
            "{dir}/{}",
            std::path::Path::new(file).with_extension("tmp").display()
        );
        let at = synced
            .iter()
            .position(|p| *p == tmp)
            .unwrap_or_else(|| panic!("{tmp} never synced: {synced:?}"));
        assert!(
            synced[at + 1..].contains(&dir),
            "{dir} not synced after {written} was renamed into place: {synced:?}"
        );
        assert!(std::path::Path::new(&written).is_file());
    }
}

#[test]
fn a_power_cut_loses_nothing_the_node_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let Some(library) = preload::build(root, "power_cut", "power-cut test") else {
        return;
    };
    let images = root.join("images");
    std::fs::create_dir(&images).unwrap();
    let watch = root.join("laptop").join("sync.db");
    let env = preload::power_cut_env(&library, &watch, &images);
    let fast = ["--queue-poll-interval", "1"];
    let mut laptop = Node::start_with_env(root, "laptop", &fast, &env);
    let phone = Node::start(root, "phone", &fast);
    let mut tablet = Node::start(root, "tablet", &fast);
    pair(&tablet, &laptop);
    pair(&phone, &laptop);
    tablet.stop();
    eventually("the laptop to see the tablet offline", || {
        (device(&laptop, &tablet)?["online"] == false).then_some(())
    });

    // Acknowledged: a vouch queued for the offline tablet,
    let vouched = laptop.json(&["vouch", &phone.id, "--to", &tablet.id]);
    let sid = vouched["session_id"].as_str().unwrap().to_owned();
    eventually("the tablet's vouch to be queued", || {
        (vouch_status(&laptop.json(&["session", &sid]), &tablet.id) == "queued").then_some(())
    });
    // three blocked devices,
    let mut blocked: Vec<String> = (0..3)
        .map(|_| {
            let device = stranger();
            let out = vouchnet(&laptop.dir, &["block", &device]);
            assert!(out.status.success(), "{out:?}");
            device
        })
        .collect();
    blocked.sort();
    // and a text the phone was told the laptop received.
    let text = "kept through the power cut";
    phone.json(&["send", &laptop.id, text]);

    // The power goes.
    let lost = preload::cut_power(laptop.child.take().unwrap(), &watch, &images);
    println!("power cut: {lost} file(s) of the laptop's database lost unsynced writes");

    laptop.restart(&[]);
    assert_eq!(laptop.blocked_ids(), blocked);
    let inbox = laptop.json(&["inbox"]);
    let texts: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == phone.id.as_str())
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [text]);
    assert_eq!(
        vouch_status(&laptop.json(&["session", &sid]), &tablet.id),
        "queued"
    );
    assert_eq!(laptop.json(&["audit", "--verify"])["ok"], true);

    // The queue survived, and it still works: the tablet comes back and gets the vouch.
    tablet.restart(&["--peer", &laptop.addr()]);
    let session = eventually("the session to complete", || {
        let s = laptop.json(&["session", &sid]);
        (s["state"] == "completed").then_some(s)
    });
    assert_eq!(vouch_status(&session, &tablet.id), "accepted");
}
