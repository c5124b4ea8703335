//! Time arguments: epoch milliseconds or RFC 3339, as accepted by `--from-time`, `--time`
//! and the `timestamp` field of the JSON envelope.

/// Parses `12345` (ms since the Unix epoch) or `2026-03-03T14:02:00Z` / `…+01:00`.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
        format!("{text:?} is neither epoch milliseconds nor an RFC 3339 time such as 2026-03-03T14:02:00Z ({e})")
    })
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

    #[test]
    fn accepts_epoch_ms_and_rfc3339_with_offsets() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("2026-03-03T14:02:00Z").unwrap(), 1_772_546_520_000);
        assert_eq!(parse_time("2026-03-03T15:02:00+01:00").unwrap(), 1_772_546_520_000);
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        assert_eq!(format_time(1_772_546_520_000), "2026-03-03T14:02:00.000Z");
    }
}
