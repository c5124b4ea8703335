//! `tierlog bench all`: runs the benchmark suite and, with `--report DIR`, writes
//! `DIR/report.json` and `DIR/index.html`, a page of SVG charts that shows at a glance where
//! tierlog stands against the limits each bench measured in the same run.
//!
//! Each bench runs as a subprocess of this executable (`tierlog bench NAME --dir …`), and its
//! JSON output is parsed here. That keeps this module independent of how the benches work:
//! a bench this build lacks, one that fails, times out or prints something that is not JSON is
//! reported as "not run: <reason>", and the rest of the report is still written. This module
//! owns the suite's list of runs, the extraction of comparable figures from each bench's JSON
//! and the page; it does not own any measurement.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use plotters::prelude::*;
use serde_json::{Value, json};

use super::GlobalArgs;
use super::bench::{Scratch, round2};

/// Seconds one bench may run under `--quick` before it is stopped: the quick suite is a
/// smoke run measured in tens of seconds per bench, so this only catches a hang.
const QUICK_TIMEOUT_S: u64 = 600;
/// Seconds one bench may run at full size (bench read and kafka write, tier and replay a few
/// hundred MB; on a slow shared disk that can take many minutes, never hours).
const FULL_TIMEOUT_S: u64 = 3 * 3600;
/// How often a running bench is polled for exit.
const POLL: Duration = Duration::from_millis(100);
/// Characters of a failed bench's stderr kept as its "not run" reason.
const REASON_CHARS_MAX: usize = 400;
/// Width of every chart, in SVG user units (pixels).
const CHART_WIDTH: u32 = 960;

#[derive(Args, Debug)]
pub struct AllArgs {
    /// Write DIR/report.json and DIR/index.html (charts) there; DIR is created if missing and
    /// those two files and DIR/logs/ are replaced. Without it the report JSON goes to stdout only.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Small sizes: a smoke run of a minute or two that checks the suite and the page, not a
    /// measurement to quote.
    #[arg(long)]
    pub quick: bool,
    /// Scratch directory for the benches, on the disk to measure: created if missing (and then
    /// removed afterwards), or an existing empty directory (emptied afterwards). A directory
    /// with anything in it is refused, so nothing but the benches' own files is ever deleted.
    #[arg(long, default_value = "tierlog-bench-all")]
    pub dir: PathBuf,
    /// Run only these (comma-separated run ids: append, append-100b, tier, read, http, kafka,
    /// verify, latency).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub only: Vec<String>,
    /// Seconds one bench may run before it is stopped and reported as not run (default 600
    /// with --quick, 10800 otherwise).
    #[arg(long)]
    pub timeout_s: Option<u64>,
}

/// One run of the suite: a bench and its arguments. `quick` flags are passed under `--quick`
/// only when the bench's `--help` lists them (the benches change independently of this list).
struct Run {
    id: &'static str,
    bench: &'static str,
    args: &'static [&'static str],
    quick: &'static [(&'static str, &'static str)],
}

const RUNS: &[Run] = &[
    Run { id: "append", bench: "append", args: &["--record-bytes", "1024"], quick: &[("--total-mb", "4")] },
    Run { id: "append-100b", bench: "append", args: &["--record-bytes", "100"], quick: &[("--total-mb", "2")] },
    Run { id: "tier", bench: "tier", args: &[], quick: &[("--total-mb", "8")] },
    Run { id: "read", bench: "read", args: &[], quick: &[("--total-mb", "8"), ("--seeks", "10"), ("--cache-mb", "2")] },
    Run {
        id: "http",
        bench: "http",
        args: &[],
        quick: &[("--producers", "2"), ("--requests", "10"), ("--batch-records", "64")],
    },
    Run { id: "kafka", bench: "kafka", args: &[], quick: &[("--total-mb", "2"), ("--latency-samples", "100")] },
    Run { id: "verify", bench: "verify", args: &[], quick: &[("--total-mb", "8"), ("--rounds", "1")] },
    Run {
        id: "latency",
        bench: "latency",
        args: &[],
        quick: &[
            ("--total-mb", "2"),
            ("--samples", "200"),
            ("--requests", "200"),
            ("--seconds", "2"),
            ("--rounds", "1"),
        ],
    },
];

