//! Evaluates every templated field of a workflow's (or a template's) typed tree in one scope:
//! the fields Testkube expands (`{{ }}` in texts; whole expressions in `condition` and
//! `retry.until`; every text of `pod` and `job`). Texts already evaluated keep their result and
//! only what was left for run time is evaluated again (see `text.rs`).

use super::crd::{Container, EnvVar, Quantities, Run, Spec, Step};
use super::text::{ExprSrc, Text, TextList};
use crate::expr::Scope;
use serde_json::Value;

/// An evaluation error: the field path and the message.
pub type Fail = (String, String);

pub struct Walk<'a> {
    pub scope: &'a dyn Scope,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Walk<'_> {
    pub fn text(&self, t: &mut Text, path: &str) -> Result<(), Fail> {
        t.eval(self.scope).map_err(|m| (path.to_string(), m))
    }

    fn opt(&self, t: &mut Option<Text>, path: &str) -> Result<(), Fail> {
        match t {
            Some(t) => self.text(t, path),
            None => Ok(()),
        }
    }

    fn expr(&self, e: &mut Option<ExprSrc>, path: &str) -> Result<(), Fail> {
        match e {
            Some(e) => e.eval(self.scope).map_err(|m| (path.to_string(), m)),
            None => Ok(()),
        }
    }

    /// A list field: an item that is exactly one `{{ expr }}` giving a list becomes its items.
    fn list(&self, l: &mut Option<TextList>, path: &str) -> Result<(), Fail> {
        let Some(TextList(items)) = l else {
            return Ok(());
        };
        let mut out = Vec::new();
        for (i, t) in items.iter_mut().enumerate() {
            let p = format!("{path}[{i}]");
            if !t.is_done() {
                if let Some(expanded) =
                    Text::single_list(&t.src, self.scope).map_err(|m| (p.clone(), m))?
                {
                    out.extend(expanded.into_iter().map(Text::literal));
                    continue;
                }
            }
            self.text(t, &p)?;
            out.push(t.clone());
        }
        *items = out;
        Ok(())
    }

    /// Every text in a JSON tree (`pod`, `job`), keys of mappings too; all must be known.
    pub fn json(&self, v: &mut Value, path: &str) -> Result<(), Fail> {
        match v {
            Value::String(s) if s.contains("{{") => {
                let mut t = Text::raw(s.clone());
                self.text(&mut t, path)?;
                *s = t.known().ok_or((
                    path.to_string(),
                    "depends on values known only when the steps run".to_string(),
                ))?;
            }
            Value::Array(items) => {
                for (i, x) in items.iter_mut().enumerate() {
                    self.json(x, &format!("{path}[{i}]"))?;
                }
            }
            Value::Object(m) => {
                let entries = std::mem::take(m);
                for (k, mut x) in entries {
                    let mut key = Value::String(k.clone());
                    self.json(&mut key, &join(path, &k))?;
                    self.json(&mut x, &join(path, &k))?;
                    m.insert(key.as_str().unwrap_or(&k).to_string(), x);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn spec(&self, s: &mut Spec, path: &str) -> Result<(), Fail> {
        if let Some(c) = &mut s.container {
            self.container(c, &join(path, "container"))?;
        }
        for (key, v) in [("pod", &mut s.pod), ("job", &mut s.job)] {
            if let Some(m) = v {
                let mut j = Value::Object(std::mem::take(m));
                self.json(&mut j, &join(path, key))?;
                if let Value::Object(x) = j {
                    *m = x;
                }
            }
        }
        for (key, steps) in [
            ("setup", &mut s.setup),
            ("steps", &mut s.steps),
            ("after", &mut s.after),
        ] {
            for (i, st) in steps.iter_mut().enumerate() {
                self.step(st, &format!("{}[{i}]", join(path, key)))?;
            }
        }
        Ok(())
    }

    pub fn step(&self, s: &mut Step, path: &str) -> Result<(), Fail> {
        self.opt(&mut s.name, &join(path, "name"))?;
        self.opt(&mut s.timeout, &join(path, "timeout"))?;
        self.opt(&mut s.shell, &join(path, "shell"))?;
        self.opt(&mut s.working_dir, &join(path, "workingDir"))?;
        self.expr(&mut s.condition, &join(path, "condition"))?;
        if let Some(r) = &mut s.retry {
            self.expr(&mut r.until, &join(path, "retry.until"))?;
        }
        if let Some(c) = &mut s.container {
            self.container(c, &join(path, "container"))?;
        }
        if let Some(r) = &mut s.run {
            self.run(r, &join(path, "run"))?;
        }
        for (key, steps) in [("setup", &mut s.setup), ("steps", &mut s.steps)] {
            for (i, st) in steps.iter_mut().enumerate() {
                self.step(st, &format!("{}[{i}]", join(path, key)))?;
            }
        }
        Ok(())
    }

    fn run(&self, r: &mut Run, path: &str) -> Result<(), Fail> {
        self.opt(&mut r.shell, &join(path, "shell"))?;
        self.opt(&mut r.working_dir, &join(path, "workingDir"))?;
        self.opt(&mut r.image, &join(path, "image"))?;
        self.opt(&mut r.image_pull_policy, &join(path, "imagePullPolicy"))?;
        self.env(&mut r.env, &join(path, "env"))?;
        self.list(&mut r.command, &join(path, "command"))?;
        self.list(&mut r.args, &join(path, "args"))?;
        if let Some(res) = &mut r.resources {
            self.quantities(&mut res.requests, &join(path, "resources.requests"))?;
            self.quantities(&mut res.limits, &join(path, "resources.limits"))?;
        }
        Ok(())
    }

    pub fn container(&self, c: &mut Container, path: &str) -> Result<(), Fail> {
        self.opt(&mut c.working_dir, &join(path, "workingDir"))?;
        self.opt(&mut c.image, &join(path, "image"))?;
        self.opt(&mut c.image_pull_policy, &join(path, "imagePullPolicy"))?;
        self.env(&mut c.env, &join(path, "env"))?;
        self.list(&mut c.command, &join(path, "command"))?;
        self.list(&mut c.args, &join(path, "args"))?;
        if let Some(res) = &mut c.resources {
            self.quantities(&mut res.requests, &join(path, "resources.requests"))?;
            self.quantities(&mut res.limits, &join(path, "resources.limits"))?;
        }
        Ok(())
    }

    fn env(&self, env: &mut [EnvVar], path: &str) -> Result<(), Fail> {
        for (i, e) in env.iter_mut().enumerate() {
            let p = format!("{path}[{i}]");
            self.text(&mut e.name, &join(&p, "name"))?;
            self.opt(&mut e.value, &join(&p, "value"))?;
        }
        Ok(())
    }

    fn quantities(&self, q: &mut Option<Quantities>, path: &str) -> Result<(), Fail> {
        if let Some(q) = q {
            self.opt(&mut q.cpu, &join(path, "cpu"))?;
            self.opt(&mut q.memory, &join(path, "memory"))?;
            self.opt(&mut q.ephemeral_storage, &join(path, "ephemeral-storage"))?;
        }
        Ok(())
    }
}
