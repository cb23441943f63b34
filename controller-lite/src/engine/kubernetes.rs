//! The `kubernetes` engine: `kubectl apply` of the ConfigMap and the Job, the Job's pod found by
//! its `job-name` label, each container's logs followed in start order (`kubectl logs -f POD -c
//! NAME`), records decoded live, the objects deleted afterwards unless `--keep`. Ctrl-C/SIGTERM
//! deletes the Job's pod with the grace period (the kubelet sends SIGTERM: the init records the
//! running step `aborted`), then the results so far are reported.
//!
//! kubectl uses its usual configuration (`KUBECONFIG`, current context and namespace). No
//! cluster exists where stepctl is developed: this engine is covered by manifest validation and
//! by decoding recorded `kubectl logs` output (`stepctl decode`), not by live runs.

use super::{collect, make_sink, run_name, write_manifests, EngineError, Outcome, RunOptions};
use crate::follow::{pump, Sink, Stream, Timestamps};
use crate::manifest::{self, SETUP_NAME};
use crate::plan::Plan;
use crate::report::Collector;
use crate::signals;
use crate::workflow::Workflow;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The namespace of `spec.job.namespace`, when the workflow sets one (else kubectl's own).
static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn kubectl() -> Command {
    let mut c = Command::new("kubectl");
    c.stdin(Stdio::null());
    super::detach(&mut c);
    if let Some(ns) = NAMESPACE.get() {
        c.args(["--namespace", ns]);
    }
    c
}

fn run_ok(mut c: Command, what: &str) -> Result<String, EngineError> {
    let o = c.output().map_err(|e| {
        EngineError::new(format!(
            "cannot run kubectl ({e}); install kubectl or use --engine local"
        ))
    })?;
    if !o.status.success() {
        return Err(EngineError::new(format!(
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn jsonpath(pod: &str, path: &str) -> Option<String> {
    let o = kubectl()
        .args(["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Waits for the Job's pod to exist; returns its name.
fn job_pod(job: &str, limit: Duration) -> Result<String, EngineError> {
    let t = Instant::now();
    loop {
        let o = kubectl()
            .args([
                "get",
                "pods",
                "-l",
                &format!("job-name={job}"),
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ])
            .stderr(Stdio::null())
            .output();
        if let Ok(o) = o {
            let name = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && !name.is_empty() {
                return Ok(name);
            }
        }
        if t.elapsed() > limit || signals::interrupted() {
            return Err(EngineError::new(format!(
                "the pod of job {job} did not appear"
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether container `c` of `pod` has started (running or terminated).
fn started(pod: &str, c: &str) -> bool {
    let q = format!(
        "{{.status.initContainerStatuses[?(@.name==\"{c}\")].state}}{{.status.containerStatuses[?(@.name==\"{c}\")].state}}"
    );
    jsonpath(pod, &q).is_some_and(|s| s.contains("running") || s.contains("terminated"))
}

fn phase(pod: &str) -> Option<String> {
    jsonpath(pod, "{.status.phase}")
}

/// Follows `kubectl logs -f POD -c NAME` into the sink. kubectl merges the container's stdout
/// and stderr into one stream; records are still found (they always start a line).
pub fn follow_logs(pod: &str, c: &str, sink: &Arc<Mutex<Sink>>) -> Result<(), EngineError> {
    let mut child = kubectl()
        .args(["logs", "-f", pod, "-c", c])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EngineError::new(format!("cannot run kubectl logs: {e}")))?;
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let s1 = sink.clone();
    let t = std::thread::spawn(move || pump(out, Stream::Stdout, Timestamps::Off, &s1));
    let mut e = String::new();
    let _ = err.read_to_string(&mut e);
    let st = child.wait();
    let _ = t.join();
    if st.is_ok_and(|s| !s.success()) {
        return Err(EngineError::new(format!(
            "kubectl logs {pod} -c {c}: {}",
            e.trim()
        )));
    }
    Ok(())
}

pub fn run(wf: &Workflow, plan: &Plan, opts: &RunOptions, signal_pipe: OwnedFd) -> Outcome {
    let job = run_name(&plan.name);
    let m = write_manifests(
        wf,
        plan,
        &opts.build_options(
            manifest::Kind::Job,
            &job,
            manifest::StateKey::Secret(super::state_key()?),
        ),
        opts.keep,
        "job.yaml",
    )?;
    if let Some(ns) = m.objects.workload["metadata"]["namespace"].as_str() {
        let _ = NAMESPACE.set(ns.to_string());
    }
    let yaml = &m.path;
    let mut c = kubectl();
    c.arg("apply").arg("-f").arg(yaml);
    run_ok(c, "kubectl apply")?;
    let started_at = Instant::now();
    let sink = make_sink(Collector::new(Some(&plan.spec)), opts.format);
    let mut notes = Vec::new();
    let result = (|| -> Result<(), EngineError> {
        let pod = job_pod(&job, Duration::from_secs(300))?;
        let grace = opts.grace_s;
        let pod2 = pod.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(signal_pipe);
            let mut b = [0u8; 1];
            if f.read(&mut b).unwrap_or(0) == 1 {
                eprintln!("stepctl: interrupted: deleting pod {pod2} (grace {grace}s)");
                let _ = kubectl()
                    .args([
                        "delete",
                        "pod",
                        &pod2,
                        "--wait=false",
                        &format!("--grace-period={grace}"),
                    ])
                    .stdout(Stdio::null())
                    .status();
            }
        });
        let mut names = vec![SETUP_NAME.to_string()];
        names.extend(plan.containers.iter().map(|c| c.name.clone()));
        for c in &names {
            let mut delay = Duration::from_millis(200);
            loop {
                if started(&pod, c) {
                    break;
                }
                let ph = phase(&pod);
                if signals::interrupted()
                    || matches!(ph.as_deref(), Some("Failed" | "Succeeded") | None)
                {
                    notes.push(format!("container {c} never started"));
                    return Ok(());
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            follow_logs(&pod, c, &sink)?;
        }
        Ok(())
    })();
    let wall = started_at.elapsed().as_millis() as u64;
    if let Err(e) = result {
        notes.push(e.message);
    }
    let interrupted = signals::interrupted();
    let r = collect(&sink, &plan.name, interrupted, Some(wall), notes);
    if opts.keep {
        eprintln!("stepctl: kept job {job} (manifest: {})", yaml.display());
    } else {
        let mut c = kubectl();
        c.args(["delete", "--wait=false", "--ignore-not-found", "-f"])
            .arg(yaml);
        if let Err(e) = run_ok(c, "kubectl delete") {
            eprintln!("stepctl: warning: {e}");
        }
    }
    Ok((r, interrupted))
}

/// `stepctl status POD` on Kubernetes: the logs of the pod's containers, decoded again.
pub fn status(pod: &str, sink: &Arc<Mutex<Sink>>) -> Result<(), EngineError> {
    let names = jsonpath(
        pod,
        "{range .spec.initContainers[*]}{.name}{\"\\n\"}{end}{range .spec.containers[*]}{.name}{\"\\n\"}{end}",
    )
    .ok_or_else(|| EngineError::new(format!("no pod {pod} (kubectl get pod failed)")))?;
    for c in names
        .lines()
        .filter(|n| *n == SETUP_NAME || n.starts_with("group-"))
    {
        if !started(pod, c) {
            break;
        }
        follow_logs(pod, c, sink)?;
    }
    Ok(())
}
