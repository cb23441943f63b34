//! The `local` engine: the plan runs on this host, no container engine. Each container of the
//! pod becomes one `stepctl __init run SPEC --group N --state DIR` process (stepctl embeds the
//! init), run one after the other like the containers of a pod, sharing a temporary directory:
//!
//! ```text
//! $TMPDIR/stepctl-NAME-XXXXXX/
//!   spec.json        the plan's spec, as the ConfigMap would carry it
//!   state/           the init's state across "containers"
//!   workspace/       the steps' working directory
//!   termination-N    each group's termination summary
//! ```
//!
//! Images are ignored (steps run with the host's programs). The workspace plays the pods'
//! workspace volume `/data`: `workingDir: /data/x` is `workspace/x`; other absolute working
//! directories are placed inside it too (`/src` becomes `workspace/src`), so a workflow never
//! writes into the host's root; relative ones are relative to the workspace. `runAsUser`/`runAsGroup`
//! are honoured when stepctl runs as root (the init switches user per step), and ignored with a
//! warning otherwise.

use super::{collect, make_sink, relay, sandbox, EngineError, Outcome, RunOptions, TempDir};
use crate::follow::{RecordAuth, StreamDecoder, Timestamps};
use crate::manifest;
use crate::plan::Plan;
use crate::report::Collector;
use crate::signals;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use stepinit_protocol::Spec;

