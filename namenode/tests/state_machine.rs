//! The state machine applied directly (no Raft, no network): the retry cache answers a
//! retried call with its first result even when the next leader's clock is behind, and a
//! refused operation in a batch leaves the others applied.

use std::collections::BTreeMap;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use tarn_namenode::store::{open_db, DbMemory, StateMachine};
use tarn_namenode::types::{Command, CreateOp, Op, OpOutput, RequestId, TypeConfig};
use tarn_namenode::FsError;

fn entry(index: u64, now_ms: u64, ops: Vec<(Option<RequestId>, Op)>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command { now_ms, ops }),
    }
}

fn create(path: &str, client: &str) -> Op {
    Op::Create(CreateOp {
        path: path.into(),
        overwrite: false,
        expected_file_id: None,
        create_parent: true,
        replication: 1,
        block_size: 1 << 20,
        mode: 0o644,
        owner: "u".into(),
        group: "g".into(),
        client_name: client.into(),
        xattrs: BTreeMap::new(),
        take_over_from: None,
        allocate_block: false,
    })
}

const MEM: DbMemory = DbMemory { block_cache_bytes: 8 << 20, write_buffer_bytes: 8 << 20 };

/// A state machine on a fresh database in `dir`.
fn open_sm(dir: &std::path::Path) -> (std::sync::Arc<tarn_namenode::kv::Db>, StateMachine) {
    let db = open_db(&dir.join("db"), MEM).unwrap();
    let sm = StateMachine::open(db.clone(), dir.join("snapshots"), Default::default()).unwrap();
    (db, sm)
}

fn file_id(r: &Result<OpOutput, FsError>) -> u64 {
    match r {
        Ok(OpOutput::Inode(i)) => i.id,
        other => panic!("expected an inode, got {other:?}"),
    }
}

#[tokio::test]
async fn retries_get_the_first_result_even_when_the_clock_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm) = open_sm(dir.path());
    let rid = Some(RequestId { client_id: 7, call_id: 1 });
    // Leader A applies the create at 12:01:00.050 ...
    let minute = 1_000 * 60_000;
    let first = sm.apply([entry(1, minute + 50, vec![(rid, create("/a/f", "c1"))])]).await.unwrap();
    let id = file_id(&first[0].results[0]);
    // ... leader B, 100 ms behind (previous minute), receives the client's retry.
    let retry = sm.apply([entry(2, minute - 50, vec![(rid, create("/a/f", "c1"))])]).await.unwrap();
    assert_eq!(file_id(&retry[0].results[0]), id, "the retry must get the original result, not AlreadyExists");
    // Without the request id, the same call is a new one and is refused.
    let again = sm.apply([entry(3, minute + 100, vec![(None, create("/a/f", "c1"))])]).await.unwrap();
    assert!(matches!(again[0].results[0], Err(FsError::AlreadyExists { .. })));
    // Past the retry window, the record is gone and a reused id is a new call.
    let later = sm.apply([entry(4, minute + 10 * 60_000, vec![(rid, create("/a/g", "c1"))])]).await.unwrap();
    assert!(file_id(&later[0].results[0]) > id);
}

#[tokio::test]
async fn a_refused_operation_in_a_batch_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm) = open_sm(dir.path());
    let ops = vec![
        (None, create("/b/1", "c")),
        // Refused half-way: the parent directories it made must vanish with it.
        (None, create("/b/1/child", "c")),
        (None, create("/b/2", "c")),
    ];
    let out = sm.apply([entry(1, 1_000, ops)]).await.unwrap();
    let r = &out[0].results;
    assert!(r[0].is_ok() && r[2].is_ok());
    assert!(matches!(r[1], Err(FsError::NotADirectory { .. })), "{:?}", r[1]);
    // Ids handed out by the refused operation are not reused differently on replay:
    // applying the same entry on a fresh replica gives the same ids.
    let dir2 = tempfile::tempdir().unwrap();
    let (_, mut sm2) = open_sm(dir2.path());
    let ops = vec![(None, create("/b/1", "c")), (None, create("/b/1/child", "c")), (None, create("/b/2", "c"))];
    let out2 = sm2.apply([entry(1, 1_000, ops)]).await.unwrap();
    assert_eq!(file_id(&out2[0].results[2]), file_id(&r[2]));
}

#[tokio::test]
async fn a_published_but_unloaded_snapshot_is_loaded_at_open() {
    use openraft::storage::RaftSnapshotBuilder;
    use tarn_namenode::kv::SnapView;
    use tarn_namenode::namespace::Namespace;

    // A leader's state machine with some files, and a snapshot of it.
    let dir1 = tempfile::tempdir().unwrap();
    let (_, mut sm1) = open_sm(dir1.path());
    let ops = (0..50).map(|i| (None, create(&format!("/s/f{i}"), "c"))).collect();
    sm1.apply([entry(1, 1_000, ops)]).await.unwrap();
    let snap = sm1.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(1));
    // A follower crashed after publishing the received snapshot and before loading it:
    // its snapshot directory has it as current, its state machine is empty.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir2.path().join("snapshots")).unwrap();
    for e in std::fs::read_dir(dir1.path().join("snapshots")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir2.path().join("snapshots").join(e.file_name())).unwrap();
    }
    let (db2, mut sm2) = open_sm(dir2.path());
    let (applied, _) = sm2.applied_state().await.unwrap();
    assert_eq!(applied, snap.meta.last_log_id, "open must load the snapshot the log was purged to");
    let view = SnapView::new(&db2);
    let ns = Namespace::new(&view, 0);
    for i in [0, 25, 49] {
        assert!(ns.resolve(&format!("/s/f{i}")).unwrap().is_some(), "f{i} missing after load");
    }
}
