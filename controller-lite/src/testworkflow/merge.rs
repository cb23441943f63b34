//! Templates merged into what uses them, as Testkube merges them
//! (`testworkflowresolver`): `spec.use` (container defaults, env, pod/job, setup/steps/after),
//! step `use` (container, setup, steps, after) and step `template` (its steps as the first
//! nested ones). What uses a template always wins over it; of several templates in one `use`,
//! the later wins: for `use: [a, b]` scalars come from the workflow, else b, else a; `setup` is
//! a, b, workflow; `steps` a, b, workflow; `after` workflow, b, a.

use super::crd::{Container, EnvVar, Quantities, Resources, SecurityContext, Spec, Step};
use serde_json::{Map, Value};

/// `top` over `base`, for one field.
fn pick<T: Clone>(base: &Option<T>, top: &Option<T>) -> Option<T> {
    top.clone().or_else(|| base.clone())
}

/// The container settings of a template (`base`) under those of what uses it (`top`).
pub fn container(base: &Option<Container>, top: &Option<Container>) -> Option<Container> {
    let (b, t) = match (base, top) {
        (None, None) => return None,
        (Some(b), None) => return Some(b.clone()),
        (None, Some(t)) => return Some(t.clone()),
        (Some(b), Some(t)) => (b, t),
    };
    // A new image brings its own command and args (none: the image's); else a new command its
    // own args; else new args alone.
    let (image, command, args) = if t.image.is_some() {
        (t.image.clone(), t.command.clone(), t.args.clone())
    } else if t.command.is_some() {
        (b.image.clone(), t.command.clone(), t.args.clone())
    } else if t.args.is_some() {
        (b.image.clone(), b.command.clone(), t.args.clone())
    } else {
        (b.image.clone(), b.command.clone(), b.args.clone())
    };
    let mut volume_mounts = b.volume_mounts.clone();
    volume_mounts.extend(t.volume_mounts.iter().cloned());
    Some(Container {
        working_dir: pick(&b.working_dir, &t.working_dir),
        image,
        image_pull_policy: pick(&b.image_pull_policy, &t.image_pull_policy),
        env: env(&b.env, &t.env),
        command,
        args,
        resources: resources(&b.resources, &t.resources),
        security_context: security_context(&b.security_context, &t.security_context),
        volume_mounts,
    })
}

/// Both lists, each name kept once, where it last appears (so `top` wins and keeps its order).
pub fn env(base: &[EnvVar], top: &[EnvVar]) -> Vec<EnvVar> {
    let all: Vec<&EnvVar> = base.iter().chain(top).collect();
    let mut out: Vec<EnvVar> = Vec::new();
    for (i, e) in all.iter().enumerate() {
        let later = all[i + 1..].iter().any(|x| x.name.src == e.name.src);
        if !later {
            out.push((*e).clone());
        }
    }
    out
}

fn resources(base: &Option<Resources>, top: &Option<Resources>) -> Option<Resources> {
    let q = |b: &Option<Quantities>, t: &Option<Quantities>| match (b, t) {
        (Some(b), Some(t)) => Some(Quantities {
            cpu: pick(&b.cpu, &t.cpu),
            memory: pick(&b.memory, &t.memory),
            ephemeral_storage: pick(&b.ephemeral_storage, &t.ephemeral_storage),
        }),
        (b, t) => t.clone().or_else(|| b.clone()),
    };
    match (base, top) {
        (Some(b), Some(t)) => Some(Resources {
            requests: q(&b.requests, &t.requests),
            limits: q(&b.limits, &t.limits),
        }),
        (b, t) => t.clone().or_else(|| b.clone()),
    }
}

/// Field by field, `top` winning; capabilities added and dropped are the union.
pub fn security_context(
    base: &Option<SecurityContext>,
    top: &Option<SecurityContext>,
) -> Option<SecurityContext> {
    let (b, t) = match (base, top) {
        (Some(b), Some(t)) => (b, t),
        (b, t) => return t.clone().or_else(|| b.clone()),
    };
    let capabilities = match (&b.capabilities, &t.capabilities) {
        (Some(x), Some(y)) => {
            let union = |a: &[String], b: &[String]| {
                let mut v = a.to_vec();
                v.extend(b.iter().filter(|s| !a.contains(s)).cloned());
                v
            };
            Some(super::crd::Capabilities {
                add: union(&x.add, &y.add),
                drop: union(&x.drop, &y.drop),
            })
        }
        (x, y) => y.clone().or_else(|| x.clone()),
    };
    Some(SecurityContext {
        allow_privilege_escalation: pick(
            &b.allow_privilege_escalation,
            &t.allow_privilege_escalation,
        ),
        app_armor_profile: pick(&b.app_armor_profile, &t.app_armor_profile),
        capabilities,
        privileged: pick(&b.privileged, &t.privileged),
        proc_mount: pick(&b.proc_mount, &t.proc_mount),
        read_only_root_filesystem: pick(&b.read_only_root_filesystem, &t.read_only_root_filesystem),
        run_as_group: pick(&b.run_as_group, &t.run_as_group),
        run_as_non_root: pick(&b.run_as_non_root, &t.run_as_non_root),
        run_as_user: pick(&b.run_as_user, &t.run_as_user),
        se_linux_options: pick(&b.se_linux_options, &t.se_linux_options),
        seccomp_profile: pick(&b.seccomp_profile, &t.seccomp_profile),
    })
}

