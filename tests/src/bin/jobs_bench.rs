//! `jobs-bench`: distributed jobs against single-process DataFusion over the same files,
//! measured in alternating pairs in one run.
//!
//! The cluster is the appliance's shape in this process (one namenode, one datanode, one
//! core worker, mutual TLS and encryption at rest, as `tarn up` runs them); the data is
//! TPC-H at `--scale` (`tpchgen-cli`), put into the cluster, and the same files on local
//! disk for DataFusion. Measured:
//! - `seed`: the seed's query on `orders` (sum of `o_totalprice` per `o_custkey`, ordered
//!   by the total, written as parquet), as `tarn job submit --wait` against DataFusion's
//!   `COPY` to local disk;
//! - `tpch`: the 22 TPC-H queries as one job against DataFusion running them in turn;
//! - `trivial`: `SELECT 1` as a job on a fresh application (submit to result);
//! - `session-seed`, `session-tpch`, `session-trivial`: the same on a session application
//!   started beforehand (`tarn job session start`, one warm executor), sent with `tarn job
//!   submit --session`;
//! - `client-trivial`: `SELECT 1` sent to the session by an in-process client
//!   (`SessionClient`: connect, send, rows back), the path the Spark Connect endpoint takes.
//!
//! Each Tarn figure is wall-clock time of the `tarn job` command (or of the client call),
//! so a fresh application's includes its start (master container, scheduler, executor
//! containers).
//!
//! `cargo build --release --bin tarn --bin jobs-bench`, then
//! `jobs-bench --scale 1 --runs 3`; results go into BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use tarn_tests::jobs::{bucket, put_as, run_job, tpch_data, tpch_query, TPCH_TABLES};
use tarn_tests::{median, Cluster};

#[derive(Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value = "1")]
    scale: String,
    /// Alternating pairs per measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the TPC-H files are (made there if missing); default: a temporary directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Cores of the one executor, and DataFusion's target partitions.
    #[arg(long, default_value_t = 2)]
    vcores: u32,
    /// Memory of the executor (MiB).
    #[arg(long, default_value_t = 8192)]
    memory_mib: u64,
    /// What to measure, in this order (see the top of this file).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "seed,tpch,trivial,session-trivial,client-trivial,session-seed,session-tpch"
    )]
    measures: Vec<String>,
}

