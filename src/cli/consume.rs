//! `tierlog consume` and `tierlog offsets`, through the unified reader (both tiers). Both
//! open the data directory read-only (no writer lock), so history can be replayed while a
//! producer or server keeps writing.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{ArgGroup, Args};
use serde_json::json;
use std::sync::Arc;

use tierlog::partition::Partition;
use tierlog::reader::Reader;
use tierlog::time::{parse_duration, parse_time};
use tierlog::{Log, groups};

use super::GlobalArgs;
use super::output::{Format, parse_format};

/// How often `--follow` looks for new records when it has caught up. Short enough that a
/// new record shows up "at once" to a person, long enough to cost nothing when idle.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes read from one partition per step, so several partitions interleave fairly.
const READ_STEP_BYTES: usize = 256 * 1024;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "from_offset", "from_time", "from_end"])))]
#[command(group(ArgGroup::new("stop").args(["to_offset", "to_time"])))]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub topic: super::TopicArg,
    /// Read only these partitions: -p 0,2 or -p 0 -p 2 (default: all).
    #[arg(short, long, value_name = "P", value_delimiter = ',')]
    pub partition: Vec<u32>,
    /// Start at the first available offset (the default without a group).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset.
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,
    /// Start at the first record with timestamp ≥ T (RFC 3339, a date, epoch ms, s:<epoch s>, or -15m/-1h/-2d).
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
    pub from_time: Option<i64>,
    /// Start at the end: only records appended from now on (use with --follow).
    #[arg(long)]
    pub from_end: bool,
    /// Where to start (or stop), as kcat's -o: beginning|earliest, end|latest, stored (the
    /// group's committed offsets), N (this offset), -N (N records before the end of each
    /// partition), +N (N after its first available offset), s@T (as --from-time T), e@T (as
    /// --to-time T). Give it twice for a start and an e@T stop.
    #[arg(short = 'o', long = "offset", value_name = "SPEC", value_parser = parse_offset_spec, allow_hyphen_values = true)]
    pub offset: Vec<OffsetSpec>,
    /// Stop before this offset (exclusive).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// Stop before the first record with timestamp ≥ T (exclusive).
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
    pub to_time: Option<i64>,
    /// Replay only what the log had appended at or before T ("what did we know at T?"):
    /// every partition stops at its as-of cut, whatever timestamps producers put on records.
    /// With --from-time/--to-time, they then select records by their own timestamps, in
    /// [from, to), among those known at T (a late, backdated record appended after T is left
    /// out).
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true, conflicts_with_all = ["follow", "from_end"])]
    pub as_of: Option<i64>,
    /// Stop after printing this many records in total, over all partitions (kcat's -c).
    #[arg(short = 'c', long, value_name = "N")]
    pub max_records: Option<u64>,
    /// Keep waiting for new records after reaching the end.
    #[arg(long)]
    pub follow: bool,
    /// Exit at the end of the log (kcat's -e). This is the default; without --follow, consume
    /// always exits once it has read everything there is.
    #[arg(short = 'e', long = "exit", conflicts_with = "follow")]
    pub exit_at_end: bool,
    /// With --follow: exit (status 0) once no record has arrived for this long: 30s, 500ms, 5m…
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "follow")]
    pub idle_timeout: Option<Duration>,
    /// Output: json (one JSON object per line, which `produce --input-format json` reads
    /// back), raw (the value, then a newline), or a kcat template such as '%p:%o %k=%v\n'
    /// (%k key, %v or %s value, %o offset, %p partition, %T timestamp in ms, %t topic,
    /// %h headers as k=v,…, %K/%S key/value length with -1 for no key, %%, \n \t \r \\).
    #[arg(short = 'f', long, value_name = "FORMAT", default_value = "json", value_parser = parse_format)]
    pub format: Format,
    /// Consumer group: resume from its committed offsets (unless a --from-* flag is given)
    /// and commit after records are printed.
    #[arg(short = 'G', long, value_name = "G", conflicts_with = "replica")]
    pub group: Option<String>,
    /// Read from the bucket in [remote] alone, as a read-only replica (no data directory
    /// needed; --follow sees new tiered data within replica.refresh_ms).
    #[arg(long)]
    pub replica: bool,
}

/// One `-o/--offset` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Start(Start),
    /// `e@T`: stop before the first record with timestamp ≥ T.
    StopTime(i64),
}

/// Where a consume starts in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The group's committed offset, else the first available (the default, and `-o stored`).
    Committed,
    Beginning,
    End,
    Offset(u64),
    /// This many records before the partition's end, at most back to its first available offset.
    BeforeEnd(u64),
    /// This many records after the partition's first available offset.
    AfterFirst(u64),
    /// The first record with timestamp ≥ T.
    Time(i64),
}

