//! The datanode protocol on the namenode leader (registration, heartbeats, block reports):
//! an RPC edge. What it learns goes to the block manager ([`crate::blocks`]); the block
//! monitor ([`crate::monitor`]) acts on it. Errors become statuses here (with the helpers
//! of [`crate::service`]).
//!
//! Followers answer every call with `x-tarn-leader`, like the client API: only the leader
//! keeps replica locations (see [`crate::blocks`]).

use std::sync::Arc;
use std::time::Instant;

use tarn_proto::datanode as pb;
use tarn_proto::datanode::datanode_protocol_server::DatanodeProtocol;
use tonic::{Request, Response, Status};

use crate::blocks::{Command, Location, Replica, Storage};
use crate::report::location_pb;
use crate::service::{denied_status, fs_status, require_leader, state_status};
use crate::state::NodeState;

/// A datanode's location, its rack from the topology table when the table names it.
pub fn location_of(l: &pb::DatanodeLocation, topology: &crate::topology::Topology) -> Location {
    Location { uuid: l.uuid.clone(), addr: l.addr.clone(), rack: topology.rack_of(&l.addr, &l.rack) }
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
        require_leader(&self.s)
    }

    /// The datanode a request speaks for. The first certificate to speak for a uuid (on
    /// this leader) owns it: another datanode's certificate cannot heartbeat, report or
    /// register in its name (`who` is `None` in dev mode, without certificates).
    fn node(&self, who: Option<&str>, l: Option<pb::DatanodeLocation>) -> Result<Location, Status> {
        let l = l.ok_or_else(|| Status::invalid_argument("request without the datanode's location"))?;
        if l.uuid.is_empty() || l.addr.is_empty() {
            return Err(Status::invalid_argument("datanode location needs a uuid and an address"));
        }
        if let Some(who) = who {
            if let Err(owner) = self.s.blocks.claim(&l.uuid, who) {
                return Err(denied_status(format!(
                    "datanode {} speaks with the certificate of {owner}; {who} may not speak for it",
                    l.uuid
                )));
            }
        }
        Ok(location_of(&l, &self.s.topology))
    }

    /// Replicas a report shows that the namespace no longer wants (deleted blocks, stale
    /// generations), grouped as one deletion command for the reporting node.
    fn unwanted(&self, replicas: &[(u64, Replica)]) -> Result<Vec<(u64, u64)>, Status> {
        crate::monitor::unwanted(&self.s, replicas).map_err(|e| fs_status(&e))
    }
}

#[tonic::async_trait]
impl DatanodeProtocol for DatanodeService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        self.ensure_leader()?;
        let who = tarn_security::caller(req.extensions())?.map(|id| id.name.clone());
        let r = req.into_inner();
        let loc = self.node(who.as_deref(), r.node)?;
        // A registered datanode can check clients' block access tokens at once.
        crate::tokens::ensure_key(&self.s).await.map_err(|e| state_status(self.s.node_id, &e))?;
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
        let who = tarn_security::caller(req.extensions())?.map(|id| id.name.clone());
        let r = req.into_inner();
        let loc = self.node(who.as_deref(), r.node)?;
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
        let who = tarn_security::caller(req.extensions())?.map(|id| id.name.clone());
        let r = req.into_inner();
        let loc = self.node(who.as_deref(), r.node)?;
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
        let who = tarn_security::caller(req.extensions())?.map(|id| id.name.clone());
        let r = req.into_inner();
        let loc = self.node(who.as_deref(), r.node)?;
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
        let who = tarn_security::caller(req.extensions())?.map(|id| id.name.clone());
        let r = req.into_inner();
        let loc = self.node(who.as_deref(), r.node)?;
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
