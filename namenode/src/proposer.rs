//! Batching on the leader: writes are gathered into one Raft entry per batch (one log
//! fsync covers them all), and linearizable reads share one leadership confirmation
//! (read-index: a heartbeat round to a quorum, then wait until the state machine has
//! applied up to the commit index seen at the start of the round).

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, Semaphore};
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
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn spawn(raft: Raft, limits: BatchLimits, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue_ops_max);
        tokio::spawn(batch_loop(raft, limits, rx, shutdown));
        Proposer { tx }
    }

    /// Proposes `op` and waits until it is committed and applied.
    pub async fn propose(&self, rid: Option<RequestId>, op: Op) -> Result<OpResult, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { rid, op, reply })
            .await
            .map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?;
        rx.await.map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?
    }
}

async fn batch_loop(raft: Raft, limits: BatchLimits, mut rx: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
    let permits = std::sync::Arc::new(Semaphore::new(limits.entries_in_flight_max));
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        // While every in-flight slot is taken, operations queue up and the next entry
        // carries more of them.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < limits.ops_per_entry_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let now_ms = now_ms();
            let ops = batch.iter().map(|p| (p.rid, p.op.clone())).collect();
            let result = raft.client_write(Command { now_ms, ops }).await;
            drop(permit);
            match result {
                Ok(resp) => {
                    let mut results = resp.data.results.into_iter();
                    for p in batch {
                        let r = results.next().ok_or_else(|| ProposeError::Fatal("short command response".into()));
                        let _ = p.reply.send(r);
                    }
                }
                Err(e) => {
                    let e = ProposeError::from(e);
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
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

/// Linearizable reads: many readers share one leadership confirmation.
#[derive(Clone)]
pub struct ReadGate {
    tx: mpsc::Sender<ReadWaiter>,
}

impl ReadGate {
    pub fn spawn(raft: Raft, queue_max: usize, shutdown: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<ReadWaiter>(queue_max);
        // Rounds are pipelined: with one at a time, reads on a group are bound by the
        // heartbeat round-trip, not by CPU.
        let rounds = std::sync::Arc::new(Semaphore::new(READ_ROUNDS_IN_FLIGHT_MAX));
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    w = rx.recv() => match w { Some(w) => w, None => return },
                };
                let Ok(permit) = rounds.clone().acquire_owned().await else { return };
                // Everyone who arrived before this round starts is covered by it.
                let mut waiters = vec![first];
                waiters.extend(std::iter::from_fn(|| rx.try_recv().ok()));
                let raft = raft.clone();
                tokio::spawn(async move {
                    let r = raft.ensure_linearizable().await.map(|_| ()).map_err(ProposeError::from);
                    drop(permit);
                    for w in waiters {
                        let _ = w.send(r.clone());
                    }
                });
            }
        });
        ReadGate { tx }
    }

    /// Returns once this node may serve a linearizable read from its state machine.
    pub async fn wait(&self) -> Result<(), ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?;
        rx.await.map_err(|_| ProposeError::Fatal("namenode is shutting down".into()))?
    }
}
