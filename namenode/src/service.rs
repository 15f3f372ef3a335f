//! The namenode's gRPC services: the client API (`Namenode`) and the admin API
//! (`NamenodeAdmin`). Each handler turns the request into a namespace operation or query;
//! writes go through the [`Proposer`], reads through the [`ReadGate`].
//!
//! Errors reach clients as gRPC statuses whose message says what failed, with the
//! `x-tarn-error` metadata naming the kind (so the client library can tell them apart) and,
//! when this node is not the leader, `x-tarn-leader` giving the leader's address.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::BasicNode;
use rand::seq::SliceRandom;
use tarn_proto::namenode as pb;
use tarn_proto::namenode::namenode_admin_server::NamenodeAdmin;
use tarn_proto::namenode::namenode_server::Namenode;
use tarn_proto::{ErrorKind, ERROR_KIND_HEADER, LEADER_HEADER};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::error::FsError;
use crate::kv::SnapView;
use crate::namespace::{Caller, Sight, EXECUTE, READ, WRITE};
use crate::namespace::{Found, Namespace};
use crate::proposer::ProposeError;
use crate::records::{BlockRec, Inode, Kind};
use crate::state::{NodeState, StateError};
use crate::types::{
    ConcatOp, CreateOp, MkdirOp, NodeId, Op, OpOutput, PutInlineOp, Raft, RenameOp, RequestId, SetAttributesOp,
};

/// Entries returned by one listing call at most.
pub const LIST_LIMIT_MAX: usize = 10_000;
pub const LIST_LIMIT_DEFAULT: usize = 1000;

/// A refusal of `kind`: its status code and its name in the `x-tarn-error` metadata.
pub(crate) fn kind_status(kind: ErrorKind, message: impl Into<String>) -> Status {
    kind.status(message)
}

/// A small file the namenode will not keep: the client writes blocks instead.
fn inline_unavailable(why: String) -> Status {
    kind_status(ErrorKind::InlineUnavailable, why)
}

/// The kind of refusal a namespace error is.
pub(crate) fn fs_kind(e: &FsError) -> ErrorKind {
    match e {
        FsError::InvalidPath { .. } => ErrorKind::InvalidPath,
        FsError::InvalidArgument(_) => ErrorKind::InvalidArgument,
        FsError::RenameIntoSelf { .. } => ErrorKind::RenameIntoSelf,
        FsError::NotFound { .. } => ErrorKind::NotFound,
        FsError::ParentNotFound { .. } => ErrorKind::ParentNotFound,
        FsError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        FsError::NotADirectory { .. } => ErrorKind::NotADirectory,
        FsError::IsADirectory { .. } => ErrorKind::IsADirectory,
        FsError::DirectoryNotEmpty { .. } => ErrorKind::DirectoryNotEmpty,
        FsError::ConditionFailed { .. } => ErrorKind::ConditionFailed,
        FsError::LeaseConflict { .. } => ErrorKind::LeaseConflict,
        FsError::NotLeaseHolder { .. } => ErrorKind::NotLeaseHolder,
        FsError::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
        FsError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
        FsError::Storage(_) => ErrorKind::Storage,
        FsError::AlreadyOwned { .. } => ErrorKind::AlreadyOwned,
        FsError::UpgradePending { .. } => ErrorKind::UpgradePending,
    }
}

/// A refusal of the caller's right (`PermissionDenied`).
pub(crate) fn denied_status(message: impl Into<String>) -> Status {
    kind_status(ErrorKind::PermissionDenied, message)
}

pub(crate) fn fs_status(e: &FsError) -> Status {
    kind_status(fs_kind(e), e.to_string())
}

pub(crate) fn propose_status(node: NodeId, e: &ProposeError) -> Status {
    match e {
        ProposeError::NotLeader { leader_id, leader_addr } => {
            let msg = match (leader_id, leader_addr) {
                (Some(id), Some(addr)) => {
                    format!("namenode {node} is not the leader; the leader is namenode {id} at {addr}")
                }
                _ => format!("namenode {node} is not the leader and knows no leader yet (election in progress)"),
            };
            let mut s = kind_status(ErrorKind::NotLeader, msg);
            if let Some(v) = leader_addr.as_deref().and_then(|a| MetadataValue::try_from(a).ok()) {
                s.metadata_mut().insert(LEADER_HEADER, v);
            }
            s
        }
        ProposeError::NoQuorum(m) => Status::unavailable(format!("namenode {node} cannot reach a quorum: {m}")),
        ProposeError::Fatal(m) => Status::unavailable(format!("namenode {node} is stopping: {m}")),
    }
}

/// The status a client sees for an error of the leader's core work.
pub(crate) fn state_status(node: NodeId, e: &StateError) -> Status {
    match e {
        StateError::Fs(e) => fs_status(e),
        StateError::Propose(e) => propose_status(node, e),
        StateError::InvalidRequest(m) => Status::invalid_argument(m.clone()),
    }
}

/// Refuses the call unless this node leads (with the leader's address when known).
pub(crate) fn require_leader(s: &NodeState) -> Result<(), Status> {
    crate::state::ensure_leader(s).map_err(|e| propose_status(s.node_id, &e))
}

fn rid(r: Option<pb::RequestId>) -> Option<RequestId> {
    r.map(|r| RequestId { client_id: r.client_id, call_id: r.call_id })
}

fn kind_pb(k: Kind) -> i32 {
    match k {
        Kind::File => pb::FileKind::File as i32,
        Kind::Directory => pb::FileKind::Directory as i32,
    }
}

pub(crate) fn status_pb(path: String, i: &Inode, with_xattrs: bool) -> pb::FileStatus {
    pb::FileStatus {
        path,
        kind: kind_pb(i.kind),
        file_id: i.id,
        length: i.length,
        replication: i.replication as u32,
        block_size: i.block_size,
        mode: i.mode,
        owner: i.owner.clone(),
        group: i.group.clone(),
        mtime_ms: i.mtime_ms,
        writer: i.writer.clone().unwrap_or_default(),
        block_count: i.block_count,
        xattrs: if with_xattrs { i.xattrs.clone().into_iter().collect() } else { Default::default() },
        quota: i.quota.as_ref().map(|q| pb::Quota {
            namespace_quota: q.namespace_quota.map(|v| v as i64).unwrap_or(-1),
            space_quota: q.space_quota.map(|v| v as i64).unwrap_or(-1),
            namespace_used: q.namespace_used,
            space_used: q.space_used,
        }),
    }
}

