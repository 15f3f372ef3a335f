//! What the resource manager's services and background tasks share.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tarn_client::rm::{Credential, StartContainer};
use tarn_security::ContainerCa;

use crate::cluster::ClusterState;

pub struct RmState {
    core: Mutex<ClusterState>,
    /// The container CA and how long its credentials last.
    credentials: Option<(ContainerCa, Duration)>,
    /// Random per start: a worker that sees another epoch registers again.
    pub epoch: u64,
    /// How often workers are told to heartbeat.
    pub heartbeat: Duration,
}

impl RmState {
    pub fn new(core: ClusterState, heartbeat: Duration, credentials: Option<(ContainerCa, Duration)>) -> Self {
        RmState { core: Mutex::new(core), credentials, epoch: rand::random::<u64>().max(1), heartbeat }
    }

    /// Gives a container about to start its delegation credential (none without a
    /// container CA). A container that cannot get one is started without: it then cannot
    /// reach the cluster, which its logs say.
    pub fn add_credential(&self, s: &mut StartContainer) {
        s.credential = self.credential(&s.user, &s.container_id);
    }

    /// A new credential for container `cid` of `user` (none without a container CA).
    pub fn credential(&self, user: &str, cid: &str) -> Option<Credential> {
        let (ca, valid) = self.credentials.as_ref()?;
        match ca.issue(user, cid, *valid) {
            Ok(c) => Some(Credential { cert_pem: c.cert_pem, key_pem: c.key_pem, not_after_ms: c.not_after_ms }),
            Err(e) => {
                tracing::warn!(container = %cid, %user, error = %e, "no credential issued");
                None
            }
        }
    }

    /// The core, for one decision (never held across an await).
    pub fn core(&self) -> MutexGuard<'_, ClusterState> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}
