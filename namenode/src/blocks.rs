//! Datanodes and replica locations: soft state on the leader.
//!
//! Nothing here is replicated through Raft. Datanodes register with whichever node leads,
//! and a new leader rebuilds this state from their registrations and full block reports
//! (a datanode that heartbeats to a leader that does not know it is told to register
//! again). The namespace (which blocks exist, their generation stamps and lengths) is the
//! replicated truth; this module only knows where copies are.
//!
//! **Architecture invariant:** no I/O and no clock of its own: callers pass `now`, so the
//! decisions (dead nodes, placement) are testable without waiting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

/// A transfer not confirmed by a block report within this time is scheduled again.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a datanode is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub uuid: String,
    pub addr: String,
    pub rack: String,
}

#[derive(Debug, Clone, Default)]
pub struct Storage {
    pub id: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub full: bool,
}

/// A replica as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    pub gen_stamp: u64,
    pub length: u64,
    pub finalized: bool,
}

/// A command for one datanode, delivered with its next heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Delete these replicas (block id, generation stamp).
    Invalidate(Vec<(u64, u64)>),
    /// Copy a replica (block id, generation stamp, length) to these datanodes.
    Transfer { block_id: u64, gen_stamp: u64, length: u64, targets: Vec<Location> },
}

#[derive(Debug, Clone)]
pub struct NodeDesc {
    pub loc: Location,
    pub storages: Vec<Storage>,
    pub last_seen: Instant,
    pub transfers_in_flight: u32,
    /// Blocks the node holds, as reported.
    pub blocks: HashSet<u64>,
    commands: Vec<Command>,
    /// Declared dead: what it held was forgotten, so it must register and report again.
    expired: bool,
}

impl NodeDesc {
    pub fn capacity_bytes(&self) -> u64 {
        self.storages.iter().map(|s| s.capacity_bytes).sum()
    }
    pub fn free_bytes(&self) -> u64 {
        self.storages.iter().map(|s| s.free_bytes).sum()
    }
    pub fn used_bytes(&self) -> u64 {
        self.storages.iter().map(|s| s.used_bytes).sum()
    }
    pub fn full(&self) -> bool {
        !self.storages.is_empty() && self.storages.iter().all(|s| s.full)
    }
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, NodeDesc>,
    /// Datanode uuid → the certificate name that speaks for it (first use, this leader).
    owners: HashMap<String, String>,
    /// block id → node uuid → replica.
    replicas: HashMap<u64, BTreeMap<String, Replica>>,
    /// Blocks being written → the pipeline they were given (locations until reported)
    /// and when.
    pipelines: HashMap<u64, (Vec<String>, Instant)>,
    /// block id → nodes whose replica failed verification.
    corrupt: HashMap<u64, HashSet<String>>,
    /// Re-replications queued and not yet confirmed: block id → when queued.
    transfers: HashMap<u64, Instant>,
    /// Datanodes being drained (a copy of the replicated set, refreshed by the monitor).
    draining: HashSet<String>,
    /// When a datanode last joined (registered while not known here as alive).
    last_join: Option<Instant>,
}

/// How long after a block was handed a pipeline its replicas may go unreported before the
/// replication monitor counts it short.
pub const PIPELINE_GRACE: Duration = Duration::from_secs(10);

/// Bounds and timings of the block manager.
#[derive(Debug, Clone, Copy)]
pub struct BlockLimits {
    /// A datanode silent for this long is dead: its replicas no longer count.
    pub dead_after: Duration,
    /// Replicas deleted per command.
    pub invalidate_per_command_max: usize,
}

impl Default for BlockLimits {
    fn default() -> Self {
        BlockLimits { dead_after: Duration::from_secs(30), invalidate_per_command_max: 1000 }
    }
}

/// The leader's view of datanodes and replicas.
pub struct BlockManager {
    inner: Mutex<Inner>,
    pub limits: BlockLimits,
}

