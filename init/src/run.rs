//! Spec mode: `init run SPEC [--group N] [--state DIR] [--termination-log PATH]`.
//!
//! The driver between the pure [`Machine`] and the OS: it parses the spec, loads/saves the state,
//! turns [`Action`]s into processes, records and files, and processes into [`Event`]s.

use crate::machine::{Action, Event, Launch, Machine, State};
use crate::proc::{self, Child, Supervisor, Wake};
use crate::sys;
use crate::wrap::usage_error;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use stepinit_protocol::summary::{StepResult, Summary};
use stepinit_protocol::Spec;

/// Exit codes (see init/README.md).
pub const EXIT_BAD_SPEC: i32 = 2;
pub const EXIT_STATE: i32 = 3;

/// Where Kubernetes reads a container's termination message.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// The state file container N writes inside `--state DIR`: `state.N.json`. Each container
/// writes its own file and reads the newest one before it (a container's init may run as
/// another uid than the previous one; in a sticky shared directory it could not replace a file
/// it does not own, and it never needs to).
pub fn state_file(dir: &Path, group: u32) -> PathBuf {
    dir.join(format!("state.{group}.json"))
}

/// The state to continue from: our own file (an init container restarted) or the newest one of
/// an earlier container (one that never saved, because it was killed early, is skipped).
fn find_state(dir: &Path, group: u32) -> Option<PathBuf> {
    (0..=group)
        .rev()
        .map(|g| state_file(dir, g))
        .find(|f| f.exists())
}

struct Opts {
    spec: PathBuf,
    group: u32,
    state: Option<PathBuf>,
    termination_log: Option<PathBuf>,
}

fn parse(args: &[OsString]) -> Result<Opts, i32> {
    let mut spec = None;
    let mut o = Opts {
        spec: PathBuf::new(),
        group: 0,
        state: None,
        termination_log: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        let (flag, inline) = match s.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(OsString::from(v))),
            _ => (s.to_string(), None),
        };
        let mut value = |name: &str| -> Result<OsString, i32> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(usage_error(&format!("{name} needs a value"))),
            }
        };
        match flag.as_str() {
            "--group" => {
                let v = value("--group")?;
                o.group = v
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| usage_error(&format!("--group: invalid number {v:?}")))?;
            }
            "--state" => o.state = Some(value("--state")?.into()),
            "--termination-log" => o.termination_log = Some(value("--termination-log")?.into()),
            f if f.starts_with('-') && f != "-" => {
                return Err(usage_error(&format!("unknown flag {f:?}")))
            }
            _ if spec.is_none() => spec = Some(PathBuf::from(a)),
            _ => return Err(usage_error(&format!("unexpected argument {s:?}"))),
        }
    }
    o.spec = spec.ok_or_else(|| usage_error("init run needs a SPEC file"))?;
    Ok(o)
}

/// Reads and checks a spec: `init: FILE: JSON.PATH: what is wrong` on error.
pub fn load_spec(path: &Path) -> Result<Spec, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read: {}", os_err(&e)))?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let spec: Spec = match serde_path_to_error::deserialize(&mut *de) {
        Ok(s) => s,
        Err(e) => {
            let p = e.path().to_string();
            let inner = e.inner();
            return Err(if p == "." || p == "?" {
                // No field to name: the line and column say where.
                format!("{name}: {inner}")
            } else {
                // The path says where; serde_json's " at line L column C" would only repeat it.
                let msg = inner.to_string();
                let cut = match (inner.line(), msg.rfind(" at line ")) {
                    (l, Some(i)) if l > 0 => i,
                    _ => msg.len(),
                };
                format!("{name}: {p}: {}", &msg[..cut])
            });
        }
    };
    de.end().map_err(|e| format!("{name}: {e}"))?;
    spec.validate().map_err(|e| format!("{name}: {e}"))?;
    Ok(spec)
}

fn os_err(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => sys::Errno(n).to_string(),
        None => e.to_string(),
    }
}

/// The program for `shell` steps when the spec names none: /bin/sh, else the `sh` that
/// `init setup` put beside the init.
fn default_shell() -> String {
    if Path::new("/bin/sh").exists() {
        return "/bin/sh".into();
    }
    if let Some(dir) = init_dir() {
        let sh = dir.join("sh");
        if sh.exists() {
            return sh.to_string_lossy().into_owned();
        }
    }
    "/bin/sh".into()
}

