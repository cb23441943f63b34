//! `stepctl`: Testkube TestWorkflows in, pods around the stepinit `/init` out.
//!
//! Exit codes: 0 passed, 1 failed (or an engine error), 2 invalid workflow or usage,
//! 130 interrupted.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use stepctl::engine::{self, EngineError, RunOptions};
use stepctl::follow::{pump, RecordAuth, Stream, StreamDecoder, Timestamps};
use stepctl::manifest::{self, BuildOptions, Kind};
use stepctl::plan::{self, ImageMeta, LookupError, Plan};
use stepctl::report::{self, Collector, Format, RunResult};
use stepctl::testworkflow;
use stepctl::workflow::Workflow;
use stepctl::{image, signals};

#[derive(Parser)]
#[command(
    name = "stepctl",
    version,
    about = "Runs Testkube TestWorkflows with the stepinit /init: locally, on podman or on Kubernetes",
    after_help = "Exit codes: 0 passed, 1 failed, 2 invalid workflow or usage, 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    Local,
    Podman,
    Kubernetes,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputKind {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TsKind {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ImagesFrom {
    /// `podman image inspect` (local storage)
    Podman,
    /// the image's registry (OCI distribution API)
    Registry,
    /// never look images up: steps must give command/args
    None,
}

/// Where templates come from and what the workflow's config parameters are.
#[derive(clap::Args, Clone, Default)]
struct Lang {
    /// TestWorkflowTemplate documents: a file, or a directory of `*.yaml` (repeatable).
    #[arg(long = "templates", value_name = "PATH")]
    templates: Vec<PathBuf>,
    /// A value for the workflow's config parameter NAME (repeatable).
    #[arg(long = "config", value_name = "NAME=VALUE")]
    config: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the Kubernetes manifests (ConfigMap + Pod or Job) for a workflow.
    Build {
        /// A bare Pod, or a Job around it.
        #[arg(long, value_enum, default_value = "pod")]
        kind: Kind,
        /// Make every container pass the Pod Security `restricted` profile.
        #[arg(long)]
        restricted: bool,
        /// The image whose /init the setup container copies.
        #[arg(long, default_value = manifest::DEFAULT_INIT_IMAGE)]
        init_image: String,
        /// Where image metadata comes from when a step has no command or user.
        #[arg(long, value_enum, default_value = "registry")]
        images: ImagesFrom,
        #[command(flatten)]
        lang: Lang,
        workflow: PathBuf,
    },
    /// Print the plan: the spec the init runs (as `build` puts it in the ConfigMap) and which
    /// steps share a container.
    Plan {
        /// Where image metadata comes from when a step has no command or user.
        #[arg(long, value_enum, default_value = "registry")]
        images: ImagesFrom,
        #[command(flatten)]
        lang: Lang,
        workflow: PathBuf,
    },
    /// Run a workflow and report its results.
    Run {
        /// Where to run: this host (no container engine), podman, or Kubernetes (kubectl).
        #[arg(long, value_enum, default_value = "local")]
        engine: EngineKind,
        /// text: live lines and a table; json: one result document on stdout.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputKind,
        /// Also write the results as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Keep the pod (podman, kubernetes) or the temporary directory (local).
        #[arg(long)]
        keep: bool,
        /// The image whose /init the setup container copies (podman, kubernetes).
        #[arg(long, default_value = manifest::DEFAULT_INIT_IMAGE)]
        init_image: String,
        /// podman/kubernetes: make every container pass the `restricted` profile.
        #[arg(long)]
        restricted: bool,
        /// Seconds a stopped pod gets between SIGTERM and SIGKILL on Ctrl-C (podman,
        /// kubernetes; locally each step's own grace applies, 10 s).
        #[arg(long, default_value_t = 10)]
        grace: u64,
        #[command(flatten)]
        lang: Lang,
        /// The TestWorkflow YAML file (`-`: standard input).
        workflow: PathBuf,
    },
    /// Decode raw container logs from stdin (podman logs / kubectl logs, with or without
    /// timestamps) and print the results.
    Decode {
        /// The workflow, for step names of steps that never started.
        #[arg(long)]
        workflow: Option<PathBuf>,
        /// Templates the workflow uses (a file or a directory, repeatable).
        #[arg(long = "templates", value_name = "PATH")]
        templates: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        output: OutputKind,
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Strip RFC 3339 timestamps at line starts (auto: when the first line has one).
        #[arg(long, value_enum, default_value = "auto")]
        timestamps: TsKind,
        /// Name of the workflow in the report.
        #[arg(long, default_value = "workflow")]
        name: String,
        /// The run's state key (a file holding its 64 hex digits), with --spec: only records
        /// its inits signed count, and anything else that decodes as one fails the report.
        #[arg(long, value_name = "FILE", requires = "spec")]
        key_file: Option<PathBuf>,
        /// The spec.json the pod ran (its ConfigMap's), with --key-file.
        #[arg(long, value_name = "FILE", requires = "key_file")]
        spec: Option<PathBuf>,
    },
    /// Re-derive the results of a pod that still exists from its containers' logs.
    Status {
        /// Where the pod is: podman or kubernetes.
        #[arg(long, value_enum, default_value = "podman")]
        engine: EngineKind,
        /// The workflow, for the names of steps that never started when the pod's spec cannot
        /// be read back (Kubernetes).
        #[arg(long)]
        workflow: Option<PathBuf>,
        /// Templates the workflow uses (a file or a directory, repeatable).
        #[arg(long = "templates", value_name = "PATH")]
        templates: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        output: OutputKind,
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        pod: String,
    },
}

fn main() -> ExitCode {
    // Steps of the local engine run as our user: they must not read our memory or open our
    // fds through /proc (the pipes that carry the records, the state key).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The embedded init: `stepctl __init ARGS` is `init ARGS` (the local engine's containers),
    // `__init-ns ARGS` the same as PID 1 of its own pid namespace.
    if args.get(1).is_some_and(|a| a == "__init") {
        let code = stepinit::cli_main(args[2..].to_vec());
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if args.get(1).is_some_and(|a| a == engine::sandbox::LAUNCHER) {
        let code = engine::sandbox::launcher_main(args[2..].to_vec());
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    let code = match real_main(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stepctl: {}", e.message);
            e.code
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn usage(e: impl std::fmt::Display) -> EngineError {
    EngineError {
        message: e.to_string(),
        code: 2,
    }
}

fn load(path: &Path, lang: &Lang) -> Result<Workflow, EngineError> {
    let mut o = testworkflow::Options {
        templates: lang.templates.clone(),
        ..Default::default()
    };
    for c in &lang.config {
        o.config
            .push(testworkflow::config::parse_flag(c).map_err(usage)?);
    }
    let wf = testworkflow::load(path, &o).map_err(usage)?;
    for w in &wf.warnings {
        eprintln!("stepctl: warning: {w}");
    }
    Ok(wf)
}

fn to_meta(c: image::ImageConfig) -> ImageMeta {
    ImageMeta {
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        working_dir: c.working_dir,
        user: c.user,
    }
}

/// Plans with image metadata from `from`.
fn make_plan(wf: &Workflow, from: ImagesFrom, users: bool) -> Result<Plan, EngineError> {
    let mut registry: Option<Result<image::RegistryClient, String>> = None;
    // Errors of the image module name the fields that make the lookup unnecessary.
    let advised = |e: image::ImageError| LookupError {
        message: e.to_string(),
        advises: true,
    };
    let mut resolve = |img: &str| -> Result<ImageMeta, LookupError> {
        match from {
            ImagesFrom::None => Err(LookupError {
                message: "image lookups are disabled (--images none)".into(),
                advises: false,
            }),
            ImagesFrom::Podman => image::inspect_podman(img).map(to_meta).map_err(advised),
            ImagesFrom::Registry => {
                let client = registry.get_or_insert_with(|| {
                    image::RegistryClient::from_env().map_err(|e| e.to_string())
                });
                match client {
                    Ok(c) => c
                        .config(img, &image::Platform::host())
                        .map(to_meta)
                        .map_err(advised),
                    Err(e) => Err(LookupError {
                        message: e.clone(),
                        advises: false,
                    }),
                }
            }
        }
    };
    let mut p = plan::plan(wf, Some(&mut resolve)).map_err(usage)?;
    if users && from != ImagesFrom::None {
        for w in plan::fill_users(&mut p, &mut resolve) {
            eprintln!("stepctl: warning: {w}");
        }
    }
    Ok(p)
}

fn format_of(o: OutputKind) -> Format {
    match o {
        OutputKind::Text => Format::Text,
        OutputKind::Json => Format::Json,
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is one line, exit 1, not a panic.
fn emit(text: &str) -> Result<(), EngineError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| EngineError::new(format!("cannot print: {e}")))
}

fn finish(
    r: &RunResult,
    format: Format,
    junit: Option<&Path>,
    interrupted: bool,
) -> Result<i32, EngineError> {
    let mut out = std::io::stdout();
    if format == Format::Text {
        let _ = writeln!(out);
    }
    report::print(&mut out, r, format)
        .map_err(|e| EngineError::new(format!("cannot print: {e}")))?;
    if let Some(j) = junit {
        std::fs::write(j, report::junit(r))
            .map_err(|e| EngineError::new(format!("cannot write {}: {e}", j.display())))?;
    }
    Ok(report::exit_code(r, interrupted))
}

/// A `--junit FILE` that could never be written is a usage error found before anything runs,
/// not a failure after a passed run.
fn check_junit(junit: Option<&Path>) -> Result<(), EngineError> {
    let Some(j) = junit else { return Ok(()) };
    let dir = match j.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(usage(format!(
            "--junit {}: {} is not a directory",
            j.display(),
            dir.display()
        )));
    }
    if j.is_dir() {
        return Err(usage(format!("--junit {}: is a directory", j.display())));
    }
    Ok(())
}

fn real_main(cli: Cli) -> Result<i32, EngineError> {
    if let Cmd::Run { junit, .. } | Cmd::Decode { junit, .. } | Cmd::Status { junit, .. } = &cli.cmd
    {
        check_junit(junit.as_deref())?;
    }
    match cli.cmd {
        Cmd::Build {
            kind,
            restricted,
            init_image,
            images,
            lang,
            workflow,
        } => {
            let wf = load(&workflow, &lang)?;
            let p = make_plan(&wf, images, true)?;
            let objs = manifest::objects(
                &wf,
                &p,
                &BuildOptions {
                    kind,
                    restricted,
                    init_image,
                    name: manifest::object_base(&wf.name),
                    annotations: Default::default(),
                    unique_volumes: false,
                    state_key: manifest::StateKey::Secret(engine::state_key()?),
                },
            )
            .map_err(|e| usage(format!("{}: {e}", wf.file)))?;
            emit(&objs.to_yaml())?;
            Ok(0)
        }
        Cmd::Plan {
            images,
            lang,
            workflow,
        } => {
            let wf = load(&workflow, &lang)?;
            let p = make_plan(&wf, images, true)?;
            for c in &p.containers {
                eprintln!("{} ({}): steps {}", c.name, c.image, c.leaves.join(", "));
            }
            // What build puts in the ConfigMap.
            let json = serde_json::to_string_pretty(&manifest::pod_spec(&p))
                .map_err(|e| EngineError::new(format!("cannot encode the spec: {e}")))?;
            emit(&format!("{json}\n"))?;
            Ok(0)
        }
        Cmd::Run {
            engine: kind,
            output,
            junit,
            keep,
            init_image,
            restricted,
            grace,
            lang,
            workflow,
        } => {
            let wf = load(&workflow, &lang)?;
            let pipe = signals::install()
                .map_err(|e| EngineError::new(format!("cannot install signal handlers: {e}")))?;
            let format = format_of(output);
            let opts = RunOptions {
                format,
                keep,
                init_image,
                restricted,
                grace_s: grace,
            };
            let (r, interrupted) = match kind {
                EngineKind::Local => {
                    let p = make_plan(&wf, ImagesFrom::Podman, false)?;
                    engine::local::run(&p, &opts)?
                }
                EngineKind::Podman => {
                    let p = make_plan(&wf, ImagesFrom::Podman, true)?;
                    engine::podman::run(&wf, &p, &opts, pipe)?
                }
                EngineKind::Kubernetes => {
                    let p = make_plan(&wf, ImagesFrom::Registry, true)?;
                    engine::kubernetes::run(&wf, &p, &opts, pipe)?
                }
            };
            let mut r = r;
            r.description = wf.description.clone();
            finish(&r, format, junit.as_deref(), interrupted)
        }
        Cmd::Decode {
            workflow,
            templates,
            output,
            junit,
            timestamps,
            name,
            key_file,
            spec,
        } => {
            let (collector, name) = match &workflow {
                Some(w) if w.as_os_str() == "-" => {
                    return Err(usage(
                        "--workflow -: standard input carries the logs; give a file",
                    ))
                }
                Some(w) => {
                    let wf = load(
                        w,
                        &Lang {
                            templates: templates.clone(),
                            ..Default::default()
                        },
                    )?;
                    // Only the step tree and names matter here: a step that takes its image's
                    // ENTRYPOINT is named after the image (the logs' own names come first).
                    let mut by_image = |img: &str| {
                        Ok::<_, LookupError>(ImageMeta {
                            entrypoint: vec![img.to_string()],
                            ..Default::default()
                        })
                    };
                    let p = plan::plan(&wf, Some(&mut by_image)).map_err(usage)?;
                    (Collector::new(Some(&p.spec)), wf.name)
                }
                None => (Collector::new(None), name),
            };
            let format = format_of(output);
            let sink = engine::make_sink(collector, format);
            let ts = match timestamps {
                TsKind::Auto => Timestamps::Auto,
                TsKind::On => Timestamps::On,
                TsKind::Off => Timestamps::Off,
            };
            let mut notes = Vec::new();
            let d = StreamDecoder::new(Stream::Stdout, ts);
            let d = match (&key_file, &spec) {
                (Some(k), Some(s)) => {
                    let read = |p: &PathBuf| {
                        std::fs::read(p).map_err(|e| usage(format!("{}: {e}", p.display())))
                    };
                    let auth = RecordAuth::new(&String::from_utf8_lossy(&read(k)?), &read(s)?)
                        .map_err(|e| usage(format!("--key-file/--spec: {e}")))?;
                    d.verified(auth.any_verifier())
                }
                _ => {
                    notes.push(engine::unverified_note("no --key-file and --spec"));
                    d
                }
            };
            pump(std::io::stdin().lock(), d, &sink);
            let r = engine::collect(&sink, &name, false, None, notes);
            finish(&r, format, junit.as_deref(), false)
        }
        Cmd::Status {
            engine: kind,
            workflow,
            templates,
            output,
            junit,
            pod,
        } => {
            let format = format_of(output);
            let mut spec = match kind {
                EngineKind::Podman => engine::podman::pod_spec(&pod),
                _ => None,
            };
            if let (None, Some(w)) = (&spec, &workflow) {
                let wf = load(
                    w,
                    &Lang {
                        templates: templates.clone(),
                        ..Default::default()
                    },
                )?;
                let mut by_image = |img: &str| {
                    Ok::<_, LookupError>(ImageMeta {
                        entrypoint: vec![img.to_string()],
                        ..Default::default()
                    })
                };
                spec = Some(plan::plan(&wf, Some(&mut by_image)).map_err(usage)?.spec);
            }
            let sink = engine::make_sink(Collector::new(spec.as_ref()), format);
            let notes = match kind {
                EngineKind::Podman => engine::podman::status(&pod, &sink)?,
                EngineKind::Kubernetes => engine::kubernetes::status(&pod, &sink)?,
                EngineKind::Local => {
                    return Err(usage(
                        "status works on pods: use --engine podman or kubernetes",
                    ))
                }
            };
            // Pods are named WORKFLOW-SUFFIX (engine::run_name).
            let name = pod.rsplit_once('-').map_or(pod.as_str(), |(a, _)| a);
            let r = engine::collect(&sink, name, false, None, notes);
            finish(&r, format, junit.as_deref(), false)
        }
    }
}
