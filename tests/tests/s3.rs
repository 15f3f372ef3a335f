//! The S3 gateway driven by real clients: boto3 (tests/s3/boto3_suite.py), the aws cli,
//! pyarrow, polars and s3fs (tests/s3/dataframe_suite.py) against an in-process cluster
//! (three namenodes, three datanodes) and a gateway serving HTTPS with a certificate the
//! clients verify. With three namenodes small objects (up to 64 KiB) are kept in the
//! namespace, sealed, in one operation; the aws cli suite runs against one namenode, where
//! they cannot be (3 replicas asked, one voter) and go to blocks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tarn_gateway::{AccessKey, GatewayConfig, GatewayHandle, TlsFiles};
use tarn_security::Role;
use tarn_tests::{block_tuning, Cluster};

/// The Python with the S3 clients (scripts/setup makes it).
fn python() -> PathBuf {
    tarn_tests::venv_bin("python")
}

use tarn_tests::gateway_tls as self_signed;

struct S3Env {
    cl: Cluster,
    gw: GatewayHandle,
    key: AccessKey,
    tls: TlsFiles,
    dir: tempfile::TempDir,
}

/// The gateway's certificate for the cluster's gRPC.
fn gateway_transport() -> tarn_client::Transport {
    tarn_tests::pki().transport(Role::Gateway, "gw")
}

async fn start() -> S3Env {
    start_with(3, |_| {}).await
}

async fn start_with(namenodes: usize, tune: impl FnOnce(&mut GatewayConfig)) -> S3Env {
    let mut cl = Cluster::start(namenodes, block_tuning).await;
    cl.start_datanodes(3).await;
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let key = AccessKey::generate();
    let cfg = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        namenodes: cl.addrs.clone(),
        tls: Some(tls.clone()),
        access_keys: vec![key.clone()],
        // Virtual hosts under localhost; the clients address 127.0.0.1:PORT path-style.
        domains: vec!["localhost".into()],
        ..GatewayConfig::default()
    };
    let mut cfg = cfg;
    tune(&mut cfg);
    let gw = tarn_gateway::start(cfg, gateway_transport()).await.expect("start gateway");
    S3Env { cl, gw, key, tls, dir }
}

/// Runs a client program with the endpoint and keys in its environment; fails the test
/// with its output unless it exits 0 within `timeout`.
async fn run_client(env: &S3Env, program: &Path, args: &[&str], timeout: Duration) -> String {
    run_client_at(env, &env.gw.endpoint(), program, args, timeout).await
}

async fn run_client_at(env: &S3Env, endpoint: &str, program: &Path, args: &[&str], timeout: Duration) -> String {
    run_client_env(env, endpoint, program, args, &[], timeout).await
}

