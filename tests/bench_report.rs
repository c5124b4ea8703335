//! `tierlog bench all --report`, through the real binary: every bench runs as a subprocess,
//! report.json holds each one's result or why it did not run, and index.html has one SVG per
//! chart drawn from those results.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::BIN;
use serde_json::Value;

/// Every run of the suite, in order.
const RUNS: [&str; 8] = ["append", "append-100b", "tier", "read", "http", "kafka", "verify", "latency"];

fn bench_all(scratch: &Path, report: &Path, only: &[&str], path_env: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "all", "--quick", "--dir"]).arg(scratch).arg("--report").arg(report);
    if !only.is_empty() {
        cmd.arg("--only").arg(only.join(","));
    }
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    cmd.env_remove("TIERLOG_CONFIG").output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `<section id="ID">…</section>` of the page.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<section id=\"{id}\">")).unwrap_or_else(|| panic!("no section {id} in the page"));
    let end = start + html[start..].find("</section>").expect("section closed");
    &html[start..end]
}

fn bench<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["benches"].as_array().unwrap().iter().find(|b| b["id"] == id).unwrap_or_else(|| panic!("no bench {id}"))
}

fn chart<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["charts"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no chart {id}"))
}

fn kcat_on_path() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kcat").is_file()))
}

/// Checks a bench that ran: its chart has bars whose ratios are measured / limit, and its
/// section of the page holds exactly one SVG, titled for it, labelled with each limit.
fn assert_charted(report: &Value, html: &str, id: &str) {
    let chart = chart(report, &format!("throughput-{id}"));
    let bars = chart["bars"].as_array().unwrap();
    assert!(!bars.is_empty(), "bench {id} charted nothing: {chart}");
    let section = section(html, &format!("throughput-{id}"));
    assert_eq!(section.matches("<svg").count(), 1, "one SVG for {id}");
    assert!(section.contains(&format!("bench {id}: throughput against its limit")), "{section}");
    for bar in bars {
        let (measured, limit) = (bar["measured"].as_f64().unwrap(), bar["limit"].as_f64().unwrap());
        assert!(measured > 0.0 && limit > 0.0, "{bar}");
        assert!((bar["ratio"].as_f64().unwrap() - measured / limit).abs() < 0.01, "{bar}");
        assert!(section.contains(bar["limit_label"].as_str().unwrap()), "limit label of {bar} in the SVG");
    }
}

#[test]
fn bench_all_quick_report_charts_every_bench_against_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (scratch, report_dir) = (dir.path().join("scratch"), dir.path().join("report"));
    let out = bench_all(&scratch, &report_dir, &[], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!scratch.exists(), "the scratch directory bench all created is removed");
    let report: Value = serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(report_dir.join("index.html")).unwrap();
    let ids: Vec<&str> = report["benches"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, RUNS);

    for id in ["append", "append-100b", "tier", "read", "http", "verify"] {
        assert_eq!(bench(&report, id)["status"], "ok", "{id}: {}", bench(&report, id));
        assert_charted(&report, &html, id);
    }
    let append = &bench(&report, "append")["result"];
    let small = &bench(&report, "append-100b")["result"];
    assert_eq!((append["record_bytes"].as_u64(), small["record_bytes"].as_u64()), (Some(1024), Some(100)));
    for result in [append, small] {
        for field in [
            "/append/records_per_s",
            "/append/mb_per_s",
            "/raw_write_fdatasync/mb_per_s",
            "/raw_write_fdatasync/records_per_s",
            "/append_vs_raw_per_round/median",
        ] {
            assert!(result.pointer(field).and_then(Value::as_f64).is_some_and(|v| v > 0.0), "{field} in {result}");
        }
    }
    assert_eq!((append["append_target"].as_f64(), small["append_target"].as_f64()), (Some(0.8), Some(0.5)));

    // A bench that could not run is named with its reason, in the JSON and on the page.
    for id in ["kafka", "latency"] {
        let entry = bench(&report, id);
        if entry["status"] == "ok" {
            assert_charted(&report, &html, id);
        } else {
            assert_eq!(entry["status"], "not run");
            let reason = entry["reason"].as_str().unwrap();
            assert!(!reason.is_empty());
            let section = section(&html, &format!("throughput-{id}"));
            assert!(section.contains("not run: ") && !section.contains("<svg"), "{section}");
        }
    }
    if !kcat_on_path() {
        assert!(bench(&report, "kafka")["reason"].as_str().unwrap().contains("kcat"), "{}", bench(&report, "kafka"));
    }

    // Latency percentiles from every bench that reports them: bench read's cold seeks and
    // bench http's produce requests at least.
    let latency = chart(&report, "latency");
    let labels: Vec<&str> =
        latency["series"].as_array().unwrap().iter().map(|s| s["label"].as_str().unwrap()).collect();
    for expected in ["read: cold seek", "http: http append"] {
        assert!(labels.contains(&expected), "{expected} in {labels:?}");
    }
    let section_html = section(&html, "latency");
    assert_eq!(section_html.matches("<svg").count(), 1);
    assert!(labels.iter().all(|l| section_html.contains(l)), "every series is labelled in the SVG");

    // Requests per cold seek against the design's budget of 2.
    let seek = chart(&report, "cold-seek");
    let requests = &seek["bars"][0];
    assert_eq!(requests["label"], "requests per cold seek");
    assert_eq!(requests["measured"], bench(&report, "read")["result"]["cold_seek"]["requests_per_seek"]);
    assert_eq!(requests["budget"].as_f64(), Some(2.0));
    let section_html = section(&html, "cold-seek");
    assert_eq!(section_html.matches("<svg").count(), 1);
    assert!(section_html.contains("requests per cold seek (budget ≤ 2)"), "{section_html}");
}

/// A bench that fails (here kcat is not on PATH) is reported as not run, with its error, and
/// the others still run and are charted.
#[test]
fn bench_all_reports_a_failing_bench_as_not_run_and_charts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let out = bench_all(&dir.path().join("scratch"), &report_dir, &["kafka", "append"], Some("/nonexistent"));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(report_dir.join("index.html")).unwrap();
    let ids: Vec<&str> = report["benches"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["append", "kafka"]);
    let kafka = bench(&report, "kafka");
    assert_eq!(kafka["status"], "not run");
    assert!(kafka["reason"].as_str().unwrap().contains("kcat"), "{kafka}");
    assert!(section(&html, "throughput-kafka").contains("not run: "));
    assert_charted(&report, &html, "append");
    // bench read did not run, so the cold-seek chart says so instead of drawing nothing.
    assert!(section(&html, "cold-seek").contains("not run: "));
}

#[test]
fn bench_all_refuses_an_unknown_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench_all(&dir.path().join("scratch"), &dir.path().join("report"), &["apend"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--only apend: no such run"), "{}", stderr(&out));
    assert!(!dir.path().join("report").exists(), "nothing written");
}
