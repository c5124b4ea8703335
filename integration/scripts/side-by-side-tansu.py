#!/usr/bin/env python3
"""tierlog and tansu side by side: the same records, the same client (librdkafka through
confluent-kafka), the same S3 server (moto), one after the other on this machine.

Measures, for each broker:
  - produce: records/s for N records of R bytes (acks=all, librdkafka's batching);
  - replay: records/s consuming the partition from offset 0 once the history is in S3
    (tierlog: its sealed segments tiered and deleted locally, the active one still local;
    tansu keeps everything in S3);
  - offsetsForTimes: p50/p99 latency of 50 lookups at times spread over the produce.
and prints one JSON object with both brokers' figures and tierlog ÷ tansu ratios.

Not part of CI (tansu takes ~20 minutes to install). Usage:
  cargo install tansu@0.6.0 --features dynostore --locked
  cargo build --release
  integration/scripts/side-by-side-tansu.py --tierlog target/release/tierlog --tansu ~/.cargo/bin/tansu
Needs: moto[server], boto3, confluent-kafka (pip).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "sbs"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sbs", "AWS_SECRET_ACCESS_KEY": "sbs-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{what} is not listening on {port} after {seconds} s")


def start_moto(work):
    port = free_port()
    log = open(os.path.join(work, "moto.log"), "w")
    process = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    wait_port(port, "moto_server", process)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    for bucket in ("tierlog-sbs", "tansu-sbs"):
        s3.create_bucket(Bucket=bucket)
    return process, endpoint


def start_tierlog(binary, work, endpoint):
    data = os.path.join(work, "tierlog-data")
    config = os.path.join(work, "tierlog.toml")
    with open(config, "w") as f:
        f.write(f'''data_dir = "{data}"
[segment]
max_bytes = 4194304
[remote]
url = "s3://tierlog-sbs/sbs"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
[tiering]
local_retention_bytes = 0
interval_ms = 200
''')
    http, kafka = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLOG_") and not k.startswith("AWS_")}
    env.update(CREDENTIALS)
    log = open(os.path.join(work, "tierlog.log"), "w")
    process = subprocess.Popen([binary, "--config", config, "serve", "--listen", f"127.0.0.1:{http}",
                                "--kafka-listen", f"127.0.0.1:{kafka}"], stdout=log, stderr=log, env=env)
    wait_port(kafka, "tierlog", process)
    return process, kafka, f"http://127.0.0.1:{http}"


def start_tansu(binary, work, endpoint):
    kafka = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CREDENTIALS)
    env.update({"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"})
    log = open(os.path.join(work, "tansu.log"), "w")
    url = f"tcp://127.0.0.1:{kafka}"
    process = subprocess.Popen([binary, "broker", "--kafka-listener-url", url, "--kafka-advertised-listener-url", url,
                                "--storage-engine", "s3://tansu-sbs/"], stdout=log, stderr=log, env=env, cwd=work)
    wait_port(kafka, "tansu", process)
    return process, kafka


def create_topic(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)]).values():
        future.result(30)


def produce(bootstrap, records, record_bytes):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 1 << 20, "enable.idempotence": False})
    value = b"x" * record_bytes
    failures = []
    times = []
    started = time.time()
    for i in range(records):
        while True:
            try:
                producer.produce(TOPIC, value=value, key=str(i).encode(), partition=0,
                                 on_delivery=lambda err, msg: failures.append(err) if err else None)
                break
            except BufferError:
                producer.poll(0.05)
        if i % (records // 50 or 1) == 0:
            times.append(int(time.time() * 1000))
    left = producer.flush(120)
    seconds = time.time() - started
    if left or failures:
        sys.exit(f"produce to {bootstrap}: {left} undelivered, {len(failures)} failed: {failures[:3]}")
    return {"records_per_s": round(records / seconds, 1), "seconds": round(seconds, 2)}, times


def replay(bootstrap, records):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sbs-{time.time()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                         "max.partition.fetch.bytes": 16777216})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    seen, started = 0, time.time()
    deadline = started + 300
    while seen < records and time.time() < deadline:
        for message in consumer.consume(10000, 1.0):
            if message.error():
                sys.exit(f"consume from {bootstrap}: {message.error()}")
            seen += 1
    seconds = time.time() - started
    if seen < records:
        sys.exit(f"consume from {bootstrap}: {seen} of {records} records in 300 s")
    figures = {"records_per_s": round(records / seconds, 1), "seconds": round(seconds, 2)}
    return figures, consumer


def offsets_for_times(consumer, times):
    latencies = []
    for t in times:
        started = time.perf_counter()
        consumer.offsets_for_times([TopicPartition(TOPIC, 0, t)], 10)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {"lookups": len(latencies), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2)}


def tierlog_history_in_s3(http, records):
    """Waits until every sealed segment is tiered and deleted locally; the share of records
    below the local start offset (in S3 only)."""
    deadline = time.time() + 120
    previous, start = None, 0
    while time.time() < deadline:
        topic = json.load(urllib.request.urlopen(f"{http}/v1/topics/{TOPIC}"))
        start = topic["partitions"][0]["local"]["start_offset"]
        sealed = topic["partitions"][0]["local"]["sealed_segments"]
        if sealed == 0 and start == previous:
            break
        previous = start
        time.sleep(1)
    return round(start / records, 3)


def run(name, bootstrap, args, before_replay=None):
    create_topic(bootstrap)
    produced, times = produce(bootstrap, args.records, args.record_bytes)
    extra = before_replay() if before_replay else {}
    replayed, consumer = replay(bootstrap, args.records)
    consumer.close()
    # A consumer of its own: on one with an assignment, each lookup waits behind the fetch
    # long-poll on the same connection (fetch.wait.max.ms, 500 ms), whatever the broker.
    lookup = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sbs-lookup-{time.time()}"})
    lookup.list_topics(TOPIC, 10)
    lookups = offsets_for_times(lookup, times)
    lookup.close()
    return {"broker": name, "produce": produced, "replay_from_s3": replayed, "offsets_for_times": lookups, **extra}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tierlog", required=True)
    parser.add_argument("--tansu", help="without it, only tierlog's figures (a check of the script)")
    parser.add_argument("--records", type=int, default=50000)
    parser.add_argument("--record-bytes", type=int, default=1024)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="side-by-side-")
    moto, endpoint = start_moto(work)
    processes = [moto]
    try:
        tierlog, kafka, http = start_tierlog(args.tierlog, work, endpoint)
        processes.append(tierlog)
        share = {}
        def wait_for_s3():
            share["remote_share"] = tierlog_history_in_s3(http, args.records)
            return {"history_in_s3_share": share["remote_share"]}
        ours = run("tierlog", f"127.0.0.1:{kafka}", args, wait_for_s3)
        tierlog.terminate()
        tierlog.wait(30)
        if not args.tansu:
            print(json.dumps({"records": args.records, "record_bytes": args.record_bytes, "tierlog": ours}, indent=2))
            return
        tansu, kafka = start_tansu(args.tansu, work, endpoint)
        processes.append(tansu)
        theirs = run("tansu", f"127.0.0.1:{kafka}", args)
        ratio = lambda a, b: round(a / b, 2) if b else None
        report = {
            "records": args.records, "record_bytes": args.record_bytes, "s3": "moto (local)",
            "client": "confluent-kafka (librdkafka)", "tierlog": ours, "tansu": theirs,
            "tierlog_vs_tansu": {
                "produce": ratio(ours["produce"]["records_per_s"], theirs["produce"]["records_per_s"]),
                "replay_from_s3": ratio(ours["replay_from_s3"]["records_per_s"], theirs["replay_from_s3"]["records_per_s"]),
                "offsets_for_times_p50": ratio(ours["offsets_for_times"]["p50_ms"], theirs["offsets_for_times"]["p50_ms"]),
            },
        }
        print(json.dumps(report, indent=2))
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
