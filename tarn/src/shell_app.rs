//! `tarn app run-shell`: the built-in test application, in the spirit of YARN's
//! DistributedShell. Its master (`tarn app shell-master`, run by the resource manager in a
//! container on a core node) registers, asks for N containers, starts COMMAND in each
//! (`SHELL_INDEX` = 0..N-1), replaces the ones that fail until more than
//! `--max-failures` have, and finishes the application: succeeded once every index has
//! exited 0.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use tarn_client::rm::{
    AllocateCall, AppState, AppSubmission, ContainerAsk, ContainerSpec, FinalStatus, Resources, RmClient,
};

use crate::out::outln;

/// What `run-shell` and the master it starts agree on.
#[derive(clap::Args, Clone, Debug)]
pub struct ShellSpec {
    /// Containers to run COMMAND in.
    #[arg(short = 'n', long = "containers", default_value_t = 1)]
    pub containers: u32,
    /// Cores of each container.
    #[arg(long, default_value_t = 1)]
    pub vcores: u32,
    /// Memory of each container (MiB).
    #[arg(long, default_value_t = 256)]
    pub memory_mib: u64,
    /// Containers that may fail (each is replaced) before the application fails.
    #[arg(long, default_value_t = 3)]
    pub max_failures: u32,
    /// Run on nodes of this label only (core or task); default: any node.
    #[arg(long)]
    pub label: Option<String>,
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

impl ShellSpec {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-n".to_string(),
            self.containers.to_string(),
            "--vcores".into(),
            self.vcores.to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
            "--max-failures".into(),
            self.max_failures.to_string(),
        ];
        if let Some(l) = &self.label {
            a.extend(["--label".to_string(), l.clone()]);
        }
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }
}

/// Submits the shell application and follows it to its end (exit 0 only if it finished).
pub async fn run_shell(
    rm: &RmClient,
    spec: ShellSpec,
    name: String,
    queue: String,
    tarn_bin: Option<String>,
    detach: bool,
) -> anyhow::Result<u8> {
    if spec.containers == 0 {
        anyhow::bail!("-n: at least one container");
    }
    if let Some(l) = &spec.label {
        tarn_client::rm::NodeLabel::parse(l).with_context(|| format!("--label {l:?}: core or task"))?;
    }
    // The master runs `tarn` on a worker: by name, the worker's own (first on a
    // container's PATH), unless told otherwise.
    let bin = tarn_bin.unwrap_or_else(|| "tarn".into());
    let mut command = vec![bin, "app".into(), "shell-master".into()];
    command.extend(spec.args());
    let sub = AppSubmission {
        name: if name.is_empty() { "run-shell".into() } else { name },
        queue,
        am_resources: Resources::new(1, 256),
        am_spec: ContainerSpec { command, env: BTreeMap::new(), files: Vec::new() },
        max_attempts: 0,
        submission_id: String::new(),
    };
    let id = rm.submit(&sub).await?;
    outln!("{id}")?;
    if detach {
        return Ok(0);
    }
    let pb = crate::job_cmd::spinner();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let r = loop {
        tick.tick().await;
        pb.tick();
        let r = rm.application(&id).await.with_context(|| format!("follow {id}"))?;
        pb.set_message(format!("{id}: {}", r.state.as_str()));
        if r.state.is_final() {
            break r;
        }
    };
    pb.finish_and_clear();
    outln!(
        "{id}: {}{}",
        r.state.as_str(),
        if r.diagnostics.is_empty() { String::new() } else { format!(": {}", r.diagnostics) }
    )?;
    Ok(if r.state == AppState::Finished { 0 } else { 1 })
}

