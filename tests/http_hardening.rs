//! The HTTP and Kafka front ends against hostile or vanished peers, run in-process on
//! loopback ports (the real `serve` functions, on a real log in a temporary directory):
//! silent sockets, the connection cap, HTTP/2 limits and pings, TCP keepalive, idle NDJSON
//! follows, the Kafka OffsetCommit/DeleteGroups order, log injection through Kafka fields, and
//! the audit lines of `tierlog group seek|delete`.

mod common;
use common::{BIN, Captured};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tierlog::config::{Config, TokenConfig};
use tierlog::serve::http::{AppState, router};
use tierlog::{Log, Record};
use tower::ServiceExt;

/// A log in `dir` with topics `t` (one partition, three records) and `u` (one partition).
fn log(config: Config) -> Log {
    let log = Log::open(config).unwrap();
    let t = log.create_topic("t", 1).unwrap();
    log.create_topic("u", 1).unwrap();
    let records: Vec<Record> =
        (0..3).map(|i| Record { timestamp: 1_000 + i, value: vec![b'v'; 8], ..Record::default() }).collect();
    t.partition(0).unwrap().append(&records, 1_000).unwrap();
    log
}

fn config(dir: &std::path::Path) -> Config {
    Config { data_dir: dir.to_path_buf(), ..Config::default() }
}

fn token(name: &str, secret: &str, read: &[&str], groups: &[&str]) -> TokenConfig {
    use sha2::Digest;
    TokenConfig {
        name: name.into(),
        token_sha256: hex::encode(sha2::Sha256::digest(secret.as_bytes())),
        read: read.iter().map(|s| s.to_string()).collect(),
        write: vec![],
        admin: false,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        metrics: false,
    }
}

/// The application state of `log`, which never shuts down during the test.
fn state(log: Log) -> Arc<AppState> {
    let (keep, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(keep);
    AppState::new(log, shutdown, None).unwrap()
}

/// `tierlog serve`'s HTTP listener on a loopback port, on `runtime`.
fn serve_http(runtime: &tokio::runtime::Runtime, config: Config) -> SocketAddr {
    let limits = config.server.clone();
    serve_log(runtime, &limits, log(config))
}

/// `log` served over HTTP with `limits` on a loopback port, on `runtime`.
fn serve_log(runtime: &tokio::runtime::Runtime, limits: &tierlog::config::ServerSection, log: Log) -> SocketAddr {
    let limits = limits.clone();
    let app = router(state(log));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        tierlog::serve::http::serve(listener, app, &limits, std::future::pending()).await;
    });
    addr
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Sends an HTTP/1.1 GET on `socket` and reads its answer (head and a body of
/// Content-Length bytes), the connection staying open.
fn get(socket: &mut TcpStream, path: &str, token: Option<&str>) -> std::io::Result<String> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(socket, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n")?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                .and_then(|l| l.trim().parse::<usize>().ok());
            if length.is_none_or(|l| body.len() >= l) {
                return Ok(text);
            }
        }
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&answer).to_string());
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closed `socket` (EOF or reset) within `within`.
fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut rest = Vec::new();
    match socket.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// 80 sockets that send nothing and 20 that send the start of the HTTP/2 preface, against a
/// cap of 16 connections: hyper-util reads the protocol version before any HTTP/1 timer runs,
/// so without a timer of its own each would hold its slot forever and lock everyone out.
/// Each is closed within `header_read_timeout_ms`, and a normal client is served.
#[test]
fn silent_sockets_and_partial_http2_prefaces_do_not_lock_out_a_normal_client() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let mut config = config(dir.path());
    (config.server.max_connections, config.server.header_read_timeout_ms) = (16, 300);
    let addr = serve_http(&runtime, config);
    let mut silent: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut socket = TcpStream::connect(addr).unwrap();
            if i >= 80 {
                socket.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
            }
            socket
        })
        .collect();
    let started = Instant::now();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = get(&mut client, "/healthz", None).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Queued behind 100 sockets let go 16 at a time, every 300 ms: about 2 s.
    assert!(started.elapsed() < Duration::from_secs(6), "served after {:?}", started.elapsed());
    for socket in silent.iter_mut().step_by(7) {
        assert!(closed_within(socket, Duration::from_secs(5)), "a silent socket is still open after 5 s");
    }
}

