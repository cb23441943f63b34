//! Bad specs and bad `init run` usage: exit 2, exactly one line on stderr naming the file and the
//! JSON path, nothing run, never a panic. And a 5 MiB spec works (specs come from a file).

mod common;

use common::*;
use serde_json::json;

/// Runs `init run spec.json` (relative, in the temp dir) on raw bytes.
fn run_raw(d: &TempDir, bytes: &[u8], m: &Marker) -> Out {
    std::fs::write(d.join("spec.json"), bytes).unwrap();
    let mut c = init_cmd(["run", "spec.json"], m);
    c.current_dir(d.path()).env("D", d.s());
    Running::spawn(&mut c).finish(LIMIT)
}

/// Exit 2, one line `init: spec.json: ...` holding every one of `needles`, nothing run.
fn assert_bad(d: &TempDir, bytes: &[u8], needles: &[&str], m: &Marker) -> String {
    let out = run_raw(d, bytes, m);
    let what = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    assert_eq!(out.code, 2, "spec {what:?}: stderr {:?}", out.stderr_str());
    let err = out.stderr_str();
    assert!(
        err.ends_with('\n') && err.matches('\n').count() == 1,
        "spec {what:?}: not exactly one line on stderr: {err:?}"
    );
    assert!(err.starts_with("init: "), "spec {what:?}: {err:?}");
    assert!(
        err.contains("spec.json"),
        "spec {what:?}: the file is not named: {err:?}"
    );
    for n in needles {
        assert!(err.contains(n), "spec {what:?}: {n:?} missing from {err:?}");
    }
    let so = decode(&out.stdout);
    assert!(
        !so.records.iter().any(|r| matches!(r, Record::Start { .. })),
        "spec {what:?}: a step started: {:?}",
        briefs(&so.records)
    );
    assert!(!d.join("ran").exists(), "spec {what:?}: a step ran");
    assert!(
        err.len() < 2000,
        "spec {what:?}: the line is huge: {} bytes",
        err.len()
    );
    err
}

const RUN: &str = r#"{"shell": "touch \"$D/ran\""}"#;

