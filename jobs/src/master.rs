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
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
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
use tarn_proto::jobs::StageProgress;
use tokio_util::sync::CancellationToken;

use crate::spec::{session_config, session_state, JobSpec};
use crate::stores::TarnStores;
use crate::tls::{JobTls, CA_FILE, CERT_FILE, KEY_FILE};
use crate::{job_dir, JobError, Result, JOBS_DIR};

/// Executor containers that may fail (each is replaced) before the job fails.
const MAX_EXECUTOR_FAILURES: u32 = 8;
/// Executor failures further apart than this are not counted together.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);
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
    let outcome = match prepare_and_run(&rm, nn.clone(), &spec, &opts, job).await {
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
    crate::own_private_dir(nn, user_dir, user).await?;
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
#[derive(Clone)]
pub(crate) struct JobCtx {
    pub(crate) app_id: String,
    pub(crate) attempt: u32,
    pub(crate) dir: String,
}

async fn prepare_and_run(
    rm: &Arc<RmClient>,
    nn: Arc<NamenodeClient>,
    spec: &JobSpec,
    opts: &MasterOptions,
    job: JobCtx,
) -> Result<String> {
    let (app_id, dir) = (job.app_id.clone(), job.dir.clone());
    spec.check_shape()?;
    debug_assert!(dir.starts_with(JOBS_DIR));
    let tls = JobTls::generate(&app_id)?;
    write_job_files(&nn, &dir, spec, &tls).await?;
    let stores = TarnStores::new(nn.clone());
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let sched = start_scheduler(&tls, stores.clone(), &app_id, &opts.node_host).await?;
    let port = sched.addr.port();
    let advertised = format!("{}:{port}", opts.node_host);
    let statements = if spec.session.is_some() { 0 } else { spec.statements()?.len() };

    // The executors, kept running until the job ends (a session's grow and shrink).
    let failed = Arc::new(Mutex::new(None::<String>));
    let shared = Arc::new(Mutex::new(JobProgress { statements, ..Default::default() }));
    let demand = spec.session.as_ref().map(|s| Arc::new(Demand::new(s.min_executors, s.idle_timeout_s)));
    let pool = ExecutorPool {
        rm: rm.clone(),
        spec: spec.clone(),
        command: executor_command(opts, &advertised, spec),
        files: [CA_FILE, CERT_FILE, KEY_FILE]
            .iter()
            .map(|f| LocalFile { path: format!("{dir}/tls/{f}"), name: f.to_string(), executable: false })
            .collect(),
        scheduler: sched.scheduler.clone(),
        failed: failed.clone(),
        shared: shared.clone(),
        demand: demand.clone(),
    };
    let pool_task = tokio::spawn(pool.run(cancel.clone()));
    let reporter = Reporter {
        nn: nn.clone(),
        dir: dir.clone(),
        scheduler: sched.scheduler.clone(),
        shared: shared.clone(),
        started: std::time::Instant::now(),
    };
    let reporter = tokio::spawn(reporter.run(cancel.clone()));

    let engine = Engine {
        nn: nn.clone(),
        stores,
        tls: tls.clone(),
        scheduler_url: format!("https://127.0.0.1:{port}"),
        partitions: spec.partitions(),
        scheduler: sched.scheduler.clone(),
        jobs: sched.jobs.clone(),
        shared: shared.clone(),
        job,
    };
    let stopped = CancellationToken::new();
    let demand_wait = demand.clone().unwrap_or_else(|| Arc::new(Demand::new(0, 0)));
    let session = demand.map(|d| crate::session::SessionService::new(engine.clone(), d, stopped.clone()));
    serve(sched, &tls, session, cancel.clone())?;
    tracing::info!(app = %app_id, scheduler = %advertised, "Ballista scheduler serving");

    let work = async {
        match &spec.session {
            Some(s) => {
                crate::session::advertise(&nn, &dir, &advertised, engine.job.attempt).await?;
                tracing::info!(app = %app_id, session = %s.name, address = %advertised, "session open");
                let idle_stop = async {
                    if s.stop_after_idle_s == 0 {
                        return std::future::pending().await;
                    }
                    let bound = Duration::from_secs(s.stop_after_idle_s);
                    loop {
                        match demand_wait.idle_for() {
                            Some(d) if d >= bound => return,
                            Some(d) => tokio::time::sleep(bound - d).await,
                            None => {
                                demand_wait.wait_idle(bound).await;
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = stopped.cancelled() => {}
                    _ = idle_stop => {
                        tracing::info!(app = %app_id, idle_s = s.stop_after_idle_s, "the session was idle: it ends");
                        stopped.cancel();
                    }
                }
                // Jobs still running finish first (new ones are refused meanwhile).
                if !demand_wait.wait_idle(STOP_WAIT).await {
                    tracing::warn!(app = %app_id, "jobs still ran {} s after the session was stopped", STOP_WAIT.as_secs());
                }
                Ok("the session was stopped".to_string())
            }
            None => {
                let stmts = spec.statements()?.into_iter().map(Stmt::Sql).collect();
                let ctx = engine.context(&app_id)?;
                let staging = format!("{dir}/{STAGING}/a{}", engine.job.attempt);
                let ran =
                    engine.run_statements(&ctx, stmts, &app_id, &staging, &shared, &CancellationToken::new()).await?;
                let Some((schema, batches)) = ran.last else { return Ok("done (no query)".into()) };
                let kept = crate::result::write(nn.clone(), &dir, schema, &batches).await?;
                Ok(if kept.dropped > 0 {
                    format!("{} rows ({} kept as the result)", kept.rows + kept.dropped, kept.rows)
                } else {
                    format!("{} rows", kept.rows)
                })
            }
        }
    };
    let out = tokio::select! {
        r = work => r,
        r = pool_task => match r {
            Ok(()) => Err(JobError::Run(failed.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| "the executors stopped".into()))),
            Err(e) => Err(JobError::Run(format!("the executor pool: {e}"))),
        },
    };
    cancel.cancel();
    // Its final counts, before the application ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
    // What this attempt staged and did not publish (it failed, or a run was not trusted).
    if let Err(e) = nn.delete(&format!("{dir}/{STAGING}/a{}", engine.job.attempt), true, None).await {
        tracing::warn!(error = %e, "could not remove the job's staging directory");
    }
    out
}

/// How long a stopped session waits for its running jobs.
const STOP_WAIT: Duration = Duration::from_secs(600);

/// Runs of one statement (the first and the ones after a lost executor) before the job fails.
const MAX_STATEMENT_RUNS: u32 = 3;

/// Where a job's outputs are staged, in its directory (see [`crate::commit`]):
/// `staging/a<attempt>/[<run>/]s<statement>r<run>/`.
pub(crate) const STAGING: &str = "staging";

/// One statement of a job: SQL, or a plan made elsewhere (a programmatic client's).
pub(crate) enum Stmt {
    Sql(datafusion::sql::parser::Statement),
    Plan(LogicalPlan),
}

impl Stmt {
    /// Whether it only reads (a query): nothing is written if it stops midway.
    pub(crate) fn is_query(&self) -> bool {
        use datafusion::sql::parser::Statement as Df;
        use datafusion::sql::sqlparser::ast::Statement as Sql;
        match self {
            Stmt::Sql(Df::Statement(s)) => matches!(**s, Sql::Query(_)),
            Stmt::Sql(_) => false,
            Stmt::Plan(p) => !matches!(p, LogicalPlan::Copy(_) | LogicalPlan::Dml(_) | LogicalPlan::Ddl(_)),
        }
    }
}

/// What a job's statements left: the last query's rows.
pub(crate) struct Ran {
    pub(crate) last: Option<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>)>,
}

/// What runs jobs in an application: its scheduler, its executors' counts, its record.
#[derive(Clone)]
pub(crate) struct Engine {
    pub(crate) nn: Arc<NamenodeClient>,
    stores: Arc<TarnStores>,
    tls: JobTls,
    /// Where this process reaches its own scheduler.
    scheduler_url: String,
    pub(crate) scheduler: Scheduler,
    jobs: Arc<dyn JobState>,
    /// The application's counts (executors running and lost).
    pub(crate) shared: Arc<Mutex<JobProgress>>,
    pub(crate) job: JobCtx,
    /// DataFusion's target partitions for the job's queries (see [`JobSpec::partitions`]).
    partitions: usize,
}

impl Engine {
    /// A fresh Ballista session against the application's scheduler; its Ballista jobs
    /// are named `label`.
    pub(crate) fn context(&self, label: &str) -> Result<SessionContext> {
        let config =
            session_config(Some(&self.tls)).with_ballista_job_name(label).with_target_partitions(self.partitions);
        let mut state = session_state(self.stores.clone(), config)?.upgrade_for_ballista(self.scheduler_url.clone())?;
        // Ballista's upgrade sets its own function list: Spark's go back in.
        crate::functions::register(&mut state)?;
        // `SELECT * FROM 's3://bucket/path/'`: paths as tables, as in DataFusion's CLI.
        let ctx = SessionContext::new_with_state(state).enable_url_table();
        // The catalog's tables (`default.t`, or `t` of the default database).
        crate::catalog::register(&ctx, self.stores.namenode().clone(), crate::catalog::DEFAULT_DATABASE)?;
        Ok(ctx)
    }

    /// Each stage of the Ballista jobs named `label`, in the order they started: running
    /// jobs from the scheduler's cache, finished ones from its job state.
    pub(crate) async fn stage_progress(&self, label: &str) -> Vec<StageProgress> {
        let tm = &self.scheduler.state.task_manager;
        let running = tm.get_running_job_cache();
        let mut jobs: Vec<(u64, Vec<StageProgress>)> = Vec::new();
        for info in running.values() {
            let g = info.execution_graph.read().await;
            if g.job_name() == label {
                jobs.push((g.start_time(), stages_of(g.as_ref())));
            }
        }
        for j in tm.get_all_jobs().await.unwrap_or_default() {
            if j.job_name != label || running.contains_key(&j.job_id) {
                continue;
            }
            if let Ok(Some(g)) = self.jobs.get_execution_graph(&j.job_id).await {
                jobs.push((g.start_time(), stages_of(g.as_ref())));
            }
        }
        jobs.sort_by_key(|(start, _)| *start);
        let mut out: Vec<StageProgress> = jobs.into_iter().flat_map(|(_, s)| s).collect();
        for (i, s) in out.iter_mut().enumerate() {
            s.stage = i as u32;
        }
        out
    }

    /// Cancels the running Ballista jobs named `label` (their tasks stop, their client's
    /// collect fails).
    pub(crate) async fn cancel(&self, label: &str) {
        let running = self.scheduler.state.task_manager.get_running_job_cache();
        for (id, info) in running.iter() {
            if info.execution_graph.read().await.job_name() == label {
                if let Err(e) = self.scheduler.cancel_job(id.clone()).await {
                    tracing::warn!(job = %label, ballista_job = %id, error = %e, "could not cancel a Ballista job");
                }
            }
        }
    }

    /// Stages run again, summed over the Ballista jobs named `label` that started after
    /// `before` was taken.
    async fn stages_run_again(&self, label: &str, before: &std::collections::HashSet<ballista_core::JobId>) -> usize {
        let named: std::collections::HashSet<_> = self
            .scheduler
            .state
            .task_manager
            .get_all_jobs()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j.job_name == label)
            .map(|j| j.job_id)
            .collect();
        let mut n = 0;
        for id in self.jobs.get_all_jobs().await.unwrap_or_default().difference(before) {
            if !named.contains(id) {
                continue;
            }
            if let Ok(Some(graph)) = self.jobs.get_execution_graph(id).await {
                n += graph.stages().values().map(stage_attempt).sum::<usize>();
            }
        }
        n
    }

    /// Runs `stmts` in order in `ctx` (whose Ballista jobs are named `label`), staging
    /// COPY outputs under `staging` and publishing them once all succeeded; `progress`
    /// gets the statement running and the statements run again. Once `cancelled`, no
    /// statement starts and nothing is published (a publication under way finishes).
    pub(crate) async fn run_statements(
        &self,
        ctx: &SessionContext,
        stmts: Vec<Stmt>,
        label: &str,
        staging: &str,
        progress: &Mutex<JobProgress>,
        cancelled: &CancellationToken,
    ) -> Result<Ran> {
        let stop = || JobError::Run("the query was cancelled: its client left".into());
        let nn = &self.nn;
        let n = stmts.len();
        let mut outputs = Vec::new();
        let mut last = None;
        for (i, stmt) in stmts.into_iter().enumerate() {
            let which = if n == 1 { String::new() } else { format!("statement {} of {n}: ", i + 1) };
            progress.lock().unwrap_or_else(|p| p.into_inner()).statement = i + 1;
            let plan = match stmt {
                Stmt::Sql(stmt) => {
                    ctx.state().statement_to_plan(stmt).await.map_err(|e| JobError::Plan(format!("{which}{e}")))?
                }
                Stmt::Plan(plan) => plan,
            };
            let ddl = matches!(plan, LogicalPlan::Ddl(_));
            // What may run again: a query, or a COPY into the cluster (staged). An INSERT or
            // a COPY elsewhere writes in place and would write twice.
            let writes_in_place = matches!(plan, LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_));
            let mut run = 0u32;
            let (schema, batches) = loop {
                if cancelled.is_cancelled() {
                    return Err(stop());
                }
                run += 1;
                // Each run of a COPY writes a staging path of its own: a straggler of an
                // earlier run writes nowhere this run publishes.
                let mut plan = plan.clone();
                let mut output = None;
                if let LogicalPlan::Copy(copy) = &mut plan {
                    let staging = format!("{staging}/s{}r{run}", i + 1);
                    if let Some(o) = crate::commit::stage(copy, &staging, label, i + 1)? {
                        crate::commit::check_output(nn, &o).await.map_err(|e| JobError::Plan(format!("{which}{e}")))?;
                        output = Some(o);
                    }
                }
                let rerunnable = !writes_in_place || output.is_some();
                let before = self.jobs.get_all_jobs().await.unwrap_or_default();
                let lost_before = self.shared.lock().unwrap_or_else(|p| p.into_inner()).executors_lost;
                let df = ctx.execute_logical_plan(plan).await.map_err(|e| JobError::Run(format!("{which}{e}")))?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await.map_err(|e| JobError::Run(format!("{which}{e}")))?;
                // Ballista's recovery of a lost executor's map output can count rows twice
                // (a stage rolled back and run again while its first run's output stays
                // registered: seen here as inflated sums after a worker's SIGKILL), and a
                // writing task run again after its executor was lost leaves the files its
                // first run finished. Rows of a run that ran any stage again, or lost an
                // executor, are not trusted: the statement runs again.
                let rerun = self.stages_run_again(label, &before).await;
                let lost = self.shared.lock().unwrap_or_else(|p| p.into_inner()).executors_lost - lost_before;
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
                    job = %label,
                    statement = i + 1,
                    stages = rerun,
                    executors_lost = lost,
                    "an executor was lost or stages were run again: running the statement again"
                );
                progress.lock().unwrap_or_else(|p| p.into_inner()).statement_reruns += 1;
            };
            if !ddl {
                last = Some((schema, batches));
            }
        }
        // Every statement succeeded: the outputs appear, each in one step, once every
        // target is still free (a target taken meanwhile fails the job before anything
        // appears).
        if cancelled.is_cancelled() {
            return Err(stop());
        }
        for o in &outputs {
            crate::commit::check_output(nn, o).await?;
        }
        for o in &outputs {
            crate::commit::publish(nn, o).await?;
        }
        Ok(Ran { last })
    }
}

