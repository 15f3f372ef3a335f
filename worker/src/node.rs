//! A worker process: configuration, capacity detection, start-up and shutdown.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tarn_client::rm::{NodeLabel, Resources, RmClient};
use tarn_client::{RetryPolicy, Transport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::containers::{ContainerSettings, Containers};
use crate::link::Link;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] tarn_client::ClientError),
    #[error("worker.local_dir {dir}: {source}")]
    LocalDir { dir: PathBuf, source: std::io::Error },
}

/// The `[worker]` table of the TOML config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The resource managers (`host:port`).
    pub resource_managers: Vec<String>,
    /// The namenodes (`host:port`), for containers' client configuration.
    pub namenodes: Vec<String>,
    /// The worker's id when it has no certificate (dev mode); with one, its name.
    pub name: String,
    /// The host name given for locality; empty: this host's name.
    pub host: String,
    pub rack: String,
    /// `core` (a datanode runs beside it) or `task`.
    pub label: String,
    /// Cores offered to containers; 0: every core of the host.
    pub vcores: u32,
    /// Memory offered to containers (MiB); 0: the host's, less what the system and the
    /// node's daemons keep (a quarter, at least 1 GiB).
    pub memory_mib: u64,
    /// Where containers' working directories are made.
    pub local_dir: PathBuf,
    /// How often each container's resident memory is checked against its grant (ms).
    pub pmem_check_ms: u64,
    /// Applications whose user this host lacks run as uids from here up (one each).
    pub container_uid_base: u32,
    /// How long an ended application's local directories stay after its logs were kept
    /// (for debugging on the node; YARN's `delete.debug-delay-sec`).
    pub delete_delay_ms: u64,
    /// The `tarn` program containers find first on their `PATH` (a link or copy of it in
    /// `<local_dir>/bin`, where any user may run it): set by the binary to itself.
    #[serde(skip)]
    pub tarn_bin: Option<PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            resource_managers: vec!["127.0.0.1:8032".into()],
            namenodes: vec!["127.0.0.1:8020".into()],
            name: String::new(),
            host: String::new(),
            rack: "/default-rack".into(),
            label: "core".into(),
            vcores: 0,
            memory_mib: 0,
            local_dir: PathBuf::from("tarn-data/worker"),
            pmem_check_ms: 1000,
            container_uid_base: 3_000_000,
            delete_delay_ms: 0,
            tarn_bin: None,
        }
    }
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<NodeLabel, WorkerError> {
        let bad = |key: &str, why: String| Err(WorkerError::Config(format!("worker.{key}: {why}")));
        if self.resource_managers.is_empty() {
            return bad("resource_managers", "at least one resource manager address is needed".into());
        }
        if !self.rack.starts_with('/') {
            return bad("rack", "must start with '/' (like /dc1/rack7)".into());
        }
        if self.pmem_check_ms == 0 {
            return bad("pmem_check_ms", "must be > 0".into());
        }
        if self.container_uid_base < 1000 {
            return bad("container_uid_base", "below 1000 are the system's users".into());
        }
        match NodeLabel::parse(&self.label) {
            Some(l) => Ok(l),
            None => bad("label", format!("{:?} is neither core nor task", self.label)),
        }
    }
}

/// What this host offers: the configured figures, else what it has.
pub fn capacity(cfg: &WorkerConfig) -> Resources {
    let vcores = match cfg.vcores {
        0 => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        n => n,
    };
    let memory_mib = match cfg.memory_mib {
        0 => {
            let total = host_memory_mib().unwrap_or(4096);
            total.saturating_sub((total / 4).max(1024)).max(256)
        }
        n => n,
    };
    Resources { vcores, memory_mib }
}

