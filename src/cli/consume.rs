//! `tierlog consume` and `tierlog offsets`, through the unified reader (both tiers). Both
//! open the data directory read-only (no writer lock), so history can be replayed while a
//! producer or server keeps writing.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{ArgGroup, Args};
use serde_json::json;
use std::sync::Arc;

use tierlog::partition::Partition;
use tierlog::reader::Reader;
use tierlog::time::parse_time;
use tierlog::{Log, groups};

use super::GlobalArgs;

/// How often `--follow` looks for new records when it has caught up. Short enough that a
/// new record shows up "at once" to a person, long enough to cost nothing when idle.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes read from one partition per step, so several partitions interleave fairly.
const READ_STEP_BYTES: usize = 256 * 1024;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "from_offset", "from_time", "from_end"])))]
#[command(group(ArgGroup::new("stop").args(["to_offset", "to_time"])))]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all, one after another).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the first available offset (the default).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset.
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,
    /// Start at the first record with timestamp ≥ T (RFC 3339, a date, epoch ms, s:<epoch s>, or -15m/-1h/-2d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Start at the end: only records appended from now on (use with --follow).
    #[arg(long)]
    pub from_end: bool,
    /// Stop before this offset (exclusive).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// Stop before the first record with timestamp ≥ T (exclusive).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub to_time: Option<i64>,
    /// Replay only what the log had appended at or before T ("what did we know at T?"):
    /// every partition stops at its as-of cut, whatever timestamps producers put on records.
    /// With --from-time/--to-time, they then select records by their own timestamps, in
    /// [from, to), among those known at T (a late, backdated record appended after T is left
    /// out).
    #[arg(long, value_name = "T", value_parser = parse_time, conflicts_with_all = ["follow", "from_end"])]
    pub as_of: Option<i64>,
    /// Stop after printing this many records in total.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,
    /// Keep waiting for new records after reaching the end.
    #[arg(long)]
    pub follow: bool,
    /// Consumer group: resume from its committed offsets (unless a --from-* flag is given)
    /// and commit after records are printed.
    #[arg(long, value_name = "G", conflicts_with = "replica")]
    pub group: Option<String>,
    /// Read from the bucket in [remote] alone, as a read-only replica (no data directory
    /// needed; --follow sees new tiered data within replica.refresh_ms).
    #[arg(long)]
    pub replica: bool,
}

#[derive(Args, Debug)]
pub struct OffsetsArgs {
    pub topic: String,
    /// Print the first offset whose timestamp is ≥ T (RFC 3339, a date, epoch ms, s:<epoch s>, or -15m/-1h/-2d) instead.
    #[arg(long, value_name = "T", value_parser = parse_time, conflicts_with = "as_of")]
    pub time: Option<i64>,
    /// Print the first offset appended after T instead: offsets below it are what the log
    /// had at T (the partition's as-of cut).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub as_of: Option<i64>,
    /// Answer from the bucket in [remote] alone, as a read-only replica (no data directory).
    #[arg(long)]
    pub replica: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Topics to cut (default: every topic).
    pub topics: Vec<String>,
    /// The instant: RFC 3339, a date, epoch ms, s:<epoch s>, or -15m/-1h/-2d.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub as_of: i64,
    /// Answer from the bucket in [remote] alone, as a read-only replica (no data directory).
    #[arg(long)]
    pub replica: bool,
}

struct Cursor {
    partition: Arc<Partition>,
    next: u64,
    stop: Option<u64>,
}

/// Which records of the offsets read are printed: by their own timestamps, in
/// `[from, to)`, when an as-of replay has a time window (see `--as-of`).
#[derive(Clone, Copy)]
struct TimeFilter {
    from: Option<i64>,
    to: Option<i64>,
}

impl TimeFilter {
    fn keeps(&self, timestamp: i64) -> bool {
        self.from.is_none_or(|from| timestamp >= from) && self.to.is_none_or(|to| timestamp < to)
    }
}

