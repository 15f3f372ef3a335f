//! Block storage throughput against the raw disk, measured in one run.
//!
//! `dn-bench --mib 1024`: starts 1 `tarn namenode` and 3 `tarn datanode` processes (all on
//! this machine's one disk), then
//! - baseline: writes 3x the bytes (what replication 3 puts on the disk, and more than the
//!   VM host's write cache holds) to a plain file with 4 MiB writes and one fsync (what
//!   `dd bs=4M conv=fsync` does), and reads them back;
//! - writes one file through Tarn with replication 1 and with replication 3 (every replica
//!   lands on the same disk, so replication 3 writes 3x the bytes), then a plain file of
//!   the same size, and reads the three in turn (`--read-rounds` times, medians
//!   compared): the plain file, Tarn's over TLS from the datanodes, and Tarn's with
//!   short-circuit reads of the local replica files.
//!
//! Before each read the page cache is dropped (when running as root), so both the baseline
//! and Tarn read from the disk (this VM's host still caches recent writes: hence a plain
//! file written as recently as Tarn's); Tarn reads 4 MiB pieces with 4 in flight. Then:
//! random 1 MiB range reads per second (8 at a time), and the
//! time to re-replicate the replication-3 file after SIGKILL of a datanode holding it (a
//! fourth datanode takes the copies; detection takes `dead_after`, 2 s here).
//! Prints MiB/s and the ratio to the baseline.

/// The same allocator as the `tarn` binary (block buffers are reused, not re-mmapped).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{Read, Write};
use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::CreateOptions;
use tarn_tests::{block_tuning, median, wait_healthy, wait_live_datanodes, ProcCluster};

#[derive(Parser)]
struct Args {
    /// MiB per file.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Cold reads of each kind per file (raw, over TLS, short-circuit, in turn), whose
    /// medians are compared: this VM's disk swings from read to read.
    #[arg(long, default_value_t = 3)]
    read_rounds: usize,
    /// Only compare encryption at rest on and off: two clusters side by side, a file
    /// written (replication 3) and read back on each, alternating, `rounds` times.
    #[arg(long)]
    encryption: bool,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const IO: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if a.encryption {
        return rt.block_on(encryption(a.mib, a.rounds));
    }
    rt.block_on(run(a.mib, a.read_rounds.max(1)))
}

