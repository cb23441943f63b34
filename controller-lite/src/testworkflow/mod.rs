//! The TestWorkflow language: documents in, a [`Workflow`] out (templates applied, config and
//! expressions evaluated, step ids derived).
//!
//! Order, as in Testkube (`testworkflowresolver`, `testworkflowprocessor`):
//! 1. the files' documents are read (several per file, `kind: List` too): one TestWorkflow,
//!    TestWorkflowTemplates from `--templates` and from the workflow's own file;
//! 2. the workflow's config parameters get their values (`--config`, defaults) and checks;
//! 3. each template used (`spec.use`, step `use`, step `template`) is evaluated in its own
//!    config (its reference's values and its defaults), then merged (`merge.rs`);
//! 4. the workflow's own texts are evaluated in its config (`walk.rs`);
//! 5. steps get their ids and each its final evaluation (`step.results`, static `env.*`) and
//!    the result is checked and lowered to the planner's model (`lower.rs`).
//!
//! What is known only when the steps run (statuses, outputs, the environment, sensitive
//! values) stays as expressions for the init.

pub mod config;
pub mod crd;
pub mod de;
mod lower;
pub mod merge;
pub mod text;
pub mod walk;

use crate::expr::{Expr, Lookup, Scope, Value};
use crate::workflow::{Workflow, WorkflowError};
use crd::{Document, Spec, Step, TemplateRef};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a run's evaluation knows besides the workflow: where templates are, config values,
/// the execution's identity.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Files or directories of TestWorkflowTemplate documents (`--templates`).
    pub templates: Vec<PathBuf>,
    /// `--config NAME=VALUE`, in order (a later one wins).
    pub config: Vec<(String, String)>,
    pub execution: Execution,
}

/// `execution.*` and `resource.*`.
#[derive(Debug, Clone)]
pub struct Execution {
    pub id: String,
    pub number: u64,
}

impl Default for Execution {
    fn default() -> Self {
        Execution {
            id: random_id(),
            number: 1,
        }
    }
}

/// 24 hex digits, as Testkube's execution ids.
fn random_id() -> String {
    let mut b = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type R<T> = Result<T, WorkflowError>;

fn werr(file: &str, path: impl Into<String>, message: impl Into<String>) -> WorkflowError {
    WorkflowError {
        file: file.to_string(),
        path: path.into(),
        message: message.into(),
    }
}

/// Reads text of at most one byte more than a workflow file may have, from a file or from
/// standard input (`-`), never blocking on a FIFO beyond what a pipe gives.
fn read_text(path: &Path) -> Result<(String, String), WorkflowError> {
    let stdin = path.as_os_str() == "-";
    let file = if stdin {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let limit = crate::yaml::MAX_BYTES as u64 + 1;
    let mut s = String::new();
    let read = if stdin {
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin().lock(), limit),
            &mut s,
        )
    } else {
        std::fs::File::open(path)
            .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, limit), &mut s))
    };
    read.map_err(|e| werr(&file, "", format!("cannot read: {e}")))?;
    Ok((file, s))
}

/// One document of a file: where it is (for messages) and its tree.
struct Doc {
    file: String,
    /// `items[3]` for an item of a List, else empty.
    at: String,
    value: serde_json::Value,
}

/// The documents of a text, `kind: List` items flattened.
fn documents(file: &str, text: &str) -> R<Vec<Doc>> {
    let docs = crate::yaml::documents(text).map_err(|e| werr(file, "", e))?;
    let mut out = Vec::new();
    for (n, d) in docs.into_iter().enumerate() {
        if d.is_null() {
            continue;
        }
        let at = |p: &str| {
            if n == 0 {
                p.to_string()
            } else {
                format!("(document {}) {p}", n + 1)
            }
        };
        match d.get("kind").and_then(|k| k.as_str()) {
            Some("List") => {
                let items = d
                    .get("items")
                    .and_then(|i| i.as_array())
                    .ok_or_else(|| werr(file, at("items"), "a List needs a list of items"))?;
                for (i, item) in items.iter().enumerate() {
                    out.push(Doc {
                        file: file.to_string(),
                        at: at(&format!("items[{i}]")),
                        value: item.clone(),
                    });
                }
            }
            _ => out.push(Doc {
                file: file.to_string(),
                at: at(""),
                value: d,
            }),
        }
    }
    Ok(out)
}

fn kind_of(d: &Doc) -> &str {
    d.value.get("kind").and_then(|k| k.as_str()).unwrap_or("")
}

/// A template found: its document and where it came from.
struct Template {
    doc: Document,
    file: String,
}

