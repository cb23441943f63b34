//! The resolved TestWorkflow checked and lowered to the planner's model (`workflow.rs`): step
//! ids given or derived, each step's last evaluation (`step.results`, `step.ID.results`), and
//! every value a container or the init needs checked.

use super::crd::{self, Container, Document, EnvVar, Quantities};
use super::text::{ExprSrc, Text};
use super::walk::Walk;
use crate::duration;
use crate::expr::{self, Lookup, Partial, Scope, Value};
use crate::workflow::{ContainerConfig, EnvValue, Rendered, Retry, Step, Workflow, WorkflowError};
use serde_json::{Map, Value as Json};
use std::collections::BTreeSet;

type R<T> = Result<T, WorkflowError>;

/// The most steps (all levels together, templates' included) a workflow may have: memory and
/// the planner's time stay bounded whatever a file holds.
pub const MAX_STEPS: usize = 20_000;

/// Where a step's results directory is (`step.results`): Testkube's `/data/.steps/ID`, in the
/// workspace every container of the pod shares.
pub fn results_dir(id: &str) -> String {
    format!("{}/.steps/{id}", crate::manifest::WORKSPACE_DIR)
}

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

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

/// Warnings for the fields read and ignored.
pub fn ignored_warnings(file: &str, doc: &Document) -> Vec<String> {
    let mut w = Vec::new();
    let mut note = |path: &str| {
        w.push(format!(
            "{file}: {path}: ignored (has no effect in stepctl)"
        ))
    };
    let m = &doc.metadata;
    for (set, key) in [
        (m.namespace.is_some(), "namespace"),
        (m.annotations.is_some(), "annotations"),
        (m.uid.is_some(), "uid"),
        (m.resource_version.is_some(), "resourceVersion"),
        (m.generation.is_some(), "generation"),
        (m.creation_timestamp.is_some(), "creationTimestamp"),
        (m.managed_fields.is_some(), "managedFields"),
        (m.generate_name.is_some(), "generateName"),
    ] {
        if set {
            note(&format!("metadata.{key}"));
        }
    }
    let s = &doc.spec;
    for (set, key) in [
        (s.events.is_some(), "events"),
        (s.notifications.is_some(), "notifications"),
        (s.execution.is_some(), "execution"),
        (s.timeouts.is_some(), "timeouts"),
        (s.concurrency.is_some(), "concurrency"),
    ] {
        if set {
            note(&format!("spec.{key}"));
        }
    }
    fn steps(list: &[crd::Step], path: &str, note: &mut dyn FnMut(&str)) {
        for (i, s) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if s.description.is_some() {
                note(&format!("{p}.description"));
            }
            if s.paused.is_some() {
                note(&format!("{p}.paused"));
            }
            steps(&s.setup, &format!("{p}.setup"), note);
            steps(&s.steps, &format!("{p}.steps"), note);
        }
    }
    for (key, list) in [
        ("setup", &s.setup),
        ("steps", &s.steps),
        ("after", &s.after),
    ] {
        steps(list, &format!("spec.{key}"), &mut note);
    }
    w
}

struct Lower<'a> {
    file: &'a str,
    scope: &'a dyn Scope,
    /// Ids of the steps, in pre-order (as derived).
    ids: std::vec::IntoIter<Option<String>>,
    known_ids: BTreeSet<String>,
    steps_seen: usize,
    warnings: Vec<String>,
}

fn werr(file: &str, path: &str, message: impl Into<String>) -> WorkflowError {
    WorkflowError {
        file: file.to_string(),
        path: path.to_string(),
        message: message.into(),
    }
}

/// The id Testkube derives from a name: lowercase, runs of other characters as `_`, trimmed;
/// none when that leaves no valid id.
fn derive_id(name: &str) -> Option<String> {
    let mut out = String::new();
    let mut gap = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    valid_id(&out).then_some(out)
}

