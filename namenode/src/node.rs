//! A namenode process: configuration, start-up (storage, Raft, gRPC server, batchers,
//! lease monitor) and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tarn_proto::datanode::datanode_protocol_server::DatanodeProtocolServer;
use tarn_proto::namenode::namenode_admin_server::NamenodeAdminServer;
use tarn_proto::namenode::namenode_server::NamenodeServer;
use tarn_proto::raft::raft_transport_server::RaftTransportServer;
use tarn_security::{RequireRole, Role, Transport};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;

use crate::error::NamenodeError;
use crate::kv::SnapView;
use crate::leases::{LeaseLimits, Leases};
use crate::network::{RaftNet, RaftTransportService, RAFT_MESSAGE_BYTES_MAX};
use crate::proposer::{BatchLimits, ProposeError, Proposer, ReadGate};
use crate::records::{parse_u64, CF_UC};
use crate::service::{AdminService, NamenodeService};
pub use crate::state::SmallFiles;
use crate::state::{FileDefaults, NodeState};
use crate::store::{open_db, DbMemory, LogStore, StateMachine};
use crate::types::{NodeId, Op, Raft};

/// Client messages at most (a listing page of 10,000 entries fits comfortably).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// A namenode's configuration (the `[namenode]` table of the TOML config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamenodeConfig {
    /// This node's id in the Raft group (> 0, unique).
    pub node_id: NodeId,
    /// Address to listen on for clients and peers. Port 0 picks a free port (and a restarted
    /// node reuses the port it had, which its peers know).
    pub listen: String,
    /// Address peers and clients use to reach this node; defaults to the bound address.
    pub advertise: Option<String>,
    /// Where the Raft log, the namespace and snapshots live.
    pub data_dir: PathBuf,
    /// The voters that form a new group, as `"ID@HOST:PORT"` (`"ID@"` for this node's own
    /// address). The lowest id initializes the group on first start. Empty: this node
    /// waits to be added with `tarn admin add-learner`.
    pub initial_members: Vec<String>,
    pub raft: RaftTuning,
    pub batch: BatchTuning,
    pub leases: LeaseTuning,
    pub files: FileTuning,
    pub memory: MemoryTuning,
    pub datanodes: DatanodeTuning,
}

/// How the leader keeps track of datanodes (`[namenode.datanodes]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatanodeTuning {
    /// The heartbeat interval datanodes are told to use.
    pub heartbeat_interval_ms: u64,
    /// A datanode silent this long is dead: its replicas are copied elsewhere.
    pub dead_after_ms: u64,
    /// After a start, the namespace takes no changes until this fraction of blocks has a
    /// reported replica (safe mode).
    pub safe_mode_threshold: f64,
    /// A table of `HOST RACK` lines naming the rack of each datanode (see
    /// `topology.rs`). Without it, each datanode's own `datanode.rack` setting counts.
    pub topology_file: Option<std::path::PathBuf>,
}

