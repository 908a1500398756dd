//! Five `vouchnet` processes on loopback, driven only through the CLI: a new phone pairs
//! directly with the laptop once, and the laptop vouches for it to three other devices —
//! one accepts automatically, one asks its user (answered with `proxy accept`), and one is
//! offline and gets the vouch from the queue when it comes back. Then the phone sends a
//! sealed text to a device it never paired with directly, and every audit trail verifies.

mod cli_support;

use cli_support::*;
use serde_json::Value;

#[test]
fn five_processes_grow_a_network_through_the_cli_with_one_target_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fast = ["--queue-poll-interval", "1"];
    let laptop = Node::start(root, "laptop", &fast);
    let desk = Node::start(root, "desk", &fast);
    let tv = Node::start(root, "tv", &["--auto-accept-vouched", "false"]);
    let mut tablet = Node::start(root, "tablet", &fast);

    // The laptop's existing network: three devices paired directly.
    for d in [&desk, &tv, &tablet] {
        pair(d, &laptop);
    }
    // The tablet is switched off.
    tablet.stop();
    eventually("the laptop to see the tablet offline", || {
        (device(&laptop, &tablet)?["online"] == false).then_some(())
    });

    // A new phone pairs directly with the laptop, once. It knows where the desk and the tv
    // are (on a LAN mDNS would tell it).
    let phone = Node::start(
        root,
        "phone",
        &["--peer", &desk.addr(), "--peer", &tv.addr()],
    );
    pair(&phone, &laptop);

    // The laptop vouches for the phone to every device it paired with directly.
    let vouched = laptop.json(&["vouch", &phone.id, "--all"]);
    let sid = vouched["session_id"].as_str().unwrap().to_owned();

    eventually("the desk to accept automatically", || {
        (vouch_status(&laptop.json(&["session", &sid]), &desk.id) == "accepted").then_some(())
    });
    eventually("the offline tablet's vouch to be queued", || {
        (vouch_status(&laptop.json(&["session", &sid]), &tablet.id) == "queued").then_some(())
    });

    // The tv asks its user, who accepts.
    let prompt = eventually("the tv to ask its user", || {
        let list = tv.json(&["proxy", "requests"]);
        list.as_array()?
            .iter()
            .find(|p| p["vouchee"] == phone.id.as_str())
            .cloned()
    });
    assert_eq!(prompt["voucher"], laptop.id.as_str());
    assert_eq!(prompt["vouchee_name"], "phone");
    assert!(prompt["deadline"].as_u64().unwrap() > 0);
    tv.json(&["proxy", "accept", prompt["id"].as_str().unwrap()]);
    eventually("the tv's acceptance to reach the laptop", || {
        (vouch_status(&laptop.json(&["session", &sid]), &tv.id) == "accepted").then_some(())
    });

    // The tablet comes back; the queued vouch is delivered, signed afresh.
    tablet.restart(&["--peer", &laptop.addr(), "--peer", &phone.addr()]);
    let session = eventually("the session to complete", || {
        let s = laptop.json(&["session", &sid]);
        (s["state"] == "completed").then_some(s)
    });
    for d in [&desk, &tv, &tablet] {
        assert_eq!(vouch_status(&session, &d.id), "accepted", "{}", d.name);
    }
    assert_eq!(session["vouchee"], phone.id.as_str());

    // Each target lists the phone as proxied, vouched by the laptop, and the phone lists
    // each of them the same way.
    for d in [&desk, &tv, &tablet] {
        let rec = eventually(&format!("{} to list the phone", d.name), || {
            device(d, &phone)
        });
        assert_eq!(rec["pairing_type"], "proxied");
        assert_eq!(rec["vouched_by"], laptop.id.as_str());
        let rec = eventually(&format!("the phone to list {}", d.name), || {
            device(&phone, d)
        });
        assert_eq!(rec["pairing_type"], "proxied");
        assert_eq!(rec["vouched_by"], laptop.id.as_str());
    }

    // A sealed text between two devices that never paired directly.
    eventually("the phone and the tv to be connected and proven", || {
        (device(&phone, &tv)?["online"] == true).then_some(())
    });
    phone.json(&["send", &tv.id, "hello from the phone"]);
    let inbox = tv.json(&["inbox"]);
    let msg = inbox
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["from"] == phone.id.as_str())
        .expect("the tv received the phone's text");
    assert_eq!(msg["text"], "hello from the phone");

    // Every device's audit trail verifies, and the laptop's shows the vouching session.
    for n in [&laptop, &desk, &tv, &tablet, &phone] {
        let v = n.json(&["audit", "--verify"]);
        assert_eq!(v["ok"], true, "{}: {v}", n.name);
    }
    // Two direct pairings per new device were never needed: the phone has one.
    let direct: Vec<_> = phone
        .json(&["devices"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["pairing_type"] == "direct")
        .map(|d| d["device_id"].clone())
        .collect();
    assert_eq!(direct, vec![Value::from(laptop.id.as_str())]);
}
