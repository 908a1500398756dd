//! The data directory: where a device keeps its identity, configuration, database and the
//! control API's address and token.
//!
//! ```text
//! <data dir>/            mode 0700
//!   identity.key         32-byte Ed25519 seed, mode 0600 (the device *is* this key)
//!   config.toml          options, see `config.rs`
//!   db/                  the sled store (devices, keys, sessions, queue, audit)
//!   addresses.json       last known addresses of paired devices, for redialling
//!   api.token            bearer token of the control API, mode 0600, new at every `run`
//!   api.addr             the address the control API is bound to, while the node runs
//! ```
//!
//! Secrets are written with mode 0600 from the first byte (the file is created with that
//! mode, never chmod-ed afterwards), through a temporary file and a rename, so a crash never
//! leaves a half-written key. A key file that others can read is refused rather than used,
//! as ssh does: it may already have leaked.

use rand_core::{CryptoRngCore, OsRng};
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vouchnet_protocol::DeviceKeypair;
use zeroize::Zeroizing;

/// File name of the device key.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the configuration.
pub const CONFIG_FILE: &str = "config.toml";
/// Directory of the database.
pub const DB_DIR: &str = "db";
/// File name of the control API token.
pub const TOKEN_FILE: &str = "api.token";
/// File name of the control API address.
pub const API_ADDR_FILE: &str = "api.addr";
/// File name of the address book.
pub const ADDRESSES_FILE: &str = "addresses.json";
/// Environment variable that names the data directory when `--data-dir` is not given.
pub const DATA_DIR_ENV: &str = "VOUCHNET_DATA_DIR";

/// Bytes of randomness in an API token (hex-encoded, so the token is twice as long).
const TOKEN_BYTES: usize = 32;

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// No `--data-dir`, no `VOUCHNET_DATA_DIR`, and the platform has no data directory.
    #[error("no data directory: pass --data-dir or set {DATA_DIR_ENV}")]
    NoDefault,
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The device key file is not 32 bytes.
    #[error("{path}: a device key is 32 bytes, this file has {len}")]
    BadKeyLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// A secret file can be read by other users.
    #[error("{path}: readable by other users (mode {mode:o}); run `chmod 600` on it if it has not leaked, or start over with a new data directory")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The device has not been initialised.
    #[error("{0} has no device key; run `vouchnet init` first")]
    NotInitialised(PathBuf),
    /// The node is not running (no API address file).
    #[error("the node is not running (no {API_ADDR_FILE} in {0}); start it with `vouchnet run`")]
    NotRunning(PathBuf),
    /// A file has unexpected content.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A device's data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The directory `explicit` if given (the CLI fills it from `--data-dir` or
    /// `VOUCHNET_DATA_DIR`), else `<platform data dir>/vouchnet`.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<DataDir, DataDirError> {
        match explicit {
            Some(root) => Ok(DataDir { root }),
            None => dirs::data_dir()
                .map(|d| DataDir {
                    root: d.join("vouchnet"),
                })
                .ok_or(DataDirError::NoDefault),
        }
    }

    /// A data directory at `root`.
    pub fn at(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (and parents) with mode 0700 if it does not exist.
    pub fn ensure(&self) -> Result<(), DataDirError> {
        if !self.root.exists() {
            fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
            set_mode(&self.root, 0o700)?;
        }
        Ok(())
    }

    /// Whether the device has a key yet.
    pub fn is_initialised(&self) -> bool {
        self.path(IDENTITY_FILE).exists()
    }

    /// Loads the device key, creating the directory and a fresh key if there is none.
    /// Returns the key and whether it was created now.
    pub fn load_or_create_identity(&self) -> Result<(DeviceKeypair, bool), DataDirError> {
        self.ensure()?;
        if self.is_initialised() {
            return Ok((self.load_identity()?, false));
        }
        let keypair = DeviceKeypair::generate(&mut OsRng);
        write_secret(&self.path(IDENTITY_FILE), &keypair.seed()[..])?;
        Ok((keypair, true))
    }

    /// Loads the device key; fails if there is none, or if others can read it.
    pub fn load_identity(&self) -> Result<DeviceKeypair, DataDirError> {
        let path = self.path(IDENTITY_FILE);
        if !path.exists() {
            return Err(DataDirError::NotInitialised(self.root.clone()));
        }
        check_private(&path)?;
        let bytes = Zeroizing::new(fs::read(&path).map_err(io_err(&path))?);
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(
                bytes[..]
                    .try_into()
                    .map_err(|_| DataDirError::BadKeyLength {
                        path: path.clone(),
                        len: bytes.len(),
                    })?,
            );
        Ok(DeviceKeypair::from_seed(&seed))
    }

    /// Writes a fresh random API token (mode 0600) and returns it.
    pub fn create_api_token(&self, rng: &mut impl CryptoRngCore) -> Result<String, DataDirError> {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        rng.fill_bytes(&mut bytes[..]);
        let token = hex::encode(&bytes[..]);
        write_secret(&self.path(TOKEN_FILE), token.as_bytes())?;
        Ok(token)
    }

    /// Reads the API token the running node wrote.
    pub fn read_api_token(&self) -> Result<String, DataDirError> {
        let path = self.path(TOKEN_FILE);
        if !path.exists() {
            return Err(DataDirError::NotRunning(self.root.clone()));
        }
        check_private(&path)?;
        let token = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(token.trim().to_owned())
    }

    /// Records where the control API listens.
    pub fn write_api_addr(&self, addr: SocketAddr) -> Result<(), DataDirError> {
        write_atomic(
            &self.path(API_ADDR_FILE),
            format!("{addr}\n").as_bytes(),
            0o600,
        )
    }

    /// Where the running node's control API listens.
    pub fn read_api_addr(&self) -> Result<SocketAddr, DataDirError> {
        let path = self.path(API_ADDR_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataDirError::NotRunning(self.root.clone()))
            }
            Err(e) => return Err(DataDirError::Io { path, source: e }),
        };
        text.trim().parse().map_err(|e| DataDirError::Corrupt {
            path,
            reason: format!("not a socket address: {e}"),
        })
    }

    /// Removes the API address and token when the node stops, so the CLI says "not running"
    /// instead of trying a dead port.
    pub fn clear_api_files(&self) {
        for name in [API_ADDR_FILE, TOKEN_FILE] {
            let _ = fs::remove_file(self.path(name));
        }
    }
}

