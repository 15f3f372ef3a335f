//! The worker's conversation with the resource manager: register, then heartbeat; a
//! resource manager that does not know this worker (it restarted, or declared it lost)
//! answers `reregister`, and the cycle starts again.

use std::time::Duration;

use std::sync::Arc;

use tarn_client::rm::{ExitReason, NodeLabel, Resources, RmClient, StartContainer};
use tarn_proto::rm as pb;
use tarn_proto::rm::resource_tracker_client::ResourceTrackerClient;
use tokio_util::sync::CancellationToken;

/// Pause before registering again after the resource manager could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub struct Link {
    pub rm: RmClient,
    pub id: String,
    pub host: String,
    pub rack: String,
    pub label: NodeLabel,
    pub capacity: Resources,
    pub containers: Arc<crate::containers::Containers>,
    pub logs: Arc<crate::logs::LogKeeper>,
}

fn stub(c: tonic::transport::Channel) -> ResourceTrackerClient<tonic::transport::Channel> {
    ResourceTrackerClient::new(c)
}

impl Link {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.cycle() => match r {
                    // Asked to register again (a resource manager that took over): at once.
                    Ok(()) => continue,
                    Err(e) => tracing::warn!(error = %e, "lost the resource manager; registering again"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }

    /// Register, then heartbeat until the resource manager asks for a new registration.
    async fn cycle(&self) -> Result<(), tarn_client::ClientError> {
        let conn = self.rm.conn();
        let reg = pb::RegisterWorkerRequest {
            worker_id: self.id.clone(),
            host: self.host.clone(),
            rack: self.rack.clone(),
            label: self.label.to_pb(),
            capacity: Some(self.capacity.into()),
            version: env!("CARGO_PKG_VERSION").into(),
            containers: self
                .containers
                .report()
                .into_iter()
                .map(|(st, owner)| {
                    let owner = owner.unwrap_or_default();
                    pb::WorkerContainer {
                        status: Some((&st).into()),
                        app_id: owner.app_id,
                        attempt: owner.attempt,
                        user: owner.user,
                        resources: Some(owner.resources.into()),
                    }
                })
                .collect(),
        };
        let r = conn
            .call(|c| {
                let req = conn.request(reg.clone());
                async move { stub(c).register_worker(req).await }
            })
            .await?;
        tracing::info!(worker = %self.id, label = self.label.as_str(), "registered with the resource manager");
        let epoch = r.rm_epoch;
        let mut interval = Duration::from_millis(r.heartbeat_interval_ms.max(1));
        loop {
            // At the interval, or at once when a container ended.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.containers.changed.notified() => {}
            }
            let containers = self.containers.statuses().iter().map(pb::ContainerStatus::from).collect();
            let renew = self.containers.due_renewals();
            let hb = pb::WorkerHeartbeatRequest { worker_id: self.id.clone(), rm_epoch: epoch, containers, renew };
            let r = conn
                .call(|c| {
                    let req = conn.request(hb.clone());
                    async move { stub(c).worker_heartbeat(req).await }
                })
                .await?;
            if r.reregister {
                tracing::info!(worker = %self.id, "the resource manager asks for a new registration");
                return Ok(());
            }
            interval = Duration::from_millis(r.heartbeat_interval_ms.max(1));
            self.containers.forget(&r.forget);
            // Starts first: a kill in the same answer is for a container it starts.
            for s in r.start {
                self.containers.start(StartContainer::from(s));
            }
            for k in r.kill {
                let reason = match ExitReason::from_pb(k.reason) {
                    ExitReason::Exited => ExitReason::KilledByResourceManager,
                    r => r,
                };
                self.containers.kill(&k.container_id, reason, k.diagnostics);
            }
            for rc in r.renewed {
                if let Some(c) = rc.credential {
                    let cred = tarn_client::rm::Credential {
                        cert_pem: c.cert_pem,
                        key_pem: c.key_pem,
                        not_after_ms: c.not_after_ms,
                    };
                    self.containers.renew(&rc.container_id, cred);
                }
            }
            for f in r.finished {
                self.logs.keep(f.app_id, f.user);
            }
        }
    }
}