/// The scheduler, not yet served.
pub(crate) struct Sched {
    scheduler: Scheduler,
    listener: tokio::net::TcpListener,
    pub(crate) addr: SocketAddr,
    jobs: Arc<dyn JobState>,
    max_encoding: usize,
    max_decoding: usize,
}

/// Makes the Ballista scheduler, on a port of every interface (not yet served).
pub(crate) async fn start_scheduler(
    tls: &JobTls,
    stores: Arc<TarnStores>,
    app_id: &str,
    node_host: &str,
) -> Result<Sched> {
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
        // Finished jobs' graphs are looked at right after they end (the rerun rule) and
        // then only cost memory and time in a long-lived session.
        finished_job_state_clean_up_interval_seconds: 300,
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_memory(config.scheduler_id.clone(), builder, producer);
    let jobs = cluster.job_state();
    let scheduler: Scheduler = create_scheduler(cluster, Arc::new(config.clone()))
        .await
        .map_err(|e| JobError::Run(format!("start the Ballista scheduler: {e}")))?;
    Ok(Sched {
        scheduler,
        listener,
        addr,
        jobs,
        max_encoding: config.grpc_server_max_encoding_message_size as usize,
        max_decoding: config.grpc_server_max_decoding_message_size as usize,
    })
}

/// Serves the scheduler (and a session's service beside it) on the job's TLS until
/// `cancel`.
pub(crate) fn serve(
    sched: Sched,
    tls: &JobTls,
    session: Option<crate::session::SessionService>,
    cancel: CancellationToken,
) -> Result<()> {
    let service = SchedulerGrpcServer::new(sched.scheduler.clone())
        .max_encoding_message_size(sched.max_encoding)
        .max_decoding_message_size(sched.max_decoding);
    let server = tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .map_err(|e| JobError::Tls(format!("the scheduler's TLS: {e}")))?
        .add_service(service)
        .add_optional_service(session.map(crate::session::server));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(sched.listener);
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming_shutdown(incoming, cancel.cancelled_owned()).await {
            tracing::warn!(error = %e, "the Ballista scheduler's server stopped");
        }
    });
    Ok(())
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

