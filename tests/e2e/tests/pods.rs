//! Steps across the containers of one pod (issue 3), in real containers: `podman kube play` of a
//! hand-written Pod with a setup initContainer (the init image: `init setup`), then one container per
//! group of the spec (`<shared>/init run SPEC --group N --state DIR`), all but the last as
//! initContainers, sharing two emptyDirs (the init's own files, the workspace). The spec reaches
//! every container as a ConfigMap volume.
//!
//! What podman 4.3 does (checked by these tests, see tests/e2e/README.md): initContainers run one
//! after another; one that exits non-zero (or is SIGKILLed) stops the pod's start: kube play fails
//! and later containers stay `created`. `podman pod stop` lets every remaining initContainer run to
//! its end unsignalled (the pod is locked while kube play starts them), then stops the last
//! container as it starts; a stop *during* an initContainer is done with `podman stop` on that
//! container, as the kubelet stops a running initContainer on deletion. emptyDirs are named
//! volumes shared by name across pods: every test pod names its own.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use stepinit_e2e::*;
use stepinit_protocol::spec::Condition;
use stepinit_protocol::summary::Summary;

const LIMIT: Duration = Duration::from_secs(120);

fn step(mut s: Step, f: impl FnOnce(&mut Step)) -> Step {
    f(&mut s);
    s
}

fn group(id: &str, steps: Vec<Step>) -> Step {
    Step {
        id: Some(id.into()),
        steps,
        ..Default::default()
    }
}

/// `s` with its condition set.
fn when(condition: Condition, s: Step) -> Step {
    step(s, |s| s.condition = condition)
}

/// `s` with its grace period (ms between TERM and KILL) set.
fn with_grace(ms: u64, s: Step) -> Step {
    step(s, |s| s.grace_ms = Some(ms))
}

/// A pod of the [`three_groups`] layout running `steps`: setup, `root` and `user`
/// initContainers, `scratch` the last container.
fn three_group_pod(prefix: &str, steps: Vec<Step>) -> Pod {
    let spec = new_spec(three_groups(), steps);
    let (inits, last) = three_ctrs();
    Pod::new(prefix, &spec, &inits, &last)
}

/// A pod of two groups running `steps`: setup and `root` (busybox, uid 0) initContainers, then
/// `last` (the shell-less scratch image, uid 1001) as the last container.
fn root_then_scratch_pod(prefix: &str, last: &str, steps: Vec<Step>) -> Pod {
    let spec = new_spec(
        vec![
            spec_ctr("root", Some((0, 0)), None),
            spec_ctr(last, Some((1001, 1001)), None),
        ],
        steps,
    );
    Pod::new(
        prefix,
        &spec,
        &[Ctr::setup(), Ctr::group("root", BUSYBOX_IMAGE, 0)],
        &Ctr::group(last, SCRATCH_IMAGE, 1).user(1001, 1001),
    )
}

/// A pod of one container, `only`, of the init image running `steps` from the ConfigMap: no
/// setup, no state.
fn init_image_pod(prefix: &str, steps: Vec<Step>) -> Pod {
    Pod::new(
        prefix,
        &new_spec(vec![], steps),
        &[],
        &Ctr::new("only", INIT_IMAGE, &["/init", "run", "/spec/spec.json"]),
    )
}

fn summary(pod: &Pod, short: &str) -> Summary {
    let text = pod.termination_log(short);
    assert!(
        text.len() < 4096,
        "termination log of {short} is {} bytes",
        text.len()
    );
    Summary::decode(text.as_bytes()).unwrap_or_else(|e| {
        panic!(
            "termination log of {short} does not decode ({e}): {text:?}\n{}",
            pod.debug()
        )
    })
}

/// Ids of the steps that have records in these logs, in order of their first record.
fn step_ids(logs: &Logs) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in &logs.records {
        let id = match r {
            Record::Start { step, .. } | Record::End { step, .. } => step,
            Record::Done { .. } => continue,
        };
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

/// A container's start and end, in seconds since the epoch (podman inspect's timestamps).
fn started_finished(name: &str) -> (f64, f64) {
    let out = podman_ok([
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.StartedAt.Unix}} {{.State.StartedAt.Nanosecond}} {{.State.FinishedAt.Unix}} {{.State.FinishedAt.Nanosecond}}",
        name,
    ]);
    let v: Vec<f64> = out
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("bad inspect output {out:?}"))
        })
        .collect();
    assert_eq!(v.len(), 4, "{out:?}");
    (v[0] + v[1] / 1e9, v[2] + v[3] / 1e9)
}

/// The three-group layout most tests use: root busybox, busybox as 1001, shell-less scratch.
fn three_groups() -> Vec<spec::Container> {
    vec![
        spec_ctr("root", Some((0, 0)), None),
        spec_ctr("user", Some((1001, 1001)), Some("/workspace")),
        spec_ctr("scratch", Some((1001, 1001)), None),
    ]
}

fn three_ctrs() -> (Vec<Ctr>, Ctr) {
    (
        vec![
            Ctr::setup(),
            Ctr::group("root", BUSYBOX_IMAGE, 0),
            Ctr::group("user", USER_IMAGE, 1)
                .user(1001, 1001)
                .working_dir("/workspace"),
        ],
        Ctr::group("scratch", SCRATCH_IMAGE, 2).user(1001, 1001),
    )
}