/// `server.max_connections` holds: with two connections open (idle keep-alive), a third is
/// not served until one of them closes.
#[test]
fn a_connection_past_the_cap_waits_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let mut config = config(dir.path());
    (config.server.max_connections, config.server.header_read_timeout_ms) = (2, 30_000);
    let addr = serve_http(&runtime, config);
    let mut open: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for socket in &mut open {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(get(socket, "/healthz", None).unwrap().starts_with("HTTP/1.1 200"));
    }
    let mut third = TcpStream::connect(addr).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let waiting = get(&mut third, "/healthz", None);
    assert!(waiting.is_err(), "a third connection was served past a cap of 2: {waiting:?}");
    drop(open.remove(0));
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![0u8; 256];
    let n = third.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads one HTTP/2 frame: (type, payload).
fn read_h2_frame(socket: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).unwrap();
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; length];
    socket.read_exact(&mut payload).unwrap();
    (head[3], payload)
}

/// HPACK "literal header field without indexing, new name" for short names and values.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

/// The server's HTTP/2 SETTINGS advertise `server.http2_max_concurrent_streams`
/// (SETTINGS_MAX_CONCURRENT_STREAMS, id 3), not hyper's default of 200.
#[test]
fn http2_connections_advertise_the_configured_stream_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let mut config = config(dir.path());
    config.server.http2_max_concurrent_streams = 8;
    let addr = serve_http(&runtime, config);
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.write_all(&[H2_PREFACE, &h2_frame(4, 0, 0, &[])].concat()).unwrap();
    let (kind, payload) = read_h2_frame(&mut socket);
    assert_eq!(kind, 4, "the server's first frame is its SETTINGS");
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32::from_be_bytes([s[2], s[3], s[4], s[5]])))
        .collect();
    assert!(settings.contains(&(3, 8)), "SETTINGS_MAX_CONCURRENT_STREAMS = 8 expected: {settings:?}");
}

/// An HTTP/2 client opens a follow and then stops reading, answering nothing (as one whose
/// machine vanished or whose process hangs): the server's pings go unanswered, it closes the
/// connection within `keepalive_ms` or so, and the token's follow slot is free again.
#[test]
fn an_http2_client_that_stops_answering_gives_back_its_follow_slot() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let mut config = config(dir.path());
    config.server.tokens = vec![token("tail", "t-secret", &["*"], &[])];
    (config.server.max_follow_streams_per_token, config.server.keepalive_ms) = (1, 300);
    let addr = serve_http(&runtime, config);
    let path = "/v1/topics/t/partitions/0/records?from_offset=3&follow=true";
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "127.0.0.1"),
        (":path", path),
        ("authorization", "Bearer t-secret"),
    ] {
        hpack_literal(&mut headers, name, value);
    }
    // END_STREAM | END_HEADERS on stream 1; then this client never reads again.
    let mut hung = TcpStream::connect(addr).unwrap();
    hung.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    hung.write_all(&[H2_PREFACE, &h2_frame(4, 0, 0, &[]), &h2_frame(1, 0x5, 1, &headers)].concat()).unwrap();
    // Up to the answer's HEADERS: the follow is open and holds the token's slot.
    while read_h2_frame(&mut hung).0 != 1 {}
    let follow = |within: Duration| {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(within)).unwrap();
        let answer = get(&mut socket, path, Some("t-secret")).unwrap_or_default();
        answer.split(' ').nth(1).unwrap_or("none").to_string()
    };
    assert_eq!(follow(Duration::from_secs(5)), "429", "the hung client's follow holds the token's only slot");
    let started = Instant::now();
    loop {
        // A 200 follow never ends: its head is read, then the socket dropped (freeing it).
        if follow(Duration::from_millis(500)) == "200" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the hung client's follow slot was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hung);
}

/// Local port, remote port and the "tr" (timer) column of each IPv4 TCP socket.
fn tcp_sockets() -> Vec<(u16, u16, String)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (port(fields[1]), port(fields[2]), fields[5].split(':').next().unwrap().to_string())
        })
        .collect()
}

