//! Golden files of every record the namenode persists: one sample of each record type (every
//! `Op`, `OpOutput` and `FsError` variant among them), written by each format version under
//! `tests/golden/records/vN/` and never rewritten. Each must still decode to the sample, and
//! encode back to the same bytes in the current format: a change to a stored type that
//! would make an existing cluster's data unreadable fails here.
//!
//! New fixtures are written by `write_golden_records` (ignored; run by hand with
//! `TARN_GOLDEN_OUT=namenode/tests/golden/records/vN` when a format version is added).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use tarn_namenode::error::FsError;
use tarn_namenode::records::{decode, encode, BlockRec, Inode, Kind, QuotaRec};
use tarn_namenode::types::{
    Command, ConcatOp, CreateOp, MkdirOp, Op, OpOutput, OpResult, PutInlineOp, RenameOp, RequestId, SetAttributesOp,
    TypeConfig,
};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn xattrs() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([("s3.meta".to_string(), br#"{"etag":"x"}"#.to_vec()), ("user.a".to_string(), vec![0, 255])])
}

fn file_inode() -> Inode {
    Inode {
        id: 4242,
        parent: 17,
        name: "part-0001.parquet".into(),
        kind: Kind::File,
        mode: 0o640,
        owner: "alice".into(),
        group: "analysts".into(),
        mtime_ms: 1_765_000_000_123,
        replication: 3,
        block_size: 128 << 20,
        length: 300_000,
        block_count: 3,
        last_block_open: true,
        writer: Some("alice/tarn-client-7".into()),
        space_charged: 900_000,
        quota: None,
        xattrs: xattrs(),
    }
}

fn dir_inode() -> Inode {
    Inode {
        id: 17,
        parent: 1,
        name: "sales".into(),
        kind: Kind::Directory,
        mode: 0o1777,
        owner: "hdfs".into(),
        group: "supergroup".into(),
        mtime_ms: 9,
        replication: 0,
        block_size: 0,
        length: 0,
        block_count: 0,
        last_block_open: false,
        writer: None,
        space_charged: 0,
        quota: Some(QuotaRec {
            namespace_quota: Some(1000),
            space_quota: None,
            namespace_used: 12,
            space_used: 3 << 30,
        }),
        xattrs: BTreeMap::new(),
    }
}

fn block() -> BlockRec {
    BlockRec { block_id: 1 << 40, generation: 1007, length: 65_536, index: 2 }
}

fn concat_op() -> ConcatOp {
    ConcatOp {
        sources: vec![("/.tarn/s3/uploads/b/u/1".into(), 31), ("/.tarn/s3/uploads/b/u/2".into(), 32)],
        dst: "/b/key".into(),
        overwrite: true,
        dst_must_be_absent: false,
        dst_expected_file_id: Some(30),
        create_parent: true,
        mode: 0o644,
        owner: "bob".into(),
        group: "bob".into(),
        xattrs: xattrs(),
        require_dir: Some("/b".into()),
    }
}

/// One of every operation.
fn every_op() -> Vec<Op> {
    let create = CreateOp {
        path: "/a/f".into(),
        overwrite: false,
        expected_file_id: Some(5),
        create_parent: true,
        replication: 3,
        block_size: 1 << 20,
        mode: 0o600,
        owner: "alice".into(),
        group: "alice".into(),
        client_name: "alice/c1".into(),
        xattrs: xattrs(),
        take_over_from: Some("bob/c2".into()),
        allocate_block: true,
    };
    vec![
        Op::Mkdirs { path: "/a/b".into(), mode: 0o755, owner: "alice".into(), group: "g".into() },
        Op::Create(create),
        Op::AddBlock {
            path: "/a/f".into(),
            file_id: 5,
            client_name: "alice/c1".into(),
            previous_block_length: Some(7),
        },
        Op::Complete {
            path: "/a/f".into(),
            file_id: 5,
            client_name: "alice/c1".into(),
            last_block_length: Some(9),
            xattrs: xattrs(),
            publish: Some(concat_op()),
        },
        Op::Delete { path: "/a".into(), recursive: true, expected_file_id: None },
        Op::Rename(RenameOp {
            src: "/a".into(),
            dst: "/b".into(),
            overwrite: true,
            dst_must_be_absent: false,
            dst_expected_file_id: Some(3),
            src_expected_file_id: Some(4),
        }),
        Op::SetReplication { path: "/a/f".into(), replication: 2 },
        Op::SetQuota { path: "/a".into(), namespace_quota: -1, space_quota: 1 << 30 },
        Op::SetAttributes(SetAttributesOp {
            path: "/a".into(),
            mode: Some(0o700),
            owner: Some("carol".into()),
            group: None,
            mtime_ms: Some(11),
            set_xattrs: xattrs(),
            remove_xattrs: vec!["user.old".into()],
            expected_file_id: Some(2),
        }),
        Op::RecoverLease { file_id: 5, holder: Some("alice/c1".into()), last_block_length: None },
        Op::UpdatePipeline { path: "/a/f".into(), file_id: 5, client_name: "alice/c1".into(), block_id: 77 },
        Op::ForgetInvalid { block_ids: vec![1, 2, u64::MAX] },
        Op::SetDecommission { uuid: "dn-uuid-1".into(), on: true },
        Op::Concat(concat_op()),
        Op::As {
            user: "alice".into(),
            op: Box::new(Op::Delete { path: "/x".into(), recursive: false, expected_file_id: Some(8) }),
        },
        Op::AddBlockKey { key: block_key() },
        Op::EnsureSystemDirs,
        Op::ChangeGroup { group: "analysts".into(), add: vec!["alice".into()], remove: vec!["bob".into()] },
        Op::PutInline(PutInlineOp {
            publish: concat_op(),
            replication: 3,
            block_size: 128 << 20,
            length: 12,
            sealed: vec![1, 2, 3, 4, 5],
        }),
        Op::ResealInline { file_id: 9, seal_id: vec![7; 8], sealed: vec![1; 20] },
    ]
}

fn block_key() -> tarn_security::BlockKey {
    tarn_security::BlockKey { id: 3, secret: (0u8..32).collect(), created_ms: 1_765_000_000_000 }
}

fn every_result() -> Vec<OpResult> {
    let p = || "/a/b".to_string();
    vec![
        Ok(OpOutput::Inode(Box::new(file_inode()))),
        Ok(OpOutput::Block(block())),
        Ok(OpOutput::Deleted { deleted: true, files: 12 }),
        Ok(OpOutput::LeaseRecovered { closed: false }),
        Ok(OpOutput::Done),
        Ok(OpOutput::Created(Box::new(file_inode()), block())),
        Ok(OpOutput::Resealed(true)),
        Err(FsError::InvalidPath { path: p(), reason: "empty component".into() }),
        Err(FsError::NotFound { path: p() }),
        Err(FsError::ParentNotFound { path: p() }),
        Err(FsError::AlreadyExists { path: p() }),
        Err(FsError::NotADirectory { path: p() }),
        Err(FsError::IsADirectory { path: p() }),
        Err(FsError::DirectoryNotEmpty { path: p() }),
        Err(FsError::ConditionFailed { path: p(), expected: "5".into(), actual: "6".into() }),
        Err(FsError::LeaseConflict { path: p(), holder: "bob/c".into() }),
        Err(FsError::NotLeaseHolder { path: p(), client: "c".into(), reason: "expired".into() }),
        Err(FsError::QuotaExceeded { path: p(), kind: "space".into(), quota: 10, would_use: 11 }),
        Err(FsError::RenameIntoSelf { src: p(), dst: "/a/b/c".into() }),
        Err(FsError::PermissionDenied { path: p(), user: "eve".into(), action: "write".into() }),
        Err(FsError::InvalidArgument("replication 0".into())),
        Err(FsError::Storage("disk".into())),
    ]
}

fn membership() -> Membership<u64, BasicNode> {
    // Nodes 1-3 vote, node 4 learns.
    let nodes: BTreeMap<u64, BasicNode> = (1..=4u64).map(|i| (i, BasicNode::new(format!("10.0.0.{i}:8020")))).collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry { log_id: log_id(2, index), payload }
}

/// Operations and results format 1 added (format 0 binaries cannot read them).
fn added_in_v1() -> (Vec<(Option<RequestId>, Op)>, Vec<OpResult>) {
    let mkdir = MkdirOp {
        path: "/bucket".into(),
        mode: 0o755,
        owner: "alice".into(),
        group: String::new(),
        xattrs: xattrs(),
        require_dir: Some("/".into()),
    };
    let ops = vec![(Some(RequestId { client_id: 7, call_id: 1 }), Op::MkdirExclusive(mkdir))];
    (ops, vec![Err(FsError::AlreadyOwned { path: "/bucket".into(), owner: "alice".into() })])
}

/// Operations and results added later in format 1 (rolling upgrades): appended variants,
/// so the format's encoding is unchanged and format-1 binaries of before read them as
/// unknown variants (and stop, naming the entry), never as something else.
fn added_in_v1_upgrades() -> (Vec<(Option<RequestId>, Op)>, Vec<OpResult>) {
    (vec![(None, Op::SetClusterFormat { format: 1 })], vec![Err(FsError::UpgradePending { needs: 1, cluster: 0 })])
}

/// Each sample: the file name, the first format that has it, its Debug text and its bytes
/// in the format of this binary.
fn samples() -> Vec<(&'static str, u8, String, Vec<u8>)> {
    fn s<T: serde::Serialize + std::fmt::Debug>(name: &'static str, v: T) -> (&'static str, u8, String, Vec<u8>) {
        (name, 0, format!("{v:?}"), encode(&v))
    }
    fn since<T: serde::Serialize + std::fmt::Debug>(
        version: u8,
        name: &'static str,
        v: T,
    ) -> (&'static str, u8, String, Vec<u8>) {
        (name, version, format!("{v:?}"), encode(&v))
    }
    let (v1_ops, v1_results) = added_in_v1();
    let (up_ops, up_results) = added_in_v1_upgrades();
    let ops: Vec<(Option<RequestId>, Op)> = every_op()
        .into_iter()
        .enumerate()
        .map(|(i, op)| ((i % 2 == 0).then_some(RequestId { client_id: 99, call_id: i as u64 }), op))
        .collect();
    vec![
        s("inode-file", file_inode()),
        s("inode-dir", dir_inode()),
        s("block", block()),
        s("entry-command", entry(10, EntryPayload::Normal(Command { now_ms: 1_765_000_000_000, ops }))),
        s("entry-membership", entry(11, EntryPayload::Membership(membership()))),
        s("entry-blank", entry(12, EntryPayload::Blank)),
        s("results", every_result()),
        s("vote", Vote::<u64>::new_committed(4, 2)),
        s("committed", Some(log_id(4, 99))),
        s("last-purged", log_id(3, 50)),
        s("last-applied", Some(log_id(4, 98))),
        s("membership", StoredMembership::new(Some(log_id(1, 3)), membership())),
        s(
            "snapshot-meta",
            SnapshotMeta::<u64, BasicNode> {
                last_log_id: Some(log_id(4, 98)),
                last_membership: StoredMembership::new(Some(log_id(1, 3)), membership()),
                snapshot_id: "4-98-1765000000000".into(),
            },
        ),
        s("block-keys", vec![block_key(), tarn_security::BlockKey { id: 4, secret: vec![9; 32], created_ms: 5 }]),
        s("decommission", BTreeSet::from(["dn-a".to_string(), "dn-b".to_string()])),
        since(
            1,
            "entry-command-v1",
            entry(13, EntryPayload::Normal(Command { now_ms: 1_765_000_000_001, ops: v1_ops })),
        ),
        since(1, "results-v1", v1_results),
        since(
            1,
            "entry-command-v1-upgrade",
            entry(14, EntryPayload::Normal(Command { now_ms: 1_765_000_000_002, ops: up_ops })),
        ),
        since(1, "results-v1-upgrade", up_results),
    ]
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/records")
}

/// Decodes `bytes` (a record of format `version`) as the sample's type and returns its Debug
/// text and its bytes in the current format.
fn redecode(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    fn d<T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug>(
        name: &str,
        b: &[u8],
    ) -> (String, Vec<u8>) {
        let v: T = decode(name, b).unwrap_or_else(|e| panic!("golden {name}: {e}"));
        (format!("{v:?}"), encode(&v))
    }
    match name {
        "inode-file" | "inode-dir" => d::<Inode>(name, bytes),
        "block" => d::<BlockRec>(name, bytes),
        "entry-command" | "entry-membership" | "entry-blank" | "entry-command-v1" | "entry-command-v1-upgrade" => {
            d::<Entry<TypeConfig>>(name, bytes)
        }
        "results" | "results-v1" | "results-v1-upgrade" => d::<Vec<OpResult>>(name, bytes),
        "vote" => d::<Vote<u64>>(name, bytes),
        "committed" | "last-applied" => d::<Option<LogId<u64>>>(name, bytes),
        "last-purged" => d::<LogId<u64>>(name, bytes),
        "membership" => d::<StoredMembership<u64, BasicNode>>(name, bytes),
        "snapshot-meta" => d::<SnapshotMeta<u64, BasicNode>>(name, bytes),
        "block-keys" => d::<Vec<tarn_security::BlockKey>>(name, bytes),
        "decommission" => d::<BTreeSet<String>>(name, bytes),
        other => panic!("golden file {other} has no decoder here"),
    }
}

#[test]
fn every_golden_record_of_every_format_decodes_to_its_sample() {
    let samples = samples();
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir(golden_root()).expect("golden records").flatten().map(|e| e.path()).collect();
    versions.sort();
    assert!(versions.len() >= 2, "fixtures of format 0 and the current format: {versions:?}");
    for dir in versions {
        let version: u8 = dir.file_name().unwrap().to_string_lossy().trim_start_matches('v').parse().unwrap();
        for (name, _, debug, current) in samples.iter().filter(|s| s.1 <= version) {
            let path = dir.join(format!("{name}.bin"));
            let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Format 0 records were bare bincode; a store converts them once, on opening.
            let bytes = if version == 0 { tarn_namenode::format::upgrade_v0(&golden) } else { golden };
            let (text, again) = redecode(name, &bytes);
            assert_eq!(&text, debug, "{} decodes to something else", path.display());
            assert_eq!(&again, current, "{} does not encode back to the same bytes", path.display());
        }
    }
}

/// Writes the current format's fixtures (see the module comment).
#[test]
#[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
#[allow(clippy::disallowed_methods)] // a tool run by hand, told where to write
fn write_golden_records() {
    let out = PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT names the fixture directory"));
    assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
    std::fs::create_dir_all(&out).unwrap();
    for (name, _, _, bytes) in samples() {
        std::fs::write(out.join(format!("{name}.bin")), bytes).unwrap();
    }
}

/// The name of an operation's variant. A variant added to `Op`, `OpOutput` or `FsError`
/// stops this file compiling until it has a sample (and a golden file) here.
fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Mkdirs { .. } => "Mkdirs",
        Op::Create(_) => "Create",
        Op::AddBlock { .. } => "AddBlock",
        Op::Complete { .. } => "Complete",
        Op::Delete { .. } => "Delete",
        Op::Rename(_) => "Rename",
        Op::SetReplication { .. } => "SetReplication",
        Op::SetQuota { .. } => "SetQuota",
        Op::SetAttributes(_) => "SetAttributes",
        Op::RecoverLease { .. } => "RecoverLease",
        Op::UpdatePipeline { .. } => "UpdatePipeline",
        Op::ForgetInvalid { .. } => "ForgetInvalid",
        Op::SetDecommission { .. } => "SetDecommission",
        Op::Concat(_) => "Concat",
        Op::As { .. } => "As",
        Op::AddBlockKey { .. } => "AddBlockKey",
        Op::EnsureSystemDirs => "EnsureSystemDirs",
        Op::ChangeGroup { .. } => "ChangeGroup",
        Op::PutInline(_) => "PutInline",
        Op::ResealInline { .. } => "ResealInline",
        Op::MkdirExclusive(_) => "MkdirExclusive",
        Op::SetClusterFormat { .. } => "SetClusterFormat",
    }
}

