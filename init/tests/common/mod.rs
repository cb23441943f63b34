//! Helpers shared by the integration tests of the real `init` binary.
//!
//! Every test runs the binary Cargo built (`CARGO_BIN_EXE_init`) as a real process: no mocks.
//! Conventions:
//! - each test gets its own [`TempDir`] and its own [`Marker`] (an env var inherited by every
//!   process the init starts), so tests running in parallel never see each other's processes,
//!   and a failing test still kills what it started (the marker's `Drop`);
//! - waits are bounded and event-driven where possible (poll a file or /proc with a deadline);
//!   upper bounds are generous because CI is a loaded 2-core machine.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // Decoder and Event: for tests that decode as the stream arrives
pub use stepinit_protocol::{Decoded, Decoder, Event, Record, Status};

/// The binary under test: the one Cargo built for this test run, or `$STEPINIT_TEST_INIT` (e.g. the
/// release musl binary at the contract path, or another init to see these tests catch its flaws).
pub static INIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("STEPINIT_TEST_INIT").unwrap_or_else(|_| env!("CARGO_BIN_EXE_init").to_string())
});

/// Upper bound for a run that should finish promptly (loaded CI: generous).
pub const LIMIT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "stepinit-it-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// A fresh directory under /tmp, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// World-writable (for tests that run the init as an unprivileged uid).
    pub fn new_shared(tag: &str) -> TempDir {
        let d = TempDir::new(tag);
        std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// The path as a `&str` (tests pass it to shells through env vars).
    pub fn s(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A unique string put in the environment of the init (hence of every process it starts) as
/// `STEPINIT_TEST_MARKER`. [`Marker::pids`] finds the processes still carrying it; on drop every
/// such process is SIGKILLed so a failing test leaves nothing behind.
pub struct Marker(pub String);

pub const MARKER_VAR: &str = "STEPINIT_TEST_MARKER";

impl Marker {
    pub fn new(tag: &str) -> Marker {
        Marker(unique(tag))
    }

    /// Live (non-zombie) processes whose environment or command line holds the marker,
    /// other than the test process itself.
    pub fn pids(&self) -> Vec<i32> {
        pids_matching(self.0.as_bytes())
    }

    /// Marker processes with their command line, for assertion messages.
    pub fn describe(&self) -> String {
        self.pids()
            .iter()
            .map(|p| format!("{p} state={:?} cmd={:?}", proc_state(*p), cmdline(*p)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Live processes whose environ or cmdline contains `needle` (zombies have neither).
pub fn pids_matching(needle: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let hit = ["environ", "cmdline"].iter().any(|f| {
            std::fs::read(format!("/proc/{pid}/{f}"))
                .map(|b| contains(&b, needle))
                .unwrap_or(false)
        });
        if hit && proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X') {
            out.push(pid);
        }
    }
    out
}

/// The state letter of a process (`R`, `S`, `T`, `Z`, ...), from /proc/PID/stat.
pub fn proc_state(pid: i32) -> Option<char> {
    stat_fields(pid).and_then(|f| f.first().and_then(|s| s.chars().next()))
}

/// Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...].
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A `Kb` field of /proc/PID/status (`VmHWM`, `VmRSS`, ...).
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) for a file to exist; panics with `what` when it does not appear.
pub fn await_file(path: &Path, what: &str) {
    assert!(
        wait_until(LIMIT, || path.exists()),
        "timed out waiting for {what} ({})",
        path.display()
    );
}

/// Waits (bounded) until the file holds `n` lines; returns them.
pub fn await_lines(path: &Path, n: usize, what: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = wait_until(LIMIT, || {
        lines = read_lines(path);
        lines.len() >= n
    });
    assert!(
        ok,
        "timed out waiting for {what}: {} holds {lines:?}",
        path.display()
    );
    lines
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A `Command` for the init with `args`: see [`marked_cmd`].
pub fn init_cmd<I, S>(args: I, marker: &Marker) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    marked_cmd(&*INIT, args, marker)
}

/// A `Command` with stdin /dev/null, stdout/stderr piped, the marker in its env, no core dumps,
/// and every inherited fd above 2 marked close-on-exec (cargo's jobserver pipes, ...) so any
/// extra fd a child of the init sees was opened by the init.
pub fn marked_cmd<I, S>(program: impl AsRef<OsStr>, args: I, marker: &Marker) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args)
        .env(MARKER_VAR, &marker.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        c.pre_exec(|| {
            // CLOSE_RANGE_CLOEXEC (4): keeps std's own exec-error pipe working.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32);
            // Children killed by SIGSEGV & co. in these tests must not dump core.
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    c
}

/// What a finished init produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Out {
    /// Asserts the init's exit code; the message shows its stderr.
    pub fn assert_code(&self, want: i32) {
        assert_eq!(
            self.code,
            want,
            "exit code of the init; stderr: {}",
            self.stderr_str()
        );
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A running init whose stdout and stderr are drained by threads.
pub struct Running {
    pub child: Child,
    pub start: Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

fn drain(r: Option<impl Read + Send + 'static>) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawning the init");
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Running {
            child,
            start,
            out,
            err,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits (bounded by `limit`) for the init to exit and collects its output.
    pub fn finish(mut self, limit: Duration) -> Out {
        let status = wait_deadline(&mut self.child, limit);
        let elapsed = self.start.elapsed();
        let stdout = self
            .out
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        Out {
            code: exit_code(status, &stderr),
            stdout,
            stderr,
            elapsed,
        }
    }
}

/// Waits for `child` at most `limit`; on overrun kills it and panics.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the init did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exit code; the init itself dying of a signal is always a test failure.
pub fn exit_code(st: ExitStatus, stderr: &[u8]) -> i32 {
    match st.code() {
        Some(c) => c,
        None => panic!(
            "the init itself died of signal {:?}; stderr: {}",
            st.signal(),
            String::from_utf8_lossy(stderr)
        ),
    }
}

/// Runs the init with `args` to completion (bounded by [`LIMIT`]).
pub fn run<I, S>(args: I, marker: &Marker) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Running::spawn(&mut init_cmd(args, marker)).finish(LIMIT)
}

/// Runs `init -- sh -c SCRIPT` (wrap mode) with extra env.
pub fn wrap_sh(script: &str, env: &[(&str, &str)], marker: &Marker) -> Out {
    let mut c = init_cmd(["--", "sh", "-c", script], marker);
    c.envs(env.iter().copied());
    Running::spawn(&mut c).finish(LIMIT)
}

/// Decodes a whole framed stream, feeding it in odd-sized chunks (4093 bytes) so that records
/// and escapes also cross chunk boundaries.
pub fn decode(stream: &[u8]) -> Decoded {
    Decoded::from_chunks(stream.chunks(4093))
}

/// A record without its timing, for order/content comparisons:
/// `start 2.1 #1`, `end 2.1 passed code=0 #1`, `end 3 skipped code=- #0`, `done failed last=true`.
pub fn brief(r: &Record) -> String {
    match r {
        Record::Start { step, attempt, .. } => format!("start {step} #{attempt}"),
        Record::End {
            step,
            status,
            code,
            attempt,
            ..
        } => format!(
            "end {step} {status} code={} #{attempt}",
            code.map_or("-".to_string(), |c| c.to_string())
        ),
        Record::Done { status, last, .. } => format!("done {status} last={last}"),
    }
}

pub fn briefs(rs: &[Record]) -> Vec<String> {
    rs.iter().map(brief).collect()
}

/// The last `end` record of `step`: (status, code, attempt, reason, ms).
pub fn end_of(rs: &[Record], step: &str) -> (Status, Option<i32>, u32, Option<String>, u64) {
    rs.iter()
        .rev()
        .find_map(|r| match r {
            Record::End {
                step: s,
                status,
                code,
                attempt,
                reason,
                ms,
            } if s == step => Some((*status, *code, *attempt, reason.clone(), *ms)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no end record for step {step} in {:?}", briefs(rs)))
}

/// A list for an assertion message: its length and its first few items.
pub fn few<T: std::fmt::Debug>(v: &[T]) -> String {
    format!("{} items, first: {:?}", v.len(), &v[..v.len().min(5)])
}

/// A finished `init run` (or `init --report`), its streams decoded.
#[derive(Debug)]
pub struct SpecRun {
    pub code: i32,
    pub stdout: Decoded,
    pub stderr: Decoded,
    pub raw: Out,
}

impl SpecRun {
    /// Asserts the init's exit code; the message shows the records and the init's stderr.
    pub fn assert_code(&self, want: i32) {
        assert_eq!(
            self.code,
            want,
            "exit code; records {:?}; step output {:?}; stderr: {}",
            self.briefs(),
            String::from_utf8_lossy(&self.stdout.output),
            self.raw.stderr_str()
        );
    }
    /// The step's output on stdout (records taken out), as text.
    pub fn out_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout.output).into_owned()
    }
    pub fn briefs(&self) -> Vec<String> {
        briefs(&self.stdout.records)
    }
    pub fn end(&self, step: &str) -> (Status, Option<i32>, u32, Option<String>, u64) {
        end_of(&self.stdout.records, step)
    }
    /// Checks what holds for every stream the init writes: records only on stdout, the framing
    /// valid, and a final `done`.
    pub fn assert_well_formed(&self) {
        assert!(
            self.stdout.invalid.is_empty() && self.stderr.invalid.is_empty(),
            "invalid framing: stdout {} stderr {}",
            few(&self.stdout.invalid),
            few(&self.stderr.invalid)
        );
        assert!(
            self.stderr.records.is_empty(),
            "records on stderr: {:?}",
            self.stderr.records
        );
        assert!(
            matches!(self.stdout.records.last(), Some(Record::Done { .. })),
            "the last record is not `done`: {:?}\nstderr: {}",
            self.briefs(),
            self.raw.stderr_str()
        );
    }
}

/// Writes `spec` to DIR/spec.json and runs `init run DIR/spec.json` in DIR, with extra env.
pub fn run_spec_env(
    dir: &TempDir,
    spec: &serde_json::Value,
    env: &[(&str, &str)],
    marker: &Marker,
) -> SpecRun {
    let r = start_spec(dir, spec, env, marker);
    finish_spec(r, LIMIT)
}

pub fn run_spec(dir: &TempDir, spec: &serde_json::Value, marker: &Marker) -> SpecRun {
    run_spec_env(dir, spec, &[], marker)
}

/// Starts `init run DIR/spec.json` in DIR with extra env; the caller finishes it with
/// [`finish_spec`] (after signalling it, say).
pub fn start_spec(
    dir: &TempDir,
    spec: &serde_json::Value,
    env: &[(&str, &str)],
    marker: &Marker,
) -> Running {
    let mut c = spec_cmd(dir, spec, &[], marker);
    c.envs(env.iter().copied());
    Running::spawn(&mut c)
}

/// Writes `spec` to DIR/spec.json; returns that path.
pub fn write_spec(dir: &TempDir, spec: &serde_json::Value) -> PathBuf {
    let path = dir.join("spec.json");
    std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
    path
}

/// A `Command` for `init run DIR/spec.json EXTRA...` in DIR (see [`init_cmd`]), `spec` written
/// first: for runs that need more flags (`--group`, `--termination-log`) or their own plumbing.
pub fn spec_cmd(
    dir: &TempDir,
    spec: &serde_json::Value,
    extra: &[&str],
    marker: &Marker,
) -> Command {
    let path = write_spec(dir, spec);
    let mut args = vec![OsStr::new("run"), path.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let mut c = init_cmd(args, marker);
    c.current_dir(dir.path());
    c
}

/// Waits (bounded by `limit`) for a started `init run` and decodes its streams.
pub fn finish_spec(r: Running, limit: Duration) -> SpecRun {
    framed(r.finish(limit))
}

/// The streams of a finished init that frames them (`init run`, `init --report`), decoded.
pub fn framed(raw: Out) -> SpecRun {
    SpecRun {
        code: raw.code,
        stdout: decode(&raw.stdout),
        stderr: decode(&raw.stderr),
        raw,
    }
}

/// One test's private world for spec runs: its own directory, exported to every step as `$D`
/// (and the runs' working directory), and its own [`Marker`].
pub struct Fixture {
    pub dir: TempDir,
    pub marker: Marker,
}

impl Fixture {
    pub fn new(tag: &str) -> Fixture {
        Fixture {
            dir: TempDir::new(tag),
            marker: Marker::new(tag),
        }
    }

    /// The directory world-writable (for steps that run as another uid).
    pub fn new_shared(tag: &str) -> Fixture {
        Fixture {
            dir: TempDir::new_shared(tag),
            marker: Marker::new(tag),
        }
    }

    /// `init run` on `{"version": 1, "steps": STEPS}` to its end.
    pub fn run_steps(&self, steps: serde_json::Value) -> SpecRun {
        self.run_spec(&serde_json::json!({ "version": 1, "steps": steps }))
    }

    /// `init run` on a whole spec to its end.
    pub fn run_spec(&self, spec: &serde_json::Value) -> SpecRun {
        self.run_spec_env(spec, &[])
    }

    /// `init run` on a whole spec to its end, with env for the init besides `$D`.
    pub fn run_spec_env(&self, spec: &serde_json::Value, env: &[(&str, &str)]) -> SpecRun {
        let mut all = vec![("D", self.dir.s())];
        all.extend_from_slice(env);
        run_spec_env(&self.dir, spec, &all, &self.marker)
    }

    /// Starts `init run` on `{"version": 1, "steps": STEPS}`; finish it with [`finish_spec`].
    pub fn start_steps(&self, steps: serde_json::Value) -> Running {
        let spec = serde_json::json!({ "version": 1, "steps": steps });
        start_spec(&self.dir, &spec, &[("D", self.dir.s())], &self.marker)
    }

    /// A `Command` for `init run DIR/spec.json EXTRA...` with `$D` set: see [`spec_cmd`].
    pub fn spec_cmd(&self, spec: &serde_json::Value, extra: &[&str]) -> Command {
        let mut c = spec_cmd(&self.dir, spec, extra, &self.marker);
        c.env("D", self.dir.s());
        c
    }

    /// A `Command` for `init ARGS...` (wrap mode, say) with `$D` set: see [`init_cmd`].
    pub fn init_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = init_cmd(args, &self.marker);
        c.env("D", self.dir.s());
        c
    }

    /// A `Command` for `unshare -fp --mount-proc init ARGS...` with `$D` set: the init as PID 1
    /// of a new PID namespace (needs root; tests using it are never skipped).
    pub fn unshare_init_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            vec!["-fp".into(), "--mount-proc".into(), INIT.as_str().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        let mut c = marked_cmd("unshare", all, &self.marker);
        c.env("D", self.dir.s());
        c
    }

    /// Runs `init ARGS...` with `$D` set to its end (bounded by [`LIMIT`]).
    pub fn run_init<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Running::spawn(&mut self.init_cmd(args)).finish(LIMIT)
    }

    /// Starts `init ARGS...` with `$D` set and waits until its child has created `$D/ready`.
    pub fn start_init_until_ready<I, S>(&self, args: I) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let r = Running::spawn(&mut self.init_cmd(args));
        self.await_ready();
        r
    }

    /// Waits (bounded) until a process of the test has created `$D/ready`.
    pub fn await_ready(&self) {
        await_file(&self.dir.join("ready"), "$D/ready from the child");
    }

    /// Waits (bounded) until a process of this test runs `program` (after an `exec`, say).
    pub fn await_process(&self, program: &str) {
        assert!(
            wait_until(LIMIT, || self
                .marker
                .pids()
                .iter()
                .any(|p| cmdline(*p).starts_with(program))),
            "no {program} process: {}",
            self.marker.describe()
        );
    }

    /// Asserts that no process of this test is left.
    pub fn assert_no_survivors(&self) {
        assert!(
            self.marker.pids().is_empty(),
            "survivors: {}",
            self.marker.describe()
        );
    }
}

/// Asserts that a stop took at least a 1 s grace period (with 100 ms of slack for clocks).
pub fn assert_waited_a_1s_grace(took: Duration, what: &str) {
    assert!(
        took >= Duration::from_millis(900),
        "{what}: over before the 1s grace: {took:?}"
    );
}

/// Writes an executable (0755) file, a script for steps to run.
pub fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A small deterministic PRNG (xorshift64*), so random tests are reproducible by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The lone signal number's name, for messages.
pub fn signame(sig: i32) -> String {
    unsafe {
        let p = libc::strsignal(sig);
        if p.is_null() {
            return sig.to_string();
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
