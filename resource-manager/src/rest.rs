//! The resource manager's REST/JSON API, shaped like YARN's `/ws/v1/cluster/...` (info,
//! metrics, nodes, apps, apps/{id}, scheduler) for tools and the console to come. HTTPS
//! with client certificates (the cluster's mutual TLS, through [`Transport`]): a user
//! sees their own applications, an admin everyone's. Read only.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tarn_client::rm::{AppReport, AppState, NodeLabel, WorkerReport, WorkerState};
use tarn_security::{Peer, Role, Transport};
use tokio_util::sync::CancellationToken;

use crate::state::RmState;

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    transport: Transport,
    state: Arc<RmState>,
    started_ms: u64,
    shutdown: CancellationToken,
) {
    use tokio_stream::StreamExt;
    let mut incoming = transport.incoming(listener, shutdown.clone());
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = incoming.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let peer = conn.peer().clone();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (state, peer) = (state.clone(), peer.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&state, &peer, started_ms, &req)) }
            });
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = http.serve_connection(TokioIo::new(conn), svc).await;
        });
    }
}

/// The caller's user and whether they are an admin (dev mode: an admin).
fn caller(peer: &Peer) -> (String, bool) {
    match &peer.identity {
        None => ("tarn".into(), true),
        Some(id) if id.role.is_person() => (id.name.clone(), id.role == Role::Admin),
        Some(id) => (id.role.as_str().to_string(), false),
    }
}

fn reply(code: StatusCode, body: Value) -> Response<String> {
    let mut r = Response::new(body.to_string());
    *r.status_mut() = code;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// YARN's RemoteException shape for errors.
fn error(code: StatusCode, exception: &str, message: String) -> Response<String> {
    reply(code, json!({"RemoteException": {"exception": exception, "message": message}}))
}

fn answer(s: &RmState, peer: &Peer, started_ms: u64, req: &Request<Incoming>) -> Response<String> {
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "WebApplicationException", "the API is read only: GET".into());
    }
    let (user, admin) = caller(peer);
    let path = req.uri().path().trim_end_matches('/');
    let now = Instant::now();
    let serving = s.is_serving();
    let path = path.strip_prefix("/ws/v1/cluster").unwrap_or("?");
    if !serving && !matches!(path, "" | "/info") {
        // YARN's standby answers with where the active one is; a standby knows nothing.
        let why = match s.serving() {
            Err(n) => n.message,
            Ok(()) => "this resource manager is not active".into(),
        };
        return error(StatusCode::SERVICE_UNAVAILABLE, "StandbyException", why);
    }
    let core = s.core();
    match path {
        "" | "/info" => reply(
            StatusCode::OK,
            json!({"clusterInfo": {
                "id": started_ms,
                "startedOn": started_ms,
                "state": "STARTED",
                "haState": if serving { "ACTIVE" } else { "STANDBY" },
                "resourceManagerVersion": env!("CARGO_PKG_VERSION"),
            }}),
        ),
        "/metrics" => {
            let workers = core.workers(now);
            let apps = core.list(&user, true, true).unwrap_or_default();
            let count = |st: AppState| apps.iter().filter(|a| a.state == st).count();
            let live = workers.iter().filter(|w| w.state != WorkerState::Lost);
            let (total_mb, total_vc) =
                live.clone().fold((0, 0), |(m, v), w| (m + w.capacity.memory_mib, v + w.capacity.vcores));
            let (used_mb, used_vc) = live.clone().fold((0, 0), |(m, v), w| (m + w.used.memory_mib, v + w.used.vcores));
            reply(
                StatusCode::OK,
                json!({"clusterMetrics": {
                    "appsSubmitted": apps.len(),
                    "appsPending": count(AppState::Accepted),
                    "appsRunning": count(AppState::Running),
                    "appsCompleted": count(AppState::Finished),
                    "appsFailed": count(AppState::Failed),
                    "appsKilled": count(AppState::Killed),
                    "containersAllocated": core.container_count(),
                    "allocatedMB": used_mb,
                    "allocatedVirtualCores": used_vc,
                    "availableMB": total_mb - used_mb,
                    "availableVirtualCores": total_vc - used_vc,
                    "totalMB": total_mb,
                    "totalVirtualCores": total_vc,
                    "activeNodes": workers.iter().filter(|w| w.state == WorkerState::Running).count(),
                    "decommissioningNodes": workers.iter().filter(|w| w.state == WorkerState::Draining).count(),
                    "lostNodes": workers.iter().filter(|w| w.state == WorkerState::Lost).count(),
                    "totalNodes": workers.len(),
                }}),
            )
        }
        "/nodes" => {
            let nodes: Vec<Value> = core.workers(now).iter().map(node).collect();
            reply(StatusCode::OK, json!({"nodes": {"node": nodes}}))
        }
        "/apps" => match core.list(&user, admin, admin) {
            Ok(apps) => reply(StatusCode::OK, json!({"apps": {"app": apps.iter().map(app).collect::<Vec<_>>()}})),
            Err(e) => error(StatusCode::FORBIDDEN, "ForbiddenException", e.message),
        },
        "/scheduler" => {
            let queues: Vec<Value> = core
                .queue_reports()
                .iter()
                .map(|q| {
                    json!({
                        "queueName": q.path,
                        "capacity": q.guarantee * 100.0,
                        "maxCapacity": q.max * 100.0,
                        "usedCapacity": if q.guarantee > 0.0 { q.used / q.guarantee * 100.0 } else { 0.0 },
                        "absoluteUsedCapacity": q.used * 100.0,
                        "numPendingApplications": q.pending_apps,
                        "numActiveApplications": q.running_apps,
                        "userLimitFactor": q.user_limit_factor,
                        "maxAMResourcePercent": q.max_am_share,
                        "resourcesUsed": {"memory": q.used_resources.memory_mib, "vCores": q.used_resources.vcores},
                    })
                })
                .collect();
            reply(
                StatusCode::OK,
                json!({"scheduler": {"schedulerInfo": {
                    "type": "capacityScheduler",
                    "queues": {"queue": queues},
                }}}),
            )
        }
        p => match p.strip_prefix("/apps/") {
            Some(id) => match core.report(id, &user, admin) {
                Ok(a) => reply(StatusCode::OK, json!({"app": app(&a)})),
                Err(e) if e.kind == tarn_proto::ErrorKind::NotFound => {
                    error(StatusCode::NOT_FOUND, "NotFoundException", e.message)
                }
                Err(e) => error(StatusCode::FORBIDDEN, "ForbiddenException", e.message),
            },
            None => error(StatusCode::NOT_FOUND, "NotFoundException", format!("no resource {path}")),
        },
    }
}

