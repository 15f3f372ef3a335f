//! `tarn demo`: the seed's use case end to end on the appliance (or a running cluster).
//!
//! 1. The appliance: the one `tarn up` serves on `--data-dir`, else one the demo starts
//!    (a child `tarn up`, stopped again at the end; the data stays).
//! 2. A month of an e-commerce shop (`demo_data`), deterministic by `--seed`, about
//!    `--size-mb` of parquet, uploaded through the S3 gateway to `s3://my-bucket/`:
//!    `customers/`, `products/`, `events/` and `customer-data/` (the purchases).
//! 3. The seed's PySpark script (`examples/customer_analytics.py`), verbatim, through
//!    Spark Connect: `s3://my-bucket/processed-data/`.
//! 4. The other analyses the seed names, as PySpark (`examples/shop_analyses.py`, to
//!    `demo/pyspark/`) and as one `tarn job submit --sql` job
//!    (`examples/shop_analyses.sql`, to `demo/sql/`); the two must agree.
//! 5. A summary read from the results.
//!
//! Running it again works: it clears its own outputs first, as a user would before
//! rerunning the seed's script (whose writes fail on an existing path).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use indicatif::ProgressBar;
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncBufReadExt;

use crate::config::{default_data_dir, TarnConfig};
use crate::creds::ClientOpts;
use crate::demo_data::{self, Shape};
use crate::out::outln;

/// The bucket the seed's script reads and writes (its paths are not changed).
pub const BUCKET: &str = "my-bucket";
const SEED_SCRIPT: &str = include_str!("../../examples/customer_analytics.py");
const ANALYSES_PY: &str = include_str!("../../examples/shop_analyses.py");
const ANALYSES_SQL: &str = include_str!("../../examples/shop_analyses.sql");
/// What the demo writes in the bucket (and clears before it runs again).
const DEMO_DIRS: [&str; 6] = ["customers", "products", "events", "customer-data", "processed-data", "demo"];
/// The bucket's mark: the demo made it, so what is under DEMO_DIRS is the demo's.
const DEMO_XATTR: &str = "tarn.demo";
/// The analyses both scripts write, with the columns that identify a row of each.
const ANALYSES: [(&str, &[&str]); 3] = [
    ("cart_abandonment", &["event_date", "category"]),
    ("customer_lifetime_value", &["customer_id"]),
    ("also_bought", &["product_id", "recommendation_rank"]),
];

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The appliance's directory: the demo uses the `tarn up` serving it, or starts one.
    #[arg(long, default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// About how much data to make (MB of parquet; the month's events and purchases).
    #[arg(long, default_value_t = 256.0)]
    size_mb: f64,
    /// The data's seed: the same seed and size make the same files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A Python with pyspark-client (default: the one scripts/setup installs,
    /// ~/.cache/tarn/venv or $TARN_VENV, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Executor containers of the SQL job.
    #[arg(long, default_value_t = 2)]
    executors: u32,
    /// For an appliance the demo starts: its namenode address (`tarn up --listen`); port 0
    /// picks every port (the S3, resource manager and Spark Connect ones too).
    #[arg(long)]
    listen: Option<String>,
    /// The S3 endpoint of a running cluster (default: the appliance's); the key comes
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// A running cluster's Spark Connect address with its token, as SPARK_REMOTE takes it
    /// (default: the appliance's).
    #[arg(long)]
    spark_remote: Option<String>,
    /// Replace what s3://my-bucket/ holds under the demo's prefixes though an earlier demo
    /// did not make the bucket.
    #[arg(long)]
    force: bool,
    /// Give up on a PySpark script or the SQL job that runs longer than this (seconds).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    step_timeout: u64,
    /// Also write the generated files under this local directory (for checks).
    #[arg(long, hide = true)]
    write_local: Option<PathBuf>,
    #[command(flatten)]
    conn: ClientOpts,
}

