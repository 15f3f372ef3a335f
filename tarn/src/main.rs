//! `tarn`: one binary for every role of a Tarn cluster and every client command.
//!
//! Roles: `namenode`, `datanode`, `gateway` (S3), `up` (every role in one process). Clients: `fs`,
//! `admin`, `init`.
//! Only this crate parses command lines and configuration files; the role crates take
//! typed configuration.

mod admin_cmd;
mod app_cmd;
mod config;
mod creds;
mod demo;
mod demo_data;
mod fs_cmd;
mod job_cmd;
mod out;
mod s3_cmd;
mod shell_app;
mod transfer_cmd;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::TarnConfig;
use crate::out::outln;

/// mimalloc instead of glibc's allocator: block I/O allocates and frees megabyte buffers at
/// a high rate, which glibc serves with fresh mmaps (a page fault and a zeroed page per
/// 4 KiB); mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 0 success, 1 the operation failed, 2 bad usage, 69 cluster unreachable.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(name = "tarn", version, about = "Tarn: a self-hosted big-data platform (replicated file system, S3, jobs)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every role in one process (the embedded appliance), data under ./tarn-data.
    ///
    /// Example: `tarn up`, then in another shell `tarn demo`.
    Up(up::UpArgs),
    /// The seed's pipeline end to end: a month of a shop's data uploaded through S3, the
    /// seed's PySpark script and the shop's analyses through Spark Connect and as a SQL
    /// job, and a summary. Uses the appliance on --data-dir, or starts one for the run.
    /// Clears `s3://my-bucket/`'s demo data and outputs of an earlier run first.
    ///
    /// Example: `tarn demo --size-mb 50`
    Demo(demo::DemoArgs),
    /// Run the roles of one host in one process, each from its own configuration file: a
    /// master (namenode, resource manager, Spark Connect), a core node (datanode, worker),
    /// a task node (worker). Ctrl-C or SIGTERM stops them all.
    ///
    /// Example: `tarn node --namenode namenode-1.toml --resource-manager resource-manager-1.toml --connect connect-1.toml`
    Node(NodeArgs),
    /// Run a namenode (a member of the Raft group that keeps the namespace).
    ///
    /// Example: `tarn namenode --config /etc/tarn/namenode-1.toml`
    Namenode(NamenodeArgs),
    /// Run a datanode (stores block replicas on local disks).
    ///
    /// Example: `tarn datanode --config /etc/tarn/datanode.toml --data-dir /disk1 --data-dir /disk2`
    Datanode(DatanodeArgs),
    /// Run an S3 gateway (stateless; several may serve one cluster behind a load balancer).
    ///
    /// Example: `tarn gateway --config /etc/tarn/gateway.toml --listen 0.0.0.0:9000`
    Gateway(GatewayArgs),
    /// Run a Spark Connect endpoint (PySpark's thin client: `SPARK_REMOTE=sc://HOST:15002`);
    /// one on every master, as sessions continue on any of them.
    ///
    /// Example: `tarn connect --config /etc/tarn/master-1.toml --listen 0.0.0.0:15002`
    Connect(ConnectArgs),
    /// Run a resource manager (knows the cluster's workers; YARN's ResourceManager).
    ///
    /// Example: `tarn resource-manager --config /etc/tarn/rm.toml`
    ResourceManager(RmArgs),
    /// Run a worker: offers this node's cores and memory to the resource manager (YARN's
    /// NodeManager); `--label core` where a datanode runs beside it, `task` otherwise.
    ///
    /// Example: `tarn worker --config /etc/tarn/worker.toml --label task`
    Worker(WorkerArgs),
    /// The workers the resource manager knows: label, capacity, use, liveness (like
    /// `yarn node -list -all`).
    ///
    /// Example: `tarn workers`
    Workers(WorkersArgs),
    /// Applications on the resource manager: submit, status, kill (like `yarn application`).
    ///
    /// Example: `tarn app submit --wait -- /bin/sh -c 'echo hello from a container'`
    App(app_cmd::AppArgs),
    /// Distributed SQL jobs: DataFusion SQL over the cluster's files, run by Ballista in
    /// containers next to the data.
    ///
    /// Example: `tarn job submit --wait --sql "SELECT count(*) FROM 's3://my-bucket/orders/'"`
    Job(job_cmd::JobArgs),
    /// Write configuration files for a topology.
    ///
    /// Example: `tarn init --dir conf --namenodes 10.0.0.1:8020,10.0.0.2:8020,10.0.0.3:8020`
    Init(InitArgs),
    /// File system commands, in the spirit of `hdfs dfs`.
    Fs(fs_cmd::FsArgs),
    /// Cluster administration: group membership, snapshots, quotas.
    Admin(admin_cmd::AdminArgs),
    /// S3 access keys and bucket grants.
    ///
    /// Example: `tarn s3 keys create --user etl && tarn s3 grant my-bucket TK...`
    S3(s3_cmd::S3Args),
}

