//! Kubernetes manifests for a plan: a ConfigMap carrying the spec, and a Pod or a Job.
//!
//! Layout of the pod (every container mounts the same five volumes):
//! - `stepinit` (emptyDir) at `/stepinit`: the init copied by setup and the shell, read-only
//!   in every step container (no step may replace the init later containers run with the key);
//! - `stepinit-state` and `stepinit-home` (emptyDirs) at `/stepinit/state` and `/stepinit/home`:
//!   the state journals and the HOMEs, writable;
//! - `stepinit-spec` (the ConfigMap) at `/stepinit-spec`, read-only: `spec.json`;
//! - `workspace` (emptyDir) at `/data`: the directory steps share (Testkube's convention).
//!
//! Containers: `stepinit-setup` (init image: `/init setup /stepinit --spec ...`) and all groups
//! but the last as initContainers, the last group as the container; group N runs
//! `/stepinit/init run /stepinit-spec/spec.json --group N --state /stepinit/state`.
//!
//! The objects are small typed structs for exactly what we generate (serialized through JSON so
//! that `spec.pod` / `spec.job` can be merged in): k8s-openapi would give every field of every
//! type at the price of a long compile on a 2-core CI machine, for the dozen fields used here.

use crate::plan::Plan;
use crate::workflow::Workflow;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const DEFAULT_INIT_IMAGE: &str = "localhost/stepinit/init:dev";
pub const SHARED_DIR: &str = "/stepinit";
pub const SPEC_DIR: &str = "/stepinit-spec";
pub const WORKSPACE_DIR: &str = "/data";
pub const SETUP_NAME: &str = "stepinit-setup";
/// uid/gid of the setup container under `--restricted` (the init image has no USER).
pub const RESTRICTED_UID: u32 = 65532;
/// The most a ConfigMap's data may hold (the API server refuses more).
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Pod,
    Job,
}

/// How each container's init gets the key that authenticates the state journals it hands over
/// (`STEPINIT_STATE_KEY`, see protocol/README.md): steps never see it, so they cannot forge
/// what a later container's init believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKey {
    /// In a Secret `NAME-state` made with the pod, referenced by each container: not in the
    /// pod's plain fields (Kubernetes).
    Secret(String),
    /// In each container's environment: for a manifest that stays in stepctl's private
    /// directory (podman).
    Inline(String),
}

impl StateKey {
    /// 32 random bytes as 64 hex digits.
    pub fn random() -> std::io::Result<String> {
        let mut b = [0u8; 32];
        let mut got = 0;
        while got < b.len() {
            // SAFETY: the buffer is valid for what is left of it.
            let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            got += n as usize;
        }
        Ok(b.iter().map(|x| format!("{x:02x}")).collect())
    }
}

/// The variable that carries the key to each init.
pub const STATE_KEY_ENV: &str = "STEPINIT_STATE_KEY";

/// What a build gives: the objects to apply, by role.
#[derive(Debug, Clone)]
pub struct Objects {
    pub config_map: Value,
    /// The Secret with the state key, when the key is one.
    pub secret: Option<Value>,
    /// The Pod or the Job.
    pub workload: Value,
}

impl Objects {
    /// The spec the inits read, byte for byte (what the run's record key is bound to).
    pub fn spec_json(&self) -> &str {
        self.config_map["data"]["spec.json"]
            .as_str()
            .unwrap_or_default()
    }

    /// In the order to apply them.
    pub fn all(&self) -> Vec<&Value> {
        let mut v = vec![&self.config_map];
        v.extend(self.secret.as_ref());
        v.push(&self.workload);
        v
    }

