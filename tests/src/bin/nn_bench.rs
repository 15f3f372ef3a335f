//! `nn-bench`: namenode benchmarks against real `tarn namenode` processes on loopback.
//!
//! - `throughput`: creates/s and get_file_info/s through gRPC, for a 1- or 3-node group,
//!   with latency percentiles.
//! - `memory`: resident memory of a namenode process as the namespace grows to N files.
//! - `failover`: time from SIGKILL of the leader to the first acknowledged write on the
//!   new leader, over several runs.
//!
//! Build in release (`cargo build --release --bin tarn --bin nn-bench`) and run from the
//! target directory; results go into BENCHMARKS.md.

/// The same allocator as the `tarn` binary (block buffers are reused, not re-mmapped).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tarn_client::{CreateOptions, NamenodeClient, RetryPolicy};
use tarn_tests::{wait_for, ProcCluster};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// creates/s and get_file_info/s over gRPC.
    Throughput {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Client connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 32)]
        depth: usize,
        #[arg(long, default_value_t = 200_000)]
        creates: u64,
        #[arg(long, default_value_t = 1_000_000)]
        reads: u64,
    },
    /// Namenode RSS as the namespace grows.
    Memory {
        #[arg(long, default_value_t = 10_000_000)]
        files: u64,
        /// Report RSS at every multiple of this many files.
        #[arg(long, default_value_t = 1_000_000)]
        every: u64,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        depth: usize,
    },
    /// Leader failover time.
    Failover {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match args.cmd {
            Cmd::Throughput { nodes, connections, depth, creates, reads } => {
                throughput(nodes, connections, depth, creates, reads).await
            }
            Cmd::Memory { files, every, connections, depth } => memory(files, every, connections, depth).await,
            Cmd::Failover { runs } => failover(runs).await,
        }
    })
}

/// Files per directory, as in a dataset of many partitions.
const FILES_PER_DIR: u64 = 1000;

fn file_path(i: u64) -> String {
    format!("/bench/d{:06}/f{:09}", i / FILES_PER_DIR, i)
}

/// Runs `total` operations `op(i)` from `connections * depth` concurrent tasks; returns
/// (ops/s, latency histogram in µs).
async fn drive<F, Fut>(clients: &[Arc<NamenodeClient>], depth: usize, total: u64, op: F) -> (f64, Histogram<u64>)
where
    F: Fn(Arc<NamenodeClient>, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        for _ in 0..depth {
            let (c, next, op) = (c.clone(), next.clone(), op.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return h;
                    }
                    let t = Instant::now();
                    op(c.clone(), i).await;
                    let _ = h.record(t.elapsed().as_micros() as u64);
                }
            }));
        }
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        hist.add(t.await.expect("task")).expect("merge histograms");
    }
    (total as f64 / start.elapsed().as_secs_f64(), hist)
}

fn report(what: &str, rate: f64, h: &Histogram<u64>) {
    println!(
        "{what:<28} {rate:>10.0} ops/s   p50 {:>6} µs   p99 {:>6} µs   max {:>7} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}

fn clients(pc: &ProcCluster, n: usize) -> Vec<Arc<NamenodeClient>> {
    (0..n).map(|_| Arc::new(pc.client())).collect()
}

async fn mkdirs_for(c: &NamenodeClient, files: u64) {
    let dirs = files.div_ceil(FILES_PER_DIR);
    for d in 0..dirs {
        c.mkdirs(&format!("/bench/d{d:06}")).await.expect("mkdirs");
    }
}

/// The baseline measured in the same run: how many 4 KiB write + fdatasync pairs the
/// disk under the namenodes' data completes per second. A store that makes each create
/// its own durable write cannot create faster than this.
fn fsyncs_per_sec(dir: &std::path::Path) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

async fn throughput(nodes: usize, connections: usize, depth: usize, creates: u64, reads: u64) -> anyhow::Result<()> {
    let probe_dir = tempfile::tempdir()?;
    let fsyncs = fsyncs_per_sec(probe_dir.path())?;
    println!("# baseline: {fsyncs:.0} fdatasync'd 4 KiB writes/s on this disk");
    let pc = ProcCluster::start(nodes, |c| {
        c.files.default_replication = 3;
        c.memory.block_cache_mb = 256;
        c.memory.write_buffer_mb = 128;
    })
    .await;
    let cs = clients(&pc, connections);
    mkdirs_for(&cs[0], creates).await;
    println!("# {nodes} namenode(s), {connections} connections x {depth} in flight");
    let opts = Arc::new(CreateOptions::default());
    let (rate, h) = drive(&cs, depth, creates, move |c, i| {
        let opts = opts.clone();
        async move {
            c.create(&file_path(i), &opts).await.expect("create");
        }
    })
    .await;
    report("create", rate, &h);
    println!("  = {:.1}x the disk's fsync rate (batching: one fsync covers many creates)", rate / fsyncs);
    let (rate, h) = drive(&cs, depth, reads, move |c, i| async move {
        let p = file_path(i % creates);
        c.get_file_info(&p, false).await.expect("get_file_info").expect("file exists");
    })
    .await;
    report("get_file_info", rate, &h);
    Ok(())
}

/// Resident and peak memory of a process, from /proc.
fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let p = e.path();
            total += if p.is_dir() { du(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) };
        }
    }
    total
}

