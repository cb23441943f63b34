//! The Testkube TestWorkflow subset stepctl understands: parsing and validation.
//!
//! The YAML is read into a generic tree first and then walked by hand, so every error names the
//! field path (`spec.steps[2].artifacts`) and every field outside the subset is refused, never
//! silently dropped. Fields that are safe to ignore (labels, descriptions, ...) give a warning.

use crate::duration;
use serde_json::{Map, Value};
use std::fmt;

/// A workflow error: the file, the field path and what is wrong. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError {
    pub file: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for WorkflowError {}

/// Container settings (`spec.container`, `step.container`, `step.run`), merged from the workflow
/// down to each leaf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// Kubernetes `resources` (requests/limits), kept as given.
    pub resources: Option<Map<String, Value>>,
    /// Kubernetes container `securityContext`, kept as given (validated keys).
    pub security_context: Option<Map<String, Value>>,
    /// Kubernetes `volumeMounts`, kept as given.
    pub volume_mounts: Vec<Value>,
}

impl ContainerConfig {
    /// `other` applied on top of `self`: scalars replace, env and volume mounts append (a later
    /// env var of the same name wins), securityContext and resources merge key by key.
    pub fn overlay(&self, other: &ContainerConfig) -> ContainerConfig {
        let mut env = self.env.clone();
        for (k, v) in &other.env {
            env.retain(|(k2, _)| k2 != k);
            env.push((k.clone(), v.clone()));
        }
        let mut mounts = self.volume_mounts.clone();
        mounts.extend(other.volume_mounts.iter().cloned());
        ContainerConfig {
            image: other.image.clone().or_else(|| self.image.clone()),
            image_pull_policy: other
                .image_pull_policy
                .clone()
                .or_else(|| self.image_pull_policy.clone()),
            working_dir: other
                .working_dir
                .clone()
                .or_else(|| self.working_dir.clone()),
            env,
            command: other.command.clone().or_else(|| self.command.clone()),
            args: other.args.clone().or_else(|| self.args.clone()),
            resources: merge_maps(&self.resources, &other.resources, true),
            security_context: merge_maps(&self.security_context, &other.security_context, false),
            volume_mounts: mounts,
        }
    }

    pub fn run_as_user(&self) -> Option<u32> {
        sc_u32(&self.security_context, "runAsUser")
    }

    pub fn run_as_group(&self) -> Option<u32> {
        sc_u32(&self.security_context, "runAsGroup")
    }
}

fn sc_u32(sc: &Option<Map<String, Value>>, key: &str) -> Option<u32> {
    sc.as_ref()?
        .get(key)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// Key-wise merge of two optional JSON objects; with `deep`, nested objects merge one level down
/// (resources.requests / resources.limits).
fn merge_maps(
    base: &Option<Map<String, Value>>,
    top: &Option<Map<String, Value>>,
    deep: bool,
) -> Option<Map<String, Value>> {
    match (base, top) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(t)) => Some(t.clone()),
        (Some(b), Some(t)) => {
            let mut out = b.clone();
            for (k, v) in t {
                match (out.get_mut(k), v) {
                    (Some(Value::Object(old)), Value::Object(new)) if deep => {
                        for (k2, v2) in new {
                            old.insert(k2.clone(), v2.clone());
                        }
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Some(out)
        }
    }
}

/// When a step runs, as far as stepctl supports Testkube's condition expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Passed,
    Failed,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub count: u32,
    /// true: until passed (default); false: until failed.
    pub until_passed: bool,
}

/// One step of the workflow as written (a leaf or a group).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Field path of the step in the file, for messages (`spec.steps[1].steps[0]`).
    pub path: String,
    pub name: Option<String>,
    pub shell: Option<String>,
    /// `run` settings (override `container`).
    pub run: Option<ContainerConfig>,
    /// `container` defaults for this step and its children.
    pub container: Option<ContainerConfig>,
    pub working_dir: Option<String>,
    pub pure: Option<bool>,
    pub condition: Option<Condition>,
    pub optional: bool,
    pub negative: bool,
    pub timeout_ms: Option<u64>,
    pub retry: Option<Retry>,
    /// `setup` then `steps` of a group.
    pub steps: Vec<Step>,
}