    /// Multi-document YAML of all of them.
    pub fn to_yaml(&self) -> String {
        to_yaml(&self.all().into_iter().cloned().collect::<Vec<_>>())
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub kind: Kind,
    pub restricted: bool,
    pub init_image: String,
    /// Name of the Pod/Job (the ConfigMap is `NAME-spec`).
    pub name: String,
    /// Extra pod annotations (the podman engine keeps finished initContainers with one).
    pub annotations: BTreeMap<String, String>,
    /// Prefix the volume names with the pod name. Podman 4.3 turns emptyDir volumes into named
    /// volumes shared by every pod using the name; a per-pod name keeps runs apart.
    pub unique_volumes: bool,
    pub state_key: StateKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMap {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta,
    data: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_pull_policy: Option<String>,
    command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_context: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<Value>,
    volume_mounts: Vec<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    restart_policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_context: Option<Map<String, Value>>,
    init_containers: Vec<Container>,
    containers: Vec<Container>,
    volumes: Vec<Value>,
}

/// Labels on everything stepctl creates.
fn labels(workflow: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "stepctl".into()),
        ("stepinit.dev/workflow".into(), dns_label(workflow, 63)),
    ])
}

/// `name` as a DNS label of at most `max` bytes, what Kubernetes takes as the name of a
/// volume, a container or a Job and as a label's value: lowercase, any other character than
/// a letter, a digit or `-` (a workflow's `.`) as `-`; when it must be cut, 8 hex digits of a
/// hash of the whole name keep it apart from other names cut the same way.
pub fn dns_label(name: &str, max: usize) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    if out.is_empty() {
        out = "workflow".into();
    }
    if out.len() > max {
        // FNV-1a of the name as written.
        let mut h: u32 = 0x811c9dc5;
        for b in name.bytes() {
            h = (h ^ b as u32).wrapping_mul(0x01000193);
        }
        out.truncate(max.saturating_sub(9));
        out = format!("{}-{h:08x}", out.trim_end_matches('-'));
    }
    out
}

/// The base of the objects' names for workflow `name`: short enough that every name made from
/// it (`BASE-stepinit-state`, the longest) is a DNS label.
pub fn object_base(name: &str) -> String {
    dns_label(name, 63 - "-stepinit-state".len())
}

fn err(path: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        path: path.into(),
        message: message.into(),
    }
}

fn restrict(
    sc: Option<Map<String, Value>>,
    who: &str,
) -> Result<Map<String, Value>, ManifestError> {
    let mut sc = sc.unwrap_or_default();
    if sc.get("runAsUser").and_then(Value::as_u64) == Some(0) {
        return Err(err(
            who,
            "runs as root (runAsUser: 0), which --restricted cannot allow",
        ));
    }
    if sc.get("privileged") == Some(&Value::Bool(true)) {
        return Err(err(who, "is privileged, which --restricted cannot allow"));
    }
    sc.insert("runAsNonRoot".into(), json!(true));
    sc.insert("allowPrivilegeEscalation".into(), json!(false));
    let mut caps = sc
        .get("capabilities")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    caps.insert("drop".into(), json!(["ALL"]));
    // `restricted` only allows adding NET_BIND_SERVICE.
    if let Some(add) = caps.get("add").and_then(Value::as_array) {
        if add.iter().any(|c| c != "NET_BIND_SERVICE") {
            return Err(err(
                who,
                "adds capabilities other than NET_BIND_SERVICE, which --restricted cannot allow",
            ));
        }
    }
    sc.insert("capabilities".into(), Value::Object(caps));
    sc.insert("seccompProfile".into(), json!({"type": "RuntimeDefault"}));
    Ok(sc)
}

/// The pod's volumes, by role (names prefixed with the pod's when `unique_volumes`).
struct Volumes {
    /// The init and shell setup copies, at [`SHARED_DIR`]: read-only in every step container,
    /// so no step can replace the init that later containers run with the state key.
    stepinit: String,
    /// The state journals, at `SHARED_DIR/state` (writable: each init appends its own).
    state: String,
    /// The HOMEs setup prepares, at `SHARED_DIR/home`.
    home: String,
    /// The ConfigMap with the spec, at [`SPEC_DIR`], read-only.
    spec: String,
    /// The directory the steps share, at [`WORKSPACE_DIR`].
    workspace: String,
}