fn result_name(r: &OpResult) -> &'static str {
    match r {
        Ok(OpOutput::Inode(_)) => "Inode",
        Ok(OpOutput::Block(_)) => "Block",
        Ok(OpOutput::Deleted { .. }) => "Deleted",
        Ok(OpOutput::LeaseRecovered { .. }) => "LeaseRecovered",
        Ok(OpOutput::Done) => "Done",
        Ok(OpOutput::Created(..)) => "Created",
        Ok(OpOutput::Resealed(_)) => "Resealed",
        Err(FsError::InvalidPath { .. }) => "InvalidPath",
        Err(FsError::NotFound { .. }) => "NotFound",
        Err(FsError::ParentNotFound { .. }) => "ParentNotFound",
        Err(FsError::AlreadyExists { .. }) => "AlreadyExists",
        Err(FsError::NotADirectory { .. }) => "NotADirectory",
        Err(FsError::IsADirectory { .. }) => "IsADirectory",
        Err(FsError::DirectoryNotEmpty { .. }) => "DirectoryNotEmpty",
        Err(FsError::ConditionFailed { .. }) => "ConditionFailed",
        Err(FsError::LeaseConflict { .. }) => "LeaseConflict",
        Err(FsError::NotLeaseHolder { .. }) => "NotLeaseHolder",
        Err(FsError::QuotaExceeded { .. }) => "QuotaExceeded",
        Err(FsError::RenameIntoSelf { .. }) => "RenameIntoSelf",
        Err(FsError::PermissionDenied { .. }) => "PermissionDenied",
        Err(FsError::InvalidArgument(_)) => "InvalidArgument",
        Err(FsError::Storage(_)) => "Storage",
        Err(FsError::AlreadyOwned { .. }) => "AlreadyOwned",
        Err(FsError::UpgradePending { .. }) => "UpgradePending",
    }
}