#[test]
fn handoff_runs_each_group_in_its_container_with_users_workdirs_and_a_shell_less_image() {
    require_images();
    let pod = three_group_pod(
        "handoff",
        vec![
        // Container 0, root: creates data in the workspace; working directory switching.
        step(
            shell_step(
                "root-writes",
                0,
                "mkdir -p /workspace/data; echo from-root > /workspace/data/root.txt; echo \"pwd=$PWD\"",
            ),
            |s| s.working_dir = Some("/workspace/root-dir/sub".into()),
        ),
        step(shell_step("root-pwd", 0, "echo \"pwd=$PWD\""), |s| {
            s.working_dir = Some("/tmp/elsewhere".into())
        }),
        // Container 1, uid 1001: writes where root created; HOME is writable; its steps run
        // in the container's working directory unless they say otherwise.
        shell_step(
            "user-writes",
            1,
            "echo from-user > /workspace/data/user.txt; cat /workspace/data/root.txt; \
             echo \"id=$(id -u):$(id -g) pwd=$PWD\"; echo home > \"$HOME/.probe\"; \
             test \"$HOME\" != /",
        ),
        step(
            shell_step("user-workdir", 1, "echo \"pwd=$PWD\"; touch mine"),
            |s| s.working_dir = Some("/workspace/user-dir".into()),
        ),
        // A group spanning containers 1 and 2.
        group(
            "span",
            vec![
                cmd_step("span-user", 1, &["sh", "-c", "echo span > /workspace/data/span.txt"]),
                // An optional group, itself spanning containers 1 and 2, that fails in 1:
                // its `passed` child in 2 skips, its `failed` child runs, and the failure
                // stays inside (optional).
                step(
                    group(
                        "inner",
                        vec![
                            cmd_step("inner-fails", 1, &["sh", "-c", "exit 5"]),
                            cmd_step("inner-skips", 2, &["/probe", "echo", "must-not-run"]),
                            when(Condition::Failed, cmd_step("inner-on-failure", 2, &["/probe", "echo", "inner-failed"])),
                        ],
                    ),
                    |s| s.optional = true,
                ),
                cmd_step(
                    "span-scratch",
                    2,
                    &["/probe", "expect", "/workspace/data/span.txt", "span"],
                ),
            ],
        ),
        // Container 2, shell-less image: a shell step through the sh that setup copied, and
        // our probe reading what the others wrote.
        shell_step(
            "scratch-shell",
            2,
            "read -r a < /workspace/data/root.txt; read -r b < /workspace/data/user.txt; \
             echo \"shell=$0 a=$a b=$b\"; echo from-scratch-shell > /workspace/data/scratch.txt; \
             echo h > \"$HOME/.scratch-home\"; test \"$HOME\" != /",
        ),
        step(
            cmd_step(
                "scratch-probe",
                2,
                &["/probe", "expect", "/workspace/data/scratch.txt", "from-scratch-shell", "::", "id"],
            ),
            |s| s.working_dir = Some("/workspace/scratch-dir".into()),
        ),
        ],
    );
    // The hand-written pods are real Kubernetes, not podman-only YAML.
    assert_valid_kubernetes(&pod.yaml_path);
    let code = pod.run_to_end(LIMIT);
    let dbg = || pod.debug();
    assert_eq!(
        code,
        0,
        "the workflow passed: the last container exits 0\n{}",
        dbg()
    );
    for c in ["setup", "root", "user"] {
        assert_eq!(inspect(&pod.ctr(c)).exit_code, 0, "{c}\n{}", dbg());
    }

    let root = container_logs(&pod.ctr("root"));
    let user = container_logs(&pod.ctr("user"));
    let scratch = container_logs(&pod.ctr("scratch"));
    for (n, l) in [("root", &root), ("user", &user), ("scratch", &scratch)] {
        l.assert_clean(n);
    }
    // Each container reports only its own leaves; the spanning group opens in container 1 and
    // closes in container 2.
    assert_eq!(
        step_ids(&root),
        ["root-writes", "root-pwd"],
        "{:#?}",
        root.records
    );
    assert_eq!(
        step_ids(&user),
        [
            "user-writes",
            "user-workdir",
            "span",
            "span-user",
            "inner",
            "inner-fails"
        ],
        "{:#?}",
        user.records
    );
    assert_eq!(
        user.ends("span"),
        0,
        "the group ends in the container of its last child: {:#?}",
        user.records
    );
    assert_eq!(
        step_ids(&scratch),
        [
            "inner-skips",
            "inner-on-failure",
            "inner",
            "span-scratch",
            "span",
            "scratch-shell",
            "scratch-probe"
        ],
        "{:#?}",
        scratch.records
    );
    for (l, ids) in [
        (&root, &["root-writes", "root-pwd"][..]),
        (&user, &["user-writes", "user-workdir", "span-user"][..]),
        (
            &scratch,
            &["span-scratch", "span", "scratch-shell", "scratch-probe"][..],
        ),
    ] {
        for id in ids {
            assert_eq!(
                l.end(id),
                (Status::Passed, l.end(id).1, None),
                "step {id}\n{}",
                dbg()
            );
        }
    }
    assert_eq!(user.end("inner-fails").0, Status::Failed);
    assert_eq!(user.end("inner-fails").1, Some(5));
    assert_eq!(scratch.status("inner-skips"), Status::Skipped);
    assert_eq!(scratch.status("inner-on-failure"), Status::Passed);
    assert_eq!(scratch.status("inner"), Status::Failed);
    assert_eq!(root.done(), (Status::Passed, false));
    assert_eq!(user.done(), (Status::Passed, false));
    assert_eq!(scratch.done(), (Status::Passed, true));

    // Working directories: created on demand, switched per step, the container's own otherwise.
    assert_eq!(
        root.stdout_str(),
        "pwd=/workspace/root-dir/sub\npwd=/tmp/elsewhere\n"
    );
    let out = user.stdout_str();
    assert!(
        out.starts_with("from-root\nid=1001:1001 pwd=/workspace\npwd=/workspace/user-dir\n"),
        "{out}"
    );
    let out = scratch.stdout_str();
    assert!(out.contains("a=from-root b=from-user"), "{out}");
    assert!(out.starts_with("inner-failed\n"), "{out}");
    assert!(!out.contains("must-not-run"), "{out}");
    assert!(
        out.contains("uid=1001 gid=1001 cwd=/workspace/scratch-dir home=/"),
        "{out}"
    );
    assert!(
        !out.contains("home=/\n"),
        "a writable HOME replaces /: {out}"
    );
    assert!(
        out.contains(&format!("shell={SHARED}/sh")) || out.contains("shell=sh"),
        "the shell step ran the sh setup copied: {out}"
    );

    // Handoff: the time from one container's end to the next one's start is podman's own
    // container start (about 0.3 s here), the init adds no polling delay.
    let times: Vec<(f64, f64)> = ["setup", "root", "user", "scratch"]
        .iter()
        .map(|c| started_finished(&pod.ctr(c)))
        .collect();
    for w in times.windows(2) {
        let gap = w[1].0 - w[0].1;
        eprintln!("handoff gap: {gap:.3}s");
        assert!(
            (0.0..3.0).contains(&gap),
            "handoff gap {gap:.3}s\n{}",
            dbg()
        );
    }

    // The uids are all known: nothing on the shared volumes is world-writable.
    for vol in ["shared", "state", "home", "workspace"] {
        for (path, mode, uid, gid) in walk(&pod.volume_dir(vol)) {
            assert_eq!(
                mode & 0o002,
                0,
                "{} is world-writable ({mode:o}, {uid}:{gid})",
                path.display()
            );
        }
    }

    // Termination summaries: one per container, the last one with the workflow's result.
    let s = summary(&pod, "root");
    assert_eq!((s.container, s.last, s.status), (0, false, Status::Passed));
    assert_eq!(s.counts[Status::Passed as usize], 2);
    let s = summary(&pod, "scratch");
    assert_eq!((s.container, s.last, s.status), (2, true, Status::Passed));
    // The optional group failed (and says so) without failing the workflow.
    assert_eq!(s.counts[Status::Failed as usize], 1, "{s:?}");
    assert!(s
        .steps
        .iter()
        .any(|r| r.id == "inner" && r.status == Status::Failed));
}