fn volume_names(o: &BuildOptions) -> Volumes {
    let p = if o.unique_volumes {
        format!("{}-", o.name)
    } else {
        String::new()
    };
    Volumes {
        stepinit: format!("{p}stepinit"),
        state: format!("{p}stepinit-state"),
        home: format!("{p}stepinit-home"),
        spec: format!("{p}stepinit-spec"),
        workspace: format!("{p}workspace"),
    }
}

/// The volume names `unique_volumes` gives a pod called `name` (for removing them after it).
pub fn pod_volumes(name: &str) -> Vec<String> {
    let v = volume_names(&BuildOptions {
        kind: Kind::Pod,
        restricted: false,
        init_image: String::new(),
        name: name.to_string(),
        annotations: BTreeMap::new(),
        unique_volumes: true,
        state_key: StateKey::Inline(String::new()),
    });
    vec![v.stepinit, v.state, v.home, v.spec, v.workspace]
}

/// The setup container's securityContext: the workflow's hardening (capabilities, seccomp,
/// privilege escalation, read-only root, ...) so a namespace's Pod Security level admits it as it
/// admits the steps, but root unless the workflow (or `--restricted`) requires non-root: as root,
/// setup gives each later container's user exactly the ownership it needs; a non-root setup can
/// only fall back to shared modes. Non-root: the workflow's uid/gid, else 65532.
fn setup_security_context(
    wf: Option<&Map<String, Value>>,
    restricted: bool,
) -> Result<Option<Map<String, Value>>, ManifestError> {
    let mut sc = wf.cloned().unwrap_or_default();
    let uid = sc.remove("runAsUser").and_then(|v| v.as_u64());
    let gid = sc.remove("runAsGroup").and_then(|v| v.as_u64());
    let non_root = restricted || sc.get("runAsNonRoot") == Some(&Value::Bool(true));
    if non_root {
        let u = uid.filter(|&u| u != 0).unwrap_or(RESTRICTED_UID as u64);
        sc.insert("runAsUser".into(), json!(u));
        sc.insert("runAsGroup".into(), json!(gid.unwrap_or(u)));
    }
    if restricted {
        sc = restrict(Some(sc), SETUP_NAME)?;
    }
    Ok((!sc.is_empty()).then_some(sc))
}

/// Every container's mounts: setup writes the shared volume, the steps only read it (the state
/// and HOMEs are volumes of their own, mounted inside it).
fn mounts(v: &Volumes, setup: bool, extra: &[Value]) -> Vec<Value> {
    let mut m = vec![
        json!({"name": v.stepinit, "mountPath": SHARED_DIR, "readOnly": !setup}),
        json!({"name": v.state, "mountPath": format!("{SHARED_DIR}/state")}),
        json!({"name": v.home, "mountPath": format!("{SHARED_DIR}/home")}),
        json!({"name": v.spec, "mountPath": SPEC_DIR, "readOnly": true}),
        json!({"name": v.workspace, "mountPath": WORKSPACE_DIR}),
    ];
    m.extend(extra.iter().cloned());
    m
}

/// The spec as a pod's ConfigMap carries it: setup prepares each container's working
/// directory when it is a volume it also mounts, the workspace, shared by all containers
/// (owned per the spec's users, never 0777).
pub fn pod_spec(plan: &Plan) -> stepinit_protocol::Spec {
    let mut spec = plan.spec.clone();
    for c in &mut spec.containers {
        c.working_dir = Some(WORKSPACE_DIR.into());
    }
    spec
}

