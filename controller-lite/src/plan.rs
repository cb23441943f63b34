//! The planner: a workflow's step tree becomes a `stepinit_protocol::Spec` (groups kept, every
//! leaf assigned to a container) plus the list of containers the pod needs.
//!
//! A step becomes a leaf when it runs something itself (`shell`/`run`) and has no nested steps;
//! a group when it has nested steps, its own operation (if any) then being a leaf between its
//! `setup` and its `steps` (Testkube's order), with the step's condition.
//!
//! Merge rule (the Testkube architecture documentation's "pure" steps): leaves run in tree order;
//! two adjacent leaves share a container when at least one of them is pure and their container
//! settings are compatible (same image, pull policy, securityContext, volume mounts, resources
//! and variables from other objects; env, workingDir, command and args are per step and never
//! prevent merging). `spec.system.isolatedContainers` disables merging; `spec.system.pureByDefault`
//! makes steps pure unless they say `pure: false`. Five shell steps with steps 1 and 4 pure give
//! containers {1,2} and {3,4,5}: 1|2 merge (1 is pure), 2|3 do not (neither is), 3|4 and 4|5
//! merge (4 is).
//!
//! Expressions left for run time (statuses, outputs, the environment) become the spec's
//! `stepinit_protocol::expr` form: conditions, `retry.until`, and `computed` fields.

use crate::expr::{self, Part};
use crate::workflow::{ContainerConfig, EnvValue, Rendered, Step, Workflow, WorkflowError};
use std::collections::HashMap;
use stepinit_protocol::expr::{BinOp, Expr as PExpr, Func};
use stepinit_protocol::spec::{self, Computed, EnvVar, Field, Retry, Until};
use stepinit_protocol::Spec;

/// The image used by steps that name none (neither in `run`, `container` nor `spec.container`):
/// the busybox image built by `images/build`. Ignored by the local engine.
pub const DEFAULT_IMAGE: &str = "localhost/stepinit/test-busybox:dev";

/// What the planner needs from an image when a step leaves it out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageMeta {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Why an image's metadata could not be had.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupError {
    pub message: String,
    /// The message already says which fields make the lookup unnecessary.
    pub advises: bool,
}

/// Looks up an image's metadata (podman or registry).
pub type Resolver<'a> = &'a mut dyn FnMut(&str) -> Result<ImageMeta, LookupError>;

/// One container of the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedContainer {
    /// Container name in the pod: `group-N`.
    pub name: String,
    /// The settings shared by its steps (image, pull policy, securityContext, mounts, resources,
    /// variables from other objects).
    pub config: ContainerConfig,
    pub image: String,
    /// Ids of the leaves it runs, in order.
    pub leaves: Vec<String>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub spec: Spec,
    pub containers: Vec<PlannedContainer>,
    /// Variables every container gets (sensitive config values), never in the spec.
    pub secrets: Vec<(String, String)>,
    /// `activeDeadlineSeconds`: how long the whole run may take.
    pub deadline_s: Option<u64>,
}

/// A leaf in tree order with what merging needs.
struct Leaf {
    id: String,
    pure: bool,
    config: ContainerConfig,
}

struct Planner<'r, 'a> {
    wf: &'a Workflow,
    resolver: Option<Resolver<'r>>,
    leaves: Vec<Leaf>,
    meta_cache: Vec<(String, Result<ImageMeta, LookupError>)>,
    /// Testkube id of a step → spec id of the leaf that runs its own operation (its outputs).
    producers: HashMap<String, String>,
}

/// The spec id of the leaf running step `s`'s own operation, given the step's id: itself, or
/// its place among its setup and steps.
fn op_leaf_id(s: &Step, id: &str) -> String {
    if s.is_group() {
        format!("{id}.{}", s.setup.len() + 1)
    } else {
        id.to_string()
    }
}

/// The producers (see [`Planner::producers`]) under a group at `id`.
fn nested(s: &Step, id: &str, out: &mut HashMap<String, String>) {
    let mut k = 0;
    let mut next = || {
        k += 1;
        format!("{id}.{k}")
    };
    for c in &s.setup {
        let cid = next();
        visit(c, &cid, out);
    }
    if s.has_operation() {
        next();
    }
    for c in &s.steps {
        let cid = next();
        visit(c, &cid, out);
    }
}

