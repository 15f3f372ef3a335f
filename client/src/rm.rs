//! The resource manager's client and the types its API speaks (shared by the resource
//! manager and the workers, so protobuf stops at every edge).
//!
//! [`RmClient`] is a [`LeaderConn`] to the resource managers: the same leader following,
//! retries and user claim as the namenode client.

use std::time::Duration;

use tarn_proto::rm as pb;
use tarn_proto::rm::application_client_client::ApplicationClientClient;
use tarn_proto::rm::application_master_client::ApplicationMasterClient;
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
    /// Running, but given no new container (an admin drains it).
    Draining,
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
                WorkerState::Draining => pb::WorkerState::Draining as i32,
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
            state: match pb::WorkerState::try_from(w.state) {
                Ok(pb::WorkerState::Lost) => WorkerState::Lost,
                Ok(pb::WorkerState::Draining) => WorkerState::Draining,
                _ => WorkerState::Running,
            },
            capacity: w.capacity.into(),
            used: w.used.into(),
            since_heartbeat: Duration::from_millis(w.last_heartbeat_ms_ago),
        }
    }
}

/// A process a worker runs: `command[0]` is a path or a name looked up in `PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    pub command: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Files copied from the file system into its directory before it starts.
    pub files: Vec<LocalFile>,
}

/// A file of the file system a container gets in its directory (as its user reads it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalFile {
    pub path: String,
    /// Its name in the container's directory.
    pub name: String,
    pub executable: bool,
}

impl LocalFile {
    /// Why `name` cannot name a localized file, if it cannot: one path component, not a
    /// name the worker uses itself.
    pub fn bad_name(&self) -> Option<String> {
        let n = &self.name;
        let reserved = ["stdout", "stderr", "tls", "tarn.toml"];
        let ok = !n.is_empty() && n.len() <= 255 && n != "." && n != ".." && !n.contains(['/', '\0']);
        match (ok, reserved.contains(&n.as_str())) {
            (true, false) => None,
            (false, _) => Some(format!("file name {n:?}: one path component")),
            (true, true) => Some(format!("file name {n:?} is the worker's own")),
        }
    }
}

impl From<Option<pb::ContainerSpec>> for ContainerSpec {
    fn from(s: Option<pb::ContainerSpec>) -> Self {
        s.map(|s| ContainerSpec {
            command: s.command,
            env: s.env.into_iter().collect(),
            files: s
                .files
                .into_iter()
                .map(|f| LocalFile { path: f.path, name: f.name, executable: f.executable })
                .collect(),
        })
        .unwrap_or_default()
    }
}

impl From<&ContainerSpec> for pb::ContainerSpec {
    fn from(s: &ContainerSpec) -> Self {
        pb::ContainerSpec {
            command: s.command.clone(),
            env: s.env.clone().into_iter().collect(),
            files: s
                .files
                .iter()
                .map(|f| pb::LocalFile { path: f.path.clone(), name: f.name.clone(), executable: f.executable })
                .collect(),
        }
    }
}

