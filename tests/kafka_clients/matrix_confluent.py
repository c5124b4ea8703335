"""confluent-kafka (librdkafka) against tierlog, for the client matrix in tests/kafka.rs.

  produce BOOTSTRAP TOPIC COUNT BASE_MS   record i: partition i % 2, key k<i>, value v<i>,
                                          header n=<i>, timestamp BASE_MS + 10 i
  consume BOOTSTRAP TOPIC COUNT           every record from the beginning of partitions 0 and 1,
                                          one JSON line each: p, o, k, v, h, t
  times BOOTSTRAP TOPIC T...              offsetsForTimes on partitions 0 and 1: p, time, offset
"""
import json
import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}

if mode == "produce":
    count, base_ms = int(sys.argv[4]), int(sys.argv[5])
    errors = []
    producer = Producer({**common, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=f"k{i}", value=f"v{i}", partition=i % 2, headers=[("n", str(i))],
                                 timestamp=base_ms + 10 * i,
                                 on_delivery=lambda err, msg: err and errors.append(str(err)))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise SystemExit(f"{remaining} not delivered, errors: {errors[:5]}")
    print(json.dumps({"produced": count}))
elif mode == "consume":
    count = int(sys.argv[4])
    consumer = Consumer({**common, "group.id": "matrix-confluent", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, -2) for p in (0, 1)])  # -2: beginning
    seen = 0
    out = sys.stdout
    while seen < count:
        for m in consumer.consume(num_messages=10000, timeout=10) or []:
            if m.error():
                raise KafkaException(m.error())
            h = {k: v.decode() for k, v in (m.headers() or [])}
            out.write(json.dumps({"p": m.partition(), "o": m.offset(), "k": m.key().decode(),
                                  "v": m.value().decode(), "h": h, "t": m.timestamp()[1]}) + "\n")
            seen += 1
    consumer.close()
elif mode == "times":
    consumer = Consumer({**common, "group.id": "matrix-confluent"})
    for t in sys.argv[4:]:
        found = consumer.offsets_for_times([TopicPartition(topic, p, int(t)) for p in (0, 1)], timeout=10)
        for tp in found:
            print(json.dumps({"p": tp.partition, "time": int(t), "offset": tp.offset}))
    consumer.close()
