//! Golden files of what the gateway keeps in the namespace: an object's metadata
//! (`s3.meta`), a multipart upload's description, an access key's record with its sealed
//! secret, and a bucket's grants (`s3.access`), all JSON in extended attributes. Written by
//! format 0's binary under `tests/golden/v0/` and never rewritten: each must decode, encode
//! back to the same bytes, and the secret must open with the fixture's master key.
//! (`write_gateway_goldens` writes a new set; run by hand with `TARN_GOLDEN_OUT`.)

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;

use crate::keys::{open_secret, seal_secret, BucketAccess, KeyRecord, MasterKey};
use crate::s3::{ObjMeta, UploadInfo};

const SECRET: &str = "golden/secret/key/0123456789abcdefghijklmn";

fn meta() -> ObjMeta {
    ObjMeta {
        etag: "9b2cf535f27731c974343645a3985328".into(),
        content_type: Some("application/vnd.apache.parquet".into()),
        content_encoding: Some("gzip".into()),
        content_disposition: Some("attachment".into()),
        content_language: Some("en".into()),
        cache_control: Some("no-cache".into()),
        metadata: BTreeMap::from([("team".into(), "sales".into())]),
        checksums: BTreeMap::from([("CRC32C".into(), "yZRlqg==".into())]),
        parts: Some(3),
        part_sizes: Vec::new(),
        expires_ms: None,
    }
}

/// An object's metadata with its part sizes and Expires (kept since 2026-12-08).
fn meta_with_parts() -> ObjMeta {
    ObjMeta { part_sizes: vec![5 << 20, 5 << 20, 3], expires_ms: Some(1_893_553_445_000), ..meta() }
}

/// `tests/golden/parts-v1/`: metadata written since part sizes and Expires are kept.
#[test]
fn the_part_sizes_golden_record_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/parts-v1");
    let m: ObjMeta = round_trip_in(&dir, "obj-meta.json");
    assert_eq!(format!("{m:?}"), format!("{:?}", meta_with_parts()));
}

#[test]
#[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
#[allow(clippy::disallowed_methods)] // a tool run by hand, told where to write
fn write_part_sizes_goldens() {
    let out = std::path::PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT"));
    assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("obj-meta.json"), serde_json::to_vec(&meta_with_parts()).unwrap()).unwrap();
}

fn tags() -> crate::s3::Tags {
    BTreeMap::from([("team".into(), "sales".into()), ("cost center".into(), "a/b:c@d.e_f+g=h-i".into())])
}

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v0")
}

fn read(name: &str) -> Vec<u8> {
    read_in(&dir(), name)
}

fn read_in(dir: &Path, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Decodes `bytes` as `T` and checks it encodes back to exactly the same bytes.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str) -> T {
    round_trip_in(&dir(), name)
}

fn round_trip_in<T: serde::de::DeserializeOwned + serde::Serialize>(dir: &Path, name: &str) -> T {
    let bytes = read_in(dir, name);
    let v: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("golden {name}: {e}"));
    assert_eq!(serde_json::to_vec(&v).unwrap(), bytes, "golden {name} encodes back to other bytes");
    v
}

#[test]
fn the_gateways_golden_records_decode() {
    let m: ObjMeta = round_trip("obj-meta.json");
    assert_eq!(format!("{m:?}"), format!("{:?}", meta()));
    let u: UploadInfo = round_trip("upload-info.json");
    assert_eq!((u.key.as_str(), u.initiated_ms, format!("{:?}", u.meta)), ("a/b.parquet", 7, format!("{:?}", meta())));
    let a: BucketAccess = round_trip("bucket-access.json");
    assert!(a.can_write("AKGOLDEN") && a.can_read("AKREADER") && !a.can_write("AKREADER") && a.anonymous_read);
    let k: KeyRecord = round_trip("key-record.json");
    assert_eq!((k.access_key.as_str(), k.user.as_str(), k.admin), ("AKGOLDEN", "alice", false));
    let master = MasterKey::parse(std::str::from_utf8(&read("master.key")).unwrap()).unwrap();
    let sealed = serde_json::from_slice::<serde_json::Value>(&read("key-record.json")).unwrap()["sealed"]
        .as_str()
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
        .unwrap();
    assert_eq!(open_secret(&master, "AKGOLDEN", &sealed).unwrap(), SECRET);
}