/// What the demo's clients need: where S3 and Spark Connect are, a key, the CA.
#[derive(Debug, Clone, Default)]
struct Endpoints {
    s3: String,
    access_key: String,
    secret_key: String,
    spark_remote: String,
    ca: Option<PathBuf>,
}

/// A `tarn up` the demo started.
struct Child {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Child {
    /// Stops it as Ctrl-C would (its data stays), within a minute; else kills it.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a pid we own (our child, not yet reaped).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGINT);
            }
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            eprintln!("the appliance did not stop within 60 s; killing it (log: {})", self.log.display());
            let _ = self.child.kill().await;
        }
    }
}

fn step(n: usize, what: &str) {
    eprintln!("\n[{n}/6] {what}");
}

/// `tarn job`'s spinner, ticking by itself.
fn spinner(msg: String) -> ProgressBar {
    let pb = crate::job_cmd::spinner();
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg);
    pb
}

fn done(what: &str, t: Instant) -> Duration {
    let d = t.elapsed();
    eprintln!("  {what} ({:.1} s)", d.as_secs_f64());
    d
}

pub async fn run(a: DemoArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    if !(0.01..=100_000.0).contains(&a.size_mb) {
        anyhow::bail!("--size-mb {}: give a size from 0.01 to 100000 (MB)", a.size_mb);
    }
    // Before anything starts: PySpark must be there.
    let py = python(&a).await?;
    step(1, "The appliance");
    let t = Instant::now();
    let cfg_path = a.conn.config.clone().unwrap_or_else(|| a.data_dir.join("tarn.toml"));
    let mut conn = a.conn.clone();
    conn.config = Some(cfg_path.clone());
    let (child, endpoints) = match running(&conn).await {
        Some(cfg) => {
            let e = endpoints_of(&cfg, &a)?;
            eprintln!("  using the cluster of {} (S3 {})", cfg_path.display(), e.s3);
            (None, e)
        }
        None => {
            let (child, e) = start_appliance(&a).await?;
            (Some(child), e)
        }
    };
    let mut timings = vec![("appliance", done("ready", t))];
    let out = demo(&a, &py, &conn, &endpoints, &mut timings).await;
    if let Some(c) = child {
        eprintln!("\nstopping the appliance the demo started (its data stays in {})", a.data_dir.display());
        c.stop().await;
    }
    let summary = out?;
    outln!("{summary}")?;
    outln!("Timings:")?;
    for (what, d) in &timings {
        outln!("  {what:<28} {:>7.1} s", d.as_secs_f64())?;
    }
    outln!("  {:<28} {:>7.1} s", "total", started.elapsed().as_secs_f64())?;
    Ok(0)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The configuration at `conn`'s path if the cluster it names answers (with the
/// command's credentials: `--insecure-dev` too).
async fn running(conn: &ClientOpts) -> Option<TarnConfig> {
    let cfg = TarnConfig::load(conn.config.as_deref()?).ok()?;
    let transport = conn.transport().ok()?;
    let retry = tarn_client::RetryPolicy { deadline: Duration::from_secs(3), ..Default::default() };
    let nn = tarn_client::NamenodeClient::new(&cfg.client.namenodes, &transport).ok()?.with_retry(retry);
    nn.get_file_info("/", false).await.ok().map(|_| cfg)
}

/// A running cluster's endpoints: the flags, else its configuration's.
fn endpoints_of(cfg: &TarnConfig, a: &DemoArgs) -> anyhow::Result<Endpoints> {
    let key = cfg.up.user_key.clone().or_else(|| cfg.gateway.access_keys.first().cloned());
    let tls = cfg.gateway.tls.is_some();
    let local = |listen: &str| listen.replace("0.0.0.0", "127.0.0.1");
    let s3 = match &a.s3_endpoint {
        Some(e) => e.clone(),
        None => format!("{}://{}", if tls { "https" } else { "http" }, local(&cfg.gateway.listen)),
    };
    // Keys in the environment may be another service's: they count only with --s3-endpoint.
    let env_key = (env_var("AWS_ACCESS_KEY_ID"), env_var("AWS_SECRET_ACCESS_KEY"));
    let (access_key, secret_key) = match env_key {
        (Some(id), Some(secret)) if a.s3_endpoint.is_some() => (id, secret),
        _ => {
            let k = key.context("no S3 key: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")?;
            (k.access_key, k.secret_key)
        }
    };
    let spark_remote = match &a.spark_remote {
        Some(r) => r.clone(),
        None => {
            let port = cfg.connect.listen.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(15002);
            tarn_connect::remote_url(
                "localhost",
                port,
                &format!("{access_key}:{secret_key}"),
                cfg.connect.tls.is_some() || tls,
            )
        }
    };
    // The CA: the cluster's (its configuration's), or for another endpoint the one its
    // clients are given.
    let ca = env_var("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")
        .filter(|_| a.spark_remote.is_some() || a.s3_endpoint.is_some())
        .map(PathBuf::from)
        .or_else(|| cfg.security.tls.as_ref().map(|t| t.ca.clone()));
    if s3.ends_with(":0") {
        anyhow::bail!("the cluster's S3 endpoint was picked at its start: say it with --s3-endpoint");
    }
    if spark_remote.contains(":0/") {
        anyhow::bail!("the cluster's Spark Connect port was picked at its start: say it with --spark-remote");
    }
    Ok(Endpoints { s3, access_key, secret_key, spark_remote, ca })
}

/// Starts `tarn up` on the data directory and reads its endpoints from what it prints.
async fn start_appliance(a: &DemoArgs) -> anyhow::Result<(Child, Endpoints)> {
    std::fs::create_dir_all(&a.data_dir).with_context(|| format!("make {}", a.data_dir.display()))?;
    let log = a.data_dir.join("demo-appliance.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let exe = std::env::current_exe().context("this program's path")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("up").arg("--data-dir").arg(&a.data_dir);
    if let Some(l) = &a.listen {
        cmd.args(["--listen", l]);
        if let Some(host) = l.strip_suffix(":0") {
            for flag in ["--s3-listen", "--rm-listen", "--connect-listen"] {
                cmd.args([flag, &format!("{host}:0")]);
            }
        }
    }
    cmd.stdout(std::process::Stdio::piped()).stderr(log_file).stdin(std::process::Stdio::null());
    cmd.kill_on_drop(true);
    // SAFETY: prctl(2) between fork and exec is async-signal-safe: the appliance is told to
    // stop (SIGTERM) when the demo dies, even by SIGKILL.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start `tarn up`")?;
    let stdout = child.stdout.take().context("the appliance's output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let pb = spinner(format!("starting `tarn up --data-dir {}` (log: {})", a.data_dir.display(), log.display()));
    let mut e = Endpoints::default();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            let line = line.trim();
            let value = |prefix: &str| line.strip_prefix(prefix).map(|v| v.trim().to_string());
            if let Some(v) = value("S3 endpoint:") {
                e.s3 = v;
            } else if let Some(v) = value("S3 access key:") {
                e.access_key = v;
            } else if let Some(v) = value("S3 secret key:") {
                e.secret_key = v;
            } else if let Some(v) = line.split("export SPARK_REMOTE=").nth(1) {
                e.spark_remote = v.trim_matches('"').to_string();
            } else if let Some(v) = value("export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=") {
                e.ca = Some(PathBuf::from(v));
            } else if line.starts_with("Stop with Ctrl-C") {
                return Ok(true);
            }
        }
        Ok::<bool, std::io::Error>(false)
    };
    let up = tokio::time::timeout(Duration::from_secs(300), read).await;
    pb.finish_and_clear();
    // Keep reading (and dropping) what it prints later, so its writes never block.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let child = Child { child, log: log.clone() };
    match up {
        Ok(Ok(true)) if !e.s3.is_empty() && !e.spark_remote.is_empty() => Ok((child, e)),
        other => {
            child.stop().await;
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            let why = match other {
                Err(_) => "it did not come up within 300 s".to_string(),
                Ok(Err(e)) => format!("reading its output: {e}"),
                Ok(Ok(_)) => "it stopped before it said where it serves".to_string(),
            };
            anyhow::bail!("the appliance did not start: {why}; the end of {}:\n{}", log.display(), tail.join("\n"))
        }
    }
}

/// The S3 bucket through the gateway, as any S3 client reaches it.
fn s3_store(e: &Endpoints) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let mut opts = ClientOptions::new().with_allow_http(true).with_timeout(Duration::from_secs(300));
    if let Some(ca) = &e.ca {
        let pem = std::fs::read(ca).with_context(|| format!("read the CA {}", ca.display()))?;
        opts = opts.with_root_certificate(object_store::Certificate::from_pem(&pem)?);
    }
    let s = AmazonS3Builder::new()
        .with_endpoint(&e.s3)
        .with_bucket_name(BUCKET)
        .with_access_key_id(&e.access_key)
        .with_secret_access_key(&e.secret_key)
        .with_region("us-east-1")
        .with_virtual_hosted_style_request(false)
        .with_unsigned_payload(true)
        .with_client_options(opts)
        .build()?;
    Ok(Arc::new(s))
}

