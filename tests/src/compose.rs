//! [`ComposeCluster`]: a cluster in the seed's shape as containers on a private docker
//! network (`deploy/docker/`): masters m1..m3 (namenode, resource manager, Spark Connect),
//! core nodes c1..c3 (datanode, worker), task nodes t1, t2 (worker) and the S3 gateway gw,
//! each its own host with its own address, mutual TLS and encryption at rest on.
//!
//! Faults are real: `kill` is SIGKILL of a container, `disconnect` takes a container off
//! the network (its peers' connections to it go silent, as with a cut cable), `connect`
//! puts it back. Client commands run inside the network ([`ComposeCluster::client`]:
//! `docker exec` in the gateway container, which holds the admin certificate): this
//! process talks only to the docker daemon, never to a container's address.
//!
//! Each cluster is a compose project of its own (`tarn-test-<pid>-<n>`), torn down with its
//! data on drop, also when the test panics. Clusters left behind by a test process that was
//! killed are removed by the next [`ComposeCluster::start`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

/// Every service of the compose file.
pub const SERVICES: [&str; 9] = ["m1", "m2", "m3", "c1", "c2", "c3", "t1", "t2", "gw"];
/// The service whose container runs client commands.
pub const CLIENT_SERVICE: &str = "gw";
/// A docker or compose command that takes longer than this is stuck.
pub(crate) const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
/// From `up` to a namenode leader and three live datanodes (containers start in about a
/// second, the group forms in one more; the rest is for a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The label on every container naming who started it (`pid-<pid>` for the harness).
const OWNER_LABEL: &str = "tarn.testbed.owner";

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code (`None`: killed by a signal, or timed out).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` to completion within `timeout` (killing it after that).
pub(crate) async fn run(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => {
            Output { code: o.status.code(), stdout: o.stdout, stderr: String::from_utf8_lossy(&o.stderr).into() }
        }
        Ok(Err(e)) => panic!("waiting for {cmd:?}: {e}"),
        Err(_) => Output { code: None, stdout: Vec::new(), stderr: format!("timed out after {timeout:?}") },
    }
}

/// Runs `cmd` and panics with what it printed unless it succeeds.
pub(crate) async fn run_ok(cmd: &mut Command, timeout: Duration) -> Output {
    let o = run(cmd, timeout).await;
    assert!(o.ok(), "{cmd:?} failed ({:?}):\n{}\n{}", o.code, o.text(), o.stderr);
    o
}

pub(crate) fn docker() -> Command {
    Command::new("docker")
}

/// `deploy/docker/` of this checkout.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker")
}

/// Panics unless the docker daemon answers: the compose tests need it (CI has it), and a
/// skipped test would pass without testing anything.
pub(crate) async fn require_docker() {
    let o = run(docker().args(["version", "--format", "{{.Server.Version}}"]), Duration::from_secs(30)).await;
    assert!(
        o.ok(),
        "docker is unavailable ({:?}): the compose cluster tests need a running docker engine and \
         docker-compose\n{}",
        o.code,
        o.stderr
    );
    let o = run(Command::new("docker-compose").arg("version"), Duration::from_secs(30)).await;
    assert!(o.ok(), "docker-compose is unavailable ({:?}):\n{}", o.code, o.stderr);
}

/// Removes the containers and networks of test clusters whose process is gone (killed by
/// the test runner's timeout, so its drop never ran). Clusters of live processes, and those
/// started by hand, are left alone.
pub(crate) async fn reap_orphans() {
    let o = run_ok(
        docker().args([
            "ps",
            "-a",
            "--filter",
            &format!("label={OWNER_LABEL}"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}} {{{{.Label \"com.docker.compose.project\"}}}}"),
        ]),
        DOCKER_TIMEOUT,
    )
    .await;
    let mut orphans: HashMap<String, Vec<String>> = HashMap::new();
    for line in o.text().lines() {
        let mut f = line.split_whitespace();
        let (Some(id), Some(owner), Some(project)) = (f.next(), f.next(), f.next()) else { continue };
        let Some(pid) = owner.strip_prefix("pid-").and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            orphans.entry(project.to_string()).or_default().push(id.to_string());
        }
    }
    for (project, ids) in orphans {
        eprintln!("compose: removing {project}, left behind by a test process that is gone");
        run(docker().args(["rm", "-f", "-v"]).args(&ids), DOCKER_TIMEOUT).await;
        run(docker().args(["network", "rm", &format!("{project}_tarn")]), DOCKER_TIMEOUT).await;
    }
}

/// A cluster of containers (see the module docs). Dropping it removes them and their data.
pub struct ComposeCluster {
    project: String,
    network: String,
    /// gen-config's directory: configuration, data, the client's `/io`, `compose.env`.
    dir: tempfile::TempDir,
    /// Container id of each service.
    containers: HashMap<String, String>,
    started: Instant,
}

impl ComposeCluster {
    /// Builds the image from the `tarn` binary beside the tests, lays out the
    /// configuration (`tarn init`), starts every service and waits until the namenode group
    /// has a leader and three datanodes are live.
    pub async fn start() -> ComposeCluster {
        static N: AtomicUsize = AtomicUsize::new(0);
        require_docker().await;
        reap_orphans().await;
        let deploy = deploy_dir();
        let t0 = Instant::now();
        let image = run_ok(
            Command::new(deploy.join("build-image")).args(["--tag", "tarn:test-latest"]).arg(crate::tarn_bin()),
            DOCKER_TIMEOUT,
        )
        .await
        .text()
        .trim()
        .to_string();
        let image_time = t0.elapsed();
        let dir = tempfile::Builder::new().prefix("tarn-compose-").tempdir().expect("tempdir");
        run_ok(Command::new(deploy.join("gen-config")).args(["--image", &image]).arg(dir.path()), DOCKER_TIMEOUT).await;
        let project = format!("tarn-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut c = ComposeCluster {
            network: format!("{project}_tarn"),
            project,
            dir,
            containers: HashMap::new(),
            started: Instant::now(),
        };
        let t1 = Instant::now();
        c.compose(&["up", "-d", "--no-build"]).await;
        for s in SERVICES {
            let id = c.compose(&["ps", "-q", s]).await.text().trim().to_string();
            assert!(!id.is_empty(), "{}: no container for service {s}", c.project);
            c.containers.insert(s.to_string(), id);
        }
        let up_time = t1.elapsed();
        let leader = c.wait_ready(READY_TIMEOUT).await;
        eprintln!(
            "compose: {} ready in {:.1?} (image {image} in {image_time:.1?}, containers up in {up_time:.1?}); \
             leader namenode {leader}",
            c.project,
            t0.elapsed(),
        );
        c
    }

    /// The compose project's name.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The host directory that is `/io` in the client container (files to put, files got).
    pub fn io_dir(&self) -> PathBuf {
        self.dir.path().join("io")
    }

    fn compose_cmd(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--env-file")
            .arg(self.dir.path().join("compose.env"))
            .arg("-f")
            .arg(deploy_dir().join("docker-compose.yml"))
            .args(["-p", &self.project, "--ansi", "never"])
            .env("TARN_OWNER", format!("pid-{}", std::process::id()));
        cmd
    }

    async fn compose(&self, args: &[&str]) -> Output {
        run_ok(self.compose_cmd().args(args), DOCKER_TIMEOUT).await
    }

    /// The container id of `service`.
    pub fn container(&self, service: &str) -> &str {
        self.containers.get(service).unwrap_or_else(|| panic!("no service {service} (services: {SERVICES:?})"))
    }

    /// Runs `tarn ARGS` in `service`'s container (`docker exec`), within `timeout`.
    pub async fn exec(&self, service: &str, args: &[&str], timeout: Duration) -> Output {
        run(docker().arg("exec").arg(self.container(service)).arg("/usr/local/bin/tarn").args(args), timeout).await
    }

    /// Runs `tarn ARGS` as the cluster admin inside the network (in the gateway's container;
    /// its `/io` is [`ComposeCluster::io_dir`]).
    pub async fn client(&self, args: &[&str]) -> Output {
        self.exec(CLIENT_SERVICE, args, Duration::from_secs(90)).await
    }

    /// [`ComposeCluster::client`], panicking with what it printed unless it succeeds.
    pub async fn client_ok(&self, args: &[&str]) -> Output {
        let o = self.client(args).await;
        assert!(o.ok(), "tarn {} failed ({:?}):\n{}\n{}", args.join(" "), o.code, o.text(), o.stderr);
        o
    }

    /// SIGKILL of `service`'s container (its process and network namespace go at once).
    pub async fn kill(&self, service: &str) {
        run_ok(docker().args(["kill", "--signal", "KILL", self.container(service)]), DOCKER_TIMEOUT).await;
    }

    /// Starts `service`'s stopped container again (same data, same name on the network).
    pub async fn start_service(&self, service: &str) {
        run_ok(docker().args(["start", self.container(service)]), DOCKER_TIMEOUT).await;
    }

    /// Takes `service` off the network: packets to and from it go nowhere and its name no
    /// longer resolves; the process keeps running.
    pub async fn disconnect(&self, service: &str) {
        run_ok(docker().args(["network", "disconnect", &self.network, self.container(service)]), DOCKER_TIMEOUT).await;
    }

    /// Puts `service` back on the network under its name (its address may change).
    pub async fn connect(&self, service: &str) {
        run_ok(
            docker().args(["network", "connect", "--alias", service, &self.network, self.container(service)]),
            DOCKER_TIMEOUT,
        )
        .await;
    }

    /// `service`'s address on the cluster's network (it may change when it restarts).
    pub async fn ip(&self, service: &str) -> String {
        let f = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
        run_ok(docker().args(["inspect", "-f", f, self.container(service)]), DOCKER_TIMEOUT)
            .await
            .text()
            .trim()
            .to_string()
    }

    /// A program run on this machine as a client host on the cluster's network: the
    /// network's addresses are reachable from here, and the program sees `/etc/hosts`
    /// naming every service (its own mount namespace: `unshare`, as root), so TLS checks
    /// the names the certificates carry. Its environment has the admin's credentials
    /// (`TARN_CONFIG`, a copy of `admin.toml` with this machine's paths), the gateway's S3
    /// key (`AWS_*`, the cluster CA as `AWS_CA_BUNDLE`), and the Spark Connect token of
    /// `connect_host` in `SPARK_REMOTE` (the CA as `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`).
    pub async fn on_network(&self, connect_host: &str, program: &Path) -> Command {
        let dir = self.dir.path().join("host");
        std::fs::create_dir_all(&dir).expect("host dir");
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for s in SERVICES {
            hosts.push_str(&format!("{} {s}\n", self.ip(s).await));
        }
        std::fs::write(dir.join("hosts"), hosts).expect("hosts file");
        let etc = self.dir.path().join("etc");
        let local = |f: &str| {
            std::fs::read_to_string(etc.join(f)).expect(f).replace("/etc/tarn/", &format!("{}/", etc.display()))
        };
        std::fs::write(dir.join("admin.toml"), local("admin.toml")).expect("admin.toml");
        let key = |file: &str, table: &str| -> (String, String) {
            let v: toml::Value = toml::from_str(&local(file)).expect(file);
            let k = &v[table]["access_keys"][0];
            (k["access_key"].as_str().unwrap().to_string(), k["secret_key"].as_str().unwrap().to_string())
        };
        let (s3_id, s3_secret) = key("gateway-1.toml", "gateway");
        let (c_id, c_secret) = key("connect-1.toml", "connect");
        let ca = etc.join("tls/ca.pem");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(dir.join("hosts"))
        .arg(program)
        .env("TARN_CONFIG", dir.join("admin.toml"))
        .env("AWS_ACCESS_KEY_ID", s3_id)
        .env("AWS_SECRET_ACCESS_KEY", s3_secret)
        .env("AWS_CA_BUNDLE", &ca)
        .env("AWS_ENDPOINT_URL", "https://gw:9000")
        .env("AWS_REGION", "us-east-1")
        .env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", &ca)
        .env("SPARK_REMOTE", tarn_connect::remote_url(connect_host, 15002, &format!("{c_id}:{c_secret}"), true));
        cmd
    }

    /// The master whose resource manager is the active one (the last to say so in its log).
    pub async fn active_rm_master(&self) -> Option<String> {
        let mut best: Option<(String, String)> = None;
        for m in ["m1", "m2", "m3"] {
            let o = run(docker().args(["logs", "--timestamps", self.container(m)]), DOCKER_TIMEOUT).await;
            let text = format!("{}{}", o.text(), o.stderr);
            if let Some(line) = text.lines().rfind(|l| l.contains("this resource manager is the active one")) {
                let ts = line.split_whitespace().next().unwrap_or_default().to_string();
                if best.as_ref().is_none_or(|(t, _)| ts > *t) {
                    best = Some((ts, m.to_string()));
                }
            }
        }
        best.map(|(_, m)| m)
    }

    /// The last `lines` lines `service` logged.
    pub async fn logs(&self, service: &str, lines: usize) -> String {
        let o =
            run(docker().args(["logs", "--tail", &lines.to_string(), self.container(service)]), DOCKER_TIMEOUT).await;
        format!("{}{}", o.text(), o.stderr)
    }

    /// `tarn admin status` as the leader answers it (a follower knows no member's matched
    /// index): the leader's id, its last log index, each member's matched index. `None`
    /// while no leader answers.
    pub async fn status(&self) -> Option<Status> {
        let s = self.status_from(None).await?;
        if s.answered_by == s.leader && s.state == "Leader" {
            return Some(s);
        }
        let s = self.status_from(Some(&format!("m{}:8020", s.leader))).await?;
        (s.answered_by == s.leader && s.state == "Leader").then_some(s)
    }

    /// `tarn admin status`, answered by `namenode` (default: the first that answers).
    async fn status_from(&self, namenode: Option<&str>) -> Option<Status> {
        let mut args = vec!["admin", "status"];
        if let Some(n) = namenode {
            args.extend(["--namenode", n]);
        }
        let o = self.exec(CLIENT_SERVICE, &args, Duration::from_secs(30)).await;
        if !o.ok() {
            return None;
        }
        Status::parse(&o.text())
    }

    /// Live datanodes by `tarn admin report` (`None` while no leader answers).
    pub async fn live_datanodes(&self) -> Option<usize> {
        let o = self.exec(CLIENT_SERVICE, &["admin", "report"], Duration::from_secs(30)).await;
        if !o.ok() {
            return None;
        }
        let text = o.text();
        let line = text.lines().find_map(|l| l.strip_prefix("datanodes: "))?;
        line.split_whitespace().next()?.parse().ok()
    }

    /// Waits until a leader answers and three datanodes are live; returns the leader's id.
    pub async fn wait_ready(&self, timeout: Duration) -> u64 {
        crate::wait_for(&format!("{}: a namenode leader and 3 live datanodes", self.project), timeout, || async {
            let leader = self.status().await?.leader;
            (self.live_datanodes().await? == 3).then_some(leader)
        })
        .await
    }
}

/// What `tarn admin status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub leader: u64,
    /// The namenode that answered, and its Raft state (`Leader`, `Follower`, ...).
    pub answered_by: u64,
    pub state: String,
    pub last_log: u64,
    /// (node id, matched log index) of each member, as the answering node knows them.
    pub members: Vec<(u64, u64)>,
}