/// The directory holding the running init (the shared volume when `init setup` copied it).
fn init_dir() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

pub fn run(args: &[OsString]) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let spec = match load_spec(&o.spec) {
        Ok(s) => s,
        Err(e) => {
            sys::eprint_line(&e);
            return EXIT_BAD_SPEC;
        }
    };
    if let Some(d) = &o.state {
        if let Err(e) = std::fs::create_dir_all(d) {
            sys::eprint_line(&format!(
                "{}: cannot create state directory: {}",
                d.display(),
                os_err(&e)
            ));
            return EXIT_STATE;
        }
    }
    let state_file = o.state.as_ref().map(|d| state_file(d, o.group));
    let loaded = o.state.as_ref().and_then(|d| find_state(d, o.group));
    let state = match &loaded {
        Some(f) => match load_state(f) {
            Ok(s) => s,
            Err(e) => {
                sys::eprint_line(&e);
                return EXIT_STATE;
            }
        },
        None => None,
    };
    let mut m = match Machine::new(&spec, o.group, &default_shell(), state) {
        Ok(m) => m,
        Err(e) if e.path.starts_with("state") => {
            sys::eprint_line(&format!(
                "{}: {}",
                loaded.as_deref().unwrap_or(Path::new("state")).display(),
                e.message
            ));
            return EXIT_STATE;
        }
        Err(e) if e.path.starts_with("--") => {
            return usage_error(&format!("{}: {}", e.path, e.message))
        }
        Err(e) => {
            sys::eprint_line(&format!("{}: {}: {}", o.spec.display(), e.path, e.message));
            return EXIT_BAD_SPEC;
        }
    };
    let mut sup = match Supervisor::new() {
        Ok(s) => s,
        Err(e) => {
            sys::eprint_line(&format!("cannot block signals: {e}"));
            return 1;
        }
    };
    sup.learn_ignored_signals();
    sup.use_vfork();
    let mut d = Driver {
        sup: &mut sup,
        state_file,
        base_env: std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut b = k.into_vec();
                b.push(b'=');
                b.extend_from_slice(v.as_bytes());
                CString::new(b).ok()
            })
            .collect(),
        home_dir: init_dir().map(|d| d.join("home")),
        child: None,
        deadline: None,
        stop_signal: libc::SIGTERM,
        state_error: false,
    };
    let mut actions = m.start(sys::now_ms());
    loop {
        for a in std::mem::take(&mut actions) {
            match a {
                Action::Emit(r) => d.sup.emit(&r),
                Action::Save => d.save(&m),
                Action::Stop => {
                    if let Some(c) = d.child.as_mut() {
                        d.sup.stop(c, d.stop_signal);
                    }
                }
                Action::Spawn(l) => {
                    if let Some(sig) = d.sup.pending_interrupt() {
                        // Aborted between two steps: this one never starts.
                        d.stop_signal = sig;
                        let now = sys::now_ms();
                        actions.extend(m.handle(Event::Abort, now));
                        let reason = "aborted before the step started".to_string();
                        let code = None;
                        actions.extend(m.handle(Event::SpawnFailed { code, reason }, now));
                    } else if let Err((code, reason)) = d.spawn(&l) {
                        actions
                            .extend(m.handle(Event::SpawnFailed { code, reason }, sys::now_ms()));
                    }
                }
                Action::Exit(code) => {
                    write_summary(&m, o.group, o.termination_log.as_deref());
                    if d.state_error && code == 0 && !m.is_last() {
                        // The next container could not continue from our state: say so.
                        return EXIT_STATE;
                    }
                    return code;
                }
            }
        }
        if !actions.is_empty() {
            continue;
        }
        let Some(c) = d.child.as_mut() else {
            // The machine always spawns or exits; anything else is a bug we must not hang on.
            sys::eprint_line("internal error: nothing to run and no exit");
            return 1;
        };
        let ev = match d.sup.wait(c, d.deadline) {
            Wake::Interrupt(sig) => {
                d.stop_signal = sig;
                Event::Abort
            }
            Wake::Deadline => {
                d.deadline = None;
                Event::Deadline
            }
            Wake::Gone(code) => {
                d.child = None;
                Event::Exited { code }
            }
        };
        actions = m.handle(ev, sys::now_ms());
    }
}

