//! `tierlog verify`: prove what the bucket holds (docs/AUDIT.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tierlog::tier;
use tierlog::time::parse_time;
use tierlog_tiering::signing::PublicKeys;
use tierlog_tiering::verify::{self, Event, VerifyOptions};

use super::GlobalArgs;

/// Exit status when verification ran and found damage (1 is "could not run", 2 a usage error).
pub const EXIT_DAMAGE: u8 = 3;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Only this topic (default: every topic with a manifest in the bucket).
    pub topic: Option<String>,
    /// Only this partition.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Only check objects of segments appended at or after this time (manifests are always
    /// checked whole). RFC 3339, epoch ms, or relative (-1h).
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
    pub from_time: Option<i64>,
    /// Only check objects of segments appended at or before this time.
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
    pub to_time: Option<i64>,
    /// Download every object and check its contents: SHA-256, chunk index, each chunk's
    /// CRC32C and zstd checksum, the segment's SHA-256, every batch CRC, dense offsets.
    /// Encrypted objects are decrypted with the configured keyring (`[encryption]`); those
    /// whose key it lacks get every check that needs no key, and the summary says so.
    #[arg(long)]
    pub deep: bool,
    /// Ed25519 public key (SPKI PEM) every manifest version must be signed by; repeat for
    /// keys rotated over time. Without it, signatures found are checked against the keys
    /// published in the bucket, which proves integrity but not who wrote the history.
    #[arg(long, value_name = "FILE")]
    pub public_key: Vec<PathBuf>,
    /// With --public-key: versions written before signing was turned on may be unsigned (the
    /// newest must be signed; every version is checked to be a prefix of it).
    #[arg(long, requires = "public_key")]
    pub unsigned_before_signing: bool,
    /// Requests (or, with --deep, whole objects in memory) in flight at once [default: 16,
    /// or the number of cores with --deep].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
}

pub fn run(global: &GlobalArgs, args: VerifyArgs) -> Result<ExitCode> {
    let config = global.load_config()?;
    if let (Some(from), Some(to)) = (args.from_time, args.to_time)
        && from > to
    {
        use clap::CommandFactory;
        super::Cli::command().error(clap::error::ErrorKind::ArgumentConflict, "--from-time is after --to-time").exit();
    }
    let mut public_keys = PublicKeys::default();
    for path in &args.public_key {
        public_keys.add_file(path).with_context(|| format!("--public-key {}", path.display()))?;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let concurrency = args.concurrency.map_or(if args.deep { cores } else { 16 }, usize::from);
    let options = VerifyOptions {
        topic: args.topic,
        partition: args.partition,
        from_time: args.from_time,
        to_time: args.to_time,
        deep: args.deep,
        concurrency,
        public_keys,
        unsigned_before_signing: args.unsigned_before_signing,
        keyring: tier::load_keyring(&config)?,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let remote = tier::connect(&config).await?;
        let progress = indicatif::ProgressBar::new(0).with_message(format!("verifying {}", remote.display));
        progress.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template"),
        );
        let on_event = |event: Event<'_>| match event {
            Event::Problem(problem) => progress.suspend(|| {
                println!("{}", serde_json::to_string(problem).expect("a problem serializes"));
            }),
            Event::Planned { bytes, .. } => progress.inc_length(bytes),
            Event::Checked { bytes } => progress.inc(bytes),
        };
        let summary = verify::verify(&remote, &options, tierlog::verify::segment_check(), &on_event).await;
        progress.finish_and_clear();
        // The audit trail is the whole bucket's: checked when the whole bucket is.
        let whole = options.topic.is_none() && options.partition.is_none();
        let trail = if whole { Some(tierlog_tiering::audit::verify(&remote).await?) } else { None };
        anyhow::Ok((summary?, trail))
    })?;
    let (summary, trail) = summary;
    for problem in trail.iter().flat_map(|t| &t.problems) {
        println!("{}", serde_json::to_string(problem).expect("a problem serializes"));
    }
    let trail_problems = trail.as_ref().map_or(0, |t| t.problems.len());
    let ok = summary.problems == 0 && trail_problems == 0;
    let audit = trail.map(|t| serde_json::json!({"records": t.records, "events": t.events, "last_seq": t.last_seq, "problems": trail_problems}));
    println!("{}", serde_json::json!({"summary": summary, "audit": audit, "ok": ok}));
    if let Some(missing) = &summary.not_decrypted {
        let ids: Vec<&str> = missing.key_ids.iter().map(String::as_str).collect();
        eprintln!(
            "verify: {} encrypted object(s) not decrypted, key ids {}: {}",
            missing.objects,
            ids.join(", "),
            missing.detail
        );
    }
    if summary.partitions == 0 {
        eprintln!(
            "verify: no manifest found under {} (nothing tiered yet, or another remote.url?)",
            config.remote_url()
        );
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DAMAGE) })
}
