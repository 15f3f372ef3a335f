//! `tarn job`: distributed SQL jobs on the cluster (DataFusion SQL run by Ballista in
//! containers, see the `tarn-jobs` crate): submit, follow, see the result, kill.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use tarn_client::rm::AppState;
use tarn_jobs::master::JobProgress;
use tarn_jobs::JobSpec;

use crate::creds::ClientOpts;
use crate::out::outln;

#[derive(clap::Args)]
pub struct JobArgs {
    #[command(subcommand)]
    cmd: JobCmd,
    #[command(flatten)]
    conn: ClientOpts,
}

#[derive(clap::Subcommand)]
enum JobCmd {
    /// Submit SQL as a distributed job (DataFusion's SQL over `s3://bucket/...` and
    /// `tarn://path` paths: CREATE EXTERNAL TABLE, queries, COPY ... TO), checked first:
    /// SQL that does not parse or plan, or reads what is not there, is refused here. The
    /// last statement's rows are the job's result (`tarn job result`).
    ///
    /// Example: `tarn job submit --wait --sql "CREATE EXTERNAL TABLE t STORED AS PARQUET
    /// LOCATION 's3://my-bucket/orders/'; SELECT count(*) FROM t"`
    Submit {
        /// The statements (separated by `;`).
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        sql: Option<String>,
        /// A local file holding the statements.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long, default_value = "")]
        name: String,
        /// Executor containers.
        #[arg(long, default_value_t = 2)]
        executors: u32,
        #[command(flatten)]
        app: AppOpts,
        /// Follow the job to its end, then print its result; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// Run it on your running session of this name (`tarn job session start`): its
        /// warm executors start at once, and the rows come back here (always waits; the
        /// executor options above are the session's).
        #[arg(long, conflicts_with_all = ["wait", "name", "queue"])]
        session: Option<String>,
    },
    /// Session applications: a master with warm executors that runs many jobs (`tarn
    /// job submit --session NAME`), growing its executors while tasks wait and releasing
    /// them when idle.
    Session {
        #[command(subcommand)]
        cmd: SessionCmd,
    },
    /// A job's state and diagnostics.
    Status { app_id: String },
    /// Your jobs (`--all`: everyone's, for admins).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Kill a job: its containers stop and its tasks with them.
    Kill { app_id: String },
    /// The rows of a finished job's last statement, as a table.
    Result { app_id: String },
    /// A job's application master (run by the resource manager; not for people).
    #[command(hide = true)]
    Master {
        #[arg(long, default_value = "tarn")]
        tarn_bin: String,
        spec: String,
    },
    /// A job's executor (run by its master in a container; not for people).
    #[command(hide = true)]
    Executor {
        #[arg(long)]
        scheduler: String,
        #[arg(long)]
        vcores: u32,
        #[arg(long)]
        memory_mib: u64,
        #[arg(long, default_value_t = tarn_jobs::executor::OVERHEAD_MIB)]
        overhead_mib: u64,
    },
}

/// Where a job's or a session's application runs, and its executors' size.
#[derive(clap::Args)]
struct AppOpts {
    /// The leaf queue (default: `default`).
    #[arg(long, default_value = "")]
    queue: String,
    /// Cores of each executor.
    #[arg(long, default_value_t = 1)]
    vcores: u32,
    /// Memory of each executor (MiB).
    #[arg(long, default_value_t = 1024)]
    memory_mib: u64,
    /// What of each executor's memory stays outside DataFusion's pool (MiB; Spark's
    /// `spark.executor.memoryOverhead`).
    #[arg(long, default_value_t = tarn_jobs::executor::OVERHEAD_MIB)]
    memory_overhead_mib: u64,
    /// Memory of the application's master (MiB).
    #[arg(long, default_value_t = 1024)]
    master_memory_mib: u64,
    /// The `tarn` program the application's containers run, as the workers' hosts have
    /// it (default: `tarn`, which workers put first on their containers' PATH).
    #[arg(long)]
    tarn_bin: Option<String>,
}

impl AppOpts {
    /// `spec` with these executors' size.
    fn size(&self, spec: JobSpec) -> JobSpec {
        JobSpec { vcores: self.vcores, memory_mib: self.memory_mib, overhead_mib: self.memory_overhead_mib, ..spec }
    }

    /// Submits the application of `spec` (a job or a session) named `name`.
    async fn submit(self, rm: &tarn_client::rm::RmClient, name: String, spec: &JobSpec) -> anyhow::Result<String> {
        let bin = self.tarn_bin.unwrap_or_else(|| "tarn".into());
        let sub = tarn_jobs::session::submission(name, self.queue, self.master_memory_mib, &bin, spec);
        Ok(rm.submit(&sub).await?)
    }
}

