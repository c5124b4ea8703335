//! Realistic sample data: payment events as JSON, for the demo and the benchmarks. Values are
//! deterministic in the event number, so runs are repeatable and compression ratios honest.

use crate::record::Record;

const CURRENCIES: [&str; 5] = ["EUR", "USD", "GBP", "CHF", "JPY"];
const KINDS: [&str; 4] = ["card_payment", "sepa_transfer", "refund", "chargeback"];
const STATUSES: [&str; 3] = ["authorized", "settled", "declined"];
const MERCHANTS: [&str; 6] =
    ["Bakery Lindqvist", "Nordic Rail", "Café Aurora", "Hotel Meridian", "BookNook", "FreshMart"];
const COUNTRIES: [&str; 6] = ["SE", "DE", "FR", "NL", "GB", "US"];

/// Payment event number `n` at time `timestamp_ms`, keyed by account, about `target_bytes`
/// of JSON (a free-text memo pads it; real events carry such fields).
pub fn payment_event(n: u64, timestamp_ms: i64, target_bytes: usize) -> Record {
    let h = mix(n);
    let account = format!("acct-{:05}", h % 5000);
    let amount_cents = (h >> 16) % 500_000;
    let mut value = format!(
        concat!(
            "{{\"event_id\":\"evt-{:010}\",\"account\":\"{}\",\"counterparty\":\"acct-{:05}\",",
            "\"amount\":{}.{:02},\"currency\":\"{}\",\"type\":\"{}\",\"status\":\"{}\",",
            "\"merchant\":\"{}\",\"country\":\"{}\",\"risk_score\":{},\"ts\":{}"
        ),
        n,
        account,
        (h >> 8) % 5000,
        amount_cents / 100,
        amount_cents % 100,
        CURRENCIES[(h >> 20) as usize % CURRENCIES.len()],
        KINDS[(h >> 24) as usize % KINDS.len()],
        STATUSES[(h >> 28) as usize % STATUSES.len()],
        MERCHANTS[(h >> 32) as usize % MERCHANTS.len()],
        COUNTRIES[(h >> 36) as usize % COUNTRIES.len()],
        (h >> 40) % 100,
        timestamp_ms,
    );
    if value.len() + 12 < target_bytes {
        value.push_str(",\"memo\":\"");
        let words = ["invoice", "order", "monthly", "subscription", "ref", "batch", "terminal", "settlement"];
        let mut i = h;
        while value.len() + 2 < target_bytes {
            value.push_str(words[(i % words.len() as u64) as usize]);
            value.push(' ');
            i = mix(i);
        }
        value.truncate(target_bytes - 2);
        value.push('"');
    }
    value.push('}');
    Record {
        timestamp: timestamp_ms,
        key: Some(account.into_bytes()),
        value: value.into_bytes(),
        headers: vec![("source".into(), b"demo".to_vec())],
    }
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_are_valid_json_of_the_requested_size() {
        for n in 0..50 {
            let r = super::payment_event(n, 1_700_000_000_000, 1024);
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(v["ts"], 1_700_000_000_000i64);
            assert_eq!(r.value.len(), 1024);
        }
    }
}