struct Driver<'a> {
    sup: &'a mut Supervisor,
    state_file: Option<PathBuf>,
    /// The init's environment as `KEY=VALUE` strings, made once.
    base_env: Vec<CString>,
    home_dir: Option<PathBuf>,
    child: Option<Child>,
    deadline: Option<u64>,
    stop_signal: i32,
    state_error: bool,
}

impl Driver<'_> {
    fn save(&mut self, m: &Machine) {
        let Some(f) = &self.state_file else { return };
        if let Err(e) = save_state(f, &m.state()) {
            if !self.state_error {
                sys::eprint_line(&format!("{}: cannot save state: {e}", f.display()));
            }
            self.state_error = true;
        }
    }

    /// Resolves and starts one attempt; Err: (code, reason) for the step's end record.
    fn spawn(&mut self, l: &Launch) -> Result<(), (Option<i32>, String)> {
        let nul = |what: &str| (None, format!("{what} contains a NUL byte"));
        // The step's variables over the init's (prepared once): later wins, no per-step copy of
        // the whole environment.
        let mut over: Vec<(&[u8], &[u8])> = Vec::with_capacity(l.env.len() + 1);
        for (k, v) in &l.env {
            match over.iter_mut().find(|(key, _)| *key == k.as_bytes()) {
                Some(e) => e.1 = v.as_bytes(),
                None => over.push((k.as_bytes(), v.as_bytes())),
            }
        }
        let lookup = |over: &[(&[u8], &[u8])], key: &str| -> Option<Vec<u8>> {
            let key = key.as_bytes();
            match over.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => Some(v.to_vec()),
                None => self.base_env.iter().find_map(|c| {
                    let b = c.as_bytes();
                    (b.len() > key.len() && b.starts_with(key) && b[key.len()] == b'=')
                        .then(|| b[key.len() + 1..].to_vec())
                }),
            }
        };
        let new_home = self.home_fix(lookup(&over, "HOME"), l.uid, l.gid);
        if let Some(h) = &new_home {
            match over.iter_mut().find(|(k, _)| *k == b"HOME") {
                Some(e) => e.1 = h,
                None => over.push((b"HOME", h)),
            }
        }
        if let Some(wd) = &l.working_dir {
            make_working_dir(Path::new(wd), l.uid, l.gid)
                .map_err(|e| (None, format!("cannot create working directory {wd}: {e}")))?;
        }
        let prog = l.argv.first().map(String::as_str).unwrap_or("");
        let path_var = lookup(&over, "PATH")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_else(|| proc::DEFAULT_PATH.into());
        let path = proc::resolve_program(prog, &path_var).map_err(|(c, r)| (Some(c), r))?;
        let argv_c = l
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| nul("an argument"))?;
        let extra_c = over
            .iter()
            .map(|(k, v)| {
                let mut b = Vec::with_capacity(k.len() + v.len() + 1);
                b.extend_from_slice(k);
                b.push(b'=');
                b.extend_from_slice(v);
                CString::new(b)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| nul("an environment variable"))?;
        let mut envp: Vec<*const libc::c_char> =
            Vec::with_capacity(self.base_env.len() + extra_c.len() + 1);
        for c in &self.base_env {
            let b = c.as_bytes();
            let key = &b[..b.iter().position(|&x| x == b'=').unwrap_or(b.len())];
            if !over.iter().any(|(k, _)| *k == key) {
                envp.push(c.as_ptr());
            }
        }
        envp.extend(extra_c.iter().map(|c| c.as_ptr()));
        envp.push(std::ptr::null());
        let cwd_c = match &l.working_dir {
            Some(w) => Some(CString::new(w.as_bytes()).map_err(|_| nul("workingDir"))?),
            None => None,
        };
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let launch = proc::Launch {
            envp: Some(&envp),
            cwd: cwd_c.as_deref(),
            uid: l.uid,
            gid: l.gid,
            ..proc::Launch::new(&path, &argv)
        };
        match self.sup.spawn(&launch, l.grace_ms) {
            Ok(c) => {
                self.child = Some(c);
                self.deadline = l.deadline;
                Ok(())
            }
            Err(e) => {
                let (code, mut reason) =
                    proc::describe_spawn_error(e, prog, l.working_dir.as_deref());
                if let proc::SpawnError::Credentials(err) = e {
                    let id = |v: Option<u32>| v.map_or("-".to_string(), |x| x.to_string());
                    reason = format!(
                        "cannot switch to runAsUser {} runAsGroup {}: {err}",
                        id(l.uid),
                        id(l.gid)
                    );
                }
                Err((Some(code), reason))
            }
        }
    }

    /// Steps whose HOME is missing or not writable (by their uid) get a writable one: under the
    /// shared volume (`init setup` prepares DIR/home), else under /tmp.
    fn home_fix(
        &self,
        home: Option<Vec<u8>>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Option<Vec<u8>> {
        // SAFETY: geteuid/getegid cannot fail.
        let uid = uid.unwrap_or_else(|| unsafe { libc::geteuid() });
        let gid = gid.unwrap_or_else(|| unsafe { libc::getegid() });
        if let Some(h) = &home {
            if writable_by(Path::new(std::ffi::OsStr::from_bytes(h)), uid, gid) {
                return None;
            }
        }
        for base in self
            .home_dir
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/tmp")])
        {
            let dir = base.join(uid.to_string());
            if ensure_private_dir(&dir, uid, gid) {
                return Some(dir.into_os_string().into_vec());
            }
        }
        None
    }
}

