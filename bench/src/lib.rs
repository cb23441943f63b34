//! Inputs shared by the protocol benches (`benches/protocol.rs`): deterministic, realistic data.

use stepinit_protocol::{Framer, Record, Status, MARKER};

/// `len` bytes of printable log-like text with a newline every 80 bytes, no marker.
pub fn clean_output(len: usize) -> Vec<u8> {
    let line = b"2026-11-22T12:00:00Z INFO step output: the quick brown fox jumps over the dog.\n";
    line.iter().copied().cycle().take(len).collect()
}

/// Like [`clean_output`], with every `every`-th byte replaced by the marker (worst-ish case for
/// escaping: the output grows by 1/`every`).
pub fn marker_heavy(len: usize, every: usize) -> Vec<u8> {
    let mut v = clean_output(len);
    v.iter_mut().step_by(every.max(1)).for_each(|b| *b = MARKER);
    v
}

/// `n` records as the init writes them: start/end pairs with growing step ids.
pub fn sample_records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let step = format!("{}.{}", i / 10 + 1, i % 10 + 1);
            if i % 2 == 0 {
                Record::Start {
                    step,
                    name: Some(format!("run the tests of module {i}")),
                    attempt: 1,
                }
            } else {
                Record::End {
                    step,
                    status: Status::Passed,
                    code: Some(0),
                    ms: 1234 + i as u64,
                    attempt: 1,
                    reason: None,
                }
            }
        })
        .collect()
}

/// A framed stream as the init writes it: `output` bytes of user output in pieces of `piece`
/// bytes, each piece between a start and an end record. With `output == 0`: 10,000 records only.
/// `marker_every`: make the user output marker-heavy (see [`marker_heavy`]).
pub fn framed_stream(output: usize, piece: usize, marker_every: Option<usize>) -> Vec<u8> {
    let mut f = Framer::new();
    let mut out = Vec::with_capacity(output + output / 8 + 1024);
    let mut scratch = Vec::new();
    if output == 0 {
        for r in sample_records(10_000) {
            f.record(&r, &mut out);
        }
        return out;
    }
    let data = match marker_every {
        Some(n) => marker_heavy(piece, n),
        None => clean_output(piece),
    };
    let records = sample_records(2 * output.div_ceil(piece));
    for (i, pair) in records.chunks(2).enumerate() {
        f.record(&pair[0], &mut out);
        let n = piece.min(output - i * piece);
        out.extend_from_slice(f.user_bytes(&data[..n], &mut scratch));
        if let Some(end) = pair.get(1) {
            f.record(end, &mut out);
        }
    }
    out
}

/// A spec of `steps` leaves in groups of 10, as a controller writes it: names, env, shell and
/// command leaves, conditions, timeouts and retries.
pub fn large_spec_json(steps: usize) -> Vec<u8> {
    let mut s = String::with_capacity(steps * 200);
    s.push_str(r#"{"version":1,"env":[{"name":"CI","value":"true"}],"steps":["#);
    let groups = steps.div_ceil(10);
    for g in 0..groups {
        if g > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"name":"group {g}","timeoutMs":600000,"steps":["#
        ));
        for i in 0..10.min(steps - g * 10) {
            if i > 0 {
                s.push(',');
            }
            if i % 2 == 0 {
                s.push_str(&format!(
                    r#"{{"name":"step {g}.{i}","command":["/usr/bin/make","-C","/src/module-{g}","test"],"env":[{{"name":"SHARD","value":"{i}"}}],"workingDir":"/data/work/{g}","retry":{{"count":2,"until":"passed"}}}}"#
                ));
            } else {
                s.push_str(&format!(
                    r#"{{"name":"step {g}.{i}","shell":"echo building {g}.{i} && ./build.sh --verbose > /tmp/log-{g}-{i}.txt","condition":"always","optional":true,"graceMs":5000}}"#
                ));
            }
        }
        s.push_str("]}");
    }
    s.push_str("]}");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepinit_protocol::{Decoder, Event};

    #[test]
    fn framed_stream_decodes_to_its_output_and_records() {
        for (output, piece, every) in [
            (100_000, 4096, None),
            (100_000, 4096, Some(3)),
            (0, 0, None),
        ] {
            let stream = framed_stream(output, piece, every);
            let (mut out, mut recs, mut bad) = (0usize, 0usize, 0usize);
            let mut d = Decoder::new();
            let mut on = |e: Event<'_>| match e {
                Event::Output(b) => out += b.len(),
                Event::Record(_) => recs += 1,
                Event::Invalid { .. } | Event::Unverified { .. } => bad += 1,
            };
            for c in stream.chunks(1000) {
                d.feed(c, &mut on);
            }
            d.finish(&mut on);
            assert_eq!((out, bad), (output, 0));
            let expected = if output == 0 {
                10_000
            } else {
                2 * output.div_ceil(piece)
            };
            assert_eq!(recs, expected);
        }
    }

    #[test]
    fn large_spec_is_a_valid_spec() {
        let spec: stepinit_protocol::Spec =
            serde_json::from_slice(&large_spec_json(25)).expect("parses");
        spec.validate().expect("validates");
        assert_eq!(spec.steps.len(), 3);
        assert_eq!(spec.steps.iter().map(|g| g.steps.len()).sum::<usize>(), 25);
    }

    #[test]
    fn marker_heavy_has_the_requested_density() {
        let v = marker_heavy(800, 8);
        assert_eq!(v.iter().filter(|&&b| b == MARKER).count(), 100);
        assert!(!clean_output(10_000).contains(&MARKER));
    }
}
