//! The datanode protocol on the namenode leader (registration, heartbeats, block reports)
//! and the block monitor that acts on what it learns: dead datanodes, replicas of deleted
//! blocks, under- and over-replicated blocks.
//!
//! Followers answer every call with `x-tarn-leader`, like the client API: only the leader
//! keeps replica locations (see [`crate::blocks`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tarn_proto::datanode as pb;
use tarn_proto::datanode::datanode_protocol_server::DatanodeProtocol;
use tarn_proto::namenode as pb_nn;
use tonic::{Request, Response, Status};

use crate::blocks::{BlockHealth, Command, Location, Replica, Storage};
use crate::kv::SnapView;
use crate::namespace::{Caller, Found, Namespace, READ};
use crate::proposer::ProposeError;
use crate::service::{fs_status, propose_status, NodeState};
use crate::types::Op;

/// How often the block monitor runs on the leader.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// Blocks taken from `invalid` per monitor round.
const INVALID_PER_ROUND_MAX: usize = 10_000;
/// Re-replications queued per monitor round (the rest wait for the next round).
const TRANSFERS_PER_ROUND_MAX: usize = 1_000;
/// A transfer not confirmed by a block report within this time is scheduled again.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// A datanode's location, its rack from the topology table when the table names it.
pub fn location_of(l: &pb::DatanodeLocation, topology: &crate::topology::Topology) -> Location {
    Location { uuid: l.uuid.clone(), addr: l.addr.clone(), rack: topology.rack_of(&l.addr, &l.rack) }
}

pub fn location_pb(l: &Location) -> pb::DatanodeLocation {
    pb::DatanodeLocation { uuid: l.uuid.clone(), addr: l.addr.clone(), rack: l.rack.clone() }
}

fn storages_of(v: &[pb::StorageReport]) -> Vec<Storage> {
    v.iter()
        .map(|s| Storage {
            id: s.storage_id.clone(),
            capacity_bytes: s.capacity_bytes,
            free_bytes: s.free_bytes,
            used_bytes: s.used_bytes,
            full: s.full,
        })
        .collect()
}

fn replica_of(r: &pb::ReplicaReport) -> (u64, Replica) {
    let finalized = r.state == pb::ReplicaState::Finalized as i32;
    (r.block_id, Replica { gen_stamp: r.gen_stamp, length: r.length, finalized })
}

fn command_pb(c: Command) -> pb::DatanodeCommand {
    use pb::datanode_command::Command as C;
    let command = match c {
        Command::Invalidate(blocks) => C::Invalidate(pb::InvalidateCommand {
            blocks: blocks
                .into_iter()
                .map(|(block_id, gen_stamp)| pb::ExtendedBlock { block_id, gen_stamp, length: 0 })
                .collect(),
        }),
        Command::Transfer { block_id, gen_stamp, length, targets } => C::Transfer(pb::TransferCommand {
            block: Some(pb::ExtendedBlock { block_id, gen_stamp, length }),
            targets: targets.iter().map(location_pb).collect(),
        }),
    };
    pb::DatanodeCommand { command: Some(command) }
}

pub struct DatanodeService {
    s: Arc<NodeState>,
}

impl DatanodeService {
    pub fn new(s: Arc<NodeState>) -> Self {
        DatanodeService { s }
    }

    /// Refuses the call unless this node leads (with the leader's address when known).
    fn ensure_leader(&self) -> Result<(), Status> {
        ensure_leader(&self.s)
    }

    fn node(&self, l: Option<pb::DatanodeLocation>) -> Result<Location, Status> {
        let l = l.ok_or_else(|| Status::invalid_argument("request without the datanode's location"))?;
        if l.uuid.is_empty() || l.addr.is_empty() {
            return Err(Status::invalid_argument("datanode location needs a uuid and an address"));
        }
        Ok(location_of(&l, &self.s.topology))
    }

    /// Replicas a report shows that the namespace no longer wants (deleted blocks, stale
    /// generations), grouped as one deletion command for the reporting node.
    fn unwanted(&self, replicas: &[(u64, Replica)]) -> Result<Vec<(u64, u64)>, Status> {
        // A leader that just took over (or started) may not have applied the latest blocks
        // yet: it judges no replica until it has led for a while and left safe mode.
        let term = self.s.raft.metrics().borrow().current_term;
        let grace = self.s.blocks.limits.dead_after;
        if !self.s.safe_mode.is_settled(term, Instant::now(), grace) || safe_mode_message(&self.s).is_some() {
            return Ok(Vec::new());
        }
        let view = SnapView::new(&self.s.db);
        let ns = Namespace::new(&view, 0);
        let mut out = Vec::new();
        for (id, r) in replicas {
            match ns.block_by_id(*id).map_err(|e| fs_status(&e))? {
                None => out.push((*id, r.gen_stamp)),
                Some((b, _, open)) if r.gen_stamp < b.generation && (r.finalized || !open) => {
                    out.push((*id, r.gen_stamp))
                }
                Some(_) => {}
            }
        }
        Ok(out)
    }
}