#[test]
fn a_failure_in_one_container_drives_conditions_in_the_next_ones() {
    require_images();
    let pod = three_group_pod(
        "conditions",
        vec![
            cmd_step("ok", 0, &["true"]),
            cmd_step("fails", 0, &["sh", "-c", "echo failing; exit 3"]),
            cmd_step("after-fail", 0, &["true"]),
            cmd_step("passed-skips", 1, &["sh", "-c", "echo must-not-run"]),
            when(
                Condition::Always,
                cmd_step("always-runs", 1, &["sh", "-c", "echo always-ran"]),
            ),
            when(
                Condition::Failed,
                cmd_step("failed-runs", 1, &["sh", "-c", "echo failed-ran"]),
            ),
            group(
                "skipped-group",
                vec![
                    cmd_step("sg-user", 1, &["sh", "-c", "echo must-not-run"]),
                    when(
                        Condition::Always,
                        cmd_step("sg-scratch", 2, &["/probe", "echo", "must-not-run"]),
                    ),
                ],
            ),
            when(
                Condition::Always,
                cmd_step("scratch-always", 2, &["/probe", "echo", "cleanup"]),
            ),
            when(
                Condition::Never,
                cmd_step("scratch-never", 2, &["/probe", "echo", "must-not-run"]),
            ),
        ],
    );
    let code = pod.run_to_end(LIMIT);
    let dbg = || pod.debug();
    assert_eq!(
        code,
        1,
        "the workflow failed: the last container exits 1\n{}",
        dbg()
    );
    assert_eq!(
        inspect(&pod.ctr("root")).exit_code,
        0,
        "an intermediate container exits 0 although its step failed\n{}",
        dbg()
    );
    let root = container_logs(&pod.ctr("root"));
    let user = container_logs(&pod.ctr("user"));
    let scratch = container_logs(&pod.ctr("scratch"));
    assert_eq!(
        root.end("fails"),
        (Status::Failed, Some(3), root.end("fails").2)
    );
    assert_eq!(root.status("after-fail"), Status::Skipped);
    assert_eq!(root.done(), (Status::Failed, false));

    assert_eq!(user.status("passed-skips"), Status::Skipped);
    assert!(!user.started("passed-skips"));
    assert_eq!(user.status("always-runs"), Status::Passed);
    assert_eq!(user.status("failed-runs"), Status::Passed);
    assert_eq!(user.status("sg-user"), Status::Skipped);
    assert_eq!(user.stdout_str(), "always-ran\nfailed-ran\n", "{}", dbg());

    // A skipped group skips all its children, in whatever container they are.
    assert_eq!(scratch.status("sg-scratch"), Status::Skipped);
    assert_eq!(scratch.status("skipped-group"), Status::Skipped);
    assert_eq!(scratch.status("scratch-always"), Status::Passed);
    assert_eq!(scratch.status("scratch-never"), Status::Skipped);
    assert_eq!(scratch.stdout_str(), "cleanup\n");
    assert_eq!(scratch.done(), (Status::Failed, true));

    let s = summary(&pod, "scratch");
    assert_eq!((s.container, s.last, s.status), (2, true, Status::Failed));
    let s = summary(&pod, "root");
    assert_eq!(s.status, Status::Failed);
    assert!(
        s.steps
            .iter()
            .any(|r| r.id == "fails" && r.status == Status::Failed && r.code == Some(3)),
        "{s:?}"
    );
}

