//! Per-topic settings: what a topic sets for itself under Kafka's topic-config names, and the
//! one resolver that turns them and the server's configuration into the settings in force.
//!
//! Owns the names, text forms, ranges and cross-setting rules of per-topic settings, and
//! their resolution ([`TopicSettings::resolve`]). A topic's own settings are stored in its
//! `topic.json` (see `topic`, docs/FORMAT.md); whatever acts on a setting — the partition's
//! roll policy, local retention, whether a partition is tiered, remote expiry, Kafka's
//! DescribeConfigs, `topic describe` — asks the resolver, never the configuration directly.
//!
//! A setting a topic does not set falls back to its configuration key (the table in
//! [`KEYS`]); values are held to the same ranges as that key. `message.timestamp.type` is
//! fixed at creation (batches already written keep their encoding) and lives beside the
//! settings in `topic.json`, where version 2 put it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::batch::TimestampType;
use crate::config::{self, Config};
use crate::error::{Error, Result};
use tierlog_tiering::lock::{DAY_MS, LockPolicy, Mode};

pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const LOCAL_RETENTION_MS: &str = "local.retention.ms";
pub const LOCAL_RETENTION_BYTES: &str = "local.retention.bytes";
pub const REMOTE_STORAGE_ENABLE: &str = "remote.storage.enable";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
/// S3 Object Lock (no Kafka name exists; named in Kafka's dotted style).
pub const OBJECT_LOCK_MODE: &str = "object.lock.mode";
pub const OBJECT_LOCK_RETAIN_DAYS: &str = "object.lock.retain.days";

/// Every per-topic setting, in the order they are shown, with the configuration key it falls
/// back to (`None`: no configuration key, a built-in default).
pub const KEYS: [(&str, Option<&str>); 10] = [
    (TIMESTAMP_TYPE, None),
    (RETENTION_MS, Some("tiering.remote_retention_ms")),
    (RETENTION_BYTES, Some("tiering.remote_retention_bytes")),
    (LOCAL_RETENTION_MS, Some("tiering.local_retention_ms")),
    (LOCAL_RETENTION_BYTES, Some("tiering.local_retention_bytes")),
    (REMOTE_STORAGE_ENABLE, Some("tiering.enabled")),
    (SEGMENT_BYTES, Some("segment.max_bytes")),
    (SEGMENT_MS, Some("segment.max_age_ms")),
    (OBJECT_LOCK_MODE, Some("tiering.object_lock_mode")),
    (OBJECT_LOCK_RETAIN_DAYS, Some("tiering.object_lock_retain_days")),
];

/// The supported keys, for error messages.
fn supported() -> String {
    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

/// A topic's own settings: each `None` falls back to the configuration. Serialized under
/// Kafka's names with typed JSON values (`topic.json`'s `settings`); a key this build does not
/// know is refused on read, never ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// How long the log keeps a segment at all (remote retention); -1: forever.
    #[serde(rename = "retention.ms", default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// Per-partition cap of the remote tier's raw bytes; -1: no cap.
    #[serde(rename = "retention.bytes", default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
    /// Tiered segments stay on local disk at least this long.
    #[serde(rename = "local.retention.ms", default, skip_serializing_if = "Option::is_none")]
    pub local_retention_ms: Option<u64>,
    /// Tiered segments beyond this many local bytes per partition are deleted locally.
    #[serde(rename = "local.retention.bytes", default, skip_serializing_if = "Option::is_none")]
    pub local_retention_bytes: Option<u64>,
    /// Whether the topic's partitions are tiered at all.
    #[serde(rename = "remote.storage.enable", default, skip_serializing_if = "Option::is_none")]
    pub remote_storage_enable: Option<bool>,
    /// Roll the active segment at this size.
    #[serde(rename = "segment.bytes", default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Roll the active segment at this age.
    #[serde(rename = "segment.ms", default, skip_serializing_if = "Option::is_none")]
    pub segment_ms: Option<u64>,
    /// S3 Object Lock of the topic's objects: "off", "governance" or "compliance".
    #[serde(rename = "object.lock.mode", default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<String>,
    /// Days each of the topic's objects stays locked from its write.
    #[serde(rename = "object.lock.retain.days", default, skip_serializing_if = "Option::is_none")]
    pub object_lock_retain_days: Option<u64>,
}