/// Why a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Its process exited by itself (see the exit code).
    Exited,
    KilledByResourceManager,
    /// Its processes' resident memory passed the grant.
    KilledExceededPmem,
    WorkerLost,
    /// It could not be started.
    LaunchFailed,
    /// Its application's master gave it back.
    Released,
    /// Its application's master attempt ended (failed, or finished the application).
    AttemptEnded,
    /// Taken back for a queue under its guarantee (after a notice to its master).
    Preempted,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "exited",
            ExitReason::KilledByResourceManager => "killed by the resource manager",
            ExitReason::KilledExceededPmem => "killed: over its memory grant",
            ExitReason::WorkerLost => "its worker was lost",
            ExitReason::LaunchFailed => "could not be started",
            ExitReason::Released => "released by its application master",
            ExitReason::AttemptEnded => "stopped: its application master's attempt ended",
            ExitReason::Preempted => "preempted for a queue under its guarantee",
        }
    }

    pub fn from_pb(v: i32) -> ExitReason {
        match pb::ExitReason::try_from(v).unwrap_or(pb::ExitReason::Unspecified) {
            pb::ExitReason::KilledByResourceManager => ExitReason::KilledByResourceManager,
            pb::ExitReason::KilledExceededPmem => ExitReason::KilledExceededPmem,
            pb::ExitReason::WorkerLost => ExitReason::WorkerLost,
            pb::ExitReason::LaunchFailed => ExitReason::LaunchFailed,
            pb::ExitReason::Released => ExitReason::Released,
            pb::ExitReason::AttemptEnded => ExitReason::AttemptEnded,
            pb::ExitReason::Preempted => ExitReason::Preempted,
            pb::ExitReason::Exited | pb::ExitReason::Unspecified => ExitReason::Exited,
        }
    }

    pub fn to_pb(self) -> i32 {
        (match self {
            ExitReason::Exited => pb::ExitReason::Exited,
            ExitReason::KilledByResourceManager => pb::ExitReason::KilledByResourceManager,
            ExitReason::KilledExceededPmem => pb::ExitReason::KilledExceededPmem,
            ExitReason::WorkerLost => pb::ExitReason::WorkerLost,
            ExitReason::LaunchFailed => pb::ExitReason::LaunchFailed,
            ExitReason::Released => pb::ExitReason::Released,
            ExitReason::AttemptEnded => pb::ExitReason::AttemptEnded,
            ExitReason::Preempted => pb::ExitReason::Preempted,
        }) as i32
    }
}

/// A container's state as its worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub container_id: String,
    /// `None` while it runs; why it ended once it has.
    pub ended: Option<ExitReason>,
    /// The exit code; 128 + the signal when a signal ended it.
    pub exit_code: i32,
    pub diagnostics: String,
    pub rss_bytes: u64,
}

impl ContainerStatus {
    pub fn running(container_id: &str) -> Self {
        ContainerStatus {
            container_id: container_id.into(),
            ended: None,
            exit_code: 0,
            diagnostics: String::new(),
            rss_bytes: 0,
        }
    }

    pub fn ended(container_id: &str, reason: ExitReason, exit_code: i32, diagnostics: impl Into<String>) -> Self {
        ContainerStatus {
            container_id: container_id.into(),
            ended: Some(reason),
            exit_code,
            diagnostics: diagnostics.into(),
            rss_bytes: 0,
        }
    }
}

impl From<pb::ContainerStatus> for ContainerStatus {
    fn from(s: pb::ContainerStatus) -> Self {
        let complete = s.state == pb::ContainerState::Complete as i32;
        ContainerStatus {
            container_id: s.container_id,
            ended: complete.then(|| ExitReason::from_pb(s.reason)),
            exit_code: s.exit_code,
            diagnostics: s.diagnostics,
            rss_bytes: s.rss_bytes,
        }
    }
}

impl From<&ContainerStatus> for pb::ContainerStatus {
    fn from(s: &ContainerStatus) -> Self {
        pb::ContainerStatus {
            container_id: s.container_id.clone(),
            state: if s.ended.is_some() { pb::ContainerState::Complete } else { pb::ContainerState::Running } as i32,
            reason: s.ended.map(ExitReason::to_pb).unwrap_or(0),
            exit_code: s.exit_code,
            diagnostics: s.diagnostics.clone(),
            rss_bytes: s.rss_bytes,
        }
    }
}

/// What a worker is told to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContainer {
    pub container_id: String,
    pub app_id: String,
    pub attempt: u32,
    /// Whose application it is.
    pub user: String,
    pub resources: Resources,
    pub spec: ContainerSpec,
    /// Its delegation credential (the resource manager adds it as it sends the command).
    pub credential: Option<Credential>,
}

/// A container's delegation credential: a client certificate of its user from the
/// container CA, and the certificate's key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
    /// Milliseconds since the Unix epoch.
    pub not_after_ms: u64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("not_after_ms", &self.not_after_ms).finish_non_exhaustive()
    }
}

