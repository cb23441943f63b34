//! Helpers for stepinit's end-to-end tests in real containers: podman (configured by
//! `tests/podman/containers.conf`), pods played from hand-written Pod YAML with `podman kube play`,
//! container logs decoded with the protocol's streaming decoder, and cleanup guards.
//!
//! Every helper fails loudly (panics with the command, its exit status and stderr): these tests
//! never skip because podman or an image is missing. Images come from `images/build`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
pub use stepinit_protocol::{spec, Decoded, Decoder, Event, Record, Spec, Status, Step};

pub const INIT_IMAGE: &str = "localhost/stepinit/init:dev";
pub const BUSYBOX_IMAGE: &str = "localhost/stepinit/test-busybox:dev";
pub const USER_IMAGE: &str = "localhost/stepinit/test-busybox-user:dev";
pub const SCRATCH_IMAGE: &str = "localhost/stepinit/test-scratch:dev";
pub const ALL_IMAGES: [&str; 4] = [INIT_IMAGE, BUSYBOX_IMAGE, USER_IMAGE, SCRATCH_IMAGE];

/// Where the shared emptyDir holding the init, its `sh` and the state is mounted in every container.
pub const SHARED: &str = "/stepinit";
/// Where the workspace emptyDir is mounted in every container.
pub const WORKSPACE: &str = "/workspace";
/// Where the spec ConfigMap is mounted (read-only) in every container.
pub const SPEC_DIR: &str = "/spec";
/// The state directory passed as `--state`.
pub const STATE_DIR: &str = "/stepinit/state";

/// The variable that carries the state journals' key to each init.
pub const STATE_KEY_ENV: &str = "STEPINIT_STATE_KEY";

/// The key that tests/podman/example-pod.yaml shows (tests use a fresh one).
pub const EXAMPLE_KEY: &str = "5eb63bbbe01eeed093cb22bb8f5acdc35eb63bbbe01eeed093cb22bb8f5acdc3";

