//! Spec mode (`init run SPEC`): sequencing, records, conditions, negative, optional, retries,
//! nested groups, timeouts, working directories, env, missing programs, per-step cleanup, abort.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn spec(steps: serde_json::Value) -> serde_json::Value {
    json!({ "version": 1, "steps": steps })
}

/// Sorts each run of consecutive `skipped` end records: the order among the ends of a skipped
/// group and its children is not part of the contract.
fn normalize(mut v: Vec<String>) -> Vec<String> {
    let skipped = |s: &String| s.starts_with("end ") && s.contains(" skipped ");
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && skipped(&v[j]) {
            j += 1;
        }
        if j > i {
            v[i..j].sort();
            i = j;
        } else {
            i += 1;
        }
    }
    v
}

fn assert_records(r: &SpecRun, want: &[&str]) {
    r.assert_well_formed();
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        normalize(r.briefs()),
        normalize(want),
        "stderr: {}",
        r.raw.stderr_str()
    );
}

#[test]
fn steps_run_in_order_with_start_and_end_records() {
    let d = TempDir::new("seq");
    let m = Marker::new("seq");
    let r = run_spec(
        &d,
        &spec(json!([
            {"name": "first", "shell": "printf one"},
            {"command": ["sh", "-c", "echo two; echo err >&2"]},
            {"id": "third", "command": ["printf", "%s\\n", "three"]},
        ])),
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "start third #1",
            "end third passed code=0 #1",
            "done passed last=true",
        ],
    );
    assert_eq!(r.stdout.out, b"onetwo\nthree\n");
    assert_eq!(r.stderr.out, b"err\n");
    match &r.stdout.records[0] {
        Record::Start { name, .. } => assert_eq!(name.as_deref(), Some("first")),
        x => panic!("{x:?}"),
    }
}

#[test]
fn durations_are_measured() {
    let d = TempDir::new("ms");
    let m = Marker::new("ms");
    let r = run_spec(&d, &spec(json!([{"shell": "sleep 0.3"}])), &m);
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    let (_, _, _, _, ms) = r.end("1");
    assert!((250..20_000).contains(&ms), "step ms {ms}");
    match r.stdout.records.last() {
        Some(Record::Done { ms: total, .. }) => assert!(*total >= ms, "done ms {total} < {ms}"),
        x => panic!("{x:?}"),
    }
}

#[test]
fn a_failure_skips_later_steps_and_exits_1() {
    let d = TempDir::new("fail");
    let m = Marker::new("fail");
    let r = run_spec(
        &d,
        &spec(json!([
            {"shell": "exit 3"},
            {"shell": "touch \"$D/ran\""},
        ])),
        &m,
    );
    let r2 = r;
    assert_eq!(r2.code, 1, "stderr: {}", r2.raw.stderr_str());
    assert_records(
        &r2,
        &[
            "start 1 #1",
            "end 1 failed code=3 #1",
            "end 2 skipped code=- #0",
            "done failed last=true",
        ],
    );
    assert!(!d.join("ran").exists());
}

#[test]
fn shell_steps_fail_fast() {
    let d = TempDir::new("failfast");
    let m = Marker::new("failfast");
    let r = run_spec(&d, &spec(json!([{"shell": "false\necho after"}])), &m);
    assert_eq!(r.code, 1);
    assert_eq!(r.end("1").0, Status::Failed);
    assert_eq!(r.end("1").1, Some(1));
    assert!(r.stdout.out.is_empty(), "{:?}", r.stdout.out);
}

#[test]
fn spec_shell_runs_scripts_as_shell_dash_e_dash_c() {
    let d = TempDir::new("customshell");
    let m = Marker::new("customshell");
    let sh = d.join("myshell");
    std::fs::write(
        &sh,
        "#!/bin/sh\nprintf '[%s]' \"$@\"\nexec /bin/sh \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = run_spec(
        &d,
        &json!({"version": 1, "shell": sh.to_str().unwrap(), "steps": [{"shell": "echo hi"}]}),
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout.out),
        "[-e][-c][echo hi]hi\n"
    );
}

