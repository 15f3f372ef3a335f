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
use ballista_scheduler::cluster::{BallistaCluster, JobState};
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

/// What a running job has done, kept as the extended attribute [`PROGRESS_XATTR`] of its
/// directory (JSON), for `tarn job submit --wait` and `tarn job status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobProgress {
    /// The statement running (1-based) and how many there are.
    pub statement: usize,
    pub statements: usize,
    /// Ballista stages of the job's queries: done, and planned so far.
    pub stages_done: usize,
    pub stages: usize,
    /// Stages run again (their map output was lost with an executor, or a task failed
    /// too often).
    pub stage_retries: usize,
    /// Statements run again because a Ballista stage was (see `run_statements`).
    pub statement_reruns: usize,
    /// Executors running, and executor containers that ended before the job did.
    pub executors: usize,
    pub executors_lost: usize,
    pub elapsed_ms: u64,
}

/// The extended attribute of a job's directory holding its [`JobProgress`].
pub const PROGRESS_XATTR: &str = "tarn.job.progress";
/// How often a running job's progress is looked at (and written when it changed).
const PROGRESS_EVERY: Duration = Duration::from_millis(300);

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
    rm.finish_master_after_failover(status, &outcome.message)
        .await
        .map_err(JobError::cluster("finish the application"))?;
    Ok(outcome)
}

/// Makes the job's directory (the user's jobs directory 0700) with its TLS files.
async fn write_job_files(nn: &Arc<NamenodeClient>, dir: &str, spec: &JobSpec, tls: &JobTls) -> Result<()> {
    // The user's directory is made 0700 in one step; one that is there must be the
    // user's (/.tarn/jobs is 1777: anyone could have made it first).
    let (user_dir, _) = dir.rsplit_once('/').ok_or_else(|| JobError::Invalid(format!("{dir}: no parent")))?;
    let user = user_dir.rsplit('/').next().unwrap_or_default();
    let private = tarn_client::MkdirOptions { mode: 0o700, ..Default::default() };
    match nn.mkdir_exclusive(user_dir, &private).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyOwned | ErrorKind::AlreadyExists) => {
            let st =
                nn.get_file_info(user_dir, false).await.map_err(JobError::cluster(format!("look up {user_dir}")))?;
            match st {
                Some(st) if st.owner == user && st.is_dir() && st.mode & 0o077 == 0 => {}
                Some(st) => {
                    return Err(JobError::Invalid(format!(
                        "{user_dir} belongs to {} with mode {:o}: it must be {user}'s own, 0700 \
                         (an administrator can remove it)",
                        st.owner,
                        st.mode & 0o7777
                    )))
                }
                None => return Err(JobError::Invalid(format!("{user_dir} vanished"))),
            }
        }
        Err(e) => return Err(JobError::Cluster { what: format!("make {user_dir}"), source: e }),
    }
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
        nn.set_attributes(&path, SetAttributes { mode: Some(0o600), ..Default::default() })
            .await
            .map_err(JobError::cluster(format!("chmod 600 {path}")))?;
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
    spec.check_shape()?;
    debug_assert!(dir.starts_with(JOBS_DIR));
    let tls = JobTls::generate(app_id)?;
    write_job_files(&nn, dir, spec, &tls).await?;
    let stores = TarnStores::new(nn.clone());
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let (scheduler, addr, jobs) =
        start_scheduler(&tls, stores.clone(), app_id, &opts.node_host, cancel.clone()).await?;
    let advertised = format!("{}:{}", opts.node_host, addr.port());
    tracing::info!(app = %app_id, scheduler = %advertised, "Ballista scheduler serving");

    // The executors, kept running until the job ends.
    let failed = Arc::new(Mutex::new(None::<String>));
    let shared = Arc::new(Mutex::new(JobProgress { statements: spec.statements()?.len(), ..Default::default() }));
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
        shared: shared.clone(),
    };
    let pool_task = tokio::spawn(pool.run(cancel.clone()));
    let reporter = Reporter {
        nn: nn.clone(),
        dir: dir.to_string(),
        scheduler: scheduler.clone(),
        shared: shared.clone(),
        started: std::time::Instant::now(),
    };
    let reporter = tokio::spawn(reporter.run(cancel.clone()));

    // The statements, through a Ballista session against our own scheduler.
    let state = session_state(stores, session_config(Some(&tls)))?
        .upgrade_for_ballista(format!("https://127.0.0.1:{}", addr.port()))?;
    // `SELECT * FROM 's3://bucket/path/'`: paths as tables, as in DataFusion's CLI.
    let ctx = SessionContext::new_with_state(state).enable_url_table();
    let run = run_statements(&ctx, spec, nn.clone(), job, &shared, jobs.as_ref());
    let out = tokio::select! {
        r = run => r,
        r = pool_task => match r {
            Ok(()) => Err(JobError::Run(failed.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| "the executors stopped".into()))),
            Err(e) => Err(JobError::Run(format!("the executor pool: {e}"))),
        },
    };
    cancel.cancel();
    // Its final counts, before the application ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
    // What this attempt staged and did not publish (it failed, or a run was not trusted).
    if let Err(e) = nn.delete(&format!("{dir}/{STAGING}/a{}", job.attempt), true, None).await {
        tracing::warn!(error = %e, "could not remove the job's staging directory");
    }
    out
}

