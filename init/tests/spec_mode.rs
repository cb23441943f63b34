//! Spec mode (`init run SPEC`): sequencing, records, conditions, negative, optional, retries,
//! nested groups, timeouts, working directories, env, missing programs, per-step cleanup, abort.
//!
//! Each test runs the real init on a spec in its own [`Fixture`] (a directory the steps see as
//! `$D`, and a marker that finds every process the test started) and checks the exit code, the
//! records (timing left out, see [`brief`]) and what the steps printed or left behind.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

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

/// The run is well formed and its records, in order, are `want`.
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

/// The run exited `code` with exactly the records `want`.
fn assert_outcome(r: &SpecRun, code: i32, want: &[&str]) {
    assert_records(r, want);
    r.assert_code(code);
}

/// The exit code in the last `end` record of `step` as [`brief`] prints it, for steps whose code
/// depends on how they were killed.
fn code_text(r: &SpecRun, step: &str) -> String {
    r.end(step).1.map_or("-".into(), |c| c.to_string())
}

/// The reason in the last `end` record of `step` holds `needle`.
fn assert_reason_holds(r: &SpecRun, step: &str, needle: &str) {
    let reason = r.end(step).3.unwrap_or_default();
    assert!(reason.contains(needle), "step {step}: reason {reason:?}");
}