/// The Python that runs PySpark: `--python`, else scripts/setup's, else python3; checked.
async fn python(a: &DemoArgs) -> anyhow::Result<PathBuf> {
    let venv = env_var("TARN_VENV")
        .map(PathBuf::from)
        .or_else(|| env_var("HOME").map(|h| Path::new(&h).join(".cache/tarn/venv")));
    let py = match &a.python {
        Some(p) => p.clone(),
        None => venv.map(|v| v.join("bin/python")).filter(|p| p.exists()).unwrap_or_else(|| "python3".into()),
    };
    let ok = tokio::process::Command::new(&py)
        .args(["-c", "from pyspark.sql import SparkSession; import grpc, pyarrow"])
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        anyhow::bail!(
            "{} cannot import pyspark's Spark Connect client: run scripts/setup (it installs pyspark-client), \
             or pass --python with one that can",
            py.display()
        );
    }
    Ok(py)
}

async fn demo(
    a: &DemoArgs,
    py: &Path,
    conn: &ClientOpts,
    e: &Endpoints,
    timings: &mut Vec<(&'static str, Duration)>,
) -> anyhow::Result<String> {
    let store = s3_store(e)?;
    let nn = conn.connect()?;

    step(
        2,
        &format!(
            "A month of a shop's data (about {} MB, seed {}), uploaded through S3 to s3://{BUCKET}/",
            a.size_mb, a.seed
        ),
    );
    let t = Instant::now();
    match nn.mkdir_exclusive(&format!("/{BUCKET}"), &tarn_client::MkdirOptions::default()).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), tarn_client::ErrorKind::AlreadyExists | tarn_client::ErrorKind::AlreadyOwned) => {}
        Err(e) => return Err(anyhow::anyhow!("make the bucket {BUCKET}: {e}")),
    }
    // The key writes there (as `tarn s3 grant my-bucket KEY` gives it).
    let mut access = tarn_gateway::keys::get_bucket_access(&nn, BUCKET).await?.unwrap_or_default();
    if !access.can_write(&e.access_key) {
        access.grants.insert(e.access_key.clone(), "rw".into());
        tarn_gateway::keys::set_bucket_access(&nn, BUCKET, &access)
            .await
            .with_context(|| format!("let {} write to {BUCKET}", e.access_key))?;
    }
    // The demo's own data and results from an earlier run go first; a bucket it did not
    // make is someone's: its data stays unless --force.
    let bucket = nn.get_file_info(&format!("/{BUCKET}"), true).await?.context("the bucket went away")?;
    if !bucket.xattrs.contains_key(DEMO_XATTR) {
        let mut theirs = Vec::new();
        for dir in DEMO_DIRS {
            if nn.get_file_info(&format!("/{BUCKET}/{dir}"), false).await?.is_some() {
                theirs.push(format!("{dir}/"));
            }
        }
        if !theirs.is_empty() && !a.force {
            anyhow::bail!(
                "s3://{BUCKET}/ holds {} that the demo did not make; the demo would replace it: \
                 pass --force to let it, or empty the bucket",
                theirs.join(", ")
            );
        }
        let mut set_xattrs = std::collections::BTreeMap::new();
        set_xattrs.insert(DEMO_XATTR.to_string(), b"1".to_vec());
        let mark = tarn_client::SetAttributes { set_xattrs: set_xattrs.into_iter().collect(), ..Default::default() };
        nn.set_attributes(&format!("/{BUCKET}"), mark).await.context("mark the bucket as the demo's")?;
    }
    for dir in DEMO_DIRS {
        nn.delete(&format!("/{BUCKET}/{dir}"), true, None)
            .await
            .with_context(|| format!("clear s3://{BUCKET}/{dir}/ of an earlier run"))?;
    }
    let (files, rows, bytes) = upload(a, &store).await?;
    timings.push(("generate + upload", done(&format!("{files} files, {rows} rows, {:.1} MB", bytes as f64 / 1e6), t)));

    let scripts = a.data_dir.join("demo");
    std::fs::create_dir_all(&scripts).with_context(|| format!("make {}", scripts.display()))?;
    let seed_py = scripts.join("customer_analytics.py");
    std::fs::write(&seed_py, SEED_SCRIPT)?;
    let shop_py = scripts.join("shop_analyses.py");
    std::fs::write(&shop_py, ANALYSES_PY)?;
    let shop_sql = scripts.join("shop_analyses.sql");
    std::fs::write(&shop_sql, ANALYSES_SQL)?;
    let mut env = vec![("SPARK_REMOTE", e.spark_remote.clone())];
    if let Some(ca) = &e.ca {
        env.push(("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca.display().to_string()));
    }

    step(3, "The seed's PySpark script, unchanged, through Spark Connect");
    eprintln!("  {} {}", py.display(), seed_py.display());
    let t = Instant::now();
    run_python(py, &seed_py, &env, a.step_timeout, |_| {}).await?;
    timings.push(("seed script (PySpark)", done(&format!("wrote s3://{BUCKET}/processed-data/"), t)));

    step(4, "Cart abandonment, lifetime value, also-bought: PySpark through Spark Connect");
    eprintln!("  {} {}", py.display(), shop_py.display());
    let t = Instant::now();
    run_python(py, &shop_py, &env, a.step_timeout, |line| {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            eprintln!(
                "  {:<26} {:>6.1} s  {}",
                v["analysis"].as_str().unwrap_or("?"),
                v["seconds"].as_f64().unwrap_or(0.0),
                v["path"].as_str().unwrap_or("")
            );
        }
    })
    .await?;
    timings.push(("analyses (PySpark)", done("done", t)));

    step(5, "The same analyses as one distributed SQL job (`tarn job submit --sql`)");
    eprintln!("  tarn job submit --wait --executors {} --file {}", a.executors, shop_sql.display());
    let t = Instant::now();
    let job = crate::job_cmd::submit_and_wait(conn, ANALYSES_SQL.to_string(), "shop analyses", a.executors);
    let id = tokio::time::timeout(Duration::from_secs(a.step_timeout), job).await.map_err(|_| {
        anyhow::anyhow!(
            "the SQL job did not finish within {} s (--step-timeout); `tarn job list` shows it, `tarn job kill ID` stops it",
            a.step_timeout
        )
    })??;
    timings.push(("analyses (SQL job)", done(&format!("{id} wrote s3://{BUCKET}/demo/sql/"), t)));

    step(6, "Checking and summing up the results");
    let t = Instant::now();
    let summary = summary(&store, e).await?;
    timings.push(("check + summary", done("done", t)));
    Ok(summary)
}

