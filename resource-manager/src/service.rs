//! The resource manager's gRPC services (the RPC edge: protobuf is converted here, and
//! refusals become statuses here only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tarn_client::rm::{NodeLabel, Resources};
use tarn_proto::rm as pb;
use tarn_proto::rm::application_client_server::ApplicationClient;
use tarn_proto::rm::resource_tracker_server::ResourceTracker;
use tarn_proto::ErrorKind;
use tonic::{Request, Response, Status};

use crate::cluster::WorkerInfo;
use crate::error::Refusal;
use crate::state::RmState;

fn status(r: Refusal) -> Status {
    r.kind.status(r.message)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The worker a request is from: its certificate's name (a worker speaks only for
/// itself); in dev mode, without certificates, the id it names.
fn worker_id<T>(req: &Request<T>, claimed: &str) -> Result<String, Status> {
    match tarn_security::caller(req.extensions())? {
        Some(id) if claimed.is_empty() || claimed == id.name => Ok(id.name.clone()),
        Some(id) => Err(ErrorKind::PermissionDenied
            .status(format!("{id} may not speak for worker {claimed:?} (a worker is its certificate's name)"))),
        None if claimed.is_empty() => Err(ErrorKind::InvalidArgument.status("worker_id is empty")),
        None => Ok(claimed.to_string()),
    }
}

/// Workers register and heartbeat (worker certificates only).
pub struct TrackerService {
    s: Arc<RmState>,
}

impl TrackerService {
    pub fn new(s: Arc<RmState>) -> Self {
        TrackerService { s }
    }
}

#[tonic::async_trait]
impl ResourceTracker for TrackerService {
    async fn register_worker(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let id = worker_id(&req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let label = NodeLabel::from_pb(r.label)
            .ok_or_else(|| ErrorKind::InvalidArgument.status(format!("worker {id}: label must be core or task")))?;
        let info = WorkerInfo { id, host: r.host, rack: r.rack, label, capacity: Resources::from(r.capacity) };
        self.s.core().register(info, Instant::now()).map_err(status)?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            rm_epoch: self.s.epoch,
            heartbeat_interval_ms: ms(self.s.heartbeat),
        }))
    }

    async fn worker_heartbeat(
        &self,
        req: Request<pb::WorkerHeartbeatRequest>,
    ) -> Result<Response<pb::WorkerHeartbeatResponse>, Status> {
        let id = worker_id(&req, &req.get_ref().worker_id)?;
        let known = req.get_ref().rm_epoch == self.s.epoch && self.s.core().heartbeat(&id, Instant::now());
        Ok(Response::new(pb::WorkerHeartbeatResponse {
            reregister: !known,
            heartbeat_interval_ms: ms(self.s.heartbeat),
        }))
    }
}

/// What clients ask (any certificate of the cluster).
pub struct ClientService {
    s: Arc<RmState>,
}

impl ClientService {
    pub fn new(s: Arc<RmState>) -> Self {
        ClientService { s }
    }
}

#[tonic::async_trait]
impl ApplicationClient for ClientService {
    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let workers = self.s.core().workers(Instant::now());
        Ok(Response::new(pb::ListWorkersResponse { workers: workers.into_iter().map(Into::into).collect() }))
    }
}