/// The state of one block's replicas, for fsck and the replication monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockHealth {
    /// Live nodes with a good replica of the current generation.
    pub live: Vec<Location>,
    /// Nodes with a replica that failed verification.
    pub corrupt: Vec<String>,
    /// Nodes with an older generation stamp (left by a failed pipeline).
    pub stale: Vec<String>,
    /// Of `live`, the nodes being drained: readable, a copy source, but not counted toward
    /// the replication factor.
    pub draining: Vec<String>,
}

impl BlockHealth {
    /// Live replicas that count toward the replication factor.
    pub fn counted(&self) -> usize {
        self.live.len() - self.draining.len()
    }
}

impl BlockManager {
    pub fn new(limits: BlockLimits) -> Self {
        BlockManager { inner: Mutex::new(Inner::default()), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alive(&self, n: &NodeDesc, now: Instant) -> bool {
        now.saturating_duration_since(n.last_seen) < self.limits.dead_after
    }

    /// Binds datanode `uuid` to the certificate name `who` on first use; `Err(owner)` if
    /// another certificate already speaks for it.
    pub fn claim(&self, uuid: &str, who: &str) -> Result<(), String> {
        let mut g = self.lock();
        match g.owners.get(uuid) {
            Some(owner) if owner != who => Err(owner.clone()),
            Some(_) => Ok(()),
            None => {
                g.owners.insert(uuid.to_string(), who.to_string());
                Ok(())
            }
        }
    }

    /// A datanode (re)registers: it is known again, with no replicas until it reports.
    pub fn register(&self, loc: Location, storages: Vec<Storage>, now: Instant) {
        let mut g = self.lock();
        let uuid = loc.uuid.clone();
        let mut joined = true;
        if let Some(old) = g.nodes.remove(&uuid) {
            joined = !self.alive(&old, now) || old.expired;
            forget_node_replicas(&mut g, &uuid, &old.blocks);
        }
        if joined {
            g.last_join = Some(now);
        }
        g.nodes.insert(
            uuid,
            NodeDesc {
                loc,
                storages,
                last_seen: now,
                transfers_in_flight: 0,
                blocks: HashSet::new(),
                commands: Vec::new(),
                expired: false,
            },
        );
    }

    /// A heartbeat: `None` if the node is unknown here (it must register again), else the
    /// commands queued for it.
    pub fn heartbeat(
        &self,
        loc: &Location,
        storages: Vec<Storage>,
        in_flight: u32,
        now: Instant,
    ) -> Option<Vec<Command>> {
        let mut g = self.lock();
        let n = g.nodes.get_mut(&loc.uuid)?;
        if n.loc.addr != loc.addr || n.expired {
            return None;
        }
        n.storages = storages;
        n.last_seen = now;
        n.transfers_in_flight = in_flight;
        Some(std::mem::take(&mut n.commands))
    }

    /// A full block report part. Returns `false` if the node is unknown (register first).
    pub fn block_report(&self, uuid: &str, replicas: &[(u64, Replica)], replaces: bool, now: Instant) -> bool {
        let mut g = self.lock();
        let Some(n) = g.nodes.get_mut(uuid) else { return false };
        n.last_seen = now;
        let old = if replaces { std::mem::take(&mut n.blocks) } else { HashSet::new() };
        let n = g.nodes.get_mut(uuid).expect("present");
        n.blocks.extend(replicas.iter().map(|(id, _)| *id));
        forget_node_replicas(&mut g, uuid, &old);
        for (id, r) in replicas {
            g.replicas.entry(*id).or_default().insert(uuid.to_string(), *r);
        }
        true
    }

    /// Replicas finalized or deleted since the last report.
    pub fn incremental(&self, uuid: &str, received: &[(u64, Replica)], deleted: &[u64]) -> bool {
        let mut g = self.lock();
        let Some(n) = g.nodes.get_mut(uuid) else { return false };
        for (id, _) in received {
            n.blocks.insert(*id);
        }
        for id in deleted {
            n.blocks.remove(id);
        }
        for (id, r) in received {
            g.replicas.entry(*id).or_default().insert(uuid.to_string(), *r);
            if let Some(c) = g.corrupt.get_mut(id) {
                c.remove(uuid);
            }
        }
        for id in deleted {
            if let Some(m) = g.replicas.get_mut(id) {
                m.remove(uuid);
                if m.is_empty() {
                    g.replicas.remove(id);
                }
            }
            if let Some(c) = g.corrupt.get_mut(id) {
                c.remove(uuid);
            }
        }
        true
    }

    /// A replica failed verification on `uuid`.
    pub fn mark_corrupt(&self, uuid: &str, block_id: u64) {
        self.lock().corrupt.entry(block_id).or_default().insert(uuid.to_string());
    }

    /// A reader's report: marks `uuid`'s replica of `block_id` corrupt only if it holds
    /// generation `gen_stamp` and another replica of that generation is live and not
    /// corrupt, checked and marked under one lock (two reports naming a block's two
    /// replicas can never both be accepted). Whether it was marked.
    pub fn mark_corrupt_unless_last(&self, uuid: &str, block_id: u64, gen_stamp: u64, now: Instant) -> bool {
        let mut g = self.lock();
        let Some(m) = g.replicas.get(&block_id) else { return false };
        if m.get(uuid).is_none_or(|r| r.gen_stamp != gen_stamp) {
            return false;
        }
        let corrupt = g.corrupt.get(&block_id);
        let other_live = m.iter().any(|(u, r)| {
            u != uuid
                && r.gen_stamp >= gen_stamp
                && !corrupt.is_some_and(|c| c.contains(u))
                && g.nodes.get(u).is_some_and(|n| self.alive(n, now))
        });
        if other_live {
            g.corrupt.entry(block_id).or_default().insert(uuid.to_string());
        }
        other_live
    }

    /// Remembers the pipeline a block under construction was given.
    pub fn set_pipeline(&self, block_id: u64, nodes: Vec<String>, now: Instant) {
        self.lock().pipelines.insert(block_id, (nodes, now));
    }

    /// Whether `block_id` was given a pipeline less than [`PIPELINE_GRACE`] ago: its
    /// replicas may still be on their way to being reported.
    pub fn recently_written(&self, block_id: u64, now: Instant) -> bool {
        self.lock().pipelines.get(&block_id).is_some_and(|(_, t)| now.saturating_duration_since(*t) < PIPELINE_GRACE)
    }

    /// Queues a command for a node (dropped if the node is unknown).
    pub fn queue(&self, uuid: &str, c: Command) {
        if let Some(n) = self.lock().nodes.get_mut(uuid) {
            n.commands.push(c);
        }
    }

    /// Nodes currently holding any replica of `block_id` (for deletion).
    pub fn holders(&self, block_id: u64) -> Vec<(String, u64)> {
        self.lock()
            .replicas
            .get(&block_id)
            .map(|m| m.iter().map(|(u, r)| (u.clone(), r.gen_stamp)).collect())
            .unwrap_or_default()
    }

    /// Live datanodes.
    pub fn live_nodes(&self, now: Instant) -> Vec<NodeDesc> {
        let g = self.lock();
        let mut v: Vec<NodeDesc> = g.nodes.values().filter(|n| self.alive(n, now)).cloned().collect();
        v.sort_by(|a, b| a.loc.uuid.cmp(&b.loc.uuid));
        v
    }

    /// How many datanodes are alive and not being drained (replication targets).
    pub fn live_count(&self, now: Instant) -> usize {
        let g = self.lock();
        g.nodes.values().filter(|n| self.alive(n, now) && !g.draining.contains(&n.loc.uuid)).count()
    }

    /// Live datanodes that can take a new replica (not draining, not full): whether an
    /// under-replicated block can be fixed depends on them.
    pub fn replica_targets(&self, now: Instant) -> HashSet<String> {
        let g = self.lock();
        g.nodes
            .values()
            .filter(|n| self.alive(n, now) && !n.full() && !g.draining.contains(&n.loc.uuid))
            .map(|n| n.loc.uuid.clone())
            .collect()
    }

    /// Replaces the set of datanodes being drained.
    pub fn set_draining(&self, uuids: HashSet<String>) {
        self.lock().draining = uuids;
    }

    /// The blocks a node holds, as reported.
    pub fn blocks_of(&self, uuid: &str) -> Vec<u64> {
        self.lock().nodes.get(uuid).map(|n| n.blocks.iter().copied().collect()).unwrap_or_default()
    }

    pub fn is_draining(&self, uuid: &str) -> bool {
        self.lock().draining.contains(uuid)
    }

    /// Every known datanode and whether it is alive.
    pub fn all_nodes(&self, now: Instant) -> Vec<(NodeDesc, bool)> {
        let g = self.lock();
        let mut v: Vec<(NodeDesc, bool)> = g.nodes.values().map(|n| (n.clone(), self.alive(n, now))).collect();
        v.sort_by(|a, b| a.0.loc.uuid.cmp(&b.0.loc.uuid));
        v
    }

    /// Where the replicas of `block_id` (generation `gen_stamp`) are, and what is wrong.
    /// A block still being written counts its pipeline until replicas are reported.
    pub fn health(&self, block_id: u64, gen_stamp: u64, now: Instant) -> BlockHealth {
        let g = self.lock();
        let mut h = BlockHealth::default();
        let corrupt = g.corrupt.get(&block_id);
        if let Some(m) = g.replicas.get(&block_id) {
            for (uuid, r) in m {
                let Some(n) = g.nodes.get(uuid) else { continue };
                if corrupt.is_some_and(|c| c.contains(uuid)) {
                    h.corrupt.push(uuid.clone());
                } else if r.gen_stamp < gen_stamp {
                    h.stale.push(uuid.clone());
                } else if self.alive(n, now) {
                    if g.draining.contains(uuid) {
                        h.draining.push(uuid.clone());
                    }
                    h.live.push(n.loc.clone());
                }
            }
        }
        if h.live.is_empty() {
            if let Some((p, _)) = g.pipelines.get(&block_id) {
                h.live = p
                    .iter()
                    .filter_map(|u| g.nodes.get(u))
                    .filter(|n| self.alive(n, now))
                    .map(|n| n.loc.clone())
                    .collect();
            }
        }
        h
    }

    /// Picks `n` datanodes for new replicas: `favored` first when it can take one, then
    /// the least busy of random pairs, on distinct nodes (and, when racks are known, not
    /// all on the first node's rack). Fewer than `n` if the cluster has fewer live nodes
    /// with room.
    pub fn choose_targets(
        &self,
        n: usize,
        favored: Option<&str>,
        excluded: &HashSet<String>,
        now: Instant,
    ) -> Vec<Location> {
        let g = self.lock();
        let mut candidates: Vec<&NodeDesc> = g
            .nodes
            .values()
            .filter(|d| {
                self.alive(d, now) && !d.full() && !excluded.contains(&d.loc.uuid) && !g.draining.contains(&d.loc.uuid)
            })
            .collect();
        let mut rng = rand::rng();
        candidates.shuffle(&mut rng);
        let mut chosen: Vec<Location> = Vec::new();
        if let Some(f) = favored {
            if let Some(i) = candidates.iter().position(|d| d.loc.uuid == f) {
                chosen.push(candidates.remove(i).loc.clone());
            }
        }
        while chosen.len() < n && !candidates.is_empty() {
            // The second replica goes off the first one's rack when another rack exists.
            let off_rack = chosen.len() == 1 && candidates.iter().any(|d| d.loc.rack != chosen[0].rack);
            let pool: Vec<usize> = (0..candidates.len())
                .filter(|&i| !off_rack || candidates[i].loc.rack != chosen[0].rack)
                .take(2)
                .collect();
            let pick = *pool
                .iter()
                .min_by_key(|&&i| candidates[i].transfers_in_flight)
                .expect("pool is not empty when candidates are not");
            chosen.push(candidates.remove(pick).loc.clone());
        }
        chosen
    }

    /// When a datanode last joined: registered while not known here as alive.
    pub fn last_join(&self) -> Option<Instant> {
        self.lock().last_join
    }

    /// Racks with a live datanode that takes replicas (not draining).
    pub fn live_racks(&self, now: Instant) -> HashSet<String> {
        let g = self.lock();
        g.nodes
            .values()
            .filter(|n| self.alive(n, now) && !g.draining.contains(&n.loc.uuid))
            .map(|n| n.loc.rack.clone())
            .collect()
    }

    /// One target off `rack` (the least busy of two random candidates), for a block whose
    /// replicas all sit on that rack.
    pub fn choose_off_rack(&self, rack: &str, excluded: &HashSet<String>, now: Instant) -> Option<Location> {
        let g = self.lock();
        let mut candidates: Vec<&NodeDesc> = g
            .nodes
            .values()
            .filter(|d| {
                self.alive(d, now)
                    && !d.full()
                    && d.loc.rack != rack
                    && !excluded.contains(&d.loc.uuid)
                    && !g.draining.contains(&d.loc.uuid)
            })
            .collect();
        candidates.shuffle(&mut rand::rng());
        candidates.iter().take(2).min_by_key(|d| d.transfers_in_flight).map(|d| d.loc.clone())
    }

    /// Nodes that stopped heartbeating: their replicas no longer count. Returns their uuids.
    pub fn expire_dead(&self, now: Instant) -> Vec<String> {
        let mut g = self.lock();
        let dead: Vec<String> =
            g.nodes.values().filter(|n| !self.alive(n, now) && !n.expired).map(|n| n.loc.uuid.clone()).collect();
        for uuid in &dead {
            let blocks = match g.nodes.get_mut(uuid) {
                Some(n) => {
                    n.expired = true;
                    std::mem::take(&mut n.blocks)
                }
                None => HashSet::new(),
            };
            forget_node_replicas(&mut g, uuid, &blocks);
        }
        // Pipelines past their grace whose replicas were reported are no longer needed.
        let Inner { pipelines, replicas, .. } = &mut *g;
        pipelines.retain(|id, (_, t)| now.saturating_duration_since(*t) < PIPELINE_GRACE || !replicas.contains_key(id));
        dead
    }

    /// Notes that a copy of `block_id` was queued.
    pub fn start_transfer(&self, block_id: u64, now: Instant) {
        self.lock().transfers.insert(block_id, now);
    }

    /// Whether a copy of `block_id` was queued recently enough to still be under way.
    pub fn transfer_pending(&self, block_id: u64, now: Instant) -> bool {
        let g = self.lock();
        g.transfers.get(&block_id).is_some_and(|t| now.saturating_duration_since(*t) < TRANSFER_TIMEOUT)
    }

    /// A replica of `block_id` arrived somewhere: a queued copy is no longer pending.
    pub fn transfer_done(&self, block_id: u64) {
        self.lock().transfers.remove(&block_id);
    }

    /// Forgets a block entirely (no file has it any more).
    pub fn forget_block(&self, block_id: u64) {
        let mut g = self.lock();
        if let Some(m) = g.replicas.remove(&block_id) {
            for uuid in m.keys() {
                if let Some(n) = g.nodes.get_mut(uuid) {
                    n.blocks.remove(&block_id);
                }
            }
        }
        g.corrupt.remove(&block_id);
        g.transfers.remove(&block_id);
        g.pipelines.remove(&block_id);
    }

    /// Forgets one node's replica (a deletion was ordered).
    pub fn forget_replica(&self, block_id: u64, uuid: &str) {
        let mut g = self.lock();
        if let Some(n) = g.nodes.get_mut(uuid) {
            n.blocks.remove(&block_id);
        }
        if let Some(m) = g.replicas.get_mut(&block_id) {
            m.remove(uuid);
            if m.is_empty() {
                g.replicas.remove(&block_id);
            }
        }
        if let Some(c) = g.corrupt.get_mut(&block_id) {
            c.remove(uuid);
        }
    }

    /// How many blocks have at least one reported replica (safe mode's measure).
    pub fn reported_blocks(&self) -> usize {
        self.lock().replicas.len()
    }

    /// Every block with at least one replica anywhere, for the replication monitor.
    pub fn known_blocks(&self) -> Vec<u64> {
        self.lock().replicas.keys().copied().collect()
    }
}

fn forget_node_replicas(g: &mut Inner, uuid: &str, blocks: &HashSet<u64>) {
    for id in blocks {
        if let Some(m) = g.replicas.get_mut(id) {
            m.remove(uuid);
            if m.is_empty() {
                g.replicas.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(i: u32, rack: &str) -> Location {
        Location { uuid: format!("dn{i}"), addr: format!("127.0.0.1:{}", 9000 + i), rack: rack.into() }
    }

    fn storage() -> Vec<Storage> {
        vec![Storage { id: "s".into(), capacity_bytes: 100, free_bytes: 100, used_bytes: 0, full: false }]
    }

    #[test]
    fn placement_uses_distinct_live_nodes_and_the_favored_one_first() {
        let bm = BlockManager::new(BlockLimits::default());
        let t0 = Instant::now();
        for i in 1..=5 {
            bm.register(loc(i, "/r"), storage(), t0);
        }
        for _ in 0..50 {
            let t = bm.choose_targets(3, Some("dn4"), &HashSet::new(), t0);
            assert_eq!(t.len(), 3);
            assert_eq!(t[0].uuid, "dn4");
            let distinct: HashSet<_> = t.iter().map(|l| &l.uuid).collect();
            assert_eq!(distinct.len(), 3);
        }
        // Excluded and dead nodes are never chosen; fewer live nodes give fewer targets.
        let excluded: HashSet<String> = ["dn1".to_string(), "dn2".to_string()].into();
        let later = t0 + Duration::from_secs(40);
        bm.heartbeat(&loc(3, "/r"), storage(), 0, later).unwrap();
        bm.heartbeat(&loc(1, "/r"), storage(), 0, later).unwrap();
        let t = bm.choose_targets(3, None, &excluded, later);
        assert_eq!(t.iter().map(|l| l.uuid.as_str()).collect::<Vec<_>>(), vec!["dn3"]);
    }

    #[test]
    fn second_replica_goes_to_another_rack() {
        let bm = BlockManager::new(BlockLimits::default());
        let t0 = Instant::now();
        for i in 1..=4 {
            bm.register(loc(i, "/a"), storage(), t0);
        }
        bm.register(loc(5, "/b"), storage(), t0);
        for _ in 0..50 {
            let t = bm.choose_targets(2, Some("dn1"), &HashSet::new(), t0);
            assert_eq!(t[1].rack, "/b");
        }
    }

    #[test]
    fn reports_dead_nodes_and_stale_replicas_shape_health() {
        let bm = BlockManager::new(BlockLimits::default());
        let t0 = Instant::now();
        for i in 1..=3 {
            bm.register(loc(i, "/r"), storage(), t0);
        }
        let r = |gs| Replica { gen_stamp: gs, length: 10, finalized: true };
        assert!(bm.block_report("dn1", &[(7, r(2))], true, t0));
        assert!(bm.block_report("dn2", &[(7, r(2))], true, t0));
        assert!(bm.block_report("dn3", &[(7, r(1))], true, t0));
        let h = bm.health(7, 2, t0);
        assert_eq!(h.live.len(), 2);
        assert_eq!(h.stale, vec!["dn3".to_string()]);
        bm.mark_corrupt("dn2", 7);
        assert_eq!(bm.health(7, 2, t0).corrupt, vec!["dn2".to_string()]);
        // dn1 goes silent: past dead_after its replica no longer counts.
        let later = t0 + Duration::from_secs(31);
        bm.heartbeat(&loc(2, "/r"), storage(), 0, later).unwrap();
        bm.heartbeat(&loc(3, "/r"), storage(), 0, later).unwrap();
        assert_eq!(bm.expire_dead(later), vec!["dn1".to_string()]);
        assert!(bm.health(7, 2, later).live.is_empty());
        // A node declared dead that comes back must register (and report) again.
        assert!(bm.heartbeat(&loc(1, "/r"), storage(), 0, later).is_none());
        // An unknown node must register before its reports count.
        assert!(!bm.block_report("dn9", &[], true, later));
        assert!(bm.heartbeat(&loc(9, "/r"), storage(), 0, later).is_none());
    }
}