/// Deep merge of JSON (`pod`, `job`): mappings key by key, lists appended (base's items first),
/// other values from `top`.
pub fn json(base: &Value, top: &Value) -> Value {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            let mut out = b.clone();
            for (k, v) in t {
                let merged = match out.get(k) {
                    Some(old) => json(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(t)) => {
            let mut v = b.clone();
            v.extend(t.iter().cloned());
            Value::Array(v)
        }
        (_, t) => t.clone(),
    }
}

fn json_map(
    base: &Option<Map<String, Value>>,
    top: &Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    match (base, top) {
        (Some(b), Some(t)) => match json(&Value::Object(b.clone()), &Value::Object(t.clone())) {
            Value::Object(m) => Some(m),
            _ => None,
        },
        (b, t) => t.clone().or_else(|| b.clone()),
    }
}

/// A template's spec (its texts evaluated in its own config) merged under a workflow's.
pub fn spec(template: &Spec, wf: &mut Spec) {
    wf.container = container(&template.container, &wf.container);
    wf.pod = json_map(&template.pod, &wf.pod);
    wf.job = json_map(&template.job, &wf.job);
    if let Some(ts) = &template.system {
        let s = wf.system.get_or_insert_with(Default::default);
        s.pure_by_default = s.pure_by_default.or(ts.pure_by_default);
        s.isolated_containers = s.isolated_containers.or(ts.isolated_containers);
    }
    let mut setup = template.setup.clone();
    setup.append(&mut wf.setup);
    wf.setup = setup;
    let mut steps = template.steps.clone();
    steps.append(&mut wf.steps);
    wf.steps = steps;
    wf.after.extend(template.after.iter().cloned());
}

/// A template used by a step (`use`): container defaults, and its setup before the step's,
/// its steps before the step's own, its after steps at the end.
pub fn step_use(template: &Spec, step: &mut Step) {
    step.container = container(&template.container, &step.container);
    let mut setup = template.setup.clone();
    setup.append(&mut step.setup);
    step.setup = setup;
    let mut steps = template.steps.clone();
    steps.append(&mut step.steps);
    steps.extend(template.after.iter().cloned());
    step.steps = steps;
}

/// A step's `template`: the template's setup, steps and after as the step's first nested
/// steps, in a group of their own when the template sets container defaults. Nothing when
/// the template has no steps (as in Testkube: its container settings alone are dropped).
pub fn step_template(template: &Spec, step: &mut Step) -> bool {
    if template.setup.is_empty() && template.steps.is_empty() && template.after.is_empty() {
        return false;
    }
    let mut inner: Vec<Step> = template.setup.clone();
    inner.extend(template.steps.iter().cloned());
    inner.extend(template.after.iter().cloned());
    let first = if template.container.is_some() {
        vec![Step {
            container: template.container.clone(),
            steps: inner,
            ..Default::default()
        }]
    } else {
        inner
    };
    let mut steps = first;
    steps.append(&mut step.steps);
    step.steps = steps;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testworkflow::de::from_value;

    fn c(yaml: &str) -> Option<Container> {
        let v = crate::yaml::documents(yaml).unwrap().remove(0);
        Some(from_value(&v, "c").unwrap())
    }

    fn names(env: &[EnvVar]) -> Vec<String> {
        env.iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e.name.src,
                    e.value.as_ref().map_or("", |v| v.src.as_str())
                )
            })
            .collect()
    }

    #[test]
    fn containers_merge_as_in_testkube() {
        let t = c("image: t\ncommand: [tc]\nargs: [ta]\nworkingDir: /t\nenv: [{name: A, value: t}, {name: B, value: t}]\nsecurityContext: {runAsUser: 1, capabilities: {drop: [ALL]}}\nresources: {limits: {cpu: '1'}}\n");
        let w = c("env: [{name: A, value: w}, {name: C, value: w}]\nsecurityContext: {runAsGroup: 2, capabilities: {drop: [NET_RAW], add: [X]}}\nresources: {limits: {memory: 1Gi}}\n");
        let m = container(&t, &w).unwrap();
        assert_eq!(names(&m.env), ["B=t", "A=w", "C=w"]);
        assert_eq!(m.image.as_ref().unwrap().src, "t");
        assert_eq!(m.command.as_ref().unwrap().0[0].src, "tc");
        assert_eq!(m.working_dir.as_ref().unwrap().src, "/t");
        let sc = m.security_context.unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1), Some(2)));
        assert_eq!(sc.capabilities.unwrap().drop, ["ALL", "NET_RAW"]);
        let lim = m.resources.unwrap().limits.unwrap();
        assert_eq!(
            (lim.cpu.unwrap().src, lim.memory.unwrap().src),
            ("1".into(), "1Gi".into())
        );
        // A new image resets command and args (to the image's).
        let m = container(&t, &c("image: w\n")).unwrap();
        assert_eq!(m.image.unwrap().src, "w");
        assert!(m.command.is_none() && m.args.is_none());
        let m = container(&t, &c("args: [wa]\n")).unwrap();
        assert_eq!(m.command.unwrap().0[0].src, "tc");
        assert_eq!(m.args.unwrap().0[0].src, "wa");
    }

    #[test]
    fn json_merges_deeply_and_appends_lists() {
        let b = serde_json::json!({"labels": {"a": "t", "b": "t"}, "volumes": [{"name": "t"}], "serviceAccountName": "t"});
        let t = serde_json::json!({"labels": {"a": "w"}, "volumes": [{"name": "w"}]});
        assert_eq!(
            json(&b, &t),
            serde_json::json!({"labels": {"a": "w", "b": "t"}, "volumes": [{"name": "t"}, {"name": "w"}], "serviceAccountName": "t"})
        );
    }
}