impl From<pb::StartContainer> for StartContainer {
    fn from(s: pb::StartContainer) -> Self {
        StartContainer {
            container_id: s.container_id,
            app_id: s.app_id,
            attempt: s.attempt,
            user: s.user,
            resources: s.resources.into(),
            spec: s.spec.into(),
            credential: s.credential.map(|c| Credential {
                cert_pem: c.cert_pem,
                key_pem: c.key_pem,
                not_after_ms: c.not_after_ms,
            }),
        }
    }
}

impl From<&StartContainer> for pb::StartContainer {
    fn from(s: &StartContainer) -> Self {
        pb::StartContainer {
            container_id: s.container_id.clone(),
            app_id: s.app_id.clone(),
            attempt: s.attempt,
            user: s.user.clone(),
            resources: Some(s.resources.into()),
            spec: Some((&s.spec).into()),
            credential: s.credential.as_ref().map(|c| pb::ContainerCredential {
                cert_pem: c.cert_pem.clone(),
                key_pem: c.key_pem.clone(),
                not_after_ms: c.not_after_ms,
            }),
        }
    }
}

/// What an application asks for when submitted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppSubmission {
    pub name: String,
    /// "" = default.
    pub queue: String,
    /// Its master's container.
    pub am_resources: Resources,
    pub am_spec: ContainerSpec,
    /// 0 = the resource manager's default (2).
    pub max_attempts: u32,
    /// Makes a submission sent again the same application (empty: [`RmClient::submit`]
    /// picks one).
    pub submission_id: String,
}

impl From<&AppSubmission> for pb::SubmitApplicationRequest {
    fn from(s: &AppSubmission) -> Self {
        pb::SubmitApplicationRequest {
            name: s.name.clone(),
            queue: s.queue.clone(),
            am_resources: Some(s.am_resources.into()),
            am_spec: Some((&s.am_spec).into()),
            max_attempts: s.max_attempts,
            submission_id: s.submission_id.clone(),
        }
    }
}

impl From<pb::SubmitApplicationRequest> for AppSubmission {
    fn from(r: pb::SubmitApplicationRequest) -> Self {
        AppSubmission {
            name: r.name,
            queue: r.queue,
            am_resources: Resources::from(r.am_resources),
            am_spec: r.am_spec.into(),
            max_attempts: r.max_attempts,
            submission_id: r.submission_id,
        }
    }
}

/// Where an application is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// Waiting for its master's container.
    Accepted,
    Running,
    Finished,
    Failed,
    Killed,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Accepted => "ACCEPTED",
            AppState::Running => "RUNNING",
            AppState::Finished => "FINISHED",
            AppState::Failed => "FAILED",
            AppState::Killed => "KILLED",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, AppState::Finished | AppState::Failed | AppState::Killed)
    }

    pub fn to_pb(self) -> i32 {
        (match self {
            AppState::Accepted => pb::AppState::Accepted,
            AppState::Running => pb::AppState::Running,
            AppState::Finished => pb::AppState::Finished,
            AppState::Failed => pb::AppState::Failed,
            AppState::Killed => pb::AppState::Killed,
        }) as i32
    }

    pub fn from_pb(v: i32) -> AppState {
        match pb::AppState::try_from(v).unwrap_or(pb::AppState::Unspecified) {
            pb::AppState::Running => AppState::Running,
            pb::AppState::Finished => AppState::Finished,
            pb::AppState::Failed => AppState::Failed,
            pb::AppState::Killed => AppState::Killed,
            pb::AppState::Accepted | pb::AppState::Unspecified => AppState::Accepted,
        }
    }
}

/// One attempt at running an application's master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub attempt: u32,
    pub container_id: String,
    pub worker_id: String,
    pub status: ContainerStatus,
}

/// An application as the resource manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppReport {
    pub app_id: String,
    pub name: String,
    pub user: String,
    pub queue: String,
    pub state: AppState,
    pub diagnostics: String,
    pub max_attempts: u32,
    pub attempts: Vec<AttemptReport>,
}