/// The spec as the local engine runs it: working directories inside the workspace, users
/// switched per step when running as root.
pub fn local_spec(plan: &Plan, workspace: &Path, as_root: bool) -> (Spec, Vec<String>) {
    let mut spec = plan.spec.clone();
    let mut warnings = Vec::new();
    fn walk(
        steps: &mut [stepinit_protocol::Step],
        plan: &Plan,
        ws: &Path,
        as_root: bool,
        warnings: &mut Vec<String>,
    ) {
        for s in steps {
            if !s.steps.is_empty() {
                walk(&mut s.steps, plan, ws, as_root, warnings);
                continue;
            }
            if let Some(wd) = &s.working_dir {
                s.working_dir = Some(place(wd, ws));
            }
            let c = &plan.containers[s.container.unwrap_or(0) as usize];
            if c.run_as_user.is_some() || c.run_as_group.is_some() {
                if as_root {
                    s.run_as_user = c.run_as_user;
                    s.run_as_group = c.run_as_group;
                } else {
                    let w = format!(
                        "step {:?}: runAsUser/runAsGroup ignored (stepctl is not root)",
                        s.name.as_deref().unwrap_or_default()
                    );
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
            }
        }
    }
    walk(&mut spec.steps, plan, workspace, as_root, &mut warnings);
    for c in &mut spec.containers {
        // As in a pod: setup prepares the workspace for the users of the containers.
        c.working_dir = Some(workspace.display().to_string());
    }
    (spec, warnings)
}

/// Where a step's working directory is on this host: the pods' workspace volume
/// ([`manifest::WORKSPACE_DIR`], `/data`) is the workspace itself; other absolute paths are
/// placed inside the workspace; relative ones stay relative (to the workspace, the init's cwd).
pub fn place(wd: &str, ws: &Path) -> String {
    // `..` resolved first, as in a pod's root (`/data/../../..` is `/`): never out of the
    // workspace.
    let normal = normalize(wd);
    let p = Path::new(&normal);
    if let Ok(rest) = p.strip_prefix(manifest::WORKSPACE_DIR) {
        return ws.join(rest).display().to_string();
    }
    match normal.strip_prefix('/') {
        Some(rel) => ws.join(rel).display().to_string(),
        None => normal,
    }
}

/// `wd` with `.` and `..` resolved by its text (an absolute path stops at `/`; a relative one
/// at the workspace, its base).
fn normalize(wd: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in wd.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if wd.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

pub fn run(plan: &Plan, opts: &RunOptions) -> Outcome {
    let mut tmp = TempDir::new(&format!("stepctl-{}-", plan.name))
        .map_err(|e| EngineError::new(format!("cannot create a temporary directory: {e}")))?;
    tmp.keep = opts.keep;
    let ws = tmp.path.join("workspace");
    let state = tmp.path.join("state");
    let io = |what: &str, e: std::io::Error| EngineError::new(format!("{what}: {e}"));
    std::fs::create_dir(&ws).map_err(|e| io("cannot create the workspace", e))?;
    std::fs::create_dir(&state).map_err(|e| io("cannot create the state directory", e))?;
    // Where the init makes a HOME for a step that has none it can write (as in a pod).
    std::fs::create_dir(tmp.path.join("home"))
        .map_err(|e| io("cannot create the home directory", e))?;
    // Steps running as another user must reach their working directories in the workspace.
    for d in [&tmp.path, &ws] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("cannot set permissions", e))?;
    }
    let mut images: Vec<&str> = Vec::new();
    for c in &plan.containers {
        if c.image != crate::plan::DEFAULT_IMAGE && !images.contains(&c.image.as_str()) {
            images.push(&c.image);
        }
    }
    if !images.is_empty() {
        eprintln!(
            "stepctl: warning: the local engine runs steps with this host's programs; images ignored: {} (use --engine podman to run them)",
            images.join(", ")
        );
    }
    let as_root = unsafe { libc::geteuid() } == 0;
    let (spec, warnings) = local_spec(plan, &ws, as_root);
    for w in warnings {
        eprintln!("stepctl: warning: {w}");
    }
    let spec_path = tmp.path.join("spec.json");
    let spec_bytes = serde_json::to_vec(&spec).expect("spec serializes");
    std::fs::write(&spec_path, &spec_bytes).map_err(|e| io("cannot write the spec", e))?;
    // This very program, whatever its path now names: a step running as its owner could
    // replace the file at that path (~/.cargo/bin/stepctl) with a fake init given the key.
    let exe = Path::new("/proc/self/exe");
    if !exe.exists() {
        return Err(EngineError::new(
            "the local engine needs /proc (to start the init from this very stepctl)",
        ));
    }

    if as_root {
        // Like the setup container of a pod: state, workspace and HOMEs owned as the spec's
        // users need them (the init's own model; see init/README.md).
        let o = Command::new(exe)
            .arg("__init")
            .arg("setup")
            .arg(&tmp.path)
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io("cannot run the init's setup", e))?;
        if !o.status.success() {
            return Err(EngineError::new(format!(
                "the init's setup failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
    }
    // The key of the state journals: the inits alone have it (steps never see it). A spec
    // changed by a step (the run's directory is its user's) makes records that fail it.
    let key = super::state_key()?;
    let auth = RecordAuth::new(&key, &spec_bytes).map_err(EngineError::new)?;
    let sink = make_sink(Collector::new(Some(&plan.spec)), opts.format);
    let started = Instant::now();
    let mut notes = Vec::new();
    let mut namespaces = sandbox::Namespaces::Untried;
    for group in 0..spec.container_count() {
        if signals::interrupted() {
            break;
        }
        let make = |sub: &str| {
            let mut cmd = Command::new(exe);
            cmd.arg(sub)
                .arg("run")
                .arg(&spec_path)
                .arg("--group")
                .arg(group.to_string())
                .arg("--state")
                .arg(&state)
                .arg("--termination-log")
                .arg(tmp.path.join(format!("termination-{group}")))
                .env(manifest::STATE_KEY_ENV, &key)
                .current_dir(&ws)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // SAFETY: setsid and prctl are async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    // A session of its own, without a controlling terminal: a terminal's
                    // Ctrl-C reaches stepctl only, which forwards it once (the init stops the
                    // running step and records it aborted); and no step can open the user's
                    // terminal as /dev/tty, print on it or push keys into the user's shell
                    // (TIOCSTI).
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The init stops its step if stepctl dies.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            cmd
        };
        // PID 1 of its own pid namespace, as in a pod: no step can stop or kill it, and
        // nothing a step starts outlives it.
        let child = sandbox::run_isolated(&mut namespaces, as_root, make)
            .map_err(|e| io("cannot start the init", e))?;
        signals::set_child(child.id() as i32);
        if signals::interrupted() {
            // The signal came between spawn and set_child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let decoders = StreamDecoder::pair(Timestamps::Off, Some(&auth), Some(group as u32));
        let status = relay(child, decoders, &sink);
        signals::set_child(0);
        let status = status.map_err(|e| io("waiting for the init", e))?;
        match status.code() {
            Some(0) | Some(1) | Some(130) => {}
            Some(2) => {
                return Err(EngineError::new(format!(
                    "the init refused the spec of group {group} (exit 2, see above)"
                )))
            }
            Some(c) => notes.push(format!("group {group}: the init exited with code {c}")),
            None => notes.push(format!("group {group}: the init was killed by a signal")),
        }
    }
    let wall = started.elapsed().as_millis() as u64;
    let interrupted = signals::interrupted();
    let result = collect(&sink, &plan.name, interrupted, Some(wall), notes);
    if opts.keep {
        eprintln!("stepctl: kept {}", tmp.path.display());
    }
    Ok((result, interrupted))
}

#[cfg(test)]
mod tests {
    use super::place;
    use std::path::Path;

    #[test]
    fn working_dirs_stay_in_the_workspace() {
        let ws = Path::new("/tmp/w");
        assert_eq!(place("/data", ws), "/tmp/w/");
        assert_eq!(place("/data/x/y", ws), "/tmp/w/x/y");
        assert_eq!(place("/database", ws), "/tmp/w/database");
        assert_eq!(place("/src", ws), "/tmp/w/src");
        assert_eq!(place("rel/dir", ws), "rel/dir");
        // `..` never leads out of the workspace.
        assert_eq!(place("/data/../../..", ws), "/tmp/w/");
        assert_eq!(place("/data/x/../../../etc", ws), "/tmp/w/etc");
        assert_eq!(place("../../etc", ws), "etc");
        assert_eq!(place("a/./b/..", ws), "a");
    }
}
