//! Helpers shared by the integration tests that run the real `stepctl` binary (local.rs on the
//! local engine, podman.rs on podman, qa.rs on both): the command itself, workflow files, the
//! JSON result and interrupting a run the way a terminal or a supervisor does.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The engine a test runs workflows on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The embedded init on this host (the default engine).
    Local,
    /// `podman kube play`, configured by tests/podman/containers.conf.
    Podman,
}

impl Engine {
    /// `stepctl` without colors; for podman, with the project's containers.conf.
    pub fn stepctl(self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stepctl"));
        c.env("NO_COLOR", "1");
        if self == Engine::Podman {
            c.env("CONTAINERS_CONF", containers_conf());
        }
        c
    }

    /// `stepctl run [--engine podman] ARGS...`.
    pub fn run_cmd(self, args: &[&str]) -> Command {
        let mut c = self.stepctl();
        c.arg("run");
        if self == Engine::Podman {
            c.args(["--engine", "podman"]);
        }
        c.args(args);
        c
    }

    /// Runs `stepctl run --output json EXTRA... WORKFLOW` on this engine; returns (exit code,
    /// the JSON document on stdout, stderr). Panics unless stdout is one JSON document.
    pub fn run_json(self, workflow: &Path, extra: &[&str]) -> (i32, Value, String) {
        let o = self
            .run_cmd(&["--output", "json"])
            .args(extra)
            .arg(workflow)
            .output()
            .expect("run stepctl");
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{stderr}",
                String::from_utf8_lossy(&o.stdout)
            )
        });
        (o.status.code().unwrap_or(-1), doc, stderr)
    }
}

/// tests/podman/containers.conf.
pub fn containers_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/podman/containers.conf")
}

/// A workflow of controller-lite/tests/workflows.
pub fn wf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workflows")
        .join(name)
}

/// A workflow of the repository's examples/.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Writes a workflow to NAME.yaml in a directory of this test process; returns its path.
pub fn temp_wf(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The step of a JSON result at a path of names (`["group", "child"]`); panics naming it if
/// there is none.
pub fn step<'a>(doc: &'a Value, names: &[&str]) -> &'a Value {
    let mut cur = doc;
    for n in names {
        cur = cur["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == *n)
            .unwrap_or_else(|| panic!("no step {n:?} in {cur}"));
    }
    cur
}

extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}

pub fn is_root() -> bool {
    unsafe { geteuid() == 0 }
}

/// Whether `pid` is still a process (signal 0).
pub fn alive(pid: i32) -> bool {
    unsafe { kill(pid, 0) == 0 }
}

/// Who gets the signal in [`interrupt_at_line`].
#[derive(Clone, Copy, Debug)]
pub enum SignalTo {
    /// The whole process group, as a terminal's Ctrl-C.
    ProcessGroup,
    /// The process alone, as a supervisor's stop.
    ProcessOnly,
}

/// A run interrupted by [`interrupt_at_line`].
pub struct Interrupted {
    /// Its exit status and stdout (stderr was read into `before` and `after`).
    pub output: Output,
    /// Its stderr up to and including the awaited line.
    pub before: String,
    /// Its stderr after that line.
    pub after: String,
    /// From the signal to its exit.
    pub took: Duration,
}

/// Spawns `cmd` in its own process group (as a shell starts a foreground job), waits at most
/// `limit` for its stderr to print the line `line`, sends it `sig` and collects the rest.
pub fn interrupt_at_line(
    mut cmd: Command,
    line: &str,
    limit: Duration,
    sig: i32,
    to: SignalTo,
) -> Interrupted {
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut before = String::new();
    let t = Instant::now();
    loop {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap() == 0 {
            panic!("stepctl ended before it printed {line:?}: {before}");
        }
        before.push_str(&l);
        if l.trim_end_matches('\n') == line {
            break;
        }
        assert!(t.elapsed() < limit, "{before}");
    }
    let sent = Instant::now();
    let target = match to {
        SignalTo::ProcessGroup => -(child.id() as i32),
        SignalTo::ProcessOnly => child.id() as i32,
    };
    assert_eq!(unsafe { kill(target, sig) }, 0, "kill({target}, {sig})");
    let mut after = String::new();
    err.read_to_string(&mut after).unwrap();
    let output = child.wait_with_output().unwrap();
    Interrupted {
        output,
        before,
        after,
        took: sent.elapsed(),
    }
}

/// The JSON result of a sleeper workflow (`first` passes, `sleeper` runs until interrupted,
/// `never` would run next) interrupted while `sleeper` ran: stepctl exited 130 and the result
/// says aborted, `first` passed, `sleeper` aborted, `never` skipped. Returns the result.
pub fn assert_aborted_at_the_sleeper(run: &Interrupted) -> Value {
    let (o, before, after) = (&run.output, &run.before, &run.after);
    assert_eq!(o.status.code(), Some(130), "{before}{after}");
    let doc: Value = serde_json::from_slice(&o.stdout).expect("JSON result after abort");
    assert_eq!(doc["status"], "aborted", "{doc}\n{after}");
    assert_eq!(step(&doc, &["first"])["status"], "passed");
    assert_eq!(step(&doc, &["sleeper"])["status"], "aborted", "{doc}");
    assert_eq!(step(&doc, &["never"])["status"], "skipped");
    doc
}

/// Runs `cmd` to its end and asserts that it exited with `code`; returns its output and its
/// stderr as text.
pub fn exits(cmd: &mut Command, code: i32) -> (Output, String) {
    let o = cmd.output().expect("run stepctl");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr:\n{err}\nstdout:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    (o, err)
}

/// Runs `cmd` to its end with `input` on its standard input (then closed) and its stdout and
/// stderr collected.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stepctl");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// The JSON document on the stdout of `o`; panics showing stdout and stderr if it is not one.
pub fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}
