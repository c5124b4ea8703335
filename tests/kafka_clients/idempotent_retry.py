"""An idempotent confluent-kafka (librdkafka) producer whose produce answers get lost.

  idempotent_retry.py LISTEN_PORT BROKER TOPIC COUNT

Listens on 127.0.0.1:LISTEN_PORT (the port tierlog advertises) and forwards every connection
to BROKER. When the broker has answered the 3rd and the 8th produce request, the proxy cuts
that connection instead of passing the answer on: the batches were stored, the producer never
learns it, and librdkafka sends them again on a new connection with the same producer id and
sequences. Produces COUNT records (value v<i>, key k<i>) to partition 0, one at a time in
small batches, and prints {"produced": COUNT, "answers_lost": N}.
"""
import json
import socket
import struct
import sys
import threading

from confluent_kafka import Producer

listen_port, broker, topic, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
broker_host, broker_port = broker.rsplit(":", 1)
LOSE = {3, 8}  # which produce requests (counted over all connections) lose their answer
state = {"produces": 0, "lost": 0}
lock = threading.Lock()


def read_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    size = struct.unpack(">i", head)[0]
    body = b""
    while len(body) < size:
        chunk = sock.recv(min(65536, size - len(body)))
        if not chunk:
            return None
        body += chunk
    return head + body


def serve(client):
    upstream = socket.create_connection((broker_host, int(broker_port)))
    doomed = set()  # correlation ids of produce requests whose answer is lost

    def client_to_broker():
        try:
            while (frame := read_frame(client)) is not None:
                api_key, _, correlation = struct.unpack(">hhi", frame[4:12])
                if api_key == 0:  # Produce
                    with lock:
                        state["produces"] += 1
                        if state["produces"] in LOSE:
                            doomed.add(correlation)
                upstream.sendall(frame)
        except OSError:
            pass
        finally:
            upstream.close()

    threading.Thread(target=client_to_broker, daemon=True).start()
    try:
        while (frame := read_frame(upstream)) is not None:
            correlation = struct.unpack(">i", frame[4:8])[0]
            if correlation in doomed:
                with lock:
                    state["lost"] += 1
                break  # the broker answered; the producer never hears it
            client.sendall(frame)
    except OSError:
        pass
    finally:
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", listen_port))
listener.listen()
threading.Thread(target=lambda: [threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
                                 for _ in iter(int, 1)], daemon=True).start()

errors = []
producer = Producer({
    "bootstrap.servers": f"127.0.0.1:{listen_port}",
    "broker.address.family": "v4",
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "batch.num.messages": 50,
    "retry.backoff.ms": 50,
    "reconnect.backoff.ms": 50,
    "socket.timeout.ms": 10000,
    "message.timeout.ms": 60000,
})
for i in range(count):
    producer.produce(topic, key=f"k{i}", value=f"v{i}", partition=0,
                     on_delivery=lambda err, msg: err and errors.append(str(err)))
    if i % 50 == 49:
        producer.flush(30)  # batch by batch, so several produce requests are made
remaining = producer.flush(60)
if remaining or errors:
    raise SystemExit(f"{remaining} not delivered, errors: {errors[:5]}")
print(json.dumps({"produced": count, "answers_lost": state["lost"]}))