#[test]
fn a_step_killed_by_a_signal_has_code_128_plus_n() {
    let d = TempDir::new("sigstep");
    let m = Marker::new("sigstep");
    let r = run_spec(&d, &spec(json!([{"shell": "kill -SEGV $$"}])), &m);
    assert_eq!(r.code, 1);
    assert_eq!(r.end("1").0, Status::Failed);
    assert_eq!(r.end("1").1, Some(128 + libc::SIGSEGV));
}

#[test]
fn conditions() {
    let d = TempDir::new("cond");
    let m = Marker::new("cond");
    let r = run_spec_env(
        &d,
        &spec(json!([
            {"shell": "true"},
            {"shell": "touch \"$D/never\"", "condition": "never"},
            {"shell": "touch \"$D/failed-early\"", "condition": "failed"},
            {"shell": "exit 1"},
            {"shell": "touch \"$D/passed\""},
            {"shell": "touch \"$D/failed\"", "condition": "failed"},
            {"shell": "touch \"$D/always\"", "condition": "always"},
            {"shell": "touch \"$D/never2\"", "condition": "never"},
        ])),
        &[("D", d.s())],
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 passed code=0 #1",
            "end 2 skipped code=- #0",
            "end 3 skipped code=- #0",
            "start 4 #1",
            "end 4 failed code=1 #1",
            "end 5 skipped code=- #0",
            "start 6 #1",
            "end 6 passed code=0 #1",
            "start 7 #1",
            "end 7 passed code=0 #1",
            "end 8 skipped code=- #0",
            "done failed last=true",
        ],
    );
    for (f, exists) in [
        ("never", false),
        ("failed-early", false),
        ("passed", false),
        ("failed", true),
        ("always", true),
        ("never2", false),
    ] {
        assert_eq!(d.join(f).exists(), exists, "{f}");
    }
}

#[test]
fn negative_steps_invert_the_result() {
    let d = TempDir::new("neg");
    let m = Marker::new("neg");
    let r = run_spec(
        &d,
        &spec(json!([
            {"shell": "exit 5", "negative": true},
            {"shell": "true", "negative": true},
        ])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 passed code=5 #1",
            "start 2 #1",
            "end 2 failed code=0 #1",
            "done failed last=true",
        ],
    );
}

#[test]
fn a_negative_step_that_times_out_is_a_timeout() {
    let d = TempDir::new("negtimeout");
    let m = Marker::new("negtimeout");
    let r = run_spec(
        &d,
        &spec(json!([{"shell": "sleep 1000", "negative": true, "timeoutMs": 300, "graceMs": 500}])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    assert_eq!(r.end("1").0, Status::Timeout);
}

#[test]
fn optional_failures_do_not_fail_the_workflow() {
    let d = TempDir::new("optional");
    let m = Marker::new("optional");
    let r = run_spec(
        &d,
        &spec(json!([
            {"shell": "exit 2", "optional": true},
            {"shell": "true"},
        ])),
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 failed code=2 #1",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done passed last=true",
        ],
    );
}

#[test]
fn retry_until_passed() {
    let d = TempDir::new("retry");
    let m = Marker::new("retry");
    let r = run_spec_env(
        &d,
        &spec(json!([
            {"shell": "if [ -e \"$D/m\" ]; then echo second; exit 0; fi; touch \"$D/m\"; echo first; exit 1",
             "retry": {"count": 3}},
            {"shell": "true"},
        ])),
        &[("D", d.s())],
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 failed code=1 #1",
            "start 1 #2",
            "end 1 passed code=0 #2",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done passed last=true",
        ],
    );
    assert_eq!(r.stdout.out, b"first\nsecond\n");
}

