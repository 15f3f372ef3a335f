//! `tarn admin`: the namenode group (status, membership, snapshots) and quotas.

use tarn_client::NamenodeClient;

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Namenode addresses (comma-separated host:port); any member will do.
    #[arg(long, env = "TARN_NAMENODE", default_value = "127.0.0.1:8020", global = true)]
    pub namenode: String,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(clap::Subcommand)]
enum AdminCmd {
    /// Show the namenode group: leader, term, members and how far each has replicated.
    Status,
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

fn print_status(s: &tarn_client::pb::ClusterStatusResponse) {
    println!("leader:  namenode {} at {} (term {})", s.leader_id, s.leader_addr, s.term);
    println!(
        "answered by namenode {} ({}), last log {}, applied {}, snapshot {}",
        s.node_id, s.state, s.last_log_index, s.last_applied, s.snapshot_index
    );
    println!("{:>4}  {:<24} {:<8} {:>12}", "ID", "ADDRESS", "ROLE", "MATCHED");
    for m in &s.members {
        let role = if m.voter { "voter" } else { "learner" };
        println!("{:>4}  {:<24} {:<8} {:>12}", m.node_id, m.addr, role, m.matched_index);
    }
}

pub async fn run(a: AdminArgs) -> anyhow::Result<u8> {
    let c = NamenodeClient::new(std::slice::from_ref(&a.namenode))?.with_retry(crate::cli_retry());
    match a.cmd {
        AdminCmd::Status => print_status(&c.cluster_status().await?),
        AdminCmd::AddLearner { id, addr } => print_status(&c.add_learner(id, &addr).await?),
        AdminCmd::Promote { id } => {
            let s = c.cluster_status().await?;
            let mut voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.node_id).collect();
            if !s.members.iter().any(|m| m.node_id == id) {
                anyhow::bail!("namenode {id} is not a member; add it first with add-learner");
            }
            voters.push(id);
            print_status(&c.change_membership(voters, false).await?);
        }
        AdminCmd::Remove { id } => {
            let s = c.cluster_status().await?;
            let voters: Vec<u64> = s.members.iter().filter(|m| m.voter && m.node_id != id).map(|m| m.node_id).collect();
            print_status(&c.change_membership(voters, false).await?);
        }
        AdminCmd::Snapshot => {
            let idx = c.trigger_snapshot_on(&a.namenode).await?;
            println!("snapshot built up to log index {idx}");
        }
        AdminCmd::SetQuota { path, namespace, space } => {
            let s = c.set_quota(&path, namespace, space).await?;
            if let Some(q) = s.quota {
                let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
                println!(
                    "{path}: namespace quota {} (used {}), space quota {} (used {})",
                    show(q.namespace_quota),
                    q.namespace_used,
                    show(q.space_quota),
                    q.space_used
                );
            } else {
                println!("{path}: no quota");
            }
        }
    }
    Ok(0)
}
