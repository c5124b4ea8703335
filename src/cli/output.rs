//! How `tierlog consume` prints a record (`-f/--format`): the JSON envelope (the default, one
//! object per line, which `produce --input-format json` reads back), the raw value, or a
//! kcat-style template. Locally and with `--server` alike: the same record prints the same bytes.

use std::io::Write;

use tierlog::StoredRecord;

/// What `--format` accepts, for error messages and `--help`.
pub const FORMAT_HELP: &str = "json, raw, or a template of %k key, %v (or %s) value, %o offset, %p partition, \
     %T timestamp (ms), %t topic, %h headers (k=v,…), %K/%S key/value length (-1: no key), %% and \\n \\t \\r \\\\";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// The consumer JSON envelope, one object per line.
    Json,
    /// The value's bytes, then a newline.
    Raw,
    Template(Vec<Piece>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Key,
    Value,
    Offset,
    Partition,
    Timestamp,
    Topic,
    Headers,
    KeyLength,
    ValueLength,
}

/// Parses `--format`: `json`, `raw`, or a template with at least one `%` token or escape (so a
/// mistyped format name is an error rather than a line of constant text per record).
pub fn parse_format(text: &str) -> Result<Format, String> {
    match text {
        "json" => return Ok(Format::Json),
        "raw" => return Ok(Format::Raw),
        _ => {}
    }
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = text.chars();
    let mut tokens = 0;
    while let Some(c) = chars.next() {
        let token = match c {
            '%' => match chars.next() {
                Some('%') => Piece::Text(b"%".to_vec()),
                Some('k') => Piece::Key,
                Some('v' | 's') => Piece::Value,
                Some('o') => Piece::Offset,
                Some('p') => Piece::Partition,
                Some('T') => Piece::Timestamp,
                Some('t') => Piece::Topic,
                Some('h') => Piece::Headers,
                Some('K') => Piece::KeyLength,
                Some('S') => Piece::ValueLength,
                other => {
                    let found = other.map_or("a lone % at the end".to_string(), |c| format!("%{c}"));
                    return Err(format!("--format {text:?}: unknown token {found}; use {FORMAT_HELP}"));
                }
            },
            '\\' => match chars.next() {
                Some('n') => Piece::Text(b"\n".to_vec()),
                Some('t') => Piece::Text(b"\t".to_vec()),
                Some('r') => Piece::Text(b"\r".to_vec()),
                Some('\\') => Piece::Text(b"\\".to_vec()),
                other => {
                    let found = other.map_or("a lone \\ at the end".to_string(), |c| format!("\\{c}"));
                    return Err(format!("--format {text:?}: unknown escape {found}; use {FORMAT_HELP}"));
                }
            },
            c => {
                literal.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
        };
        tokens += 1;
        match token {
            Piece::Text(bytes) => literal.extend_from_slice(&bytes),
            token => {
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(token);
            }
        }
    }
    if tokens == 0 {
        return Err(format!("--format {text:?}: not a format; use {FORMAT_HELP}"));
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(Format::Template(pieces))
}

impl Format {
    /// Writes one record of `topic`'s `partition`.
    pub fn write(
        &self,
        out: &mut impl Write,
        topic: &str,
        partition: u32,
        stored: &StoredRecord,
    ) -> std::io::Result<()> {
        let record = &stored.record;
        match self {
            Format::Json => writeln!(out, "{}", tierlog::envelope::record_to_json(partition, stored)),
            Format::Raw => {
                out.write_all(&record.value)?;
                out.write_all(b"\n")
            }
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(bytes) => out.write_all(bytes)?,
                        Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
                        Piece::Value => out.write_all(&record.value)?,
                        Piece::Offset => write!(out, "{}", stored.offset)?,
                        Piece::Partition => write!(out, "{partition}")?,
                        Piece::Timestamp => write!(out, "{}", record.timestamp)?,
                        Piece::Topic => out.write_all(topic.as_bytes())?,
                        Piece::Headers => {
                            for (i, (name, value)) in record.headers.iter().enumerate() {
                                let separator: &[u8] = if i == 0 { b"" } else { b"," };
                                out.write_all(separator)?;
                                out.write_all(name.as_bytes())?;
                                out.write_all(b"=")?;
                                out.write_all(value)?;
                            }
                        }
                        Piece::KeyLength => match &record.key {
                            Some(key) => write!(out, "{}", key.len())?,
                            None => out.write_all(b"-1")?,
                        },
                        Piece::ValueLength => write!(out, "{}", record.value.len())?,
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierlog::Record;

    fn render(format: &str, stored: &StoredRecord) -> Vec<u8> {
        let mut out = Vec::new();
        parse_format(format).unwrap().write(&mut out, "events", 2, stored).unwrap();
        out
    }

    #[test]
    fn templates_substitute_every_kcat_token_and_escape() {
        let record = Record {
            timestamp: 1_772_546_520_000,
            key: Some(b"k1".to_vec()),
            value: vec![b'v', 0xff],
            headers: vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        };
        let stored = StoredRecord { offset: 41, record, append_time: None };
        assert_eq!(
            render(r"%t/%p@%o %T %k=%v|%s [%h] %K %S 100%%\t.\\\n", &stored),
            b"events/2@41 1772546520000 k1=v\xff|v\xff [a=1,b=2] 2 2 100%\t.\\\n"
        );
        assert_eq!(render("raw", &stored), b"v\xff\n");
        let keyless = StoredRecord { record: Record { key: None, ..stored.record.clone() }, ..stored };
        assert_eq!(render(r"[%k] %K\n", &keyless), b"[] -1\n");
    }

    #[test]
    fn unknown_tokens_escapes_and_names_are_refused_with_the_list() {
        for (format, needle) in [
            ("%x", "unknown token %x"),
            ("abc%", "a lone % at the end"),
            (r"\q", r"unknown escape \q"),
            ("jsn", "not a format"),
        ] {
            let err = parse_format(format).unwrap_err();
            assert!(err.contains(needle) && err.contains("%k key"), "{format}: {err}");
        }
        assert_eq!(parse_format("json").unwrap(), Format::Json);
        assert_eq!(parse_format("%%").unwrap(), Format::Template(vec![Piece::Text(b"%".to_vec())]));
    }
}