/// The shell application's master, inside its container.
pub async fn shell_master(rm: RmClient, spec: ShellSpec) -> anyhow::Result<u8> {
    // A master rides out a failover of the resource manager (the standby's takeover, the
    // workers' registration with it) rather than failing its attempt.
    let retry = tarn_client::RetryPolicy { deadline: Duration::from_secs(60), ..Default::default() };
    let mut rm = rm.with_retry(retry)?;
    // Dev mode: no credential names the container, so the master says which it is.
    if let Ok(cid) = std::env::var("TARN_CONTAINER_ID") {
        rm = rm.with_container(&cid);
    }
    let reg = rm.register_master("").await.context("register the application master")?;
    outln!("master of {} attempt {} registered", reg.app_id, reg.attempt)?;
    let label = match &spec.label {
        Some(l) => Some(tarn_client::rm::NodeLabel::parse(l).context("--label: core or task")?),
        None => None,
    };
    let n = spec.containers;
    // Indexes still to run, running (container -> index), done.
    let mut todo: BTreeSet<u32> = (0..n).collect();
    let mut running: BTreeMap<String, u32> = BTreeMap::new();
    let mut done = 0u32;
    let mut failures = 0u32;
    let mut response_id = 0u64;
    let mut launch: Vec<(String, ContainerSpec)> = Vec::new();
    let mut release: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let wanted = todo.len() as u32;
        let ask = ContainerAsk {
            ask_id: 1,
            resources: Resources::new(spec.vcores, spec.memory_mib),
            count: wanted,
            relax_locality: true,
            label,
            ..Default::default()
        };
        let call = AllocateCall {
            response_id,
            asks: vec![ask],
            launch: std::mem::take(&mut launch),
            release: std::mem::take(&mut release),
            progress: done as f32 / n as f32,
        };
        let reply = match rm.allocate(&call).await {
            Ok(r) => r,
            // The resource manager failed over: register with the new one, which says
            // which containers it knows; the others' starts were lost.
            Err(e) if e.kind() == tarn_client::ErrorKind::MasterNotRegistered => {
                let reg = rm.register_master("").await.context("register the application master again")?;
                let known: BTreeSet<String> = reg.containers.into_iter().collect();
                let lost: Vec<String> = running.keys().filter(|c| !known.contains(*c)).cloned().collect();
                for cid in lost {
                    let index = running.remove(&cid).expect("listed above");
                    outln!("index {index}: container {cid} was lost in the failover; running it again")?;
                    todo.insert(index);
                }
                outln!("registered again after a failover of the resource manager")?;
                response_id = 0;
                continue;
            }
            Err(e) => return Err(e).context("allocate"),
        };
        response_id = reply.response_id;
        for cid in &reply.preempted {
            outln!("container {cid} will be preempted (its queue is over its guarantee)")?;
        }
        for a in reply.allocated {
            let Some(index) = todo.pop_first() else {
                release.push(a.container_id);
                continue;
            };
            let mut env = BTreeMap::new();
            env.insert("SHELL_INDEX".to_string(), index.to_string());
            outln!("index {index}: container {} on {}", a.container_id, a.worker_id)?;
            running.insert(a.container_id.clone(), index);
            launch.push((a.container_id, ContainerSpec { command: spec.command.clone(), env, files: Vec::new() }));
        }
        for st in reply.completed {
            let Some(index) = running.remove(&st.container_id) else { continue };
            // Taken back for another queue: not this command's failure; it runs again.
            if st.ended == Some(tarn_client::rm::ExitReason::Preempted) {
                outln!("index {index}: container {} was preempted; running it again", st.container_id)?;
                todo.insert(index);
                continue;
            }
            let ok = st.ended == Some(tarn_client::rm::ExitReason::Exited) && st.exit_code == 0;
            if ok {
                done += 1;
                outln!("index {index}: container {} succeeded", st.container_id)?;
                continue;
            }
            failures += 1;
            let why = format!(
                "index {index}: container {} {} (exit code {}){}",
                st.container_id,
                st.ended.map(|r| r.as_str()).unwrap_or("ended"),
                st.exit_code,
                if st.diagnostics.is_empty() { String::new() } else { format!(": {}", st.diagnostics) }
            );
            outln!("{why}")?;
            if failures > spec.max_failures {
                let msg = format!("{failures} containers failed (at most {} may); the last: {why}", spec.max_failures);
                rm.finish_master_after_failover(FinalStatus::Failed, &msg).await.context("finish")?;
                return Ok(1);
            }
            todo.insert(index);
        }
        if done == n {
            let msg = format!("{n} of {n} containers succeeded ({failures} failed and were replaced)");
            outln!("{msg}")?;
            rm.finish_master_after_failover(FinalStatus::Succeeded, &msg).await.context("finish")?;
            return Ok(0);
        }
    }
}