#[test]
fn steps_run_in_order_with_start_and_end_records() {
    let f = Fixture::new("seq");
    let r = f.run_steps(json!([
        {"name": "first", "shell": "printf one"},
        {"command": ["sh", "-c", "echo two; echo err >&2"]},
        {"id": "third", "command": ["printf", "%s\\n", "three"]},
    ]));
    assert_outcome(
        &r,
        0,
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
    assert_eq!(r.stdout.output, b"onetwo\nthree\n");
    assert_eq!(r.stderr.output, b"err\n");
    match &r.stdout.records[0] {
        Record::Start { name, .. } => assert_eq!(name.as_deref(), Some("first")),
        x => panic!("{x:?}"),
    }
}

#[test]
fn durations_are_measured() {
    let f = Fixture::new("ms");
    let r = f.run_steps(json!([{"shell": "sleep 0.3"}]));
    r.assert_code(0);
    let (_, _, _, _, ms) = r.end("1");
    assert!((250..20_000).contains(&ms), "step ms {ms}");
    match r.stdout.records.last() {
        Some(Record::Done { ms: total, .. }) => assert!(*total >= ms, "done ms {total} < {ms}"),
        x => panic!("{x:?}"),
    }
}

#[test]
fn a_failure_skips_later_steps_and_exits_1() {
    let f = Fixture::new("fail");
    let r = f.run_steps(json!([
        {"shell": "exit 3"},
        {"shell": "touch \"$D/ran\""},
    ]));
    assert_outcome(
        &r,
        1,
        &[
            "start 1 #1",
            "end 1 failed code=3 #1",
            "end 2 skipped code=- #0",
            "done failed last=true",
        ],
    );
    assert!(!f.dir.join("ran").exists());
}

#[test]
fn shell_steps_fail_fast() {
    let f = Fixture::new("failfast");
    let r = f.run_steps(json!([{"shell": "false\necho after"}]));
    r.assert_code(1);
    assert_eq!(r.end("1").0, Status::Failed);
    assert_eq!(r.end("1").1, Some(1));
    assert!(r.stdout.output.is_empty(), "{:?}", r.stdout.output);
}

#[test]
fn spec_shell_runs_scripts_as_shell_dash_e_dash_c() {
    let f = Fixture::new("customshell");
    let sh = f.dir.join("myshell");
    write_executable(
        &sh,
        "#!/bin/sh\nprintf '[%s]' \"$@\"\nexec /bin/sh \"$@\"\n",
    );
    let r = f.run_spec(
        &json!({"version": 1, "shell": sh.to_str().unwrap(), "steps": [{"shell": "echo hi"}]}),
    );
    r.assert_code(0);
    assert_eq!(r.out_str(), "[-e][-c][echo hi]hi\n");
}

#[test]
fn a_step_killed_by_a_signal_has_code_128_plus_n() {
    let f = Fixture::new("sigstep");
    let r = f.run_steps(json!([{"shell": "kill -SEGV $$"}]));
    r.assert_code(1);
    assert_eq!(r.end("1").0, Status::Failed);
    assert_eq!(r.end("1").1, Some(128 + libc::SIGSEGV));
}

#[test]
fn conditions() {
    let f = Fixture::new("cond");
    let r = f.run_steps(json!([
        {"shell": "true"},
        {"shell": "touch \"$D/never\"", "condition": "never"},
        {"shell": "touch \"$D/failed-early\"", "condition": "failed"},
        {"shell": "exit 1"},
        {"shell": "touch \"$D/passed\""},
        {"shell": "touch \"$D/failed\"", "condition": "failed"},
        {"shell": "touch \"$D/always\"", "condition": "always"},
        {"shell": "touch \"$D/never2\"", "condition": "never"},
    ]));
    assert_outcome(
        &r,
        1,
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
    for (file, exists) in [
        ("never", false),
        ("failed-early", false),
        ("passed", false),
        ("failed", true),
        ("always", true),
        ("never2", false),
    ] {
        assert_eq!(f.dir.join(file).exists(), exists, "{file}");
    }
}

#[test]
fn negative_steps_invert_the_result() {
    let f = Fixture::new("neg");
    let r = f.run_steps(json!([
        {"shell": "exit 5", "negative": true},
        {"shell": "true", "negative": true},
    ]));
    assert_outcome(
        &r,
        1,
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
    let f = Fixture::new("negtimeout");
    let r = f.run_steps(json!([
        {"shell": "sleep 1000", "negative": true, "timeoutMs": 300, "graceMs": 500}
    ]));
    r.assert_code(1);
    assert_eq!(r.end("1").0, Status::Timeout);
}

#[test]
fn optional_failures_do_not_fail_the_workflow() {
    let f = Fixture::new("optional");
    let r = f.run_steps(json!([
        {"shell": "exit 2", "optional": true},
        {"shell": "true"},
    ]));
    assert_outcome(
        &r,
        0,
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
    let f = Fixture::new("retry");
    let r = f.run_steps(json!([
        {"shell": "if [ -e \"$D/m\" ]; then echo second; exit 0; fi; touch \"$D/m\"; echo first; exit 1",
         "retry": {"count": 3}},
        {"shell": "true"},
    ]));
    assert_outcome(
        &r,
        0,
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
    assert_eq!(r.stdout.output, b"first\nsecond\n");
}

#[test]
fn retry_exhausted_fails() {
    let f = Fixture::new("retryx");
    let r = f.run_steps(json!([{"shell": "exit 4", "retry": {"count": 2, "until": "passed"}}]));
    assert_outcome(
        &r,
        1,
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
    let f = Fixture::new("untilfailed");
    // Passes on attempts 1 and 2, fails on attempt 3: retried while it passes.
    let r = f.run_steps(json!([
        {"shell": "echo x >> \"$D/n\"; [ $(wc -l < \"$D/n\") -lt 3 ]",
         "retry": {"count": 5, "until": "failed"}},
    ]));
    assert_outcome(
        &r,
        1,
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
    assert_eq!(read_lines(&f.dir.join("n")).len(), 3);
}

#[test]
fn nested_groups_derive_their_status() {
    let f = Fixture::new("groups");
    let r = f.run_steps(json!([
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
    ]));
    assert_outcome(
        &r,
        1,
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
    let f = Fixture::new("leaftimeout");
    let t = Instant::now();
    let r = f.run_steps(json!([
        {"shell": "setsid sh -c 'trap \"\" TERM; echo $$ > \"$D/bg\"; exec sleep 1000' &\n trap '' TERM; sleep 1000",
         "timeoutMs": 500, "graceMs": 500},
        {"shell": "p=$(cat \"$D/bg\"); if kill -0 $p 2>/dev/null; then echo \"alive $p\"; exit 1; fi",
         "condition": "always"},
    ]));
    let took = t.elapsed();
    assert_outcome(
        &r,
        1,
        &[
            "start 1 #1",
            &format!("end 1 timeout code={} #1", code_text(&r, "1")),
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done failed last=true",
        ],
    );
    assert_reason_holds(&r, "1", "timed out");
    assert!(
        took >= Duration::from_millis(900),
        "timeout + grace: {took:?}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    f.assert_no_survivors();
}

#[test]
fn group_timeout_bounds_its_children() {
    let f = Fixture::new("grouptimeout");
    let t = Instant::now();
    let r = f.run_steps(json!([
        {"timeoutMs": 800, "graceMs": 300, "steps": [
            {"shell": "true"},
            {"shell": "sleep 1000"},
            {"shell": "touch \"$D/after\""},
        ]},
        {"shell": "true", "condition": "always"},
    ]));
    let took = t.elapsed();
    r.assert_code(1);
    r.assert_well_formed();
    assert_eq!(r.end("1").0, Status::Timeout, "{:?}", r.briefs());
    assert_eq!(r.end("1.1").0, Status::Passed);
    assert!(r.end("1.2").0.is_failure(), "{:?}", r.briefs());
    assert_ne!(r.end("1.3").0, Status::Passed, "{:?}", r.briefs());
    assert!(!f.dir.join("after").exists());
    assert_eq!(r.end("2").0, Status::Passed);
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn working_dir_is_created_and_used() {
    let f = Fixture::new("workdir");
    let abs = f.dir.join("abs/x/y");
    let r = f.run_steps(json!([
        {"shell": "pwd", "workingDir": "rel/a/b"},
        {"command": ["pwd"], "workingDir": abs.to_str().unwrap()},
        {"shell": "pwd"},
    ]));
    r.assert_code(0);
    let d = f.dir.s();
    assert_eq!(
        r.out_str(),
        format!("{d}/rel/a/b\n{}\n{d}\n", abs.display())
    );
    assert!(f.dir.join("rel/a/b").is_dir());
}

#[test]
fn working_dir_that_cannot_be_created_fails_the_step_with_a_reason() {
    let f = Fixture::new("badworkdir");
    std::fs::write(f.dir.join("file"), "").unwrap();
    let bad = f.dir.join("file/sub");
    let r = f.run_steps(json!([
        {"shell": "echo ran", "workingDir": bad.to_str().unwrap()},
        {"shell": "echo next"},
        {"shell": "echo always", "condition": "always"},
    ]));
    r.assert_code(1);
    r.assert_well_formed();
    assert_eq!(r.end("1").0, Status::Failed);
    assert_reason_holds(&r, "1", bad.to_str().unwrap());
    assert_eq!(r.end("2").0, Status::Skipped);
    assert_eq!(r.end("3").0, Status::Passed);
    assert_eq!(r.stdout.output, b"always\n");
}

#[test]
fn env_layers_init_then_spec_then_step() {
    let f = Fixture::new("env");
    let r = f.run_spec_env(
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
    );
    r.assert_code(0);
    assert_eq!(r.out_str(), "spec,step,a b\n c,init,|spec,spec,unset");
}

#[test]
fn missing_program_fails_with_127_and_the_run_continues() {
    let f = Fixture::new("missing");
    let r = f.run_steps(json!([
        {"command": ["stepinit-no-such-program-xyz", "arg"]},
        {"shell": "echo skipped"},
        {"shell": "echo failed-branch", "condition": "failed"},
    ]));
    r.assert_code(1);
    r.assert_well_formed();
    let (status, code, ..) = r.end("1");
    assert_eq!(status, Status::Failed);
    assert_eq!(code, Some(127));
    assert_reason_holds(&r, "1", "stepinit-no-such-program-xyz");
    assert_eq!(r.end("2").0, Status::Skipped);
    assert_eq!(r.end("3").0, Status::Passed);
    assert_eq!(r.stdout.output, b"failed-branch\n");
}

#[test]
fn step_path_is_searched_in_the_steps_own_path() {
    let f = Fixture::new("steppath");
    let bin = f.dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    write_executable(
        &bin.join("stepinit-test-prog"),
        "#!/bin/sh\necho found me\n",
    );
    let noexec = bin.join("stepinit-test-noexec");
    std::fs::write(&noexec, "#!/bin/sh\necho no\n").unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let r = f.run_steps(json!([
        {"command": ["stepinit-test-prog"], "env": [{"name": "PATH", "value": path}]},
        {"command": [noexec.to_str().unwrap()], "condition": "always"},
    ]));
    assert_eq!(
        r.end("1").0,
        Status::Passed,
        "{:?} {}",
        r.briefs(),
        r.raw.stderr_str()
    );
    assert_eq!(r.stdout.output, b"found me\n");
    assert_eq!(r.end("2").0, Status::Failed);
    assert_eq!(r.end("2").1, Some(126));
    r.assert_code(1);
}

#[test]
fn background_processes_are_gone_before_the_next_step() {
    let f = Fixture::new("bg");
    let t = Instant::now();
    let r = f.run_steps(json!([
        {"shell": "sleep 1000 & echo $! > \"$D/p1\"\n\
                   setsid sh -c 'trap \"\" TERM; echo $$ > \"$D/p2\"; exec sleep 1000' &\n\
                   while [ ! -s \"$D/p2\" ]; do sleep 0.01; done",
         "graceMs": 500},
        {"shell": "for p in $(cat \"$D/p1\") $(cat \"$D/p2\"); do \
                     if [ -e /proc/$p ]; then echo \"alive: $(cat /proc/$p/stat)\"; exit 1; fi; done"},
    ]));
    assert_outcome(
        &r,
        0,
        &[
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 passed code=0 #1",
            "done passed last=true",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    f.assert_no_survivors();
}

#[test]
fn sigterm_aborts_the_running_step_and_skips_the_rest() {
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let f = Fixture::new("abort");
        let running = f.start_steps(json!([
            {"shell": "true"},
            {"shell": "touch \"$D/started\"; sleep 1000", "graceMs": 1000},
            {"shell": "touch \"$D/third\"", "condition": "always"},
            {"shell": "true", "condition": "failed"},
        ]));
        await_file(&f.dir.join("started"), "step 2");
        running.signal(sig);
        let r = finish_spec(running, LIMIT);
        assert_eq!(r.code, 130, "SIG{name}; stderr: {}", r.raw.stderr_str());
        assert_records(
            &r,
            &[
                "start 1 #1",
                "end 1 passed code=0 #1",
                "start 2 #1",
                &format!("end 2 aborted code={} #1", code_text(&r, "2")),
                "end 3 skipped code=- #0",
                "end 4 skipped code=- #0",
                "done aborted last=true",
            ],
        );
        assert!(!f.dir.join("third").exists(), "SIG{name}");
        assert!(
            f.marker.pids().is_empty(),
            "SIG{name} survivors: {}",
            f.marker.describe()
        );
    }
}

#[test]
fn stdin_of_steps_is_not_the_spec_or_a_terminal_hang() {
    // A step reading stdin must not hang the run: it gets EOF (the init's stdin is /dev/null here).
    let f = Fixture::new("stdin");
    let r = f.run_steps(json!([{"shell": "cat; echo done"}]));
    r.assert_code(0);
    assert_eq!(r.stdout.output, b"done\n");
}

#[test]
fn many_steps_run_in_sequence() {
    let f = Fixture::new("many");
    let steps: Vec<_> = (0..200)
        .map(|i| json!({"command": ["printf", format!("{i} ")]}))
        .collect();
    let r = f.run_steps(json!(steps));
    r.assert_code(0);
    r.assert_well_formed();
    let want: String = (0..200).map(|i| format!("{i} ")).collect();
    assert_eq!(r.out_str(), want);
    assert_eq!(r.stdout.records.len(), 401);
}

#[test]
fn group_env_is_layered_between_spec_and_leaf() {
    let f = Fixture::new("groupenv");
    let r = f.run_spec(&json!({
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
    }));
    r.assert_code(0);
    assert_eq!(
        r.out_str(),
        "spec,group,group|spec,group,leaf|spec,spec,unset"
    );
}

#[test]
fn group_timeout_reports_the_group_and_skips_the_rest() {
    let f = Fixture::new("grouptimeout2");
    let r = f.run_steps(json!([
        {"id": "g", "timeoutMs": 500, "graceMs": 300, "steps": [
            {"id": "slow", "shell": "sleep 1000"},
            {"id": "later", "shell": "true"},
        ]},
    ]));
    r.assert_code(1);
    r.assert_well_formed();
    assert_eq!(r.end("slow").0, Status::Timeout, "{:?}", r.briefs());
    assert_reason_holds(&r, "slow", "timed out");
    assert_eq!(r.end("later").0, Status::Skipped);
    assert_eq!(r.end("g").0, Status::Timeout);
}

/// As PID 1 of a new PID namespace: a step's orphans are reaped, its setsid'd TERM-ignoring
/// grandchild is gone before the next step, and the run's records are complete.
#[test]
fn spec_mode_as_pid_1() {
    let f = Fixture::new("specpid1");
    let path = write_spec(
        &f.dir,
        &json!({"version": 1, "steps": [
            {"shell": "[ \"$PPID\" = 1 ]\n\
                       for i in 1 2 3; do sh -c 'sleep 0.2 >/dev/null & echo $!' >> \"$D/orphans\"; done\n\
                       setsid sh -c 'trap \"\" TERM; echo $$ > \"$D/gc\"; exec sleep 1000' &\n\
                       while [ ! -s \"$D/gc\" ]; do sleep 0.01; done",
             "graceMs": 500},
            {"shell": "for p in $(cat \"$D/gc\"); do if [ -e /proc/$p ]; then echo \"alive $p\"; exit 1; fi; done\n\
                       for p in $(cat \"$D/orphans\"); do i=0; while [ -e /proc/$p ]; do \
                         i=$((i+1)); [ $i -lt 1500 ] || { echo \"zombie $p\"; exit 1; }; sleep 0.02; done; done\n\
                       echo clean"},
        ]}),
    );
    let mut c = f.unshare_init_cmd(["run".as_ref(), path.as_os_str()]);
    let r = finish_spec(Running::spawn(&mut c), LIMIT);
    assert_eq!(
        r.code,
        0,
        "unshare -fp --mount-proc init run (needs root and PID namespaces; never skipped): \
         stdout {:?} stderr {}",
        r.out_str(),
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
    assert_eq!(r.stdout.output, b"clean\n");
}

/// Nobody reads the init's stdout any more: the workflow still runs to its end (the init must
/// not die of SIGPIPE or stop at EPIPE).
#[test]
fn a_closed_stdout_does_not_stop_the_workflow() {
    let f = Fixture::new("closedout");
    let mut c = f.spec_cmd(
        &json!({"version": 1, "steps": [
            {"shell": "head -c 1000000 /dev/zero"},
            {"shell": "echo more; touch \"$D/last\"", "condition": "always"},
        ]}),
        &[],
    );
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let status = wait_deadline(&mut child, LIMIT);
    let mut err = Vec::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let code = exit_code(status, &err);
    assert!(f.dir.join("last").exists(), "the last step did not run");
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
    let f = Fixture::new_shared("runas");
    let wd = f.dir.join("ws/deep");
    let r = f.run_steps(json!([
        {"shell": "echo \"$(id -u):$(id -g) $(pwd)\"; touch mine",
         "runAsUser": 65534, "runAsGroup": 65534, "workingDir": wd.to_str().unwrap()},
    ]));
    r.assert_code(0);
    assert_eq!(r.out_str(), format!("65534:65534 {}\n", wd.display()));
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
    let f = Fixture::new("termlog");
    let log = f.dir.join("termination-log");
    std::fs::write(&log, "").unwrap();
    let mut c = f.spec_cmd(
        &json!({"version": 1, "steps": [
            {"shell": "true"},
            {"shell": "exit 3"},
            {"shell": "true"},
        ]}),
        &["--termination-log", log.to_str().unwrap()],
    );
    let r = finish_spec(Running::spawn(&mut c), LIMIT);
    r.assert_code(1);
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
    let f = Fixture::new("specfwd");
    let running = f.start_steps(json!([
        // Builtins only while signals may arrive: a forked helper would die of them (and
        // `-e` would end the script).
        {"shell": "trap 'echo HUP >> \"$D/got\"' HUP\n\
                   trap 'echo USR1 >> \"$D/got\"' USR1\n\
                   : > \"$D/got\"; touch \"$D/ready\"\n\
                   count() { c=0; while read -r l; do c=$((c+1)); done < \"$D/got\"; }\n\
                   count; while [ $c -lt 2 ]; do count; done"},
    ]));
    let got = f.dir.join("got");
    await_file(&f.dir.join("ready"), "the step's traps");
    running.signal(libc::SIGUSR1);
    await_lines(&got, 1, "USR1");
    running.signal(libc::SIGHUP);
    await_lines(&got, 2, "HUP");
    let r = finish_spec(running, LIMIT);
    r.assert_code(0);
    assert_eq!(read_lines(&got), vec!["USR1", "HUP"]);
}

/// `--group N` runs container N's leaves only; an intermediate container exits 0 with
/// `done last:false` whatever happened, the last one reports the workflow's result.
#[test]
fn group_flag_runs_one_containers_leaves() {
    let f = Fixture::new("groupflag");
    let spec = json!({"version": 1, "containers": [{}, {}], "steps": [
        {"id": "a", "shell": "echo a; exit 1", "container": 0, "optional": true},
        {"id": "b", "shell": "echo b", "container": 0},
        {"id": "c", "shell": "echo c", "container": 1},
    ]});
    let run_group = |n: &str| {
        finish_spec(
            Running::spawn(&mut f.spec_cmd(&spec, &["--group", n])),
            LIMIT,
        )
    };
    let r0 = run_group("0");
    r0.assert_code(0);
    r0.assert_well_formed();
    assert_eq!(r0.stdout.output, b"a\nb\n");
    assert!(
        !r0.briefs().iter().any(|b| b.contains(" c ")),
        "{:?}",
        r0.briefs()
    );
    assert_eq!(r0.briefs().last().unwrap(), "done passed last=false");
    let r1 = run_group("1");
    r1.assert_code(0);
    assert_eq!(r1.stdout.output, b"c\n");
    assert_eq!(r1.briefs().last().unwrap(), "done passed last=true");
}