impl Step {
    pub fn is_group(&self) -> bool {
        !self.steps.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workflow {
    /// The file name used in messages.
    pub file: String,
    pub name: String,
    pub container: ContainerConfig,
    pub setup: Vec<Step>,
    pub steps: Vec<Step>,
    pub after: Vec<Step>,
    pub pure_by_default: bool,
    pub isolated_containers: bool,
    /// `spec.pod`: merged into the generated pod spec.
    pub pod: Option<Map<String, Value>>,
    /// `spec.job`: merged into the generated Job spec.
    pub job: Option<Map<String, Value>>,
    /// Fields ignored because ignoring them is safe.
    pub warnings: Vec<String>,
}

/// The supported fields, as listed in errors and in the README.
pub const SPEC_FIELDS: &[&str] = &[
    "container",
    "setup",
    "steps",
    "after",
    "system",
    "pod",
    "job",
];
pub const STEP_FIELDS: &[&str] = &[
    "name",
    "shell",
    "run",
    "container",
    "workingDir",
    "pure",
    "condition",
    "optional",
    "negative",
    "timeout",
    "retry",
    "setup",
    "steps",
];
pub const CONTAINER_FIELDS: &[&str] = &[
    "image",
    "imagePullPolicy",
    "workingDir",
    "env",
    "command",
    "args",
    "resources",
    "securityContext",
    "volumeMounts",
];
const RUN_EXTRA_FIELDS: &[&str] = &["shell"];
const SECURITY_CONTEXT_FIELDS: &[&str] = &[
    "allowPrivilegeEscalation",
    "appArmorProfile",
    "capabilities",
    "privileged",
    "procMount",
    "readOnlyRootFilesystem",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "seLinuxOptions",
    "seccompProfile",
];
/// Fields that change nothing about how steps run here: ignored with a warning.
const IGNORED_METADATA: &[&str] = &[
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
];
const IGNORED_SPEC: &[&str] = &["events", "notifications"];
/// Fields of a Pod spec / Job spec whose shape `spec.pod` / `spec.job` must keep: they merge
/// into what stepctl generates (the rest is left to the API server's validation).
const POD_MAPPINGS: &[&str] = &[
    "securityContext",
    "nodeSelector",
    "affinity",
    "dnsConfig",
    "overhead",
    "resources",
    "os",
    "labels",
    "annotations",
];
const POD_LISTS: &[&str] = &[
    "volumes",
    "tolerations",
    "imagePullSecrets",
    "hostAliases",
    "topologySpreadConstraints",
    "readinessGates",
    "resourceClaims",
    "schedulingGates",
];
const JOB_MAPPINGS: &[&str] = &["podFailurePolicy", "successPolicy", "labels", "annotations"];
const IGNORED_STEP: &[&str] = &["description"];

struct Parser {
    file: String,
    warnings: Vec<String>,
    /// Steps seen so far (all levels): at most [`MAX_STEPS`].
    steps_seen: usize,
}

/// The most steps (all levels together) a workflow may have: memory and the planner's time
/// stay bounded whatever a file holds.
pub const MAX_STEPS: usize = 20_000;

type R<T> = Result<T, WorkflowError>;

/// Parses a workflow from YAML text; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> R<Workflow> {
    let mut p = Parser {
        file: file.to_string(),
        warnings: Vec::new(),
        steps_seen: 0,
    };
    // Bounded in nesting and in what aliases expand to (see crate::yaml).
    let docs = crate::yaml::documents(text).map_err(|e| p.err("", e))?;
    let root = match docs.as_slice() {
        [] | [Value::Null] => return Err(p.err("", "the file is empty (expected a TestWorkflow)")),
        [one] => one,
        _ => {
            return Err(p.err(
                "",
                format!(
                    "holds {} YAML documents (expected one TestWorkflow)",
                    docs.len()
                ),
            ))
        }
    };
    let mut wf = p.workflow(root)?;
    wf.warnings = std::mem::take(&mut p.warnings);
    Ok(wf)
}

/// Reads and parses a workflow file.
/// `-` reads standard input (`kubectl get testworkflow x -o yaml | stepctl run -`), named
/// `<stdin>` in messages.
pub fn load(path: &std::path::Path) -> R<Workflow> {
    let stdin = path.as_os_str() == "-";
    let file = if stdin {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    // At most one byte more than a workflow may have (the check in parse says it is too big),
    // and never a FIFO that would block: only what a regular file or a pipe gives.
    let limit = crate::yaml::MAX_BYTES as u64 + 1;
    let read = if stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin().lock(), limit),
            &mut s,
        )
        .map(|_| s)
    } else {
        std::fs::File::open(path).and_then(|f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(f, limit), &mut s).map(|_| s)
        })
    };
    let text = read.map_err(|e| WorkflowError {
        file: file.clone(),
        path: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &text)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Parser {
    fn err(&self, path: &str, message: impl Into<String>) -> WorkflowError {
        WorkflowError {
            file: self.file.clone(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// The mapping at `path`, after checking that every key is allowed (or safely ignored).
    fn object<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        allowed: &[&str],
        ignored: &[&str],
    ) -> R<&'a Map<String, Value>> {
        let m = v
            .as_object()
            .ok_or_else(|| self.err(path, format!("must be a mapping, found {}", type_name(v))))?;
        for k in m.keys() {
            if allowed.contains(&k.as_str()) {
                continue;
            }
            if ignored.contains(&k.as_str()) {
                self.warnings.push(format!(
                    "{}: {}: ignored (has no effect in stepctl)",
                    self.file,
                    join(path, k)
                ));
                continue;
            }
            return Err(self.err(
                &join(path, k),
                format!(
                    "not supported by stepctl (supported: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(m)
    }

    fn string(&self, v: &Value, path: &str) -> R<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            // YAML turns `value: 1` or `value: true` into non-strings; env values are strings.
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.err(path, format!("must be a string, found {}", type_name(v)))),
        }
    }

    fn opt_string(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> R<Option<String>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let s = self.string(v, &join(path, key))?;
                if s.contains("{{") {
                    self.warnings.push(format!(
                        "{}: {}: contains `{{{{`: Testkube expressions are not evaluated by stepctl, the text is used as is",
                        self.file,
                        join(path, key)
                    ));
                }
                Ok(Some(s))
            }
        }
    }

    fn opt_bool(&self, m: &Map<String, Value>, path: &str, key: &str) -> R<Option<bool>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(
                &join(path, key),
                format!("must be true or false, found {}", type_name(v)),
            )),
        }
    }

    fn string_list(&mut self, v: &Value, path: &str) -> R<Vec<String>> {
        match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, x)| self.string(x, &format!("{path}[{i}]")))
                .collect(),
            // Testkube also accepts a single string here.
            Value::String(s) => Ok(vec![s.clone()]),
            _ => Err(self.err(
                path,
                format!("must be a list of strings, found {}", type_name(v)),
            )),
        }
    }

    fn workflow(&mut self, root: &Value) -> R<Workflow> {
        let top = self.object(
            root,
            "",
            &["apiVersion", "kind", "metadata", "spec"],
            &["status"],
        )?;
        match top.get("kind") {
            Some(Value::String(k)) if k == "TestWorkflow" => {}
            Some(Value::String(k)) => {
                return Err(self.err(
                    "kind",
                    format!("{k:?} is not supported by stepctl (supported: TestWorkflow)"),
                ))
            }
            Some(v) => {
                return Err(self.err("kind", format!("must be a string, found {}", type_name(v))))
            }
            None => return Err(self.err("kind", "missing (expected TestWorkflow)")),
        }
        if let Some(v) = top.get("apiVersion") {
            let s = self.string(v, "apiVersion")?;
            if !s.starts_with("testworkflows.testkube.io/") {
                return Err(self.err(
                    "apiVersion",
                    format!("{s:?} is not supported (expected testworkflows.testkube.io/v1)"),
                ));
            }
        }
        let meta = top
            .get("metadata")
            .ok_or_else(|| self.err("metadata", "missing (metadata.name is required)"))?;
        let meta = self.object(meta, "metadata", &["name"], IGNORED_METADATA)?;
        let name = self
            .opt_string(meta, "metadata", "name")?
            .ok_or_else(|| self.err("metadata.name", "missing"))?;
        if !is_dns_label(&name) {
            return Err(self.err(
                "metadata.name",
                format!("{name:?} must be a DNS label (lowercase letters, digits and '-', at most 63, starting and ending alphanumeric)"),
            ));
        }
        let spec = top.get("spec").ok_or_else(|| self.err("spec", "missing"))?;
        let spec = self.object(spec, "spec", SPEC_FIELDS, IGNORED_SPEC)?;
        let mut wf = Workflow {
            file: self.file.clone(),
            name,
            ..Default::default()
        };
        if let Some(c) = spec.get("container") {
            wf.container = self.container(c, "spec.container", false)?;
        }
        if let Some(s) = spec.get("system") {
            let m = self.object(
                s,
                "spec.system",
                &["pureByDefault", "isolatedContainers"],
                &[],
            )?;
            wf.pure_by_default = self
                .opt_bool(m, "spec.system", "pureByDefault")?
                .unwrap_or(false);
            wf.isolated_containers = self
                .opt_bool(m, "spec.system", "isolatedContainers")?
                .unwrap_or(false);
        }
        for (key, out) in [
            ("setup", &mut wf.setup),
            ("steps", &mut wf.steps),
            ("after", &mut wf.after),
        ] {
            if let Some(v) = spec.get(key) {
                *out = self.steps(v, &format!("spec.{key}"))?;
            }
        }
        for (key, out) in [("pod", &mut wf.pod), ("job", &mut wf.job)] {
            if let Some(v) = spec.get(key) {
                let path = format!("spec.{key}");
                let m = v.as_object().ok_or_else(|| {
                    self.err(&path, format!("must be a mapping, found {}", type_name(v)))
                })?;
                let (maps, lists) = if key == "pod" {
                    (POD_MAPPINGS, POD_LISTS)
                } else {
                    (JOB_MAPPINGS, &[][..])
                };
                for (k, x) in m {
                    let want = if maps.contains(&k.as_str()) {
                        Some(("a mapping", x.is_object()))
                    } else if lists.contains(&k.as_str()) {
                        Some(("a list", x.is_array()))
                    } else {
                        None
                    };
                    if let Some((what, false)) = want {
                        return Err(self.err(
                            &join(&path, k),
                            format!("must be {what}, found {}", type_name(x)),
                        ));
                    }
                }
                if key == "pod" && m.get("shareProcessNamespace") == Some(&Value::Bool(true)) {
                    self.warnings.push(format!(
                        "{}: spec.pod.shareProcessNamespace: true: the inits are then not PID 1, and a step can stop or kill its init (the run then hangs until a deadline, or fails)",
                        self.file
                    ));
                }
                *out = Some(m.clone());
            }
        }
        if wf.setup.is_empty() && wf.steps.is_empty() && wf.after.is_empty() {
            return Err(self.err("spec.steps", "the workflow has no steps"));
        }
        Ok(wf)
    }

    fn steps(&mut self, v: &Value, path: &str) -> R<Vec<Step>> {
        let items = v.as_array().ok_or_else(|| {
            self.err(
                path,
                format!("must be a list of steps, found {}", type_name(v)),
            )
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, s)| self.step(s, &format!("{path}[{i}]")))
            .collect()
    }

    fn step(&mut self, v: &Value, path: &str) -> R<Step> {
        self.steps_seen += 1;
        if self.steps_seen > MAX_STEPS {
            return Err(self.err(path, format!("more than {MAX_STEPS} steps in one workflow")));
        }
        let m = self.object(v, path, STEP_FIELDS, IGNORED_STEP)?;
        let mut st = Step {
            path: path.to_string(),
            name: self.opt_string(m, path, "name")?,
            shell: self.opt_string(m, path, "shell")?,
            working_dir: self.opt_string(m, path, "workingDir")?,
            pure: self.opt_bool(m, path, "pure")?,
            optional: self.opt_bool(m, path, "optional")?.unwrap_or(false),
            negative: self.opt_bool(m, path, "negative")?.unwrap_or(false),
            ..Default::default()
        };
        for (key, value) in [("name", &st.name), ("shell", &st.shell)] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(self.err(&join(path, key), "must not be empty"));
            }
        }
        if st
            .name
            .as_ref()
            .is_some_and(|n| n.chars().any(char::is_control))
        {
            return Err(self.err(
                &join(path, "name"),
                "must be one line without control characters",
            ));
        }
        if st
            .name
            .as_ref()
            .is_some_and(|n| n.len() > stepinit_protocol::spec::MAX_ID_LEN)
        {
            return Err(self.err(
                &join(path, "name"),
                format!("longer than {} bytes", stepinit_protocol::spec::MAX_ID_LEN),
            ));
        }
        if let Some(c) = m.get("container") {
            st.container = Some(self.container(c, &join(path, "container"), false)?);
        }
        if let Some(r) = m.get("run") {
            let rpath = join(path, "run");
            let run = self.container(r, &rpath, true)?;
            let rm = r.as_object().expect("checked by container()");
            if let Some(sh) = self.opt_string(rm, &rpath, "shell")? {
                if sh.trim().is_empty() {
                    return Err(self.err(&join(&rpath, "shell"), "must not be empty"));
                }
                if st.shell.is_some() {
                    return Err(self.err(
                        &join(&rpath, "shell"),
                        "the step already has `shell`: give it once",
                    ));
                }
                st.shell = Some(sh);
            }
            st.run = Some(run);
        }
        if let Some(c) = m.get("condition") {
            st.condition = Some(self.condition(c, &join(path, "condition"))?);
        }
        if let Some(t) = m.get("timeout") {
            let tpath = join(path, "timeout");
            let s = self.string(t, &tpath)?;
            let ms = duration::parse_ms(&s).map_err(|e| self.err(&tpath, e))?;
            if ms == 0 {
                return Err(self.err(&tpath, "must be longer than 0"));
            }
            st.timeout_ms = Some(ms);
        }
        if let Some(r) = m.get("retry") {
            let rpath = join(path, "retry");
            let rm = self.object(r, &rpath, &["count", "until"], &[])?;
            let count = match rm.get("count") {
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        self.err(
                            &join(&rpath, "count"),
                            format!("must be a whole number 0..2^32, found {n}"),
                        )
                    })?,
                Some(v) => {
                    return Err(self.err(
                        &join(&rpath, "count"),
                        format!("must be a number, found {}", type_name(v)),
                    ))
                }
                None => return Err(self.err(&join(&rpath, "count"), "missing")),
            };
            let until_passed = match rm.get("until") {
                None | Some(Value::Null) => true,
                Some(u) => {
                    let upath = join(&rpath, "until");
                    match self.string(u, &upath)?.trim() {
                        "passed" => true,
                        "failed" => false,
                        other => {
                            return Err(self.err(
                                &upath,
                                format!("expression {other:?} is not supported by stepctl (supported: passed, failed)"),
                            ))
                        }
                    }
                }
            };
            st.retry = Some(Retry {
                count,
                until_passed,
            });
        }
        for key in ["setup", "steps"] {
            if let Some(v) = m.get(key) {
                let children = self.steps(v, &join(path, key))?;
                st.steps.extend(children);
            }
        }
        if st.is_group() {
            if st.shell.is_some() || st.run.is_some() {
                return Err(self.err(
                    path,
                    "a step with nested steps cannot also run `shell`/`run` in stepctl: move it into a nested step",
                ));
            }
            if st.retry.is_some() {
                return Err(self.err(
                    &join(path, "retry"),
                    "retry is supported on steps without nested steps only",
                ));
            }
        } else if st.shell.is_none() && st.run.is_none() {
            let has_nested_key = m.contains_key("steps") || m.contains_key("setup");
            return Err(self.err(
                path,
                if has_nested_key {
                    "has an empty list of steps: give it steps, `shell` or `run`"
                } else {
                    "needs `shell`, `run` or nested `steps`"
                },
            ));
        }
        Ok(st)
    }

    fn condition(&self, v: &Value, path: &str) -> R<Condition> {
        let s = match v {
            Value::Bool(true) => "true".to_string(),
            Value::Bool(false) => "false".to_string(),
            _ => self.string(v, path)?,
        };
        Ok(match s.trim() {
            "passed" => Condition::Passed,
            "failed" => Condition::Failed,
            "always" | "true" => Condition::Always,
            "never" | "false" => Condition::Never,
            other => {
                return Err(self.err(
                    path,
                    format!("expression {other:?} is not supported by stepctl (supported: passed, failed, always, never, true, false)"),
                ))
            }
        })
    }

    fn container(&mut self, v: &Value, path: &str, is_run: bool) -> R<ContainerConfig> {
        let allowed: Vec<&str> = if is_run {
            CONTAINER_FIELDS
                .iter()
                .chain(RUN_EXTRA_FIELDS)
                .copied()
                .collect()
        } else {
            CONTAINER_FIELDS.to_vec()
        };
        let m = self.object(v, path, &allowed, &[])?;
        let mut c = ContainerConfig {
            image: self.opt_string(m, path, "image")?,
            image_pull_policy: self.opt_string(m, path, "imagePullPolicy")?,
            working_dir: self.opt_string(m, path, "workingDir")?,
            ..Default::default()
        };
        if let Some(p) = &c.image_pull_policy {
            if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
                return Err(self.err(
                    &join(path, "imagePullPolicy"),
                    format!("{p:?} must be Always, IfNotPresent or Never"),
                ));
            }
        }
        if let Some(v) = m.get("command") {
            let cmd = self.string_list(v, &join(path, "command"))?;
            if cmd.is_empty() {
                return Err(self.err(
                    &join(path, "command"),
                    "must not be empty (leave it out to use the image's ENTRYPOINT)",
                ));
            }
            c.command = Some(cmd);
        }
        if let Some(v) = m.get("args") {
            c.args = Some(self.string_list(v, &join(path, "args"))?);
        }
        if let Some(v) = m.get("env") {
            let epath = join(path, "env");
            let items = v.as_array().ok_or_else(|| {
                self.err(
                    &epath,
                    format!("must be a list of {{name, value}}, found {}", type_name(v)),
                )
            })?;
            for (i, e) in items.iter().enumerate() {
                let ip = format!("{epath}[{i}]");
                let em = self.object(e, &ip, &["name", "value"], &[])?;
                let name = self
                    .opt_string(em, &ip, "name")?
                    .ok_or_else(|| self.err(&join(&ip, "name"), "missing"))?;
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    return Err(self.err(
                        &join(&ip, "name"),
                        format!("{name:?} is not a valid variable name"),
                    ));
                }
                let value = self.opt_string(em, &ip, "value")?.unwrap_or_default();
                c.env.retain(|(k, _)| k != &name);
                c.env.push((name, value));
            }
        }
        if let Some(v) = m.get("resources") {
            let rp = join(path, "resources");
            let rm = self.object(v, &rp, &["requests", "limits"], &[])?;
            for (k, x) in rm {
                let sub = self.object(
                    x,
                    &join(&rp, k),
                    &["cpu", "memory", "ephemeral-storage"],
                    &[],
                )?;
                for (rk, rv) in sub {
                    if !(rv.is_string() || rv.is_number()) {
                        return Err(self.err(
                            &join(&join(&rp, k), rk),
                            "must be a quantity like 100m or 64Mi",
                        ));
                    }
                }
            }
            c.resources = Some(rm.clone());
        }
        if let Some(v) = m.get("securityContext") {
            let sp = join(path, "securityContext");
            let sm = self.object(v, &sp, SECURITY_CONTEXT_FIELDS, &[])?;
            for key in ["runAsUser", "runAsGroup"] {
                if let Some(x) = sm.get(key) {
                    if x.as_u64().and_then(|n| u32::try_from(n).ok()).is_none() {
                        return Err(self.err(
                            &join(&sp, key),
                            format!("must be a uid/gid number, found {x}"),
                        ));
                    }
                }
            }
            self.security_context_objects(sm, &sp)?;
            for key in [
                "runAsNonRoot",
                "allowPrivilegeEscalation",
                "privileged",
                "readOnlyRootFilesystem",
            ] {
                if let Some(x) = sm.get(key) {
                    if !x.is_boolean() {
                        return Err(self.err(&join(&sp, key), "must be true or false"));
                    }
                }
            }
            c.security_context = Some(sm.clone());
        }
        if let Some(v) = m.get("volumeMounts") {
            let vp = join(path, "volumeMounts");
            let items = v
                .as_array()
                .ok_or_else(|| self.err(&vp, "must be a list"))?;
            for (i, x) in items.iter().enumerate() {
                let ip = format!("{vp}[{i}]");
                let xm = self.object(
                    x,
                    &ip,
                    &[
                        "name",
                        "mountPath",
                        "readOnly",
                        "subPath",
                        "subPathExpr",
                        "mountPropagation",
                        "recursiveReadOnly",
                    ],
                    &[],
                )?;
                for req in ["name", "mountPath"] {
                    if !xm.get(req).is_some_and(Value::is_string) {
                        return Err(self.err(&join(&ip, req), "missing or not a string"));
                    }
                }
                c.volume_mounts.push(x.clone());
            }
        }
        Ok(c)
    }
}

