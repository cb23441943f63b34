//! Spec mode: `init run SPEC [--group N] [--state DIR] [--termination-log PATH]`.
//!
//! The driver between the pure [`Machine`] and the OS: it parses the spec, loads/saves the state,
//! turns [`Action`]s into processes, records and files, and processes into [`Event`]s.

use crate::auth::RecordTags;
use crate::fs::{self, Fd, Owner, Walk};
use crate::journal::{self, Journal, Key, KEY_ENV};
use crate::machine::{Action, Event, Launch, Machine};
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

/// The largest spec file read (a ConfigMap holds 1 MiB; this leaves room for specs given
/// directly, and bounds what a FIFO or a huge file could make us read).
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

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
    load_spec_and_digest(path).map(|(s, _)| s)
}

/// A spec and the SHA-256 of its bytes (the run's keys are bound to it: see [`crate::auth`]).
pub fn load_spec_and_digest(path: &Path) -> Result<(Spec, [u8; 32]), String> {
    let name = path.display();
    // Symlinks followed (a ConfigMap's keys are links), but only a regular file, without
    // blocking, of bounded size.
    let bytes = fs::read_bounded(libc::AT_FDCWD, path, MAX_SPEC_BYTES, true)
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
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
    Ok((spec, crate::auth::spec_digest(&bytes)))
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
    let (spec, digest) = match load_spec_and_digest(&o.spec) {
        Ok(s) => s,
        Err(e) => {
            sys::eprint_line(&e);
            return EXIT_BAD_SPEC;
        }
    };
    let key = match Key::from_env() {
        Ok(k) => k,
        Err(e) => return usage_error(&e),
    };
    let mut m = match Machine::new(&spec, o.group, &default_shell()) {
        Ok(m) => m,
        Err(e) if e.path.starts_with("--") => {
            return usage_error(&format!("{}: {}", e.path, e.message))
        }
        Err(e) => {
            sys::eprint_line(&format!("{}: {}: {}", o.spec.display(), e.path, e.message));
            return EXIT_BAD_SPEC;
        }
    };
    // What `env.NAME` in the spec's expressions reads (the key is not for them either).
    m.set_env(
        std::env::vars_os()
            .filter(|(k, _)| k != KEY_ENV)
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
    );
    let mut sup = match Supervisor::new() {
        Ok(s) => s,
        Err(e) => {
            sys::eprint_line(&format!("cannot block signals: {e}"));
            return 1;
        }
    };
    sup.learn_ignored_signals();
    sup.use_vfork();
    sup.guard_terminal();
    if key.given {
        // Records the controller can tell from anything a step prints (see crate::auth).
        sup.sign_records(RecordTags::new(&key.derive("records", &digest), o.group));
    }
    let termination_log = TerminationLog::open(o.termination_log.as_deref());
    let (journal, taint) = match &o.state {
        None => {
            m.without_state();
            (None, None)
        }
        Some(dir) => {
            if !key.given {
                sys::eprint_line(&format!(
                    "--state without {KEY_ENV}: steps running as this user could forge the state (see protocol/README.md)"
                ));
            }
            match journal::open(dir, &mut m, &key.derive("journal", &digest)) {
                Ok(opened) => {
                    // Their writer may have died before printing them: readers drop repeats.
                    for r in &opened.reprint {
                        sup.emit(r);
                    }
                    (opened.journal, opened.taint)
                }
                Err(e) => {
                    sys::eprint_line(&e.0);
                    return EXIT_STATE;
                }
            }
        }
    };
    if let (true, Some(j)) = (m.already_finished(), &journal) {
        sys::eprint_line(&format!(
            "{}: this container already ran to its end (the state of an earlier run?): its result is reported again, nothing runs twice",
            j.path.display()
        ));
    }
    // HOMEs live beside the state (the shared volume's layout), or beside the init.
    let home_dir = match &o.state {
        Some(d) => d.parent().map(|p| p.join("home")),
        None => init_dir().map(|d| d.join("home")),
    };
    // No journal of ours (it could not be made; the taint says why): the steps still run and
    // are reported, and an intermediate container then exits 3, so the pod stops.
    let state_error = o.state.is_some() && journal.is_none();
    let mut d = Driver {
        sup: &mut sup,
        journal,
        base_env: std::env::vars_os()
            // The journal's key is for the init alone.
            .filter(|(k, _)| k != KEY_ENV)
            .filter_map(|(k, v)| {
                let mut b = k.into_vec();
                b.push(b'=');
                b.extend_from_slice(v.as_bytes());
                CString::new(b).ok()
            })
            .collect(),
        home_dir,
        child: None,
        deadline: None,
        stop_signal: libc::SIGTERM,
        state_error,
    };
    let mut actions = m.start(sys::now_ms(), taint);
    loop {
        for a in std::mem::take(&mut actions) {
            match a {
                Action::Journal(e) => d.journal(&e),
                Action::Emit(r) => d.sup.emit(&r),
                Action::Stop => {
                    if let Some(c) = d.child.as_mut() {
                        d.sup.stop(c, d.stop_signal);
                    }
                }
                Action::Spawn(l) => {
                    let ev = if let Some(sig) = d.sup.pending_interrupt() {
                        // Aborted between two steps: this one never starts.
                        d.stop_signal = sig;
                        Event::Abort
                    } else if let Some(reason) = &l.fail {
                        Event::SpawnFailed {
                            code: None,
                            reason: reason.clone(),
                        }
                    } else {
                        match d.spawn(&l) {
                            Ok(()) => Event::Spawned,
                            Err((code, reason)) => Event::SpawnFailed { code, reason },
                        }
                    };
                    actions.extend(m.handle(ev, sys::now_ms()));
                }
                Action::Exit(code) => {
                    if let Some(t) = &termination_log {
                        t.write(&m, o.group);
                    }
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
    journal: Option<Journal>,
    /// The init's environment as `KEY=VALUE` strings, made once.
    base_env: Vec<CString>,
    home_dir: Option<PathBuf>,
    child: Option<Child>,
    deadline: Option<u64>,
    stop_signal: i32,
    state_error: bool,
}

impl Driver<'_> {
    /// Appends an entry to the journal (with `--state`). A failure is said once; the workflow
    /// goes on (its records still reach stdout), and an intermediate container then exits 3 so
    /// that the pod stops instead of a later init continuing from a state that lacks it.
    fn journal(&mut self, e: &crate::machine::Entry) {
        let Some(j) = &mut self.journal else { return };
        if let Err(err) = j.append(e) {
            if !self.state_error {
                sys::eprint_line(&format!(
                    "{}: cannot write the state: {err}",
                    j.path.display()
                ));
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
        // Walked without following links planted by another user, created where missing (and
        // owned by the step's user when we are root), entered by its fd: nothing can be swapped
        // between the walk and the step's start.
        let cwd = match &l.working_dir {
            Some(wd) => Some(
                Walk {
                    owner: step_owner(l.uid, l.gid),
                    create: Some(0o755),
                }
                .open(Path::new(wd))
                .map_err(|e| (None, format!("cannot create working directory {wd}: {e}")))?,
            ),
            None => None,
        };
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
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let launch = proc::Launch {
            envp: Some(&envp),
            cwd_fd: cwd.as_ref().map(|f| f.0),
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
    /// shared volume (`init setup` prepares DIR/home), else under /tmp. Only a real directory
    /// of the step's own user will do: one another user made for it (in the world-writable
    /// fallback, or under /tmp) is passed over for the next name.
    fn home_fix(
        &self,
        home: Option<Vec<u8>>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Option<Vec<u8>> {
        let owner = step_owner(uid, gid);
        if let Some(h) = &home {
            if writable_by(Path::new(std::ffi::OsStr::from_bytes(h)), owner) {
                return None;
            }
        }
        for base in self
            .home_dir
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/tmp")])
        {
            let Ok(dir) = (Walk {
                owner: Owner::me(),
                create: None,
            })
            .open(base) else {
                continue;
            };
            for n in 0..4 {
                let name = match n {
                    0 => owner.uid.to_string(),
                    n => format!("{}.{n}", owner.uid),
                };
                if private_dir(&dir, &name, owner) {
                    return Some(base.join(name).into_os_string().into_vec());
                }
            }
        }
        None
    }
}

/// The user a step runs as (ours, unless the spec switches it).
fn step_owner(uid: Option<u32>, gid: Option<u32>) -> Owner {
    // SAFETY: geteuid/getegid cannot fail.
    Owner {
        uid: uid.unwrap_or_else(|| unsafe { libc::geteuid() }),
        gid: Some(gid.unwrap_or_else(|| unsafe { libc::getegid() })),
    }
}

/// Whether `owner` may create files in directory `p` (by its mode bits; root always may).
fn writable_by(p: &Path, owner: Owner) -> bool {
    let Ok(fd) = fs::open_at(libc::AT_FDCWD, p, libc::O_PATH | libc::O_DIRECTORY, 0) else {
        return false;
    };
    let Ok(st) = fs::fstat(fd.0) else {
        return false;
    };
    let (uid, gid, m) = (owner.uid, owner.gid.unwrap_or(u32::MAX), st.st_mode);
    uid == 0
        || (st.st_uid == uid && m & 0o300 == 0o300)
        || (st.st_uid != uid && st.st_gid == gid && m & 0o030 == 0o030)
        || (st.st_uid != uid && st.st_gid != gid && m & 0o003 == 0o003)
}

/// Makes `dir/name` a private HOME of `owner` (0700, theirs) unless it is one already; false
/// when the name is taken by anything else (a file, a link, another user's directory).
fn private_dir(dir: &Fd, name: &str, owner: Owner) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: valid name relative to our directory fd; EEXIST is checked below.
    let made = unsafe { libc::mkdirat(dir.0, c.as_ptr(), 0o700) } == 0;
    let Ok(fd) = fs::open_at(
        dir.0,
        Path::new(name),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) else {
        return false;
    };
    // SAFETY: geteuid cannot fail; fd is ours (AT_EMPTY_PATH: the directory it is).
    if made && unsafe { libc::geteuid() } == 0 {
        unsafe {
            libc::fchownat(
                fd.0,
                c"".as_ptr(),
                owner.uid,
                owner.gid.unwrap_or(u32::MAX),
                libc::AT_EMPTY_PATH,
            )
        };
    }
    fs::fstat(fd.0).is_ok_and(|st| st.st_uid == owner.uid)
}

/// The termination-message file, opened before any step runs: a step could lower our
/// RLIMIT_NOFILE so that it cannot be opened later (leaving a summary the step wrote there), or
/// plant a FIFO (an open would block) or a symlink at an explicit path. Opened non-blocking,
/// without following a link, only if regular; created when the path is explicit.
struct TerminationLog {
    fd: Fd,
    path: PathBuf,
}

impl TerminationLog {
    fn open(path: Option<&Path>) -> Option<TerminationLog> {
        let (path, explicit) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_TERMINATION_LOG), false),
        };
        let create = if explicit { libc::O_CREAT } else { 0 };
        let flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | create;
        let fd = match fs::open_at(libc::AT_FDCWD, path, flags, 0o644) {
            Ok(fd) => fd,
            // Outside Kubernetes the default file is absent: nothing to do, nothing to say.
            Err(sys::Errno(libc::ENOENT)) if !explicit => return None,
            Err(e) => {
                sys::eprint_line(&format!(
                    "{}: cannot open the termination log: {e}",
                    path.display()
                ));
                return None;
            }
        };
        match fs::fstat(fd.0) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Some(TerminationLog {
                fd,
                path: path.to_path_buf(),
            }),
            _ => {
                sys::eprint_line(&format!(
                    "{}: the termination log is not a regular file: not written",
                    path.display()
                ));
                None
            }
        }
    }

    /// Replaces the file's content with the summary of what this init reported.
    fn write(&self, m: &Machine, group: u32) {
        let steps = m
            .reported()
            .map(|(id, status, code)| StepResult {
                id: id.to_string(),
                status,
                code,
            })
            .collect();
        let s = Summary::new(group, m.is_last(), m.workflow_status(), steps).encode();
        // SAFETY: our fd; pwrite at 0 after the truncation: whatever a step wrote there is gone.
        let r = unsafe {
            libc::ftruncate(self.fd.0, 0);
            libc::pwrite(self.fd.0, s.as_ptr().cast(), s.len(), 0)
        };
        if r != s.len() as isize {
            sys::eprint_line(&format!(
                "{}: cannot write summary: {}",
                self.path.display(),
                sys::Errno::last()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        crate::scratch_dir(&format!("run-{name}"))
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
    fn homes_are_the_users_own_directories_only() {
        let d = tmp("home");
        let dir = fs::open_at(libc::AT_FDCWD, &d, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let me = Owner::me();
        assert!(private_dir(&dir, "mine", me));
        assert!(
            private_dir(&dir, "mine", me),
            "a second time: it is ours already"
        );
        std::fs::write(d.join("file"), b"").unwrap();
        assert!(!private_dir(&dir, "file", me));
        std::os::unix::fs::symlink(&d, d.join("link")).unwrap();
        assert!(!private_dir(&dir, "link", me));
        if me.uid == 0 {
            // Another user's directory, however open, is not a HOME for 1001.
            std::fs::create_dir(d.join("1001")).unwrap();
            std::os::unix::fs::chown(d.join("1001"), Some(1000), Some(1000)).unwrap();
            let them = Owner {
                uid: 1001,
                gid: Some(1001),
            };
            assert!(!private_dir(&dir, "1001", them));
            assert!(private_dir(&dir, "1001.1", them));
            let st = std::fs::metadata(d.join("1001.1")).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!((st.uid(), st.mode() & 0o777), (1001, 0o700));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writable_by_follows_the_mode_bits() {
        let d = tmp("w");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let who = |uid, gid| Owner {
            uid,
            gid: Some(gid),
        };
        assert!(writable_by(&d, who(uid, gid)));
        assert!(writable_by(&d, who(0, 0)), "root writes anywhere");
        assert!(!writable_by(&d, who(4242, 4242)));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(writable_by(&d, who(4242, 4242)));
        assert!(!writable_by(&d.join("missing"), who(uid, gid)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
