//! The cluster harness every integration test and benchmark uses.
//!
//! - [`Cluster`] runs namenodes and datanodes in this process (fast; stop and restart a
//!   node). Built with [`Cluster::builder`]; a `partitionable()` cluster puts a proxy in
//!   front of every node ([`netproxy`]), so a test can cut the traffic between two nodes
//!   ([`Cluster::partition`]) or between one node and all others ([`Cluster::isolate`]).
//! - [`ProcCluster`] runs each namenode as a real `tarn namenode` process and each datanode
//!   as a `tarn datanode` process, for faults that need one: SIGKILL, SIGSTOP, restart of
//!   everything. The same builder makes it (`Cluster::builder()...start_processes()`).
//! - [`ComposeCluster`] runs the storage roles as containers on a private docker network
//!   (`deploy/docker/`): real hosts, SIGKILL of a host, network partitions.
//!
//! The first two bind port 0, form the group through the admin API (node 1 bootstraps, the others
//! join as learners and are promoted), and wait on conditions with deadlines, never sleeps.

pub mod compose;
pub mod hosts;
pub mod jobs;
pub mod netproxy;
pub use compose::ComposeCluster;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tarn_client::{NamenodeClient, Transport};
use tarn_datanode::{DatanodeConfig, DatanodeHandle};
use tarn_namenode::{NamenodeConfig, NamenodeHandle};
use tarn_security::{Ca, Identity, MasterKey, Role, SecurityConfig, TlsPaths};

/// The tests' cluster PKI: one CA per test process, a certificate per (role, name) issued
/// on first use. Every test cluster runs mutual TLS, as a real one does.
pub struct TestPki {
    dir: PathBuf,
    ca: Ca,
    master: MasterKey,
    master_file: PathBuf,
    issued: Mutex<HashMap<(Role, String), (TlsPaths, Transport)>>,
}

impl TestPki {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    fn get(&self, role: Role, name: &str) -> (TlsPaths, Transport) {
        let mut m = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((role, name.to_string()))
            .or_insert_with(|| {
                let id = Identity::new(role, name).expect("test identity");
                // Tests tell hosts apart by loopback address (127.0.0.2 on another "rack").
                let mut hosts = vec!["localhost".to_string()];
                hosts.extend((1..=8).map(|i| format!("127.0.0.{i}")));
                let paths =
                    self.ca.issue(&id, &hosts, &self.dir, &format!("{role}-{name}")).expect("issue certificate");
                let t = Transport::tls(&paths).expect("load test certificate");
                (paths, t)
            })
            .clone()
    }

    /// The certificate files of `role`/`name`.
    pub fn paths(&self, role: Role, name: &str) -> TlsPaths {
        self.get(role, name).0
    }

    /// A transport presenting the certificate of `role`/`name` (one per identity, so
    /// clients of one identity share connections).
    pub fn transport(&self, role: Role, name: &str) -> Transport {
        self.get(role, name).1
    }

    /// A `[security]` table for a process with the certificate of `role`/`name` (and the
    /// master key).
    pub fn security(&self, role: Role, name: &str) -> SecurityConfig {
        SecurityConfig {
            tls: Some(self.paths(role, name)),
            insecure_dev: false,
            master_key_file: Some(self.master_file.clone()),
            ..SecurityConfig::default()
        }
    }

    /// The test cluster's master key: datanodes encrypt every replica with it.
    pub fn master(&self) -> MasterKey {
        self.master.clone()
    }
}

/// The test process's PKI (under the temp directory, removed with the process's others
/// when a later test process starts).
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root = std::env::temp_dir().join("tarn-test-pki");
        // Directories of test processes that are gone.
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let pid = e.file_name().to_string_lossy().to_string();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::create(&dir, "tests").expect("test CA");
        tarn_security::ContainerCa::load_or_create(&dir, "tests").expect("test container CA");
        let master_file = dir.join("master.key");
        let master = MasterKey::create(&master_file).expect("test master key");
        TestPki { dir, ca, master, master_file, issued: Mutex::default() }
    })
}

/// A self-signed certificate for a test gateway's HTTPS (localhost, 127.0.0.1) under `dir`;
/// clients trust its `cert` file.
pub fn gateway_tls(dir: &Path) -> tarn_gateway::TlsFiles {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("certificate");
    let files = tarn_gateway::TlsFiles { cert: dir.join("gw.pem"), key: dir.join("gw-key.pem") };
    std::fs::write(&files.cert, ck.cert.pem()).expect("write certificate");
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("write key");
    files
}

/// The transport of the tests' admin (the superuser): what test clients present.
pub fn admin() -> Transport {
    pki().transport(Role::Admin, "tester")
}

/// A configuration file for `tarn` client commands (`TARN_CONFIG`) presenting the tests'
/// admin certificate.
pub fn admin_config() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| config_file(Role::Admin, "tester")).clone()
}

