//! The datanode: block replicas on local disks, checksummed per chunk ([`store`]); the
//! block transfer service ([`transfer`]: pipeline writes, verified reads); the conversation
//! with the namenode leader ([`link`]: registration, heartbeats, block reports, commands);
//! re-replication ([`replicate`]) and the background block scanner ([`scanner`]).
//!
//! **Architecture invariant:** a datanode knows blocks, never files or paths; what a block
//! belongs to is the namenode's business.

pub mod error;
pub mod link;
pub mod node;
pub mod replicate;
pub mod scanner;
pub mod seal;
pub mod store;
pub mod transfer;

pub use error::{DatanodeError, Result};
pub use node::{start, DatanodeConfig, DatanodeHandle};
pub use store::{
    rewrap_master_key, BlockStore, ReplicaInfo, ReplicaReader, ReplicaState, ReplicaWriter, Rewrapped, CHUNK_BYTES,
};
