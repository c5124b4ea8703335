//! The CLI against a running server (`--server URL`): the same commands and the same JSON
//! lines as against a local data directory, through the HTTP API (docs/HTTP.md).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use super::GlobalArgs;
use super::InputFormat;
use super::consume::{ConsumeArgs, OffsetsArgs, SnapshotArgs};
use super::produce::{PartialWrite, ProduceArgs, Written};

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(global: &GlobalArgs) -> Result<Client> {
        let base = global.server.clone().context("--server is required")?.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server {base:?}: expected http://HOST:PORT");
        }
        let http = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)).build()?;
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
        let mut path = format!("/v1/topics/{}/records", args.topic);
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
        if let Some(partial) = partial_write(&args.topic, lines, &body) {
            return Err(partial.into());
        }
        let message = body["error"].as_str().unwrap_or("(no message)");
        bail!("server answered {status}: {message}; lines {first_line}..: nothing of them was acknowledged")
    }

    pub fn consume(&self, args: &ConsumeArgs) -> Result<()> {
        self.runtime.block_on(async {
            let topic = self.call(self.request(reqwest::Method::GET, &format!("/v1/topics/{}", args.topic))).await?;
            let partitions: Vec<u32> = match args.partition {
                Some(p) => vec![p],
                None => topic["partitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["partition"].as_u64())
                    .map(|p| p as u32)
                    .collect(),
            };
            let committed = match &args.group {
                Some(group) => self
                    .call(
                        self.request(reqwest::Method::GET, &format!("/v1/groups/{group}/offsets?topic={}", args.topic)),
                    )
                    .await?["offsets"]
                    .clone(),
                None => Value::Null,
            };
            let mut streams = Vec::new();
            for p in partitions {
                streams.push(self.consume_partition(args, p, committed[p.to_string()].as_u64()));
            }
            // Partitions stream concurrently (needed for --follow); lines are whole records.
            for result in futures::future::join_all(streams).await {
                result?;
            }
            Ok(())
        })
    }

    async fn consume_partition(&self, args: &ConsumeArgs, partition: u32, committed: Option<u64>) -> Result<()> {
        let mut query = Vec::new();
        let explicit = args.from_beginning || args.from_offset.is_some() || args.from_time.is_some() || args.from_end;
        match (args.from_offset, args.from_time, args.from_end, committed) {
            (Some(o), ..) => query.push(format!("from_offset={o}")),
            (_, Some(t), ..) => query.push(format!("from_time={t}")),
            (_, _, true, _) => {
                let offsets = self
                    .call(self.request(reqwest::Method::GET, &format!("/v1/topics/{}/offsets", args.topic)))
                    .await?;
                let end = offsets
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["partition"] == partition)
                    .and_then(|o| o["end"].as_u64())
                    .unwrap_or(0);
                query.push(format!("from_offset={end}"));
            }
            (.., Some(o)) if !explicit => query.push(format!("from_offset={o}")),
            _ => {}
        }
        if let Some(o) = args.to_offset {
            query.push(format!("to_offset={o}"));
        }
        if let Some(t) = args.to_time {
            query.push(format!("to_time={t}"));
        }
        if let Some(t) = args.as_of {
            query.push(format!("as_of={t}"));
        }
        if let Some(m) = args.max_records {
            query.push(format!("max_records={m}"));
        }
        if args.follow {
            query.push("follow=true".into());
        }
        let path = format!("/v1/topics/{}/partitions/{partition}/records?{}", args.topic, query.join("&"));
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
        while let Some(chunk) = stream.next().await {
            pending.extend_from_slice(&chunk?);
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else { continue };
            let lines: Vec<u8> = pending.drain(..=end).collect();
            let mut next = None;
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let record: Value = serde_json::from_slice(line)?;
                if let Some(error) = record["error"].as_str() {
                    bail!("partition {partition}: {error}");
                }
                next = record["offset"].as_u64().map(|o| o + 1);
            }
            let mut out = std::io::stdout().lock();
            // Without the empty lines an idle follow sends as keep-alives.
            for line in lines.split_inclusive(|b| *b == b'\n').filter(|l| *l != b"\n") {
                out.write_all(line)?;
            }
            out.flush()?;
            drop(out);
            if let (Some(group), Some(next)) = (&args.group, next) {
                let commit = json!({"topic": args.topic, "offsets": {partition.to_string(): next}});
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