/// Templates by stored name (`team--shell-defaults`).
#[derive(Default)]
struct Templates {
    by_name: BTreeMap<String, Template>,
    /// Where stepctl looked, for "not found" messages.
    looked: Vec<String>,
}

/// The stored name of a template: `/` is `--` in Kubernetes object names.
pub fn stored_name(name: &str) -> String {
    name.replace('/', "--")
}

impl Templates {
    fn add(&mut self, d: &Doc) -> R<()> {
        let doc: Document = de::from_value(&d.value, "")
            .map_err(|e| werr(&d.file, join_at(&d.at, &e.field_path()), e.message()))?;
        if !doc.spec.r#use.is_empty() {
            return Err(werr(
                &d.file,
                join_at(&d.at, "spec.use"),
                "a template cannot use templates (nor can Testkube's)",
            ));
        }
        let name = stored_name(&doc.metadata.name);
        self.by_name.insert(
            name,
            Template {
                doc,
                file: d.file.clone(),
            },
        );
        Ok(())
    }

    /// Every TestWorkflowTemplate under `path` (a file, or a directory searched 4 levels
    /// deep for `*.yaml`/`*.yml`).
    fn load(&mut self, path: &Path) -> R<()> {
        self.looked.push(path.display().to_string());
        let mut files = Vec::new();
        collect_yaml(path, 0, &mut files).map_err(|e| {
            werr(
                &path.display().to_string(),
                "",
                format!("cannot read templates: {e}"),
            )
        })?;
        for f in files {
            let (file, text) = read_text(&f)?;
            for d in documents(&file, &text)? {
                if kind_of(&d) == "TestWorkflowTemplate" {
                    self.add(&d)?;
                }
            }
        }
        Ok(())
    }

    fn get(&self, name: &str, file: &str, at: &str) -> R<&Template> {
        self.by_name.get(&stored_name(name)).ok_or_else(|| {
            werr(
                file,
                at,
                format!(
                    "template {name:?} not found (looked in: {}; give --templates PATH)",
                    if self.looked.is_empty() {
                        "the workflow's file".to_string()
                    } else {
                        format!("the workflow's file, {}", self.looked.join(", "))
                    }
                ),
            )
        })
    }
}

fn join_at(at: &str, path: &str) -> String {
    match (at.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => at.to_string(),
        (false, false) => format!("{at}.{path}"),
    }
}

fn collect_yaml(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if depth > 4 {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        let is_yaml = e.extension().is_some_and(|x| x == "yaml" || x == "yml");
        if e.is_dir() {
            collect_yaml(&e, depth + 1, out)?;
        } else if is_yaml {
            out.push(e);
        }
    }
    Ok(())
}

/// Reads and resolves the workflow in file `path` (`-`: standard input).
pub fn load(path: &Path, o: &Options) -> R<Workflow> {
    let (file, text) = read_text(path)?;
    parse(&file, &text, o)
}

