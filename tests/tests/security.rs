//! Transport security: every gRPC port speaks mutual TLS with certificates from the cluster
//! CA; the role in a certificate decides which services it may call; people act as the
//! name in their certificate; certificates are reloaded without a restart.

use std::process::Command;
use std::time::Duration;

use tarn_client::{ErrorKind, NamenodeClient, RetryPolicy, Transport};
use tarn_proto::datanode as dpb;
use tarn_proto::datanode::data_transfer_client::DataTransferClient;
use tarn_proto::datanode::datanode_protocol_client::DatanodeProtocolClient;
use tarn_proto::raft::raft_transport_client::RaftTransportClient;
use tarn_security::{Ca, Identity, Role, TlsPaths};
use tarn_tests::{block_tuning, pki, tarn_bin, test_config, wait_for, Cluster};

/// Calls give up within about two seconds (a refused handshake is retried until then).
fn quick() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

fn client(addrs: &[String], t: &Transport) -> NamenodeClient {
    NamenodeClient::new(addrs, t).unwrap().with_retry(quick())
}

fn channel(t: &Transport, addr: &str) -> tonic::transport::Channel {
    t.channel(Transport::endpoint(addr).unwrap().connect_timeout(Duration::from_secs(2)))
}

/// A datanode read over `t`: the error (the test expects one) as text. A connection cut
/// at the handshake shows as Unavailable, Unknown or Cancelled, depending on when; a
/// plaintext client reads the server's TLS alert as a broken HTTP/2 stream (Internal).
async fn datanode_read_error(t: &Transport, addr: &str) -> String {
    let mut dn = DataTransferClient::new(channel(t, addr));
    let req = dpb::GetReplicaRequest { block_id: 1 };
    let r = tokio::time::timeout(Duration::from_secs(10), dn.get_replica(req)).await.expect("bounded");
    let s = r.expect_err("a connection that must be refused was served");
    format!("{:?}: {}", s.code(), s.message())
}

