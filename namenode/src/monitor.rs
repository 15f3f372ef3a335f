//! The block monitor on the leader: every [`MONITOR_INTERVAL`] it acts on what datanodes
//! told it (dead datanodes, replicas of deleted blocks, under- and over-replicated and
//! corrupt replicas, draining nodes), keeps the block keys and system directories, and
//! judges block reports; safe mode's checks; block recovery of a file whose writer is gone.
//! Errors are typed ([`FsError`], [`StateError`]): the RPC edges make statuses of them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tarn_proto::datanode as pb;

use crate::blocks::{BlockHealth, Command, Location, Replica};
use crate::error::FsError;
use crate::kv::SnapView;
use crate::namespace::Namespace;
use crate::state::{ensure_leader, NodeState, StateError};
use crate::types::Op;

/// How often the block monitor runs on the leader.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// Blocks taken from `invalid` per monitor round.
const INVALID_PER_ROUND_MAX: usize = 10_000;
/// Re-replications queued per monitor round (the rest wait for the next round).
const TRANSFERS_PER_ROUND_MAX: usize = 1_000;

/// One round of the block monitor on the leader.
pub async fn monitor_round(s: &NodeState) {
    if ensure_leader(s).is_err() {
        return;
    }
    // The keys datanodes check block access tokens with: read afresh (a new leader may
    // hold an old copy), made at once by a new leader, rolled every few hours.
    if let Err(e) = crate::tokens::load(s) {
        tracing::warn!(error = %e, "could not read the block keys");
    }
    if let Err(e) = crate::tokens::ensure_key(s).await {
        tracing::warn!(error = %e, "could not make a block key");
    }
    if let Err(e) = ensure_system_dirs(s).await {
        tracing::warn!(error = %e, "could not make the system's directories");
    }
    let now = Instant::now();
    for uuid in s.blocks.expire_dead(now) {
        tracing::warn!(%uuid, "datanode is dead: its replicas no longer count");
    }
    refresh_draining(s);
    // A new leader knows no replica until datanodes report again: it deletes and copies
    // nothing until they had the time to (and, after a start, until safe mode ends).
    let term = s.raft.metrics().borrow().current_term;
    if !s.safe_mode.settled(term, now, s.blocks.limits.dead_after) || safe_mode_message(s).is_some() {
        return;
    }
    if let Err(e) = process_invalid(s).await {
        tracing::warn!(error = %e, "could not process deleted blocks");
    }
    if let Err(e) = check_replication(s, now) {
        tracing::warn!(error = %e, "replication check failed");
    }
}

/// Makes `/.tarn/tmp` (and `/.tarn`) through the log if they are missing.
async fn ensure_system_dirs(s: &NodeState) -> Result<(), StateError> {
    let present = {
        let view = SnapView::new(&s.db);
        Namespace::new(&view, 0).resolve(crate::namespace::STAGING_DIR)?.is_some()
    };
    if !present {
        s.propose(Op::EnsureSystemDirs).await?;
    }
    // Plain mkdirs through the log, so older nodes apply them alike:
    // - applications' logs: every user's worker-made directory under it, like YARN's
    //   /tmp/logs;
    // - jobs' records: every user's own directory (0700) under it;
    // - the resource managers' lease and applications' records: theirs alone (the user
    //   their certificates act as);
    let rm_user = tarn_security::Role::ResourceManager.as_str();
    for (path, mode, owner) in [
        (crate::namespace::LOGS_DIR, 0o1777, "root"),
        (crate::namespace::JOBS_DIR, 0o1777, "root"),
        (crate::namespace::RM_DIR, 0o700, rm_user),
        // - the table catalog and its default database: anyone's tables (sticky).
        (crate::namespace::CATALOG_DIR, 0o1777, "root"),
        (crate::namespace::CATALOG_DEFAULT_DIR, 0o1777, "root"),
        // - Spark Connect sessions: every user's own directory (0700) under it.
        (crate::namespace::CONNECT_DIR, 0o1777, "root"),
    ] {
        let present = {
            let view = SnapView::new(&s.db);
            Namespace::new(&view, 0).resolve(path)?.is_some()
        };
        if !present {
            let op = Op::Mkdirs { path: path.into(), mode, owner: owner.into(), group: "supergroup".into() };
            s.propose(op).await?;
        }
    }
    Ok(())
}

/// Copies the replicated set of draining datanodes into the block manager.
pub fn refresh_draining(s: &NodeState) {
    let view = SnapView::new(&s.db);
    match Namespace::new(&view, 0).decommissioning() {
        Ok(set) => s.blocks.set_draining(set.into_iter().collect()),
        Err(e) => tracing::warn!(error = %e, "could not read the decommission set"),
    }
}

