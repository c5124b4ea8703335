//! Command-line interface: argument definitions and dispatch. The JSON lines printed here are
//! a stable contract that users and other tools script against.

mod audit;
mod bench;
mod bench_kafka;
mod bench_latency;
mod bench_report;
mod bench_verify;
mod client;
mod config;
mod consume;
mod decrypt;
mod demo;
mod group;
mod hold;
mod output;
mod produce;
mod restore;
mod serve;
mod tier;
mod topic;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tierlog::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "tierlog",
    version,
    about = "Tiered-storage commit log: hot segments on local disk, history in S3-compatible storage"
)]
#[command(after_help = "Examples:
  tierlog demo                                   # the whole tour on an embedded local setup
  tierlog topic create payments --partitions 3
  echo '{\"key\":\"acct-1\",\"value\":{\"amount\":12}}' | tierlog produce payments --input-format json
  tierlog consume payments --from-time 2026-03-03T14:02:00Z --max-records 10
  tierlog consume -t payments -o -10 -f '%k %v\\n'        # kcat-style: the last 10 of each partition
  tierlog offsets payments --time 2026-03-03T14:02:00Z

Logs go to stderr; set RUST_LOG=info (or debug) for more.")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Defaults apply when absent; TIERLOG_<SECTION>_<KEY> overrides.
    #[arg(long, global = true, env = "TIERLOG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` and TIERLOG_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Talk to a running `tierlog serve` at this URL instead of opening a data directory
    /// (produce, consume, offsets, snapshot, topic).
    #[arg(long, global = true, env = "TIERLOG_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for --server (prefer the environment variable: arguments are visible to
    /// other users of this machine).
    #[arg(long, global = true, env = "TIERLOG_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Log lines on stderr as text, or as one JSON object per line (for log shippers). Which
    /// lines: RUST_LOG (default `warn`; `RUST_LOG=info,tierlog::access=info` adds the HTTP
    /// access log).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl GlobalArgs {
    pub fn load_config(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list and describe topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Append records read from stdin, one per line; exits 0 once every record is durable.
    #[command(after_help = "Examples:
  printf 'a\\nb\\n' | tierlog produce events
  printf 'a\\n' | tierlog produce -t events -p 2                       # kcat's -t and -p
  echo '{\"key\":\"k\",\"value\":{\"x\":1},\"timestamp\":\"2026-03-03T14:02:00Z\",\"headers\":{\"src\":\"pos\"}}' \\
      | tierlog produce events --input-format json
  tierlog consume events | tierlog produce events-copy --input-format json   # copies byte for byte

Prints one JSON line per partition written: {\"partition\":P,\"first_offset\":A,\"last_offset\":B,\"count\":N}
If an append fails after others were written, exits non-zero after printing what was written and
{\"failed\":{\"partition\":P,\"error\":E},\"not_attempted\":[..],\"not_written_lines\":\"2-3,5-\"}:
resend exactly those lines (\"5-\" = line 5 to the end of the input) to resume without duplicates.")]
    Produce(produce::ProduceArgs),
    /// Print records (JSON lines, raw values or a kcat template), from an offset or a point in time.
    #[command(after_help = "Examples:
  tierlog consume events --from-beginning
  tierlog consume events --partition 0 --from-offset 100 --max-records 10
  tierlog consume events --from-time 2026-03-03T14:00:00Z --to-time 2026-03-03T15:00:00Z
  tierlog consume events --from-time -1h                    # the last hour
  tierlog consume events --from-end --follow
  tierlog consume events --follow --idle-timeout 30s        # tail; exit 0 after 30 s without a record
  tierlog consume events --as-of 2026-03-03T14:02:00Z      # what the log had received by then
  tierlog consume events --as-of 2026-03-03T14:02:00Z --from-time 2026-03-03T13:00:00Z --to-time 2026-03-03T14:00:00Z

kcat-style flags:
  tierlog consume -t events -p 0,2 -o -10 -e                # the last 10 records of partitions 0 and 2
  tierlog consume -t events -o s@2026-03-03T14:02:00Z -o e@2026-03-03T15:00:00Z -c 100
  tierlog consume -t events -G billing -o stored            # resume the group (the default with -G)
  tierlog consume -t events -f '%p:%o %k=%v\\n'              # template: %k %v/%s %o %p %T %t %h %K %S %%
  tierlog consume -t events -f raw                          # the values only
-e is the default (consume exits at the end unless --follow). -c/--max-records counts records printed
over all partitions, locally and with --server. Without -f (or with -f json) each line is an object
that `produce --input-format json` reads back. Offsets and times may start with '-' without '='.")]
    Consume(consume::ConsumeArgs),
    /// Print per-partition start/end offsets, the first offset at or after a time, or the as-of cut.
    #[command(after_help = "Examples:
  tierlog offsets events
  tierlog offsets events --time 2026-03-03T14:02:00Z    # by the records' own timestamps
  tierlog offsets events --as-of 2026-03-03T14:02:00Z   # by when the log appended them")]
    Offsets(consume::OffsetsArgs),
    /// Print the end offsets of every partition as of an instant: a consistent cut of the log.
    #[command(after_help = "Prints one JSON line per partition: {\"topic\",\"partition\",\"as_of\",\"start\",\"end\"};
offsets below `end` are exactly the records the log had appended at or before the instant.

Examples:
  tierlog snapshot --as-of 2026-03-03T14:02:00Z
  tierlog snapshot --as-of -1h payments refunds")]
    Snapshot(consume::SnapshotArgs),
    /// The effective configuration and where each value came from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Consumer groups: committed offsets and lag, moving and deleting them (list, describe, seek, delete).
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Serve the HTTP/JSON API (docs/HTTP.md) and optionally Kafka (docs/KAFKA.md), tier in the background, stop cleanly on SIGTERM.
    #[command(
        after_help = "Examples:\n  tierlog serve --listen 127.0.0.1:7070 --kafka-listen 127.0.0.1:9092\n  curl -s localhost:7070/v1/topics\n  tierlog --config prod.toml --data-dir /var/lib/tierlog-replica serve --replica   # read-only, from the bucket alone"
    )]
    Serve(serve::ServeArgs),
    /// Move sealed segments to the remote tier and inspect it.
    #[command(subcommand)]
    Tier(tier::TierCommand),
    /// Legal holds: ranges of a topic that remote retention never expires (kept in the bucket).
    #[command(subcommand)]
    Hold(hold::HoldCommand),
    /// Print the audit trail in the bucket: every change to the archive, one JSON line each.
    #[command(
        after_help = "Prints one JSON line per event, oldest first: {\"time_ms\",\"actor\",\"action\",\"topic\"?,