/// The objects (ConfigMap, then Pod or Job) as JSON values.
pub fn objects(wf: &Workflow, plan: &Plan, o: &BuildOptions) -> Result<Objects, ManifestError> {
    let mut spec = pod_spec(plan);
    let vols = volume_names(o);
    let setup_sc = setup_security_context(wf.container.security_context.as_ref(), o.restricted)?;
    let setup = Container {
        name: SETUP_NAME.into(),
        image: o.init_image.clone(),
        image_pull_policy: None,
        command: vec![
            "/init".into(),
            "setup".into(),
            SHARED_DIR.into(),
            "--spec".into(),
            format!("{SPEC_DIR}/spec.json"),
        ],
        resources: None,
        security_context: setup_sc,
        env: Vec::new(),
        volume_mounts: mounts(&vols, true, &[]),
    };
    let secret_name = format!("{}-state", o.name);
    // The state key, and the sensitive config values, each from the Secret (Kubernetes) or
    // inline (podman: a manifest that stays in stepctl's private directory).
    let from_secret = |name: &str, key: &str, value: &str| match &o.state_key {
        StateKey::Secret(_) => {
            json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
        }
        StateKey::Inline(_) => json!({"name": name, "value": value}),
    };
    let key_value = match &o.state_key {
        StateKey::Secret(k) | StateKey::Inline(k) => k.clone(),
    };
    let mut private_env = vec![from_secret(STATE_KEY_ENV, "key", &key_value)];
    for (i, (var, value)) in plan.secrets.iter().enumerate() {
        private_env.push(from_secret(var, &format!("sensitive-{i}"), value));
    }
    // A uid the pod's own securityContext (spec.pod) gives every container.
    let pod_uid = wf
        .pod
        .as_ref()
        .and_then(|p| p.get("securityContext")?.get("runAsUser")?.as_u64());
    let mut groups = Vec::new();
    for (i, c) in plan.containers.iter().enumerate() {
        let mut sc = c.config.security_context.clone();
        if o.restricted {
            let mut r = restrict(sc, &c.name)?;
            // The kubelet refuses runAsNonRoot when the image runs as root or names its user
            // (a name cannot be verified): such containers run as the restricted uid/gid, the
            // group of the pod's fsGroup, and setup prepares the workspace for that uid.
            if !r.contains_key("runAsUser")
                && c.run_as_user.is_none_or(|u| u == 0)
                && pod_uid.is_none()
            {
                r.insert("runAsUser".into(), json!(RESTRICTED_UID));
                spec.containers[i].run_as_user = Some(RESTRICTED_UID);
                if !r.contains_key("runAsGroup") {
                    r.insert("runAsGroup".into(), json!(RESTRICTED_UID));
                    spec.containers[i].run_as_group = Some(RESTRICTED_UID);
                }
            }
            sc = Some(r);
        }
        groups.push(Container {
            name: c.name.clone(),
            image: c.image.clone(),
            image_pull_policy: c.config.image_pull_policy.clone(),
            command: vec![
                format!("{SHARED_DIR}/init"),
                "run".into(),
                format!("{SPEC_DIR}/spec.json"),
                "--group".into(),
                i.to_string(),
                "--state".into(),
                format!("{SHARED_DIR}/state"),
            ],
            resources: c.config.resources.clone(),
            security_context: sc,
            env: private_env
                .iter()
                .cloned()
                .chain(c.config.value_from().into_iter().map(|(name, from)| {
                    json!({"name": name, "valueFrom": serde_json::to_value(from).unwrap_or_default()})
                }))
                .collect(),
            volume_mounts: mounts(&vols, false, &c.config.volume_mounts),
        });
    }
    let spec_json = serde_json::to_string(&spec).expect("spec serializes");
    if spec_json.len() > MAX_CONFIGMAP_BYTES {
        return Err(err(
            "spec",
            format!(
                "the generated spec.json is {} bytes, more than a ConfigMap holds ({MAX_CONFIGMAP_BYTES}): shorten the scripts or split the workflow",
                spec_json.len()
            ),
        ));
    }
    let cm_name = format!("{}-spec", o.name);
    let cm = ConfigMap {
        api_version: "v1",
        kind: "ConfigMap",
        metadata: Meta {
            name: cm_name.clone(),
            labels: labels(&plan.name),
            annotations: BTreeMap::new(),
        },
        data: BTreeMap::from([("spec.json".to_string(), spec_json)]),
    };
    let last = groups
        .pop()
        .ok_or_else(|| err("spec.steps", "no containers"))?;
    let mut init_containers = vec![setup];
    init_containers.extend(groups);
    let pod_sc = if o.restricted {
        Some(
            json!({
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"},
                // Volumes group-owned by a gid every container has: steps of any uid share them.
                "fsGroup": RESTRICTED_UID,
            })
            .as_object()
            .unwrap()
            .clone(),
        )
    } else {
        None
    };
    let pod_spec = PodSpec {
        restart_policy: "Never",
        security_context: pod_sc,
        init_containers,
        containers: vec![last],
        volumes: vec![
            json!({"name": vols.stepinit, "emptyDir": {}}),
            json!({"name": vols.state, "emptyDir": {}}),
            json!({"name": vols.home, "emptyDir": {}}),
            json!({"name": vols.spec, "configMap": {"name": cm_name}}),
            json!({"name": vols.workspace, "emptyDir": {}}),
        ],
    };
    let mut pod_spec = serde_json::to_value(&pod_spec).expect("pod spec serializes");
    let mut pod_meta = json!({"labels": labels(&plan.name)});
    if !o.annotations.is_empty() {
        pod_meta["annotations"] = json!(o.annotations);
    }
    if let Some(over) = &wf.pod {
        for (k, v) in over {
            let path = format!("spec.pod.{k}");
            match k.as_str() {
                "labels" | "annotations" => {
                    string_map(v, &path)?;
                    merge(&mut pod_meta[k.as_str()], v);
                }
                "containers" | "initContainers" | "restartPolicy" => {
                    return Err(err(
                        &path,
                        "is generated by stepctl and cannot be overridden",
                    ))
                }
                _ => merge(&mut pod_spec[k.as_str()], v),
            }
        }
        if o.restricted {
            // Overrides must not undo the restricted profile.
            let sc = &mut pod_spec["securityContext"];
            sc["runAsNonRoot"] = json!(true);
            sc["seccompProfile"] = json!({"type": "RuntimeDefault"});
        }
    }
    // A Job's deadline bounds a bare pod too (`--kind pod` of a workflow that sets it in
    // spec.job): the pod's own wins.
    if let (Kind::Pod, Some(d)) = (o.kind, plan.deadline_s) {
        if pod_spec
            .get("activeDeadlineSeconds")
            .is_none_or(Value::is_null)
        {
            pod_spec["activeDeadlineSeconds"] = json!(d);
        }
    }
    let cm = serde_json::to_value(&cm).expect("configmap serializes");
    let cm: Value = cm;
    let obj = match o.kind {
        Kind::Pod => {
            let mut meta = pod_meta;
            meta["name"] = json!(o.name);
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec})
        }
        Kind::Job => {
            let mut job_meta = json!({"name": o.name, "labels": labels(&plan.name)});
            let mut job_spec = json!({
                // The workflow's result is the pod's: never retry the whole pod.
                "backoffLimit": 0,
                "template": {"metadata": pod_meta, "spec": pod_spec},
            });
            if let Some(over) = &wf.job {
                for (k, v) in over {
                    let path = format!("spec.job.{k}");
                    match k.as_str() {
                        "labels" | "annotations" => {
                            string_map(v, &path)?;
                            merge(&mut job_meta[k.as_str()], v);
                        }
                        "namespace" => {
                            if !v.is_string() {
                                return Err(err(&path, "must be a string"));
                            }
                            job_meta["namespace"] = v.clone();
                        }
                        "template" | "selector" => {
                            return Err(err(
                                &path,
                                "is generated by stepctl; use spec.pod for the pod template",
                            ))
                        }
                        _ => merge(&mut job_spec[k.as_str()], v),
                    }
                }
            }
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": job_spec})
        }
    };
    let mut cm = cm;
    let mut secret = match &o.state_key {
        StateKey::Secret(k) => {
            let mut data = Map::new();
            data.insert("key".into(), json!(k));
            for (i, (_, value)) in plan.secrets.iter().enumerate() {
                data.insert(format!("sensitive-{i}"), json!(value));
            }
            Some(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "labels": labels(&plan.name)},
                "type": "Opaque",
                "stringData": data,
            }))
        }
        StateKey::Inline(_) => None,
    };
    if let Some(ns) = obj["metadata"].get("namespace").cloned() {
        // The ConfigMap and the Secret must live where the pod does.
        cm["metadata"]["namespace"] = ns.clone();
        if let Some(s) = &mut secret {
            s["metadata"]["namespace"] = ns;
        }
    }
    Ok(Objects {
        config_map: cm,
        secret,
        workload: obj,
    })
}