/// A configuration file with just the `[security]` table of `role`/`name`.
pub fn config_file(role: Role, name: &str) -> PathBuf {
    #[derive(serde::Serialize)]
    struct File {
        security: SecurityConfig,
    }
    let path = pki().dir().join(format!("{role}-{name}.toml"));
    let text = toml::to_string(&File { security: pki().security(role, name) }).expect("serialize config");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A Spark Connect endpoint's configuration for `cl` on `listen`: `key`'s token (the
/// admin's), the gateway's certificate, sessions of `size`.
pub fn connect_config(
    cl: &Cluster,
    key: &tarn_gateway::AccessKey,
    size: tarn_connect::SessionSize,
    listen: &str,
) -> tarn_connect::ConnectConfig {
    let tls = pki().paths(Role::Gateway, "gw");
    tarn_connect::ConnectConfig {
        listen: listen.into(),
        namenodes: cl.addrs.clone(),
        resource_managers: cl.rm_addrs.clone(),
        tls: Some(tarn_gateway::TlsFiles { cert: tls.cert.clone(), key: tls.key.clone() }),
        access_keys: vec![key.clone()],
        session: size,
        ..Default::default()
    }
}

/// `len` pseudo-random, incompressible bytes (xorshift from `seed`), for benchmarks.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `f` until it returns `Some`, or fails the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Logs to stderr once per test binary (RUST_LOG to change the level).
/// Also watches for ERROR events from Tarn's own crates: ERROR means a person must look,
/// so [`Cluster::shutdown`] fails a test that logged one it did not expect (see
/// [`expect_error_lines`]).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use tracing_subscriber::Layer;
    let fmt = tracing_subscriber::fmt::layer().with_test_writer().with_filter(filter);
    let watch = ErrorWatch.with_filter(tracing_subscriber::filter::LevelFilter::ERROR);
    let _ = tracing_subscriber::registry().with(fmt).with(watch).try_init();
}

/// ERROR lines logged by Tarn's crates in this process (the test's: nextest runs each test
/// in a process of its own).
static ERROR_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static ERRORS_EXPECTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct ErrorWatch;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorWatch {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::ERROR || !meta.target().starts_with("tarn") {
            return;
        }
        let mut text = String::new();
        event.record(&mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            text.push_str(&format!(" {}={value:?}", field.name()));
        });
        ERROR_LINES.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}:{text}", meta.target()));
    }
}

