//! What the resource manager's services and background tasks share.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::cluster::ClusterState;

pub struct RmState {
    core: Mutex<ClusterState>,
    /// Random per start: a worker that sees another epoch registers again.
    pub epoch: u64,
    /// How often workers are told to heartbeat.
    pub heartbeat: Duration,
}

impl RmState {
    pub fn new(core: ClusterState, heartbeat: Duration) -> Self {
        RmState { core: Mutex::new(core), epoch: rand::random::<u64>().max(1), heartbeat }
    }

    /// The core, for one decision (never held across an await).
    pub fn core(&self) -> MutexGuard<'_, ClusterState> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}