#[test]
fn retry_exhausted_fails() {
    let d = TempDir::new("retryx");
    let m = Marker::new("retryx");
    let r = run_spec(
        &d,
        &spec(json!([{"shell": "exit 4", "retry": {"count": 2, "until": "passed"}}])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 failed code=4 #1",
            "start 1 #2",
            "end 1 failed code=4 #2",
            "start 1 #3",
            "end 1 failed code=4 #3",
            "done failed last=true",
        ],
    );
}

#[test]
fn retry_until_failed() {
    let d = TempDir::new("untilfailed");
    let m = Marker::new("untilfailed");
    // Passes on attempts 1 and 2, fails on attempt 3: retried while it passes.
    let r = run_spec_env(
        &d,
        &spec(json!([
            {"shell": "echo x >> \"$D/n\"; [ $(wc -l < \"$D/n\") -lt 3 ]",
             "retry": {"count": 5, "until": "failed"}},
        ])),
        &[("D", d.s())],
        &m,
    );
    r.assert_well_formed();
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 1 #2",
            "end 1 passed code=0 #2",
            "start 1 #3",
            "end 1 failed code=1 #3",
            "done failed last=true",
        ],
    );
    assert_eq!(r.code, 1);
    assert_eq!(read_lines(&d.join("n")).len(), 3);
}

#[test]
fn nested_groups_derive_their_status() {
    let d = TempDir::new("groups");
    let m = Marker::new("groups");
    let r = run_spec(
        &d,
        &spec(json!([
            {"name": "g1", "steps": [
                {"shell": "true"},
                {"shell": "false", "optional": true},
            ]},
            {"steps": [
                {"shell": "true"},
                {"shell": "exit 4"},
                {"shell": "true"},
                {"shell": "true", "condition": "failed"},
            ]},
            {"steps": [{"shell": "true"}, {"steps": [{"shell": "true"}]}]},
            {"condition": "always", "steps": [
                {"shell": "true"},
                {"optional": true, "condition": "failed", "steps": [
                    {"shell": "false", "condition": "always"},
                ]},
            ]},
        ])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            "start 1.1 #1",
            "end 1.1 passed code=0 #1",
            "start 1.2 #1",
            "end 1.2 failed code=1 #1",
            "end 1 passed code=- #1",
            "start 2 #1",
            "start 2.1 #1",
            "end 2.1 passed code=0 #1",
            "start 2.2 #1",
            "end 2.2 failed code=4 #1",
            "end 2.3 skipped code=- #0",
            "start 2.4 #1",
            "end 2.4 passed code=0 #1",
            "end 2 failed code=- #1",
            "end 3 skipped code=- #0",
            "end 3.1 skipped code=- #0",
            "end 3.2 skipped code=- #0",
            "end 3.2.1 skipped code=- #0",
            "start 4 #1",
            // The workflow has failed: a `passed` condition is false inside `always` groups too.
            "end 4.1 skipped code=- #0",
            "start 4.2 #1",
            "start 4.2.1 #1",
            "end 4.2.1 failed code=1 #1",
            "end 4.2 failed code=- #1",
            "end 4 passed code=- #1",
            "done failed last=true",
        ],
    );
}

