//! `rm-bench`: the resource manager's scheduler under load (YARN's Scheduler Load
//! Simulator is the anchor): simulated workers heartbeat and simulated application masters
//! ask, launch and hear of ends, straight against the resource manager's core (no RPC), so
//! what is measured is the scheduler's own cost.
//!
//! `rm-bench scheduler --workers 100 --pending 1000` keeps 1,000 container requests
//! pending across the applications while containers run for a few rounds and end, and
//! reports allocations per second and the latency of allocate and heartbeat calls.
//!
//! `rm-bench rpc --workers 100 --pending 1000` does the same over the wire: a resource
//! manager in this process (mutual TLS, as deployed), simulated workers heartbeating through
//! its tracker service with their own certificates, and masters allocating through its
//! master service with the credentials their containers were given; it reports allocate
//! latency as a master sees it and allocations per second.
//!
//! `rm-bench failover --rounds 5` measures a failover of the resource manager: two
//! `tarn resource-manager` processes (one active, one standing by) over an in-process
//! namenode, two real workers running two applications' masters; SIGKILL of the active
//! one, then the time until the standby serves, and until every worker has registered with
//! it and its containers are adopted (what a running application waits for). Its baseline
//! is the lease (`resource_manager.ha_lease_ms`): the part of the failover spent noticing
//! that the active one is gone.
//!
//! Build in release (`cargo build --release --bin rm-bench`); results go into BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tarn_client::rm::{
    AllocateCall, AppSubmission, ContainerAsk, ContainerSpec, ContainerStatus, ExitReason, NodeLabel, Resources,
};
use tarn_resource_manager::cluster::{AppLimits, ClusterState, WorkerInfo};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The simulated cluster and its load, the same for both modes.
#[derive(clap::Args)]
struct Load {
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Applications sharing the pending requests.
    #[arg(long, default_value_t = 10)]
    apps: usize,
    /// Container requests kept pending.
    #[arg(long, default_value_t = 1000)]
    pending: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// Allocations per second and call latencies with pending requests kept constant.
    Scheduler {
        #[command(flatten)]
        load: Load,
        /// Rounds (every worker heartbeats, every master allocates, once per round).
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Rounds a container runs before it ends.
        #[arg(long, default_value_t = 5)]
        runs_for: usize,
    },
    /// Allocate latency and allocations per second through the gRPC services.
    Rpc {
        #[command(flatten)]
        load: Load,
        /// How long to measure.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Failover time after SIGKILL of the active resource manager.
    Failover {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Scheduler { load, rounds, runs_for } => scheduler(load, rounds, runs_for),
        Cmd::Rpc { load, secs } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(rpc(load, secs))
        }
        Cmd::Failover { rounds } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(failover(rounds))
        }
    }
}

/// A simulated worker over gRPC: registers, then heartbeats every 100 ms; a container it
/// is told to start runs for 5 heartbeats (a master's runs until the bench ends); masters'
/// credentials go to `masters`.
async fn sim_worker(
    i: usize,
    addr: String,
    masters: tokio::sync::mpsc::UnboundedSender<(String, tarn_client::rm::Credential)>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use tarn_proto::rm as pb;
    let id = format!("sw{i:03}");
    let t = tarn_tests::pki().transport(tarn_security::Role::Worker, &id);
    let ch = t.channel(tarn_client::Transport::endpoint(&addr)?);
    let mut rt = tarn_proto::rm::resource_tracker_client::ResourceTrackerClient::new(ch);
    let reg = pb::RegisterWorkerRequest {
        worker_id: id.clone(),
        host: format!("{id}.example"),
        rack: format!("/rack{}", i % 10),
        label: if i % 5 == 4 { pb::NodeLabel::Task } else { pb::NodeLabel::Core } as i32,
        capacity: Some(pb::Resources { vcores: 16, memory_mib: 64 * 1024 }),
        version: "bench".into(),
        containers: Vec::new(),
    };
    let epoch = rt.register_worker(reg).await?.into_inner().rm_epoch;
    // container -> heartbeats left (None: a master, runs on).
    let mut running: BTreeMap<String, Option<u32>> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.is_cancelled() {
        tick.tick().await;
        let mut containers = Vec::new();
        for (cid, left) in running.iter_mut() {
            let ended = left.as_mut().is_some_and(|l| {
                *l = l.saturating_sub(1);
                *l == 0
            });
            let st = if ended {
                ContainerStatus::ended(cid, ExitReason::Exited, 0, "")
            } else {
                ContainerStatus::running(cid)
            };
            containers.push(pb::ContainerStatus::from(&st));
        }
        let hb = pb::WorkerHeartbeatRequest { worker_id: id.clone(), rm_epoch: epoch, containers, renew: vec![] };
        let r = rt.worker_heartbeat(hb).await?.into_inner();
        for f in &r.forget {
            running.remove(f);
        }
        for s in r.start {
            let s = tarn_client::rm::StartContainer::from(s);
            let master = s.container_id.ends_with("_000001");
            running.insert(s.container_id.clone(), if master { None } else { Some(5) });
            if let (true, Some(c)) = (master, s.credential) {
                let _ = masters.send((s.container_id, c));
            }
        }
        for k in r.kill {
            running.insert(k.container_id, Some(1));
        }
    }
    Ok(())
}