fn node(w: &WorkerReport) -> Value {
    let state = match w.state {
        WorkerState::Running => "RUNNING",
        WorkerState::Lost => "LOST",
        WorkerState::Draining => "DECOMMISSIONING",
    };
    json!({
        "id": w.worker_id,
        "rack": w.rack,
        "state": state,
        "nodeHostName": w.host,
        "nodeLabels": [match w.label { NodeLabel::Core => "core", NodeLabel::Task => "task" }],
        "usedMemoryMB": w.used.memory_mib,
        "availMemoryMB": w.capacity.memory_mib.saturating_sub(w.used.memory_mib),
        "usedVirtualCores": w.used.vcores,
        "availableVirtualCores": w.capacity.vcores.saturating_sub(w.used.vcores),
        "lastHealthUpdateMsAgo": w.since_heartbeat.as_millis() as u64,
    })
}

fn app(a: &AppReport) -> Value {
    let (state, final_status) = match a.state {
        AppState::Accepted => ("ACCEPTED", "UNDEFINED"),
        AppState::Running => ("RUNNING", "UNDEFINED"),
        AppState::Finished => ("FINISHED", "SUCCEEDED"),
        AppState::Failed => ("FAILED", "FAILED"),
        AppState::Killed => ("KILLED", "KILLED"),
    };
    let last = a.attempts.last();
    json!({
        "id": a.app_id,
        "user": a.user,
        "name": a.name,
        "queue": a.queue,
        "state": state,
        "finalStatus": final_status,
        "diagnostics": a.diagnostics,
        "runningAttempt": last.map(|t| t.attempt),
        "amContainerId": last.map(|t| t.container_id.clone()),
        "amHostHttpAddress": last.map(|t| t.worker_id.clone()),
        "maxAttempts": a.max_attempts,
    })
}
