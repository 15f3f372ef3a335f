//! What the leader reports about blocks and datanodes: the admin API's datanode report and
//! fsck, and readers' reports of corrupt replicas. Answers are the admin API's messages;
//! errors are typed ([`StateError`]): the RPC edges make statuses of them.

use std::time::Instant;

use tarn_proto::datanode as pb;
use tarn_proto::namenode as pb_nn;

use crate::blocks::Location;
use crate::error::FsError;
use crate::kv::SnapView;
use crate::monitor::{decommission_state, fixable, safe_mode_message};
use crate::namespace::{Caller, Found, Namespace, READ};
use crate::state::{ensure_leader, NodeState, StateError};

/// A datanode's location as the protocols carry it.
pub fn location_pb(l: &Location) -> pb::DatanodeLocation {
    pb::DatanodeLocation { uuid: l.uuid.clone(), addr: l.addr.clone(), rack: l.rack.clone() }
}

/// Replicas one reader's report may name at most.
const BAD_REPLICAS_PER_REPORT_MAX: usize = 1000;

/// A reader's report of corrupt replicas (the client API's `ReportBadBlocks`, HDFS's
/// `reportBadBlocks`): any authenticated caller may send it, so it is checked against what
/// the leader knows. A replica is marked only if the caller may read the block's file, the
/// block exists, the report names exactly the generation the file has and the node holds,
/// and another live replica remains (checked and marked under one lock): a reader's report
/// never takes away a block's last live replica (its datanode's own verification can).
/// Returns how many were marked; the block monitor replaces them.
pub fn reader_reported_bad(s: &NodeState, who: &Caller, r: &pb_nn::ReportBadBlocksRequest) -> Result<u32, StateError> {
    let user = &who.user;
    ensure_leader(s)?;
    if r.replicas.len() > BAD_REPLICAS_PER_REPORT_MAX {
        return Err(StateError::InvalidRequest(format!(
            "{} bad replicas in one report (at most {BAD_REPLICAS_PER_REPORT_MAX})",
            r.replicas.len()
        )));
    }
    let now = Instant::now();
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let who = ns.with_groups(who)?;
    let mut marked = 0;
    for bad in &r.replicas {
        let (Some(b), Some(node)) = (bad.block.as_ref(), bad.node.as_ref()) else {
            return Err(StateError::InvalidRequest("a bad replica needs its block and its datanode".into()));
        };
        let Some((rec, inode, _)) = ns.block_by_id(b.block_id)? else {
            continue; // deleted meanwhile
        };
        // Only a reader of the file may say its replicas are bad.
        let path = ns.path_of(inode.id)?;
        ns.check_access(&Found { path, inode }, &who, READ, "report its replicas")?;
        if b.gen_stamp != rec.generation {
            tracing::info!(uuid = %node.uuid, block_id = b.block_id, %user, "corruption report of another generation ignored");
            continue;
        }
        if !s.blocks.mark_corrupt_unless_last(&node.uuid, b.block_id, rec.generation, now) {
            tracing::warn!(uuid = %node.uuid, block_id = b.block_id, %user, reason = %r.reason,
                "a reader's corruption report not taken (not held at that generation, or the last live replica)");
            continue;
        }
        tracing::warn!(uuid = %node.uuid, block_id = b.block_id, %user, reason = %r.reason, "corrupt replica reported by a reader");
        marked += 1;
    }
    Ok(marked)
}

