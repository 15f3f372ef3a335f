//! `tarn up`: the embedded appliance, every role in one process, data under one directory:
//! a single-node namenode group and one or more datanodes (`--datanodes N`).
//! Each layer of the system adds its role here (block storage: datanodes; S3: the
//! gateway; compute: the resource manager and a worker), running the same code as a
//! multi-node cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tarn_client::Transport;
use tarn_namenode::node::CancellationToken;
use tarn_security::{Ca, Identity, Role, TlsPaths};

use crate::config::{default_data_dir, TarnConfig};
use crate::out::{self, outln};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where everything is kept (created on first start, with a tarn.toml to edit).
    #[arg(long, default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// Namenode address for clients (gRPC).
    #[arg(long, default_value = "127.0.0.1:8020")]
    listen: String,
    /// Datanodes to run in the process (overrides `up.datanodes` in tarn.toml).
    #[arg(long)]
    datanodes: Option<usize>,
    /// Namenodes to run in the process, one Raft group (overrides `up.namenodes`; only
    /// grows). They listen on consecutive ports from --listen (all on picked ports with
    /// port 0, for one run). Three keep small files' bytes three times, like 3 replicas.
    #[arg(long)]
    namenodes: Option<usize>,
    /// S3 endpoint address (overrides `gateway.listen`; port 0 picks one).
    #[arg(long)]
    s3_listen: Option<String>,
    /// Resource manager address (overrides `resource_manager.listen`; port 0 picks one).
    #[arg(long)]
    rm_listen: Option<String>,
    /// Spark Connect endpoint address (overrides `connect.listen`; port 0 picks one).
    #[arg(long)]
    connect_listen: Option<String>,
    /// Development only: serve S3 over plaintext HTTP (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
}

/// The appliance's certificates under `dir` (`<data>/tls`): a cluster CA made on first
/// start, and one certificate per role the process runs plus the admin certificate that
/// client commands on this machine present (named after the user who runs `tarn up`,
/// the superuser, as with HDFS). Keys are 0600.
pub fn ensure_pki(dir: &Path) -> anyhow::Result<BTreeMap<Role, TlsPaths>> {
    let fresh = !dir.join(tarn_security::pki::CA_CERT_FILE).exists();
    let ca = Ca::load_or_create(dir, "tarn up").context("the cluster CA")?;
    // Before any certificate is issued: daemons' certificate files name it, to accept
    // containers' credentials.
    tarn_security::ContainerCa::load_or_create(dir, "tarn up").context("the container CA")?;
    let hosts = tarn_security::pki::local_hosts();
    let mut out = BTreeMap::new();
    for (role, stem) in crate::creds::UP_ROLES {
        let name = if role == Role::Admin { admin_name() } else { stem.to_string() };
        let id = Identity::new(role, name)?;
        // A new CA re-issues everything (older data directories held a self-signed
        // S3 certificate under the same name).
        let paths = if fresh {
            ca.issue(&id, &hosts, dir, stem)?
        } else {
            crate::creds::ensure_cert(&ca, dir, stem, &id, &hosts)?
        };
        out.insert(role, paths);
    }
    Ok(out)
}

/// Makes `/user` (0755) and `/user/USER` (owned by `user`) unless they are there.
async fn home_dir(
    nn_addrs: &[String],
    transport: &tarn_security::transport::Transport,
    user: &str,
) -> anyhow::Result<()> {
    use tarn_client::{ErrorKind, MkdirOptions};
    let nn = tarn_client::NamenodeClient::new(nn_addrs, transport)?;
    let dirs = [
        ("/user".to_string(), MkdirOptions::default()),
        (
            format!("/user/{user}"),
            MkdirOptions { owner: Some(user.into()), group: Some(user.into()), ..Default::default() },
        ),
    ];
    for (path, opts) in dirs {
        match nn.mkdir_exclusive(&path, &opts).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => {}
            Err(e) => return Err(anyhow::anyhow!("make {path}: {e}")),
        }
    }
    Ok(())
}

