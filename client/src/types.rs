//! Tarn's own types for what the namenode answers: blocks and their replicas, block
//! health, the Raft group, content summaries. The client's public API speaks these, never
//! the wire messages, so a change of the protocol is a change of this crate only.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::{dpb, pb, Quota};

/// A block of a file at one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub block_id: u64,
    /// Raised whenever the block's replicas may differ (a pipeline recovery).
    pub generation: u64,
    pub length: u64,
    /// Its place in the file, from 0.
    pub index: u32,
}

impl From<pb::Block> for Block {
    fn from(b: pb::Block) -> Self {
        Block { block_id: b.block_id, generation: b.generation, length: b.length, index: b.index }
    }
}

impl From<&Block> for dpb::ExtendedBlock {
    fn from(b: &Block) -> Self {
        dpb::ExtendedBlock { block_id: b.block_id, gen_stamp: b.generation, length: b.length }
    }
}

/// A datanode as the namespace knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatanodeLocation {
    /// Stable across restarts.
    pub uuid: String,
    /// `host:port` of its data transfer service.
    pub addr: String,
    /// "/default-rack" without a topology file.
    pub rack: String,
}

impl From<dpb::DatanodeLocation> for DatanodeLocation {
    fn from(l: dpb::DatanodeLocation) -> Self {
        DatanodeLocation { uuid: l.uuid, addr: l.addr, rack: l.rack }
    }
}

impl From<&DatanodeLocation> for dpb::DatanodeLocation {
    fn from(l: &DatanodeLocation) -> Self {
        dpb::DatanodeLocation { uuid: l.uuid.clone(), addr: l.addr.clone(), rack: l.rack.clone() }
    }
}

/// A block with the live datanodes that hold a replica of its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedBlock {
    pub block: Block,
    /// Nearest first.
    pub locations: Vec<DatanodeLocation>,
    /// Still being written: its length may grow.
    pub under_construction: bool,
    /// The block access token that lets the caller read it from the datanodes.
    pub token: Vec<u8>,
}

impl From<pb::LocatedBlock> for LocatedBlock {
    fn from(b: pb::LocatedBlock) -> Self {
        LocatedBlock {
            block: b.block.map(Block::from).unwrap_or(Block { block_id: 0, generation: 0, length: 0, index: 0 }),
            locations: b.locations.into_iter().map(DatanodeLocation::from).collect(),
            under_construction: b.under_construction,
            token: b.token,
        }
    }
}

/// A page of a file's blocks ([`crate::NamenodeClient::get_blocks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBlocks {
    pub file_id: u64,
    /// The file's length (complete blocks plus what the last one reported).
    pub length: u64,
    pub blocks: Vec<LocatedBlock>,
    pub has_more: bool,
    /// A small file kept in the namespace (it has no blocks): its bytes.
    pub inline_data: Option<Bytes>,
}

impl From<pb::GetBlocksResponse> for FileBlocks {
    fn from(r: pb::GetBlocksResponse) -> Self {
        FileBlocks {
            file_id: r.file_id,
            length: r.length,
            blocks: r.located.into_iter().map(LocatedBlock::from).collect(),
            has_more: r.has_more,
            inline_data: r.inline_data,
        }
    }
}

/// What is under a directory (HDFS's `getContentSummary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSummary {
    pub file_count: u64,
    pub directory_count: u64,
    pub length: u64,
    /// Bytes on datanodes, replicas counted.
    pub space_consumed: u64,
    pub quota: Option<Quota>,
}

impl From<pb::ContentSummary> for ContentSummary {
    fn from(c: pb::ContentSummary) -> Self {
        ContentSummary {
            file_count: c.file_count,
            directory_count: c.directory_count,
            length: c.length,
            space_consumed: c.space_consumed,
            quota: c.quota.map(Quota::from),
        }
    }
}