/// A master over gRPC with its container's credential: keeps `want` requests pending,
/// launches what it gets; returns the allocate latencies (us) and allocations.
async fn sim_master(
    addr: String,
    cid: String,
    cred: tarn_client::rm::Credential,
    dir: std::path::PathBuf,
    want: u32,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let cert = dir.join(format!("{cid}.pem"));
    let key = dir.join(format!("{cid}-key.pem"));
    tarn_security::pki::write_private(&key, &cred.key_pem, 0o600)?;
    tarn_security::pki::write_private(&cert, &cred.cert_pem, 0o644)?;
    let paths = tarn_security::TlsPaths { ca: tarn_tests::pki().ca().cert_path(), cert, key, container_ca: None };
    let rm = tarn_client::rm::RmClient::new(&[addr], &tarn_client::Transport::tls(&paths)?)?;
    rm.register_master("").await?;
    let (mut h, mut allocated, mut response_id) = (hist(), 0u64, 0u64);
    let mut launch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.is_cancelled() {
        tick.tick().await;
        let ask = ContainerAsk {
            ask_id: 1,
            resources: Resources::new(1, 2048),
            count: want,
            relax_locality: true,
            ..Default::default()
        };
        let call =
            AllocateCall { response_id, asks: vec![ask], launch: std::mem::take(&mut launch), ..Default::default() };
        let t = Instant::now();
        let reply = rm.allocate(&call).await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
        response_id = reply.response_id;
        allocated += reply.allocated.len() as u64;
        launch = reply
            .allocated
            .into_iter()
            .map(|g| (g.container_id, ContainerSpec { command: vec!["task".into()], ..Default::default() }))
            .collect();
    }
    Ok((h, allocated))
}