/// Where one partition's read begins, once its bounds are known.
pub enum StartAt {
    /// The first available offset.
    First,
    Offset(u64),
    Time(i64),
}

impl Start {
    /// Whether [`Start::at`] needs the partition's first available and end offsets.
    pub fn needs_bounds(self) -> bool {
        matches!(self, Start::End | Start::BeforeEnd(_) | Start::AfterFirst(_))
    }

    /// Where a partition's read begins; `bounds` (first available, end) must be given when
    /// [`Start::needs_bounds`].
    pub fn at(self, bounds: Option<(u64, u64)>, committed: Option<u64>) -> StartAt {
        let bounds = || bounds.expect("the caller looks up bounds when needs_bounds()");
        match self {
            Start::Committed => committed.map_or(StartAt::First, StartAt::Offset),
            Start::Beginning => StartAt::First,
            Start::Offset(offset) => StartAt::Offset(offset),
            Start::Time(time) => StartAt::Time(time),
            Start::End => StartAt::Offset(bounds().1),
            Start::BeforeEnd(n) => {
                let (first, end) = bounds();
                StartAt::Offset(end.saturating_sub(n).max(first))
            }
            Start::AfterFirst(n) => StartAt::Offset(bounds().0.saturating_add(n)),
        }
    }
}

/// Parses a kcat-style `-o` value.
pub fn parse_offset_spec(text: &str) -> Result<OffsetSpec, String> {
    let number = |digits: &str| digits.parse::<u64>().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()));
    if let Some(time) = text.strip_prefix("e@") {
        return Ok(OffsetSpec::StopTime(parse_time(time)?));
    }
    if let Some(time) = text.strip_prefix("s@") {
        return Ok(OffsetSpec::Start(Start::Time(parse_time(time)?)));
    }
    let start = match text {
        "beginning" | "earliest" | "start" => Start::Beginning,
        "end" | "latest" => Start::End,
        "stored" => Start::Committed,
        _ => match (text.strip_prefix('-').and_then(number), text.strip_prefix('+').and_then(number), number(text)) {
            (Some(n), ..) => Start::BeforeEnd(n),
            (_, Some(n), _) => Start::AfterFirst(n),
            (.., Some(n)) => Start::Offset(n),
            _ => {
                return Err(format!(
                    "{text:?} is not an offset: use beginning|earliest, end|latest, stored, N, -N (N before the end), \
                     +N (N after the first available), s@TIME or e@TIME (TIME as for --from-time, e.g. s@-1h)"
                ));
            }
        },
    };
    Ok(OffsetSpec::Start(start))
}

/// A consume, its flags resolved: what both the local reader and the `--server` client run.
pub struct Plan {
    pub topic: String,
    /// Empty: every partition of the topic.
    pub partitions: Vec<u32>,
    pub start: Start,
    pub to_offset: Option<u64>,
    pub to_time: Option<i64>,
    pub as_of: Option<i64>,
    pub max_records: Option<u64>,
    pub follow: bool,
    pub idle_timeout: Option<Duration>,
    pub group: Option<String>,
    pub format: Format,
}

impl Plan {
    /// Checks the start and stop flags against each other (clap checks the rest).
    pub fn new(args: ConsumeArgs) -> Result<Plan> {
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        let mut to_time = args.to_time;
        for spec in &args.offset {
            match spec {
                OffsetSpec::Start(start) => starts.push(*start),
                OffsetSpec::StopTime(time) => {
                    stops.push(*time);
                    to_time = Some(*time);
                }
            }
        }
        let flag_start = match (args.from_beginning, args.from_offset, args.from_time, args.from_end) {
            (true, ..) => Some(Start::Beginning),
            (_, Some(offset), ..) => Some(Start::Offset(offset)),
            (_, _, Some(time), _) => Some(Start::Time(time)),
            (.., true) => Some(Start::End),
            _ => None,
        };
        starts.extend(flag_start);
        anyhow::ensure!(
            starts.len() <= 1,
            "more than one start given: use one of -o/--offset, --from-beginning, --from-offset, --from-time, --from-end"
        );
        anyhow::ensure!(
            stops.len() + usize::from(args.to_time.is_some()) + usize::from(args.to_offset.is_some()) <= 1,
            "more than one stop given: use one of -o e@TIME, --to-time, --to-offset"
        );
        let start = starts.pop().unwrap_or(Start::Committed);
        if args.offset.contains(&OffsetSpec::Start(Start::Committed)) && args.group.is_none() {
            bail!("-o stored resumes from a consumer group's committed offsets: give the group with -G/--group");
        }
        if args.as_of.is_some() && matches!(start, Start::End | Start::BeforeEnd(_)) {
            bail!(
                "--as-of replays a past cut of the log; -o end and -o -N count from today's end, which it does not see"
            );
        }
        let mut partitions = args.partition;
        partitions.sort_unstable();
        partitions.dedup();
        Ok(Plan {
            topic: args.topic.name().to_string(),
            partitions,
            start,
            to_offset: args.to_offset,
            to_time,
            as_of: args.as_of,
            max_records: args.max_records,
            follow: args.follow,
            idle_timeout: args.idle_timeout,
            group: args.group,
            format: args.format,
        })
    }

