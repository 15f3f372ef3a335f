//! The store's cases, a module of store.rs (replicas in the clear) and of store_sealed.rs
//! (encrypted at rest); each defines the `master()` its store opens with.

use std::path::PathBuf;
use std::sync::Arc;

use tarn_datanode::{BlockStore, DatanodeError, ReplicaState, CHUNK_BYTES};

use super::master;

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn open(dirs: &[PathBuf]) -> Arc<BlockStore> {
    BlockStore::open(dirs, 0, master()).expect("open store")
}

/// Writes `data` as block `id` in pieces of `piece` bytes and finalizes it.
pub fn put(store: &Arc<BlockStore>, id: u64, data: &[u8], piece: usize) {
    let mut w = store.create(id, 1000 + id, data.len() as u64).expect("create");
    for p in data.chunks(piece.max(1)) {
        w.write(p).expect("write");
    }
    let info = w.finalize().expect("finalize");
    assert_eq!(info.length, data.len() as u64);
    assert_eq!(info.state, ReplicaState::Finalized);
}

pub fn data_file(dir: &std::path::Path, id: u64) -> PathBuf {
    dir.join("tarn-datanode/finalized").join(format!("{:02x}", (id >> 8) & 0xff)).join(format!("blk_{id}"))
}

#[test]
fn round_trips_at_chunk_edges_and_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().join("a"), tmp.path().join("b")];
    let sizes = [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7];
    let store = open(&dirs);
    for (i, &n) in sizes.iter().enumerate() {
        put(&store, i as u64 + 1, &pattern(n, i as u64), 10_000 + i * 777);
    }
    drop(store);
    let store = open(&dirs);
    let report = store.report();
    assert_eq!(report.len(), sizes.len());
    for (i, &n) in sizes.iter().enumerate() {
        let id = i as u64 + 1;
        let want = pattern(n, i as u64);
        let r = store.open_reader(id, 1000 + id).expect("reader");
        assert_eq!(r.length(), n as u64);
        assert_eq!(r.read_at(0, n).unwrap(), want, "block of {n} bytes");
        // Ranges that start and end inside chunks and across chunk edges.
        for (off, len) in [(1usize, 3usize), (CHUNK_BYTES - 2, 5), (n / 2, n / 3), (n.saturating_sub(1), 1)] {
            if off + len <= n {
                assert_eq!(r.read_at(off as u64, len).unwrap(), want[off..off + len], "{off}+{len} of {n}");
            }
        }
        let past = r.read_at(n as u64, 1).unwrap_err();
        assert!(matches!(past, DatanodeError::OutOfRange { .. }), "{past}");
    }
    // A newer generation stamp than the replica's is refused.
    let stale = store.open_reader(1, 5000).err().expect("stale generation refused");
    assert!(matches!(stale, DatanodeError::StaleGeneration { .. }), "{stale}");
}

#[test]
fn flipped_byte_is_found_only_in_its_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().to_path_buf()];
    let store = open(&dirs);
    let data = pattern(4 * CHUNK_BYTES, 9);
    put(&store, 7, &data, 1 << 20);
    let f = data_file(tmp.path(), 7);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[2 * CHUNK_BYTES + 10] ^= 0x40;
    std::fs::write(&f, &bytes).unwrap();
    let r = store.open_reader(7, 0).unwrap();
    let e = r.read_at(0, data.len()).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("chunk 2"), "{e}");
    assert_eq!(r.read_at(0, 2 * CHUNK_BYTES).unwrap(), data[..2 * CHUNK_BYTES]);
    assert_eq!(r.read_at(3 * CHUNK_BYTES as u64, CHUNK_BYTES).unwrap(), data[3 * CHUNK_BYTES..]);
}

#[test]
fn truncated_or_deleted_block_file_is_corrupt_not_short() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&[tmp.path().to_path_buf()]);
    put(&store, 1, &pattern(CHUNK_BYTES + 100, 1), 4096);
    put(&store, 2, &pattern(100, 2), 4096);
    let f1 = std::fs::OpenOptions::new().write(true).open(data_file(tmp.path(), 1)).unwrap();
    f1.set_len(CHUNK_BYTES as u64).unwrap();
    std::fs::remove_file(data_file(tmp.path(), 2)).unwrap();
    for id in [1, 2] {
        let e = store.open_reader(id, 0).err().expect("corrupt replica refused");
        assert!(e.is_corruption(), "block {id}: {e}");
    }
    // At the next start the damaged replicas are not reported (the namenode restores them).
    drop(store);
    let store = open(&[tmp.path().to_path_buf()]);
    assert!(store.report().is_empty(), "{:?}", store.report());
}