#[test]
fn leaf_timeout_kills_the_steps_tree() {
    let d = TempDir::new("leaftimeout");
    let m = Marker::new("leaftimeout");
    let t = Instant::now();
    let r = run_spec_env(
        &d,
        &spec(json!([
            {"shell": "setsid sh -c 'trap \"\" TERM; echo $$ > \"$D/bg\"; exec sleep 1000' &\n trap '' TERM; sleep 1000",
             "timeoutMs": 500, "graceMs": 500},
            {"shell": "p=$(cat \"$D/bg\"); if kill -0 $p 2>/dev/null; then echo \"alive $p\"; exit 1; fi",
             "condition": "always"},
        ])),
        &[("D", d.s())],
        &m,
    );
    let took = t.elapsed();
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    assert_records(
        &r,
        &[
            "start 1 #1",
            &format!(
                "end 1 timeout code={} #1",
                r.end("1").1.map_or("-".into(), |c| c.to_string())
            ),
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done failed last=true",
        ],
    );
    let reason = r.end("1").3.unwrap_or_default();
    assert!(reason.contains("timed out"), "reason {reason:?}");
    assert!(
        took >= Duration::from_millis(900),
        "timeout + grace: {took:?}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(m.pids().is_empty(), "survivors: {}", m.describe());
}

#[test]
fn group_timeout_bounds_its_children() {
    let d = TempDir::new("grouptimeout");
    let m = Marker::new("grouptimeout");
    let t = Instant::now();
    let r = run_spec_env(
        &d,
        &spec(json!([
            {"timeoutMs": 800, "graceMs": 300, "steps": [
                {"shell": "true"},
                {"shell": "sleep 1000"},
                {"shell": "touch \"$D/after\""},
            ]},
            {"shell": "true", "condition": "always"},
        ])),
        &[("D", d.s())],
        &m,
    );
    let took = t.elapsed();
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    r.assert_well_formed();
    assert_eq!(r.end("1").0, Status::Timeout, "{:?}", r.briefs());
    assert_eq!(r.end("1.1").0, Status::Passed);
    assert!(r.end("1.2").0.is_failure(), "{:?}", r.briefs());
    assert_ne!(r.end("1.3").0, Status::Passed, "{:?}", r.briefs());
    assert!(!d.join("after").exists());
    assert_eq!(r.end("2").0, Status::Passed);
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn working_dir_is_created_and_used() {
    let d = TempDir::new("workdir");
    let m = Marker::new("workdir");
    let abs = d.join("abs/x/y");
    let r = run_spec(
        &d,
        &spec(json!([
            {"shell": "pwd", "workingDir": "rel/a/b"},
            {"command": ["pwd"], "workingDir": abs.to_str().unwrap()},
            {"shell": "pwd"},
        ])),
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout.out),
        format!("{}/rel/a/b\n{}\n{}\n", d.s(), abs.display(), d.s())
    );
    assert!(d.join("rel/a/b").is_dir());
}

#[test]
fn working_dir_that_cannot_be_created_fails_the_step_with_a_reason() {
    let d = TempDir::new("badworkdir");
    let m = Marker::new("badworkdir");
    std::fs::write(d.join("file"), "").unwrap();
    let bad = d.join("file/sub");
    let r = run_spec(
        &d,
        &spec(json!([
            {"shell": "echo ran", "workingDir": bad.to_str().unwrap()},
            {"shell": "echo next"},
            {"shell": "echo always", "condition": "always"},
        ])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    r.assert_well_formed();
    let (status, _, _, reason, _) = r.end("1");
    assert_eq!(status, Status::Failed);
    let reason = reason.unwrap_or_default();
    assert!(reason.contains(bad.to_str().unwrap()), "reason {reason:?}");
    assert_eq!(r.end("2").0, Status::Skipped);
    assert_eq!(r.end("3").0, Status::Passed);
    assert_eq!(r.stdout.out, b"always\n");
}

#[test]
fn env_layers_init_then_spec_then_step() {
    let d = TempDir::new("env");
    let m = Marker::new("env");
    let r = run_spec_env(
        &d,
        &json!({
            "version": 1,
            "env": [{"name": "A", "value": "spec"}, {"name": "B", "value": "spec"}],
            "steps": [
                {"shell": "printf '%s,%s,%s,%s,%s|' \"$A\" \"$B\" \"$C\" \"$E\" \"${EMPTY-unset}\"",
                 "env": [{"name": "B", "value": "step"}, {"name": "C", "value": "a b\n c"},
                         {"name": "EMPTY"}]},
                {"shell": "printf '%s,%s,%s' \"$A\" \"$B\" \"${C-unset}\""},
            ]
        }),
        &[("A", "init"), ("E", "init")],
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout.out),
        "spec,step,a b\n c,init,|spec,spec,unset"
    );
}

#[test]
fn missing_program_fails_with_127_and_the_run_continues() {
    let d = TempDir::new("missing");
    let m = Marker::new("missing");
    let r = run_spec(
        &d,
        &spec(json!([
            {"command": ["stepinit-no-such-program-xyz", "arg"]},
            {"shell": "echo skipped"},
            {"shell": "echo failed-branch", "condition": "failed"},
        ])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    r.assert_well_formed();
    let (status, code, _, reason, _) = r.end("1");
    assert_eq!(status, Status::Failed);
    assert_eq!(code, Some(127));
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("stepinit-no-such-program-xyz"),
        "reason {reason:?}"
    );
    assert_eq!(r.end("2").0, Status::Skipped);
    assert_eq!(r.end("3").0, Status::Passed);
    assert_eq!(r.stdout.out, b"failed-branch\n");
}

#[test]
fn step_path_is_searched_in_the_steps_own_path() {
    let d = TempDir::new("steppath");
    let m = Marker::new("steppath");
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let prog = bin.join("stepinit-test-prog");
    std::fs::write(&prog, "#!/bin/sh\necho found me\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let noexec = bin.join("stepinit-test-noexec");
    std::fs::write(&noexec, "#!/bin/sh\necho no\n").unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let r = run_spec(
        &d,
        &spec(json!([
            {"command": ["stepinit-test-prog"], "env": [{"name": "PATH", "value": path}]},
            {"command": [noexec.to_str().unwrap()], "condition": "always"},
        ])),
        &m,
    );
    assert_eq!(
        r.end("1").0,
        Status::Passed,
        "{:?} {}",
        r.briefs(),
        r.raw.stderr_str()
    );
    assert_eq!(r.stdout.out, b"found me\n");
    assert_eq!(r.end("2").0, Status::Failed);
    assert_eq!(r.end("2").1, Some(126));
    assert_eq!(r.code, 1);
}

#[test]
fn background_processes_are_gone_before_the_next_step() {
    let d = TempDir::new("bg");
    let m = Marker::new("bg");
    let t = Instant::now();
    let r = run_spec_env(
        &d,
        &spec(json!([
            {"shell": "sleep 1000 & echo $! > \"$D/p1\"\n\
                       setsid sh -c 'trap \"\" TERM; echo $$ > \"$D/p2\"; exec sleep 1000' &\n\
                       while [ ! -s \"$D/p2\" ]; do sleep 0.01; done",
             "graceMs": 500},
            {"shell": "for p in $(cat \"$D/p1\") $(cat \"$D/p2\"); do \
                         if [ -e /proc/$p ]; then echo \"alive: $(cat /proc/$p/stat)\"; exit 1; fi; done"},
        ])),
        &[("D", d.s())],
        &m,
    );
    assert_eq!(
        r.code,
        0,
        "stdout {:?} stderr {}",
        String::from_utf8_lossy(&r.stdout.out),
        r.raw.stderr_str()
    );
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done passed last=true",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(m.pids().is_empty(), "survivors: {}", m.describe());
}

#[test]
fn sigterm_aborts_the_running_step_and_skips_the_rest() {
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let d = TempDir::new("abort");
        let m = Marker::new("abort");
        let running = start_spec(
            &d,
            &spec(json!([
                {"shell": "true"},
                {"shell": "touch \"$D/started\"; sleep 1000", "graceMs": 1000},
                {"shell": "touch \"$D/third\"", "condition": "always"},
                {"shell": "true", "condition": "failed"},
            ])),
            &[("D", d.s())],
            &m,
        );
        await_file(&d.join("started"), "step 2");
        running.signal(sig);
        let r = finish_spec(running, LIMIT);
        assert_eq!(r.code, 130, "SIG{name}; stderr: {}", r.raw.stderr_str());
        assert_records(
            &r,
            &[
                "start 1 #1",
                "end 1 passed code=0 #1",
                "start 2 #1",
                &format!(
                    "end 2 aborted code={} #1",
                    r.end("2").1.map_or("-".into(), |c| c.to_string())
                ),
                "end 3 skipped code=- #0",
                "end 4 skipped code=- #0",
                "done aborted last=true",
            ],
        );
        assert!(!d.join("third").exists(), "SIG{name}");
        assert!(m.pids().is_empty(), "SIG{name} survivors: {}", m.describe());
    }
}

#[test]
fn stdin_of_steps_is_not_the_spec_or_a_terminal_hang() {
    // A step reading stdin must not hang the run: it gets EOF (the init's stdin is /dev/null here).
    let d = TempDir::new("stdin");
    let m = Marker::new("stdin");
    let r = run_spec(&d, &spec(json!([{"shell": "cat; echo done"}])), &m);
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(r.stdout.out, b"done\n");
}

#[test]
fn many_steps_run_in_sequence() {
    let d = TempDir::new("many");
    let m = Marker::new("many");
    let steps: Vec<_> = (0..200)
        .map(|i| json!({"command": ["printf", format!("{i} ")]}))
        .collect();
    let r = run_spec(&d, &spec(json!(steps)), &m);
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    r.assert_well_formed();
    let want: String = (0..200).map(|i| format!("{i} ")).collect();
    assert_eq!(String::from_utf8_lossy(&r.stdout.out), want);
    assert_eq!(r.stdout.records.len(), 401);
}

#[test]
fn group_env_is_layered_between_spec_and_leaf() {
    let d = TempDir::new("groupenv");
    let m = Marker::new("groupenv");
    let r = run_spec(
        &d,
        &json!({
            "version": 1,
            "env": [{"name": "A", "value": "spec"}, {"name": "B", "value": "spec"}],
            "steps": [
                {"env": [{"name": "B", "value": "group"}, {"name": "C", "value": "group"}], "steps": [
                    {"shell": "printf '%s,%s,%s|' \"$A\" \"$B\" \"$C\""},
                    {"shell": "printf '%s,%s,%s|' \"$A\" \"$B\" \"$C\"",
                     "env": [{"name": "C", "value": "leaf"}]},
                ]},
                {"shell": "printf '%s,%s,%s' \"$A\" \"$B\" \"${C-unset}\""},
            ]
        }),
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout.out),
        "spec,group,group|spec,group,leaf|spec,spec,unset"
    );
}

#[test]
fn group_timeout_reports_the_group_and_skips_the_rest() {
    let d = TempDir::new("grouptimeout2");
    let m = Marker::new("grouptimeout2");
    let r = run_spec(
        &d,
        &spec(json!([
            {"id": "g", "timeoutMs": 500, "graceMs": 300, "steps": [
                {"id": "slow", "shell": "sleep 1000"},
                {"id": "later", "shell": "true"},
            ]},
        ])),
        &m,
    );
    assert_eq!(r.code, 1, "stderr: {}", r.raw.stderr_str());
    r.assert_well_formed();
    let (st, _, _, reason, _) = r.end("slow");
    assert_eq!(st, Status::Timeout, "{:?}", r.briefs());
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("timed out"), "{reason:?}");
    assert_eq!(r.end("later").0, Status::Skipped);
    assert_eq!(r.end("g").0, Status::Timeout);
}

/// As PID 1 of a new PID namespace: a step's orphans are reaped, its setsid'd TERM-ignoring
/// grandchild is gone before the next step, and the run's records are complete.
#[test]
fn spec_mode_as_pid_1() {
    let d = TempDir::new("specpid1");
    let m = Marker::new("specpid1");
    let path = d.join("spec.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&spec(json!([
            {"shell": "[ \"$PPID\" = 1 ]\n\
                       for i in 1 2 3; do sh -c 'sleep 0.2 >/dev/null & echo $!' >> \"$D/orphans\"; done\n\
                       setsid sh -c 'trap \"\" TERM; echo $$ > \"$D/gc\"; exec sleep 1000' &\n\
                       while [ ! -s \"$D/gc\" ]; do sleep 0.01; done",
             "graceMs": 500},
            {"shell": "for p in $(cat \"$D/gc\"); do if [ -e /proc/$p ]; then echo \"alive $p\"; exit 1; fi; done\n\
                       for p in $(cat \"$D/orphans\"); do i=0; while [ -e /proc/$p ]; do \
                         i=$((i+1)); [ $i -lt 1500 ] || { echo \"zombie $p\"; exit 1; }; sleep 0.02; done; done\n\
                       echo clean"},
        ])))
        .unwrap(),
    )
    .unwrap();
    let mut all: Vec<std::ffi::OsString> =
        vec!["-fp".into(), "--mount-proc".into(), INIT.as_str().into()];
    all.push("run".into());
    all.push(path.into_os_string());
    let mut c = marked_cmd("unshare", all, &m);
    c.env("D", d.s());
    let r = finish_spec(Running::spawn(&mut c), LIMIT);
    assert_eq!(
        r.code,
        0,
        "unshare -fp --mount-proc init run (needs root and PID namespaces; never skipped): \
         stdout {:?} stderr {}",
        String::from_utf8_lossy(&r.stdout.out),
        r.raw.stderr_str()
    );
    assert_records(
        &r,
        &[
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done passed last=true",
        ],
    );
    assert_eq!(r.stdout.out, b"clean\n");
}