#[derive(clap::Args)]
struct NamenodeArgs {
    /// TOML configuration file (its `[namenode]` table).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `namenode.node_id`.
    #[arg(long)]
    node_id: Option<u64>,
    /// Overrides `namenode.listen` (host:port; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Overrides `namenode.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `namenode.initial_members`: comma-separated ID@HOST:PORT (ID@ for this node).
    #[arg(long, value_delimiter = ',')]
    initial_members: Option<Vec<String>>,
    /// Write the bound address to this file once serving (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Development only: plaintext, unauthenticated gRPC (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("roles").required(true).multiple(true)
    .args(["namenode", "datanode", "gateway", "resource_manager", "worker", "connect"])))]
struct NodeArgs {
    /// A namenode's configuration (as `tarn namenode --config`).
    #[arg(long)]
    namenode: Option<PathBuf>,
    /// A datanode's configuration.
    #[arg(long)]
    datanode: Option<PathBuf>,
    /// An S3 gateway's configuration.
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// A resource manager's configuration.
    #[arg(long)]
    resource_manager: Option<PathBuf>,
    /// A worker's configuration.
    #[arg(long)]
    worker: Option<PathBuf>,
    /// A Spark Connect endpoint's configuration.
    #[arg(long)]
    connect: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DatanodeArgs {
    /// TOML configuration file (its `[datanode]` table).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `datanode.data_dirs` (repeat for several disks).
    #[arg(long = "data-dir")]
    data_dirs: Vec<PathBuf>,
    /// Overrides `datanode.listen` (host:port; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Overrides `datanode.namenodes` (comma-separated host:port).
    #[arg(long, value_delimiter = ',')]
    namenodes: Option<Vec<String>>,
    /// Overrides `datanode.reserved_bytes`.
    #[arg(long)]
    reserved_bytes: Option<u64>,
    /// Write the bound address to this file once serving (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Development only: plaintext, unauthenticated gRPC (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
}

#[derive(clap::Args)]
struct RmArgs {
    /// TOML configuration file (its `[resource_manager]` table).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `resource_manager.listen` (host:port; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Write the bound address to this file once serving (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Development only: plaintext, unauthenticated gRPC (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// TOML configuration file (its `[worker]` table).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `worker.resource_managers` (comma-separated host:port).
    #[arg(long, value_delimiter = ',')]
    resource_managers: Option<Vec<String>>,
    /// Overrides `worker.label`: core or task.
    #[arg(long)]
    label: Option<String>,
    /// Overrides `worker.vcores` (0: every core).
    #[arg(long)]
    vcores: Option<u32>,
    /// Overrides `worker.memory_mib` (0: the host's, less a quarter).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Overrides `worker.name` (the id of a worker without a certificate, dev mode).
    #[arg(long)]
    name: Option<String>,
    /// Development only: plaintext, unauthenticated gRPC (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
}

#[derive(clap::Args)]
struct WorkersArgs {
    #[command(flatten)]
    conn: creds::ClientOpts,
}

#[derive(clap::Args)]
struct ConnectArgs {
    /// TOML configuration file (its `[connect]` table: TLS files, keys, the cluster's
    /// namenodes and resource managers, session sizes).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `connect.listen` (host:port; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Overrides `connect.namenodes` (comma-separated host:port).
    #[arg(long, value_delimiter = ',')]
    namenodes: Option<Vec<String>>,
    /// Overrides `connect.resource_managers` (comma-separated host:port).
    #[arg(long, value_delimiter = ',')]
    resource_managers: Option<Vec<String>>,
    /// Development only: plaintext, and requests without a token act as `connect.dev_user`
    /// (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
    /// Write the endpoint's address to this file once serving (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// TOML configuration file (its `[gateway]` table: keys, TLS files, domains).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `gateway.listen` (host:port; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Overrides `gateway.namenodes` (comma-separated host:port).
    #[arg(long, value_delimiter = ',')]
    namenodes: Option<Vec<String>>,
    /// Development only: serve plaintext HTTP and plaintext gRPC (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
    /// Write the endpoint URL to this file once serving (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InitArgs {
    /// Directory to write configuration files into.
    #[arg(long, default_value = "tarn-conf")]
    dir: PathBuf,
    /// Namenode addresses (comma-separated HOST:PORT). One address: a single-node group.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8020")]
    namenodes: Vec<String>,
    /// Data directory on each host.
    #[arg(long, default_value = "/var/lib/tarn")]
    data_dir: PathBuf,
    /// Datanode hosts (comma-separated): one configuration and certificate each.
    #[arg(long, value_delimiter = ',')]
    datanodes: Vec<String>,
    /// S3 gateway hosts (comma-separated): one configuration and certificate each.
    #[arg(long, value_delimiter = ',')]
    gateways: Vec<String>,
    /// Resource manager hosts (comma-separated): one configuration and certificate each.
    #[arg(long, value_delimiter = ',')]
    resource_managers: Vec<String>,
    /// Workers on core nodes (comma-separated hosts, where datanodes run).
    #[arg(long, value_delimiter = ',')]
    workers: Vec<String>,
    /// Workers on task nodes (comma-separated hosts: compute only).
    #[arg(long, value_delimiter = ',')]
    task_workers: Vec<String>,
    /// Spark Connect endpoints (comma-separated hosts, the masters): one configuration
    /// each (`tarn connect --config connect-N.toml`), all taking the same admin token, so
    /// a client moves between masters with its session.
    #[arg(long, value_delimiter = ',')]
    connect: Vec<String>,
    /// Replace existing configuration files (the CA and master key are kept).
    #[arg(long)]
    force: bool,
    /// Where the directory will be on the hosts (default: --dir itself): every path
    /// written into the files starts here, so a directory made on an operator's machine
    /// is copied to each host's /etc/tarn as it is.
    #[arg(long)]
    host_dir: Option<PathBuf>,
    /// Racks of datanode and worker hosts (comma-separated HOST=RACK, like /rack1; the
    /// others are in /default-rack): placement keeps every block on more than one rack,
    /// and the scheduler prefers a node's rack when the node itself is busy.
    #[arg(long, value_delimiter = ',')]
    racks: Vec<String>,
    /// Add hosts to a directory `tarn init` made: every file, certificate and key there is
    /// kept; datanodes, workers and gateways without files get them, numbered after the
    /// others (`hosts.txt` says which host has which file). The masters must be the same.
    #[arg(long, conflicts_with = "force")]
    extend: bool,
}

/// Interactive commands give up sooner than daemons: a wrong address or a cluster without
/// a quorum is reported within 10 s (elections take well under a second).
pub fn cli_retry() -> tarn_client::RetryPolicy {
    tarn_client::RetryPolicy { deadline: std::time::Duration::from_secs(10), ..Default::default() }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Up(_)
            | Command::Node(_)
            | Command::Namenode(_)
            | Command::Datanode(_)
            | Command::Gateway(_)
            | Command::Connect(_)
            | Command::ResourceManager(_)
            | Command::Worker(_)
    ) || matches!(&cli.command, Command::Job(j) if j.runs_in_container());
    // s3s logs every refused request (a 404 too) at error level: the gateway answers them.
    init_logging(if daemon { "info,openraft=warn,s3s=off" } else { "warn" });
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tarn: start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Up(a) => up::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Node(a) => run_node(a).await,
            Command::Namenode(a) => run_namenode(a).await,
            Command::Datanode(a) => run_datanode(a).await,
            Command::Gateway(a) => run_gateway(a).await,
            Command::Connect(a) => run_connect(a).await,
            Command::ResourceManager(a) => run_resource_manager(a).await,
            Command::Worker(a) => run_worker(a).await,
            Command::Workers(a) => list_workers(a).await,
            Command::App(a) => app_cmd::run(a).await,
            Command::Job(a) => job_cmd::run(a).await,
            Command::Init(a) => run_init(a),
            Command::Fs(a) => fs_cmd::run(a).await,
            Command::Admin(a) => admin_cmd::run(a).await,
            Command::S3(a) => s3_cmd::run(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // `tarn fs ls -R / | head`: the reader has what it wanted.
        Err(e) if out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tarn: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The roles `a` names, each as its own subcommand runs it, side by side; the first that
/// fails ends the process (its error), else they all end on the signal that stops them.
async fn run_node(a: NodeArgs) -> anyhow::Result<u8> {
    type Role = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<u8>> + Send>>;
    let mut roles: Vec<Role> = Vec::new();
    if let Some(config) = a.namenode {
        roles.push(Box::pin(run_namenode(NamenodeArgs {
            config: Some(config),
            node_id: None,
            listen: None,
            data_dir: None,
            initial_members: None,
            addr_file: None,
            insecure_dev: false,
        })));
    }
    if let Some(config) = a.datanode {
        roles.push(Box::pin(run_datanode(DatanodeArgs {
            config: Some(config),
            data_dirs: Vec::new(),
            listen: None,
            namenodes: None,
            reserved_bytes: None,
            addr_file: None,
            insecure_dev: false,
        })));
    }
    if let Some(config) = a.gateway {
        roles.push(Box::pin(run_gateway(GatewayArgs {
            config: Some(config),
            listen: None,
            namenodes: None,
            insecure_dev: false,
            addr_file: None,
        })));
    }
    if let Some(config) = a.resource_manager {
        roles.push(Box::pin(run_resource_manager(RmArgs {
            config: Some(config),
            listen: None,
            addr_file: None,
            insecure_dev: false,
        })));
    }
    if let Some(config) = a.worker {
        roles.push(Box::pin(run_worker(WorkerArgs {
            config: Some(config),
            resource_managers: None,
            label: None,
            vcores: None,
            memory_mib: None,
            name: None,
            insecure_dev: false,
        })));
    }
    if let Some(config) = a.connect {
        roles.push(Box::pin(run_connect(ConnectArgs {
            config: Some(config),
            listen: None,
            namenodes: None,
            resource_managers: None,
            insecure_dev: false,
            addr_file: None,
        })));
    }
    let codes = futures::future::try_join_all(roles).await?;
    Ok(codes.into_iter().max().unwrap_or(0))
}

async fn run_namenode(a: NamenodeArgs) -> anyhow::Result<u8> {
    let file = role_config(a.config.as_deref())?;
    let transport = role_transport(&file, a.insecure_dev)?;
    let mut cfg = file.namenode;
    if let Some(v) = a.node_id {
        cfg.node_id = v;
    }
    if let Some(v) = a.listen {
        cfg.listen = v;
    }
    if let Some(v) = a.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = a.initial_members {
        cfg.initial_members = v;
    }
    let node = tarn_namenode::start(cfg, transport, small_files(&file.security, a.insecure_dev)?).await?;
    write_addr_file(a.addr_file.as_deref(), &node.addr)?;
    out::daemon_note(outln!("namenode {} serving on {}", node.node_id, node.addr));
    up::wait_for_signal(node.cancelled()).await;
    node.shutdown().await;
    Ok(0)
}

async fn run_datanode(a: DatanodeArgs) -> anyhow::Result<u8> {
    let file = role_config(a.config.as_deref())?;
    let transport = role_transport(&file, a.insecure_dev)?;
    let mut security = file.security.clone();
    security.insecure_dev |= a.insecure_dev;
    let master = security.master_key("datanode")?;
    let mut cfg = file.datanode;
    if !a.data_dirs.is_empty() {
        cfg.data_dirs = a.data_dirs;
    }
    if let Some(v) = a.listen {
        cfg.listen = v;
    }
    if let Some(v) = a.namenodes {
        cfg.namenodes = v;
    }
    if let Some(v) = a.reserved_bytes {
        cfg.reserved_bytes = v;
    }
    let node = tarn_datanode::start(cfg, transport, master).await?;
    write_addr_file(a.addr_file.as_deref(), &node.addr)?;
    out::daemon_note(outln!("datanode {} serving on {}", node.uuid, node.addr));
    up::wait_for_signal(tarn_namenode::node::CancellationToken::new()).await;
    node.stop().await;
    Ok(0)
}

async fn run_gateway(a: GatewayArgs) -> anyhow::Result<u8> {
    let file = role_config(a.config.as_deref())?;
    let transport = role_transport(&file, a.insecure_dev)?;
    let mut cfg = file.gateway;
    if let Some(v) = a.listen {
        cfg.listen = v;
    }
    if let Some(v) = a.namenodes {
        cfg.namenodes = v;
    }
    if a.insecure_dev {
        up::insecure_dev(&mut cfg);
    }
    let gw = tarn_gateway::start(cfg, transport).await?;
    write_addr_file(a.addr_file.as_deref(), &gw.endpoint())?;
    out::daemon_note(outln!("S3 gateway serving on {}", gw.endpoint()));
    up::wait_for_signal(tarn_namenode::node::CancellationToken::new()).await;
    gw.stop().await;
    Ok(0)
}

async fn run_connect(a: ConnectArgs) -> anyhow::Result<u8> {
    let file = role_config(a.config.as_deref())?;
    let transport = role_transport(&file, a.insecure_dev)?;
    let mut cfg = file.connect;
    if let Some(v) = a.listen {
        cfg.listen = v;
    }
    if let Some(v) = a.namenodes {
        cfg.namenodes = v;
    }
    if let Some(v) = a.resource_managers {
        cfg.resource_managers = v;
    }
    if a.insecure_dev {
        cfg.insecure_dev = true;
        cfg.tls = None;
    }
    let c = tarn_connect::start(cfg, transport).await?;
    write_addr_file(a.addr_file.as_deref(), &c.addr.to_string())?;
    out::daemon_note(outln!("Spark Connect endpoint serving on {}", c.addr));
    up::wait_for_signal(tarn_namenode::node::CancellationToken::new()).await;
    c.stop().await;
    Ok(0)
}

async fn run_resource_manager(a: RmArgs) -> anyhow::Result<u8> {
    let file = role_config(a.config.as_deref())?;
    let transport = role_transport(&file, a.insecure_dev)?;
    let mut cfg = file.resource_manager;
    if let Some(v) = a.listen {
        cfg.listen = v;
    }
    let rm = tarn_resource_manager::start(cfg, transport).await?;
    write_addr_file(a.addr_file.as_deref(), &rm.addr)?;
    out::daemon_note(outln!("resource manager serving on {}", rm.addr));
    up::wait_for_signal(tarn_namenode::node::CancellationToken::new()).await;
    rm.shutdown().await;
    Ok(0)
}

async fn run_worker(a: WorkerArgs) -> anyhow::Result<u8> {
    let file = role_config(a.config.as_deref())?;
    let transport = role_transport(&file, a.insecure_dev)?;
    let mut cfg = file.worker;
    if let Some(v) = a.resource_managers {
        cfg.resource_managers = v;
    }
    if let Some(v) = a.label {
        cfg.label = v;
    }
    if let Some(v) = a.vcores {
        cfg.vcores = v;
    }
    if let Some(v) = a.memory_mib {
        cfg.memory_mib = v;
    }
    if let Some(v) = a.name {
        cfg.name = v;
    }
    // Containers run this same program by name (`tarn`), from the worker's directory.
    cfg.tarn_bin = std::env::current_exe().ok();
    let w = tarn_worker::start(cfg, transport).await?;
    out::daemon_note(outln!("worker {} offering {} vcores and {} MiB", w.id, w.capacity.vcores, w.capacity.memory_mib));
    up::wait_for_signal(tarn_namenode::node::CancellationToken::new()).await;
    w.stop().await;
    Ok(0)
}

async fn list_workers(a: WorkersArgs) -> anyhow::Result<u8> {
    print_workers(&a.conn).await
}

/// `tarn workers` and `tarn admin nodes`: every worker the resource manager knows.
pub async fn print_workers(conn: &creds::ClientOpts) -> anyhow::Result<u8> {
    use tarn_client::rm::WorkerState;
    let workers = conn.connect_rm()?.workers().await?;
    outln!(
        "{:<24} {:<24} {:<16} {:<6} {:<8} {:>7} {:>12} {:>10}",
        "WORKER",
        "HOST",
        "RACK",
        "LABEL",
        "STATE",
        "VCORES",
        "MEMORY MIB",
        "HEARTBEAT"
    )?;
    for w in &workers {
        let state = match w.state {
            WorkerState::Running => "running",
            WorkerState::Lost => "LOST",
            WorkerState::Draining => "DRAINING",
        };
        outln!(
            "{:<24} {:<24} {:<16} {:<6} {:<8} {:>7} {:>12} {:>8}ms",
            w.worker_id,
            w.host,
            w.rack,
            w.label.as_str(),
            state,
            format!("{}/{}", w.used.vcores, w.capacity.vcores),
            format!("{}/{}", w.used.memory_mib, w.capacity.memory_mib),
            w.since_heartbeat.as_millis()
        )?;
    }
    let lost = workers.iter().filter(|w| w.state == WorkerState::Lost).count();
    outln!("workers: {} running, {lost} lost", workers.len() - lost)?;
    Ok(0)
}

/// How a namenode keeps small files: sealed under the master key it is given; without one,
/// in the clear in dev mode, else not at all (they go to blocks).
fn small_files(
    security: &tarn_security::SecurityConfig,
    insecure_dev: bool,
) -> anyhow::Result<tarn_namenode::SmallFiles> {
    use tarn_namenode::SmallFiles;
    let (hex, file) = (security.master_key_hex.as_deref(), security.master_key_file.as_deref());
    Ok(match tarn_security::MasterKey::from_hex_or_file(hex, file)? {
        Some(key) => SmallFiles::Sealed { key, previous: security.previous_master_keys()? },
        None if insecure_dev || security.insecure_dev => {
            tarn_security::warn_insecure(
                "namenode: no master key, small files kept in the namespace are stored unencrypted",
            );
            SmallFiles::Clear
        }
        None => {
            tracing::info!("no master key (security.master_key_file): small files are written to blocks");
            SmallFiles::Off
        }
    })
}

/// Writes where a daemon serves to `file` (for scripts and tests), whole or not at all.
fn write_addr_file(file: Option<&std::path::Path>, addr: &str) -> anyhow::Result<()> {
    if let Some(f) = file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, addr)?;
        std::fs::rename(&tmp, f)?;
    }
    Ok(())
}