/// Accepted connections have TCP keepalive on (timer 2 of /proc/net/tcp: the keepalive
/// timer), so the kernel finds a peer whose machine vanished without a FIN or RST.
#[test]
fn accepted_http_connections_have_tcp_keepalive() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let addr = serve_http(&runtime, config(dir.path()));
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(get(&mut socket, "/healthz", None).unwrap().starts_with("HTTP/1.1 200"));
    let client_port = socket.local_addr().unwrap().port();
    let server_side = || -> Vec<_> {
        tcp_sockets().into_iter().filter(|(local, remote, _)| *local == addr.port() && *remote == client_port).collect()
    };
    // Until the answer is acknowledged the retransmit timer (1) runs instead.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server_side().first().is_none_or(|(_, _, timer)| timer != "02") {
        assert!(Instant::now() < deadline, "the server's socket runs no keepalive timer: {:?}", server_side());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An idle NDJSON follow sends an empty line every `server.sse_keepalive_ms`: a proxy does not
/// cut it, and the write fails once the client is gone, freeing its slot. Records still arrive.
#[test]
fn an_idle_ndjson_follow_sends_empty_lines() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let mut config = config(dir.path());
        config.server.sse_keepalive_ms = 100;
        let log = log(config);
        let app = router(state(log.clone()));
        let request = Request::builder()
            .uri("/v1/topics/u/partitions/0/records?follow=true")
            .header("host", "127.0.0.1")
            .body(Body::empty())
            .unwrap();
        let mut body = app.oneshot(request).await.unwrap().into_body();
        let mut seen = String::new();
        while seen.len() < 2 {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("a keep-alive in 5 s");
            seen.push_str(std::str::from_utf8(frame.unwrap().unwrap().data_ref().unwrap()).unwrap());
        }
        assert_eq!(seen, "\n\n");
        let record = Record { timestamp: 1, value: b"late".to_vec(), ..Record::default() };
        log.topic("u").unwrap().partition(0).unwrap().append(&[record], 1).unwrap();
        let mut data = String::new();
        while !data.contains("late") {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the record");
            data.push_str(std::str::from_utf8(frame.unwrap().unwrap().data_ref().unwrap()).unwrap());
        }
    });
}

/// Reading a group's offsets needs the group right (as Kafka's OffsetFetch does), not only
/// read on the topic.
#[test]
fn reading_group_offsets_over_http_needs_the_group_right() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let mut config = config(dir.path());
        config.server.tokens =
            vec![token("reader", "r-secret", &["*"], &[]), token("billing", "b-secret", &["*"], &["billing-*"])];
        let app = router(state(log(config)));
        let status = |token: &'static str, group: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::builder()
                    .uri(format!("/v1/groups/{group}/offsets?topic=t"))
                    .header("host", "127.0.0.1")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap();
                app.oneshot(request).await.unwrap().status().as_u16()
            }
        };
        assert_eq!(status("r-secret", "billing-eu").await, 403, "topic read alone does not show a group");
        assert_eq!(status("b-secret", "fraud").await, 403);
        assert_eq!(status("b-secret", "billing-eu").await, 200);
        assert_eq!(status("wrong", "billing-eu").await, 401);
    });
}

/// A JSON-array produce stops parsing at `max_records_per_request`: eleven elements and then
/// garbage, with a limit of ten, is 413 (the limit), not 400 (the garbage), so parsing never
/// reached the garbage.
#[test]
fn a_json_array_produce_stops_parsing_at_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let mut config = config(dir.path());
        config.server.max_records_per_request = 10;
        let app = router(state(log(config)));
        let body = format!("[{}, this is not JSON", ["0"; 11].join(","));
        let request = Request::builder()
            .method("POST")
            .uri("/v1/topics/t/records")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("max_records_per_request = 10"), "{text}");
    });
}

/// A minimal Kafka client over one connection.
struct Kafka {
    stream: TcpStream,
    correlation: i32,
}

impl Kafka {
    fn connect(addr: SocketAddr) -> Kafka {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Kafka { stream, correlation: 0 }
    }

    fn call<Req: Encodable, Resp: Decodable + HeaderVersion>(&mut self, key: ApiKey, version: i16, body: &Req) -> Resp {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("hardening")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, key.request_header_version(version)).unwrap();
        body.encode(&mut frame, version).unwrap();
        let mut out = Vec::new();
        out.put_i32(frame.len() as i32);
        out.extend_from_slice(&frame);
        self.stream.write_all(&out).unwrap();
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).unwrap();
        let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut answer).unwrap();
        let mut answer = Bytes::from(answer);
        ResponseHeader::decode(&mut answer, Resp::header_version(version)).unwrap();
        Resp::decode(&mut answer, version).unwrap()
    }
}