/// Reads the first `total` bytes of the plain file at `p` (4 MiB reads); MiB/s.
fn raw_read(p: &std::path::Path, total: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut f = std::fs::File::open(p)?;
    let mut rb = vec![0u8; IO];
    let mut n = 0;
    while n < total {
        let k = f.read(&mut rb)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    anyhow::ensure!(n >= total, "short raw read");
    Ok(rate(total, t.elapsed().as_secs_f64()))
}

/// Reads a whole file through `reader` (4 MiB pieces, 4 in flight); MiB/s.
async fn tarn_read(reader: &tarn_client::NamenodeClient, path: &str, total: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = FileReader::open(reader, path).await?;
    let mut off = 0u64;
    let mut pieces = std::pin::pin!(r.read_pieces(0, r.length(), IO as u64, 4));
    while let Some(got) = pieces.next().await {
        off += got?.iter().map(|b| b.len() as u64).sum::<u64>();
    }
    anyhow::ensure!(off as usize == total, "short read");
    Ok(rate(total, t.elapsed().as_secs_f64()))
}

/// Writes `total` bytes to `path` and reads them back; MiB/s of each.
async fn write_read(
    c: &tarn_client::NamenodeClient,
    path: &str,
    buf: &[u8],
    total: usize,
) -> anyhow::Result<(f64, f64)> {
    let opts = CreateOptions { create_parent: true, replication: 3, ..Default::default() };
    let t = Instant::now();
    let mut w = FileWriter::create(c, path, &opts).await?;
    for _ in 0..total / buf.len() {
        w.write(buf).await?;
    }
    w.close().await?;
    let wr = rate(total, t.elapsed().as_secs_f64());
    drop_caches();
    let t = Instant::now();
    let r = FileReader::open(c, path).await?;
    let mut n = 0u64;
    let mut pieces = std::pin::pin!(r.read_pieces(0, r.length(), IO as u64, 4));
    while let Some(got) = pieces.next().await {
        n += got?.iter().map(|b| b.len() as u64).sum::<u64>();
    }
    anyhow::ensure!(n as usize == total, "short read");
    Ok((wr, rate(total, t.elapsed().as_secs_f64())))
}

/// Encryption at rest on versus off, in one run: two clusters (1 namenode, 3 datanodes
/// each, TLS on both), rounds alternating between them so that the disk's swings hit both.
async fn encryption(mib: usize, rounds: usize) -> anyhow::Result<()> {
    let total = mib << 20;
    let buf = tarn_tests::noise(IO, 0x2545_f491_4f6c_dd1d);
    let mut on = ProcCluster::start(1, block_tuning).await;
    on.start_datanodes(3).await;
    let mut off = ProcCluster::start(1, block_tuning).await;
    off.encrypt_at_rest = false;
    off.start_datanodes(3).await;
    let (con, coff) = (on.client(), off.client());
    let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, c) in [&coff, &con].into_iter().enumerate() {
            let path = format!("/bench/enc-{round}");
            let r = write_read(c, &path, &buf, total).await?;
            c.delete(&path, false, None).await?;
            println!("round {round} encryption {}: write {:.0} MiB/s, read {:.0} MiB/s", ["off", "on"][i], r.0, r.1);
            results[i].push(r);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut m = [[0f64; 2]; 2];
    for (i, rs) in results.iter().enumerate() {
        m[i][0] = median(&mut rs.iter().map(|r| r.0).collect());
        m[i][1] = median(&mut rs.iter().map(|r| r.1).collect());
    }
    println!(
        "# median of {rounds}, {mib} MiB, replication 3: write off {:.0} / on {:.0} MiB/s (on = {:.2}x off); read off {:.0} / on {:.0} MiB/s (on = {:.2}x off)",
        m[0][0],
        m[1][0],
        m[1][0] / m[0][0],
        m[0][1],
        m[1][1],
        m[1][1] / m[0][1]
    );
    Ok(())
}

/// Empties the page cache so reads come from the disk (needs root); `false` if it could not.
fn drop_caches() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

async fn run(mib: usize, read_rounds: usize) -> anyhow::Result<()> {
    let total = mib << 20;
    let buf = tarn_tests::noise(IO, 0x2545_f491_4f6c_dd1d);
    // Baseline: the raw disk through the file system, as many bytes as replication 3 writes.
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("raw");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p)?;
    for _ in 0..3 * total / IO {
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    let raw_w = rate(3 * total, t.elapsed().as_secs_f64());
    let raw_cold = drop_caches();
    let raw_r = raw_read(&p, total)?;
    let cache = if raw_cold { "page cache dropped before reads" } else { "reads from the page cache (not root)" };
    println!("# baseline (plain file, {} MiB in 4 MiB writes + fsync, like dd conv=fsync): write {raw_w:.0} MiB/s, read {raw_r:.0} MiB/s; {cache}", 3 * mib);

    let mut pc = ProcCluster::start(1, block_tuning).await;
    pc.start_datanodes(3).await;
    let c = pc.client();
    let over_tls = pc.client().with_short_circuit(false);
    for replication in [1u32, 3] {
        let path = format!("/bench/r{replication}");
        let opts = CreateOptions { create_parent: true, replication, ..Default::default() };
        let t = Instant::now();
        let mut w = FileWriter::create(&c, &path, &opts).await?;
        for _ in 0..total / IO {
            w.write(&buf).await?;
        }
        w.close().await?;
        let wr = rate(total, t.elapsed().as_secs_f64());
        println!(
            "replication {replication}: write {wr:.0} MiB/s ({:.2}x raw, {:.2}x raw/{replication}; {} MiB hit the disk)",
            wr / raw_w,
            wr / (raw_w / replication as f64),
            mib * replication as usize,
        );
        // The raw side of the reads: a plain file of the same size written just after
        // Tarn's (this VM's host caches what was written recently, so both must be equally
        // recent), then cold reads in turn (raw, over TLS, short-circuit), so the disk's
        // swings hit all three.
        let rp = dir.path().join(format!("raw-r{replication}"));
        let mut f = std::fs::File::create(&rp)?;
        for _ in 0..total / IO {
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        let (mut raw, mut tls, mut local) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..read_rounds {
            anyhow::ensure!(drop_caches() == raw_cold, "page cache dropped for one read and not the other");
            raw.push(raw_read(&rp, total)?);
            drop_caches();
            tls.push(tarn_read(&over_tls, &path, total).await?);
            drop_caches();
            local.push(tarn_read(&c, &path, total).await?);
        }
        let (raw, tls, local) = (median(raw), median(tls), median(local));
        println!(
            "replication {replication}: read, median of {read_rounds} cold reads each: raw {raw:.0} MiB/s, over TLS {tls:.0} MiB/s ({:.2}x raw), short-circuit {local:.0} MiB/s ({:.2}x raw)",
            tls / raw,
            local / raw
        );
    }
    drop(dir);
    // Random 1 MiB range reads, 8 in flight.
    let r = FileReader::open(&c, "/bench/r3").await?;
    let reads = 400usize;
    let len = r.length();
    let t = Instant::now();
    let results: Vec<anyhow::Result<usize>> = futures::stream::iter(0..reads)
        .map(|i| {
            let r = &r;
            async move {
                let off = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) % (len - (1 << 20));
                Ok(r.read_at(off, 1 << 20).await?.len())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for x in results {
        anyhow::ensure!(x? == 1 << 20, "short range read");
    }
    let secs = t.elapsed().as_secs_f64();
    println!("random 1 MiB range reads: {:.0}/s ({:.0} MiB/s), 8 in flight", reads as f64 / secs, reads as f64 / secs);
    // Re-replication after a node loss: a fourth datanode, then SIGKILL one holder.
    pc.start_datanodes(1).await;
    let t = Instant::now();
    pc.kill_datanode(1);
    wait_live_datanodes(&c, 3).await;
    let detected = t.elapsed().as_secs_f64();
    wait_healthy(&c, "/bench/r3", std::time::Duration::from_secs(600)).await;
    let total = t.elapsed().as_secs_f64();
    println!(
        "re-replication of {mib} MiB after SIGKILL of a datanode: {total:.1} s in all ({detected:.1} s to declare it dead, {:.1} s copying = {:.0} MiB/s)",
        total - detected,
        mib as f64 / (total - detected).max(0.001)
    );
    Ok(())
}
