//! The CLI against a running server (`--server URL`): the same commands and the same JSON
//! lines as against a local data directory, through the HTTP API (docs/HTTP.md).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::GlobalArgs;
use super::InputFormat;
use super::consume::{OffsetsArgs, Plan, SnapshotArgs, StartAt};
use super::produce::{PartialWrite, ProduceArgs, Written};

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// What the partitions' streams of one consume share: how many records may still be printed,
/// when the last one was, and whether the consume is over (`max_records` printed, or idle).
struct Printed {
    remaining: Cell<u64>,
    last: Cell<Instant>,
    stopped: Cell<bool>,
    wake: tokio::sync::Notify,
}

impl Printed {
    fn new(max_records: Option<u64>) -> Printed {
        let printed = Printed {
            remaining: Cell::new(max_records.unwrap_or(u64::MAX)),
            last: Cell::new(Instant::now()),
            stopped: Cell::new(false),
            wake: tokio::sync::Notify::new(),
        };
        if printed.remaining.get() == 0 {
            printed.stop();
        }
        printed
    }

    fn one(&self) {
        self.remaining.set(self.remaining.get().saturating_sub(1));
        self.last.set(Instant::now());
        if self.remaining.get() == 0 {
            self.stop();
        }
    }

    /// Ends every stream at its next wait for data (after any group commit in progress).
    fn stop(&self) {
        self.stopped.set(true);
        self.wake.notify_waiters();
    }

    /// Completes once [`Printed::stop`] has been called.
    async fn stopped(&self) {
        loop {
            let woken = self.wake.notified(); // registered before the check: no lost wake-up
            if self.stopped.get() {
                return;
            }
            woken.await;
        }
    }

