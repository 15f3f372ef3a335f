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
//! (`Op::SetClusterFormat`), and only when every member has answered the leader since the
//! finalize began with a binary that reads it. A group formed by this binary starts at its
//! format. A node that still meets what it cannot read stops with an error naming both
//! versions (`format::decode`, `network::check_format`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::format::FORMAT_CURRENT;
use crate::types::{NodeId, Op};

/// How long a finalize waits for every member to answer the leader.
pub const FINALIZE_WAIT: Duration = Duration::from_secs(3);

/// Why the members cannot take a format yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    /// Some have not answered since the check began (down, cut off, or slow): try again.
    Waiting(Vec<String>),
    /// Some run a binary that cannot read it: upgrade them first.
    Older(Vec<String>),
}

impl Unready {
    pub fn reasons(&self) -> &[String] {
        match self {
            Unready::Waiting(w) | Unready::Older(w) => w,
        }
    }
}

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

    /// A member answered: its binary reads formats up to `binary`, and its message was of
    /// format `content` (a binary from before `binary_format` existed sends 0 there, but a
    /// message in format 1 proves it reads format 1).
    pub fn heard(&self, node: NodeId, binary: u8, content: u8) {
        let f = binary.max(content);
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(node, (f, Instant::now()));
    }

    /// Whether every one of `members` but `me` answered at or after `since` with a binary
    /// that reads `target`.
    pub fn check_members(&self, me: NodeId, members: &[NodeId], target: u8, since: Instant) -> Result<(), Unready> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let (mut older, mut waiting) = (Vec::new(), Vec::new());
        for &m in members.iter().filter(|m| **m != me) {
            match peers.get(&m) {
                Some((f, at)) if *at >= since && *f < target => {
                    older.push(format!("namenode {m} runs a binary that reads formats up to {f}, not {target}"))
                }
                Some((_, at)) if *at >= since => {}
                _ => waiting.push(format!("namenode {m} has not answered this leader")),
            }
        }
        if !older.is_empty() {
            Err(Unready::Older(older))
        } else if !waiting.is_empty() {
            Err(Unready::Waiting(waiting))
        } else {
            Ok(())
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
    fn a_member_not_heard_from_since_or_on_an_older_binary_blocks_the_finalize() {
        let f = Formats::new(0);
        let members = [1, 2, 3];
        f.heard(2, 1, 0);
        let since = Instant::now();
        // Node 2's answer came before the check began: it does not count.
        let why = f.check_members(1, &members, 1, since).unwrap_err();
        assert!(matches!(&why, Unready::Waiting(w) if w.len() == 2), "{why:?}");
        f.heard(2, 1, 0);
        f.heard(3, 0, 0);
        let why = f.check_members(1, &members, 1, since).unwrap_err();
        assert_eq!(why, Unready::Older(vec!["namenode 3 runs a binary that reads formats up to 0, not 1".into()]));
        // A binary from before `binary_format` that sends format 1 reads format 1.
        f.heard(3, 0, 1);
        assert_eq!(f.check_members(1, &members, 1, since), Ok(()));
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
