//! End-to-end runs of the `local` engine: the real stepctl binary, re-executing itself as the
//! init, real processes and signals.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stepctl() -> Command {
    Engine::Local.stepctl()
}

fn run_json(workflow: &Path, extra: &[&str]) -> (i32, Value, String) {
    Engine::Local.run_json(workflow, extra)
}

#[test]
fn conditions_workflow_runs_with_retry_negative_optional_timeout_and_always() {
    let t = Instant::now();
    let (code, doc, stderr) = run_json(&wf("conditions.yaml"), &[]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["status"], "passed");
    assert_eq!(doc["name"], "conditions");
    let flaky = step(&doc, &["smoke", "flaky"]);
    assert_eq!(flaky["attempts"], 2, "{flaky}");
    assert_eq!(flaky["status"], "passed");
    let neg = step(&doc, &["known-broken"]);
    assert_eq!(
        (neg["status"].as_str(), neg["exitCode"].as_i64()),
        (Some("passed"), Some(1))
    );
    let opt = step(&doc, &["may-fail"]);
    assert_eq!(opt["status"], "timeout", "{opt}");
    let ms = opt["durationMs"].as_u64().unwrap();
    assert!((1900..5000).contains(&ms), "timeout after {ms}ms");
    assert_eq!(step(&doc, &["report"])["status"], "passed");
    // The 10 s sleep was stopped at its 2 s timeout.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // Progress lines went to stderr in JSON mode, with the steps' own output.
    assert!(stderr.contains("▶ flaky (attempt 2)"), "{stderr}");
    assert!(stderr.contains("ping\n"), "{stderr}");
}

#[test]
fn pure_steps_workflow_passes_in_two_groups() {
    let (code, doc, _) = run_json(&wf("pure-steps.yaml"), &[]);
    assert_eq!(code, 0, "{doc}");
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert!(steps.iter().all(|s| s["status"] == "passed"), "{doc}");
    let plan = stepctl()
        .args(["plan"])
        .arg(wf("pure-steps.yaml"))
        .output()
        .unwrap();
    let groups = String::from_utf8_lossy(&plan.stderr);
    assert!(
        groups.contains("group-0 (localhost/stepinit/test-busybox:dev): steps 1, 2\n"),
        "{groups}"
    );
    assert!(
        groups.contains("group-1 (localhost/stepinit/test-busybox:dev): steps 3, 4, 5\n"),
        "{groups}"
    );
}

#[test]
fn defaults_no_registry_workflow_runs_as_its_user_when_root() {
    let (code, doc, stderr) = run_json(&wf("defaults-no-registry.yaml"), &[]);
    if is_root() {
        assert_eq!(code, 0, "{doc}\n{stderr}");
        assert_eq!(step(&doc, &["read"])["status"], "passed");
    } else {
        // Not root: runAsUser is ignored (with a warning), so `id -u` is not 1001.
        assert!(stderr.contains("runAsUser/runAsGroup ignored"), "{stderr}");
        assert_eq!(code, 1);
    }
}

