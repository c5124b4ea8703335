//! `tierlog produce`: stdin lines → records → durable appends, with a per-partition summary.
//!
//! Input is read in groups (up to [`GROUP_RECORDS_MAX`] lines or [`GROUP_BYTES_MAX`] bytes).
//! A group is parsed whole before any of it is written, so a malformed line writes nothing of
//! its group; groups before it stay written and are reported.

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
    pub topic: String,
    /// Write every record to this partition instead of choosing by key hash.
    #[arg(long)]
    pub partition: Option<u32>,
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
            let topic = log.topic(&args.topic)?;
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
    result?;
    Ok(ExitCode::SUCCESS)
}

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

fn append_group(
    topic: &Topic,
    args: &ProduceArgs,
    lines: &[(usize, Vec<u8>)],
    written: &mut BTreeMap<u32, Written>,
) -> Result<()> {
    let now = now_ms();
    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
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
        by_partition.entry(partition).or_default().push(record);
    }
    for (partition, records) in &by_partition {
        topic.partition(*partition)?.check_records(records).with_context(|| {
            format!("lines {}..={}: nothing of them was written", lines[0].0, lines[lines.len() - 1].0)
        })?;
    }
    for (partition, records) in by_partition {
        let appended = topic.partition(partition)?.append(&records, now)?;
        Written::add(written, partition, appended.first_offset, appended.last_offset, records.len() as u64);
    }
    Ok(())
}