/// Resolves the workflow in `text` (`file` names it in messages).
pub fn parse(file: &str, text: &str, o: &Options) -> R<Workflow> {
    let docs = documents(file, text)?;
    let mut templates = Templates::default();
    for p in &o.templates {
        templates.load(p)?;
    }
    let mut workflows = Vec::new();
    for d in &docs {
        match kind_of(d) {
            "TestWorkflow" => workflows.push(d),
            "TestWorkflowTemplate" => templates.add(d)?,
            "" => return Err(werr(file, join_at(&d.at, "kind"), "missing (expected TestWorkflow)")),
            k => {
                return Err(werr(
                    file,
                    join_at(&d.at, "kind"),
                    format!("{k:?} is not supported by stepctl (supported: TestWorkflow, TestWorkflowTemplate, List)"),
                ))
            }
        }
    }
    let d = match workflows.as_slice() {
        [d] => *d,
        [] if docs.is_empty() => {
            return Err(werr(
                file,
                "",
                "the file is empty (expected a TestWorkflow)",
            ))
        }
        [] => return Err(werr(file, "", "holds no TestWorkflow")),
        many => {
            let names: Vec<&str> = many
                .iter()
                .filter_map(|d| d.value.get("metadata")?.get("name")?.as_str())
                .collect();
            return Err(werr(
                file,
                "",
                format!(
                    "holds {} TestWorkflows ({}): give one per file",
                    many.len(),
                    names.join(", ")
                ),
            ));
        }
    };
    let mut doc: Document = de::from_value(&d.value, "")
        .map_err(|e| werr(file, join_at(&d.at, &e.field_path()), e.message()))?;
    if let Some(v) = &doc.api_version {
        if !v.starts_with("testworkflows.testkube.io/") {
            return Err(werr(
                file,
                "apiVersion",
                format!("{v:?} is not supported (expected testworkflows.testkube.io/v1)"),
            ));
        }
    }
    let name = doc.metadata.name.clone();
    if !crate::workflow::is_dns_subdomain(&name) {
        return Err(werr(
            file,
            "metadata.name",
            format!("{name:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253, each part starting and ending alphanumeric)"),
        ));
    }
    let mut warnings = lower::ignored_warnings(file, &doc);
    let base = BaseScope::new(&doc, &o.execution);
    // The workflow's config: `--config` values (a later one wins) over the defaults.
    let given: BTreeMap<String, String> = o.config.iter().cloned().collect();
    let mut secrets = Vec::new();
    let cfg = config::resolve(
        &doc.spec.config,
        &given,
        "spec.config",
        true,
        &base,
        &mut warnings,
    )
    .map_err(|(p, m)| werr(file, p, m))?;
    let wf_scope = ConfigScope::new(&base, &doc.spec.config, cfg, &mut secrets);
    // Templates, then the workflow's own texts.
    let mut app = Apply {
        file,
        templates: &templates,
        base: &base,
        user: &wf_scope,
        secrets: &mut secrets,
        warnings: &mut warnings,
        depth: 0,
    };
    let uses = std::mem::take(&mut doc.spec.r#use);
    for (i, r) in uses.iter().enumerate().rev() {
        let t = app.instance(r, &format!("spec.use[{i}]"))?;
        merge::spec(&t, &mut doc.spec);
    }
    for (key, steps) in [
        ("setup", &mut doc.spec.setup),
        ("steps", &mut doc.spec.steps),
        ("after", &mut doc.spec.after),
    ] {
        for (i, s) in steps.iter_mut().enumerate() {
            app.step(s, &format!("spec.{key}[{i}]"))?;
        }
    }
    walk::Walk { scope: &wf_scope }
        .spec(&mut doc.spec, "spec")
        .map_err(|(p, m)| werr(file, p, m))?;
    let mut wf = lower::workflow(file, doc, &wf_scope, secrets)?;
    warnings.append(&mut wf.warnings);
    wf.warnings = warnings;
    Ok(wf)
}

/// Applies templates: each instance evaluated in its own config, then merged.
struct Apply<'a> {
    file: &'a str,
    templates: &'a Templates,
    base: &'a BaseScope,
    /// The scope of what uses the templates (the workflow's config).
    user: &'a dyn Scope,
    secrets: &'a mut Vec<(String, String)>,
    warnings: &'a mut Vec<String>,
    depth: usize,
}

impl Apply<'_> {
    /// The template of `r`, its texts evaluated with its config (`r.config`, evaluated in the
    /// user's scope, over the template's defaults).
    fn instance(&mut self, r: &TemplateRef, at: &str) -> R<Spec> {
        let t = self.templates.get(&r.name, self.file, at)?;
        let given = config::given_texts(&r.config, &format!("{at}.config"), self.user)
            .map_err(|(p, m)| werr(self.file, p, m))?;
        let mut spec = t.doc.spec.clone();
        let in_template = |p: &str, m: &str| {
            werr(
                self.file,
                at,
                format!("template {:?} ({}): {p}: {m}", r.name, t.file),
            )
        };
        let cfg = config::resolve(
            &spec.config,
            &given,
            "config",
            false,
            self.base,
            self.warnings,
        )
        .map_err(|(p, m)| in_template(&p, &m))?;
        let scope = ConfigScope::new(self.base, &spec.config, cfg, self.secrets);
        check_no_templates(&spec)
            .map_err(|p| in_template(&p, "a template cannot use templates"))?;
        walk::Walk { scope: &scope }
            .spec(&mut spec, "spec")
            .map_err(|(p, m)| in_template(&p, &m))?;
        Ok(spec)
    }

    /// A step's `use` and `template`, then its children's.
    fn step(&mut self, s: &mut Step, path: &str) -> R<()> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(werr(self.file, path, "steps nest deeper than 64 levels"));
        }
        let uses = std::mem::take(&mut s.r#use);
        for (i, r) in uses.iter().enumerate().rev() {
            let t = self.instance(r, &format!("{path}.use[{i}]"))?;
            if t.pod.is_some() || t.job.is_some() {
                self.warnings.push(format!(
                    "{}: {path}.use[{i}]: template {:?}: pod and job settings apply only in spec.use (ignored here, as in Testkube)",
                    self.file, r.name
                ));
            }
            merge::step_use(&t, s);
        }
        if let Some(r) = s.template.take() {
            let t = self.instance(&r, &format!("{path}.template"))?;
            if !merge::step_template(&t, s) {
                self.warnings.push(format!(
                    "{}: {path}.template: template {:?} has no steps: nothing added (as in Testkube)",
                    self.file, r.name
                ));
            }
        }
        for (key, children) in [("setup", &mut s.setup), ("steps", &mut s.steps)] {
            for (i, c) in children.iter_mut().enumerate() {
                self.step(c, &format!("{path}.{key}[{i}]"))?;
            }
        }
        self.depth -= 1;
        Ok(())
    }
}