fn stat(p: &Path) -> Option<libc::stat> {
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: valid path and out-pointer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::stat(c.as_ptr(), &mut st) == 0).then_some(st)
    }
}

/// Whether `uid:gid` may create files in directory `p` (by its mode bits; root always may).
fn writable_by(p: &Path, uid: u32, gid: u32) -> bool {
    let Some(st) = stat(p) else { return false };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return false;
    }
    let m = st.st_mode;
    uid == 0
        || (st.st_uid == uid && m & 0o300 == 0o300)
        || (st.st_uid != uid && st.st_gid == gid && m & 0o030 == 0o030)
        || (st.st_uid != uid && st.st_gid != gid && m & 0o003 == 0o003)
}

/// Creates `dir` (mode 0700, owned by uid:gid when we are root) unless it is already usable.
fn ensure_private_dir(dir: &Path, uid: u32, gid: u32) -> bool {
    // Never a symlink someone planted (under /tmp, say): only a real directory will do.
    if std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return false;
    }
    if writable_by(dir, uid, gid) {
        return true;
    }
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid path.
    unsafe {
        if libc::mkdir(c.as_ptr(), 0o700) != 0 && sys::Errno::last().0 != libc::EEXIST {
            return false;
        }
        if libc::geteuid() == 0 {
            libc::lchown(c.as_ptr(), uid, gid);
        }
    }
    writable_by(dir, uid, gid)
}

/// Creates a working directory with its parents; new directories belong to the step's uid/gid
/// when the init is root and the step runs as someone else.
fn make_working_dir(dir: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(q) => p = q,
            None => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| os_err(&e))?;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 && (uid.is_some() || gid.is_some()) {
        for m in missing {
            let _ = std::os::unix::fs::lchown(&m, uid, gid);
        }
    }
    Ok(())
}

fn load_state(f: &Path) -> Result<Option<State>, String> {
    let bytes = match std::fs::read(f) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{}: cannot read state: {}",
                f.display(),
                os_err(&e)
            ))
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de)
        .map(Some)
        .map_err(|e| format!("{}: {}: {}", f.display(), e.path(), e.inner()))
}

