//! A workflow as the planner takes it: templates applied, config and expressions evaluated,
//! step ids known. `testworkflow` reads TestWorkflow documents into this; `plan` turns it into
//! a spec. What is known only when the steps run stays as expressions ([`Rendered`] parts,
//! conditions), which the plan hands to the init.

use crate::expr::{self, Part};
use crate::testworkflow::crd::ValueFrom;
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

/// A text after evaluation: literal parts and the expressions left for run time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered(pub Vec<Part>);

impl Rendered {
    pub fn plain(s: impl Into<String>) -> Rendered {
        let s = s.into();
        if s.is_empty() {
            Rendered(Vec::new())
        } else {
            Rendered(vec![Part::Text(s)])
        }
    }

    /// The text, when nothing in it waits for run time.
    pub fn known(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Expr(_) => return None,
            }
        }
        Some(s)
    }

    /// As written back in template syntax (`v={{ step.a.outputs.v }}`), for names and messages.
    pub fn shown(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Expr(e) => {
                    s.push_str("{{ ");
                    s.push_str(&e.to_string());
                    s.push_str(" }}");
                }
            }
        }
        s
    }
}

/// An environment variable's value.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Text(Rendered),
    /// Kubernetes' `valueFrom`: resolved by the engine (see `engine`).
    From(Box<ValueFrom>),
}

/// Container settings (`spec.container`, `step.container`, `step.run`), merged from the workflow
/// down to each leaf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<(String, EnvValue)>,
    pub command: Option<Vec<Rendered>>,
    pub args: Option<Vec<Rendered>>,
    /// Kubernetes `resources` (requests/limits).
    pub resources: Option<Map<String, Value>>,
    /// Kubernetes container `securityContext`.
    pub security_context: Option<Map<String, Value>>,
    /// Kubernetes `volumeMounts`.
    pub volume_mounts: Vec<Value>,
}

