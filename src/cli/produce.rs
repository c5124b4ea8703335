//! `tierlog produce`: stdin lines → records → durable appends, with a per-partition summary.
//!
//! Input is read in groups (up to [`GROUP_RECORDS_MAX`] lines or [`GROUP_BYTES_MAX`] bytes).
//! A group is parsed and checked whole before any of it is written, so a malformed line or a
//! record over a limit writes nothing of its group; groups before it stay written and are
//! reported.
//!
//! A group spans partitions, appended one after another. When an append fails after others
//! succeeded, the partitions written so far are printed as usual, followed by one JSON line
//! saying which partition failed, which were not attempted and which input lines were not
//! written (`"not_written_lines": "2-3,5-"`), so a retry resends exactly those and duplicates
//! nothing.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tierlog::partition::now_ms;
use tierlog::topic::Topic;
use tierlog::{Log, Record};

use super::{GlobalArgs, InputFormat};

/// Lines per group: amortises the fsync per append over many records.
const GROUP_RECORDS_MAX: usize = 10_000;
/// Bytes per group, so memory stays bounded whatever the input.
const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub topic: super::TopicArg,
    /// Write every record to this partition instead of choosing by key hash.
    #[arg(short, long, value_name = "P")]
    pub partition: Option<u32>,
    /// raw: each line is a value. json: each line is an envelope, as `consume` prints it
    /// (`{"key"?,"value","timestamp"?,"headers"?}`, bytes as {"base64":…}; partition, offset
    /// and append_time are ignored), so `consume -f json | produce --input-format json` copies
    /// records byte for byte.
    #[arg(long, value_enum, default_value = "raw")]
    pub input_format: InputFormat,
}

#[derive(Default)]
pub struct Written {
    pub first_offset: u64,
    pub last_offset: u64,
    pub count: u64,
}

impl Written {
    /// Adds an acknowledged range to a partition's running summary.
    pub fn add(written: &mut BTreeMap<u32, Written>, partition: u32, first: u64, last: u64, count: u64) {
        let w = written.entry(partition).or_insert_with(|| Written { first_offset: first, ..Written::default() });
        w.last_offset = last;
        w.count += count;
    }
}

pub fn run(global: &GlobalArgs, args: ProduceArgs) -> Result<ExitCode> {
    let mut written = BTreeMap::new();
    let stdin = std::io::stdin().lock();
    let result = match &global.server {
        Some(_) => {
            let client = super::client::Client::new(global)?;
            for_each_group(stdin, |lines| client.produce(&args, lines, &mut written))
        }
        None => {
            let log = Log::open(global.load_config()?)?;
            let topic = log.topic(args.topic.name())?;
            if let Some(p) = args.partition {
                topic.partition(p)?;
            }
            for_each_group(stdin, |lines| append_group(&topic, &args, lines, &mut written))
        }
    };
    for (partition, w) in &written {
        println!(
            "{}",
            json!({"partition": partition, "first_offset": w.first_offset, "last_offset": w.last_offset, "count": w.count})
        );
    }
    if let Some(partial) = result.as_ref().err().and_then(|e| e.downcast_ref::<PartialWrite>()) {
        println!("{}", partial.to_json());
        let summary: Vec<String> = written
            .iter()
            .map(|(p, w)| format!("partition {p} offsets {}..={}", w.first_offset, w.last_offset))
            .collect();
        eprintln!(
            "written before the failure: {}",
            if summary.is_empty() { "nothing".into() } else { summary.join(", ") }
        );
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// An append that failed after other partitions of its group were written.
#[derive(Debug)]
pub struct PartialWrite {
    pub topic: String,
    pub partition: u32,
    pub error: String,
    pub not_attempted: Vec<u32>,
    /// Lines of the group that were not written, ascending.
    pub unwritten_lines: Vec<usize>,
    /// The first line after the group: it and every later line were not read.
    pub unread_from_line: usize,
}

impl PartialWrite {
    /// Lines to resend, as ranges: `"2-3,7,12-"` (the last one open: to the end of the input).
    fn not_written_lines(&self) -> String {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for &line in &self.unwritten_lines {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == line => *end = line,
                _ => ranges.push((line, line)),
            }
        }
        let mut parts: Vec<String> =
            ranges.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        parts.push(format!("{}-", self.unread_from_line));
        parts.join(",")
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "failed": {"partition": self.partition, "error": self.error},
            "not_attempted": self.not_attempted,
            "not_written_lines": self.not_written_lines(),
        })
    }
}

