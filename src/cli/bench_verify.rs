//! `tierlog bench verify`: deep verification throughput against single-thread zstd
//! decompression of the same objects, measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::json;
use tierlog_tiering::verify::{self, VerifyOptions};

use super::GlobalArgs;
use super::bench::{Scratch, spread};

#[derive(Args, Debug)]
pub struct VerifyBenchArgs {
    /// Scratch directory, new (removed afterwards) or empty (emptied afterwards); a non-empty
    /// one is refused. The embedded remote goes beside its log.
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Raw bytes of payment events to write, tier and verify.
    #[arg(long, default_value_t = 128)]
    pub total_mb: u64,
    /// Rounds of each measurement; min, median and max are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub fn verify(global: &GlobalArgs, args: VerifyBenchArgs) -> Result<ExitCode> {
    let _scratch = Scratch::new(&args.dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (log, _partition) = super::bench::tiered_log(global, &args.dir, args.total_mb, &runtime)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = runtime.block_on(async {
        let remote = tierlog::tier::connect(log.config()).await?;
        let manifest = tierlog_tiering::manifest::ManifestStore::open(
            remote.clone(),
            "bench",
            0,
            tierlog_tiering::manifest::Writer { id: "bench".into(), epoch: 0 },
            0,
        )
        .await?
        .current;
        let mut objects = Vec::new();
        for entry in &manifest.entries {
            let key = object_store::path::Path::from(entry.key.as_str());
            objects.push(tierlog_tiering::manifest::get_bytes(&remote, &key).await?);
        }
        let raw_bytes: u64 = manifest.entries.iter().map(|e| e.raw_bytes).sum();
        let object_bytes: u64 = objects.iter().map(|o| o.len() as u64).sum();
        let (mut zstd_mb_s, mut verify_mb_s, mut sha_mb_s, mut cpu_limit_mb_s) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let segments: Vec<Vec<u8>> =
            objects.iter().map(|o| tierlog_tiering::segment_object::decode_object(o)).collect::<Result<_, _>>()?;
        for _ in 0..args.rounds {
            // The limit: one thread decompressing the same objects, already in memory.
            let start = Instant::now();
            for object in &objects {
                std::hint::black_box(tierlog_tiering::segment_object::decode_object(object)?);
            }
            let zstd = raw_bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
            zstd_mb_s.push(zstd);
            // What else deep verify must compute per byte: SHA-256 of every segment and of
            // every object (one thread, same bytes).
            let start = Instant::now();
            for segment in &segments {
                std::hint::black_box(tierlog_tiering::sha256_hex(segment));
            }
            let sha = raw_bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
            sha_mb_s.push(sha);
            let per_raw_byte = 1.0 / zstd + (1.0 + object_bytes as f64 / raw_bytes as f64) / sha;
            cpu_limit_mb_s.push(cores as f64 / per_raw_byte);
            let options = VerifyOptions { deep: true, concurrency: cores, ..VerifyOptions::default() };
            let start = Instant::now();
            let summary =
                verify::verify(&remote, &options, tierlog::verify::segment_check(), &|_| {}).await?;
            verify_mb_s.push(raw_bytes as f64 / start.elapsed().as_secs_f64() / 1e6);
            anyhow::ensure!(summary.problems == 0, "the bench archive failed verification: {summary:?}");
        }
        let ratios: Vec<f64> = verify_mb_s.iter().zip(&zstd_mb_s).map(|(v, z)| v / z).collect();
        let vs_cpu: Vec<f64> = verify_mb_s.iter().zip(&cpu_limit_mb_s).map(|(v, l)| v / l).collect();
        anyhow::Ok(json!({
            "bench": "verify",
            "store": remote.display,
            "segments": manifest.entries.len(), "raw_bytes": raw_bytes, "object_bytes": object_bytes,
            "rounds": args.rounds, "cores": cores, "concurrency": cores,
            "deep_verify_mb_per_s": spread(verify_mb_s),
            "zstd_decompress_single_thread_mb_per_s": spread(zstd_mb_s),
            "verify_vs_zstd_single_thread": spread(ratios),
            "target": 0.7,
            "sha256_single_thread_mb_per_s": spread(sha_mb_s),
            "cpu_limit_mb_per_s": spread(cpu_limit_mb_s),
            "verify_vs_cpu_limit": spread(vs_cpu),
            "cpu_limit_note": "cores / (1/zstd + (1 + object/raw bytes)/sha256): every core decompressing and hashing the segment and the object, nothing else (no GET, no CRCs)",
            "note": "deep verify reads every object through the store (GET), checks object and segment SHA-256, chunk CRC32C, zstd checksums and every batch CRC; the limit only decompresses bytes already in memory",
        }))
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(log);
    Ok(ExitCode::SUCCESS)
}
