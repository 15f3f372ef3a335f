//! `tarn admin`: the namenode group (status, membership, snapshots), quotas, datanodes
//! (`report`) and block health (`fsck`).

use tarn_client::NamenodeClient;

use crate::out::outln;

#[derive(clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub conn: crate::creds::ClientOpts,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(clap::Subcommand)]
enum AdminCmd {
    /// Show the namenode group: leader, term, members and how far each has replicated.
    Status,
    /// Issue a certificate from the cluster CA for a new node or a user (run it where the
    /// CA key is; nothing is sent to the cluster).
    ///
    /// Example: `tarn admin issue-cert --role datanode --name dn7 --host dn7.example.com --out /tmp/dn7`
    IssueCert(crate::creds::IssueCertArgs),
    /// Rotate the cluster master key: seal every replica's data key on this datanode's
    /// (stopped) data directories, and with `--s3` every stored S3 secret, with the new key
    /// instead of the old one. No block data is rewritten. Run it on each datanode host,
    /// then give the daemons the new key file. Safe to run again if interrupted.
    /// Small files kept in the namespace: restart the namenodes with the new key as
    /// `security.master_key_file` and the old one in `security.previous_master_key_files`,
    /// run this with `--small-files`, then drop the old key from the namenodes.
    ///
    /// Example: `tarn admin rotate-master-key --old-key-file keys/master.key --new-key-file keys/master-2.key --data-dir /disk1/tarn --s3`
    RotateMasterKey {
        /// The key in use now.
        #[arg(long)]
        old_key_file: std::path::PathBuf,
        /// The new key (created, mode 0600, if the file does not exist).
        #[arg(long)]
        new_key_file: std::path::PathBuf,
        /// A stopped datanode's data directories (repeat).
        #[arg(long = "data-dir")]
        data_dirs: Vec<std::path::PathBuf>,
        /// Also re-seal the S3 secret keys kept in the namespace (needs the cluster).
        #[arg(long)]
        s3: bool,
        /// Also have the namenode leader re-seal the small files kept in the namespace under
        /// the new key (the namenodes must run with it, and the old one as a previous key).
        #[arg(long)]
        small_files: bool,
    },
    /// Add a namenode as a learner (it receives the log but does not vote).
    ///
    /// Example: `tarn admin add-learner --id 4 --addr 10.0.0.4:8020`
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        id: u64,
    },
    /// Remove a namenode from the group.
    Remove {
        #[arg(long)]
        id: u64,
    },
    /// Build a snapshot now on the namenode at --namenode.
    Snapshot,
    /// Finish a rolling upgrade: once every namenode runs the new tarn, raise the cluster's
    /// format so that features needing it (S3's atomic CreateBucket, ...) work. Until then
    /// the cluster writes what the old binary reads, so a node can still be rolled back.
    /// Refused, naming the nodes, while any runs an older binary or is unreachable.
    ///
    /// Example: `tarn admin finalize-upgrade`
    FinalizeUpgrade,
    /// Datanodes (capacity, use, liveness) and block health: under-replicated, missing and
    /// corrupt counts.
    Report,
    /// Whether the cluster is whole: a namenode leader, every member answering and caught
    /// up, safe mode off, no block under-replicated or missing, every datanode in service
    /// alive, the resource manager answering and every worker it knows running. With
    /// `--datanodes N` / `--workers N`, N live ones are required instead, and dead or lost
    /// ones (removed nodes) are only listed. Exit 0 when healthy; with `--wait` it waits,
    /// printing what is still wrong, and exits 1 when the time is up. Rolling upgrades
    /// wait on it between nodes.
    ///
    /// Example: `tarn admin health --wait 300 --datanodes 3 --workers 5`
    Health {
        /// Seconds to wait for health (0: check once).
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Live datanodes in service required (0: every one the namenode knows).
        #[arg(long, default_value_t = 0)]
        datanodes: usize,
        /// Running workers required (0: every one the resource manager knows; no resource
        /// manager in the configuration: workers are not checked).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Log entries a namenode may have left to apply and still count as caught up.
        #[arg(long, default_value_t = 1000)]
        max_lag: u64,
        /// A host whose roles were restarted: its datanode and worker count only once they
        /// have reported after --since (until then the namenode and resource manager still
        /// trust the stopped processes' last heartbeats).
        #[arg(long, requires = "since")]
        restarted: Option<String>,
        /// When the restarted host's roles had stopped (Unix seconds).
        #[arg(long, requires = "restarted")]
        since: Option<u64>,
    },
    /// Drain a datanode (uuid or address) so it can be taken out: no new replicas go to it
    /// and its replicas are copied elsewhere; `tarn admin report` shows "decommissioned"
    /// when it is safe to stop. `--off` puts it back in service.
    ///
    /// Example: `tarn admin decommission 10.0.0.7:9866`
    Decommission {
        node: String,
        #[arg(long)]
        off: bool,
    },
    /// The workers the resource manager knows (as `tarn workers`).
    Nodes,
    /// Drain a worker: no new containers go there; those running have until the deadline,
    /// then they are stopped (their applications replace them elsewhere). `--cancel` puts it
    /// back in service.
    ///
    /// Example: `tarn admin drain-worker w7 --deadline-secs 600`
    DrainWorker {
        worker: String,
        #[arg(long, default_value_t = 600)]
        deadline_secs: u64,
        #[arg(long)]
        cancel: bool,
    },
    /// The resource manager's queues: each leaf's guarantee and maximum (percent of the
    /// cluster), its use now, and its applications waiting and running.
    ///
    /// Example: `tarn admin queues`
    Queues {
        /// Print the TOML the queues were loaded from instead.
        #[arg(long)]
        source: bool,
    },
    /// Replace the resource manager's queues with those of a TOML file, without a restart
    /// (the capacity scheduler's refresh). Each `[queue.NAME]` table (NAME a dotted path
    /// below the root) sets `capacity` (percent of its parent; siblings add up to 100),
    /// `max_capacity` (percent of the cluster), `user_limit_factor`, `max_am_share`,
    /// `submit_users` and `labels` ("core", "task"). Refused, changing nothing, if the
    /// file is wrong or a queue with applications waiting or running would go.
    ///
    /// Example: `tarn admin refresh-queues queues.toml`
    RefreshQueues { file: std::path::PathBuf },
    /// Safe mode: `get` shows it; `leave` ends it now (when some blocks will never be
    /// reported and the cluster should run without them).
    Safemode {
        #[arg(value_parser = ["get", "leave"])]
        action: String,
    },
    /// Check the blocks of every file under PATH, like `hdfs fsck`: missing blocks, corrupt
    /// replicas, and blocks with fewer live replicas than their file's replication (saying
    /// which cannot be fixed for want of live datanodes). Exits 1 if a block has no live
    /// replica.
    ///
    /// Example: `tarn admin fsck / -v`
    Fsck {
        path: String,
        /// List every file, not only the unhealthy ones.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Groups of users for file permissions (kept in the replicated namespace; every user
    /// is also in the group named like them). A file's group is its directory's when made.
    ///
    /// Example: `tarn admin groups add analysts alice bob`, then
    /// `tarn fs chgrp analysts /warehouse && tarn fs chmod 770 /warehouse`
    Groups {
        #[command(subcommand)]
        cmd: GroupsCmd,
    },
    /// Set quotas on a directory: -1 clears, 0 keeps, > 0 sets.
    ///
    /// Example: `tarn admin set-quota /user/ana --namespace 100000 --space 1099511627776`
    SetQuota {
        path: String,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        namespace: i64,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        space: i64,
    },
}

