//! Framing: records and the steps' own bytes on one stream.
//!
//! Every stream the init writes (its stdout and its stderr) is a sequence of:
//! - user bytes other than `MARKER` (0x1E), passed through as they are;
//! - `MARKER MARKER`: one user byte 0x1E (the only escape);
//! - `MARKER '\n'`: a soft line break the init inserted so a record starts a line; decodes to nothing;
//! - `MARKER '{' JSON '\n'`: a record (stdout only). The JSON never holds a raw newline or marker.
//!
//! So no byte sequence a step prints can decode as a record, and decoding gives back the step's
//! bytes exactly. See `protocol/README.md`.

use crate::record::Record;

/// The framing marker, ASCII "record separator".
pub const MARKER: u8 = 0x1E;

/// Longest record the decoder accepts, in bytes of JSON.
pub const MAX_RECORD: usize = 64 * 1024;

/// Encoder state for one output stream: whether the last byte written ended a line.
#[derive(Debug, Clone)]
pub struct Framer {
    at_line_start: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            at_line_start: true,
        }
    }
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames user bytes. Returns `data` itself when it holds no marker (the common case: no copy),
    /// else the escaped bytes, built in `scratch`.
    pub fn user_bytes<'a>(&mut self, data: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let Some(&last) = data.last() else {
            return data;
        };
        self.at_line_start = last == b'\n';
        if !contains_marker(data) {
            return data;
        }
        scratch.clear();
        scratch.reserve(data.len() + 16);
        for part in data.split_inclusive(|&b| b == MARKER) {
            scratch.extend_from_slice(part);
            if part.last() == Some(&MARKER) {
                scratch.push(MARKER);
            }
        }
        scratch
    }

    /// Appends a framed record to `out`, preceded by a soft line break when the stream is mid-line.
    pub fn record(&mut self, record: &Record, out: &mut Vec<u8>) {
        self.framed(record, out, None);
    }

    /// As [`Framer::record`], the record carrying `tag(JSON up to its closing brace)` as its
    /// last field, [`MAC_FIELD`] (see `protocol/README.md`, "Authenticated records").
    pub fn signed_record(&mut self, record: &Record, out: &mut Vec<u8>, tag: Signer<'_>) {
        self.framed(record, out, Some(tag));
    }

    fn framed(&mut self, record: &Record, out: &mut Vec<u8>, tag: Option<Signer<'_>>) {
        if !self.at_line_start {
            out.extend_from_slice(&[MARKER, b'\n']);
        }
        out.push(MARKER);
        let json = out.len();
        record.encode_json(out);
        if let Some(tag) = tag {
            out.pop(); // the closing brace
            let t = tag(&out[json..]);
            out.extend_from_slice(MAC_FIELD);
            for b in t {
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            out.extend_from_slice(b"\"}");
        }
        out.push(b'\n');
        self.at_line_start = true;
    }
}

/// Bytes of a record's authentication tag.
pub const MAC_LEN: usize = 16;

/// Computes a record's tag from its JSON up to the closing brace (the init's signer).
pub type Signer<'a> = &'a mut dyn FnMut(&[u8]) -> [u8; MAC_LEN];

/// What precedes a signed record's tag (32 hex digits, then `"}`).
pub const MAC_FIELD: &[u8] = b",\"mac\":\"";

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A signed record's JSON split into what its tag covers (up to the closing brace) and the tag;
/// None when it carries no well-formed tag as its last field.
pub fn split_mac(json: &[u8]) -> Option<(&[u8], [u8; MAC_LEN])> {
    let tail = MAC_FIELD.len() + 2 * MAC_LEN + 2;
    let at = json.len().checked_sub(tail)?;
    let (body, rest) = json.split_at(at);
    let hex = rest.strip_prefix(MAC_FIELD)?.strip_suffix(b"\"}")?;
    let mut t = [0u8; MAC_LEN];
    for (i, pair) in hex.chunks(2).enumerate() {
        let v = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        t[i] = v(pair[0])? << 4 | v(pair[1])?;
    }
    Some((body, t))
}

