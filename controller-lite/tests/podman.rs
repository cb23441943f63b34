//! End-to-end runs on podman: real pods (`podman kube play`, runc) of the images built by
//! `images/build`, configured by `tests/podman/containers.conf`. These tests fail, never skip,
//! when podman cannot run or the images are missing.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// One pod at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const IMAGES: [&str; 3] = [
    "localhost/stepinit/init:dev",
    "localhost/stepinit/test-busybox:dev",
    "localhost/stepinit/test-scratch:dev",
];

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", containers_conf())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman cannot run ({e}): install it (tests/install-deps)"))
}

/// Takes the one-pod-at-a-time lock and checks that podman runs and the images exist.
fn preflight() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let o = podman(&["version"]);
    assert!(
        o.status.success(),
        "podman cannot run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for img in IMAGES {
        assert!(
            podman(&["image", "exists", img]).status.success(),
            "image {img} is missing: build the images with images/build"
        );
    }
    g
}

fn stepctl() -> Command {
    Engine::Podman.stepctl()
}

fn run_json(workflow: &Path, extra: &[&str]) -> (i32, Value, String) {
    Engine::Podman.run_json(workflow, extra)
}

/// Pods whose name starts with `prefix`.
fn pods(prefix: &str) -> Vec<String> {
    let o = podman(&["pod", "ls", "--format", "{{.Name}}"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn shared_workflows_pass_in_real_pods() {
    let _g = preflight();
    let (code, doc, err) = run_json(&wf("pure-steps.yaml"), &[]);
    assert_eq!(code, 0, "{doc}\n{err}");
    assert_eq!(doc["steps"].as_array().unwrap().len(), 5);
    assert!(err.contains("Hello world 5\n"), "{err}");

    let (code, doc, err) = run_json(&wf("conditions.yaml"), &[]);
    assert_eq!(code, 0, "{doc}\n{err}");
    assert_eq!(step(&doc, &["smoke", "flaky"])["attempts"], 2);
    assert_eq!(step(&doc, &["known-broken"])["status"], "passed");
    assert_eq!(step(&doc, &["may-fail"])["status"], "timeout");
    assert_eq!(step(&doc, &["report"])["status"], "passed");

    // uid 1001 writes /data in one container, reads it in the next.
    let (code, doc, err) = run_json(&wf("defaults-no-registry.yaml"), &[]);
    assert_eq!(code, 0, "{doc}\n{err}");
    assert_eq!(step(&doc, &["read"])["status"], "passed");
    assert!(
        pods("pure-steps-").is_empty() && pods("conditions-").is_empty(),
        "pods left behind"
    );
}

const MIXED: &str = r#"
kind: TestWorkflow
metadata: {name: mixed}
spec:
  steps:
  - name: root writes
    shell: mkdir -p /data/out && id -u > /data/out/root.txt
  - name: user appends
    workingDir: /data/out
    container:
      securityContext: {runAsUser: 1001, runAsGroup: 1001}
    shell: id -u >> root.txt && cat root.txt && pwd
  - name: fails as user
    workingDir: /data
    container:
      securityContext: {runAsUser: 1001, runAsGroup: 1001}
    shell: echo failing >&2; exit 4
  - name: skipped
    shell: echo must not run
  - name: cleanup
    condition: always
    shell: echo cleanup
  - name: shell in a shell-less image
    condition: always
    run: {image: "localhost/stepinit/test-scratch:dev"}
    shell: 'read m < /data/out/root.txt; echo "scratch read: $m"'
"#;

#[test]
fn failures_across_containers_of_different_users() {
    let _g = preflight();
    let (code, doc, err) = run_json(&temp_wf("mixed", MIXED), &[]);
    assert_eq!(code, 1, "{doc}\n{err}");
    assert_eq!(doc["status"], "failed");
    assert_eq!(step(&doc, &["root writes"])["status"], "passed", "{doc}");
    assert_eq!(
        step(&doc, &["user appends"])["status"],
        "passed",
        "{doc}\n{err}"
    );
    assert!(err.contains("0\n1001\n/data/out\n"), "{err}");
    let f = step(&doc, &["fails as user"]);
    assert_eq!(
        (f["status"].as_str(), f["exitCode"].as_i64()),
        (Some("failed"), Some(4))
    );
    assert_eq!(step(&doc, &["skipped"])["status"], "skipped");
    assert_eq!(step(&doc, &["cleanup"])["status"], "passed");
    // The scratch image has no shell: the init runs the script with the sh setup copied.
    assert_eq!(
        step(&doc, &["shell in a shell-less image"])["status"],
        "passed",
        "{doc}"
    );
    assert!(err.contains("scratch read: 0\n"), "{err}");
    assert!(
        err.contains("failing\n") && !err.contains("must not run"),
        "{err}"
    );
}

#[test]
fn kept_pod_results_are_rederived_by_status() {
    let _g = preflight();
    let (code, doc, err) = run_json(&example("hello.yaml"), &["--keep"]);
    assert_eq!(code, 0, "{doc}\n{err}");
    let pod = err
        .lines()
        .find_map(|l| l.strip_prefix("stepctl: kept pod "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no kept pod in {err}"))
        .to_string();
    let o = stepctl()
        .args(["status", "--output", "json", &pod])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    let _ = podman(&["pod", "rm", "-f", &pod]);
    // The pod's volumes, the ConfigMap's volume, and the kept manifest directory.
    for v in ["stepinit", "stepinit-spec", "workspace", "spec"] {
        let _ = podman(&["volume", "rm", "-f", &format!("{pod}-{v}")]);
    }
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("stepctl-{pod}-"))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(st["status"], "passed");
    // Same statuses and attempts, step by step, as the run itself reported.
    fn flat(v: &Value, out: &mut Vec<(String, String, u64)>) {
        for s in v["steps"].as_array().unwrap() {
            out.push((
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
                s["attempts"].as_u64().unwrap(),
            ));
            flat(s, out);
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flat(&doc, &mut a);
    flat(&st, &mut b);
    assert_eq!(a, b);
}

const SLEEPER: &str = r#"
kind: TestWorkflow
metadata: {name: podsleeper}
spec:
  system: {isolatedContainers: true}
  steps:
  - name: first
    shell: echo first
  - name: sleeper
    shell: echo sleeping; sleep 60
  - name: never
    shell: echo must not run
"#;

#[test]
fn ctrl_c_stops_the_pod_gracefully_and_reports() {
    let _g = preflight();
    let p = temp_wf("podsleeper", SLEEPER);
    let mut cmd = Engine::Podman.run_cmd(&["--output", "json", "--grace", "5"]);
    cmd.arg(&p);
    // Ctrl-C on a terminal: SIGINT to the whole foreground process group.
    let run = interrupt_at_line(
        cmd,
        "sleeping",
        Duration::from_secs(90),
        2,
        SignalTo::ProcessGroup,
    );
    // The init stops `sleep` at once on SIGTERM: well within the 5 s grace.
    assert!(
        run.took < Duration::from_secs(20),
        "abort took {:?}",
        run.took
    );
    assert_aborted_at_the_sleeper(&run);
    let rest = &run.after;
    assert!(rest.contains("stopping pod podsleeper-"), "{rest}");
    assert!(pods("podsleeper-").is_empty(), "the pod was not removed");
}

#[test]
fn a_missing_init_image_says_how_to_build_it() {
    let _g = preflight();
    let o = Engine::Podman
        .run_cmd(&["--init-image", "localhost/stepinit/no-such-init:0"])
        .arg(wf("pure-steps.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("localhost/stepinit/no-such-init:0 is not in podman's storage: build it with `images/build`"),
        "{err}"
    );
    assert!(pods("pure-steps-").is_empty());
}

const RESTRICTED: &str = r#"
kind: TestWorkflow
metadata: {name: restricted}
spec:
  container:
    securityContext: {runAsUser: 1001, runAsGroup: 1001}
  steps:
  - name: hardened
    workingDir: /data
    shell: grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; id -u; touch ok
  - name: next container sees it
    shell: test -f /data/ok
"#;

#[test]
fn restricted_pods_run_hardened() {
    let _g = preflight();
    let p = temp_wf("restricted", RESTRICTED);
    let (code, doc, err) = run_json(&p, &["--restricted"]);
    assert_eq!(code, 0, "{doc}\n{err}");
    // No capabilities, no privilege escalation, a seccomp filter, the workflow's user.
    assert!(err.contains("CapEff:\t0000000000000000\n"), "{err}");
    assert!(err.contains("NoNewPrivs:\t1\n"), "{err}");
    assert!(err.contains("Seccomp:\t2\n"), "{err}");
    assert!(err.contains("\n1001\n"), "{err}");
    assert_eq!(step(&doc, &["next container sees it"])["status"], "passed");
    // Without --restricted the same steps may gain privileges (NoNewPrivs 0).
    let (code, _, err) = run_json(&p, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("NoNewPrivs:\t0\n"), "{err}");
}
