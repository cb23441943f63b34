//! Throughput of the protocol crate: what the init pays per byte of child output (escape, encode)
//! and what a controller pays to read it back (decode), plus parsing a large spec.
//!
//! Run: `cargo bench -p stepinit-bench` (bench/run does, and reads criterion's JSON estimates).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stepinit_bench::{clean_output, framed_stream, large_spec_json, marker_heavy, sample_records};
use stepinit_protocol::{Decoder, Event, Framer, Spec};

/// Size of the user-output buffers: the init relays in chunks of this order (pipe reads).
const CHUNK: usize = 64 * 1024;

fn escape(c: &mut Criterion) {
    let mut g = c.benchmark_group("escape");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let clean = clean_output(CHUNK);
    let heavy = marker_heavy(CHUNK, 8);
    let all = vec![stepinit_protocol::MARKER; CHUNK];
    let mut scratch = Vec::with_capacity(2 * CHUNK);
    for (name, data) in [
        ("clean", &clean),
        ("marker_every_8", &heavy),
        ("all_markers", &all),
    ] {
        g.bench_function(name, |b| {
            let mut f = Framer::new();
            b.iter(|| black_box(f.user_bytes(black_box(data), &mut scratch).len()))
        });
    }
    g.finish();
}

/// The marker scan alone, against the standard library's byte search on the same data: a
/// reference for what the escape's clean path could reach.
fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let clean = clean_output(CHUNK);
    g.bench_function("contains_marker", |b| {
        b.iter(|| black_box(stepinit_protocol::frame::contains_marker(black_box(&clean))))
    });
    g.bench_function("std_slice_contains", |b| {
        b.iter(|| black_box(black_box(&clean[..]).contains(&stepinit_protocol::MARKER)))
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let records = sample_records(1000);
    let mut out = Vec::with_capacity(256 * 1024);
    let bytes = {
        let mut f = Framer::new();
        records.iter().for_each(|r| f.record(r, &mut out));
        out.len()
    };
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("records_1000", |b| {
        b.iter(|| {
            out.clear();
            let mut f = Framer::new();
            for r in &records {
                f.record(black_box(r), &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, stream) in [
        // Mostly clean output with a start/end record pair every 64 KiB: a typical step log.
        (
            "output_with_records",
            framed_stream(4 * 1024 * 1024, CHUNK, None),
        ),
        // Output where one byte in 8 is an escaped marker.
        (
            "marker_heavy",
            framed_stream(4 * 1024 * 1024, CHUNK, Some(8)),
        ),
        // Records only.
        ("records_only", framed_stream(0, 0, None)),
    ] {
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut d = Decoder::new();
                let (mut out, mut recs) = (0usize, 0usize);
                let mut on = |e: Event<'_>| match e {
                    Event::Output(b) => out += b.len(),
                    Event::Record(_) => recs += 1,
                    Event::Invalid { reason } | Event::Unverified { reason } => {
                        panic!("invalid stream: {reason}")
                    }
                };
                for chunk in stream.chunks(CHUNK) {
                    d.feed(chunk, &mut on);
                }
                d.finish(&mut on);
                black_box((out, recs))
            })
        });
    }
    g.finish();
}

fn spec_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("spec_parse");
    for steps in [100usize, 10_000] {
        let json = large_spec_json(steps);
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_function(format!("steps_{steps}"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    let spec: Spec = serde_json::from_slice(black_box(&json)).expect("valid spec");
                    spec.validate().expect("valid spec");
                    spec
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, escape, scan, encode, decode, spec_parse);
criterion_main!(benches);