/// Generates the data and uploads it, two days at a time; (files, rows, bytes).
async fn upload(a: &DemoArgs, store: &Arc<dyn ObjectStore>) -> anyhow::Result<(usize, usize, usize)> {
    let shape = Shape::for_size(a.size_mb, a.seed);
    let pb = crate::out::progress(
        ProgressBar::new(demo_data::DAYS as u64 + 1),
        "  {bar:30} {pos}/{len} files {msg} {elapsed}",
    );
    let local = a.write_local.clone();
    let put = |key: String, bytes: Vec<u8>| {
        let store = store.clone();
        let local = local.clone();
        async move {
            let n = bytes.len();
            if let Some(dir) = local {
                let path = dir.join(&key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, &bytes).with_context(|| format!("write {}", path.display()))?;
            }
            store
                .put(&object_store::path::Path::from(key.as_str()), PutPayload::from(bytes))
                .await
                .with_context(|| format!("upload s3://{BUCKET}/{key}"))?;
            Ok::<usize, anyhow::Error>(n)
        }
    };
    let (c, p) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((demo_data::customers(&shape)?, demo_data::products(&shape)?))
    })
    .await??;
    let mut bytes =
        put("customers/customers.parquet".into(), c).await? + put("products/products.parquet".into(), p).await?;
    let mut rows = (shape.customers + shape.products) as usize;
    let mut files = 2;
    pb.inc(1);
    let mut days = futures::stream::iter(0..demo_data::DAYS)
        .map(|d| async move {
            let day = tokio::task::spawn_blocking(move || demo_data::day(&shape, d)).await??;
            let ev = put(format!("events/events-{}.parquet", day.date), day.events).await?;
            let tx = put(format!("customer-data/purchases-{}.parquet", day.date), day.purchases).await?;
            Ok::<_, anyhow::Error>((ev + tx, day.event_rows + day.purchase_rows))
        })
        .buffer_unordered(2);
    while let Some(r) = days.next().await {
        let (b, n) = r?;
        bytes += b;
        rows += n;
        files += 2;
        pb.inc(1);
        pb.set_message(format!("{:.1} MB", bytes as f64 / 1e6));
    }
    pb.finish_and_clear();
    Ok((files, rows, bytes))
}