const USER: &str = "bench";
const SEED: &str = "SELECT o_custkey, sum(o_totalprice) AS total FROM orders GROUP BY o_custkey ORDER BY total DESC";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = args.data.clone().unwrap_or_else(|| tmp.path().join("tpch"));
    std::fs::create_dir_all(&data)?;
    let t = Instant::now();
    tpch_data(&data, &args.scale, None);
    eprintln!("data at scale {} in {} ({:.1} s)", args.scale, data.display(), t.elapsed().as_secs_f64());

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
    bucket(&cl, "tpch", USER).await;
    bucket(&cl, "out", USER).await;
    let t = Instant::now();
    let mut ddl = String::new();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(args.vcores as usize));
    for table in TPCH_TABLES {
        let local = data.join(format!("{table}.parquet"));
        put_as(&cl, USER, &format!("/tpch/{table}/{table}.parquet"), &std::fs::read(&local)?).await;
        ctx.register_parquet(table, local.to_str().unwrap_or_default(), ParquetReadOptions::default()).await?;
        ddl.push_str(&format!("CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION 's3://tpch/{table}/';\n"));
    }
    eprintln!("data put into the cluster ({:.1} s)", t.elapsed().as_secs_f64());

    // One executor of the measured size, for a job and for the session alike.
    let size: Vec<String> = ["--vcores", &args.vcores.to_string(), "--memory-mib", &args.memory_mib.to_string()]
        .into_iter()
        .chain(["--master-memory-mib", "1024"])
        .map(String::from)
        .collect();
    let job_args = |sql: String| -> Vec<String> {
        let head = ["submit", "--wait", "--executors", "1"].map(String::from);
        head.into_iter().chain(size.iter().cloned()).chain(["--sql".to_string(), sql]).collect()
    };
    let tarn = |sql: String| {
        let a = job_args(sql);
        let cl = &cl;
        async move {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            let t = Instant::now();
            let (code, out, err) = run_job(cl, USER, &refs, Duration::from_secs(3600)).await;
            assert_eq!(code, 0, "the job failed:\n{out}\n{err}");
            t.elapsed().as_secs_f64()
        }
    };
    let mut tpch = String::new();
    for n in 1..=22 {
        for s in tpch_query(n) {
            tpch.push_str(&s);
            tpch.push_str(";\n");
        }
    }
    let out_dir = tmp.path().join("df-out");
    let mut rows = Vec::new();
    let mut session_open = false;
    for what in args.measures.iter().map(String::as_str) {
        let on_session = what.starts_with("session-") || what.starts_with("client-");
        if on_session && !session_open {
            // Started after the fresh applications' measures: the worker fits one at a time.
            let mut start: Vec<&str> =
                vec!["session", "start", "bench", "--min-executors", "1", "--max-executors", "1"];
            start.extend(size.iter().map(String::as_str));
            let (code, out, err) = run_job(&cl, USER, &start, Duration::from_secs(300)).await;
            assert_eq!(code, 0, "the session did not start:\n{out}\n{err}");
            session_open = true;
        }
        let (mut t_tarn, mut t_df) = (Vec::new(), Vec::new());
        for run in 0..args.runs {
            let base = what.trim_start_matches("session-").trim_start_matches("client-");
            let (sql_tarn, df_stmts): (String, Vec<String>) = match base {
                "seed" => (
                    format!("{ddl}COPY ({SEED}) TO 's3://out/{what}-{run}/' STORED AS PARQUET"),
                    vec![format!("COPY ({SEED}) TO '{}/{what}-{run}/' STORED AS PARQUET", out_dir.display())],
                ),
                "tpch" => (format!("{ddl}{tpch}"), (1..=22).flat_map(tpch_query).collect()),
                "trivial" => ("SELECT 1".into(), vec!["SELECT 1".into()]),
                other => anyhow::bail!("unknown measure {other:?}"),
            };
            let took = if what.starts_with("client-") {
                let t = Instant::now();
                let transport = tarn_tests::pki().transport(tarn_security::Role::User, USER);
                let nn = std::sync::Arc::new(tarn_client::NamenodeClient::new(&cl.addrs, &transport)?);
                let rm = tarn_client::rm::RmClient::new(&cl.rm_addrs, &transport)?;
                let mut c = tarn_jobs::session::SessionClient::connect(&rm, nn, "bench").await?;
                let got = c.run_sql(&sql_tarn, |_| {}).await?;
                anyhow::ensure!(!got.batches.is_empty(), "no rows");
                t.elapsed().as_secs_f64()
            } else if on_session {
                let t = Instant::now();
                let (code, out, err) = run_job(
                    &cl,
                    USER,
                    &["submit", "--session", "bench", "--sql", &sql_tarn],
                    Duration::from_secs(3600),
                )
                .await;
                assert_eq!(code, 0, "the job failed:\n{out}\n{err}");
                t.elapsed().as_secs_f64()
            } else {
                tarn(sql_tarn).await
            };
            t_tarn.push(took);
            let t = Instant::now();
            for s in &df_stmts {
                ctx.sql(s).await?.collect().await?;
            }
            t_df.push(t.elapsed().as_secs_f64());
            eprintln!("{what} run {run}: tarn {:.2} s, datafusion {:.2} s", t_tarn[run], t_df[run]);
        }
        rows.push((what, median(t_tarn), median(t_df)));
    }
    println!("| measure (scale {}, {} runs, medians) | Tarn job | DataFusion | ratio |", args.scale, args.runs);
    println!("|---|---|---|---|");
    for (what, a, b) in rows {
        println!("| {what} | {a:.2} s | {b:.3} s | {:.2}x |", a / b);
    }
    Ok(())
}
