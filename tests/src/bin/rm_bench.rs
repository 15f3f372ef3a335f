//! `rm-bench`: the resource manager's scheduler under load (YARN's Scheduler Load
//! Simulator is the anchor): simulated workers heartbeat and simulated application masters
//! ask, launch and hear of ends, straight against the resource manager's core (no RPC), so
//! what is measured is the scheduler's own cost.
//!
//! `rm-bench scheduler --workers 100 --pending 1000` keeps 1,000 container requests
//! pending across the applications while containers run for a few rounds and end, and
//! reports allocations per second and the latency of allocate and heartbeat calls.
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

#[derive(Subcommand)]
enum Cmd {
    /// Allocations per second and call latencies with pending requests kept constant.
    Scheduler {
        #[arg(long, default_value_t = 100)]
        workers: usize,
        /// Applications sharing the pending requests.
        #[arg(long, default_value_t = 10)]
        apps: usize,
        /// Container requests kept pending.
        #[arg(long, default_value_t = 1000)]
        pending: u32,
        /// Rounds (every worker heartbeats, every master allocates, once per round).
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Rounds a container runs before it ends.
        #[arg(long, default_value_t = 5)]
        runs_for: usize,
    },
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

fn main() -> anyhow::Result<()> {
    let Cmd::Scheduler { workers, apps, pending, rounds, runs_for } = Args::parse().cmd;
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
        c.register(info, t0).map_err(|e| anyhow::anyhow!("{e}"))?;
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