fn block_pb(b: &BlockRec) -> pb::Block {
    pb::Block {
        block_id: b.block_id,
        generation: b.generation,
        length: b.length,
        checksum_type: "crc32c".into(),
        index: b.index,
    }
}

/// The calling user, from the connection's certificate: a person acts as the name in
/// their certificate; daemons (the S3 gateway, workers) name the user they act for in
/// `x-tarn-user` (see [`tarn_security::acting_user`]). The service is the only place that
/// reads it. Until groups are kept, a user's group is their name.
/// The caller for permission checks: its user and groups, and whether it is the superuser
/// (an admin certificate, dev mode, or a daemon acting as itself).
fn checked_caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    let claimed = match req.metadata().get("x-tarn-user") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| Status::permission_denied("x-tarn-user is not a user name"))?),
    };
    let user = tarn_security::acting_user(req.extensions(), claimed)?;
    let superuser = tarn_security::is_superuser(req.extensions(), claimed);
    Ok(Caller { groups: vec![user.clone()], user, superuser })
}

/// Interceptor of the file system API: every call's claimed user is checked (a valid
/// name, a certificate allowed to claim it) before any handler runs.
pub fn check_claim(req: Request<()>) -> Result<Request<()>, Status> {
    checked_caller(&req)?;
    Ok(req)
}

/// The lease holder a client names, qualified by the caller's user: one user can never
/// renew, extend, restamp or close what another user's client writes, whatever name it
/// sends (client names are not secret: file infos show who writes a file).
fn holder(who: &Caller, client_name: &str) -> Result<String, Status> {
    if client_name.is_empty() {
        return Err(Status::invalid_argument("client_name (the lease holder) is required"));
    }
    Ok(format!("{}/{client_name}", who.user))
}

/// The owner of a file `who` makes: itself, or whom the superuser names (the S3 gateway
/// gives an object to its key's user).
fn owner_of_new(who: &Caller, named: Option<String>) -> Result<String, Status> {
    match named {
        Some(o) if who.superuser => {
            crate::namespace::check_principal("user", &o).map_err(|e| fs_status(&e))?;
            Ok(o)
        }
        Some(_) => Err(Status::permission_denied("only the superuser may name the owner of a new file")),
        None => Ok(who.user.clone()),
    }
}

/// `op` as `who` asks for it: the superuser's as it is, anyone else's wrapped so the state
/// machine checks the caller's permissions in the transaction that applies it.
fn on_behalf(who: &Caller, op: Op) -> Op {
    if who.superuser {
        op
    } else {
        Op::As { user: who.user.clone(), op: Box::new(op) }
    }
}

fn u16_arg(name: &str, v: u32) -> Result<u16, Status> {
    u16::try_from(v).map_err(|_| fs_status(&FsError::InvalidArgument(format!("{name} {v} is too large"))))
}

fn limit(l: u32) -> usize {
    match l as usize {
        0 => LIST_LIMIT_DEFAULT,
        n => n.min(LIST_LIMIT_MAX),
    }
}

#[derive(Clone)]
pub struct NamenodeService {
    s: Arc<NodeState>,
}

impl NamenodeService {
    pub fn new(s: Arc<NodeState>) -> Self {
        NamenodeService { s }
    }