#[derive(clap::Subcommand)]
enum GroupsCmd {
    /// Add users to a group (made with its first member).
    Add {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove users from a group (gone with its last member).
    Remove {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Every group and its members, or with --user the groups of one user.
    List {
        #[arg(long)]
        user: Option<String>,
    },
}

fn print_status(s: &tarn_client::ClusterStatus) -> anyhow::Result<()> {
    match (s.leader_id, &s.leader_addr) {
        (Some(id), Some(addr)) => outln!("leader:  namenode {id} at {addr} (term {})", s.term)?,
        (Some(id), None) => outln!("leader:  namenode {id} (term {})", s.term)?,
        _ => outln!("leader:  none known (term {})", s.term)?,
    }
    outln!(
        "answered by namenode {} ({}), last log {}, applied {}, snapshot {}",
        s.node_id,
        s.state,
        s.last_log_index,
        s.last_applied,
        s.snapshot_index
    )?;
    if s.cluster_format < s.binary_format {
        outln!(
            "format:  the cluster writes format {}, this namenode's binary reads up to {}: an upgrade is not finalized (tarn admin finalize-upgrade)",
            s.cluster_format, s.binary_format
        )?;
    } else {
        outln!("format:  {}", s.cluster_format)?;
    }
    outln!("{:>4}  {:<24} {:<8} {:>12}", "ID", "ADDRESS", "ROLE", "MATCHED")?;
    for m in &s.members {
        let role = if m.voter { "voter" } else { "learner" };
        outln!("{:>4}  {:<24} {:<8} {:>12}", m.node_id, m.addr, role, m.matched_index)?;
    }
    Ok(())
}

pub async fn run(a: AdminArgs) -> anyhow::Result<u8> {
    // Issuing a certificate needs the CA, not the cluster; so does rotating keys on disk.
    let cmd = match a.cmd {
        AdminCmd::IssueCert(i) => return crate::creds::issue_cert(i),
        AdminCmd::RotateMasterKey { old_key_file, new_key_file, data_dirs, s3, small_files } => {
            return rotate_master_key(&a.conn, &old_key_file, &new_key_file, &data_dirs, s3, small_files).await
        }
        cmd => cmd,
    };
    let c = a.conn.connect()?;
    match cmd {
        AdminCmd::IssueCert(i) => return crate::creds::issue_cert(i),
        AdminCmd::RotateMasterKey { old_key_file, new_key_file, data_dirs, s3, small_files } => {
            return rotate_master_key(&a.conn, &old_key_file, &new_key_file, &data_dirs, s3, small_files).await
        }
        AdminCmd::Nodes => return crate::print_workers(&a.conn).await,
        AdminCmd::Queues { source } => {
            let (queues, text) = a.conn.connect_rm()?.queues().await?;
            if source {
                outln!("{}", if text.is_empty() { "# the default queue: no queues loaded" } else { text.trim_end() })?;
                return Ok(0);
            }
            outln!(
                "{:<24} {:>9} {:>8} {:>7} {:>14} {:>8} {:>8}  USERS",
                "QUEUE",
                "CAPACITY",
                "MAXIMUM",
                "USED",
                "VCORES/MIB",
                "WAITING",
                "RUNNING"
            )?;
            for q in &queues {
                let pct = |f: f64| format!("{:.1}%", f * 100.0);
                let users = if q.submit_users.is_empty() { "*".to_string() } else { q.submit_users.join(",") };
                outln!(
                    "{:<24} {:>9} {:>8} {:>7} {:>14} {:>8} {:>8}  {users}",
                    q.path,
                    pct(q.guarantee),
                    pct(q.max),
                    pct(q.used),
                    format!("{}/{}", q.used_resources.vcores, q.used_resources.memory_mib),
                    q.pending_apps,
                    q.running_apps
                )?;
            }
            return Ok(0);
        }
        AdminCmd::RefreshQueues { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("read {}: {e}", file.display()))?;
            let leaves = a.conn.connect_rm()?.refresh_queues(&text).await?;
            outln!("queues refreshed from {}: {leaves} leaf queues", file.display())?;
            return Ok(0);
        }
        AdminCmd::DrainWorker { worker, deadline_secs, cancel } => {
            let rm = a.conn.connect_rm()?;
            let left = rm.drain_worker(&worker, std::time::Duration::from_secs(deadline_secs), cancel).await?;
            if cancel {
                outln!("worker {worker}: back in service ({left} containers on it)")?;
            } else {
                outln!("worker {worker}: draining; {left} containers on it have {deadline_secs} s")?;
            }
            return Ok(0);
        }
        AdminCmd::Status => print_status(&c.cluster_status().await?)?,
        AdminCmd::AddLearner { id, addr } => print_status(&c.add_learner(id, &addr).await?)?,
        AdminCmd::Promote { id } => {
            let s = c.cluster_status().await?;
            let mut voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.node_id).collect();
            if !s.members.iter().any(|m| m.node_id == id) {
                anyhow::bail!("namenode {id} is not a member; add it first with add-learner");
            }
            voters.push(id);
            print_status(&c.change_membership(voters, false).await?)?;
        }
        AdminCmd::Remove { id } => {
            let s = c.cluster_status().await?;
            let voters: Vec<u64> = s.members.iter().filter(|m| m.voter && m.node_id != id).map(|m| m.node_id).collect();
            print_status(&c.change_membership(voters, false).await?)?;
        }
        AdminCmd::Snapshot => {
            let addr = a.conn.namenodes()?.first().cloned().unwrap_or_default();
            let idx = c.trigger_snapshot_on(&addr).await?;
            outln!("snapshot built up to log index {idx}")?;
        }
        AdminCmd::Report => report(&c).await?,
        AdminCmd::Health { wait, datanodes, workers, max_lag, restarted, since } => {
            let since = since.map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
            let want = Want { datanodes, workers, max_lag, restarted: restarted.zip(since) };
            return health(&a.conn, &c, &want, std::time::Duration::from_secs(wait)).await;
        }
        AdminCmd::FinalizeUpgrade => {
            let (before, after) = c.finalize_upgrade().await?;
            if before == after {
                outln!("the cluster already writes format {after}: nothing to finalize")?;
            } else {
                outln!("upgrade finalized: the cluster writes format {after} (was {before})")?;
            }
        }
        AdminCmd::Decommission { node, off } => {
            let uuid = c.decommission(&node, !off).await?;
            outln!("datanode {uuid}: {}", if off { "back in service" } else { "draining" })?;
        }
        AdminCmd::Safemode { action } => {
            if action == "leave" {
                c.leave_safe_mode().await?;
            }
            let on = c.datanode_report().await?.safe_mode;
            outln!("Safe mode is {}", if on { "ON" } else { "OFF" })?;
        }
        AdminCmd::Fsck { path, verbose } => return fsck(&c, &path, verbose).await,
        AdminCmd::Groups { cmd } => match cmd {
            GroupsCmd::Add { group, users } => {
                c.change_group(&group, &users, &[]).await?;
                outln!("{group}: added {}", users.join(", "))?;
            }
            GroupsCmd::Remove { group, users } => {
                c.change_group(&group, &[], &users).await?;
                outln!("{group}: removed {}", users.join(", "))?;
            }
            GroupsCmd::List { user } => {
                for (g, members) in c.list_groups(user.as_deref()).await? {
                    outln!("{g}: {}", members.join(" "))?;
                }
            }
        },
        AdminCmd::SetQuota { path, namespace, space } => {
            let s = c.set_quota(&path, namespace, space).await?;
            if let Some(q) = s.quota {
                let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
                outln!(
                    "{path}: namespace quota {} (used {}), space quota {} (used {})",
                    show(q.namespace_quota),
                    q.namespace_used,
                    show(q.space_quota),
                    q.space_used
                )?;
            } else {
                outln!("{path}: no quota")?;
            }
        }
    }
    Ok(0)
}

