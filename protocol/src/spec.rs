//! The spec: the whole pod's steps as a tree, each leaf assigned to one container.
//!
//! A controller writes it as JSON (camelCase fields, unknown fields rejected) into a file the init
//! reads with `init run SPEC`. Leaves run a `command` (argv) or a `shell` script; inner nodes are
//! groups whose result derives from their children. Each leaf names the `container` (0-based) that
//! runs it; `init run SPEC --group N` runs container N's leaves, in tree order.

use crate::expr::Expr;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The root of a spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// Must equal [`crate::VERSION`]; an init refuses any other.
    pub version: u32,
    /// Program used for `shell` steps, run as `SHELL -e -c SCRIPT`. Default: `/bin/sh`, or the
    /// `sh` beside the init when the image has no `/bin/sh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Environment added to every step (steps may override).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// One entry per container of the pod, in start order. May be omitted for a single container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// The step tree.
    pub steps: Vec<Step>,
}

/// What the init must know of a container before it starts (used by `init setup`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The uid the container runs as; `None` when unknown before it starts (random UIDs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    /// The primary gid the container runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// The container's working directory, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A step: a leaf (`command` or `shell`) or a group (`steps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Stable identifier used in records. Default: the 1-based path, e.g. `2.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Human name, reported in the start record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// argv to execute (PATH is searched for `command[0]` when it has no `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Shell script, run with `SHELL -e -c SCRIPT` (fail-fast: the first failing command ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Working directory; created (with parents) when missing. Relative paths are relative to the
    /// init's own working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Limit for the step (a group: for all its children), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Waited before each attempt of the leaf starts (Testkube's `delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL when the step is stopped. Default: 10 000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Condition::is_default")]
    pub condition: Condition,
    /// Expected failure: a non-zero exit passes, a zero exit fails.
    #[serde(default, skip_serializing_if = "is_false")]
    pub negative: bool,
    /// A failure of this step does not fail its parent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// Run the leaf as this uid/gid (the init must be root to switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// Index into [`Spec::containers`] of the container that runs this leaf. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<u32>,
    /// Children of a group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Fields of a leaf computed when it starts (they use step outputs or the environment):
    /// each replaces what the field holds (which is then only what a reader sees).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub computed: Vec<Computed>,
}

/// A field of a leaf and the expression that gives it when the leaf starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Computed {
    pub field: Field,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Shell,
    /// `command[i]`.
    Command(u32),
    /// The variable of this name in the step's environment.
    Env(String),
}

/// Retry a leaf up to `count` more times until its result matches `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    pub count: u32,
    #[serde(default)]
    pub until: Until,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Until {
    #[default]
    Passed,
    Failed,
    /// Until the expression is true after an attempt (`passed` there: the attempt passed).
    Expr(Expr),
}

/// When a step runs, judged against the scopes (enclosing groups, up to the workflow) it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// No enclosing scope has failed so far.
    #[default]
    Passed,
    /// Some enclosing scope has failed.
    Failed,
    /// Runs unless the workflow was aborted.
    Always,
    /// Never runs (reported as skipped).
    Never,
    /// Runs when the expression is true as the step starts (`passed` there: as `Passed`).
    Expr(Expr),
}

