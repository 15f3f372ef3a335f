//! Security shared by every Tarn process: the cluster CA and role certificates
//! ([`pki`]), mutual-TLS transports for gRPC with role checks ([`transport`]).
//!
//! Secure by default: a process without TLS files refuses to start unless the operator
//! set the explicit dev flag, which logs a warning ([`SecurityConfig::transport`]).

pub mod block_token;
pub mod chunk_cipher;
pub mod container_ca;
pub mod master_key;
pub mod pki;
pub mod small_file;
pub mod transport;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use block_token::{BlockKey, BlockKeys, TokenError};
pub use container_ca::{ContainerCa, ContainerCredential};
pub use master_key::{MasterKey, MASTER_KEY_ENV};
pub use pki::{Ca, Identity, Role, TlsPaths};
pub use transport::{acting_user, caller, is_superuser, Peer, RequireRole, Transport};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{what} {}: {source}", path.display())]
    Io { what: String, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How a process secures its links (the `[security]` table of the TOML config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// This process's certificate, key and the cluster CA (made by `tarn init`).
    pub tls: Option<TlsPaths>,
    /// Development only: plaintext gRPC without authentication, and (without a master
    /// key) blocks stored unencrypted. Logs a warning.
    pub insecure_dev: bool,
    /// The cluster master key (hex, mode 0600): datanodes seal every replica's data key
    /// with it. `master_key_hex` takes precedence.
    pub master_key_file: Option<PathBuf>,
    /// The master key given outside the file (the binary fills it from `TARN_MASTER_KEY`);
    /// never written to a configuration file.
    #[serde(skip)]
    pub master_key_hex: Option<String>,
    /// Namenodes, during a master key rotation: the keys the cluster had before, to open
    /// the small files still sealed under them (`tarn admin rotate-master-key
    /// --small-files` re-seals those under the current key; then drop them from here).
    pub previous_master_key_files: Vec<PathBuf>,
}

impl SecurityConfig {
    /// The transport this configuration asks for; without TLS files it is refused unless
    /// the dev flag is set.
    pub fn transport(&self) -> Result<Transport, SecurityError> {
        match (&self.tls, self.insecure_dev) {
            (Some(paths), _) => Transport::tls(paths),
            (None, true) => {
                warn_insecure("gRPC between processes is plaintext and unauthenticated");
                Ok(Transport::plaintext_dev())
            }
            (None, false) => Err(SecurityError::Invalid(
                "security.tls (ca, cert, key) is not set: run `tarn init` to create the cluster's certificates, \
                 or pass --insecure-dev for a plaintext development setup"
                    .into(),
            )),
        }
    }
}

impl SecurityConfig {
    /// The master key for encryption at rest; without one the process refuses to start
    /// unless the dev flag is set (then it warns and stores data in the clear).
    pub fn master_key(&self, who: &str) -> Result<Option<MasterKey>, SecurityError> {
        match MasterKey::from_hex_or_file(self.master_key_hex.as_deref(), self.master_key_file.as_deref())? {
            Some(k) => Ok(Some(k)),
            None if self.insecure_dev => {
                warn_insecure(&format!("{who}: no master key, data is stored unencrypted"));
                Ok(None)
            }
            None => Err(SecurityError::Invalid(format!(
                "{who}: no master key: data is encrypted at rest with the cluster master key; set \
                 security.master_key_file (tarn init writes keys/master.key) or {}, or pass --insecure-dev \
                 to store data unencrypted",
                master_key::MASTER_KEY_ENV
            ))),
        }
    }

    /// The keys of `previous_master_key_files`.
    pub fn previous_master_keys(&self) -> Result<Vec<MasterKey>, SecurityError> {
        self.previous_master_key_files.iter().map(|f| MasterKey::load(f)).collect()
    }
}

/// The one warning every relaxed setting prints.
pub fn warn_insecure(what: &str) {
    tracing::warn!("INSECURE DEV MODE: {what}; never use this outside development");
    eprintln!("WARNING: insecure dev mode: {what}; never use this outside development");
}
