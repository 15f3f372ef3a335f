//! The Raft type configuration and the commands the namespace state machine applies.
//!
//! One Raft entry carries a [`Command`]: a batch of operations proposed together so that a
//! single log fsync covers many of them. Each operation gets its own result; a refused
//! operation changes nothing, and the others in the batch still apply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::FsError;
use crate::records::{BlockRec, Inode};

/// Identifies a namenode in the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for the namespace group.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a namenode.
pub type Raft = openraft::Raft<TypeConfig>;

/// A client's (client id, call id), used to answer retries with the original result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client_id: u64,
    pub call_id: u64,
}

/// A batch of namespace operations, one Raft entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    /// The leader's clock when it proposed the batch: the only clock the state machine sees,
    /// so every replica computes the same mtimes.
    pub now_ms: u64,
    pub ops: Vec<(Option<RequestId>, Op)>,
}

/// The results of a [`Command`], one per operation, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandResponse {
    pub results: Vec<OpResult>,
}

/// The result of one operation.
pub type OpResult = Result<OpOutput, FsError>;

/// A namespace operation. Paths are validated again by the state machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    Mkdirs {
        path: String,
        mode: u32,
        owner: String,
        group: String,
    },
    Create(CreateOp),
    AddBlock {
        path: String,
        file_id: u64,
        client_name: String,
        previous_block_length: Option<u64>,
    },
    Complete {
        path: String,
        file_id: u64,
        client_name: String,
        last_block_length: Option<u64>,
        xattrs: BTreeMap<String, Vec<u8>>,
        /// Then concat the completed file into this destination (its `sources` are
        /// ignored: the file itself), in the same operation.
        publish: Option<ConcatOp>,
    },
    Delete {
        path: String,
        recursive: bool,
        expected_file_id: Option<u64>,
    },
    Rename(RenameOp),
    SetReplication {
        path: String,
        replication: u16,
    },
    /// -1 clears, 0 leaves unchanged, > 0 sets.
    SetQuota {
        path: String,
        namespace_quota: i64,
        space_quota: i64,
    },
    SetAttributes(SetAttributesOp),
    /// Closes a file whose writer is gone. `holder`, if given, must still hold the lease.
    RecoverLease {
        file_id: u64,
        holder: Option<String>,
        /// The open last block's length as recovered from its replicas (block recovery);
        /// `None`: no replica survived, the block is dropped.
        last_block_length: Option<u64>,
    },
    /// A write pipeline lost a datanode: the open last block gets a new generation stamp,
    /// so the replica left on the failed node is recognisably stale.
    UpdatePipeline {
        path: String,
        file_id: u64,
        client_name: String,
        block_id: u64,
    },
    /// Deletion commands for these blocks' replicas went out: drop them from `invalid`.
    ForgetInvalid {
        block_ids: Vec<u64>,
    },
    /// Starts (or, with `on = false`, stops) draining a datanode: no new replicas go to it
    /// and its replicas are copied elsewhere. Kept in the replicated state, so a new leader
    /// carries on.
    SetDecommission {
        uuid: String,
        on: bool,
    },
    /// Makes one closed file of several: their blocks in order, moved in metadata only
    /// (S3's CompleteMultipartUpload). The sources disappear.
    Concat(ConcatOp),
    /// `op` on behalf of `user`, who is not the superuser: the state machine checks the
    /// user's permissions against the very state the operation applies to, in the same
    /// transaction, so a concurrent chmod or rename cannot slip between check and change.
    As {
        user: String,
        op: Box<Op>,
    },
    /// A new block key, signing block access tokens from now on (the leader's, made
    /// every few hours; the newest few are kept).
    AddBlockKey {
        key: tarn_security::BlockKey,
    },
    /// Makes `/.tarn` and the sticky staging directory `/.tarn/tmp` if they are missing (the
    /// leader's, once it leads).
    EnsureSystemDirs,
    /// Adds users to and removes users from a group (the superuser's).
    ChangeGroup {
        group: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// A small file in one operation: made closed at `publish.dst` (with its conditions,
    /// attributes and owner; `publish.sources` is empty), its bytes kept in the namespace.
    /// (Variants are only ever added at the end: the log stores them by position.)
    PutInline(PutInlineOp),
    /// A small file's kept bytes sealed again (a master key rotation): replaces them if they
    /// are still the very bytes the leader read (`seal_id`, see
    /// `tarn_security::small_file::seal_id`), else changes nothing.
    ResealInline {
        file_id: u64,
        seal_id: Vec<u8>,
        sealed: Vec<u8>,
    },
    /// A directory made only if nothing is at its path, with its owner, group, mode and
    /// attributes, in one operation (S3's CreateBucket, directory markers, uploads): two
    /// concurrent makers cannot both succeed, and an existing directory is never changed.
    MkdirExclusive(MkdirOp),
    /// Raises the cluster's format (a finalized upgrade, see `crate::upgrade`); a lower or
    /// equal one changes nothing.
    SetClusterFormat {
        format: u8,
    },
}