async fn rpc(Load { workers, apps, pending }: Load, secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = tarn_tests::rm_config();
    cfg.worker_heartbeat_ms = 100;
    cfg.worker_expiry_ms = 10_000;
    let rm = tarn_resource_manager::start(cfg, tarn_tests::pki().transport(tarn_security::Role::ResourceManager, "rm"))
        .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..workers {
        tasks.push(tokio::spawn(sim_worker(i, rm.addr.clone(), tx.clone(), stop.clone())));
    }
    let client = tarn_client::rm::RmClient::new(std::slice::from_ref(&rm.addr), &tarn_tests::admin())?;
    tarn_tests::wait_for("the simulated workers", Duration::from_secs(60), || async {
        (client.workers().await.ok()?.len() == workers).then_some(())
    })
    .await;
    let sub = AppSubmission {
        name: "bench".into(),
        am_resources: Resources::new(1, 1024),
        am_spec: ContainerSpec { command: vec!["am".into()], ..Default::default() },
        ..Default::default()
    };
    for _ in 0..apps {
        client.submit(&sub).await?;
    }
    let measure = tokio_util::sync::CancellationToken::new();
    let mut masters = Vec::new();
    for _ in 0..apps {
        let (cid, cred) = rx.recv().await.ok_or_else(|| anyhow::anyhow!("no master started"))?;
        let want = pending / apps as u32;
        masters.push(tokio::spawn(sim_master(
            rm.addr.clone(),
            cid,
            cred,
            dir.path().to_path_buf(),
            want,
            measure.clone(),
        )));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measure.cancel();
    let took = t0.elapsed();
    let (mut h, mut allocated) = (hist(), 0u64);
    for m in masters {
        let (mh, n) = m.await??;
        h.add(&mh)?;
        allocated += n;
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    rm.shutdown().await;
    println!(
        "rm-bench rpc: {workers} workers, {apps} masters, {pending} requests pending, {secs} s, gRPC over mutual TLS"
    );
    println!("  allocations: {allocated} in {took:.1?}: {:.0} allocations/s", allocated as f64 / took.as_secs_f64());
    println!(
        "  allocate call (as a master sees it): p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} calls)",
        us(&h, 0.5),
        us(&h, 0.99),
        h.max() as f64,
        h.len()
    );
    Ok(())
}

fn scheduler(Load { workers, apps, pending }: Load, rounds: usize, runs_for: usize) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let limits = AppLimits::default();
    let mut c = ClusterState::with_limits(Duration::from_secs(3600), limits, 1);
    // A fifth of the workers are task nodes, on 10 racks; 16 vcores, 64 GiB each.
    let ids: Vec<String> = (0..workers).map(|i| format!("w{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let info = WorkerInfo {
            id: id.clone(),
            host: format!("{id}.example"),
            rack: format!("/rack{}", i % 10),
            label: if i % 5 == 4 { NodeLabel::Task } else { NodeLabel::Core },
            capacity: Resources::new(16, 64 * 1024),
        };
        c.register(info, Vec::new(), t0).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // The masters: submitted, started (their workers' first heartbeats), registered.
    let sub = AppSubmission {
        name: "bench".into(),
        am_resources: Resources::new(1, 1024),
        am_spec: ContainerSpec { command: vec!["am".into()], ..Default::default() },
        ..Default::default()
    };
    let mut masters = Vec::new();
    for _ in 0..apps {
        let id = c.submit("bench", sub.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        masters
            .push(c.report(&id, "bench", false).map_err(|e| anyhow::anyhow!("{e}"))?.attempts[0].container_id.clone());
    }
    for w in &ids {
        c.heartbeat(w, vec![], t0);
    }
    for am in &masters {
        c.register_master(am, "bench", "").map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let per_app = pending / apps as u32;
    // Each master: its response id, containers it holds (id -> (worker, round started)),
    // and how many it still wants.
    let mut response: Vec<u64> = vec![0; apps];
    let mut running: Vec<BTreeMap<String, (String, usize)>> = vec![BTreeMap::new(); apps];
    // Worker -> containers that ended there, reported on its next heartbeat.
    let mut ended: BTreeMap<String, Vec<ContainerStatus>> = BTreeMap::new();
    let (mut alloc_h, mut hb_h) = (hist(), hist());
    let mut allocated = 0u64;
    let mut in_core = Duration::ZERO;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..rounds {
        for (a, am) in masters.iter().enumerate() {
            // Containers that ran their rounds end (their worker reports it).
            let done: Vec<String> =
                running[a].iter().filter(|(_, (_, r))| round >= r + runs_for).map(|(k, _)| k.clone()).collect();
            for cid in done {
                let (w, _) = running[a].remove(&cid).expect("listed");
                ended.entry(w).or_default().push(ContainerStatus::ended(&cid, ExitReason::Exited, 0, ""));
            }
            // Keep `per_app` pending: the ask is absolute; a preferred host at random.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let host = format!("{}.example", ids[(rng % workers as u64) as usize]);
            let ask = ContainerAsk {
                ask_id: 1,
                resources: Resources::new(1, 2048),
                count: per_app,
                hosts: vec![host],
                relax_locality: true,
                ..Default::default()
            };
            let call = AllocateCall { response_id: response[a], asks: vec![ask], ..Default::default() };
            let t = Instant::now();
            let reply = c.allocate(am, "bench", call).map_err(|e| anyhow::anyhow!("{e}"))?;
            let took = t.elapsed();
            in_core += took;
            alloc_h.record(took.as_micros().max(1) as u64)?;
            response[a] = reply.response_id;
            allocated += reply.allocated.len() as u64;
            // Launch what was granted at once (the next call carries the launches).
            let launch: Vec<(String, ContainerSpec)> = reply
                .allocated
                .iter()
                .map(|g| (g.container_id.clone(), ContainerSpec { command: vec!["task".into()], ..Default::default() }))
                .collect();
            for g in &reply.allocated {
                running[a].insert(g.container_id.clone(), (g.worker_id.clone(), round));
            }
            if !launch.is_empty() {
                let call = AllocateCall { response_id: response[a], launch, ..Default::default() };
                let t = Instant::now();
                let reply = c.allocate(am, "bench", call).map_err(|e| anyhow::anyhow!("{e}"))?;
                in_core += t.elapsed();
                response[a] = reply.response_id;
                allocated += reply.allocated.len() as u64;
                for g in &reply.allocated {
                    running[a].insert(g.container_id.clone(), (g.worker_id.clone(), round));
                }
            }
        }
        for w in &ids {
            let statuses = ended.remove(w).unwrap_or_default();
            let t = Instant::now();
            c.heartbeat(w, statuses, t0);
            let took = t.elapsed();
            in_core += took;
            hb_h.record(took.as_micros().max(1) as u64)?;
        }
    }
    let busy: u32 = c.workers(t0).iter().map(|w| w.used.vcores).sum();
    let cap: u32 = c.workers(t0).iter().map(|w| w.capacity.vcores).sum();
    println!("rm-bench scheduler: {workers} workers, {apps} applications, {pending} requests pending, {rounds} rounds");
    println!(
        "  allocations: {allocated} in {:.2?} of scheduler time: {:.0} allocations/s",
        in_core,
        allocated as f64 / in_core.as_secs_f64()
    );
    println!(
        "  allocate call: p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} calls)",
        us(&alloc_h, 0.5),
        us(&alloc_h, 0.99),
        alloc_h.max() as f64,
        alloc_h.len()
    );
    println!(
        "  heartbeat:     p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} calls)",
        us(&hb_h, 0.5),
        us(&hb_h, 0.99),
        hb_h.max() as f64,
        hb_h.len()
    );
    println!("  at the end: {busy} of {cap} vcores busy");
    Ok(())
}

/// See the module's `rm-bench failover`.
async fn failover(rounds: usize) -> anyhow::Result<()> {
    use tarn_client::rm::RmClient;
    let lease = Duration::from_millis(tarn_tests::rm_config().ha_lease_ms);
    let (mut serve, mut adopted) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut cl = tarn_tests::Cluster::builder().datanodes(1).workers(2, 0).rm_processes(2).start().await;
        let alice = RmClient::new(&cl.rm_addrs, &tarn_tests::pki().transport(tarn_security::Role::User, "alice"))?;
        let admin = cl.rm_client();
        let sleeper = AppSubmission {
            name: "sleeps".into(),
            am_resources: Resources::new(2, 64),
            am_spec: ContainerSpec { command: vec!["/bin/sleep".into(), "600".into()], ..Default::default() },
            ..Default::default()
        };
        let apps = [alice.submit(&sleeper).await?, alice.submit(&sleeper).await?];
        let busy = || async { admin.workers().await.map(|ws| ws.iter().map(|w| w.used.vcores).sum::<u32>()) };
        while busy().await.unwrap_or(0) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cl.kill_rm(1);
        let t0 = Instant::now();
        while !tarn_tests::rm_is_active(&cl.rm_addrs[1]).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t_serve = t0.elapsed();
        while busy().await.unwrap_or(0) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t_adopted = t0.elapsed();
        for a in &apps {
            let r = alice.application(a).await?;
            anyhow::ensure!(r.attempts.len() == 1, "{a} started again: {r:?}");
        }
        println!("round {round}: serving after {t_serve:?}, workers and containers adopted after {t_adopted:?}");
        serve.push(t_serve);
        adopted.push(t_adopted);
        for a in &apps {
            alice.kill(a).await?;
        }
        cl.shutdown().await;
    }
    serve.sort();
    adopted.sort();
    let mid = |v: &[Duration]| v[v.len() / 2];
    println!(
        "failover over {rounds} rounds (lease {lease:?}): standby serving median {:?} (max {:?}), \
         {:.2}x the lease; everything adopted median {:?} (max {:?})",
        mid(&serve),
        serve.last().expect("a round"),
        mid(&serve).as_secs_f64() / lease.as_secs_f64(),
        mid(&adopted),
        adopted.last().expect("a round"),
    );
    Ok(())
}
