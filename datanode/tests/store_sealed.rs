//! The replica store's cases (`common/store_cases.rs`) with encryption at rest on, and
//! what only encryption adds: no plaintext on disk, tampering found by the tag, another
//! master key refused.

fn master() -> Option<tarn_security::MasterKey> {
    Some(tarn_security::MasterKey::parse(&"ab".repeat(32)).unwrap())
}

#[path = "common/store_cases.rs"]
mod cases;

use std::path::PathBuf;

use cases::{data_file, open, pattern, put};
use tarn_datanode::{BlockStore, DatanodeError, CHUNK_BYTES};

fn meta_file(dir: &std::path::Path, id: u64) -> PathBuf {
    let d = data_file(dir, id);
    d.with_file_name(format!("blk_{id}.meta"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_reaches_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&[tmp.path().to_path_buf()]);
    let marker = b"TARN-PLAINTEXT-MARKER-0123456789";
    let data: Vec<u8> = marker.iter().copied().cycle().take(3 * CHUNK_BYTES + 777).collect();
    // Whole chunks from one write, a partial chunk flushed and then grown, and a tail.
    let mut w = store.create(7, 1007, data.len() as u64).unwrap();
    w.write(&data[..CHUNK_BYTES + 100]).unwrap();
    w.flush(true).unwrap();
    w.write(&data[CHUNK_BYTES + 100..]).unwrap();
    w.finalize().unwrap();
    let r = store.open_reader(7, 0).unwrap();
    assert_eq!(r.read_at(0, data.len()).unwrap(), data);
    assert_eq!(r.read_at(CHUNK_BYTES as u64 + 50, 100).unwrap(), data[CHUNK_BYTES + 50..CHUNK_BYTES + 150]);
    for f in [data_file(tmp.path(), 7), meta_file(tmp.path(), 7)] {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!contains(&bytes, &marker[..16]), "{} holds plaintext", f.display());
    }
}

#[test]
fn tampering_is_found_even_with_a_matching_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&[tmp.path().to_path_buf()]);
    let data = pattern(3 * CHUNK_BYTES, 5);
    put(&store, 9, &data, CHUNK_BYTES);
    // Flip a byte of chunk 1 and write the CRC of the changed bytes into its record, as an
    // attacker (not bit rot) would: only the tag can tell.
    let df = data_file(tmp.path(), 9);
    let mut bytes = std::fs::read(&df).unwrap();
    bytes[CHUNK_BYTES + 10] ^= 0x40;
    std::fs::write(&df, &bytes).unwrap();
    let crc = crc32c::crc32c(&bytes[CHUNK_BYTES..2 * CHUNK_BYTES]);
    let mf = meta_file(tmp.path(), 9);
    let mut meta = std::fs::read(&mf).unwrap();
    let rec = 128 + 28;
    meta[rec..rec + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&mf, &meta).unwrap();
    let r = store.open_reader(9, 0).unwrap();
    assert_eq!(r.read_at(0, 100).unwrap(), data[..100], "other chunks still read");
    let e = r.read_at(CHUNK_BYTES as u64, 10).unwrap_err();
    assert!(matches!(e, DatanodeError::Corrupt { .. }) && e.to_string().contains("authentication"), "{e}");
}

#[test]
fn another_master_key_is_refused_not_taken_for_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [tmp.path().to_path_buf()];
    let store = open(&dirs);
    put(&store, 11, &pattern(1000, 3), 1000);
    drop(store);
    let other = tarn_security::MasterKey::parse(&"cd".repeat(32)).unwrap();
    let e = BlockStore::open(&dirs, 0, Some(other.clone())).err().expect("another key must be refused");
    let msg = e.to_string();
    assert!(msg.contains("wrong master key") && msg.contains(&other.id_hex()), "{msg}");
    assert!(msg.contains(&master().unwrap().id_hex()), "names the key the data needs: {msg}");
    assert!(BlockStore::open(&dirs, 0, None).is_err(), "no key at all must be refused too");
    // The replica is untouched: with the right key it reads back.
    let store = open(&dirs);
    assert_eq!(store.open_reader(11, 0).unwrap().read_at(0, 1000).unwrap(), pattern(1000, 3));
}
