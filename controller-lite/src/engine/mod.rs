//! Where a plan runs: [`local`] (this host, no container engine), [`podman`], [`kubernetes`];
//! and what the three share: the live sink, relaying a process's two streams into it, the final
//! result, run names, the temporary directory and the manifests a pod engine applies.

pub mod kubernetes;
pub mod local;
pub mod podman;
pub mod sandbox;

use crate::follow::{pump, pump_into, Sink, StreamDecoder};
use crate::manifest::{self, BuildOptions, Objects, StateKey};
use crate::plan::Plan;
use crate::report::{Collector, Format, Live, RunResult};
use crate::workflow::Workflow;
use std::ffi::CString;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};

/// Options shared by the engines.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub format: Format,
    /// Keep the pod / temporary directory after the run.
    pub keep: bool,
    pub init_image: String,
    pub restricted: bool,
    /// Grace period given to the pod when aborting (podman pod stop -t).
    pub grace_s: u64,
}

impl RunOptions {
    /// The manifest options of a pod engine's run named `name`: no extra annotations, volume
    /// names as the workflow gives them, the state key as `key` says.
    pub fn build_options(&self, kind: manifest::Kind, name: &str, key: StateKey) -> BuildOptions {
        BuildOptions {
            kind,
            restricted: self.restricted,
            init_image: self.init_image.clone(),
            name: name.to_string(),
            annotations: Default::default(),
            unique_volumes: false,
            state_key: key,
        }
    }
}

/// What an engine's `run` returns: the result, and whether an interrupt (Ctrl-C or SIGTERM)
/// ended the run.
pub type Outcome = Result<(RunResult, bool), EngineError>;

/// An error that ends the run before results exist: printed as one line, exit code 2 for usage
/// and workflow problems, 1 otherwise.
#[derive(Debug)]
pub struct EngineError {
    pub message: String,
    pub code: i32,
}

impl EngineError {
    pub fn new(message: impl Into<String>) -> Self {
        EngineError {
            message: message.into(),
            code: 1,
        }
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The sink for a run: in text mode the steps' stdout and the progress lines go to stdout; in
/// JSON mode stdout is kept for the result document and everything else goes to stderr.
pub fn make_sink(collector: Collector, format: Format) -> Arc<Mutex<Sink>> {
    let (out, live_w): (
        Box<dyn std::io::Write + Send>,
        Box<dyn std::io::Write + Send>,
    ) = match format {
        Format::Text => (Box::new(std::io::stdout()), Box::new(std::io::stdout())),
        Format::Json => (Box::new(std::io::stderr()), Box::new(std::io::stderr())),
    };
    let tty = match format {
        Format::Text => std::io::stdout().is_terminal(),
        Format::Json => std::io::stderr().is_terminal(),
    };
    let color = tty && std::env::var_os("NO_COLOR").is_none();
    let sink = Sink::new(
        collector,
        out,
        Box::new(std::io::stderr()),
        Some((Live { color }, live_w)),
    );
    if tty && format == Format::Text && std::env::var_os("STEPCTL_NO_PROGRESS").is_none() {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .enable_progress();
        crate::follow::start_ticker(&sink);
    }
    sink
}

/// Puts a helper process (podman, kubectl) in its own process group, so a terminal's Ctrl-C
/// reaches stepctl alone, which then stops the pod in order and keeps reading the logs; and ends
/// it if stepctl dies.
pub fn detach(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    c.process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Relays a child's piped stdout and stderr into the sink, each stream decoded on its own (as the
/// init wrote them) by `decoders`, until both end; returns the child's exit status.
pub fn relay(
    mut child: Child,
    decoders: [StreamDecoder; 2],
    sink: &Arc<Mutex<Sink>>,
) -> std::io::Result<ExitStatus> {
    let [d_out, d_err] = decoders;
    let threads: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| (Box::new(r) as Box<dyn Read + Send>, d_out)),
        child
            .stderr
            .take()
            .map(|r| (Box::new(r) as Box<dyn Read + Send>, d_err)),
    ]
    .into_iter()
    .flatten()
    .map(|(r, d)| {
        let s = sink.clone();
        std::thread::spawn(move || pump(r, d, &s))
    })
    .collect();
    let status = child.wait();
    for t in threads {
        let _ = t.join();
    }
    status
}

/// Like [`relay`], into decoders that outlive it (a log read again from where an earlier read
/// stopped), the first `skip[i]` bytes of stream i dropped; returns the child's exit status.
pub fn relay_into(
    mut child: Child,
    decoders: &mut [StreamDecoder; 2],
    skip: [u64; 2],
    sink: &Arc<Mutex<Sink>>,
) -> std::io::Result<ExitStatus> {
    let [out, err] = decoders;
    let readers: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ];
    let [r_out, r_err] = readers;
    std::thread::scope(|s| {
        for (r, d, skip) in [(r_out, out, skip[0]), (r_err, err, skip[1])] {
            if let Some(r) = r {
                s.spawn(move || pump_into(r, d, skip, sink));
            }
        }
    });
    child.wait()
}