impl Cursor {
    fn done(&self) -> bool {
        self.stop.is_some_and(|stop| self.next >= stop)
    }
}

pub fn run(global: &GlobalArgs, args: ConsumeArgs) -> Result<ExitCode> {
    check_replica_args(global, args.replica)?;
    if global.server.is_some() {
        super::client::Client::new(global)?.consume(&args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if args.replica {
        return runtime.block_on(async {
            let (_dir, replica) = open_replica(global, std::slice::from_ref(&args.topic)).await?;
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            let log = replica.log().clone();
            let refresher = args.follow.then(|| replica.spawn(stopped));
            // Ctrl-C / SIGTERM end a follow here, so the temporary view is removed.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let done = tokio::select! {
                done = consume(Reader::new(log), args) => done,
                _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
                _ = term.recv() => Ok(ExitCode::SUCCESS),
            };
            if let Some(refresher) = refresher {
                refresher.abort();
            }
            done
        });
    }
    let log = Log::open_read_only(global.load_config()?)?;
    runtime.block_on(consume(Reader::new(log), args))
}

/// `--replica` reads the bucket itself: it has nothing to do with a server's URL.
fn check_replica_args(global: &GlobalArgs, replica: bool) -> Result<()> {
    if replica && global.server.is_some() {
        anyhow::bail!(
            "--replica reads the bucket in [remote] directly; it does not combine with --server / TIERLOG_SERVER"
        );
    }
    Ok(())
}

/// A read-only replica of the configured bucket, in a temporary directory (removed when the
/// returned guard drops): for commands that read the bucket without a data directory.
async fn open_replica(
    global: &GlobalArgs,
    topics: &[String],
) -> Result<(tempfile::TempDir, tierlog::replica::Replica)> {
    let mut config = global.load_config()?;
    // The bucket as the configuration names it, before data_dir moves: without remote.url,
    // that is the embedded default beside the configured data directory.
    config.remote.url = config.remote_url();
    let dir = tempfile::Builder::new().prefix("tierlog-replica-").tempdir()?;
    config.data_dir = dir.path().to_path_buf();
    let remote = tierlog::tier::connect(&config).await?;
    let replica = tierlog::replica::Replica::open_topics(config, remote, topics).await?;
    Ok((dir, replica))
}

/// The log a read command works on: the data directory, read-only, or with `replica` a
/// replica of the bucket (its directory guard must live as long as the log).
async fn open_for_reading(
    global: &GlobalArgs,
    replica: bool,
    topics: &[String],
) -> Result<(Option<tempfile::TempDir>, Log)> {
    if replica {
        let (dir, replica) = open_replica(global, topics).await?;
        return Ok((Some(dir), replica.log().clone()));
    }
    Ok((None, Log::open_read_only(global.load_config()?)?))
}

async fn consume(reader: Reader, args: ConsumeArgs) -> Result<ExitCode> {
    let log = reader.log().clone();
    if let Some(time) = args.as_of {
        tierlog::reader::check_as_of(time, tierlog::partition::now_ms())?;
    }
    let topic = log.topic(&args.topic)?;
    let partitions: Vec<Arc<Partition>> = match args.partition {
        Some(p) => vec![topic.partition(p)?.clone()],
        None => topic.partitions.clone(),
    };
    let committed = match &args.group {
        Some(group) => groups::load(log.data_dir(), group, &args.topic)?,
        None => Default::default(),
    };
    let explicit_start = args.from_beginning || args.from_offset.is_some() || args.from_time.is_some() || args.from_end;
    let mut cursors = Vec::new();
    for partition in partitions {
        let next = match (args.from_offset, args.from_time, args.from_end, committed.get(&partition.id)) {
            (Some(offset), ..) => offset,
            (_, Some(time), ..) => reader.offset_for_time(&partition, time).await?,
            (_, _, true, _) => partition.end_offset(),
            (.., Some(offset)) if !explicit_start => *offset,
            _ => reader.start_offset(&partition).await?,
        };
        let stop = match (args.to_offset, args.to_time, args.as_of) {
            (Some(offset), ..) => Some(offset),
            // As of T, --to-time filters by timestamp: a late record may lie past its offset.
            (_, Some(time), None) => Some(reader.offset_for_time(&partition, time).await?),
            _ => None,
        };
        let stop = match args.as_of {
            Some(time) => Some(reader.offset_as_of(&partition, time).await?.min(stop.unwrap_or(u64::MAX))),
            None => stop,
        };
        cursors.push(Cursor { partition, next, stop });
    }
    let filter = match args.as_of {
        Some(_) => TimeFilter { from: args.from_time, to: args.to_time },
        None => TimeFilter { from: None, to: None },
    };
    let mut remaining = args.max_records.unwrap_or(u64::MAX);
    let mut out = std::io::stdout().lock();
    while remaining > 0 && cursors.iter().any(|c| !c.done()) {
        let mut progressed = false;
        for cursor in cursors.iter_mut().filter(|c| !c.done()) {
            for stored in reader.read(&cursor.partition, cursor.next, READ_STEP_BYTES).await? {
                if cursor.done() || remaining == 0 {
                    break;
                }
                cursor.next = stored.offset + 1;
                progressed = true;
                if !filter.keeps(stored.record.timestamp) {
                    continue;
                }
                writeln!(out, "{}", tierlog::envelope::record_to_json(cursor.partition.id, &stored))?;
                remaining -= 1;
            }
        }
        if progressed {
            out.flush()?;
            commit(&log, &args, &cursors)?; // after the records are printed: at-least-once
        } else {
            if !args.follow {
                break;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            for cursor in &cursors {
                cursor.partition.refresh()?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn commit(log: &Log, args: &ConsumeArgs, cursors: &[Cursor]) -> Result<()> {
    if let Some(group) = &args.group {
        let offsets = cursors.iter().map(|c| (c.partition.id, c.next)).collect();
        groups::commit(log.data_dir(), group, &args.topic, &offsets)?;
    }
    Ok(())
}

pub fn offsets(global: &GlobalArgs, args: OffsetsArgs) -> Result<ExitCode> {
    check_replica_args(global, args.replica)?;
    if global.server.is_some() {
        super::client::Client::new(global)?.offsets(&args)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(time) = args.as_of {
        tierlog::reader::check_as_of(time, tierlog::partition::now_ms())?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (_dir, log) = open_for_reading(global, args.replica, std::slice::from_ref(&args.topic)).await?;
        let reader = Reader::new(log.clone());
        let topic = log.topic(&args.topic)?;
        for p in &topic.partitions {
            let line = match (args.time, args.as_of) {
                (Some(time), _) => json!({"partition": p.id, "offset": reader.offset_for_time(p, time).await?}),
                (_, Some(time)) => json!({"partition": p.id, "offset": reader.offset_as_of(p, time).await?}),
                _ => json!({"partition": p.id, "start": reader.start_offset(p).await?, "end": p.end_offset()}),
            };
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `tierlog snapshot --as-of T [TOPIC…]`: the end offsets of the as-of cut at T of every
/// partition of the topics, one JSON line each. The cut is consistent across partitions and
/// topics: one writer appends them all and stamps every batch from the same clock.
pub fn snapshot(global: &GlobalArgs, args: SnapshotArgs) -> Result<ExitCode> {
    check_replica_args(global, args.replica)?;
    tierlog::reader::check_as_of(args.as_of, tierlog::partition::now_ms())?;
    if global.server.is_some() {
        super::client::Client::new(global)?.snapshot(&args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (_dir, log) = open_for_reading(global, args.replica, &args.topics).await?;
        let reader = Reader::new(log.clone());
        for line in tierlog::reader::snapshot(&reader, &args.topics, args.as_of).await? {
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    })
}