/// Where a setting in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The topic sets it.
    Topic,
    /// The server's configuration (file, environment or its default).
    Config,
    /// A built-in default with no configuration key (`message.timestamp.type`).
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Topic => "topic",
            Source::Config => "config",
            Source::Default => "default",
        }
    }
}

/// A setting in force and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective<T> {
    pub value: T,
    pub source: Source,
}

/// Every setting of a topic in force: its own where it sets one, the configuration's otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSettings {
    pub timestamp_type: Effective<TimestampType>,
    pub retention_ms: Effective<i64>,
    pub retention_bytes: Effective<i64>,
    pub local_retention_ms: Effective<u64>,
    pub local_retention_bytes: Effective<u64>,
    /// Off when the topic turns it off, or when the server does not tier at all
    /// (`tiering.enabled = false`): a topic can opt out of tiering, not into it.
    pub remote_storage_enable: Effective<bool>,
    pub segment_bytes: Effective<u64>,
    pub segment_ms: Effective<u64>,
    pub object_lock_mode: Effective<Option<Mode>>,
    pub object_lock_retain_days: Effective<u64>,
}

fn pick<T: Copy>(own: Option<T>, fallback: T) -> Effective<T> {
    match own {
        Some(value) => Effective { value, source: Source::Topic },
        None => Effective { value: fallback, source: Source::Config },
    }
}

impl EffectiveSettings {
    /// The remote retention in force: `(ms, bytes)`, `None` where a limit is off.
    pub fn remote_retention(&self) -> (Option<u64>, Option<u64>) {
        (u64::try_from(self.retention_ms.value).ok(), u64::try_from(self.retention_bytes.value).ok())
    }

    /// The S3 Object Lock in force, if any: the mode, and a period of `object.lock.retain.days`
    /// or the remote retention (`retention.ms`) when that is longer, so an object stays
    /// locked until retention would expire it.
    pub fn object_lock(&self) -> Option<LockPolicy> {
        let mode = self.object_lock_mode.value?;
        let days = self.object_lock_retain_days.value.saturating_mul(DAY_MS);
        let retention = u64::try_from(self.retention_ms.value).unwrap_or(0);
        Some(LockPolicy { mode, retain_ms: days.max(retention) })
    }

    /// Every setting as (Kafka name, typed value, source), in [`KEYS`] order.
    pub fn entries(&self) -> Vec<(&'static str, Value, Source)> {
        vec![
            (TIMESTAMP_TYPE, json!(self.timestamp_type.value.as_str()), self.timestamp_type.source),
            (RETENTION_MS, json!(self.retention_ms.value), self.retention_ms.source),
            (RETENTION_BYTES, json!(self.retention_bytes.value), self.retention_bytes.source),
            (LOCAL_RETENTION_MS, json!(self.local_retention_ms.value), self.local_retention_ms.source),
            (LOCAL_RETENTION_BYTES, json!(self.local_retention_bytes.value), self.local_retention_bytes.source),
            (REMOTE_STORAGE_ENABLE, json!(self.remote_storage_enable.value), self.remote_storage_enable.source),
            (SEGMENT_BYTES, json!(self.segment_bytes.value), self.segment_bytes.source),
            (SEGMENT_MS, json!(self.segment_ms.value), self.segment_ms.source),
            (
                OBJECT_LOCK_MODE,
                json!(self.object_lock_mode.value.map_or("off", Mode::as_str)),
                self.object_lock_mode.source,
            ),
            (OBJECT_LOCK_RETAIN_DAYS, json!(self.object_lock_retain_days.value), self.object_lock_retain_days.source),
        ]
    }