/// Writes the state to a temporary file in the same directory and renames it over the old one:
/// a reader sees the old state or the new, never a torn file. No fsync: the state only has to
/// survive the death of this init (a process crash, OOM kill), not of the node; the kernel's page
/// cache is shared by every container of the pod, and a rebooted node restarts the pod anyway.
fn save_state(f: &Path, s: &State) -> Result<(), String> {
    use std::io::Write;
    let json = serde_json::to_vec(s).map_err(|e| e.to_string())?;
    let tmp = f.with_extension(format!("tmp.{}", sys::getpid()));
    // Steps can write the state directory too: the temporary file is always a new one
    // (O_EXCL: never through a symlink or into a file someone left there). One left over by a
    // killed init, or planted, is removed first (unlink removes a symlink, not its target).
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
    };
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            create()
        }
        r => r,
    }
    .map_err(|e| os_err(&e))?;
    let written = file.write_all(&json);
    drop(file);
    written
        .and_then(|()| std::fs::rename(&tmp, f))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            os_err(&e)
        })
}

fn write_summary(m: &Machine, group: u32, path: Option<&Path>) {
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (Path::new(DEFAULT_TERMINATION_LOG), false),
    };
    // Outside Kubernetes the default file is absent: nothing to do, nothing to say.
    if !explicit && !path.exists() {
        return;
    }
    let steps = m
        .reported()
        .map(|(id, status, code)| StepResult {
            id: id.to_string(),
            status,
            code,
        })
        .collect();
    let s = Summary::new(group, m.is_last(), m.workflow_status(), steps);
    if let Err(e) = std::fs::write(path, s.encode()) {
        sys::eprint_line(&format!(
            "{}: cannot write summary: {}",
            path.display(),
            os_err(&e)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stepinit-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn spec_errors_name_the_file_and_the_path() {
        let d = tmp("spec");
        let f = d.join("spec.json");
        let check = |json: &str, want: &str| {
            std::fs::write(&f, json).unwrap();
            let e = load_spec(&f).unwrap_err();
            assert_eq!(e, format!("{}: {want}", f.display()));
        };
        check(
            r#"{"version":1,"steps":[{"command":["a"]},{"command":["b"],"retry":{"count":"x"}}]}"#,
            r#"steps[1].retry.count: invalid type: string "x", expected u32"#,
        );
        check(
            r#"{"version":1,"steps":[{"command":["a"]}]} x"#,
            "trailing characters at line 1 column 43",
        );
        check(
            r#"{"version":1,"steps":[]}"#,
            "steps: a spec needs at least one step",
        );
        check("", "EOF while parsing a value at line 1 column 0");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn state_is_saved_atomically_and_the_newest_earlier_one_is_found() {
        let d = tmp("state");
        assert_eq!(find_state(&d, 2), None);
        let spec: Spec =
            serde_json::from_str(r#"{"version":1,"steps":[{"command":["a"]}]}"#).unwrap();
        let m = Machine::new(&spec, 0, "/bin/sh", None).unwrap();
        save_state(&state_file(&d, 0), &m.state()).unwrap();
        assert_eq!(find_state(&d, 2), Some(d.join("state.0.json")));
        save_state(&state_file(&d, 1), &m.state()).unwrap();
        assert_eq!(find_state(&d, 2), Some(d.join("state.1.json")));
        assert_eq!(find_state(&d, 0), Some(d.join("state.0.json")));
        assert_eq!(
            load_state(&d.join("state.1.json")).unwrap(),
            Some(m.state())
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::write(d.join("state.1.json"), b"{\"version\":1,").unwrap();
        assert!(load_state(&d.join("state.1.json")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_planted_temporary_symlink_is_not_written_through() {
        // The state directory is writable by the steps too: one could plant our temporary name
        // as a symlink to a file the next (root) init must not overwrite.
        let d = tmp("plant");
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let f = state_file(&d, 0);
        let planted = f.with_extension(format!("tmp.{}", sys::getpid()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let spec: Spec =
            serde_json::from_str(r#"{"version":1,"steps":[{"command":["a"]}]}"#).unwrap();
        let m = Machine::new(&spec, 0, "/bin/sh", None).unwrap();
        let saved = save_state(&f, &m.state());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(saved, Ok(()));
        assert_eq!(load_state(&f).unwrap(), Some(m.state()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writable_by_follows_the_mode_bits() {
        let d = tmp("w");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert!(writable_by(&d, uid, gid));
        assert!(writable_by(&d, 0, 0), "root writes anywhere");
        assert!(!writable_by(&d, 4242, 4242));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(writable_by(&d, 4242, 4242));
        assert!(!writable_by(&d.join("missing"), uid, gid));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
