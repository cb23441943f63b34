//! Findings of a user's review of `stepctl`, each pinned by a test of the real binary: how Ctrl-C
//! reaches a step on the local engine, and the one-line errors for inputs a user gets wrong.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stepctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stepctl"))
}

/// Writes `yaml` to a fresh file named after the test.
fn workflow(name: &str, yaml: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stepctl-qa");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

const HEAD: &str =
    "apiVersion: testworkflows.testkube.io/v1\nkind: TestWorkflow\nmetadata: {name: qa}\n";

/// Writes a workflow of HEAD and `spec` (YAML from `spec:` on) to a fresh file named `name`.
fn spec_wf(name: &str, spec: &str) -> PathBuf {
    workflow(name, &format!("{HEAD}{spec}"))
}

/// Runs `stepctl run` on a workflow expected to be refused: exit 2, one line on stderr that
/// names the file and `want`, nothing on stdout.
fn refused(name: &str, spec: &str, want: &str) {
    let p = spec_wf(name, spec);
    let (o, err) = exits(stepctl().arg("run").arg(&p), 2);
    assert!(o.stdout.is_empty(), "{name}: ran anyway");
    assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
    let line = format!("stepctl: {}: {want}", p.display());
    assert!(err.starts_with(&line), "{name}: want {line:?}\n got {err}");
}

#[test]
fn an_empty_command_is_named_as_such_not_blamed_on_the_image() {
    refused(
        "empty-command",
        "spec:\n  steps:\n  - run: {command: []}\n",
        "spec.steps[0].run.command: must not be empty",
    );
}

#[test]
fn empty_names_and_scripts_are_refused() {
    refused(
        "empty-name",
        "spec:\n  steps:\n  - {name: '', shell: 'true'}\n",
        "spec.steps[0].name: must not be empty",
    );
    refused(
        "empty-shell",
        "spec:\n  steps:\n  - shell: ''\n",
        "spec.steps[0].shell: must not be empty",
    );
    refused(
        "empty-run-shell",
        "spec:\n  steps:\n  - run: {shell: ' '}\n",
        "spec.steps[0].run.shell: must not be empty",
    );
}

#[test]
fn security_context_subfields_are_type_checked() {
    refused(
        "caps-string",
        "spec:\n  container:\n    securityContext: {capabilities: ALL}\n  steps: [{shell: 'true'}]\n",
        "spec.container.securityContext.capabilities: must be a mapping, found a string",
    );
    refused(
        "caps-drop",
        "spec:\n  steps:\n  - run: {shell: 'true', securityContext: {capabilities: {drop: ALL}}}\n",
        "spec.steps[0].run.securityContext.capabilities.drop: must be a list, found a string",
    );
    refused(
        "caps-unknown",
        "spec:\n  container:\n    securityContext: {capabilities: {remove: [ALL]}}\n  steps: [{shell: 'true'}]\n",
        "spec.container.securityContext.capabilities.remove: not supported by stepctl (supported: add, drop)",
    );
    refused(
        "seccomp",
        "spec:\n  container:\n    securityContext: {seccompProfile: RuntimeDefault}\n  steps: [{shell: 'true'}]\n",
        "spec.container.securityContext.seccompProfile: must be a mapping, found a string",
    );
    refused(
        "seccomp-type",
        "spec:\n  container:\n    securityContext: {seccompProfile: {type: Default}}\n  steps: [{shell: 'true'}]\n",
        "spec.container.securityContext.seccompProfile.type: \"Default\" must be RuntimeDefault, Localhost or Unconfined",
    );
    refused(
        "proc-mount",
        "spec:\n  container:\n    securityContext: {procMount: [x]}\n  steps: [{shell: 'true'}]\n",
        "spec.container.securityContext.procMount: must be a string, found a list",
    );
}

#[test]
fn an_empty_file_says_so() {
    let p = workflow("empty-file", "");
    let (_, err) = exits(stepctl().arg("run").arg(&p), 2);
    assert_eq!(
        err.trim_end(),
        format!(
            "stepctl: {}: the file is empty (expected a TestWorkflow)",
            p.display()
        )
    );
}

/// Ctrl-C on the local engine: the init runs the stop sequence with SIGTERM, as a pod's
/// container gets on `podman stop` or a deleted pod, so a step's TERM handler runs and its
/// background processes (which a non-interactive shell starts with SIGINT ignored) stop at
/// once instead of waiting out the 10 s grace for SIGKILL.
#[test]
fn ctrl_c_on_the_local_engine_stops_the_step_with_sigterm_at_once() {
    let p = spec_wf("trap-term", "spec:\n  steps:\n  - name: waits\n    shell: |\n      trap 'echo got TERM; exit 143' TERM\n      sleep 30 &\n      echo sleeping\n      wait\n");
    let mut cmd = stepctl();
    cmd.args(["run", "--output", "json"])
        .arg(&p)
        .env("STEPCTL_NO_PROGRESS", "1");
    let run = interrupt_at_line(
        cmd,
        "sleeping",
        Duration::from_secs(20),
        libc::SIGINT,
        SignalTo::ProcessOnly,
    );
    let (o, seen, rest, took) = (&run.output, &run.before, &run.after, run.took);
    assert_eq!(o.status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("got TERM\n"),
        "the step's TERM trap ran: {rest}"
    );
    assert!(took < Duration::from_secs(5), "abort took {took:?}: {rest}");
    let doc = stdout_json(o);
    assert_eq!(doc["status"], "aborted", "{doc}");
    assert_eq!(doc["steps"][0]["status"], "aborted", "{doc}");
    assert_eq!(doc["steps"][0]["exitCode"], 143, "{doc}");
}

#[test]
fn pod_and_job_overrides_of_the_wrong_shape_are_refused_not_panicked_on() {
    refused(
        "pod-sc-number",
        "spec:\n  pod: {securityContext: 3}\n  steps: [{shell: 'true'}]\n",
        "spec.pod.securityContext: must be a mapping, found a number",
    );
    refused(
        "pod-volumes-number",
        "spec:\n  pod: {volumes: 3}\n  steps: [{shell: 'true'}]\n",
        "spec.pod.volumes: must be a list, found a number",
    );
    refused(
        "job-policy-list",
        "spec:\n  job: {podFailurePolicy: [x]}\n  steps: [{shell: 'true'}]\n",
        "spec.job.podFailurePolicy: must be a mapping, found a list",
    );
    // `build --restricted` used to index into the number and panic.
    let p = spec_wf(
        "pod-sc-restricted",
        "spec:\n  pod: {securityContext: 3}\n  steps: [{shell: 'true'}]\n",
    );
    let (_, err) = exits(
        stepctl()
            .args(["build", "--images", "none", "--restricted"])
            .arg(&p),
        2,
    );
    assert!(
        err.contains("spec.pod.securityContext: must be a mapping"),
        "{err}"
    );
}

/// `stepctl build big.yaml | head -1`: the reader goes away; stepctl says so in one line (exit 1)
/// instead of panicking with a backtrace.
#[test]
fn a_closed_stdout_is_one_line_not_a_panic() {
    let mut yaml = format!("{HEAD}spec:\n  steps:\n");
    for i in 0..1000 {
        yaml.push_str(&format!("  - shell: echo {i}\n"));
    }
    let p = workflow("thousand", &yaml);
    for cmd in ["build", "plan"] {
        let mut c = stepctl();
        c.arg(cmd);
        if cmd == "build" {
            c.args(["--images", "none"]);
        }
        let mut child = c
            .arg(&p)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(o.status.code(), Some(1), "{cmd}: {err}");
        assert_eq!(
            last, "stepctl: cannot print: Broken pipe (os error 32)",
            "{cmd}: {err}"
        );
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
}

#[test]
fn retry_until_lists_what_it_supports() {
    refused(
        "until-expression",
        "spec:\n  steps:\n  - shell: 'true'\n    retry: {count: 3, until: 'self.passed ** 2'}\n",
        "spec.steps[0].retry.until: self.passed ** 2: `**` is not computed when the step runs",
    );
}

/// `--junit` into a directory that does not exist: exit 2 before anything runs, not exit 1
/// after a passed run.
#[test]
fn an_unwritable_junit_path_is_refused_before_the_run() {
    let marker = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stepctl-qa-junit-marker");
    let _ = std::fs::remove_file(&marker);
    let p = workflow(
        "junit-dir",
        &format!(
            "{HEAD}spec:\n  steps:\n  - shell: touch {}\n",
            marker.display()
        ),
    );
    let (_, err) = exits(
        stepctl()
            .args(["run", "--junit", "/nonexistent-dir/results.xml"])
            .arg(&p),
        2,
    );
    assert_eq!(
        err.trim_end(),
        "stepctl: --junit /nonexistent-dir/results.xml: /nonexistent-dir is not a directory"
    );
    assert!(!marker.exists(), "the workflow ran anyway");
}

/// `--restricted` with the default image (no USER: root): the kubelet would refuse
/// `runAsNonRoot` for it, so its containers run as the restricted uid; on podman (which does
/// not check runAsNonRoot) the steps see that uid and share the workspace without 1777.
#[test]
fn restricted_runs_images_without_a_user_as_the_restricted_uid_on_podman() {
    let p = spec_wf("restricted-default-image", "spec:\n  container: {workingDir: /data}\n  steps:\n  - shell: id -u; touch made-by-first\n  - shell: id -u; test -w made-by-first\n");
    let (o, err) = exits(
        Engine::Podman
            .run_cmd(&["--restricted", "--output", "json"])
            .arg(&p),
        0,
    );
    assert_eq!(err.matches("\n65532\n").count(), 2, "{err}");
    assert!(!err.contains("/data: cannot chown"), "{err}");
    let doc = stdout_json(&o);
    assert_eq!(doc["status"], "passed", "{doc}");
}

/// A note about corrupt framing names the stream as a user reads it (not a Rust enum).
#[test]
fn decode_notes_name_the_stream_in_plain_words() {
    let o = output_with_input(
        stepctl().args(["decode", "--output", "json"]),
        b"out\n\x1e\x01\n",
    );
    let doc = stdout_json(&o);
    assert_eq!(o.status.code(), Some(1), "{doc}");
    let notes = doc["notes"].as_array().unwrap();
    assert!(
        notes.contains(&"log framing of stdout: marker followed by an unknown byte".into()),
        "{doc}"
    );
}

/// A workflow written for an image (`node:20`, `npm test`) fails locally with the host's
/// programs; stepctl says once, up front, that images are not used here.
#[test]
fn the_local_engine_says_which_images_it_ignores() {
    let p = spec_wf("images-ignored", "spec:\n  container: {image: 'docker.io/library/node:20'}\n  steps:\n  - shell: 'true'\n  - run: {image: 'alpine:3.20', shell: 'true'}\n  - run: {image: 'alpine:3.20', shell: 'true'}\n");
    let (_, err) = exits(stepctl().arg("run").arg(&p), 0);
    assert_eq!(
        err.trim_end(),
        "stepctl: warning: the local engine runs steps with this host's programs; images ignored: docker.io/library/node:20, alpine:3.20 (use --engine podman to run them)"
    );
}

/// Names are single lines in the live output and the table: a `name: |` block (trailing
/// newline) or a control byte is refused; a name derived from a script never prints one raw.
#[test]
fn names_stay_on_one_line() {
    refused(
        "name-newline",
        "spec:\n  steps:\n  - name: |\n      build\n    shell: 'true'\n",
        "spec.steps[0].name: must be one line without control characters",
    );
    let p = spec_wf(
        "derived-control",
        "spec:\n  steps:\n  - shell: \"printf 'a\\x1bb'\"\n",
    );
    let (o, _) = exits(stepctl().args(["run", "--output", "json"]).arg(&p), 0);
    let doc = stdout_json(&o);
    let name = doc["steps"][0]["name"].as_str().unwrap();
    // The script holds an ESC byte (YAML `\x1b` in double quotes): shown as U+FFFD.
    assert_eq!(name, "printf 'a\u{fffd}b'", "{name:?}");
}

/// An image podman cannot pull: the run fails (exit 1) and the first note is podman's reason,
/// on one line (not its pull retries).
#[test]
fn a_missing_image_on_podman_is_one_note_with_podmans_reason() {
    let p = spec_wf("missing-image", "spec:\n  steps:\n  - shell: echo first\n  - run: {image: 'localhost/stepinit/qa-no-such-image:1', shell: 'true'}\n");
    let (o, _) = exits(Engine::Podman.run_cmd(&["--output", "json"]).arg(&p), 1);
    let doc = stdout_json(&o);
    assert_eq!(doc["status"], "failed", "{doc}");
    let first = doc["notes"][0].as_str().unwrap_or_default();
    assert!(first.starts_with("podman kube play failed: "), "{doc}");
    assert!(first.contains("qa-no-such-image:1"), "{doc}");
    assert!(!first.contains('\n'), "{first}");
}

/// `kubectl get testworkflow x -o yaml | stepctl run -`: the workflow from standard input.
#[test]
fn a_workflow_from_standard_input() {
    let run = |yaml: &str| {
        output_with_input(
            stepctl().args(["run", "--output", "json", "-"]),
            yaml.as_bytes(),
        )
    };
    let o = run(&format!("{HEAD}spec:\n  steps:\n  - shell: 'true'\n"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc = stdout_json(&o);
    assert_eq!(doc["name"], "qa");
    let o = run(&format!("{HEAD}spec:\n  steps: 3\n"));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        "stepctl: <stdin>: spec.steps: must be a list, found a number"
    );
}

/// A step that takes its image's ENTRYPOINT: `decode --workflow` needs only the step tree and
/// names, not the image, and `plan` can look the image up (it has `--images` like `build`).
#[test]
fn decode_and_plan_do_not_need_image_metadata_they_cannot_use() {
    let p = spec_wf("entrypoint-step", "spec:\n  steps:\n  - name: first\n    shell: 'true'\n  - run: {image: 'localhost/stepinit/qa-unknown:1'}\n");
    let mut decode = stepctl();
    decode
        .args(["decode", "--output", "json", "--workflow"])
        .arg(&p);
    let logs = "\x1e{\"v\":1,\"t\":\"start\",\"step\":\"1\",\"name\":\"first\",\"attempt\":1}\n\x1e{\"v\":1,\"t\":\"end\",\"step\":\"1\",\"status\":\"failed\",\"code\":1,\"ms\":2,\"attempt\":1}\n\x1e{\"v\":1,\"t\":\"end\",\"step\":\"2\",\"status\":\"skipped\",\"ms\":0,\"attempt\":0}\n\x1e{\"v\":1,\"t\":\"done\",\"status\":\"failed\",\"ms\":3,\"last\":true}\n";
    let o = output_with_input(&mut decode, logs.as_bytes());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let doc = stdout_json(&o);
    assert_eq!(doc["name"], "qa", "{doc}");
    assert_eq!(doc["steps"][0]["status"], "failed", "{doc}");
    assert_eq!(doc["steps"][1]["status"], "skipped", "{doc}");
    assert_eq!(
        doc["steps"][1]["name"], "localhost/stepinit/qa-unknown:1",
        "{doc}"
    );

    let (_, err) = exits(stepctl().args(["plan", "--images", "none"]).arg(&p), 2);
    assert!(
        err.contains("(image lookups are disabled (--images none))"),
        "{err}"
    );
}

/// Ctrl-C on podman before the long step's container exists (kube play still starting the
/// pod): the containers that start afterwards are stopped at once, the long step is aborted
/// (its TERM trap runs) and later steps are skipped. `podman pod stop` used to wait for kube
/// play's lock, and the stops queued behind it: the whole workflow ran and "passed".
#[test]
fn an_early_ctrl_c_on_podman_stops_the_containers_that_start_later() {
    let p = spec_wf("early-interrupt", "spec:\n  steps:\n  - name: first\n    shell: sleep 1\n  - name: long\n    shell: |\n      trap 'echo got TERM; exit 143' TERM\n      sleep 30 &\n      wait\n  - name: later\n    shell: echo must not run\n");
    let mut child = Engine::Podman
        .run_cmd(&["--output", "json"])
        .arg(&p)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a plain kill of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let err_pipe = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || std::io::read_to_string(err_pipe).unwrap());
    let o = child.wait_with_output().unwrap();
    let err = err.join().unwrap();
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {err}");
    assert!(!err.contains("must not run"), "{err}");
    let doc = stdout_json(&o);
    assert_eq!(doc["status"], "aborted", "{doc}");
    let later = &doc["steps"][2];
    assert_eq!(later["status"], "skipped", "{doc}");
    assert_ne!(doc["steps"][1]["status"], "passed", "{doc}");
}

/// `status` of a kept pod names the steps that never started: the spec is read back from the
/// pod's `stepinit` volume, where setup copied it (end records of skipped steps carry no name).
#[test]
fn status_names_skipped_steps_from_the_pods_own_spec() {
    let conf = containers_conf();
    let p = spec_wf("status-names", "spec:\n  steps:\n  - name: breaks\n    shell: exit 1\n  - name: never reached\n    shell: 'true'\n");
    let (_, err) = exits(
        Engine::Podman
            .run_cmd(&["--keep", "--output", "json"])
            .arg(&p),
        1,
    );
    let pod = err
        .split("kept pod ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kept pod: {err}"))
        .to_string();
    let st = Engine::Podman
        .stepctl()
        .args(["status", "--output", "json", &pod])
        .output()
        .unwrap();
    // Remove what --keep kept before asserting.
    let podman = |args: &[&str]| {
        Command::new("podman")
            .args(args)
            .env("CONTAINERS_CONF", &conf)
            .output()
            .unwrap()
    };
    podman(&["pod", "rm", "-f", &pod]);
    let vols: Vec<String> = ["stepinit", "stepinit-spec", "workspace", "spec"]
        .iter()
        .map(|v| format!("{pod}-{v}"))
        .collect();
    let mut rm = vec!["volume", "rm", "-f"];
    rm.extend(vols.iter().map(String::as_str));
    podman(&rm);
    // And the directory holding the kept manifest.
    if let Some(m) = err
        .split("(manifest: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
    {
        let _ = std::fs::remove_dir_all(std::path::Path::new(m).parent().unwrap());
    }
    let doc = stdout_json(&st);
    assert_eq!(st.status.code(), Some(1), "{doc}");
    assert_eq!(doc["steps"][0]["status"], "failed", "{doc}");
    assert_eq!(doc["steps"][1]["status"], "skipped", "{doc}");
    assert_eq!(doc["steps"][1]["name"], "never reached", "{doc}");
}
