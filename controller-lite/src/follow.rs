//! Following and decoding container output: the init's framed stdout/stderr, as it comes from a
//! child process, `podman logs -f` or `kubectl logs -f` (optionally with RFC 3339 timestamps at
//! line starts), becomes the steps' own bytes (passed through) plus records (collected, and
//! printed live).

use crate::report::{Collector, Live};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use stepinit::auth::{spec_digest, Key, RecordTags};
use stepinit_protocol::frame::Verifier;
use stepinit_protocol::{Decoder, Event};

/// What tells the records of a run's inits from anything else in their logs: the run's key,
/// derived for the exact bytes of the spec the pod was given (see `init/src/auth.rs`). Only an
/// init of this run, given this spec, signs records that verify.
#[derive(Clone)]
pub struct RecordAuth {
    records: Key,
    groups: u32,
}

impl RecordAuth {
    /// `key_hex`: the state key (64 hex digits); `spec_bytes`: the spec as the inits read it.
    pub fn new(key_hex: &str, spec_bytes: &[u8]) -> Result<RecordAuth, String> {
        let key = Key::from_hex(key_hex.trim().as_bytes()).map_err(|e| format!("the key {e}"))?;
        let groups = serde_json::from_slice::<stepinit_protocol::Spec>(spec_bytes)
            .map_err(|e| format!("the spec is not one: {e}"))?
            .container_count();
        Ok(RecordAuth {
            records: key.derive("records", &spec_digest(spec_bytes)),
            groups: groups as u32,
        })
    }

    /// Checks the stdout records of container `group`, in order.
    pub fn verifier(&self, group: u32) -> Verifier {
        let mut tags = RecordTags::new(&self.records, group);
        Box::new(move |body, tag| tags.verify(body, tag))
    }

    /// Checks records of any of the run's containers, each in its order: for logs of several
    /// containers given one after the other (`stepctl decode`).
    pub fn any_verifier(&self) -> Verifier {
        let mut tags: Vec<RecordTags> = (0..self.groups)
            .map(|g| RecordTags::new(&self.records, g))
            .collect();
        Box::new(move |body, tag| tags.iter_mut().any(|t| t.verify(body, tag)))
    }

    /// For a stream that never carries records (stderr, the setup container): any record in
    /// it is a forgery.
    pub fn none() -> Verifier {
        Box::new(|_, _| false)
    }
}

/// Whether lines start with a timestamp to remove (`kubectl logs --timestamps`, `podman logs -t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// Never strip.
    Off,
    /// Decide on the first line: strip from every line if it starts with one.
    Auto,
    /// Strip where present.
    On,
}

/// Removes a leading `2024-01-02T03:04:05.123456789Z ` (any RFC 3339 offset) from each line,
/// streaming: memory is bounded whatever the line length.
#[derive(Debug)]
pub struct Stripper {
    mode: Timestamps,
    at_line_start: bool,
    pending: Vec<u8>,
}

/// Longest timestamp prefix looked at (RFC 3339 with nanoseconds and offset, plus the space).
const MAX_TS: usize = 40;

