//! `tierlog bench kafka`: librdkafka (kcat) producing to and fetching from an in-process Kafka
//! listener, against the library's own append, local replay and remote replay of the same
//! records measured in the same run, and produce latency with acks=all against raw
//! write+fdatasync latency of the same disk.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use serde_json::json;
use tierlog::config::FsyncPolicy;
use tierlog::partition::Partition;
use tierlog::reader::Reader;
use tierlog::{Log, Record};

use super::GlobalArgs;
use super::bench::{Scratch, percentile, round2};

#[derive(Args, Debug)]
pub struct KafkaArgs {
    /// Scratch directory, new (removed afterwards) or empty (emptied afterwards); a non-empty
    /// one is refused. The embedded remote goes beside its log.
    #[arg(long, default_value = "tierlog-bench-kafka")]
    pub dir: PathBuf,
    /// Bytes of records to produce, fetch locally and fetch from the remote tier.
    #[arg(long, default_value_t = 128)]
    pub total_mb: u64,
    /// Size of each record value (JSON payment events).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per library append (librdkafka's batches are about this size at its defaults).
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
    /// Sequential single-record produce requests (acks=all) timed for the latency figures.
    #[arg(long, default_value_t = 2000)]
    pub latency_samples: usize,
    /// The produced topic's `message.timestamp.type`: CreateTime sends each stored batch as its
    /// producer sent it (header rewritten, CRC set again); LogAppendTime sends the stored bytes.
    #[arg(long, default_value = "CreateTime", value_parser = parse_timestamp_type)]
    pub timestamp_type: tierlog::batch::TimestampType,
}

fn parse_timestamp_type(text: &str) -> Result<tierlog::batch::TimestampType, String> {
    text.parse()
}