impl From<pb::Quota> for Quota {
    fn from(q: pb::Quota) -> Self {
        let opt = |v: i64| if v < 0 { None } else { Some(v as u64) };
        Quota {
            namespace_quota: opt(q.namespace_quota),
            space_quota: opt(q.space_quota),
            namespace_used: q.namespace_used,
            space_used: q.space_used,
        }
    }
}

/// Attribute changes of [`crate::NamenodeClient::set_attributes`]; `None` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttributes {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mtime_ms: Option<u64>,
    pub set_xattrs: BTreeMap<String, Vec<u8>>,
    pub remove_xattrs: Vec<String>,
    /// Refuse unless `path` is still this file.
    pub expected_file_id: Option<u64>,
}

/// One member of the namenode group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    /// The last log index the leader knows it holds; 0 if unknown.
    pub matched_index: u64,
}

/// The namenode group as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// The leader's id, if one is known.
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    /// "Leader", "Follower", "Candidate", "Learner".
    pub state: String,
    pub last_log_index: u64,
    pub last_applied: u64,
    pub snapshot_index: u64,
    pub members: Vec<Member>,
    /// The format the group writes in (raised by [`crate::NamenodeClient::finalize_upgrade`]).
    pub cluster_format: u32,
    /// The newest format the answering node's binary reads.
    pub binary_format: u32,
}

impl From<pb::ClusterStatusResponse> for ClusterStatus {
    fn from(s: pb::ClusterStatusResponse) -> Self {
        ClusterStatus {
            node_id: s.node_id,
            leader_id: Some(s.leader_id).filter(|l| *l != 0),
            leader_addr: Some(s.leader_addr).filter(|a| !a.is_empty()),
            term: s.term,
            state: s.state,
            last_log_index: s.last_log_index,
            last_applied: s.last_applied,
            snapshot_index: s.snapshot_index,
            cluster_format: s.cluster_format,
            binary_format: s.binary_format,
            members: s
                .members
                .into_iter()
                .map(|m| Member { node_id: m.node_id, addr: m.addr, voter: m.voter, matched_index: m.matched_index })
                .collect(),
        }
    }
}

/// Where a datanode is in leaving the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decommission {
    InService,
    /// Its replicas are being copied elsewhere.
    Draining,
    /// Every block it held has enough replicas elsewhere: safe to shut down.
    Decommissioned,
}

impl Decommission {
    fn parse(s: &str) -> Decommission {
        match s {
            "draining" => Decommission::Draining,
            "decommissioned" => Decommission::Decommissioned,
            _ => Decommission::InService,
        }
    }

    /// "" in service, "draining", "decommissioned" (what the CLI prints).
    pub fn as_str(self) -> &'static str {
        match self {
            Decommission::InService => "",
            Decommission::Draining => "draining",
            Decommission::Decommissioned => "decommissioned",
        }
    }
}

/// One datanode as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatanodeInfo {
    pub location: DatanodeLocation,
    pub alive: bool,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub replicas: u64,
    pub since_heartbeat: Duration,
    pub transfers_in_flight: u32,
    /// Too little free space to take new blocks.
    pub full: bool,
    pub decommission: Decommission,
}

/// Block health over the whole namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockSummary {
    pub files: u64,
    pub bytes: u64,
    pub blocks: u64,
    /// Fewer live replicas than the file's replication, fixable now or not.
    pub under_replicated: u64,
    /// Of `under_replicated`, those too few live datanodes can take a copy of.
    pub under_replicated_unfixable: u64,
    /// No live replica at all.
    pub missing: u64,
    pub corrupt_replicas: u64,
    pub over_replicated: u64,
}

/// Datanodes and block health, from the leader (HDFS's `dfsadmin -report`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatanodeReport {
    pub datanodes: Vec<DatanodeInfo>,
    pub blocks: BlockSummary,
    /// The leader refuses namespace changes until enough blocks are reported after a start.
    pub safe_mode: bool,
}