/// A daemon's configuration file (defaults without one).
fn role_config(path: Option<&std::path::Path>) -> anyhow::Result<TarnConfig> {
    match path {
        Some(p) => TarnConfig::load(p),
        None => Ok(TarnConfig::default().with_environment()),
    }
}

/// A daemon's transport: its `[security]` certificate, or plaintext with `--insecure-dev`.
fn role_transport(cfg: &TarnConfig, insecure_dev: bool) -> anyhow::Result<tarn_client::Transport> {
    let mut sec = cfg.security.clone();
    if insecure_dev {
        sec.tls = None;
        sec.insecure_dev = true;
    }
    Ok(sec.transport()?)
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// `tarn init`: the cluster CA, the master key, and one configuration file with its own
/// certificate per namenode, datanode and gateway, plus `admin.toml` for client commands.
/// `hosts.txt` in a `tarn init` directory: which host each numbered file is for, one
/// `HOST FILE` line each. `tarn init --extend` numbers new hosts after it; deploy scripts
/// read it to give each host its own files.
#[derive(Default)]
struct Layout {
    entries: Vec<(String, String)>,
}

impl Layout {
    const FILE: &'static str = "hosts.txt";

    fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = dir.join(Self::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => anyhow::bail!("read {}: {e}", path.display()),
        };
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                [host, file] => entries.push((host.to_string(), file.to_string())),
                _ => anyhow::bail!("{} line {}: expected `HOST FILE`, got {line:?}", path.display(), n + 1),
            }
        }
        Ok(Self { entries })
    }

    fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let mut text = String::from("# written by tarn init: the host each file is for (HOST FILE)\n");
        for (host, file) in &self.entries {
            text.push_str(&format!("{host} {file}\n"));
        }
        let path = dir.join(Self::FILE);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))
    }

    /// The number of `host`'s `PREFIX-N.toml`, if it has one.
    fn index_of(&self, prefix: &str, host: &str) -> Option<usize> {
        self.entries.iter().filter(|(h, _)| h == host).find_map(|(_, f)| Self::index_in(prefix, f))
    }

    /// The number after every `PREFIX-N.toml`.
    fn next(&self, prefix: &str) -> usize {
        self.entries.iter().filter_map(|(_, f)| Self::index_in(prefix, f)).max().unwrap_or(0) + 1
    }

    fn index_in(prefix: &str, file: &str) -> Option<usize> {
        file.strip_prefix(prefix)?.strip_prefix('-')?.strip_suffix(".toml")?.parse().ok()
    }

    /// `host`'s number for `prefix`: with `reuse` its own if it has one, else the next
    /// free one (recorded). Without `reuse` (a new directory) hosts are numbered in order,
    /// so one host may have several (two namenodes on one test machine).
    fn slot(&mut self, prefix: &str, host: &str, reuse: bool) -> (usize, bool) {
        if let Some(i) = self.index_of(prefix, host).filter(|_| reuse) {
            return (i, true);
        }
        let i = self.next(prefix);
        self.entries.push((host.to_string(), format!("{prefix}-{i}.toml")));
        (i, false)
    }
}