/// The Kafka listener on a loopback port, on `runtime`, over `log`.
fn serve_kafka(runtime: &tokio::runtime::Runtime, log: Log) -> SocketAddr {
    let state = state(log);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = Arc::new(tierlog::kafka::Broker::new(state, &listener).unwrap());
    let (keep, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(keep);
    runtime.spawn(tierlog::kafka::serve(listener, broker, shutdown));
    addr
}

fn name(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Offset 1 of partition 0 of `topic`, committed for group `g` outside any generation.
fn commit_request(topic: &str) -> OffsetCommitRequest {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let partition = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1);
    OffsetCommitRequest::default().with_group_id(GroupId(name("g"))).with_generation_id_or_member_epoch(-1).with_topics(
        vec![OffsetCommitRequestTopic::default().with_name(TopicName(name(topic))).with_partitions(vec![partition])],
    )
}

/// Group `g`'s committed offsets of partition 0 in `t` and `u` (-1: none).
fn fetch_offsets(kafka: &mut Kafka) -> Vec<i64> {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let topics = ["t", "u"]
        .map(|t| OffsetFetchRequestTopic::default().with_name(TopicName(name(t))).with_partition_indexes(vec![0]));
    let request = OffsetFetchRequest::default().with_group_id(GroupId(name("g"))).with_topics(Some(topics.to_vec()));
    let answer: OffsetFetchResponse = kafka.call(ApiKey::OffsetFetch, 1, &request);
    answer.topics.iter().map(|t| t.partitions[0].committed_offset).collect()
}

/// Whether a process waits for a flock on the file with inode `inode` (/proc/locks marks
/// waiters with "->").
fn flock_waited_on(inode: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|l| l.contains("->") && l.split_whitespace().any(|f| f.ends_with(&format!(":{inode}"))))
}

/// An OffsetCommit whose check passed is parked before its write (the test holds the group's
/// file lock of topic `t`); a DeleteGroups of the group arrives meanwhile. The delete must wait
/// for the commit, so that once both are done the group has no offsets. Without that order the
/// delete finishes first (it deletes `u`, which it can lock) and the parked commit then brings
/// `g` back with offsets in `t`.
#[test]
fn an_offset_commit_in_flight_does_not_bring_back_a_deleted_group() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let log = log(config(dir.path()));
    let addr = serve_kafka(&runtime, log);
    for round in 0..3 {
        tierlog::groups::commit(dir.path(), "g", "u", &[(0, 1)].into()).unwrap();
        let lock_path = dir.path().join("groups/g/t.lock");
        let held = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).unwrap();
        held.lock().unwrap();
        let inode = std::fs::metadata(&lock_path).unwrap().ino();
        let committer = std::thread::spawn(move || {
            let answer: OffsetCommitResponse = Kafka::connect(addr).call(ApiKey::OffsetCommit, 2, &commit_request("t"));
            answer.topics[0].partitions[0].error_code
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flock_waited_on(inode) {
            assert!(Instant::now() < deadline, "round {round}: the commit never reached the group's lock");
            std::thread::sleep(Duration::from_millis(5));
        }
        let deleter = std::thread::spawn(move || {
            let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(name("g"))]);
            let answer: DeleteGroupsResponse = Kafka::connect(addr).call(ApiKey::DeleteGroups, 0, &request);
            answer.results[0].error_code
        });
        std::thread::sleep(Duration::from_millis(300)); // a delete not held back is done by now
        drop(held);
        assert_eq!(committer.join().unwrap(), 0, "round {round}: the commit was checked before the delete");
        assert_eq!(deleter.join().unwrap(), 0, "round {round}");
        let offsets = fetch_offsets(&mut Kafka::connect(addr));
        assert_eq!(offsets, [-1, -1], "round {round}: the deleted group came back with offsets");
    }
}