impl From<pb::AppReport> for AppReport {
    fn from(r: pb::AppReport) -> Self {
        AppReport {
            app_id: r.app_id,
            name: r.name,
            user: r.user,
            queue: r.queue,
            state: AppState::from_pb(r.state),
            diagnostics: r.diagnostics,
            max_attempts: r.max_attempts,
            attempts: r
                .attempts
                .into_iter()
                .map(|a| AttemptReport {
                    attempt: a.attempt,
                    container_id: a.container_id.clone(),
                    worker_id: a.worker_id,
                    status: a
                        .status
                        .map(ContainerStatus::from)
                        .unwrap_or_else(|| ContainerStatus::running(&a.container_id)),
                })
                .collect(),
        }
    }
}

impl From<&AppReport> for pb::AppReport {
    fn from(r: &AppReport) -> Self {
        pb::AppReport {
            app_id: r.app_id.clone(),
            name: r.name.clone(),
            user: r.user.clone(),
            queue: r.queue.clone(),
            state: r.state.to_pb(),
            diagnostics: r.diagnostics.clone(),
            max_attempts: r.max_attempts,
            attempts: r
                .attempts
                .iter()
                .map(|a| pb::AttemptReport {
                    attempt: a.attempt,
                    container_id: a.container_id.clone(),
                    worker_id: a.worker_id.clone(),
                    status: Some((&a.status).into()),
                })
                .collect(),
        }
    }
}

/// A leaf queue as the resource manager reports it (fractions of the cluster).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueReport {
    pub path: String,
    pub guarantee: f64,
    pub max: f64,
    pub used: f64,
    pub used_resources: Resources,
    pub pending_apps: u32,
    pub running_apps: u32,
    pub user_limit_factor: f64,
    pub max_am_share: f64,
    pub submit_users: Vec<String>,
    pub labels: Vec<String>,
}

impl From<pb::QueueReport> for QueueReport {
    fn from(q: pb::QueueReport) -> Self {
        QueueReport {
            path: q.path,
            guarantee: q.guarantee,
            max: q.max,
            used: q.used,
            used_resources: Resources::from(q.used_resources),
            pending_apps: q.pending_apps,
            running_apps: q.running_apps,
            user_limit_factor: q.user_limit_factor,
            max_am_share: q.max_am_share,
            submit_users: q.submit_users,
            labels: q.labels,
        }
    }
}

impl From<&QueueReport> for pb::QueueReport {
    fn from(q: &QueueReport) -> Self {
        pb::QueueReport {
            path: q.path.clone(),
            guarantee: q.guarantee,
            max: q.max,
            used: q.used,
            used_resources: Some(q.used_resources.into()),
            pending_apps: q.pending_apps,
            running_apps: q.running_apps,
            user_limit_factor: q.user_limit_factor,
            max_am_share: q.max_am_share,
            submit_users: q.submit_users.clone(),
            labels: q.labels.clone(),
        }
    }
}

/// The master's answer to its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRegistration {
    pub app_id: String,
    pub attempt: u32,
    pub max_container: Resources,
    /// The attempt's containers the resource manager knows: a master registering again
    /// after a failover gives up the others it thought it had (their start was lost).
    pub containers: Vec<String>,
}

/// Containers of one kind an application master wants (see the proto's `ContainerAsk`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerAsk {
    pub ask_id: u64,
    pub resources: Resources,
    /// How many more it wants (absolute; 0 withdraws the ask).
    pub count: u32,
    pub hosts: Vec<String>,
    pub racks: Vec<String>,
    pub relax_locality: bool,
    /// Only on nodes of this label (`None`: any).
    pub label: Option<NodeLabel>,
}

/// One allocate call of an application master.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AllocateCall {
    /// The last answer's `response_id` (0 before the first).
    pub response_id: u64,
    pub asks: Vec<ContainerAsk>,
    /// Allocated containers to start: (container id, what it runs).
    pub launch: Vec<(String, ContainerSpec)>,
    pub release: Vec<String>,
    pub progress: f32,
}