/// Datanodes and block health over the whole namespace (the leader's view).
pub fn datanode_report(s: &NodeState) -> Result<pb_nn::DatanodeReportResponse, StateError> {
    ensure_leader(s)?;
    let now = Instant::now();
    let nodes = s.blocks.all_nodes(now);
    let targets = s.blocks.replica_targets(now);
    let datanodes = nodes
        .iter()
        .map(|(n, alive)| pb_nn::DatanodeInfo {
            location: Some(location_pb(&n.loc)),
            alive: *alive,
            capacity_bytes: n.capacity_bytes(),
            free_bytes: n.free_bytes(),
            used_bytes: n.used_bytes(),
            replicas: n.blocks.len() as u64,
            last_heartbeat_ms_ago: now.saturating_duration_since(n.last_seen).as_millis() as u64,
            transfers_in_flight: n.transfers_in_flight,
            full: n.full(),
            decommission: decommission_state(s, &n.loc.uuid, now),
        })
        .collect();
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let mut sum = pb_nn::BlockSummary::default();
    let mut current: Option<crate::records::Inode> = None;
    ns.visit_blocks(&mut |file, b| {
        if current.as_ref().map(|i| i.id) != Some(file) {
            current = ns.get_inode(file)?;
            sum.files += 1;
        }
        let Some(inode) = &current else { return Ok(true) };
        let open = inode.last_block_open && b.index + 1 == inode.block_count;
        sum.blocks += 1;
        sum.bytes += b.length;
        let h = s.blocks.health(b.block_id, b.generation, now);
        sum.corrupt_replicas += h.corrupt.len() as u64;
        if open {
            return Ok(true);
        }
        // Short of the file's replication whatever the reason, dead datanodes included
        // (HDFS's count): the monitor copies what it can, and says what it cannot.
        let replication = inode.replication as usize;
        if h.live.is_empty() {
            sum.missing += 1;
        } else if h.counted() < replication {
            sum.under_replicated += 1;
            if !fixable(&h, replication, &targets) {
                sum.under_replicated_unfixable += 1;
            }
        } else if h.counted() > replication {
            sum.over_replicated += 1;
        }
        Ok(true)
    })?;
    let safe_mode = safe_mode_message(s).is_some();
    Ok(pb_nn::DatanodeReportResponse { datanodes, blocks: Some(sum), safe_mode })
}

/// Per-file block health under `path` (a file or a directory), one page at a time.
pub fn fsck(s: &NodeState, r: &pb_nn::FsckRequest) -> Result<pb_nn::FsckResponse, StateError> {
    ensure_leader(s)?;
    let now = Instant::now();
    let live_nodes = s.blocks.live_count(now);
    let targets = s.blocks.replica_targets(now);
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let limit = if r.limit == 0 { 1000 } else { (r.limit as usize).min(10_000) };
    let found = ns.resolve(&r.path)?;
    let found = found.ok_or_else(|| FsError::NotFound { path: r.path.clone() })?;
    let (files, has_more) = if found.inode.is_dir() {
        let prefix = if found.path.ends_with('/') { found.path.clone() } else { format!("{}/", found.path) };
        ns.list_recursive(&prefix, &r.start_after, limit, false)?
    } else {
        (vec![(found.path.clone(), found.inode.clone())], false)
    };
    let voters = s.raft.metrics().borrow().membership_config.membership().voter_ids().count() as u32;
    let mut out = Vec::new();
    for (path, inode) in files {
        let mut blocks = Vec::new();
        let mut start = 0;
        loop {
            let (bs, more) = ns.get_blocks(inode.id, start, 1000)?;
            start += bs.len() as u32;
            for b in bs {
                let h = s.blocks.health(b.block_id, b.generation, now);
                let replication = inode.replication as usize;
                blocks.push(pb_nn::FsckBlock {
                    cannot_fix: h.counted() < replication && !fixable(&h, replication, &targets),
                    block_id: b.block_id,
                    gen_stamp: b.generation,
                    length: b.length,
                    live: h.counted() as u32,
                    expected: (inode.replication as usize).min(live_nodes) as u32,
                    locations: h.live.iter().map(|l| l.addr.clone()).collect(),
                    corrupt: h.corrupt.len() as u32,
                    under_construction: inode.last_block_open && b.index + 1 == inode.block_count,
                });
            }
            if !more {
                break;
            }
        }
        let inline = inode.is_inline();
        let inline_missing = inline && ns.inline_data(inode.id)?.is_none();
        out.push(pb_nn::FsckFile {
            path,
            length: inode.length,
            replication: inode.replication as u32,
            open: inode.writer.is_some(),
            blocks,
            inline,
            inline_missing,
            inline_copies: if inline { voters } else { 0 },
        });
    }
    Ok(pb_nn::FsckResponse { files: out, has_more, target_datanodes: targets.len() as u32 })
}
