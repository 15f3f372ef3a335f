//! `tarn app`: applications on the resource manager (like `yarn application`): submit one
//! whose master runs a command, see where it is, kill it.

use anyhow::Context;
use tarn_client::rm::{AppReport, AppSubmission, ContainerSpec, Resources};

use crate::creds::ClientOpts;
use crate::out::outln;

#[derive(clap::Args)]
pub struct AppArgs {
    #[command(subcommand)]
    cmd: AppCmd,
    #[command(flatten)]
    conn: ClientOpts,
}

#[derive(clap::Subcommand)]
enum AppCmd {
    /// Submit an application whose master runs COMMAND in a container on a core node; with
    /// --wait, wait for it to end and exit 0 only if it finished.
    ///
    /// Example: `tarn app submit --name nightly --memory-mib 512 --wait -- /bin/sh -c 'echo hi'`
    Submit {
        #[arg(long, default_value = "")]
        name: String,
        /// The leaf queue (its path, or its name when no other leaf has it; default: the
        /// queue `default`). `tarn admin queues` lists them.
        #[arg(long, default_value = "")]
        queue: String,
        #[arg(long, default_value_t = 1)]
        vcores: u32,
        #[arg(long, default_value_t = 1024)]
        memory_mib: u64,
        /// Attempts at running its master (0: the resource manager's default, 2).
        #[arg(long, default_value_t = 0)]
        max_attempts: u32,
        /// Environment of the master (KEY=VALUE, repeat).
        #[arg(long = "env", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// A file of the cluster copied into the master's directory before it starts, as
        /// PATH or PATH#NAME (repeat); `--exec-file` makes it executable.
        #[arg(long = "file")]
        files: Vec<String>,
        #[arg(long = "exec-file")]
        exec_files: Vec<String>,
        #[arg(long)]
        wait: bool,
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// An application's state, diagnostics and attempts.
    Status { app_id: String },
    /// Your applications, oldest first (`--all`: everyone's, for admins).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Kill an application and its containers.
    Kill { app_id: String },
    /// The logs of an ended application's containers, as its workers kept them in the file
    /// system (`/.tarn/logs/USER/APP/CONTAINER/{stdout,stderr}`), like `yarn logs`.
    ///
    /// Example: `tarn app logs app-1764979200000-0001 --container app-1764979200000-0001_01_000002`
    Logs {
        app_id: String,
        /// Only this container's.
        #[arg(long)]
        container: Option<String>,
    },
    /// Run COMMAND in N containers (the built-in test application, like YARN's
    /// DistributedShell): its master asks for the containers, replaces failed ones, and
    /// finishes once every one has exited 0. Each sees SHELL_INDEX (0..N-1). Waits for the
    /// end (exit 0 only if it finished) unless --detach.
    ///
    /// Example: `tarn app run-shell -n 6 --memory-mib 128 -- /bin/sh -c 'hostname; echo $SHELL_INDEX'`
    RunShell {
        #[command(flatten)]
        spec: crate::shell_app::ShellSpec,
        #[arg(long, default_value = "")]
        name: String,
        /// The leaf queue (default: `default`).
        #[arg(long, default_value = "")]
        queue: String,
        /// The `tarn` program the master runs, as the workers' hosts have it (default:
        /// `tarn`, which workers put first on their containers' PATH).
        #[arg(long)]
        tarn_bin: Option<String>,
        #[arg(long)]
        detach: bool,
    },
    /// The shell application's master (run by the resource manager; not for people).
    #[command(hide = true)]
    ShellMaster {
        #[command(flatten)]
        spec: crate::shell_app::ShellSpec,
    },
}

/// `tarn app logs`: every kept log file of the application, each under a header.
async fn logs(
    conn: &ClientOpts,
    rm: &tarn_client::rm::RmClient,
    app_id: &str,
    only: Option<&str>,
) -> anyhow::Result<u8> {
    let r = rm.application(app_id).await?;
    let nn = conn.connect()?;
    let dir = tarn_worker::logs::app_logs_dir(&r.user, app_id);
    if nn.get_file_info(&dir, false).await?.is_none() {
        let why = if r.state.is_final() {
            "its workers have not kept them yet (a few heartbeats after it ends)"
        } else {
            "they are kept when it ends"
        };
        anyhow::bail!("{app_id} is {}: no logs in {dir} yet; {why}", r.state.as_str());
    }
    let mut containers: Vec<String> =
        nn.list_dir_all(&dir).await?.into_iter().map(|s| s.path.rsplit('/').next().unwrap_or("").to_string()).collect();
    containers.sort();
    let mut shown = 0;
    for cid in containers.iter().filter(|c| only.is_none_or(|o| o == c.as_str())) {
        for f in ["stdout", "stderr"] {
            let path = format!("{dir}/{cid}/{f}");
            if nn.get_file_info(&path, false).await?.is_none() {
                continue;
            }
            outln!("==> {cid}/{f} <==")?;
            crate::transfer_cmd::cat(&nn, &path).await?;
            shown += 1;
        }
    }
    if shown == 0 {
        anyhow::bail!("{dir}: no logs{}", only.map(|o| format!(" of container {o}")).unwrap_or_default());
    }
    Ok(0)
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

fn print(r: &AppReport) -> anyhow::Result<()> {
    outln!("{}  {}  user {}  queue {}", r.app_id, r.state.as_str(), r.user, r.queue)?;
    if !r.name.is_empty() {
        outln!("  name:        {}", r.name)?;
    }
    if !r.diagnostics.is_empty() {
        outln!("  diagnostics: {}", r.diagnostics)?;
    }
    for a in &r.attempts {
        let state = match a.status.ended {
            None => "running".to_string(),
            Some(reason) if a.status.diagnostics.is_empty() => {
                format!("{} (exit code {})", reason.as_str(), a.status.exit_code)
            }
            Some(reason) => format!("{} (exit code {}): {}", reason.as_str(), a.status.exit_code, a.status.diagnostics),
        };
        outln!("  attempt {} of {}: {} on {}: {state}", a.attempt, r.max_attempts, a.container_id, a.worker_id)?;
    }
    Ok(())
}

pub async fn run(a: AppArgs) -> anyhow::Result<u8> {
    let rm = a.conn.connect_rm()?;
    match a.cmd {
        AppCmd::RunShell { spec, name, queue, tarn_bin, detach } => {
            return crate::shell_app::run_shell(&rm, spec, name, queue, tarn_bin, detach).await
        }
        AppCmd::ShellMaster { spec } => return crate::shell_app::shell_master(rm, spec).await,
        AppCmd::Submit { name, queue, vcores, memory_mib, max_attempts, env, files, exec_files, wait, command } => {
            let local = |spec: &String, executable: bool| {
                let (path, name) = match spec.split_once('#') {
                    Some((p, n)) => (p.to_string(), n.to_string()),
                    None => (spec.clone(), spec.rsplit('/').next().unwrap_or_default().to_string()),
                };
                tarn_client::rm::LocalFile { path, name, executable }
            };
            let files =
                files.iter().map(|f| local(f, false)).chain(exec_files.iter().map(|f| local(f, true))).collect();
            let sub = AppSubmission {
                name,
                queue,
                am_resources: Resources::new(vcores, memory_mib),
                am_spec: ContainerSpec { command, env: env.into_iter().collect(), files },
                max_attempts,
                submission_id: String::new(),
            };
            let id = rm.submit(&sub).await?;
            outln!("{id}")?;
            if !wait {
                return Ok(0);
            }
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                let r = rm.application(&id).await.with_context(|| format!("follow {id}"))?;
                if r.state.is_final() {
                    print(&r)?;
                    return Ok(if r.state == tarn_client::rm::AppState::Finished { 0 } else { 1 });
                }
            }
        }
        AppCmd::Status { app_id } => print(&rm.application(&app_id).await?)?,
        AppCmd::List { all } => {
            outln!(
                "{:<28} {:<9} {:<12} {:<20} {:>8}  DIAGNOSTICS",
                "APPLICATION",
                "STATE",
                "USER",
                "NAME",
                "ATTEMPTS"
            )?;
            for r in rm.applications(all).await? {
                outln!(
                    "{:<28} {:<9} {:<12} {:<20} {:>8}  {}",
                    r.app_id,
                    r.state.as_str(),
                    r.user,
                    r.name,
                    r.attempts.len(),
                    r.diagnostics
                )?;
            }
        }
        AppCmd::Logs { app_id, container } => return logs(&a.conn, &rm, &app_id, container.as_deref()).await,
        AppCmd::Kill { app_id } => {
            let killed = rm.kill(&app_id).await?;
            outln!("{app_id}: {}", if killed { "killed" } else { "had already ended" })?;
        }
    }
    Ok(0)
}