/// Nobody reads the init's stdout any more: the workflow still runs to its end (the init must
/// not die of SIGPIPE or stop at EPIPE).
#[test]
fn a_closed_stdout_does_not_stop_the_workflow() {
    let d = TempDir::new("closedout");
    let m = Marker::new("closedout");
    let path = d.join("spec.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&spec(json!([
            {"shell": "head -c 1000000 /dev/zero"},
            {"shell": "echo more; touch \"$D/last\"", "condition": "always"},
        ])))
        .unwrap(),
    )
    .unwrap();
    let mut c = init_cmd([std::ffi::OsStr::new("run"), path.as_os_str()], &m);
    c.env("D", d.s());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let status = wait_deadline(&mut child, LIMIT);
    let mut err = Vec::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let code = exit_code(status, &err);
    assert!(d.join("last").exists(), "the last step did not run");
    assert!(
        code == 0 || code == 1,
        "exit {code}; stderr {}",
        String::from_utf8_lossy(&err)
    );
}

/// As root, a step with runAsUser/runAsGroup runs as that uid/gid, and the working directory the
/// init creates for it belongs to it.
#[test]
fn run_as_user_and_its_working_dir() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new_shared("runas");
    let m = Marker::new("runas");
    let wd = d.join("ws/deep");
    let r = run_spec(
        &d,
        &spec(json!([
            {"shell": "echo \"$(id -u):$(id -g) $(pwd)\"; touch mine",
             "runAsUser": 65534, "runAsGroup": 65534, "workingDir": wd.to_str().unwrap()},
        ])),
        &m,
    );
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout.out),
        format!("65534:65534 {}\n", wd.display())
    );
    let meta = std::fs::metadata(&wd).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "owner of the created workingDir"
    );
    assert_eq!(std::fs::metadata(wd.join("mine")).unwrap().uid(), 65534);
}

