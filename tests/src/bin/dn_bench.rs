//! Block storage throughput against the raw disk, measured in one run.
//!
//! `dn-bench --mib 1024`: starts 1 `tarn namenode` and 3 `tarn datanode` processes (all on
//! this machine's one disk), then
//! - baseline: writes the same bytes to a plain file with 4 MiB writes and one fsync (what
//!   `dd bs=4M conv=fsync` does), and reads them back;
//! - writes one file through Tarn with replication 1 and with replication 3 (every replica
//!   lands on the same disk, so replication 3 writes 3x the bytes), and reads each back.
//!
//! Reads hit the page cache on both sides (the files were just written); the ratios compare
//! the software paths. Prints MiB/s and the ratio to the baseline.

use std::io::{Read, Write};
use std::time::Instant;

use clap::Parser;
use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::CreateOptions;
use tarn_tests::{block_tuning, ProcCluster};

#[derive(Parser)]
struct Args {
    /// MiB per file.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
}

const IO: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(a.mib))
}

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

async fn run(mib: usize) -> anyhow::Result<()> {
    let total = mib << 20;
    let buf = data(IO);
    // Baseline: the raw disk through the file system.
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("raw");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p)?;
    for _ in 0..total / IO {
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    let raw_w = rate(total, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut f = std::fs::File::open(&p)?;
    let mut rb = vec![0u8; IO];
    let mut n = 0;
    while n < total {
        let k = f.read(&mut rb)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let raw_r = rate(n, t.elapsed().as_secs_f64());
    drop(dir);
    println!("# baseline (plain file, 4 MiB writes + fsync): write {raw_w:.0} MiB/s, read {raw_r:.0} MiB/s");

    let mut pc = ProcCluster::start(1, block_tuning).await;
    pc.start_datanodes(3).await;
    let c = pc.client();
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
        let t = Instant::now();
        let r = FileReader::open(&c, &path).await?;
        let mut off = 0u64;
        while off < r.length() {
            let got = r.read_at(off, IO as u64).await?;
            off += got.len() as u64;
        }
        let rd = rate(off as usize, t.elapsed().as_secs_f64());
        println!(
            "replication {replication}: write {wr:.0} MiB/s ({:.2}x raw; {} MiB hit the disk), read {rd:.0} MiB/s ({:.2}x raw)",
            wr / raw_w,
            mib * replication as usize,
            rd / raw_r
        );
    }
    Ok(())
}