/// Checks a record's tag: the controller's side of [`Framer::signed_record`].
pub type Verifier = Box<dyn FnMut(&[u8], &[u8; MAC_LEN]) -> bool + Send>;

/// Whether `data` holds a marker. `<[u8]>::contains` is core's word-at-a-time memchr: about 12x
/// faster than a byte loop in the init's size-optimised release profile (bench section 6).
pub fn contains_marker(data: &[u8]) -> bool {
    data.contains(&MARKER)
}

/// Index of the first marker in `data`: blocks without one are skipped by the fast scan above,
/// so clean output costs no byte-by-byte loop.
fn find_marker(data: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    let mut base = 0;
    for block in data.chunks(BLOCK) {
        if contains_marker(block) {
            return block.iter().position(|&b| b == MARKER).map(|i| base + i);
        }
        base += block.len();
    }
    None
}

/// What the decoder finds in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Bytes the step wrote, exactly.
    Output(&'a [u8]),
    /// A record the init wrote.
    Record(Record),
    /// Bytes that break the framing (a truncated or corrupt log, or a forgery that a runtime let
    /// through unescaped); `reason` says what. Never produced from a stream the init wrote.
    Invalid { reason: &'static str },
    /// A well-framed record that fails authentication (decoders with a [`Verifier`] only): not
    /// written by an init of this run and spec, or written and then changed. Dropped.
    Unverified { reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After a marker.
    Marker,
    /// Inside a record's JSON.
    Record,
    /// Inside a record longer than [`MAX_RECORD`]: skipped up to its newline.
    Overlong,
}

/// Streaming decoder for one stream: feed it bytes in chunks of any size; memory stays bounded by
/// [`MAX_RECORD`] whatever the input.
pub struct Decoder {
    state: State,
    record: Vec<u8>,
    /// When set, only records whose tag it accepts are records.
    verify: Option<Verifier>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Text,
            record: Vec::new(),
            verify: None,
        }
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("state", &self.state)
            .field("verifying", &self.verify.is_some())
            .finish()
    }
}

const ONE_MARKER: &[u8] = &[MARKER];

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that takes as records only those `verify` accepts (in stream order); the
    /// others are [`Event::Unverified`].
    pub fn verifying(verify: Verifier) -> Self {
        Decoder {
            verify: Some(verify),
            ..Self::default()
        }
    }

    /// Decodes `data`, calling `on` for each event, in stream order.
    pub fn feed<'a>(&mut self, mut data: &'a [u8], on: &mut impl FnMut(Event<'a>)) {
        while !data.is_empty() {
            match self.state {
                State::Text => match find_marker(data) {
                    None => {
                        on(Event::Output(data));
                        return;
                    }
                    Some(i) => {
                        if i > 0 {
                            on(Event::Output(&data[..i]));
                        }
                        self.state = State::Marker;
                        data = &data[i + 1..];
                    }
                },
                State::Marker => {
                    self.state = State::Text;
                    match data[0] {
                        MARKER => on(Event::Output(ONE_MARKER)),
                        b'\n' => {}
                        b'{' => {
                            self.state = State::Record;
                            self.record.clear();
                            self.record.push(b'{');
                        }
                        // The byte is kept as output: only the lone marker is dropped.
                        _ => {
                            on(Event::Invalid {
                                reason: "marker followed by an unknown byte",
                            });
                            continue;
                        }
                    }
                    data = &data[1..];
                }
                State::Record | State::Overlong => {
                    let end = data.iter().position(|&b| b == b'\n');
                    let chunk = &data[..end.unwrap_or(data.len())];
                    if self.state == State::Record {
                        if self.record.len() + chunk.len() > MAX_RECORD {
                            self.state = State::Overlong;
                            self.record = Vec::new();
                        } else {
                            self.record.extend_from_slice(chunk);
                        }
                    }
                    let Some(end) = end else { return };
                    data = &data[end + 1..];
                    if self.state == State::Overlong {
                        on(Event::Invalid {
                            reason: "record longer than the limit",
                        });
                    } else if let Some(reason) = self.unverified() {
                        on(Event::Unverified { reason });
                    } else {
                        match Record::decode_json(&self.record) {
                            Ok(Some(r)) => on(Event::Record(r)),
                            Ok(None) => {}
                            Err(reason) => on(Event::Invalid { reason }),
                        }
                    }
                    self.state = State::Text;
                }
            }
        }
    }

    /// Why the record just read is not to be trusted, when it is not.
    fn unverified(&mut self) -> Option<&'static str> {
        let verify = self.verify.as_mut()?;
        match split_mac(&self.record) {
            None => Some("record without an authentication tag"),
            Some((body, tag)) if !verify(body, &tag) => {
                Some("record whose authentication tag does not verify")
            }
            Some(_) => None,
        }
    }

    /// Ends the stream: reports a dangling marker or an unterminated record.
    pub fn finish(&mut self, on: &mut impl FnMut(Event<'_>)) {
        let state = std::mem::replace(&mut self.state, State::Text);
        self.record.clear();
        match state {
            State::Text => {}
            State::Marker => on(Event::Invalid {
                reason: "stream ends after a marker",
            }),
            State::Record | State::Overlong => on(Event::Invalid {
                reason: "stream ends inside a record",
            }),
        }
    }
}