/// The ERROR lines Tarn's crates logged so far in this process.
pub fn error_lines() -> Vec<String> {
    ERROR_LINES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Says this test provokes ERROR lines on purpose (a storage failure it injects, say), so
/// the harness does not fail it for them.
pub fn expect_error_lines() {
    ERRORS_EXPECTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Fails the test if Tarn's crates logged an ERROR it did not expect.
pub fn assert_no_unexpected_errors() {
    if ERRORS_EXPECTED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let lines = error_lines();
    assert!(lines.is_empty(), "unexpected ERROR lines (ERROR means a person must look):\n{}", lines.join("\n"));
}

/// Raft timings for tests: quick elections, small snapshots.
pub fn test_config(node_id: u64, dir: &Path) -> NamenodeConfig {
    let mut c = NamenodeConfig {
        node_id,
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..NamenodeConfig::default()
    };
    c.files.default_replication = 1;
    c.memory.block_cache_mb = 16;
    c.memory.write_buffer_mb = 16;
    c
}

/// Forms a group from running, unjoined nodes: `addrs[0]` has bootstrapped itself.
pub async fn form_group(addrs: &[String]) -> NamenodeClient {
    let client = NamenodeClient::new(&addrs[..1], &admin()).expect("client");
    wait_for("node 1 to lead", Duration::from_secs(20), || async {
        client.cluster_status().await.ok().filter(|s| s.leader_id == Some(1)).map(|_| ())
    })
    .await;
    for (i, a) in addrs.iter().enumerate().skip(1) {
        client.add_learner(i as u64 + 1, a).await.expect("add learner");
    }
    if addrs.len() > 1 {
        let voters = (1..=addrs.len() as u64).collect();
        client.change_membership(voters, false).await.expect("change membership");
    }
    NamenodeClient::new(addrs, &admin()).expect("client")
}

/// The transport of test namenode `id`.
pub fn nn_transport(id: u64) -> Transport {
    pki().transport(Role::Namenode, &format!("nn{id}"))
}

/// How test namenodes keep small files: sealed under the test cluster's master key, as
/// every appliance does.
pub fn small_files() -> tarn_namenode::SmallFiles {
    tarn_namenode::SmallFiles::sealed(pki().master())
}

/// Namenode timings for block storage tests: datanodes heartbeat every 200 ms and count as
/// dead after 2 s, files get 3 replicas.
pub fn block_tuning(c: &mut NamenodeConfig) {
    c.datanodes.heartbeat_interval_ms = 200;
    c.datanodes.dead_after_ms = 2_000;
    c.files.default_replication = 3;
}

/// A datanode configuration for tests: one directory, no reserve, a quick block scanner.
pub fn datanode_config(dir: &Path, namenodes: &[String]) -> DatanodeConfig {
    DatanodeConfig {
        data_dirs: vec![dir.to_path_buf()],
        listen: "127.0.0.1:0".into(),
        namenodes: namenodes.to_vec(),
        reserved_bytes: 0,
        scan_bytes_per_sec: 256 << 20,
        scan_interval_ms: 200,
        ..DatanodeConfig::default()
    }
}

/// Waits until the namenode leader counts `n` live datanodes.
pub async fn wait_live_datanodes(c: &NamenodeClient, n: usize) {
    wait_for(&format!("{n} live datanodes"), Duration::from_secs(30), || async {
        let r = c.datanode_report().await.ok()?;
        (r.datanodes.iter().filter(|d| d.alive).count() == n).then_some(())
    })
    .await
}

/// Waits until `tarn admin fsck`-style health under `path` shows every block with its
/// expected live replicas and no corrupt ones; returns the number of blocks.
pub async fn wait_healthy(c: &NamenodeClient, path: &str, timeout: Duration) -> usize {
    wait_for(&format!("{path} fully replicated"), timeout, || async {
        let r = c.fsck(path, "", 10_000).await.ok()?;
        let blocks: Vec<_> = r.files.iter().flat_map(|f| f.blocks.iter()).collect();
        let ok = blocks.iter().all(|b| b.live >= b.expected && b.corrupt == 0 && !b.under_construction);
        ok.then_some(blocks.len())
    })
    .await
}

/// A node of a test cluster: namenode `id`, or datanode `i` (both 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Namenode(u64),
    Datanode(usize),
}

impl Node {
    /// The loopback address it connects from in a partitionable cluster.
    fn ip(self) -> std::net::IpAddr {
        match self {
            Node::Namenode(id) => netproxy::namenode_ip(id),
            Node::Datanode(i) => netproxy::datanode_ip(i),
        }
    }
}

type NamenodeTune = Box<dyn Fn(&mut NamenodeConfig)>;
type DatanodeTune = Box<dyn Fn(usize, &mut DatanodeConfig)>;
type WorkerTune = Box<dyn Fn(usize, &mut tarn_worker::WorkerConfig)>;

/// The resource manager's timings in tests: workers heartbeat every 100 ms and are lost
/// after a second of silence.
pub fn rm_config() -> tarn_resource_manager::ResourceManagerConfig {
    tarn_resource_manager::ResourceManagerConfig {
        listen: "127.0.0.1:0".into(),
        worker_heartbeat_ms: 100,
        worker_expiry_ms: 1_000,
        rest_listen: Some("127.0.0.1:0".into()),
        container_ca: Some(pki().dir().join(tarn_security::container_ca::CONTAINER_CA_CERT_FILE)),
        ..Default::default()
    }
}

/// What cluster to start: see [`Cluster::builder`].
pub struct ClusterBuilder {
    namenodes: usize,
    datanodes: usize,
    partitionable: bool,
    tune_namenodes: NamenodeTune,
    tune_datanodes: DatanodeTune,
    workers: (usize, usize),
    tune_workers: WorkerTune,
    worker_processes: bool,
    rm_processes: usize,
    tune_rm: Box<dyn Fn(&mut tarn_resource_manager::ResourceManagerConfig)>,
}

impl ClusterBuilder {
    /// `n` resource managers as real `tarn resource-manager` processes (one highly
    /// available group: the first is active once started, the others stand by), so that a
    /// test can SIGKILL or SIGSTOP one ([`Cluster::kill_rm`], [`Cluster::pause_rm`]).
    pub fn rm_processes(mut self, n: usize) -> Self {
        self.rm_processes = n;
        self
    }

    /// Adjusts the resource manager's configuration (see [`rm_config`]).
    pub fn tune_rm(mut self, f: impl Fn(&mut tarn_resource_manager::ResourceManagerConfig) + 'static) -> Self {
        self.tune_rm = Box::new(f);
        self
    }

    /// Workers as real `tarn worker` processes (the rest stays in this process), so that
    /// a test can SIGKILL one ([`Cluster::stop_worker`]) with its containers.
    pub fn worker_processes(mut self) -> Self {
        self.worker_processes = true;
        self
    }

    /// A resource manager and workers: `core` of them labelled core, then `task` labelled
    /// task (worker `i` is named `w<i>`, 1-based).
    pub fn workers(mut self, core: usize, task: usize) -> Self {
        self.workers = (core, task);
        self
    }

    /// Adjusts worker `i`'s configuration (1-based).
    pub fn tune_workers(mut self, f: impl Fn(usize, &mut tarn_worker::WorkerConfig) + 'static) -> Self {
        self.tune_workers = Box::new(f);
        self
    }

    pub fn namenodes(mut self, n: usize) -> Self {
        self.namenodes = n;
        self
    }

    /// Datanodes started (and counted live by the leader) before `start` returns.
    pub fn datanodes(mut self, k: usize) -> Self {
        self.datanodes = k;
        self
    }

    /// Adjusts every namenode's configuration.
    pub fn tune_namenodes(mut self, f: impl Fn(&mut NamenodeConfig) + 'static) -> Self {
        self.tune_namenodes = Box::new(f);
        self
    }

    /// Adjusts datanode `i`'s configuration (1-based).
    pub fn tune_datanodes(mut self, f: impl Fn(usize, &mut DatanodeConfig) + 'static) -> Self {
        self.tune_datanodes = Box::new(f);
        self
    }

    /// Every node behind a proxy of the harness, connecting from a loopback address of its
    /// own, so that tests can cut links ([`Cluster::partition`]). Off by default: the
    /// proxies copy every byte once more.
    pub fn partitionable(mut self) -> Self {
        self.partitionable = true;
        self
    }

    /// Starts every node as a real `tarn` process instead (SIGKILL, SIGSTOP, restart of
    /// a process: [`ProcCluster`]). Datanode tuning, workers and partitions are for
    /// in-process clusters only (the compose cluster cuts real networks: [`ComposeCluster`]).
    pub async fn start_processes(self) -> ProcCluster {
        assert!(!self.partitionable, "a process cluster cannot be cut yet: use an in-process or compose cluster");
        assert_eq!(self.workers, (0, 0), "workers run in process clusters later: use start()");
        let mut pc = ProcCluster::start(self.namenodes, self.tune_namenodes).await;
        if self.datanodes > 0 {
            pc.start_datanodes(self.datanodes).await;
        }
        pc
    }

    /// Starts the cluster in this process.
    pub async fn start(self) -> Cluster {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cl = Cluster {
            nodes: Vec::new(),
            configs: Vec::new(),
            addrs: Vec::new(),
            datanodes: Vec::new(),
            datanode_dirs: Vec::new(),
            proxies: std::collections::BTreeMap::new(),
            partitionable: self.partitionable,
            tune_datanodes: self.tune_datanodes,
            rm: None,
            workers: Vec::new(),
            worker_procs: Vec::new(),
            worker_processes: self.worker_processes,
            worker_configs: Vec::new(),
            rm_addrs: Vec::new(),
            rm_procs: Vec::new(),
            _dir: dir,
        };
        for i in 1..=self.namenodes as u64 {
            let mut c = test_config(i, &cl._dir.path().join(format!("nn{i}")));
            if i == 1 {
                c.initial_members = vec!["1@".into()];
            }
            (self.tune_namenodes)(&mut c);
            if cl.partitionable {
                let p = netproxy::NodeProxy::start().await;
                c.advertise = Some(p.addr());
                cl.proxies.insert(Node::Namenode(i), p);
            }
            let h = tarn_namenode::start(c.clone(), cl.nn_transport(i), small_files()).await.expect("start namenode");
            cl.route(Node::Namenode(i), &h.listen.to_string());
            cl.addrs.push(h.addr.clone());
            cl.nodes.push(Some(h));
            cl.configs.push(c);
        }
        form_group(&cl.addrs).await;
        cl.start_datanodes(self.datanodes).await;
        let (core, task) = self.workers;
        if core + task > 0 {
            // Containers run as other users: they pass through (not list) the cluster's
            // directory to their own.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(cl._dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
            let mut rc = rm_config();
            // Applications on record in the file system, as in every real cluster.
            rc.namenodes = cl.addrs.clone();
            (self.tune_rm)(&mut rc);
            if self.rm_processes == 0 {
                let rm = tarn_resource_manager::start(rc.clone(), pki().transport(Role::ResourceManager, "rm"))
                    .await
                    .expect("start the resource manager");
                cl.rm_addrs.push(rm.addr.clone());
                cl.rm = Some(rm);
            }
            for i in 1..=self.rm_processes {
                let dir = cl._dir.path().join(format!("rm{i}"));
                std::fs::create_dir_all(&dir).expect("rm dir");
                let mut doc = toml::Table::new();
                doc.insert("resource_manager".into(), toml::Value::try_from(&rc).expect("rm config"));
                let sec = pki().security(Role::ResourceManager, &format!("rm{i}"));
                doc.insert("security".into(), toml::Value::try_from(sec).expect("security config"));
                std::fs::write(dir.join("tarn.toml"), toml::to_string(&doc).expect("toml")).expect("write rm config");
                let (child, addr) = spawn_role("resource-manager", &dir, "info").await;
                cl.rm_procs.push(Some(child));
                cl.rm_addrs.push(addr.clone());
                // The first takes the lease before the next starts: it is the active one.
                if i == 1 {
                    wait_for("the first resource manager active", Duration::from_secs(20), || async {
                        rm_is_active(&addr).await.then_some(())
                    })
                    .await;
                }
            }
            for i in 1..=core + task {
                let mut w = tarn_worker::WorkerConfig {
                    resource_managers: cl.rm_addrs.clone(),
                    namenodes: cl.addrs.clone(),
                    host: "127.0.0.1".into(),
                    label: if i <= core { "core" } else { "task" }.into(),
                    vcores: 2,
                    memory_mib: 2048,
                    local_dir: cl._dir.path().join(format!("w{i}")),
                    pmem_check_ms: 100,
                    // Tests look into containers' directories after the end.
                    delete_delay_ms: 600_000,
                    // Containers run `tarn` by name, as on a real worker.
                    tarn_bin: Some(tarn_bin()),
                    ..Default::default()
                };
                (self.tune_workers)(i, &mut w);
                cl.worker_configs.push(w);
            }
            for i in 1..=core + task {
                cl.start_worker(i).await;
            }
            let n = core + task;
            let rmc = cl.rm_client();
            wait_for(&format!("{n} workers registered"), Duration::from_secs(20), || async {
                let ws = rmc.workers().await.ok()?;
                (ws.iter().filter(|w| w.state == tarn_client::rm::WorkerState::Running).count() == n).then_some(())
            })
            .await;
        }
        cl
    }
}

/// Namenodes (and optionally datanodes, a resource manager and workers) in this process.
pub struct Cluster {
    pub nodes: Vec<Option<NamenodeHandle>>,
    pub configs: Vec<NamenodeConfig>,
    pub addrs: Vec<String>,
    pub datanodes: Vec<Option<DatanodeHandle>>,
    pub datanode_dirs: Vec<PathBuf>,
    proxies: std::collections::BTreeMap<Node, netproxy::NodeProxy>,
    partitionable: bool,
    tune_datanodes: DatanodeTune,
    pub rm: Option<tarn_resource_manager::RmHandle>,
    /// Worker `i` at `[i - 1]` (`None` while stopped).
    pub workers: Vec<Option<tarn_worker::WorkerHandle>>,
    /// With `worker_processes`: worker `i`'s process at `[i - 1]`.
    worker_procs: Vec<Option<std::process::Child>>,
    worker_processes: bool,
    worker_configs: Vec<tarn_worker::WorkerConfig>,
    /// The resource managers' addresses (the in-process one, or each process's).
    pub rm_addrs: Vec<String>,
    /// With `rm_processes`: resource manager `i`'s process at `[i - 1]`.
    rm_procs: Vec<Option<std::process::Child>>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test leaves no worker or resource manager process behind.
        for mut p in self.worker_procs.drain(..).chain(self.rm_procs.drain(..)).flatten() {
            // SIGCONT first: a paused process would not die before it ran again.
            // SAFETY: kill(2) on a child of ours.
            unsafe { libc::kill(p.id() as i32, libc::SIGCONT) };
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Cluster {
    /// A cluster of one namenode and no datanodes, in this process, unless told otherwise.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            namenodes: 1,
            datanodes: 0,
            partitionable: false,
            tune_namenodes: Box::new(|_| {}),
            tune_datanodes: Box::new(|_, _| {}),
            workers: (0, 0),
            tune_workers: Box::new(|_, _| {}),
            worker_processes: false,
            rm_processes: 0,
            tune_rm: Box::new(|_| {}),
        }
    }

    /// (Re)starts worker `i` (1-based) with its certificate `w<i>`.
    pub async fn start_worker(&mut self, i: usize) {
        let cfg = self.worker_configs[i - 1].clone();
        if self.worker_processes {
            let mut doc = toml::Table::new();
            doc.insert("worker".into(), toml::Value::try_from(&cfg).expect("worker config"));
            let sec = pki().security(Role::Worker, &format!("w{i}"));
            doc.insert("security".into(), toml::Value::try_from(sec).expect("security config"));
            let file = self._dir.path().join(format!("w{i}.toml"));
            std::fs::write(&file, toml::to_string(&doc).expect("toml")).expect("write worker config");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self._dir.path().join(format!("w{i}.log")))
                .expect("worker log");
            let child = Command::new(tarn_bin())
                .arg("worker")
                .arg("--config")
                .arg(&file)
                .env("RUST_LOG", std::env::var("TARN_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn tarn worker");
            if self.worker_procs.len() < i {
                self.worker_procs.resize_with(i, || None);
            }
            self.worker_procs[i - 1] = Some(child);
            return;
        }
        let h = tarn_worker::start(cfg, pki().transport(Role::Worker, &format!("w{i}"))).await.expect("start worker");
        if self.workers.len() < i {
            self.workers.resize_with(i, || None);
        }
        self.workers[i - 1] = Some(h);
    }

    /// Stops worker `i` (1-based): it falls silent. A worker process is SIGKILLed.
    pub async fn stop_worker(&mut self, i: usize) {
        if let Some(mut p) = self.worker_procs.get_mut(i - 1).and_then(Option::take) {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(h) = self.workers.get_mut(i - 1).and_then(Option::take) {
            h.stop().await;
        }
    }

    /// The log of worker process `i`.
    pub fn worker_log(&self, i: usize) -> String {
        std::fs::read_to_string(self._dir.path().join(format!("w{i}.log"))).unwrap_or_default()
    }

    /// The working directory of container `cid` of application `app` on worker `i`.
    pub fn container_dir(&self, i: usize, app: &str, cid: &str) -> PathBuf {
        self.worker_configs[i - 1].local_dir.join("apps").join(app).join(cid)
    }

    /// A client of the resource managers with the tests' admin certificate.
    pub fn rm_client(&self) -> tarn_client::rm::RmClient {
        assert!(!self.rm_addrs.is_empty(), "a cluster built with workers()");
        tarn_client::rm::RmClient::new(&self.rm_addrs, &admin()).expect("rm client")
    }

    /// SIGKILLs resource manager process `i` (1-based).
    pub fn kill_rm(&mut self, i: usize) {
        if let Some(mut p) = self.rm_procs.get_mut(i - 1).and_then(Option::take) {
            // SAFETY: kill(2) on a child of ours.
            unsafe { libc::kill(p.id() as i32, libc::SIGCONT) };
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// SIGSTOPs (`true`) or SIGCONTs resource manager process `i` (1-based).
    pub fn pause_rm(&self, i: usize, pause: bool) {
        let p = self.rm_procs[i - 1].as_ref().expect("a running resource manager process");
        let sig = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on a child of ours.
        assert_eq!(unsafe { libc::kill(p.id() as i32, sig) }, 0, "signal resource manager {i}");
    }

    /// The log of resource manager process `i`.
    pub fn rm_log(&self, i: usize) -> String {
        std::fs::read_to_string(self._dir.path().join(format!("rm{i}")).join("resource-manager.log"))
            .unwrap_or_default()
    }

    /// Starts `n` namenodes, `tune` adjusting each configuration.
    pub async fn start(n: usize, tune: impl Fn(&mut NamenodeConfig) + 'static) -> Cluster {
        Cluster::builder().namenodes(n).tune_namenodes(tune).start().await
    }

    /// Namenode `id`'s transport (from its own loopback address if partitionable).
    fn nn_transport(&self, id: u64) -> Transport {
        let t = nn_transport(id);
        if self.partitionable {
            t.with_source_ip(Node::Namenode(id).ip())
        } else {
            t
        }
    }

    /// Points `node`'s proxy (if any) at where it listens now.
    fn route(&self, node: Node, listen: &str) {
        if let Some(p) = self.proxies.get(&node) {
            p.set_target(listen);
        }
    }

    fn proxy(&self, node: Node) -> &netproxy::NodeProxy {
        assert!(self.partitionable, "links can be cut only in a cluster built partitionable()");
        self.proxies.get(&node).unwrap_or_else(|| panic!("{node:?} is not in the cluster"))
    }

    /// Cuts the traffic between `a` and `b` both ways (a real cut: their connections stall,
    /// nothing is refused or reset). Clients of the test are not cut.
    pub fn partition(&self, a: Node, b: Node) {
        self.proxy(b).block(a.ip());
        self.proxy(a).block(b.ip());
    }

    /// Lets traffic between `a` and `b` flow again; stalled connections carry on.
    pub fn heal(&self, a: Node, b: Node) {
        self.proxy(b).unblock(a.ip());
        self.proxy(a).unblock(b.ip());
    }

    /// Every node of the cluster but `a`.
    fn others(&self, a: Node) -> Vec<Node> {
        self.proxies.keys().copied().filter(|n| *n != a).collect()
    }

    /// Cuts `a` off from every other node (not from the test's clients).
    pub fn isolate(&self, a: Node) {
        for b in self.others(a) {
            self.partition(a, b);
        }
    }

    /// Heals every cut of `a`.
    pub fn rejoin(&self, a: Node) {
        for b in self.others(a) {
            self.heal(a, b);
        }
    }

    /// Flips a byte in the middle of datanode `i`'s replica of block `block_id` (its file
    /// on disk, underneath the datanode); returns the file.
    pub fn corrupt_replica(&self, i: usize, block_id: u64) -> PathBuf {
        let name = format!("blk_{block_id}");
        let mut stack = vec![self.datanode_dirs[i - 1].clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if e.file_name().to_string_lossy() == name {
                    let mut bytes = std::fs::read(&p).expect("read replica");
                    assert!(!bytes.is_empty(), "{}: an empty replica has no byte to flip", p.display());
                    let at = bytes.len() / 2;
                    bytes[at] ^= 0x01;
                    std::fs::write(&p, &bytes).expect("write replica");
                    return p;
                }
            }
        }
        panic!("datanode {i} holds no replica of block {block_id}")
    }

    /// Starts `k` more datanodes in this process (tuned as the builder said) and waits
    /// until the leader counts them.
    pub async fn start_datanodes(&mut self, k: usize) {
        let tune = std::mem::replace(&mut self.tune_datanodes, Box::new(|_, _| {}));
        self.start_datanodes_with(k, &tune).await;
        self.tune_datanodes = tune;
    }

    /// Starts `k` more datanodes, `tune(i, config)` adjusting datanode `i`'s (1-based).
    pub async fn start_datanodes_with(&mut self, k: usize, tune: impl Fn(usize, &mut DatanodeConfig)) {
        for _ in 0..k {
            let i = self.datanodes.len() + 1;
            let d = self._dir.path().join(format!("dn{i}"));
            let mut cfg = datanode_config(&d, &self.addrs);
            tune(i, &mut cfg);
            let mut t = pki().transport(Role::Datanode, &format!("dn{i}"));
            if self.partitionable {
                let p = netproxy::NodeProxy::start().await;
                cfg.advertise = Some(p.addr());
                self.proxies.insert(Node::Datanode(i), p);
                t = t.with_source_ip(Node::Datanode(i).ip());
            }
            let h = tarn_datanode::start(cfg, t, Some(pki().master())).await.expect("start datanode");
            self.route(Node::Datanode(i), &h.listen.to_string());
            self.datanodes.push(Some(h));
            self.datanode_dirs.push(d);
        }
        let live = self.datanodes.iter().flatten().count();
        wait_live_datanodes(&self.client(), live).await;
    }

    /// Stops datanode `i` (1-based).
    pub async fn stop_datanode(&mut self, i: usize) {
        if let Some(h) = self.datanodes[i - 1].take() {
            h.stop().await;
        }
    }

    /// A client with the tests' admin certificate.
    pub fn client(&self) -> NamenodeClient {
        NamenodeClient::new(&self.addrs, &admin()).expect("client")
    }

    /// Starts a new node `id` that is not yet a member (join it with the admin API).
    pub async fn start_unjoined(&mut self, id: u64) -> String {
        assert_eq!(id as usize, self.nodes.len() + 1, "node ids are dense");
        let mut c = test_config(id, &self._dir.path().join(format!("nn{id}")));
        if self.partitionable {
            let p = netproxy::NodeProxy::start().await;
            c.advertise = Some(p.addr());
            self.proxies.insert(Node::Namenode(id), p);
        }
        let h = tarn_namenode::start(c.clone(), self.nn_transport(id), small_files()).await.expect("start namenode");
        self.route(Node::Namenode(id), &h.listen.to_string());
        let addr = h.addr.clone();
        self.nodes.push(Some(h));
        self.configs.push(c);
        self.addrs.push(addr.clone());
        addr
    }

    /// Stops node `id` (1-based) gracefully.
    pub async fn stop(&mut self, id: u64) {
        if let Some(h) = self.nodes[id as usize - 1].take() {
            h.shutdown().await;
        }
    }

    /// Restarts node `id` on its old address and data.
    pub async fn restart(&mut self, id: u64) {
        self.restart_with(id, small_files()).await
    }

    /// Restarts node `id` on its old address and data, keeping small files as `sf` says
    /// (another master key, say).
    pub async fn restart_with(&mut self, id: u64, sf: tarn_namenode::SmallFiles) {
        let c = self.configs[id as usize - 1].clone();
        // The stopped node's storage is released as its tasks wind down.
        let t = self.nn_transport(id);
        let h = wait_for("the namenode to restart", Duration::from_secs(20), || {
            let (c, sf, t) = (c.clone(), sf.clone(), t.clone());
            async move { tarn_namenode::start(c, t, sf).await.ok() }
        })
        .await;
        assert_eq!(h.addr, self.addrs[id as usize - 1], "restarted on another address");
        self.route(Node::Namenode(id), &h.listen.to_string());
        self.nodes[id as usize - 1] = Some(h);
    }

    /// The leader as the running nodes agree on it.
    pub async fn leader(&self) -> u64 {
        let nodes = &self.nodes;
        wait_for("a leader", Duration::from_secs(20), || async move {
            let ids: Vec<Option<u64>> =
                nodes.iter().flatten().map(|h| h.raft.metrics().borrow().current_leader).collect();
            let first = ids.first().copied().flatten()?;
            ids.iter().all(|l| *l == Some(first)).then_some(first)
        })
        .await
    }

    /// Stops every node, then fails the test if Tarn logged an unexpected ERROR line.
    pub async fn shutdown(mut self) {
        for i in 1..=self.workers.len().max(self.worker_procs.len()) {
            self.stop_worker(i).await;
        }
        if let Some(rm) = self.rm.take() {
            rm.shutdown().await;
        }
        for i in 1..=self.rm_procs.len() {
            self.kill_rm(i);
        }
        for i in 1..=self.datanodes.len() {
            self.stop_datanode(i).await;
        }
        for i in 1..=self.nodes.len() as u64 {
            self.stop(i).await;
        }
        assert_no_unexpected_errors();
    }
}

/// Waits until `nodes` have applied the same entries, failing if two nodes at the same
/// index hold different bytes; returns that index and the state's digest.
pub async fn same_state(nodes: &[&NamenodeHandle]) -> (u64, u32) {
    wait_for("equal state machines", Duration::from_secs(20), || async {
        let states: Vec<(u64, u32)> = nodes.iter().map(|n| n.state_digest().expect("digest")).collect();
        let first = states[0];
        // At one index every replica must hold the same bytes.
        for s in &states {
            assert!(s.0 != first.0 || s.1 == first.1, "replicas differ at index {}: {states:?}", first.0);
        }
        states.iter().all(|s| *s == first).then_some(first)
    })
    .await
}

/// The middle of `v` (the upper one of an even count): the benchmarks' figure.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Program `name` of the Python virtualenv that scripts/setup makes (the S3 clients,
/// `tpchgen-cli`); `TARN_VENV` names another.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var("TARN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/tarn/venv"));
    let p = venv.join("bin").join(name);
    assert!(p.is_file(), "{} is missing: run scripts/setup (it installs it)", p.display());
    p
}

/// The `tarn` binary built beside the test executable (`target/<profile>/tarn`).
pub fn tarn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TARN_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let candidates = [dir.join("tarn"), dir.parent().map(|d| d.join("tarn")).unwrap_or_default()];
    let bin = candidates.iter().find(|p| p.is_file()).cloned();
    bin.unwrap_or_else(|| {
        panic!("{} not built: run `cargo build --bin tarn` first (scripts/test does)", candidates[1].display())
    })
}

/// Namenodes (and datanodes) as separate `tarn namenode` / `tarn datanode` processes.
pub struct ProcCluster {
    procs: Vec<Option<Child>>,
    pub dirs: Vec<PathBuf>,
    pub addrs: Vec<String>,
    dn_procs: Vec<Option<Child>>,
    /// Each datanode's working directory (its data is in `data/`).
    pub dn_dirs: Vec<PathBuf>,
    pub dn_addrs: Vec<String>,
    /// Datanodes started from now on encrypt what they store (the default); `false` runs
    /// them without a master key (dev mode; for the encryption benchmark).
    pub encrypt_at_rest: bool,
    _dir: tempfile::TempDir,
}

impl ProcCluster {
    /// Starts `n` processes with a config from [`test_config`] adjusted by `tune`.
    pub async fn start(n: usize, tune: impl Fn(&mut NamenodeConfig)) -> ProcCluster {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pc = ProcCluster {
            procs: Vec::new(),
            dirs: Vec::new(),
            addrs: Vec::new(),
            dn_procs: Vec::new(),
            dn_dirs: Vec::new(),
            dn_addrs: Vec::new(),
            encrypt_at_rest: true,
            _dir: dir,
        };
        for i in 1..=n as u64 {
            let d = pc._dir.path().join(format!("nn{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            let mut c = test_config(i, &d.join("data"));
            if i == 1 {
                c.initial_members = vec!["1@".into()];
            }
            tune(&mut c);
            std::fs::write(d.join("tarn.toml"), toml_of(&c, &pki().security(Role::Namenode, &format!("nn{i}"))))
                .expect("write config");
            pc.dirs.push(d);
            pc.procs.push(None);
            pc.addrs.push(String::new());
            pc.spawn(i).await;
        }
        form_group(&pc.addrs).await;
        pc
    }

    async fn spawn(&mut self, id: u64) {
        let d = self.dirs[id as usize - 1].clone();
        let (child, addr) = spawn_role("namenode", &d, "info,openraft=warn").await;
        self.procs[id as usize - 1] = Some(child);
        self.addrs[id as usize - 1] = addr;
    }

    /// Starts `k` more `tarn datanode` processes and waits until the leader counts them.
    pub async fn start_datanodes(&mut self, k: usize) {
        for _ in 0..k {
            let i = self.dn_procs.len() + 1;
            let d = self._dir.path().join(format!("dn{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            let cfg = datanode_config(&d.join("data"), &self.addrs);
            #[derive(serde::Serialize)]
            struct File<'a> {
                datanode: &'a DatanodeConfig,
                security: SecurityConfig,
            }
            let mut security = pki().security(Role::Datanode, &format!("dn{i}"));
            if !self.encrypt_at_rest {
                // TLS stays on; without a master key the dev flag stores blocks in the clear.
                security.master_key_file = None;
                security.insecure_dev = true;
            }
            let text = toml::to_string(&File { datanode: &cfg, security }).expect("serialize datanode config");
            std::fs::write(d.join("tarn.toml"), text).expect("write config");
            self.dn_dirs.push(d);
            self.dn_procs.push(None);
            self.dn_addrs.push(String::new());
            self.spawn_datanode(i).await;
        }
        let live = self.dn_procs.iter().flatten().count();
        wait_live_datanodes(&self.client(), live).await;
    }

    async fn spawn_datanode(&mut self, i: usize) {
        let d = self.dn_dirs[i - 1].clone();
        let (child, addr) = spawn_role("datanode", &d, "info").await;
        self.dn_procs[i - 1] = Some(child);
        self.dn_addrs[i - 1] = addr;
    }

    /// Starts datanode `i` again on its data (after a kill).
    pub async fn restart_datanode(&mut self, i: usize) {
        self.spawn_datanode(i).await;
    }

    /// SIGKILLs datanode `i` (1-based).
    pub fn kill_datanode(&mut self, i: usize) {
        if let Some(mut c) = self.dn_procs[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Datanode `i`'s data directory.
    pub fn datanode_data(&self, i: usize) -> PathBuf {
        self.dn_dirs[i - 1].join("data")
    }

    pub fn datanode_log(&self, i: usize) -> String {
        log_tail(&self.dn_dirs[i - 1].join("datanode.log"))
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.procs[id as usize - 1].as_ref().map(|c| c.id())
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.procs[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops node `id` with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self, id: u64) {
        if let Some(mut c) = self.procs[id as usize - 1].take() {
            // SAFETY: signalling a child process we own by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Freezes node `id` with SIGSTOP: it keeps its sockets and its state but does nothing
    /// (a long GC pause or a VM stall), so its peers see it vanish.
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// Thaws a node frozen by [`ProcCluster::pause`].
    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    fn signal(&self, id: u64, sig: i32) {
        let pid = self.pid(id).unwrap_or_else(|| panic!("node {id} is not running"));
        // SAFETY: signalling a child process we own by pid.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(rc, 0, "signal {sig} to node {id}");
    }

    pub async fn restart(&mut self, id: u64) {
        let old = self.addrs[id as usize - 1].clone();
        self.spawn(id).await;
        assert_eq!(self.addrs[id as usize - 1], old, "node {id} came back on another address");
    }

    /// A client with the tests' admin certificate.
    pub fn client(&self) -> NamenodeClient {
        NamenodeClient::new(&self.addrs, &admin()).expect("client")
    }

    /// The last lines of node `id`'s log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        log_tail(&self.dirs[id as usize - 1].join("namenode.log"))
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 1..=self.dn_procs.len() {
            self.kill_datanode(i);
        }
        for i in 1..=self.procs.len() as u64 {
            self.kill(i);
        }
    }
}

/// Whether the resource manager at `addr` serves (is the active one): asked directly,
/// without following a redirect to another, within 2 s.
pub async fn rm_is_active(addr: &str) -> bool {
    use tarn_proto::rm::application_client_client::ApplicationClientClient;
    let Ok(e) = Transport::endpoint(addr) else { return false };
    let mut c = ApplicationClientClient::new(admin().channel(e));
    let mut req = tonic::Request::new(tarn_proto::rm::ListWorkersRequest {});
    req.set_timeout(Duration::from_secs(2));
    matches!(tokio::time::timeout(Duration::from_secs(2), c.list_workers(req)).await, Ok(Ok(_)))
}

/// The last 40 lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `tarn ROLE --config DIR/tarn.toml`, logging to `DIR/ROLE.log`, and returns the
/// process with the address it wrote once serving (failing the test if it exits or takes
/// over 30 s).
pub async fn spawn_role(role: &str, dir: &Path, default_log: &str) -> (Child, String) {
    let addr_file = dir.join("addr");
    let log_path = dir.join(format!("{role}.log"));
    let _ = std::fs::remove_file(&addr_file);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
    let mut child = Command::new(tarn_bin())
        .arg(role)
        .arg("--config")
        .arg(dir.join("tarn.toml"))
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", std::env::var("TARN_TEST_NODE_LOG").unwrap_or_else(|_| default_log.into()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn tarn {role}: {e}"));
    let start = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            return (child, a);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{role} in {} exited with {status}:\n{}", dir.display(), log_tail(&log_path));
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{role} did not serve:\n{}", log_tail(&log_path));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config file with `c` as its `[namenode]` table and `security` as `[security]`.
fn toml_of(c: &NamenodeConfig, security: &SecurityConfig) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        namenode: &'a NamenodeConfig,
        security: &'a SecurityConfig,
    }
    toml::to_string(&File { namenode: c, security }).expect("serialize namenode config")
}