impl Parser {
    /// The nested parts of a securityContext, checked so that a manifest never carries a value
    /// of the wrong shape (and `--restricted` never silently replaces one).
    fn security_context_objects(&mut self, sm: &Map<String, Value>, sp: &str) -> R<()> {
        if let Some(v) = sm.get("capabilities") {
            let cp = join(sp, "capabilities");
            let cm = self.object(v, &cp, &["add", "drop"], &[])?;
            for (k, list) in cm {
                let ok = list
                    .as_array()
                    .is_some_and(|l| l.iter().all(Value::is_string));
                if !ok {
                    return Err(self.err(&join(&cp, k), "must be a list of strings"));
                }
            }
        }
        for key in ["seccompProfile", "appArmorProfile"] {
            if let Some(v) = sm.get(key) {
                let kp = join(sp, key);
                let pm = self.object(v, &kp, &["type", "localhostProfile"], &[])?;
                let ty = pm
                    .get("type")
                    .ok_or_else(|| self.err(&join(&kp, "type"), "missing"))?;
                let ty = self.string(ty, &join(&kp, "type"))?;
                if !["RuntimeDefault", "Localhost", "Unconfined"].contains(&ty.as_str()) {
                    return Err(self.err(
                        &join(&kp, "type"),
                        format!("{ty:?} must be RuntimeDefault, Localhost or Unconfined"),
                    ));
                }
                self.opt_string(pm, &kp, "localhostProfile")?;
            }
        }
        if let Some(v) = sm.get("seLinuxOptions") {
            let kp = join(sp, "seLinuxOptions");
            let om = self.object(v, &kp, &["user", "role", "type", "level"], &[])?;
            for k in ["user", "role", "type", "level"] {
                self.opt_string(om, &kp, k)?;
            }
        }
        self.opt_string(sm, sp, "procMount")?;
        Ok(())
    }
}