/// When a session wants executors: while jobs run (or ran less than the idle timeout
/// ago) as many as their waiting tasks need, up to the spec's `executors`; otherwise its
/// least (Spark's dynamic allocation). Executors are released only when no job has run
/// for the idle timeout, so no job loses map output it still needs.
pub(crate) struct Demand {
    min: u32,
    idle: Duration,
    /// Jobs running, and when the last one ended.
    active: Mutex<(usize, std::time::Instant)>,
    /// Told whenever a job ends.
    ended: tokio::sync::Notify,
}

impl Demand {
    pub(crate) fn new(min: u32, idle_timeout_s: u64) -> Demand {
        Demand {
            min,
            idle: Duration::from_secs(idle_timeout_s),
            active: Mutex::new((0, std::time::Instant::now())),
            ended: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, std::time::Instant)> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job started; the returned guard marks its end when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> DemandGuard {
        self.lock().0 += 1;
        DemandGuard(self.clone())
    }

    /// Executors wanted now, with `running` containers of which `registered` have
    /// executors the scheduler knows (the others are starting, and will take tasks), and
    /// `waiting` tasks that no executor has taken, each executor running `vcores` tasks,
    /// at most `max`.
    fn want(&self, running: u32, registered: u32, waiting: usize, vcores: u32, max: u32) -> u32 {
        let (jobs, ended) = *self.lock();
        let busy = jobs > 0 || ended.elapsed() < self.idle;
        let want = if !busy {
            self.min
        } else if waiting > 0 {
            running.max(registered + (waiting as u32).div_ceil(vcores.max(1)))
        } else {
            running
        };
        want.clamp(self.min, max.max(self.min))
    }

    /// How long no job has run (`None` while one runs).
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        let (jobs, ended) = *self.lock();
        (jobs == 0).then(|| ended.elapsed())
    }