/// Client strings that the Kafka listener logs (a SASL mechanism, before authentication; a
/// transactional id) are escaped: a CR/LF in them cannot forge a line of the text log.
/// (The subscriber is this test binary's global one; see tests/http_router.rs.)
#[test]
fn kafka_fields_with_cr_lf_cannot_forge_log_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("tierlog=info")
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets the global subscriber");
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let addr = serve_kafka(&runtime, log(config(dir.path())));
    let mut kafka = Kafka::connect(addr);
    let handshake = SaslHandshakeRequest::default().with_mechanism(name("PLAIN\r\nFORGED mechanism line"));
    let _: SaslHandshakeResponse = kafka.call(ApiKey::SaslHandshake, 1, &handshake);
    let mut kafka = Kafka::connect(addr);
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(name("tx\r\nFORGED transactional line"))))
        .with_transaction_timeout_ms(60_000);
    let _: InitProducerIdResponse = kafka.call(ApiKey::InitProducerId, 0, &init);
    let deadline = Instant::now() + Duration::from_secs(5);
    while captured.text().matches("FORGED").count() < 2 {
        assert!(Instant::now() < deadline, "both refusals are logged: {}", captured.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = captured.text();
    assert!(!text.contains('\r'), "a raw CR reached the log: {text:?}");
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "a forged line: {text}");
}

/// `tierlog group seek` and `group delete` write the same audit lines as an HTTP or Kafka
/// commit and DeleteGroups, when the server keeps an audit log (tokens configured).
#[test]
fn cli_group_seek_and_delete_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    drop(log(config(dir.path())));
    let conf = dir.path().join("tierlog.toml");
    let sha = token("ops", "o-secret", &[], &[]).token_sha256;
    std::fs::write(
        &conf,
        format!("[server]\ntokens = [{{ name = \"ops\", token_sha256 = \"{sha}\", admin = true }}]\n"),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(BIN);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
            command.env_remove(k);
        }
        let out = command.arg("--data-dir").arg(dir.path()).env("TIERLOG_CONFIG", &conf).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    cli(&["group", "seek", "g", "--topic", "t", "--to-offset", "2"]);
    cli(&["group", "seek", "g", "--topic", "t", "--to-offset", "1", "--dry-run"]);
    cli(&["group", "delete", "g"]);
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one line per change, none for a dry run: {audit}");
    let who = tierlog::audit::os_actor();
    assert_eq!(
        (lines[0]["action"].as_str(), lines[0]["who"].as_str(), lines[0]["group"].as_str(), lines[0]["topic"].as_str()),
        (Some("commit"), Some(who.as_str()), Some("g"), Some("t"))
    );
    assert_eq!(lines[0]["offsets"], serde_json::json!({"0": 2}));
    assert_eq!((lines[1]["action"].as_str(), lines[1]["group"].as_str()), (Some("delete_group"), Some("g")));
    assert_eq!(lines[1]["offsets"], serde_json::json!({"t": {"0": 2}}));
}

/// An object-store outage while reading (connection refused: the `Store` variant, as for a
/// stopped store or a 5xx from S3) is 503 with Retry-After, like a timeout; not 500.
#[test]
fn an_object_store_outage_is_503_with_retry_after() {
    use axum::response::IntoResponse;
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let outage = tierlog_tiering::Error::Store {
        store: "s3://bucket".into(),
        action: "GET segments/0001".into(),
        hint: "",
        source: Box::new(object_store::Error::Generic { store: "S3", source: Box::new(refused) }),
    };
    let response = tierlog::serve::http::ApiError::from(tierlog::Error::Remote(outage)).into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
}

/// Topic `u` of `log` with 32 MiB of records.
fn fill_32_mib(log: &Log) {
    let big: Vec<Record> = (0..64).map(|_| Record { value: vec![b'x'; 64 * 1024], ..Record::default() }).collect();
    for _ in 0..8 {
        log.topic("u").unwrap().partition(0).unwrap().append(&big, 2_000).unwrap();
    }
}

