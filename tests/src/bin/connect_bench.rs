//! `connect-bench`: the seed's PySpark script (its paths and column names changed to TPC-H
//! `orders`: `o_custkey`, `o_totalprice`; `tests/connect/seed_bench.py`) through Tarn's
//! Spark Connect endpoint, against Sail (`pysail`, one process) and classic PySpark
//! (`local[2]`, Java 17), alternating engine by engine within each run.
//!
//! Tarn is the appliance's shape in this process (one namenode, one datanode, one core
//! worker, mutual TLS and encryption at rest): the script reads `s3://my-bucket/orders/`
//! and writes parquet back into the cluster, as a job on the user's session application
//! (one executor of `--vcores`). Sail and PySpark read the same file from local disk and
//! write to local disk. The figure is the script's own clock from the read to the written
//! output (the session made before); the wall time of the whole script is shown beside
//! it. The first Tarn run also starts the session application.
//!
//! `cargo build --release --bin tarn --bin connect-bench`, then
//! `connect-bench --scale 10 --runs 3`; results go into BENCHMARKS.md. Sail and classic
//! PySpark are installed on first use into `~/.cache/tarn/venv-sail` and
//! `~/.cache/tarn/venv-pyspark` (the latter shared with `scripts/connect-gold`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use tarn_security::Role;
use tarn_tests::jobs::{bucket, put_as, tpch_data};
use tarn_tests::{median, pki, venv_bin, Cluster};

#[derive(Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value = "10")]
    scale: String,
    /// Runs; each runs every engine once, in turn.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the TPC-H files are (made there if missing); default: a temporary directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Cores of Tarn's one executor (Sail uses the machine's, PySpark `local[2]`).
    #[arg(long, default_value_t = 2)]
    vcores: u32,
    /// Memory of Tarn's executor (MiB).
    #[arg(long, default_value_t = 8192)]
    memory_mib: u64,
    /// Engines, in the order each run takes them.
    #[arg(long, value_delimiter = ',', default_value = "tarn,sail,classic")]
    engines: Vec<String>,
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/tarn")
}

/// The python of venv `dir`, made with `packages` if missing.
fn venv(dir: &Path, packages: &[&str]) -> anyhow::Result<PathBuf> {
    let python = dir.join("bin/python");
    if python.is_file() {
        return Ok(python);
    }
    eprintln!("installing {packages:?} into {}", dir.display());
    let ok = std::process::Command::new("python3").arg("-m").arg("venv").arg(dir).status()?.success()
        && std::process::Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(packages)
            .status()?
            .success();
    anyhow::ensure!(ok, "could not install {packages:?} into {}", dir.display());
    Ok(python)
}