    async fn write(&self, r: Option<RequestId>, op: Op) -> Result<OpOutput, Status> {
        if let Some(why) = crate::monitor::safe_mode_message(&self.s) {
            // Only the leader's safe mode counts; a follower forwards the client anyway.
            if crate::state::ensure_leader(&self.s).is_ok() {
                return Err(kind_status(ErrorKind::SafeMode, why));
            }
        }
        match self.s.proposer.propose(r, op).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(fs_status(&e)),
            Err(e) => Err(propose_status(self.s.node_id, &e)),
        }
    }

    async fn write_inode(&self, r: Option<RequestId>, op: Op, path: &str) -> Result<pb::FileStatus, Status> {
        match self.write(r, op).await? {
            OpOutput::Inode(i) => Ok(status_pb(path.to_string(), &i, false)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// A create refused because another client writes the file: if that writer's soft limit
    /// has passed, replace the file in one operation. It runs under a request id derived from
    /// the client's, so a retry of the client's call (answered from the retry cache with the
    /// first refusal) arrives here again and gets the takeover's recorded result.
    async fn take_over(
        &self,
        who: &Caller,
        op: CreateOp,
        request_id: Option<RequestId>,
        refused: Status,
    ) -> Result<OpOutput, Status> {
        let writer = self.read(|ns| Ok(ns.resolve(&op.path)?.and_then(|f| f.inode.writer))).await?;
        let Some(holder) = writer.filter(|h| *h == op.client_name || self.s.leases.soft_expired(h)) else {
            return Err(refused);
        };
        if holder != op.client_name {
            tracing::info!(path = %op.path, %holder, "a writer's soft limit passed; the file is taken over");
        }
        let derived = request_id.map(|r| RequestId { client_id: r.client_id, call_id: r.call_id ^ (1 << 63) });
        self.write(derived, on_behalf(who, Op::Create(CreateOp { take_over_from: Some(holder), ..op }))).await
    }

    /// Datanodes for a new block of `replication` replicas. Fewer live datanodes than the
    /// replication factor: the block is written with what there is and reported as
    /// under-replicated, not refused.
    fn pipeline_for(
        &self,
        path: &str,
        replication: usize,
        favored: &str,
        excluded: &std::collections::HashSet<String>,
    ) -> Result<Vec<crate::blocks::Location>, Status> {
        let now = std::time::Instant::now();
        let favored = Some(favored).filter(|f| !f.is_empty());
        let targets = self.s.blocks.choose_targets(replication, favored, excluded, now);
        if targets.len() < replication {
            if let Some(why) = self.gathering_datanodes(now) {
                return Err(Status::unavailable(format!(
                    "{path}: a new block would get {} of {replication} replicas: {why}",
                    targets.len()
                )));
            }
        }
        if targets.is_empty() {
            let live = self.s.blocks.live_nodes(now);
            let full = live.iter().filter(|n| n.full()).count();
            return Err(Status::failed_precondition(format!(
                "{path}: no datanode can take a new block ({} live, {full} full, {} excluded by the client)",
                live.len(),
                excluded.len()
            )));
        }
        Ok(targets)
    }

    /// `Some(why)` while a leader new in its term may not yet have heard from every
    /// datanode: datanodes register with whichever node leads, so in its first heartbeats a
    /// new leader knows only those that found it first, and a block placed then would get
    /// fewer replicas than the cluster can hold (and none would be copied until the monitor's
    /// grace ends). It waits until no datanode has joined for three heartbeat intervals, at
    /// most ten after it took over (knowing none: until datanodes would count as dead);
    /// clients retry meanwhile.
    fn gathering_datanodes(&self, now: std::time::Instant) -> Option<String> {
        let hb = self.s.datanode_heartbeat;
        let term = self.s.raft.metrics().borrow().current_term;
        let led = self.s.safe_mode.led_for(term, now);
        let live = self.s.blocks.live_count(now);
        let cap = if live == 0 { self.s.blocks.limits.dead_after } else { 10 * hb };
        if led >= cap {
            return None;
        }
        let quiet = self.s.blocks.last_join().map(|j| now.saturating_duration_since(j));
        if live > 0 && led >= 3 * hb && quiet.is_some_and(|q| q >= 3 * hb) {
            return None;
        }
        Some(format!(
            "namenode {} has led for {led:.1?} and heard from {live} datanodes; it waits for the others to register",
            self.s.node_id,
        ))
    }

    /// The answer for a block just allocated: its pipeline (noted as where its replicas
    /// will be) and a write token for the caller.
    fn new_block(&self, who: &Caller, b: &BlockRec, targets: &[crate::blocks::Location]) -> pb::AddBlockResponse {
        let now = std::time::Instant::now();
        self.s.blocks.set_pipeline(b.block_id, targets.iter().map(|t| t.uuid.clone()).collect(), now);
        pb::AddBlockResponse {
            block: Some(block_pb(b)),
            targets: targets.iter().map(crate::report::location_pb).collect(),
            token: crate::tokens::issue(&self.s, b.block_id, b.generation, crate::tokens::WRITE, &who.user),
        }
    }

    /// Runs `f` on the namespace once a linearizable read is allowed.
    async fn read<T>(&self, f: impl FnOnce(&Namespace<'_, SnapView<'_>>) -> Result<T, FsError>) -> Result<T, Status> {
        self.s.reads.wait().await.map_err(|e| propose_status(self.s.node_id, &e))?;
        let view = SnapView::new(&self.s.db);
        let ns = Namespace::new(&view, 0);
        f(&ns).map_err(|e| fs_status(&e))
    }

    fn normalized(path: &str) -> Result<String, Status> {
        crate::path::normalize(path).map_err(|e| fs_status(&e))
    }

    /// A new file's replication: as asked, or (0) min(default, live datanodes), since one
    /// datanode gets one replica per block. A leader still gathering its datanodes does not
    /// yet know how many are live, and the count would stay the file's replication for
    /// good: the caller retries until it knows (as `pipeline_for` makes block writes
    /// wait). (The compose test once lost a file's only replica this way: created in a
    /// new leader's first second, while one datanode had registered, so replication 1.)
    fn replication_for(&self, asked: u32) -> Result<u16, Status> {
        if asked != 0 {
            return u16_arg("replication", asked);
        }
        let now = std::time::Instant::now();
        let live = self.s.blocks.live_count(now);
        if live > 0 && live < usize::from(self.s.defaults.replication) && crate::state::ensure_leader(&self.s).is_ok() {
            if let Some(why) = self.gathering_datanodes(now) {
                return Err(Status::unavailable(format!("a new file's replication is not known yet: {why}")));
            }
        }
        Ok(match u16::try_from(live) {
            Ok(n) if n > 0 => self.s.defaults.replication.min(n),
            _ => self.s.defaults.replication,
        })
    }

    /// Where and how a publish (of a completed file, or of a small file's bytes) puts the
    /// new file: its `sources` are filled in by the operation.
    fn publish_op(who: &Caller, p: pb::Publish) -> Result<ConcatOp, Status> {
        Ok(ConcatOp {
            sources: Vec::new(),
            dst: Self::normalized(&p.dst)?,
            overwrite: p.overwrite,
            dst_must_be_absent: p.dst_must_be_absent,
            dst_expected_file_id: p.dst_expected_file_id,
            create_parent: p.create_parent,
            mode: if p.mode == 0 { 0o644 } else { p.mode },
            owner: owner_of_new(who, p.owner)?,
            group: String::new(),
            xattrs: p.xattrs.into_iter().collect(),
            require_dir: p.require_dir.map(|d| Self::normalized(&d)).transpose()?,
        })
    }
}

#[tonic::async_trait]
impl Namenode for NamenodeService {
    async fn mkdirs(&self, req: Request<pb::MkdirsRequest>) -> Result<Response<pb::MkdirsResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        let mode = if r.mode == 0 { 0o755 } else { r.mode };
        let op = if r.exclusive {
            let require_dir = r.require_dir.as_deref().map(Self::normalized).transpose()?;
            // Who may give the directory to whom is decided as it is applied.
            Op::MkdirExclusive(MkdirOp {
                path: path.clone(),
                mode,
                owner: r.owner.unwrap_or_else(|| who.user.clone()),
                group: r.group.unwrap_or_default(),
                xattrs: r.xattrs.into_iter().collect(),
                require_dir,
            })
        } else {
            if r.owner.is_some() || r.group.is_some() || !r.xattrs.is_empty() || r.require_dir.is_some() {
                return Err(fs_status(&FsError::InvalidArgument(
                    "owner, group, xattrs and require_dir are for an exclusive mkdir".into(),
                )));
            }
            // The group is the parent directory's (HDFS's rule).
            Op::Mkdirs { path: path.clone(), mode, owner: who.user.clone(), group: String::new() }
        };
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &path).await?;
        Ok(Response::new(pb::MkdirsResponse { status: Some(status) }))
    }

    async fn create(&self, req: Request<pb::CreateRequest>) -> Result<Response<pb::CreateResponse>, Status> {
        let who = checked_caller(&req)?;
        let (owner, group) = (who.user.clone(), String::new());
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        let client_name = holder(&who, &r.client_name)?;
        if r.allocate_block {
            require_leader(&self.s)?;
            crate::tokens::ensure_key(&self.s).await.map_err(|e| state_status(self.s.node_id, &e))?;
        }
        self.s.leases.renew(&client_name);
        let op = CreateOp {
            path: path.clone(),
            overwrite: r.overwrite,
            expected_file_id: r.expected_file_id,
            create_parent: r.create_parent,
            replication: self.replication_for(r.replication)?,
            block_size: if r.block_size == 0 { self.s.defaults.block_size } else { r.block_size },
            mode: if r.mode == 0 { 0o644 } else { r.mode },
            owner,
            group,
            client_name,
            xattrs: r.xattrs.into_iter().collect(),
            take_over_from: None,
            allocate_block: r.allocate_block,
        };
        let request_id = rid(r.request_id);
        let out = match self.write(request_id, on_behalf(&who, Op::Create(op.clone()))).await {
            Err(s)
                if r.overwrite
                    && s.metadata().get(ERROR_KIND_HEADER).is_some_and(|v| v == ErrorKind::LeaseConflict.as_str()) =>
            {
                self.take_over(&who, op, request_id, s).await?
            }
            other => other?,
        };
        match out {
            OpOutput::Inode(i) => {
                Ok(Response::new(pb::CreateResponse { status: Some(status_pb(path, &i, false)), first_block: None }))
            }
            OpOutput::Created(i, b) => {
                // The pipeline is picked after the commit, so a retried call (answered from
                // the retry cache) gets one too.
                let targets = self.pipeline_for(&path, i.replication as usize, &r.favored, &Default::default())?;
                Ok(Response::new(pb::CreateResponse {
                    status: Some(status_pb(path, &i, false)),
                    first_block: Some(self.new_block(&who, &b, &targets)),
                }))
            }
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn add_block(&self, req: Request<pb::AddBlockRequest>) -> Result<Response<pb::AddBlockResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        require_leader(&self.s)?;
        crate::tokens::ensure_key(&self.s).await.map_err(|e| state_status(self.s.node_id, &e))?;
        let client_name = holder(&who, &r.client_name)?;
        self.s.leases.renew(&client_name);
        let replication = {
            let view = SnapView::new(&self.s.db);
            let ns = Namespace::new(&view, 0);
            match ns.get_inode(r.file_id).map_err(|e| fs_status(&e))? {
                Some(i) if !i.is_dir() => i.replication as usize,
                _ => return Err(fs_status(&FsError::NotFound { path: path.clone() })),
            }
        };
        let excluded: std::collections::HashSet<String> = r.excluded.into_iter().collect();
        let targets = self.pipeline_for(&path, replication, &r.favored, &excluded)?;
        let op = Op::AddBlock { path, file_id: r.file_id, client_name, previous_block_length: r.previous_block_length };
        match self.write(rid(r.request_id), op).await? {
            OpOutput::Block(b) => Ok(Response::new(self.new_block(&who, &b, &targets))),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn update_pipeline(
        &self,
        req: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::UpdatePipelineResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        crate::tokens::ensure_key(&self.s).await.map_err(|e| state_status(self.s.node_id, &e))?;
        let client_name = holder(&who, &r.client_name)?;
        self.s.leases.renew(&client_name);
        let op = Op::UpdatePipeline { path, file_id: r.file_id, client_name, block_id: r.block_id };
        match self.write(rid(r.request_id), op).await? {
            OpOutput::Block(b) => {
                let now = std::time::Instant::now();
                self.s.blocks.set_pipeline(b.block_id, r.nodes.clone(), now);
                let live = self.s.blocks.live_nodes(now);
                let targets = r
                    .nodes
                    .iter()
                    .filter_map(|u| live.iter().find(|n| &n.loc.uuid == u))
                    .map(|n| crate::report::location_pb(&n.loc))
                    .collect();
                let token = crate::tokens::issue(&self.s, b.block_id, b.generation, crate::tokens::WRITE, &who.user);
                Ok(Response::new(pb::UpdatePipelineResponse { block: Some(block_pb(&b)), targets, token }))
            }
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn complete(&self, req: Request<pb::CompleteRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        let publish = match r.publish {
            None => None,
            Some(p) => Some(Self::publish_op(&who, p)?),
        };
        let shown = publish.as_ref().map_or(path.clone(), |p| p.dst.clone());
        let op = Op::Complete {
            path,
            file_id: r.file_id,
            client_name: holder(&who, &r.client_name)?,
            last_block_length: r.last_block_length,
            xattrs: r.xattrs.into_iter().collect(),
            publish,
        };
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &shown).await?;
        Ok(Response::new(pb::CompleteResponse { status: Some(status) }))
    }

    async fn put_small(&self, req: Request<pb::PutSmallRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        use crate::state::SmallFiles;
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let p = r
            .publish
            .ok_or_else(|| Status::invalid_argument("put_small: publish (where the file goes) is required"))?;
        let publish = Self::publish_op(&who, p)?;
        let dst = publish.dst.clone();
        // As for a create: what the file would have in blocks.
        let replication = self.replication_for(r.replication)?;
        let length = r.data.len() as u64;
        if length > crate::namespace::INLINE_MAX {
            return Err(inline_unavailable(format!(
                "{dst}: {length} bytes is over the {} bytes a file kept in the namespace may hold",
                crate::namespace::INLINE_MAX
            )));
        }
        let key = match &self.s.small_files {
            SmallFiles::Off => {
                return Err(inline_unavailable(format!(
                    "{dst}: this namenode keeps no small files (it has no master key to seal them with)"
                )))
            }
            SmallFiles::Sealed { key, .. } => Some(key),
            SmallFiles::Clear => None,
        };
        // Kept by every voter: as many copies as the file asks for, or not kept here.
        let voters = self.s.raft.metrics().borrow().membership_config.membership().voter_ids().count();
        if voters < replication as usize {
            return Err(inline_unavailable(format!(
                "{dst}: {replication} replicas asked and the namenode group has {voters} voters"
            )));
        }
        let sealed = if r.data.is_empty() { Vec::new() } else { tarn_security::small_file::seal(key, &r.data) };
        let op =
            Op::PutInline(PutInlineOp { publish, replication, block_size: self.s.defaults.block_size, length, sealed });
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &dst).await?;
        Ok(Response::new(pb::CompleteResponse { status: Some(status) }))
    }

    async fn get_file_info(
        &self,
        req: Request<pb::GetFileInfoRequest>,
    ) -> Result<Response<pb::GetFileInfoResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let found = self
            .read(|ns| {
                ns.check_lookup(&ns.with_groups(&who)?, &r.path)?;
                ns.resolve(&r.path)
            })
            .await?;
        let found = found.ok_or_else(|| fs_status(&FsError::NotFound { path: r.path.clone() }))?;
        Ok(Response::new(pb::GetFileInfoResponse { status: Some(status_pb(found.path, &found.inode, r.with_xattrs)) }))
    }

    async fn get_file_infos(
        &self,
        req: Request<pb::GetFileInfosRequest>,
    ) -> Result<Response<pb::GetFileInfosResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        if r.requests.len() > LIST_LIMIT_MAX {
            return Err(fs_status(&FsError::InvalidArgument(format!(
                "{} lookups in one call, over {LIST_LIMIT_MAX}",
                r.requests.len()
            ))));
        }
        let results = self
            .read(|ns| {
                let who = ns.with_groups(&who)?;
                Ok(r.requests
                    .iter()
                    .map(|q| match ns.check_lookup(&who, &q.path).and_then(|_| ns.resolve(&q.path)) {
                        Ok(Some(f)) => pb::FileInfoResult {
                            status: Some(status_pb(f.path, &f.inode, q.with_xattrs)),
                            ..Default::default()
                        },
                        Ok(None) => pb::FileInfoResult::default(),
                        Err(e) => pb::FileInfoResult {
                            status: None,
                            error_kind: fs_kind(&e).as_str().into(),
                            error_message: e.to_string(),
                        },
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(pb::GetFileInfosResponse { results }))
    }

    async fn get_blocks(&self, req: Request<pb::GetBlocksRequest>) -> Result<Response<pb::GetBlocksResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let (inode, (blocks, more), kept) = self
            .read(|ns| {
                // Reading a file's bytes: search permission on its directories (before
                // anything is said about the path), read on it.
                let who = ns.with_groups(&who)?;
                ns.check_lookup(&who, &r.path)?;
                let f = ns.resolve(&r.path)?.ok_or_else(|| FsError::NotFound { path: r.path.clone() })?;
                if f.inode.is_dir() {
                    return Err(FsError::IsADirectory { path: f.path });
                }
                ns.check_access(&f, &who, READ, "read it")?;
                if f.inode.is_inline() {
                    let kept = ns.inline_data(f.inode.id)?.ok_or_else(|| {
                        FsError::Storage(format!("{}: a small file's bytes are missing from the namespace", f.path))
                    })?;
                    return Ok((f.inode, (Vec::new(), false), Some(kept)));
                }
                Ok((f.inode.clone(), ns.get_blocks(f.inode.id, r.start_index, limit(r.limit))?, None))
            })
            .await?;
        if let Some(kept) = kept {
            let data = tarn_security::small_file::open_among(self.s.small_files.keys(), &kept)
                .map_err(|e| Status::data_loss(format!("{}: {e}", r.path)))?;
            return Ok(Response::new(pb::GetBlocksResponse {
                file_id: inode.id,
                length: inode.length,
                inline_data: Some(data.into()),
                ..Default::default()
            }));
        }
        crate::tokens::ensure_key(&self.s).await.map_err(|e| state_status(self.s.node_id, &e))?;
        let now = std::time::Instant::now();
        let located = blocks
            .iter()
            .map(|b| {
                let mut live = self.s.blocks.health(b.block_id, b.generation, now).live;
                // Spread readers over the replicas (no network distance is known yet).
                live.shuffle(&mut rand::rng());
                pb::LocatedBlock {
                    block: Some(block_pb(b)),
                    locations: live.iter().map(crate::report::location_pb).collect(),
                    under_construction: inode.last_block_open && b.index + 1 == inode.block_count,
                    token: crate::tokens::issue(&self.s, b.block_id, 0, crate::tokens::READ, &who.user),
                }
            })
            .collect();
        Ok(Response::new(pb::GetBlocksResponse {
            file_id: inode.id,
            blocks: blocks.iter().map(block_pb).collect(),
            has_more: more,
            located,
            length: inode.length,
            inline_data: None,
        }))
    }

    async fn list_directory(
        &self,
        req: Request<pb::ListDirectoryRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        if !r.start_after.is_empty() {
            crate::path::check_name(&r.path, &r.start_after).map_err(|e| fs_status(&e))?;
        }
        let (entries, more) = self
            .read(|ns| {
                let who = ns.with_groups(&who)?;
                ns.check_lookup(&who, &r.path)?;
                let f = ns.resolve(&r.path)?.ok_or_else(|| FsError::NotFound { path: r.path.clone() })?;
                if !f.inode.is_dir() {
                    // Like `ls` on a file: the file itself.
                    ns.check_access(&f, &who, 0, "see it")?;
                    return Ok((vec![f.inode], false));
                }
                ns.check_access(&f, &who, READ | EXECUTE, "list it")?;
                ns.list_dir(f.inode.id, &r.start_after, limit(r.limit))
            })
            .await?;
        let entries = entries.iter().map(|i| status_pb(i.name.clone(), i, false)).collect();
        Ok(Response::new(pb::ListResponse { entries, has_more: more }))
    }

    async fn list_recursive(
        &self,
        req: Request<pb::ListRecursiveRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        if !r.prefix.starts_with('/') {
            return Err(fs_status(&FsError::InvalidPath {
                path: r.prefix,
                reason: "prefix must start with '/'".into(),
            }));
        }
        let (entries, more) = self
            .read(|ns| {
                // Only what the caller may list: entries of unreadable directories are
                // passed over, not refused, as S3 listings and `ls -R` need.
                let who = ns.with_groups(&who)?;
                let mut sight = Sight::new(&who);
                let sight = if who.superuser { None } else { Some(&mut sight) };
                ns.list_tree(
                    &r.prefix,
                    &r.start_after,
                    limit(r.limit),
                    r.include_directories,
                    r.collapse_directories,
                    sight,
                )
            })
            .await?;
        let entries = entries.into_iter().map(|(p, i)| status_pb(p, &i, r.with_xattrs)).collect();
        Ok(Response::new(pb::ListResponse { entries, has_more: more }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        let op = Op::Delete { path, recursive: r.recursive, expected_file_id: r.expected_file_id };
        match self.write(rid(r.request_id), on_behalf(&who, op)).await? {
            OpOutput::Deleted { deleted, files } => {
                Ok(Response::new(pb::DeleteResponse { deleted, files_deleted: files }))
            }
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> Result<Response<pb::RenameResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let dst = Self::normalized(&r.dst)?;
        let src = Self::normalized(&r.src)?;
        let op = Op::Rename(RenameOp {
            src,
            dst: dst.clone(),
            overwrite: r.overwrite,
            dst_must_be_absent: r.dst_must_be_absent,
            dst_expected_file_id: r.dst_expected_file_id,
            src_expected_file_id: r.src_expected_file_id,
        });
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &dst).await?;
        Ok(Response::new(pb::RenameResponse { status: Some(status) }))
    }

    async fn concat(&self, req: Request<pb::ConcatRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let owner = owner_of_new(&who, r.owner.clone())?;
        let dst = Self::normalized(&r.dst)?;
        let mut sources = Vec::with_capacity(r.sources.len());
        for s in r.sources {
            sources.push((Self::normalized(&s.path)?, s.file_id));
        }
        let op = Op::Concat(ConcatOp {
            sources,
            dst: dst.clone(),
            overwrite: r.overwrite,
            dst_must_be_absent: r.dst_must_be_absent,
            dst_expected_file_id: r.dst_expected_file_id,
            create_parent: r.create_parent,
            mode: if r.mode == 0 { 0o644 } else { r.mode },
            owner,
            group: String::new(),
            xattrs: r.xattrs.into_iter().collect(),
            require_dir: r.require_dir.map(|d| Self::normalized(&d)).transpose()?,
        });
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &dst).await?;
        Ok(Response::new(pb::StatusResponse { status: Some(status) }))
    }

    async fn set_replication(
        &self,
        req: Request<pb::SetReplicationRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        let op = Op::SetReplication { path: path.clone(), replication: u16_arg("replication", r.replication)? };
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &path).await?;
        Ok(Response::new(pb::StatusResponse { status: Some(status) }))
    }

    async fn set_quota(&self, req: Request<pb::SetQuotaRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        let op = Op::SetQuota { path: path.clone(), namespace_quota: r.namespace_quota, space_quota: r.space_quota };
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &path).await?;
        Ok(Response::new(pb::StatusResponse { status: Some(status) }))
    }

    async fn set_attributes(
        &self,
        req: Request<pb::SetAttributesRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let path = Self::normalized(&r.path)?;
        // Modes, times and attributes are the owner's to change, the group the owner's to
        // one of theirs, the owner the superuser's (checked as the change is applied).
        let op = Op::SetAttributes(SetAttributesOp {
            path: path.clone(),
            mode: r.mode,
            owner: r.owner,
            group: r.group,
            mtime_ms: r.mtime_ms,
            set_xattrs: r.set_xattrs.into_iter().collect::<BTreeMap<_, _>>(),
            remove_xattrs: r.remove_xattrs,
            expected_file_id: r.expected_file_id,
        });
        let status = self.write_inode(rid(r.request_id), on_behalf(&who, op), &path).await?;
        Ok(Response::new(pb::StatusResponse { status: Some(status) }))
    }

    async fn get_content_summary(
        &self,
        req: Request<pb::ContentSummaryRequest>,
    ) -> Result<Response<pb::ContentSummary>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let (found, s): (Found, _) = self
            .read(|ns| {
                let who = ns.with_groups(&who)?;
                ns.check_lookup(&who, &r.path)?;
                let f = ns.resolve(&r.path)?.ok_or_else(|| FsError::NotFound { path: r.path.clone() })?;
                // HDFS's rule: counting a subtree needs r+x on every directory in it.
                ns.check_subtree(&f, &who, READ | EXECUTE, "count what is in it")?;
                let s = ns.summarize(&f)?;
                Ok((f, s))
            })
            .await?;
        let quota = status_pb(String::new(), &found.inode, false).quota;
        Ok(Response::new(pb::ContentSummary {
            file_count: s.files,
            directory_count: s.directories,
            length: s.length,
            space_consumed: s.space,
            quota,
        }))
    }

    async fn renew_lease(
        &self,
        req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        let client_name = holder(&who, &r.client_name)?;
        // Renewal is soft state on the leader; a follower's renewal would be lost.
        let leader = self.s.raft.current_leader().await;
        if leader != Some(self.s.node_id) {
            let e = ProposeError::NotLeader { leader_id: leader, leader_addr: leader_addr(&self.s.raft) };
            return Err(propose_status(self.s.node_id, &e));
        }
        self.s.leases.renew(&client_name);
        Ok(Response::new(pb::RenewLeaseResponse {}))
    }

    async fn recover_lease(
        &self,
        req: Request<pb::RecoverLeaseRequest>,
    ) -> Result<Response<pb::RecoverLeaseResponse>, Status> {
        let who = checked_caller(&req)?;
        let r = req.into_inner();
        // Checked before block recovery touches the replicas, and again when the file is
        // closed.
        let found = self
            .read(|ns| {
                let who = ns.with_groups(&who)?;
                ns.check_lookup(&who, &r.path)?;
                let f = ns.resolve(&r.path)?;
                if let Some(f) = &f {
                    ns.check_access(f, &who, WRITE, "recover its lease")?;
                }
                Ok(f)
            })
            .await?;
        let found = found.ok_or_else(|| fs_status(&FsError::NotFound { path: r.path.clone() }))?;
        let Some(holder) = found.inode.writer.clone() else {
            return Ok(Response::new(pb::RecoverLeaseResponse { closed: true }));
        };
        require_leader(&self.s)?;
        let last_block_length = crate::monitor::recover_last_block(&self.s, found.inode.id, &holder).await;
        let op = Op::RecoverLease { file_id: found.inode.id, holder: Some(holder), last_block_length };
        match self.write(rid(r.request_id), on_behalf(&who, op)).await? {
            OpOutput::LeaseRecovered { closed } => Ok(Response::new(pb::RecoverLeaseResponse { closed })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn report_bad_blocks(
        &self,
        req: Request<pb::ReportBadBlocksRequest>,
    ) -> Result<Response<pb::ReportBadBlocksResponse>, Status> {
        let who = checked_caller(&req)?;
        let marked = crate::report::reader_reported_bad(&self.s, &who, &req.into_inner())
            .map_err(|e| state_status(self.s.node_id, &e))?;
        Ok(Response::new(pb::ReportBadBlocksResponse { marked }))
    }
}

fn leader_addr(raft: &Raft) -> Option<String> {
    let m = raft.metrics().borrow().clone();
    let leader = m.current_leader?;
    m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
}

/// Cluster administration.
pub struct AdminService {
    s: Arc<NodeState>,
}

impl AdminService {
    pub fn new(s: Arc<NodeState>) -> Self {
        AdminService { s }
    }

    fn status(&self) -> pb::ClusterStatusResponse {
        let mut s = cluster_status(&self.s.raft);
        s.cluster_format = self.s.formats.cluster() as u32;
        s.binary_format = crate::upgrade::binary_format() as u32;
        s
    }

    fn raft_status(
        &self,
        e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
    ) -> Status {
        let msg = e.to_string();
        if let Some(f) = e.forward_to_leader::<BasicNode>() {
            let pe =
                ProposeError::NotLeader { leader_id: f.leader_id, leader_addr: f.leader_node.clone().map(|n| n.addr) };
            return propose_status(self.s.node_id, &pe);
        }
        Status::failed_precondition(msg)
    }
}

/// A snapshot of this node's view of the group.
pub fn cluster_status(raft: &Raft) -> pb::ClusterStatusResponse {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let matched =
        |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index).unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, n)| pb::Member {
            node_id: *id,
            addr: n.addr.clone(),
            voter: voters.contains(id),
            matched_index: matched(id),
        })
        .collect();
    let leader_addr =
        m.current_leader.and_then(|l| membership.get_node(&l)).map(|n| n.addr.clone()).unwrap_or_default();
    pb::ClusterStatusResponse {
        node_id: m.id,
        leader_id: m.current_leader.unwrap_or(0),
        leader_addr,
        term: m.current_term,
        state: format!("{:?}", m.state),
        last_log_index: m.last_log_index.unwrap_or(0),
        last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        members,
        // Filled in by the admin service, which knows the formats.
        cluster_format: 0,
        binary_format: 0,
    }
}

#[tonic::async_trait]
impl NamenodeAdmin for AdminService {
    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = req.into_inner();
        if r.node_id == 0 || r.addr.is_empty() {
            return Err(Status::invalid_argument("node_id (> 0) and addr are required"));
        }
        self.s.raft.add_learner(r.node_id, BasicNode { addr: r.addr }, true).await.map_err(|e| self.raft_status(e))?;
        Ok(Response::new(pb::MembershipResponse { status: Some(self.status()) }))
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = req.into_inner();
        let voters: BTreeSet<NodeId> = r.voters.into_iter().collect();
        if voters.is_empty() {
            return Err(Status::invalid_argument("the new membership needs at least one voter"));
        }
        self.s.raft.change_membership(voters, r.retain_as_learners).await.map_err(|e| self.raft_status(e))?;
        Ok(Response::new(pb::MembershipResponse { status: Some(self.status()) }))
    }

    async fn datanode_report(
        &self,
        _req: Request<pb::DatanodeReportRequest>,
    ) -> Result<Response<pb::DatanodeReportResponse>, Status> {
        Ok(Response::new(crate::report::datanode_report(&self.s).map_err(|e| state_status(self.s.node_id, &e))?))
    }

    async fn decommission(
        &self,
        req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        let r = req.into_inner();
        require_leader(&self.s)?;
        let nodes = self.s.blocks.all_nodes(std::time::Instant::now());
        let uuid = nodes
            .iter()
            .map(|(n, _)| &n.loc)
            .find(|l| l.uuid == r.node || l.addr == r.node)
            .map(|l| l.uuid.clone())
            .ok_or_else(|| Status::not_found(format!("no datanode {:?} is registered", r.node)))?;
        let op = Op::SetDecommission { uuid: uuid.clone(), on: r.on };
        match self.s.proposer.propose(None, op).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(fs_status(&e)),
            Err(e) => return Err(propose_status(self.s.node_id, &e)),
        }
        crate::monitor::refresh_draining(&self.s);
        tracing::info!(%uuid, on = r.on, "decommission set");
        Ok(Response::new(pb::DecommissionResponse { uuid }))
    }

    async fn finalize_upgrade(
        &self,
        _req: Request<pb::FinalizeUpgradeRequest>,
    ) -> Result<Response<pb::FinalizeUpgradeResponse>, Status> {
        require_leader(&self.s)?;
        let target = crate::upgrade::binary_format();
        let previous = self.s.formats.cluster();
        if previous < target {
            let members: Vec<NodeId> = {
                let m = self.s.raft.metrics().borrow().clone();
                m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
            };
            // Every member must answer after this moment (a node rolled back a moment ago
            // must not count with what its newer binary said).
            let since = std::time::Instant::now();
            let deadline = tokio::time::Instant::now() + crate::upgrade::FINALIZE_WAIT;
            loop {
                match self.s.formats.check_members(self.s.node_id, &members, target, since) {
                    Ok(()) => break,
                    Err(crate::upgrade::Unready::Waiting(_)) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(why) => {
                        let msg = format!(
                            "the cluster stays at format {previous}: {} (upgrade every namenode to this tarn, \
                             start it, and run this again)",
                            why.reasons().join("; ")
                        );
                        return Err(kind_status(ErrorKind::UpgradePending, msg));
                    }
                }
            }
            self.s
                .propose(Op::SetClusterFormat { format: target })
                .await
                .map_err(|e| state_status(self.s.node_id, &e))?;
        }
        Ok(Response::new(pb::FinalizeUpgradeResponse {
            previous_format: previous as u32,
            cluster_format: self.s.formats.cluster() as u32,
        }))
    }

    async fn leave_safe_mode(
        &self,
        _req: Request<pb::LeaveSafeModeRequest>,
    ) -> Result<Response<pb::LeaveSafeModeResponse>, Status> {
        require_leader(&self.s)?;
        crate::monitor::leave_safe_mode(&self.s);
        Ok(Response::new(pb::LeaveSafeModeResponse {}))
    }

    async fn fsck(&self, req: Request<pb::FsckRequest>) -> Result<Response<pb::FsckResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(crate::report::fsck(&self.s, &r).map_err(|e| state_status(self.s.node_id, &e))?))
    }

    async fn change_group(
        &self,
        req: Request<pb::ChangeGroupRequest>,
    ) -> Result<Response<pb::ChangeGroupResponse>, Status> {
        let r = req.into_inner();
        if r.add.is_empty() && r.remove.is_empty() {
            return Err(Status::invalid_argument("name users to add to or remove from the group"));
        }
        let op = Op::ChangeGroup { group: r.group, add: r.add, remove: r.remove };
        match self.s.proposer.propose(None, op).await {
            Ok(Ok(_)) => Ok(Response::new(pb::ChangeGroupResponse {})),
            Ok(Err(e)) => Err(fs_status(&e)),
            Err(e) => Err(propose_status(self.s.node_id, &e)),
        }
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let r = req.into_inner();
        self.s.reads.wait().await.map_err(|e| propose_status(self.s.node_id, &e))?;
        let view = SnapView::new(&self.s.db);
        let ns = Namespace::new(&view, 0);
        let all = ns.all_groups().map_err(|e| fs_status(&e))?;
        let groups = all
            .into_iter()
            .filter(|(_, members)| r.user.is_empty() || members.contains(&r.user))
            .map(|(name, members)| pb::list_groups_response::Group { name, members })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn reseal_small_files(
        &self,
        req: Request<pb::ResealSmallFilesRequest>,
    ) -> Result<Response<pb::ResealSmallFilesResponse>, Status> {
        use tarn_security::small_file;
        let after = req.into_inner().after_file_id;
        require_leader(&self.s)?;
        let Some(key) = self.s.small_files.key() else {
            return Err(Status::failed_precondition(
                "this namenode has no master key: it keeps no sealed small files (security.master_key_file)",
            ));
        };
        let key_id = key.id();
        self.s.reads.wait().await.map_err(|e| propose_status(self.s.node_id, &e))?;
        let mut out = pb::ResealSmallFilesResponse { key_id: key.id_hex(), ..Default::default() };
        let (page, more) = {
            let view = SnapView::new(&self.s.db);
            Namespace::new(&view, 0).inline_page(after, 512).map_err(|e| fs_status(&e))?
        };
        out.has_more = more;
        out.last_file_id = page.last().map(|(id, _)| *id);
        let mut ops = Vec::new();
        for (id, kept) in page {
            if small_file::sealed_by(&kept) == Some(key_id) {
                out.current += 1;
                continue;
            }
            match small_file::open_among(self.s.small_files.keys(), &kept) {
                Ok(plain) => ops.push(Op::ResealInline {
                    file_id: id,
                    seal_id: small_file::seal_id(&kept).to_vec(),
                    sealed: small_file::seal(Some(key), &plain),
                }),
                Err(e) => {
                    out.unreadable += 1;
                    if out.errors.len() < 10 {
                        out.errors.push(format!("file id {id}: {e}"));
                    }
                }
            }
        }
        // Proposed together: the proposer packs them into few Raft entries.
        let results = futures::future::join_all(ops.into_iter().map(|op| self.s.proposer.propose(None, op))).await;
        for r in results {
            match r {
                Ok(Ok(OpOutput::Resealed(true))) => out.resealed += 1,
                Ok(Ok(_)) => {} // deleted or written again meanwhile: under the current key
                Ok(Err(e)) => return Err(fs_status(&e)),
                Err(e) => return Err(propose_status(self.s.node_id, &e)),
            }
        }
        if out.resealed > 0 || out.unreadable > 0 {
            tracing::info!(resealed = out.resealed, unreadable = out.unreadable, key = %out.key_id, "small files re-sealed");
        }
        Ok(Response::new(out))
    }

    async fn trigger_snapshot(
        &self,
        _req: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        let applied = self.s.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
        self.s.raft.trigger().snapshot().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let m = self
            .s
            .raft
            .wait(Some(std::time::Duration::from_secs(60)))
            .metrics(|m| m.snapshot.map(|s| s.index).unwrap_or(0) >= applied, "snapshot")
            .await
            .map_err(|e| Status::deadline_exceeded(format!("snapshot not built: {e}")))?;
        Ok(Response::new(pb::TriggerSnapshotResponse { snapshot_index: m.snapshot.map(|s| s.index).unwrap_or(0) }))
    }
}
