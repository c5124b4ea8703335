//! Crash safety of the real binary: `kill -9` producers at random moments, many times, then
//! check that every acknowledged record is present exactly once, in order, at dense offsets.
//!
//! `TIERLOG_CRASH_ROUNDS` sets the number of kill rounds (default 100 keeps `cargo test` short;
//! raise it for a soak run, e.g. `TIERLOG_CRASH_ROUNDS=2000 cargo test --test crash`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tierlog");
const RECORDS_PER_PRODUCE: u64 = 300;

fn tierlog(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir).env("TIERLOG_SEGMENT_MAX_BYTES", "16384").env_remove("TIERLOG_CONFIG");
    cmd
}

/// A small deterministic generator, seeded per run and printed, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn kill_9_during_appends_never_loses_or_duplicates_acknowledged_records() {
    let rounds: u64 = std::env::var("TIERLOG_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let seed = std::env::var("TIERLOG_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash test: {rounds} rounds, seed {seed} (replay with TIERLOG_CRASH_SEED={seed})");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let status = tierlog(dir.path()).args(["topic", "create", "t", "--partitions", "2"]).output().unwrap().status;
    assert!(status.success());

    // The kill window scales with how long one produce takes on this machine right now (a
    // loaded 2-core CI box is many times slower than an idle one), so about half the
    // producers finish and half are killed mid-way, whatever the load.
    let calibration: String =
        (0..RECORDS_PER_PRODUCE).map(|id| format!("{{\"key\":\"k{}\",\"value\":\"id-{id}\"}}\n", id % 7)).collect();
    let started = Instant::now();
    let mut warm = tierlog(dir.path())
        .args(["produce", "t", "--input-format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    warm.stdin.take().unwrap().write_all(calibration.as_bytes()).unwrap();
    assert!(warm.wait().unwrap().success());
    let window_us = (2 * started.elapsed().as_micros() as u64).max(1_000);
    eprintln!("crash test: one produce took {:?}; kills land within {window_us} µs", started.elapsed());

    let mut acked: Vec<u64> = (0..RECORDS_PER_PRODUCE).collect();
    let (mut killed, mut completed) = (0, 0);
    let mut next_id = RECORDS_PER_PRODUCE;
    for _ in 0..rounds {
        let ids: Vec<u64> = (next_id..next_id + RECORDS_PER_PRODUCE).collect();
        next_id += RECORDS_PER_PRODUCE;
        let input: String =
            ids.iter().map(|id| format!("{{\"key\":\"k{}\",\"value\":\"id-{id}\"}}\n", id % 7)).collect();
        let mut child = tierlog(dir.path())
            .args(["produce", "t", "--input-format", "json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes()); // fails with EPIPE if killed first
        });
        let deadline = Instant::now() + Duration::from_micros(rng.next(window_us));
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill(); // SIGKILL; a no-op if it already exited
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        if output.status.success() {
            completed += 1;
            let summary = String::from_utf8(output.stdout).unwrap();
            let counted: u64 = summary
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["count"].as_u64().unwrap())
                .sum();
            assert_eq!(counted, RECORDS_PER_PRODUCE, "a successful produce acknowledges every record: {summary}");
            acked.extend(&ids);
        } else {
            killed += 1;
        }
    }
    eprintln!("crash test: {killed} producers killed, {completed} completed");

    let output = tierlog(dir.path()).args(["consume", "t"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut per_partition: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id: u64 = v["value"].as_str().unwrap().trim_start_matches("id-").parse().unwrap();
        *seen.entry(id).or_default() += 1;
        per_partition.entry(v["partition"].as_u64().unwrap()).or_default().push((v["offset"].as_u64().unwrap(), id));
    }
    for id in &acked {
        assert_eq!(seen.get(id), Some(&1), "acknowledged record id-{id} must be present exactly once (seed {seed})");
    }
    assert!(seen.values().all(|n| *n == 1), "no record is ever duplicated (seed {seed})");
    for (partition, records) in per_partition {
        for (i, (offset, _)) in records.iter().enumerate() {
            assert_eq!(*offset, i as u64, "partition {partition}: offsets are dense from 0 (seed {seed})");
        }
        assert!(
            records.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {partition}: records keep append order (seed {seed})"
        );
    }
    assert!(completed > 0, "no producer completed; the kill window is too short to test acknowledgements");
}