    /// The start time when it also filters records by timestamp (an as-of replay's window).
    fn window_start(&self) -> Option<i64> {
        match self.start {
            Start::Time(time) => Some(time),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct OffsetsArgs {
    pub topic: String,
    /// Print the first offset whose timestamp is ≥ T (RFC 3339, a date, epoch ms, s:<epoch s>, or -15m/-1h/-2d) instead.
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true, conflicts_with = "as_of")]
    pub time: Option<i64>,
    /// Print the first offset appended after T instead: offsets below it are what the log
    /// had at T (the partition's as-of cut).
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
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
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
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
    let replica = args.replica;
    let plan = Plan::new(args)?;
    if global.server.is_some() {
        super::client::Client::new(global)?.consume(&plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if replica {
        return runtime.block_on(async {
            let (_dir, replica) = open_replica(global, std::slice::from_ref(&plan.topic)).await?;
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            let log = replica.log().clone();
            let refresher = plan.follow.then(|| replica.spawn(stopped));
            // Ctrl-C / SIGTERM end a follow here, so the temporary view is removed.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let done = tokio::select! {
                done = consume(Reader::new(log), plan) => done,
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
    runtime.block_on(consume(Reader::new(log), plan))
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

async fn consume(reader: Reader, plan: Plan) -> Result<ExitCode> {
    let log = reader.log().clone();
    if let Some(time) = plan.as_of {
        tierlog::reader::check_as_of(time, tierlog::partition::now_ms())?;
    }
    let topic = log.topic(&plan.topic)?;
    let partitions: Vec<Arc<Partition>> = match plan.partitions.as_slice() {
        [] => topic.partitions.clone(),
        ids => ids.iter().map(|p| topic.partition(*p).cloned()).collect::<tierlog::Result<_>>()?,
    };
    let committed = match &plan.group {
        Some(group) => groups::load(log.data_dir(), group, &plan.topic)?,
        None => Default::default(),
    };
    let mut cursors = Vec::new();
    for partition in partitions {
        let bounds = match plan.start.needs_bounds() {
            true => Some((reader.start_offset(&partition).await?, partition.end_offset())),
            false => None,
        };
        let next = match plan.start.at(bounds, committed.get(&partition.id).copied()) {
            StartAt::Offset(offset) => offset,
            StartAt::Time(time) => reader.offset_for_time(&partition, time).await?,
            StartAt::First => reader.start_offset(&partition).await?,
        };
        let stop = match (plan.to_offset, plan.to_time, plan.as_of) {
            (Some(offset), ..) => Some(offset),
            // As of T, --to-time filters by timestamp: a late record may lie past its offset.
            (_, Some(time), None) => Some(reader.offset_for_time(&partition, time).await?),
            _ => None,
        };
        let stop = match plan.as_of {
            Some(time) => Some(reader.offset_as_of(&partition, time).await?.min(stop.unwrap_or(u64::MAX))),
            None => stop,
        };
        cursors.push(Cursor { partition, next, stop });
    }
    let filter = match plan.as_of {
        Some(_) => TimeFilter { from: plan.window_start(), to: plan.to_time },
        None => TimeFilter { from: None, to: None },
    };
    let mut remaining = plan.max_records.unwrap_or(u64::MAX);
    let mut last_record = Instant::now();
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
                plan.format.write(&mut out, &plan.topic, cursor.partition.id, &stored)?;
                remaining -= 1;
                last_record = Instant::now();
            }
        }
        if progressed {
            out.flush()?;
            commit(&log, &plan, &cursors)?; // after the records are printed: at-least-once
        } else {
            let idle = plan.idle_timeout.map(|limit| limit.saturating_sub(last_record.elapsed()));
            if !plan.follow || idle.is_some_and(|left| left.is_zero()) {
                break;
            }
            tokio::time::sleep(idle.map_or(FOLLOW_POLL, |left| left.min(FOLLOW_POLL))).await;
            for cursor in &cursors {
                cursor.partition.refresh()?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn commit(log: &Log, plan: &Plan, cursors: &[Cursor]) -> Result<()> {
    if let Some(group) = &plan.group {
        let offsets = cursors.iter().map(|c| (c.partition.id, c.next)).collect();
        groups::commit(log.data_dir(), group, &plan.topic, &offsets)?;
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