/// Waits until the logs of the pod's container `short` hold a start record for `step_id`;
/// fails fast (with the pod's logs) when a container of the pod has already failed.
fn wait_for_start(pod: &Pod, short: &str, step_id: &str) {
    let container = pod.ctr(short);
    wait_until(
        &format!("step {step_id} to start in {container}"),
        Duration::from_secs(60),
        || {
            let o = podman(["logs", &container]);
            if o.status.success() && Logs::decode(&o.stdout, &o.stderr).started(step_id) {
                return true;
            }
            for c in &pod.containers {
                let Some(st) = try_inspect(c) else { continue };
                if st.status == "exited" && (st.exit_code != 0 || *c == container) {
                    panic!(
                        "{c} exited ({}) before step {step_id} started\n{}",
                        st.exit_code,
                        pod.debug()
                    );
                }
            }
            false
        },
    );
}

/// Waits until step `step_id` has started in the pod's container `short` and printed `text`.
fn wait_for_output(pod: &Pod, short: &str, step_id: &str, text: &str) {
    wait_for_start(pod, short, step_id);
    let container = pod.ctr(short);
    wait_until(
        &format!("{text:?} from step {step_id}"),
        Duration::from_secs(30),
        || container_logs(&container).stdout_str().contains(text),
    );
}

/// Plays the pod and, once step `step_id` of container `short` has printed `text`, SIGKILLs
/// that container's init (PID 1: the OOM killer or node pressure); returns kube play's output.
fn play_and_sigkill_init_mid_step(
    pod: &Pod,
    short: &str,
    step_id: &str,
    text: &str,
) -> std::process::Output {
    let play = pod.play_spawn();
    wait_for_output(pod, short, step_id, text);
    podman_ok(["kill", "-s", "KILL", &pod.ctr(short)]);
    play.wait(LIMIT)
}

#[test]
fn a_sigkilled_init_mid_step_is_reported_aborted_by_the_next_container() {
    require_images();
    let pod = three_group_pod(
        "sigkill",
        vec![
            cmd_step("before", 0, &["true"]),
            cmd_step("killed", 0, &["sh", "-c", "echo started; sleep 300"]),
            cmd_step("after-in-killed", 0, &["true"]),
            cmd_step("passed-skips", 1, &["sh", "-c", "echo must-not-run"]),
            when(
                Condition::Always,
                cmd_step("always-runs", 1, &["sh", "-c", "echo always-ran"]),
            ),
            when(
                Condition::Always,
                cmd_step("scratch-always", 2, &["/probe", "echo", "cleanup"]),
            ),
        ],
    );
    let root = pod.ctr("root");
    let o = play_and_sigkill_init_mid_step(&pod, "root", "killed", "started");
    // podman (as the kubelet with restartPolicy Never) fails the pod start on a failed
    // initContainer and does not start the next containers.
    assert!(
        !o.status.success(),
        "kube play should fail: {}",
        pod.debug()
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exited with code 137"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(inspect(&root).exit_code, 137);
    assert_eq!(inspect(&pod.ctr("user")).status, "created");
    let killed = container_logs(&root);
    assert!(killed.started("killed"));
    assert_eq!(
        killed.ends("killed"),
        0,
        "a SIGKILLed init writes nothing more: {:#?}",
        killed.records
    );

    // The closest real equivalent of the next container starting after the crash: start it (as
    // a controller recovering the pod would), then the last one.
    let t = Instant::now();
    let o = podman(["start", "--attach", &pod.ctr("user")]);
    assert_eq!(o.status.code(), Some(0), "{}", pod.debug());
    let o = podman(["start", "--attach", &pod.ctr("scratch")]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the workflow failed\n{}",
        pod.debug()
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "nothing hangs: {:?}",
        t.elapsed()
    );

    let user = container_logs(&pod.ctr("user"));
    user.assert_clean("user");
    let (status, _code, reason) = user.end("killed");
    assert_eq!(status, Status::Aborted, "{:#?}", user.records);
    assert!(
        reason.as_deref().is_some_and(|r| !r.is_empty()),
        "the aborted record says why: {:#?}",
        user.records
    );
    assert_eq!(user.status("after-in-killed"), Status::Skipped);
    assert_eq!(user.status("passed-skips"), Status::Skipped);
    assert_eq!(user.status("always-runs"), Status::Passed);
    assert_eq!(user.stdout_str(), "always-ran\n");
    let scratch = container_logs(&pod.ctr("scratch"));
    assert_eq!(scratch.status("scratch-always"), Status::Passed);
    assert_eq!(scratch.done(), (Status::Failed, true));
    let s = summary(&pod, "scratch");
    assert_eq!((s.last, s.status), (true, Status::Failed));
}

#[test]
fn pod_stop_aborts_the_running_step_with_its_grace_and_the_init_exits_130() {
    require_images();
    // The last container runs a step that ignores SIGTERM, with a 1.5s grace: `podman pod stop`
    // (SIGTERM to the init, SIGKILL after 30s) must end in about 1.5s, the step recorded aborted.
    let pod = root_then_scratch_pod(
        "podstop",
        "scratch",
        vec![
            cmd_step("first", 0, &["true"]),
            with_grace(
                1500,
                cmd_step(
                    "stubborn",
                    1,
                    &[
                        "/probe",
                        "ignore-term",
                        "::",
                        "echo",
                        "ready",
                        "::",
                        "sleep",
                        "300000",
                    ],
                ),
            ),
            when(
                Condition::Always,
                cmd_step("always-after", 1, &["/probe", "echo", "must-not-run"]),
            ),
        ],
    );
    let o = pod.play(LIMIT);
    assert!(o.status.success(), "{}", pod.debug());
    let last = pod.ctr("scratch");
    wait_for_output(&pod, "scratch", "stubborn", "ready");
    let t = Instant::now();
    podman_ok(["pod", "stop", "-t", "30", &pod.name]);
    let took = t.elapsed();
    let code = wait_exited(&last, LIMIT);
    assert_eq!(code, 130, "aborted: exit 130\n{}", pod.debug());
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "pod stop took {took:?}: the step's 1.5s grace, not podman's 30s"
    );
    let logs = container_logs(&last);
    logs.assert_clean("scratch");
    assert_eq!(
        logs.status("stubborn"),
        Status::Aborted,
        "{:#?}",
        logs.records
    );
    assert_eq!(
        logs.status("always-after"),
        Status::Skipped,
        "abort skips even `always`"
    );
    assert!(!logs.stdout_str().contains("must-not-run"));
    assert_eq!(logs.done(), (Status::Aborted, true));
    let s = summary(&pod, "scratch");
    assert_eq!((s.last, s.status), (true, Status::Aborted));
}