#[test]
fn the_samples_hold_every_operation_and_result() {
    let (v1_ops, v1_results) = added_in_v1();
    let (up_ops, up_results) = added_in_v1_upgrades();
    let ops: BTreeSet<&str> =
        every_op().iter().chain(v1_ops.iter().chain(up_ops.iter()).map(|(_, op)| op)).map(op_name).collect();
    let results: BTreeSet<&str> =
        every_result().iter().chain(v1_results.iter()).chain(up_results.iter()).map(result_name).collect();
    // As many names as the matches above have arms.
    assert_eq!(ops.len(), 22, "{ops:?}");
    assert_eq!(results.len(), 24, "{results:?}");
}

/// A snapshot of format 0 (`TARNSNP1`, bare bincode records), as a leader still on the
/// old binary sends it: a state machine on a new store loads it, converting its records.
#[test]
fn a_format_0_snapshot_is_loaded_with_its_records_converted() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/v0/nn/snapshots");
    let tmp = tempfile::tempdir().unwrap();
    let snapshots = tmp.path().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    for e in std::fs::read_dir(&fixture).unwrap().flatten() {
        std::fs::copy(e.path(), snapshots.join(e.file_name())).unwrap();
    }
    let snap =
        std::fs::read_dir(&snapshots).unwrap().flatten().find(|e| e.file_name().to_string_lossy().ends_with(".snap"));
    assert_eq!(&std::fs::read(snap.unwrap().path()).unwrap()[..8], b"TARNSNP1", "the fixture is a format-0 snapshot");
    let db = tarn_namenode::store::open_db(&tmp.path().join("db"), tarn_namenode::store::DbMemory::default()).unwrap();
    // The new store is behind the current snapshot: opening loads it.
    let _sm = tarn_namenode::store::StateMachine::open(db.clone(), snapshots, Default::default()).unwrap();
    let view = tarn_namenode::kv::SnapView::new(&db);
    let ns = tarn_namenode::namespace::Namespace::new(&view, 0);
    let big = ns.resolve("/golden/sales/big.bin").unwrap().expect("a file of the snapshot");
    assert_eq!((big.inode.length, big.inode.block_count), (300_000, 3));
    let small =
        ns.resolve("/golden/sales/small.txt").unwrap().expect("the small file, renamed only after the snapshot");
    assert_eq!(small.inode.length, 12);
    let (applied, _) = tarn_namenode::store::state_digest(&db).unwrap();
    assert_eq!(applied.map(|l| l.index), Some(15), "last applied, converted like every versioned value");
}