#[test]
fn unfinished_replica_is_recovered_and_continued() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().to_path_buf()];
    let store = open(&dirs);
    let data = pattern(3 * CHUNK_BYTES, 3);
    let half = 2 * CHUNK_BYTES + CHUNK_BYTES / 2;
    let mut w = store.create(5, 10, 1 << 20).unwrap();
    w.write(&data[..half]).unwrap();
    w.flush(true).unwrap();
    drop(w);
    // A crash after more data reached the file but before its checksum did.
    let rbw = tmp.path().join("tarn-datanode/rbw/blk_5");
    let mut f = std::fs::OpenOptions::new().append(true).open(&rbw).unwrap();
    std::io::Write::write_all(&mut f, &[0xee; 1000]).unwrap();
    drop(f);
    drop(store);

    let store = open(&dirs);
    let info = store.get(5).expect("replica found");
    assert_eq!(info.state, ReplicaState::BeingWritten);
    assert!(info.length <= half as u64 && info.length >= 2 * CHUNK_BYTES as u64, "{info:?}");
    let kept = info.length as usize;
    assert_eq!(store.open_reader(5, 10).unwrap().read_at(0, kept).unwrap(), data[..kept]);

    // Pipeline recovery: a new generation stamp, cut back to what every survivor holds.
    let cut = 2 * CHUNK_BYTES + 100;
    let cut = cut.min(kept);
    let mut w = store.recover(5, 11, cut as u64).unwrap();
    w.write(&data[cut..]).unwrap();
    let info = w.finalize().unwrap();
    assert_eq!((info.gen_stamp, info.length), (11, data.len() as u64));
    drop(store);
    let store = open(&dirs);
    assert_eq!(store.open_reader(5, 11).unwrap().read_at(0, data.len()).unwrap(), data);
}

#[test]
fn full_disk_refuses_new_replicas_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlockStore::open(&[tmp.path().to_path_buf()], u64::MAX / 4, master()).unwrap();
    assert!(!store.has_room_for(1));
    let e = store.create(1, 1, 128 << 20).err().expect("refused");
    assert!(matches!(e, DatanodeError::DiskFull { block_id: 1, .. }), "{e}");
    assert!(e.to_string().contains("bytes free"), "{e}");
    assert!(store.report().is_empty());
}

#[test]
fn second_replica_of_a_block_is_refused_and_delete_removes_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&[tmp.path().to_path_buf()]);
    put(&store, 3, b"abc", 1);
    let e = store.create(3, 5, 3).err().expect("duplicate refused");
    assert!(matches!(e, DatanodeError::ReplicaExists { .. }), "{e}");
    assert!(store.delete(3).unwrap().is_some());
    assert!(!data_file(tmp.path(), 3).exists());
    assert!(matches!(store.open_reader(3, 0).err(), Some(DatanodeError::ReplicaNotFound { .. })));
}

#[test]
fn finalized_replica_reopened_by_a_pipeline_that_failed_while_closing() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().to_path_buf()];
    let store = open(&dirs);
    let data = pattern(2 * CHUNK_BYTES + 300, 4);
    put(&store, 9, &data, 50_000);
    // Recovery cuts it back to what every node acknowledged and carries on.
    let keep = CHUNK_BYTES + 10;
    let mut w = store.recover(9, 2000, keep as u64).unwrap();
    assert_eq!(store.get(9).unwrap().state, ReplicaState::BeingWritten);
    w.write(&data[keep..]).unwrap();
    let info = w.finalize().unwrap();
    assert_eq!((info.gen_stamp, info.length), (2000, data.len() as u64));
    drop(store);
    let store = open(&dirs);
    assert_eq!(store.get(9).unwrap().state, ReplicaState::Finalized);
    assert_eq!(store.open_reader(9, 2000).unwrap().read_at(0, data.len()).unwrap(), data);
}

#[test]
fn crash_after_hsync_mid_chunk_keeps_every_synced_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![tmp.path().to_path_buf()];
    let store = open(&dirs);
    let data = pattern(2 * CHUNK_BYTES, 12);
    let synced = CHUNK_BYTES + CHUNK_BYTES / 5;
    let mut w = store.create(8, 3, 1 << 20).unwrap();
    w.write(&data[..synced]).unwrap();
    w.flush(true).unwrap();
    // More bytes reach the file, but the crash comes before their checksum does.
    w.write(&data[synced..synced + 1000]).unwrap();
    std::mem::forget(w);
    drop(store);
    let store = open(&dirs);
    let info = store.get(8).expect("replica found");
    assert_eq!(info.length, synced as u64, "the hsync'd length survives, nothing less");
    assert_eq!(store.open_reader(8, 3).unwrap().read_at(0, synced).unwrap(), data[..synced]);
}