/// Runs of one statement (the first and the ones after a lost executor) before the job fails.
const MAX_STATEMENT_RUNS: u32 = 3;

/// Stages run again, summed over the Ballista jobs that started after `before` was taken.
async fn stages_run_again(jobs: &dyn JobState, before: &std::collections::HashSet<ballista_core::JobId>) -> usize {
    let mut n = 0;
    for id in jobs.get_all_jobs().await.unwrap_or_default().difference(before) {
        if let Ok(Some(graph)) = jobs.get_execution_graph(id).await {
            n += graph.stages().values().map(stage_attempt).sum::<usize>();
        }
    }
    n
}

/// Where a job's outputs are staged, in its directory (see [`crate::commit`]):
/// `staging/a<attempt>/s<statement>r<run>/`.
const STAGING: &str = "staging";

async fn run_statements(
    ctx: &SessionContext,
    spec: &JobSpec,
    nn: Arc<NamenodeClient>,
    job: &JobCtx,
    shared: &Mutex<JobProgress>,
    jobs: &dyn JobState,
) -> Result<String> {
    let stmts = spec.statements()?;
    let n = stmts.len();
    let staging = format!("{}/{STAGING}", job.dir);
    let mut outputs = Vec::new();
    let mut last: Option<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>)> = None;
    for (i, stmt) in stmts.into_iter().enumerate() {
        let which = if n == 1 { String::new() } else { format!("statement {} of {n}: ", i + 1) };
        shared.lock().unwrap_or_else(|p| p.into_inner()).statement = i + 1;
        let plan = ctx.state().statement_to_plan(stmt).await.map_err(|e| JobError::Plan(format!("{which}{e}")))?;
        let ddl = matches!(plan, LogicalPlan::Ddl(_));
        // What may run again: a query, or a COPY into the cluster (staged). An INSERT or a
        // COPY elsewhere writes in place and would write twice.
        let writes_in_place = matches!(plan, LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_));
        let mut run = 0u32;
        let (schema, batches) = loop {
            run += 1;
            // Each run of a COPY writes a staging path of its own: a straggler of an
            // earlier run writes nowhere this run publishes.
            let mut plan = plan.clone();
            let mut output = None;
            if let LogicalPlan::Copy(copy) = &mut plan {
                let staging = format!("{staging}/a{}/s{}r{run}", job.attempt, i + 1);
                if let Some(o) = crate::commit::stage(copy, &staging, &job.app_id, i + 1)? {
                    crate::commit::check_target(&nn, &o.target, Some(&o.tag))
                        .await
                        .map_err(|e| JobError::Plan(format!("{which}{e}")))?;
                    output = Some(o);
                }
            }
            let rerunnable = !writes_in_place || output.is_some();
            let before = jobs.get_all_jobs().await.unwrap_or_default();
            let lost_before = shared.lock().unwrap_or_else(|p| p.into_inner()).executors_lost;
            let df = ctx.execute_logical_plan(plan).await.map_err(|e| JobError::Run(format!("{which}{e}")))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.map_err(|e| JobError::Run(format!("{which}{e}")))?;
            // Ballista's recovery of a lost executor's map output can count rows twice
            // (a stage rolled back and run again while its first run's output stays
            // registered: seen here as inflated sums after a worker's SIGKILL), and a
            // writing task run again after its executor was lost leaves the files its
            // first run finished. Rows of a run that ran any stage again, or lost an
            // executor, are not trusted: the statement runs again.
            let rerun = stages_run_again(jobs, &before).await;
            let lost = shared.lock().unwrap_or_else(|p| p.into_inner()).executors_lost - lost_before;
            if rerun == 0 && lost == 0 {
                outputs.extend(output);
                break (schema, batches);
            }
            if !rerunnable {
                return Err(JobError::Run(format!(
                    "{which}an executor was lost while it wrote in place: run the job again \
                     (only queries and COPY into the cluster are run again by the job)"
                )));
            }
            if run >= MAX_STATEMENT_RUNS {
                return Err(JobError::Run(format!(
                    "{which}executors were lost in each of {MAX_STATEMENT_RUNS} runs of the statement"
                )));
            }
            tracing::warn!(
                statement = i + 1,
                stages = rerun,
                executors_lost = lost,
                "an executor was lost or stages were run again: running the statement again"
            );
            shared.lock().unwrap_or_else(|p| p.into_inner()).statement_reruns += 1;
        };
        if !ddl {
            last = Some((schema, batches));
        }
    }
    // Every statement succeeded: the outputs appear, each in one step, once every target
    // is still free (a target taken meanwhile fails the job before anything appears).
    for o in &outputs {
        crate::commit::check_target(&nn, &o.target, Some(&o.tag)).await?;
    }
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
) -> Result<(Scheduler, SocketAddr, Arc<dyn JobState>)> {
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
    let jobs = cluster.job_state();
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
    Ok((scheduler, addr, jobs))
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
        "--overhead-mib".into(),
        spec.overhead_mib.to_string(),
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
    /// Where it counts executors running and lost.
    shared: Arc<Mutex<JobProgress>>,
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
            self.shared.lock().unwrap_or_else(|p| p.into_inner()).executors = running.len();
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
                self.shared.lock().unwrap_or_else(|p| p.into_inner()).executors_lost += 1;
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

/// Writes the job's progress into its directory whenever it changes.
struct Reporter {
    nn: Arc<NamenodeClient>,
    dir: String,
    scheduler: Scheduler,
    shared: Arc<Mutex<JobProgress>>,
    started: std::time::Instant,
}

impl Reporter {
    async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut written = JobProgress::default();
        // Stage attempts seen per Ballista job (a finished job leaves the running cache).
        let mut retries: std::collections::HashMap<String, usize> = Default::default();
        loop {
            // The last look is after the job's end: its final counts are kept.
            let last = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tick.tick() => false,
            };
            let tm = &self.scheduler.state.task_manager;
            let (mut stages, mut done) = (0, 0);
            for j in tm.get_all_jobs().await.unwrap_or_default() {
                stages += j.num_stages;
                done += j.completed_stages;
            }
            for (id, cache) in tm.get_running_job_cache().iter() {
                let graph = cache.execution_graph.read().await;
                let n: usize = graph.stages().values().map(stage_attempt).sum();
                let seen = retries.entry(id.to_string()).or_default();
                *seen = (*seen).max(n);
            }
            let mut p = self.shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
            p.stages = stages;
            p.stages_done = done;
            p.stage_retries = retries.values().sum();
            let changed =
                JobProgress { elapsed_ms: 0, ..p.clone() } != JobProgress { elapsed_ms: 0, ..written.clone() };
            if !changed {
                if last {
                    return;
                }
                continue;
            }
            p.elapsed_ms = self.started.elapsed().as_millis() as u64;
            let json = serde_json::to_vec(&p).expect("progress serializes");
            let attrs = SetAttributes {
                set_xattrs: std::collections::BTreeMap::from([(PROGRESS_XATTR.to_string(), json)]),
                ..Default::default()
            };
            match self.nn.set_attributes(&self.dir, attrs).await {
                Ok(_) => written = p,
                Err(e) => tracing::debug!(error = %e, "could not write the job's progress"),
            }
            if last {
                return;
            }
        }
    }
}

/// How many times a stage was run again.
fn stage_attempt(s: &ballista_scheduler::state::execution_stage::ExecutionStage) -> usize {
    use ballista_scheduler::state::execution_stage::ExecutionStage as S;
    match s {
        S::UnResolved(x) => x.stage_attempt_num,
        S::Resolved(x) => x.stage_attempt_num,
        S::Running(x) => x.stage_attempt_num,
        S::Successful(x) => x.stage_attempt_num,
        S::Failed(x) => x.stage_attempt_num,
    }
}