#[derive(clap::Subcommand)]
enum SessionCmd {
    /// Start a session and wait until it serves.
    Start {
        /// Its name (one running per user and name).
        #[arg(default_value = "default")]
        name: String,
        /// Executors kept warm while no job runs.
        #[arg(long, default_value_t = 1)]
        min_executors: u32,
        /// Executors it may grow to while tasks wait.
        #[arg(long, default_value_t = 4)]
        max_executors: u32,
        /// Executors above the least are released after this long without a job.
        #[arg(long, default_value_t = 60)]
        idle_timeout_s: u64,
        /// The session ends after this long without a job (0: only when stopped).
        #[arg(long, default_value_t = 0)]
        stop_after_idle_s: u64,
        #[command(flatten)]
        app: AppOpts,
    },
    /// Stop a session: its application finishes and its containers stop.
    Stop {
        #[arg(default_value = "default")]
        name: String,
    },
    /// Your sessions.
    List,
}

/// How long `tarn job session start` waits for the session to serve.
const SESSION_OPEN_WAIT: Duration = Duration::from_secs(180);

async fn session(cmd: SessionCmd, conn: &ClientOpts) -> anyhow::Result<u8> {
    let rm = conn.connect_rm()?;
    match cmd {
        SessionCmd::Start { name, min_executors, max_executors, idle_timeout_s, stop_after_idle_s, app } => {
            let mut spec = app.size(JobSpec::session(&name, min_executors, max_executors, idle_timeout_s));
            if let Some(o) = spec.session.as_mut() {
                o.stop_after_idle_s = stop_after_idle_s;
            }
            spec.check_shape()?;
            if let Some(app) = tarn_jobs::session::find(&rm, &name).await? {
                anyhow::bail!("session {name:?} is already {} as {}", app.state.as_str(), app.app_id);
            }
            let app_name = format!("{}{name}", tarn_jobs::session::SESSION_PREFIX);
            let id = app.submit(&rm, app_name, &spec).await?;
            let nn = Arc::new(conn.connect()?);
            let pb = spinner();
            pb.set_message(format!("{id}: starting session {name:?}"));
            let open = tarn_jobs::session::wait_open(&rm, nn, &id, SESSION_OPEN_WAIT, |_| pb.tick()).await;
            pb.finish_and_clear();
            let client = open?;
            outln!("{id}")?;
            eprintln!("session {name:?} serves at {}: tarn job submit --session {name} --sql \"...\"", client.address);
            Ok(0)
        }
        SessionCmd::Stop { name } => {
            let Some(app) = tarn_jobs::session::find(&rm, &name).await? else {
                anyhow::bail!("no session {name:?} of yours is running");
            };
            let nn = Arc::new(conn.connect()?);
            let stopped = match tarn_jobs::session::SessionClient::connect_app(nn, &app).await {
                Ok(Some(mut c)) => c.stop().await.is_ok(),
                _ => false,
            };
            // Not serving (yet, or any more): end it through the resource manager.
            if !stopped {
                rm.kill(&app.app_id).await?;
            }
            outln!("{}: session {name:?} stopping (jobs running finish first)", app.app_id)?;
            Ok(0)
        }
        SessionCmd::List => {
            outln!("{:<28} {:<9} {:<20} DIAGNOSTICS", "APPLICATION", "STATE", "SESSION")?;
            for r in rm.applications(false).await? {
                if let Some(name) = r.name.strip_prefix(tarn_jobs::session::SESSION_PREFIX) {
                    outln!("{:<28} {:<9} {:<20} {}", r.app_id, r.state.as_str(), name, r.diagnostics)?;
                }
            }
            Ok(0)
        }
    }
}

pub(crate) fn spinner() -> ProgressBar {
    crate::out::progress(ProgressBar::new_spinner(), "{spinner} {elapsed} {msg}")
}

/// Runs `sql` on session `name`, showing its progress, and prints its rows.
async fn submit_to_session(conn: &ClientOpts, name: &str, sql: &str) -> anyhow::Result<u8> {
    let rm = conn.connect_rm()?;
    let nn = Arc::new(conn.connect()?);
    let mut client = tarn_jobs::session::SessionClient::connect(&rm, nn, name).await?;
    let pb = spinner();
    pb.set_message(format!("session {name:?}: starting"));
    let out = client
        .run_sql(sql, |p| {
            pb.set_message(format!(
                "session {name:?}: statement {}/{}, stages {}/{}, {} executors",
                p.statement, p.statements, p.stages_done, p.stages, p.executors
            ))
        })
        .await;
    pb.finish_and_clear();
    match out {
        Ok(r) => {
            if r.schema.is_some() {
                let table =
                    datafusion::arrow::util::pretty::pretty_format_batches(&r.batches).context("format the result")?;
                outln!("{table}")?;
            }
            eprintln!("{}: {} in {:.2} s", client.app_id, r.message, r.elapsed_ms as f64 / 1000.0);
            Ok(0)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("session {name:?} ({})", client.app_id))),
    }
}