#[test]
fn stopping_a_running_init_container_aborts_and_later_containers_skip_promptly() {
    require_images();
    let pod = three_group_pod(
        "ctrstop",
        vec![
            // Ignores SIGTERM: the init's stop sequence kills it after the step's 1s grace.
            with_grace(
                1000,
                cmd_step(
                    "running",
                    0,
                    &["sh", "-c", "trap '' TERM; echo ready; sleep 300"],
                ),
            ),
            cmd_step("user-step", 1, &["sh", "-c", "echo must-not-run"]),
            when(
                Condition::Always,
                cmd_step("user-always", 1, &["sh", "-c", "echo must-not-run"]),
            ),
            when(
                Condition::Always,
                cmd_step("scratch-always", 2, &["/probe", "echo", "must-not-run"]),
            ),
        ],
    );
    let play = pod.play_spawn();
    let root = pod.ctr("root");
    wait_for_output(&pod, "root", "running", "ready");
    let t = Instant::now();
    // What the kubelet does to a running initContainer when the pod is deleted.
    podman_ok(["stop", "-t", "30", &root]);
    let o = play.wait(LIMIT);
    let took = t.elapsed();
    // An intermediate container exits 0 whatever happened, so podman starts the next ones: they
    // must see the abort in the state, skip everything and exit at once.
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        pod.debug()
    );
    let code = wait_exited(&pod.ctr("scratch"), LIMIT);
    let total = t.elapsed();
    assert_eq!(inspect(&root).exit_code, 0, "{}", pod.debug());
    assert_eq!(code, 130, "the workflow was aborted\n{}", pod.debug());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "stop took {took:?}: the step's 1s grace, not podman's 30s"
    );
    assert!(
        total < Duration::from_secs(20),
        "the later containers exit promptly: {total:?}"
    );
    let r = container_logs(&root);
    assert_eq!(r.status("running"), Status::Aborted, "{:#?}", r.records);
    let u = container_logs(&pod.ctr("user"));
    assert_eq!(u.status("user-step"), Status::Skipped);
    assert_eq!(u.status("user-always"), Status::Skipped);
    assert!(!u.started("user-always"));
    let s = container_logs(&pod.ctr("scratch"));
    assert_eq!(s.status("scratch-always"), Status::Skipped);
    assert_eq!(s.done(), (Status::Aborted, true));
    for l in [&u, &s] {
        assert!(!l.stdout_str().contains("must-not-run"));
    }
    let sum = summary(&pod, "scratch");
    assert_eq!((sum.last, sum.status), (true, Status::Aborted));
}

#[test]
fn a_single_container_runs_a_spec_from_a_configmap_without_state() {
    require_images();
    // No setup container: the init is in the image (the init image), the spec is the ConfigMap.
    let pod = init_image_pod(
        "single",
        vec![
            Step {
                id: Some("hello".into()),
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo hello; echo oops >&2".into(),
                ],
                ..Default::default()
            },
            Step {
                id: Some("negative".into()),
                command: vec!["/bin/sh".into(), "-c".into(), "exit 4".into()],
                negative: true,
                ..Default::default()
            },
        ],
    );
    let code = pod.run_to_end(LIMIT);
    assert_eq!(code, 0, "{}", pod.debug());
    let l = container_logs(&pod.ctr("only"));
    l.assert_clean("only");
    assert_eq!(l.stdout_str(), "hello\n");
    assert_eq!(l.stderr_str(), "oops\n");
    assert_eq!(l.end("hello"), (Status::Passed, Some(0), None));
    assert_eq!(l.end("negative").0, Status::Passed);
    assert_eq!(l.end("negative").1, Some(4));
    assert_eq!(l.done(), (Status::Passed, true));
    let s = summary(&pod, "only");
    assert_eq!((s.container, s.last, s.status), (0, true, Status::Passed));
    assert_eq!(s.counts[Status::Passed as usize], 2);
}

