//! `tierlog consume` and `tierlog offsets`. Both open the data directory read-only (no
//! writer lock), so history can be replayed while a producer or server keeps writing.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{ArgGroup, Args};
use serde_json::json;
use tierlog::Log;
use tierlog::partition::Partition;
use tierlog::time::parse_time;

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
    /// Start at the first record with timestamp ≥ T (epoch ms or RFC 3339).
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
    /// Stop after printing this many records in total.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,
    /// Keep waiting for new records after reaching the end.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct OffsetsArgs {
    pub topic: String,
    /// Print the first offset whose timestamp is ≥ T (epoch ms or RFC 3339) instead.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub time: Option<i64>,
}

struct Cursor<'a> {
    partition: &'a Partition,
    next: u64,
    stop: Option<u64>,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.stop.is_some_and(|stop| self.next >= stop)
    }
}

pub fn run(global: &GlobalArgs, args: ConsumeArgs) -> Result<ExitCode> {
    let log = Log::open_read_only(global.load_config()?)?;
    let topic = log.topic(&args.topic)?;
    let partitions: Vec<&Partition> = match args.partition {
        Some(p) => vec![topic.partition(p)?.as_ref()],
        None => topic.partitions.iter().map(|p| p.as_ref()).collect(),
    };
    let mut cursors = Vec::new();
    for partition in partitions {
        let next = match (args.from_offset, args.from_time, args.from_end) {
            (Some(offset), _, _) => offset,
            (_, Some(time), _) => partition.offset_for_time(time)?,
            (_, _, true) => partition.end_offset(),
            _ => partition.start_offset(),
        };
        let stop = match (args.to_offset, args.to_time) {
            (Some(offset), _) => Some(offset),
            (_, Some(time)) => Some(partition.offset_for_time(time)?),
            _ => None,
        };
        cursors.push(Cursor { partition, next, stop });
    }
    let mut remaining = args.max_records.unwrap_or(u64::MAX);
    let mut out = std::io::stdout().lock();
    while remaining > 0 && cursors.iter().any(|c| !c.done()) {
        let mut progressed = false;
        for cursor in cursors.iter_mut().filter(|c| !c.done()) {
            for stored in cursor.partition.read(cursor.next, READ_STEP_BYTES)? {
                if cursor.done() || remaining == 0 {
                    break;
                }
                writeln!(out, "{}", tierlog::envelope::record_to_json(cursor.partition.id, &stored))?;
                cursor.next = stored.offset + 1;
                remaining -= 1;
                progressed = true;
            }
        }
        if !progressed {
            if !args.follow {
                break;
            }
            out.flush()?;
            std::thread::sleep(FOLLOW_POLL);
            for cursor in &cursors {
                cursor.partition.refresh()?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn offsets(global: &GlobalArgs, args: OffsetsArgs) -> Result<ExitCode> {
    let log = Log::open_read_only(global.load_config()?)?;
    let topic = log.topic(&args.topic)?;
    for p in &topic.partitions {
        let line = match args.time {
            Some(time) => json!({"partition": p.id, "offset": p.offset_for_time(time)?}),
            None => json!({"partition": p.id, "start": p.start_offset(), "end": p.end_offset()}),
        };
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