/// A connection whose receive buffer is small (16 KiB), so that what the server can push
/// into the kernel is far below a 32 MiB response on any host.
fn connect_small_buffer(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// Sends `requests` fetches of topic `u` (pipelined) on a new connection and reads the first
/// bytes of the answer, then never reads again: the server fills the socket buffers and waits.
fn fetch_and_stop_reading(addr: SocketAddr, requests: usize) -> TcpStream {
    let mut socket = connect_small_buffer(addr);
    for _ in 0..requests {
        write!(socket, "GET /v1/topics/u/partitions/0/records HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    }
    let mut head = [0u8; 1024];
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(socket.read(&mut head).unwrap() > 0, "the fetch started");
    socket
}

/// Whether the server ended `socket` (EOF or reset) within 10 s, reading what was buffered;
/// and how much that was.
fn ended_after_draining(socket: &mut TcpStream) -> (bool, usize) {
    let mut rest = vec![0u8; 1 << 20];
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut read = 0;
    loop {
        match socket.read(&mut rest) {
            Ok(0) => return (true, read),
            Ok(n) => read += n,
            Err(e) => return (e.kind() == std::io::ErrorKind::ConnectionReset, read),
        }
    }
}

/// Clients that stop reading a large response (or, over HTTP/2, grant no window) do not hold
/// their connection slots: with a cap of 2 and two such clients — one of them with a second
/// request pipelined behind the first — two more clients are served once the stalled ones
/// have taken nothing for `request_timeout_ms`, and the stalled connections are closed.
#[test]
fn clients_that_take_no_bytes_of_their_responses_do_not_hold_connection_slots() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let mut config = config(dir.path());
    // The idle timer is long, so only the stalled responses can free the slots.
    (config.server.max_connections, config.server.header_read_timeout_ms) = (2, 60_000);
    config.server.request_timeout_ms = 1_000;
    let limits = config.server.clone();
    let log = log(config);
    fill_32_mib(&log);
    let addr = serve_log(&runtime, &limits, log);
    let mut stalled = [fetch_and_stop_reading(addr, 1), fetch_and_stop_reading(addr, 2)];
    let started = Instant::now();
    // Both slots must come free (the stalled clients are not read meanwhile: reading would
    // let their responses go on): two more clients are served side by side, keeping their
    // connections open.
    let mut served = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let answer = get(&mut client, "/healthz", None).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        served.push(client);
    }
    assert!(started.elapsed() < Duration::from_secs(15), "served after {:?}", started.elapsed());
    for (i, socket) in stalled.iter_mut().enumerate() {
        let (ended, read) = ended_after_draining(socket);
        assert!(ended, "stalled client {i}'s connection is still open after {read} more bytes");
        assert!(read < 30 << 20, "stalled client {i} read {read} more bytes: its response was not cut off");
    }
}

/// A client that reads slowly but steadily (4 KiB every 500 ms, far less than one frame of a
/// fetch per `request_timeout_ms`) is not taken for a stalled one.
#[test]
fn a_slow_but_steady_reader_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let mut config = config(dir.path());
    config.server.request_timeout_ms = 1_000;
    let limits = config.server.clone();
    let log = log(config);
    fill_32_mib(&log);
    let addr = serve_log(&runtime, &limits, log);
    let mut socket = fetch_and_stop_reading(addr, 1);
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut chunk = vec![0u8; 4 * 1024];
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        let mut taken = 0;
        while taken < chunk.len() {
            match socket.read(&mut chunk[taken..]) {
                Ok(0) => panic!("the server ended a slow reader's response"),
                Ok(n) => taken += n,
                Err(e) => panic!("the server dropped a slow reader: {e}"),
            }
        }
    }
}

/// A client that asks for a large fetch and stops reading it. Shutdown gives in-flight
/// responses `request_timeout_ms` and then returns (so `serve` flushes the log and exits)
/// instead of waiting for that connection forever. (The stall watchdog now drops such a
/// connection within as long, so this holds by either path.)
#[test]
fn a_client_that_stops_reading_its_response_does_not_hold_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.server.request_timeout_ms = 1_000;
    let limits = config.server.clone();
    let log = log(config);
    fill_32_mib(&log);
    let runtime = runtime();
    let app = router(state(log));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime.spawn(async move {
        tierlog::serve::http::serve(listener, app, &limits, async move { drop(stopped.await) }).await;
    });
    let socket = fetch_and_stop_reading(addr, 1);
    std::thread::sleep(Duration::from_millis(500)); // the server fills the socket buffers and waits
    stop.send(()).unwrap();
    let ended = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await });
    assert!(ended.is_ok(), "serve still waiting for a client that stopped reading, 10 s after shutdown began");
    drop(socket);
}