    /// `{"<key>": {"value": v, "source": "topic"|"config"|"default"}, …}`: what `topic
    /// describe` and `GET /v1/topics/{topic}` show.
    pub fn to_json(&self) -> Value {
        let map = self
            .entries()
            .into_iter()
            .map(|(key, value, source)| (key.to_string(), json!({"value": value, "source": source.as_str()})))
            .collect::<serde_json::Map<_, _>>();
        Value::Object(map)
    }
}

/// A value's text form, as Kafka configs carry it ("1048576", "false").
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl TopicSettings {
    pub fn is_empty(&self) -> bool {
        *self == TopicSettings::default()
    }

    /// The settings in force for a topic with these settings and `timestamp_type` under `config`.
    /// The one place that decides between a topic's setting and the configuration.
    pub fn resolve(&self, timestamp_type: TimestampType, config: &Config) -> EffectiveSettings {
        let t = &config.tiering;
        let timestamp_source = if timestamp_type == TimestampType::default() { Source::Default } else { Source::Topic };
        let remote_storage_enable = match self.remote_storage_enable {
            Some(on) if t.enabled => Effective { value: on, source: Source::Topic },
            _ => Effective { value: t.enabled, source: Source::Config },
        };
        EffectiveSettings {
            timestamp_type: Effective { value: timestamp_type, source: timestamp_source },
            retention_ms: pick(self.retention_ms, t.remote_retention_ms),
            retention_bytes: pick(self.retention_bytes, t.remote_retention_bytes),
            local_retention_ms: pick(self.local_retention_ms, t.local_retention_ms),
            local_retention_bytes: pick(self.local_retention_bytes, t.local_retention_bytes),
            remote_storage_enable,
            segment_bytes: pick(self.segment_bytes, config.segment.max_bytes),
            segment_ms: pick(self.segment_ms, config.segment.max_age_ms),
            object_lock_mode: pick(
                self.object_lock_mode.as_deref().map(|m| Mode::parse(m).flatten()),
                Mode::parse(&t.object_lock_mode).flatten(),
            ),
            object_lock_retain_days: pick(self.object_lock_retain_days, t.object_lock_retain_days),
        }
    }

    /// Sets `key` (not `message.timestamp.type`, see [`NewTopicSettings`]) from its text
    /// form, checked against the range of the configuration key it overrides.
    pub fn set(&mut self, topic: &str, key: &str, value: &str) -> Result<()> {
        let invalid = |why: String| Error::Invalid(format!("topic '{topic}': {key} = {value:?} {why}"));
        let number = |fallback: &str| -> Result<u64> {
            let (min, max) = config::range(fallback).expect("every u64 setting has a configuration range");
            match value.trim().parse::<u64>() {
                Ok(v) if (min..=max).contains(&v) => Ok(v),
                Ok(_) => Err(invalid(format!("is out of range: allowed {min}..={max} (as {fallback})"))),
                Err(_) => Err(invalid(format!("is not a whole number: allowed {min}..={max} (as {fallback})"))),
            }
        };
        let retention = |ms: bool| -> Result<i64> {
            let Ok(v) = value.trim().parse::<i64>() else {
                return Err(invalid("is not a whole number: -1 (no limit) or a positive limit".into()));
            };
            let (ms_v, bytes_v) = if ms { (v, -1) } else { (-1, v) };
            config::check_remote_retention_as(ms_v, bytes_v, 0, [RETENTION_MS, RETENTION_BYTES, LOCAL_RETENTION_MS])
                .map_err(|e| in_topic(topic, e))?;
            Ok(v)
        };
        match key {
            RETENTION_MS => self.retention_ms = Some(retention(true)?),
            RETENTION_BYTES => self.retention_bytes = Some(retention(false)?),
            LOCAL_RETENTION_MS => self.local_retention_ms = Some(number("tiering.local_retention_ms")?),
            LOCAL_RETENTION_BYTES => self.local_retention_bytes = Some(number("tiering.local_retention_bytes")?),
            SEGMENT_BYTES => self.segment_bytes = Some(number("segment.max_bytes")?),
            SEGMENT_MS => self.segment_ms = Some(number("segment.max_age_ms")?),
            OBJECT_LOCK_RETAIN_DAYS => self.object_lock_retain_days = Some(number("tiering.object_lock_retain_days")?),
            OBJECT_LOCK_MODE => match Mode::parse(value.trim()) {
                Some(_) => self.object_lock_mode = Some(value.trim().to_string()),
                None => return Err(invalid("is not a lock mode: off, governance or compliance".into())),
            },
            REMOTE_STORAGE_ENABLE => match value.trim() {
                "true" => self.remote_storage_enable = Some(true),
                "false" => self.remote_storage_enable = Some(false),
                _ => return Err(invalid("is neither true nor false".into())),
            },
            TIMESTAMP_TYPE => {
                return Err(Error::Invalid(format!(
                    "topic '{topic}': {TIMESTAMP_TYPE} is set when a topic is created"
                )));
            }
            other => return Err(unknown(topic, other)),
        }
        Ok(())
    }

    /// Removes the topic's own value of `key`: the configuration's applies again.
    pub fn unset(&mut self, topic: &str, key: &str) -> Result<()> {
        match key {
            RETENTION_MS => self.retention_ms = None,
            RETENTION_BYTES => self.retention_bytes = None,
            LOCAL_RETENTION_MS => self.local_retention_ms = None,
            LOCAL_RETENTION_BYTES => self.local_retention_bytes = None,
            REMOTE_STORAGE_ENABLE => self.remote_storage_enable = None,
            SEGMENT_BYTES => self.segment_bytes = None,
            SEGMENT_MS => self.segment_ms = None,
            OBJECT_LOCK_MODE => self.object_lock_mode = None,
            OBJECT_LOCK_RETAIN_DAYS => self.object_lock_retain_days = None,
            TIMESTAMP_TYPE => return Err(timestamp_type_fixed(topic)),
            other => return Err(unknown(topic, other)),
        }
        Ok(())
    }

    /// The settings the topic sets, in text form by Kafka name (the bucket catalog's form).
    pub fn to_strings(&self) -> BTreeMap<String, String> {
        let value = serde_json::to_value(self).expect("settings serialize");
        value.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), text(v))).collect()
    }

    /// Rules between settings and with the configuration, checked when a topic is created or
    /// altered (not when it is opened or restored: a configuration changed since must not
    /// make a topic unreadable). Remote retention is never shorter than local retention, and a
    /// topic cannot turn tiering on where the server does not tier.
    pub fn check(&self, topic: &str, config: &Config) -> Result<()> {
        let t = &config.tiering;
        let name = |key: &'static str, own: bool, fallback: &str| {
            if own { key.to_string() } else { format!("{key} (from {fallback})") }
        };
        let names = [
            name(RETENTION_MS, self.retention_ms.is_some(), "tiering.remote_retention_ms"),
            name(RETENTION_BYTES, self.retention_bytes.is_some(), "tiering.remote_retention_bytes"),
            name(LOCAL_RETENTION_MS, self.local_retention_ms.is_some(), "tiering.local_retention_ms"),
        ];
        config::check_remote_retention_as(
            self.retention_ms.unwrap_or(t.remote_retention_ms),
            self.retention_bytes.unwrap_or(t.remote_retention_bytes),
            self.local_retention_ms.unwrap_or(t.local_retention_ms),
            [&names[0], &names[1], &names[2]],
        )
        .map_err(|e| in_topic(topic, e))?;
        config::check_object_lock(
            self.object_lock_mode.as_deref().unwrap_or(&t.object_lock_mode),
            self.object_lock_retain_days.unwrap_or(t.object_lock_retain_days),
            [
                &name(OBJECT_LOCK_MODE, self.object_lock_mode.is_some(), "tiering.object_lock_mode"),
                &name(
                    OBJECT_LOCK_RETAIN_DAYS,
                    self.object_lock_retain_days.is_some(),
                    "tiering.object_lock_retain_days",
                ),
            ],
        )
        .map_err(|e| in_topic(topic, e))?;
        if self.remote_storage_enable == Some(true) && !t.enabled {
            return Err(Error::Invalid(format!(
                "topic '{topic}': {REMOTE_STORAGE_ENABLE} = true, but this server does not tier at all \
                 (tiering.enabled = false): enable tiering in its configuration first"
            )));
        }
        Ok(())
    }

    /// Reads settings in text form (the bucket catalog's), refusing unknown keys and values
    /// out of range, without the rules that depend on the configuration.
    pub fn from_strings<'a>(topic: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<TopicSettings> {
        let mut settings = TopicSettings::default();
        for (key, value) in pairs {
            settings.set(topic, key, value)?;
        }
        Ok(settings)
    }
}

