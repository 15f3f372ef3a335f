//! Errors of the namespace (what a client did wrong or asked for that cannot be) and of the
//! namenode's storage (what went wrong underneath).
//!
//! `FsError` values are results of applying a command: they travel inside Raft responses,
//! so they are serializable and deterministic (every replica computes the same one).

use serde::{Deserialize, Serialize};

/// A namespace operation that was refused. Nothing of a refused operation is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FsError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: parent directory does not exist")]
    ParentNotFound { path: String },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error("{path}: directory is not empty")]
    DirectoryNotEmpty { path: String },
    #[error("{path}: precondition failed: expected {expected}, found {actual}")]
    ConditionFailed { path: String, expected: String, actual: String },
    #[error("{path}: is being written by {holder}")]
    LeaseConflict { path: String, holder: String },
    #[error("{path}: {client} does not hold the lease ({reason})")]
    NotLeaseHolder { path: String, client: String, reason: String },
    #[error("{path}: {kind} quota exceeded (quota {quota}, would use {would_use})")]
    QuotaExceeded { path: String, kind: String, quota: u64, would_use: u64 },
    #[error("cannot rename {src} into its own subtree {dst}")]
    RenameIntoSelf { src: String, dst: String },
    #[error("{path}: permission denied: user {user} may not {action}")]
    PermissionDenied { path: String, user: String, action: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The state machine's storage failed while applying; the replica stops applying.
    #[error("namespace storage error: {0}")]
    Storage(String),
    /// An exclusive mkdir found its path taken by a directory of the very owner it asked
    /// for: a kind of `AlreadyExists` (nothing changed), telling S3's
    /// BucketAlreadyOwnedByYou from BucketAlreadyExists. (Variants are only ever added at
    /// the end: the retry cache stores them by position.)
    #[error("{path}: already exists, owned by {owner}")]
    AlreadyOwned { path: String, owner: String },
    /// The operation needs a newer cluster format than the cluster runs (an upgrade that
    /// is not finalized).
    #[error(
        "this operation needs cluster format {needs}, but the cluster runs format {cluster}: once every \
         namenode runs the new tarn, finish the upgrade with `tarn admin finalize-upgrade`"
    )]
    UpgradePending { needs: u8, cluster: u8 },
}

impl FsError {
    pub(crate) fn invalid_path(path: &str, reason: impl Into<String>) -> Self {
        FsError::InvalidPath { path: path.to_string(), reason: reason.into() }
    }
    pub(crate) fn not_found(path: &str) -> Self {
        FsError::NotFound { path: path.to_string() }
    }
    pub(crate) fn condition(path: &str, expected: impl ToString, actual: impl ToString) -> Self {
        FsError::ConditionFailed { path: path.to_string(), expected: expected.to_string(), actual: actual.to_string() }
    }
}

impl From<rocksdb::Error> for FsError {
    fn from(e: rocksdb::Error) -> Self {
        FsError::Storage(e.to_string())
    }
}

/// Errors of the namenode process: storage, configuration, raft. Variants with a `source`
/// do not repeat it in their message; print the chain (`{:#}` with anyhow) to see it.
#[derive(Debug, thiserror::Error)]
pub enum NamenodeError {
    #[error("open namespace store at {path}")]
    OpenStore { path: String, source: rocksdb::Error },
    #[error("namespace store: {0}")]
    Store(#[from] rocksdb::Error),
    #[error("{context}")]
    Io { context: String, source: std::io::Error },
    #[error("corrupt record in {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("bind {addr}")]
    Bind { addr: String, source: std::io::Error },
}

impl NamenodeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NamenodeError::Io { context: context.into(), source }
    }

    /// The message with every cause, for places that keep only a string.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }
}
