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
use crate::follow::{pump, RecordAuth, Sink, StreamDecoder, Timestamps};
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
/// and stderr into one stream, cut where the kubelet's reads of each pipe ended: a step's
/// stderr can land between the bytes of an escape on stdout and so decode as a record. With
/// `auth` (container `group`'s records; None: the setup container, which prints none) only
/// records the init signed count, and anything else that decodes as one fails the run.
pub fn follow_logs(
    pod: &str,
    c: &str,
    auth: Option<&RecordAuth>,
    group: Option<u32>,
    sink: &Arc<Mutex<Sink>>,
) -> Result<(), EngineError> {
    let mut child = kubectl()
        .args(["logs", "-f", pod, "-c", c])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EngineError::new(format!("cannot run kubectl logs: {e}")))?;
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let s1 = sink.clone();
    let [merged, _] = StreamDecoder::pair(Timestamps::Off, auth, group);
    let t = std::thread::spawn(move || pump(out, merged, &s1));
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
    let key = super::state_key()?;
    let m = write_manifests(
        wf,
        plan,
        &opts.build_options(
            manifest::Kind::Job,
            &job,
            manifest::StateKey::Secret(key.clone()),
        ),
        opts.keep,
        "job.yaml",
    )?;
    let auth = RecordAuth::new(&key, m.objects.spec_json().as_bytes()).map_err(EngineError::new)?;
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
        for (i, c) in names.iter().enumerate() {
            let group = i.checked_sub(1).map(|g| g as u32);
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
            follow_logs(&pod, c, Some(&auth), group, &sink)?;
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

/// The key and spec of a pod stepctl made: from its Secret and its ConfigMap.
fn pod_auth(pod: &str) -> Result<RecordAuth, String> {
    let get = |what: &str, name: &str, path: &str| {
        let o = kubectl()
            .args(["get", what, name, "-o", &format!("jsonpath={path}")])
            .stderr(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() || o.stdout.is_empty() {
            return Err(format!("cannot read {what} {name}"));
        }
        Ok(o.stdout)
    };
    let secret = jsonpath(
        pod,
        &format!(
            "{{.spec.containers[0].env[?(@.name==\"{}\")].valueFrom.secretKeyRef.name}}",
            manifest::STATE_KEY_ENV
        ),
    )
    .ok_or("the pod names no state key")?;
    let cm = jsonpath(
        pod,
        "{.spec.volumes[?(@.name==\"stepinit-spec\")].configMap.name}",
    )
    .ok_or("the pod names no spec ConfigMap")?;
    let key = get("secret", &secret, "{.data.key}")?;
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.trim_ascii())
        .map_err(|e| format!("secret {secret}: {e}"))?;
    let spec = get("configmap", &cm, "{.data.spec\\.json}")?;
    RecordAuth::new(&String::from_utf8_lossy(&key), &spec)
}

/// `stepctl status POD` on Kubernetes: the logs of the pod's containers, decoded again, their
/// records verified when the pod's key can be read (else a note says they were not).
pub fn status(pod: &str, sink: &Arc<Mutex<Sink>>) -> Result<Vec<String>, EngineError> {
    let names = jsonpath(
        pod,
        "{range .spec.initContainers[*]}{.name}{\"\\n\"}{end}{range .spec.containers[*]}{.name}{\"\\n\"}{end}",
    )
    .ok_or_else(|| EngineError::new(format!("no pod {pod} (kubectl get pod failed)")))?;
    let mut notes = Vec::new();
    let auth = pod_auth(pod)
        .map_err(|e| notes.push(super::unverified_note(&e)))
        .ok();
    for c in names
        .lines()
        .filter(|n| *n == SETUP_NAME || n.starts_with("group-"))
    {
        if !started(pod, c) {
            break;
        }
        let group = c.strip_prefix("group-").and_then(|g| g.parse().ok());
        follow_logs(pod, c, auth.as_ref(), group, sink)?;
    }
    Ok(notes)
}