/// A container granted to an application master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    pub container_id: String,
    pub worker_id: String,
    pub host: String,
    pub rack: String,
    pub resources: Resources,
    pub ask_id: u64,
}

/// The answer to an allocate call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocateReply {
    pub response_id: u64,
    pub allocated: Vec<Allocated>,
    /// The attempt's containers that ended since the last answer.
    pub completed: Vec<ContainerStatus>,
    /// Containers the resource manager will take back after a notice (preemption).
    pub preempted: Vec<String>,
}

/// How an application master ends its application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Succeeded,
    Failed,
    Killed,
}

impl FinalStatus {
    pub fn to_pb(self) -> i32 {
        (match self {
            FinalStatus::Succeeded => pb::FinalStatus::Succeeded,
            FinalStatus::Failed => pb::FinalStatus::Failed,
            FinalStatus::Killed => pb::FinalStatus::Killed,
        }) as i32
    }

    pub fn from_pb(v: i32) -> Option<FinalStatus> {
        match pb::FinalStatus::try_from(v).ok()? {
            pb::FinalStatus::Succeeded => Some(FinalStatus::Succeeded),
            pb::FinalStatus::Failed => Some(FinalStatus::Failed),
            pb::FinalStatus::Killed => Some(FinalStatus::Killed),
            pb::FinalStatus::Unspecified => None,
        }
    }
}

impl From<&ContainerAsk> for pb::ContainerAsk {
    fn from(a: &ContainerAsk) -> Self {
        pb::ContainerAsk {
            ask_id: a.ask_id,
            resources: Some(a.resources.into()),
            count: a.count,
            hosts: a.hosts.clone(),
            racks: a.racks.clone(),
            relax_locality: a.relax_locality,
            label: a.label.map(NodeLabel::to_pb).unwrap_or(0),
        }
    }
}

impl From<pb::ContainerAsk> for ContainerAsk {
    fn from(a: pb::ContainerAsk) -> Self {
        ContainerAsk {
            ask_id: a.ask_id,
            resources: a.resources.into(),
            count: a.count,
            hosts: a.hosts,
            racks: a.racks,
            relax_locality: a.relax_locality,
            label: NodeLabel::from_pb(a.label),
        }
    }
}

impl From<&AllocateCall> for pb::AllocateRequest {
    fn from(c: &AllocateCall) -> Self {
        pb::AllocateRequest {
            response_id: c.response_id,
            asks: c.asks.iter().map(Into::into).collect(),
            launch: c
                .launch
                .iter()
                .map(|(id, spec)| pb::LaunchContainer { container_id: id.clone(), spec: Some(spec.into()) })
                .collect(),
            release: c.release.clone(),
            progress: c.progress,
        }
    }
}

impl From<pb::AllocateRequest> for AllocateCall {
    fn from(r: pb::AllocateRequest) -> Self {
        AllocateCall {
            response_id: r.response_id,
            asks: r.asks.into_iter().map(Into::into).collect(),
            launch: r.launch.into_iter().map(|l| (l.container_id, l.spec.into())).collect(),
            release: r.release,
            progress: r.progress,
        }
    }
}

impl From<&AllocateReply> for pb::AllocateResponse {
    fn from(r: &AllocateReply) -> Self {
        pb::AllocateResponse {
            response_id: r.response_id,
            allocated: r
                .allocated
                .iter()
                .map(|a| pb::AllocatedContainer {
                    container_id: a.container_id.clone(),
                    worker_id: a.worker_id.clone(),
                    host: a.host.clone(),
                    rack: a.rack.clone(),
                    resources: Some(a.resources.into()),
                    ask_id: a.ask_id,
                })
                .collect(),
            completed: r.completed.iter().map(Into::into).collect(),
            preempted: r.preempted.clone(),
        }
    }
}

impl From<pb::AllocateResponse> for AllocateReply {
    fn from(r: pb::AllocateResponse) -> Self {
        AllocateReply {
            response_id: r.response_id,
            allocated: r
                .allocated
                .into_iter()
                .map(|a| Allocated {
                    container_id: a.container_id,
                    worker_id: a.worker_id,
                    host: a.host,
                    rack: a.rack,
                    resources: a.resources.into(),
                    ask_id: a.ask_id,
                })
                .collect(),
            completed: r.completed.into_iter().map(Into::into).collect(),
            preempted: r.preempted,
        }
    }
}