impl From<pb::DatanodeReportResponse> for DatanodeReport {
    fn from(r: pb::DatanodeReportResponse) -> Self {
        let b = r.blocks.unwrap_or_default();
        DatanodeReport {
            datanodes: r
                .datanodes
                .into_iter()
                .map(|d| DatanodeInfo {
                    location: d.location.map(DatanodeLocation::from).unwrap_or_else(|| DatanodeLocation {
                        uuid: String::new(),
                        addr: String::new(),
                        rack: String::new(),
                    }),
                    alive: d.alive,
                    capacity_bytes: d.capacity_bytes,
                    free_bytes: d.free_bytes,
                    used_bytes: d.used_bytes,
                    replicas: d.replicas,
                    since_heartbeat: Duration::from_millis(d.last_heartbeat_ms_ago),
                    transfers_in_flight: d.transfers_in_flight,
                    full: d.full,
                    decommission: Decommission::parse(&d.decommission),
                })
                .collect(),
            blocks: BlockSummary {
                files: b.files,
                bytes: b.bytes,
                blocks: b.blocks,
                under_replicated: b.under_replicated,
                under_replicated_unfixable: b.under_replicated_unfixable,
                missing: b.missing,
                corrupt_replicas: b.corrupt_replicas,
                over_replicated: b.over_replicated,
            },
            safe_mode: r.safe_mode,
        }
    }
}

/// One block's health in an fsck page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckBlock {
    pub block_id: u64,
    pub generation: u64,
    pub length: u64,
    /// Live replicas that count toward the replication (not on dead or draining nodes).
    pub live: u32,
    /// What the cluster can give it now: min(the file's replication, live datanodes).
    pub expected: u32,
    /// Datanode addresses of its live replicas.
    pub locations: Vec<String>,
    pub corrupt: u32,
    pub under_construction: bool,
    /// Short of the replication, and too few live datanodes can take a copy to reach it.
    pub cannot_fix: bool,
}

/// One file's block health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckFile {
    pub path: String,
    pub length: u64,
    pub replication: u32,
    /// Being written.
    pub open: bool,
    pub blocks: Vec<FsckBlock>,
    /// A small file kept in the namespace: no blocks, one copy per namenode voter.
    pub inline: bool,
    /// An inline file whose kept bytes are not there (a damaged namespace).
    pub inline_missing: bool,
    pub inline_copies: u32,
}

/// A page of [`crate::NamenodeClient::fsck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckPage {
    pub files: Vec<FsckFile>,
    pub has_more: bool,
    /// Live datanodes that can take a new replica (not full, not draining).
    pub target_datanodes: u32,
}

impl From<pb::FsckResponse> for FsckPage {
    fn from(r: pb::FsckResponse) -> Self {
        FsckPage {
            files: r
                .files
                .into_iter()
                .map(|f| FsckFile {
                    path: f.path,
                    length: f.length,
                    replication: f.replication,
                    open: f.open,
                    blocks: f
                        .blocks
                        .into_iter()
                        .map(|b| FsckBlock {
                            block_id: b.block_id,
                            generation: b.gen_stamp,
                            length: b.length,
                            live: b.live,
                            expected: b.expected,
                            locations: b.locations,
                            corrupt: b.corrupt,
                            under_construction: b.under_construction,
                            cannot_fix: b.cannot_fix,
                        })
                        .collect(),
                    inline: f.inline,
                    inline_missing: f.inline_missing,
                    inline_copies: f.inline_copies,
                })
                .collect(),
            has_more: r.has_more,
            target_datanodes: r.target_datanodes,
        }
    }
}

/// What a re-seal of the small files under the current master key did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResealReport {
    /// The master key id (hex) the leader seals under.
    pub key_id: String,
    pub resealed: u64,
    /// Already under that key.
    pub current: u64,
    /// Sealed under a key the leader does not hold (see `errors`).
    pub unreadable: u64,
    /// The first few reasons files could not be re-sealed.
    pub errors: Vec<String>,
}
