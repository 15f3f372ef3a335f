//! The cluster harness every integration test and benchmark uses.
//!
//! - [`Cluster`] runs namenodes in this process (fast; stop and restart a node).
//! - [`ProcCluster`] runs each namenode as a real `tarn namenode` process, for faults that
//!   need one: SIGKILL, restart of everything.
//!
//! Both bind port 0, form the group through the admin API (node 1 bootstraps, the others
//! join as learners and are promoted), and wait on conditions with deadlines, never sleeps.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tarn_client::NamenodeClient;
use tarn_namenode::{NamenodeConfig, NamenodeHandle};

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
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
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
    let client = NamenodeClient::new(&addrs[..1]).expect("client");
    wait_for("node 1 to lead", Duration::from_secs(20), || async {
        client.cluster_status().await.ok().filter(|s| s.leader_id == 1).map(|_| ())
    })
    .await;
    for (i, a) in addrs.iter().enumerate().skip(1) {
        client.add_learner(i as u64 + 1, a).await.expect("add learner");
    }
    if addrs.len() > 1 {
        let voters = (1..=addrs.len() as u64).collect();
        client.change_membership(voters, false).await.expect("change membership");
    }
    NamenodeClient::new(addrs).expect("client")
}

/// Namenodes in this process.
pub struct Cluster {
    pub nodes: Vec<Option<NamenodeHandle>>,
    pub configs: Vec<NamenodeConfig>,
    pub addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` namenodes, `tune` adjusting each configuration.
    pub async fn start(n: usize, tune: impl Fn(&mut NamenodeConfig)) -> Cluster {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        let mut addrs = Vec::new();
        for i in 1..=n as u64 {
            let mut c = test_config(i, &dir.path().join(format!("nn{i}")));
            if i == 1 {
                c.initial_members = vec!["1@".into()];
            }
            tune(&mut c);
            let h = tarn_namenode::start(c.clone()).await.expect("start namenode");
            addrs.push(h.addr.clone());
            nodes.push(Some(h));
            configs.push(c);
        }
        form_group(&addrs).await;
        Cluster { nodes, configs, addrs, _dir: dir }
    }

    pub fn client(&self) -> NamenodeClient {
        NamenodeClient::new(&self.addrs).expect("client")
    }

    /// Starts a new node `id` that is not yet a member (join it with the admin API).
    pub async fn start_unjoined(&mut self, id: u64) -> String {
        assert_eq!(id as usize, self.nodes.len() + 1, "node ids are dense");
        let c = test_config(id, &self._dir.path().join(format!("nn{id}")));
        let h = tarn_namenode::start(c.clone()).await.expect("start namenode");
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
        let c = self.configs[id as usize - 1].clone();
        // The stopped node's storage is released as its tasks wind down.
        let h = wait_for("the namenode to restart", Duration::from_secs(20), || {
            let c = c.clone();
            async move { tarn_namenode::start(c).await.ok() }
        })
        .await;
        assert_eq!(h.addr, self.addrs[id as usize - 1], "restarted on another address");
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

    pub async fn shutdown(mut self) {
        for i in 1..=self.nodes.len() as u64 {
            self.stop(i).await;
        }
    }
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

/// Namenodes as separate `tarn namenode` processes.
pub struct ProcCluster {
    procs: Vec<Option<Child>>,
    pub dirs: Vec<PathBuf>,
    pub addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl ProcCluster {
    /// Starts `n` processes with a config from [`test_config`] adjusted by `tune`.
    pub async fn start(n: usize, tune: impl Fn(&mut NamenodeConfig)) -> ProcCluster {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pc = ProcCluster { procs: Vec::new(), dirs: Vec::new(), addrs: Vec::new(), _dir: dir };
        for i in 1..=n as u64 {
            let d = pc._dir.path().join(format!("nn{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            let mut c = test_config(i, &d.join("data"));
            if i == 1 {
                c.initial_members = vec!["1@".into()];
            }
            tune(&mut c);
            std::fs::write(d.join("tarn.toml"), toml_of(&c)).expect("write config");
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
        let addr_file = d.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("namenode.log")).expect("log file");
        let child = Command::new(tarn_bin())
            .arg("namenode")
            .arg("--config")
            .arg(d.join("tarn.toml"))
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", std::env::var("TARN_TEST_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tarn namenode");
        self.procs[id as usize - 1] = Some(child);
        let start = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                break a;
            }
            let child = self.procs[id as usize - 1].as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("namenode {id} exited with {status}:\n{}", self.log_tail(id));
            }
            assert!(start.elapsed() < Duration::from_secs(30), "namenode {id} did not serve:\n{}", self.log_tail(id));
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.addrs[id as usize - 1] = addr;
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

    pub async fn restart(&mut self, id: u64) {
        let old = self.addrs[id as usize - 1].clone();
        self.spawn(id).await;
        assert_eq!(self.addrs[id as usize - 1], old, "node {id} came back on another address");
    }

    pub fn client(&self) -> NamenodeClient {
        NamenodeClient::new(&self.addrs).expect("client")
    }

    /// The last lines of node `id`'s log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.dirs[id as usize - 1].join("namenode.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 1..=self.procs.len() as u64 {
            self.kill(i);
        }
    }
}

/// A config file with `c` as its `[namenode]` table.
fn toml_of(c: &NamenodeConfig) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        namenode: &'a NamenodeConfig,
    }
    toml::to_string(&File { namenode: c }).expect("serialize namenode config")
}