/// What a topic is created with: its timestamp type (fixed for life) and its own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTopicSettings {
    pub timestamp_type: TimestampType,
    pub settings: TopicSettings,
}

impl NewTopicSettings {
    /// Parses `KEY=VALUE` pairs under Kafka's names (`topic create --set`, the `config` of
    /// `POST /v1/topics`, the configs of Kafka's CreateTopics). Each key at most once.
    pub fn parse<'a>(topic: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<NewTopicSettings> {
        let mut new = NewTopicSettings::default();
        let mut seen = std::collections::BTreeSet::new();
        for (key, value) in pairs {
            if !seen.insert(key) {
                return Err(Error::Invalid(format!("topic '{topic}': {key} is given twice")));
            }
            match key {
                TIMESTAMP_TYPE => {
                    new.timestamp_type =
                        value.parse().map_err(|e| Error::Invalid(format!("topic '{topic}': {TIMESTAMP_TYPE}: {e}")))?
                }
                _ => new.settings.set(topic, key, value)?,
            }
        }
        Ok(new)
    }

    /// The catalog's form: `message.timestamp.type` (always) and every setting the topic sets.
    pub fn to_strings(&self) -> BTreeMap<String, String> {
        let mut map = self.settings.to_strings();
        map.insert(TIMESTAMP_TYPE.to_string(), self.timestamp_type.as_str().to_string());
        map
    }
}