#[test]
fn a_container_whose_uid_is_unknown_before_it_starts_still_works() {
    require_images();
    // OpenShift gives a pod a random uid: the spec cannot declare it, setup falls back to the
    // documented world-writable sticky directories.
    let random_uid = 1_000_770_000;
    let spec = new_spec(
        vec![
            spec_ctr("root", Some((0, 0)), None),
            spec_ctr("random", None, Some("/workspace")),
        ],
        vec![
            shell_step("root", 0, "echo root > /workspace/root.txt"),
            shell_step(
                "random",
                1,
                "echo \"uid=$(id -u)\"; cat /workspace/root.txt; echo mine > /workspace/mine.txt; \
                 echo h > \"$HOME/.h\"",
            ),
        ],
    );
    let pod = Pod::new(
        "randomuid",
        &spec,
        &[Ctr::setup(), Ctr::group("root", BUSYBOX_IMAGE, 0)],
        &Ctr::group("random", BUSYBOX_IMAGE, 1)
            .user(random_uid, 0)
            .working_dir("/workspace"),
    );
    let code = pod.run_to_end(LIMIT);
    assert_eq!(code, 0, "{}", pod.debug());
    let l = container_logs(&pod.ctr("random"));
    assert_eq!(l.stdout_str(), format!("uid={random_uid}\nroot\n"));
    assert_eq!(l.done(), (Status::Passed, true));
}

#[test]
fn the_termination_summary_fits_in_4096_bytes_whatever_the_step_count() {
    require_images();
    let n = 300;
    let steps: Vec<Step> = (0..n)
        .map(|i| Step {
            id: Some(format!("{i:03}-{}", "x".repeat(60))),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                if i == 150 { "exit 9" } else { "exit 0" }.into(),
            ],
            optional: i == 150,
            ..Default::default()
        })
        .collect();
    let pod = init_image_pod("summary", steps);
    let code = pod.run_to_end(LIMIT);
    assert_eq!(
        code,
        0,
        "an optional failure does not fail the workflow\n{}",
        pod.debug()
    );
    let s = summary(&pod, "only");
    assert_eq!(s.counts[Status::Passed as usize], n - 1);
    assert_eq!(s.counts[Status::Failed as usize], 1);
    assert_eq!((s.last, s.status), (true, Status::Passed));
    assert!(s.more > 0, "not every step fits: {s:?}");
    let failed = format!("150-{}", "x".repeat(60));
    assert!(
        s.steps.iter().any(|r| r.id == failed && r.code == Some(9)),
        "failed steps are listed first: {:?}",
        s.steps
    );
    let l = container_logs(&pod.ctr("only"));
    assert_eq!(l.records.len(), 2 * n as usize + 1);
}

/// Kubernetes with `restartPolicy: OnFailure` restarts a killed initContainer in place (podman
/// does not: the test restarts it with `podman start`): the init of the *same* container finds
/// its own step still running in the state, reports it aborted and carries on with its group.
#[test]
fn a_restarted_container_reports_its_own_killed_step_aborted_and_goes_on() {
    require_images();
    let pod = three_group_pod(
        "restart",
        vec![
            cmd_step("before", 0, &["true"]),
            cmd_step("killed", 0, &["sh", "-c", "echo started; sleep 300"]),
            cmd_step("after-in-killed", 0, &["sh", "-c", "echo must-not-run"]),
            when(
                Condition::Always,
                cmd_step("always-0", 0, &["sh", "-c", "echo always-0-ran"]),
            ),
            cmd_step("user", 1, &["sh", "-c", "echo must-not-run"]),
            when(
                Condition::Always,
                cmd_step("scratch", 2, &["/probe", "echo", "cleanup"]),
            ),
        ],
    );
    let root = pod.ctr("root");
    let o = play_and_sigkill_init_mid_step(&pod, "root", "killed", "started");
    assert!(!o.status.success(), "{}", pod.debug());
    for (c, want) in [("root", 0), ("user", 0), ("scratch", 1)] {
        let o = podman(["start", "--attach", &pod.ctr(c)]);
        assert_eq!(o.status.code(), Some(want), "{c}\n{}", pod.debug());
    }
    // podman logs holds both runs of the root container.
    let l = container_logs(&root);
    l.assert_clean("root");
    assert_eq!(l.ends("killed"), 1, "{:#?}", l.records);
    let (status, _, reason) = l.end("killed");
    assert_eq!(status, Status::Aborted);
    assert!(
        reason.is_some_and(|r| r.contains("killed")),
        "{:#?}",
        l.records
    );
    assert!(l.started("before"), "{:#?}", l.records);
    assert_eq!(
        l.starts("before"),
        1,
        "a finished step is not run again: {:#?}",
        l.records
    );
    assert_eq!(l.status("after-in-killed"), Status::Skipped);
    assert_eq!(l.status("always-0"), Status::Passed);
    assert_eq!(l.stdout_str(), "started\nalways-0-ran\n");
    assert_eq!(
        container_logs(&pod.ctr("user")).status("user"),
        Status::Skipped
    );
    let s = container_logs(&pod.ctr("scratch"));
    assert_eq!(s.stdout_str(), "cleanup\n");
    assert_eq!(s.done(), (Status::Failed, true));
}