impl Condition {
    fn is_default(&self) -> bool {
        *self == Condition::Passed
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A semantic error in a spec, with the JSON path of the offending field (`steps[2].retry.count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for SpecError {}

/// Longest accepted step id or name, in bytes (records must stay small).
pub const MAX_ID_LEN: usize = 256;

/// Deepest nesting of groups: `steps[0].steps[0]...` at most this many levels (every reader of a
/// spec walks its tree recursively, and JSON readers stop at 128 levels, two per group).
pub const MAX_DEPTH: usize = 32;

impl Spec {
    /// Checks what serde cannot: version, leaf/group shape, unique ids, container indexes.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.version != crate::VERSION {
            return Err(err(
                "version",
                format!(
                    "unsupported spec version {} (this init reads {})",
                    self.version,
                    crate::VERSION
                ),
            ));
        }
        if self.steps.is_empty() {
            return Err(err("steps", "a spec needs at least one step".into()));
        }
        validate_env(&self.env, "env")?;
        let mut ids = std::collections::HashSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            self.validate_step(s, &format!("steps[{i}]"), &(i + 1).to_string(), 1, &mut ids)?;
        }
        Ok(())
    }

    fn validate_step(
        &self,
        s: &Step,
        path: &str,
        default_id: &str,
        depth: usize,
        ids: &mut std::collections::HashSet<String>,
    ) -> Result<(), SpecError> {
        if depth > MAX_DEPTH {
            return Err(err(
                path,
                format!("groups nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        validate_env(&s.env, &format!("{path}.env"))?;
        let id = s.id.as_deref().unwrap_or(default_id);
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(err(
                &format!("{path}.id"),
                format!("must be 1 to {MAX_ID_LEN} bytes"),
            ));
        }
        if !ids.insert(id.to_string()) {
            return Err(err(
                &format!("{path}.id"),
                format!("duplicate step id {id:?}"),
            ));
        }
        if s.name.as_ref().is_some_and(|n| n.len() > MAX_ID_LEN) {
            return Err(err(
                &format!("{path}.name"),
                format!("longer than {MAX_ID_LEN} bytes"),
            ));
        }
        let kinds = [
            !s.command.is_empty(),
            s.shell.is_some(),
            !s.steps.is_empty(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            1 => {}
            0 => return Err(err(path, "needs one of command, shell or steps".into())),
            _ => {
                return Err(err(
                    path,
                    "command, shell and steps exclude each other".into(),
                ))
            }
        }
        if let Some(c) = s.container {
            let n = self.containers.len().max(1);
            if c as usize >= n {
                return Err(err(
                    &format!("{path}.container"),
                    format!("container {c} does not exist (spec has {n})"),
                ));
            }
        }
        if !s.steps.is_empty() {
            if s.retry.is_some() {
                return Err(err(
                    &format!("{path}.retry"),
                    "retry is supported on leaf steps only".into(),
                ));
            }
            for field in [
                ("runAsUser", s.run_as_user.is_some()),
                ("runAsGroup", s.run_as_group.is_some()),
            ] {
                if field.1 {
                    return Err(err(
                        &format!("{path}.{}", field.0),
                        "is set on each leaf, not on groups".into(),
                    ));
                }
            }
            if s.container.is_some() {
                return Err(err(
                    &format!("{path}.container"),
                    "is set on each leaf, not on groups".into(),
                ));
            }
        }
        for (i, c) in s.steps.iter().enumerate() {
            self.validate_step(
                c,
                &format!("{path}.steps[{i}]"),
                &format!("{id}.{}", i + 1),
                depth + 1,
                ids,
            )?;
        }
        Ok(())
    }

    /// Number of containers the spec spans (at least 1).
    pub fn container_count(&self) -> usize {
        self.containers.len().max(1)
    }
}

/// An environment variable's name must be something `execve` can pass on and a program read
/// back: not empty, no `=` (it would end the name) and no NUL.
fn validate_env(env: &[EnvVar], path: &str) -> Result<(), SpecError> {
    for (i, e) in env.iter().enumerate() {
        let bad = if e.name.is_empty() {
            Some("is empty")
        } else if e.name.contains('=') {
            Some("contains '='")
        } else if e.name.contains('\0') {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(what) = bad {
            return Err(err(
                &format!("{path}[{i}].name"),
                format!("{:?} {what}", e.name),
            ));
        }
        if e.value.contains('\0') {
            return Err(err(
                &format!("{path}[{i}].value"),
                "contains a NUL byte".into(),
            ));
        }
    }
    Ok(())
}

fn err(path: &str, message: String) -> SpecError {
    SpecError {
        path: path.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(cmd: &str) -> Step {
        Step {
            command: vec![cmd.into()],
            ..Default::default()
        }
    }

    fn spec(steps: Vec<Step>) -> Spec {
        Spec {
            version: 1,
            shell: None,
            env: vec![],
            containers: vec![],
            steps,
        }
    }

    #[test]
    fn accepts_a_simple_spec() {
        assert_eq!(spec(vec![leaf("/bin/true")]).validate(), Ok(()));
    }

    #[test]
    fn rejects_other_versions_naming_the_field() {
        let mut s = spec(vec![leaf("x")]);
        s.version = 2;
        let e = s.validate().unwrap_err();
        assert_eq!(e.path, "version");
        assert!(e.message.contains("unsupported spec version 2"), "{e}");
    }

    #[test]
    fn rejects_leaf_with_two_kinds_and_names_the_path() {
        let mut g = Step {
            steps: vec![leaf("a"), leaf("b")],
            ..Default::default()
        };
        g.steps[1].shell = Some("echo".into());
        let e = spec(vec![leaf("x"), g]).validate().unwrap_err();
        assert_eq!(e.path, "steps[1].steps[1]");
    }

    #[test]
    fn default_ids_collide_with_explicit_ones() {
        let mut b = leaf("b");
        b.id = Some("1".into());
        let e = spec(vec![leaf("a"), b]).validate().unwrap_err();
        assert_eq!(e.to_string(), "steps[1].id: duplicate step id \"1\"");
    }

    #[test]
    fn container_index_must_exist() {
        let mut a = leaf("a");
        a.container = Some(1);
        let e = spec(vec![a]).validate().unwrap_err();
        assert_eq!(e.path, "steps[0].container");
    }

    #[test]
    fn env_names_must_be_names() {
        for (name, want) in [
            ("", r#"steps[0].env[0].name: "" is empty"#),
            ("A=B", r#"steps[0].env[0].name: "A=B" contains '='"#),
            ("A\0", r#"steps[0].env[0].name: "A\0" contains a NUL byte"#),
        ] {
            let mut a = leaf("a");
            a.env = vec![EnvVar {
                name: name.into(),
                value: "v".into(),
            }];
            assert_eq!(spec(vec![a]).validate().unwrap_err().to_string(), want);
        }
        let mut s = spec(vec![leaf("a")]);
        s.env = vec![EnvVar {
            name: "=".into(),
            value: String::new(),
        }];
        assert_eq!(s.validate().unwrap_err().path, "env[0].name");
    }

    #[test]
    fn groups_nest_at_most_max_depth_levels() {
        let nest = |levels: usize| {
            let mut s = leaf("a");
            for _ in 0..levels {
                s = Step {
                    steps: vec![s],
                    ..Default::default()
                };
            }
            spec(vec![s])
        };
        // MAX_DEPTH levels of steps in all: MAX_DEPTH - 1 groups around a leaf.
        assert_eq!(nest(MAX_DEPTH - 1).validate(), Ok(()));
        let e = nest(MAX_DEPTH).validate().unwrap_err();
        assert!(e.message.contains("nest deeper than 32"), "{e}");
        assert_eq!(e.path.matches("steps").count(), MAX_DEPTH + 1);
    }

    #[test]
    fn retry_on_group_is_rejected() {
        let g = Step {
            steps: vec![leaf("a")],
            retry: Some(Retry {
                count: 1,
                until: Until::Passed,
            }),
            ..Default::default()
        };
        assert_eq!(spec(vec![g]).validate().unwrap_err().path, "steps[0].retry");
    }
}