/// `^[a-z0-9][a-z0-9_]*$`.
fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Ids of every step in pre-order (setup, steps, after; each step's setup then steps): given
/// ones checked, derived ones made unique with `_1`, `_2`...
fn assign_ids(file: &str, spec: &crd::Spec) -> R<Vec<Option<String>>> {
    fn walk(
        file: &str,
        list: &[crd::Step],
        path: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<Option<String>>,
    ) -> R<()> {
        for (i, s) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let id = match &s.id {
                Some(id) => {
                    if !valid_id(id) {
                        return Err(werr(
                            file,
                            &format!("{p}.id"),
                            format!("{id:?} must be lowercase letters, digits and '_', starting with a letter or digit"),
                        ));
                    }
                    if !seen.insert(id.clone()) {
                        return Err(werr(
                            file,
                            &format!("{p}.id"),
                            format!("duplicate step id {id:?}"),
                        ));
                    }
                    Some(id.clone())
                }
                None => s
                    .name
                    .as_ref()
                    .and_then(Text::known)
                    .and_then(|n| derive_id(&n))
                    .map(|base| {
                        let mut id = base.clone();
                        let mut n = 1;
                        while seen.contains(&id) {
                            id = format!("{base}_{n}");
                            n += 1;
                        }
                        seen.insert(id.clone());
                        id
                    }),
            };
            out.push(id);
            walk(file, &s.setup, &format!("{p}.setup"), seen, out)?;
            walk(file, &s.steps, &format!("{p}.steps"), seen, out)?;
        }
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (key, list) in [
        ("setup", &spec.setup),
        ("steps", &spec.steps),
        ("after", &spec.after),
    ] {
        walk(file, list, &format!("spec.{key}"), &mut seen, &mut out)?;
    }
    Ok(out)
}

/// One step's last scope: its results directory and the other steps' by id.
struct StepScope<'a> {
    outer: &'a dyn Scope,
    id: Option<&'a str>,
    ids: &'a BTreeSet<String>,
}

impl Scope for StepScope<'_> {
    fn lookup(&self, name: &str) -> Lookup {
        if name == "step.results" {
            return match self.id {
                Some(id) => Lookup::Value(Value::from(results_dir(id))),
                None => Lookup::Unknown,
            };
        }
        if let Some(rest) = name.strip_prefix("step.") {
            let (id, what) = rest.split_once('.').unwrap_or((rest, ""));
            if !self.ids.contains(id) {
                return Lookup::Unknown;
            }
            if what == "results" {
                return Lookup::Value(Value::from(results_dir(id)));
            }
            if what.starts_with("outputs.") && what.len() > "outputs.".len() {
                return Lookup::Runtime;
            }
            return Lookup::Unknown;
        }
        self.outer.lookup(name)
    }
}

pub fn workflow(
    file: &str,
    doc: Document,
    scope: &dyn Scope,
    secrets: Vec<(String, String)>,
) -> R<Workflow> {
    let spec = doc.spec;
    let ids = assign_ids(file, &spec)?;
    let known_ids: BTreeSet<String> = ids.iter().flatten().cloned().collect();
    let mut l = Lower {
        file,
        scope,
        ids: ids.into_iter(),
        known_ids,
        steps_seen: 0,
        warnings: Vec::new(),
    };
    let container = match &spec.container {
        Some(c) => l.container(c, "spec.container")?,
        None => ContainerConfig::default(),
    };
    let mut steps = Vec::new();
    for (key, list) in [
        ("setup", spec.setup),
        ("steps", spec.steps),
        ("after", spec.after),
    ] {
        for (i, s) in list.into_iter().enumerate() {
            steps.push(l.step(s, &format!("spec.{key}[{i}]"))?);
        }
    }
    if steps.is_empty() {
        return Err(werr(file, "spec.steps", "the workflow has no steps"));
    }
    for (key, m) in [("pod", &spec.pod), ("job", &spec.job)] {
        if let Some(m) = m {
            l.check_pod_job(key, m)?;
        }
    }
    let system = spec.system.unwrap_or_default();
    Ok(Workflow {
        file: file.to_string(),
        name: doc.metadata.name,
        description: doc.description,
        container,
        steps,
        pure_by_default: system.pure_by_default.unwrap_or(false),
        isolated_containers: system.isolated_containers.unwrap_or(false),
        pod: spec.pod,
        job: spec.job,
        secrets,
        warnings: l.warnings,
    })
}