/// Setup never writes through a symlink planted in the shared volume (podman reuses an emptyDir
/// volume by name, so its content can predate the pod): the links are replaced, their targets
/// left alone.
#[test]
fn setup_replaces_planted_symlinks_instead_of_writing_through_them() {
    require_images();
    let spec = new_spec(
        vec![spec_ctr("root", Some((0, 0)), None)],
        vec![shell_step(
            "check",
            0,
            "cat /workspace/victim-init /workspace/victim-sh",
        )],
    );
    let pod = Pod::new(
        "symlink",
        &spec,
        &[Ctr::setup()],
        &Ctr::group("root", BUSYBOX_IMAGE, 0),
    );
    let shared = pod.precreate_volume("shared");
    let workspace = pod.precreate_volume("workspace");
    std::fs::write(workspace.join("victim-init"), "victim-init\n").unwrap();
    std::fs::write(workspace.join("victim-sh"), "victim-sh\n").unwrap();
    std::os::unix::fs::symlink("/workspace/victim-init", shared.join("init")).unwrap();
    std::os::unix::fs::symlink("/workspace/victim-sh", shared.join("sh")).unwrap();
    let code = pod.run_to_end(LIMIT);
    assert_eq!(code, 0, "{}", pod.debug());
    let l = container_logs(&pod.ctr("root"));
    assert_eq!(
        l.stdout_str(),
        "victim-init\nvictim-sh\n",
        "targets untouched"
    );
    for f in ["init", "sh"] {
        let m = std::fs::symlink_metadata(shared.join(f)).unwrap();
        assert!(m.file_type().is_file(), "{f} is a regular file now");
    }
    // The init was copied (not compared with the host's build, which may be newer than the image).
    use std::os::unix::fs::PermissionsExt;
    let init = std::fs::read(shared.join("init")).unwrap();
    assert!(
        init.starts_with(b"\x7fELF") && init.len() > 100_000,
        "the init was copied"
    );
    let mode = std::fs::metadata(shared.join("init"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o555);
}

/// `podman pod stop` while initContainers run: podman (kube play holds the pod's lock) lets every
/// remaining initContainer run to its end unsignalled, then starts the last container and stops
/// it at once. The last init gets SIGTERM right as it starts (a TERM lost before the init set up
/// its signal handling would be dropped by the kernel for a namespace's PID 1, and podman would
/// wait the whole -t 30): it must abort its step promptly and exit 130.
#[test]
fn pod_stop_during_init_containers_aborts_the_last_container_as_it_starts() {
    require_images();
    let pod = root_then_scratch_pod(
        "podstop-early",
        "last",
        vec![
            cmd_step("first", 0, &["sh", "-c", "sleep 2; echo first-done"]),
            with_grace(
                1000,
                cmd_step(
                    "long",
                    1,
                    &["/probe", "echo", "long-started", "::", "sleep", "60000"],
                ),
            ),
        ],
    );
    let play = pod.play_spawn();
    wait_for_start(&pod, "root", "first");
    let t = Instant::now();
    podman_ok(["pod", "stop", "-t", "30", &pod.name]);
    let took = t.elapsed();
    let _ = play.wait(LIMIT);
    let root = container_logs(&pod.ctr("root"));
    assert_eq!(
        root.status("first"),
        Status::Passed,
        "podman does not signal initContainers"
    );
    let code = wait_exited(&pod.ctr("last"), LIMIT);
    assert_eq!(code, 130, "{}", pod.debug());
    assert!(
        took < Duration::from_secs(10),
        "pod stop took {took:?}: the early TERM was lost"
    );
    let l = container_logs(&pod.ctr("last"));
    l.assert_clean("last");
    // The TERM may come before or after the step started: either way it ends aborted or skipped.
    let st = l.status("long");
    assert!(
        matches!(st, Status::Aborted | Status::Skipped),
        "{:#?}",
        l.records
    );
    assert_eq!(l.done(), (Status::Aborted, true));
}

/// tests/podman/example-pod.yaml, the documented example, is valid Kubernetes and does what its
/// spec says on podman.
#[test]
fn the_documented_example_pod_is_valid_and_runs() {
    require_images();
    let file = repo_root().join("tests/podman/example-pod.yaml");
    assert_valid_kubernetes(&file);
    let pod = Pod::from_file(
        &file,
        "stepinit-example",
        &["setup", "build", "test", "report"],
    );
    let code = pod.run_to_end(LIMIT);
    assert_eq!(code, 0, "{}", pod.debug());
    for c in ["setup", "build", "test"] {
        let c = pod.ctr(c);
        assert_eq!(inspect(&c).exit_code, 0, "{}", pod.debug());
        assert!(
            container_logs(&c).stderr.is_empty(),
            "{c} printed errors\n{}",
            pod.debug()
        );
    }
    let test = container_logs(&pod.ctr("test"));
    assert_eq!(test.status("flaky"), Status::Failed);
    assert_eq!(test.starts("flaky"), 2, "retry count 1: two attempts");
    let report = container_logs(&pod.ctr("report"));
    report.assert_clean("report");
    assert_eq!(report.stdout_str(), "built by root\ntested by 1001\n");
    assert_eq!(
        report.status("test"),
        Status::Passed,
        "the optional failure stays inside"
    );
    assert_eq!(report.status("never"), Status::Skipped);
    assert_eq!(report.done(), (Status::Passed, true));
    let summary = std::fs::read(pod.volume_dir("state").join("summary.2")).unwrap();
    let s = Summary::decode(&summary).unwrap();
    assert_eq!((s.container, s.last, s.status), (2, true, Status::Passed));
}

/// A group's deadline bounds all its children, across containers: the time spent in container 0
/// (and the handoff) counts in container 1.
#[test]
fn a_group_deadline_spans_containers() {
    require_images();
    let pod = root_then_scratch_pod(
        "deadline",
        "last",
        vec![
            step(
                group(
                    "timed",
                    vec![
                        cmd_step("slow-0", 0, &["sh", "-c", "sleep 1.5"]),
                        cmd_step(
                            "slow-1",
                            1,
                            &["/probe", "echo", "started", "::", "sleep", "60000"],
                        ),
                    ],
                ),
                |s| s.timeout_ms = Some(2500),
            ),
            when(
                Condition::Always,
                cmd_step("after", 1, &["/probe", "echo", "after-ran"]),
            ),
        ],
    );
    let t = Instant::now();
    let code = pod.run_to_end(LIMIT);
    let took = t.elapsed();
    assert_eq!(code, 1, "{}", pod.debug());
    assert!(
        took < Duration::from_secs(20),
        "the deadline fired: {took:?}"
    );
    let root = container_logs(&pod.ctr("root"));
    assert_eq!(root.status("slow-0"), Status::Passed);
    let l = container_logs(&pod.ctr("last"));
    l.assert_clean("last");
    // slow-1 had about 1s left of the group's 2.5s when its container started.
    let (st, _, _) = l.end("slow-1");
    assert!(
        matches!(st, Status::Timeout | Status::Aborted | Status::Failed),
        "{:#?}",
        l.records
    );
    let ms = l.end_ms("slow-1");
    assert!(
        ms < 2000,
        "slow-1 ran {ms} ms: the time spent in container 0 must count"
    );
    assert_eq!(l.status("timed"), Status::Timeout, "{:#?}", l.records);
    assert_eq!(l.status("after"), Status::Passed);
    assert_eq!(l.stdout_str(), "started\nafter-ran\n");
    assert_eq!(l.done(), (Status::Failed, true));
}

/// A step of a root container may run as another uid (`runAsUser` on the step): setup prepares
/// the workspace for it too, and the next container's user reads what it wrote.
#[test]
fn a_step_running_as_its_own_user_in_a_root_container_can_use_the_workspace() {
    require_images();
    let spec = new_spec(
        vec![
            spec_ctr("root", Some((0, 0)), Some("/workspace")),
            spec_ctr("user", Some((1001, 1001)), Some("/workspace")),
        ],
        vec![
            step(
                shell_step(
                    "as-2000",
                    0,
                    "echo \"id=$(id -u):$(id -g)\"; mkdir -p /workspace/d2000; echo x > /workspace/d2000/f; \
                     echo h > \"$HOME/.h\"",
                ),
                |s| {
                    s.run_as_user = Some(2000);
                    s.run_as_group = Some(2000);
                },
            ),
            shell_step("user-reads", 1, "cat /workspace/d2000/f; echo y > /workspace/d2000/g"),
        ],
    );
    let pod = Pod::new(
        "stepuser",
        &spec,
        &[
            Ctr::setup(),
            Ctr::group("root", BUSYBOX_IMAGE, 0).working_dir("/workspace"),
        ],
        &Ctr::group("user", USER_IMAGE, 1)
            .user(1001, 1001)
            .working_dir("/workspace"),
    );
    let code = pod.run_to_end(LIMIT);
    let root = container_logs(&pod.ctr("root"));
    assert_eq!(root.stdout_str(), "id=2000:2000\n", "{}", pod.debug());
    assert_eq!(root.status("as-2000"), Status::Passed, "{}", pod.debug());
    assert_eq!(code, 0, "{}", pod.debug());
    assert_eq!(container_logs(&pod.ctr("user")).stdout_str(), "x\n");
}

/// A container that has no leaf of its own (its group is empty) passes the state on untouched.
#[test]
fn a_container_without_steps_hands_off_untouched() {
    require_images();
    let pod = three_group_pod(
        "emptygroup",
        vec![
            cmd_step("fails", 0, &["sh", "-c", "exit 2"]),
            when(
                Condition::Always,
                cmd_step("last-always", 2, &["/probe", "echo", "ran"]),
            ),
        ],
    );
    let code = pod.run_to_end(LIMIT);
    assert_eq!(code, 1, "{}", pod.debug());
    let user = container_logs(&pod.ctr("user"));
    assert_eq!(inspect(&pod.ctr("user")).exit_code, 0);
    assert_eq!(user.records.len(), 1, "only done: {:#?}", user.records);
    assert_eq!(user.done(), (Status::Failed, false));
    let l = container_logs(&pod.ctr("scratch"));
    assert_eq!(l.stdout_str(), "ran\n");
    assert_eq!(l.done(), (Status::Failed, true));
}

/// What a step prints comes back byte for byte through the init's framing, conmon's k8s-file log
/// and `podman logs`: binary bytes, markers, forged records, CR, NUL, long lines, no final newline.
#[test]
fn step_output_survives_podman_logs_byte_for_byte() {
    require_images();
    let mut blob = Vec::new();
    let mut x: u32 = 12345;
    for i in 0..300_000u32 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        blob.push(match i % 1000 {
            0 => b'\n',
            1 => 0x1e,
            2 => b'\r',
            _ => (x >> 16) as u8,
        });
    }
    blob.extend_from_slice(
        b"\n\x1e{\"v\":1,\"t\":\"done\",\"status\":\"passed\",\"ms\":0,\"last\":true}\n",
    );
    blob.extend(std::iter::repeat_n(b'y', 100_000)); // a long line without newline
    let spec = new_spec(
        vec![spec_ctr("only", Some((1001, 1001)), None)],
        vec![
            cmd_step("print", 0, &["/probe", "read", "/workspace/blob"]),
            cmd_step("fail", 0, &["/probe", "exit", "3"]),
        ],
    );
    let pod = Pod::new(
        "bytes",
        &spec,
        &[Ctr::setup()],
        &Ctr::group("only", SCRATCH_IMAGE, 0).user(1001, 1001),
    );
    let ws = pod.precreate_volume("workspace");
    std::fs::write(ws.join("blob"), &blob).unwrap();
    std::fs::set_permissions(ws.join("blob"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let code = pod.run_to_end(LIMIT);
    assert_eq!(code, 1, "{}", pod.debug());
    let l = container_logs(&pod.ctr("only"));
    l.assert_clean("only");
    assert_eq!(l.status("print"), Status::Passed);
    assert_eq!(l.end("fail").1, Some(3));
    assert_eq!(
        l.done(),
        (Status::Failed, true),
        "the forged done is output, not a record"
    );
    assert_eq!(l.stdout.len(), blob.len());
    assert!(l.stdout == blob, "the step's bytes changed on the way");
}