impl Default for DatanodeTuning {
    fn default() -> Self {
        // HDFS: 3 s heartbeats, dead after 10.5 min. Tarn re-replicates sooner: 30 s.
        DatanodeTuning {
            heartbeat_interval_ms: 1000,
            dead_after_ms: 30_000,
            safe_mode_threshold: 0.999,
            topology_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTuning {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Leader-lease reads: the leader answers a linearizable read without a heartbeat
    /// round while a quorum acknowledged a heartbeat it sent less than this long ago.
    /// Must stay below `election_timeout_min_ms`; 0 makes every read a read-index round.
    pub read_lease_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot (lagging followers within this catch up from the log).
    pub logs_kept_after_snapshot: u64,
    /// Entries per AppendEntries message.
    pub entries_per_append_max: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            // Failover takes about two election timeouts: followers refuse votes for
            // election_timeout_max after the last heartbeat (openraft's leader lease), so the
            // first candidate's round fails. 200-400 ms keeps it under a second, and 4
            // heartbeats per timeout keep spurious elections away.
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            // Followers refuse votes for election_timeout_max (400 ms) after they last heard
            // from the leader; the lease runs from a lower bound of when a quorum acknowledged,
            // so 150 ms leaves at least 250 ms of margin for clock rate drift.
            read_lease_ms: 150,
            snapshot_after_entries: 20_000,
            logs_kept_after_snapshot: 5_000,
            entries_per_append_max: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchTuning {
    pub ops_per_entry_max: usize,
    pub entries_in_flight_max: usize,
}

impl Default for BatchTuning {
    fn default() -> Self {
        let d = BatchLimits::default();
        BatchTuning { ops_per_entry_max: d.ops_per_entry_max, entries_in_flight_max: d.entries_in_flight_max }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseTuning {
    pub soft_limit_ms: u64,
    pub hard_limit_ms: u64,
}

impl Default for LeaseTuning {
    fn default() -> Self {
        let d = LeaseLimits::default();
        LeaseTuning { soft_limit_ms: d.soft.as_millis() as u64, hard_limit_ms: d.hard.as_millis() as u64 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTuning {
    pub default_replication: u16,
    pub default_block_size: u64,
}

impl Default for FileTuning {
    fn default() -> Self {
        FileTuning { default_replication: 3, default_block_size: 128 << 20 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryTuning {
    pub block_cache_mb: usize,
    pub write_buffer_mb: usize,
}

impl Default for MemoryTuning {
    fn default() -> Self {
        let d = DbMemory::default();
        MemoryTuning { block_cache_mb: d.block_cache_bytes >> 20, write_buffer_mb: d.write_buffer_bytes >> 20 }
    }
}

impl Default for NamenodeConfig {
    fn default() -> Self {
        NamenodeConfig {
            node_id: 1,
            listen: "127.0.0.1:8020".into(),
            advertise: None,
            data_dir: PathBuf::from("tarn-data/namenode"),
            initial_members: Vec::new(),
            raft: RaftTuning::default(),
            batch: BatchTuning::default(),
            leases: LeaseTuning::default(),
            files: FileTuning::default(),
            memory: MemoryTuning::default(),
            datanodes: DatanodeTuning::default(),
        }
    }
}

impl NamenodeConfig {
    /// `initial_members` parsed: node id -> address ("" for this node's own).
    pub fn members(&self) -> Result<BTreeMap<NodeId, String>, NamenodeError> {
        let mut out = BTreeMap::new();
        for m in &self.initial_members {
            let (id, addr) = m
                .split_once('@')
                .ok_or_else(|| NamenodeError::Config(format!("namenode.initial_members: {m:?} is not ID@HOST:PORT")))?;
            let id: NodeId =
                id.trim().parse().ok().filter(|i| *i > 0).ok_or_else(|| {
                    NamenodeError::Config(format!("namenode.initial_members: {m:?} needs a node id > 0"))
                })?;
            if out.insert(id, addr.trim().to_string()).is_some() {
                return Err(NamenodeError::Config(format!("namenode.initial_members: node {id} is listed twice")));
            }
        }
        Ok(out)
    }

    /// Checks the configuration, naming the key at fault.
    pub fn validate(&self) -> Result<(), NamenodeError> {
        let bad = |key: &str, why: &str| Err(NamenodeError::Config(format!("namenode.{key}: {why}")));
        self.members()?;
        if self.node_id == 0 {
            return bad("node_id", "must be > 0");
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return bad("raft.election_timeout_min_ms", "must exceed raft.heartbeat_interval_ms (> 0)");
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return bad("raft.election_timeout_max_ms", "must exceed raft.election_timeout_min_ms");
        }
        let d = &self.datanodes;
        if d.heartbeat_interval_ms == 0 || d.dead_after_ms <= 2 * d.heartbeat_interval_ms {
            return bad("datanodes.dead_after_ms", "must exceed two datanodes.heartbeat_interval_ms (> 0)");
        }
        if !(0.0..=1.0).contains(&d.safe_mode_threshold) {
            return bad("datanodes.safe_mode_threshold", "must be between 0 and 1");
        }
        if r.read_lease_ms >= r.election_timeout_min_ms {
            return bad("raft.read_lease_ms", "must be below raft.election_timeout_min_ms (0 turns lease reads off)");
        }
        if r.snapshot_after_entries == 0 {
            return bad("raft.snapshot_after_entries", "must be > 0");
        }
        if self.batch.ops_per_entry_max == 0 || self.batch.entries_in_flight_max == 0 {
            return bad("batch", "ops_per_entry_max and entries_in_flight_max must be > 0");
        }
        if self.files.default_replication == 0 || self.files.default_block_size == 0 {
            return bad("files", "default_replication and default_block_size must be > 0");
        }
        if self.leases.soft_limit_ms == 0 || self.leases.hard_limit_ms < self.leases.soft_limit_ms {
            return bad("leases.hard_limit_ms", "must be >= leases.soft_limit_ms (> 0)");
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad("listen", "must be host:port with a numeric IP, e.g. 0.0.0.0:8020");
        }
        Ok(())
    }
}

/// A running namenode.
pub struct NamenodeHandle {
    pub node_id: NodeId,
    /// The address clients and peers reach this node at.
    pub addr: String,
    /// The address it listens on (the same unless `advertise` names another).
    pub listen: SocketAddr,
    pub raft: Raft,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    db: Arc<crate::kv::Db>,
}

impl NamenodeHandle {
    /// Stops serving, shuts Raft down and closes the database. The database is closed
    /// here, once every task has let go of it, so that a process exiting right after
    /// shutdown never races RocksDB's background threads.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.raft.shutdown().await;
        let _ = self.server.await;
        let deadline = tokio::time::Instant::now() + DB_RELEASE_WAIT;
        while Arc::strong_count(&self.db) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.db) > 1 {
            tracing::warn!("namenode tasks still hold the database after {DB_RELEASE_WAIT:?}; it closes when they end");
        }
        drop(self.db);
    }

    /// The log index this node's state machine has applied and a digest of all of its
    /// contents (tests compare replicas with it).
    pub fn state_digest(&self) -> Result<(u64, u32), NamenodeError> {
        let (applied, digest) = crate::store::state_digest(&self.db)?;
        Ok((applied.map(|l| l.index).unwrap_or(0), digest))
    }

    /// Resolves when the node stops on its own (server error).
    pub fn cancelled(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

const LISTEN_ADDR_FILE: &str = "listen-addr";
/// How long shutdown waits for tasks to release the database.
const DB_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Binds the listener: a configured port 0 reuses the port of the previous run, if any.
async fn bind(cfg: &NamenodeConfig) -> Result<TcpListener, NamenodeError> {
    let mut addr: SocketAddr =
        cfg.listen.parse().map_err(|_| NamenodeError::Config("namenode.listen: not host:port".into()))?;
    let saved = cfg.data_dir.join(LISTEN_ADDR_FILE);
    if addr.port() == 0 {
        if let Some(prev) = std::fs::read_to_string(&saved).ok().and_then(|s| s.trim().parse::<SocketAddr>().ok()) {
            if prev.ip() == addr.ip() {
                addr = prev;
            }
        }
    }
    let l = TcpListener::bind(addr).await.map_err(|source| NamenodeError::Bind { addr: addr.to_string(), source })?;
    let bound = l.local_addr().map_err(|e| NamenodeError::io("read bound address", e))?;
    std::fs::write(&saved, bound.to_string())
        .map_err(|e| NamenodeError::io(format!("write {}", saved.display()), e))?;
    Ok(l)
}

fn raft_config(cfg: &NamenodeConfig) -> Result<openraft::Config, NamenodeError> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: "tarn-namenodes".into(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
        max_in_snapshot_log_to_keep: r.logs_kept_after_snapshot,
        max_payload_entries: r.entries_per_append_max,
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 5_000,
        purge_batch_size: 256,
        ..Default::default()
    };
    c.validate().map_err(|e| NamenodeError::Config(format!("namenode.raft: {e}")))
}

/// Starts a namenode and returns once it is serving; `transport` secures every link
/// (clients, peers, datanodes); `small_files` says whether the namespace keeps small
/// files' bytes (every namenode of a group should be given the same master key).
pub async fn start(
    cfg: NamenodeConfig,
    transport: Transport,
    small_files: SmallFiles,
) -> Result<NamenodeHandle, NamenodeError> {
    cfg.validate()?;
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| NamenodeError::io(format!("create {}", dir.display()), e))?;
    // The store holds the keys that sign block access tokens (and small files' sealed
    // bytes): the namenode's OS user's alone, whatever the umask (a container on the same
    // host must not read them).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| NamenodeError::io(format!("make {} private", dir.display()), e))?;
    let listener = bind(&cfg).await?;
    let bound = listener.local_addr().map_err(|e| NamenodeError::io("read bound address", e))?;
    let addr = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());

    let mem = DbMemory {
        block_cache_bytes: cfg.memory.block_cache_mb << 20,
        write_buffer_bytes: cfg.memory.write_buffer_mb << 20,
    };
    let topology = match &cfg.datanodes.topology_file {
        Some(p) => crate::topology::Topology::load(p)?,
        None => crate::topology::Topology::default(),
    };
    let db = open_db(&dir.join("db"), mem)?;
    let db_handle = db.clone();
    let log = LogStore::new(db.clone());
    let formats = Arc::new(crate::upgrade::Formats::default());
    let sm = StateMachine::open(db.clone(), dir.join("snapshots"), formats.clone())?;
    let net = RaftNet { transport: transport.clone(), formats: formats.clone() };
    let raft = Raft::new(cfg.node_id, Arc::new(raft_config(&cfg)?), net, log, sm)
        .await
        .map_err(|e| NamenodeError::Raft(e.to_string()))?;

    let shutdown = CancellationToken::new();
    let limits = BatchLimits {
        ops_per_entry_max: cfg.batch.ops_per_entry_max,
        entries_in_flight_max: cfg.batch.entries_in_flight_max,
        ..BatchLimits::default()
    };
    let state = Arc::new(NodeState {
        node_id: cfg.node_id,
        raft: raft.clone(),
        db,
        proposer: Proposer::spawn(raft.clone(), limits, formats.clone(), shutdown.clone()),
        reads: ReadGate::spawn(
            raft.clone(),
            cfg.node_id,
            Duration::from_millis(cfg.raft.read_lease_ms),
            limits.queue_ops_max,
            shutdown.clone(),
        ),
        leases: Leases::new(LeaseLimits {
            soft: Duration::from_millis(cfg.leases.soft_limit_ms),
            hard: Duration::from_millis(cfg.leases.hard_limit_ms),
        }),
        defaults: FileDefaults { replication: cfg.files.default_replication, block_size: cfg.files.default_block_size },
        blocks: crate::blocks::BlockManager::new(crate::blocks::BlockLimits {
            dead_after: Duration::from_millis(cfg.datanodes.dead_after_ms),
            ..Default::default()
        }),
        datanode_heartbeat: Duration::from_millis(cfg.datanodes.heartbeat_interval_ms),
        safe_mode: crate::safe_mode::SafeMode::new(cfg.datanodes.safe_mode_threshold),
        topology,
        transport: transport.clone(),
        block_keys: tarn_security::BlockKeys::new(),
        block_key_lock: tokio::sync::Mutex::new(()),
        small_files,
        formats,
    });

    let server = serve(listener, state.clone(), &transport, shutdown.clone());
    // The node that forms a new group starts it at this binary's format (an existing
    // group's format is raised only by an operator: `finalize-upgrade`).
    if initialize(&cfg, &raft, &addr).await? {
        let stamp = tokio::spawn(stamp_new_group(state.clone(), shutdown.clone()));
        // A group of one is led at once: it writes in its format before anyone calls.
        if cfg.members()?.len() == 1 && tokio::time::timeout(STAMP_WAIT, stamp).await.is_err() {
            tracing::warn!("the new group's format is not set yet; it will be once this node leads");
        }
    }
    tokio::spawn(lease_monitor(state.clone(), shutdown.clone()));
    tokio::spawn(block_monitor(state, shutdown.clone()));
    tracing::info!(node_id = cfg.node_id, %addr, data_dir = %dir.display(), "namenode serving");
    Ok(NamenodeHandle { node_id: cfg.node_id, addr, listen: bound, raft, shutdown, server, db: db_handle })
}

/// Who may call what: any certificate of the cluster may use the file system API (each
/// call acts as its caller); only admins call the admin service, only namenodes send Raft
/// messages, only datanodes speak the datanode protocol.
const ADMIN_ONLY: RequireRole = RequireRole { service: "the namenode admin service", roles: &[Role::Admin] };
const NAMENODES_ONLY: RequireRole = RequireRole { service: "the Raft transport", roles: &[Role::Namenode] };
const DATANODES_ONLY: RequireRole = RequireRole { service: "the datanode protocol", roles: &[Role::Datanode] };

fn serve(
    listener: TcpListener,
    state: Arc<NodeState>,
    transport: &Transport,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    use tonic::service::interceptor::InterceptedService;
    let client = NamenodeServer::new(NamenodeService::new(state.clone()))
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    let client = InterceptedService::new(client, crate::service::check_claim);
    let admin = InterceptedService::new(NamenodeAdminServer::new(AdminService::new(state.clone())), ADMIN_ONLY);
    let datanodes = DatanodeProtocolServer::new(crate::dn_service::DatanodeService::new(state.clone()))
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    let datanodes = InterceptedService::new(datanodes, DATANODES_ONLY);
    let raft = RaftTransportServer::new(RaftTransportService::new(state.raft.clone(), state.formats.clone()))
        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
    let raft = InterceptedService::new(raft, NAMENODES_ONLY);
    // Accepted sockets get Nagle off (a held-back response tail waits for a delayed ACK).
    let incoming = transport.incoming(listener, shutdown.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .add_service(client)
            .add_service(admin)
            .add_service(raft)
            .add_service(datanodes)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = &r {
            tracing::error!(error = %e, "namenode server stopped");
        }
        shutdown.cancel();
        r
    })
}

/// How long `start` waits for a new group of one to take its format.
const STAMP_WAIT: Duration = Duration::from_secs(10);

/// A new group writes in this binary's format from the start: the node that formed it
/// raises the cluster format once it leads and every member answered it with a binary
/// that reads it (the check of an operator's finalize). A member on an older binary
/// leaves it to the operator.
async fn stamp_new_group(state: Arc<NodeState>, shutdown: CancellationToken) {
    let target = crate::format::FORMAT_CURRENT;
    let since = std::time::Instant::now();
    let mut metrics = state.raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if state.formats.cluster() >= target {
            return;
        }
        let (leads, members) = {
            let m = metrics.borrow_and_update();
            let members: Vec<NodeId> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
            (m.current_leader == Some(state.node_id) && m.state == openraft::ServerState::Leader, members)
        };
        if leads {
            match state.formats.check_members(state.node_id, &members, target, since) {
                Ok(()) => match state.proposer.propose(None, Op::SetClusterFormat { format: target }).await {
                    Ok(Ok(_)) => {
                        tracing::info!(cluster_format = target, "a new namenode group writes in format {target}");
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not set the new group's format"),
                    Err(ProposeError::Fatal(e)) => {
                        tracing::warn!(error = %e, "could not set the new group's format");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "could not set the new group's format yet"),
                },
                Err(crate::upgrade::Unready::Older(why)) => {
                    tracing::warn!(
                        reasons = %why.join("; "),
                        "a member of the new group runs an older binary: the group stays at format {}; \
                         finish with `tarn admin finalize-upgrade`",
                        state.formats.cluster()
                    );
                    return;
                }
                Err(crate::upgrade::Unready::Waiting(_)) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = metrics.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Forms the group on first start when this node is the lowest id of `initial_members`.
/// Returns whether it did (this node formed a new group just now).
async fn initialize(cfg: &NamenodeConfig, raft: &Raft, addr: &str) -> Result<bool, NamenodeError> {
    let initial = cfg.members()?;
    let lowest = initial.keys().next().copied();
    if lowest != Some(cfg.node_id) {
        return Ok(false);
    }
    if raft.is_initialized().await.map_err(|e| NamenodeError::Raft(e.to_string()))? {
        return Ok(false);
    }
    let members: BTreeMap<NodeId, BasicNode> = initial
        .iter()
        .map(|(id, a)| {
            let a = if a.is_empty() || *id == cfg.node_id { addr.to_string() } else { a.clone() };
            (*id, BasicNode { addr: a })
        })
        .collect();
    tracing::info!(?members, "initializing a new namenode group");
    raft.initialize(members).await.map_err(|e| NamenodeError::Raft(format!("initialize: {e}")))?;
    Ok(true)
}

/// On the leader: closes files whose writer has been silent past the hard limit. Open
/// files are scanned only when some holder can have expired, a bounded slice per tick.
/// Runs the block monitor on the leader: dead datanodes, deleted blocks' replicas,
/// re-replication.
async fn block_monitor(state: Arc<NodeState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::monitor::MONITOR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => crate::monitor::monitor_round(&state).await,
        }
    }
}

async fn lease_monitor(state: Arc<NodeState>, shutdown: CancellationToken) {
    let metrics = state.raft.metrics();
    let mut was_leader = false;
    let mut cursor: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let is_leader = metrics.borrow().current_leader == Some(state.node_id);
        if is_leader && !was_leader {
            state.leases.reset();
            cursor = None;
        }
        was_leader = is_leader;
        if !is_leader {
            continue;
        }
        // A scan in progress goes on; a new one starts only when a lease can have expired.
        let from = match cursor.take() {
            Some(c) => c,
            None if state.leases.scan_due() => {
                state.leases.scan_begin();
                Vec::new()
            }
            None => continue,
        };
        let (expired, next) = expired_leases(&state, &from);
        if next.is_empty() {
            state.leases.scan_done();
        } else {
            cursor = Some(next);
        }
        for (file_id, holder) in expired {
            tracing::info!(file_id, %holder, "lease hard limit passed; closing the file");
            let last_block_length = crate::monitor::recover_last_block(&state, file_id, &holder).await;
            let op = Op::RecoverLease { file_id, holder: Some(holder), last_block_length };
            if let Err(e) = state.proposer.propose(None, op).await {
                tracing::debug!(error = %e, "lease recovery not proposed");
            }
        }
    }
}

/// Rows of the open-files table examined per tick: the scan goes round-robin from a
/// cursor, so a namespace with millions of open files costs the same per tick.
const LEASE_SCAN_ROWS_PER_TICK: usize = 10_000;

/// Open files after `cursor` whose holder is past the hard limit, and the next cursor
/// (empty to start over).
fn expired_leases(state: &NodeState, cursor: &[u8]) -> (Vec<(u64, String)>, Vec<u8>) {
    use crate::kv::KvRead;
    let mut out = Vec::new();
    let mut seen = 0;
    let mut last = Vec::new();
    let view = SnapView::new(&state.db);
    let r = view.scan(CF_UC, cursor, None, &mut |k, v| {
        if k == cursor {
            return Ok(true);
        }
        seen += 1;
        last = k.to_vec();
        let holder = String::from_utf8_lossy(v).to_string();
        if state.leases.hard_expired(&holder) {
            out.push((parse_u64("uc key", k)?, holder));
        }
        Ok(seen < LEASE_SCAN_ROWS_PER_TICK)
    });
    if let Err(e) = r {
        // Scanned again at the next tick.
        tracing::warn!(error = %e, "scan open files for expired leases");
    }
    let next = if seen < LEASE_SCAN_ROWS_PER_TICK { Vec::new() } else { last };
    (out, next)
}

/// The directory layout under a namenode's data directory, for tools and tests.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}
