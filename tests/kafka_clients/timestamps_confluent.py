"""confluent-kafka (librdkafka) and the two clocks: creates a CreateTime topic and a
LogAppendTime one (message.timestamp.type), produces the same backdated records to both,
consumes them back with the timestamp type and value the client sees, and looks up an
offset by time in each. One JSON line."""
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

broker, produced_ms = sys.argv[1], int(sys.argv[2])
common = {"bootstrap.servers": broker, "broker.address.family": "v4"}
admin = AdminClient(common)
topics = [NewTopic("cre", num_partitions=1, replication_factor=1),
          NewTopic("lat", num_partitions=1, replication_factor=1,
                   config={"message.timestamp.type": "LogAppendTime"})]
for future in admin.create_topics(topics).values():
    future.result(10)
out = {}
resource = ConfigResource("topic", "lat")
out["lat_config"] = admin.describe_configs([resource])[resource].result(10)["message.timestamp.type"].value

producer = Producer(common)
for topic in ("cre", "lat"):
    for i in range(5):
        producer.produce(topic, value=f"{topic}-{i}".encode(), partition=0, timestamp=produced_ms + i)
producer.flush(10)

for topic in ("cre", "lat"):
    consumer = Consumer({**common, "group.id": f"ts-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = []
    while len(seen) < 5:
        msg = consumer.poll(10)
        if msg is None:
            break
        if msg.error():
            raise SystemExit(str(msg.error()))
        kind, ts = msg.timestamp()
        seen.append({"offset": msg.offset(), "type": kind, "timestamp": ts})
    out[topic] = seen
    asked = seen[-1]["timestamp"] if seen else produced_ms
    found = consumer.offsets_for_times([TopicPartition(topic, 0, asked)], timeout=10)[0]
    out[f"{topic}_offset_for_time"] = found.offset
    consumer.close()
print(json.dumps(out))