/// Calls `$method` of the client service with `$msg`, following the leader and retrying.
macro_rules! rm_rpc {
    ($self:ident, $method:ident, $msg:expr) => {
        rm_rpc!($self, Self::client, $method, $msg)
    };
    ($self:ident, $stub:path, $method:ident, $msg:expr) => {{
        let msg = $msg;
        $self
            .conn
            .call(|c| {
                let mut stub = $stub(c);
                let req = $self.request(msg.clone());
                async move { stub.$method(req).await }
            })
            .await
    }};
}

/// A client of the resource managers.
pub struct RmClient {
    conn: LeaderConn,
    /// Dev mode only (no credential names it): the container this client runs in.
    container: String,
}

/// The longest one call to a resource manager may take: every call is answered in
/// moments, so a longer one is to a resource manager that stopped (paused, or cut off),
/// and the next is tried (the standby that takes over).
pub const RM_ATTEMPT_MAX: std::time::Duration = std::time::Duration::from_secs(3);

fn rm_retry(mut r: RetryPolicy) -> RetryPolicy {
    r.attempt_timeout = r.attempt_timeout.min(RM_ATTEMPT_MAX);
    r
}

impl RmClient {
    /// A client of the resource managers at `addrs` (`host:port`, comma-separated lists
    /// allowed), connecting over `transport`.
    pub fn new(addrs: &[String], transport: &Transport) -> Result<Self> {
        let addrs: Vec<String> =
            addrs.iter().flat_map(|a| a.split(',')).map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        let user = if transport.is_tls() { String::new() } else { crate::DEV_USER.to_string() };
        Ok(RmClient {
            conn: LeaderConn::new(
                "resource manager",
                addrs,
                user,
                rm_retry(RetryPolicy::default()),
                transport.clone(),
            )?,
            container: String::new(),
        })
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Result<Self> {
        let c = &self.conn;
        let conn = LeaderConn::new(
            "resource manager",
            c.addrs().to_vec(),
            c.user().to_string(),
            rm_retry(retry),
            c.transport().clone(),
        )?;
        Ok(RmClient { conn, container: self.container })
    }

    /// Dev mode (plaintext, no credential): names the container this client runs in, as an
    /// application master must. With TLS the container's certificate names it instead and
    /// this is ignored by the resource manager.
    pub fn with_container(mut self, container_id: &str) -> Self {
        self.container = container_id.to_string();
        self
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = self.conn.request(msg);
        if !self.container.is_empty() {
            if let Ok(v) = self.container.parse() {
                r.metadata_mut().insert("x-tarn-container", v);
            }
        }
        r
    }

    /// A client on the same connections that acts for `user` (a daemon serving users, such
    /// as the Spark Connect endpoint, submits and follows applications as each user).
    pub fn for_user(&self, user: impl Into<String>) -> RmClient {
        let user = Some(user.into()).filter(|u| !u.is_empty()).unwrap_or_else(|| "?".into());
        RmClient { conn: self.conn.as_user(user), container: self.container.clone() }
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
        let r = rm_rpc!(self, list_workers, pb::ListWorkersRequest {})?;
        Ok(r.workers.into_iter().map(WorkerReport::from).collect())
    }

    /// Submits an application (as this client's user); returns its id.
    pub async fn submit(&self, s: &AppSubmission) -> Result<String> {
        let mut msg = pb::SubmitApplicationRequest::from(s);
        // Every retry (a lost answer, a failover) carries the same id: one application.
        if msg.submission_id.is_empty() {
            msg.submission_id = format!("{:032x}", rand::random::<u128>());
        }
        let r = rm_rpc!(self, submit_application, msg)?;
        Ok(r.app_id)
    }

    /// An application of this user's (an admin sees every one).
    pub async fn application(&self, app_id: &str) -> Result<AppReport> {
        let msg = pb::GetApplicationRequest { app_id: app_id.into() };
        let r = rm_rpc!(self, get_application, msg)?;
        Ok(r.into())
    }

    /// This user's applications (with `all_users`, everyone's: admins only), oldest first.
    pub async fn applications(&self, all_users: bool) -> Result<Vec<AppReport>> {
        let r = rm_rpc!(self, list_applications, pb::ListApplicationsRequest { all_users })?;
        Ok(r.apps.into_iter().map(AppReport::from).collect())
    }

    /// Kills an application and its containers; `false` if it had already ended.
    pub async fn kill(&self, app_id: &str) -> Result<bool> {
        let msg = pb::KillApplicationRequest { app_id: app_id.into() };
        let r = rm_rpc!(self, kill_application, msg)?;
        Ok(r.killed)
    }

    /// The leaf queues with their settings and use, and the TOML they came from.
    pub async fn queues(&self) -> Result<(Vec<QueueReport>, String)> {
        let r = rm_rpc!(self, get_queues, pb::GetQueuesRequest {})?;
        Ok((r.queues.into_iter().map(QueueReport::from).collect(), r.source))
    }

    /// Replaces the queues with those of `toml` (admins only); returns the leaves.
    pub async fn refresh_queues(&self, toml: &str) -> Result<u32> {
        let msg = pb::RefreshQueuesRequest { toml: toml.into() };
        Ok(rm_rpc!(self, refresh_queues, msg)?.leaves)
    }

    /// Drains worker `worker_id` (admins): no new container there; what runs has
    /// `deadline` before it is stopped. `cancel` takes it back into service. Returns the
    /// containers still on it.
    pub async fn drain_worker(&self, worker_id: &str, deadline: Duration, cancel: bool) -> Result<u32> {
        let msg = pb::DrainWorkerRequest { worker_id: worker_id.into(), deadline_secs: deadline.as_secs(), cancel };
        Ok(rm_rpc!(self, drain_worker, msg)?.containers)
    }

    fn master(c: Channel) -> ApplicationMasterClient<Channel> {
        ApplicationMasterClient::new(c)
    }

    /// Registers the application master this client runs in (its credential names the
    /// container; in dev mode `TARN_CONTAINER_ID` is sent instead).
    pub async fn register_master(&self, tracking_url: &str) -> Result<MasterRegistration> {
        let msg = pb::RegisterMasterRequest { tracking_url: tracking_url.into() };
        let r = rm_rpc!(self, Self::master, register_master, msg)?;
        Ok(MasterRegistration {
            app_id: r.app_id,
            attempt: r.attempt,
            max_container: r.max_container.into(),
            containers: r.containers,
        })
    }

    /// The master's heartbeat: asks, launches and releases; new allocations and ended
    /// containers back. Retried with the same `response_id`, a lost answer is repeated.
    pub async fn allocate(&self, call: &AllocateCall) -> Result<AllocateReply> {
        let msg = pb::AllocateRequest::from(call);
        let r = rm_rpc!(self, Self::master, allocate, msg)?;
        Ok(r.into())
    }

    /// Ends the application with the master's verdict; its other containers are stopped.
    pub async fn finish_master(&self, status: FinalStatus, diagnostics: &str) -> Result<()> {
        let msg = pb::FinishMasterRequest { final_status: status.to_pb(), diagnostics: diagnostics.into() };
        rm_rpc!(self, Self::master, finish_master, msg)?;
        Ok(())
    }

    /// [`RmClient::finish_master`], registering the master again first if the resource
    /// manager failed over since it last did (a master's end must reach the active one).
    pub async fn finish_master_after_failover(&self, status: FinalStatus, diagnostics: &str) -> Result<()> {
        match self.finish_master(status, diagnostics).await {
            Err(e) if e.kind() == crate::ErrorKind::MasterNotRegistered => {
                self.register_master("").await?;
                self.finish_master(status, diagnostics).await
            }
            r => r,
        }
    }
}