/// `MemTotal` of /proc/meminfo, in MiB.
fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Whether this process may start processes as other users, give them their directories
/// and kill them: root with CAP_CHOWN, CAP_KILL, CAP_SETGID and CAP_SETUID in effect (a
/// container runtime's root may have none of them).
fn can_run_as_others() -> bool {
    // SAFETY: geteuid(2) only reads this process's effective uid.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // linux/capability.h: CAP_CHOWN 0, CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7.
    let needed: u64 = (1 << 0) | (1 << 5) | (1 << 6) | (1 << 7);
    caps & needed == needed
}

fn host_name() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// A running worker.
pub struct WorkerHandle {
    pub id: String,
    pub capacity: Resources,
    containers: Arc<Containers>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops talking to the resource manager, then kills every container (the resource
    /// manager learns of them as of a lost worker's).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.containers.kill_all();
    }
}

/// Starts a worker: it registers with the resource manager and heartbeats until stopped.
/// `transport` names it (its certificate's name is its id) and secures its link.
pub async fn start(cfg: WorkerConfig, transport: Transport) -> Result<WorkerHandle, WorkerError> {
    let label = cfg.validate()?;
    let id = match transport.identity() {
        Some(me) => me.name,
        None if !cfg.name.is_empty() => cfg.name.clone(),
        None => host_name(),
    };
    let capacity = capacity(&cfg);
    // A worker keeps trying the resource manager; each try gives up after a while.
    let retry = RetryPolicy { deadline: std::time::Duration::from_secs(10), ..Default::default() };
    let rm = RmClient::new(&cfg.resource_managers, &transport)?.with_retry(retry)?;
    let host = if cfg.host.is_empty() { host_name() } else { cfg.host.clone() };
    let isolate = can_run_as_others();
    if !isolate {
        tarn_security::warn_insecure(
            "the worker cannot run processes as other users (it is not root, or lacks \
             CAP_SETUID, CAP_SETGID, CAP_CHOWN or CAP_KILL): containers run as its own user and \
             can read what it can (its certificate, the node's data); run workers as root to \
             isolate them",
        );
    }
    // Containers reach the cluster as clients: the cluster CA to check servers with, where
    // the services are (their own certificate comes with each container).
    let cluster_ca = match transport.tls_paths() {
        Some(p) => {
            Some(std::fs::read_to_string(&p.ca).map_err(|source| WorkerError::LocalDir { dir: p.ca.clone(), source })?)
        }
        None => None,
    };
    let settings = ContainerSettings {
        local_dir: cfg.local_dir.clone(),
        pmem_check: std::time::Duration::from_millis(cfg.pmem_check_ms),
        isolate,
        uid_base: cfg.container_uid_base,
        tarn_bin: cfg.tarn_bin.clone(),
        host: host.clone(),
        client: crate::containers::ClientSetup {
            cluster_ca,
            namenodes: cfg.namenodes.clone(),
            resource_managers: cfg.resource_managers.clone(),
        },
    };
    // Containers' files are read, and ended applications' logs written, by this worker
    // for their users (a worker may act for users, never as the superuser).
    let nn = match cfg.namenodes.is_empty() {
        true => None,
        false => Some(Arc::new(tarn_client::NamenodeClient::new(&cfg.namenodes, &transport)?)),
    };
    let containers = Containers::new(settings, nn.clone())
        .map_err(|source| WorkerError::LocalDir { dir: cfg.local_dir.clone(), source })?;
    let delay = std::time::Duration::from_millis(cfg.delete_delay_ms);
    let logs = crate::logs::LogKeeper::new(nn, cfg.local_dir.clone(), delay);
    let link = Link {
        rm,
        id: id.clone(),
        host,
        rack: cfg.rack.clone(),
        label,
        capacity,
        containers: containers.clone(),
        logs,
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(link.run(shutdown.clone()));
    tracing::info!(worker = %id, label = label.as_str(), vcores = capacity.vcores, memory_mib = capacity.memory_mib, "worker started");
    Ok(WorkerHandle { id, capacity, containers, shutdown, tasks: vec![task] })
}
