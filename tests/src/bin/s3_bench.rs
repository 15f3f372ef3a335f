//! `s3-bench`: one load generator for every S3 store compared in BENCHMARKS.md (Tarn,
//! Garage, s3s-fs), so each is measured the same way: throughput of large-object PUT and
//! GET, and ops/s of 4 KiB PUT, GET, HEAD and LIST at several client counts. Built on
//! `object_store`'s S3 client (Rust, async): at 64 clients it uses a fraction of a core,
//! where boto3 tops out near 600 small ops/s on this machine.
//!
//! ```sh
//! s3-bench --endpoint https://127.0.0.1:9000 --ca tarn-data/tls/ca.pem \
//!     --access-key TK... --secret-key ... --bucket bench --label tarn
//! ```
//! Prints a table and `RESULT <label> <metric> <value>` lines (scripts/s3-bench reads them).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// PEM file of the CA (or self-signed certificate) the endpoint's certificate is from.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// An existing bucket the key may write.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Name of the store in the output.
    #[arg(long, default_value = "store")]
    label: String,
    #[arg(long, default_value_t = 64)]
    large_mib: usize,
    #[arg(long, default_value_t = 16)]
    large_count: usize,
    /// Large objects in flight at once.
    #[arg(long, default_value_t = 4)]
    large_clients: usize,
    /// Client counts for the 4 KiB operations.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// The 4 KiB operations to measure (PUT always runs: the others read what it wrote).
    #[arg(long, value_delimiter = ',', default_value = "put,get,head,list", value_parser = ["put", "get", "head", "list"])]
    ops: Vec<String>,
    /// Seconds per small-operation measurement.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

fn store(a: &Args) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let mut opts = ClientOptions::new().with_allow_http(true).with_timeout(Duration::from_secs(120));
    if let Some(ca) = &a.ca {
        let pem = std::fs::read(ca)?;
        opts = opts.with_root_certificate(object_store::Certificate::from_pem(&pem)?);
    }
    let s = AmazonS3Builder::new()
        .with_endpoint(&a.endpoint)
        .with_bucket_name(&a.bucket)
        .with_access_key_id(&a.access_key)
        .with_secret_access_key(&a.secret_key)
        .with_region(&a.region)
        .with_virtual_hosted_style_request(false)
        // Over TLS, as SDKs do: the body is not hashed for the signature.
        .with_unsigned_payload(true)
        .with_client_options(opts)
        .build()?;
    Ok(Arc::new(s))
}

fn report(label: &str, metric: &str, value: f64, unit: &str) {
    println!("{metric:<28} {value:>12.1} {unit}");
    println!("RESULT {label} {metric} {value:.1}");
}

/// Runs `op(worker, i)` on `clients` workers for `secs`; returns ops/s.
async fn run_for<F, Fut>(clients: usize, secs: f64, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                op(w, i).await?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(i)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let s = store(&a)?;
    let label = a.label.clone();
    let run = format!("run-{:x}", rand::random::<u32>());
    println!("== {label}: {}", a.endpoint);

    // Large objects: PUT then GET, `large_clients` at a time.
    // Incompressible bytes (like parquet, already compressed): Garage compresses blocks
    // with zstd, and a repeating pattern would let it write next to nothing.
    let big = Bytes::from(tarn_tests::noise(a.large_mib << 20, 1));
    let keys: Vec<Path> = (0..a.large_count).map(|i| Path::from(format!("{run}/large/{i}"))).collect();
    let t = Instant::now();
    futures::stream::iter(keys.iter().cloned())
        .map(|k| {
            let (s, big) = (s.clone(), big.clone());
            async move { s.put(&k, PutPayload::from_bytes(big)).await.map(|_| ()) }
        })
        .buffer_unordered(a.large_clients)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mib = (a.large_mib * a.large_count) as f64;
    report(&label, &format!("put_{}mib_MiBps", a.large_mib), mib / t.elapsed().as_secs_f64(), "MiB/s");
    let t = Instant::now();
    let lens = futures::stream::iter(keys.iter().cloned())
        .map(|k| {
            let s = s.clone();
            async move { s.get(&k).await?.bytes().await.map(|b| b.len()) }
        })
        .buffer_unordered(a.large_clients)
        .collect::<Vec<_>>()
        .await;
    for l in lens {
        anyhow::ensure!(l? == a.large_mib << 20, "a large GET returned a wrong length");
    }
    report(&label, &format!("get_{}mib_MiBps", a.large_mib), mib / t.elapsed().as_secs_f64(), "MiB/s");

    // A listing target: 100 small objects under one prefix.
    let small = Bytes::from(tarn_tests::noise(4096, 2));
    let list_prefix = Path::from(format!("{run}/list"));
    futures::stream::iter(0..100)
        .map(|i| {
            let (s, small, p) = (s.clone(), small.clone(), list_prefix.clone());
            async move { s.put(&p.clone().join(format!("{i:03}")), PutPayload::from_bytes(small)).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;

    let wants = |op: &str| a.ops.iter().any(|o| o == op);
    for &c in &a.clients {
        let base = format!("{run}/small{c}");
        let written = Arc::new((0..c).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let (s1, small1, base1, w1) = (s.clone(), small.clone(), base.clone(), written.clone());
        let put = run_for(c, a.secs, move |w, i| {
            let (s, small, key, w1) = (s1.clone(), small1.clone(), Path::from(format!("{base1}/{w}/{i}")), w1.clone());
            async move {
                s.put(&key, PutPayload::from_bytes(small)).await?;
                w1[w].store(i + 1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
        report(&label, &format!("put_4k_c{c}_ops"), put, "ops/s");
        if wants("get") {
            let (s2, base2, w2) = (s.clone(), base.clone(), written.clone());
            let get = run_for(c, a.secs, move |w, i| {
                let n = w2[w].load(Ordering::Relaxed).max(1);
                let (s, key) = (s2.clone(), Path::from(format!("{base2}/{w}/{}", i % n)));
                async move {
                    let b = s.get(&key).await?.bytes().await?;
                    anyhow::ensure!(b.len() == 4096, "a small GET returned {} bytes", b.len());
                    Ok(())
                }
            })
            .await?;
            report(&label, &format!("get_4k_c{c}_ops"), get, "ops/s");
        }
        if wants("head") {
            let (s3, base3, w3) = (s.clone(), base.clone(), written.clone());
            let head = run_for(c, a.secs, move |w, i| {
                let n = w3[w].load(Ordering::Relaxed).max(1);
                let (s, key) = (s3.clone(), Path::from(format!("{base3}/{w}/{}", i % n)));
                async move {
                    let m = s.head(&key).await?;
                    anyhow::ensure!(m.size == 4096, "HEAD said {} bytes", m.size);
                    Ok(())
                }
            })
            .await?;
            report(&label, &format!("head_4k_c{c}_ops"), head, "ops/s");
        }
        if wants("list") {
            let (s4, p4) = (s.clone(), list_prefix.clone());
            let list = run_for(c, a.secs, move |_, _| {
                let (s, p) = (s4.clone(), p4.clone());
                async move {
                    let l = s.list_with_delimiter(Some(&p)).await?;
                    anyhow::ensure!(l.objects.len() == 100, "LIST returned {} keys", l.objects.len());
                    Ok(())
                }
            })
            .await?;
            report(&label, &format!("list100_c{c}_ops"), list, "ops/s");
        }
    }
    Ok(())
}