impl Lower<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> WorkflowError {
        werr(self.file, path, message)
    }

    /// A text every part of which must be known now (images, names, directories).
    fn known(&self, t: &Option<Text>, path: &str) -> R<Option<String>> {
        match t {
            None => Ok(None),
            Some(t) => t.known().map(Some).ok_or_else(|| {
                self.err(
                    path,
                    format!(
                        "{:?} depends on values known only when the steps run (step outputs, the environment, sensitive parameters): it is needed before",
                        t.src
                    ),
                )
            }),
        }
    }

    fn check_pod_job(&mut self, key: &str, m: &Map<String, Json>) -> R<()> {
        let path = format!("spec.{key}");
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
                    &format!("{path}.{k}"),
                    format!("must be {what}, found {}", type_name(x)),
                ));
            }
        }
        if let Some(d) = m.get("activeDeadlineSeconds") {
            if d.as_u64().is_none_or(|n| n == 0) {
                return Err(self.err(
                    &format!("{path}.activeDeadlineSeconds"),
                    format!("must be a whole number of seconds above 0, found {d}"),
                ));
            }
        }
        if key == "pod" && m.get("shareProcessNamespace") == Some(&Json::Bool(true)) {
            self.warnings.push(format!(
                "{}: spec.pod.shareProcessNamespace: true: the inits are then not PID 1, and a step can stop or kill its init (the run then hangs until a deadline, or fails)",
                self.file
            ));
        }
        Ok(())
    }

    fn step(&mut self, mut s: crd::Step, path: &str) -> R<Step> {
        self.steps_seen += 1;
        if self.steps_seen > MAX_STEPS {
            return Err(self.err(path, format!("more than {MAX_STEPS} steps in one workflow")));
        }
        let id = self.ids.next().flatten();
        // Its last evaluation: what only this step's place knows (`step.results`).
        let scope = StepScope {
            outer: self.scope,
            id: id.as_deref(),
            ids: &self.known_ids,
        };
        let children = (std::mem::take(&mut s.setup), std::mem::take(&mut s.steps));
        Walk { scope: &scope }
            .step(&mut s, path)
            .map_err(|(p, m)| self.err(&p, m))?;
        let name = self.known(&s.name, &format!("{path}.name"))?;
        if let Some(n) = &name {
            let np = format!("{path}.name");
            if n.trim().is_empty() {
                return Err(self.err(&np, "must not be empty"));
            }
            if n.chars().any(char::is_control) {
                return Err(self.err(&np, "must be one line without control characters"));
            }
            if n.len() > stepinit_protocol::spec::MAX_ID_LEN {
                return Err(self.err(
                    &np,
                    format!("longer than {} bytes", stepinit_protocol::spec::MAX_ID_LEN),
                ));
            }
        }
        let mut shell = s.shell.as_ref().map(rendered);
        if let Some(sh) = &shell {
            if sh.known().is_some_and(|t| t.trim().is_empty()) {
                return Err(self.err(&format!("{path}.shell"), "must not be empty"));
            }
        }
        let mut run = None;
        if let Some(r) = s.run.take() {
            let rpath = format!("{path}.run");
            let (c, run_shell) = r.split();
            if let Some(sh) = run_shell {
                if shell.is_some() {
                    return Err(self.err(
                        &format!("{rpath}.shell"),
                        "the step already has `shell`: give it once",
                    ));
                }
                if sh.known().is_some_and(|t| t.trim().is_empty()) {
                    return Err(self.err(&format!("{rpath}.shell"), "must not be empty"));
                }
                if c.command.is_some() || c.args.is_some() {
                    return Err(self.err(
                        &format!("{rpath}.shell"),
                        "run.shell cannot be used with run.command or run.args",
                    ));
                }
                shell = Some(rendered(&sh));
            }
            run = Some(self.container(&c, &rpath)?);
        }
        let container = match &s.container {
            Some(c) => Some(self.container(c, &format!("{path}.container"))?),
            None => None,
        };
        let timeout_ms = match self.known(&s.timeout, &format!("{path}.timeout"))? {
            None => None,
            Some(t) => {
                let tp = format!("{path}.timeout");
                let ms = duration::parse_ms(&t).map_err(|e| self.err(&tp, e))?;
                if ms == 0 {
                    return Err(self.err(&tp, "must be longer than 0"));
                }
                Some(ms)
            }
        };
        let delay_ms = match &s.delay {
            None => None,
            Some(d) => {
                Some(duration::parse_ms(d).map_err(|e| self.err(&format!("{path}.delay"), e))?)
            }
        };
        let condition = s.condition.as_ref().map(expression);
        let retry = s.retry.as_ref().map(|r| Retry {
            count: r.count,
            until: r.until.as_ref().map(expression),
        });
        let working_dir = self.known(&s.working_dir, &format!("{path}.workingDir"))?;
        let mut out = Step {
            path: path.to_string(),
            id,
            name,
            shell,
            run,
            container,
            working_dir,
            pure: s.pure,
            condition,
            optional: s.optional.unwrap_or(false),
            negative: s.negative.unwrap_or(false),
            timeout_ms,
            delay_ms,
            retry,
            ..Default::default()
        };
        let (setup, steps) = children;
        for (i, c) in setup.into_iter().enumerate() {
            out.setup.push(self.step(c, &format!("{path}.setup[{i}]"))?);
        }
        for (i, c) in steps.into_iter().enumerate() {
            out.steps.push(self.step(c, &format!("{path}.steps[{i}]"))?);
        }
        if !out.has_operation() && !out.is_group() {
            return Err(self.err(path, "needs `shell`, `run` or nested `steps`"));
        }
        if out.retry.is_some() && !out.has_operation() {
            return Err(self.err(
                &format!("{path}.retry"),
                "retry applies to a step's own `shell`/`run`: this step has none",
            ));
        }
        Ok(out)
    }

    fn container(&self, c: &Container, path: &str) -> R<ContainerConfig> {
        let image_pull_policy =
            self.known(&c.image_pull_policy, &format!("{path}.imagePullPolicy"))?;
        if let Some(p) = &image_pull_policy {
            if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
                return Err(self.err(
                    &format!("{path}.imagePullPolicy"),
                    format!("{p:?} must be Always, IfNotPresent or Never"),
                ));
            }
        }
        let mut out = ContainerConfig {
            image: self.known(&c.image, &format!("{path}.image"))?,
            image_pull_policy,
            working_dir: self.known(&c.working_dir, &format!("{path}.workingDir"))?,
            ..Default::default()
        };
        if let Some(cmd) = &c.command {
            if cmd.0.is_empty() {
                return Err(self.err(
                    &format!("{path}.command"),
                    "must not be empty (leave it out to use the image's ENTRYPOINT)",
                ));
            }
            out.command = Some(cmd.0.iter().map(rendered).collect());
        }
        if let Some(a) = &c.args {
            out.args = Some(a.0.iter().map(rendered).collect());
        }
        for (i, e) in c.env.iter().enumerate() {
            let (k, v) = self.env(e, &format!("{path}.env[{i}]"))?;
            out.env.retain(|(k2, _)| k2 != &k);
            out.env.push((k, v));
        }
        if let Some(r) = &c.resources {
            let mut m = Map::new();
            for (key, q) in [("requests", &r.requests), ("limits", &r.limits)] {
                if let Some(q) = q {
                    m.insert(
                        key.into(),
                        Json::Object(self.quantities(q, &format!("{path}.resources.{key}"))?),
                    );
                }
            }
            out.resources = Some(m);
        }
        if let Some(sc) = &c.security_context {
            if let Json::Object(m) = serde_json::to_value(sc).unwrap_or_default() {
                out.security_context = Some(m);
            }
        }
        out.volume_mounts = c
            .volume_mounts
            .iter()
            .map(|v| serde_json::to_value(v).unwrap_or_default())
            .collect();
        Ok(out)
    }

    fn quantities(&self, q: &Quantities, path: &str) -> R<Map<String, Json>> {
        let mut m = Map::new();
        for (k, v) in [
            ("cpu", &q.cpu),
            ("memory", &q.memory),
            ("ephemeral-storage", &q.ephemeral_storage),
        ] {
            if let Some(s) = self.known(v, &format!("{path}.{k}"))? {
                m.insert(k.into(), Json::String(s));
            }
        }
        Ok(m)
    }

    fn env(&self, e: &EnvVar, path: &str) -> R<(String, EnvValue)> {
        let name = self
            .known(&Some(e.name.clone()), &format!("{path}.name"))?
            .unwrap_or_default();
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(self.err(
                &format!("{path}.name"),
                format!("{name:?} is not a valid variable name"),
            ));
        }
        let value = match (&e.value, &e.value_from) {
            (Some(_), Some(_)) => {
                return Err(self.err(path, "give `value` or `valueFrom`, not both"));
            }
            (_, Some(f)) => {
                let sources = [
                    f.config_map_key_ref.is_some(),
                    f.secret_key_ref.is_some(),
                    f.field_ref.is_some(),
                    f.resource_field_ref.is_some(),
                ];
                if sources.iter().filter(|x| **x).count() != 1 {
                    return Err(self.err(
                        &format!("{path}.valueFrom"),
                        "needs exactly one of configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef",
                    ));
                }
                EnvValue::From(Box::new(f.clone()))
            }
            (Some(v), None) => EnvValue::Text(rendered(v)),
            (None, None) => EnvValue::Text(Rendered::default()),
        };
        Ok((name, value))
    }
}

/// An evaluated text as the model holds it.
fn rendered(t: &Text) -> Rendered {
    Rendered(t.parts().to_vec())
}

/// An evaluated expression as the model holds it (known values as literals).
fn expression(e: &ExprSrc) -> expr::Expr {
    match e.value() {
        Partial::Known(v) => expr::Expr::Lit(v.clone()),
        Partial::Residual(r) => r.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derive_as_testkube_derives_them() {
        assert_eq!(
            derive_id("Run the tests!").as_deref(),
            Some("run_the_tests")
        );
        assert_eq!(derive_id("  --Build--  ").as_deref(), Some("build"));
        assert_eq!(derive_id("v1.2 smoke").as_deref(), Some("v1_2_smoke"));
        assert_eq!(derive_id("ünïcode").as_deref(), None);
        assert_eq!(derive_id("---"), None);
        assert!(valid_id("a_1") && !valid_id("_a") && !valid_id("A"));
    }
}
