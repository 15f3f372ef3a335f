//! Persistent formats across upgrades: a namenode and a datanode opened on data directories
//! written by an earlier binary (golden fixtures committed under `tests/golden/`) serve
//! everything those directories held, and keep serving it after a restart.
//!
//! The fixtures are written by `write_golden_data_dirs` (ignored; run it by hand with
//! `TARN_GOLDEN_OUT=tests/golden/vN`) and never rewritten: a format change adds a new
//! directory beside the old ones, and every old one must still open.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};
use tarn_client::store::TarnStore;
use tarn_client::{NamenodeClient, RenameOptions};
use tarn_security::{MasterKey, Role};
use tarn_tests::{admin, datanode_config, init_logging, nn_transport, noise, pki, test_config, wait_for};

/// Block size of the fixtures' files: small, so a 300 kB file has several blocks.
const GOLDEN_BLOCK_BYTES: u64 = 128 << 10;

fn golden_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(version)
}

fn nn_config(dir: &Path, bootstrap: bool) -> tarn_namenode::NamenodeConfig {
    let mut c = test_config(1, &dir.join("nn"));
    if bootstrap {
        c.initial_members = vec!["1@".into()];
    }
    c.files.default_block_size = GOLDEN_BLOCK_BYTES;
    c.datanodes.heartbeat_interval_ms = 200;
    c
}

struct Node {
    nn: tarn_namenode::NamenodeHandle,
    dn: tarn_datanode::DatanodeHandle,
    client: Arc<NamenodeClient>,
}

impl Node {
    async fn start(dir: &Path, bootstrap: bool) -> Node {
        let master = MasterKey::load(&dir.join("master.key")).expect("fixture master key");
        let sf = tarn_namenode::SmallFiles::sealed(master.clone());
        let nn = tarn_namenode::start(nn_config(dir, bootstrap), nn_transport(1), sf).await.expect("start namenode");
        let client = Arc::new(NamenodeClient::new(std::slice::from_ref(&nn.addr), &admin()).expect("client"));
        wait_for("the namenode to lead", Duration::from_secs(20), || async {
            client.cluster_status().await.ok().filter(|s| s.leader_id == Some(1)).map(|_| ())
        })
        .await;
        let cfg = datanode_config(&dir.join("dn"), std::slice::from_ref(&nn.addr));
        let dn = tarn_datanode::start(cfg, pki().transport(Role::Datanode, "dn1"), Some(master))
            .await
            .expect("start datanode");
        tarn_tests::wait_live_datanodes(&client, 1).await;
        // Registered is not reported: reads find replicas once the block report is in
        // (safe mode ends with it).
        wait_for("the datanode's block report", Duration::from_secs(20), || async {
            (!client.datanode_report().await.ok()?.safe_mode).then_some(())
        })
        .await;
        Node { nn, dn, client }
    }

    async fn stop(self) {
        self.dn.stop().await;
        self.nn.shutdown().await;
    }
}

async fn put(store: &TarnStore, path: &str, data: Bytes) {
    store.put(&ObjPath::from(path), PutPayload::from(data)).await.expect("put");
}

async fn get(store: &TarnStore, path: &str) -> Bytes {
    store.get(&ObjPath::from(path)).await.expect("get").bytes().await.expect("read")
}

/// What every fixture holds (written by `write_golden_data_dirs`): block files before and
/// after a snapshot, a small file kept in the namespace, an attribute, a quota, a group,
/// a rename and a delete, so both the snapshot and the log replay carry each kind of record.
async fn check_golden_contents(c: &NamenodeClient, store: &TarnStore) {
    assert_eq!(get(store, "golden/sales/big.bin").await, noise(300_000, 1));
    assert_eq!(get(store, "golden/after/late.bin").await, noise(70_000, 2));
    assert_eq!(&get(store, "golden/sales/small-renamed.txt").await[..], b"hello golden");
    assert!(c.get_file_info("/golden/sales/small.txt", false).await.unwrap().is_none());
    assert!(c.get_file_info("/golden/tmp", false).await.unwrap().is_none());
    let big = c.get_file_info("/golden/sales/big.bin", false).await.unwrap().expect("big.bin");
    assert_eq!((big.length, big.block_size), (300_000, GOLDEN_BLOCK_BYTES));
    let small = c.get_file_info("/golden/sales/small-renamed.txt", true).await.unwrap().expect("small file");
    assert_eq!(small.xattrs.get("user.note").map(|v| &v[..]), Some(&b"kept"[..]));
    let golden = c.get_file_info("/golden", false).await.unwrap().expect("/golden");
    let quota = golden.quota.expect("a quota on /golden");
    assert_eq!((quota.namespace_quota, quota.space_quota), (Some(1000), Some(1 << 30)));
    let groups = c.list_groups(Some("alice")).await.unwrap();
    assert!(groups.iter().any(|(g, _)| g == "analysts"), "{groups:?}");
    let names: Vec<String> =
        c.list_recursive_all("/golden/", false).await.unwrap().into_iter().map(|s| s.path).collect();
    assert_eq!(names, ["/golden/after/late.bin", "/golden/sales/big.bin", "/golden/sales/small-renamed.txt"]);
}

