//! A resource manager process: configuration, start-up, the expiry monitor and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tarn_proto::rm::application_client_server::ApplicationClientServer;
use tarn_proto::rm::application_master_server::ApplicationMasterServer;
use tarn_proto::rm::resource_tracker_server::ResourceTrackerServer;
use tarn_security::{ContainerCa, RequireRole, Role, Transport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{AppLimits, ClusterState};
use crate::error::RmError;
use crate::service::{ClientService, MasterService, TrackerService};
use crate::state::{now_ms, RmState};

/// The `[resource_manager]` table of the TOML config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceManagerConfig {
    /// Address of its gRPC services (YARN's 8032). Port 0 picks a free port.
    pub listen: String,
    /// Address workers and clients use; defaults to the bound address.
    pub advertise: Option<String>,
    /// Address of the REST/JSON API (YARN's 8088; HTTPS with client certificates);
    /// `None`: not served.
    pub rest_listen: Option<String>,
    /// How often workers heartbeat.
    pub worker_heartbeat_ms: u64,
    /// A worker silent this long is lost, and what it ran with it (more than two
    /// heartbeats).
    pub worker_expiry_ms: u64,
    /// The container CA (`tarn init`'s `tls/container-ca.pem`, its key beside it as
    /// `container-ca-key.pem`): every container gets a client certificate of its user from
    /// it. `None`: containers get no credential (dev mode only).
    pub container_ca: Option<PathBuf>,
    /// How long a container's credential is valid; its worker has it renewed at half
    /// life while the container runs, so a credential outlives its container by at most
    /// this long.
    pub container_credential_secs: u64,
    /// The namenodes (`host:port`). With them, applications are kept on record in the
    /// file system (`/.tarn/rm`) and resource managers naming the same namenodes form one
    /// highly available group: one active, the others standing by to take over. Without,
    /// it is the only one and what it knows lives in its memory.
    pub namenodes: Vec<String>,
    /// The active resource manager's lease: a standby takes over when the active one has
    /// not renewed it for this long; the active one stops serving after half of it without
    /// a renewal.
    pub ha_lease_ms: u64,
    /// Preemption: a container taken back for a queue under its guarantee is stopped this
    /// long after its master is told (YARN's max_wait_before_kill); 0 turns preemption off.
    pub preemption_wait_ms: u64,
    /// How long applications' logs stay in the file system (`/.tarn/logs`) after their
    /// end; 0 keeps them forever. Needs `namenodes`.
    pub log_retention_secs: u64,
    /// Ended applications remembered (and kept on record); the oldest beyond are
    /// forgotten (YARN's max-completed-applications).
    pub max_completed_apps: usize,
}

impl Default for ResourceManagerConfig {
    fn default() -> Self {
        ResourceManagerConfig {
            listen: "127.0.0.1:8032".into(),
            advertise: None,
            rest_listen: Some("127.0.0.1:8088".into()),
            worker_heartbeat_ms: 1000,
            worker_expiry_ms: 10_000,
            container_ca: None,
            container_credential_secs: 3600,
            namenodes: Vec::new(),
            ha_lease_ms: 1500,
            preemption_wait_ms: 15_000,
            log_retention_secs: 7 * 24 * 3600,
            max_completed_apps: 10_000,
        }
    }
}

impl ResourceManagerConfig {
    pub fn validate(&self) -> Result<(), RmError> {
        let bad = |key: &str, why: String| Err(RmError::Config(format!("resource_manager.{key}: {why}")));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad("listen", format!("{:?} is not ip:port", self.listen));
        }
        if let Some(r) = self.rest_listen.as_ref().filter(|r| r.parse::<SocketAddr>().is_err()) {
            return bad("rest_listen", format!("{r:?} is not ip:port"));
        }
        if self.worker_heartbeat_ms == 0 {
            return bad("worker_heartbeat_ms", "must be > 0".into());
        }
        if self.worker_expiry_ms <= 2 * self.worker_heartbeat_ms {
            return bad(
                "worker_expiry_ms",
                format!("must be more than two heartbeats ({} ms)", 2 * self.worker_heartbeat_ms),
            );
        }
        if !(300..=60_000).contains(&self.ha_lease_ms) {
            return bad("ha_lease_ms", "must be between 300 and 60000".into());
        }
        if !(10..=7 * 24 * 3600).contains(&self.container_credential_secs) {
            return bad("container_credential_secs", "must be between 10 and 604800 (a week)".into());
        }
        Ok(())
    }

    /// The container CA this configuration names, loaded.
    pub fn load_container_ca(&self) -> Result<Option<ContainerCa>, RmError> {
        let Some(cert) = &self.container_ca else { return Ok(None) };
        let key = cert.with_file_name(tarn_security::container_ca::CONTAINER_CA_KEY_FILE);
        ContainerCa::load(cert, &key)
            .map(Some)
            .map_err(|e| RmError::Config(format!("resource_manager.container_ca: {e}")))
    }
}