impl std::fmt::Display for PartialWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}: {}. Lines {} were not written (partition {} failed, partitions {:?} were not attempted); \
             the partitions printed on stdout were written. Resend exactly those lines to resume without duplicates",
            self.topic,
            self.partition,
            self.error,
            self.not_written_lines(),
            self.partition,
            self.not_attempted
        )
    }
}

impl std::error::Error for PartialWrite {}

/// Splits input into groups of non-blank lines (with 1-based line numbers) and hands each
/// group to `write`, which writes all of it or none of it.
pub fn for_each_group(input: impl BufRead, mut write: impl FnMut(&[(usize, Vec<u8>)]) -> Result<()>) -> Result<()> {
    let mut group: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut group_bytes = 0;
    for (i, line) in input.split(b'\n').enumerate() {
        let mut line = line.context("reading stdin")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue; // blank lines carry no record
        }
        group_bytes += line.len();
        group.push((i + 1, line));
        if group.len() >= GROUP_RECORDS_MAX || group_bytes >= GROUP_BYTES_MAX {
            write(&std::mem::take(&mut group))?;
            group_bytes = 0;
        }
    }
    if !group.is_empty() {
        write(&group)?;
    }
    Ok(())
}

/// One partition's share of a group: its records and their input line numbers.
#[derive(Default)]
struct PartitionLines {
    lines: Vec<usize>,
    records: Vec<Record>,
}

fn append_group(
    topic: &Topic,
    args: &ProduceArgs,
    lines: &[(usize, Vec<u8>)],
    written: &mut BTreeMap<u32, Written>,
) -> Result<()> {
    let by_partition = parse_group(topic, args, lines)?;
    let span = format!("lines {}..={}", lines[0].0, lines[lines.len() - 1].0);
    for (partition, group) in &by_partition {
        topic.partition(*partition)?.check_records(&group.records).map_err(|e| match e {
            tierlog::Error::RecordLimit { topic, partition, index, limit } => anyhow::anyhow!(
                "{topic}/{partition}: line {} {limit}; nothing of {span} was written",
                group.lines[index]
            ),
            other => anyhow::Error::new(other).context(format!("{span}: nothing of them was written")),
        })?;
    }
    let now = now_ms();
    let mut groups = by_partition.into_iter();
    while let Some((partition, group)) = groups.next() {
        match topic.partition(partition).and_then(|p| p.append(&group.records, now)) {
            Ok(appended) => Written::add(
                written,
                partition,
                appended.first_offset,
                appended.last_offset,
                group.records.len() as u64,
            ),
            Err(error) => {
                let rest: Vec<(u32, PartitionLines)> = groups.collect();
                let mut unwritten_lines: Vec<usize> =
                    group.lines.into_iter().chain(rest.iter().flat_map(|(_, g)| g.lines.clone())).collect();
                unwritten_lines.sort_unstable();
                return Err(PartialWrite {
                    topic: topic.name().to_string(),
                    partition,
                    error: error.to_string(),
                    not_attempted: rest.into_iter().map(|(p, _)| p).collect(),
                    unwritten_lines,
                    unread_from_line: lines[lines.len() - 1].0 + 1,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Parses a group's lines into records, by partition.
fn parse_group(topic: &Topic, args: &ProduceArgs, lines: &[(usize, Vec<u8>)]) -> Result<BTreeMap<u32, PartitionLines>> {
    let now = now_ms();
    let mut by_partition: BTreeMap<u32, PartitionLines> = BTreeMap::new();
    for (line_no, line) in lines {
        let record = match args.input_format {
            InputFormat::Raw => Record { timestamp: now, key: None, value: line.clone(), headers: Vec::new() },
            InputFormat::Json => {
                let text = std::str::from_utf8(line).map_err(|_| anyhow::anyhow!("line {line_no}: not valid UTF-8"))?;
                match tierlog::envelope::parse_json_record(text, now) {
                    Ok(record) => record,
                    Err(e) => bail!("line {line_no}: {e}; nothing from line {} onward was written", lines[0].0),
                }
            }
        };
        let partition = args.partition.unwrap_or_else(|| topic.partition_for(record.key.as_deref()));
        let group = by_partition.entry(partition).or_default();
        group.lines.push(*line_no);
        group.records.push(record);
    }
    Ok(by_partition)
}