\"partition\"?,\"first_offset\"?,\"last_offset\"?,\"reason\"?,\"before\"?,\"after\"?,\"seq\",\"writer\"}.
Actions: segment_commit, retention_expire, retention_delete, hold_set, hold_release, lock_extend,
topic_create, topic_alter, topic_delete, restore, take_over, key_rotate. `tierlog verify` checks the
trail's hash chain. Exit status 3 when a record cannot be read.

Examples:
  tierlog audit
  tierlog audit --from-time 2026-03-01T00:00:00Z --to-time 2026-04-01T00:00:00Z --topic payments
  tierlog audit | jq 'select(.action == \"hold_release\")'"
    )]
    Audit(audit::AuditArgs),
    /// Prove what the bucket holds: manifest chain, signatures, every object (docs/AUDIT.md).
    #[command(after_help = "Prints one JSON line per problem found ({\"kind\",\"topic\",\"partition\",\"key\",
\"first_offset\",\"last_offset\",\"expected\",\"found\",\"detail\"}), then {\"summary\":{..},\"ok\":BOOL}.
Exit status: 0 nothing wrong, 3 damage found, 1 could not run (credentials, network…), 2 usage.

Examples:
  tierlog verify                                   # every partition: manifests, chain, object sizes
  tierlog verify payments --deep                   # download and check every object of a topic
  tierlog verify --deep --from-time 2026-03-01T00:00:00Z --to-time 2026-04-01T00:00:00Z
  tierlog verify --public-key signing-2026.pub.pem --public-key signing-2025.pub.pem")]
    Verify(verify::VerifyArgs),
    /// Decrypt a downloaded encrypted segment object to the segment's bytes (what `zstd -d`
    /// gives for an object stored in clear).
    #[command(
        after_help = "Checks every chunk (CRC32C, AES-256-GCM authentication, zstd checksum) and writes the segment file's
bytes; compare their SHA-256 with the manifest entry's raw_sha256 (docs/AUDIT.md).

Examples:
  aws s3 cp s3://my-bucket/prod/segments/1a2b/payments/0/00000000000000000000-18c…zst obj.zst
  tierlog decrypt obj.zst --topic payments --partition 0 --key-file /etc/tierlog/keyring.toml | sha256sum"
    )]
    Decrypt(decrypt::DecryptArgs),
    /// Rebuild a data directory from the bucket alone: topics, partitions starting at the
    /// remote end (older offsets read from the bucket), group offsets, writer identity.
    #[command(
        after_help = "Prints one JSON line per partition restored, then {\"restored\":{..}}. The data directory must be