/// Runs `script` with `env`, passing each line it prints to `each`; fails with its error
/// output if it fails.
async fn run_python(
    py: &Path,
    script: &Path,
    env: &[(&str, String)],
    timeout_secs: u64,
    mut each: impl FnMut(&str),
) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(script).kill_on_drop(true).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("run {}", py.display()))?;
    let pb = spinner(format!("running {}", script.file_name().unwrap_or_default().to_string_lossy()));
    let mut out = tokio::io::BufReader::new(child.stdout.take().context("the script's output")?).lines();
    let mut err_pipe = child.stderr.take().context("the script's error output")?;
    let err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut err_pipe, &mut s).await;
        s
    });
    let run = async {
        while let Some(line) = out.next_line().await? {
            pb.suspend(|| each(&line));
        }
        child.wait().await
    };
    // On timeout the child is killed (kill_on_drop) as the error returns.
    let status = tokio::time::timeout(Duration::from_secs(timeout_secs), run).await.map_err(|_| {
        anyhow::anyhow!("{} did not finish within {timeout_secs} s (--step-timeout)", script.display())
    })??;
    pb.finish_and_clear();
    let err = err.await.unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
        anyhow::bail!("{} failed ({status}):\n{}", script.display(), tail.join("\n"));
    }
    Ok(())
}