fn visit(s: &Step, id: &str, out: &mut HashMap<String, String>) {
    if let (Some(tk), true) = (&s.id, s.has_operation()) {
        out.insert(tk.clone(), op_leaf_id(s, id));
    }
    if s.is_group() {
        nested(s, id, out);
    }
}

/// Plans a workflow. `resolver` is asked for image metadata when a step has no command (and
/// for the user of containers whose securityContext has no runAsUser); without one, such a step
/// is an error naming the fields to set.
pub fn plan(wf: &Workflow, resolver: Option<Resolver<'_>>) -> Result<Plan, WorkflowError> {
    let mut ids = HashMap::new();
    for (i, s) in wf.steps.iter().enumerate() {
        visit(s, &(i + 1).to_string(), &mut ids);
    }
    let mut p = Planner {
        wf,
        resolver,
        leaves: Vec::new(),
        meta_cache: Vec::new(),
        producers: ids,
    };
    let mut steps = Vec::new();
    for (i, s) in wf.steps.iter().enumerate() {
        steps.extend(p.step(s, &(i + 1).to_string(), &wf.container, wf.pure_by_default)?);
    }
    let containers = p.merge();
    // Assign container indexes to the leaves.
    let mut index = HashMap::new();
    for (ci, c) in containers.iter().enumerate() {
        for id in &c.leaves {
            index.insert(id.clone(), ci as u32);
        }
    }
    fn assign(steps: &mut [spec::Step], index: &HashMap<String, u32>) {
        for s in steps {
            if s.steps.is_empty() {
                s.container = index.get(s.id.as_deref().unwrap_or_default()).copied();
            } else {
                assign(&mut s.steps, index);
            }
        }
    }
    assign(&mut steps, &index);
    let spec = Spec {
        version: stepinit_protocol::VERSION,
        shell: None,
        env: Vec::new(),
        containers: containers
            .iter()
            .map(|c| spec::Container {
                name: Some(c.name.clone()),
                run_as_user: c.run_as_user,
                run_as_group: c.run_as_group,
                working_dir: c.config.working_dir.clone(),
            })
            .collect(),
        steps,
    };
    spec.validate().map_err(|e| WorkflowError {
        file: wf.file.clone(),
        path: String::new(),
        message: format!("internal error: generated spec is invalid at {e}"),
    })?;
    Ok(Plan {
        name: wf.name.clone(),
        spec,
        containers,
        secrets: wf.secrets.clone(),
        deadline_s: wf.deadline_s(),
    })
}

/// Fills in the user of containers whose securityContext sets none, from the image's USER
/// (numeric `uid[:gid]` only; a named user stays unknown, which the init's setup handles with
/// its documented fallback). Images that declare no USER run as root. Used when building pods;
/// the local engine ignores images. Returns a warning per image whose metadata could not be
/// read (its containers' users then stay unknown).
pub fn fill_users(plan: &mut Plan, resolver: Resolver<'_>) -> Vec<String> {
    let mut cache: Vec<(String, Option<ImageMeta>)> = Vec::new();
    let mut warnings = Vec::new();
    for (i, c) in plan.containers.iter_mut().enumerate() {
        if c.run_as_user.is_some() {
            continue;
        }
        let meta = match cache.iter().find(|(img, _)| *img == c.image) {
            Some((_, m)) => m.clone(),
            None => {
                let m = match resolver(&c.image) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        warnings.push(format!(
                            "the user of image {} is unknown ({}): its steps' files are prepared for any user",
                            c.image, e.message
                        ));
                        None
                    }
                };
                cache.push((c.image.clone(), m.clone()));
                m
            }
        };
        let Some(meta) = meta else { continue };
        match meta.user.as_deref() {
            None | Some("") => c.run_as_user = Some(0),
            Some(u) => {
                let mut parts = u.splitn(2, ':');
                c.run_as_user = parts.next().and_then(|x| x.parse().ok());
                if c.run_as_group.is_none() {
                    c.run_as_group = parts.next().and_then(|x| x.parse().ok());
                }
            }
        }
        if let Some(sc) = plan.spec.containers.get_mut(i) {
            sc.run_as_user = c.run_as_user;
            sc.run_as_group = c.run_as_group;
        }
    }
    warnings
}

