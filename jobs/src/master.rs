//! The job's application master (`tarn job master`, in a container): embeds a Ballista
//! scheduler served on the job's mutual TLS, keeps the job's executor containers running
//! (asking the resource manager, launching `tarn job executor` in each, replacing the
//! ones that end), runs the job's statements through a Ballista session against its own
//! scheduler, keeps the result in the job's directory and finishes the application.
//!
//! A container that ends is told to the scheduler at once (`executor_stopped`): its tasks
//! and the map output it held are scheduled again, instead of waiting out Ballista's
//! heartbeat timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionStateExt;
use ballista_core::serde::protobuf::scheduler_grpc_server::{SchedulerGrpc, SchedulerGrpcServer};
use ballista_core::serde::protobuf::ExecutorStoppedParams;
use ballista_core::ConfigProducer;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::SessionBuilder;
use datafusion::arrow::array::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use tarn_client::rm::{
    AllocateCall, ContainerAsk, ContainerSpec, ExitReason, FinalStatus, LocalFile, Resources, RmClient,
};
use tarn_client::store::TarnStore;
use tarn_client::{ErrorKind, NamenodeClient, SetAttributes};
use tokio_util::sync::CancellationToken;

use crate::spec::{session_config, session_state, JobSpec};
use crate::stores::TarnStores;
use crate::tls::{JobTls, CA_FILE, CERT_FILE, KEY_FILE};
use crate::{job_dir, JobError, Result, JOBS_DIR};

/// Executor containers that may fail (each is replaced) before the job fails.
const MAX_EXECUTOR_FAILURES: u32 = 8;
/// How often the master talks to the resource manager.
const ALLOCATE_EVERY: Duration = Duration::from_millis(250);

type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// Where the master runs and what it starts executors with.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// The `tarn` binary executors run (by name: the worker's own).
    pub tarn_bin: String,
    /// This node's address as other nodes reach it (the worker's `host`).
    pub node_host: String,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub succeeded: bool,
    pub message: String,
}

/// Runs the job as the master of its application; returns once the application is
/// finished on record.
pub async fn run(rm: RmClient, nn: Arc<NamenodeClient>, spec: JobSpec, opts: MasterOptions) -> Result<Outcome> {
    let reg = rm.register_master("").await.map_err(JobError::cluster("register the application master"))?;
    let app_id = reg.app_id.clone();
    tracing::info!(app = %app_id, attempt = reg.attempt, "job master registered");
    let user = rm.application(&app_id).await.map_err(JobError::cluster("look up the application"))?.user;
    let dir = job_dir(&user, &app_id);
    let rm = Arc::new(rm);
    let job = JobCtx { app_id: app_id.clone(), attempt: reg.attempt, dir: dir.clone() };
    let outcome = match prepare_and_run(&rm, nn.clone(), &spec, &opts, &job).await {
        Ok(msg) => Outcome { succeeded: true, message: msg },
        Err(e) => Outcome { succeeded: false, message: e.to_string() },
    };
    tracing::info!(app = %app_id, succeeded = outcome.succeeded, message = %outcome.message, "job ended");
    let status = if outcome.succeeded { FinalStatus::Succeeded } else { FinalStatus::Failed };
    finish(&rm, status, &outcome.message).await?;
    Ok(outcome)
}

async fn finish(rm: &RmClient, status: FinalStatus, msg: &str) -> Result<()> {
    match rm.finish_master(status, msg).await {
        Err(e) if e.kind() == ErrorKind::MasterNotRegistered => {
            rm.register_master("").await.map_err(JobError::cluster("register the application master again"))?;
            rm.finish_master(status, msg).await.map_err(JobError::cluster("finish the application"))
        }
        r => r.map_err(JobError::cluster("finish the application")),
    }
}