#[test]
fn termination_log_summarizes_the_run() {
    let d = TempDir::new("termlog");
    let m = Marker::new("termlog");
    let log = d.join("termination-log");
    std::fs::write(&log, "").unwrap();
    let path = d.join("spec.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&spec(json!([
            {"shell": "true"},
            {"shell": "exit 3"},
            {"shell": "true"},
        ])))
        .unwrap(),
    )
    .unwrap();
    let mut c = init_cmd(
        [
            std::ffi::OsStr::new("run"),
            path.as_os_str(),
            std::ffi::OsStr::new("--termination-log"),
            log.as_os_str(),
        ],
        &m,
    );
    let out = Running::spawn(&mut c).finish(LIMIT);
    assert_eq!(out.code, 1, "stderr: {}", out.stderr_str());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"stepinit-summary 1"), "{text}");
    assert!(
        lines.contains(&"counts passed=1 failed=1 skipped=1 timeout=0 aborted=0"),
        "{text}"
    );
    assert!(lines.contains(&"step 2 failed 3"), "{text}");
    assert!(text.len() < 4096);
}

/// Signals other than TERM/INT reach the running step's process group.
#[test]
fn other_signals_are_forwarded_to_the_running_step() {
    let d = TempDir::new("specfwd");
    let m = Marker::new("specfwd");
    let running = start_spec(
        &d,
        &spec(json!([
            // Builtins only while signals may arrive: a forked helper would die of them (and
            // `-e` would end the script).
            {"shell": "trap 'echo HUP >> \"$D/got\"' HUP\n\
                       trap 'echo USR1 >> \"$D/got\"' USR1\n\
                       : > \"$D/got\"; touch \"$D/ready\"\n\
                       count() { c=0; while read -r l; do c=$((c+1)); done < \"$D/got\"; }\n\
                       count; while [ $c -lt 2 ]; do count; done"},
        ])),
        &[("D", d.s())],
        &m,
    );
    await_file(&d.join("ready"), "the step's traps");
    running.signal(libc::SIGUSR1);
    await_lines(&d.join("got"), 1, "USR1");
    running.signal(libc::SIGHUP);
    await_lines(&d.join("got"), 2, "HUP");
    let r = finish_spec(running, LIMIT);
    assert_eq!(r.code, 0, "stderr: {}", r.raw.stderr_str());
    assert_eq!(read_lines(&d.join("got")), vec!["USR1", "HUP"]);
}