/// Runs the script; (its own seconds, wall seconds).
async fn script(python: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<(f64, f64)> {
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let o = tokio::time::timeout(Duration::from_secs(3600), cmd.output()).await??;
    let wall = t.elapsed().as_secs_f64();
    let out = String::from_utf8_lossy(&o.stdout);
    anyhow::ensure!(o.status.success(), "{args:?} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let secs = out
        .lines()
        .find_map(|l| l.strip_prefix("seconds "))
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no `seconds` line in {out}"))?;
    Ok((secs, wall))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").to_path_buf();
    let bench = repo.join("tests/connect/seed_bench.py");
    let bench = bench.to_str().expect("utf-8 path");
    let tmp = tempfile::tempdir()?;
    let data = args.data.clone().unwrap_or_else(|| tmp.path().join("tpch"));
    std::fs::create_dir_all(&data)?;
    let t = Instant::now();
    tpch_data(&data, &args.scale, Some("orders"));
    let orders = data.join("orders.parquet");
    eprintln!("orders at scale {} in {} ({:.1} s)", args.scale, orders.display(), t.elapsed().as_secs_f64());

    let client = ["pyspark-client==4.2.0", "pandas==2.3.3", "pyarrow==26.0.1", "grpcio==1.85.4"];
    let client_more =
        ["grpcio-status==1.85.3", "googleapis-common-protos==1.76.0", "protobuf==7.36.2", "zstandard==0.25.0"];
    let mut sail_pkgs = vec!["pysail==0.7.2"];
    sail_pkgs.extend(client.iter().chain(&client_more));
    let engines: Vec<&str> = args.engines.iter().map(String::as_str).collect();
    let sail = engines.contains(&"sail").then(|| venv(&home().join("venv-sail"), &sail_pkgs)).transpose()?;
    let classic = engines
        .contains(&"classic")
        .then(|| venv(&home().join("venv-pyspark"), &["pyspark==4.3.0", "pandas==2.3.3", "pyarrow==26.0.1"]))
        .transpose()?;

    // The master takes one core of its own besides the executor's.
    let (vcores, memory) = (args.vcores + 1, args.memory_mib + 1024);
    let cl = Cluster::builder()
        .datanodes(1)
        .workers(1, 0)
        .tune_workers(move |_, w| {
            w.vcores = vcores;
            w.memory_mib = memory;
        })
        .start()
        .await;
    // The configured key acts as the administrator, as `tarn up`'s root keys do.
    bucket(&cl, "my-bucket", "admin").await;
    let t = Instant::now();
    put_as(&cl, "admin", "/my-bucket/orders/orders.parquet", &std::fs::read(&orders)?).await;
    eprintln!("orders put into the cluster ({:.1} s)", t.elapsed().as_secs_f64());

    let key = tarn_gateway::AccessKey::generate();
    let tls = pki().paths(Role::Gateway, "gw");
    let size = tarn_connect::SessionSize {
        min_executors: 1,
        max_executors: 1,
        vcores: args.vcores,
        memory_mib: args.memory_mib,
        master_memory_mib: 1024,
        ..Default::default()
    };
    let cfg = tarn_tests::connect_config(&cl, &key, size, "127.0.0.1:0");
    let connect = tarn_connect::start(cfg, pki().transport(Role::Gateway, "gw")).await?;
    let remote = connect.remote("localhost", &format!("{}:{}", key.access_key, key.secret_key));
    let env = [("SPARK_REMOTE", remote), ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", tls.ca.display().to_string())];

    let local_out = tmp.path().join("out");
    let source = orders.display().to_string();
    let mut times: Vec<(&str, Vec<f64>, Vec<f64>)> = engines.iter().map(|e| (*e, Vec::new(), Vec::new())).collect();
    for run in 0..args.runs {
        for (engine, secs, walls) in times.iter_mut() {
            let target = local_out.join(format!("{engine}-{run}")).display().to_string();
            let (s, w) = match *engine {
                "tarn" => {
                    let target = format!("s3://my-bucket/out-{run}/");
                    script(&venv_bin("python"), &[bench, "remote", "s3://my-bucket/orders/", &target], &env).await?
                }
                "sail" => script(sail.as_deref().expect("sail"), &[bench, "sail", &source, &target], &[]).await?,
                "classic" => {
                    script(classic.as_deref().expect("pyspark"), &[bench, "classic", &source, &target], &[]).await?
                }
                other => anyhow::bail!("unknown engine {other:?}"),
            };
            eprintln!("run {run}: {engine} {s:.2} s (script {w:.2} s)");
            secs.push(s);
            walls.push(w);
        }
    }
    let classic_median = times.iter().find(|t| t.0 == "classic").map(|t| median(t.1.clone()));
    let sail_median = times.iter().find(|t| t.0 == "sail").map(|t| median(t.1.clone()));
    println!(
        "| engine (seed script on TPC-H SF{} orders, {} runs, medians) | read to write | whole script | vs PySpark | vs Sail |",
        args.scale, args.runs
    );
    println!("|---|---|---|---|---|");
    for (engine, secs, walls) in times {
        let s = median(secs);
        let ratio = |base: Option<f64>| base.map(|b| format!("{:.2}x", s / b)).unwrap_or_else(|| "-".into());
        println!(
            "| {engine} | {s:.2} s | {:.2} s | {} | {} |",
            median(walls),
            ratio(classic_median),
            ratio(sail_median)
        );
    }
    connect.stop().await;
    cl.shutdown().await;
    Ok(())
}
