//! Errors of the datanode. Each one names the block or file it concerns, so that a message
//! read far away (in a client, in `tarn admin fsck`) says what failed and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DatanodeError {
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every data directory is full (or the one holding a replica being written filled up).
    #[error("no space for block {block_id}: {reason}")]
    DiskFull { block_id: u64, reason: String },
    #[error("block {block_id}: no replica on this datanode")]
    ReplicaNotFound { block_id: u64 },
    /// A writer still holds the replica (a pipeline being torn down); try again shortly.
    #[error("block {block_id}: replica is open by another writer")]
    ReplicaBusy { block_id: u64 },
    #[error("block {block_id}: replica already exists ({state})")]
    ReplicaExists { block_id: u64, state: &'static str },
    /// The replica's generation stamp is not the one asked for (an older or newer version).
    #[error("block {block_id}: generation stamp {found} on disk, {expected} asked for")]
    StaleGeneration { block_id: u64, expected: u64, found: u64 },
    /// Stored bytes do not match their checksum, or the file is shorter than recorded.
    #[error("block {block_id}: corrupt replica: {detail}")]
    Corrupt { block_id: u64, detail: String },
    /// The replica is encrypted under another master key than this datanode's: not
    /// corruption (the replica is fine), a configuration mistake.
    #[error("block {block_id}: wrong master key: {detail}")]
    WrongMasterKey { block_id: u64, detail: String },
    #[error("block {block_id}: range {offset}+{len} is outside the replica (length {length})")]
    OutOfRange { block_id: u64, offset: u64, len: u64, length: u64 },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl DatanodeError {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DatanodeError::Io { context, path, source }
    }

    /// Whether the error means the stored replica cannot be trusted (report it as corrupt).
    pub fn is_corruption(&self) -> bool {
        matches!(self, DatanodeError::Corrupt { .. })
    }
}

pub type Result<T, E = DatanodeError> = std::result::Result<T, E>;