/// Writes `bytes` to `path` through a temporary file created with `mode`, then renames it
/// into place, so readers see the old or the new content, never a part. The directory is
/// synced after the rename: until then a power cut could undo the rename, and a file
/// written for the first time (the identity key, at `init`) would be gone.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = open_new(&tmp, mode)?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_parent(path)
}

/// fsyncs the directory holding `path`, so a rename or a new file in it is durable.
fn sync_parent(path: &Path) -> Result<(), DataDirError> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    write_atomic(path, bytes, 0o600)
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> Result<fs::File, DataDirError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> Result<fs::File, DataDirError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), DataDirError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), DataDirError> {
    Ok(())
}

/// Refuses a secret file that group or others may read or write.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), DataDirError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), DataDirError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path().join("node"));
        let (kp, created) = dir.load_or_create_identity().unwrap();
        assert!(created);
        let (again, created) = dir.load_or_create_identity().unwrap();
        assert!(!created);
        assert_eq!(kp.device_id(), again.device_id());
        assert_eq!(fs::read(dir.path(IDENTITY_FILE)).unwrap().len(), 32);
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_private_and_the_directory_is_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path().join("node"));
        dir.load_or_create_identity().unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let token = dir.create_api_token(&mut rng).unwrap();
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        assert_eq!(dir.read_api_token().unwrap(), token);
        assert_eq!(mode_of(dir.root()), 0o700);
        assert_eq!(mode_of(&dir.path(IDENTITY_FILE)), 0o600);
        assert_eq!(mode_of(&dir.path(TOKEN_FILE)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path());
        dir.load_or_create_identity().unwrap();
        set_mode(&dir.path(IDENTITY_FILE), 0o644).unwrap();
        match dir.load_identity() {
            Err(DataDirError::InsecurePermissions { mode, .. }) => assert_eq!(mode, 0o644),
            other => panic!("expected InsecurePermissions, got {other:?}"),
        }
    }

    #[test]
    fn a_truncated_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path());
        dir.ensure().unwrap();
        write_secret(&dir.path(IDENTITY_FILE), &[1u8; 31]).unwrap();
        match dir.load_identity() {
            Err(DataDirError::BadKeyLength { len, .. }) => assert_eq!(len, 31),
            other => panic!("expected BadKeyLength, got {other:?}"),
        }
    }

    #[test]
    fn api_address_round_trips_and_is_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path());
        assert!(matches!(
            dir.read_api_addr(),
            Err(DataDirError::NotRunning(_))
        ));
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        dir.write_api_addr(addr).unwrap();
        assert_eq!(dir.read_api_addr().unwrap(), addr);
        dir.clear_api_files();
        assert!(matches!(
            dir.read_api_addr(),
            Err(DataDirError::NotRunning(_))
        ));
    }
}
