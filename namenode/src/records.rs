//! What the namespace stores in RocksDB, and the key layout.
//!
//! Column families (all keys big-endian so that they sort numerically):
//!
//! | cf         | key                                  | value                          |
//! |------------|--------------------------------------|--------------------------------|
//! | `inodes`   | inode id (u64)                       | [`Inode`]                      |
//! | `dentries` | parent id (u64) ++ child name bytes  | child inode id (u64)           |
//! | `paths`    | full path bytes (dirs end in `/`)    | inode id (u64) ++ kind (u8)    |
//! | `blocks`   | inode id (u64) ++ block index (u32)  | [`BlockRec`]                   |
//! | `blockmap` | block id (u64)                       | inode id (u64) ++ index (u32)  |
//! | `uc`       | inode id (u64)                       | lease holder (files being written) |
//! | `invalid`  | block id (u64)                       | empty: replicas to delete      |
//! | `retry`    | minute (u64) ++ client (u64) ++ call (u64) | the operation's result  |
//! | `sm_meta`  | name                                 | counters, last applied, membership |
//! | `inline`   | inode id (u64)                       | a small file's bytes, sealed   |
//!
//! `dentries` serves directory listings (children of one directory, sorted by name: a
//! prefix scan). `paths` serves listings of a whole subtree in the byte order of the full
//! path (S3 ListObjectsV2 order, where `a+b/x` sorts before `a/x`: a prefix scan too).
//! The price of `paths` is that renaming a directory rewrites one key per descendant,
//! inside the same atomic batch.
//!
//! A file with a length and no blocks is an *inline* file: its bytes are in `inline`
//! (sealed by the leader before they entered the log; the state machine never opens
//! them). Renames keep the inode id, so the bytes move with the file for free.
//!
//! Records are bincode behind a format header (`format.rs`); every record read from disk is
//! decoded with an error, never unwrapped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::FsError;

pub const CF_INODES: &str = "inodes";
pub const CF_DENTRIES: &str = "dentries";
pub const CF_PATHS: &str = "paths";
pub const CF_BLOCKS: &str = "blocks";
pub const CF_BLOCKMAP: &str = "blockmap";
pub const CF_UC: &str = "uc";
pub const CF_INVALID: &str = "invalid";
pub const CF_RETRY: &str = "retry";
pub const CF_SM_META: &str = "sm_meta";
pub const CF_INLINE: &str = "inline";
/// Raft's own column families (log store).
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_RAFT_LOG: &str = "raft_log";

/// The state machine's column families, in snapshot order. The index is the snapshot's
/// column family tag, so the order must never change.
pub const SM_CFS: [&str; 10] =
    [CF_SM_META, CF_INODES, CF_DENTRIES, CF_PATHS, CF_BLOCKS, CF_BLOCKMAP, CF_UC, CF_INVALID, CF_RETRY, CF_INLINE];

pub const ROOT_ID: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Directory,
}

impl Kind {
    pub fn tag(self) -> u8 {
        match self {
            Kind::File => b'f',
            Kind::Directory => b'd',
        }
    }
}

/// A quota on a directory, and what its subtree uses. The directory counts itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRec {
    pub namespace_quota: Option<u64>,
    pub space_quota: Option<u64>,
    pub namespace_used: u64,
    pub space_used: u64,
}

/// A file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub id: u64,
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub mtime_ms: u64,
    pub replication: u16,
    pub block_size: u64,
    /// Sum of the lengths of finalized blocks.
    pub length: u64,
    pub block_count: u32,
    /// The last block is still being written (its length is not known yet).
    pub last_block_open: bool,
    /// The lease holder while the file is being written.
    pub writer: Option<String>,
    /// Space this file is charged against quotas: (length + open block's size) * replication.
    pub space_charged: u64,
    pub quota: Option<QuotaRec>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Directory
    }

    /// A small file whose bytes are kept in the namespace (`inline`), not in blocks.
    pub fn is_inline(&self) -> bool {
        self.kind == Kind::File && self.block_count == 0 && self.length > 0
    }

    /// What this file should be charged given its current blocks.
    pub fn compute_charge(&self) -> u64 {
        let open = if self.last_block_open { self.block_size } else { 0 };
        self.length.saturating_add(open).saturating_mul(self.replication as u64)
    }
}

/// A block of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRec {
    pub block_id: u64,
    pub generation: u64,
    pub length: u64,
    pub index: u32,
}

pub use crate::format::{decode, encode};

pub fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn dentry_key(parent: u64, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn block_key(inode: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&inode.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The `paths` key of a normalized path: files as is, directories with a trailing `/`.
pub fn path_key(path: &str, kind: Kind) -> Vec<u8> {
    let mut k = path.as_bytes().to_vec();
    if kind == Kind::Directory && path != "/" {
        k.push(b'/');
    }
    k
}

pub fn path_value(id: u64, kind: Kind) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&id.to_be_bytes());
    v[8] = kind.tag();
    v
}

pub fn parse_path_value(v: &[u8]) -> Result<(u64, Kind), FsError> {
    if v.len() != 9 {
        return Err(FsError::Storage(format!("corrupt paths value of {} bytes", v.len())));
    }
    let id = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    let kind = match v[8] {
        b'f' => Kind::File,
        b'd' => Kind::Directory,
        t => return Err(FsError::Storage(format!("corrupt paths kind tag {t}"))),
    };
    Ok((id, kind))
}

pub fn parse_u64(what: &str, v: &[u8]) -> Result<u64, FsError> {
    let arr: [u8; 8] =
        v.get(..8).and_then(|s| s.try_into().ok()).ok_or_else(|| FsError::Storage(format!("corrupt {what}")))?;
    Ok(u64::from_be_bytes(arr))
}

/// The smallest key greater than every key that starts with `prefix`, if one exists.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
