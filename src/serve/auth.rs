//! Token authorisation for the HTTP server (bearer tokens) and the Kafka listener (SASL/PLAIN:
//! username = token name, password = token), and the audit log of historical reads.
//!
//! Tokens are configured by SHA-256 only (`[[server.tokens]]`), each with read/write topic
//! patterns and an admin flag. Without tokens every request is anonymous and allowed (the
//! server then listens on loopback only). With tokens, a request without a valid token gets
//! 401, one whose token lacks the right gets 403. Every read of historical data by an
//! authenticated server is recorded in `<data_dir>/audit.log` as a JSON line: who, what,
//! which topic and partition, which offsets (fsynced in batches, rotated by size: see
//! [`audit_log`](super::audit_log)). Changes to the archive go to the trail in the bucket.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{Config, TokenConfig};
use crate::error::Result;
use crate::serve::audit_log::AuditLog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    Read,
    Write,
    Admin,
    /// Commit offsets for a consumer group; the resource is the group name, not a topic.
    Group,
    /// Read every series of `/metrics`, consumer groups' included.
    Metrics,
}

/// The audit line of `who` moving `group`'s offsets on `topic` (partition → next offset).
pub fn commit_line(
    who: &str,
    group: &str,
    topic: &str,
    offsets: &std::collections::BTreeMap<u32, u64>,
) -> serde_json::Value {
    json!({"ts_ms": crate::partition::now_ms(), "who": who, "action": "commit", "group": group, "topic": topic, "offsets": offsets})
}

/// The audit line of `who` deleting `group`'s committed offsets (what they were, by topic).
pub fn group_delete_line(who: &str, group: &str, deleted: &[crate::groups::Committed]) -> serde_json::Value {
    let topics: serde_json::Map<String, serde_json::Value> =
        deleted.iter().map(|c| (c.topic.clone(), json!(c.offsets))).collect();
    json!({"ts_ms": crate::partition::now_ms(), "who": who, "action": "delete_group", "group": group, "offsets": topics})
}

/// Appends `line` to the audit log of the server configured by `config`, from another process
/// (`tierlog group seek|delete`), when that server keeps one (tokens configured); `false` when
/// it does not. The line is one append-mode write, fsynced, so it never splits a server's line.
pub fn audit_from_cli(config: &Config, line: &serde_json::Value) -> Result<bool> {
    if config.server.tokens.is_empty() {
        return Ok(false);
    }
    crate::serve::audit_log::append_line(&config.data_dir.join("audit.log"), &line.to_string())?;
    Ok(true)
}

/// Why a request is refused: no valid token (401) or not allowed (403).
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated(String),
    Forbidden(String),
}

pub struct Auth {
    tokens: Vec<TokenConfig>,
    audit: Option<AuditLog>,
}