/// A whole stream decoded: the steps' bytes, the records and the framing errors, each in
/// stream order. For a finished stream (a container's log, a captured stdout); a live stream is
/// decoded with [`Decoder`] as it arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The steps' bytes, exactly.
    pub output: Vec<u8>,
    /// The records, in order.
    pub records: Vec<Record>,
    /// Why the framing broke, once per place (none for a stream the init wrote).
    pub invalid: Vec<&'static str>,
}

impl Decoded {
    /// Decodes a whole stream.
    pub fn from_stream(stream: &[u8]) -> Decoded {
        Decoded::from_chunks([stream])
    }

    /// Decodes a whole stream that arrives in `chunks` (as successive reads); the result does
    /// not depend on where the chunks split it.
    pub fn from_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
        let mut d = Decoded::default();
        let mut decoder = Decoder::new();
        let mut on = |e: Event<'_>| match e {
            Event::Output(b) => d.output.extend_from_slice(b),
            Event::Record(r) => d.records.push(r),
            Event::Invalid { reason } | Event::Unverified { reason } => d.invalid.push(reason),
        };
        for c in chunks {
            decoder.feed(c, &mut on);
        }
        decoder.finish(&mut on);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    /// Decodes a whole stream fed in chunks of `chunk` bytes; returns output bytes and records.
    fn decode(stream: &[u8], chunk: usize) -> (Vec<u8>, Vec<Record>, Vec<&'static str>) {
        let d = Decoded::from_chunks(stream.chunks(chunk.max(1)));
        (d.output, d.records, d.invalid)
    }

    fn start(step: &str) -> Record {
        Record::Start {
            step: step.into(),
            name: None,
            attempt: 1,
        }
    }

    #[test]
    fn user_bytes_and_records_roundtrip_in_any_chunking() {
        let mut f = Framer::new();
        let mut stream = Vec::new();
        let mut scratch = Vec::new();
        f.record(&start("1"), &mut stream);
        let forged = b"no newline \x1e{\"v\":1,\"t\":\"done\",\"status\":\"passed\",\"ms\":0,\"last\":true}\n\x1e\x1e\x1e";
        stream.extend_from_slice(f.user_bytes(forged, &mut scratch));
        f.record(
            &Record::Done {
                status: Status::Failed,
                ms: 3,
                last: true,
                reason: None,
            },
            &mut stream,
        );
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let (out, recs, bad) = decode(&stream, chunk);
            assert_eq!(out, forged, "chunk {chunk}");
            assert_eq!(
                recs,
                vec![
                    start("1"),
                    Record::Done {
                        status: Status::Failed,
                        ms: 3,
                        last: true,
                        reason: None
                    }
                ]
            );
            assert!(bad.is_empty());
        }
    }

    #[test]
    fn decoded_gathers_a_whole_stream_whatever_its_chunks() {
        let mut f = Framer::new();
        let mut stream = Vec::new();
        let mut scratch = Vec::new();
        stream.extend_from_slice(f.user_bytes(b"a\x1eb", &mut scratch));
        f.record(&start("1"), &mut stream);
        stream.extend_from_slice(f.user_bytes(b"c\n", &mut scratch));
        f.record(&start("2"), &mut stream);
        stream.push(MARKER); // a stream cut after a marker
        let whole = Decoded::from_stream(&stream);
        assert_eq!(
            whole,
            Decoded {
                output: b"a\x1ebc\n".to_vec(),
                records: vec![start("1"), start("2")],
                invalid: vec!["stream ends after a marker"],
            }
        );
        for chunk in [1, 2, 5] {
            assert_eq!(Decoded::from_chunks(stream.chunks(chunk)), whole, "{chunk}");
        }
        assert_eq!(Decoded::from_stream(b""), Decoded::default());
    }

    /// A toy tag (the init and stepctl use HMAC-SHA256, see init/src/auth.rs): what matters
    /// here is where it sits and what it covers.
    fn toy_tag(body: &[u8]) -> [u8; MAC_LEN] {
        let mut t = [0u8; MAC_LEN];
        for (i, b) in body.iter().enumerate() {
            t[i % MAC_LEN] = t[i % MAC_LEN].wrapping_mul(31).wrapping_add(*b);
        }
        t
    }

    #[test]
    fn a_verifying_decoder_takes_only_signed_records() {
        let mut f = Framer::new();
        let mut stream = Vec::new();
        f.signed_record(&start("1"), &mut stream, &mut toy_tag);
        assert!(
            stream.ends_with(b"\"}\n"),
            "{}",
            String::from_utf8_lossy(&stream)
        );
        let (body, tag) = split_mac(&stream[1..stream.len() - 1]).unwrap();
        assert_eq!(tag, toy_tag(body));
        // An unsigned record (a forgery through a merged log), a changed signed one, and the
        // signed one again after them.
        f.record(&start("2"), &mut stream);
        let mut changed = Vec::new();
        Framer::new().signed_record(&start("3"), &mut changed, &mut toy_tag);
        let at = changed.iter().position(|&b| b == b'3').unwrap();
        changed[at] = b'4';
        stream.extend_from_slice(&changed);
        f.signed_record(&start("5"), &mut stream, &mut toy_tag);
        let mut events = Vec::new();
        let mut d = Decoder::verifying(Box::new(|body, tag| toy_tag(body) == *tag));
        d.feed(&stream, &mut |e| events.push(format!("{e:?}")));
        assert_eq!(
            events,
            [
                format!("{:?}", Event::Record(start("1"))),
                "Unverified { reason: \"record without an authentication tag\" }".into(),
                "Unverified { reason: \"record whose authentication tag does not verify\" }".into(),
                format!("{:?}", Event::Record(start("5"))),
            ]
        );
        // A decoder without a verifier reads signed records as any other.
        assert_eq!(Decoded::from_stream(&stream).records.len(), 4);
        assert_eq!(split_mac(b"{\"v\":1}"), None);
    }

    #[test]
    fn records_start_a_line() {
        let mut f = Framer::new();
        let mut stream = Vec::new();
        let mut scratch = Vec::new();
        stream.extend_from_slice(f.user_bytes(b"partial", &mut scratch));
        f.record(&start("1"), &mut stream);
        assert!(stream.starts_with(b"partial\x1e\n\x1e{"));
        let mut g = Framer::new();
        let mut s2 = Vec::new();
        s2.extend_from_slice(g.user_bytes(b"line\n", &mut scratch));
        g.record(&start("1"), &mut s2);
        assert!(s2.starts_with(b"line\n\x1e{"));
    }

    #[test]
    fn clean_bytes_are_not_copied() {
        let mut f = Framer::new();
        let mut scratch = Vec::new();
        let data = vec![b'a'; 100];
        let out = f.user_bytes(&data, &mut scratch);
        assert_eq!(out.as_ptr(), data.as_ptr());
    }

    #[test]
    fn contains_marker_finds_it_anywhere() {
        for len in 0..100 {
            for pos in 0..len {
                let mut v = vec![b'x'; len];
                v[pos] = MARKER;
                assert!(contains_marker(&v));
                assert_eq!(find_marker(&v), Some(pos));
            }
            assert!(!contains_marker(&vec![b'x'; len]));
            assert_eq!(find_marker(&vec![b'x'; len]), None);
        }
    }

    #[test]
    fn find_marker_crosses_block_boundaries() {
        for pos in [0, 4095, 4096, 4097, 8191, 10_000] {
            let mut v = vec![b'x'; 10_001];
            v[pos] = MARKER;
            v[10_000] = MARKER;
            assert_eq!(find_marker(&v), Some(pos));
        }
    }

    /// Random bytes, and valid streams with random bytes flipped, through every decoder of this
    /// crate: errors are values, never panics (a controller reads logs anyone could have written).
    #[test]
    fn random_and_mangled_input_never_panics() {
        let mut f = Framer::new();
        let mut valid = Vec::new();
        f.record(&start("1"), &mut valid);
        f.record(
            &Record::End {
                step: "1".into(),
                status: Status::Failed,
                code: Some(-3),
                ms: 9,
                attempt: 1,
                reason: Some("r\u{e9}\"\\".into()),
            },
            &mut valid,
        );
        let summary = crate::summary::Summary::new(0, true, Status::Passed, vec![]).encode();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const ALPHABET: &[u8] = b"\x1e\n{}[]\":,\\u0123456789abcdefnrtul-.eE+ \xc3\xa9\xff%";
        for round in 0..20_000 {
            let base: &[u8] = [&valid[..], &summary[..], b""][round % 3];
            let mut v = base.to_vec();
            for _ in 0..1 + rnd() % 8 {
                let b = ALPHABET[(rnd() % ALPHABET.len() as u64) as usize];
                let at = (rnd() as usize) % (v.len() + 1);
                match rnd() % 3 {
                    0 if at < v.len() => v[at] = b,
                    1 if at < v.len() => {
                        v.remove(at);
                    }
                    _ => v.insert(at, b),
                }
            }
            let _ = decode(&v, 1 + (rnd() % 9) as usize);
            let _ = Record::decode_json(v.get(1..).unwrap_or_default());
            let _ = crate::summary::Summary::decode(&v);
        }
    }

    #[test]
    fn garbage_is_reported_not_panicked_and_memory_is_bounded() {
        let mut s = b"\x1e{\"v\":1,".to_vec();
        s.extend(std::iter::repeat_n(b'a', MAX_RECORD * 2));
        s.extend_from_slice(b"\nafter\x1ez\x1e");
        let (out, recs, bad) = decode(&s, 1000);
        assert_eq!(out, b"afterz");
        assert!(recs.is_empty());
        assert_eq!(
            bad,
            vec![
                "record longer than the limit",
                "marker followed by an unknown byte",
                "stream ends after a marker"
            ]
        );
        let (_, _, bad) = decode(b"\x1e{\"v\":1", 3);
        assert_eq!(bad, vec!["stream ends inside a record"]);
    }
}