fn run_init(a: InitArgs) -> anyhow::Result<u8> {
    use tarn_security::{Ca, Identity, Role};
    std::fs::create_dir_all(&a.dir)?;
    // Absolute paths in the files: daemons may start from any directory.
    let dir = std::fs::canonicalize(&a.dir)?;
    let mut racks = std::collections::HashMap::new();
    let placed = |h: &str| a.datanodes.iter().chain(&a.workers).chain(&a.task_workers).any(|d| d == h);
    for r in &a.racks {
        match r.split_once('=') {
            Some((host, rack)) if placed(host) && rack.starts_with('/') => {
                racks.insert(host.to_string(), rack.to_string());
            }
            Some((host, _)) if !placed(host) => {
                anyhow::bail!("--racks {r}: {host} is not one of --datanodes, --workers or --task-workers")
            }
            _ => anyhow::bail!("--racks {r}: expected HOST=RACK with RACK like /rack1"),
        }
    }
    let mut layout = if a.extend {
        let layout = Layout::load(&dir)?;
        if layout.entries.is_empty() {
            anyhow::bail!(
                "--extend: {} has no {}: make the directory with tarn init first",
                dir.display(),
                Layout::FILE
            );
        }
        // Masters change through the namenode group (tarn admin add-learner), not here.
        let masters = |prefix: &str, hosts: &[String]| -> anyhow::Result<()> {
            let known: Vec<&String> =
                layout.entries.iter().filter(|(_, f)| Layout::index_in(prefix, f).is_some()).map(|(h, _)| h).collect();
            let given: Vec<&String> = hosts.iter().collect();
            if known != given {
                anyhow::bail!(
                    "--extend adds datanodes, workers and gateways; the {prefix} hosts must stay {known:?} (given {given:?})"
                );
            }
            Ok(())
        };
        let nn_hosts: Vec<String> = a.namenodes.iter().map(|a| host_of(a)).collect();
        masters("namenode", &nn_hosts)?;
        masters("resource-manager", &a.resource_managers)?;
        masters("connect", &a.connect)?;
        layout
    } else {
        Layout::default()
    };
    let on_host = |p: &std::path::Path| -> PathBuf {
        match &a.host_dir {
            Some(h) => h.join(p.strip_prefix(&dir).unwrap_or(p)),
            None => p.to_path_buf(),
        }
    };
    let tls = dir.join("tls");
    let ca = Ca::load_or_create(&tls, "tarn")?;
    // Before any certificate: daemons' files name it, to accept containers' credentials.
    let container_ca = tarn_security::ContainerCa::load_or_create(&tls, "tarn")?;
    let master_file = dir.join("keys/master.key");
    if !master_file.exists() {
        tarn_gateway::keys::MasterKey::create(&master_file)?;
    }
    let master = on_host(&master_file);
    let issue = |role: Role, name: &str, hosts: Vec<String>| -> anyhow::Result<tarn_security::TlsPaths> {
        let mut hosts = hosts;
        hosts.push("localhost".into());
        let p = ca.issue(&Identity::new(role, name)?, &hosts, &tls, &format!("{role}-{name}"))?;
        Ok(tarn_security::TlsPaths {
            ca: on_host(&p.ca),
            cert: on_host(&p.cert),
            key: on_host(&p.key),
            container_ca: p.container_ca.as_deref().map(on_host),
        })
    };
    let write = |name: String, cfg: &TarnConfig| -> anyhow::Result<()> {
        let path = dir.join(name);
        if path.exists() && !a.force {
            anyhow::bail!("{} exists (use --force to replace it)", path.display());
        }
        cfg.save(&path)?;
        outln!("wrote {}", path.display())?;
        Ok(())
    };
    let rms: Vec<String> = a.resource_managers.iter().map(|h| format!("{h}:8032")).collect();
    let base = |tls_paths: tarn_security::TlsPaths| {
        let mut cfg = TarnConfig::default();
        cfg.client.namenodes = a.namenodes.clone();
        if !rms.is_empty() {
            cfg.client.resource_managers = rms.clone();
            cfg.worker.resource_managers = rms.clone();
        }
        cfg.datanode.namenodes = a.namenodes.clone();
        cfg.gateway.namenodes = a.namenodes.clone();
        cfg.worker.namenodes = a.namenodes.clone();
        cfg.resource_manager.namenodes = a.namenodes.clone();
        cfg.security.tls = Some(tls_paths);
        cfg.security.master_key_file = Some(master.clone());
        cfg
    };
    let members: Vec<String> = a.namenodes.iter().enumerate().map(|(i, addr)| format!("{}@{addr}", i + 1)).collect();
    for addr in &a.namenodes {
        let (i, exists) = layout.slot("namenode", &host_of(addr), a.extend);
        if exists {
            continue;
        }
        let id = i as u64;
        let mut cfg = base(issue(Role::Namenode, &id.to_string(), vec![host_of(addr)])?);
        cfg.namenode.node_id = id;
        let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("8020");
        cfg.namenode.listen = format!("0.0.0.0:{port}");
        cfg.namenode.advertise = Some(addr.clone());
        cfg.namenode.data_dir = a.data_dir.join("namenode");
        cfg.namenode.initial_members = members.clone();
        if a.namenodes.len() == 1 {
            cfg.namenode.files.default_replication = 1;
        }
        cfg.namenode.validate()?;
        write(format!("namenode-{id}.toml"), &cfg)?;
    }
    for host in &a.datanodes {
        let (i, exists) = layout.slot("datanode", host, a.extend);
        if exists {
            continue;
        }
        let mut cfg = base(issue(Role::Datanode, &format!("dn{i}"), vec![host.clone()])?);
        cfg.datanode.data_dirs = vec![a.data_dir.join("datanode")];
        cfg.datanode.listen = "0.0.0.0:9866".into();
        cfg.datanode.advertise = Some(format!("{host}:9866"));
        if let Some(rack) = racks.get(host) {
            cfg.datanode.rack = rack.clone();
        }
        write(format!("datanode-{i}.toml"), &cfg)?;
    }
    for host in &a.gateways {
        let (i, exists) = layout.slot("gateway", host, a.extend);
        if exists {
            continue;
        }
        let paths = issue(Role::Gateway, &format!("gw{i}"), vec![host.clone()])?;
        let mut cfg = base(paths.clone());
        cfg.gateway.listen = "0.0.0.0:9000".into();
        cfg.gateway.tls = Some(tarn_gateway::TlsFiles { cert: paths.cert, key: paths.key });
        cfg.gateway.master_key_file = Some(master.clone());
        cfg.gateway.access_keys = vec![tarn_gateway::AccessKey::generate()];
        cfg.gateway.domains = vec![format!("{host}:9000"), host.clone()];
        write(format!("gateway-{i}.toml"), &cfg)?;
    }
    for host in &a.resource_managers {
        let (i, exists) = layout.slot("resource-manager", host, a.extend);
        if exists {
            continue;
        }
        let mut cfg = base(issue(Role::ResourceManager, &format!("rm{i}"), vec![host.clone()])?);
        cfg.resource_manager.listen = "0.0.0.0:8032".into();
        cfg.resource_manager.advertise = Some(format!("{host}:8032"));
        cfg.resource_manager.rest_listen = Some("0.0.0.0:8088".into());
        cfg.resource_manager.container_ca = Some(on_host(container_ca.cert_path()));
        // Nothing a resource manager does needs the key that opens the data at rest.
        cfg.security.master_key_file = None;
        write(format!("resource-manager-{i}.toml"), &cfg)?;
    }
    let workers = a.workers.iter().map(|h| (h, "core")).chain(a.task_workers.iter().map(|h| (h, "task")));
    for (host, label) in workers {
        let (i, exists) = layout.slot("worker", host, a.extend);
        if exists {
            continue;
        }
        let mut cfg = base(issue(Role::Worker, &format!("w{i}"), vec![host.clone()])?);
        cfg.worker.host = host.clone();
        cfg.worker.label = label.into();
        cfg.worker.local_dir = a.data_dir.join("worker");
        if let Some(rack) = racks.get(host) {
            cfg.worker.rack = rack.clone();
        }
        // Nor a worker's (its containers run user code; a task node may be a spot instance).
        cfg.security.master_key_file = None;
        cfg.worker.validate()?;
        write(format!("worker-{i}.toml"), &cfg)?;
    }
    // One admin key for every endpoint: a session continues on another master.
    let connect_key = tarn_gateway::AccessKey::generate();
    for host in &a.connect {
        let (i, exists) = layout.slot("connect", host, a.extend);
        if exists {
            continue;
        }
        // The endpoint acts for its users as the gateway does: a gateway identity.
        let paths = issue(Role::Gateway, &format!("connect{i}"), vec![host.clone()])?;
        let mut cfg = base(paths.clone());
        cfg.connect.listen = format!("0.0.0.0:{}", tarn_connect::DEFAULT_PORT);
        cfg.connect.namenodes = a.namenodes.clone();
        if !rms.is_empty() {
            cfg.connect.resource_managers = rms.clone();
        }
        cfg.connect.tls = Some(tarn_gateway::TlsFiles { cert: paths.cert, key: paths.key });
        cfg.connect.master_key_file = Some(master.clone());
        cfg.connect.access_keys = vec![connect_key.clone()];
        write(format!("connect-{i}.toml"), &cfg)?;
    }
    layout.save(&dir)?;
    if a.extend {
        outln!("extended {} (hosts.txt: which host has which file)", dir.display())?;
        return Ok(0);
    }
    let admin = base(issue(Role::Admin, "admin", vec![])?);
    write("admin.toml".into(), &admin)?;
    if let Some(host) = a.connect.first() {
        let token = format!("{}:{}", connect_key.access_key, connect_key.secret_key);
        let url = tarn_connect::remote_url(host, tarn_connect::DEFAULT_PORT, &token, true);
        outln!("Spark Connect (as the admin): export SPARK_REMOTE=\"{url}\"")?;
        outln!("                              export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={}", ca.cert_path().display())?;
    }
    outln!("cluster CA: {} (its key ca-key.pem stays here; it issues new certificates)", ca.cert_path().display())?;
    outln!("start each namenode with: tarn namenode --config <file>; the lowest id forms the group")?;
    outln!("client commands: tarn fs --config {} ls /", dir.join("admin.toml").display())?;
    outln!(
        "more nodes or users: tarn admin issue-cert --ca-dir {} --role ROLE --name NAME --host HOST",
        tls.display()
    )?;
    Ok(0)
}