/// The run's result from what the sink collected: the status line erased, the output flushed,
/// `notes` (the engine's own problems, usually the cause of what the logs lack) first.
/// `wall_ms`: the run's duration as measured, or None to use the init's own figures.
pub fn collect(
    sink: &Mutex<Sink>,
    name: &str,
    interrupted: bool,
    wall_ms: Option<u64>,
    notes: Vec<String>,
) -> RunResult {
    let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
    g.end_progress();
    g.flush();
    let mut r = g.collector.result(name, interrupted, wall_ms);
    r.notes.splice(0..0, notes);
    r
}

/// The note of a report whose records could not be verified (`status`, `decode`).
pub fn unverified_note(why: &str) -> String {
    format!("records not authenticated ({why}): a step could have forged them")
}

/// A fresh state key for a run.
pub fn state_key() -> Result<String, EngineError> {
    StateKey::random().map_err(|e| EngineError::new(format!("cannot make a random key: {e}")))
}

/// A unique name for a run's pod or Job: the workflow's name (cut to keep the result a DNS
/// label, as Job names must be) and a random suffix.
pub fn run_name(workflow: &str) -> String {
    // `-` and 6 random characters after it.
    let base = manifest::dns_label(workflow, 63 - "-stepinit-state".len() - 7);
    format!("{base}-{}", suffix())
}

/// A short random suffix for pod names.
fn suffix() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter()
        .map(|x| b"abcdefghijklmnopqrstuvwxyz0123456789"[(*x as usize) % 36] as char)
        .collect()
}

/// A temporary directory removed on drop unless kept.
pub struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let template = std::env::temp_dir().join(format!("{prefix}XXXXXX"));
        let c = CString::new(template.into_os_string().into_encoded_bytes())
            .map_err(|_| std::io::Error::other("temporary path holds a NUL byte"))?;
        let raw = c.into_raw();
        // SAFETY: mkdtemp rewrites the XXXXXX in place in a buffer we own.
        let ok = unsafe { !libc::mkdtemp(raw).is_null() };
        let c = unsafe { CString::from_raw(raw) };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
        let path = PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(c.into_bytes()),
        );
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What a pod engine applies: the manifests built with `o`, written as `file` into a temporary
/// directory of the run (kept with `--keep`, so the user can see what ran).
pub struct Manifests {
    pub objects: Objects,
    pub dir: TempDir,
    pub path: PathBuf,
}

/// Builds the manifests of a run (errors in `spec.pod`/`spec.job` are the workflow's: exit 2)
/// and writes them.
pub fn write_manifests(
    wf: &Workflow,
    plan: &Plan,
    o: &BuildOptions,
    keep: bool,
    file: &str,
) -> Result<Manifests, EngineError> {
    let objects = manifest::objects(wf, plan, o).map_err(|e| EngineError {
        message: format!("{}: {e}", wf.file),
        code: 2,
    })?;
    let mut dir = TempDir::new(&format!("stepctl-{}-", o.name))
        .map_err(|e| EngineError::new(format!("cannot create a temporary directory: {e}")))?;
    dir.keep = keep;
    let path = dir.path.join(file);
    // Private: it may carry the state key (podman).
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, objects.to_yaml().as_bytes()))
        .map_err(|e| EngineError::new(format!("cannot write the manifest: {e}")))?;
    Ok(Manifests { objects, dir, path })
}
