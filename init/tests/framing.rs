//! The protocol on the init's stdout/stderr, byte-exact: random binary output (seeded), attempted
//! forgeries, output attributed to its step, and a single 100 MiB line with bounded init memory.

mod common;

use common::*;
use serde_json::json;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

/// Random bytes biased towards what matters to the framing: markers, newlines, braces, and
/// whole forged records.
fn nasty_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    const FORGERIES: &[&[u8]] = &[
        b"\x1e{\"v\":1,\"t\":\"end\",\"step\":\"1\",\"status\":\"passed\",\"code\":0,\"ms\":1,\"attempt\":1}\n",
        b"\x1e{\"v\":1,\"t\":\"done\",\"status\":\"passed\",\"ms\":0,\"last\":true}\n",
        b"\x1e{\"v\":1,\"t\":\"start\",\"step\":\"x\",\"attempt\":1}\n",
        b"\x1e\n",
        b"\x1e\x1e",
        b"\x1e",
        b"\x1e{",
        b"\n\x1e{\"v\":1,",
    ];
    let mut v = Vec::with_capacity(len + 128);
    while v.len() < len {
        match rng.below(100) {
            0..=9 => v.push(0x1e),
            10..=19 => v.push(b'\n'),
            20..=24 => v.push(b'{'),
            25..=27 => v.extend_from_slice(FORGERIES[rng.below(FORGERIES.len() as u64) as usize]),
            28..=29 => v.push(0),
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(len);
    v
}

/// Splits a decoded stdout into the user output seen between records: `segments[i]` is what
/// came after record `i` (and `segments[0]` what came before any record... shifted by one).
fn output_between_records(stream: &[u8]) -> (Vec<Record>, Vec<Vec<u8>>, Vec<&'static str>) {
    let mut recs = Vec::new();
    let mut segs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut bad = Vec::new();
    let mut dec = Decoder::new();
    {
        let mut on = |e: Event<'_>| match e {
            Event::Output(b) => segs.last_mut().unwrap().extend_from_slice(b),
            Event::Record(r) => {
                recs.push(r);
                segs.push(Vec::new());
            }
            Event::Invalid { reason } | Event::Unverified { reason } => bad.push(reason),
        };
        for c in stream.chunks(1000) {
            dec.feed(c, &mut on);
        }
        dec.finish(&mut on);
    }
    (recs, segs, bad)
}

#[test]
fn random_binary_output_and_forgeries_decode_exactly() {
    for seed in [1u64, 2, 3, 0x1e1e] {
        let d = TempDir::new("random");
        let m = Marker::new("random");
        let mut rng = Rng::new(seed);
        let mut steps = Vec::new();
        let mut outs = Vec::new();
        let mut errs = Vec::new();
        for i in 0..6 {
            // Sizes from empty to several pipe buffers; some end mid-line or on a lone marker.
            let n_out = match i {
                0 => 0,
                1 => 1,
                _ => rng.below(300_000) as usize,
            };
            let mut o = nasty_bytes(&mut rng, n_out);
            if i == 2 {
                o.push(0x1e);
            }
            let n_err = rng.below(100_000) as usize;
            let e = nasty_bytes(&mut rng, n_err);
            std::fs::write(d.join(format!("out{i}")), &o).unwrap();
            std::fs::write(d.join(format!("err{i}")), &e).unwrap();
            // Two writers per stream, interleaved in small and large writes.
            steps.push(json!({"shell": format!(
                "head -c 7 out{i}; tail -c +8 out{i} | dd bs=4093 2>/dev/null; cat err{i} >&2"
            )}));
            outs.push(o);
            errs.push(e);
        }
        let r = run_spec(&d, &json!({"version": 1, "steps": steps}), &m);
        assert_eq!(
            r.code,
            0,
            "seed {seed}; stderr tail: {:?}",
            &r.raw
                .stderr_str()
                .chars()
                .rev()
                .take(300)
                .collect::<String>()
        );
        let (recs, segs, bad) = output_between_records(&r.raw.stdout);
        assert!(
            bad.is_empty(),
            "seed {seed}: invalid framing on stdout: {}",
            few(&bad)
        );
        let mut want = Vec::new();
        for i in 1..=6 {
            want.push(format!("start {i} #1"));
            want.push(format!("end {i} passed code=0 #1"));
        }
        want.push("done passed last=true".into());
        assert_eq!(
            briefs(&recs),
            want,
            "seed {seed}: exactly the init's records"
        );
        // Each step's output lies between its start and end records, byte-exact.
        assert_eq!(segs.len(), recs.len() + 1);
        assert!(segs[0].is_empty());
        for i in 0..6 {
            assert!(
                segs[2 * i + 1] == outs[i],
                "seed {seed}: step {} stdout differs (len {} vs {})",
                i + 1,
                segs[2 * i + 1].len(),
                outs[i].len()
            );
            assert!(
                segs[2 * i + 2].is_empty(),
                "seed {seed}: output after end {}",
                i + 1
            );
        }
        let err = decode(&r.raw.stderr);
        assert!(
            err.invalid.is_empty(),
            "seed {seed}: stderr framing {}",
            few(&err.invalid)
        );
        assert!(err.records.is_empty(), "seed {seed}: records on stderr");
        assert!(err.output == errs.concat(), "seed {seed}: stderr differs");
    }
}

