//! What the namenode's services and background tasks share ([`NodeState`]), and the
//! typed error of the leader's work on it ([`StateError`]). The core of the crate: it
//! knows nothing of gRPC statuses; the RPC edges (`service.rs`, `dn_service.rs`) turn its
//! errors into them.

use std::sync::Arc;

use crate::error::FsError;
use crate::kv::Db;
use crate::leases::Leases;
use crate::proposer::{ProposeError, Proposer, ReadGate};
use crate::types::{NodeId, Op, OpOutput, Raft};

/// Defaults for new files.
#[derive(Debug, Clone, Copy)]
pub struct FileDefaults {
    pub replication: u16,
    pub block_size: u64,
}

/// Whether and how a namenode keeps small files' bytes in the namespace
/// (`tarn_security::small_file`).
#[derive(Debug, Clone)]
pub enum SmallFiles {
    /// Not at all (no master key): clients write every file to blocks.
    Off,
    /// Sealed under the cluster master key `key` before they enter the Raft log; opened
    /// with it or, during a rotation, with one of the `previous` keys.
    Sealed { key: tarn_security::MasterKey, previous: Vec<tarn_security::MasterKey> },
    /// In the clear: dev mode without a master key (the operator was warned).
    Clear,
}

impl SmallFiles {
    /// Sealed under `key` only.
    pub fn sealed(key: tarn_security::MasterKey) -> SmallFiles {
        SmallFiles::Sealed { key, previous: Vec::new() }
    }

    /// The key new files are sealed under (none: off or clear).
    pub fn key(&self) -> Option<&tarn_security::MasterKey> {
        match self {
            SmallFiles::Sealed { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Every key kept bytes may be opened with: the current one first.
    pub fn keys(&self) -> impl Iterator<Item = &tarn_security::MasterKey> + Clone {
        let (key, previous) = match self {
            SmallFiles::Sealed { key, previous } => (Some(key), &previous[..]),
            _ => (None, &[][..]),
        };
        key.into_iter().chain(previous.iter())
    }
}

/// What the services share.
pub struct NodeState {
    pub node_id: NodeId,
    pub raft: Raft,
    pub db: Arc<Db>,
    pub proposer: Proposer,
    pub reads: ReadGate,
    pub leases: Leases,
    pub defaults: FileDefaults,
    /// Datanodes and replica locations (leader soft state).
    pub blocks: crate::blocks::BlockManager,
    /// The heartbeat interval datanodes are told to use.
    pub datanode_heartbeat: std::time::Duration,
    pub safe_mode: crate::safe_mode::SafeMode,
    /// Racks of datanodes, from `namenode.datanodes.topology_file`.
    pub topology: crate::topology::Topology,
    /// How this node reaches its peers and datanodes.
    pub transport: tarn_security::Transport,
    /// The block keys this node signs block access tokens with (see [`crate::tokens`]).
    pub block_keys: tarn_security::BlockKeys,
    /// One new block key at a time.
    pub block_key_lock: tokio::sync::Mutex<()>,
    /// How small files' bytes are kept in the namespace, if at all.
    pub small_files: SmallFiles,
    /// The cluster's format and the members' binaries (see [`crate::upgrade`]).
    pub formats: Arc<crate::upgrade::Formats>,
}

impl NodeState {
    /// Proposes `op` (without a request id): its result, or why it was refused or not
    /// committed.
    pub async fn propose(&self, op: Op) -> Result<OpOutput, StateError> {
        Ok(self.proposer.propose(None, op).await??)
    }
}

/// Why the leader could not do what a request or its own background work asked. The RPC
/// edges map each variant to the status a client sees.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The namespace refused (or its storage failed).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Not the leader, no quorum, or Raft stopping.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// A malformed request (not a namespace refusal: no error kind is named for it).
    #[error("{0}")]
    InvalidRequest(String),
}

/// Refuses unless this node leads (with the leader's address when known).
pub fn ensure_leader(s: &NodeState) -> Result<(), ProposeError> {
    let m = s.raft.metrics().borrow().clone();
    if m.current_leader == Some(s.node_id) && m.state == openraft::ServerState::Leader {
        return Ok(());
    }
    let leader_addr =
        m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
    Err(ProposeError::NotLeader { leader_id: m.current_leader, leader_addr })
}
