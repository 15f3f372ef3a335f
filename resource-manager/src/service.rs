//! The resource manager's gRPC services (the RPC edge: protobuf is converted here, and
//! refusals become statuses here only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tarn_client::rm::{AllocateCall, AppSubmission, ContainerStatus, FinalStatus, NodeLabel, Resources};
use tarn_proto::rm as pb;
use tarn_proto::rm::application_client_server::ApplicationClient;
use tarn_proto::rm::application_master_server::ApplicationMaster;
use tarn_proto::rm::resource_tracker_server::ResourceTracker;
use tarn_proto::ErrorKind;
use tonic::{Request, Response, Status};

use crate::cluster::{ReportedContainer, WorkerInfo};
use crate::error::Refusal;
use crate::state::RmState;

fn status(r: Refusal) -> Status {
    r.kind.status(r.message)
}

/// `Ok` when this resource manager serves; else `NotLeader` (clients retry), naming the
/// active one in `x-tarn-leader` when it is known.
fn serving(s: &RmState) -> Result<(), Status> {
    let Err(n) = s.serving() else { return Ok(()) };
    let mut st = ErrorKind::NotLeader.status(n.message);
    if let Some(v) = n.leader.and_then(|l| l.parse().ok()) {
        st.metadata_mut().insert(tarn_proto::LEADER_HEADER, v);
    }
    Err(st)
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
        serving(&self.s)?;
        let id = worker_id(&req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let label = NodeLabel::from_pb(r.label)
            .ok_or_else(|| ErrorKind::InvalidArgument.status(format!("worker {id}: label must be core or task")))?;
        let has = r
            .containers
            .into_iter()
            .filter_map(|c| {
                Some(ReportedContainer {
                    status: ContainerStatus::from(c.status?),
                    app_id: c.app_id,
                    attempt: c.attempt,
                    user: c.user,
                    resources: Resources::from(c.resources),
                })
            })
            .collect();
        let info = WorkerInfo { id, host: r.host, rack: r.rack, label, capacity: Resources::from(r.capacity) };
        self.s.core().register(info, has, Instant::now()).map_err(status)?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            rm_epoch: self.s.epoch(),
            heartbeat_interval_ms: ms(self.s.heartbeat),
        }))
    }

    async fn worker_heartbeat(
        &self,
        req: Request<pb::WorkerHeartbeatRequest>,
    ) -> Result<Response<pb::WorkerHeartbeatResponse>, Status> {
        serving(&self.s)?;
        let id = worker_id(&req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let statuses: Vec<ContainerStatus> = r.containers.into_iter().map(ContainerStatus::from).collect();
        let commands = match r.rm_epoch == self.s.epoch() {
            true => self.s.core().heartbeat(&id, statuses, Instant::now()),
            false => None,
        };
        let interval = ms(self.s.heartbeat);
        let Some(mut c) = commands else {
            return Ok(Response::new(pb::WorkerHeartbeatResponse {
                reregister: true,
                heartbeat_interval_ms: interval,
                ..Default::default()
            }));
        };
        for st in &mut c.start {
            self.s.add_credential(st);
        }
        let renewed: Vec<pb::RenewedCredential> = r
            .renew
            .iter()
            .filter_map(|cid| {
                let user = self.s.core().renewable(&id, cid)?;
                let c = self.s.credential(&user, cid)?;
                Some(pb::RenewedCredential {
                    container_id: cid.clone(),
                    credential: Some(pb::ContainerCredential {
                        cert_pem: c.cert_pem,
                        key_pem: c.key_pem,
                        not_after_ms: c.not_after_ms,
                    }),
                })
            })
            .collect();
        Ok(Response::new(pb::WorkerHeartbeatResponse {
            reregister: false,
            heartbeat_interval_ms: interval,
            start: c.start.iter().map(Into::into).collect(),
            kill: c
                .kill
                .into_iter()
                .map(|(container_id, reason, diagnostics)| pb::KillContainer {
                    container_id,
                    reason: reason.to_pb(),
                    diagnostics,
                })
                .collect(),
            forget: c.forget,
            finished: c.finished.into_iter().map(|(app_id, user)| pb::AppFinished { app_id, user }).collect(),
            renewed,
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

/// The caller, if an admin (the superuser); else a refusal saying they may not `what`.
fn admin_only<T>(req: &Request<T>, what: &str) -> Result<String, Status> {
    match user_of(req)? {
        (user, true) => Ok(user),
        (user, false) => Err(ErrorKind::PermissionDenied.status(format!("{user} may not {what} (admins only)"))),
    }
}

/// Who calls, and whether they are the superuser (an admin certificate).
fn user_of<T>(req: &Request<T>) -> Result<(String, bool), Status> {
    let claim = req.metadata().get("x-tarn-user").and_then(|v| v.to_str().ok());
    let user = tarn_security::acting_user(req.extensions(), claim)?;
    Ok((user, tarn_security::is_superuser(req.extensions(), claim)))
}

#[tonic::async_trait]
impl ApplicationClient for ClientService {
    async fn submit_application(
        &self,
        req: Request<pb::SubmitApplicationRequest>,
    ) -> Result<Response<pb::SubmitApplicationResponse>, Status> {
        serving(&self.s)?;
        let (user, superuser) = user_of(&req)?;
        let r = req.into_inner();
        let size = prost::Message::encoded_len(&r);
        if size > crate::ha::RECORD_MAX / 2 {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "the application's submission takes {size} bytes; at most {} (put large files in the file system \
                 and have them localized instead)",
                crate::ha::RECORD_MAX / 2
            )));
        }
        let sub = AppSubmission::from(r);
        // Answered once on record: an application a client was told of is never lost.
        let app_id = self.s.durably(|core| core.submit_as(&user, superuser, sub)).await.map_err(status)?;
        Ok(Response::new(pb::SubmitApplicationResponse { app_id }))
    }

    async fn get_application(
        &self,
        req: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::AppReport>, Status> {
        serving(&self.s)?;
        let (user, superuser) = user_of(&req)?;
        let r = self.s.core().report(&req.get_ref().app_id, &user, superuser).map_err(status)?;
        Ok(Response::new((&r).into()))
    }

    async fn list_applications(
        &self,
        req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        serving(&self.s)?;
        let (user, superuser) = user_of(&req)?;
        let apps = self.s.core().list(&user, superuser, req.get_ref().all_users).map_err(status)?;
        Ok(Response::new(pb::ListApplicationsResponse { apps: apps.iter().map(Into::into).collect() }))
    }

    async fn kill_application(
        &self,
        req: Request<pb::KillApplicationRequest>,
    ) -> Result<Response<pb::KillApplicationResponse>, Status> {
        serving(&self.s)?;
        let (user, superuser) = user_of(&req)?;
        let app_id = &req.get_ref().app_id;
        let killed = self.s.durably(|core| core.kill_app(app_id, &user, superuser)).await.map_err(status)?;
        Ok(Response::new(pb::KillApplicationResponse { killed }))
    }

    async fn drain_worker(
        &self,
        req: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        serving(&self.s)?;
        // A worker may start draining itself (a spot node told it will be reclaimed:
        // deploy/ec2); anything else, cancelling included, is an admin's.
        let own = matches!(tarn_security::caller(req.extensions()),
            Ok(Some(id)) if id.role == tarn_security::Role::Worker && id.name == req.get_ref().worker_id);
        if !own || req.get_ref().cancel {
            admin_only(&req, "drain workers")?;
        }
        let r = req.into_inner();
        let secs = r.deadline_secs.min(7 * 24 * 3600);
        let until = (!r.cancel).then(|| Instant::now() + Duration::from_secs(secs));
        let until_ms = (!r.cancel).then(|| crate::state::now_ms() + secs * 1000);
        // On record before the answer: a standby taking over drains it on.
        let left = self
            .s
            .durably(|core| match (own, until, until_ms) {
                // Its own drain may hurry one under way, not put it off.
                (true, Some(until), Some(until_ms)) => core.drain_no_later(&r.worker_id, until, until_ms),
                _ => {
                    let left = core.drain(&r.worker_id, until)?;
                    core.note_drain_ms(&r.worker_id, until_ms);
                    Ok(left)
                }
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DrainWorkerResponse { containers: left as u32 }))
    }

    async fn get_queues(&self, _req: Request<pb::GetQueuesRequest>) -> Result<Response<pb::GetQueuesResponse>, Status> {
        serving(&self.s)?;
        let core = self.s.core();
        Ok(Response::new(pb::GetQueuesResponse {
            queues: core.queue_reports().iter().map(Into::into).collect(),
            source: core.queues_source().to_string(),
        }))
    }

    async fn refresh_queues(
        &self,
        req: Request<pb::RefreshQueuesRequest>,
    ) -> Result<Response<pb::RefreshQueuesResponse>, Status> {
        serving(&self.s)?;
        admin_only(&req, "change the queues")?;
        let text = req.into_inner().toml;
        if text.len() > crate::ha::RECORD_MAX {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "the queues file is {} bytes; at most {}",
                text.len(),
                crate::ha::RECORD_MAX
            )));
        }
        let q = crate::queues::Queues::parse(&text).map_err(|e| ErrorKind::InvalidArgument.status(e))?;
        let leaves = q.leaves.len() as u32;
        // Answered once on record: a standby taking over schedules with these queues.
        self.s.durably(|core| core.set_queues(q)).await.map_err(status)?;
        Ok(Response::new(pb::RefreshQueuesResponse { leaves }))
    }

    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        serving(&self.s)?;
        let workers = self.s.core().workers(Instant::now());
        Ok(Response::new(pb::ListWorkersResponse { workers: workers.into_iter().map(Into::into).collect() }))
    }
}