/// What `tarn admin health` requires.
struct Want {
    datanodes: usize,
    workers: usize,
    max_lag: u64,
    /// A host restarted, and when its roles had stopped.
    restarted: Option<(String, std::time::SystemTime)>,
}

impl Want {
    /// Whether a role on `host`, last heard `ago`, has yet to report since its restart.
    fn stale(&self, host: &str, ago: std::time::Duration) -> bool {
        match &self.restarted {
            Some((h, stopped)) if h == host => {
                std::time::SystemTime::now().checked_sub(ago).is_none_or(|heard| heard <= *stopped)
            }
            _ => false,
        }
    }
}

/// Checks once: what is wrong (empty: healthy) and what is worth saying anyway.
async fn check_health(conn: &crate::creds::ClientOpts, c: &NamenodeClient, want: &Want) -> (Vec<String>, Vec<String>) {
    let (mut wrong, mut notes) = (Vec::new(), Vec::new());
    // As the leader sees it: a follower may answer first, with its own view.
    let status = match c.cluster_status().await {
        Ok(s) if s.state != "Leader" && s.leader_addr.is_some() => {
            c.cluster_status_of(s.leader_addr.as_deref().unwrap_or_default()).await
        }
        other => other,
    };
    match status {
        Err(e) => wrong.push(format!("namenode group: {e}")),
        Ok(s) if s.state != "Leader" => wrong.push(format!("namenode group: no leader answers (asked {})", s.node_id)),
        Ok(s) if s.leader_id.is_none() => wrong.push("namenode group: no leader".into()),
        Ok(s) => {
            if s.cluster_format < s.binary_format {
                notes.push(format!(
                    "format {} (binary reads {}): an upgrade is not finalized",
                    s.cluster_format, s.binary_format
                ));
            }
            for m in &s.members {
                // Each member answers itself: a restarted node serves again, not only replicates.
                match c.cluster_status_of(&m.addr).await {
                    Err(e) => wrong.push(format!("namenode {} at {}: {e}", m.node_id, m.addr)),
                    // A restarted node answers at once from what it kept: it counts once it
                    // follows this term's leader and has applied what the group has.
                    Ok(own) if own.term != s.term || own.leader_id != s.leader_id => wrong.push(format!(
                        "namenode {} at {}: not yet following leader {} of term {}",
                        m.node_id,
                        m.addr,
                        s.leader_id.unwrap_or_default(),
                        s.term
                    )),
                    Ok(own) if own.last_applied + want.max_lag < s.last_log_index => wrong.push(format!(
                        "namenode {} at {}: applied {} of {} (catching up)",
                        m.node_id, m.addr, own.last_applied, s.last_log_index
                    )),
                    Ok(_) => {}
                }
            }
        }
    }
    match c.datanode_report().await {
        Err(e) => wrong.push(format!("datanodes: {e}")),
        Ok(r) => {
            if r.safe_mode {
                wrong.push("safe mode is on".into());
            }
            let in_service = |d: &&tarn_client::DatanodeInfo| d.decommission == tarn_client::Decommission::InService;
            let live = r.datanodes.iter().filter(in_service).filter(|d| d.alive).count();
            let dead: Vec<&str> =
                r.datanodes.iter().filter(in_service).filter(|d| !d.alive).map(|d| d.location.addr.as_str()).collect();
            let what = format!("datanodes: {live} live in service");
            counted(what, live, want.datanodes, "dead datanodes", &dead, &mut wrong, &mut notes);
            for d in &r.datanodes {
                let host = d.location.addr.rsplit_once(':').map_or(d.location.addr.as_str(), |(h, _)| h);
                if d.alive && want.stale(host, d.since_heartbeat) {
                    wrong.push(format!("datanode {}: not heard from since its restart", d.location.addr));
                }
            }
            let b = &r.blocks;
            if b.missing > 0 {
                wrong.push(format!("{} blocks missing (no live replica)", b.missing));
            }
            // Blocks that cannot get more copies (fewer datanodes than their replication)
            // are said, not waited for: no wait would end.
            let fixable = b.under_replicated.saturating_sub(b.under_replicated_unfixable);
            if fixable > 0 {
                wrong.push(format!("{fixable} blocks under-replicated"));
            }
            if b.under_replicated_unfixable > 0 {
                notes.push(format!("{} blocks under-replicated for want of datanodes", b.under_replicated_unfixable));
            }
        }
    }
    if conn.resource_managers_configured() {
        use tarn_client::rm::WorkerState;
        match conn.connect_rm() {
            Err(e) => wrong.push(format!("resource manager: {e}")),
            Ok(rm) => match rm.workers().await {
                Err(e) => wrong.push(format!("resource manager: {e}")),
                Ok(ws) => {
                    for w in ws.iter().filter(|w| w.state != WorkerState::Lost) {
                        if want.stale(&w.host, w.since_heartbeat) {
                            wrong.push(format!("worker {}: not heard from since its restart", w.worker_id));
                        }
                    }
                    let running = ws.iter().filter(|w| w.state == WorkerState::Running).count();
                    let lost: Vec<&str> =
                        ws.iter().filter(|w| w.state == WorkerState::Lost).map(|w| w.worker_id.as_str()).collect();
                    let what = format!("workers: {running} running");
                    counted(what, running, want.workers, "lost workers", &lost, &mut wrong, &mut notes);
                }
            },
        }
    }
    (wrong, notes)
}

