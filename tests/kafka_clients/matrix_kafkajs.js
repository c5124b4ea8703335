// kafkajs against tierlog, for the client matrix in tests/kafka.rs; the same modes and output
// as matrix_confluent.py (produce / consume / times). NODE_PATH must hold kafkajs.
const { Kafka, logLevel } = require('kafkajs');

const [mode, bootstrap, topic, ...rest] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'matrix-kafkajs', brokers: [bootstrap], logLevel: logLevel.ERROR });

async function produce(count, baseMs) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const step = 1000;
  for (let start = 0; start < count; start += step) {
    const topicMessages = [0, 1].map((p) => ({ topic, messages: [] }));
    for (let i = start; i < Math.min(count, start + step); i++) {
      topicMessages[i % 2].messages.push({
        partition: i % 2, key: `k${i}`, value: `v${i}`, headers: { n: `${i}` }, timestamp: `${baseMs + 10 * i}`,
      });
    }
    await producer.sendBatch({ topicMessages, acks: -1 });
  }
  await producer.disconnect();
  console.log(JSON.stringify({ produced: count }));
}

async function consume(count) {
  const consumer = kafka.consumer({ groupId: 'matrix-kafkajs' });
  await consumer.connect();
  // Manual assignment through a subscription of a fresh group, from the beginning.
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  const lines = [];
  await new Promise((resolve, reject) => {
    consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const h = {};
          for (const [k, v] of Object.entries(m.headers || {})) h[k] = v.toString();
          lines.push(JSON.stringify({
            p: batch.partition, o: Number(m.offset), k: m.key.toString(), v: m.value.toString(), h, t: Number(m.timestamp),
          }));
          seen += 1;
        }
        if (seen >= count) resolve();
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  process.stdout.write(lines.join('\n') + '\n');
}

async function times(instants) {
  const admin = kafka.admin();
  await admin.connect();
  for (const t of instants) {
    const found = await admin.fetchTopicOffsetsByTimestamp(topic, Number(t));
    for (const { partition, offset } of found.sort((a, b) => a.partition - b.partition)) {
      console.log(JSON.stringify({ p: partition, time: Number(t), offset: Number(offset) }));
    }
  }
  await admin.disconnect();
}

const main = mode === 'produce' ? produce(Number(rest[0]), Number(rest[1]))
  : mode === 'consume' ? consume(Number(rest[0])) : times(rest);
main.catch((e) => { console.error(e); process.exit(1); });