impl Stripper {
    pub fn new(mode: Timestamps) -> Self {
        Stripper {
            mode,
            at_line_start: true,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; calls `out` with the bytes to keep.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(&[u8])) {
        if self.mode == Timestamps::Off {
            out(data);
            return;
        }
        while !data.is_empty() {
            if self.mode == Timestamps::Off {
                out(data);
                return;
            }
            if self.at_line_start {
                // Collect the candidate prefix up to its space (or give up).
                let want = MAX_TS.saturating_sub(self.pending.len());
                let take = data
                    .iter()
                    .take(want)
                    .position(|&b| b == b' ' || b == b'\n')
                    .map(|i| i + 1);
                match take {
                    None if data.len() < want => {
                        self.pending.extend_from_slice(data);
                        return;
                    }
                    None => {
                        // No space within the limit: not a timestamp.
                        let n = want.min(data.len());
                        self.pending.extend_from_slice(&data[..n]);
                        data = &data[n..];
                        self.decide(false, out);
                    }
                    Some(n) => {
                        self.pending.extend_from_slice(&data[..n]);
                        data = &data[n..];
                        let p = &self.pending;
                        let is_ts = p.last() == Some(&b' ') && is_rfc3339(&p[..p.len() - 1]);
                        self.decide(is_ts, out);
                    }
                }
            } else {
                match data.iter().position(|&b| b == b'\n') {
                    None => {
                        out(data);
                        return;
                    }
                    Some(i) => {
                        out(&data[..=i]);
                        data = &data[i + 1..];
                        self.at_line_start = true;
                    }
                }
            }
        }
    }

    fn decide(&mut self, is_ts: bool, out: &mut impl FnMut(&[u8])) {
        if self.mode == Timestamps::Auto {
            self.mode = if is_ts {
                Timestamps::On
            } else {
                Timestamps::Off
            };
        }
        let pending = std::mem::take(&mut self.pending);
        if !is_ts {
            out(&pending);
        }
        self.at_line_start = pending.last() == Some(&b'\n') && !is_ts;
    }

    /// Ends the stream: a pending partial prefix is output as is.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) {
        let p = std::mem::take(&mut self.pending);
        if !p.is_empty() {
            out(&p);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn is_rfc3339(b: &[u8]) -> bool {
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(b.len() >= 20
        && (0..4).all(d)
        && at(4, b'-')
        && d(5)
        && d(6)
        && at(7, b'-')
        && d(8)
        && d(9)
        && (at(10, b'T') || at(10, b't'))
        && d(11)
        && d(12)
        && at(13, b':')
        && d(14)
        && d(15)
        && at(16, b':')
        && d(17)
        && d(18))
    {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let s = i;
        while d(i) {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            b.len() == i + 6 && d(i + 1) && d(i + 2) && at(i + 3, b':') && d(i + 4) && d(i + 5)
        }
        _ => false,
    }
}

/// Where decoded bytes and progress lines go. Shared by the stdout and stderr readers.
pub struct Sink {
    pub collector: Collector,
    /// The steps' stdout.
    pub out: Box<dyn Write + Send>,
    /// The steps' stderr.
    pub err: Box<dyn Write + Send>,
    /// Progress lines (None: no live output).
    pub live: Option<(Live, Box<dyn Write + Send>)>,
    /// On a terminal: a status line under the output, redrawn by [`start_ticker`].
    progress: Option<Progress>,
    invalid: Vec<&'static str>,
}

/// The terminal status line: the running step, a spinner and its elapsed time.
struct Progress {
    /// (step id, name, started), innermost last.
    running: Vec<(String, String, std::time::Instant)>,
    shown: bool,
    at_line_start: bool,
    frame: usize,
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Sink {
    pub fn new(
        collector: Collector,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        live: Option<(Live, Box<dyn Write + Send>)>,
    ) -> Arc<Mutex<Sink>> {
        Arc::new(Mutex::new(Sink {
            collector,
            out,
            err,
            live,
            progress: None,
            invalid: Vec::new(),
        }))
    }

    /// Shows a status line for the running step (use on terminals only).
    pub fn enable_progress(&mut self) {
        self.progress = Some(Progress {
            running: Vec::new(),
            shown: false,
            at_line_start: true,
            frame: 0,
        });
    }

    fn clear_progress(&mut self) {
        if let (Some(p), Some((_, w))) = (&mut self.progress, &mut self.live) {
            if p.shown {
                let _ = w.write_all(b"\r\x1b[2K");
                let _ = w.flush();
                p.shown = false;
            }
        }
    }

    fn draw_progress(&mut self) {
        if let (Some(p), Some((_, w))) = (&mut self.progress, &mut self.live) {
            let Some((_, name, since)) = p.running.last() else {
                return;
            };
            if !p.at_line_start {
                return;
            }
            p.frame = (p.frame + 1) % SPINNER.len();
            let _ = self.out.flush();
            let _ = write!(
                w,
                "\r\x1b[2K\x1b[2m{} {} {}\x1b[0m",
                SPINNER[p.frame],
                name,
                crate::duration::human(since.elapsed().as_millis() as u64)
            );
            let _ = w.flush();
            p.shown = true;
        }
    }

    /// Removes the status line for good (before the final report).
    pub fn end_progress(&mut self) {
        self.clear_progress();
        self.progress = None;
    }

    fn event(&mut self, stream: Stream, e: Event<'_>) {
        match e {
            Event::Output(b) => {
                self.clear_progress();
                let w = match stream {
                    Stream::Stdout => &mut self.out,
                    Stream::Stderr => &mut self.err,
                };
                let _ = w.write_all(b);
                if let Some(p) = &mut self.progress {
                    p.at_line_start = b.last() == Some(&b'\n');
                    if stream == Stream::Stderr {
                        let _ = self.err.flush();
                    }
                }
            }
            Event::Record(r) => {
                self.clear_progress();
                self.collector.on_record(&r);
                if let Some((live, w)) = &mut self.live {
                    if let Some(line) = live.line(&self.collector, &r) {
                        let _ = self.out.flush();
                        let _ = writeln!(w, "{line}");
                        let _ = w.flush();
                    }
                }
                if let Some(p) = &mut self.progress {
                    p.at_line_start = true;
                    match &r {
                        stepinit_protocol::Record::Start { step, .. }
                            if !self.collector.is_group(step) =>
                        {
                            p.running.retain(|(s, _, _)| s != step);
                            let name = self.collector.name(step);
                            p.running
                                .push((step.clone(), name, std::time::Instant::now()));
                        }
                        stepinit_protocol::Record::End { step, .. } => {
                            p.running.retain(|(s, _, _)| s != step);
                        }
                        _ => {}
                    }
                }
                // Drawn by the ticker: steps shorter than a tick never flicker a status line.
            }
            Event::Unverified { reason } => {
                self.collector.unverified(&format!(
                    "a {reason} on {}: not written by this run's init (forged?)",
                    stream.as_str()
                ));
            }
            Event::Invalid { reason } => {
                if !self.invalid.contains(&reason) {
                    self.invalid.push(reason);
                    self.collector
                        .notes
                        .push(format!("log framing of {}: {reason}", stream.as_str()));
                }
            }
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
        let _ = self.err.flush();
    }
}

/// Redraws the status line of a sink with progress every 200 ms, until the sink is dropped or
/// its progress ended.
pub fn start_ticker(sink: &Arc<Mutex<Sink>>) {
    let weak = Arc::downgrade(sink);
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let Some(s) = weak.upgrade() else { return };
        let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
        if g.progress.is_none() {
            return;
        }
        g.draw_progress();
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Decodes one stream of one container.
pub struct StreamDecoder {
    stream: Stream,
    strip: Stripper,
    dec: Decoder,
    /// Bytes fed so far (a follower that stopped early is resumed from here).
    pub fed: u64,
    /// Whether a `done` record came through: this stream's init ran to its end.
    pub done_seen: bool,
}

impl StreamDecoder {
    pub fn new(stream: Stream, ts: Timestamps) -> Self {
        StreamDecoder {
            stream,
            strip: Stripper::new(ts),
            dec: Decoder::new(),
            fed: 0,
            done_seen: false,
        }
    }

    /// Records count only when `verify` accepts them (see [`RecordAuth`]).
    pub fn verified(mut self, verify: Verifier) -> Self {
        self.dec = Decoder::verifying(verify);
        self
    }

    /// The two streams of container `group` (None: the setup container, which prints no
    /// records), verified when there is `auth`.
    pub fn pair(ts: Timestamps, auth: Option<&RecordAuth>, group: Option<u32>) -> [Self; 2] {
        let mut d = [
            StreamDecoder::new(Stream::Stdout, ts),
            StreamDecoder::new(Stream::Stderr, ts),
        ];
        if let Some(a) = auth {
            let [out, err] = d;
            d = [
                out.verified(group.map_or_else(RecordAuth::none, |g| a.verifier(g))),
                err.verified(RecordAuth::none()),
            ];
        }
        d
    }

    pub fn feed(&mut self, data: &[u8], sink: &Mutex<Sink>) {
        let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
        let stream = self.stream;
        let dec = &mut self.dec;
        let done = &mut self.done_seen;
        self.fed += data.len() as u64;
        self.strip.feed(data, &mut |kept| {
            dec.feed(kept, &mut |e| {
                if let Event::Record(stepinit_protocol::Record::Done { .. }) = &e {
                    *done = true;
                }
                g.event(stream, e)
            });
        });
    }

    pub fn finish(&mut self, sink: &Mutex<Sink>) {
        let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
        let stream = self.stream;
        let dec = &mut self.dec;
        self.strip.finish(&mut |kept| {
            dec.feed(kept, &mut |e| g.event(stream, e));
        });
        dec.finish(&mut |e| g.event(stream, e));
        g.flush();
    }
}

/// Splits CRI log lines (`TIMESTAMP STREAM P|F CONTENT`, as podman's k8s-file driver and the
/// kubelet write a container's output to its log file) back into each stream's bytes: a full
/// line (F) is its content and the newline, a partial one (P) its content alone. Memory stays
/// bounded: only an incomplete last line is kept between reads.
#[derive(Debug, Default)]
pub struct CriReader {
    pending: Vec<u8>,
}

/// A CRI line longer than this is not one (conmon splits content at 8 KiB): passed on whole.
const MAX_CRI_LINE: usize = 1 << 20;

impl CriReader {
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Stream, &[u8])) {
        if !self.pending.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                None if self.pending.len() + data.len() <= MAX_CRI_LINE => {
                    self.pending.extend_from_slice(data);
                    return;
                }
                None => {
                    self.pending.extend_from_slice(data);
                    out(Stream::Stdout, &std::mem::take(&mut self.pending));
                    return;
                }
                Some(i) => {
                    self.pending.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.pending);
                    cri_line(&line, out);
                }
            }
        }
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            cri_line(&data[..=i], out);
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
    }
}

/// One line with its newline.
fn cri_line(line: &[u8], out: &mut impl FnMut(Stream, &[u8])) {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let (_ts, stream, tag) = (fields.next(), fields.next(), fields.next());
    let rest = fields.next().unwrap_or(b"\n");
    let stream = match stream {
        Some(b"stderr") => Stream::Stderr,
        _ => Stream::Stdout,
    };
    match tag {
        Some(b"P") => out(stream, &rest[..rest.len() - 1]),
        Some(b"F") => out(stream, rest),
        // Not a CRI line (a tag of its own without content: "TS stdout F\n" is an empty line).
        Some(t) if t.ends_with(b"\n") => out(stream, b"\n"),
        _ => out(Stream::Stdout, line),
    }
}

/// Reads `r` to its end into `d`. Returns when the stream ends.
pub fn pump(r: impl Read, mut d: StreamDecoder, sink: &Mutex<Sink>) {
    pump_into(r, &mut d, 0, sink);
    d.finish(sink);
}

/// Reads `r` to its end into `d`, the first `skip` bytes dropped (what `d` already had from an
/// earlier read of the same log).
pub fn pump_into(mut r: impl Read, d: &mut StreamDecoder, mut skip: u64, sink: &Mutex<Sink>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let drop = skip.min(n as u64) as usize;
                skip -= drop as u64;
                if drop == n {
                    continue;
                }
                d.feed(&buf[drop..n], sink);
                // Live output: the steps' bytes reach the terminal as they come.
                let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
                g.flush();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip_all(input: &[u8], mode: Timestamps, chunk: usize) -> Vec<u8> {
        let mut s = Stripper::new(mode);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            s.feed(c, &mut |b| out.extend_from_slice(b));
        }
        s.finish(&mut |b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn cri_lines_give_back_each_streams_bytes_in_any_chunking() {
        let log = b"2026-01-01T00:00:00.1+00:00 stdout P abc\n\
2026-01-01T00:00:00.2+00:00 stdout F def\n\
2026-01-01T00:00:00.2+00:00 stderr F err \x1e bytes\n\
2026-01-01T00:00:00.3+00:00 stdout F \n\
2026-01-01T00:00:00.3+00:00 stdout F\n\
2026-01-01T00:00:00.4+00:00 stdout P tail";
        for chunk in [1, 2, 7, 40, 1000] {
            let mut r = CriReader::default();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            for c in log.chunks(chunk) {
                r.feed(c, &mut |s, b| match s {
                    Stream::Stdout => out.extend_from_slice(b),
                    Stream::Stderr => err.extend_from_slice(b),
                });
            }
            assert_eq!(out, b"abcdef\n\n\n", "chunk {chunk}");
            assert_eq!(err, b"err \x1e bytes\n", "chunk {chunk}");
            // The incomplete last line waits for its end.
            assert_eq!(r.pending, b"2026-01-01T00:00:00.4+00:00 stdout P tail");
        }
    }

    #[test]
    fn rfc3339_shapes() {
        assert!(is_rfc3339(b"2024-01-02T03:04:05Z"));
        assert!(is_rfc3339(b"2024-01-02T03:04:05.123456789Z"));
        assert!(is_rfc3339(b"2024-01-02T03:04:05.1+02:00"));
        assert!(!is_rfc3339(b"2024-01-02 03:04:05Z"));
        assert!(!is_rfc3339(b"2024-01-02T03:04:05"));
        assert!(!is_rfc3339(b"hello"));
    }

    #[test]
    fn strips_timestamps_in_any_chunking() {
        let input = b"2024-01-02T03:04:05.000000001Z hello\n2024-01-02T03:04:06.5+00:00 \x1e{x}\n2024-01-02T03:04:07Z no newline";
        for chunk in [1, 2, 5, 17, 1000] {
            assert_eq!(
                strip_all(input, Timestamps::Auto, chunk),
                b"hello\n\x1e{x}\nno newline",
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn auto_leaves_untimestamped_logs_alone() {
        let input = b"plain line\n2024-01-02T03:04:05Z looks like one\n";
        for chunk in [1, 3, 1000] {
            assert_eq!(strip_all(input, Timestamps::Auto, chunk), input.to_vec());
        }
        assert_eq!(strip_all(input, Timestamps::Off, 7), input.to_vec());
    }

    #[test]
    fn long_lines_pass_through() {
        let mut input = b"2024-01-02T03:04:05Z ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.push(b'\n');
        let out = strip_all(&input, Timestamps::On, 4096);
        assert_eq!(out.len(), 100_001);
    }

    #[test]
    fn garbage_never_panics_and_is_noted() {
        use crate::report::Collector;
        let sink = Sink::new(
            Collector::new(None),
            Box::new(std::io::sink()),
            Box::new(std::io::sink()),
            None,
        );
        // Deterministic pseudo-random bytes, rich in markers, braces and newlines.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"\x1e{}\":,\n0123456789abtv.-";
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x & 3 == 0 {
                    (x >> 8) as u8
                } else {
                    alphabet[(x >> 16) as usize % alphabet.len()]
                }
            })
            .collect();
        for ts in [Timestamps::Off, Timestamps::Auto] {
            let mut d = StreamDecoder::new(Stream::Stdout, ts);
            for c in data.chunks(4093) {
                d.feed(c, &sink);
            }
            d.finish(&sink);
        }
        let g = sink.lock().unwrap();
        let r = g.collector.result("x", false, None);
        assert!(!g.collector.notes.is_empty());
        assert_ne!(r.status, stepinit_protocol::Status::Passed);
    }
}