impl JobArgs {
    /// A job's master or executor: logs like a daemon (to its container's stderr).
    pub fn runs_in_container(&self) -> bool {
        matches!(self.cmd, JobCmd::Master { .. } | JobCmd::Executor { .. })
    }
}

/// What the name of a job's application starts with (then `--name`, or the start of
/// its SQL): `tarn job list` lists these.
const JOB_PREFIX: &str = "job: ";

fn node_host() -> String {
    std::env::var("TARN_NODE_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "127.0.0.1".into())
}

pub async fn run(a: JobArgs) -> anyhow::Result<u8> {
    match a.cmd {
        JobCmd::Master { tarn_bin, spec } => {
            let spec = JobSpec::from_arg(&spec)?;
            let retry = tarn_client::RetryPolicy { deadline: Duration::from_secs(60), ..Default::default() };
            let mut rm = a.conn.connect_rm()?.with_retry(retry)?;
            if let Ok(cid) = std::env::var("TARN_CONTAINER_ID") {
                rm = rm.with_container(&cid);
            }
            let nn = Arc::new(a.conn.connect()?);
            let opts = tarn_jobs::master::MasterOptions { tarn_bin, node_host: node_host() };
            let out = tarn_jobs::master::run(rm, nn, spec, opts).await?;
            outln!("{}", out.message)?;
            Ok(if out.succeeded { 0 } else { 1 })
        }
        JobCmd::Executor { scheduler, vcores, memory_mib, overhead_mib } => {
            let nn = Arc::new(a.conn.connect()?);
            let opts = tarn_jobs::executor::ExecutorOptions {
                scheduler,
                vcores,
                memory_mib,
                overhead_mib,
                node_host: node_host(),
                container_id: std::env::var("TARN_CONTAINER_ID").context("TARN_CONTAINER_ID: not in a container")?,
                dir: std::env::current_dir().context("the container's directory")?,
            };
            tarn_jobs::executor::run(nn, opts).await?;
            Ok(0)
        }
        JobCmd::Submit { sql, file, name, executors, app, wait, session } => {
            let sql = match (sql, file) {
                (Some(s), _) => s,
                (None, Some(f)) => std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?,
                (None, None) => anyhow::bail!("--sql or --file: the job's statements"),
            };
            if let Some(name) = session {
                return submit_to_session(&a.conn, &name, &sql).await;
            }
            let name = if name.is_empty() {
                sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(40).collect()
            } else {
                name
            };
            let (id, rm, nn) = submit_job(&a.conn, app, JobSpec { executors, ..JobSpec::new(sql) }, name).await?;
            outln!("{id}")?;
            if !wait {
                return Ok(0);
            }
            let state = follow(&rm, &nn, &id).await?;
            if state != AppState::Finished {
                return Ok(1);
            }
            print_result(&rm, &nn, &id, true).await?;
            Ok(0)
        }
        JobCmd::Session { cmd } => session(cmd, &a.conn).await,
        JobCmd::Status { app_id } => {
            let rm = a.conn.connect_rm()?;
            let r = rm.application(&app_id).await?;
            outln!("{}  {}  user {}  queue {}", r.app_id, r.state.as_str(), r.user, r.queue)?;
            let nn = a.conn.connect()?;
            if let Some(p) = progress(&nn, &r.user, &app_id).await {
                outln!("  {}", show(&p))?;
            }
            if !r.diagnostics.is_empty() {
                outln!("  {}", r.diagnostics)?;
            }
            Ok(0)
        }
        JobCmd::List { all } => {
            let rm = a.conn.connect_rm()?;
            outln!("{:<28} {:<9} {:<12} {:<46} DIAGNOSTICS", "JOB", "STATE", "USER", "NAME")?;
            for r in
                rm.applications(all).await?.into_iter().filter(|r| {
                    r.name.starts_with(JOB_PREFIX) || r.name.starts_with(tarn_jobs::session::SESSION_PREFIX)
                })
            {
                outln!("{:<28} {:<9} {:<12} {:<46} {}", r.app_id, r.state.as_str(), r.user, r.name, r.diagnostics)?;
            }
            Ok(0)
        }
        JobCmd::Kill { app_id } => {
            let rm = a.conn.connect_rm()?;
            let killed = rm.kill(&app_id).await?;
            outln!("{app_id}: {}", if killed { "killed" } else { "had already ended" })?;
            Ok(0)
        }
        JobCmd::Result { app_id } => {
            let rm = a.conn.connect_rm()?;
            let nn = Arc::new(a.conn.connect()?);
            print_result(&rm, &nn, &app_id, false).await?;
            Ok(0)
        }
    }
}

/// Checks job `spec` (sized by `app`) and submits it as `job: NAME`; its application id,
/// and the clients that follow it.
async fn submit_job(
    conn: &ClientOpts,
    app: AppOpts,
    spec: JobSpec,
    name: String,
) -> anyhow::Result<(String, tarn_client::rm::RmClient, Arc<tarn_client::NamenodeClient>)> {
    let spec = app.size(spec);
    let nn = Arc::new(conn.connect()?);
    tarn_jobs::spec::check(&spec, nn.clone()).await.context("the job was not submitted")?;
    let rm = conn.connect_rm()?;
    let id = app.submit(&rm, format!("{JOB_PREFIX}{name}"), &spec).await?;
    Ok((id, rm, nn))
}

/// `tarn job submit --wait --sql SQL --name NAME --executors N`: checks, submits and
/// follows the job; its application id once it finished, else an error naming its end.
pub async fn submit_and_wait(conn: &ClientOpts, sql: String, name: &str, executors: u32) -> anyhow::Result<String> {
    // The options' defaults, as `tarn job submit` has them.
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        app: AppOpts,
    }
    let app = <Defaults as clap::Parser>::parse_from(["tarn"]).app;
    let (id, rm, nn) = submit_job(conn, app, JobSpec { executors, ..JobSpec::new(sql) }, name.to_string()).await?;
    let state = follow(&rm, &nn, &id).await?;
    if state != AppState::Finished {
        let r = rm.application(&id).await?;
        anyhow::bail!("{id} {}: {}", state.as_str(), r.diagnostics);
    }
    Ok(id)
}