/// A snapshot built while the cluster is at format 0 (an upgrade not finalized) is a
/// format-0 snapshot, as an old follower needs it, and loads back to the same state.
#[tokio::test]
async fn a_snapshot_built_at_cluster_format_0_is_format_0_and_loads_back_the_same() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/v0/nn/snapshots");
    let tmp = tempfile::tempdir().unwrap();
    let open = |name: &str, snapshots: &Path| {
        let db = tarn_namenode::store::open_db(&tmp.path().join(name), Default::default()).unwrap();
        let sm = tarn_namenode::store::StateMachine::open(db.clone(), snapshots.to_path_buf(), Default::default());
        (db, sm.unwrap())
    };
    let old = tmp.path().join("old-snapshots");
    std::fs::create_dir_all(&old).unwrap();
    for e in std::fs::read_dir(&fixture).unwrap().flatten() {
        std::fs::copy(e.path(), old.join(e.file_name())).unwrap();
    }
    let (db1, mut sm1) = open("db1", &old);
    assert_eq!(tarn_namenode::store::cluster_format(&db1).unwrap(), 0, "a group of the old binary");
    let snap_of = |dir: &Path| {
        let name = std::fs::read_to_string(dir.join("current")).unwrap();
        std::fs::read(dir.join(format!("{}.snap", name.trim()))).unwrap()
    };
    let written_by_old_binary = snap_of(&fixture);
    let built = sm1.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let bytes = snap_of(&old);
    // The same state, so the very bytes the old binary wrote: records, count, checksum.
    assert_eq!(&bytes[..8], b"TARNSNP1");
    assert!(bytes == written_by_old_binary, "a format-0 snapshot differs from the old binary's");
    // A new node receives it: same state, record for record.
    let new = tmp.path().join("new-snapshots");
    std::fs::create_dir_all(&new).unwrap();
    for e in std::fs::read_dir(&old).unwrap().flatten() {
        std::fs::copy(e.path(), new.join(e.file_name())).unwrap();
    }
    let (db2, _sm2) = open("db2", &new);
    assert_eq!(
        tarn_namenode::store::state_digest(&db2).unwrap(),
        tarn_namenode::store::state_digest(&db1).unwrap(),
        "snapshot {} loads back to the state it was built from",
        built.meta.snapshot_id
    );
}