    /// Waits until no job runs, at most `bound`; whether none does.
    pub(crate) async fn wait_idle(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.lock().0 == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.lock().0 == 0;
            }
        }
    }
}

/// Marks a session's job ended when dropped.
pub(crate) struct DemandGuard(Arc<Demand>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        {
            let mut a = self.0.lock();
            a.0 = a.0.saturating_sub(1);
            a.1 = std::time::Instant::now();
        }
        self.0.ended.notify_waiters();
    }
}

/// Keeps the job's executor containers running until cancelled: `spec.executors`, or
/// for a session as many as its [`Demand`] wants.
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
    /// A session's demand (a job's executors are fixed).
    demand: Option<Arc<Demand>>,
}

impl ExecutorPool {
    async fn run(self, cancel: CancellationToken) {
        if let Err(why) = self.keep(cancel).await {
            tracing::warn!(%why, "the job's executors failed");
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    }

    async fn keep(&self, cancel: CancellationToken) -> std::result::Result<(), String> {
        // Executors released for want of demand leave this map first: their end is no loss.
        let mut running: BTreeMap<String, String> = BTreeMap::new();
        let mut released = std::collections::BTreeSet::new();
        let mut failures = 0u32;
        let mut last_failure = std::time::Instant::now();
        let mut response_id = 0u64;
        let mut launch: Vec<(String, ContainerSpec)> = Vec::new();
        let mut release: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(ALLOCATE_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let want = match &self.demand {
                None => self.spec.executors,
                Some(d) => {
                    let waiting = self.waiting_tasks().await;
                    let em = &self.scheduler.state.executor_manager;
                    let registered = running.keys().filter(|c| em.get_executor_hearbeat(c).is_some()).count();
                    d.want(running.len() as u32, registered as u32, waiting, self.spec.vcores, self.spec.executors)
                }
            };
            // Idle executors above the session's least go (the newest first).
            while running.len() as u32 > want {
                let Some((cid, _)) = running.pop_last() else { break };
                tracing::info!(container = %cid, "releasing an idle executor");
                self.stopped(&cid, "released: the session was idle").await;
                released.insert(cid.clone());
                release.push(cid);
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
                    // A released executor may have polled again between its release and
                    // its end (and been taken back): the scheduler hears of the end too.
                    if released.remove(&st.container_id) {
                        self.stopped(&st.container_id, "released: the session was idle").await;
                    }
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
                    // A session lives for days: only failures close together end it.
                    if last_failure.elapsed() > FAILURE_WINDOW {
                        failures = 0;
                    }
                    last_failure = std::time::Instant::now();
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

    /// Tasks of running Ballista jobs that wait for an executor.
    async fn waiting_tasks(&self) -> usize {
        let tm = &self.scheduler.state.task_manager;
        let mut n = 0;
        for id in tm.get_running_job_cache().keys() {
            n += tm.get_available_task_count(id).await.unwrap_or(0);
        }
        n
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

/// The stages of one Ballista job, by stage id.
fn stages_of(g: &dyn ballista_scheduler::state::execution_graph::ExecutionGraph) -> Vec<StageProgress> {
    use ballista_scheduler::state::execution_stage::ExecutionStage as S;
    let bytes = |m: &[datafusion::physical_plan::metrics::MetricsSet]| -> u64 {
        m.iter().filter_map(|m| m.sum_by_name("bytes_scanned")).map(|v| v.as_usize() as u64).sum()
    };
    let mut ids: Vec<usize> = g.stages().keys().copied().collect();
    ids.sort_unstable();
    ids.iter()
        .map(|id| {
            let (tasks, tasks_done, tasks_running, bytes_read, done) = match &g.stages()[id] {
                S::UnResolved(_) => (0, 0, 0, 0, false),
                S::Resolved(x) => (x.partitions, 0, 0, 0, false),
                S::Running(x) => {
                    let m = x.stage_metrics.as_deref().unwrap_or_default();
                    (x.partitions, x.successful_tasks(), x.running_tasks().len(), bytes(m), false)
                }
                S::Successful(x) => (x.partitions, x.partitions, 0, bytes(&x.stage_metrics), true),
                S::Failed(x) => (x.partitions, 0, 0, 0, false),
            };
            StageProgress {
                stage: 0,
                tasks: tasks as u32,
                tasks_done: tasks_done as u32,
                tasks_running: tasks_running as u32,
                bytes_read,
                done,
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_grows_while_tasks_wait_and_shrinks_only_when_idle() {
        let d = Arc::new(Demand::new(1, 0));
        // Idle (a timeout of 0): its least, whatever runs.
        assert_eq!(d.want(3, 3, 0, 1, 4), 1);
        let job = d.begin();
        // 5 tasks waiting, 2 cores an executor: 3 more, but at most 4 in all.
        assert_eq!(d.want(1, 1, 5, 2, 4), 4);
        assert_eq!(d.want(1, 1, 2, 2, 4), 2);
        // One task waits while the executor asked for it starts: no more are asked.
        assert_eq!(d.want(2, 1, 1, 1, 8), 2);
        assert_eq!(d.want(2, 1, 2, 1, 8), 3);
        // Nothing waits while the job runs: what runs stays (map output lives there).
        assert_eq!(d.want(3, 3, 0, 2, 4), 3);
        drop(job);
        assert_eq!(d.want(3, 3, 0, 2, 4), 1);

        // Within the idle timeout after a job, nothing is released.
        let d = Arc::new(Demand::new(0, 3600));
        drop(d.begin());
        assert_eq!(d.want(2, 2, 0, 1, 4), 2);
        // A least above the most is the least.
        assert_eq!(Demand::new(2, 0).want(0, 0, 0, 1, 1), 2);
    }

    #[tokio::test]
    async fn a_stopped_session_waits_for_its_jobs() {
        let d = Arc::new(Demand::new(0, 0));
        assert!(d.wait_idle(Duration::from_millis(1)).await, "no job runs");
        let job = d.begin();
        assert!(!d.wait_idle(Duration::from_millis(20)).await, "a job runs");
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait_idle(Duration::from_secs(60)).await }
        });
        drop(job);
        assert!(waiter.await.unwrap(), "told of the job's end");
    }
}