/// `--group N` runs container N's leaves only; an intermediate container exits 0 with
/// `done last:false` whatever happened, the last one reports the workflow's result.
#[test]
fn group_flag_runs_one_containers_leaves() {
    let d = TempDir::new("groupflag");
    let m = Marker::new("groupflag");
    let path = d.join("spec.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"version": 1, "containers": [{}, {}], "steps": [
            {"id": "a", "shell": "echo a; exit 1", "container": 0, "optional": true},
            {"id": "b", "shell": "echo b", "container": 0},
            {"id": "c", "shell": "echo c", "container": 1},
        ]}))
        .unwrap(),
    )
    .unwrap();
    let go = |n: &str| {
        let mut c = init_cmd(
            [
                std::ffi::OsStr::new("run"),
                path.as_os_str(),
                std::ffi::OsStr::new("--group"),
                std::ffi::OsStr::new(n),
            ],
            &m,
        );
        c.current_dir(d.path());
        finish_spec(Running::spawn(&mut c), LIMIT)
    };
    let r0 = go("0");
    assert_eq!(r0.code, 0, "stderr: {}", r0.raw.stderr_str());
    r0.assert_well_formed();
    assert_eq!(r0.stdout.out, b"a\nb\n");
    assert!(
        !r0.briefs().iter().any(|b| b.contains(" c ")),
        "{:?}",
        r0.briefs()
    );
    assert_eq!(r0.briefs().last().unwrap(), "done passed last=false");
    let r1 = go("1");
    assert_eq!(r1.code, 0, "stderr: {}", r1.raw.stderr_str());
    assert_eq!(r1.stdout.out, b"c\n");
    assert_eq!(r1.briefs().last().unwrap(), "done passed last=true");
}