impl ContainerConfig {
    /// `other` applied on top of `self`: scalars replace (a new image brings its own command
    /// and args), env and volume mounts append (a later env var of the same name wins),
    /// securityContext and resources merge key by key; a relative working directory is
    /// relative to the one before.
    pub fn overlay(&self, other: &ContainerConfig) -> ContainerConfig {
        let mut env = self.env.clone();
        for (k, v) in &other.env {
            env.retain(|(k2, _)| k2 != k);
            env.push((k.clone(), v.clone()));
        }
        let mut mounts = self.volume_mounts.clone();
        mounts.extend(other.volume_mounts.iter().cloned());
        // A new image, or a new command: its own command and args (none: the image's).
        let (command, args) =
            if (other.image.is_some() && other.image != self.image) || other.command.is_some() {
                (other.command.clone(), other.args.clone())
            } else {
                (
                    self.command.clone(),
                    other.args.clone().or_else(|| self.args.clone()),
                )
            };
        ContainerConfig {
            image: other.image.clone().or_else(|| self.image.clone()),
            image_pull_policy: other
                .image_pull_policy
                .clone()
                .or_else(|| self.image_pull_policy.clone()),
            working_dir: match (&self.working_dir, &other.working_dir) {
                (Some(base), Some(wd)) => Some(expr::eval::make_path(base, wd)),
                (base, wd) => wd.clone().or_else(|| base.clone()),
            },
            env,
            command,
            args,
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

    /// The variables Kubernetes fills from other objects (`valueFrom`): container-wide.
    pub fn value_from(&self) -> Vec<(&str, &ValueFrom)> {
        self.env
            .iter()
            .filter_map(|(k, v)| match v {
                EnvValue::From(f) => Some((k.as_str(), &**f)),
                EnvValue::Text(_) => None,
            })
            .collect()
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

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub count: u32,
    /// None: until the attempt passes.
    pub until: Option<expr::Expr>,
}

/// One step of the workflow: its own operation (`shell` or `run`), if any, runs after its
/// `setup` and before its nested `steps` (Testkube's order within a step).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Field path of the step in the file, for messages (`spec.steps[1].steps[0]`).
    pub path: String,
    /// The name expressions use (`step.ID.outputs.KEY`): given, or derived from the name.
    pub id: Option<String>,
    pub name: Option<String>,
    pub shell: Option<Rendered>,
    /// `run` settings (override `container`).
    pub run: Option<ContainerConfig>,
    /// `container` defaults for this step and its children.
    pub container: Option<ContainerConfig>,
    pub working_dir: Option<String>,
    pub pure: Option<bool>,
    /// None: `passed`.
    pub condition: Option<expr::Expr>,
    pub optional: bool,
    pub negative: bool,
    pub timeout_ms: Option<u64>,
    /// Waited before the step runs.
    pub delay_ms: Option<u64>,
    pub retry: Option<Retry>,
    pub setup: Vec<Step>,
    pub steps: Vec<Step>,
}

impl Step {
    /// Whether the step runs something itself (`shell` or `run`).
    pub fn has_operation(&self) -> bool {
        self.shell.is_some() || self.run.is_some()
    }

    pub fn is_group(&self) -> bool {
        !self.setup.is_empty() || !self.steps.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workflow {
    /// The file name used in messages.
    pub file: String,
    pub name: String,
    /// Top-level `description`, shown in the report's header.
    pub description: Option<String>,
    pub container: ContainerConfig,
    /// `setup`, `steps` and `after`, in that order (Testkube runs them as one list).
    pub steps: Vec<Step>,
    pub pure_by_default: bool,
    pub isolated_containers: bool,
    /// `spec.pod`: merged into the generated pod spec.
    pub pod: Option<Map<String, Value>>,
    /// `spec.job`: merged into the generated Job spec.
    pub job: Option<Map<String, Value>>,
    /// Sensitive config values, each given to the steps in an environment variable (never in
    /// the spec): (variable, value).
    pub secrets: Vec<(String, String)>,
    /// Fields ignored because ignoring them is safe.
    pub warnings: Vec<String>,
}

impl Workflow {
    /// `activeDeadlineSeconds` of `spec.job` or `spec.pod` (the job's when both): how long the
    /// whole run may take.
    pub fn deadline_s(&self) -> Option<u64> {
        let get =
            |m: &Option<Map<String, Value>>| m.as_ref()?.get("activeDeadlineSeconds")?.as_u64();
        get(&self.job).or_else(|| get(&self.pod))
    }
}

/// Parses a workflow from YAML text without templates or config values (`file` names it in
/// messages): what tests and the fuzzer use.
pub fn parse(file: &str, text: &str) -> Result<Workflow, WorkflowError> {
    crate::testworkflow::parse(file, text, &crate::testworkflow::Options::default())
}

/// RFC 1123 label: what a container name may be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what most object names (a TestWorkflow's too) may be.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_merges_env_and_security_context() {
        let a = ContainerConfig {
            env: vec![
                ("A".into(), EnvValue::Text(Rendered::plain("1"))),
                ("B".into(), EnvValue::Text(Rendered::plain("1"))),
            ],
            security_context: serde_json::json!({"runAsUser": 1}).as_object().cloned(),
            image: Some("x".into()),
            working_dir: Some("/data".into()),
            command: Some(vec![Rendered::plain("c")]),
            ..Default::default()
        };
        let b = ContainerConfig {
            env: vec![("A".into(), EnvValue::Text(Rendered::plain("2")))],
            security_context: serde_json::json!({"runAsGroup": 2}).as_object().cloned(),
            working_dir: Some("repo/../src".into()),
            ..Default::default()
        };
        let c = a.overlay(&b);
        assert_eq!(
            c.env,
            vec![
                ("B".into(), EnvValue::Text(Rendered::plain("1"))),
                ("A".into(), EnvValue::Text(Rendered::plain("2")))
            ]
        );
        assert_eq!(c.run_as_user(), Some(1));
        assert_eq!(c.run_as_group(), Some(2));
        assert_eq!(c.image.as_deref(), Some("x"));
        assert_eq!(c.working_dir.as_deref(), Some("/data/src"));
        assert!(c.command.is_some(), "the same image keeps its command");
        let d = c.overlay(&ContainerConfig {
            image: Some("y".into()),
            ..Default::default()
        });
        assert!(d.command.is_none(), "another image runs its own ENTRYPOINT");
        assert!(
            is_dns_subdomain("smoke-v1.2")
                && !is_dns_subdomain("Smoke")
                && !is_dns_subdomain("a..b")
        );
    }
}
