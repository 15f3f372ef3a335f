//! Tarn through the `object_store` API (what DataFusion and other object-store users call):
//! atomic and conditional puts, ranged and conditional gets, listings, multipart uploads
//! (parts in call order, abort leaves nothing), copy, rename and delete.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tarn_client::store::TarnStore;
use tarn_client::NamenodeClient;
use tarn_tests::{block_tuning, Cluster};

/// Where uploads are staged until they complete (the namenode's staging directory).
const STAGING: &str = "/.tarn/tmp/";

fn bytes(n: usize, seed: u8) -> Bytes {
    Bytes::from((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

async fn with_store<F, Fut>(f: F)
where
    F: FnOnce(TarnStore, Arc<NamenodeClient>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut cl = Cluster::start(1, block_tuning).await;
    cl.start_datanodes(2).await;
    let nn = Arc::new(cl.client());
    let store = TarnStore::with_root(nn.clone(), "/warehouse");
    tokio::time::timeout(Duration::from_secs(60), f(store, nn)).await.expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_ranges_and_conditions() {
    with_store(|s, _| async move {
        let p = Path::from("t/part-0.parquet");
        let data = bytes(3 << 20, 1);
        let put = s.put(&p, PutPayload::from(data.clone())).await.unwrap();
        let got = s.get(&p).await.unwrap();
        assert_eq!(got.meta.size, data.len() as u64);
        assert_eq!(got.meta.e_tag, put.e_tag);
        assert_eq!(got.bytes().await.unwrap(), data);
        // Ranges: bounded, from an offset, the last n bytes, and past the end.
        assert_eq!(s.get_range(&p, 10..20).await.unwrap(), data.slice(10..20));
        let r = GetOptions { range: Some(GetRange::Offset((3 << 20) - 5)), ..Default::default() };
        assert_eq!(s.get_opts(&p, r).await.unwrap().bytes().await.unwrap(), data.slice((3 << 20) - 5..));
        let r = GetOptions { range: Some(GetRange::Suffix(7)), ..Default::default() };
        assert_eq!(s.get_opts(&p, r).await.unwrap().bytes().await.unwrap(), data.slice(data.len() - 7..));
        let r = GetOptions { range: Some(GetRange::Offset(1 << 30)), ..Default::default() };
        assert!(s.get_opts(&p, r).await.is_err(), "a range past the end is refused");
        let ranges = s.get_ranges(&p, &[0..1, (1 << 20) - 1..(1 << 20) + 1]).await.unwrap();
        assert_eq!(ranges, vec![data.slice(0..1), data.slice((1 << 20) - 1..(1 << 20) + 1)]);
        // Out of order, far apart (read apart) and near (read as one), each its own bytes.
        let end = 3u64 << 20;
        let want = [end - 10..end, 5..9, 2 << 20..(2 << 20) + 3, 7..12];
        let got = s.get_ranges(&p, &want).await.unwrap();
        let want: Vec<Bytes> = want.iter().map(|r| data.slice(r.start as usize..r.end as usize)).collect();
        assert_eq!(got, want);
        assert!(s.get_ranges(&p, &[0..1, 0..end + 1]).await.is_err(), "a range past the end is refused");
        let missing = s.get_ranges(&Path::from("t/missing"), &[0..1, 2..3]).await;
        assert!(matches!(missing, Err(object_store::Error::NotFound { .. })), "{missing:?}");
        let head = s.head(&p).await.unwrap();
        assert_eq!((head.size, head.location.clone()), (data.len() as u64, p.clone()));
        // Conditional gets.
        let etag = head.e_tag.clone().unwrap();
        let o = GetOptions { if_none_match: Some(etag.clone()), ..Default::default() };
        assert!(matches!(s.get_opts(&p, o).await, Err(object_store::Error::NotModified { .. })));
        let o = GetOptions { if_match: Some("nope".into()), ..Default::default() };
        assert!(matches!(s.get_opts(&p, o).await, Err(object_store::Error::Precondition { .. })));
        // Conditional puts: create only if absent; update only the version read.
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let e = s.put_opts(&p, PutPayload::from_static(b"x"), create.clone()).await.unwrap_err();
        assert!(matches!(e, object_store::Error::AlreadyExists { .. }), "{e}");
        let v1 = UpdateVersion { e_tag: head.e_tag.clone(), version: head.version.clone() };
        let upd = PutOptions { mode: PutMode::Update(v1.clone()), ..Default::default() };
        let put2 = s.put_opts(&p, PutPayload::from_static(b"second"), upd.clone()).await.unwrap();
        assert_ne!(put2.e_tag, put.e_tag);
        let e = s.put_opts(&p, PutPayload::from_static(b"third"), upd).await.unwrap_err();
        assert!(matches!(e, object_store::Error::Precondition { .. }), "stale version: {e}");
        assert_eq!(s.get(&p).await.unwrap().bytes().await.unwrap(), Bytes::from_static(b"second"));
        // Missing objects.
        let e = s.get(&Path::from("t/missing")).await.unwrap_err();
        assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
        s.put(&Path::from("t/empty"), PutPayload::new()).await.unwrap();
        assert_eq!(s.get(&Path::from("t/empty")).await.unwrap().bytes().await.unwrap().len(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_multipart_copy_rename_delete() {
    with_store(|s, nn| async move {
        for k in ["a/1", "a/2", "a/b/3", "a+b/4", "c"] {
            s.put(&Path::from(k), PutPayload::from(bytes(100, 2))).await.unwrap();
        }
        let mut all: Vec<String> = s.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        all.sort();
        assert_eq!(all, vec!["a+b/4", "a/1", "a/2", "a/b/3", "c"], "staging files never show");
        let mut under_a: Vec<String> =
            s.list(Some(&Path::from("a"))).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        under_a.sort();
        assert_eq!(under_a, vec!["a/1", "a/2", "a/b/3"], "a segment prefix, not a string prefix");
        let l = s.list_with_delimiter(Some(&Path::from("a"))).await.unwrap();
        assert_eq!(l.common_prefixes, vec![Path::from("a/b")]);
        let mut objs: Vec<String> = l.objects.iter().map(|o| o.location.to_string()).collect();
        objs.sort();
        assert_eq!(objs, vec!["a/1", "a/2"]);

        // Multipart: parts land in the order put_part was called, whatever order they finish.
        let mut up = s.put_multipart(&Path::from("m/big")).await.unwrap();
        let parts: Vec<Bytes> = (0..3).map(|i| bytes((1 << 20) + i * 1000, i as u8)).collect();
        let futs: Vec<_> = parts.iter().map(|p| up.put_part(PutPayload::from(p.clone()))).collect();
        for f in futs.into_iter().rev() {
            f.await.unwrap();
        }
        assert!(s.head(&Path::from("m/big")).await.is_err(), "invisible until complete");
        up.complete().await.unwrap();
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(s.get(&Path::from("m/big")).await.unwrap().bytes().await.unwrap(), want);
        let mut aborted = s.put_multipart(&Path::from("m/aborted")).await.unwrap();
        aborted.put_part(PutPayload::from(bytes(1000, 9))).await.unwrap();
        let staged = || async { nn.list_recursive_all(STAGING, false).await.unwrap() };
        assert_eq!(staged().await.len(), 1, "the upload is staged");
        aborted.abort().await.unwrap();
        assert!(s.head(&Path::from("m/aborted")).await.is_err());
        // Abort removes the staged bytes, not only the name the upload would have had.
        assert_eq!(staged().await, vec![], "an aborted upload leaves nothing staged");

        // Copy, rename, delete.
        s.copy(&Path::from("c"), &Path::from("d/c2")).await.unwrap();
        assert_eq!(s.get(&Path::from("d/c2")).await.unwrap().bytes().await.unwrap(), bytes(100, 2));
        let e = s.copy_if_not_exists(&Path::from("c"), &Path::from("d/c2")).await.unwrap_err();
        assert!(matches!(e, object_store::Error::AlreadyExists { .. }), "{e}");
        s.rename(&Path::from("d/c2"), &Path::from("e/c3")).await.unwrap();
        assert!(s.head(&Path::from("d/c2")).await.is_err());
        let e = s.rename_if_not_exists(&Path::from("c"), &Path::from("e/c3")).await.unwrap_err();
        assert!(matches!(e, object_store::Error::AlreadyExists { .. }), "{e}");
        s.delete(&Path::from("e/c3")).await.unwrap();
        s.delete(&Path::from("e/c3")).await.unwrap();
        assert!(matches!(s.head(&Path::from("e/c3")).await, Err(object_store::Error::NotFound { .. })));
    })
    .await;
}