async fn memory(files: u64, every: u64, connections: usize, depth: usize) -> anyhow::Result<()> {
    let pc = ProcCluster::start(1, |c| {
        c.memory.block_cache_mb = 128;
        c.memory.write_buffer_mb = 128;
        c.raft.snapshot_after_entries = 20_000;
    })
    .await;
    let pid = pc.pid(1).expect("namenode pid");
    let cs = clients(&pc, connections);
    mkdirs_for(&cs[0], files).await;
    println!("# one namenode process (pid {pid}); files are created with `create` (open, leased)");
    println!("{:>12} {:>12} {:>12} {:>12} {:>14}", "files", "rss MiB", "peak MiB", "disk MiB", "creates/s");
    let mut done = 0;
    let opts = Arc::new(CreateOptions::default());
    while done < files {
        let n = every.min(files - done);
        let base = done;
        let o = opts.clone();
        let (rate, _) = drive(&cs, depth, n, move |c, i| {
            let o = o.clone();
            async move {
                c.create(&file_path(base + i), &o).await.expect("create");
            }
        })
        .await;
        done += n;
        let (rss, hwm) = rss_of(pid);
        let disk = du(&pc.dirs[0]);
        println!("{:>12} {:>12} {:>12} {:>12} {:>14.0}", done, rss >> 20, hwm >> 20, disk >> 20, rate);
    }
    // Reads over the whole namespace still answer from disk, within the same memory.
    let total = files;
    let (rate, h) = drive(&cs, depth, 200_000, move |c, i| async move {
        let p = file_path((i * 7_919) % total);
        c.get_file_info(&p, false).await.expect("stat").expect("exists");
    })
    .await;
    report("get_file_info (random)", rate, &h);
    let (rss, hwm) = rss_of(pid);
    println!("after reads: rss {} MiB, peak {} MiB", rss >> 20, hwm >> 20);
    Ok(())
}

async fn failover(runs: usize) -> anyhow::Result<()> {
    let mut pc = ProcCluster::start(3, |_| {}).await;
    let mut times = Vec::new();
    for run in 0..runs {
        let c = NamenodeClient::new(&pc.addrs, &tarn_tests::admin())?.with_retry(RetryPolicy {
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
        });
        c.mkdirs(&format!("/failover/{run}")).await?;
        let leader = c.cluster_status().await?.leader_id.context("no leader")?;
        pc.kill(leader);
        let t = Instant::now();
        c.mkdirs(&format!("/failover/{run}/after")).await?;
        let took = t.elapsed();
        let new_leader = c.cluster_status().await?.leader_id.unwrap_or(0);
        println!("run {run}: killed leader {leader}, namenode {new_leader} acknowledged a write after {took:?}");
        times.push(took);
        pc.restart(leader).await;
        // Wait until the restarted node has caught up before the next run.
        let addr = pc.addrs[leader as usize - 1].clone();
        wait_for("restarted node to catch up", Duration::from_secs(30), || {
            let (c, addr) = (&c, addr.clone());
            async move {
                let s = c.cluster_status_of(&addr).await.ok()?;
                let l = c.cluster_status().await.ok()?;
                (s.leader_id.is_some() && s.last_applied >= l.last_applied.saturating_sub(1)).then_some(())
            }
        })
        .await;
    }
    times.sort();
    let median = times[times.len() / 2];
    println!("failover over {runs} runs: min {:?}, median {:?}, max {:?}", times[0], median, times[times.len() - 1]);
    Ok(())
}