fn refused(e: &str) -> bool {
    ["Unavailable", "Unknown", "Cancelled"].iter().any(|c| e.starts_with(c))
        || (e.starts_with("Internal") && e.contains("h2 protocol error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_plaintext_are_refused_at_the_handshake() {
    let mut cl = Cluster::start(1, block_tuning).await;
    cl.start_datanodes(1).await;
    let dn_addr = cl.datanodes[0].as_ref().unwrap().addr.clone();
    // The cluster's own admin gets in.
    cl.client().mkdirs("/in").await.unwrap();

    // An admin certificate from another CA (it trusts the real CA, so the refusal is the
    // server's: the client certificate is not the cluster's).
    let dir = tempfile::tempdir().unwrap();
    let rogue_ca = Ca::create(dir.path(), "rogue").unwrap();
    let id = Identity::new(Role::Admin, "mallory").unwrap();
    let rogue = rogue_ca.issue(&id, &["127.0.0.1".into()], dir.path(), "mallory").unwrap();
    let rogue = Transport::tls(&TlsPaths { ca: pki().ca().cert_path(), ..rogue }).unwrap();
    let e = client(&cl.addrs, &rogue).mkdirs("/rogue").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "a stranger's certificate must not get through: {e}");
    let e = datanode_read_error(&rogue, &dn_addr).await;
    assert!(refused(&e), "datanode served a stranger: {e}");
    // Those failures could have any cause: check that it is the TLS refusal of the
    // certificate (the server's alert), while the cluster's own certificate is accepted.
    for addr in [&cl.addrs[0], &dn_addr] {
        tarn_tests::admin().probe(addr).await.unwrap_or_else(|e| panic!("the admin is refused by {addr}: {e}"));
        let e = rogue.probe(addr).await.expect_err("a stranger's certificate was accepted").to_string();
        assert!(e.contains("alert") && (e.contains("UnknownCA") || e.contains("BadCertificate")), "{addr}: {e}");
    }

    // Plaintext gRPC to the namenode and to the datanode.
    let plain = Transport::plaintext_dev();
    // (The client reads the server's TLS alert as a broken HTTP/2 stream.)
    let e = client(&cl.addrs, &plain).mkdirs("/plain").await;
    assert!(e.is_err(), "plaintext must not get through");
    let e = datanode_read_error(&plain, &dn_addr).await;
    assert!(refused(&e), "datanode served plaintext: {e}");

    // A cluster certificate that is not the namenode's may not cut and finalize replicas.
    let mut dn = DataTransferClient::new(channel(&pki().transport(Role::User, "alice"), &dn_addr));
    let s = dn.finalize_recovered(dpb::FinalizeRecoveredRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // Nothing the refused clients asked for happened.
    let c = cl.client();
    assert!(c.get_file_info("/rogue", false).await.unwrap().is_none());
    assert!(c.get_file_info("/plain", false).await.unwrap().is_none());
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_a_certificate_may_call() {
    let cl = Cluster::start(1, |_| {}).await;
    let addr = cl.addrs[0].clone();
    let worker_t = pki().transport(Role::Worker, "w1");
    let worker = client(&cl.addrs, &worker_t);
    // Any certificate of the cluster may use the file system (as far as the files'
    // permissions let it: a worker acting as itself is no superuser)...
    assert!(worker.get_file_info("/", false).await.unwrap().is_some());
    assert_eq!(worker.mkdirs("/jobs").await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    // ...but a worker may not call the admin service,
    let e = worker.cluster_status().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("worker w1") && e.to_string().contains("admin"), "{e}");
    let e = worker.datanode_report().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // speak for a datanode,
    let mut dnp = DatanodeProtocolClient::new(channel(&worker_t, &addr));
    let s = dnp.heartbeat(dpb::HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // or send Raft messages.
    let mut raft = RaftTransportClient::new(channel(&worker_t, &addr));
    let s = raft.vote(tarn_proto::raft::RaftPayload { data: vec![], format: 0, binary_format: 0 }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // Neither may a datanode call the admin service; the admin may.
    let dn = client(&cl.addrs, &pki().transport(Role::Datanode, "dn-x"));
    assert_eq!(dn.cluster_status().await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    cl.client().cluster_status().await.unwrap();
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_act_as_the_name_in_their_certificate() {
    let cl = Cluster::start(1, |_| {}).await;
    for user in ["alice", "bob", "carol"] {
        give_home(&cl.client(), user).await;
    }
    let alice = client(&cl.addrs, &pki().transport(Role::User, "alice"));
    assert_eq!(alice.mkdirs("/home/alice/d").await.unwrap().owner, "alice");
    // She cannot claim to be someone else...
    let e = alice.with_user("bob").mkdirs("/home/bob/d").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(cl.client().get_file_info("/home/bob/d", false).await.unwrap().is_none());
    // ...while a daemon acts for the user it serves (the gateway for an S3 key's user).
    let gw = client(&cl.addrs, &pki().transport(Role::Gateway, "gw")).with_user("carol");
    assert_eq!(gw.mkdirs("/home/carol/d").await.unwrap().owner, "carol");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki().ca();
    // A namenode with certificate files of its own, to rotate under it.
    let nn_id = Identity::new(Role::Namenode, "rotating-nn").unwrap();
    let local = vec!["127.0.0.1".to_string()];
    let nn_paths = ca.issue(&nn_id, &local, dir.path(), "nn").unwrap();
    let mut cfg = test_config(1, &dir.path().join("nn"));
    cfg.initial_members = vec!["1@".into()];
    let node =
        tarn_namenode::start(cfg, Transport::tls(&nn_paths).unwrap(), tarn_namenode::SmallFiles::Off).await.unwrap();
    let addrs = vec![node.addr.clone()];
    let admin = tarn_tests::admin();
    wait_for("the namenode to lead", Duration::from_secs(20), || async {
        client(&addrs, &admin).cluster_status().await.ok().filter(|s| s.leader_id == Some(1))
    })
    .await;

    // Client side: a worker certificate is replaced by an admin one in the same files;
    // new connections of the same transport present the new one.
    let me = ca.issue(&Identity::new(Role::Worker, "rotating").unwrap(), &[], dir.path(), "me").unwrap();
    let t = Transport::tls(&me).unwrap();
    let e = client(&addrs, &t).cluster_status().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    ca.issue(&Identity::new(Role::Admin, "rotating").unwrap(), &[], dir.path(), "me").unwrap();
    wait_for("the client to present its new certificate", Duration::from_secs(15), || async {
        client(&addrs, &t).cluster_status().await.ok()
    })
    .await;

    // Server side: a certificate for another host name makes clients refuse the server
    // (they check it), and the right one makes them accept it again.
    ca.issue(&nn_id, &["elsewhere.invalid".into()], dir.path(), "nn").unwrap();
    wait_for("clients to see the namenode's new certificate", Duration::from_secs(15), || async {
        let e = client(&addrs, &admin).get_file_info("/", false).await.err()?;
        (e.kind() == ErrorKind::Unavailable).then_some(())
    })
    .await;
    ca.issue(&nn_id, &local, dir.path(), "nn").unwrap();
    wait_for("the namenode to serve its fixed certificate", Duration::from_secs(15), || async {
        client(&addrs, &admin).get_file_info("/", false).await.ok()
    })
    .await;
    node.shutdown().await;
}

#[test]
fn commands_without_credentials_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let o = Command::new(tarn_bin())
        .args(["fs", "ls", "/"])
        .env("TARN_CONFIG", &cfg)
        .env("TARN_NAMENODE", "127.0.0.1:1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("tarn init") && text.contains("--insecure-dev"), "{text}");
    // A daemon without certificates does not start either.
    let o = Command::new(tarn_bin())
        .args(["namenode", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("nn"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("security.tls"), "{text}");
}

/// A `tarn datanode` given another master key than the one its replicas were sealed with
/// refuses to start and says which key the data needs (it must not serve, nor report its
/// replicas as corrupt and have them deleted).
#[test]
fn a_datanode_with_the_wrong_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = tarn_datanode::BlockStore::open(std::slice::from_ref(&data), 0, Some(pki().master())).unwrap();
        let mut w = store.create(1, 1001, 10).unwrap();
        w.write(b"0123456789").unwrap();
        w.finalize().unwrap();
    }
    let mut security = pki().security(Role::Datanode, "dn-wrong-key");
    security.master_key_file = None;
    #[derive(serde::Serialize)]
    struct File {
        datanode: tarn_datanode::DatanodeConfig,
        security: tarn_security::SecurityConfig,
    }
    let cfg = File { datanode: tarn_tests::datanode_config(&data, &["127.0.0.1:1".into()]), security };
    let path = dir.path().join("tarn.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let other = "ef".repeat(32);
    let o = Command::new(tarn_bin())
        .args(["datanode", "--config"])
        .arg(&path)
        .env("TARN_MASTER_KEY", &other)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let other_id = tarn_security::MasterKey::parse(&other).unwrap().id_hex();
    assert!(text.contains("wrong master key"), "{text}");
    assert!(text.contains(&pki().master().id_hex()) && text.contains(&other_id), "names both keys: {text}");
    // With the right key the same data directory is fine (the replica is untouched).
    let store = tarn_datanode::BlockStore::open(std::slice::from_ref(&data), 0, Some(pki().master())).unwrap();
    assert_eq!(store.open_reader(1, 0).unwrap().read_at(0, 10).unwrap(), b"0123456789");
}

/// `tarn admin rotate-master-key` on a stopped datanode's directory: every data key is
/// sealed by the new master key, the data reads back with it, and no replica is left that
/// the old key opens; a second run finds nothing to do.
#[test]
fn master_key_rotation_rewraps_data_keys_without_touching_data() {
    use tarn_datanode::BlockStore;
    use tarn_security::MasterKey;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (old_file, new_file) = (dir.path().join("old.key"), dir.path().join("new.key"));
    let old = MasterKey::create(&old_file).unwrap();
    let blocks: Vec<(u64, Vec<u8>)> = (1..=3u64).map(|i| (i, vec![i as u8; 70_000 * i as usize])).collect();
    {
        let store = BlockStore::open(std::slice::from_ref(&data), 0, Some(old.clone())).unwrap();
        for (id, bytes) in &blocks {
            let mut w = store.create(*id, 1000 + id, bytes.len() as u64).unwrap();
            w.write(bytes).unwrap();
            if *id == 3 {
                // One replica still being written (left in rbw/ after a flush).
                w.flush(true).unwrap();
                drop(w);
            } else {
                w.finalize().unwrap();
            }
        }
    }
    // Every block data file's bytes (checksum files are where the data keys live).
    let data_files = || {
        let mut out = Vec::new();
        let mut stack = vec![data.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let (p, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
                if p.is_dir() {
                    stack.push(p);
                } else if name.starts_with("blk_") && !name.ends_with(".meta") {
                    out.push((name, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    };
    let before = data_files();
    assert_eq!(before.len(), 3);
    let rotate = || {
        let o = Command::new(tarn_bin())
            .args(["admin", "rotate-master-key", "--old-key-file"])
            .arg(&old_file)
            .arg("--new-key-file")
            .arg(&new_file)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{text}");
        text
    };
    let text = rotate();
    assert!(text.contains("3 data keys re-sealed"), "{text}");
    assert!(data_files() == before, "rotation must not rewrite block data");
    let new = MasterKey::load(&new_file).unwrap();
    assert_ne!(new.id(), old.id());
    // The new key opens every replica; the bytes are the same.
    let store = BlockStore::open(std::slice::from_ref(&data), 0, Some(new.clone())).unwrap();
    for (id, bytes) in &blocks {
        let r = store.open_reader(*id, 0).unwrap();
        assert_eq!(r.read_at(0, bytes.len()).unwrap(), *bytes, "block {id}");
    }
    drop(store);
    // The old key opens none: the store refuses it, and a rotation from it finds a replica
    // sealed by neither key at once.
    assert!(BlockStore::open(std::slice::from_ref(&data), 0, Some(old.clone())).is_err());
    let third = MasterKey::generate();
    let e = tarn_datanode::rewrap_master_key(std::slice::from_ref(&data), &old, &third).unwrap_err();
    assert!(e.to_string().contains("neither"), "{e}");
    // Interrupted runs are finished by running again: nothing left to do.
    let text = rotate();
    assert!(text.contains("0 data keys re-sealed, 3 already"), "{text}");
}

/// The S3 half of a rotation: stored secrets are re-sealed by the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_reseals_s3_secrets() {
    use tarn_gateway::keys;
    use tarn_security::MasterKey;
    let mut cl = Cluster::start(1, block_tuning).await;
    cl.start_datanodes(1).await;
    let nn = cl.client();
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    let k = keys::create_key(&nn, &old, "etl", false).await.unwrap();
    assert_eq!(keys::reseal_secrets(&nn, &old, &new).await.unwrap(), 1);
    let recs = keys::list_keys(&nn).await.unwrap();
    assert_eq!(recs.len(), 1);
    let store_new = keys::KeyStore::new(std::sync::Arc::new(cl.client()), Some(new.clone()), vec![]);
    assert_eq!(store_new.identity(&k.access_key).await.unwrap().unwrap().secret, k.secret_key);
    let store_old = keys::KeyStore::new(std::sync::Arc::new(cl.client()), Some(old.clone()), vec![]);
    assert!(store_old.identity(&k.access_key).await.is_err(), "the old key must not open the secret any more");
    assert_eq!(keys::reseal_secrets(&nn, &old, &new).await.unwrap(), 0, "a rerun has nothing to do");
    cl.shutdown().await;
}

/// A user cannot read another user's 0600 file, through the client library, the
/// object_store API or `tarn fs`; the owner and the admin can; a 0644 file is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_private_file_is_private() {
    use object_store::ObjectStoreExt as _;
    use tarn_client::blocks::{FileReader, FileWriter};
    use tarn_client::CreateOptions;
    let mut cl = Cluster::start(1, |c| c.files.default_replication = 1).await;
    cl.start_datanodes(1).await;
    let bob = client(&cl.addrs, &pki().transport(Role::User, "bob"));
    let alice = client(&cl.addrs, &pki().transport(Role::User, "alice"));
    // As with HDFS, the admin makes each user's home; nobody else may write at the top.
    let e = bob.mkdirs("/bob-at-the-top").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    for user in ["bob", "alice"] {
        give_home(&cl.client(), user).await;
    }
    for (path, mode) in [("/home/bob/secret", 0o600), ("/home/bob/open", 0o644)] {
        let opts = CreateOptions { mode, create_parent: true, ..Default::default() };
        let mut w = FileWriter::create(&bob, path, &opts).await.unwrap();
        w.write(b"bob's bytes").await.unwrap();
        w.close().await.unwrap();
    }
    // The client library.
    let e = FileReader::open(&alice, "/home/bob/secret").await.err().expect("alice must not read it");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("alice"), "{e}");
    for (who, c) in [("bob", &bob), ("admin", &cl.client())] {
        let r = FileReader::open(c, "/home/bob/secret").await.unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(r.read_at(0, 100).await.unwrap(), b"bob's bytes");
    }
    assert_eq!(
        FileReader::open(&alice, "/home/bob/open").await.unwrap().read_at(0, 100).await.unwrap(),
        b"bob's bytes"
    );
    // Nor can she make it readable, take it, delete it, or stitch it into a file of hers.
    let chmod = tarn_client::SetAttributes { mode: Some(0o644), ..Default::default() };
    let e = alice.set_attributes("/home/bob/secret", chmod.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let chown = tarn_client::SetAttributes { owner: Some("alice".into()), ..chmod.clone() };
    assert_eq!(alice.set_attributes("/home/bob/secret", chown).await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    assert_eq!(alice.delete("/home/bob/secret", false, None).await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    let id = bob.get_file_info("/home/bob/secret", false).await.unwrap().unwrap().file_id;
    let o = tarn_client::ConcatOptions { create_parent: true, ..Default::default() };
    let e = alice.concat(&[("/home/bob/secret".into(), id)], "/home/alice/stolen", &o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // A daemon that serves users may act for them; a datanode may not; a name that is not
    // one is refused rather than read as the daemon itself.
    let worker = client(&cl.addrs, &pki().transport(Role::Worker, "w1"));
    give_home(&cl.client(), "carol").await;
    assert_eq!(worker.for_user("carol").mkdirs("/home/carol/job").await.unwrap().owner, "carol");
    let dn = client(&cl.addrs, &pki().transport(Role::Datanode, "dn-x"));
    assert_eq!(dn.for_user("carol").mkdirs("/x").await.unwrap_err().kind(), ErrorKind::PermissionDenied);
    for bad in ["", "jos\u{e9}", "a b"] {
        let e = worker.for_user(bad).get_file_info("/", false).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{bad:?}: {e}");
    }
    // The object_store API.
    let store = tarn_client::store::TarnStore::new(std::sync::Arc::new(client(
        &cl.addrs,
        &pki().transport(Role::User, "alice"),
    )));
    let Err(e) = store.get(&"home/bob/secret".into()).await else { panic!("object_store get must be refused") };
    assert!(e.to_string().contains("permission denied"), "{e}");
    assert!(store.get(&"home/bob/open".into()).await.is_ok());
    // `tarn fs cat` with alice's certificate.
    let o = Command::new(tarn_bin())
        .args(["fs", "cat", "/home/bob/secret"])
        .env("TARN_CONFIG", tarn_tests::config_file(Role::User, "alice"))
        .env("TARN_NAMENODE", &cl.addrs[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("permission denied") && o.stdout.is_empty(), "{text}");
    cl.shutdown().await;
}

/// `/home/USER`, made by the admin and given to the user.
async fn give_home(admin: &NamenodeClient, user: &str) {
    let path = format!("/home/{user}");
    admin.mkdirs(&path).await.unwrap();
    let own = tarn_client::SetAttributes { owner: Some(user.into()), group: Some(user.into()), ..Default::default() };
    admin.set_attributes(&path, own).await.unwrap();
}

/// A person's certificate cannot serve: clients refuse a "namenode" presenting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_certificate_cannot_pose_as_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, &dir.path().join("nn"));
    cfg.initial_members = vec!["1@".into()];
    let fake = Transport::tls(&pki().paths(Role::Admin, "poser")).unwrap();
    let node = tarn_namenode::start(cfg, fake, tarn_namenode::SmallFiles::Off).await.unwrap();
    let e = client(std::slice::from_ref(&node.addr), &tarn_tests::admin()).get_file_info("/", false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "a client accepted a person's certificate as a server: {e}");
    node.shutdown().await;
}

/// What the nodes keep on disk is theirs alone whatever the umask: the namenode's store
/// holds the keys that sign block access tokens, a datanode's the replicas (a container on
/// the same host must read neither).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_are_private_to_the_daemons() {
    use std::os::unix::fs::PermissionsExt;
    let cl = Cluster::builder().datanodes(1).start().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cl.configs[0].data_dir), 0o700, "the namenode's data directory");
    let store = cl.datanode_dirs[0].join("tarn-datanode");
    assert_eq!(mode(&store), 0o700, "the datanode's store");
    cl.shutdown().await;
}

/// A datanode speaks only for itself: once a certificate speaks for a datanode (uuid),
/// another datanode's certificate can neither heartbeat, report bad replicas nor register
/// in its name, and the real one carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_cannot_speak_for_another() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(1).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dn1 = cl.datanodes[0].as_ref().unwrap();
        let me = dpb::DatanodeLocation { uuid: dn1.uuid.clone(), addr: dn1.addr.clone(), rack: "/default-rack".into() };
        let mut other = DatanodeProtocolClient::new(channel(&pki().transport(Role::Datanode, "dn-evil"), &cl.addrs[0]));
        let hb = dpb::HeartbeatRequest { node: Some(me.clone()), ..Default::default() };
        let s = other.heartbeat(hb).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("dn1") && s.message().contains("dn-evil"), "{s:?}");
        let bad = dpb::ReportBadReplicasRequest { node: Some(me.clone()), ..Default::default() };
        assert_eq!(other.report_bad_replicas(bad).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        let reg = dpb::RegisterRequest { node: Some(me), storages: vec![] };
        assert_eq!(other.register(reg).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        // The real one is still live (it keeps heartbeating under its own certificate).
        tarn_tests::wait_live_datanodes(&c, 1).await;
        let r = c.datanode_report().await.unwrap();
        assert_eq!(r.datanodes[0].location.addr, dn1.addr, "nothing of it was taken over");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Writes a container credential (or any certificate and key) as files a transport loads,
/// trusting the cluster CA.
fn credential_transport(dir: &std::path::Path, stem: &str, cert_pem: &str, key_pem: &str) -> Transport {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    tarn_security::pki::write_private(&cert, cert_pem, 0o644).unwrap();
    tarn_security::pki::write_private(&key, key_pem, 0o600).unwrap();
    Transport::tls(&TlsPaths { ca: pki().ca().cert_path(), cert, key, container_ca: None }).unwrap()
}

/// A container's credential (a certificate from the container CA) is a user's and nothing
/// more: the namenode takes it as that user; one from the same CA that names an admin or a
/// daemon is refused; and no client takes it as a server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_credential_is_a_users_and_nothing_more() {
    use tarn_security::container_ca::{CONTAINER_CA_CERT_FILE, CONTAINER_CA_KEY_FILE};
    use tarn_security::ContainerCa;
    let cl = Cluster::start(1, |_| {}).await;
    give_home(&cl.client(), "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = pki().dir();
    let cca = ContainerCa::load(&ca_dir.join(CONTAINER_CA_CERT_FILE), &ca_dir.join(CONTAINER_CA_KEY_FILE)).unwrap();

    // Alice's container: alice, and only alice.
    let c = cca.issue("alice", "app-1-0001_01_000002", Duration::from_secs(600)).unwrap();
    let alice = client(&cl.addrs, &credential_transport(dir.path(), "alice", &c.cert_pem, &c.key_pem));
    assert_eq!(alice.mkdirs("/home/alice/from-container").await.unwrap().owner, "alice");
    let e = alice.mkdirs("/not-hers").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = alice.with_user("bob").mkdirs("/home/alice/as-bob").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // The container CA's key signing an admin's certificate (as a stolen key might): refused.
    let key_pem = std::fs::read_to_string(ca_dir.join(CONTAINER_CA_KEY_FILE)).unwrap();
    let ca_pem = std::fs::read_to_string(ca_dir.join(CONTAINER_CA_CERT_FILE)).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&key_pem).unwrap()).unwrap();
    for (role, name) in [(Role::Admin, "mallory"), (Role::Namenode, "1")] {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let uri = Identity::new(role, name).unwrap().uri();
        p.subject_alt_names.push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(uri).unwrap()));
        p.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("tarn-container://app-1-0001_01_000003").unwrap(),
        ));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&k, &issuer).unwrap();
        let forged = credential_transport(dir.path(), name, &cert.pem(), &k.serialize_pem());
        let e = client(&cl.addrs, &forged).get_file_info("/", false).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{role} from the container CA got in: {e}");
        forged.probe(&cl.addrs[0]).await.expect_err("the namenode took a container certificate naming a daemon");
    }

    // A namenode presenting a container's certificate: no client trusts it.
    let mut cfg = test_config(1, &dir.path().join("nn"));
    cfg.initial_members = vec!["1@".into()];
    let poser = credential_transport(dir.path(), "poser", &c.cert_pem, &c.key_pem);
    let node = tarn_namenode::start(cfg, poser, tarn_namenode::SmallFiles::Off).await.unwrap();
    let e = client(std::slice::from_ref(&node.addr), &tarn_tests::admin()).get_file_info("/", false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "a container's certificate served as a namenode: {e}");
    node.shutdown().await;
    cl.shutdown().await;
}