/// A short human name for a step that has none.
fn derived_name(shell: Option<&Rendered>, argv: &[String]) -> String {
    let text = if let Some(sh) = shell {
        let sh = sh.shown();
        sh.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("shell")
            .to_string()
    } else if !argv.is_empty() {
        argv.join(" ")
    } else {
        "group".to_string()
    };
    // A name is one line of text in reports: control bytes of the script are not printed raw.
    let mut out: String = text
        .chars()
        .take(60)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Names whose values are the step's status where a condition or `until` reads them.
fn status_name(name: &str) -> Option<bool> {
    match name {
        "passed" | "success" | "self.passed" | "self.success" => Some(true),
        "failed" | "error" | "self.failed" | "self.error" => Some(false),
        _ => None,
    }
}

impl Planner<'_, '_> {
    fn err(&self, path: &str, message: String) -> WorkflowError {
        WorkflowError {
            file: self.wf.file.clone(),
            path: path.to_string(),
            message,
        }
    }

    fn meta(&mut self, image: &str) -> Option<Result<ImageMeta, LookupError>> {
        if let Some((_, r)) = self.meta_cache.iter().find(|(i, _)| i == image) {
            return Some(r.clone());
        }
        let resolver = self.resolver.as_mut()?;
        let r = resolver(image);
        self.meta_cache.push((image.to_string(), r.clone()));
        Some(r)
    }

    /// A run-time expression in the init's form. Err: what the init cannot evaluate.
    fn runtime(&self, e: &expr::Expr) -> Result<PExpr, String> {
        use expr::{Expr as E, Op, Value as V};
        Ok(match e {
            E::Lit(V::Null) => PExpr::Null,
            E::Lit(V::Bool(b)) => PExpr::Bool(*b),
            E::Lit(V::Str(s)) => PExpr::Str(s.clone()),
            E::Lit(V::Int(n)) => PExpr::Call(Func::Int, vec![PExpr::Num(n.to_string())]),
            E::Lit(V::Float(f)) => PExpr::Num(expr::value::format_float(*f)),
            E::Lit(v) => {
                return Err(format!(
                    "{} ({}) cannot be used with values known only when the step runs",
                    v.describe(),
                    v.type_name()
                ))
            }
            E::Var(name) => {
                if let Some(passed) = status_name(name) {
                    if passed {
                        PExpr::Passed
                    } else {
                        PExpr::Failed
                    }
                } else if name == "status" || name == "self.status" {
                    PExpr::Cond(
                        Box::new(PExpr::Passed),
                        Box::new(PExpr::Str("passed".into())),
                        Box::new(PExpr::Str("failed".into())),
                    )
                } else if let Some(v) = name.strip_prefix("env.") {
                    PExpr::Env(v.to_string())
                } else if let Some(rest) = name.strip_prefix("step.") {
                    let (tk, key) = rest
                        .split_once(".outputs.")
                        .ok_or_else(|| format!("unknown variable {name}"))?;
                    let step = self.producers.get(tk).ok_or_else(|| {
                        format!("step {tk} runs nothing of its own (no shell or run): it has no outputs")
                    })?;
                    PExpr::Output {
                        step: step.clone(),
                        key: key.to_string(),
                    }
                } else {
                    return Err(format!("unknown variable {name}"));
                }
            }
            E::Not(a) => PExpr::Not(Box::new(self.runtime(a)?)),
            E::Neg(a) => PExpr::Neg(Box::new(self.runtime(a)?)),
            E::Bin(op, a, b) => {
                let o = match op {
                    Op::Pow => return Err("`**` is not computed when the step runs".into()),
                    o => BinOp::from_symbol(o.symbol()).ok_or("unknown operator")?,
                };
                PExpr::Bin(o, Box::new(self.runtime(a)?), Box::new(self.runtime(b)?))
            }
            E::Cond(c, a, b) => PExpr::Cond(
                Box::new(self.runtime(c)?),
                Box::new(self.runtime(a)?),
                Box::new(self.runtime(b)?),
            ),
            E::Call(name, args) => {
                let f = Func::named(name).ok_or_else(|| {
                    format!("{name}() is not computed when the step runs (the init has string, int, bool, trim, len, shellquote, default)")
                })?;
                if args.iter().any(|(_, spread)| *spread) {
                    return Err(format!(
                        "{name}(): `...` is not computed when the step runs"
                    ));
                }
                PExpr::Call(
                    f,
                    args.iter()
                        .map(|(a, _)| self.runtime(a))
                        .collect::<Result<_, _>>()?,
                )
            }
            E::Prop(_, p) => return Err(format!(".{p} is not computed when the step runs")),
        })
    }

    /// A text with run-time parts, for a computed field.
    fn runtime_text(&self, r: &Rendered) -> Result<PExpr, String> {
        let mut parts = Vec::new();
        for p in &r.0 {
            parts.push(match p {
                Part::Text(t) => PExpr::Str(t.clone()),
                Part::Expr(e) => self.runtime(e).map_err(|m| format!("{{{{ {e} }}}}: {m}"))?,
            });
        }
        Ok(PExpr::Text(parts))
    }

    fn condition(
        &self,
        c: Option<&expr::Expr>,
        path: &str,
    ) -> Result<spec::Condition, WorkflowError> {
        Ok(match c {
            None => spec::Condition::Passed,
            Some(expr::Expr::Lit(v)) => {
                if v.truthy() {
                    spec::Condition::Always
                } else {
                    spec::Condition::Never
                }
            }
            Some(expr::Expr::Var(n)) if status_name(n).is_some() => {
                if status_name(n) == Some(true) {
                    spec::Condition::Passed
                } else {
                    spec::Condition::Failed
                }
            }
            Some(e) => spec::Condition::Expr(
                self.runtime(e)
                    .map_err(|m| self.err(&format!("{path}.condition"), format!("{e}: {m}")))?,
            ),
        })
    }

    fn until(&self, u: Option<&expr::Expr>, path: &str) -> Result<Until, WorkflowError> {
        Ok(match u {
            None => Until::Passed,
            Some(expr::Expr::Var(n)) if status_name(n) == Some(true) => Until::Passed,
            Some(expr::Expr::Var(n)) if status_name(n) == Some(false) => Until::Failed,
            Some(e) => Until::Expr(
                self.runtime(e)
                    .map_err(|m| self.err(&format!("{path}.retry.until"), format!("{e}: {m}")))?,
            ),
        })
    }

    /// The spec steps of workflow step `s` at id `id`: one leaf or one group.
    fn step(
        &mut self,
        s: &Step,
        id: &str,
        inherited: &ContainerConfig,
        inherited_pure: bool,
    ) -> Result<Vec<spec::Step>, WorkflowError> {
        let mut cfg = inherited.clone();
        if let Some(c) = &s.container {
            cfg = cfg.overlay(c);
        }
        if let Some(wd) = &s.working_dir {
            cfg = cfg.overlay(&ContainerConfig {
                working_dir: Some(wd.clone()),
                ..Default::default()
            });
        }
        let pure = s.pure.unwrap_or(inherited_pure);
        let condition = self.condition(s.condition.as_ref(), &s.path)?;
        if s.delay_ms.is_some() && !s.has_operation() {
            return Err(self.err(
                &format!("{}.delay", s.path),
                "applies to a step's own shell or run: this step has none".to_string(),
            ));
        }
        if !s.is_group() {
            let mut leaf = self.leaf(s, id, &cfg, pure)?;
            leaf.condition = condition;
            leaf.timeout_ms = s.timeout_ms;
            leaf.negative = s.negative;
            leaf.optional = s.optional;
            return Ok(vec![leaf]);
        }
        let mut out = spec::Step {
            id: Some(id.to_string()),
            name: Some(
                s.name
                    .clone()
                    .unwrap_or_else(|| derived_name(s.shell.as_ref(), &[])),
            ),
            timeout_ms: s.timeout_ms,
            condition: condition.clone(),
            negative: s.negative,
            optional: s.optional,
            ..Default::default()
        };
        let mut k = 0;
        let mut next = || {
            k += 1;
            format!("{id}.{k}")
        };
        for c in &s.setup {
            let cid = next();
            out.steps.extend(self.step(c, &cid, &cfg, pure)?);
        }
        if s.has_operation() {
            // Its own operation, first after its setup, under its condition (Testkube ANDs the
            // step's condition into each operation of the step).
            let cid = next();
            let mut leaf = self.leaf(s, &cid, &cfg, pure)?;
            leaf.condition = condition;
            // The step's name is the group's; the leaf is named after what it runs.
            leaf.name = Some(derived_name(s.shell.as_ref(), &leaf.command));
            out.steps.push(leaf);
        }
        for c in &s.steps {
            let cid = next();
            out.steps.extend(self.step(c, &cid, &cfg, pure)?);
        }
        Ok(vec![out])
    }

    /// The leaf running step `s`'s own operation (`shell` or `run`), with its container.
    fn leaf(
        &mut self,
        s: &Step,
        id: &str,
        inherited: &ContainerConfig,
        pure: bool,
    ) -> Result<spec::Step, WorkflowError> {
        let mut cfg = inherited.clone();
        if let Some(run) = &s.run {
            cfg = cfg.overlay(run);
        }
        if cfg.image.is_none() {
            cfg.image = Some(DEFAULT_IMAGE.to_string());
        }
        let image = cfg.image.clone().unwrap_or_default();
        let mut out = spec::Step {
            id: Some(id.to_string()),
            delay_ms: s.delay_ms,
            retry: match &s.retry {
                None => None,
                Some(r) => Some(Retry {
                    count: r.count,
                    until: self.until(r.until.as_ref(), &s.path)?,
                }),
            },
            ..Default::default()
        };
        let mut argv = Vec::new();
        if let Some(sh) = &s.shell {
            if cfg.command.is_some() || cfg.args.is_some() {
                return Err(self.err(
                    &s.path,
                    "has both `shell` and `command`/`args`: use one".to_string(),
                ));
            }
            out.shell = Some(sh.shown());
            if sh.known().is_none() {
                let value = self
                    .runtime_text(sh)
                    .map_err(|m| self.err(&format!("{}.shell", s.path), m))?;
                out.computed.push(Computed {
                    field: Field::Shell,
                    value,
                });
            }
        } else {
            let items: Vec<Rendered> = match &cfg.command {
                Some(cmd) => {
                    let mut v = cmd.clone();
                    v.extend(cfg.args.clone().unwrap_or_default());
                    v
                }
                None => match self.meta(&image) {
                    Some(Ok(meta)) => {
                        let mut v: Vec<Rendered> =
                            meta.entrypoint.iter().map(Rendered::plain).collect();
                        match &cfg.args {
                            Some(a) => v.extend(a.iter().cloned()),
                            None => v.extend(meta.cmd.iter().map(Rendered::plain)),
                        }
                        v
                    }
                    Some(Err(e)) => {
                        return Err(self.err(
                            &s.path,
                            if e.advises {
                                format!("has no command, and the ENTRYPOINT/CMD of image {image} could not be read: {}", e.message)
                            } else {
                                format!("has no command, and the ENTRYPOINT/CMD of image {image} could not be read ({}); set run.command (and run.args)", e.message)
                            },
                        ))
                    }
                    None => {
                        return Err(self.err(
                            &s.path,
                            format!("has no command and image metadata is not available here; set run.command (and run.args) for image {image}"),
                        ))
                    }
                },
            };
            if items.is_empty() {
                return Err(self.err(
                    &s.path,
                    format!("image {image} has no ENTRYPOINT or CMD; set run.command"),
                ));
            }
            for (i, r) in items.iter().enumerate() {
                argv.push(r.shown());
                if r.known().is_none() {
                    let value = self
                        .runtime_text(r)
                        .map_err(|m| self.err(&format!("{}.run.command[{i}]", s.path), m))?;
                    out.computed.push(Computed {
                        field: Field::Command(i as u32),
                        value,
                    });
                }
            }
            out.command = argv.clone();
        }
        out.name = Some(
            s.name
                .clone()
                .unwrap_or_else(|| derived_name(s.shell.as_ref(), &argv)),
        );
        for (k, v) in &cfg.env {
            match v {
                EnvValue::Text(r) => match r.known() {
                    Some(value) => out.env.push(EnvVar {
                        name: k.clone(),
                        value,
                    }),
                    None => {
                        let value = self
                            .runtime_text(r)
                            .map_err(|m| self.err(&format!("{}.env.{k}", s.path), m))?;
                        out.computed.push(Computed {
                            field: Field::Env(k.clone()),
                            value,
                        });
                    }
                },
                // The container's own variable (Kubernetes fills it): not per step.
                EnvValue::From(_) => {}
            }
        }
        out.working_dir = cfg.working_dir.clone();
        self.leaves.push(Leaf {
            id: id.to_string(),
            pure,
            config: cfg,
        });
        Ok(out)
    }

    fn merge(&mut self) -> Vec<PlannedContainer> {
        let mut out: Vec<PlannedContainer> = Vec::new();
        let mut prev_pure = false;
        for leaf in &self.leaves {
            let joins = !self.wf.isolated_containers
                && (prev_pure || leaf.pure)
                && out
                    .last()
                    .is_some_and(|c| compatible(&c.config, &leaf.config));
            if joins {
                out.last_mut().unwrap().leaves.push(leaf.id.clone());
            } else {
                let mut config = leaf.config.clone();
                // What stays per step is not part of the container (variables Kubernetes fills
                // from other objects are).
                config.env.retain(|(_, v)| matches!(v, EnvValue::From(_)));
                config.command = None;
                config.args = None;
                config.working_dir = None;
                out.push(PlannedContainer {
                    name: format!("group-{}", out.len()),
                    image: config.image.clone().unwrap_or_default(),
                    run_as_user: config.run_as_user(),
                    run_as_group: config.run_as_group(),
                    config,
                    leaves: vec![leaf.id.clone()],
                });
            }
            prev_pure = leaf.pure;
        }
        out
    }
}

/// Whether two steps may run in the same container.
pub fn compatible(a: &ContainerConfig, b: &ContainerConfig) -> bool {
    a.image == b.image
        && a.image_pull_policy == b.image_pull_policy
        && a.security_context == b.security_context
        && a.volume_mounts == b.volume_mounts
        && a.resources == b.resources
        && a.value_from() == b.value_from()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::parse;

    fn groups(yaml: &str) -> Vec<Vec<String>> {
        let wf = parse("t.yaml", yaml).unwrap();
        plan(&wf, None)
            .unwrap()
            .containers
            .into_iter()
            .map(|c| c.leaves)
            .collect()
    }

    fn ids(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|g| g.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    const HEAD: &str = "kind: TestWorkflow\nmetadata: {name: t}\n";

    #[test]
    fn testkube_docs_pure_example_gives_two_containers() {
        let g = groups(include_str!("../tests/workflows/pure-steps.yaml"));
        assert_eq!(g, ids(&[&["1", "2"], &["3", "4", "5"]]));
    }

    #[test]
    fn no_pure_steps_means_one_container_each() {
        let g = groups(&format!(
            "{HEAD}spec:\n  steps: [{{shell: a}}, {{shell: b}}, {{shell: c}}]\n"
        ));
        assert_eq!(g, ids(&[&["1"], &["2"], &["3"]]));
    }

    #[test]
    fn pure_by_default_merges_everything_compatible() {
        let g = groups(&format!(
            "{HEAD}spec:\n  system: {{pureByDefault: true}}\n  steps: [{{shell: a}}, {{shell: b}}, {{shell: c, pure: false}}, {{shell: d, pure: false}}]\n"
        ));
        // 2|3 merge (2 is pure); 3|4 do not (neither is).
        assert_eq!(g, ids(&[&["1", "2", "3"], &["4"]]));
    }

    #[test]
    fn isolated_containers_disables_merging() {
        let g = groups(&format!(
            "{HEAD}spec:\n  system: {{pureByDefault: true, isolatedContainers: true}}\n  steps: [{{shell: a}}, {{shell: b}}]\n"
        ));
        assert_eq!(g, ids(&[&["1"], &["2"]]));
    }

    #[test]
    fn incompatible_neighbours_never_merge() {
        let g = groups(&format!(
            "{HEAD}spec:\n  system: {{pureByDefault: true}}\n  steps:\n  - shell: a\n  - run: {{image: other, shell: b}}\n  - shell: c\n    container: {{securityContext: {{runAsUser: 1000}}}}\n  - shell: d\n    container: {{securityContext: {{runAsUser: 1000}}, env: [{{name: X, value: y}}], workingDir: /w}}\n  - shell: e\n    container: {{volumeMounts: [{{name: v, mountPath: /v}}], securityContext: {{runAsUser: 1000}}}}\n"
        ));
        // env and workingDir differences do not matter; image, securityContext, mounts do.
        assert_eq!(g, ids(&[&["1"], &["2"], &["3", "4"], &["5"]]));
    }

    #[test]
    fn nested_groups_flatten_and_keep_their_ids() {
        let wf = parse(
            "t.yaml",
            &format!(
                "{HEAD}spec:\n  setup: [{{shell: s}}]\n  steps:\n  - name: g\n    pure: true\n    steps: [{{shell: a}}, {{name: inner, steps: [{{shell: b}}]}}]\n  after: [{{shell: z}}]\n"
            ),
        )
        .unwrap();
        let p = plan(&wf, None).unwrap();
        let c: Vec<_> = p.containers.iter().map(|c| c.leaves.clone()).collect();
        // The group is pure: its leaves merge with each other and their neighbours.
        assert_eq!(c, ids(&[&["1", "2.1", "2.2.1", "3"]]));
        assert_eq!(p.spec.steps[1].name.as_deref(), Some("g"));
        assert_eq!(
            p.spec.steps[1].steps[1].steps[0].id.as_deref(),
            Some("2.2.1")
        );
        assert_eq!(p.spec.steps[1].steps[1].steps[0].container, Some(0));
        assert_eq!(
            p.spec.steps[2].condition,
            spec::Condition::Passed,
            "after steps are plain steps after the others (Testkube's templates say `condition: always` where they mean it)"
        );
        assert_eq!(p.spec.steps[0].name.as_deref(), Some("s"));
    }

    #[test]
    fn spec_carries_step_settings() {
        let wf = parse("t.yaml", include_str!("../tests/workflows/conditions.yaml")).unwrap();
        let p = plan(&wf, None).unwrap();
        let s = &p.spec;
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[0].steps[1].retry.as_ref().unwrap().count, 2);
        assert!(s.steps[1].negative);
        assert!(s.steps[2].optional);
        assert_eq!(s.steps[2].timeout_ms, Some(2000));
        assert_eq!(s.steps[3].condition, spec::Condition::Always);
        assert_eq!(p.containers.len(), 5);
        assert_eq!(s.containers.len(), 5);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn command_from_run_and_image_metadata() {
        let y = format!(
            "{HEAD}spec:\n  container: {{workingDir: /data, securityContext: {{runAsUser: 1001, runAsGroup: 1001}}}}\n  steps:\n  - run: {{command: [/bin/sh, -c], args: [echo hi]}}\n  - run: {{image: img, args: [x]}}\n"
        );
        let wf = parse("t.yaml", &y).unwrap();
        let e = plan(&wf, None).unwrap_err();
        assert_eq!(e.path, "spec.steps[1]");
        assert!(e.message.contains("set run.command"), "{e}");
        let mut asked = Vec::new();
        let mut r = |img: &str| {
            asked.push(img.to_string());
            Ok(ImageMeta {
                entrypoint: vec!["/entry".into()],
                cmd: vec!["default".into()],
                working_dir: None,
                user: Some("7:8".into()),
            })
        };
        let p = plan(&wf, Some(&mut r)).unwrap();
        assert_eq!(p.spec.steps[0].command, vec!["/bin/sh", "-c", "echo hi"]);
        assert_eq!(p.spec.steps[1].command, vec!["/entry", "x"]);
        assert_eq!(p.spec.steps[1].working_dir.as_deref(), Some("/data"));
        assert_eq!(
            p.containers[1].run_as_user,
            Some(1001),
            "securityContext wins over USER"
        );
        assert_eq!(p.spec.containers[0].run_as_group, Some(1001));
        assert!(
            asked.iter().all(|i| i == "img" || i == DEFAULT_IMAGE),
            "{asked:?}"
        );
    }
}
