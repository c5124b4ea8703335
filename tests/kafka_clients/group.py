"""kafka-python consumer group against tierlog: two members of one group subscribe to a topic,
split its partitions, consume and commit; when one leaves, the other takes every partition
and resumes from the committed offsets. Prints one JSON summary for tests/kafka.rs."""
import json
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic, partitions, first, second = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
seen = {}  # (partition, offset) -> value, for every delivery
deliveries = []
lock = threading.Lock()


def produce(start, count):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i in range(start, start + count):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % partitions)
    producer.flush()
    producer.close()


class Member(threading.Thread):
    def __init__(self, name):
        super().__init__(daemon=True)
        self.name, self.stop, self.assignment, self.error = name, threading.Event(), [], None

    def run(self):
        try:
            consumer = KafkaConsumer(
                topic, bootstrap_servers=bootstrap, group_id="grp", client_id=self.name,
                enable_auto_commit=False, auto_offset_reset="earliest",
                session_timeout_ms=6000, heartbeat_interval_ms=500,
            )
            while not self.stop.is_set():
                batch = consumer.poll(timeout_ms=200)
                with lock:
                    for tp, messages in batch.items():
                        for m in messages:
                            deliveries.append((self.name, tp.partition, m.offset))
                            seen[(tp.partition, m.offset)] = m.value.decode()
                if batch:
                    consumer.commit()  # synchronous: what was processed is committed
                self.assignment = sorted(tp.partition for tp in consumer.assignment())
            consumer.close()  # leaves the group
        except Exception as e:  # reported in the summary, not lost in a thread
            self.error = repr(e)


def wait(condition, what, timeout=60):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}: seen {len(seen)}, deliveries {len(deliveries)}, "
                             f"a={a.assignment} {a.error} b={b.assignment} {b.error}")
        time.sleep(0.1)


produce(0, first)
a, b = Member("a"), Member("b")
a.start()
b.start()
wait(lambda: len(seen) == first and a.assignment and b.assignment
     and sorted(a.assignment + b.assignment) == list(range(partitions)), "both members sharing every partition")
split = {"a": a.assignment, "b": b.assignment}
b.stop.set()
b.join()
wait(lambda: a.assignment == list(range(partitions)), "a taking every partition after b left")
produce(first, second)
wait(lambda: len(seen) == first + second, "the records produced after b left")
time.sleep(1)  # anything delivered twice would arrive now
a.stop.set()
a.join()
values_ok = sorted(seen.values()) == sorted(f"v{i}" for i in range(first + second))
print(json.dumps({"split": split, "after_leave": a.assignment, "records": len(seen), "deliveries": len(deliveries),
                  "by_member": {m: sum(1 for d in deliveries if d[0] == m) for m in ("a", "b")},
                  "errors": [a.error, b.error], "values_ok": values_ok}))
