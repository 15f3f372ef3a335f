//! An executor container's entry point (`tarn job executor`): a Ballista executor in pull
//! mode that asks the job's scheduler for tasks, reads and writes the cluster's store as
//! the job's user, and serves its shuffle output over the job's mutual TLS. One executor
//! per container process: Ballista's executor process handles SIGTERM itself (it tells
//! the scheduler it is leaving), and the container's end is its end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::error::BallistaError;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::ArrowFlightServerProvider;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use tarn_client::NamenodeClient;

use crate::functions::spark_functions;
use crate::spec::session_config;
use crate::stores::TarnStores;
use crate::tls::JobTls;
use crate::{JobError, Result};

/// What an executor's container keeps outside DataFusion's memory pool by default (the
/// process, its buffers, gRPC): the pool is the container's grant less this, so the
/// worker's memory check does not kill an executor that DataFusion thinks is within
/// bounds.
pub const OVERHEAD_MIB: u64 = 192;
/// Largest gRPC message an executor sends or takes (a shuffle batch).
const GRPC_MESSAGE_MAX: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The job's scheduler (`host:port`).
    pub scheduler: String,
    pub vcores: u32,
    /// The container's memory grant (MiB), and what of it stays outside the pool.
    pub memory_mib: u64,
    pub overhead_mib: u64,
    /// This node's address as other nodes reach it.
    pub node_host: String,
    /// The container's id, which is the executor's id in the scheduler.
    pub container_id: String,
    /// The container's directory (holds the job's TLS files; shuffle and spill go under
    /// `work/`).
    pub dir: PathBuf,
}

/// Runs the executor until the scheduler or a signal stops it.
pub async fn run(nn: Arc<NamenodeClient>, opts: ExecutorOptions) -> Result<()> {
    let tls = JobTls::load(&opts.dir)?;
    let (host, port) = opts
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| JobError::Invalid(format!("--scheduler {:?}: host:port expected", opts.scheduler)))?;
    let work = opts.dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| JobError::Io { what: format!("make {}", work.display()), source: e })?;
    let work_s = work.to_string_lossy().into_owned();
    // The shuffle service's port, bound now so that the executor registers it.
    let listener = std::net::TcpListener::bind("0.0.0.0:0")
        .map_err(|e| JobError::Io { what: "bind the shuffle service's port".into(), source: e })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| JobError::Io { what: "the shuffle service's port".into(), source: e })?;
    let flight_port =
        listener.local_addr().map_err(|e| JobError::Io { what: "the shuffle port".into(), source: e })?.port();
    let listener = Arc::new(Mutex::new(Some(listener)));
    let tls_s = tls.clone();
    let flight: Arc<ArrowFlightServerProvider> = Arc::new(move |work_dir, _addr, mut shutdown, _grpc| {
        let listener = listener.lock().unwrap_or_else(|p| p.into_inner()).take();
        let tls = tls_s.clone();
        tokio::spawn(async move {
            let listener =
                listener.ok_or_else(|| BallistaError::General("the shuffle service started twice".into()))?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            serve_shuffle(listener, &tls, work_dir, async move { shutdown.recv().await })
                .await
                .map_err(BallistaError::TonicError)
        })
    });
    let stores = TarnStores::new(nn);
    let temp = work_s.clone();
    let tls_c = tls.clone();
    let pool = opts.memory_mib.saturating_sub(opts.overhead_mib).max(16) << 20;
    let config = ExecutorProcessConfig {
        executor_id: opts.container_id.clone(),
        bind_host: "0.0.0.0".into(),
        external_host: Some(opts.node_host.clone()),
        port: flight_port,
        grpc_port: flight_port,
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.vcores as usize,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work_s),
        memory_pool_size: Some(pool),
        executor_heartbeat_interval_seconds: 5,
        grpc_max_decoding_message_size: GRPC_MESSAGE_MAX as u32,
        grpc_max_encoding_message_size: GRPC_MESSAGE_MAX as u32,
        override_runtime_producer: Some(Arc::new(move |_| {
            RuntimeEnvBuilder::new()
                .with_temp_file_path(temp.clone())
                .with_object_store_registry(stores.clone())
                .build_arc()
        })),
        override_config_producer: Some(Arc::new(move || session_config(Some(&tls_c)))),
        override_function_registry: Some(Arc::new(function_registry())),
        override_arrow_flight_service: Some(flight),
        override_create_grpc_client_endpoint: Some(tls.endpoint_override()),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(executor = %opts.container_id, scheduler = %opts.scheduler, shuffle_port = flight_port, "executor starting");
    start_executor_process(Arc::new(config)).await.map_err(|e| JobError::Run(format!("the executor: {e}")))
}

/// Serves the executor's shuffle output (Ballista's Flight service over `work_dir`) on
/// `listener`, to holders of the job's certificate only, until `shutdown`.
pub async fn serve_shuffle(
    listener: tokio::net::TcpListener,
    tls: &JobTls,
    work_dir: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::result::Result<(), tonic::transport::Error> {
    let service = arrow_flight::flight_service_server::FlightServiceServer::new(BallistaFlightService::new(work_dir))
        .max_decoding_message_size(GRPC_MESSAGE_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_MAX);
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())?
        .add_service(service)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
}

/// DataFusion's functions and Spark's (`spark_<name>`): the names a task's plan may call,
/// as the scheduler's sessions know them ([`crate::spec::session_state`]).
fn function_registry() -> ballista_core::registry::BallistaFunctionRegistry {
    // DataFusion's whole default set (Ballista's default lacks the nested functions:
    // `make_array`, ...), as the sessions that plan have it.
    let state = datafusion::execution::session_state::SessionStateBuilder::new().with_default_features().build();
    let mut r = ballista_core::registry::BallistaFunctionRegistry::from(&state);
    r.scalar_functions.extend(spark_functions().into_iter().map(|f| (f.name().to_string(), f)));
    r
}