impl Status {
    /// Parses `tarn admin status` (`None` without a leader).
    pub fn parse(text: &str) -> Option<Status> {
        let mut lines = text.lines();
        // leader:  namenode 1 at nn1:8020 (term 2)
        let leader: u64 = lines.next()?.strip_prefix("leader:")?.split_whitespace().nth(1)?.parse().ok()?;
        // answered by namenode 1 (Leader), last log 5, applied 5, snapshot 0
        let answered = lines.next()?.strip_prefix("answered by namenode ")?;
        let (who, rest) = answered.split_once(" (")?;
        let (state, rest) = rest.split_once("), ")?;
        let last_log = rest.split(", ").find_map(|p| p.strip_prefix("last log "))?.parse().ok()?;
        // The format line, then the column heads.
        lines.by_ref().find(|l| l.trim_start().starts_with("ID"))?;
        let members = lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.parse().ok()?, f.last()?.parse().ok()?))
            })
            .collect();
        (leader != 0).then(|| Status {
            leader,
            answered_by: who.parse().unwrap_or(0),
            state: state.to_string(),
            last_log,
            members,
        })
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        // Blocking commands: drop may run on a runtime that is shutting down.
        let compose = |args: &[&str]| {
            let mut cmd = std::process::Command::new("docker-compose");
            cmd.arg("--env-file")
                .arg(self.dir.path().join("compose.env"))
                .arg("-f")
                .arg(deploy_dir().join("docker-compose.yml"))
                .args(["-p", &self.project, "--ansi", "never"])
                .args(args)
                .stdin(Stdio::null());
            cmd.output()
        };
        if std::thread::panicking() {
            // What each node said last, for the failure's report.
            if let Ok(o) = compose(&["logs", "--no-color", "--tail", "40"]) {
                eprintln!("compose: last log lines of {}:\n{}", self.project, String::from_utf8_lossy(&o.stdout));
            }
        }
        match compose(&["down", "-v", "--timeout", "2"]) {
            Ok(o) if o.status.success() => {
                eprintln!("compose: {} removed after {:.1?}", self.project, self.started.elapsed())
            }
            Ok(o) => eprintln!(
                "compose: `down` of {} failed ({}): {}",
                self.project,
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("compose: cannot run docker-compose down for {}: {e}", self.project),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_status() {
        let text = "leader:  namenode 2 at nn2:8020 (term 3)\n\
                    answered by namenode 2 (Leader), last log 17, applied 17, snapshot 0\n\
                    format:  1\n  \
                    ID  ADDRESS                  ROLE          MATCHED\n   \
                    1  nn1:8020                 voter               9\n   \
                    2  nn2:8020                 voter              17\n   \
                    3  nn3:8020                 voter              17\n";
        let s = Status::parse(text).expect("a leader");
        let members = vec![(1, 9), (2, 17), (3, 17)];
        let want = Status { leader: 2, answered_by: 2, state: "Leader".into(), last_log: 17, members };
        assert_eq!(s, want);
        assert_eq!(
            Status::parse(
                "leader:  none known (term 1)\nanswered by namenode 1 (Candidate), last log 3, applied 3, snapshot 0\n"
            ),
            None
        );
    }
}