/// The name of the appliance's person: whoever runs `tarn up` (`$USER`), else `admin`.
fn admin_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| Identity::new(Role::Admin, u.as_str()).is_ok())
        .unwrap_or_else(|| "admin".into())
}

pub async fn run(a: UpArgs) -> anyhow::Result<u8> {
    let cfg_path = a.data_dir.join("tarn.toml");
    let mut cfg = if cfg_path.exists() {
        TarnConfig::load(&cfg_path)?
    } else {
        let cfg = TarnConfig::single_node(&a.data_dir, &a.listen);
        cfg.save(&cfg_path)?;
        cfg
    };
    // Every role of the appliance talks mutual TLS with its own certificate, as on a
    // multi-host cluster; `--insecure-dev` turns it off (loudly).
    let pki = if a.insecure_dev { None } else { Some(ensure_pki(&a.data_dir.join("tls"))?) };
    let transport = |role: Role| -> anyhow::Result<Transport> {
        match &pki {
            Some(p) => Ok(Transport::tls(&p[&role])?),
            None => Ok(Transport::plaintext_dev()),
        }
    };
    if a.insecure_dev {
        tarn_security::warn_insecure(
            "--insecure-dev: gRPC between the roles and to clients is plaintext and unauthenticated",
        );
    }
    // Earlier configurations have no gateway table: give them keys and a certificate.
    let mut changed = false;
    // The cluster master key seals stored secrets: S3 keys, small files kept by the
    // namenodes and every replica's data key.
    let master_path = a.data_dir.join("keys/master.key");
    if !master_path.exists() {
        tarn_security::MasterKey::create(&master_path)?;
    }
    if cfg.gateway.master_key_file.is_none() {
        cfg.gateway.master_key_file = Some(master_path.clone());
        changed = true;
    }
    if cfg.security.master_key_file.is_none() {
        cfg.security.master_key_file = Some(master_path.clone());
        changed = true;
    }
    let master = cfg.security.master_key("the appliance's namenodes and datanodes")?;
    if let Some(n) = a.namenodes {
        if n == 0 || n < cfg.up.namenodes {
            anyhow::bail!(
                "--namenodes {n}: this appliance runs {} namenodes and their group only grows here \
                 (remove voters with `tarn admin change-membership`)",
                cfg.up.namenodes
            );
        }
        changed |= n != cfg.up.namenodes;
        cfg.up.namenodes = n;
    }
    let small_files = match &master {
        Some(k) => tarn_namenode::SmallFiles::Sealed {
            key: k.clone(),
            previous: cfg.security.previous_master_keys().context("security.previous_master_key_files")?,
        },
        None => tarn_namenode::SmallFiles::Clear,
    };
    let namenodes = start_namenodes(&cfg, &a.data_dir, transport(Role::Namenode)?, small_files)
        .await
        .with_context(|| format!("start the namenodes (config {})", cfg_path.display()))?;
    let node = &namenodes[0];
    let nn_addrs: Vec<String> = namenodes.iter().map(|n| n.addr.clone()).collect();
    if let Some(n) = a.datanodes {
        cfg.up.datanodes = n;
    }
    // Listening on ports picked at start (`--listen host:0`), or more namenodes than
    // before: client commands run here need every address.
    if cfg.client.namenodes != nn_addrs {
        cfg.client.namenodes = nn_addrs.clone();
        changed = true;
    }
    if cfg.gateway.access_keys.is_empty() {
        cfg.gateway.access_keys = vec![tarn_gateway::AccessKey::generate()];
        changed = true;
    }
    if let Some(p) = &pki {
        // S3 clients get the gateway's certificate too (trust the CA: --ca-bundle ca.pem).
        let gw = &p[&Role::Gateway];
        let files = tarn_gateway::TlsFiles { cert: gw.cert.clone(), key: gw.key.clone() };
        if cfg.gateway.tls.as_ref().map(|t| (&t.cert, &t.key)) != Some((&files.cert, &files.key)) {
            cfg.gateway.tls = Some(files);
            changed = true;
        }
        // Client commands run here present the admin certificate.
        let admin = Some(p[&Role::Admin].clone());
        if cfg.security.tls != admin {
            cfg.security.tls = admin;
            changed = true;
        }
    }
    if changed {
        cfg.save(&cfg_path)?;
    }
    let mut datanodes = Vec::new();
    for i in 1..=cfg.up.datanodes {
        let mut d = cfg.datanode.clone();
        d.namenodes = nn_addrs.clone();
        // Each datanode of the appliance has its own directory.
        if i > 1 || d.data_dirs.is_empty() {
            d.data_dirs = vec![a.data_dir.join(format!("datanode-{i}"))];
        }
        let dn = tarn_datanode::start(d, transport(Role::Datanode)?, master.clone())
            .await
            .with_context(|| format!("start datanode {i}"))?;
        datanodes.push(dn);
    }
    let mut gw = cfg.gateway.clone();
    gw.namenodes = nn_addrs.clone();
    if let Some(l) = a.s3_listen {
        gw.listen = l;
    }
    if a.insecure_dev {
        insecure_dev(&mut gw);
    }
    let gateway = tarn_gateway::start(gw.clone(), transport(Role::Gateway)?).await.context("start the S3 gateway")?;
    // Compute: the resource manager, and a worker on this (core) node.
    let mut rm_cfg = cfg.resource_manager.clone();
    rm_cfg.namenodes = nn_addrs.clone();
    if let Some(l) = a.rm_listen {
        rm_cfg.listen = l;
    }
    if rm_cfg.container_ca.is_none() && !a.insecure_dev {
        rm_cfg.container_ca = Some(a.data_dir.join("tls").join(tarn_security::container_ca::CONTAINER_CA_CERT_FILE));
    }
    let rm = tarn_resource_manager::start(rm_cfg, transport(Role::ResourceManager)?)
        .await
        .context("start the resource manager")?;
    if cfg.client.resource_managers != [rm.addr.clone()] {
        cfg.client.resource_managers = vec![rm.addr.clone()];
        cfg.save(&cfg_path)?;
    }
    let mut w = cfg.worker.clone();
    w.resource_managers = vec![rm.addr.clone()];
    w.namenodes = nn_addrs.clone();
    // Containers run this same program by name (`tarn`), from the worker's directory.
    w.tarn_bin = std::env::current_exe().ok();
    w.label = "core".into();
    // Vcores are scheduling units: YARN's NodeManager offers 8 whatever the host; this one
    // offers the host's cores, and at least 8. Offering
    // only the cores of a small host, a Spark Connect session's master and executor would
    // hold the whole node, and a `tarn job` would wait minutes for them to go idle.
    if w.vcores == 0 {
        w.vcores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).max(8);
    }
    if w.local_dir == tarn_worker::WorkerConfig::default().local_dir {
        w.local_dir = a.data_dir.join("worker");
    }
    let worker = tarn_worker::start(w, transport(Role::Worker)?).await.context("start the worker")?;
    // The person's own S3 key (not the S3 root's): buckets they make are theirs, so their
    // Spark Connect and `tarn job` writes may go there.
    let user = if pki.is_some() { admin_name() } else { tarn_client::DEV_USER.to_string() };
    if cfg.up.user_key.is_none() {
        if let Some(m) = &master {
            let nn = tarn_client::NamenodeClient::new(&nn_addrs, &transport(Role::Gateway)?)?;
            let key = tarn_gateway::keys::create_key(&nn, m, &user, false)
                .await
                .with_context(|| format!("make an S3 key for {user}"))?;
            cfg.up.user_key = Some(key);
            cfg.save(&cfg_path)?;
        }
    }
    // The person's home, /user/NAME, as HDFS has it: relative paths (a PySpark
    // `write.parquet("out")`) land there.
    home_dir(&nn_addrs, &transport(Role::Gateway)?, &user).await?;
    // Spark Connect: plans run on each user's session application; its TLS is the S3
    // gateway's certificate, its tokens the S3 keys.
    let mut cc = cfg.connect.clone();
    cc.namenodes = nn_addrs.clone();
    cc.resource_managers = vec![rm.addr.clone()];
    cc.access_keys = gw.access_keys.clone();
    cc.master_key_file = gw.master_key_file.clone();
    if cc.tls.is_none() {
        cc.tls = gw.tls.clone();
    }
    match a.connect_listen {
        Some(l) => cc.listen = l,
        // An appliance on picked ports (`--listen host:0`) picks this one too.
        None if a.listen.ends_with(":0") => cc.listen = "127.0.0.1:0".into(),
        None => {}
    }
    if a.insecure_dev {
        cc.insecure_dev = true;
        cc.tls = None;
    }
    let connect =
        tarn_connect::start(cc, transport(Role::Gateway)?).await.context("start the Spark Connect endpoint")?;
    // A daemon keeps serving when nobody reads its standard output any more.
    let banner = || -> anyhow::Result<()> {
        outln!("Tarn is up (single-process appliance).")?;
        if namenodes.len() == 1 {
            outln!("  namenode (gRPC):  {}", node.addr)?;
        } else {
            outln!("  namenode (gRPC):  {} (a group of {}: {})", node.addr, nn_addrs.len(), nn_addrs.join(", "))?;
        }
        for (i, dn) in datanodes.iter().enumerate() {
            outln!("  datanode {}:       {} ({})", i + 1, dn.addr, dn.uuid)?;
        }
        let key = cfg.up.user_key.as_ref().unwrap_or(&gw.access_keys[0]);
        outln!("  resource manager: {}", rm.addr)?;
        if let Some(r) = rm.rest_addr {
            let t = a.data_dir.join("tls");
            let t = t.display();
            outln!(
                "  RM REST API:      curl --cacert {t}/ca.pem --cert {t}/admin.pem --key {t}/admin-key.pem https://{r}/ws/v1/cluster/metrics"
            )?;
        }
        outln!(
            "  worker:           {} (core; {} vcores, {} MiB)",
            worker.id,
            worker.capacity.vcores,
            worker.capacity.memory_mib
        )?;
        outln!("  S3 endpoint:      {}", gateway.endpoint())?;
        outln!("  S3 access key:    {}", key.access_key)?;
        outln!("  S3 secret key:    {}", key.secret_key)?;
        let ca = pki.as_ref().map(|p| format!(" --ca-bundle {}", p[&Role::Admin].ca.display())).unwrap_or_default();
        outln!(
            "  aws cli:          AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {}{ca} s3 ls",
            key.access_key,
            key.secret_key,
            gateway.endpoint()
        )?;
        let token = format!("{}:{}", key.access_key, key.secret_key);
        outln!("  Spark Connect:    export SPARK_REMOTE=\"{}\"", connect.remote("localhost", &token))?;
        if let Some(p) = &pki {
            outln!("                    export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={}", p[&Role::Admin].ca.display())?;
        }
        outln!("  data directory:   {}", a.data_dir.display())?;
        outln!("  configuration:    {}", cfg_path.display())?;
        if let Some(p) = &pki {
            outln!(
                "  certificates:     {} (cluster CA; `tarn fs` here acts as the admin)",
                p[&Role::Admin].ca.display()
            )?;
        } else {
            outln!("  client commands:  add --insecure-dev (plaintext gRPC)")?;
        }
        outln!("  try:              tarn demo   (the seed's pipeline: data in through S3, PySpark, SQL jobs)")?;
        outln!("Stop with Ctrl-C.")?;
        Ok(())
    };
    out::daemon_note(banner());
    wait_for_signal(node.cancelled()).await;
    out::daemon_note(outln!("stopping"));
    connect.stop().await;
    worker.stop().await;
    rm.shutdown().await;
    gateway.stop().await;
    for dn in datanodes {
        dn.stop().await;
    }
    for n in namenodes {
        n.shutdown().await;
    }
    Ok(0)
}