/// Err: the path of a `use` or `template` inside a template.
fn check_no_templates(spec: &Spec) -> Result<(), String> {
    fn steps(list: &[Step], path: &str) -> Result<(), String> {
        for (i, s) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if !s.r#use.is_empty() {
                return Err(format!("{p}.use"));
            }
            if s.template.is_some() {
                return Err(format!("{p}.template"));
            }
            steps(&s.setup, &format!("{p}.setup"))?;
            steps(&s.steps, &format!("{p}.steps"))?;
        }
        Ok(())
    }
    steps(&spec.setup, "spec.setup")?;
    steps(&spec.steps, "spec.steps")?;
    steps(&spec.after, "spec.after")
}

/// What every scope knows: the workflow and the execution, and which names wait for run time.
struct BaseScope {
    vars: BTreeMap<String, Value>,
}

impl BaseScope {
    fn new(doc: &Document, e: &Execution) -> BaseScope {
        let name = doc.metadata.name.clone();
        let mut vars = BTreeMap::new();
        let labels: BTreeMap<String, Value> = doc
            .metadata
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        for (k, v) in &labels {
            vars.insert(
                format!("labels.{}", k.replace(['.', '-', '/'], "_")),
                v.clone(),
            );
        }
        vars.insert("workflow.name".into(), Value::from(name.as_str()));
        vars.insert("workflow.labels".into(), Value::Map(labels));
        vars.insert("execution.id".into(), Value::from(e.id.as_str()));
        vars.insert("execution.number".into(), Value::Int(e.number as i64));
        vars.insert(
            "execution.name".into(),
            Value::from(format!("{name}-{}", e.number)),
        );
        vars.insert("execution.tags".into(), Value::Map(BTreeMap::new()));
        vars.insert("resource.id".into(), Value::from(e.id.as_str()));
        vars.insert("resource.root".into(), Value::from(e.id.as_str()));
        vars.insert("resource.fsPrefix".into(), Value::from(""));
        vars.insert("organization.id".into(), Value::from(""));
        vars.insert("environment.id".into(), Value::from(""));
        vars.insert("always".into(), Value::Bool(true));
        vars.insert("never".into(), Value::Bool(false));
        BaseScope { vars }
    }
}

/// Names whose values only the init knows.
pub fn is_runtime(name: &str) -> bool {
    matches!(
        name,
        "passed"
            | "failed"
            | "success"
            | "error"
            | "status"
            | "self.passed"
            | "self.failed"
            | "self.success"
            | "self.error"
            | "self.status"
    ) || name.starts_with("env.")
        || name.starts_with("step.")
}

impl Scope for BaseScope {
    fn lookup(&self, name: &str) -> Lookup {
        if let Some(v) = self.vars.get(name) {
            return Lookup::Value(v.clone());
        }
        if is_runtime(name) {
            return Lookup::Runtime;
        }
        Lookup::Unknown
    }
}

/// A base scope with one set of config values; sensitive ones stand for the variable that
/// will carry them to the steps.
struct ConfigScope<'a> {
    base: &'a BaseScope,
    values: BTreeMap<String, Lookup>,
}

impl<'a> ConfigScope<'a> {
    fn new(
        base: &'a BaseScope,
        schema: &BTreeMap<String, crd::Param>,
        cfg: config::Config,
        secrets: &mut Vec<(String, String)>,
    ) -> ConfigScope<'a> {
        let mut values = BTreeMap::new();
        for (k, v) in cfg.values {
            let sensitive = schema.get(&k).is_some_and(|p| p.sensitive);
            let l = if sensitive {
                let var = format!("STEPCTL_SENSITIVE_{}", secrets.len());
                secrets.push((var.clone(), v.to_text()));
                Lookup::Alias(Expr::Var(format!("env.{var}")))
            } else {
                Lookup::Value(v)
            };
            values.insert(format!("config.{k}"), l);
        }
        ConfigScope { base, values }
    }
}

impl Scope for ConfigScope<'_> {
    fn lookup(&self, name: &str) -> Lookup {
        if let Some(l) = self.values.get(name) {
            return l.clone();
        }
        self.base.lookup(name)
    }
}