impl Auth {
    pub fn new(config: &Config) -> Result<Auth> {
        let tokens = config.server.tokens.clone();
        let audit = if tokens.is_empty() {
            None
        } else {
            let path = config.data_dir.join("audit.log");
            let server = &config.server;
            Some(AuditLog::open(&path, server.audit_log_max_bytes, server.audit_log_keep as u32)?)
        };
        Ok(Auth { tokens, audit })
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller's name if `authorization` carries a token with `right` on `topic` (the
    /// group name for [`Right::Group`]; any
    /// topic when `None`); "anonymous" when authentication is off.
    pub fn check(
        &self,
        authorization: Option<&str>,
        right: Right,
        topic: Option<&str>,
    ) -> std::result::Result<String, Denied> {
        if self.tokens.is_empty() {
            return Ok("anonymous".into());
        }
        let presented = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        let Some(presented) = presented.filter(|t| !t.is_empty()) else {
            return Err(Denied::Unauthenticated("missing bearer token: send Authorization: Bearer <token>".into()));
        };
        let Some(token) = self.token_for(presented) else {
            return Err(Denied::Unauthenticated("unknown bearer token".into()));
        };
        if token_allows(token, right, topic) {
            Ok(token.name.clone())
        } else {
            Err(Denied::Forbidden(
                format!("token '{}' may not {right:?} topic {}", token.name, topic.unwrap_or("(admin)")).to_lowercase(),
            ))
        }
    }

    fn token_for(&self, secret: &str) -> Option<&TokenConfig> {
        let digest = hex::encode(Sha256::digest(secret.as_bytes()));
        self.tokens.iter().find(|t| constant_time_eq(t.token_sha256.to_ascii_lowercase().as_bytes(), digest.as_bytes()))
    }

    /// SASL/PLAIN: the token whose secret is `password`, which must be named `username`. The
    /// principal's name on success.
    pub fn authenticate(&self, username: &str, password: &str) -> std::result::Result<String, Denied> {
        match self.token_for(password) {
            Some(token) if token.name == username => Ok(token.name.clone()),
            _ => Err(Denied::Unauthenticated(format!(
                "authentication failed for user {username:?}: the username is a token's name in server.tokens, the password that token"
            ))),
        }
    }

    /// Whether the authenticated principal `who` (a token's name; anyone when authentication
    /// is off) has `right` on `resource` (a topic, or a group for [`Right::Group`]).
    pub fn allows(&self, who: &str, right: Right, resource: Option<&str>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        self.tokens.iter().find(|t| t.name == who).is_some_and(|token| token_allows(token, right, resource))
    }

    /// Whether `who` may write at least one topic (what Kafka asks of a principal that wants
    /// an idempotent producer id).
    pub fn may_write_some_topic(&self, who: &str) -> bool {
        self.tokens.is_empty() || self.tokens.iter().any(|t| t.name == who && (t.admin || !t.write.is_empty()))
    }

    /// Records a read of `topic/partition` offsets `from..to` by `who`.
    pub fn audit_read(&self, who: &str, topic: &str, partition: u32, from: u64, to: Option<u64>, follow: bool) {
        self.audit(json!({"ts_ms": crate::partition::now_ms(), "who": who, "action": "read", "topic": topic, "partition": partition, "from_offset": from, "to_offset": to, "follow": follow}));
    }

    /// Records that `who` moved `group`'s offsets on `topic` (partition → next offset).
    pub fn audit_commit(&self, who: &str, group: &str, topic: &str, offsets: &std::collections::BTreeMap<u32, u64>) {
        self.audit(commit_line(who, group, topic, offsets));
    }

    /// Records that `who` deleted `group`'s committed offsets (what they were, by topic).
    pub fn audit_group_delete(&self, who: &str, group: &str, deleted: &[crate::groups::Committed]) {
        self.audit(group_delete_line(who, group, deleted));
    }

    fn audit(&self, line: serde_json::Value) {
        if let Some(audit) = &self.audit {
            audit.write_line(&line.to_string());
        }
    }
}

fn token_allows(token: &TokenConfig, right: Right, resource: Option<&str>) -> bool {
    match right {
        Right::Admin => token.admin,
        Right::Read => token.admin || resource.is_none_or(|t| token.read.iter().any(|p| glob(p, t))),
        Right::Write => token.admin || resource.is_none_or(|t| token.write.iter().any(|p| glob(p, t))),
        Right::Group => token.admin || resource.is_some_and(|g| token.groups.iter().any(|p| glob(p, g))),
        Right::Metrics => token.admin || token.metrics,
    }
}

/// `*` matches any run of characters; everything else matches itself. Linear in practice and
/// O(pattern × name) at worst: on a mismatch it only moves the last `*` on by one character,
/// never tries every split (which is exponential in the number of stars: `a*a*a*…b` against a
/// long run of `a`s).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n) = (0, 0);
    // After the last `*` seen: the pattern position after it, and the name position it has
    // swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p + 1, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            (p, n) = (p + 1, n + 1);
        } else if let Some((after, swallowed)) = star {
            star = Some((after, swallowed + 1));
            (p, n) = (after, swallowed + 1);
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let token = |name: &str, secret: &str, read: &[&str], write: &[&str], admin| TokenConfig {
            name: name.into(),
            token_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            read: read.iter().map(|s| s.to_string()).collect(),
            write: write.iter().map(|s| s.to_string()).collect(),
            admin,
            groups: Vec::new(),
            metrics: false,
        };
        let billing = TokenConfig { groups: vec!["billing-*".into()], ..token("billing", "bill", &["*"], &[], false) };
        Auth {
            tokens: vec![
                token("ingest", "s3cret", &[], &["payments*"], false),
                token("auditor", "look", &["*"], &[], false),
                billing,
            ],
            audit: None,
        }
    }

    #[test]
    fn tokens_grant_exactly_their_rights() {
        let a = auth();
        assert_eq!(a.check(Some("Bearer s3cret"), Right::Write, Some("payments.eu")), Ok("ingest".into()));
        assert!(matches!(a.check(Some("Bearer s3cret"), Right::Read, Some("payments")), Err(Denied::Forbidden(_))));
        assert!(matches!(a.check(Some("Bearer s3cret"), Right::Admin, None), Err(Denied::Forbidden(_))));
        assert_eq!(a.check(Some("Bearer look"), Right::Read, Some("anything")), Ok("auditor".into()));
        assert!(matches!(a.check(None, Right::Read, Some("x")), Err(Denied::Unauthenticated(_))));
        assert!(matches!(a.check(Some("Bearer nope"), Right::Read, Some("x")), Err(Denied::Unauthenticated(_))));
    }

    /// Reading a topic used to be enough to move any group's offsets on it.
    #[test]
    fn group_commits_need_a_group_right() {
        let a = auth();
        assert!(matches!(a.check(Some("Bearer look"), Right::Group, Some("billing-eu")), Err(Denied::Forbidden(_))));
        assert_eq!(a.check(Some("Bearer bill"), Right::Group, Some("billing-eu")), Ok("billing".into()));
        assert!(matches!(a.check(Some("Bearer bill"), Right::Group, Some("fraud")), Err(Denied::Forbidden(_))));
        assert!(matches!(a.check(Some("Bearer bill"), Right::Group, None), Err(Denied::Forbidden(_))));
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("*", "a") && glob("pay*", "payments") && glob("*.eu", "pay.eu") && glob("a*b*c", "axxbyyc"));
        assert!(!glob("pay*", "refunds") && !glob("a", "ab"));
        assert!(glob("", "") && !glob("", "a") && glob("**", "") && glob("a**", "a") && !glob("a*b", "a"));
        assert!(glob("*ab", "aab") && glob("*é*", "café-eu") && !glob("a*c", "abcb"));
    }

    /// The recursive matcher took exponential time here (each star tried every split).
    #[test]
    fn glob_patterns_with_many_stars_match_in_linear_time() {
        let pattern = format!("{}b", "a*".repeat(20));
        let name = "a".repeat(249);
        let started = std::time::Instant::now();
        assert!(!glob(&pattern, &name) && glob(&pattern, &format!("{name}b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