new or empty, or hold an interrupted restore (running the same command again finishes it).

With --to-offset or --to-time the result is a read-only copy of history up to that point (the bucket's
history goes on past it, so it cannot take writes): serve it with `serve --replica`, or read it with
`consume --data-dir`. Prints one JSON line per partition ({\"topic\",\"partition\",\"end_offset\",\"remote_end_offset\"}).

Examples:
  tierlog --config prod.toml --data-dir /var/lib/tierlog-new restore
  tierlog --config prod.toml --data-dir /var/lib/tierlog-new restore --topic payments --take-over
  tierlog --config prod.toml --data-dir /srv/tierlog-0303 restore --to-time 2026-03-03T14:02:00Z"
    )]
    Restore(restore::RestoreArgs),
    /// Run the guided tour on an embedded local setup: write payment events, read them back.
    Demo(demo::DemoArgs),
    /// Benchmarks that compare tierlog against the machine's measured limits (JSON output).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  tierlog completions bash > ~/.local/share/bash-completion/completions/tierlog
  tierlog completions zsh > \"${fpath[1]}/_tierlog\"")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    #[command(after_help = "Example:\n  tierlog man | man -l -")]
    Man,
}

/// The topic of `produce` and `consume`: positional, or kcat's `-t TOPIC`.
#[derive(Args, Debug)]
#[group(id = "topic_name", required = true, multiple = false)]
pub struct TopicArg {
    /// The topic (or -t TOPIC).
    #[arg(value_name = "TOPIC")]
    positional: Option<String>,
    /// The topic, as kcat's -t (instead of the positional TOPIC).
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    flag: Option<String>,
}

impl TopicArg {
    pub fn name(&self) -> &str {
        // clap's required group guarantees one of them.
        self.positional.as_deref().or(self.flag.as_deref()).unwrap_or_default()
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Each line is the record value.
    Raw,
    /// Each line is {"key"?, "value", "timestamp"?, "headers"?}.
    Json,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Topic(cmd) => topic::run(&cli.global, cmd),
        Command::Produce(args) => produce::run(&cli.global, args),
        Command::Consume(args) => consume::run(&cli.global, args),
        Command::Offsets(args) => consume::offsets(&cli.global, args),
        Command::Snapshot(args) => consume::snapshot(&cli.global, args),
        Command::Tier(cmd) => tier::run(&cli.global, cmd),
        Command::Hold(cmd) => hold::run(&cli.global, cmd),
        Command::Group(cmd) => group::run(&cli.global, cmd),
        Command::Config(cmd) => config::run(&cli.global, cmd),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Demo(args) => demo::run(&cli.global, args),
        Command::Verify(args) => verify::run(&cli.global, args),
        Command::Decrypt(args) => decrypt::run(&cli.global, args),
        Command::Audit(args) => audit::run(&cli.global, args),
        Command::Restore(args) => restore::run(&cli.global, args),
        Command::Bench(cmd) => bench::run(&cli.global, cmd),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "tierlog", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument that takes a time (value name `T`) accepts `-1h` without `=`, and
    /// `consume -o` accepts `-10`: clap would read a leading `-` as a flag otherwise.
    #[test]
    fn every_time_argument_accepts_a_leading_hyphen() {
        fn walk(command: &clap::Command, path: String, times: &mut Vec<(String, bool)>) {
            for arg in command.get_arguments() {
                if arg.get_value_names().is_some_and(|names| names.iter().any(|n| n == "T")) {
                    times.push((format!("{path} --{}", arg.get_id()), arg.is_allow_hyphen_values_set()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), times);
            }
        }
        let mut times = Vec::new();
        walk(&Cli::command(), "tierlog".into(), &mut times);
        assert!(times.len() >= 14, "every time argument of today is found: {times:?}");
        let consume = Cli::command().find_subcommand("consume").cloned().expect("consume");
        let offset = consume.get_arguments().find(|a| a.get_id() == "offset").expect("-o");
        times.push(("tierlog consume -o".into(), offset.is_allow_hyphen_values_set()));
        let refused: Vec<_> = times.iter().filter(|(_, hyphen)| !hyphen).collect();
        assert!(refused.is_empty(), "{refused:?}");
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
