//! The resource manager's client and the types its API speaks (shared by the resource
//! manager and the workers, so protobuf stops at every edge).
//!
//! [`RmClient`] is a [`LeaderConn`] to the resource managers: the same leader following,
//! retries and user claim as the namenode client.

use std::time::Duration;

use tarn_proto::rm as pb;
use tarn_proto::rm::application_client_client::ApplicationClientClient;
use tonic::transport::Channel;

use crate::conn::{LeaderConn, RetryPolicy};
use crate::{Result, Transport};

/// Compute a worker offers or a container is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub vcores: u32,
    pub memory_mib: u64,
}

impl Resources {
    pub fn new(vcores: u32, memory_mib: u64) -> Self {
        Resources { vcores, memory_mib }
    }

    /// Whether `other` fits in these.
    pub fn fits(&self, other: &Resources) -> bool {
        other.vcores <= self.vcores && other.memory_mib <= self.memory_mib
    }
}

impl From<Option<pb::Resources>> for Resources {
    fn from(r: Option<pb::Resources>) -> Self {
        r.map(|r| Resources { vcores: r.vcores, memory_mib: r.memory_mib }).unwrap_or_default()
    }
}

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        pb::Resources { vcores: r.vcores, memory_mib: r.memory_mib }
    }
}

/// What kind of node a worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeLabel {
    /// A datanode runs beside it: application masters go here (task nodes may vanish).
    Core,
    /// Compute only.
    Task,
}

impl NodeLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeLabel::Core => "core",
            NodeLabel::Task => "task",
        }
    }

    /// `core` or `task`.
    pub fn parse(s: &str) -> Option<NodeLabel> {
        match s {
            "core" => Some(NodeLabel::Core),
            "task" => Some(NodeLabel::Task),
            _ => None,
        }
    }

    /// The label a message names (`None`: unspecified).
    pub fn from_pb(v: i32) -> Option<NodeLabel> {
        match pb::NodeLabel::try_from(v).ok()? {
            pb::NodeLabel::Core => Some(NodeLabel::Core),
            pb::NodeLabel::Task => Some(NodeLabel::Task),
            pb::NodeLabel::Unspecified => None,
        }
    }

    pub fn to_pb(self) -> i32 {
        match self {
            NodeLabel::Core => pb::NodeLabel::Core as i32,
            NodeLabel::Task => pb::NodeLabel::Task as i32,
        }
    }
}

/// Whether the resource manager hears from a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// Silent past the expiry: its containers are lost.
    Lost,
}

/// One worker as the resource manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    pub worker_id: String,
    pub host: String,
    pub rack: String,
    pub label: NodeLabel,
    pub state: WorkerState,
    pub capacity: Resources,
    pub used: Resources,
    pub since_heartbeat: Duration,
}

impl From<WorkerReport> for pb::WorkerReport {
    fn from(w: WorkerReport) -> Self {
        pb::WorkerReport {
            worker_id: w.worker_id,
            host: w.host,
            rack: w.rack,
            label: w.label.to_pb(),
            state: match w.state {
                WorkerState::Running => pb::WorkerState::Running as i32,
                WorkerState::Lost => pb::WorkerState::Lost as i32,
            },
            capacity: Some(w.capacity.into()),
            used: Some(w.used.into()),
            last_heartbeat_ms_ago: w.since_heartbeat.as_millis() as u64,
        }
    }
}

impl From<pb::WorkerReport> for WorkerReport {
    fn from(w: pb::WorkerReport) -> Self {
        WorkerReport {
            worker_id: w.worker_id,
            host: w.host,
            rack: w.rack,
            label: NodeLabel::from_pb(w.label).unwrap_or(NodeLabel::Task),
            state: if w.state == pb::WorkerState::Lost as i32 { WorkerState::Lost } else { WorkerState::Running },
            capacity: w.capacity.into(),
            used: w.used.into(),
            since_heartbeat: Duration::from_millis(w.last_heartbeat_ms_ago),
        }
    }
}

/// A client of the resource managers.
pub struct RmClient {
    conn: LeaderConn,
}

impl RmClient {
    /// A client of the resource managers at `addrs` (`host:port`, comma-separated lists
    /// allowed), connecting over `transport`.
    pub fn new(addrs: &[String], transport: &Transport) -> Result<Self> {
        let addrs: Vec<String> =
            addrs.iter().flat_map(|a| a.split(',')).map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        let user = if transport.is_tls() { String::new() } else { crate::DEV_USER.to_string() };
        Ok(RmClient {
            conn: LeaderConn::new("resource manager", addrs, user, RetryPolicy::default(), transport.clone())?,
        })
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Result<Self> {
        let c = &self.conn;
        let conn = LeaderConn::new(
            "resource manager",
            c.addrs().to_vec(),
            c.user().to_string(),
            retry,
            c.transport().clone(),
        )?;
        Ok(RmClient { conn })
    }

    /// The connection, for the other resource manager services (the workers' tracker).
    pub fn conn(&self) -> &LeaderConn {
        &self.conn
    }

    fn client(c: Channel) -> ApplicationClientClient<Channel> {
        ApplicationClientClient::new(c)
    }

    /// Every worker the resource manager knows, running or lost.
    pub async fn workers(&self) -> Result<Vec<WorkerReport>> {
        let r = self
            .conn
            .call(|c| {
                let mut stub = Self::client(c);
                let req = self.conn.request(pb::ListWorkersRequest {});
                async move { stub.list_workers(req).await }
            })
            .await?;
        Ok(r.workers.into_iter().map(WorkerReport::from).collect())
    }
}
