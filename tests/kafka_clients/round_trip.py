"""kafka-python against tierlog: produce keyed records with headers and explicit timestamps,
consume them back, commit a group offset and look offsets up by time. Prints one JSON object
per line for the Rust test (tests/kafka.rs) to compare with what HTTP serves."""
import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

bootstrap, topic, count, base_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# kafka-python 3 is idempotent by default: this round trip goes through InitProducerId.
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
futures = [
    producer.send(
        topic,
        key=None if i % 10 == 9 else f"key-{i}".encode(),
        value=f"value-{i}".encode(),
        headers=[("seq", str(i).encode()), ("kind", b"\x00\xffbin")],
        timestamp_ms=base_ms + i * 1000,
        partition=0,
    )
    for i in range(count)
]
producer.flush()
for f in futures:
    f.get(timeout=10)
producer.close()

tp = TopicPartition(topic, 0)
consumer = KafkaConsumer(
    bootstrap_servers=bootstrap, group_id="py", enable_auto_commit=False, consumer_timeout_ms=3000,
    auto_offset_reset="earliest",
)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
for m in consumer:
    print(json.dumps({"offset": m.offset, "key": m.key.decode() if m.key is not None else None,
                      "value": m.value.decode(), "timestamp": m.timestamp,
                      "headers": [[k, v.hex()] for k, v in m.headers]}))
consumer.commit({tp: OffsetAndMetadata(count // 2, "", -1)})
found = consumer.offsets_for_times({tp: base_ms + 2500})[tp]
print(json.dumps({"committed": consumer.committed(tp), "time_offset": found.offset, "time_timestamp": found.timestamp}))
consumer.close()