/// Makes the job's directory (the user's jobs directory 0700) with its TLS files.
async fn write_job_files(nn: &Arc<NamenodeClient>, dir: &str, spec: &JobSpec, tls: &JobTls) -> Result<()> {
    let user_dir = dir.rsplit_once('/').map(|(u, _)| u.to_string()).unwrap_or_default();
    let what = format!("make {user_dir}");
    nn.mkdirs(&user_dir).await.map_err(JobError::cluster(what.clone()))?;
    nn.set_attributes(&user_dir, SetAttributes { mode: Some(0o700), ..Default::default() })
        .await
        .map_err(JobError::cluster(what))?;
    nn.mkdirs(&format!("{dir}/tls")).await.map_err(JobError::cluster(format!("make {dir}")))?;
    let store = TarnStore::new(nn.clone());
    let files = [
        (format!("{dir}/spec.json"), spec.to_arg()),
        (format!("{dir}/tls/{CA_FILE}"), tls.ca_pem.clone()),
        (format!("{dir}/tls/{CERT_FILE}"), tls.cert_pem.clone()),
        (format!("{dir}/tls/{KEY_FILE}"), tls.key_pem.clone()),
    ];
    for (path, text) in files {
        let loc = Path::parse(path.trim_start_matches('/')).map_err(|e| JobError::Invalid(format!("{path}: {e}")))?;
        store.put(&loc, text.into_bytes().into()).await.map_err(|e| JobError::Run(format!("write {path}: {e}")))?;
    }
    Ok(())
}

/// Which run of which job this is, and its directory.
struct JobCtx {
    app_id: String,
    attempt: u32,
    dir: String,
}

async fn prepare_and_run(
    rm: &Arc<RmClient>,
    nn: Arc<NamenodeClient>,
    spec: &JobSpec,
    opts: &MasterOptions,
    job: &JobCtx,
) -> Result<String> {
    let (app_id, dir) = (job.app_id.as_str(), job.dir.as_str());
    debug_assert!(dir.starts_with(JOBS_DIR));
    let tls = JobTls::generate(app_id)?;
    write_job_files(&nn, dir, spec, &tls).await?;
    let stores = TarnStores::new(nn.clone());
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let (scheduler, addr) = start_scheduler(&tls, stores.clone(), app_id, &opts.node_host, cancel.clone()).await?;
    let advertised = format!("{}:{}", opts.node_host, addr.port());
    tracing::info!(app = %app_id, scheduler = %advertised, "Ballista scheduler serving");

    // The executors, kept running until the job ends.
    let failed = Arc::new(Mutex::new(None::<String>));
    let pool = ExecutorPool {
        rm: rm.clone(),
        spec: spec.clone(),
        command: executor_command(opts, &advertised, spec),
        files: [CA_FILE, CERT_FILE, KEY_FILE]
            .iter()
            .map(|f| LocalFile { path: format!("{dir}/tls/{f}"), name: f.to_string(), executable: false })
            .collect(),
        scheduler: scheduler.clone(),
        failed: failed.clone(),
    };
    let pool_task = tokio::spawn(pool.run(cancel.clone()));

    // The statements, through a Ballista session against our own scheduler.
    let state = session_state(stores, session_config(Some(&tls)))?
        .upgrade_for_ballista(format!("https://127.0.0.1:{}", addr.port()))?;
    let ctx = SessionContext::new_with_state(state);
    let run = run_statements(&ctx, spec, nn.clone(), job);
    let out = tokio::select! {
        r = run => r,
        r = pool_task => match r {
            Ok(()) => Err(JobError::Run(failed.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| "the executors stopped".into()))),
            Err(e) => Err(JobError::Run(format!("the executor pool: {e}"))),
        },
    };
    cancel.cancel();
    // What was staged and not published (the job failed, or an output had no rows).
    if let Err(e) = nn.delete(&format!("{dir}/{STAGING}"), true, None).await {
        tracing::warn!(error = %e, "could not remove the job's staging directory");
    }
    out
}

/// Where a job's outputs are staged, in its directory (see [`crate::commit`]).
const STAGING: &str = "staging";

