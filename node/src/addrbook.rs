//! Last known addresses of paired devices, so they can be redialled after a restart.
//!
//! This is a cache, not trust state: an address says where a device *was*, and the Noise
//! handshake checks who answers there. It lives in `addresses.json` beside the database,
//! holds only paired devices, and at most [`MAX_ADDRS`] addresses each (newest first).

use crate::datadir::{write_atomic, DataDirError};
use libp2p::Multiaddr;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vouchnet_protocol::DeviceId;

/// Most addresses kept per device.
pub const MAX_ADDRS: usize = 8;

/// The address book.
#[derive(Debug)]
pub struct AddressBook {
    path: Option<PathBuf>,
    entries: BTreeMap<DeviceId, Vec<Multiaddr>>,
}

impl AddressBook {
    /// Loads the book at `path` (`None`: in memory only). An unreadable file is logged and
    /// ignored: it is a cache, and mDNS and identify refill it.
    pub fn load(path: Option<PathBuf>) -> Self {
        let mut entries = BTreeMap::new();
        if let Some(p) = &path {
            if let Ok(text) = std::fs::read_to_string(p) {
                match serde_json::from_str::<BTreeMap<String, Vec<String>>>(&text) {
                    Ok(raw) => {
                        for (id, addrs) in raw {
                            let Ok(id) = id.parse::<DeviceId>() else {
                                continue;
                            };
                            let addrs: Vec<Multiaddr> =
                                addrs.iter().filter_map(|a| a.parse().ok()).collect();
                            entries.insert(id, addrs);
                        }
                    }
                    Err(e) => tracing::warn!("ignoring unreadable {}: {e}", p.display()),
                }
            }
        }
        AddressBook { path, entries }
    }

    /// Addresses of `device`, newest first.
    pub fn get(&self, device: &DeviceId) -> &[Multiaddr] {
        self.entries.get(device).map_or(&[], |v| v.as_slice())
    }

    /// Every device with its addresses.
    pub fn all(&self) -> impl Iterator<Item = (&DeviceId, &Vec<Multiaddr>)> {
        self.entries.iter()
    }

    /// Records `addr` for `device` (moved to the front if known). Returns whether the book
    /// changed.
    pub fn add(&mut self, device: DeviceId, addr: Multiaddr) -> bool {
        let v = self.entries.entry(device).or_default();
        if v.first() == Some(&addr) {
            return false;
        }
        v.retain(|a| a != &addr);
        v.insert(0, addr);
        v.truncate(MAX_ADDRS);
        true
    }

    /// Forgets `device`.
    pub fn remove(&mut self, device: &DeviceId) -> bool {
        self.entries.remove(device).is_some()
    }

    /// Writes the book to disk.
    pub fn save(&self) -> Result<(), DataDirError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let raw: BTreeMap<String, Vec<String>> = self
            .entries
            .iter()
            .map(|(d, a)| (d.to_string(), a.iter().map(|x| x.to_string()).collect()))
            .collect();
        let text = serde_json::to_string_pretty(&raw).expect("strings always serialize");
        write_atomic(path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use vouchnet_protocol::DeviceKeypair;

    #[test]
    fn newest_first_bounded_and_persisted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("addresses.json");
        let d =
            DeviceKeypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3)).device_id();
        let mut book = AddressBook::load(Some(path.clone()));
        for port in 0..10u16 {
            book.add(
                d,
                format!("/ip4/127.0.0.1/tcp/{}", 1000 + port)
                    .parse()
                    .unwrap(),
            );
        }
        assert!(
            !book.add(d, "/ip4/127.0.0.1/tcp/1009".parse().unwrap()),
            "already first"
        );
        assert_eq!(book.get(&d).len(), MAX_ADDRS);
        assert_eq!(book.get(&d)[0].to_string(), "/ip4/127.0.0.1/tcp/1009");
        book.save().unwrap();
        let again = AddressBook::load(Some(path));
        assert_eq!(again.get(&d), book.get(&d));
    }
}