/// Reads the results back through S3, checks that PySpark's and SQL's analyses agree row
/// for row, and writes the summary.
async fn summary(store: &Arc<dyn ObjectStore>, e: &Endpoints) -> anyhow::Result<String> {
    let ctx = SessionContext::new();
    let url = ObjectStoreUrl::parse(format!("s3://{BUCKET}"))?;
    ctx.runtime_env().register_object_store(url.as_ref(), store.clone());
    let reg = |name: &str, path: &str| {
        let ctx = ctx.clone();
        let (name, path) = (name.to_string(), format!("s3://{BUCKET}/{path}"));
        async move {
            ctx.register_parquet(&name, &path, ParquetReadOptions::default())
                .await
                .with_context(|| format!("read {path}"))
        }
    };
    reg("seed", "processed-data/").await?;
    reg("customers", "customers/").await?;
    reg("products", "products/").await?;
    for (name, _) in ANALYSES {
        reg(&format!("py_{name}"), &format!("demo/pyspark/{name}/")).await?;
        reg(&format!("sql_{name}"), &format!("demo/sql/{name}/")).await?;
    }
    let mut agree = Vec::new();
    for (name, keys) in ANALYSES {
        let (rows, differ) = compare(&ctx, name, keys).await?;
        if differ > 0 {
            anyhow::bail!(
                "{name}: PySpark's result (s3://{BUCKET}/demo/pyspark/{name}/) and the SQL job's \
                 (s3://{BUCKET}/demo/sql/{name}/) differ in {differ} of {rows} rows"
            );
        }
        agree.push(format!("{name} ({rows} rows)"));
    }
    let table = |sql: &str| {
        let ctx = ctx.clone();
        let sql = sql.to_string();
        async move {
            let b = ctx.sql(&sql).await?.collect().await?;
            Ok::<String, anyhow::Error>(pretty_format_batches(&b)?.to_string())
        }
    };
    let mut s = String::new();
    s.push_str("\nTop customers (the seed's script: s3://my-bucket/processed-data/)\n");
    s.push_str(
        &table(
            "SELECT s.customer_id, c.name, c.country, s.\"sum(purchase_amount)\" AS total_spent \
             FROM seed s JOIN customers c ON s.customer_id = c.customer_id \
             ORDER BY total_spent DESC, s.customer_id LIMIT 5",
        )
        .await?,
    );
    s.push_str("\n\nCart abandonment by category over the month (weekdays / weekends)\n");
    s.push_str(
        &table(
            "SELECT category, sum(carts) AS carts, \
             round(100.0 * sum(abandoned) / sum(carts), 1) AS abandoned_pct, \
             round(100.0 * sum(CASE WHEN date_part('dow', event_date) BETWEEN 1 AND 5 THEN abandoned END) \
               / sum(CASE WHEN date_part('dow', event_date) BETWEEN 1 AND 5 THEN carts END), 1) AS weekday_pct, \
             round(100.0 * sum(CASE WHEN date_part('dow', event_date) IN (0, 6) THEN abandoned END) \
               / sum(CASE WHEN date_part('dow', event_date) IN (0, 6) THEN carts END), 1) AS weekend_pct \
             FROM py_cart_abandonment GROUP BY category ORDER BY abandoned_pct DESC",
        )
        .await?,
    );
    s.push_str("\n\nHighest customer lifetime value\n");
    s.push_str(
        &table(
            "SELECT customer_id, name, segment, lifetime_value, orders, \
             round(CAST(avg_order_value AS DOUBLE), 2) AS avg_order, first_purchase, last_purchase \
             FROM py_customer_lifetime_value ORDER BY lifetime_value DESC, customer_id LIMIT 5",
        )
        .await?,
    );
    s.push_str("\n\nBought with the three best sellers\n");
    s.push_str(
        &table(
            "WITH best AS (SELECT product_id, sum(customers) AS n FROM py_also_bought GROUP BY product_id \
               ORDER BY n DESC, product_id LIMIT 3) \
             SELECT p.name AS product, a.recommendation_rank AS rank, q.name AS also_bought, a.customers \
             FROM py_also_bought a JOIN best b ON a.product_id = b.product_id \
             JOIN products p ON p.product_id = a.product_id JOIN products q ON q.product_id = a.also_bought_id \
             ORDER BY b.n DESC, a.product_id, a.recommendation_rank",
        )
        .await?,
    );
    s.push_str(&format!("\n\nPySpark and the SQL job agree on {}.\n", agree.join(", ")));
    s.push_str(&format!(
        "Results (parquet, through S3 at {}):\n  s3://{BUCKET}/processed-data/            the seed's script\n  \
         s3://{BUCKET}/demo/pyspark/ANALYSIS/      PySpark (cart_abandonment, customer_lifetime_value, also_bought)\n  \
         s3://{BUCKET}/demo/sql/ANALYSIS/          the SQL job\n",
        e.s3
    ));
    let ca = e.ca.as_ref().map(|c| format!(" --ca-bundle {}", c.display())).unwrap_or_default();
    s.push_str(&format!(
        "Look at them: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {}{ca} s3 ls --recursive s3://{BUCKET}/demo/\n",
        e.access_key, e.secret_key, e.s3
    ));
    Ok(s)
}