/// Tags (format 1 of their records, 2026-12-08): an object's `s3.tags`, a bucket's
/// `s3.config`, and a multipart upload's description with tags, under `tests/golden/tags-v1/`.
#[test]
fn the_tagging_golden_records_decode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tags-v1");
    let t: crate::s3::ObjectTags = round_trip_in(&dir, "object-tags.json");
    assert_eq!((t.v, t.tags), (1, tags()));
    let c: crate::s3::BucketConfig = round_trip_in(&dir, "bucket-config.json");
    assert_eq!((c.v, c.tags), (1, tags()));
    let u: UploadInfo = round_trip_in(&dir, "upload-info.json");
    assert_eq!((u.key.as_str(), u.tags), ("a/b.parquet", tags()));
}

fn cors_rules() -> Vec<crate::s3::CorsRule> {
    vec![crate::s3::CorsRule {
        id: Some("app".into()),
        allowed_origins: vec!["https://*.example.com".into()],
        allowed_methods: vec!["GET".into(), "PUT".into()],
        allowed_headers: vec!["content-*".into()],
        expose_headers: vec!["ETag".into()],
        max_age_seconds: Some(600),
    }]
}

/// A bucket configuration with CORS rules (format 1, 2026-12-08), under
/// `tests/golden/cors-v1/`.
#[test]
fn the_cors_golden_record_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cors-v1");
    let c: crate::s3::BucketConfig = round_trip_in(&dir, "bucket-config.json");
    assert_eq!((c.v, c.tags, c.cors), (1, tags(), cors_rules()));
}

#[test]
#[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
#[allow(clippy::disallowed_methods)] // a tool run by hand, told where to write
fn write_cors_goldens() {
    let out = std::path::PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT"));
    assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
    std::fs::create_dir_all(&out).unwrap();
    let c = crate::s3::BucketConfig { v: 1, tags: tags(), cors: cors_rules() };
    std::fs::write(out.join("bucket-config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
}

#[test]
#[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
#[allow(clippy::disallowed_methods)] // a tool run by hand, told where to write
fn write_tagging_goldens() {
    let out = std::path::PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT"));
    assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
    std::fs::create_dir_all(&out).unwrap();
    let w = |name: &str, bytes: Vec<u8>| std::fs::write(out.join(name), bytes).unwrap();
    w("object-tags.json", serde_json::to_vec(&crate::s3::ObjectTags { v: 1, tags: tags() }).unwrap());
    let config = crate::s3::BucketConfig { v: 1, tags: tags(), cors: Vec::new() };
    w("bucket-config.json", serde_json::to_vec(&config).unwrap());
    w(
        "upload-info.json",
        serde_json::to_vec(&UploadInfo { key: "a/b.parquet".into(), initiated_ms: 7, meta: meta(), tags: tags() })
            .unwrap(),
    );
}

#[test]
#[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
#[allow(clippy::disallowed_methods)] // a tool run by hand, told where to write
fn write_gateway_goldens() {
    let out = std::path::PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT"));
    assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
    std::fs::create_dir_all(&out).unwrap();
    let master = MasterKey::create(&out.join("master.key")).unwrap();
    let w = |name: &str, bytes: Vec<u8>| std::fs::write(out.join(name), bytes).unwrap();
    w("obj-meta.json", serde_json::to_vec(&meta()).unwrap());
    let info = UploadInfo { key: "a/b.parquet".into(), initiated_ms: 7, meta: meta(), tags: Default::default() };
    w("upload-info.json", serde_json::to_vec(&info).unwrap());
    let access = BucketAccess {
        grants: BTreeMap::from([("AKGOLDEN".into(), "rw".into()), ("AKREADER".into(), "r".into())]),
        anonymous_read: true,
    };
    w("bucket-access.json", serde_json::to_vec(&access).unwrap());
    let sealed = base64::engine::general_purpose::STANDARD.encode(seal_secret(&master, "AKGOLDEN", SECRET));
    let rec = serde_json::json!({
        "access_key": "AKGOLDEN", "user": "alice", "admin": false, "created_ms": 1_765_000_000_000u64, "sealed": sealed,
    });
    // Through KeyRecord, so the bytes are the ones the gateway writes.
    let rec: KeyRecord = serde_json::from_value(rec).unwrap();
    w("key-record.json", serde_json::to_vec(&rec).unwrap());
}