fn string_map(v: &Value, path: &str) -> Result<(), ManifestError> {
    match v.as_object() {
        Some(m) if m.values().all(Value::is_string) => Ok(()),
        _ => Err(err(path, "must be a mapping of strings")),
    }
}

/// Deep merge of an override into a generated value: mappings merge key by key; lists of named
/// objects (volumes, tolerations with names, ...) merge by `name` (new names are appended); other
/// lists and scalars are replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(b), Value::Array(o))
            if o.iter()
                .all(|x| x.get("name").is_some_and(Value::is_string))
                && b.iter()
                    .all(|x| x.get("name").is_some_and(Value::is_string)) =>
        {
            for item in o {
                match b.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Multi-document YAML of the objects.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(o).expect("YAML of a JSON value"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str, kind: Kind, restricted: bool) -> Result<Vec<Value>, ManifestError> {
        let wf = crate::workflow::parse("t.yaml", yaml).unwrap();
        let plan = crate::plan::plan(&wf, None).unwrap();
        objects(
            &wf,
            &plan,
            &BuildOptions {
                kind,
                restricted,
                init_image: DEFAULT_INIT_IMAGE.into(),
                name: wf.name.clone(),
                annotations: BTreeMap::new(),
                unique_volumes: false,
                state_key: StateKey::Inline("00".repeat(32)),
            },
        )
        .map(|o| o.all().into_iter().cloned().collect())
    }

    /// The kubelet refuses to start a `runAsNonRoot` container whose image runs as root or names
    /// its user (it cannot verify a name): under --restricted such containers get a uid.
    #[test]
    fn restricted_containers_without_a_known_non_root_uid_get_one() {
        let yaml = "kind: TestWorkflow\nmetadata: {name: t}\nspec:\n  steps:\n  - shell: a\n  - shell: b\n    container: {securityContext: {runAsUser: 1001}}\n";
        let wf = crate::workflow::parse("t.yaml", yaml).unwrap();
        let mut plan = crate::plan::plan(&wf, None).unwrap();
        // As fill_users leaves them: the first image declares no USER (root).
        plan.containers[0].run_as_user = Some(0);
        let o = BuildOptions {
            kind: Kind::Pod,
            restricted: true,
            init_image: DEFAULT_INIT_IMAGE.into(),
            name: "t".into(),
            annotations: BTreeMap::new(),
            unique_volumes: false,
            state_key: StateKey::Secret("00".repeat(32)),
        };
        for unknown in [false, true] {
            if unknown {
                plan.containers[0].run_as_user = None;
            }
            let objs = objects(&wf, &plan, &o).unwrap();
            let objs = [objs.config_map, objs.workload];
            let inits = objs[1]["spec"]["initContainers"].as_array().unwrap();
            let sc = &inits[1]["securityContext"];
            assert_eq!(sc["runAsUser"], RESTRICTED_UID, "{sc}");
            assert_eq!(sc["runAsGroup"], RESTRICTED_UID, "{sc}");
            // The workflow's own uid is kept.
            let last = &objs[1]["spec"]["containers"][0]["securityContext"];
            assert_eq!(last["runAsUser"], 1001, "{last}");
            assert_eq!(last.get("runAsGroup"), None, "{last}");
            // Setup prepares the workspace for the uid the container really gets.
            let spec: stepinit_protocol::Spec =
                serde_json::from_str(objs[0]["data"]["spec.json"].as_str().unwrap()).unwrap();
            assert_eq!(spec.containers[0].run_as_user, Some(RESTRICTED_UID));
            assert_eq!(spec.containers[0].run_as_group, Some(RESTRICTED_UID));
            assert_eq!(spec.containers[1].run_as_user, Some(1001));
        }
        // Without --restricted nothing is added.
        let objs = objects(
            &wf,
            &plan,
            &BuildOptions {
                restricted: false,
                ..o
            },
        )
        .unwrap();
        let inits = objs.workload["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(inits[1]["securityContext"], Value::Null);
    }

    /// The state key reaches every init and nothing else: from a Secret, or inline.
    #[test]
    fn the_state_key_reaches_each_init_only() {
        let yaml = "kind: TestWorkflow\nmetadata: {name: t}\nspec:\n  steps:\n  - shell: a\n  - shell: b\n    container: {image: other}\n";
        let wf = crate::workflow::parse("t.yaml", yaml).unwrap();
        let plan = crate::plan::plan(&wf, None).unwrap();
        let key = "ab".repeat(32);
        for sk in [StateKey::Secret(key.clone()), StateKey::Inline(key.clone())] {
            let o = BuildOptions {
                kind: Kind::Pod,
                restricted: false,
                init_image: DEFAULT_INIT_IMAGE.into(),
                name: "t".into(),
                annotations: BTreeMap::new(),
                unique_volumes: false,
                state_key: sk.clone(),
            };
            let objs = objects(&wf, &plan, &o).unwrap();
            let spec = &objs.workload["spec"];
            let groups = [&spec["initContainers"][1], &spec["containers"][0]];
            for c in groups {
                let env = &c["env"][0];
                assert_eq!(env["name"], STATE_KEY_ENV);
                match &sk {
                    StateKey::Secret(_) => {
                        assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "t-state");
                        assert_eq!(env.get("value"), None);
                    }
                    StateKey::Inline(_) => assert_eq!(env["value"], key.as_str()),
                }
            }
            assert_eq!(
                spec["initContainers"][0]["env"],
                Value::Null,
                "setup needs no key"
            );
            let all = objs.to_yaml();
            match &sk {
                StateKey::Secret(_) => {
                    assert_eq!(all.matches(key.as_str()).count(), 1, "only in the Secret");
                    assert_eq!(
                        objs.secret.as_ref().unwrap()["stringData"]["key"],
                        key.as_str()
                    );
                }
                StateKey::Inline(_) => assert!(objs.secret.is_none()),
            }
            // The spec the ConfigMap carries never has it.
            assert!(!objs.config_map.to_string().contains(&key));
        }
        assert_ne!(StateKey::random().unwrap(), StateKey::random().unwrap());
    }

    #[test]
    fn groups_become_init_containers_and_the_last_the_container() {
        let o = build(
            include_str!("../tests/workflows/pure-steps.yaml"),
            Kind::Pod,
            false,
        )
        .unwrap();
        let spec = &o[1]["spec"];
        let inits = spec["initContainers"].as_array().unwrap();
        assert_eq!(inits.len(), 2);
        assert_eq!(inits[0]["name"], SETUP_NAME);
        assert_eq!(inits[1]["name"], "group-0");
        assert_eq!(spec["containers"][0]["name"], "group-1");
        assert_eq!(spec["containers"][0]["command"][4], "1");
        assert_eq!(spec["restartPolicy"], "Never");
        let cm_spec: stepinit_protocol::Spec =
            serde_json::from_str(o[0]["data"]["spec.json"].as_str().unwrap()).unwrap();
        assert_eq!(cm_spec.container_count(), 2);
    }

    #[test]
    fn a_spec_too_big_for_a_configmap_is_refused() {
        let big = "x".repeat(MAX_CONFIGMAP_BYTES);
        let e = build(
            &format!("kind: TestWorkflow\nmetadata: {{name: t}}\nspec:\n  steps:\n  - shell: echo {big}\n"),
            Kind::Pod,
            false,
        )
        .unwrap_err();
        assert_eq!(e.path, "spec");
        assert!(
            e.message.contains("more than a ConfigMap holds (1048576)"),
            "{e}"
        );
    }

    #[test]
    fn workflow_security_context_reaches_every_container() {
        let o = build(
            include_str!("../tests/workflows/defaults-no-registry.yaml"),
            Kind::Job,
            false,
        )
        .unwrap();
        let pod = &o[1]["spec"]["template"]["spec"];
        let inits = pod["initContainers"].as_array().unwrap();
        for c in inits[1..]
            .iter()
            .chain(pod["containers"].as_array().unwrap())
        {
            assert_eq!(c["securityContext"]["runAsUser"], 1001, "{}", c["name"]);
        }
        // Setup stays root (to give 1001 what it needs) and keeps the workflow's hardening.
        assert_eq!(inits[0]["securityContext"], Value::Null);
        assert_eq!(o[1]["spec"]["backoffLimit"], 0);
        let o = build(
            "kind: TestWorkflow\nmetadata: {name: t}\nspec:\n  container: {securityContext: {runAsUser: 1001, runAsNonRoot: true, capabilities: {drop: [ALL]}}}\n  steps: [{shell: a}]\n",
            Kind::Pod,
            false,
        )
        .unwrap();
        let sc = &o[1]["spec"]["initContainers"][0]["securityContext"];
        assert_eq!(
            sc["runAsUser"], 1001,
            "non-root required: the workflow's uid"
        );
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    }

    #[test]
    fn restricted_hardens_every_container_and_refuses_root() {
        let o = build(
            include_str!("../tests/workflows/pure-steps.yaml"),
            Kind::Pod,
            true,
        )
        .unwrap();
        let spec = &o[1]["spec"];
        for c in spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["containers"].as_array().unwrap())
        {
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true);
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        }
        let e = build(
            "kind: TestWorkflow\nmetadata: {name: t}\nspec:\n  container: {securityContext: {runAsUser: 0}}\n  steps: [{shell: a}]\n",
            Kind::Pod,
            true,
        )
        .unwrap_err();
        // Setup itself runs as 65532 then; the step container may not run as root.
        assert_eq!(e.path, "group-0");
    }

    #[test]
    fn pod_and_job_overrides_merge() {
        let o = build(
            "kind: TestWorkflow\nmetadata: {name: t}\nspec:\n  pod:\n    labels: {team: a}\n    serviceAccountName: runner\n    volumes: [{name: extra, emptyDir: {}}, {name: workspace, emptyDir: {medium: Memory}}]\n  job: {activeDeadlineSeconds: 60, labels: {x: y}, namespace: tests}\n  steps: [{shell: a}]\n",
            Kind::Job,
            false,
        )
        .unwrap();
        let job = &o[1];
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 60);
        assert_eq!(job["metadata"]["namespace"], "tests");
        assert_eq!(
            o[0]["metadata"]["namespace"], "tests",
            "the ConfigMap follows the Job"
        );
        assert_eq!(job["metadata"]["labels"]["x"], "y");
        let pod = &job["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["team"], "a");
        assert_eq!(pod["spec"]["serviceAccountName"], "runner");
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 6, "the five of stepctl and the workflow's own");
        let ws = vols.iter().find(|v| v["name"] == "workspace").unwrap();
        assert_eq!(ws["emptyDir"]["medium"], "Memory");
        let e = build(
            "kind: TestWorkflow\nmetadata: {name: t}\nspec:\n  pod: {containers: []}\n  steps: [{shell: a}]\n",
            Kind::Pod,
            false,
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.pod.containers");
    }
}