#[test]
fn forgeries_in_separate_writes_stay_output() {
    let d = TempDir::new("forge");
    let m = Marker::new("forge");
    // Each printf is its own write(2): the marker and the JSON arrive in different reads.
    let script = r#"printf '\036'; printf '{"v":1,"t":"end","step":"1","status":"passed","ms":1,"attempt":1}\n'
printf '\036\n'; printf 'x\036'; printf '\n'; printf '\036\036'; printf '\036'"#;
    let r = run_spec(
        &d,
        &json!({"version": 1, "steps": [
            {"shell": script},
            {"shell": "exit 1"},
        ]}),
        &m,
    );
    r.assert_code(1);
    r.assert_well_formed();
    assert_eq!(
        briefs(&r.stdout.records),
        vec![
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 failed code=1 #1",
            "done failed last=true"
        ]
    );
    assert_eq!(
        r.stdout.output,
        b"\x1e{\"v\":1,\"t\":\"end\",\"step\":\"1\",\"status\":\"passed\",\"ms\":1,\"attempt\":1}\n\x1e\nx\x1e\n\x1e\x1e\x1e"
    );
}

#[test]
fn report_mode_frames_random_output_too() {
    let d = TempDir::new("reportrandom");
    let m = Marker::new("reportrandom");
    let mut rng = Rng::new(99);
    let o = nasty_bytes(&mut rng, 200_000);
    let e = nasty_bytes(&mut rng, 50_000);
    std::fs::write(d.join("o"), &o).unwrap();
    std::fs::write(d.join("e"), &e).unwrap();
    let mut c = init_cmd(["--report", "--", "sh", "-c", "cat o; cat e >&2"], &m);
    c.current_dir(d.path());
    let r = framed(Running::spawn(&mut c).finish(LIMIT));
    r.assert_code(0);
    // Valid framing on both streams, no record on stderr, `done` last.
    r.assert_well_formed();
    let (so, se) = (&r.stdout, &r.stderr);
    assert_eq!(
        briefs(&so.records),
        vec![
            "start 1 #1",
            "end 1 passed code=0 #1",
            "done passed last=true"
        ]
    );
    assert!(so.output == o, "stdout differs");
    assert!(se.output == e && se.records.is_empty(), "stderr differs");
}

/// A consumer that reads slowly stalls the init (it blocks with it): nothing is dropped.
#[test]
fn a_slow_reader_loses_nothing() {
    let d = TempDir::new("slowreader");
    let m = Marker::new("slowreader");
    let mut rng = Rng::new(7);
    let o = nasty_bytes(&mut rng, 1 << 20);
    std::fs::write(d.join("o"), &o).unwrap();
    std::fs::write(
        d.join("spec.json"),
        serde_json::to_vec(
            &json!({"version": 1, "steps": [{"shell": "cat o"}, {"shell": "cat o"}]}),
        )
        .unwrap(),
    )
    .unwrap();
    let mut c = init_cmd(["run", "spec.json"], &m);
    c.current_dir(d.path());
    let mut child = c.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stream = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        stream.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_micros(500));
    }
    let st = wait_deadline(&mut child, LIMIT);
    assert_eq!(exit_code(st, b""), 0);
    let dec = decode(&stream);
    assert!(dec.invalid.is_empty(), "{}", few(&dec.invalid));
    assert!(dec.output == [o.clone(), o].concat(), "output differs");
    assert_eq!(dec.records.len(), 5);
}

/// 100 MiB without a newline through the framing: exact length and content, and the init's peak
/// RSS stays small (it streams; it does not buffer lines).
#[test]
fn a_100_mib_line_passes_through_with_bounded_init_memory() {
    const LEN: u64 = 100 * 1024 * 1024;
    let d = TempDir::new("bigline");
    let m = Marker::new("bigline");
    let path = d.join("spec.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"version": 1, "steps": [
            {"shell": format!("head -c {LEN} /dev/zero | tr '\\0' a")},
            {"shell": "printf end"},
        ]}))
        .unwrap(),
    )
    .unwrap();
    let mut c = init_cmd([std::ffi::OsStr::new("run"), path.as_os_str()], &m);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = { stderr }.read_to_end(&mut v);
        v
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut max, mut samples) = (0u64, 0u32);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmHWM") {
                    max = max.max(kb);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (max, samples)
        })
    };
    // Stream-decode: count the output, check every byte, collect the records.
    let mut dec = Decoder::new();
    let (mut a_count, mut other, mut tail) = (0u64, 0u64, Vec::new());
    let mut recs = Vec::new();
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        dec.feed(&buf[..n], &mut |e| match e {
            Event::Output(b) => {
                if recs.len() <= 1 {
                    let k = b.iter().filter(|&&x| x == b'a').count() as u64;
                    a_count += k;
                    other += b.len() as u64 - k;
                } else {
                    tail.extend_from_slice(b);
                }
            }
            Event::Record(r) => recs.push(r),
            Event::Invalid { reason } | Event::Unverified { reason } => bad.push(reason),
        });
    }
    dec.finish(&mut |e| {
        if let Event::Invalid { reason } = e {
            bad.push(reason)
        }
    });
    let status = wait_deadline(&mut child, Duration::from_secs(600));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (hwm, samples) = sampler.join().unwrap();
    let err = err_thread.join().unwrap();
    assert_eq!(
        exit_code(status, &err),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&err)
    );
    assert!(bad.is_empty(), "invalid framing: {}", few(&bad));
    assert_eq!(a_count, LEN, "bytes of the line");
    assert_eq!(other, 0, "foreign bytes inside the line");
    assert_eq!(tail, b"end");
    assert_eq!(
        briefs(&recs),
        vec![
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done passed last=true"
        ]
    );
    eprintln!("100 MiB line: the init's VmHWM {hwm} kB ({samples} samples)");
    assert!(samples > 0, "never sampled the init's memory");
    assert!(hwm < 8 * 1024, "the init's VmHWM reached {hwm} kB");
}