/// What became of one run.
struct Outcome {
    id: &'static str,
    bench: &'static str,
    command: Vec<String>,
    seconds: f64,
    result: Result<Value, String>,
}

pub fn all(global: &GlobalArgs, args: AllArgs) -> Result<ExitCode> {
    if let Some(unknown) = args.only.iter().find(|id| !RUNS.iter().any(|r| r.id == id.as_str())) {
        anyhow::bail!(
            "--only {unknown}: no such run; the runs are {}",
            RUNS.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
        );
    }
    let exe = std::env::current_exe().context("finding this executable to run the benches")?;
    let scratch = Scratch::new(&args.dir)?;
    let logs = match &args.report {
        Some(report) => report.join("logs"),
        None => args.dir.join("logs"),
    };
    // Log files are overwritten by name; nothing else in DIR is touched.
    fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let timeout =
        Duration::from_secs(args.timeout_s.unwrap_or(if args.quick { QUICK_TIMEOUT_S } else { FULL_TIMEOUT_S }));
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let mut outcomes = Vec::new();
    for run in RUNS.iter().filter(|r| args.only.is_empty() || args.only.iter().any(|id| id == r.id)) {
        eprintln!("bench all: {} …", run.id);
        let outcome = run_one(&exe, global, run, &args, &logs, timeout);
        if let Err(reason) = &outcome.result {
            eprintln!("bench all: {} not run: {reason}", run.id);
        }
        outcomes.push(outcome);
    }
    drop(scratch);
    let report = report_json(&outcomes, &args, started, clock.elapsed().as_secs_f64());
    if let Some(dir) = &args.report {
        fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", dir.join("report.json").display()))?;
        fs::write(dir.join("index.html"), html_page(&report)?)
            .with_context(|| format!("write {}", dir.join("index.html").display()))?;
        eprintln!("bench all: wrote {} and {}", dir.join("report.json").display(), dir.join("index.html").display());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Runs one bench in a subprocess, its stdout and stderr kept in `logs`.
fn run_one(exe: &Path, global: &GlobalArgs, run: &Run, args: &AllArgs, logs: &Path, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut command = vec!["bench".to_string(), run.bench.to_string()];
    let result = bench_help(exe, global, run.bench).and_then(|help| {
        let has = |flag: &str| help.split(|c: char| c.is_whitespace() || c == ',').any(|w| w == flag);
        if has("--dir") {
            command.extend(["--dir".to_string(), args.dir.join(run.id).display().to_string()]);
        }
        command.extend(run.args.iter().map(|a| a.to_string()));
        if args.quick {
            for (flag, value) in run.quick.iter().filter(|(flag, _)| has(flag)) {
                command.extend([flag.to_string(), value.to_string()]);
            }
        }
        let stdout = logs.join(format!("{}.stdout", run.id));
        let stderr = logs.join(format!("{}.stderr", run.id));
        run_logged(with_global(exe, global).args(&command), &stdout, &stderr, timeout)?;
        let text =
            fs::read_to_string(&stdout).map_err(|e| format!("cannot read its output {}: {e}", stdout.display()))?;
        serde_json::from_str::<Value>(&text)
            .map_err(|e| format!("its output is not JSON ({e}); see {}", stdout.display()))
    });
    Outcome { id: run.id, bench: run.bench, command, seconds: start.elapsed().as_secs_f64(), result }
}

/// `tierlog [--config FILE] ` as a command.
fn with_global(exe: &Path, global: &GlobalArgs) -> Command {
    let mut cmd = Command::new(exe);
    if let Some(config) = &global.config {
        cmd.arg("--config").arg(config);
    }
    cmd
}

/// The `--help` of `tierlog bench NAME`, or why there is none (this build lacks the bench).
fn bench_help(exe: &Path, global: &GlobalArgs, bench: &str) -> Result<String, String> {
    let out = with_global(exe, global)
        .args(["bench", bench, "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("this build has no `tierlog bench {bench}` ({})", last_lines(&out.stderr)))
    }
}

/// Runs `cmd` with stdout and stderr in files, stopping it after `timeout`.
fn run_logged(cmd: &mut Command, stdout: &Path, stderr: &Path, timeout: Duration) -> Result<(), String> {
    let file = |path: &Path| File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file(stdout)?)
        .stderr(file(stderr)?)
        .spawn()
        .map_err(|e| format!("cannot start the bench: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("stopped after {} s (--timeout-s); see {}", timeout.as_secs(), stderr.display()));
            }
            Err(e) => return Err(format!("cannot wait for the bench: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = fs::read(stderr).unwrap_or_default();
    Err(format!("exited with {status}: {}", last_lines(&text)))
}

/// The last non-empty lines of a process's stderr, at most [`REASON_CHARS_MAX`] characters.
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    let chars = tail.chars().count();
    if chars > REASON_CHARS_MAX { tail.chars().skip(chars - REASON_CHARS_MAX).collect() } else { tail }
}

// ---------------------------------------------------------------------------------------------
// The report: each bench's result, and the charts' figures extracted from them.

/// A figure compared with its limit, `measured / limit` against a target (a floor): label,
/// JSON pointer of the figure, label of the limit, its pointer, unit, pointer of the target.
struct Comparison(&'static str, &'static str, &'static str, &'static str, &'static str, Option<&'static str>);

/// Where each bench's JSON keeps its figure and its limit (JSON pointers; an object with a
/// `median` stands for its median). A bench not listed here is charted from its `*_vs_*` ratios.
const COMPARISONS: &[(&str, &[Comparison])] = &[
    (
        "append",
        &[
            Comparison(
                "append, fsync per batch",
                "/append/mb_per_s",
                "raw write+fdatasync",
                "/raw_write_fdatasync/mb_per_s",
                "MB/s",
                Some("/append_target"),
            ),
            Comparison(
                "sequential read",
                "/sequential_read/mb_per_s",
                "raw read",
                "/raw_read/mb_per_s",
                "MB/s",
                Some("/read_target"),
            ),
        ],
    ),
    (
        "tier",
        &[Comparison(
            "tier: seal + zstd + upload",
            "/tier/raw_mb_per_s",
            "single-thread zstd",
            "/zstd_single_thread/mb_per_s",
            "MB/s",
            Some("/tier_target"),
        )],
    ),
    (
        "read",
        &[
            Comparison(
                "remote replay",
                "/remote_replay/mb_per_s",
                "local replay",
                "/local_replay/mb_per_s",
                "MB/s",
                Some("/targets/remote_vs_local"),
            ),
            Comparison(
                "remote replay",
                "/remote_replay/mb_per_s",
                "single-thread zstd -d",
                "/zstd_decompress_single_thread/mb_per_s",
                "MB/s",
                None,
            ),
        ],
    ),
    (
        "http",
        &[Comparison(
            "HTTP produce",
            "/http_append/records_per_s",
            "library append",
            "/library_append/records_per_s",
            "records/s",
            Some("/http_vs_library_target"),
        )],
    ),
    (
        "kafka",
        &[
            Comparison(
                "Kafka produce (kcat)",
                "/kafka_produce/mb_per_s",
                "library append",
                "/library_append/mb_per_s",
                "MB/s",
                Some("/produce_target"),
            ),
            Comparison(
                "Kafka fetch, local",
                "/kafka_fetch_local/mb_per_s",
                "library local replay",
                "/library_local_replay/mb_per_s",
                "MB/s",
                Some("/fetch_local_target"),
            ),
            Comparison(
                "Kafka fetch, remote",
                "/kafka_fetch_remote/mb_per_s",
                "library remote replay",
                "/library_remote_replay/mb_per_s",
                "MB/s",
                Some("/fetch_remote_target"),
            ),
        ],
    ),
    (
        "verify",
        &[
            Comparison(
                "verify --deep",
                "/deep_verify_mb_per_s",
                "single-thread zstd -d",
                "/zstd_decompress_single_thread_mb_per_s",
                "MB/s",
                Some("/target"),
            ),
            Comparison(
                "verify --deep",
                "/deep_verify_mb_per_s",
                "CPU limit (all cores)",
                "/cpu_limit_mb_per_s",
                "MB/s",
                None,
            ),
        ],
    ),
];

/// A number at `pointer`, or the `median` of a `{min, median, max}` there.
fn number(value: &Value, pointer: &str) -> Option<f64> {
    let v = value.pointer(pointer)?;
    v.as_f64().or_else(|| v.get("median").and_then(Value::as_f64))
}

/// The bars of one bench's throughput chart, and the figures its JSON lacked.
fn throughput_bars(bench: &str, result: &Value) -> (Vec<Value>, Vec<String>) {
    let Some((_, comparisons)) = COMPARISONS.iter().find(|(name, _)| *name == bench) else {
        return (ratio_bars(result), Vec::new());
    };
    let (mut bars, mut missing) = (Vec::new(), Vec::new());
    for Comparison(label, measured_at, limit_label, limit_at, unit, target_at) in comparisons.iter() {
        match (number(result, measured_at), number(result, limit_at)) {
            (Some(measured), Some(limit)) if limit > 0.0 => bars.push(json!({
                "label": label, "measured": measured, "limit_label": limit_label, "limit": limit,
                "unit": unit, "ratio": round2(measured / limit),
                "target": target_at.and_then(|t| number(result, t)),
            })),
            _ => missing.push(format!("{label} vs {limit_label} ({measured_at} / {limit_at})")),
        }
    }
    if bars.is_empty() {
        bars = ratio_bars(result);
    }
    (bars, missing)
}

/// Bars from a bench's top-level `A_vs_B` ratios (a bench this module has no table for): the
/// limit is 1.0, the target `A_vs_B_target`, `targets/A_vs_B` or a lone `target`.
fn ratio_bars(result: &Value) -> Vec<Value> {
    let Some(fields) = result.as_object() else { return Vec::new() };
    let ratios: Vec<(&String, f64)> = fields
        .iter()
        .filter(|(k, _)| k.contains("_vs_") && !k.ends_with("_target"))
        .filter_map(|(k, _)| number(result, &format!("/{k}")).map(|v| (k, v)))
        .collect();
    let lone_target = if ratios.len() == 1 { number(result, "/target") } else { None };
    ratios
        .into_iter()
        .map(|(k, ratio)| {
            let target = number(result, &format!("/{k}_target"))
                .or_else(|| number(result, &format!("/targets/{k}")))
                .or(lone_target);
            let (measured, limit) = k.split_once("_vs_").expect("filtered on _vs_");
            json!({"label": measured.replace('_', " "), "measured": ratio, "limit_label": limit.replace('_', " "),
                   "limit": 1.0, "unit": "× limit", "ratio": round2(ratio), "target": target})
        })
        .collect()
}

/// Latency percentiles anywhere in a bench's JSON: an object with `p50_ms`/`p99_ms`/`p999_ms`,
/// or an object named `…_ms` with `p50`/`p99`/`p999`. Each becomes one series.
fn latency_series(id: &str, result: &Value, path: &str, out: &mut Vec<Value>) {
    let Some(fields) = result.as_object() else { return };
    let named_ms = path.ends_with("_ms");
    let get =
        |p: &str| fields.get(&format!("{p}_ms")).or_else(|| fields.get(p).filter(|_| named_ms)).and_then(Value::as_f64);
    if let Some(p50) = get("p50") {
        let label = match path.trim_start_matches('/') {
            "" => id.to_string(),
            path => format!("{id}: {}", path.replace(['/', '_'], " ")),
        };
        out.push(json!({"label": label, "p50_ms": p50, "p99_ms": get("p99"), "p999_ms": get("p999")}));
    }
    for (key, value) in fields {
        latency_series(id, value, &format!("{path}/{key}"), out);
    }
}

/// report.json: every run with its command and result or reason, and the charts' figures.
fn report_json(outcomes: &[Outcome], args: &AllArgs, started: chrono::DateTime<chrono::Utc>, seconds: f64) -> Value {
    let mut benches = Vec::new();
    let mut charts = Vec::new();
    let mut latencies = Vec::new();
    for o in outcomes {
        let mut entry = json!({"id": o.id, "bench": o.bench, "command": o.command, "seconds": round2(o.seconds)});
        let chart_id = format!("throughput-{}", o.id);
        let title = format!("bench {}: throughput against its limit", o.id);
        match &o.result {
            Ok(result) => {
                entry["status"] = "ok".into();
                entry["result"] = result.clone();
                let (bars, missing) = throughput_bars(o.bench, result);
                charts.push(json!({"id": chart_id, "kind": "throughput", "title": title, "bench": o.id, "bars": bars, "missing": missing}));
                latency_series(o.id, result, "", &mut latencies);
            }
            Err(reason) => {
                entry["status"] = "not run".into();
                entry["reason"] = reason.clone().into();
                charts.push(
                    json!({"id": chart_id, "kind": "throughput", "title": title, "bench": o.id, "not_run": reason}),
                );
            }
        }
        benches.push(entry);
    }
    charts.push(json!({"id": "latency", "kind": "latency", "title": "Latency percentiles (ms, log scale)", "series": latencies}));
    charts.push(cold_seek_chart(outcomes));
    json!({
        "report": "tierlog bench all", "version": 1, "quick": args.quick,
        "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "seconds": round2(seconds),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "benches": benches, "charts": charts,
    })
}

/// Object-store requests per cold seek (bench read) against the design's budget.
fn cold_seek_chart(outcomes: &[Outcome]) -> Value {
    let mut chart =
        json!({"id": "cold-seek", "kind": "budget", "title": "bench read: object-store requests per cold seek"});
    match outcomes.iter().find(|o| o.id == "read").map(|o| &o.result) {
        Some(Ok(read)) => {
            let bars: Vec<Value> = [
                ("requests per cold seek", "/cold_seek/requests_per_seek", "/targets/requests_per_seek"),
                (
                    "bytes fetched / compressed chunk (worst)",
                    "/cold_seek/worst_bytes_vs_compressed_chunk",
                    "/targets/bytes_vs_compressed_chunk",
                ),
            ]
            .iter()
            .filter_map(|(label, at, budget)| {
                number(read, at).map(|v| json!({"label": label, "measured": v, "budget": number(read, budget)}))
            })
            .collect();
            chart["bars"] = bars.into();
        }
        Some(Err(reason)) => chart["not_run"] = format!("bench read not run: {reason}").into(),
        None => chart["not_run"] = "bench read was not in this run (--only)".into(),
    }
    chart
}

// ---------------------------------------------------------------------------------------------
// The page.

fn html_page(report: &Value) -> Result<String> {
    let mut html = String::new();
    let quick = if report["quick"].as_bool() == Some(true) { " (--quick: smoke sizes, not a measurement)" } else { "" };
    write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tierlog bench report</title>\n\
         <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
         section{{margin:2em 0}} .not-run{{color:#a33}} td,th{{padding:2px 10px;text-align:left}}</style></head><body>\n\
         <h1>tierlog bench report</h1>\n<p>Started {} on {} cores, {} s{}. Each figure is compared with a limit measured \
         in the same run on the same machine; absolute numbers on shared machines are noise, ratios are the result. \
         Raw data: <a href=\"report.json\">report.json</a>.</p>\n",
        escape(report["started_at"].as_str().unwrap_or("?")),
        report["cores"],
        report["seconds"],
        quick
    )?;
    summary_table(&mut html, report)?;
    for chart in report["charts"].as_array().into_iter().flatten() {
        let id = chart["id"].as_str().unwrap_or("chart");
        let title = chart["title"].as_str().unwrap_or(id);
        writeln!(html, "<section id=\"{}\"><h2>{}</h2>", escape(id), escape(title))?;
        if let Some(reason) = chart["not_run"].as_str() {
            write!(html, "<p class=\"not-run\">not run: {}</p>", escape(reason))?;
        } else {
            match chart_svg(chart)? {
                Some(svg) => html.push_str(&svg),
                None => html.push_str("<p>no figures to chart in this bench's output</p>"),
            }
            for missing in chart["missing"].as_array().into_iter().flatten() {
                write!(
                    html,
                    "<p class=\"not-run\">missing in the bench's JSON: {}</p>",
                    escape(missing.as_str().unwrap_or("?"))
                )?;
            }
        }
        html.push_str("</section>\n");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

fn summary_table(html: &mut String, report: &Value) -> Result<()> {
    html.push_str("<table><tr><th>bench</th><th>status</th><th>seconds</th><th>command</th></tr>\n");
    for b in report["benches"].as_array().into_iter().flatten() {
        let status = match b["reason"].as_str() {
            Some(reason) => format!("<span class=\"not-run\">not run: {}</span>", escape(reason)),
            None => "ok".to_string(),
        };
        let command: Vec<&str> = b["command"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        writeln!(
            html,
            "<tr><td><a href=\"#throughput-{id}\">{id}</a></td><td>{status}</td><td>{}</td><td><code>tierlog {}</code></td></tr>",
            b["seconds"],
            escape(&command.join(" ")),
            id = escape(b["id"].as_str().unwrap_or("?")),
        )?;
    }
    html.push_str("</table>\n");
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The chart's SVG, or `None` when it has nothing to draw.
fn chart_svg(chart: &Value) -> Result<Option<String>> {
    let rows: Vec<Row> = match chart["kind"].as_str() {
        Some("throughput") => chart["bars"].as_array().into_iter().flatten().map(throughput_row).collect(),
        Some("latency") => chart["series"].as_array().into_iter().flatten().map(latency_row).collect(),
        Some("budget") => chart["bars"].as_array().into_iter().flatten().map(budget_row).collect(),
        _ => Vec::new(),
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let axis = match chart["kind"].as_str() {
        Some("throughput") => Axis::Linear("fraction of the limit measured in the same run (1.0 = the limit)"),
        Some("latency") => Axis::Log10Ms,
        _ => Axis::Linear("count (the bar should stay left of its budget mark)"),
    };
    rows_svg(chart["title"].as_str().unwrap_or(""), &rows, axis).map(Some)
}

/// One row of a chart: a heading and bars from 0 along the x axis, each with its label, and
/// an optional vertical mark (a target or budget).
struct Row {
    heading: String,
    bars: Vec<(f64, RGBColor, String)>,
    mark: Option<f64>,
}

enum Axis {
    Linear(&'static str),
    /// Values are milliseconds, drawn on a log10 axis.
    Log10Ms,
}

const GREY: RGBColor = RGBColor(189, 189, 189);
const GOOD: RGBColor = RGBColor(46, 125, 50);
const SHORT: RGBColor = RGBColor(198, 40, 40);
const PLAIN: RGBColor = RGBColor(21, 101, 192);
const P99: RGBColor = RGBColor(239, 108, 0);
const P999: RGBColor = RGBColor(142, 36, 170);

fn throughput_row(bar: &Value) -> Row {
    let (measured, limit, ratio) = (
        bar["measured"].as_f64().unwrap_or(0.0),
        bar["limit"].as_f64().unwrap_or(1.0),
        bar["ratio"].as_f64().unwrap_or(0.0),
    );
    let target = bar["target"].as_f64();
    let unit = bar["unit"].as_str().unwrap_or("");
    let colour = match target {
        Some(t) if ratio >= t => GOOD,
        Some(_) => SHORT,
        None => PLAIN,
    };
    let target_text = target.map_or_else(String::new, |t| format!(", target ≥ {t}×"));
    Row {
        heading: format!(
            "{} vs {}: {ratio:.2}× the limit{target_text}",
            str_of(&bar["label"]),
            str_of(&bar["limit_label"])
        ),
        bars: vec![
            (ratio, colour, format!("{}: {} {unit}", str_of(&bar["label"]), figure(measured))),
            (1.0, GREY, format!("limit, {}: {} {unit}", str_of(&bar["limit_label"]), figure(limit))),
        ],
        mark: target,
    }
}

fn latency_row(series: &Value) -> Row {
    let bars = [("p50", "p50_ms", PLAIN), ("p99", "p99_ms", P99), ("p999", "p999_ms", P999)]
        .iter()
        .filter_map(|(name, key, colour)| {
            series[*key].as_f64().map(|v| (v, *colour, format!("{name} {} ms", figure(v))))
        })
        .collect();
    Row { heading: str_of(&series["label"]), bars, mark: None }
}

fn budget_row(bar: &Value) -> Row {
    let measured = bar["measured"].as_f64().unwrap_or(0.0);
    let budget = bar["budget"].as_f64();
    let colour = match budget {
        Some(b) if measured <= b => GOOD,
        Some(_) => SHORT,
        None => PLAIN,
    };
    let budget_text = budget.map_or_else(String::new, |b| format!(" (budget ≤ {b})"));
    Row {
        heading: format!("{}{budget_text}", str_of(&bar["label"])),
        bars: vec![(measured, colour, figure(measured))],
        mark: budget,
    }
}

fn str_of(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

/// A figure with about three significant digits.
fn figure(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.2}"),
    }
}

/// Height of one row, and of the caption and axis around the rows, in pixels.
const ROW_HEIGHT: u32 = 34;
const BAR_HEIGHT: u32 = 18;
const FRAME_HEIGHT: u32 = 90;

fn rows_svg(title: &str, rows: &[Row], axis: Axis) -> Result<String> {
    // Row i takes y in [n-i-1, n-i): its heading at the top, its bars below, top to bottom.
    let lines: Vec<usize> = rows.iter().map(|r| 1 + r.bars.len()).collect();
    let total: usize = lines.iter().sum();
    let to_x = |v: f64| match axis {
        Axis::Linear(_) => v,
        Axis::Log10Ms => v.max(1e-3).log10(),
    };
    let values = rows.iter().flat_map(|r| r.bars.iter().map(|b| b.0).chain(r.mark));
    let (x_lo, x_hi) = match axis {
        Axis::Linear(_) => (0.0, values.fold(1.0f64, f64::max) * 1.45),
        Axis::Log10Ms => {
            let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(to_x(v)), b.max(to_x(v))));
            (lo.floor() - 0.5, hi.ceil() + 1.0)
        }
    };
    let mut svg = String::new();
    {
        let height = FRAME_HEIGHT + ROW_HEIGHT * total as u32;
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .build_cartesian_2d(x_lo..x_hi, 0f64..total as f64)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_y_mesh().disable_y_axis().y_labels(0);
        match axis {
            Axis::Linear(desc) => mesh.x_desc(desc).draw()?,
            Axis::Log10Ms => mesh
                .x_desc("milliseconds (log scale)")
                .x_labels((x_hi - x_lo) as usize + 1)
                .x_label_formatter(&|v| figure(10f64.powf(*v)))
                .draw()?,
        }
        let mut line = total as f64;
        for row in rows {
            let top = line;
            chart.draw_series([Text::new(row.heading.clone(), (x_lo, line - 0.1), ("sans-serif", 14).into_font())])?;
            line -= 1.0;
            for (value, colour, label) in &row.bars {
                let pad = (1.0 - f64::from(BAR_HEIGHT) / f64::from(ROW_HEIGHT)) / 2.0;
                let (from, to) = ((x_lo.max(to_x(0.0)), line - pad), (to_x(*value), line - 1.0 + pad));
                chart.draw_series([Rectangle::new([from, to], colour.filled())])?;
                let at = (to_x(*value) + (x_hi - x_lo) * 0.01, line - 0.2);
                chart.draw_series([Text::new(label.clone(), at, ("sans-serif", 12).into_font())])?;
                line -= 1.0;
            }
            if let Some(mark) = row.mark {
                let x = to_x(mark);
                chart.draw_series([PathElement::new(vec![(x, top - 0.9), (x, line)], BLACK.stroke_width(2))])?;
            }
        }
        root.present()?;
    }
    Ok(svg)
}