/// Leaves safe mode at once (an operator's decision: some blocks have no replica left).
pub fn leave_safe_mode(s: &NodeState) {
    s.safe_mode.leave();
}

/// `Some(why)` while the namenode is in safe mode (checked, and left, on the spot).
pub fn safe_mode_message(s: &NodeState) -> Option<String> {
    s.safe_mode.message(&s.db, &s.blocks)
}

/// Replicas a report shows that the namespace no longer wants (deleted blocks, stale
/// generations), grouped as one deletion command for the reporting node.
pub fn unwanted(s: &NodeState, replicas: &[(u64, Replica)]) -> Result<Vec<(u64, u64)>, FsError> {
    // A leader that just took over (or started) may not have applied the latest blocks
    // yet: it judges no replica until it has led for a while and left safe mode.
    let term = s.raft.metrics().borrow().current_term;
    let grace = s.blocks.limits.dead_after;
    if !s.safe_mode.is_settled(term, Instant::now(), grace) || safe_mode_message(s).is_some() {
        return Ok(Vec::new());
    }
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let mut out = Vec::new();
    for (id, r) in replicas {
        match ns.block_by_id(*id)? {
            None => out.push((*id, r.gen_stamp)),
            Some((b, _, open)) if r.gen_stamp < b.generation && (r.finalized || !open) => out.push((*id, r.gen_stamp)),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// Sends deletion commands for replicas of deleted blocks, then drops them from `invalid`.
async fn process_invalid(s: &NodeState) -> Result<(), StateError> {
    let ids = {
        let view = SnapView::new(&s.db);
        Namespace::new(&view, 0).invalid_blocks(INVALID_PER_ROUND_MAX)?
    };
    if ids.is_empty() {
        return Ok(());
    }
    for id in &ids {
        for (uuid, gs) in s.blocks.holders(*id) {
            s.blocks.queue(&uuid, Command::Invalidate(vec![(*id, gs)]));
        }
    }
    // Replicas the commands miss (a node that was down) are caught by its next block
    // report, which finds the block gone from the namespace.
    s.propose(Op::ForgetInvalid { block_ids: ids }).await?;
    Ok(())
}

/// Schedules copies of under-replicated blocks (fewest live replicas first) and deletion
/// of excess and corrupt replicas once enough good ones exist.
fn check_replication(s: &NodeState, now: Instant) -> Result<(), FsError> {
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let live = s.blocks.live_count(now);
    let racks = s.blocks.live_racks(now).len();
    let mut needy: Vec<(usize, u64, u64, u64, usize)> = Vec::new();
    // Blocks with enough replicas, all on one rack while others exist (HDFS's
    // mis-replicated blocks): one more copy goes to another rack, then the excess goes.
    let mut misplaced: Vec<(u64, u64, u64, String)> = Vec::new();
    for id in s.blocks.known_blocks() {
        let Some((b, inode, open)) = ns.block_by_id(id)? else {
            // A block no file has (deleted while its node was away): delete the replicas.
            for (uuid, gs) in s.blocks.holders(id) {
                s.blocks.queue(&uuid, Command::Invalidate(vec![(id, gs)]));
            }
            s.blocks.forget_block(id);
            continue;
        };
        if open || s.blocks.recently_written(id, now) {
            continue; // the writer's pipeline owns it until the file is complete
        }
        let h = s.blocks.health(id, b.generation, now);
        let want = (inode.replication as usize).min(live);
        // Replicas on draining nodes are copy sources but do not count.
        let counted = h.counted();
        if counted < want && !h.live.is_empty() && !s.blocks.transfer_pending(id, now) {
            needy.push((counted, id, b.generation, b.length, want - counted));
        }
        if counted >= want && want > 0 {
            // Enough good copies: drop corrupt and stale ones, and any excess (never the
            // replica of a draining node: it goes with its node).
            let mut drop: Vec<String> = h.corrupt.iter().chain(&h.stale).cloned().collect();
            let keep: Vec<&Location> = h.live.iter().filter(|l| !h.draining.contains(&l.uuid)).collect();
            if counted > inode.replication as usize {
                drop.extend(excess(&keep, inode.replication as usize));
            } else if want >= 2 && racks > 1 && !s.blocks.transfer_pending(id, now) {
                let on: HashSet<&str> = keep.iter().map(|l| l.rack.as_str()).collect();
                if on.len() == 1 {
                    let rack = keep[0].rack.clone();
                    misplaced.push((id, b.generation, b.length, rack));
                }
            }
            let holders = s.blocks.holders(id);
            for uuid in drop {
                // The replica's own stamp: the datanode deletes nothing newer than that.
                let gs = holders.iter().find(|(u, _)| *u == uuid).map_or(b.generation, |(_, g)| *g);
                s.blocks.queue(&uuid, Command::Invalidate(vec![(id, gs)]));
                s.blocks.forget_replica(id, &uuid);
            }
        }
    }
    for (id, gen_stamp, length, rack) in misplaced.into_iter().take(TRANSFERS_PER_ROUND_MAX) {
        let h = s.blocks.health(id, gen_stamp, now);
        let exclude: HashSet<String> = h.live.iter().map(|l| l.uuid.clone()).collect();
        let (Some(source), Some(target)) = (h.live.first(), s.blocks.choose_off_rack(&rack, &exclude, now)) else {
            continue;
        };
        tracing::info!(block_id = id, %rack, to = %target.uuid, "every replica on one rack: copying to another");
        s.blocks.start_transfer(id, now);
        s.blocks.queue(&source.uuid, Command::Transfer { block_id: id, gen_stamp, length, targets: vec![target] });
    }
    // Blocks with one replica left first.
    needy.sort();
    for (_, id, gen_stamp, length, missing) in needy.into_iter().take(TRANSFERS_PER_ROUND_MAX) {
        let h = s.blocks.health(id, gen_stamp, now);
        // Nodes with a corrupt or stale replica may take the copy: it replaces theirs.
        let exclude: HashSet<String> = h.live.iter().map(|l| l.uuid.clone()).collect();
        let targets = s.blocks.choose_targets(missing, None, &exclude, now);
        let Some(source) = h.live.first() else { continue };
        if targets.is_empty() {
            continue;
        }
        tracing::info!(block_id = id, from = %source.uuid, to = ?targets.iter().map(|t| &t.uuid).collect::<Vec<_>>(), "re-replicating");
        s.blocks.start_transfer(id, now);
        s.blocks.queue(&source.uuid, Command::Transfer { block_id: id, gen_stamp, length, targets });
    }
    Ok(())
}

/// The replicas to remove so `keep` has `replication` left: each from the rack holding
/// the most, so the rack spread survives.
fn excess(keep: &[&Location], replication: usize) -> Vec<String> {
    let mut left: Vec<&Location> = keep.to_vec();
    // In a fixed order (the same choice every round, whatever order replicas were
    // learned in): ties go to the highest uuid.
    left.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    let mut out = Vec::new();
    while left.len() > replication {
        let count = |rack: &str| left.iter().filter(|l| l.rack == rack).count();
        let Some(i) = (0..left.len()).rev().max_by_key(|&i| count(&left[i].rack)) else { break };
        out.push(left.remove(i).uuid.clone());
    }
    out
}

/// Whether a block can have `replication` replicas with the datanodes there are now: the
/// ones it counts, plus one per datanode that could take a copy (a live one, not full, not
/// draining, without a good replica of it). A block short of its replication that cannot
/// waits for datanodes to come back (or for a lower replication), as HDFS says it.
pub fn fixable(h: &BlockHealth, replication: usize, targets: &HashSet<String>) -> bool {
    let holding: HashSet<&str> = h.live.iter().map(|l| l.uuid.as_str()).collect();
    h.counted() + targets.iter().filter(|u| !holding.contains(u.as_str())).count() >= replication
}

/// Timeout of one call to a datanode during block recovery.
const RECOVERY_CALL_TIMEOUT: Duration = Duration::from_secs(15);

fn data_transfer(
    s: &NodeState,
    addr: &str,
) -> Result<tarn_proto::datanode::data_transfer_client::DataTransferClient<tonic::transport::Channel>, String> {
    let c = s.transport.cached_channel(&format!("datanode {addr}"), || {
        tarn_security::Transport::endpoint(addr)
            .map(|e| e.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true))
            .map_err(|e| e.to_string())
    })?;
    Ok(tarn_proto::datanode::data_transfer_client::DataTransferClient::new(c))
}

/// Block recovery for a file whose writer is gone (HDFS's): asks the replicas of the open
/// last block what they hold, settles on the shortest length among those of the current
/// generation (every byte a client saw acknowledged is in all of them), gives the block a
/// new generation stamp and has each of them cut and finalize its replica. Returns that
/// length, or `None` when the file has no open block or no replica could be recovered (then
/// the block is dropped).
pub async fn recover_last_block(s: &NodeState, file_id: u64, holder: &str) -> Option<u64> {
    let (path, block) = {
        let view = SnapView::new(&s.db);
        let ns = Namespace::new(&view, 0);
        let inode = ns.get_inode(file_id).ok()??;
        if !inode.last_block_open || inode.block_count == 0 {
            return None;
        }
        let (blocks, _) = ns.get_blocks(file_id, inode.block_count - 1, 1).ok()?;
        (ns.path_of(file_id).ok()?, blocks.into_iter().next()?)
    };
    let id = block.block_id;
    let holders = s.blocks.health(id, block.generation, Instant::now()).live;
    let mut answers = Vec::new();
    for loc in holders {
        let Ok(mut dn) = data_transfer(s, &loc.addr) else { continue };
        let call = dn.get_replica(pb::GetReplicaRequest { block_id: id });
        match tokio::time::timeout(RECOVERY_CALL_TIMEOUT, call).await {
            Ok(Ok(r)) => match r.into_inner().replica {
                Some(r) if r.gen_stamp >= block.generation => answers.push((loc, r.length)),
                other => {
                    tracing::info!(block_id = id, node = %loc.addr, replica = ?other, "stale replica left out of recovery")
                }
            },
            Ok(Err(e)) => {
                tracing::info!(block_id = id, node = %loc.addr, error = %e.message(), "replica not recoverable")
            }
            Err(_) => tracing::info!(block_id = id, node = %loc.addr, "no answer during block recovery"),
        }
    }
    let length = answers.iter().map(|(_, l)| *l).min()?;
    let op = Op::UpdatePipeline { path, file_id, client_name: holder.to_string(), block_id: id };
    let new = match s.proposer.propose(None, op).await {
        Ok(Ok(crate::types::OpOutput::Block(b))) => b,
        other => {
            tracing::warn!(block_id = id, result = ?other.map(|r| r.map(|_| ())), "block recovery could not restamp the block");
            return None;
        }
    };
    let mut kept = Vec::new();
    for (loc, _) in &answers {
        let Ok(mut dn) = data_transfer(s, &loc.addr) else { continue };
        let req = pb::FinalizeRecoveredRequest { block_id: id, new_gen_stamp: new.generation, length };
        match tokio::time::timeout(RECOVERY_CALL_TIMEOUT, dn.finalize_recovered(req)).await {
            Ok(Ok(_)) => kept.push(loc.uuid.clone()),
            Ok(Err(e)) => {
                tracing::warn!(block_id = id, node = %loc.addr, error = %e.message(), "replica recovery failed")
            }
            Err(_) => tracing::warn!(block_id = id, node = %loc.addr, "replica recovery timed out"),
        }
    }
    if kept.is_empty() {
        return None;
    }
    tracing::info!(block_id = id, length, replicas = kept.len(), "block recovered");
    s.blocks.set_pipeline(id, kept, Instant::now());
    Some(length)
}

/// "" for a node in service; "draining" while some block still needs it; "decommissioned"
/// once every block it holds has its replication factor elsewhere (it may be shut down).
pub(crate) fn decommission_state(s: &NodeState, uuid: &str, now: Instant) -> String {
    if !s.blocks.is_draining(uuid) {
        return String::new();
    }
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let live = s.blocks.live_count(now);
    for id in s.blocks.blocks_of(uuid) {
        let Ok(Some((b, inode, open))) = ns.block_by_id(id) else { continue };
        let h = s.blocks.health(id, b.generation, now);
        if open || h.counted() < (inode.replication as usize).min(live) {
            return "draining".into();
        }
    }
    "decommissioned".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(uuid: &str) -> Location {
        Location { uuid: uuid.into(), addr: format!("{uuid}:1"), rack: "/r".into() }
    }

    #[test]
    fn a_block_is_fixable_only_with_enough_datanodes_to_copy_to() {
        let targets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<String>>();
        let h = BlockHealth { live: vec![loc("a"), loc("b")], ..Default::default() };
        // dn c is dead: only a and b take replicas, and they hold it already.
        assert!(!fixable(&h, 3, &targets(&["a", "b"])));
        assert!(fixable(&h, 2, &targets(&["a", "b"])));
        // A third datanode (or one whose replica is corrupt) can take the copy.
        assert!(fixable(&h, 3, &targets(&["a", "b", "c"])));
        // A replica on a draining node does not count, and the node takes no copy.
        let h = BlockHealth { live: vec![loc("a"), loc("d")], draining: vec!["d".into()], ..Default::default() };
        assert!(!fixable(&h, 3, &targets(&["a", "b"])));
        assert!(fixable(&h, 3, &targets(&["a", "b", "c"])));
    }
}