/// Nodes of one kind: with `wanted` > 0, at least that many `up` (those `down` only said);
/// else none may be down.
fn counted(
    what: String,
    up: usize,
    wanted: usize,
    down_word: &str,
    down: &[&str],
    wrong: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let down_line = (!down.is_empty()).then(|| format!("{down_word}: {}", down.join(", ")));
    if wanted > 0 {
        if up < wanted {
            wrong.push(format!("{what}, {wanted} wanted"));
        }
        notes.extend(down_line);
    } else {
        wrong.extend(down_line);
    }
}

async fn health(
    conn: &crate::creds::ClientOpts,
    c: &NamenodeClient,
    want: &Want,
    wait: std::time::Duration,
) -> anyhow::Result<u8> {
    let deadline = std::time::Instant::now() + wait;
    let mut said = Vec::new();
    loop {
        let (wrong, notes) = check_health(conn, c, want).await;
        if wrong.is_empty() {
            for n in &notes {
                outln!("note: {n}")?;
            }
            outln!("healthy")?;
            return Ok(0);
        }
        if std::time::Instant::now() >= deadline {
            for w in &wrong {
                outln!("unhealthy: {w}")?;
            }
            return Ok(crate::EXIT_FAILED);
        }
        // Say what is wrong when it changes, not every second.
        if wrong != said {
            outln!("waiting: {}", wrong.join("; "))?;
            said = wrong;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

async fn report(c: &NamenodeClient) -> anyhow::Result<()> {
    let r = c.datanode_report().await?;
    let live = r.datanodes.iter().filter(|d| d.alive).count();
    if r.safe_mode {
        outln!("Safe mode is ON: the namespace takes no changes until datanodes have reported enough blocks")?;
    }
    outln!("datanodes: {} live, {} dead", live, r.datanodes.len() - live)?;
    outln!(
        "{:<22} {:<22} {:<16} {:<14} {:>11} {:>11} {:>11} {:>9} {:>10}",
        "UUID",
        "ADDRESS",
        "RACK",
        "STATE",
        "CAPACITY",
        "USED",
        "FREE",
        "REPLICAS",
        "HEARTBEAT"
    )?;
    for d in &r.datanodes {
        let loc = &d.location;
        let state = if !d.alive {
            "dead"
        } else if d.decommission != tarn_client::Decommission::InService {
            d.decommission.as_str()
        } else if d.full {
            "full"
        } else {
            "live"
        };
        outln!(
            "{:<22} {:<22} {:<16} {:<14} {:>11} {:>11} {:>11} {:>9} {:>8}ms",
            loc.uuid,
            loc.addr,
            loc.rack,
            state,
            gib(d.capacity_bytes),
            gib(d.used_bytes),
            gib(d.free_bytes),
            d.replicas,
            d.since_heartbeat.as_millis()
        )?;
    }
    let b = r.blocks;
    let unfixable = match b.under_replicated_unfixable {
        0 => String::new(),
        n => format!(" ({n} cannot be fixed: too few live datanodes)"),
    };
    outln!(
        "blocks: {} in {} files ({} bytes); under-replicated {}{unfixable}, missing {}, corrupt replicas {}, over-replicated {}",
        b.blocks, b.files, b.bytes, b.under_replicated, b.missing, b.corrupt_replicas, b.over_replicated
    )?;
    Ok(())
}

async fn fsck(c: &NamenodeClient, path: &str, verbose: bool) -> anyhow::Result<u8> {
    let (mut files, mut blocks, mut under, mut missing, mut corrupt, mut bytes) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut inline, mut inline_lost, mut unfixable) = (0u64, 0u64, 0u64);
    let mut after = String::new();
    loop {
        let page = c.fsck(path, &after, 1000).await?;
        for f in &page.files {
            files += 1;
            bytes += f.length;
            let mut problems = Vec::new();
            if f.inline {
                inline += 1;
            }
            if f.inline_missing {
                inline_lost += 1;
                problems.push("kept bytes MISSING from the namespace".to_string());
            } else if f.inline && f.inline_copies < f.replication {
                under += 1;
                problems.push(format!(
                    "under-replicated: {} copies (one per namenode voter) of {} asked",
                    f.inline_copies, f.replication
                ));
            }
            for b in &f.blocks {
                blocks += 1;
                corrupt += b.corrupt as u64;
                if b.under_construction {
                    continue;
                }
                if b.live == 0 {
                    missing += 1;
                    problems.push(format!("block {} MISSING (no live replica)", b.block_id));
                } else if b.live < f.replication {
                    // Whatever the cause (a dead datanode too): HDFS's words.
                    under += 1;
                    let mut p = format!(
                        "block {} under-replicated: target replicas is {} but found {} live replica(s)",
                        b.block_id, f.replication, b.live
                    );
                    if b.cannot_fix {
                        unfixable += 1;
                        p.push_str(&format!(
                            "; cannot be fixed: too few live datanodes ({} can take a replica)",
                            page.target_datanodes
                        ));
                    }
                    problems.push(p);
                }
                if b.corrupt > 0 {
                    problems.push(format!("block {} has {} corrupt replica(s)", b.block_id, b.corrupt));
                }
            }
            if verbose || !problems.is_empty() {
                let state = if problems.is_empty() { "OK" } else { "" };
                if f.inline {
                    outln!("{} {} bytes, kept in the namespace (no blocks) {}", f.path, f.length, state)?;
                } else {
                    outln!(
                        "{} {} bytes, {} block(s), replication {} {}",
                        f.path,
                        f.length,
                        f.blocks.len(),
                        f.replication,
                        state
                    )?;
                }
                for p in problems {
                    outln!("  {p}")?;
                }
                if verbose {
                    for b in &f.blocks {
                        outln!(
                            "  block {} len {} live {} at [{}]",
                            b.block_id,
                            b.length,
                            b.live,
                            b.locations.join(", ")
                        )?;
                    }
                }
            }
        }
        match page.files.last() {
            Some(f) if page.has_more => after = f.path.clone(),
            _ => break,
        }
    }
    outln!("files: {files} ({inline} kept in the namespace), blocks: {blocks}, bytes: {bytes}")?;
    outln!(
        "under-replicated blocks (and small files): {under}, missing blocks: {missing}, corrupt replicas: {corrupt}"
    )?;
    if unfixable > 0 {
        outln!("under-replicated blocks that cannot be fixed (too few live datanodes): {unfixable}")?;
    }
    if inline_lost > 0 {
        outln!("files whose kept bytes are missing: {inline_lost}")?;
    }
    if missing > 0 || inline_lost > 0 {
        outln!("Status: CORRUPT ({path})")?;
        Ok(crate::EXIT_FAILED)
    } else if under > 0 {
        // Every block readable (exit 0, as HDFS), but not every copy there.
        outln!("Status: UNDER-REPLICATED ({path})")?;
        Ok(0)
    } else {
        outln!("Status: HEALTHY ({path})")?;
        Ok(0)
    }
}

/// `tarn admin rotate-master-key`.
async fn rotate_master_key(
    conn: &crate::creds::ClientOpts,
    old_file: &std::path::Path,
    new_file: &std::path::Path,
    data_dirs: &[std::path::PathBuf],
    s3: bool,
    small_files: bool,
) -> anyhow::Result<u8> {
    use tarn_security::MasterKey;
    let old = MasterKey::load(old_file)?;
    let new = if new_file.exists() {
        MasterKey::load(new_file)?
    } else {
        let k = MasterKey::create(new_file)?;
        outln!("created the new master key {} (id {})", new_file.display(), k.id_hex())?;
        k
    };
    anyhow::ensure!(old.id() != new.id(), "the old and new key files hold the same key");
    if data_dirs.is_empty() && !s3 && !small_files {
        anyhow::bail!("nothing to rotate: give a stopped datanode's --data-dir (repeat), --s3 and/or --small-files");
    }
    if !data_dirs.is_empty() {
        let dirs = data_dirs.to_vec();
        let (o, n) = (old.clone(), new.clone());
        let r = tokio::task::spawn_blocking(move || tarn_datanode::rewrap_master_key(&dirs, &o, &n)).await??;
        outln!(
            "replicas: {} data keys re-sealed, {} already under the new key, {} stored in the clear",
            r.rewrapped,
            r.already,
            r.clear
        )?;
    }
    if s3 {
        let nn = conn.connect()?;
        let n = tarn_gateway::keys::reseal_secrets(&nn, &old, &new).await?;
        outln!("S3 keys: {n} secrets re-sealed")?;
    }
    if small_files {
        let nn = conn.connect()?;
        let r = nn.reseal_small_files().await?;
        outln!(
            "small files kept in the namespace: {} re-sealed, {} already under key {}, {} unreadable",
            r.resealed,
            r.current,
            r.key_id,
            r.unreadable
        )?;
        for e in &r.errors {
            outln!("  {e}")?;
        }
        if r.key_id != new.id_hex() {
            anyhow::bail!(
                "the namenodes seal under master key {}, not the new key {}: restart them with \
                 security.master_key_file = {} and the old key in security.previous_master_key_files, then run this again",
                r.key_id,
                new.id_hex(),
                new_file.display()
            );
        }
        if r.unreadable > 0 {
            anyhow::bail!(
                "{} small file(s) are sealed under a key the namenodes do not hold: give them that key in \
                 security.previous_master_key_files and run this again",
                r.unreadable
            );
        }
    }
    outln!(
        "master key {} replaced by {}: give the daemons {} (security.master_key_file, gateway.master_key_file)",
        old.id_hex(),
        new.id_hex(),
        new_file.display()
    )?;
    Ok(0)
}