/// A running resource manager.
pub struct RmHandle {
    /// The address workers and clients reach it at.
    pub addr: String,
    /// The address it listens on.
    pub listen: SocketAddr,
    /// Where its REST API listens, if it serves one.
    pub rest_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RmHandle {
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Resolves when it stops by itself (its server failed).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }
}

const WORKERS_ONLY: RequireRole = RequireRole { service: "the resource tracker", roles: &[Role::Worker] };

/// Starts a resource manager and returns once it listens; `transport` secures its services.
pub async fn start(cfg: ResourceManagerConfig, transport: Transport) -> Result<RmHandle, RmError> {
    cfg.validate()?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| RmError::Bind { addr: cfg.listen.clone(), source })?;
    let bound = listener.local_addr().map_err(|source| RmError::Io { what: "read bound address".into(), source })?;
    let addr = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    let expiry = Duration::from_millis(cfg.worker_expiry_ms);
    // Applications are named after this start (YARN's cluster timestamp), or after the
    // takeover that made it active: ids of an earlier run are never reused.
    let started_ms = now_ms();
    let limits = AppLimits {
        preemption_wait: (cfg.preemption_wait_ms > 0).then(|| Duration::from_millis(cfg.preemption_wait_ms)),
        max_completed_apps: cfg.max_completed_apps,
        ..AppLimits::default()
    };
    let fresh = move || ClusterState::with_limits(expiry, limits, now_ms());
    let ha = !cfg.namenodes.is_empty();
    if !ha {
        tracing::warn!(
            "no namenodes configured (resource_manager.namenodes): applications are kept in memory only, and \
             no standby can take over"
        );
    }
    let container_ca = cfg.load_container_ca()?;
    if container_ca.is_none() && transport.is_tls() {
        tracing::warn!("no container CA (resource_manager.container_ca): containers get no credential");
    }
    let credentials = container_ca.map(|ca| (ca, Duration::from_secs(cfg.container_credential_secs)));
    let heartbeat = Duration::from_millis(cfg.worker_heartbeat_ms);
    let state = Arc::new(RmState::new(fresh(), heartbeat, credentials, addr.clone(), ha));
    let shutdown = CancellationToken::new();

    use tonic::service::interceptor::InterceptedService;
    let tracker = InterceptedService::new(ResourceTrackerServer::new(TrackerService::new(state.clone())), WORKERS_ONLY);
    let client = ApplicationClientServer::new(ClientService::new(state.clone()));
    let master = ApplicationMasterServer::new(MasterService::new(state.clone()));
    let incoming = transport.incoming(listener, shutdown.clone());
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .add_service(tracker)
            .add_service(client)
            .add_service(master)
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "resource manager server stopped");
        }
        stop.cancel();
    });
    let mut tasks = vec![server];
    let mut rest_addr = None;
    if let Some(l) = &cfg.rest_listen {
        let rl = tokio::net::TcpListener::bind(l).await.map_err(|source| RmError::Bind { addr: l.clone(), source })?;
        let a = rl.local_addr().map_err(|source| RmError::Io { what: "read bound address".into(), source })?;
        tracing::info!(addr = %a, "resource manager REST API serving");
        rest_addr = Some(a);
        tasks.push(tokio::spawn(crate::rest::serve(
            rl,
            transport.clone(),
            state.clone(),
            started_ms,
            shutdown.clone(),
        )));
    }
    if ha {
        let lease = Duration::from_millis(cfg.ha_lease_ms);
        // Calls on the namenodes give up within a lease: a beat that cannot land in time
        // is as good as lost.
        let retry = tarn_client::RetryPolicy { deadline: lease, attempt_timeout: lease / 2, ..Default::default() };
        let nn = tarn_client::NamenodeClient::new(&cfg.namenodes, &transport)
            .map(|c| c.with_retry(retry))
            .map_err(|e| RmError::Config(format!("resource_manager.namenodes: {e}")))?;
        let nn = Arc::new(nn);
        if cfg.log_retention_secs > 0 {
            let keep = Duration::from_secs(cfg.log_retention_secs);
            tasks.push(tokio::spawn(crate::retention::run(nn.clone(), state.clone(), keep, shutdown.clone())));
        }
        let run = crate::ha::Ha { nn, state: state.clone(), lease, fresh: Box::new(fresh), settle: 2 * heartbeat };
        tasks.push(tokio::spawn(run.run(shutdown.clone())));
    }
    tasks.push(tokio::spawn(monitor(state, expiry, shutdown.clone())));
    tracing::info!(%addr, "resource manager serving");
    Ok(RmHandle { addr, listen: bound, rest_addr, shutdown, tasks })
}

/// Declares silent workers lost, a few times per expiry.
async fn monitor(state: Arc<RmState>, expiry: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval((expiry / 4).min(Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_serving = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Only while it serves: heartbeats are refused otherwise, and silence then is its
        // own, not the workers' (on resuming, every worker counts as heard from).
        let serving = state.is_serving();
        if serving && !was_serving {
            state.core().heard_all(Instant::now());
        }
        was_serving = serving;
        if serving {
            state.core().expire(Instant::now());
        }
    }
}
