//! What the resource manager knows of the cluster's compute, and the rules that change it.
//! No I/O and no clock of its own (the caller passes `now`), so every rule is unit-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tarn_client::rm::{NodeLabel, Resources, WorkerReport, WorkerState};
use tarn_proto::ErrorKind;

use crate::error::Refusal;

/// What a worker says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its certificate's name.
    pub id: String,
    pub host: String,
    pub rack: String,
    pub label: NodeLabel,
    pub capacity: Resources,
}

#[derive(Debug)]
struct WorkerRec {
    info: WorkerInfo,
    state: WorkerState,
    last_seen: Instant,
    used: Resources,
}

/// The cluster's workers.
#[derive(Debug)]
pub struct ClusterState {
    workers: BTreeMap<String, WorkerRec>,
    /// A worker silent this long is lost.
    expiry: Duration,
}

impl ClusterState {
    pub fn new(expiry: Duration) -> Self {
        ClusterState { workers: BTreeMap::new(), expiry }
    }

    /// A worker (re)registers: known from now on, running, with what it offers.
    pub fn register(&mut self, info: WorkerInfo, now: Instant) -> Result<(), Refusal> {
        if info.id.is_empty() {
            return Err(Refusal::new(ErrorKind::InvalidArgument, "worker_id is empty"));
        }
        if info.capacity.vcores == 0 || info.capacity.memory_mib == 0 {
            return Err(Refusal::new(
                ErrorKind::InvalidArgument,
                format!("worker {}: capacity needs at least 1 vcore and 1 MiB", info.id),
            ));
        }
        let id = info.id.clone();
        match self.workers.get(&id) {
            Some(w) if w.state == WorkerState::Lost => tracing::info!(worker = %id, "lost worker registered again"),
            Some(_) => tracing::info!(worker = %id, "worker registered again"),
            None => tracing::info!(
                worker = %id,
                host = %info.host,
                label = info.label.as_str(),
                vcores = info.capacity.vcores,
                memory_mib = info.capacity.memory_mib,
                "worker registered"
            ),
        }
        self.workers
            .insert(id, WorkerRec { info, state: WorkerState::Running, last_seen: now, used: Resources::default() });
        Ok(())
    }

    /// A heartbeat from worker `id`: `false` if it must register again (unknown here, or
    /// declared lost: what it ran has been given up).
    pub fn heartbeat(&mut self, id: &str, now: Instant) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.state == WorkerState::Running => {
                w.last_seen = now;
                true
            }
            _ => false,
        }
    }

    /// Declares lost every running worker silent past the expiry; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut lost = Vec::new();
        for (id, w) in &mut self.workers {
            if w.state == WorkerState::Running && now.saturating_duration_since(w.last_seen) > self.expiry {
                w.state = WorkerState::Lost;
                w.used = Resources::default();
                tracing::warn!(worker = %id, silent = ?now.saturating_duration_since(w.last_seen), "worker lost");
                lost.push(id.clone());
            }
        }
        lost
    }

    /// Every worker, running or lost, by id.
    pub fn workers(&self, now: Instant) -> Vec<WorkerReport> {
        self.workers
            .values()
            .map(|w| WorkerReport {
                worker_id: w.info.id.clone(),
                host: w.info.host.clone(),
                rack: w.info.rack.clone(),
                label: w.info.label,
                state: w.state,
                capacity: w.info.capacity,
                used: w.used,
                since_heartbeat: now.saturating_duration_since(w.last_seen),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, label: NodeLabel) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            host: format!("{id}.local"),
            rack: "/r1".into(),
            label,
            capacity: Resources::new(4, 8192),
        }
    }

    #[test]
    fn a_silent_worker_is_lost_and_must_register_again() {
        let t0 = Instant::now();
        let mut c = ClusterState::new(Duration::from_secs(10));
        c.register(info("w1", NodeLabel::Core), t0).unwrap();
        c.register(info("w2", NodeLabel::Task), t0).unwrap();
        assert!(c.heartbeat("w1", t0 + Duration::from_secs(8)));
        // w2 said nothing for 11 s: lost; w1 heard 3 s ago: running.
        assert_eq!(c.expire(t0 + Duration::from_secs(11)), vec!["w2".to_string()]);
        let states: Vec<(String, WorkerState)> =
            c.workers(t0 + Duration::from_secs(11)).into_iter().map(|w| (w.worker_id, w.state)).collect();
        assert_eq!(states, [("w1".into(), WorkerState::Running), ("w2".into(), WorkerState::Lost)]);
        // Lost once, its heartbeats are answered "register again", and nothing is lost twice.
        assert!(!c.heartbeat("w2", t0 + Duration::from_secs(12)));
        assert!(c.expire(t0 + Duration::from_secs(12)).is_empty());
        c.register(info("w2", NodeLabel::Task), t0 + Duration::from_secs(12)).unwrap();
        assert!(c.heartbeat("w2", t0 + Duration::from_secs(13)));
        assert!(!c.heartbeat("stranger", t0 + Duration::from_secs(13)));
    }

    #[test]
    fn a_worker_without_capacity_or_name_is_refused() {
        let mut c = ClusterState::new(Duration::from_secs(10));
        let mut none = info("w1", NodeLabel::Core);
        none.capacity = Resources::new(0, 1024);
        assert_eq!(c.register(none, Instant::now()).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(c.register(info("", NodeLabel::Core), Instant::now()).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert!(c.workers(Instant::now()).is_empty());
    }
}