#[test]
fn hello_example_passes_and_writes_junit() {
    let junit = std::env::temp_dir().join(format!("stepctl-junit-{}.xml", std::process::id()));
    let o = stepctl()
        .args(["run", "--junit"])
        .arg(&junit)
        .arg(example("hello.yaml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("hello from Linux\n"), "{out}");
    assert!(out.contains("workflow hello: passed in"), "{out}");
    let x = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(x.matches("<testcase ").count(), 8, "{x}");
    assert!(x.contains("<failure type=\"timeout\""), "{x}");
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(&junit)
        .output()
        .expect("python3 runs");
    assert!(
        parsed.status.success(),
        "JUnit XML is not well-formed: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let _ = std::fs::remove_file(junit);
}

const FAILING: &str = r#"
kind: TestWorkflow
metadata: {name: failing}
spec:
  steps:
  - name: ok
    shell: echo ok
  - name: group
    steps:
    - name: breaks
      shell: echo about to fail >&2; exit 7
    - name: after break
      shell: echo must not run
  - name: skipped later
    shell: echo must not run
  - name: on failure
    condition: failed
    shell: echo cleaning up
  - name: missing program
    condition: always
    run: {command: [no-such-program-xyz]}
  after:
  - name: always
    condition: always
    shell: echo bye
  - name: after, by default when passed
    shell: echo must not run
"#;

#[test]
fn failing_workflow_exits_1_with_statuses() {
    let (code, doc, stderr) = run_json(&temp_wf("failing", FAILING), &[]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["status"], "failed");
    assert_eq!(step(&doc, &["ok"])["status"], "passed");
    let b = step(&doc, &["group", "breaks"]);
    assert_eq!(
        (b["status"].as_str(), b["exitCode"].as_i64()),
        (Some("failed"), Some(7))
    );
    assert_eq!(step(&doc, &["group", "after break"])["status"], "skipped");
    assert_eq!(step(&doc, &["group"])["status"], "failed");
    assert_eq!(step(&doc, &["skipped later"])["status"], "skipped");
    assert_eq!(step(&doc, &["skipped later"])["attempts"], 0);
    assert_eq!(step(&doc, &["on failure"])["status"], "passed");
    let m = step(&doc, &["missing program"]);
    assert_eq!(m["exitCode"], 127, "{m}");
    assert!(
        m["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-program-xyz"),
        "{m}"
    );
    assert_eq!(step(&doc, &["always"])["status"], "passed");
    // `after` steps are steps like the others (as in Testkube): `passed` by default.
    assert_eq!(
        step(&doc, &["after, by default when passed"])["status"],
        "skipped"
    );
    assert!(stderr.contains("about to fail\n"), "{stderr}");
    assert!(!stderr.contains("must not run"), "{stderr}");
}

#[test]
fn invalid_workflows_exit_2_naming_the_field() {
    for (yaml, want) in [
        (
            "kind: TestWorkflow\nmetadata: {name: x}\nspec:\n  steps:\n  - shell: a\n  - shell: b\n  - shell: c\n    artifacts: {paths: [a]}\n",
            "spec.steps[2].artifacts: not supported by stepctl (supported: ",
        ),
        (
            "kind: TestWorkflow\nmetadata: {name: x}\nspec:\n  steps:\n  - shell: a\n    timeout: soon\n",
            "spec.steps[0].timeout: invalid duration \"soon\"",
        ),
        (
            "kind: TestWorkflow\nmetadata: {name: x}\nspec:\n  steps:\n  - shell: a\n    condition: \"env.CI ==\"\n",
            "spec.steps[0].condition: \"env.CI ==\": expected a value (at character 10)",
        ),
        ("kind: [", "not valid YAML"),
    ] {
        let p = temp_wf("invalid", yaml);
        let o = stepctl().arg("run").arg(&p).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&format!("stepctl: {}: ", p.display())), "{err}");
    }
    let o = stepctl()
        .args(["run", "/no/such/file.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = stepctl()
        .args(["run", "--engine", "nope", "x.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

const SLEEPER: &str = r#"
kind: TestWorkflow
metadata: {name: sleeper}
spec:
  system: {isolatedContainers: true}
  steps:
  - name: first
    shell: echo first
  - name: sleeper
    shell: read -r pid rest < /proc/self/stat; echo $pid > PIDFILE; echo sleeping; exec sleep 30
  - name: never
    shell: echo must not run
  after:
  - name: after
    shell: echo after
"#;

/// Starts `stepctl run` on the sleeper workflow, waits for the sleeping step, sends `sig`.
fn abort_with(sig: i32) {
    let pidfile =
        std::env::temp_dir().join(format!("stepctl-sleeper-{}-{sig}.pid", std::process::id()));
    let p = temp_wf(
        &format!("sleeper-{sig}"),
        &SLEEPER.replace("PIDFILE", pidfile.to_str().unwrap()),
    );
    let mut cmd = Engine::Local.run_cmd(&["--output", "json"]);
    cmd.arg(&p);
    // SIGINT as a terminal's Ctrl-C sends it: to the whole foreground process group; SIGTERM
    // as a supervisor does: to stepctl alone.
    let to = if sig == 2 {
        SignalTo::ProcessGroup
    } else {
        SignalTo::ProcessOnly
    };
    let run = interrupt_at_line(cmd, "sleeping", Duration::from_secs(20), sig, to);
    assert!(
        run.took < Duration::from_secs(8),
        "abort took {:?}",
        run.took
    );
    let doc = assert_aborted_at_the_sleeper(&run);
    assert_eq!(
        step(&doc, &["after"])["status"],
        "skipped",
        "abort skips even `after`"
    );
    assert!(!run.after.contains("must not run"));
    // The sleep did not survive stepctl (its pid as the host sees it: the step is in a pid
    // namespace of its own, /proc is the host's).
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the step's sleep (pid {pid}) survived");
    let _ = std::fs::remove_file(&pidfile);
}

#[test]
fn sigint_aborts_the_running_step_and_exits_130() {
    abort_with(2);
}

#[test]
fn sigterm_aborts_the_running_step_and_exits_130() {
    abort_with(15);
}

#[test]
fn text_output_is_plain_without_a_tty() {
    let o = stepctl()
        .arg("run")
        .arg(wf("pure-steps.yaml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        !out.contains('\x1b'),
        "no colors when not a terminal: {out:?}"
    );
    assert!(
        out.contains("▶ echo 'Hello world 3'\nHello world 3\n✔ echo 'Hello world 3' passed ("),
        "{out}"
    );
    assert!(out.contains("STEP "), "{out}");
}

/// Runs the embedded init on the plan of `workflow` like the local engine does, returning the
/// raw (framed) stdout of all groups concatenated: what `podman logs` of the containers shows.
fn raw_logs(workflow: &Path) -> Vec<u8> {
    raw_logs_with_key(workflow, None)
}

/// [`raw_logs`] of inits given the state key in `key` (a directory holding `key`, its 64 hex
/// digits): their spec stays there as `spec.json`.
fn raw_logs_with_key(workflow: &Path, key: Option<&Path>) -> Vec<u8> {
    let spec = stepctl().arg("plan").arg(workflow).output().unwrap();
    assert!(spec.status.success());
    // Tests run in parallel: a directory of each call's own.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "stepctl-raw-{}-{}-{}",
        std::process::id(),
        workflow.file_stem().unwrap().to_string_lossy(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, &spec.stdout).unwrap();
    if let Some(k) = key {
        std::fs::write(k.join("spec.json"), &spec.stdout).unwrap();
    }
    let n: Value = serde_json::from_slice(&spec.stdout).unwrap();
    let groups = n["containers"].as_array().map(|c| c.len()).unwrap_or(1);
    let mut all = Vec::new();
    for g in 0..groups {
        let mut c = stepctl();
        if let Some(k) = key {
            c.env(
                "STEPINIT_STATE_KEY",
                std::fs::read_to_string(k.join("key")).unwrap(),
            );
        }
        let o = c
            .args(["__init", "run"])
            .arg(&spec_path)
            .args(["--group", &g.to_string(), "--state"])
            .arg(dir.join("state"))
            .arg("--termination-log")
            .arg(dir.join("term"))
            .current_dir(&dir)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        all.extend_from_slice(&o.stdout);
    }
    let _ = std::fs::remove_dir_all(&dir);
    all
}

fn decode(input: &[u8], args: &[&str]) -> (i32, Value, String) {
    let mut c = stepctl()
        .args(["decode", "--output", "json"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    (
        o.status.code().unwrap(),
        serde_json::from_slice(&o.stdout).unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn decode_reads_raw_logs_with_and_without_timestamps() {
    let raw = raw_logs(&wf("conditions.yaml"));
    // With timestamps, as `kubectl logs --timestamps` / `podman logs -t` print them.
    let mut stamped = Vec::new();
    for (i, line) in raw.split_inclusive(|&b| b == b'\n').enumerate() {
        stamped.extend_from_slice(format!("2026-11-22T12:00:{:02}.{:09}Z ", i % 60, i).as_bytes());
        stamped.extend_from_slice(line);
    }
    let (c1, plain, err1) = decode(
        &raw,
        &["--workflow", wf("conditions.yaml").to_str().unwrap()],
    );
    let (c2, ts, err2) = decode(&stamped, &["--name", "conditions"]);
    assert_eq!((c1, c2), (0, 0), "{err1}{err2}");
    for doc in [&plain, &ts] {
        assert_eq!(doc["status"], "passed");
        assert_eq!(step(doc, &["smoke", "flaky"])["attempts"], 2);
        assert_eq!(step(doc, &["may-fail"])["status"], "timeout");
        assert_eq!(
            doc["notes"],
            serde_json::json!([
                "records not authenticated (no --key-file and --spec): a step could have forged them"
            ]),
            "{doc}"
        );
    }
    assert!(
        err2.contains("ping\n") && !err2.contains("2026-11-22T"),
        "{err2}"
    );
    // Truncated logs (a pod still running, or lost lines) say so and do not pass.
    let cut = &raw[..raw.len() / 2];
    let (c3, doc, _) = decode(cut, &[]);
    assert_eq!(c3, 1);
    assert!(
        doc["notes"].to_string().contains("final record is missing"),
        "{doc}"
    );
}

/// With the run's key and spec, `decode` takes only the records its inits signed: the logs of
/// a run verify; a record added to them (what a step's stderr can make of merged logs, see
/// controller-lite/tests/attacks.rs) fails the report.
#[test]
fn decode_verifies_records_with_the_key_and_the_spec() {
    let dir = std::env::temp_dir().join(format!("stepctl-decode-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key"), "ab".repeat(32)).unwrap();
    let raw = raw_logs_with_key(&wf("conditions.yaml"), Some(&dir));
    let key = dir.join("key");
    let spec = dir.join("spec.json");
    let args = [
        "--key-file",
        key.to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
    ];
    let (c, doc, err) = decode(&raw, &args);
    assert_eq!(c, 0, "{doc}{err}");
    assert_eq!(doc["notes"], serde_json::json!([]), "{doc}");
    let mut forged = raw.clone();
    forged.extend_from_slice(
        b"\x1e{\"v\":1,\"t\":\"done\",\"status\":\"passed\",\"ms\":1,\"last\":true}\n",
    );
    let (c, doc, _) = decode(&forged, &args);
    assert_eq!(c, 1, "{doc}");
    assert!(
        doc["notes"].to_string().contains("authentication tag"),
        "{doc}"
    );
    // Another spec (a step that rewrote it): nothing verifies.
    std::fs::write(
        &spec,
        b"{\"version\":1,\"steps\":[{\"command\":[\"true\"]}]}",
    )
    .unwrap();
    let (c, _, _) = decode(&raw, &args);
    assert_eq!(c, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn decode_reads_recorded_kubectl_logs() {
    // Recorded with `kubectl logs --timestamps POD -c group-0` style prefixes, stdout and
    // stderr merged: see tests/logs/README.md.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/logs");
    let input = std::fs::read(dir.join("failing.kubectl-timestamps.log")).unwrap();
    let (code, doc, err) = decode(&input, &["--name", "failing"]);
    assert_eq!(code, 1, "{doc}\n{err}");
    assert_eq!(doc["status"], "failed");
    assert_eq!(step(&doc, &["group", "breaks"])["exitCode"], 7, "{doc}");
    assert!(err.contains("about to fail"), "{err}");
}

#[test]
fn a_terminal_gets_colors_and_a_status_line_for_the_running_step() {
    // `script` gives stepctl a pseudo-terminal as stdout.
    let p = temp_wf(
        "tty",
        "kind: TestWorkflow\nmetadata: {name: tty}\nspec:\n  steps:\n  - name: slow one\n    shell: sleep 0.7; echo done\n",
    );
    let cmd = format!("{} run {}", env!("CARGO_BIN_EXE_stepctl"), p.display());
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .expect("script (util-linux) runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("\x1b[32m"), "colors on a terminal: {out:?}");
    // The status line names the running step with its elapsed time, and is erased before the
    // step's own output.
    let timed = out
        .match_indices("slow one ")
        .any(|(i, m)| out[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(timed, "{out:?}");
    assert!(out.contains("\r\x1b[2Kdone\r\n"), "{out:?}");
}
