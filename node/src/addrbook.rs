//! Last known addresses of paired devices, so they can be redialled after a restart.
//!
//! This is a cache, not trust state: an address says where a device *was*, and the Noise
//! handshake checks who answers there. It lives in `addresses.json` beside the database,
//! holds only paired devices, and at most [`MAX_ADDRS`] addresses each (newest first).
//!
//! A node writes it in the background ([`AddressBook::write_in_background`]): each save is
//! a synced file write, and the event loop must not wait on the disk because a device
//! reconnected from a new port. The writer writes the newest version it was handed and
//! skips those it never reached; [`AddressBook::close`] waits until the last one is on
//! disk.

use crate::datadir::{write_atomic, DataDirError};
use libp2p::Multiaddr;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::watch;
use vouchnet_protocol::DeviceId;

/// Most addresses kept per device.
pub const MAX_ADDRS: usize = 8;

/// The address book.
#[derive(Debug)]
pub struct AddressBook {
    path: Option<PathBuf>,
    entries: Entries,
    writer: Option<Writer>,
}

/// The book's entries, as handed to the writer.
type Entries = BTreeMap<DeviceId, Vec<Multiaddr>>;

/// The background writer: the newest version of the book not yet written, and the task
/// writing it.
#[derive(Debug)]
struct Writer {
    newest: watch::Sender<Option<Entries>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Writer {
    /// A loop dropped without [`AddressBook::close`] (aborted, as a crash would) writes
    /// nothing more.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
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
        AddressBook {
            path,
            entries,
            writer: None,
        }
    }

    /// From now on [`AddressBook::save`] hands the book to a task that writes it, and
    /// returns at once. Needs a tokio runtime; a book without a file has nothing to write.
    pub fn write_in_background(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let (newest, mut rx) = watch::channel(None::<Entries>);
        let task = tokio::spawn(async move {
            // Ends when the book is closed and its last version was written.
            while rx.changed().await.is_ok() {
                let Some(entries) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                // Encoding (base58 ids, text addresses) costs about as much as the write.
                let written = tokio::task::spawn_blocking(move || {
                    write_atomic(&path, &encode(&entries), 0o600).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                if let Err(e) = written {
                    tracing::warn!("cannot save the address book: {e}");
                }
            }
        });
        self.writer = Some(Writer {
            newest,
            task: Some(task),
        });
    }

    /// Stops the background writer once the last version handed to it is on disk.
    pub async fn close(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            let task = writer.task.take();
            drop(writer);
            if let Some(task) = task {
                let _ = task.await;
            }
        }
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

    /// Writes the book to disk: now, or in the background once
    /// [`AddressBook::write_in_background`] was called (then a failure is logged there).
    pub fn save(&self) -> Result<(), DataDirError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match &self.writer {
            Some(w) => {
                w.newest.send_replace(Some(self.entries.clone()));
                Ok(())
            }
            None => write_atomic(path, &encode(&self.entries), 0o600),
        }
    }
}

/// The file's bytes: pretty JSON, `{"<device id>": ["<multiaddr>", …], …}`.
fn encode(entries: &Entries) -> Vec<u8> {
    let raw: BTreeMap<String, Vec<String>> = entries
        .iter()
        .map(|(d, a)| (d.to_string(), a.iter().map(|x| x.to_string()).collect()))
        .collect();
    serde_json::to_vec_pretty(&raw).expect("strings always serialize")
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

    #[tokio::test]
    async fn written_in_the_background_the_newest_version_is_on_disk_once_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("addresses.json");
        let d =
            DeviceKeypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(4)).device_id();
        let mut book = AddressBook::load(Some(path.clone()));
        book.write_in_background();
        // Saved faster than the disk can take them: the writer may skip some, never the last.
        for port in 0..50u16 {
            book.add(
                d,
                format!("/ip4/127.0.0.1/tcp/{}", 2000 + port)
                    .parse()
                    .unwrap(),
            );
            book.save().unwrap();
        }
        book.close().await;
        let again = AddressBook::load(Some(path.clone()));
        assert_eq!(again.get(&d), book.get(&d));
        assert_eq!(again.get(&d)[0].to_string(), "/ip4/127.0.0.1/tcp/2049");
        // Closed, the book writes at once again.
        book.remove(&d);
        book.save().unwrap();
        assert!(AddressBook::load(Some(path)).get(&d).is_empty());
    }
}
