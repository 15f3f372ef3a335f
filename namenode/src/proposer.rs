//! Batching on the leader: writes are gathered into one Raft entry per batch (one log
//! fsync covers them all), and linearizable reads share one leadership confirmation
//! (read-index: a heartbeat round to a quorum, then wait until the state machine has
//! applied up to the commit index seen at the start of the round).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::types::{Command, NodeId, Op, OpResult, Raft, RequestId};

/// Bounds of the write batcher.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Operations in one Raft entry.
    pub ops_per_entry_max: usize,
    /// Entries proposed and not yet committed.
    pub entries_in_flight_max: usize,
    /// Operations waiting to be batched (back-pressure beyond this).
    pub queue_ops_max: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits { ops_per_entry_max: 1024, entries_in_flight_max: 4, queue_ops_max: 65536 }
    }
}

/// Why a proposal or read could not be served here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this namenode is not the leader")]
    NotLeader { leader_id: Option<NodeId>, leader_addr: Option<String> },
    #[error("no quorum: {0}")]
    NoQuorum(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

fn forward(id: Option<NodeId>, node: Option<BasicNode>) -> ProposeError {
    ProposeError::NotLeader { leader_id: id, leader_addr: node.map(|n| n.addr) }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> for ProposeError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward(f.leader_id, f.leader_node),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ProposeError::Fatal(c.to_string()),
            RaftError::Fatal(f) => ProposeError::Fatal(f.to_string()),
        }
    }
}

impl From<RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>> for ProposeError {
    fn from(e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => forward(f.leader_id, f.leader_node),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => ProposeError::NoQuorum(q.to_string()),
            RaftError::Fatal(f) => ProposeError::Fatal(f.to_string()),
        }
    }
}

struct Pending {
    rid: Option<RequestId>,
    op: Op,
    reply: oneshot::Sender<Result<OpResult, ProposeError>>,
}

/// Gathers operations into Raft entries.
#[derive(Clone)]
pub struct Proposer {
    /// Operations of a newer format than the cluster's are refused (`crate::upgrade`).
    formats: Arc<crate::upgrade::Formats>,
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn spawn(
        raft: Raft,
        limits: BatchLimits,
        formats: Arc<crate::upgrade::Formats>,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue_ops_max);
        tokio::spawn(batch_loop(raft, limits, rx, shutdown));
        Proposer { formats, tx }
    }

    /// Proposes `op` and waits until it is committed and applied.
    pub async fn propose(&self, rid: Option<RequestId>, op: Op) -> Result<OpResult, ProposeError> {
        let (needs, cluster) = (crate::upgrade::op_format(&op), self.formats.cluster());
        if needs > cluster {
            return Ok(Err(crate::error::FsError::UpgradePending { needs, cluster }));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { rid, op, reply })
            .await
            .map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?;
        rx.await.map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?
    }
}

/// Bytes of small files' data one Raft entry carries at most (more wait for the next
/// entry): an append of `entries_per_append_max` entries stays far below the Raft
/// transport's message limit.
pub const ENTRY_DATA_BYTES_MAX: usize = 2 << 20;

/// The bulk an operation adds to an entry beyond its fixed size: a small file's bytes.
fn data_bytes(op: &Op) -> usize {
    match op {
        Op::PutInline(p) => p.sealed.len(),
        Op::ResealInline { seal_id, sealed, .. } => seal_id.len() + sealed.len(),
        Op::As { op, .. } => data_bytes(op),
        _ => 0,
    }
}

