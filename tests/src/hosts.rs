//! [`HostBed`]: bare hosts as containers on a private docker network
//! (`deploy/docker/hosts-compose.yml`: a shell and its tools, no tarn), for
//! `deploy/ssh/tarn-cluster`'s docker transport to install, configure and run a cluster
//! on, as it does on real hosts over ssh. Torn down with its data on drop, also when the
//! test panics; left behind by a killed test process, removed by the next start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::compose::{docker, reap_orphans, require_docker, run, run_ok, Output, DOCKER_TIMEOUT};

/// Every host of the compose file.
pub const HOSTS: [&str; 9] = ["m1", "m2", "m3", "c1", "c2", "c3", "c4", "t1", "gw"];

/// The hosts (see the module docs) and a directory for the script's files.
pub struct HostBed {
    project: String,
    image: String,
    dir: tempfile::TempDir,
    containers: HashMap<String, String>,
    started: Instant,
    /// The binary `-b` gives the script (`init`, `install`, `add`).
    tarn: PathBuf,
}

fn compose_file() -> PathBuf {
    crate::compose::deploy_dir().join("hosts-compose.yml")
}

/// `deploy/ssh/tarn-cluster` of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ssh/tarn-cluster")
}

impl HostBed {
    /// Builds the host image (`build-image --host`) and starts every host.
    pub async fn start() -> HostBed {
        static N: AtomicUsize = AtomicUsize::new(0);
        require_docker().await;
        reap_orphans().await;
        let t0 = Instant::now();
        let image = run_ok(
            Command::new(crate::compose::deploy_dir().join("build-image")).arg("--host").arg(crate::tarn_bin()),
            DOCKER_TIMEOUT,
        )
        .await
        .text()
        .trim()
        .to_string();
        let dir = tempfile::Builder::new().prefix("tarn-hosts-").tempdir().expect("tempdir");
        let project = format!("tarn-hosts-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut bed = HostBed {
            project,
            image,
            dir,
            containers: HashMap::new(),
            started: Instant::now(),
            tarn: crate::tarn_bin(),
        };
        run_ok(bed.compose_cmd().args(["up", "-d", "--no-build"]), DOCKER_TIMEOUT).await;
        for h in HOSTS {
            let id = run_ok(bed.compose_cmd().args(["ps", "-q", h]), DOCKER_TIMEOUT).await.text().trim().to_string();
            assert!(!id.is_empty(), "{}: no container for host {h}", bed.project);
            bed.containers.insert(h.to_string(), id);
        }
        eprintln!("hosts: {} up in {:.1?} (image {})", bed.project, t0.elapsed(), bed.image);
        bed
    }

    fn compose_cmd(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f")
            .arg(compose_file())
            .args(["-p", &self.project, "--ansi", "never"])
            .env("TARN_HOST_IMAGE", &self.image)
            .env("TARN_OWNER", format!("pid-{}", std::process::id()));
        cmd
    }

    /// Makes the script install `bin` (default: the tarn beside the tests).
    pub fn set_binary(&mut self, bin: &Path) {
        self.tarn = bin.to_path_buf();
    }

    /// A directory of this bed's own (inventory, the script's files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The container of `host`: the ADDRESS column of an inventory.
    pub fn container(&self, host: &str) -> &str {
        self.containers.get(host).unwrap_or_else(|| panic!("no host {host} (hosts: {HOSTS:?})"))
    }

    /// Runs a shell script as root on `host`, within `timeout`.
    pub async fn sh(&self, host: &str, script: &str, timeout: Duration) -> Output {
        run(docker().args(["exec", "-u", "0", self.container(host), "sh", "-c", script]), timeout).await
    }

    /// Starts a shell script as root on `host`, its output piped (a client running while
    /// the test does other things).
    pub fn spawn_sh(&self, host: &str, script: &str) -> tokio::process::Child {
        docker()
            .args(["exec", "-u", "0", self.container(host), "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("docker exec")
    }

    /// `deploy/ssh/tarn-cluster -t docker -i DIR/inventory -d DIR/cluster ARGS`, within
    /// `timeout`; its output goes to this test's output as it comes.
    pub async fn deploy(&self, args: &[&str], timeout: Duration) -> Output {
        let t0 = Instant::now();
        let mut cmd = Command::new(script());
        cmd.args(["-t", "docker", "-i"])
            .arg(self.dir().join("inventory"))
            .arg("-d")
            .arg(self.dir().join("cluster"))
            .arg("-b")
            .arg(&self.tarn)
            .args(args)
            .env("TARN_HEALTH_WAIT", timeout.as_secs().to_string());
        let o = run(&mut cmd, timeout).await;
        eprintln!("tarn-cluster {} ({:?} in {:.1?}):\n{}{}", args.join(" "), o.code, t0.elapsed(), o.text(), o.stderr);
        o
    }
}

impl Drop for HostBed {
    fn drop(&mut self) {
        let compose = |args: &[&str]| {
            std::process::Command::new("docker-compose")
                .arg("-f")
                .arg(compose_file())
                .args(["-p", &self.project, "--ansi", "never"])
                .env("TARN_HOST_IMAGE", &self.image)
                .args(args)
                .stdin(Stdio::null())
                .output()
        };
        if std::thread::panicking() {
            // The roles' logs, for the failure's report.
            for (h, id) in &self.containers {
                if let Ok(o) = std::process::Command::new("docker")
                    .args(["exec", id, "sh", "-c", "tail -n 30 /var/log/tarn/*.log 2>/dev/null"])
                    .stdin(Stdio::null())
                    .output()
                {
                    eprintln!("hosts: {h}:\n{}", String::from_utf8_lossy(&o.stdout));
                }
            }
        }
        match compose(&["down", "-v", "--timeout", "2"]) {
            Ok(o) if o.status.success() => {
                eprintln!("hosts: {} removed after {:.1?}", self.project, self.started.elapsed())
            }
            Ok(o) => {
                eprintln!(
                    "hosts: `down` of {} failed ({}): {}",
                    self.project,
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                )
            }
            Err(e) => eprintln!("hosts: cannot run docker-compose down for {}: {e}", self.project),
        }
    }
}