pub(crate) fn ensure_leader(s: &NodeState) -> Result<(), Status> {
    let m = s.raft.metrics().borrow().clone();
    if m.current_leader == Some(s.node_id) && m.state == openraft::ServerState::Leader {
        return Ok(());
    }
    let leader_addr =
        m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
    Err(propose_status(s.node_id, &ProposeError::NotLeader { leader_id: m.current_leader, leader_addr }))
}

#[tonic::async_trait]
impl DatanodeProtocol for DatanodeService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        self.ensure_leader()?;
        let r = req.into_inner();
        let loc = self.node(r.node)?;
        // A registered datanode can check clients' block access tokens at once.
        crate::tokens::ensure_key(&self.s).await?;
        tracing::info!(uuid = %loc.uuid, addr = %loc.addr, "datanode registered");
        self.s.blocks.register(loc, storages_of(&r.storages), Instant::now());
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.s.datanode_heartbeat.as_millis() as u64,
            namenode_id: self.s.node_id,
            block_keys: crate::tokens::keys_pb(&self.s),
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.ensure_leader()?;
        let r = req.into_inner();
        let loc = self.node(r.node)?;
        let cmds = self.s.blocks.heartbeat(&loc, storages_of(&r.storages), r.transfers_in_flight, Instant::now());
        let block_keys = crate::tokens::keys_pb(&self.s);
        Ok(Response::new(match cmds {
            Some(c) => pb::HeartbeatResponse {
                commands: c.into_iter().map(command_pb).collect(),
                reregister: false,
                block_keys,
            },
            None => pb::HeartbeatResponse { commands: Vec::new(), reregister: true, block_keys },
        }))
    }

    async fn block_report(
        &self,
        req: Request<pb::BlockReportRequest>,
    ) -> Result<Response<pb::BlockReportResponse>, Status> {
        self.ensure_leader()?;
        let r = req.into_inner();
        let loc = self.node(r.node)?;
        let replicas: Vec<(u64, Replica)> = r.replicas.iter().map(replica_of).collect();
        let unwanted = self.unwanted(&replicas)?;
        let wanted: Vec<(u64, Replica)> =
            replicas.into_iter().filter(|(id, r)| !unwanted.contains(&(*id, r.gen_stamp))).collect();
        if !self.s.blocks.block_report(&loc.uuid, &wanted, r.replaces, Instant::now()) {
            return Err(Status::failed_precondition(format!("datanode {} is not registered", loc.uuid)));
        }
        if !unwanted.is_empty() {
            tracing::info!(uuid = %loc.uuid, replicas = unwanted.len(), "block report holds unwanted replicas; deleting");
        }
        let commands = if unwanted.is_empty() { Vec::new() } else { vec![command_pb(Command::Invalidate(unwanted))] };
        Ok(Response::new(pb::BlockReportResponse { commands }))
    }

    async fn incremental_block_report(
        &self,
        req: Request<pb::IncrementalBlockReportRequest>,
    ) -> Result<Response<pb::IncrementalBlockReportResponse>, Status> {
        self.ensure_leader()?;
        let r = req.into_inner();
        let loc = self.node(r.node)?;
        let received: Vec<(u64, Replica)> = r.received.iter().map(replica_of).collect();
        let unwanted = self.unwanted(&received)?;
        let wanted: Vec<(u64, Replica)> =
            received.into_iter().filter(|(id, r)| !unwanted.contains(&(*id, r.gen_stamp))).collect();
        if !self.s.blocks.incremental(&loc.uuid, &wanted, &r.deleted) {
            return Err(Status::failed_precondition(format!("datanode {} is not registered", loc.uuid)));
        }
        for (id, _) in &wanted {
            self.s.blocks.transfer_done(*id);
        }
        if !unwanted.is_empty() {
            self.s.blocks.queue(&loc.uuid, Command::Invalidate(unwanted));
        }
        Ok(Response::new(pb::IncrementalBlockReportResponse {}))
    }

    async fn report_bad_replicas(
        &self,
        req: Request<pb::ReportBadReplicasRequest>,
    ) -> Result<Response<pb::ReportBadReplicasResponse>, Status> {
        self.ensure_leader()?;
        let r = req.into_inner();
        let loc = self.node(r.node)?;
        for b in &r.blocks {
            // A report about an older version than the node now holds is out of date.
            let held = self.s.blocks.holders(b.block_id).into_iter().find(|(u, _)| *u == loc.uuid).map(|(_, g)| g);
            if held.is_some_and(|g| g > b.gen_stamp) {
                tracing::info!(uuid = %loc.uuid, block_id = b.block_id, "corruption report about an older replica ignored");
                continue;
            }
            tracing::warn!(uuid = %loc.uuid, block_id = b.block_id, reason = %r.reason, "corrupt replica reported");
            self.s.blocks.mark_corrupt(&loc.uuid, b.block_id);
        }
        Ok(Response::new(pb::ReportBadReplicasResponse {}))
    }
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
pub fn reader_reported_bad(s: &NodeState, who: &Caller, r: &pb_nn::ReportBadBlocksRequest) -> Result<u32, Status> {
    let user = &who.user;
    ensure_leader(s)?;
    if r.replicas.len() > BAD_REPLICAS_PER_REPORT_MAX {
        return Err(Status::invalid_argument(format!(
            "{} bad replicas in one report (at most {BAD_REPLICAS_PER_REPORT_MAX})",
            r.replicas.len()
        )));
    }
    let now = Instant::now();
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let who = ns.with_groups(who).map_err(|e| fs_status(&e))?;
    let mut marked = 0;
    for bad in &r.replicas {
        let (Some(b), Some(node)) = (bad.block.as_ref(), bad.node.as_ref()) else {
            return Err(Status::invalid_argument("a bad replica needs its block and its datanode"));
        };
        let Some((rec, inode, _)) = ns.block_by_id(b.block_id).map_err(|e| fs_status(&e))? else {
            continue; // deleted meanwhile
        };
        // Only a reader of the file may say its replicas are bad.
        let path = ns.path_of(inode.id).map_err(|e| fs_status(&e))?;
        ns.check_access(&Found { path, inode }, &who, READ, "report its replicas").map_err(|e| fs_status(&e))?;
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
async fn ensure_system_dirs(s: &NodeState) -> Result<(), Status> {
    let present = {
        let view = SnapView::new(&s.db);
        Namespace::new(&view, 0).resolve(crate::namespace::STAGING_DIR).map_err(|e| fs_status(&e))?.is_some()
    };
    if present {
        return Ok(());
    }
    match s.proposer.propose(None, Op::EnsureSystemDirs).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(fs_status(&e)),
        Err(e) => Err(propose_status(s.node_id, &e)),
    }
}

/// Copies the replicated set of draining datanodes into the block manager.
pub fn refresh_draining(s: &NodeState) {
    let view = SnapView::new(&s.db);
    match Namespace::new(&view, 0).decommissioning() {
        Ok(set) => s.blocks.set_draining(set.into_iter().collect()),
        Err(e) => tracing::warn!(error = %e, "could not read the decommission set"),
    }
}

/// Safe mode: after the namenode starts, it accepts no change to the namespace until a
/// fraction of the blocks (`safe_mode_threshold`) has a reported replica, so that nothing
/// is written, deleted or re-replicated on the strength of a half-known cluster. It ends
/// by itself. Reads are served throughout.
pub struct SafeMode {
    inner: std::sync::Mutex<SafeInner>,
    threshold: f64,
}

struct SafeInner {
    on: bool,
    /// Blocks in the namespace, counted once when first needed.
    total: Option<u64>,
    /// The term in which this node last became leader, and when it noticed.
    leading: Option<(u64, Instant)>,
}

impl SafeMode {
    pub fn new(threshold: f64) -> Self {
        SafeMode { inner: std::sync::Mutex::new(SafeInner { on: true, total: None, leading: None }), threshold }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SafeInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Like [`SafeMode::settled`], without noting a new term.
    fn is_settled(&self, term: u64, now: Instant, grace: Duration) -> bool {
        matches!(self.lock().leading, Some((t, since)) if t == term && now.saturating_duration_since(since) >= grace)
    }

    /// Whether this node has led in `term` for at least `grace`.
    fn settled(&self, term: u64, now: Instant, grace: Duration) -> bool {
        let mut g = self.lock();
        match g.leading {
            Some((t, since)) if t == term => now.saturating_duration_since(since) >= grace,
            _ => {
                g.leading = Some((term, now));
                false
            }
        }
    }
}

/// Leaves safe mode at once (an operator's decision: some blocks have no replica left).
pub fn leave_safe_mode(s: &NodeState) {
    let mut g = s.safe_mode.lock();
    if g.on {
        g.on = false;
        tracing::warn!("safe mode left on an operator's command");
    }
}

/// `Some(why)` while the namenode is in safe mode (checked, and left, on the spot).
pub fn safe_mode_message(s: &NodeState) -> Option<String> {
    let mut g = s.safe_mode.lock();
    if !g.on {
        return None;
    }
    let total = match g.total {
        Some(t) => t,
        None => {
            // Complete blocks only: the open last block of a file being written may never
            // have reached a datanode.
            let view = SnapView::new(&s.db);
            let ns = Namespace::new(&view, 0);
            let mut n = 0u64;
            let mut current: Option<crate::records::Inode> = None;
            if let Err(e) = ns.visit_blocks(&mut |file, b| {
                if current.as_ref().map(|i| i.id) != Some(file) {
                    current = ns.get_inode(file)?;
                }
                let open = current.as_ref().is_some_and(|i| i.last_block_open && b.index + 1 == i.block_count);
                n += u64::from(!open);
                Ok(true)
            }) {
                return Some(format!("namenode is in safe mode: counting blocks failed: {e}"));
            }
            g.total = Some(n);
            n
        }
    };
    let reported = s.blocks.reported_blocks() as u64;
    let needed = (total as f64 * s.safe_mode.threshold).ceil() as u64;
    if reported >= needed {
        g.on = false;
        tracing::info!(total, reported, "leaving safe mode");
        return None;
    }
    Some(format!(
        "namenode is in safe mode: {reported} of {total} blocks have a reported replica ({needed} needed); \
         it ends by itself as datanodes report"
    ))
}

/// Sends deletion commands for replicas of deleted blocks, then drops them from `invalid`.
async fn process_invalid(s: &NodeState) -> Result<(), String> {
    let ids = {
        let view = SnapView::new(&s.db);
        Namespace::new(&view, 0).invalid_blocks(INVALID_PER_ROUND_MAX).map_err(|e| e.to_string())?
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
    s.proposer
        .propose(None, Op::ForgetInvalid { block_ids: ids })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Schedules copies of under-replicated blocks (fewest live replicas first) and deletion
/// of excess and corrupt replicas once enough good ones exist.
fn check_replication(s: &NodeState, now: Instant) -> Result<(), String> {
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let live = s.blocks.live_count(now);
    let racks = s.blocks.live_racks(now).len();
    let mut needy: Vec<(usize, u64, u64, u64, usize)> = Vec::new();
    // Blocks with enough replicas, all on one rack while others exist (HDFS's
    // mis-replicated blocks): one more copy goes to another rack, then the excess goes.
    let mut misplaced: Vec<(u64, u64, u64, String)> = Vec::new();
    for id in s.blocks.known_blocks() {
        let Some((b, inode, open)) = ns.block_by_id(id).map_err(|e| e.to_string())? else {
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

/// Datanodes and block health over the whole namespace (the leader's view).
pub fn datanode_report(s: &NodeState) -> Result<pb_nn::DatanodeReportResponse, Status> {
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
    })
    .map_err(|e| fs_status(&e))?;
    let safe_mode = safe_mode_message(s).is_some();
    Ok(pb_nn::DatanodeReportResponse { datanodes, blocks: Some(sum), safe_mode })
}

/// Per-file block health under `path` (a file or a directory), one page at a time.
pub fn fsck(s: &NodeState, r: &pb_nn::FsckRequest) -> Result<pb_nn::FsckResponse, Status> {
    ensure_leader(s)?;
    let now = Instant::now();
    let live_nodes = s.blocks.live_count(now);
    let targets = s.blocks.replica_targets(now);
    let view = SnapView::new(&s.db);
    let ns = Namespace::new(&view, 0);
    let limit = if r.limit == 0 { 1000 } else { (r.limit as usize).min(10_000) };
    let found = ns.resolve(&r.path).map_err(|e| fs_status(&e))?;
    let found = found.ok_or_else(|| fs_status(&crate::error::FsError::NotFound { path: r.path.clone() }))?;
    let (files, has_more) = if found.inode.is_dir() {
        let prefix = if found.path.ends_with('/') { found.path.clone() } else { format!("{}/", found.path) };
        ns.list_recursive(&prefix, &r.start_after, limit, false).map_err(|e| fs_status(&e))?
    } else {
        (vec![(found.path.clone(), found.inode.clone())], false)
    };
    let voters = s.raft.metrics().borrow().membership_config.membership().voter_ids().count() as u32;
    let mut out = Vec::new();
    for (path, inode) in files {
        let mut blocks = Vec::new();
        let mut start = 0;
        loop {
            let (bs, more) = ns.get_blocks(inode.id, start, 1000).map_err(|e| fs_status(&e))?;
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
        let inline_missing = inline && ns.inline_data(inode.id).map_err(|e| fs_status(&e))?.is_none();
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
fn decommission_state(s: &NodeState, uuid: &str, now: Instant) -> String {
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