async fn run_statements(ctx: &SessionContext, spec: &JobSpec, nn: Arc<NamenodeClient>, job: &JobCtx) -> Result<String> {
    let stmts = spec.statements()?;
    let n = stmts.len();
    let staging = format!("{}/{STAGING}", job.dir);
    let mut outputs = Vec::new();
    let mut last: Option<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>)> = None;
    for (i, stmt) in stmts.into_iter().enumerate() {
        let which = if n == 1 { String::new() } else { format!("statement {} of {n}: ", i + 1) };
        let mut plan = ctx.state().statement_to_plan(stmt).await.map_err(|e| JobError::Plan(format!("{which}{e}")))?;
        if let LogicalPlan::Copy(copy) = &mut plan {
            if let Some(o) = crate::commit::stage(copy, &staging, &job.app_id, job.attempt, i + 1)? {
                crate::commit::check_target(&nn, &o.target, Some(&o.tag)).await?;
                outputs.push(o);
            }
        }
        let ddl = matches!(plan, LogicalPlan::Ddl(_));
        let df = ctx.execute_logical_plan(plan).await.map_err(|e| JobError::Run(format!("{which}{e}")))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| JobError::Run(format!("{which}{e}")))?;
        if !ddl {
            last = Some((schema, batches));
        }
    }
    // Every statement succeeded: the outputs appear, each in one step.
    for o in &outputs {
        crate::commit::publish(&nn, o).await?;
    }
    let Some((schema, batches)) = last else { return Ok("done (no query)".into()) };
    let kept = crate::result::write(nn, &job.dir, schema, &batches).await?;
    Ok(if kept.dropped > 0 {
        format!("{} rows ({} kept as the result)", kept.rows + kept.dropped, kept.rows)
    } else {
        format!("{} rows", kept.rows)
    })
}

/// Starts the Ballista scheduler, served on the job's TLS on every interface, port 0.
pub(crate) async fn start_scheduler(
    tls: &JobTls,
    stores: Arc<TarnStores>,
    app_id: &str,
    node_host: &str,
    cancel: CancellationToken,
) -> Result<(Scheduler, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .map_err(|e| JobError::Io { what: "bind the scheduler's port".into(), source: e })?;
    let addr = listener.local_addr().map_err(|e| JobError::Io { what: "the scheduler's port".into(), source: e })?;
    let tls_c = tls.clone();
    let producer: ConfigProducer = Arc::new(move || session_config(Some(&tls_c)));
    let st = stores.clone();
    let builder: SessionBuilder = Arc::new(move |c| session_state(st.clone(), c));
    let config = SchedulerConfig {
        scheduler_id: format!("{app_id}-scheduler"),
        external_host: node_host.to_string(),
        bind_host: "0.0.0.0".into(),
        bind_port: addr.port(),
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        use_tls: true,
        override_create_grpc_client_endpoint: Some(tls.endpoint_override()),
        override_config_producer: Some(producer.clone()),
        override_session_builder: Some(builder.clone()),
        // The master tells the scheduler of an ended container at once; this is for an
        // executor that hangs without its container ending.
        executor_timeout_seconds: 60,
        expire_dead_executor_interval_seconds: 5,
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_memory(config.scheduler_id.clone(), builder, producer);
    let scheduler: Scheduler = create_scheduler(cluster, Arc::new(config.clone()))
        .await
        .map_err(|e| JobError::Run(format!("start the Ballista scheduler: {e}")))?;
    let service = SchedulerGrpcServer::new(scheduler.clone())
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    let server = tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .map_err(|e| JobError::Tls(format!("the scheduler's TLS: {e}")))?
        .add_service(service);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming_shutdown(incoming, cancel.cancelled_owned()).await {
            tracing::warn!(error = %e, "the Ballista scheduler's server stopped");
        }
    });
    Ok((scheduler, addr))
}

fn executor_command(opts: &MasterOptions, scheduler: &str, spec: &JobSpec) -> Vec<String> {
    vec![
        opts.tarn_bin.clone(),
        "job".into(),
        "executor".into(),
        "--scheduler".into(),
        scheduler.into(),
        "--vcores".into(),
        spec.vcores.to_string(),
        "--memory-mib".into(),
        spec.memory_mib.to_string(),
    ]
}