async fn run_client_env(
    env: &S3Env,
    endpoint: &str,
    program: &Path,
    args: &[&str],
    extra: &[(&str, &str)],
    timeout: Duration,
) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(extra.iter().copied())
        .env("TARN_S3_ENDPOINT", endpoint)
        .env("TARN_STATE", env.dir.path().join("state.json"))
        .env("TARN_S3_ACCESS_KEY", &env.key.access_key)
        .env("TARN_S3_SECRET_KEY", &env.key.secret_key)
        .env("TARN_S3_CA", &env.tls.cert)
        .env("AWS_ACCESS_KEY_ID", &env.key.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &env.key.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CA_BUNDLE", &env.tls.cert)
        // polars (object_store, rustls) trusts the certificates of this file.
        .env("SSL_CERT_FILE", &env.tls.cert)
        .env("TMPDIR", env.dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within {timeout:?}", program.display()))
        .expect("run the client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} {args:?} failed:\n{text}", program.display());
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_suite_passes() {
    let env = start().await;
    let out = run_client(&env, &python(), &["s3/boto3_suite.py"], Duration::from_secs(300)).await;
    assert!(out.contains("0 failed"), "{out}");
    // Refused uploads (bad digests, a client gone mid-body) left no staged bytes behind.
    let nn = env.cl.client();
    tarn_tests::wait_for("staged uploads removed", Duration::from_secs(30), || async {
        let (left, _) = nn.list_tree("/.tarn/s3/tmp/", "", 10, &Default::default()).await.ok()?;
        left.is_empty().then_some(())
    })
    .await;
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// Small objects are kept by the namenodes (no block), whichever way boto3 sends them
/// (aws-chunked with a trailer and no Content-Length, or a plain body with Content-MD5);
/// larger ones go to blocks. Both read back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_objects_are_kept_by_the_namenodes() {
    let env = start().await;
    let script = r#"
import base64, hashlib, os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["TARN_S3_ENDPOINT"], verify=os.environ["TARN_S3_CA"])
s3.create_bucket(Bucket="small")
small, big = os.urandom(5000), os.urandom(70000)
s3.put_object(Bucket="small", Key="chunked", Body=small)
md5 = base64.b64encode(hashlib.md5(small).digest()).decode()
s3.put_object(Bucket="small", Key="plain", Body=small, ContentMD5=md5, ChecksumAlgorithm="SHA256")
s3.put_object(Bucket="small", Key="big", Body=big)
for key, body in [("chunked", small), ("plain", small), ("big", big)]:
    got = s3.get_object(Bucket="small", Key=key)
    assert got["Body"].read() == body, key
    assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest(), key
print("small objects: ok")
"#;
    let out = run_client(&env, &python(), &["-c", script], Duration::from_secs(120)).await;
    assert!(out.contains("small objects: ok"), "{out}");
    let nn = env.cl.client();
    for key in ["chunked", "plain"] {
        let r = nn.get_blocks(&format!("/small/{key}"), 0, 10).await.unwrap();
        assert!(r.inline_data.is_some() && r.blocks.is_empty(), "{key}: {r:?}");
    }
    let r = nn.get_blocks("/small/big", 0, 10).await.unwrap();
    assert!(r.inline_data.is_none() && r.blocks.len() == 1, "big: {r:?}");
    env.gw.stop().await;
    env.cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pyarrow_polars_and_s3fs_read_and_write_parquet() {
    let env = start().await;
    let out = run_client(&env, &python(), &["s3/dataframe_suite.py"], Duration::from_secs(300)).await;
    assert!(out.contains("3 passed, 0 failed"), "{out}");
    env.gw.stop().await;
    env.cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_cli_recursive_copy_sync_and_paging() {
    // One namenode: small objects go to blocks (the gateway's fallback).
    let env = start_with(1, |_| {}).await;
    let script = env.dir.path().join("awscli.sh");
    std::fs::write(&script, include_str!("../s3/awscli_suite.sh")).unwrap();
    let bash = PathBuf::from("/bin/bash");
    let aws = python().with_file_name("aws");
    let out =
        run_client(&env, &bash, &[script.to_str().unwrap(), aws.to_str().unwrap()], Duration::from_secs(300)).await;
    assert!(out.contains("awscli suite: ok"), "{out}");
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// A `tarn gateway` process over the in-process cluster, with `env`'s key and certificate.
async fn spawn_gateway(env: &S3Env, dir: &Path) -> (std::process::Child, String) {
    #[derive(serde::Serialize)]
    struct File<'a> {
        gateway: &'a GatewayConfig,
        security: tarn_security::SecurityConfig,
    }
    let cfg = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        namenodes: env.cl.addrs.clone(),
        tls: Some(env.tls.clone()),
        access_keys: vec![env.key.clone()],
        ..GatewayConfig::default()
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("tarn.toml"),
        toml::to_string(&File { gateway: &cfg, security: tarn_tests::pki().security(Role::Gateway, "gw") }).unwrap(),
    )
    .unwrap();
    tarn_tests::spawn_role("gateway", dir, "info").await
}

/// SIGKILL of a gateway process while a part streams through it: after a restart the
/// upload completes from the parts it had, or aborts; nothing is half-visible, and the
/// staged bytes of the killed part are swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_mid_upload_leaves_a_completable_upload() {
    let env = start().await;
    let gw_dir = env.dir.path().join("gw");
    let (mut child, endpoint) = spawn_gateway(&env, &gw_dir).await;
    let python = python();
    let mut phase1 = tokio::process::Command::new(&python);
    phase1
        .arg("s3/multipart_kill.py")
        .arg("start")
        .env("TARN_S3_ENDPOINT", &endpoint)
        .env("TARN_S3_ACCESS_KEY", &env.key.access_key)
        .env("TARN_S3_SECRET_KEY", &env.key.secret_key)
        .env("TARN_S3_CA", &env.tls.cert)
        .env("TARN_STATE", env.dir.path().join("state.json"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let phase1 = phase1.spawn().expect("start phase 1");
    // Wait until part 3 streams into a staged file, then kill the gateway under it.
    let nn = env.cl.client();
    let state = env.dir.path().join("state.json");
    let staged = tarn_tests::wait_for("part 3 staged", Duration::from_secs(120), || async {
        // Parts 1 and 2 are done (and their staged files gone) once the state is written.
        if !state.exists() {
            return None;
        }
        let (page, _) = nn.list_tree("/.tarn/s3/tmp/", "", 100, &Default::default()).await.ok()?;
        let open = page.into_iter().find(|st| st.writer.is_some())?;
        let written = nn.get_blocks(&open.path, 0, 10).await.ok()?.blocks.len();
        (written > 0).then_some(open.path)
    })
    .await;
    child.kill().expect("SIGKILL the gateway");
    child.wait().expect("reap the gateway");
    let out = tokio::time::timeout(Duration::from_secs(120), phase1.wait_with_output())
        .await
        .expect("phase 1 ends once its gateway is gone")
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("failed as expected"), "phase 1:\n{text}");

    let (mut child, endpoint) = spawn_gateway(&env, &gw_dir).await;
    let out =
        run_client_at(&env, &endpoint, &python, &["s3/multipart_kill.py", "finish"], Duration::from_secs(120)).await;
    assert!(out.contains("finish: ok"), "{out}");
    // The killed part's staged file is invisible to S3 and goes with the sweep.
    assert!(nn.get_file_info(&staged, false).await.unwrap().is_some());
    assert!(tarn_gateway::s3::sweep_staged(&nn, Duration::ZERO, Duration::ZERO).await >= 1);
    assert!(nn.get_file_info(&staged, false).await.unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// `tarn s3` with the test cluster's namenode and master key; returns its output.
fn tarn_s3(env: &S3Env, master: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(tarn_tests::tarn_bin())
        .arg("s3")
        .env("TARN_CONFIG", tarn_tests::admin_config())
        .arg("--namenode")
        .arg(&env.cl.addrs[0])
        .arg("--master-key-file")
        .arg(master)
        .args(args)
        .output()
        .expect("run tarn s3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tarn s3 {args:?}:\n{text}");
    text
}

fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(label)).map(str::trim).unwrap_or_else(|| panic!("no {label} in {text}"))
}

/// Keys made with `tarn s3 keys create` (secrets sealed in the namespace), bucket grants,
/// anonymous reads, and a deleted key refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_grants_and_anonymous_reads() {
    let keydir = tempfile::tempdir().unwrap();
    let master = keydir.path().join("master.key");
    tarn_gateway::keys::MasterKey::create(&master).unwrap();
    let m = master.clone();
    let env = start_with(3, move |c| c.master_key_file = Some(m)).await;
    let created = tarn_s3(&env, &master, &["keys", "create", "--user", "alice"]);
    let (ak, sk) = (field(&created, "access key:").to_string(), field(&created, "secret key:").to_string());
    // Stored sealed: the namespace holds no trace of the secret.
    let nn = env.cl.client();
    let st = nn.get_file_info(&format!("/.tarn/s3/keys/{ak}"), true).await.unwrap().expect("key record");
    let stored: Vec<u8> = st.xattrs.values().flatten().copied().collect();
    assert!(!stored.windows(sk.len()).any(|w| w == sk.as_bytes()), "the secret is stored in the clear");
    assert!(tarn_s3(&env, &master, &["keys", "list"]).contains(&ak));

    let py = python();
    let endpoint = env.gw.endpoint();
    let extra = [("ALICE_AK", ak.as_str()), ("ALICE_SK", sk.as_str())];
    let run = |phase: &'static str| {
        let (env, py, endpoint, extra) = (&env, &py, &endpoint, &extra);
        async move {
            let out =
                run_client_env(env, endpoint, py, &["s3/access_suite.py", phase], extra, Duration::from_secs(120))
                    .await;
            assert!(out.contains(&format!("{phase}: ok")), "{out}");
        }
    };
    run("setup").await;
    // Bob (a user certificate) puts a file only he may read into the bucket, in a
    // directory the admin gave him.
    let bob = tarn_client::NamenodeClient::new(&env.cl.addrs, &tarn_tests::pki().transport(Role::User, "bob")).unwrap();
    nn.mkdirs("/shared/bob").await.unwrap();
    let own = tarn_client::SetAttributes { owner: Some("bob".into()), ..Default::default() };
    nn.set_attributes("/shared/bob", own).await.unwrap();
    let opts = tarn_client::CreateOptions { mode: 0o600, ..Default::default() };
    let mut w = tarn_client::blocks::FileWriter::create(&bob, "/shared/bob/only.txt", &opts).await.unwrap();
    w.write(b"bob only").await.unwrap();
    w.close().await.unwrap();
    tarn_s3(&env, &master, &["grant", "shared", &ak, "--read-only"]);
    tarn_s3(&env, &master, &["grant", "team", &ak]);
    tarn_s3(&env, &master, &["anonymous-read", "shared", "on"]);
    assert!(tarn_s3(&env, &master, &["access", "shared"]).contains("anonymous read: on"));
    run("check").await;
    // The gateway's own directory (access keys, staged uploads, parts) is its alone: bob's
    // certificate can neither list nor look into it.
    let sys = nn.get_file_info("/.tarn/s3", false).await.unwrap().expect("the gateway's directory");
    assert_eq!(sys.mode & 0o7777, 0o700);
    let (seen, _) = bob.list_tree("/.tarn/s3/", "", 100, &Default::default()).await.unwrap();
    assert!(seen.is_empty(), "bob sees into the gateway's directory: {seen:?}");
    let e = bob.get_file_info(&format!("/.tarn/s3/keys/{ak}"), true).await.unwrap_err();
    assert_eq!(e.kind(), tarn_client::ErrorKind::PermissionDenied, "{e}");
    // What a key makes is owned by its user (admin keys act as the gateway itself).
    for (path, user) in [
        ("/alice-own", "alice"),
        ("/alice-own/mine", "alice"),
        ("/shared/doc.txt", "gateway"),
        ("/team", "gateway"),
        ("/team/plan.txt", "alice"),
        ("/team/big.bin", "alice"),
    ] {
        let st = nn.get_file_info(path, false).await.unwrap().unwrap_or_else(|| panic!("{path} exists"));
        assert_eq!(st.owner, user, "owner of {path}");
    }
    tarn_s3(&env, &master, &["keys", "delete", &ak]);
    assert!(!tarn_s3(&env, &master, &["keys", "list"]).contains(&ak));
    run("revoked").await;
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// The S3 port speaks HTTPS only: a plaintext HTTP request gets no HTTP answer and
/// changes nothing (the TLS handshake fails on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_http_to_the_s3_port_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = start().await;
    let mut tcp = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
    tcp.write_all(b"PUT /plain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut got)).await.expect("bounded");
    // The connection ends (or resets) without a word of HTTP.
    assert!(
        read.is_err() || !got.starts_with(b"HTTP/"),
        "plaintext HTTP was answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(env.cl.client().get_file_info("/plain", false).await.unwrap().is_none());
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// Deleting the last object under a prefix removes the directories S3 made for it, but not
/// one an operator gave a quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_prune_empty_directories_but_not_quota_ones() {
    let env = start().await;
    let nn = env.cl.client();
    let script = r#"
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["TARN_S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id=os.environ["TARN_S3_ACCESS_KEY"], aws_secret_access_key=os.environ["TARN_S3_SECRET_KEY"],
                  verify=os.environ["TARN_S3_CA"])
s3.create_bucket(Bucket="prune")
for k in ["plain/a/x", "limited/a/x"]:
    s3.put_object(Bucket="prune", Key=k, Body=b"1")
open(os.environ["TARN_STATE"], "w").write("written")
import time
while open(os.environ["TARN_STATE"]).read() != "go":
    time.sleep(0.05)
for k in ["plain/a/x", "limited/a/x"]:
    s3.delete_object(Bucket="prune", Key=k)
print("deleted")
"#;
    let state = env.dir.path().join("state.json");
    let py = python();
    let args = ["-c", script];
    let client = run_client(&env, &py, &args, Duration::from_secs(120));
    let operator = async {
        tarn_tests::wait_for("objects written", Duration::from_secs(60), || async {
            (std::fs::read_to_string(&state).ok()? == "written").then_some(())
        })
        .await;
        nn.set_quota("/prune/limited", 1000, -1).await.unwrap();
        std::fs::write(&state, "go").unwrap();
    };
    let (out, ()) = tokio::join!(client, operator);
    assert!(out.contains("deleted"), "{out}");
    assert!(nn.get_file_info("/prune/plain", false).await.unwrap().is_none(), "empty S3-made directories stay");
    assert!(nn.get_file_info("/prune/limited", false).await.unwrap().is_some(), "a quota directory was removed");
    assert!(nn.get_file_info("/prune/limited/a", false).await.unwrap().is_none());
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// CreateBucket is one namespace operation (create the directory only if nothing is
/// there, with its owner and grants): of many concurrent creators exactly one wins and
/// keeps the bucket; the others are told whether it is theirs (BucketAlreadyOwnedByYou)
/// or another user's (BucketAlreadyExists), and get nothing in it. A directory marker over
/// another user's directory does not take it over (tests/s3/bucket_race.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_bucket_races_have_one_winner() {
    use tarn_gateway::keys::{create_key, set_bucket_access, BucketAccess, MasterKey};
    let keydir = tempfile::tempdir().unwrap();
    let master_file = keydir.path().join("master.key");
    let master = MasterKey::create(&master_file).unwrap();
    let env = start_with(3, move |c| c.master_key_file = Some(master_file)).await;
    let nn = env.cl.client();
    let alice = create_key(&nn, &master, "alice", false).await.unwrap();
    let bob = create_key(&nn, &master, "bob", false).await.unwrap();
    // `marks`: a bucket both may write in, with a directory of alice's in it (made before the
    // gateway ever looks at the bucket, so no cached grants are in the way).
    nn.mkdirs("/marks/d").await.unwrap();
    let own =
        tarn_client::SetAttributes { owner: Some("alice".into()), group: Some("alice".into()), ..Default::default() };
    nn.set_attributes("/marks/d", own).await.unwrap();
    let mut access = BucketAccess::default();
    access.grants.insert(alice.access_key.clone(), "rw".into());
    access.grants.insert(bob.access_key.clone(), "rw".into());
    set_bucket_access(&nn, "marks", &access).await.unwrap();

    let extra = [
        ("ALICE_AK", alice.access_key.as_str()),
        ("ALICE_SK", alice.secret_key.as_str()),
        ("BOB_AK", bob.access_key.as_str()),
        ("BOB_SK", bob.secret_key.as_str()),
    ];
    let out =
        run_client_env(&env, &env.gw.endpoint(), &python(), &["s3/bucket_race.py"], &extra, Duration::from_secs(240))
            .await;
    assert!(out.contains("race: ok"), "{out}");
    let key_of = |user: &str| if user == "alice" { &alice.access_key } else { &bob.access_key };
    let mut rounds = 0;
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("winner ") else { continue };
        let (bucket, user) = rest.split_once(' ').expect("winner BUCKET USER");
        rounds += 1;
        // The winner's owner and grant stayed: no loser overwrote them afterwards.
        let st = nn.get_file_info(&format!("/{bucket}"), true).await.unwrap().expect("the bucket");
        assert_eq!((st.owner.as_str(), st.group.as_str()), (user, user), "owner of {bucket}");
        let access = tarn_gateway::keys::get_bucket_access(&nn, bucket).await.unwrap().expect("a bucket");
        assert_eq!(access.grants.keys().collect::<Vec<_>>(), vec![key_of(user)], "grants of {bucket}");
    }
    assert_eq!(rounds, 5, "{out}");
    let st = nn.get_file_info("/alice-only", true).await.unwrap().unwrap();
    assert_eq!(st.owner, "alice");
    let access = tarn_gateway::keys::get_bucket_access(&nn, "alice-only").await.unwrap().unwrap();
    assert_eq!(access.grants.keys().collect::<Vec<_>>(), vec![&alice.access_key]);
    // Bob's marker made `marks/d/` an object without taking alice's directory.
    let d = nn.get_file_info("/marks/d", true).await.unwrap().unwrap();
    assert_eq!(d.owner, "alice", "bob's directory marker took alice's directory over");
    assert!(d.xattrs.contains_key("s3.marker"), "{d:?}");
    // A marker that makes its directory (and the one above) makes them bob's.
    for path in ["/marks/new", "/marks/new/sub"] {
        let st = nn.get_file_info(path, true).await.unwrap().unwrap_or_else(|| panic!("{path}"));
        assert_eq!(st.owner, "bob", "owner of {path}");
    }
    env.gw.stop().await;
    env.cl.shutdown().await;
}

/// A listing request reads at most `list_scan_keys_max` keys from the namespace, whatever
/// the delimiter (with one other than '/' the gateway groups keys itself): a bucket of
/// many times that many keys lists in truncated pages that boto3's paginators follow to
/// exactly the full answer, in order, nothing twice (tests/s3/list_bounded.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_scan_a_bounded_number_of_keys() {
    const BOUND: usize = 16;
    let env = start_with(3, |c| c.list_scan_keys_max = BOUND).await;
    let bound = BOUND.to_string();
    let extra = [("LIST_SCAN_MAX", bound.as_str())];
    let out =
        run_client_env(&env, &env.gw.endpoint(), &python(), &["s3/list_bounded.py"], &extra, Duration::from_secs(240))
            .await;
    assert!(out.contains("bounded listings: ok"), "{out}");
    env.gw.stop().await;
    env.cl.shutdown().await;
}
