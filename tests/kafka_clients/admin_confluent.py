"""confluent-kafka's AdminClient against tierlog: create topics (one valid, one with a bad
replication factor), describe a topic's configs, try to delete a topic. One JSON line."""
import json
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

admin = AdminClient({"bootstrap.servers": sys.argv[1], "broker.address.family": "v4"})
out = {}
for name, topic in [("adm", NewTopic("adm", num_partitions=3, replication_factor=1)),
                    ("adm-rf3", NewTopic("adm-rf3", num_partitions=1, replication_factor=3)),
                    ("adm-again", NewTopic("adm", num_partitions=3, replication_factor=1))]:
    try:
        admin.create_topics([topic])[topic.topic].result(10)
        out[name] = "created"
    except KafkaException as e:
        out[name] = e.args[0].name()
resource = ConfigResource("topic", "adm")
configs = admin.describe_configs([resource])[resource].result(10)
out["configs"] = {name: entry.value for name, entry in configs.items()}
try:
    admin.delete_topics(["adm"])["adm"].result(10)
    out["delete"] = "deleted"
except KafkaException as e:
    out["delete"] = e.args[0].name()
metadata = admin.list_topics(timeout=10)
out["partitions"] = len(metadata.topics["adm"].partitions)
print(json.dumps(out))