pub fn kafka(global: &GlobalArgs, args: KafkaArgs) -> Result<std::process::ExitCode> {
    anyhow::ensure!(args.total_mb > 0 && args.batch_records > 0 && args.latency_samples > 0, "counts must be positive");
    let kcat = which_kcat()?;
    let _scratch = Scratch::new(&args.dir)?;
    let mut config = global.load_config()?;
    config.data_dir = args.dir.join("log");
    config.remote.url = String::new(); // the embedded remote, beside the log
    config.durability.fsync = FsyncPolicy::Batch;
    config.tiering.enabled = true;
    config.tiering.interval_ms = 24 * 3600 * 1000; // tiered below, when the bench says so
    config.tiering.local_retention_bytes = 0;
    let log = Log::open(config)?;
    let records: Vec<Record> = (0..(args.total_mb * 1_000_000 / args.record_bytes as u64).max(1))
        .map(|i| tierlog::sample::payment_event(i, 1_700_000_000_000 + i as i64, args.record_bytes))
        .collect();
    let bytes: u64 = records.iter().map(|r| (r.value.len() + r.key.as_ref().map_or(0, Vec::len)) as u64).sum();
    let count = records.len() as u64;
    let progress = indicatif::ProgressBar::new(7).with_message("bench kafka");

    // Library limits on the same records: append (one fsync per batch), local replay.
    let lib = log.create_topic("library", 1)?.partition(0)?.clone();
    let start = Instant::now();
    for batch in records.chunks(args.batch_records) {
        lib.append(batch, 0)?;
    }
    let library_append = start.elapsed().as_secs_f64();
    progress.inc(1);
    let library_local = timed(|| replay_local(&lib, count))?;
    progress.inc(1);

    let runtime = tokio::runtime::Runtime::new()?;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let state = tierlog::serve::http::AppState::new(log.clone(), stopped.clone(), None)?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?.to_string();
    let broker = Arc::new(tierlog::kafka::Broker::new(state, &listener)?);
    runtime.spawn(tierlog::kafka::serve(listener, broker, stopped));
    log.create_topic_with("kafka", 1, args.timestamp_type)?;
    log.create_topic("latency", 1)?;

    // librdkafka producer, batching on, acks=all (kcat's default), every record durable.
    let input = args.dir.join("records.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input)?);
    for r in &records {
        file.write_all(r.key.as_deref().unwrap_or_default())?;
        file.write_all(b"\t")?;
        file.write_all(&r.value)?;
        file.write_all(b"\n")?;
    }
    file.into_inner()?.sync_all()?;
    let cpu = process_cpu_secs();
    let produce = timed(|| {
        let kcat_args =
            ["-P", "-b", &address, "-t", "kafka", "-p", "0", "-K", "\t", "-X", "linger.ms=5", "-X", "acks=all"];
        run_kcat(&kcat, &kcat_args, Some(&input)).map(drop)
    })?;
    let produce_cpu = process_cpu_secs() - cpu;
    let kafka = log.topic("kafka")?.partition(0)?.clone();
    anyhow::ensure!(kafka.end_offset() == count, "kcat produced {} records of {count}", kafka.end_offset());
    progress.inc(1);

    let consume = ["-C", "-b", &address, "-t", "kafka", "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%o\n"];
    let cpu = process_cpu_secs();
    let fetch_local = fetch_all(&kcat, &consume, count)?;
    let fetch_local_cpu = process_cpu_secs() - cpu;
    progress.inc(1);

    // Everything remote-only, then the library's remote replay and kcat's, each on a cold cache.
    let tiering = runtime.block_on(tierlog::tier::Tiering::start(log.clone()))?;
    let reports = runtime.block_on(tiering.run_once(Some("kafka"), true))?;
    anyhow::ensure!(reports.iter().all(|r| r.error.is_none()), "tiering failed: {reports:?}");
    anyhow::ensure!(kafka.start_offset() == count, "records are still local after tiering");
    progress.inc(1);
    let reader = Reader::new(log.clone());
    let library_remote = timed(|| runtime.block_on(replay(&reader, &kafka, count)))?;
    let cpu = process_cpu_secs();
    let fetch_remote = fetch_all(&kcat, &consume, count)?;
    let fetch_remote_cpu = process_cpu_secs() - cpu;
    progress.inc(1);

    let latencies = produce_latencies(&address, args.latency_samples, args.record_bytes)?;
    let raw = raw_fdatasync_latencies(&args.dir.join("raw-latency.bin"), args.record_bytes, args.latency_samples)?;
    progress.finish_and_clear();

    let mb_s = |secs: f64| round2(bytes as f64 / secs / 1e6);
    let report = json!({
        "bench": "kafka",
        "client": "kcat (librdkafka), linger.ms=5, acks=all; consumer at librdkafka defaults",
        "records": count, "record_bytes": args.record_bytes, "bytes": bytes, "fsync": "per batch",
        "timestamp_type": args.timestamp_type.as_str(),
        "library_append": {"mb_per_s": mb_s(library_append), "batch_records": args.batch_records},
        "kafka_produce": {"mb_per_s": mb_s(produce), "server_cpu_s": round2(produce_cpu), "wall_s": round2(produce)},
        "produce_vs_library": round2(library_append / produce), "produce_target": 0.6,
        "library_local_replay": {"mb_per_s": mb_s(library_local)},
        "kafka_fetch_local": {"mb_per_s": mb_s(fetch_local), "server_cpu_s": round2(fetch_local_cpu), "wall_s": round2(fetch_local)},
        "fetch_local_vs_library": round2(library_local / fetch_local), "fetch_local_target": 0.5,
        "library_remote_replay": {"mb_per_s": mb_s(library_remote)},
        "kafka_fetch_remote": {"mb_per_s": mb_s(fetch_remote), "server_cpu_s": round2(fetch_remote_cpu), "wall_s": round2(fetch_remote)},
        "fetch_remote_vs_library": round2(library_remote / fetch_remote), "fetch_remote_target": 0.8,
        "produce_latency_acks_all_ms": {
            "requests": latencies.len(), "record_bytes": args.record_bytes,
            "p50": round2(percentile(&latencies, 0.5)), "p99": round2(percentile(&latencies, 0.99)),
            "p999": round2(percentile(&latencies, 0.999)),
        },
        "raw_write_fdatasync_latency_ms": {
            "p50": round2(percentile(&raw, 0.5)), "p99": round2(percentile(&raw, 0.99)), "p999": round2(percentile(&raw, 0.999)),
        },
        "note": "server_cpu_s is this process's CPU time in the phase (the broker's share; kcat runs in its own process); kcat times include its process start; fetch times end at the last record printed (one line per record), before librdkafka's end-of-partition wait",
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(tiering);
    drop(log);
    Ok(std::process::ExitCode::SUCCESS)
}

/// CPU seconds (user + system) this process (the server) has used, from /proc (Linux; its
/// clock ticks are 1/100 s).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn which_kcat() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("kcat"))
        .find(|path| path.is_file())
        .context("bench kafka drives librdkafka through kcat, which is not on PATH: apt-get install kcat")
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

/// Runs kcat to completion; its standard output.
fn run_kcat(kcat: &Path, args: &[&str], stdin: Option<&Path>) -> Result<Vec<u8>> {
    let stdin = match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path)?),
        None => Stdio::null(),
    };
    let out = Command::new(kcat).args(args).stdin(stdin).stderr(Stdio::piped()).stdout(Stdio::piped()).output()?;
    anyhow::ensure!(out.status.success(), "kcat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out.stdout)
}

/// Seconds from starting a kcat consumer until it printed offset `count - 1`, having printed
/// every offset from 0 in order. Its exit is not waited for in the time: at the end of a
/// partition librdkafka needs one empty fetch, which the broker holds for `fetch.wait.max.ms`
/// (500 ms) as Kafka does, before it reports the end.
fn fetch_all(kcat: &Path, args: &[&str], count: u64) -> Result<f64> {
    use std::io::BufRead;
    let start = Instant::now();
    let mut child =
        Command::new(kcat).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut expected = 0u64;
    let mut last = None;
    for line in std::io::BufReader::new(child.stdout.take().context("kcat stdout")?).lines() {
        let line = line?;
        anyhow::ensure!(
            line.parse::<u64>().ok() == Some(expected),
            "kcat printed offset {line:?}, expected {expected}"
        );
        expected += 1;
        if expected == count {
            last = Some(start.elapsed().as_secs_f64());
        }
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "kcat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(expected == count, "kcat fetched {expected} records of {count}");
    last.context("kcat never printed the last offset")
}

fn replay_local(partition: &Arc<Partition>, count: u64) -> Result<()> {
    let (mut next, mut buf) = (0, Vec::new());
    while let Some(chunk) = partition.read_chunk(next, tierlog::partition::READ_BYTES_MAX, buf)? {
        let views = chunk.views()?;
        let Some(last) = views.last() else { break };
        next = last.offset + 1;
        drop(views);
        buf = chunk.into_buffer();
    }
    anyhow::ensure!(next == count, "replayed {next} records of {count}");
    Ok(())
}

async fn replay(reader: &Reader, partition: &Arc<Partition>, count: u64) -> Result<()> {
    let mut next = 0;
    while next < count {
        let records = reader.read(partition, next, tierlog::partition::READ_BYTES_MAX).await?;
        next = records.last().context("remote replay ended early")?.offset + 1;
    }
    Ok(())
}

/// Round-trip times (ms) of `samples` sequential Produce requests of one record, acks=all.
fn produce_latencies(address: &str, samples: usize, record_bytes: usize) -> Result<Vec<f64>> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let record = tierlog::sample::payment_event(i as u64, 1_700_000_000_000, record_bytes);
        let frame = produce_frame(i as i32, record)?;
        let start = Instant::now();
        stream.write_all(&frame)?;
        let mut length = [0u8; 4];
        std::io::Read::read_exact(&mut stream, &mut length)?;
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        std::io::Read::read_exact(&mut stream, &mut body)?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        let mut body = Bytes::from(body);
        ResponseHeader::decode(&mut body, ProduceResponse::header_version(9))?;
        let response = ProduceResponse::decode(&mut body, 9)?;
        let code = response.responses[0].partition_responses[0].error_code;
        anyhow::ensure!(code == 0, "produce answered error code {code}");
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn produce_frame(correlation: i32, record: Record) -> Result<Bytes> {
    // The log's batch format is Kafka's RecordBatch v2: what it encodes is what a producer sends.
    let records = Bytes::from(tierlog::batch::encode(0, &[record]));
    let partition =
        kafka_protocol::messages::produce_request::PartitionProduceData::default().with_records(Some(records));
    let topic = kafka_protocol::messages::produce_request::TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("latency")))
        .with_partition_data(vec![partition]);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![topic]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(correlation);
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, ApiKey::Produce.request_header_version(9))?;
    request.encode(&mut frame, 9)?;
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    Ok(frame.freeze())
}

/// Latencies (ms) of `samples` appends of `size` bytes, each followed by fdatasync: the disk's
/// floor under an acks=all produce of one record.
fn raw_fdatasync_latencies(path: &Path, size: usize, samples: usize) -> Result<Vec<f64>> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let buf = vec![7u8; size];
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&buf)?;
        file.sync_data()?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}