/// Application masters register, allocate and finish (only a current master's container:
/// its credential names the container).
pub struct MasterService {
    s: Arc<RmState>,
}

impl MasterService {
    pub fn new(s: Arc<RmState>) -> Self {
        MasterService { s }
    }
}

/// The container a master's call comes from and its user: what its certificate from the
/// container CA names; in dev mode (plaintext) what it claims.
fn master_caller<T>(req: &Request<T>) -> Result<(String, String), Status> {
    let (user, _) = user_of(req)?;
    if let Some(cid) = tarn_security::transport::caller_container(req.extensions()) {
        return Ok((cid.to_string(), user));
    }
    let dev = tarn_security::caller(req.extensions())?.is_none();
    let claimed = req.metadata().get("x-tarn-container").and_then(|v| v.to_str().ok());
    match claimed {
        Some(cid) if dev => Ok((cid.to_string(), user)),
        _ => Err(ErrorKind::PermissionDenied.status(
            "only an application master calls this, with its container's credential (a certificate \
             from the container CA naming the container)",
        )),
    }
}

#[tonic::async_trait]
impl ApplicationMaster for MasterService {
    async fn register_master(
        &self,
        req: Request<pb::RegisterMasterRequest>,
    ) -> Result<Response<pb::RegisterMasterResponse>, Status> {
        serving(&self.s)?;
        let (cid, user) = master_caller(&req)?;
        let r = self.s.core().register_master(&cid, &user, &req.get_ref().tracking_url).map_err(status)?;
        Ok(Response::new(pb::RegisterMasterResponse {
            app_id: r.app_id,
            attempt: r.attempt,
            max_container: Some(r.max_container.into()),
            containers: r.containers,
        }))
    }

    async fn allocate(&self, req: Request<pb::AllocateRequest>) -> Result<Response<pb::AllocateResponse>, Status> {
        serving(&self.s)?;
        let (cid, user) = master_caller(&req)?;
        let call = AllocateCall::from(req.into_inner());
        let reply = self.s.core().allocate(&cid, &user, call).map_err(status)?;
        Ok(Response::new((&reply).into()))
    }

    async fn finish_master(
        &self,
        req: Request<pb::FinishMasterRequest>,
    ) -> Result<Response<pb::FinishMasterResponse>, Status> {
        serving(&self.s)?;
        let (cid, user) = master_caller(&req)?;
        let r = req.into_inner();
        let final_status = FinalStatus::from_pb(r.final_status)
            .ok_or_else(|| ErrorKind::InvalidArgument.status("final_status: SUCCEEDED, FAILED or KILLED"))?;
        // Answered once on record: a master that exits after this never gets a new attempt.
        let now = Instant::now();
        self.s
            .durably(|core| core.finish_master(&cid, &user, final_status, &r.diagnostics, now))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FinishMasterResponse {}))
    }
}
