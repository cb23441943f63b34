//! Where a plan runs: [`local`] (this host, no container engine), [`podman`], [`kubernetes`].

pub mod kubernetes;
pub mod local;
pub mod podman;

use crate::follow::Sink;
use crate::report::{Collector, Format, Live};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// Options shared by the engines.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub format: Format,
    /// Keep the pod / temporary directory after the run.
    pub keep: bool,
    pub init_image: String,
    pub kind: crate::manifest::Kind,
    pub restricted: bool,
    /// Grace period given to the pod when aborting (podman pod stop -t).
    pub grace_s: u64,
}

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
        sink.lock().unwrap().enable_progress();
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