/// A change to a topic's settings (`topic alter`, `PATCH /v1/topics/{topic}`, Kafka's
/// IncrementalAlterConfigs): values to set by Kafka name, keys to fall back to the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub set: Vec<(String, String)>,
    pub unset: Vec<String>,
}

impl SettingsChange {
    /// The settings after this change to `current`, each value checked (cross-setting rules
    /// are [`TopicSettings::check`]'s). `message.timestamp.type` may only be "set" to what it is.
    pub fn apply(&self, topic: &str, timestamp_type: TimestampType, current: &TopicSettings) -> Result<TopicSettings> {
        let mut next = current.clone();
        let mut seen = std::collections::BTreeSet::new();
        for key in self.set.iter().map(|(k, _)| k).chain(&self.unset) {
            if !seen.insert(key.as_str()) {
                return Err(Error::Invalid(format!("topic '{topic}': {key} is named twice in one change")));
            }
        }
        for (key, value) in &self.set {
            if key == TIMESTAMP_TYPE {
                if value.parse::<TimestampType>().ok() != Some(timestamp_type) {
                    return Err(timestamp_type_fixed(topic));
                }
                continue; // "set" to what it is: nothing changes
            }
            next.set(topic, key, value)?;
        }
        for key in &self.unset {
            next.unset(topic, key)?;
        }
        Ok(next)
    }
}

fn unknown(topic: &str, key: &str) -> Error {
    Error::Invalid(format!("topic '{topic}': unknown setting {key:?}; supported (Kafka's names): {}", supported()))
}

fn timestamp_type_fixed(topic: &str) -> Error {
    Error::Invalid(format!(
        "topic '{topic}': {TIMESTAMP_TYPE} cannot be changed after the topic is created: the batches already \
         written keep their encoding. Create a new topic with the timestamp type you want"
    ))
}

