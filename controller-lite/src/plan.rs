//! The planner: a workflow's step tree becomes a `stepinit_protocol::Spec` (groups kept, every
//! leaf assigned to a container) plus the list of containers the pod needs.
//!
//! Merge rule (the Testkube architecture documentation's "pure" steps): leaves run in tree order;
//! two adjacent leaves share a container when at least one of them is pure and their container
//! settings are compatible (same image, pull policy, securityContext, volume mounts and
//! resources; env, workingDir, command and args are per step and never prevent merging).
//! `spec.system.isolatedContainers` disables merging; `spec.system.pureByDefault` makes steps
//! pure unless they say `pure: false`. Five shell steps with steps 1 and 4 pure give containers
//! {1,2} and {3,4,5}: 1|2 merge (1 is pure), 2|3 do not (neither is), 3|4 and 4|5 merge (4 is).

use crate::workflow::{Condition, ContainerConfig, Step, Workflow, WorkflowError};
use stepinit_protocol::spec::{self, EnvVar, Retry, Until};
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

/// Looks up an image's metadata (podman or registry); `Err` says why it could not.
pub type Resolver<'a> = &'a mut dyn FnMut(&str) -> Result<ImageMeta, String>;

/// One container of the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedContainer {
    /// Container name in the pod: `group-N`.
    pub name: String,
    /// The settings shared by its steps (image, pull policy, securityContext, mounts, resources).
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
    meta_cache: Vec<(String, Result<ImageMeta, String>)>,
}

/// Plans a workflow. `resolver` is asked for image metadata when a step has no command (and
/// for the user of containers whose securityContext has no runAsUser); without one, such a step
/// is an error naming the fields to set.
pub fn plan(wf: &Workflow, resolver: Option<Resolver<'_>>) -> Result<Plan, WorkflowError> {
    let mut p = Planner {
        wf,
        resolver,
        leaves: Vec::new(),
        meta_cache: Vec::new(),
    };
    let top: Vec<(&Step, Condition)> = wf
        .setup
        .iter()
        .chain(&wf.steps)
        .map(|s| (s, Condition::Passed))
        .chain(wf.after.iter().map(|s| (s, Condition::Always)))
        .collect();
    let mut steps = Vec::new();
    for (i, (s, default_cond)) in top.into_iter().enumerate() {
        steps.push(p.step(
            s,
            &(i + 1).to_string(),
            &wf.container,
            wf.pure_by_default,
            default_cond,
        )?);
    }
    let containers = p.merge();
    // Assign container indexes to the leaves.
    let mut index = std::collections::HashMap::new();
    for (ci, c) in containers.iter().enumerate() {
        for id in &c.leaves {
            index.insert(id.clone(), ci as u32);
        }
    }
    fn assign(steps: &mut [spec::Step], index: &std::collections::HashMap<String, u32>) {
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
    })
}

