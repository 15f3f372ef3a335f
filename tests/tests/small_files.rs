//! Small files kept in the namespace: written in one namespace operation (no blocks), sealed
//! by the leader before their bytes enter the Raft log, kept by every namenode, read back
//! through the same reader as block files; and the cases where the namenodes do not keep
//! them (fewer voters than replicas, over the size limit), which go to blocks.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tarn_client::blocks::FileReader;
use tarn_client::store::TarnStore;
use tarn_client::{ConcatOptions, ErrorKind, NamenodeClient, RenameOptions, INLINE_MAX};
use tarn_security::Role;
use tarn_tests::{block_tuning, pki, Cluster};

/// Bytes that must never be found in a namenode's files.
const MARK: &[u8] = b"<tarn small file plaintext 7f3a9c>";

fn marked(n: usize) -> Bytes {
    Bytes::from(MARK.iter().copied().cycle().take(n).collect::<Vec<u8>>())
}

/// Whether any file under `dir` holds `needle`.
fn dir_contains(dir: &FsPath, needle: &[u8]) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = dir_contains(&p, needle) {
                return Some(found);
            }
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Some(p);
            }
        }
    }
    None
}

async fn read_all(nn: Arc<NamenodeClient>, path: &str) -> Vec<u8> {
    let r = FileReader::open(nn, path).await.unwrap();
    r.read_at(0, r.length()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_kept_sealed_by_every_namenode() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cl = Cluster::start(3, block_tuning).await;
        cl.start_datanodes(1).await;
        let nn = Arc::new(cl.client());
        let store = TarnStore::with_root(nn.clone(), "/w");
        let data = marked(40_000);
        let p = Path::from("a/x.bin");
        let put = store.put(&p, PutPayload::from(data.clone())).await.unwrap();
        // No blocks: the namenode answers with the bytes themselves.
        let r = nn.get_blocks("/w/a/x.bin", 0, 10).await.unwrap();
        assert!(r.blocks.is_empty(), "{r:?}");
        assert_eq!(r.inline_data.as_deref(), Some(&data[..]));
        assert_eq!(r.length, data.len() as u64);
        // fsck knows it for a kept file, not a file with lost blocks.
        let f = &nn.fsck("/w/a/x.bin", "", 10).await.unwrap().files[0];
        assert!(f.inline && !f.inline_missing && f.blocks.is_empty() && f.inline_copies == 3, "{f:?}");
        let st = nn.get_file_info("/w/a/x.bin", false).await.unwrap().unwrap();
        assert_eq!((st.length, st.file_id.to_string()), (data.len() as u64, put.version.clone().unwrap()));
        // Read like any file: whole, ranges, positional reads.
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), data);
        assert_eq!(store.get_range(&p, 100..200).await.unwrap(), data.slice(100..200));
        let reader = FileReader::open(nn.clone(), "/w/a/x.bin").await.unwrap();
        assert_eq!(reader.read_at(39_990, 100).await.unwrap(), &data[39_990..]);
        assert!(reader.read_at(50_000, 10).await.unwrap().is_empty());

        // Conditional writes hold as for block files.
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let e = store.put_opts(&p, PutPayload::from_static(b"x"), create).await.unwrap_err();
        assert!(matches!(e, object_store::Error::AlreadyExists { .. }), "{e}");
        let v1 = UpdateVersion { e_tag: put.e_tag.clone(), version: put.version.clone() };
        let upd = PutOptions { mode: PutMode::Update(v1), ..Default::default() };
        let second = marked(1000);
        let put2 = store.put_opts(&p, PutPayload::from(second.clone()), upd.clone()).await.unwrap();
        assert_ne!(put2.version, put.version);
        let e = store.put_opts(&p, PutPayload::from_static(b"stale"), upd).await.unwrap_err();
        assert!(matches!(e, object_store::Error::Precondition { .. }), "{e}");
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap(), second);
        // An empty file is an ordinary empty file.
        store.put(&Path::from("a/empty"), PutPayload::new()).await.unwrap();
        assert!(store.get(&Path::from("a/empty")).await.unwrap().bytes().await.unwrap().is_empty());

        // A rename keeps the bytes with the file; replacing a small file by a big one and
        // back leaves the right bytes each time.
        nn.mkdirs("/w/b").await.unwrap();
        nn.rename("/w/a/x.bin", "/w/b/y.bin", &RenameOptions::default()).await.unwrap();
        assert_eq!(read_all(nn.clone(), "/w/b/y.bin").await, second);
        let big = marked(INLINE_MAX + 1);
        store.put(&Path::from("b/y.bin"), PutPayload::from(big.clone())).await.unwrap();
        assert_eq!(nn.get_blocks("/w/b/y.bin", 0, 10).await.unwrap().blocks.len(), 1, "over the limit: a block");
        assert_eq!(read_all(nn.clone(), "/w/b/y.bin").await, big);
        store.put(&Path::from("b/y.bin"), PutPayload::from(data.clone())).await.unwrap();
        assert_eq!(read_all(nn.clone(), "/w/b/y.bin").await, data);

        // Concat joins block files only, and says so.
        let st = nn.get_file_info("/w/b/y.bin", false).await.unwrap().unwrap();
        let o = ConcatOptions { create_parent: true, ..Default::default() };
        let e = nn.concat(&[("/w/b/y.bin".into(), st.file_id)], "/w/joined", &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("kept in the namespace"), "{e}");
        assert!(nn.get_file_info("/w/joined", false).await.unwrap().is_none());

        // No namenode keeps the bytes in the clear: not in the Raft log, not in the
        // state machine, not in snapshots.
        for addr in &cl.addrs {
            assert!(nn.trigger_snapshot_on(addr).await.unwrap() > 0);
        }
        for c in &cl.configs {
            assert_eq!(dir_contains(&c.data_dir, MARK), None, "plaintext in a namenode's files");
        }

        // The leader goes: the new one opens the same bytes (every voter has them, and the
        // group's master key).
        let o = ConcatOptions { create_parent: true, ..Default::default() };
        nn.put_small("/w/r3", Bytes::from_static(b"three copies"), 3, &o).await.unwrap();
        let leader = cl.leader().await;
        cl.stop(leader).await;
        let nn = Arc::new(cl.client());
        assert_eq!(read_all(nn.clone(), "/w/b/y.bin").await, data);
        // The group shrinks to the two left: fsck counts two copies of the three asked.
        let left: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
        nn.change_membership(left, false).await.unwrap();
        let f = &nn.fsck("/w/r3", "", 10).await.unwrap().files[0];
        assert_eq!((f.inline_copies, f.replication), (2, 3), "{f:?}");
        assert_eq!(read_all(nn.clone(), "/w/r3").await, b"three copies");
        // Deleted, gone.
        nn.delete("/w/b/y.bin", false, None).await.unwrap();
        assert!(FileReader::open(nn.clone(), "/w/b/y.bin").await.is_err());
        cl.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_go_to_blocks_where_the_namenodes_cannot_keep_them() {
    tokio::time::timeout(Duration::from_secs(90), async {
        // One namenode and two datanodes: files get two replicas, more than the one voter.
        let mut cl = Cluster::start(1, block_tuning).await;
        cl.start_datanodes(2).await;
        let nn = Arc::new(cl.client());
        let o = ConcatOptions { create_parent: true, ..Default::default() };
        let e = nn.put_small("/s/f", Bytes::from_static(b"abc"), 0, &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InlineUnavailable, "{e}");
        assert!(e.to_string().contains("1 voters"), "{e}");
        assert!(nn.get_file_info("/s/f", false).await.unwrap().is_none(), "nothing written");
        // Too big for the namespace, whatever the replication.
        let e = nn.put_small("/s/big", marked(INLINE_MAX + 1), 1, &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InlineUnavailable, "{e}");
        // One replica asked: kept.
        let st = nn.put_small("/s/one", Bytes::from_static(b"one"), 1, &o).await.unwrap();
        assert_eq!((st.length, st.replication), (3, 1));
        assert_eq!(read_all(nn.clone(), "/s/one").await, b"one");
        // The object store writes blocks instead, transparently.
        let store = TarnStore::with_root(nn.clone(), "/s");
        store.put(&Path::from("g"), PutPayload::from_static(b"ghi")).await.unwrap();
        let r = nn.get_blocks("/s/g", 0, 10).await.unwrap();
        assert!(r.inline_data.is_none() && r.blocks.len() == 1, "{r:?}");
        assert_eq!(store.get(&Path::from("g")).await.unwrap().bytes().await.unwrap(), Bytes::from_static(b"ghi"));
        // Quotas count a small file's bytes times its replication.
        nn.mkdirs("/q").await.unwrap();
        nn.set_quota("/q", 0, 100).await.unwrap();
        let e = nn.put_small("/q/f", marked(200), 1, &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
        assert!(nn.get_file_info("/q/f", false).await.unwrap().is_none());
        nn.put_small("/q/g", marked(60), 1, &o).await.unwrap();
        // Permissions as for a create: bob may not write in the admin's directory.
        let bob = NamenodeClient::new(&cl.addrs, &pki().transport(Role::User, "bob")).unwrap();
        let e = bob.put_small("/s/bob", Bytes::from_static(b"b"), 1, &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(nn.get_file_info("/s/bob", false).await.unwrap().is_none());
        cl.shutdown().await;
    })
    .await
    .expect("timed out");
}

/// A master key rotation: namenodes given the new key and the old one as a previous key
/// still open every small file; the re-seal puts them all under the new key, after which
/// the old key can go. Without the old key, a read is refused naming the key it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_rotation_reseals_small_files() {
    use tarn_namenode::SmallFiles;
    use tarn_security::MasterKey;
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cl = Cluster::start(1, |c| c.files.default_replication = 1).await;
        let store = TarnStore::with_root(Arc::new(cl.client()), "/r");
        let (a, b) = (marked(3000), marked(60_000));
        store.put(&Path::from("a"), PutPayload::from(a.clone())).await.unwrap();
        store.put(&Path::from("d/b"), PutPayload::from(b.clone())).await.unwrap();
        let (old, new) = (pki().master(), MasterKey::generate());

        // The new key alone: refused, naming the old key.
        cl.stop(1).await;
        cl.restart_with(1, SmallFiles::sealed(new.clone())).await;
        let nn = Arc::new(cl.client());
        let e = FileReader::open(nn.clone(), "/r/a").await.err().expect("the new key alone cannot open it");
        assert!(e.to_string().contains(&old.id_hex()) && e.to_string().contains("previous_master_key_files"), "{e}");

        // New and old: readable; new files go under the new key; the re-seal moves the rest.
        cl.stop(1).await;
        cl.restart_with(1, SmallFiles::Sealed { key: new.clone(), previous: vec![old.clone()] }).await;
        let nn = Arc::new(cl.client());
        assert_eq!(read_all(nn.clone(), "/r/a").await, a);
        let c = marked(100);
        TarnStore::with_root(nn.clone(), "/r").put(&Path::from("c"), PutPayload::from(c.clone())).await.unwrap();
        let r = nn.reseal_small_files().await.unwrap();
        assert_eq!((r.resealed, r.current, r.unreadable, r.key_id.as_str()), (2, 1, 0, new.id_hex().as_str()), "{r:?}");
        let r = nn.reseal_small_files().await.unwrap();
        assert_eq!((r.resealed, r.current), (0, 3), "a rerun has nothing to do: {r:?}");

        // The old key dropped: everything still reads.
        cl.stop(1).await;
        cl.restart_with(1, SmallFiles::sealed(new.clone())).await;
        let nn = Arc::new(cl.client());
        for (p, want) in [("/r/a", &a), ("/r/d/b", &b), ("/r/c", &c)] {
            assert_eq!(read_all(nn.clone(), p).await, want.to_vec(), "{p}");
        }
        cl.shutdown().await;
    })
    .await
    .expect("timed out");
}