/// A configuration-check error, said of the topic.
fn in_topic(topic: &str, e: Error) -> Error {
    match e {
        Error::Config(message) => Error::Invalid(format!("topic '{topic}': {message}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_settings() -> impl Strategy<Value = TopicSettings> {
        (
            proptest::option::of(prop_oneof![Just(-1i64), 1..=config::REMOTE_RETENTION_MS_MAX]),
            proptest::option::of(prop_oneof![Just(-1i64), 1..=i64::MAX]),
            proptest::option::of(0..=100 * 365 * 24 * 3_600_000u64),
            proptest::option::of(0..=u64::MAX >> 2),
            proptest::option::of(any::<bool>()),
            proptest::option::of(4096..=2u64 << 30),
            proptest::option::of(1000..=365 * 24 * 3_600_000u64),
            proptest::option::of(prop_oneof![Just("off"), Just("governance"), Just("compliance")]),
            proptest::option::of(0..=36_500u64),
        )
            .prop_map(|(rm, rb, lm, lb, on, sb, sm, mode, days)| TopicSettings {
                retention_ms: rm,
                retention_bytes: rb,
                local_retention_ms: lm,
                local_retention_bytes: lb,
                remote_storage_enable: on,
                segment_bytes: sb,
                segment_ms: sm,
                object_lock_mode: mode.map(str::to_string),
                object_lock_retain_days: days,
            })
    }

    #[test]
    fn object_lock_takes_a_known_mode_needs_days_and_locks_at_least_as_long_as_retention() {
        let config = Config::default();
        let mut s = TopicSettings::default();
        let err = s.set("t", OBJECT_LOCK_MODE, "worm").unwrap_err().to_string();
        assert!(err.contains("off, governance or compliance"), "{err}");
        s.set("t", OBJECT_LOCK_MODE, "compliance").unwrap();
        let err = s.check("t", &config).unwrap_err().to_string();
        assert!(err.contains("object.lock.retain.days") && err.contains("at least 1"), "{err}");
        s.set("t", OBJECT_LOCK_RETAIN_DAYS, "7").unwrap();
        s.check("t", &config).unwrap();
        let effective = s.resolve(TimestampType::default(), &config);
        assert_eq!(effective.object_lock(), Some(LockPolicy { mode: Mode::Compliance, retain_ms: 7 * DAY_MS }));
        // Remote retention longer than the lock: objects stay locked until they expire.
        s.set("t", RETENTION_MS, &(30 * DAY_MS).to_string()).unwrap();
        let effective = s.resolve(TimestampType::default(), &config);
        assert_eq!(effective.object_lock().unwrap().retain_ms, 30 * DAY_MS);
        assert_eq!(effective.to_json()[OBJECT_LOCK_MODE], json!({"value": "compliance", "source": "topic"}));
        // Off by default; the configuration's mode applies to topics that set none.
        assert_eq!(TopicSettings::default().resolve(TimestampType::default(), &config).object_lock(), None);
        let mut locked = Config::default();
        locked.tiering.object_lock_mode = "governance".into();
        locked.tiering.object_lock_retain_days = 1;
        let effective = TopicSettings::default().resolve(TimestampType::default(), &locked);
        assert_eq!(effective.object_lock(), Some(LockPolicy { mode: Mode::Governance, retain_ms: DAY_MS }));
        let mut off = TopicSettings::default();
        off.set("t", OBJECT_LOCK_MODE, "off").unwrap();
        assert_eq!(off.resolve(TimestampType::default(), &locked).object_lock(), None, "a topic can opt out");
    }

    proptest! {
        /// JSON (topic.json) and text (catalog, APIs) forms both give back the same settings.
        #[test]
        fn settings_round_trip_through_json_and_text(settings in any_settings()) {
            let json = serde_json::to_vec(&settings).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<TopicSettings>(&json).unwrap(), &settings);
            let strings = settings.to_strings();
            let back = TopicSettings::from_strings("t", strings.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
            prop_assert_eq!(back, settings);
        }
    }

    #[test]
    fn unset_settings_fall_back_to_the_configuration_and_say_so() {
        let mut config = Config::default();
        config.segment.max_bytes = 8 << 20;
        let own = TopicSettings { segment_bytes: Some(1 << 20), ..TopicSettings::default() };
        let effective = own.resolve(TimestampType::CreateTime, &config);
        assert_eq!(effective.segment_bytes, Effective { value: 1 << 20, source: Source::Topic });
        assert_eq!(effective.segment_ms, Effective { value: config.segment.max_age_ms, source: Source::Config });
        assert_eq!(effective.timestamp_type.source, Source::Default);
        assert_eq!(effective.remote_retention(), (None, None));
        let kept = TopicSettings { retention_ms: Some(7 * 86_400_000), retention_bytes: Some(1 << 30), ..own };
        assert_eq!(
            kept.resolve(TimestampType::CreateTime, &config).remote_retention(),
            (Some(7 * 86_400_000), Some(1 << 30))
        );
    }

    #[test]
    fn a_topic_can_opt_out_of_tiering_but_not_into_it() {
        let mut config = Config::default();
        let off = TopicSettings { remote_storage_enable: Some(false), ..TopicSettings::default() };
        assert!(!off.resolve(TimestampType::CreateTime, &config).remote_storage_enable.value);
        config.tiering.enabled = false;
        let on = TopicSettings { remote_storage_enable: Some(true), ..TopicSettings::default() };
        let effective = on.resolve(TimestampType::CreateTime, &config).remote_storage_enable;
        assert_eq!(effective, Effective { value: false, source: Source::Config });
        let err = on.check("t", &config).unwrap_err().to_string();
        assert!(err.contains("tiering.enabled = false"), "{err}");
    }

    #[test]
    fn bad_values_name_the_topic_key_value_and_range() {
        let mut s = TopicSettings::default();
        let err = s.set("t", "segment.bytes", "10").unwrap_err().to_string();
        assert!(err.contains("topic 't': segment.bytes = \"10\" is out of range: allowed 4096..="), "{err}");
        let err = s.set("t", "segment.ms", "soon").unwrap_err().to_string();
        assert!(err.contains("segment.ms = \"soon\" is not a whole number"), "{err}");
        let err = s.set("t", "retention.ms", "0").unwrap_err().to_string();
        assert!(err.contains("retention.ms = 0 is out of range: -1 (keep forever)"), "{err}");
        let err = s.set("t", "remote.storage.enable", "yes").unwrap_err().to_string();
        assert!(err.contains("neither true nor false"), "{err}");
        let err = s.set("t", "cleanup.policy", "compact").unwrap_err().to_string();
        assert!(err.contains("unknown setting \"cleanup.policy\"") && err.contains("segment.bytes"), "{err}");
        assert!(s.is_empty(), "nothing was set by refused values");
    }

    #[test]
    fn remote_retention_shorter_than_local_is_refused_naming_both_sources() {
        let config = Config::default(); // local retention: one day
        let short = TopicSettings { retention_ms: Some(3_600_000), ..TopicSettings::default() };
        let err = short.check("t", &config).unwrap_err().to_string();
        assert!(
            err.contains("retention.ms = 3600000 is shorter than local.retention.ms (from tiering.local_retention_ms)"),
            "{err}"
        );
        let both = TopicSettings { local_retention_ms: Some(1_000), ..short };
        both.check("t", &config).unwrap();
    }

    #[test]
    fn the_timestamp_type_is_fixed_after_creation() {
        let change = SettingsChange { set: vec![(TIMESTAMP_TYPE.into(), "LogAppendTime".into())], unset: vec![] };
        let err = change.apply("t", TimestampType::CreateTime, &TopicSettings::default()).unwrap_err().to_string();
        assert!(err.contains("cannot be changed after the topic is created"), "{err}");
        let same = SettingsChange { set: vec![(TIMESTAMP_TYPE.into(), "CreateTime".into())], unset: vec![] };
        assert!(same.apply("t", TimestampType::CreateTime, &TopicSettings::default()).unwrap().is_empty());
        let unset = SettingsChange { set: vec![], unset: vec![TIMESTAMP_TYPE.into()] };
        assert!(unset.apply("t", TimestampType::CreateTime, &TopicSettings::default()).is_err());
    }
}