/// 32 random bytes as 64 hex digits: a state key.
pub fn random_key() -> String {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
        &mut b,
    )
    .expect("random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A `podman` command configured with the project's containers.conf.
pub fn podman_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("podman");
    c.env(
        "CONTAINERS_CONF",
        repo_root().join("tests/podman/containers.conf"),
    );
    c.args(args);
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion within `limit`; panics if it cannot start or runs too long.
pub fn run_limited(mut c: Command, limit: Duration) -> Output {
    let what = describe(&c);
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{what}`: {e} (is podman installed? tests/install-deps)")
        });
    wait_output(child, limit, &what)
}

/// Waits for a spawned child with piped output, killing it and panicking after `limit`.
pub fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    // Drain the pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            std::io::Read::read_to_end(o, &mut v).ok();
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            std::io::Read::read_to_end(e, &mut v).ok();
        }
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("`{what}` still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Runs podman for cleanup: never panics (safe in `Drop` while unwinding); gives up after
/// `limit`, killing it.
pub fn podman_quiet(args: &[&str], limit: Duration) {
    let Ok(mut child) = podman_cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let deadline = Instant::now() + limit;
    while let Ok(None) = child.try_wait() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "cleanup: `podman {}` still running after {limit:?}: killed",
                args.join(" ")
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs podman with the given arguments (2 minutes at most) and returns its output, whatever
/// its exit status.
pub fn podman<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_limited(podman_cmd(args), Duration::from_secs(120))
}

/// Runs podman and returns its stdout; panics (with stderr) unless it exits 0.
pub fn podman_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let c = podman_cmd(args);
    let what = describe(&c);
    let o = run_limited(c, Duration::from_secs(120));
    assert!(
        o.status.success(),
        "`{what}` failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Panics unless podman runs and every test image exists (built by `images/build`).
pub fn require_images() {
    let v = podman_ok(["version", "--format", "{{.Client.Version}}"]);
    assert!(!v.trim().is_empty(), "podman version printed nothing");
    for image in ALL_IMAGES {
        let o = podman(["image", "exists", image]);
        assert!(
            o.status.success(),
            "image {image} is missing: run images/build first (tests/e2e/run does)"
        );
    }
}

/// A name unique to this test process and call, usable as a pod, container or volume name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "e2e-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the decoder found in a container's logs.
#[derive(Debug, Default, Clone)]
pub struct Logs {
    pub records: Vec<Record>,
    /// The steps' stdout bytes, exactly.
    pub stdout: Vec<u8>,
    /// The steps' stderr bytes, exactly.
    pub stderr: Vec<u8>,
    /// Framing errors (must be none for a stream the init wrote).
    pub invalid: Vec<&'static str>,
    /// Records found on stderr (must be none: records go to stdout only).
    pub stderr_records: Vec<Record>,
}

impl Logs {
    pub fn decode(stdout: &[u8], stderr: &[u8]) -> Logs {
        let out = Decoded::from_stream(stdout);
        let err = Decoded::from_stream(stderr);
        Logs {
            records: out.records,
            stdout: out.output,
            stderr: err.output,
            invalid: [out.invalid, err.invalid].concat(),
            stderr_records: err.records,
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The end record of `step` (the last one, for retried steps); panics with all records if none.
    pub fn end(&self, step: &str) -> (Status, Option<i32>, Option<String>) {
        self.records
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::End {
                    step: s,
                    status,
                    code,
                    reason,
                    ..
                } if s == step => Some((*status, *code, reason.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no end record for step {step:?} in {:#?}", self.records))
    }

    pub fn status(&self, step: &str) -> Status {
        self.end(step).0
    }

    pub fn started(&self, step: &str) -> bool {
        self.starts(step) > 0
    }

    /// How many `start` records `step` has (its attempts, across restarts of the container).
    pub fn starts(&self, step: &str) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Start { step: s, .. } if s == step))
            .count()
    }

    /// How many `end` records `step` has.
    pub fn ends(&self, step: &str) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::End { step: s, .. } if s == step))
            .count()
    }

    /// The duration in the last `end` record of `step`; panics with all records if none.
    pub fn end_ms(&self, step: &str) -> u64 {
        self.records
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::End { step: s, ms, .. } if s == step => Some(*ms),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no end record for step {step:?} in {:#?}", self.records))
    }

    /// The `done` record; panics unless there is exactly one and it is the last record.
    pub fn done(&self) -> (Status, bool) {
        let dones: Vec<_> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Done { status, last, .. } => Some((*status, *last)),
                _ => None,
            })
            .collect();
        assert_eq!(
            dones.len(),
            1,
            "expected one done record: {:#?}",
            self.records
        );
        assert!(
            matches!(self.records.last(), Some(Record::Done { .. })),
            "done is not the last record: {:#?}",
            self.records
        );
        dones[0]
    }

    /// Panics if the framing was broken or a record went to stderr.
    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.invalid.is_empty(),
            "{what}: framing errors {:?}",
            self.invalid
        );
        assert!(
            self.stderr_records.is_empty(),
            "{what}: records on stderr {:?}",
            self.stderr_records
        );
    }
}

/// A container's logs (stdout and stderr kept apart by podman's k8s-file driver), decoded.
pub fn container_logs(name: &str) -> Logs {
    let o = podman(["logs", name]);
    assert!(
        o.status.success(),
        "podman logs {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Logs::decode(&o.stdout, &o.stderr)
}

/// A container's state as podman reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrState {
    /// `created`, `running`, `exited`, ...
    pub status: String,
    pub exit_code: i32,
}

/// `podman inspect` arguments for "STATUS EXIT_CODE" of a container.
fn state_args(name: &str) -> [&str; 6] {
    [
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        name,
    ]
}

/// Parses "STATUS EXIT_CODE" as `podman inspect` prints it.
fn parse_state(out: &str) -> Option<CtrState> {
    let mut it = out.split_whitespace();
    Some(CtrState {
        status: it.next()?.to_string(),
        exit_code: it.next()?.parse().ok()?,
    })
}

/// The container's state, or `None` when podman does not know it (yet).
pub fn try_inspect(name: &str) -> Option<CtrState> {
    let o = podman(state_args(name));
    if !o.status.success() {
        return None;
    }
    parse_state(&String::from_utf8_lossy(&o.stdout))
}

/// The container's state; panics (with podman's stderr) when podman does not know it.
pub fn inspect(name: &str) -> CtrState {
    let out = podman_ok(state_args(name));
    parse_state(&out).unwrap_or_else(|| panic!("cannot parse podman inspect output {out:?}"))
}

/// Polls (tests may poll; the init never does) until `cond` holds, panicking after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the container has exited and returns its exit code.
pub fn wait_exited(name: &str, limit: Duration) -> i32 {
    let mut code = 0;
    wait_until(&format!("container {name} to exit"), limit, || {
        let s = inspect(name);
        code = s.exit_code;
        s.status == "exited" || s.status == "stopped"
    });
    code
}

/// One container of a test pod.
#[derive(Debug, Clone)]
pub struct Ctr {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// securityContext runAsUser/runAsGroup.
    pub user: Option<(u32, u32)>,
    pub working_dir: Option<String>,
}

impl Ctr {
    pub fn new(name: &str, image: &str, command: &[&str]) -> Ctr {
        Ctr {
            name: name.into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            user: None,
            working_dir: None,
        }
    }

    pub fn user(mut self, uid: u32, gid: u32) -> Ctr {
        self.user = Some((uid, gid));
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Ctr {
        self.working_dir = Some(dir.into());
        self
    }

    /// The container that runs group `group` of the spec: `<shared>/init run SPEC --group N
    /// --state DIR` (the init that setup copied, so it works in any image).
    pub fn group(name: &str, image: &str, group: u32) -> Ctr {
        let g = group.to_string();
        let spec = format!("{SPEC_DIR}/spec.json");
        let init = format!("{SHARED}/init");
        Ctr::new(
            name,
            image,
            &[&init, "run", &spec, "--group", &g, "--state", STATE_DIR],
        )
    }

    /// The setup container: the init image's `/init setup <shared> --spec SPEC`.
    pub fn setup() -> Ctr {
        let spec = format!("{SPEC_DIR}/spec.json");
        Ctr::new(
            "setup",
            INIT_IMAGE,
            &["/init", "setup", SHARED, "--spec", &spec],
        )
    }
}

/// A running `podman kube play`; killed when dropped before it was waited for.
pub struct Play(Option<Child>);

impl Play {
    pub fn wait(mut self, limit: Duration) -> Output {
        wait_output(self.0.take().unwrap(), limit, "podman kube play")
    }
}

impl Drop for Play {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A pod played with `podman kube play`, removed with its volumes and files when dropped (also
/// when the test panics).
pub struct Pod {
    pub name: String,
    /// The pod's YAML (a ConfigMap holding the spec, then the Pod).
    pub yaml: String,
    pub yaml_path: PathBuf,
    /// Host directory for the pod's files (YAML, termination logs).
    pub dir: PathBuf,
    /// Container names in start order: initContainers, then the last container.
    pub containers: Vec<String>,
}

impl Pod {
    /// Builds a pod: `init_ctrs` run in order as initContainers, `last` as the only container.
    /// Every container mounts the shared emptyDir at [`SHARED`], the workspace emptyDir at
    /// [`WORKSPACE`], the spec ConfigMap at [`SPEC_DIR`], and a host file at
    /// `/dev/termination-log` (as the kubelet does; podman has no termination messages).
    pub fn new(prefix: &str, spec: &Spec, init_ctrs: &[Ctr], last: &Ctr) -> Pod {
        let name = unique(prefix);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("pod dir");
        let spec_json = serde_json::to_string(spec).expect("spec serializes");
        let mut containers = Vec::new();
        // podman 4.3 makes an emptyDir a *named* volume called after the pod's volume name,
        // shared with every other pod using that name and kept after `pod rm`: unique names.
        let (shared, workspace) = (format!("{name}-shared"), format!("{name}-workspace"));
        // The state and the HOMEs are volumes of their own inside the shared one, which the
        // steps only read (no step may replace the init), as stepctl lays pods out.
        let (state, home) = (format!("{name}-state"), format!("{name}-home"));
        // (Read-only only where setup ran first: it makes the mount points inside.)
        let has_setup = init_ctrs.iter().any(|c| c.name == "setup");
        let mut volumes = vec![
            json!({"name": shared, "emptyDir": {}}),
            json!({"name": state, "emptyDir": {}}),
            json!({"name": home, "emptyDir": {}}),
            json!({"name": workspace, "emptyDir": {}}),
            json!({"name": "spec", "configMap": {"name": format!("{name}-spec")}}),
        ];
        // Each pod's inits share a key of their own for the state journals (steps never see it).
        let key = random_key();
        let mut ctr_json = |c: &Ctr| -> Value {
            let term = dir.join(format!("term-{}", c.name));
            std::fs::write(&term, b"").expect("termination log file");
            // The kubelet makes it writable by any uid too.
            std::fs::set_permissions(&term, std::fs::Permissions::from_mode(0o666))
                .expect("chmod termination log");
            let vol = format!("term-{}", c.name);
            volumes.push(json!({
                "name": vol,
                "hostPath": {"path": term, "type": "File"}
            }));
            containers.push(format!("{name}-{}", c.name));
            let mut v = json!({
                "name": c.name,
                "image": c.image,
                "command": c.command,
                "volumeMounts": [
                    {"name": shared, "mountPath": SHARED, "readOnly": has_setup && c.name != "setup"},
                    {"name": state, "mountPath": format!("{SHARED}/state")},
                    {"name": home, "mountPath": format!("{SHARED}/home")},
                    {"name": workspace, "mountPath": WORKSPACE},
                    {"name": "spec", "mountPath": SPEC_DIR, "readOnly": true},
                    {"name": vol, "mountPath": "/dev/termination-log"},
                ],
                "env": [{"name": STATE_KEY_ENV, "value": key}],
            });
            if let Some((u, g)) = c.user {
                v["securityContext"] = json!({"runAsUser": u, "runAsGroup": g});
            }
            if let Some(w) = &c.working_dir {
                v["workingDir"] = json!(w);
            }
            v
        };
        let inits: Vec<Value> = init_ctrs.iter().map(&mut ctr_json).collect();
        let main = ctr_json(last);
        let configmap = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": format!("{name}-spec")},
            "data": {"spec.json": spec_json},
        });
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                // Keep finished init containers (podman removes them by default), so their logs
                // and exit codes can be read.
                "annotations": {"io.podman.annotations.init.container.type": "always"},
            },
            "spec": {
                "restartPolicy": "Never",
                "initContainers": inits,
                "containers": [main],
                "volumes": volumes,
            },
        });
        // JSON is YAML: no hand-escaping of scripts.
        let yaml = format!(
            "{}\n---\n{}\n",
            serde_json::to_string_pretty(&configmap).unwrap(),
            serde_json::to_string_pretty(&pod).unwrap()
        );
        let yaml_path = dir.join("pod.yaml");
        std::fs::write(&yaml_path, &yaml).expect("write pod yaml");
        Pod {
            name,
            yaml,
            yaml_path,
            dir,
            containers,
        }
    }

    /// A pod from a YAML file whose names all start with `prefix` (e.g. `stepinit-example`):
    /// every occurrence is replaced by a unique name, so the file can be played by tests running
    /// concurrently. `containers` are the short names, in start order.
    pub fn from_file(path: &Path, prefix: &str, containers: &[&str]) -> Pod {
        let name = unique("file");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("pod dir");
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.contains(prefix),
            "{} never says {prefix}",
            path.display()
        );
        // A key of its own too, in place of the file's example one.
        assert!(
            text.contains(EXAMPLE_KEY),
            "{} has no example key",
            path.display()
        );
        let yaml = text
            .replace(prefix, &name)
            .replace(EXAMPLE_KEY, &random_key());
        let yaml_path = dir.join("pod.yaml");
        std::fs::write(&yaml_path, &yaml).expect("write pod yaml");
        Pod {
            containers: containers.iter().map(|c| format!("{name}-{c}")).collect(),
            name,
            yaml,
            yaml_path,
            dir,
        }
    }

    /// The full podman name of container `short` (`<pod>-<short>`).
    pub fn ctr(&self, short: &str) -> String {
        format!("{}-{short}", self.name)
    }

    /// `podman kube play` in the background: it returns once the last container has started (it
    /// runs the initContainers one after another first), or when an initContainer failed.
    /// Declare the returned guard after the pod: it is dropped first, killing a kube play still
    /// running (it holds the pod's lock, which would block the pod's removal).
    pub fn play_spawn(&self) -> Play {
        let child = podman_cmd(["kube", "play"])
            .arg(&self.yaml_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn podman kube play");
        Play(Some(child))
    }

    /// `podman kube play`, waited for (at most `limit`).
    pub fn play(&self, limit: Duration) -> Output {
        self.play_spawn().wait(limit)
    }

    /// Plays the pod, waits for its last container to exit, and returns its exit code; panics
    /// if kube play fails.
    pub fn run_to_end(&self, limit: Duration) -> i32 {
        let t = Instant::now();
        let o = self.play(limit);
        assert!(
            o.status.success(),
            "podman kube play failed ({}): {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            self.debug()
        );
        let last = self.containers.last().unwrap().clone();
        wait_exited(&last, limit.saturating_sub(t.elapsed()))
    }

    /// The termination log the container wrote (read from the host file mounted there).
    pub fn termination_log(&self, short: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("term-{short}"))).expect("termination log")
    }

    /// Creates the pod's volume `short` before the pod is played (podman's emptyDir is a named
    /// volume: kube play then uses this one) and returns its host directory.
    pub fn precreate_volume(&self, short: &str) -> PathBuf {
        podman_ok(["volume", "create", &format!("{}-{short}", self.name)]);
        self.volume_dir(short)
    }

    /// The host directory holding the pod's volume `short` (`shared`, `workspace`, `spec`).
    pub fn volume_dir(&self, short: &str) -> PathBuf {
        let out = podman_ok([
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            &format!("{}-{short}", self.name),
        ]);
        PathBuf::from(out.trim())
    }

    /// Logs, states and the YAML of every container, for failure messages.
    pub fn debug(&self) -> String {
        let mut s = format!("pod {}:\n", self.name);
        for c in &self.containers {
            let o = podman(["logs", c]);
            let st = podman(state_args(c));
            s.push_str(&format!(
                "--- {c}: {}stdout: {}\nstderr: {}\n",
                String::from_utf8_lossy(&st.stdout),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        s
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if std::env::var_os("STEPINIT_E2E_KEEP").is_some() {
            eprintln!(
                "STEPINIT_E2E_KEEP: keeping pod {} and {}",
                self.name,
                self.dir.display()
            );
            return;
        }
        // Best effort, never panicking in drop: remove the pod (its containers), its volumes
        // (ConfigMap and emptyDirs are named volumes in podman) and the host files.
        let limit = Duration::from_secs(60);
        podman_quiet(&["pod", "rm", "-f", "-t", "0", &self.name], limit);
        for v in ["spec", "shared", "state", "home", "workspace"] {
            podman_quiet(
                &["volume", "rm", "-f", &format!("{}-{v}", self.name)],
                limit,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A leaf step running `command` in container `container`.
pub fn cmd_step(id: &str, container: u32, command: &[&str]) -> Step {
    Step {
        id: Some(id.into()),
        command: command.iter().map(|s| s.to_string()).collect(),
        container: Some(container),
        ..Default::default()
    }
}

/// A leaf step running a shell script in container `container`.
pub fn shell_step(id: &str, container: u32, script: &str) -> Step {
    Step {
        id: Some(id.into()),
        shell: Some(script.into()),
        container: Some(container),
        ..Default::default()
    }
}

/// A spec container entry.
pub fn spec_ctr(
    name: &str,
    user: Option<(u32, u32)>,
    working_dir: Option<&str>,
) -> spec::Container {
    spec::Container {
        name: Some(name.into()),
        run_as_user: user.map(|u| u.0),
        run_as_group: user.map(|u| u.1),
        working_dir: working_dir.map(String::from),
    }
}

pub fn new_spec(containers: Vec<spec::Container>, steps: Vec<Step>) -> Spec {
    let s = Spec {
        version: stepinit_protocol::VERSION,
        shell: None,
        env: vec![],
        containers,
        steps,
    };
    s.validate().expect("test spec is valid");
    s
}

/// Removes a container started with `podman run --name NAME` when dropped (also on panic).
pub struct CtrGuard(pub String);

impl Drop for CtrGuard {
    fn drop(&mut self) {
        podman_quiet(&["rm", "-f", "-t", "0", &self.0], Duration::from_secs(60));
    }
}

/// The init built at the contract path (`images/build` builds it).
pub fn init_binary() -> PathBuf {
    let p = repo_root().join("target/x86_64-unknown-linux-musl/release/init");
    assert!(
        p.is_file(),
        "{} is missing: run images/build (or cargo build --release -p stepinit --target x86_64-unknown-linux-musl)",
        p.display()
    );
    p
}

/// `podman run` arguments that put the host's init at `/sbin/stepinit` (read-only) in the
/// container, to test wrap mode as PID 1 in an ordinary image.
pub fn mount_init() -> String {
    format!("{}:/sbin/stepinit:ro", init_binary().display())
}

/// Every path under `dir` (itself included) with its mode, owner and group, not following
/// symlinks.
pub fn walk(dir: &Path) -> Vec<(PathBuf, u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        out.push((p, m.mode() & 0o7777, m.uid(), m.gid()));
    }
    out
}

/// Panics unless `kubernetes-validate --strict` accepts the YAML file (every resource in it).
/// Run as `python3 -m kubernetes_validate`: the python3 that tests/install-deps installed it for.
pub fn assert_valid_kubernetes(path: &Path) {
    let mut c = Command::new("python3");
    c.args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(path);
    let o = run_limited(c, Duration::from_secs(120));
    assert!(
        o.status.success(),
        "kubernetes-validate {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
