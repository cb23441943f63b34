//! Records: what the init reports, one flat JSON object per record.
//!
//! Encoding is hand-written (no serde_json in the init's hot path) and always compact:
//! `{"v":1,"t":"end","step":"2.1","status":"passed","code":0,"ms":12,"attempt":1}`.
//! Decoding accepts any flat JSON object, ignores unknown keys (forward compatible within a major
//! version) and skips nested values it does not know.

use std::fmt;

/// The most bytes of JSON that a free-text field (`name`, `reason`) takes in an encoded record;
/// longer text is cut at a character boundary and ends in `...`. With step ids bounded by the spec
/// ([`crate::spec::MAX_ID_LEN`]), every framed record stays below 3 KiB, well under the 4096
/// bytes (PIPE_BUF) that one write() puts on a pipe whole: records never interleave with other
/// writers' bytes.
pub const MAX_TEXT_JSON: usize = 1024;

/// A step's (or the workflow's) outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Passed,
    Failed,
    Skipped,
    Timeout,
    Aborted,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Passed,
        Status::Failed,
        Status::Skipped,
        Status::Timeout,
        Status::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Timeout => "timeout",
            Status::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Failed, timed out or aborted: what makes a parent (or a `passed` condition) fail.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Timeout | Status::Aborted)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record. `step` is the step id from the spec (default ids are 1-based paths like `2.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A step (leaf or group) starts; `attempt` counts from 1 (leaves only retry).
    Start {
        step: String,
        name: Option<String>,
        attempt: u32,
    },
    /// A step ended. `code` is the exit status of its last process (128+N for signal N), absent for
    /// groups and steps that never ran; `ms` is measured by a monotonic clock; `reason` explains
    /// failures the exit code does not (missing program, timeout, abort).
    End {
        step: String,
        status: Status,
        code: Option<i32>,
        ms: u64,
        attempt: u32,
        reason: Option<String>,
    },
    /// The end of what this init ran. `last` is true from the init that ran the workflow's last
    /// container: then `status` is the workflow's result; otherwise the result so far. `reason`
    /// says why the workflow fails whatever its steps did (its state failed verification).
    Done {
        status: Status,
        ms: u64,
        last: bool,
        reason: Option<String>,
    },
}

impl Record {
    /// Appends the record's JSON object (no marker, no newline) to `out`. `name` and `reason`
    /// are cut to [`MAX_TEXT_JSON`] bytes of JSON (see there).
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"v\":1,\"t\":");
        match self {
            Record::Start {
                step,
                name,
                attempt,
            } => {
                out.extend_from_slice(b"\"start\"");
                str_field(out, "step", step, usize::MAX);
                if let Some(n) = name {
                    str_field(out, "name", n, MAX_TEXT_JSON);
                }
                num_field(out, "attempt", false, (*attempt).into());
            }
            Record::End {
                step,
                status,
                code,
                ms,
                attempt,
                reason,
            } => {
                out.extend_from_slice(b"\"end\"");
                str_field(out, "step", step, usize::MAX);
                str_field(out, "status", status.as_str(), usize::MAX);
                if let Some(c) = code {
                    num_field(out, "code", *c < 0, c.unsigned_abs().into());
                }
                num_field(out, "ms", false, *ms);
                num_field(out, "attempt", false, (*attempt).into());
                if let Some(r) = reason {
                    str_field(out, "reason", r, MAX_TEXT_JSON);
                }
            }
            Record::Done {
                status,
                ms,
                last,
                reason,
            } => {
                out.extend_from_slice(b"\"done\"");
                str_field(out, "status", status.as_str(), usize::MAX);
                num_field(out, "ms", false, *ms);
                out.extend_from_slice(if *last {
                    b",\"last\":true"
                } else {
                    b",\"last\":false"
                });
                if let Some(r) = reason {
                    str_field(out, "reason", r, MAX_TEXT_JSON);
                }
            }
        }
        out.push(b'}');
    }

    /// Parses one record's JSON object. `Ok(None)`: a well-formed record of a kind this version
    /// does not know (ignored for forward compatibility).
    pub fn decode_json(bytes: &[u8]) -> Result<Option<Record>, &'static str> {
        let fields = parse_flat_object(bytes)?;
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let text = |k: &str| match get(k) {
            Some(Value::Str(s)) => Ok(s.clone()),
            _ => Err("missing or non-string field"),
        };
        let opt_text = |k: &str| match get(k) {
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            _ => Err("non-string field"),
        };
        let int = |k: &str| match get(k) {
            Some(Value::Int(n)) => Ok(*n),
            _ => Err("missing or non-integer field"),
        };
        let status = || Status::parse(&text("status")?).ok_or("unknown status");
        match get("v") {
            Some(Value::Int(1)) => {}
            Some(Value::Int(_)) => return Err("unsupported record version"),
            _ => return Err("record without version"),
        }
        let rec = match text("t")?.as_str() {
            "start" => Record::Start {
                step: text("step")?,
                name: opt_text("name")?,
                attempt: to_u32(int("attempt")?)?,
            },
            "end" => Record::End {
                step: text("step")?,
                status: status()?,
                code: match get("code") {
                    None | Some(Value::Null) => None,
                    Some(Value::Int(c)) => {
                        Some(i32::try_from(*c).map_err(|_| "code out of range")?)
                    }
                    _ => return Err("non-integer code"),
                },
                ms: u64::try_from(int("ms")?).map_err(|_| "negative ms")?,
                attempt: to_u32(int("attempt")?)?,
                reason: opt_text("reason")?,
            },
            "done" => Record::Done {
                status: status()?,
                ms: u64::try_from(int("ms")?).map_err(|_| "negative ms")?,
                last: matches!(get("last"), Some(Value::Bool(true))),
                reason: opt_text("reason")?,
            },
            _ => return Ok(None),
        };
        Ok(Some(rec))
    }
}

fn to_u32(n: i128) -> Result<u32, &'static str> {
    u32::try_from(n).map_err(|_| "attempt out of range")
}

fn str_field(out: &mut Vec<u8>, key: &str, value: &str, limit: usize) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    json_string(out, value, limit);
}

/// A number field: `-` when `negative`, then `magnitude` (u64 durations and i32 codes both fit
/// without 128-bit arithmetic, which would cost the init's binary a division routine).
fn num_field(out: &mut Vec<u8>, key: &str, negative: bool, magnitude: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = magnitude;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes a JSON string of at most `limit` bytes between its quotes: longer text is cut at a
/// character boundary and ends in `...`. Every control byte (the framing marker 0x1E among them)
/// is escaped, so an encoded record never contains a raw marker or newline.
fn json_string(out: &mut Vec<u8>, s: &str, limit: usize) {
    out.push(b'"');
    let start = out.len();
    // Where to cut if the text turns out too long: the last character end that leaves room for
    // the "...".
    let mut cut = start;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
        let used = out.len() - start;
        if used > limit {
            out.truncate(cut);
            out.extend_from_slice(b"...");
            break;
        }
        // A character ends here when the next byte is not a UTF-8 continuation byte.
        let ends_char = s.as_bytes().get(i + 1).is_none_or(|&n| n & 0xC0 != 0x80);
        if ends_char && used + 3 <= limit {
            cut = out.len();
        }
    }
    out.push(b'"');
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i128),
    Bool(bool),
    Null,
    /// Floats, arrays and objects: skipped, not interpreted.
    Other,
}

/// A minimal JSON reader for one flat object; nested values are validated and skipped.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

/// Deepest nesting accepted when skipping unknown values (bounds the recursion).
const MAX_DEPTH: u32 = 16;

fn parse_flat_object(b: &[u8]) -> Result<Vec<(String, Value)>, &'static str> {
    let mut r = Reader { b, i: 0 };
    r.ws();
    r.expect(b'{')?;
    let mut fields = Vec::new();
    r.ws();
    if r.peek() == Some(b'}') {
        r.i += 1;
    } else {
        loop {
            r.ws();
            let k = r.string()?;
            r.ws();
            r.expect(b':')?;
            r.ws();
            let v = r.value(0)?;
            fields.push((k, v));
            r.ws();
            match r.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err("expected , or }"),
            }
        }
    }
    r.ws();
    if r.i != b.len() {
        return Err("trailing bytes after record");
    }
    Ok(fields)
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), &'static str> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err("malformed JSON")
        }
    }
    fn literal(&mut self, word: &[u8]) -> Result<(), &'static str> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err("malformed JSON literal")
        }
    }
    fn value(&mut self, depth: u32) -> Result<Value, &'static str> {
        if depth > MAX_DEPTH {
            return Err("JSON nested too deep");
        }
        match self.peek().ok_or("truncated JSON")? {
            b'"' => Ok(Value::Str(self.string()?)),
            b't' => self.literal(b"true").map(|_| Value::Bool(true)),
            b'f' => self.literal(b"false").map(|_| Value::Bool(false)),
            b'n' => self.literal(b"null").map(|_| Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            open @ (b'[' | b'{') => {
                let close = if open == b'[' { b']' } else { b'}' };
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(Value::Other);
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(c) if c == close => return Ok(Value::Other),
                        _ => return Err("malformed JSON container"),
                    }
                }
            }
            _ => Err("unexpected byte in JSON value"),
        }
    }
    fn number(&mut self) -> Result<Value, &'static str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if self.i == digits {
            return Err("malformed number");
        }
        let mut float = false;
        while matches!(
            self.peek(),
            Some(b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9')
        ) {
            float = true;
            self.i += 1;
        }
        if float {
            return Ok(Value::Other);
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| "malformed number")?;
        text.parse()
            .map(Value::Int)
            .map_err(|_| "integer out of range")
    }
    fn hex4(&mut self) -> Result<u32, &'static str> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or("truncated \\u escape")?;
        self.i += 4;
        let s = std::str::from_utf8(h).map_err(|_| "bad \\u escape")?;
        u32::from_str_radix(s, 16).map_err(|_| "bad \\u escape")
    }
    fn string(&mut self) -> Result<String, &'static str> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next().ok_or("unterminated string")? {
                b'"' => break,
                b'\\' => match self.next().ok_or("unterminated string")? {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let mut c = self.hex4()?;
                        if (0xD800..0xDC00).contains(&c) {
                            // A high surrogate must be followed by its low half.
                            self.literal(b"\\u")?;
                            let lo = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return Err("unpaired surrogate");
                            }
                            c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                        }
                        let ch = char::from_u32(c).ok_or("unpaired surrogate")?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return Err("bad escape in string"),
                },
                c if c < 0x20 => return Err("raw control byte in string"),
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| "string is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: Record) {
        let mut out = Vec::new();
        r.encode_json(&mut out);
        assert!(
            !out.contains(&b'\n') && !out.contains(&0x1e),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(Record::decode_json(&out), Ok(Some(r)));
    }

    #[test]
    fn records_roundtrip() {
        roundtrip(Record::Start {
            step: "2.1".into(),
            name: Some("bü\"ild\n\u{1e}".into()),
            attempt: 1,
        });
        roundtrip(Record::Start {
            step: "x".into(),
            name: None,
            attempt: 3,
        });
        roundtrip(Record::End {
            step: "1".into(),
            status: Status::Timeout,
            code: Some(-1),
            ms: u64::MAX >> 1,
            attempt: 2,
            reason: Some("timed out after 1s \u{1F600}".into()),
        });
        roundtrip(Record::End {
            step: "1".into(),
            status: Status::Skipped,
            code: None,
            ms: 0,
            attempt: 0,
            reason: None,
        });
        roundtrip(Record::Done {
            status: Status::Aborted,
            ms: 5,
            last: true,
            reason: None,
        });
        roundtrip(Record::Done {
            status: Status::Failed,
            ms: 5,
            last: false,
            reason: Some("the state failed verification".into()),
        });
    }

    #[test]
    fn encoding_is_compact_and_stable() {
        let mut out = Vec::new();
        Record::End {
            step: "2.1".into(),
            status: Status::Passed,
            code: Some(0),
            ms: 12,
            attempt: 1,
            reason: None,
        }
        .encode_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"v":1,"t":"end","step":"2.1","status":"passed","code":0,"ms":12,"attempt":1}"#
        );
    }

    #[test]
    fn decoding_ignores_unknown_fields_and_kinds() {
        let r = Record::decode_json(
            br#"{"v":1,"t":"start","x":[1,{"a":2.5e3}],"step":"a","attempt":1,"new":null}"#,
        );
        assert_eq!(
            r,
            Ok(Some(Record::Start {
                step: "a".into(),
                name: None,
                attempt: 1
            }))
        );
        assert_eq!(
            Record::decode_json(br#"{"v":1,"t":"progress","pct":5}"#),
            Ok(None)
        );
        assert_eq!(
            Record::decode_json(br#"{"v":1,"t":"start","step":"\ud83d\ude00","attempt":1}"#)
                .unwrap(),
            Some(Record::Start {
                step: "\u{1F600}".into(),
                name: None,
                attempt: 1
            })
        );
    }

    #[test]
    fn every_framed_record_fits_one_atomic_pipe_write() {
        // The worst the init can be given: a 256-byte id of control bytes (each escaped to six
        // bytes), and a name and reason of any length (a program name, a working directory).
        let step = "\u{1}".repeat(crate::spec::MAX_ID_LEN);
        let long = "\u{2}é".repeat(50_000);
        let records = [
            Record::Start {
                step: step.clone(),
                name: Some(long.clone()),
                attempt: u32::MAX,
            },
            Record::End {
                step,
                status: Status::Timeout,
                code: Some(i32::MIN),
                ms: u64::MAX,
                attempt: u32::MAX,
                reason: Some(long.clone()),
            },
        ];
        for r in records {
            let mut f = crate::Framer::new();
            let mut scratch = Vec::new();
            let _ = f.user_bytes(b"mid-line", &mut scratch);
            let mut out = Vec::new();
            f.record(&r, &mut out);
            // Under 3 KiB, as the README says: well below PIPE_BUF.
            assert!(out.len() < 3 * 1024, "{} bytes", out.len());
            // Cut at a character boundary: still valid JSON and UTF-8, a prefix plus "...".
            let json = &out[3..out.len() - 1];
            let Ok(Some(
                Record::Start { name: Some(t), .. }
                | Record::End {
                    reason: Some(t), ..
                },
            )) = Record::decode_json(json)
            else {
                panic!("{}", String::from_utf8_lossy(json))
            };
            let kept = t.strip_suffix("...").unwrap();
            assert!(long.starts_with(kept) && kept.len() > 100, "{t}");
        }
    }

    #[test]
    fn durations_beyond_i64_stay_positive() {
        let r = Record::Done {
            status: Status::Passed,
            ms: u64::MAX,
            last: false,
            reason: None,
        };
        let mut out = Vec::new();
        r.encode_json(&mut out);
        assert!(
            String::from_utf8_lossy(&out).contains("\"ms\":18446744073709551615,"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn decoding_rejects_bad_input_without_panicking() {
        for bad in [
            &br#"{"v":2,"t":"start","step":"a","attempt":1}"#[..],
            br#"{"t":"start"}"#,
            br#"{"v":1,"t":"end","step":"a","status":"weird","ms":1,"attempt":1}"#,
            br#"{"v":1,"t":"start","step":"a","attempt":-1}"#,
            br#"{"v":1"#,
            br#"{"v":1,"t":"start","step":"\ud800","attempt":1}"#,
            br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#,
            br#"{"v":1,"t":"done","status":"passed","ms":1} x"#,
            b"",
        ] {
            assert!(
                Record::decode_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{{\"v\":1,\"x\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(
            Record::decode_json(deep.as_bytes()),
            Err("JSON nested too deep")
        );
    }
}
