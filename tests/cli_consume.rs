//! `tierlog consume` and `produce` with the conventions kcat and rpk users know (-t -p -o -c -e
//! -f -G, relative offsets, templates, idle timeouts), through the real binary, locally and
//! against a `tierlog serve` started here: both must print the same bytes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server::Server;
use common::{BIN, json_lines, run_with_stdin};
use serde_json::Value;

/// Where a command runs: on a data directory, or through a server that owns one.
#[derive(Clone, Copy)]
enum Via<'a> {
    Local(&'a Path),
    Server(&'a Server),
}

impl Via<'_> {
    fn command(self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        match self {
            Via::Local(dir) => cmd.arg("--data-dir").arg(dir),
            Via::Server(server) => cmd.args(["--server", &server.base]),
        };
        cmd.args(args).env_remove("TIERLOG_CONFIG").env_remove("TIERLOG_SERVER").env_remove("TIERLOG_TOKEN");
        cmd
    }

    fn run(self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(&mut self.command(args), stdin)
    }

    /// Runs a command that must succeed, and returns its standard output.
    fn ok(self, args: &[&str], stdin: &str) -> Output {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{} {args:?}: {}", self.name(), stderr(&out));
        out
    }

    /// Runs a command that must fail, and returns its standard error.
    fn fails(self, args: &[&str]) -> String {
        let out = self.run(args, "");
        assert!(!out.status.success(), "{} {args:?} should fail", self.name());
        stderr(&out)
    }

    /// Runs a command that must exit by itself within `limit` (a follow that should end).
    fn ends_within(self, args: &[&str], limit: Duration) -> (Output, Duration) {
        let started = Instant::now();
        let mut child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stdout.read_to_end(&mut bytes).unwrap();
            bytes
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} {args:?} still running after {limit:?}", self.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = started.elapsed();
        let mut err = Vec::new();
        child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
        (Output { status, stdout: reader.join().unwrap(), stderr: err }, elapsed)
    }

    fn name(self) -> &'static str {
        match self {
            Via::Local(_) => "local",
            Via::Server(_) => "--server",
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (partition, offset) of every record printed as JSON, sorted.
fn positions(output: &Output) -> Vec<(u64, u64)> {
    let mut positions: Vec<(u64, u64)> =
        json_lines(output).iter().map(|r| (r["partition"].as_u64().unwrap(), r["offset"].as_u64().unwrap())).collect();
    positions.sort_unstable();
    positions
}

/// Runs `check` on a local data directory and through a server on another one.
fn locally_and_through_a_server(mut check: impl FnMut(Via)) {
    let local = tempfile::tempdir().unwrap();
    check(Via::Local(local.path()));
    let served = tempfile::tempdir().unwrap();
    let server = Server::start(served.path(), &[]);
    check(Via::Server(&server));
}

/// Topic `t` with 3 partitions of 10 records each: value `p<P>-<i>` at offset i.
fn three_partitions_of_ten(via: Via) {
    via.ok(&["topic", "create", "t", "--partitions", "3"], "");
    for p in 0..3 {
        let lines: String = (0..10).map(|i| format!("p{p}-{i}\n")).collect();
        let acks = json_lines(&via.ok(&["produce", "-t", "t", "-p", &p.to_string()], &lines));
        assert_eq!(acks, vec![serde_json::json!({"partition": p, "first_offset": 0, "last_offset": 9, "count": 10})]);
    }
}

fn range(partition: u64, offsets: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    offsets.map(|o| (partition, o)).collect()
}

#[test]
fn kcat_flags_pick_partitions_relative_offsets_and_counts() {
    locally_and_through_a_server(|via| {
        three_partitions_of_ten(via);
        let consume = |args: &[&str]| positions(&via.ok(&[&["consume"], args].concat(), ""));
        let name = via.name();
        let last_three = [range(0, 7..10), range(2, 7..10)].concat();
        assert_eq!(consume(&["-t", "t", "-p", "0,2", "-o", "-3", "-e"]), last_three, "{name}");
        assert_eq!(consume(&["t", "--partition", "0", "-p", "2", "--offset=-3"]), last_three, "{name}");
        assert_eq!(consume(&["t", "-p", "1", "-o", "+8"]), range(1, 8..10), "{name}: +N after the first");
        assert_eq!(consume(&["t", "-p", "1,2", "-o", "9"]), [range(1, 9..10), range(2, 9..10)].concat(), "{name}");
        assert_eq!(consume(&["t", "-p", "0", "-o", "-100"]), range(0, 0..10), "{name}: clamped to the first");
        assert_eq!(consume(&["t", "-p", "0", "-o", "-0"]), vec![], "{name}: -0 is the end");
        for (spec, count) in [("end", 0), ("latest", 0), ("beginning", 30), ("earliest", 30), ("start", 30)] {
            assert_eq!(consume(&["t", "-o", spec]).len(), count, "{name}: -o {spec}");
        }
        // A count is of records printed, over all partitions, whatever each partition holds.
        for count in ["0", "1", "4", "25", "30", "31"] {
            let expected = count.parse::<usize>().unwrap().min(30);
            assert_eq!(consume(&["t", "-c", count]).len(), expected, "{name}: -c {count}");
            assert_eq!(consume(&["t", "--max-records", count]).len(), expected, "{name}: --max-records {count}");
        }
        // Even following, where a partition with nothing to read would wait for ever.
        let (out, _) = via.ends_within(&["consume", "t", "--follow", "-c", "4"], Duration::from_secs(30));
        assert!(out.status.success() && positions(&out).len() == 4, "{name}: {}", stderr(&out));
        via.ok(&["topic", "create", "half-empty", "--partitions", "2"], "");
        via.ok(&["produce", "half-empty", "-p", "0"], "a\nb\nc\n");
        let (out, _) = via.ends_within(&["consume", "half-empty", "--follow", "-c", "2"], Duration::from_secs(30));
        assert_eq!(positions(&out), range(0, 0..2), "{name}: {}", stderr(&out));

        // -G: a group prints 5, commits, and resumes with the other 25 (-o stored says so).
        let first = consume(&["t", "-G", "g", "-c", "5"]);
        let rest = consume(&["t", "-G", "g", "-o", "stored"]);
        assert_eq!((first.len(), rest.len()), (5, 25), "{name}");
        let mut all = [first, rest].concat();
        all.sort_unstable();
        assert_eq!(all, [range(0, 0..10), range(1, 0..10), range(2, 0..10)].concat(), "{name}");

        for (args, needle) in [
            (vec!["t", "-o", "stored"], "-G/--group"),
            (vec!["t", "-o", "nope"], "\"nope\" is not an offset"),
            (vec!["t", "-o", "3", "--from-offset", "2"], "more than one start"),
            (vec!["t", "-o", "3", "-o", "end"], "more than one start"),
            (vec!["t", "-o", "e@-1h", "--to-offset", "3"], "more than one stop"),
            (vec!["t", "-e", "--follow"], "--follow"),
            (vec!["t", "-t", "t"], "cannot be used with"),
            (vec!["t", "-p", "7"], "partition 7"),
            (vec!["t", "-p", "0,7", "-o", "-3"], "partition 7"),
            (vec!["t", "-o", "-10", "--as-of", "-1s"], "--as-of"),
        ] {
            let err = via.fails(&[&["consume"], args.as_slice()].concat());
            assert!(err.contains(needle), "{name} {args:?}: {needle:?} not in {err}");
        }
    });
}

#[test]
fn times_and_offsets_may_start_with_a_hyphen_without_equals() {
    locally_and_through_a_server(|via| {
        via.ok(&["topic", "create", "t", "--partitions", "2"], "");
        via.ok(&["produce", "t"], "a\nb\nc\n");
        let consume = |args: &[&str]| json_lines(&via.ok(&[&["consume", "t"], args].concat(), "")).len();
        let name = via.name();
        assert_eq!(consume(&["--from-time", "-1h"]), 3, "{name}");
        assert_eq!(consume(&["--from-time", "-1h", "--to-time", "-1h"]), 0, "{name}");
        assert_eq!(consume(&["--to-time", "-1h"]), 0, "{name}");
        assert_eq!(consume(&["-o", "s@-1h"]), 3, "{name}");
        assert_eq!(consume(&["-o", "s@-1h", "-o", "e@-1h"]), 0, "{name}");
        assert_eq!(consume(&["-o", "e@-1h"]), 0, "{name}");
        assert_eq!(consume(&["-o", "s@2999-01-01"]), 0, "{name}");
        let offsets = json_lines(&via.ok(&["offsets", "t", "--time", "-1h"], ""));
        assert_eq!(offsets.iter().map(|o| &o["offset"]).collect::<Vec<_>>(), [&Value::from(0); 2], "{name}");
        assert_eq!(json_lines(&via.ok(&["snapshot", "--as-of", "-1d", "t"], "")).len(), 2, "{name}");
        let err = via.fails(&["consume", "t", "-o", "s@1772546520"]);
        assert!(err.contains("s:1772546520"), "{name}: bare epoch seconds get the hint: {err}");
    });
    // Commands that only run on a data directory.
    let dir = tempfile::tempdir().unwrap();
    let local = Via::Local(dir.path());
    local.ok(&["topic", "create", "t"], "");
    local.ok(&["produce", "t"], "a\n");
    local.ok(&["consume", "t", "-G", "g"], "");
    let seek = json_lines(&local.ok(&["group", "seek", "g", "--topic", "t", "--to-time", "-1h", "--dry-run"], ""));
    assert!(!seek.is_empty(), "{seek:?}");
}

/// Records with every kind of key, value and header the envelope carries.
const MIXED_RECORDS: &str = concat!(
    r#"{"key":{"base64":"/wAK"},"value":{"base64":"gIH/AA=="},"headers":{"bin":{"base64":"/w=="},"txt":"é"},"timestamp":1772546520000}"#,
    "\n",
    r#"{"key":"","value":"","timestamp":1772546520001}"#,
    "\n",
    r#"{"value":"naïve ✓ 😀","headers":{},"timestamp":1772546520002}"#,
    "\n",
    r#"{"key":"k","value":"{\"base64\":\"AAAA\"}","headers":{"empty":""},"timestamp":1772546520003}"#,
    "\n",
    r#"{"key":null,"value":{"amount":1},"timestamp":"2026-03-03T14:02:00.004Z"}"#,
    "\n",
);

/// Every record of topic `topic`'s partition 0, as the library reads it.
fn stored_records(dir: &Path, topic: &str) -> Vec<tierlog::Record> {
    let config = tierlog::config::Config { data_dir: dir.to_path_buf(), ..Default::default() };
    let log = tierlog::Log::open_read_only(config).unwrap();
    let partition = log.topic(topic).unwrap().partition(0).unwrap().clone();
    let reader = tierlog::reader::Reader::new(log);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let records = runtime.block_on(reader.read(&partition, 0, 1 << 20)).unwrap();
    records.into_iter().map(|stored| stored.record).collect()
}

#[test]
fn json_output_produced_back_copies_every_record_byte_for_byte() {
    let check = |via: Via, data_dir: &Path| {
        for topic in ["src", "copy"] {
            via.ok(&["topic", "create", topic, "--partitions", "1"], "");
        }
        via.ok(&["produce", "src", "--input-format", "json"], MIXED_RECORDS);
        let consumed = via.ok(&["consume", "-t", "src", "-f", "json"], "");
        let copied =
            via.ok(&["produce", "-t", "copy", "--input-format", "json"], &String::from_utf8(consumed.stdout).unwrap());
        assert_eq!(json_lines(&copied)[0]["count"], 5, "{}", via.name());

        let original = stored_records(data_dir, "src");
        assert_eq!(original[0].key.as_deref(), Some(&[0xff, 0, b'\n'][..]), "base64 input is decoded");
        assert_eq!(original[0].value, [0x80, 0x81, 0xff, 0]);
        assert_eq!(
            original[0].headers,
            [("bin".to_string(), vec![0xff]), ("txt".to_string(), "é".as_bytes().to_vec())]
        );
        assert_eq!((original[1].key.as_deref(), original[1].value.as_slice()), (Some(&b""[..]), &b""[..]));
        assert_eq!((original[2].key.as_deref(), original[2].value.as_slice()), (None, "naïve ✓ 😀".as_bytes()));
        assert_eq!(original[3].value, br#"{"base64":"AAAA"}"#, "text that looks like base64 stays text");
        assert_eq!((original[4].key.as_deref(), original[4].value.as_slice()), (None, &br#"{"amount":1}"#[..]));
        assert_eq!(stored_records(data_dir, "copy"), original, "{}: keys, values, headers, timestamps", via.name());
    };
    let local = tempfile::tempdir().unwrap();
    check(Via::Local(local.path()), local.path());
    let served = tempfile::tempdir().unwrap();
    let server = Server::start(served.path(), &[]);
    check(Via::Server(&server), served.path());
}

#[test]
fn templates_and_raw_output_print_the_same_bytes_locally_and_through_a_server() {
    let mut printed = Vec::new();
    locally_and_through_a_server(|via| {
        via.ok(&["topic", "create", "t", "--partitions", "1"], "");
        via.ok(&["produce", "t", "--input-format", "json"], MIXED_RECORDS);
        let template = via.ok(&["consume", "t", "-f", r"%t|%p|%o|%T|%K:%k|%S:%v|%h\t%%\n"], "").stdout;
        let raw = via.ok(&["consume", "t", "--format", "raw", "-c", "3"], "").stdout;
        let json = via.ok(&["consume", "t", "-f", "json"], "").stdout;
        let default = via.ok(&["consume", "t"], "").stdout;
        assert_eq!(json, default, "{}: json is the default", via.name());
        let err = via.fails(&["consume", "t", "-f", "jsno"]);
        assert!(err.contains("not a format") && err.contains("%k key"), "{}: {err}", via.name());
        let err = via.fails(&["consume", "t", "-f", "%q"]);
        assert!(err.contains("unknown token %q"), "{}: {err}", via.name());
        printed.push((template, raw, json));
    });
    let [(template, raw, json), served]: [_; 2] = printed.try_into().unwrap();
    let mut expected = b"t|0|0|1772546520000|3:\xff\x00\n|4:\x80\x81\xff\x00|bin=\xff,txt=\xc3\xa9\t%\n".to_vec();
    expected.extend_from_slice(b"t|0|1|1772546520001|0:|0:|\t%\n");
    let text = "naïve ✓ 😀";
    expected.extend_from_slice(format!("t|0|2|1772546520002|-1:|{}:{text}|\t%\n", text.len()).as_bytes());
    expected.extend_from_slice(b"t|0|3|1772546520003|1:k|17:{\"base64\":\"AAAA\"}|empty=\t%\n");
    expected.extend_from_slice(b"t|0|4|1772546520004|-1:|12:{\"amount\":1}|\t%\n");
    assert_eq!(String::from_utf8_lossy(&template), String::from_utf8_lossy(&expected));
    assert_eq!(template, expected);
    assert_eq!(raw, [&b"\x80\x81\xff\x00\n"[..], b"\n", "naïve ✓ 😀\n".as_bytes()].concat());
    // The server's JSON lines, re-rendered by the client, are the local ones but for the
    // append times of the two logs.
    let without_append_time = |bytes: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                assert!(v.as_object_mut().unwrap().remove("append_time").is_some());
                v
            })
            .collect()
    };
    assert_eq!(without_append_time(&json), without_append_time(&served.2));
    assert_eq!((template, raw), (served.0, served.1), "the same bytes through a server");
}

#[test]
fn a_follow_with_an_idle_timeout_exits_zero_once_nothing_arrived_for_that_long() {
    locally_and_through_a_server(|via| {
        via.ok(&["topic", "create", "t", "--partitions", "2"], "");
        via.ok(&["produce", "t", "-p", "0"], "a\nb\n");
        let follower = std::thread::scope(|scope| {
            let follower = scope.spawn(|| {
                via.ends_within(&["consume", "t", "--follow", "--idle-timeout", "3s"], Duration::from_secs(60))
            });
            std::thread::sleep(Duration::from_millis(1000));
            via.ok(&["produce", "t", "-p", "1"], "late\n");
            follower.join().unwrap()
        });
        let (out, elapsed) = follower;
        assert!(out.status.success(), "{}: {}", via.name(), stderr(&out));
        let values: Vec<Value> = json_lines(&out).iter().map(|r| r["value"].clone()).collect();
        assert_eq!(values, ["a", "b", "late"], "{}", via.name());
        // The late record (at ≥ 1 s) restarted the 3 s clock.
        assert!(elapsed >= Duration::from_secs(4), "{}: exited after {elapsed:?}", via.name());
        let err = via.fails(&["consume", "t", "--idle-timeout", "3s"]);
        assert!(err.contains("--follow"), "{}: {err}", via.name());
        let err = via.fails(&["consume", "t", "--follow", "--idle-timeout", "30"]);
        assert!(err.contains("e.g. 30s"), "{}: {err}", via.name());
    });
}

/// `consume | head -1`, in every output format and through a server: the pipe closes under
/// the writer; that ends the command quietly, with success, as for any Unix filter (it printed
/// "error: Broken pipe" and exited 1).
#[test]
fn consume_into_a_pipe_closed_early_exits_zero_quietly_in_every_format_and_through_a_server() {
    locally_and_through_a_server(|via| {
        via.ok(&["topic", "create", "t", "--partitions", "2"], "");
        let input: String = (0..20_000).map(|i| format!("record {i} {}\n", "x".repeat(100))).collect();
        via.ok(&["produce", "t"], &input);
        for format in ["json", "raw", r"%o %v\n"] {
            let mut consumer = via
                .command(&["consume", "t", "-f", format])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut first = String::new();
            BufReader::new(consumer.stdout.take().unwrap()).read_line(&mut first).unwrap(); // then dropped
            let out = consumer.wait_with_output().unwrap();
            assert!(first.contains("record "), "{first}");
            assert!(out.status.success(), "{} {format}: exit {:?}: {}", via.name(), out.status, stderr(&out));
            assert!(stderr(&out).is_empty(), "{} {format}: {}", via.name(), stderr(&out));
        }
    });
}
