//! The `podman` engine: `podman kube play` of the built manifests, each container's logs
//! followed in start order (`podman logs -f`), records decoded live, the pod removed afterwards
//! unless `--keep`. Ctrl-C/SIGTERM: the running container and every one that starts later get
//! `podman stop -t GRACE`, then the results gathered so far are reported and stepctl exits 130.
//!
//! Podman reads `CONTAINERS_CONF` as usual; the project's tests set it to
//! `tests/podman/containers.conf`.

use super::{
    collect, make_sink, relay_into, run_name, write_manifests, EngineError, Outcome, RunOptions,
};
use crate::follow::{RecordAuth, Sink, StreamDecoder, Timestamps};
use crate::manifest::{self, BuildOptions, SETUP_NAME};
use crate::plan::Plan;
use crate::report::Collector;
use crate::signals;
use crate::workflow::Workflow;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.stdin(Stdio::null());
    super::detach(&mut c);
    c
}

fn output(mut c: Command) -> Result<std::process::Output, EngineError> {
    c.output().map_err(|e| {
        EngineError::new(format!(
            "cannot run podman ({e}); install podman or use --engine local"
        ))
    })
}

/// Checks that podman runs and the init image is there.
pub fn preflight(init_image: &str) -> Result<(), EngineError> {
    let mut c = podman();
    c.args(["version", "--format", "{{.Client.Version}}"]);
    let o = output(c)?;
    if !o.status.success() {
        return Err(EngineError::new(format!(
            "podman cannot run: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let mut c = podman();
    c.args(["image", "exists", init_image]);
    if !output(c)?.status.success() {
        return Err(EngineError::new(format!(
            "the init image {init_image} is not in podman's storage: build it with `images/build` (or pass --init-image IMAGE)"
        )));
    }
    Ok(())
}

/// Container state as podman reports it (`created`, `running`, `exited`, ...), None if absent.
fn state(name: &str) -> Option<String> {
    let o = podman()
        .args([
            "container",
            "inspect",
            "--format",
            "{{.State.Status}}",
            name,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Follows container `name`'s output into the sink until it ends, each stream decoded on its
/// own.
///
/// podman 4.3's `logs -f` is not a faithful copy of a large log: of 50 MiB it gave 11, with a
/// piece from the middle missing. So where podman keeps the log as a file (its k8s-file driver,
/// the CRI format the kubelet writes too), stepctl reads the file itself, as it grows, until the
/// container has exited and its init's `done` came (or the file stopped growing). Other log
/// drivers go through `podman logs -f`.
///
/// With `auth`, only records signed by container `group`'s init count (None: the setup
/// container, which prints none); anything else that decodes as one fails the run.
pub fn follow_logs(
    name: &str,
    auth: Option<&RecordAuth>,
    group: Option<u32>,
    sink: &Arc<Mutex<Sink>>,
) -> Result<(), EngineError> {
    let mut d = StreamDecoder::pair(Timestamps::Off, auth, group);
    match log_file(name).and_then(|p| std::fs::File::open(p).ok()) {
        Some(f) => follow_file(f, name, &mut d, sink)?,
        None => {
            let child = podman()
                .args(["logs", "-f", name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| EngineError::new(format!("cannot run podman logs: {e}")))?;
            let _ = relay_into(child, &mut d, [0, 0], sink);
        }
    }
    for x in &mut d {
        x.finish(sink);
    }
    Ok(())
}

/// The container's log file, when podman writes one (the k8s-file driver).
fn log_file(name: &str) -> Option<std::path::PathBuf> {
    let o = podman()
        .args([
            "container",
            "inspect",
            "--format",
            "{{.HostConfig.LogConfig.Type}}\t{{.HostConfig.LogConfig.Path}}",
            name,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    match text.trim_end().split_once('\t') {
        Some(("k8s-file", path)) if !path.is_empty() => Some(path.into()),
        _ => None,
    }
}

/// Reads a CRI log file as it grows (see [`follow_logs`]).
fn follow_file(
    mut f: std::fs::File,
    name: &str,
    d: &mut [StreamDecoder; 2],
    sink: &Arc<Mutex<Sink>>,
) -> Result<(), EngineError> {
    // `podman wait` returns when the container has exited (at once if it has).
    let exited = Arc::new(AtomicBool::new(false));
    let flag = exited.clone();
    let mut wait = podman()
        .args(["wait", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| EngineError::new(format!("cannot run podman wait: {e}")))?;
    let waiter = std::thread::spawn(move || {
        let _ = wait.wait();
        flag.store(true, Ordering::SeqCst);
    });
    let mut cri = crate::follow::CriReader::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut delay = Duration::from_millis(5);
    let mut quiet_since: Option<Instant> = None;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| EngineError::new(format!("cannot read the log of {name}: {e}")))?;
        if n > 0 {
            cri.feed(&buf[..n], &mut |stream, bytes| {
                d[stream as usize].feed(bytes, sink);
            });
            sink.lock().unwrap_or_else(|p| p.into_inner()).flush();
            delay = Duration::from_millis(5);
            quiet_since = None;
            continue;
        }
        if exited.load(Ordering::SeqCst) {
            // conmon may still be writing what the container printed last.
            let quiet = quiet_since.get_or_insert_with(Instant::now);
            if d[0].done_seen || quiet.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    let _ = waiter.join();
    Ok(())
}

/// Waits until container `name` has started (or finished). Returns false if it never will: kube
/// play ended and the container is absent or still only created (an earlier initContainer
/// failed, or the pod was stopped).
fn wait_started(name: &str, play: &Mutex<Child>, play_done: &AtomicBool) -> bool {
    let mut delay = Duration::from_millis(20);
    let mut settle: Option<Instant> = None;
    loop {
        if let Some("running" | "exited" | "stopped" | "stopping" | "paused") =
            state(name).as_deref()
        {
            return true;
        }
        if !play_done.load(Ordering::SeqCst) {
            if let Ok(Some(_)) = play.lock().unwrap_or_else(|p| p.into_inner()).try_wait() {
                play_done.store(true, Ordering::SeqCst);
            }
        }
        if play_done.load(Ordering::SeqCst) {
            // kube play has returned: give the runtime a moment, then give up.
            let t = settle.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(2) {
                return false;
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Stops the running container when a signal arrives (a thread blocked on the signal pipe):
/// SIGTERM now, SIGKILL after the grace, as the kubelet does on deletion; the init records its
/// step aborted. Not `podman pod stop`: while kube play still starts initContainers it holds the
/// pod's lock, so a pod stop waits for all of them to run to their end, and container stops
/// queue behind it. The containers that start after the signal are stopped by the run loop as
/// they start (their inits skip everything), and the pod once kube play has returned.
fn watch_signals(pipe: OwnedFd, pod: String, current: Arc<Mutex<Option<String>>>, grace_s: u64) {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(pipe);
        let mut b = [0u8; 1];
        if f.read(&mut b).unwrap_or(0) == 1 {
            eprintln!("stepctl: interrupted: stopping pod {pod} (grace {grace_s}s)");
            let running = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(c) = running {
                stop(&c, grace_s);
            }
        }
    });
}

/// `podman stop -t GRACE NAME` of a running container, quietly, in a thread of its own: on a
/// container that has already exited, podman waits for kube play's lock (until the whole pod
/// has run), which must hold up neither the log following nor the stops of later containers.
fn stop(name: &str, grace_s: u64) {
    if state(name).as_deref() != Some("running") {
        return;
    }
    let name = name.to_string();
    std::thread::spawn(move || {
        let _ = podman()
            .args(["stop", "-t", &grace_s.to_string(), &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    });
}

pub fn run(wf: &Workflow, plan: &Plan, opts: &RunOptions, signal_pipe: OwnedFd) -> Outcome {
    preflight(&opts.init_image)?;
    let pod = run_name(&plan.name);
    let key = super::state_key()?;
    let m = write_manifests(
        wf,
        plan,
        &BuildOptions {
            // Keep finished initContainers so their logs can be read and `status` works.
            annotations: BTreeMap::from([(
                "io.podman.annotations.init.container.type".to_string(),
                "always".to_string(),
            )]),
            unique_volumes: true,
            ..opts.build_options(
                manifest::Kind::Pod,
                &pod,
                manifest::StateKey::Inline(key.clone()),
            )
        },
        opts.keep,
        "pod.yaml",
    )?;
    let auth = RecordAuth::new(&key, m.objects.spec_json().as_bytes()).map_err(EngineError::new)?;
    let yaml_path = &m.path;

    let started = Instant::now();
    let play = podman()
        .arg("kube")
        .arg("play")
        .arg(yaml_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EngineError::new(format!("cannot run podman kube play: {e}")))?;
    let play = Mutex::new(play);
    let play_done = AtomicBool::new(false);
    let current = Arc::new(Mutex::new(None));
    watch_signals(signal_pipe, pod.clone(), current.clone(), opts.grace_s);

    let sink = make_sink(Collector::new(Some(&plan.spec)), opts.format);
    let mut names = vec![SETUP_NAME.to_string()];
    names.extend(plan.containers.iter().map(|c| c.name.clone()));
    let mut notes = Vec::new();
    for (i, short) in names.iter().enumerate() {
        let group = i.checked_sub(1).map(|g| g as u32);
        let full = format!("{pod}-{short}");
        if !wait_started(&full, &play, &play_done) {
            if !signals::interrupted() {
                notes.push(format!("container {short} never started"));
            }
            break;
        }
        *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(full.clone());
        if signals::interrupted() {
            // Started after the signal: stopped at once, its init aborts or skips everything.
            stop(&full, opts.grace_s);
        }
        follow_logs(&full, Some(&auth), group, &sink)?;
        if short == SETUP_NAME {
            if let Some(code) = exit_code(&full) {
                if code != 0 {
                    notes.push(format!("the setup container failed (exit {code})"));
                    break;
                }
            }
        }
    }
    let wall = started.elapsed().as_millis() as u64;
    // kube play returns once the last container started; collect its diagnostics.
    let mut play = play.into_inner().unwrap_or_else(|p| p.into_inner());
    let play_status = play.wait().ok();
    let mut play_err = String::new();
    if let Some(mut e) = play.stderr.take() {
        let _ = e.read_to_string(&mut play_err);
    }
    if play_status.is_some_and(|s| !s.success()) && !signals::interrupted() {
        // Its last line says why (the lines before are pull retries and warnings).
        let why = play_err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim();
        notes.insert(0, format!("podman kube play failed: {why}"));
    }
    let interrupted = signals::interrupted();
    if interrupted {
        // kube play has returned: the pod's lock is free; stop what is left (the infra).
        let _ = podman()
            .args(["pod", "stop", "-t", &opts.grace_s.to_string(), &pod])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let result = collect(&sink, &plan.name, interrupted, Some(wall), notes);
    if opts.keep {
        eprintln!(
            "stepctl: kept pod {pod} (manifest: {})",
            yaml_path.display()
        );
    } else if let Err(e) = remove(&pod) {
        eprintln!("stepctl: warning: could not remove pod {pod}: {e}");
    }
    Ok((result, interrupted))
}

/// Removes the pod and the volumes it was given (`podman kube down` of podman 4.3 leaves
/// volumes behind).
pub fn remove(pod: &str) -> Result<(), String> {
    let o = podman()
        .args(["pod", "rm", "-f", pod])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    let vols: Vec<String> = manifest::pod_volumes(pod)
        .into_iter()
        .chain(std::iter::once(format!("{pod}-spec")))
        .collect();
    let _ = podman()
        .args(["volume", "rm", "-f"])
        .args(&vols)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

fn exit_code(name: &str) -> Option<i32> {
    let o = podman()
        .args([
            "container",
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            name,
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

/// Containers of an existing pod in start order, from `podman pod inspect` (setup first, then
/// group-0, group-1, ...).
pub fn pod_containers(pod: &str) -> Result<Vec<String>, EngineError> {
    let o = output({
        let mut c = podman();
        c.args([
            "pod",
            "inspect",
            "--format",
            "{{range .Containers}}{{.Name}}\n{{end}}",
            pod,
        ]);
        c
    })?;
    if !o.status.success() {
        return Err(EngineError::new(format!(
            "no pod {pod}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let prefix = format!("{pod}-");
    let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    names.sort_by_key(|n| {
        if n == SETUP_NAME {
            -1
        } else {
            n.strip_prefix("group-")
                .and_then(|x| x.parse::<i64>().ok())
                .unwrap_or(i64::MAX)
        }
    });
    Ok(names
        .into_iter()
        .filter(|n| n == SETUP_NAME || n.starts_with("group-"))
        .map(|n| format!("{prefix}{n}"))
        .collect())
}

/// The spec a pod ran, read back from its `stepinit` volume (per-pod name `POD-stepinit`), where
/// setup copied it: it names the steps that never started. None when it cannot be read (the
/// volume is gone, or the pod was not made by this engine).
pub fn pod_spec(pod: &str) -> Option<stepinit_protocol::Spec> {
    serde_json::from_slice(&pod_spec_bytes(pod)?).ok()
}

/// The bytes of [`pod_spec`].
fn pod_spec_bytes(pod: &str) -> Option<Vec<u8>> {
    let o = podman()
        .args([
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            &format!("{pod}-stepinit"),
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
    std::fs::read(std::path::Path::new(&dir).join("spec.json")).ok()
}

/// The key of a pod stepctl made (in its containers' environment) and the spec it ran (read
/// back from its volume), which authenticate its records.
fn pod_auth(pod: &str, names: &[String]) -> Result<RecordAuth, String> {
    let group = names
        .iter()
        .find(|n| n.ends_with("-group-0"))
        .ok_or("no group-0 container")?;
    let o = podman()
        .args([
            "container",
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            group,
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let env = String::from_utf8_lossy(&o.stdout);
    let key = env
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{}=", manifest::STATE_KEY_ENV)))
        .ok_or("its containers carry no state key")?;
    let spec = pod_spec_bytes(pod).ok_or("its spec cannot be read back")?;
    RecordAuth::new(key, &spec)
}

/// `stepctl status POD` on podman: the logs of the pod's containers, decoded again, their
/// records verified when the pod's key and spec can be read (else a note says they were not).
pub fn status(pod: &str, sink: &Arc<Mutex<Sink>>) -> Result<Vec<String>, EngineError> {
    let names = pod_containers(pod)?;
    if names.is_empty() {
        return Err(EngineError::new(format!(
            "pod {pod} has no stepctl containers (setup, group-N)"
        )));
    }
    let mut notes = Vec::new();
    let auth = pod_auth(pod, &names)
        .map_err(|e| notes.push(super::unverified_note(&e)))
        .ok();
    for n in names {
        if state(&n).as_deref() == Some("created") {
            break;
        }
        let group = n.rsplit_once("-group-").and_then(|(_, g)| g.parse().ok());
        // A running container is followed to its end: what `status` of a running pod shows.
        follow_logs(&n, auth.as_ref(), group, sink)?;
    }
    Ok(notes)
}