async fn batch_loop(raft: Raft, limits: BatchLimits, mut rx: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.entries_in_flight_max));
    // An operation that did not fit the previous entry starts the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            },
        };
        // While every in-flight slot is taken, operations queue up and the next entry
        // carries more of them.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut bytes = data_bytes(&first.op);
        let mut batch = vec![first];
        while batch.len() < limits.ops_per_entry_max {
            match rx.try_recv() {
                Ok(p) => {
                    let more = data_bytes(&p.op);
                    if bytes + more > ENTRY_DATA_BYTES_MAX {
                        carried = Some(p);
                        break;
                    }
                    bytes += more;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let now_ms = now_ms();
            let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| ((p.rid, p.op), p.reply)).unzip();
            let result = raft.client_write(Command { now_ms, ops }).await;
            drop(permit);
            match result {
                Ok(resp) => {
                    let mut results = resp.data.results.into_iter();
                    for reply in replies {
                        let r = results.next().ok_or_else(|| ProposeError::Fatal("short command response".into()));
                        let _ = reply.send(r);
                    }
                }
                Err(e) => {
                    let e = ProposeError::from(e);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

type ReadWaiter = oneshot::Sender<Result<(), ProposeError>>;

/// Leadership confirmations (read-index rounds) in flight at once.
const READ_ROUNDS_IN_FLIGHT_MAX: usize = 4;

/// How long a leader-lease read may wait for the state machine to catch up with the
/// log before it falls back to a read-index round.
const LEASE_APPLY_WAIT: Duration = Duration::from_secs(2);

/// The leader's read lease as last seen in Raft's metrics.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Reads may be served locally until then.
    until: Instant,
    /// The term the lease was observed in: a read checks the node still leads in it.
    term: u64,
    /// The log index the state machine must have applied first: the leader's last log
    /// index when the lease was observed, which covers the blank entry of its term and so
    /// everything an earlier leader acknowledged.
    read_index: u64,
}

/// Linearizable reads.
///
/// - **Leader lease** (the fast path): a quorum acknowledged a heartbeat that the leader
///   *sent* less than `lease` ago. openraft's followers refuse to vote for anyone else for
///   `election_timeout_max` after they last heard from the leader, so no other leader can
///   exist until at least `sent + election_timeout_max`; with `lease` well below that
///   (default: half the minimum election timeout) the margin absorbs scheduling delays and
///   clock rate drift. The read waits only for the state machine to reach `read_index`.
/// - **Read-index** (the fallback, and always when the lease is off or has lapsed): many
///   readers share one leadership confirmation, a heartbeat round to a quorum.
#[derive(Clone)]
pub struct ReadGate {
    tx: mpsc::Sender<ReadWaiter>,
    raft: Raft,
    lease: Arc<Mutex<Option<Lease>>>,
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
}

impl ReadGate {
    /// `lease`: how long after a quorum acknowledged a heartbeat the leader serves reads
    /// without another round; zero turns leader-lease reads off.
    pub fn spawn(raft: Raft, node_id: NodeId, lease: Duration, queue_max: usize, shutdown: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<ReadWaiter>(queue_max);
        // Rounds are pipelined: with one at a time, reads on a group are bound by the
        // heartbeat round-trip, not by CPU.
        let rounds = Arc::new(Semaphore::new(READ_ROUNDS_IN_FLIGHT_MAX));
        let r = raft.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    w = rx.recv() => match w { Some(w) => w, None => return },
                };
                let Ok(permit) = rounds.clone().acquire_owned().await else { return };
                // Everyone who arrived before this round starts is covered by it.
                let mut waiters = vec![first];
                waiters.extend(std::iter::from_fn(|| rx.try_recv().ok()));
                let raft = r.clone();
                tokio::spawn(async move {
                    let r = raft.ensure_linearizable().await.map(|_| ()).map_err(ProposeError::from);
                    drop(permit);
                    for w in waiters {
                        let _ = w.send(r.clone());
                    }
                });
            }
        });
        let lease_state = Arc::new(Mutex::new(None));
        if !lease.is_zero() {
            tokio::spawn(watch_lease(raft.metrics(), node_id, lease, lease_state.clone(), shutdown));
        }
        ReadGate { tx, metrics: raft.metrics(), raft, lease: lease_state }
    }

    /// Returns once this node may serve a linearizable read from its state machine.
    pub async fn wait(&self) -> Result<(), ProposeError> {
        if self.lease_read().await {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?;
        rx.await.map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?
    }

    /// Whether the lease covers a read starting now (after the state machine caught up).
    async fn lease_read(&self) -> bool {
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lease) = lease else { return false };
        if Instant::now() >= lease.until {
            return false;
        }
        let applied = {
            let m = self.metrics.borrow();
            // A step-down the lease watcher has not seen yet ends the lease here.
            if m.state != ServerState::Leader || m.current_term != lease.term {
                return false;
            }
            m.last_applied.map_or(0, |l| l.index)
        };
        if applied >= lease.read_index {
            return true;
        }
        self.raft
            .wait(Some(LEASE_APPLY_WAIT))
            .applied_index_at_least(Some(lease.read_index), "lease read")
            .await
            .is_ok()
    }
}

/// Keeps `state` at the lease the latest Raft metrics allow: while this node leads and a
/// quorum acknowledged a heartbeat sent `m` ms before the metrics were published, reads are
/// served until `published - m + lease`. The publish time is not in the metrics; a value seen
/// after `changed()` was published after the previous `borrow_and_update`, so the time just
/// before that borrow is a lower bound, and the lease can only come out shorter than the
/// real one. An unchanged value is not republished, which also only shortens it.
async fn watch_lease(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    node_id: NodeId,
    lease: Duration,
    state: Arc<Mutex<Option<Lease>>>,
    shutdown: CancellationToken,
) {
    // The first value's publish time has no lower bound: it grants no lease.
    let mut published_after: Option<Instant> = None;
    loop {
        let before = Instant::now();
        let next = {
            let m = metrics.borrow_and_update();
            match (m.millis_since_quorum_ack, published_after) {
                (Some(ms), Some(after)) if m.state == ServerState::Leader && m.current_leader == Some(node_id) => {
                    after.checked_sub(Duration::from_millis(ms)).map(|acked| Lease {
                        until: acked + lease,
                        term: m.current_term,
                        read_index: m.last_log_index.unwrap_or(0),
                    })
                }
                _ => None,
            }
        };
        *state.lock().unwrap_or_else(|p| p.into_inner()) = next;
        published_after = Some(before);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = metrics.changed() => if r.is_err() { return },
        }
    }
}