/// Keeps `spec.executors` executor containers running until cancelled.
struct ExecutorPool {
    rm: Arc<RmClient>,
    spec: JobSpec,
    command: Vec<String>,
    files: Vec<LocalFile>,
    scheduler: Scheduler,
    /// Why the pool gave up, when it did.
    failed: Arc<Mutex<Option<String>>>,
}

impl ExecutorPool {
    async fn run(self, cancel: CancellationToken) {
        if let Err(why) = self.keep(cancel).await {
            tracing::warn!(%why, "the job's executors failed");
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    }

    async fn keep(&self, cancel: CancellationToken) -> std::result::Result<(), String> {
        let want = self.spec.executors;
        let mut running: BTreeMap<String, String> = BTreeMap::new();
        let mut failures = 0u32;
        let mut response_id = 0u64;
        let mut launch: Vec<(String, ContainerSpec)> = Vec::new();
        let mut release: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(ALLOCATE_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let ask = ContainerAsk {
                ask_id: 1,
                resources: Resources::new(self.spec.vcores, self.spec.memory_mib),
                count: want.saturating_sub(running.len() as u32),
                relax_locality: true,
                ..Default::default()
            };
            let call = AllocateCall {
                response_id,
                asks: vec![ask],
                launch: std::mem::take(&mut launch),
                release: std::mem::take(&mut release),
                progress: 0.0,
            };
            let reply = match self.rm.allocate(&call).await {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::MasterNotRegistered => {
                    let reg = self.rm.register_master("").await.map_err(|e| format!("register again: {e}"))?;
                    let known: std::collections::BTreeSet<String> = reg.containers.into_iter().collect();
                    let lost: Vec<String> = running.keys().filter(|c| !known.contains(*c)).cloned().collect();
                    for cid in lost {
                        running.remove(&cid);
                        self.stopped(&cid, "its start was lost in a failover of the resource manager").await;
                    }
                    response_id = 0;
                    continue;
                }
                Err(e) => return Err(format!("allocate: {e}")),
            };
            response_id = reply.response_id;
            for a in reply.allocated {
                if running.len() as u32 >= want {
                    release.push(a.container_id);
                    continue;
                }
                tracing::info!(container = %a.container_id, worker = %a.worker_id, host = %a.host, "starting an executor");
                let mut env = BTreeMap::new();
                env.insert("RUST_LOG".to_string(), "info".to_string());
                running.insert(a.container_id.clone(), a.host);
                launch.push((
                    a.container_id,
                    ContainerSpec { command: self.command.clone(), env, files: self.files.clone() },
                ));
            }
            for st in reply.completed {
                if running.remove(&st.container_id).is_none() {
                    continue;
                }
                let why = format!(
                    "executor container {} {} (exit code {}){}",
                    st.container_id,
                    st.ended.map(|r| r.as_str()).unwrap_or("ended"),
                    st.exit_code,
                    if st.diagnostics.is_empty() { String::new() } else { format!(": {}", st.diagnostics) }
                );
                tracing::warn!("{why}");
                self.stopped(&st.container_id, &why).await;
                if st.ended != Some(ExitReason::Preempted) {
                    failures += 1;
                    if failures > MAX_EXECUTOR_FAILURES {
                        return Err(format!(
                            "{failures} executor containers failed (at most {MAX_EXECUTOR_FAILURES} may); the last: {why}"
                        ));
                    }
                }
            }
        }
    }

    /// Tells the scheduler that executor `id` is gone: its running tasks and its map
    /// output are scheduled again now.
    async fn stopped(&self, id: &str, reason: &str) {
        let req =
            tonic::Request::new(ExecutorStoppedParams { executor_id: id.to_string(), reason: reason.to_string() });
        if let Err(e) = SchedulerGrpc::executor_stopped(&self.scheduler, req).await {
            tracing::debug!(executor = %id, error = %e, "executor_stopped");
        }
    }
}