#[test]
fn the_documented_example_error() {
    let d = TempDir::new("example");
    let m = Marker::new("example");
    let spec =
        format!(r#"{{"version":1,"steps":[{RUN},{{"shell":"true","retry":{{"count":"x"}}}}]}}"#);
    let err = assert_bad(&d, spec.as_bytes(), &["steps[1].retry.count"], &m);
    assert_eq!(
        err,
        "init: spec.json: steps[1].retry.count: invalid type: string \"x\", expected u32\n"
    );
}

#[test]
fn malformed_json() {
    let d = TempDir::new("malformed");
    let m = Marker::new("malformed");
    let truncated = format!(r#"{{"version":1,"steps":[{RUN}"#);
    assert_bad(&d, truncated.as_bytes(), &[], &m);
    assert_bad(&d, b"hello", &[], &m);
    assert_bad(&d, b"", &[], &m);
    let trailing = format!(r#"{{"version":1,"steps":[{RUN}]}} x"#);
    assert_bad(&d, trailing.as_bytes(), &[], &m);
    // Not UTF-8 inside a string.
    assert_bad(
        &d,
        b"{\"version\":1,\"steps\":[{\"shell\":\"\xff\xfe\"}]}",
        &[],
        &m,
    );
    assert_bad(&d, b"[1,2,3]", &[], &m);
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let d = TempDir::new("unknown");
    let m = Marker::new("unknown");
    let top = format!(r#"{{"version":1,"steps":[{RUN}],"bogusTop":1}}"#);
    assert_bad(&d, top.as_bytes(), &["bogusTop"], &m);
    let nested = format!(
        r#"{{"version":1,"steps":[{RUN},{{"steps":[{{"shell":"true","retry":{{"count":1,"bogusNested":true}}}}]}}]}}"#
    );
    assert_bad(
        &d,
        nested.as_bytes(),
        &["steps[1].steps[0].retry", "bogusNested"],
        &m,
    );
    let env = format!(
        r#"{{"version":1,"steps":[{RUN},{{"shell":"true","env":[{{"name":"A","valu":"x"}}]}}]}}"#
    );
    assert_bad(&d, env.as_bytes(), &["steps[1].env[0]", "valu"], &m);
}

#[test]
fn wrong_types_are_rejected_with_their_path() {
    let d = TempDir::new("types");
    let m = Marker::new("types");
    for (spec, path) in [
        (
            format!(
                r#"{{"version":1,"steps":[{RUN},{{"shell":"true","condition":"sometimes"}}]}}"#
            ),
            "steps[1].condition",
        ),
        (
            format!(r#"{{"version":1,"steps":[{RUN},{{"command":"true"}}]}}"#),
            "steps[1].command",
        ),
        (
            format!(r#"{{"version":1,"steps":[{RUN},{{"shell":"true","timeoutMs":-5}}]}}"#),
            "steps[1].timeoutMs",
        ),
        (format!(r#"{{"version":"1","steps":[{RUN}]}}"#), "version"),
        (
            format!(
                r#"{{"version":1,"steps":[{RUN},{{"shell":"true","retry":{{"count":1,"until":"forever"}}}}]}}"#
            ),
            "steps[1].retry.until",
        ),
        (
            format!(r#"{{"version":1,"steps":[{RUN},{{"shell":"true","negative":"yes"}}]}}"#),
            "steps[1].negative",
        ),
    ] {
        assert_bad(&d, spec.as_bytes(), &[path], &m);
    }
}

#[test]
fn versions_and_shape_are_validated_with_their_path() {
    let d = TempDir::new("version");
    let m = Marker::new("version");
    let v2 = format!(r#"{{"version":2,"steps":[{RUN}]}}"#);
    assert_bad(&d, v2.as_bytes(), &["version", "2"], &m);
    let none = format!(r#"{{"steps":[{RUN}]}}"#);
    assert_bad(&d, none.as_bytes(), &["version"], &m);
    assert_bad(&d, br#"{"version":1,"steps":[]}"#, &["steps"], &m);
    let dup = format!(r#"{{"version":1,"steps":[{RUN},{{"id":"1","shell":"true"}}]}}"#);
    assert_bad(&d, dup.as_bytes(), &["steps[1].id"], &m);
    let both = format!(r#"{{"version":1,"steps":[{RUN},{{"shell":"true","command":["true"]}}]}}"#);
    assert_bad(&d, both.as_bytes(), &["steps[1]"], &m);
    let neither = format!(r#"{{"version":1,"steps":[{RUN},{{"name":"empty"}}]}}"#);
    assert_bad(&d, neither.as_bytes(), &["steps[1]"], &m);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let d = TempDir::new("deep");
    let m = Marker::new("deep");
    // 200 000 nested groups, unclosed: a recursive parser without a limit overflows its stack.
    let s = format!(
        r#"{{"version":1,"steps":[{RUN},{}"#,
        r#"{"steps":["#.repeat(200_000)
    );
    assert_bad(&d, s.as_bytes(), &["steps[1]"], &m);
    // Deeply nested groups: either refused (exit 2, one line) or run; never a crash.
    // (Built as text: a nested serde_json::Value this deep overflows the test's own stack.)
    let deep = format!(
        r#"{{"version":1,"steps":[{}{{"shell":"true"}}{}]}}"#,
        r#"{"steps":["#.repeat(2000),
        "]}".repeat(2000)
    );
    let out = run_raw(&d, deep.as_bytes(), &m);
    assert!(
        out.code == 0 || (out.code == 2 && out.stderr_str().matches('\n').count() == 1),
        "2000 nested groups: exit {}, stderr {:?}",
        out.code,
        out.stderr_str()
    );
}

#[test]
fn missing_or_unreadable_spec_file() {
    let d = TempDir::new("nofile");
    let m = Marker::new("nofile");
    for (path, what) in [("no-such-spec.json", "missing file"), (".", "a directory")] {
        let mut c = init_cmd(["run", path], &m);
        c.current_dir(d.path());
        let out = Running::spawn(&mut c).finish(LIMIT);
        let err = out.stderr_str();
        assert_eq!(out.code, 2, "{what}: stderr {err:?}");
        assert!(
            err.ends_with('\n') && err.matches('\n').count() == 1 && err.starts_with("init: "),
            "{what}: {err:?}"
        );
        assert!(err.contains(path), "{what}: the path is not named: {err:?}");
    }
}

#[test]
fn run_usage_errors() {
    let m = Marker::new("runusage");
    let d = TempDir::new("runusage");
    std::fs::write(
        d.join("ok.json"),
        format!(r#"{{"version":1,"steps":[{RUN}]}}"#),
    )
    .unwrap();
    for args in [
        &["run"][..],
        &["run", "ok.json", "--group", "x"],
        &["run", "ok.json", "--group"],
        &["run", "ok.json", "--bogus"],
        &["run", "ok.json", "extra.json"],
    ] {
        let mut c = init_cmd(args, &m);
        c.current_dir(d.path()).env("D", d.s());
        let out = Running::spawn(&mut c).finish(LIMIT);
        assert_eq!(out.code, 2, "init {args:?}: stderr {:?}", out.stderr_str());
        assert!(!out.stderr.is_empty(), "init {args:?}: silent");
        assert!(!d.join("ran").exists(), "init {args:?} ran a step");
    }
}

/// Specs are read from a file, so size is no problem: 5 MiB of spec, the running step gets a
/// 100 kB env value intact, the rest rides on a step that never runs.
#[test]
fn a_5_mib_spec_works() {
    let d = TempDir::new("big");
    let m = Marker::new("big");
    let big = "x".repeat(100_000);
    let env: Vec<_> = (0..55)
        .map(|i| json!({"name": format!("V{i}"), "value": "y".repeat(100_000)}))
        .collect();
    let many: Vec<_> = (0..2000)
        .map(|i| json!({"shell": format!("echo {i}"), "name": format!("step {i}")}))
        .collect();
    let spec = json!({"version": 1, "steps": [
        {"shell": "test ${#BIG} -eq 100000 && printf ok", "env": [{"name": "BIG", "value": big}]},
        {"shell": "true", "condition": "never", "env": env},
        {"condition": "never", "steps": many},
    ]});
    let bytes = serde_json::to_vec(&spec).unwrap();
    assert!(bytes.len() > 5 * 1024 * 1024, "{} bytes", bytes.len());
    let out = run_raw(&d, &bytes, &m);
    assert_eq!(out.code, 0, "stderr {}", out.stderr_str());
    let so = decode(&out.stdout);
    assert_eq!(so.output, b"ok");
    assert_eq!(end_of(&so.records, "1").0, Status::Passed);
    assert_eq!(end_of(&so.records, "3.2000").0, Status::Skipped);
}