/// Fills in the user of containers whose securityContext sets none, from the image's USER
/// (numeric `uid[:gid]` only; a named user stays unknown, which the init's setup handles with
/// its documented fallback). Images that declare no USER run as root. Used when building pods;
/// the local engine ignores images.
pub fn fill_users(plan: &mut Plan, resolver: Resolver<'_>) {
    let mut cache: Vec<(String, Option<ImageMeta>)> = Vec::new();
    for (i, c) in plan.containers.iter_mut().enumerate() {
        if c.run_as_user.is_some() {
            continue;
        }
        let meta = match cache.iter().find(|(img, _)| *img == c.image) {
            Some((_, m)) => m.clone(),
            None => {
                let m = resolver(&c.image).ok();
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
}

/// A short human name for a step that has none.
fn derived_name(s: &Step, argv: &[String]) -> String {
    let text = if let Some(sh) = &s.shell {
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

impl Planner<'_, '_> {
    fn err(&self, path: &str, message: String) -> WorkflowError {
        WorkflowError {
            file: self.wf.file.clone(),
            path: path.to_string(),
            message,
        }
    }

    fn meta(&mut self, image: &str) -> Option<Result<ImageMeta, String>> {
        if let Some((_, r)) = self.meta_cache.iter().find(|(i, _)| i == image) {
            return Some(r.clone());
        }
        let resolver = self.resolver.as_mut()?;
        let r = resolver(image);
        self.meta_cache.push((image.to_string(), r.clone()));
        Some(r)
    }

    fn step(
        &mut self,
        s: &Step,
        id: &str,
        inherited: &ContainerConfig,
        inherited_pure: bool,
        default_cond: Condition,
    ) -> Result<spec::Step, WorkflowError> {
        let mut cfg = inherited.clone();
        if let Some(c) = &s.container {
            cfg = cfg.overlay(c);
        }
        let pure = s.pure.unwrap_or(inherited_pure);
        let condition = match s.condition.unwrap_or(default_cond) {
            Condition::Passed => spec::Condition::Passed,
            Condition::Failed => spec::Condition::Failed,
            Condition::Always => spec::Condition::Always,
            Condition::Never => spec::Condition::Never,
        };
        let mut out = spec::Step {
            id: Some(id.to_string()),
            timeout_ms: s.timeout_ms,
            condition,
            negative: s.negative,
            optional: s.optional,
            retry: s.retry.as_ref().map(|r| Retry {
                count: r.count,
                until: if r.until_passed {
                    Until::Passed
                } else {
                    Until::Failed
                },
            }),
            ..Default::default()
        };
        if s.is_group() {
            out.name = Some(s.name.clone().unwrap_or_else(|| derived_name(s, &[])));
            for (i, c) in s.steps.iter().enumerate() {
                // `after`-style defaults do not propagate: children default to `passed`.
                out.steps.push(self.step(
                    c,
                    &format!("{id}.{}", i + 1),
                    &cfg,
                    pure,
                    Condition::Passed,
                )?);
            }
            return Ok(out);
        }
        if let Some(run) = &s.run {
            cfg = cfg.overlay(run);
        }
        if let Some(wd) = &s.working_dir {
            cfg.working_dir = Some(wd.clone());
        }
        if cfg.image.is_none() {
            cfg.image = Some(DEFAULT_IMAGE.to_string());
        }
        let image = cfg.image.clone().unwrap_or_default();
        let mut argv = Vec::new();
        if let Some(sh) = &s.shell {
            if cfg.command.is_some() || cfg.args.is_some() {
                return Err(self.err(
                    &s.path,
                    "has both `shell` and `command`/`args`: use one".to_string(),
                ));
            }
            out.shell = Some(sh.clone());
        } else {
            argv = match &cfg.command {
                Some(cmd) => {
                    let mut v = cmd.clone();
                    v.extend(cfg.args.clone().unwrap_or_default());
                    v
                }
                None => match self.meta(&image) {
                    Some(Ok(meta)) => {
                        let mut v = meta.entrypoint.clone();
                        v.extend(cfg.args.clone().unwrap_or(meta.cmd.clone()));
                        v
                    }
                    Some(Err(e)) => {
                        return Err(self.err(
                            &s.path,
                            if e.contains("run.command") {
                                format!("has no command, and the image's ENTRYPOINT/CMD could not be read: {e}")
                            } else {
                                format!("has no command, and the ENTRYPOINT/CMD of image {image} could not be read ({e}); set run.command (and run.args)")
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
            if argv.is_empty() {
                return Err(self.err(
                    &s.path,
                    format!("image {image} has no ENTRYPOINT or CMD; set run.command"),
                ));
            }
            out.command = argv.clone();
        }
        out.name = Some(s.name.clone().unwrap_or_else(|| derived_name(s, &argv)));
        out.env = cfg
            .env
            .iter()
            .map(|(k, v)| EnvVar {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
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
                // What stays per step is not part of the container.
                config.env.clear();
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
            spec::Condition::Always,
            "after steps always run"
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