/// RFC 1123 label: what a pod name and container name may be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(yaml: &str) -> R<Workflow> {
        parse("t.yaml", yaml)
    }

    const HEAD: &str =
        "kind: TestWorkflow\napiVersion: testworkflows.testkube.io/v1\nmetadata: {name: t}\n";

    #[test]
    fn parses_the_shared_conditions_workflow() {
        let wf = p(include_str!("../tests/workflows/conditions.yaml")).unwrap();
        assert_eq!(wf.name, "conditions");
        assert_eq!(wf.steps.len(), 4);
        assert_eq!(wf.steps[0].steps.len(), 2);
        assert_eq!(
            wf.steps[0].steps[1].retry,
            Some(Retry {
                count: 2,
                until_passed: true
            })
        );
        assert!(wf.steps[1].negative);
        assert_eq!(wf.steps[2].timeout_ms, Some(2000));
        assert_eq!(wf.steps[3].condition, Some(Condition::Always));
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let e = p(&format!(
            "{HEAD}spec:\n  steps:\n  - shell: a\n  - shell: b\n  - shell: c\n    artifacts: {{paths: [x]}}\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[2].artifacts");
        assert!(
            e.to_string().starts_with(
                "t.yaml: spec.steps[2].artifacts: not supported by stepctl (supported: name, shell"
            ),
            "{e}"
        );
    }

    #[test]
    fn unsupported_condition_expression_is_refused() {
        let e = p(&format!(
            "{HEAD}spec:\n  steps:\n  - shell: a\n    condition: env.X == '1'\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[0].condition");
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn retry_on_a_group_is_refused() {
        let e = p(&format!(
            "{HEAD}spec:\n  steps:\n  - retry: {{count: 1}}\n    steps: [{{shell: a}}]\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[0].retry");
    }

    #[test]
    fn bad_duration_and_types_are_named() {
        let e = p(&format!(
            "{HEAD}spec:\n  steps:\n  - shell: a\n    timeout: 10\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[0].timeout");
        let e = p(&format!(
            "{HEAD}spec:\n  steps:\n  - shell: a\n    optional: yes please\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[0].optional");
        let e = p(&format!(
            "{HEAD}spec:\n  container:\n    securityContext: {{runAsUser: -1}}\n  steps: [{{shell: a}}]\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.container.securityContext.runAsUser");
        let e = p(&format!(
            "{HEAD}spec:\n  container:\n    env: [{{name: A, valueFrom: {{x: 1}}}}]\n  steps: [{{shell: a}}]\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.container.env[0].valueFrom");
    }

    #[test]
    fn ignorable_fields_warn() {
        let wf = p(
            "kind: TestWorkflow\nmetadata: {name: t, labels: {a: b}}\nspec:\n  steps:\n  - shell: a\n    description: hi\n",
        )
        .unwrap();
        assert_eq!(wf.warnings.len(), 2, "{:?}", wf.warnings);
        assert!(wf.warnings[0].contains("metadata.labels"));
        assert!(wf.warnings[1].contains("spec.steps[0].description"));
    }

    #[test]
    fn not_yaml_and_wrong_kind() {
        assert!(p("a: [").unwrap_err().message.starts_with("not valid YAML"));
        let e = p("kind: TestWorkflowTemplate\nmetadata: {name: t}\nspec: {}\n").unwrap_err();
        assert_eq!(e.path, "kind");
        let e = p("kind: TestWorkflow\nmetadata: {name: Bad_Name}\nspec: {steps: [{shell: a}]}\n")
            .unwrap_err();
        assert_eq!(e.path, "metadata.name");
        let e =
            p("kind: TestWorkflow\nmetadata: {name: t}\nspec: {steps: [{name: x}]}\n").unwrap_err();
        assert_eq!(e.path, "spec.steps[0]");
        let long = "n".repeat(300);
        let e = p(&format!(
            "{HEAD}spec: {{steps: [{{name: {long}, shell: a}}]}}\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[0].name");
    }

    #[test]
    fn overlay_merges_env_and_security_context() {
        let a = ContainerConfig {
            env: vec![("A".into(), "1".into()), ("B".into(), "1".into())],
            security_context: serde_json::json!({"runAsUser": 1}).as_object().cloned(),
            image: Some("x".into()),
            ..Default::default()
        };
        let b = ContainerConfig {
            env: vec![("A".into(), "2".into())],
            security_context: serde_json::json!({"runAsGroup": 2}).as_object().cloned(),
            ..Default::default()
        };
        let c = a.overlay(&b);
        assert_eq!(
            c.env,
            vec![("B".into(), "1".into()), ("A".into(), "2".into())]
        );
        assert_eq!(c.run_as_user(), Some(1));
        assert_eq!(c.run_as_group(), Some(2));
        assert_eq!(c.image.as_deref(), Some("x"));
    }
}