/// Writes a fixture: run by hand when a format version is added (see the module comment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
async fn write_golden_data_dirs() {
    init_logging();
    let out = PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT names the fixture directory"));
    assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
    std::fs::create_dir_all(&out).unwrap();
    MasterKey::create(&out.join("master.key")).unwrap();
    let node = Node::start(&out, true).await;
    let c = node.client.clone();
    let store = TarnStore::new(c.clone());

    c.mkdirs("/golden/sales").await.unwrap();
    c.set_quota("/golden", 1000, 1 << 30).await.unwrap();
    put(&store, "golden/sales/big.bin", noise(300_000, 1).into()).await;
    put(&store, "golden/sales/small.txt", Bytes::from_static(b"hello golden")).await;
    let mut attrs = tarn_client::SetAttributes::default();
    attrs.set_xattrs.insert("user.note".into(), b"kept".to_vec());
    c.set_attributes("/golden/sales/small.txt", attrs).await.unwrap();
    c.change_group("analysts", &["alice".into()], &[]).await.unwrap();
    c.mkdirs("/golden/tmp").await.unwrap();
    c.trigger_snapshot_on(&node.nn.addr).await.unwrap();
    // After the snapshot: these are replayed from the log.
    put(&store, "golden/after/late.bin", noise(70_000, 2).into()).await;
    c.rename("/golden/sales/small.txt", "/golden/sales/small-renamed.txt", &RenameOptions::default()).await.unwrap();
    c.delete("/golden/tmp", true, None).await.unwrap();
    check_golden_contents(&c, &store).await;
    node.stop().await;
    // RocksDB's info logs are not data.
    for entry in std::fs::read_dir(out.join("nn/db")).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("LOG") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

/// Opens a copy of fixture `version`, checks every record it holds, writes to it, and
/// checks again after a restart (what the first start converted stays readable).
async fn open_golden(version: &str) {
    init_logging();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(version), tmp.path());
    // git keeps no modes but the execute bit: the key file is private again, as it was.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path().join("master.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Node::start(tmp.path(), false).await;
    let store = TarnStore::new(node.client.clone());
    check_golden_contents(&node.client, &store).await;
    put(&store, "golden/new/written-after-upgrade.bin", noise(5_000, 3).into()).await;
    node.stop().await;

    let node = Node::start(tmp.path(), false).await;
    let store = TarnStore::new(node.client.clone());
    assert_eq!(get(&store, "golden/new/written-after-upgrade.bin").await, noise(5_000, 3));
    node.client.delete("/golden/new", true, None).await.unwrap();
    check_golden_contents(&node.client, &store).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_format_0_is_served() {
    tokio::time::timeout(Duration::from_secs(120), open_golden("v0")).await.expect("bounded");
}

/// The first bytes of the namenode's current snapshot file in data directory `dir`.
fn current_snapshot_magic(dir: &Path) -> Vec<u8> {
    let snaps = dir.join("nn/snapshots");
    let name = std::fs::read_to_string(snaps.join("current")).expect("a current snapshot");
    let bytes = std::fs::read(snaps.join(format!("{}.snap", name.trim()))).expect("snapshot file");
    bytes[..8].to_vec()
}

/// A group formed by the old binary keeps writing what that binary reads until an operator
/// finalizes the upgrade: operations of the new format are refused with a clear error,
/// snapshots stay in format 0 (an old follower can install them); after the finalize
/// both are of the new format. A group formed by the new binary starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_group_writes_the_old_format_until_the_upgrade_is_finalized() {
    init_logging();
    tokio::time::timeout(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&golden_dir("v0"), tmp.path());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path().join("master.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let node = Node::start(tmp.path(), false).await;
        let c = &node.client;
        let s = c.cluster_status().await.unwrap();
        assert_eq!((s.cluster_format, s.binary_format), (0, 1), "{s:?}");
        // S3's atomic CreateBucket is format 1: refused, nothing made.
        let opts = tarn_client::MkdirOptions::default();
        let e = c.mkdir_exclusive("/bucket", &opts).await.unwrap_err();
        assert_eq!(e.kind(), tarn_client::ErrorKind::UpgradePending, "{e}");
        assert!(e.to_string().contains("tarn admin finalize-upgrade"), "{e}");
        assert!(c.get_file_info("/bucket", false).await.unwrap().is_none());
        // Everything else works, and snapshots are what the old binary reads.
        c.mkdirs("/plain").await.unwrap();
        c.trigger_snapshot_on(&node.nn.addr).await.unwrap();
        assert_eq!(current_snapshot_magic(tmp.path()), b"TARNSNP1");
        // A group of one: every member runs this binary.
        assert_eq!(c.finalize_upgrade().await.unwrap(), (0, 1));
        assert_eq!(c.finalize_upgrade().await.unwrap(), (1, 1), "a second finalize changes nothing");
        assert_eq!(c.cluster_status().await.unwrap().cluster_format, 1);
        c.mkdir_exclusive("/bucket", &opts).await.expect("format 1 after the finalize");
        c.trigger_snapshot_on(&node.nn.addr).await.unwrap();
        assert_eq!(current_snapshot_magic(tmp.path()), b"TARNSNP2");
        check_golden_contents(c, &TarnStore::new(node.client.clone())).await;
        node.stop().await;
        // The raised format is replicated state: it survives a restart.
        let node = Node::start(tmp.path(), false).await;
        assert_eq!(node.client.cluster_status().await.unwrap().cluster_format, 1);
        node.stop().await;

        // A new group starts at the new format.
        let fresh = tempfile::tempdir().unwrap();
        std::fs::copy(tmp.path().join("master.key"), fresh.path().join("master.key")).unwrap();
        let node = Node::start(fresh.path(), true).await;
        assert_eq!(node.client.cluster_status().await.unwrap().cluster_format, 1);
        node.client.mkdir_exclusive("/bucket", &opts).await.expect("a new group needs no finalize");
        node.stop().await;
    })
    .await
    .expect("bounded");
}