    /// Completes once no record has been printed for `limit` (never without one).
    async fn idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else { return std::future::pending().await };
        loop {
            let deadline = self.last.get() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

impl Client {
    pub fn new(global: &GlobalArgs) -> Result<Client> {
        let base = global.server.clone().context("--server is required")?.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server {base:?}: expected http://HOST:PORT");
        }
        // Idle connections go before the server's `header_read_timeout_ms` (10 s) closes them:
        // one reused just as that close arrives fails its request.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Client { base, token: global.token.clone(), http, runtime: tokio::runtime::Runtime::new()? })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and returns its JSON answer, or the server's error message.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let (status, body) = self.call_raw(request).await?;
        if !status.is_success() {
            bail!("server answered {status}: {}", body["error"].as_str().unwrap_or("(no message)"));
        }
        Ok(body)
    }

    /// Sends a request and returns its status and JSON body, error answers included.
    async fn call_raw(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Value)> {
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub fn produce(
        &self,
        args: &ProduceArgs,
        lines: &[(usize, Vec<u8>)],
        written: &mut BTreeMap<u32, Written>,
    ) -> Result<()> {
        let mut body = String::new();
        for (line_no, line) in lines {
            let text = std::str::from_utf8(line)
                .map_err(|_| anyhow::anyhow!("line {line_no}: not valid UTF-8 (the HTTP API carries text)"))?;
            match args.input_format {
                InputFormat::Json => body.push_str(text),
                InputFormat::Raw => body.push_str(&json!({ "value": text }).to_string()),
            }
            body.push('\n');
        }
        let mut path = format!("/v1/topics/{}/records", args.topic.name());
        if let Some(p) = args.partition {
            path.push_str(&format!("?partition={p}"));
        }
        let request =
            self.request(reqwest::Method::POST, &path).header("content-type", "application/x-ndjson").body(body);
        let first_line = lines[0].0;
        let (status, body) = self
            .runtime
            .block_on(self.call_raw(request))
            .with_context(|| format!("lines {first_line}..: nothing of them was acknowledged"))?;
        let acks = if status.is_success() { &body } else { &body["written"] };
        for ack in acks.as_array().into_iter().flatten() {
            let field = |k: &str| ack[k].as_u64().unwrap_or_default();
            Written::add(
                written,
                field("partition") as u32,
                field("first_offset"),
                field("last_offset"),
                field("count"),
            );
        }
        if status.is_success() {
            return Ok(());
        }
        if let Some(partial) = partial_write(args.topic.name(), lines, &body) {
            return Err(partial.into());
        }
        let message = body["error"].as_str().unwrap_or("(no message)");
        bail!("server answered {status}: {message}; lines {first_line}..: nothing of them was acknowledged")
    }

    /// Streams every partition concurrently (needed for --follow) and prints whole records
    /// as they come, until each stream ends, `max_records` are printed in all, or the follow
    /// has been idle for `idle_timeout`.
    pub fn consume(&self, plan: &Plan) -> Result<()> {
        self.runtime.block_on(async {
            let topic_path = format!("/v1/topics/{}", plan.topic);
            let partitions: Vec<u32> = match plan.partitions.as_slice() {
                [] => self.call(self.request(reqwest::Method::GET, &topic_path)).await?["partitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["partition"].as_u64())
                    .map(|p| p as u32)
                    .collect(),
                ids => ids.to_vec(),
            };
            let committed = match &plan.group {
                Some(group) => {
                    let path = format!("/v1/groups/{group}/offsets?topic={}", plan.topic);
                    self.call(self.request(reqwest::Method::GET, &path)).await?["offsets"].clone()
                }
                None => Value::Null,
            };
            // -o end / -N / +N: from the partitions' offsets, as the server reports them now.
            let mut bounds = BTreeMap::new();
            if plan.start.needs_bounds() {
                let offsets = self.call(self.request(reqwest::Method::GET, &format!("{topic_path}/offsets"))).await?;
                for o in offsets.as_array().into_iter().flatten() {
                    if let (Some(p), Some(first), Some(end)) =
                        (o["partition"].as_u64(), o["start"].as_u64(), o["end"].as_u64())
                    {
                        bounds.insert(p as u32, (first, end));
                    }
                }
            }
            let printed = Printed::new(plan.max_records);
            if printed.stopped.get() {
                return Ok(()); // --max-records 0
            }
            let mut streams = FuturesUnordered::new();
            for p in partitions {
                if plan.start.needs_bounds() && !bounds.contains_key(&p) {
                    let count = bounds.len();
                    bail!(
                        "topic '{}' has no partition {p} (it has {count}: 0..={})",
                        plan.topic,
                        count.saturating_sub(1)
                    );
                }
                let from = plan.start.at(bounds.get(&p).copied(), committed[p.to_string()].as_u64());
                streams.push(self.consume_partition(plan, p, from, &printed));
            }
            let idle = std::pin::pin!(printed.idle_for(plan.idle_timeout));
            let mut idle = idle.fuse();
            // Every stream ends by itself once stopped, so a group commit in flight completes.
            loop {
                tokio::select! {
                    next = streams.next() => match next {
                        None => return Ok(()),
                        Some(result) => result?,
                    },
                    () = &mut idle => printed.stop(),
                }
            }
        })
    }

    async fn consume_partition(&self, plan: &Plan, partition: u32, from: StartAt, printed: &Printed) -> Result<()> {
        let mut query = Vec::new();
        match from {
            StartAt::Offset(o) => query.push(format!("from_offset={o}")),
            StartAt::Time(t) => query.push(format!("from_time={t}")),
            StartAt::First => {}
        }
        if let Some(o) = plan.to_offset {
            query.push(format!("to_offset={o}"));
        }
        if let Some(t) = plan.to_time {
            query.push(format!("to_time={t}"));
        }
        if let Some(t) = plan.as_of {
            query.push(format!("as_of={t}"));
        }
        if let Some(m) = plan.max_records {
            query.push(format!("max_records={m}")); // a bound per partition; the total is counted here
        }
        if plan.follow {
            query.push("follow=true".into());
        }
        let path = format!("/v1/topics/{}/partitions/{partition}/records?{}", plan.topic, query.join("&"));
        let response = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "partition {partition}: server answered {status}: {}",
                body["error"].as_str().unwrap_or("(no message)")
            );
        }
        let mut stream = response.bytes_stream();
        let mut pending = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                () = printed.stopped() => None,
            };
            let Some(chunk) = chunk else { break };
            pending.extend_from_slice(&chunk?);
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else { continue };
            let lines: Vec<u8> = pending.drain(..=end).collect();
            let mut next = None;
            let mut out = std::io::stdout().lock();
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if printed.stopped.get() {
                    break;
                }
                let object: Value = serde_json::from_slice(line)?;
                if let Some(error) = object["error"].as_str() {
                    bail!("partition {partition}: {error}");
                }
                let (p, stored) = tierlog::envelope::record_from_json(&object)
                    .map_err(|e| anyhow::anyhow!("partition {partition}: unreadable record from the server: {e}"))?;
                plan.format.write(&mut out, &plan.topic, p, &stored)?;
                printed.one();
                next = Some(stored.offset + 1);
            }
            out.flush()?;
            drop(out);
            if let (Some(group), Some(next)) = (&plan.group, next) {
                let commit = json!({"topic": plan.topic, "offsets": {partition.to_string(): next}});
                self.call(self.request(reqwest::Method::POST, &format!("/v1/groups/{group}/offsets")).json(&commit))
                    .await?;
            }
        }
        Ok(())
    }

    pub fn offsets(&self, args: &OffsetsArgs) -> Result<()> {
        let mut path = format!("/v1/topics/{}/offsets", args.topic);
        if let Some(t) = args.time {
            path.push_str(&format!("?time={t}"));
        }
        if let Some(t) = args.as_of {
            path.push_str(&format!("?as_of={t}"));
        }
        self.print_lines(&path)
    }

    pub fn snapshot(&self, args: &SnapshotArgs) -> Result<()> {
        let mut path = format!("/v1/snapshot?as_of={}", args.as_of);
        if !args.topics.is_empty() {
            path.push_str(&format!("&topics={}", args.topics.join(",")));
        }
        self.print_lines(&path)
    }

    /// GETs `path` and prints each element of the JSON array answered, one per line.
    fn print_lines(&self, path: &str) -> Result<()> {
        let answer = self.runtime.block_on(self.call(self.request(reqwest::Method::GET, path)))?;
        for line in answer.as_array().into_iter().flatten() {
            println!("{line}");
        }
        Ok(())
    }

    pub fn create_topic(&self, topic: &str, partitions: Option<u32>, settings: &[(String, String)]) -> Result<()> {
        let mut body = json!({ "name": topic });
        if let Some(p) = partitions {
            body["partitions"] = json!(p);
        }
        if !settings.is_empty() {
            body["config"] = settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        }
        let answer = self.runtime.block_on(self.call(self.request(reqwest::Method::POST, "/v1/topics").json(&body)))?;
        println!("{}", json!({"topic": answer["topic"], "partitions": answer["partitions"], "created": true}));
        Ok(())
    }

    pub fn alter_topic(&self, topic: &str, set: &[(String, String)], unset: &[String]) -> Result<()> {
        anyhow::ensure!(!set.is_empty() || !unset.is_empty(), "nothing to change: give --set KEY=VALUE or --unset KEY");
        let set: serde_json::Map<String, Value> = set.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let body = json!({"set": set, "unset": unset});
        let request = self.request(reqwest::Method::PATCH, &format!("/v1/topics/{topic}")).json(&body);
        let answer = self.runtime.block_on(self.call(request))?;
        println!("{}", json!({"topic": answer["topic"], "settings": answer["settings"]}));
        Ok(())
    }

    pub fn list_topics(&self) -> Result<()> {
        self.print_lines("/v1/topics")
    }

    pub fn describe_topic(&self, topic: &str) -> Result<()> {
        let answer =
            self.runtime.block_on(self.call(self.request(reqwest::Method::GET, &format!("/v1/topics/{topic}"))))?;
        println!("{}", json!({"topic": topic, "settings": answer["settings"]}));
        for p in answer["partitions"].as_array().into_iter().flatten() {
            let mut line = p.clone();
            line["topic"] = json!(topic);
            println!("{line}");
        }
        Ok(())
    }
}

/// Reads the server's account of a produce that failed after writing some partitions
/// (docs/HTTP.md) and maps the unwritten records back to input line numbers.
fn partial_write(topic: &str, lines: &[(usize, Vec<u8>)], body: &Value) -> Option<PartialWrite> {
    let failed = body.get("failed")?;
    let unwritten_lines = body["unwritten_records"]
        .as_array()?
        .iter()
        .map(|i| i.as_u64().and_then(|i| lines.get(i as usize)).map(|(line_no, _)| *line_no))
        .collect::<Option<Vec<usize>>>()?;
    Some(PartialWrite {
        topic: topic.to_string(),
        partition: failed["partition"].as_u64()? as u32,
        error: failed["error"].as_str().unwrap_or("(no message)").to_string(),
        not_attempted: body["not_attempted"].as_array()?.iter().filter_map(|p| p.as_u64()).map(|p| p as u32).collect(),
        unwritten_lines,
        unread_from_line: lines[lines.len() - 1].0 + 1,
    })
}