/// See [`Op::MkdirExclusive`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MkdirOp {
    pub path: String,
    pub mode: u32,
    /// The new directory's owner; missing directories above it get the same owner and
    /// group (mode 0o755).
    pub owner: String,
    /// Empty: the parent directory's group (HDFS's rule).
    pub group: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory that must exist (S3: the bucket), so that missing directories above the
    /// path are never made in a bucket being deleted.
    pub require_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutInlineOp {
    pub publish: ConcatOp,
    pub replication: u16,
    /// The block size the file would have if it grew (shown by `stat`, used by a copy).
    pub block_size: u64,
    /// The file's length: the bytes before sealing.
    pub length: u64,
    /// The bytes as kept: sealed by the leader (see `inline.rs`); empty for an empty file.
    pub sealed: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcatOp {
    /// Closed files, each with the id it must still have, in the order of their bytes.
    pub sources: Vec<(String, u64)>,
    pub dst: String,
    /// Replace an existing destination file.
    pub overwrite: bool,
    /// Only if the destination is absent ...
    pub dst_must_be_absent: bool,
    /// ... or currently has this file id.
    pub dst_expected_file_id: Option<u64>,
    pub create_parent: bool,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory that must exist (S3: the bucket), so `create_parent` never recreates
    /// it after a concurrent delete.
    #[serde(default)]
    pub require_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateOp {
    pub path: String,
    pub overwrite: bool,
    pub expected_file_id: Option<u64>,
    pub create_parent: bool,
    pub replication: u16,
    pub block_size: u64,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub client_name: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Replace the file even though this (expired) holder still writes it: the leader
    /// decided the holder's soft limit has passed.
    pub take_over_from: Option<String>,
    /// Also allocate the first block (the output is then [`OpOutput::Created`]).
    pub allocate_block: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenameOp {
    pub src: String,
    pub dst: String,
    pub overwrite: bool,
    pub dst_must_be_absent: bool,
    pub dst_expected_file_id: Option<u64>,
    pub src_expected_file_id: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetAttributesOp {
    pub path: String,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mtime_ms: Option<u64>,
    pub set_xattrs: BTreeMap<String, Vec<u8>>,
    pub remove_xattrs: Vec<String>,
    pub expected_file_id: Option<u64>,
}

/// What a successful operation returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OpOutput {
    /// The inode after the operation (mkdirs, create, complete, rename, set*).
    Inode(Box<Inode>),
    Block(BlockRec),
    Deleted {
        deleted: bool,
        files: u64,
    },
    LeaseRecovered {
        closed: bool,
    },
    /// Housekeeping that returns nothing.
    Done,
    /// A new file and its first block (variants are only ever added at the end: the log
    /// and the retry cache store them by position).
    Created(Box<Inode>, BlockRec),
    /// Whether a small file's kept bytes were replaced (`ResealInline`).
    Resealed(bool),
}
