//! Time arguments, as accepted by `--from-time`, `--to-time`, `--time`, the HTTP `*_time`
//! parameters and string `timestamp`s in the JSON envelope.
//!
//! Accepted forms (what rpk and kcat users type):
//! - RFC 3339: `2026-03-03T14:02:00Z`, `2026-03-03T15:02:00.250+01:00`;
//! - a date: `2026-03-03` (midnight UTC);
//! - epoch milliseconds: `1772546520000`, or explicitly `ms:1772546520000`;
//! - epoch seconds, only explicitly: `s:1772546520`;
//! - relative to now: `-15m`, `-1h`, `-2d`, `-30s`, `-500ms`.
//!
//! A bare number of the size of epoch *seconds* (10–11 digits) is refused with a hint: read as
//! milliseconds it would silently mean a day in 1970, and a replay would start from the
//! beginning of the log.

/// Bare numbers from here (in absolute value) up to [`MS_FROM`] look like epoch seconds
/// (2001-09-09 onwards) and are refused.
const SECONDS_LIKE_FROM: i64 = 1_000_000_000;
/// Bare numbers from here on are epoch milliseconds (1973-03-03 onwards).
const MS_FROM: i64 = 100_000_000_000;

/// Parses `text` with "now" taken from the system clock (for relative times).
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, chrono::Utc::now().timestamp_millis())
}

/// Parses `text`; relative times count back from `now_ms`.
pub fn parse_time_at(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(seconds) = text.strip_prefix("s:") {
        let seconds: i64 = seconds.parse().map_err(|_| format!("{text:?}: expected s:<epoch seconds>"))?;
        return seconds.checked_mul(1000).ok_or_else(|| format!("{text:?} is out of range"));
    }
    if let Some(ms) = text.strip_prefix("ms:") {
        return ms.parse().map_err(|_| format!("{text:?}: expected ms:<epoch milliseconds>"));
    }
    if let Ok(number) = text.parse::<i64>() {
        return bare_number(number);
    }
    if let Some(ago) = text.strip_prefix('-') {
        return relative(ago)
            .map(|ms| now_ms - ms)
            .ok_or_else(|| format!("{text:?}: a relative time is -<n><unit> with unit ms, s, m, h or d, e.g. -15m"));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
        format!(
            "{text:?} is not a time ({e}). Use RFC 3339 (2026-03-03T14:02:00Z), a date (2026-03-03), \
             epoch milliseconds (1772546520000), s:<epoch seconds>, or a relative time (-15m, -1h, -2d)"
        )
    })
}

fn bare_number(number: i64) -> Result<i64, String> {
    if (SECONDS_LIKE_FROM..MS_FROM).contains(&number.saturating_abs()) {
        return Err(format!(
            "{number} looks like epoch seconds; times are epoch milliseconds. \
             Write s:{number} for seconds or {}000 for milliseconds",
            number
        ));
    }
    Ok(number)
}

/// Parses a duration such as `30s`, `500ms`, `5m`, `2h` or `1d` (the units of relative times).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let ms = relative(text)
        .ok_or_else(|| format!("{text:?} is not a duration: write <n><unit> with unit ms, s, m, h or d, e.g. 30s"))?;
    Ok(std::time::Duration::from_millis(ms as u64))
}

/// `15m` → 900 000.
fn relative(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (amount, unit) = text.split_at(split);
    let amount: i64 = amount.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    amount.checked_mul(unit_ms)
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds, for humans.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_546_520_000; // 2026-03-03T14:02:00Z

    #[test]
    fn accepts_epoch_ms_and_rfc3339_with_offsets() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("2026-03-03T14:02:00Z").unwrap(), NOW);
        assert_eq!(parse_time("2026-03-03T15:02:00+01:00").unwrap(), NOW);
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        assert_eq!(format_time(NOW), "2026-03-03T14:02:00.000Z");
    }

    #[test]
    fn epoch_seconds_are_refused_bare_and_accepted_explicitly() {
        let err = parse_time("1772546520").unwrap_err();
        assert!(err.contains("s:1772546520") && err.contains("1772546520000"), "{err}");
        assert_eq!(parse_time("s:1772546520").unwrap(), NOW);
        assert_eq!(parse_time("ms:1772546520000").unwrap(), NOW);
        // Small numbers stay milliseconds (tests and synthetic data use them).
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("12345").unwrap(), 12_345);
    }

    #[test]
    fn dates_and_relative_times() {
        assert_eq!(parse_time("2026-03-03").unwrap(), NOW - (14 * 60 + 2) * 60_000);
        assert_eq!(parse_time_at("-15m", NOW).unwrap(), NOW - 900_000);
        assert_eq!(parse_time_at("-1h", NOW).unwrap(), NOW - 3_600_000);
        assert_eq!(parse_time_at("-2d", NOW).unwrap(), NOW - 2 * 86_400_000);
        assert_eq!(parse_time_at("-500ms", NOW).unwrap(), NOW - 500);
        assert!(parse_time_at("-15x", NOW).unwrap_err().contains("-15m"));
        assert!(parse_time_at("-h", NOW).is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s").unwrap(), std::time::Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), std::time::Duration::from_millis(250));
        assert_eq!(parse_duration("2h").unwrap(), std::time::Duration::from_secs(7200));
        for bad in ["30", "-5s", "5x", "s", ""] {
            assert!(parse_duration(bad).unwrap_err().contains("e.g. 30s"), "{bad}");
        }
    }
}