/// The appliance's namenodes: node 1 from `[namenode]`, nodes 2..N beside it (own data
/// directories `<data>/namenode-N`, the next ports), one Raft group. On the first start
/// with more nodes than voters, node 1's group takes the others in (learners, then
/// voters). Returns once the group has a leader that counts every node as a voter.
async fn start_namenodes(
    cfg: &TarnConfig,
    data_dir: &Path,
    transport: Transport,
    small_files: tarn_namenode::SmallFiles,
) -> anyhow::Result<Vec<tarn_namenode::NamenodeHandle>> {
    use std::time::Duration;
    let n = cfg.up.namenodes.max(1);
    let mut nodes = Vec::with_capacity(n);
    for i in 1..=n {
        let mut c = cfg.namenode.clone();
        if i > 1 {
            c.node_id = cfg.namenode.node_id + i as u64 - 1;
            c.data_dir = data_dir.join(format!("namenode-{i}"));
            c.initial_members = Vec::new();
            c.advertise = None;
            c.listen = port_after(&cfg.namenode.listen, i - 1)?;
        }
        let node = tarn_namenode::start(c, transport.clone(), small_files.clone())
            .await
            .with_context(|| format!("start namenode {i}"))?;
        nodes.push(node);
    }
    let first = &nodes[0];
    first
        .raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some(), "leader elected")
        .await
        .context("the namenodes elected no leader")?;
    let ids: std::collections::BTreeSet<u64> = nodes.iter().map(|n| n.node_id).collect();
    let voters = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| -> std::collections::BTreeSet<u64> {
        m.membership_config.membership().voter_ids().collect()
    };
    let current = voters(&first.raft.metrics().borrow());
    if !ids.is_subset(&current) {
        let leader_id = first.raft.metrics().borrow().current_leader;
        let leader = nodes
            .iter()
            .find(|n| Some(n.node_id) == leader_id)
            .context("the leader is not one of this appliance's namenodes")?;
        for node in nodes.iter().filter(|n| !current.contains(&n.node_id)) {
            leader
                .raft
                .add_learner(node.node_id, openraft::BasicNode { addr: node.addr.clone() }, true)
                .await
                .with_context(|| format!("add namenode {} to the group", node.node_id))?;
        }
        let all: std::collections::BTreeSet<u64> = current.union(&ids).copied().collect();
        leader.raft.change_membership(all, false).await.context("make every namenode a voter")?;
    }
    first
        .raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some() && ids.is_subset(&voters(m)), "every namenode a voter")
        .await
        .context("the namenode group did not form")?;
    Ok(nodes)
}

/// `host:port` with the port `k` higher (port 0 stays 0: picked at start).
fn port_after(listen: &str, k: usize) -> anyhow::Result<String> {
    let (host, port) =
        listen.rsplit_once(':').with_context(|| format!("namenode.listen {listen:?} is not HOST:PORT"))?;
    let port: u16 = port.parse().with_context(|| format!("namenode.listen {listen:?}: bad port"))?;
    if port == 0 {
        return Ok(listen.to_string());
    }
    let next = port.checked_add(k as u16).with_context(|| format!("namenode.listen {listen:?}: no port {k} above"))?;
    Ok(format!("{host}:{next}"))
}

/// `--insecure-dev`: plaintext S3, said loudly.
pub fn insecure_dev(gw: &mut tarn_gateway::GatewayConfig) {
    eprintln!("WARNING: --insecure-dev: S3 is served over plaintext HTTP; keys and data cross the network unencrypted");
    gw.tls = None;
    gw.insecure_dev = true;
}

/// Resolves on Ctrl-C, SIGTERM, or when `stop` is cancelled.
pub async fn wait_for_signal(stop: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = stop.cancelled() => {}
    }
}
