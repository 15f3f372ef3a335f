//! Rolling upgrades: the cluster's format, raised only once every member can read it.
//!
//! A binary reads every format up to its own ([`FORMAT_CURRENT`]), but the group as a whole
//! writes in the **cluster format**, kept in the replicated state (`sm_meta/cluster_format`;
//! absent in a group formed before formats had versions: format 0). Until an operator
//! finalizes an upgrade (`tarn admin finalize-upgrade`, HDFS's finalize), a new binary in an
//! old cluster writes what the old binaries read:
//! - the leader refuses operations a newer format introduced ([`op_format`]) with
//!   `UpgradePending`, so no old member meets a log entry it cannot decode;
//! - snapshots are built in the cluster's format (format 0: bare records), so an old
//!   follower can install the new leader's snapshot;
//! - Raft messages name the cluster format of their content, and the sender's binary format
//!   beside it; the leader remembers each member's.
//!
//! Finalizing raises the cluster format to the leader's binary format through the log
//! (`Op::SetClusterFormat`), and only when every member has answered the leader recently
//! with a binary that reads it. A group formed by this binary starts at its format. A node
//! that still meets what it cannot read stops with an error naming both versions
//! (`format::decode`, `network::check_format`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::format::FORMAT_CURRENT;
use crate::types::{NodeId, Op};

/// How recently a member must have answered the leader for its binary format to count.
pub const PEER_FORMAT_FRESH: Duration = Duration::from_secs(10);

/// The cluster's format and what this node (as leader) heard of each member's binary.
#[derive(Debug, Default)]
pub struct Formats {
    cluster: AtomicU8,
    peers: Mutex<BTreeMap<NodeId, (u8, Instant)>>,
}

impl Formats {
    pub fn new(cluster: u8) -> Self {
        Formats { cluster: AtomicU8::new(cluster), peers: Mutex::default() }
    }

    /// The format the group writes in.
    pub fn cluster(&self) -> u8 {
        self.cluster.load(Ordering::Acquire)
    }

    pub fn set_cluster(&self, format: u8) {
        self.cluster.store(format, Ordering::Release);
    }

    /// A member answered with a binary reading formats up to `binary`.
    pub fn heard(&self, node: NodeId, binary: u8) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(node, (binary, Instant::now()));
    }

    /// Whether every one of `members` but `me` answered within [`PEER_FORMAT_FRESH`] with a
    /// binary that reads `target`; else the reasons, one per member.
    pub fn check_members(&self, me: NodeId, members: &[NodeId], target: u8) -> Result<(), Vec<String>> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut why = Vec::new();
        for &m in members.iter().filter(|m| **m != me) {
            match peers.get(&m) {
                Some((_, at)) if now.duration_since(*at) > PEER_FORMAT_FRESH => {
                    why.push(format!("namenode {m} has not answered for {:?}", now.duration_since(*at)))
                }
                Some((f, _)) if *f < target => {
                    why.push(format!("namenode {m} runs a binary that reads formats up to {f}, not {target}"))
                }
                Some(_) => {}
                None => why.push(format!("namenode {m} has not answered this leader yet")),
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// The cluster format an operation needs: the format that introduced it. Every variant is
/// named, so a new operation has to say.
pub fn op_format(op: &Op) -> u8 {
    match op {
        Op::Mkdirs { .. }
        | Op::Create(_)
        | Op::AddBlock { .. }
        | Op::Complete { .. }
        | Op::Delete { .. }
        | Op::Rename(_)
        | Op::SetReplication { .. }
        | Op::SetQuota { .. }
        | Op::SetAttributes(_)
        | Op::RecoverLease { .. }
        | Op::UpdatePipeline { .. }
        | Op::ForgetInvalid { .. }
        | Op::SetDecommission { .. }
        | Op::Concat(_)
        | Op::AddBlockKey { .. }
        | Op::EnsureSystemDirs
        | Op::ChangeGroup { .. }
        | Op::PutInline(_)
        | Op::ResealInline { .. } => 0,
        Op::As { op, .. } => op_format(op),
        Op::MkdirExclusive(_) => 1,
        // The operation that raises the format is proposed only after every member was
        // checked (its own format would keep it from ever being proposed).
        Op::SetClusterFormat { .. } => 0,
    }
}

/// The newest format this binary writes, for `ClusterStatus`.
pub fn binary_format() -> u8 {
    FORMAT_CURRENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MkdirOp;

    #[test]
    fn a_member_not_heard_from_or_on_an_older_binary_blocks_the_finalize() {
        let f = Formats::new(0);
        let members = [1, 2, 3];
        let why = f.check_members(1, &members, 1).unwrap_err();
        assert_eq!(why.len(), 2, "{why:?}");
        f.heard(2, 1);
        f.heard(3, 0);
        let why = f.check_members(1, &members, 1).unwrap_err();
        assert_eq!(why, vec!["namenode 3 runs a binary that reads formats up to 0, not 1".to_string()]);
        f.heard(3, 1);
        assert_eq!(f.check_members(1, &members, 1), Ok(()));
    }

    #[test]
    fn operations_of_a_newer_format_wait_for_it_even_on_behalf_of_a_user() {
        let m = MkdirOp {
            path: "/b".into(),
            mode: 0o755,
            owner: "alice".into(),
            group: String::new(),
            xattrs: Default::default(),
            require_dir: None,
        };
        assert_eq!(op_format(&Op::MkdirExclusive(m.clone())), 1);
        let as_user = Op::As { user: "alice".into(), op: Box::new(Op::MkdirExclusive(m)) };
        assert_eq!(op_format(&as_user), 1);
        assert_eq!(op_format(&Op::EnsureSystemDirs), 0);
    }
}