/// (rows, rows that differ) between PySpark's and SQL's result of analysis `name`:
/// matched on `keys`, every other column equal (numbers within 1e-6 of each other).
async fn compare(ctx: &SessionContext, name: &str, keys: &[&str]) -> anyhow::Result<(u64, u64)> {
    let schema = ctx.table(format!("py_{name}")).await?.schema().clone();
    let on: Vec<String> = keys.iter().map(|k| format!("p.\"{k}\" = s.\"{k}\"")).collect();
    let mut differs: Vec<String> = keys.iter().map(|k| format!("p.\"{k}\" IS NULL OR s.\"{k}\" IS NULL")).collect();
    for f in schema.fields() {
        let c = f.name();
        if keys.contains(&c.as_str()) {
            continue;
        }
        // A value on one side only differs; two numbers differ beyond 1e-6 (relative).
        differs.push(format!("(p.\"{c}\" IS NULL) <> (s.\"{c}\" IS NULL)"));
        if f.data_type().is_numeric() {
            differs.push(format!(
                "abs(CAST(p.\"{c}\" AS DOUBLE) - CAST(s.\"{c}\" AS DOUBLE)) > 1e-6 * (1 + abs(CAST(p.\"{c}\" AS DOUBLE)))"
            ));
        } else {
            differs.push(format!("p.\"{c}\" IS DISTINCT FROM s.\"{c}\""));
        }
    }
    // Rows of each side too: a key twice on one side would hide in the join's rows.
    let sql = format!(
        "SELECT count(*) AS n_rows, sum(CASE WHEN {} THEN 1 ELSE 0 END) AS differ, \
         (SELECT count(*) FROM py_{name}) AS py_rows, (SELECT count(*) FROM sql_{name}) AS sql_rows \
         FROM py_{name} p FULL OUTER JOIN sql_{name} s ON {}",
        differs.iter().map(|d| format!("COALESCE({d}, false)")).collect::<Vec<_>>().join(" OR "),
        on.join(" AND ")
    );
    let b = ctx.sql(&sql).await.with_context(|| format!("compare {name}"))?.collect().await?;
    let col = |i: usize| -> anyhow::Result<i64> {
        use datafusion::arrow::array::{Array, Int64Array};
        let a = b
            .first()
            .and_then(|b| b.column(i).as_any().downcast_ref::<Int64Array>())
            .with_context(|| format!("compare {name}: no count"))?;
        Ok(if a.is_null(0) { 0 } else { a.value(0) })
    };
    let (rows, differ, py_rows, sql_rows) = (col(0)?, col(1)?, col(2)?, col(3)?);
    if rows == 0 || py_rows != rows || sql_rows != rows {
        anyhow::bail!(
            "{name}: PySpark's result has {py_rows} rows, the SQL job's {sql_rows}, {rows} when matched on {}",
            keys.join(", ")
        );
    }
    Ok((rows as u64, differ as u64))
}