/// The progress job `id` of `user` last recorded, if any.
async fn progress(nn: &tarn_client::NamenodeClient, user: &str, id: &str) -> Option<JobProgress> {
    let st = nn.get_file_info(&tarn_jobs::job_dir(user, id), true).await.ok()??;
    serde_json::from_slice(st.xattrs.get(tarn_jobs::master::PROGRESS_XATTR)?).ok()
}

fn show(p: &JobProgress) -> String {
    let mut s = format!(
        "statement {}/{}, stages {}/{}, {} executors, {:.1} s",
        p.statement,
        p.statements,
        p.stages_done,
        p.stages,
        p.executors,
        p.elapsed_ms as f64 / 1000.0
    );
    if p.executors_lost > 0 || p.stage_retries > 0 {
        s.push_str(&format!(
            " ({} executors lost, {} stages and {} statements run again)",
            p.executors_lost, p.stage_retries, p.statement_reruns
        ));
    }
    s
}

/// Follows application `id` to its end, showing its state and progress; returns it.
async fn follow(
    rm: &tarn_client::rm::RmClient,
    nn: &tarn_client::NamenodeClient,
    id: &str,
) -> anyhow::Result<AppState> {
    let pb = spinner();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let r = loop {
        tick.tick().await;
        pb.tick();
        let r = rm.application(id).await.with_context(|| format!("follow {id}"))?;
        let p = match r.state {
            AppState::Running => progress(nn, &r.user, id).await.map(|p| format!(": {}", show(&p))),
            _ => None,
        };
        pb.set_message(format!("{id}: {}{}", r.state.as_str(), p.unwrap_or_default()));
        if r.state.is_final() {
            break r;
        }
    };
    pb.finish_and_clear();
    let diag = if r.diagnostics.is_empty() { String::new() } else { format!(": {}", r.diagnostics) };
    if r.state == AppState::Finished {
        eprintln!("{id}: {}{diag}", r.state.as_str());
    } else {
        outln!("{id}: {}{diag}", r.state.as_str())?;
    }
    Ok(r.state)
}

async fn print_result(
    rm: &tarn_client::rm::RmClient,
    nn: &Arc<tarn_client::NamenodeClient>,
    id: &str,
    quiet_if_none: bool,
) -> anyhow::Result<()> {
    let r = rm.application(id).await?;
    let dir = tarn_jobs::job_dir(&r.user, id);
    match tarn_jobs::result::read(nn.clone(), &dir).await? {
        Some((_, batches)) => {
            let table =
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).context("format the result")?;
            outln!("{table}")?;
        }
        None if quiet_if_none => {}
        None => anyhow::bail!("{id} is {}: it kept no result in {dir}", r.state.as_str()),
    }
    Ok(())
}
