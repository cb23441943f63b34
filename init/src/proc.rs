//! The process boundary: spawn one step, relay its output, reap everything, stop its whole tree.
//!
//! Everything PID 1 does, in one place:
//! 1. At start: block every signal and read them from a signalfd (nothing is ever delivered
//!    asynchronously, so SIGTSTP/SIGTTIN/SIGTTOU cannot stop us and a kill()ed SIGSEGV cannot kill
//!    us); become a child subreaper when we are not PID 1; make ourselves non-dumpable.
//! 2. Spawn: fork (wrap mode) or clone(CLONE_VM|CLONE_VFORK) (spec mode: cheaper per step); the
//!    child joins its own process group, takes the terminal's foreground when the init has it,
//!    gets default dispositions and an empty mask, and execs. Errors before exec come back
//!    through a close-on-exec pipe (fork) or the shared memory (vfork).
//! 3. Wait: one poll() over the signalfd and the step's output pipes, with the nearest deadline as
//!    timeout. SIGCHLD -> waitpid(-1, WNOHANG) until nothing is left; SIGTERM/SIGINT -> reported
//!    to the caller (who starts the stop sequence); any other signal -> forwarded to the group.
//! 4. Stop sequence: the signal to the group and to our other children (descendants that left
//!    the group were re-parented to us), wait up to the grace, then SIGKILL to everything left,
//!    again each time an orphan is re-parented to us, until waitpid says ECHILD.

use crate::auth::RecordTags;
use crate::sys::{self, Errno, Pid};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use stepinit_protocol::{Framer, Record};

/// Size of the relay buffer: output memory stays bounded whatever the step prints.
const RELAY_BUF: usize = 64 * 1024;

/// How long output pipes may stay open once the step's whole tree is gone (a process outside it
/// may hold one): data still comes through until then, then we stop reading.
const ORPHAN_PIPE_MS: u64 = 1000;

/// What a step is started with; every pointer is prepared before fork (the child allocates nothing).
pub struct Launch<'a> {
    pub path: &'a CStr,
    /// NULL-terminated argv.
    pub argv: &'a [*const c_char],
    /// NULL-terminated envp, or None for the init's own environment.
    pub envp: Option<&'a [*const c_char]>,
    pub cwd: Option<&'a CStr>,
    /// Or a directory fd to enter (a working directory walked without following planted links).
    pub cwd_fd: Option<libc::c_int>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Relay stdout/stderr through pipes (framed) instead of letting the child inherit ours.
    pub relay: bool,
    /// Give the child only fds 0, 1 and 2 (spec mode); wrap mode passes inherited fds on, as
    /// tini does (socket activation and the like).
    pub only_std_fds: bool,
}

impl<'a> Launch<'a> {
    /// `path` with `argv`, in the init's environment and directory, as the init's user, output
    /// relayed, only fds 0-2 passed on: the safe defaults; callers change what they need.
    pub fn new(path: &'a CStr, argv: &'a [*const c_char]) -> Launch<'a> {
        Launch {
            path,
            argv,
            envp: None,
            cwd: None,
            cwd_fd: None,
            uid: None,
            gid: None,
            relay: true,
            only_std_fds: true,
        }
    }
}

/// Why a spawn failed after fork: which stage, and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    Fork(Errno),
    Chdir(Errno),
    Credentials(Errno),
    Exec(Errno),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Idle,
    /// First signal sent; SIGKILL at this monotonic ms.
    Term(u64),
    /// Everything left gets SIGKILL, including each newly re-parented orphan.
    Kill,
}

struct Stream {
    fd: libc::c_int,
    /// 0: our stdout, 1: our stderr.
    which: usize,
}

/// A running step: its main process, the process group it leads, and what is left of its tree.
pub struct Child {
    pub pid: Pid,
    main_code: Option<i32>,
    /// Monotonic ms at which `waitpid` said ECHILD: nothing is left of the tree.
    gone_at: Option<u64>,
    stop: Stop,
    grace_ms: u64,
    /// Its stdout/stderr are relayed by us: a SIGPIPE we get is about our own stdout, and stays
    /// ours even after the step closed its pipes.
    relayed: bool,
    streams: Vec<Stream>,
}

impl Child {
    pub fn main_exited(&self) -> bool {
        self.main_code.is_some()
    }
}

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// SIGTERM or SIGINT arrived (already counted; the caller decides to stop).
    Interrupt(i32),
    /// The deadline passed while the main process still ran.
    Deadline,
    /// The main process exited and nothing is left of its tree: its exit code (128+N: signal N).
    Gone(i32),
}

pub struct Supervisor {
    sfd: libc::c_int,
    pid1: bool,
    /// Whether /proc is a procfs of our pid namespace; None until first needed.
    proc_ok: Option<bool>,
    /// `/dev/null`, the stdin of steps while our stdout is a terminal (see [`Supervisor::guard_terminal`]).
    null_stdin: Option<libc::c_int>,
    /// The terminal fds we made exclusive, to release at the end.
    exclusive: Vec<libc::c_int>,
    interrupt: Option<i32>,
    framers: [Framer; 2],
    /// Signs the records when the run has a key.
    signer: Option<RecordTags>,
    /// Signals whose disposition we inherited as SIG_IGN (bit N-1 for signal N); None: unknown,
    /// the child then resets all of them.
    ignored: Option<u64>,
    /// Spawn with clone(CLONE_VM|CLONE_VFORK) on `stack` instead of fork.
    vfork: bool,
    stack: Vec<u8>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl Supervisor {
    /// Step 1 of the module doc. Call once, before anything else, at the very start.
    pub fn new() -> Result<Supervisor, Errno> {
        let sfd = sys::block_all_signals()?;
        let pid1 = sys::getpid() == 1;
        // SAFETY: prctl with integer arguments only.
        unsafe {
            // Orphans of our tree come to us (PID 1 gets them anyway).
            if !pid1 {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            }
            // No ptrace/proc-mem access to us by a step running as our uid: our fds stay ours.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        Ok(Supervisor {
            sfd,
            pid1,
            proc_ok: None,
            null_stdin: None,
            exclusive: Vec::new(),
            interrupt: None,
            framers: [Framer::new(), Framer::new()],
            signer: None,
            ignored: None,
            vfork: false,
            stack: Vec::new(),
            buf: Vec::new(),
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Learns once which signals we inherited as ignored, so each child resets only those
    /// (a step loop saves ~64 system calls per step). We install no handler ourselves.
    pub fn learn_ignored_signals(&mut self) {
        let mut mask = 0u64;
        for sig in 1..65 {
            // The raw call: the C library refuses to show its reserved signals (32-34), which an
            // ignoring parent may still have set. Kernel sigaction: handler first.
            let mut old = [0usize; 4];
            // SAFETY: querying a disposition into a buffer of the kernel's struct size.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    0usize,
                    old.as_mut_ptr(),
                    8usize,
                )
            };
            if r == 0 && old[0] != libc::SIG_DFL {
                mask |= 1 << (sig - 1);
            }
        }
        self.ignored = Some(mask);
    }

    /// When our records go to a terminal (`podman run -t`, an interactive shell), a step could
    /// write forged records to it: by opening `/dev/tty` or `/dev/pts/N` (its own user owns the
    /// terminal), or through a stdin that is the terminal. So the terminal is made exclusive
    /// (TIOCEXCL: no new open of it succeeds without CAP_SYS_ADMIN, until we release it at the
    /// end), and steps get `/dev/null` as stdin instead of it.
    pub fn guard_terminal(&mut self) {
        // SAFETY: isatty/ioctl on our own standard fds.
        let tty = |fd| unsafe { libc::isatty(fd) } == 1;
        if !tty(1) {
            return;
        }
        for fd in 0..3 {
            if tty(fd) && unsafe { libc::ioctl(fd, libc::TIOCEXCL) } == 0 {
                self.exclusive.push(fd);
            }
        }
        if tty(0) {
            if let Ok(fd) = crate::fs::open_at(
                libc::AT_FDCWD,
                std::path::Path::new("/dev/null"),
                libc::O_RDONLY,
                0,
            ) {
                self.null_stdin = Some(fd.0);
                std::mem::forget(fd);
            }
        }
    }

    /// Spawn steps with vfork semantics (cheaper per step than fork). Wrap mode, which spawns
    /// once, keeps plain fork.
    pub fn use_vfork(&mut self) {
        self.vfork = true;
        self.stack = vec![0; 32 * 1024];
    }

    /// Prints a framed record on stdout. Write errors are ignored: a closed stdout must not stop
    /// the workflow (results also go to the state and the termination log).
    pub fn emit(&mut self, r: &Record) {
        self.out.clear();
        match self.signer.as_mut() {
            Some(s) => self.framers[0].signed_record(r, &mut self.out, &mut |b| s.sign(b)),
            None => self.framers[0].record(r, &mut self.out),
        }
        let _ = sys::write_all(1, &self.out);
    }

    /// From now on every record carries its tag (see [`crate::auth`]).
    pub fn sign_records(&mut self, tags: RecordTags) {
        self.signer = Some(tags);
    }

    /// Step 2 of the module doc.
    pub fn spawn(&mut self, l: &Launch, grace_ms: u64) -> Result<Child, SpawnError> {
        let mut pipes = [(-1, -1); 2];
        if l.relay {
            for i in 0..2 {
                match sys::pipe() {
                    Ok(p) => pipes[i] = p,
                    Err(e) => {
                        // Out of fds at the second pipe: the first must not leak.
                        close_pipes(&pipes);
                        return Err(SpawnError::Fork(e));
                    }
                }
            }
        }
        // How the child reports a failure before exec: after vfork it shares our memory and
        // writes `shared_err` (we resume only once it has exec'd or exited); after fork, a
        // close-on-exec pipe.
        let mut shared_err = [0i32; 2];
        let (err_r, err_w) = if self.vfork {
            (-1, -1)
        } else {
            match sys::pipe() {
                Ok(p) => p,
                Err(e) => {
                    close_pipes(&pipes);
                    return Err(SpawnError::Fork(e));
                }
            }
        };
        let none: *const c_char = std::ptr::null();
        let envp = match l.envp {
            Some(e) => e.as_ptr(),
            None => unsafe { current_environ() },
        };
        let cwd = l.cwd.map_or(none, |c| c.as_ptr());
        let ctx = ChildCtx {
            l,
            envp,
            cwd,
            pipes,
            err_w,
            err: &mut shared_err,
            ignored: self.ignored,
            stdin: self.null_stdin.unwrap_or(-1),
        };
        let arg = &ctx as *const ChildCtx as *mut libc::c_void;
        let pid = if self.vfork {
            // Step loops: no page-table copy, no copy-on-write faults; we are suspended until
            // the child execs or exits. The child runs on its own small stack.
            let top = self.stack.as_mut_ptr() as usize + self.stack.len();
            let top = (top & !15) as *mut libc::c_void;
            // SAFETY: child_entry only makes system calls on ctx (see child_after_fork).
            unsafe {
                libc::clone(
                    child_entry,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                )
            }
        } else {
            // SAFETY: fork in a single-threaded process; the child leaves by execve or _exit.
            match unsafe { libc::fork() } {
                0 => {
                    child_entry(arg);
                    unsafe { libc::_exit(127) }
                }
                pid => pid,
            }
        };
        if pid < 0 {
            let e = Errno::last();
            close_pipes(&pipes);
            if err_r >= 0 {
                sys::close(err_r);
                sys::close(err_w);
            }
            return Err(SpawnError::Fork(e));
        }
        // After fork, also set the group from our side: no window where kill(-pid) would miss
        // the child. (After vfork the child has already done it: we were suspended until exec.)
        if !self.vfork {
            unsafe { libc::setpgid(pid, pid) };
        }
        let mut streams = Vec::new();
        if l.relay {
            for (which, p) in pipes.iter().enumerate() {
                sys::close(p.1);
                streams.push(Stream { fd: p.0, which });
            }
        }
        let [stage, errno] = if err_r >= 0 {
            sys::close(err_w);
            let mut msg = [0u8; 8];
            let n = read_full(err_r, &mut msg);
            sys::close(err_r);
            if n == 8 {
                [
                    i32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]),
                    i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]),
                ]
            } else {
                [0, 0]
            }
        } else {
            // SAFETY: the vfork child wrote it (or not) before we resumed.
            unsafe { std::ptr::read_volatile(&shared_err) }
        };
        if stage != 0 {
            // The child failed before exec and exits 127: collect it now, report the reason.
            let errno = Errno(errno);
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
            for s in &streams {
                sys::close(s.fd);
            }
            return Err(match stage {
                1 => SpawnError::Chdir(errno),
                2 => SpawnError::Credentials(errno),
                _ => SpawnError::Exec(errno),
            });
        }
        if l.relay && self.buf.is_empty() {
            self.buf = vec![0; RELAY_BUF];
        }
        Ok(Child {
            pid,
            main_code: None,
            gone_at: None,
            stop: Stop::Idle,
            grace_ms,
            relayed: l.relay,
            streams,
        })
    }

    /// Between steps: whether SIGTERM/SIGINT arrived since the last step ended (so no new step
    /// starts after an abort). Other signals arriving while no step runs have no one to go to.
    pub fn pending_interrupt(&mut self) -> Option<i32> {
        let mut sigs = [0; 16];
        loop {
            let n = sys::read_signals(self.sfd, &mut sigs);
            if n == 0 {
                break;
            }
            for &sig in &sigs[..n] {
                match sig {
                    libc::SIGTERM | libc::SIGINT => {
                        self.interrupt.get_or_insert(sig);
                    }
                    libc::SIGCHLD => while let sys::Reaped::Child(..) = sys::reap_one() {},
                    _ => {}
                }
            }
        }
        self.interrupt.take()
    }

    /// Step 3 of the module doc. `deadline` (monotonic ms) only matters while the main process runs.
    pub fn wait(&mut self, c: &mut Child, deadline: Option<u64>) -> Wake {
        let mut pfds = [libc::pollfd {
            fd: self.sfd,
            events: libc::POLLIN,
            revents: 0,
        }; 3];
        loop {
            if let Some(s) = self.interrupt.take() {
                return Wake::Interrupt(s);
            }
            if c.gone_at.is_some() && c.streams.is_empty() {
                return Wake::Gone(c.main_code.unwrap_or(255));
            }
            let now = sys::now_ms();
            let mut until: Option<u64> = None;
            if let (Some(d), false) = (deadline, c.main_exited()) {
                if now >= d {
                    // A step that exited before we looked (its SIGCHLD still unread, the init
                    // descheduled) is not late: read the signals first.
                    self.on_signals(c);
                    if !c.main_exited() {
                        return Wake::Deadline;
                    }
                    continue;
                }
                until = Some(d);
            }
            if let Stop::Term(kill_at) = c.stop {
                if now >= kill_at {
                    self.kill_everything(c);
                    continue;
                }
                until = Some(until.map_or(kill_at, |u| u.min(kill_at)));
            }
            // While the tree is alive we also wait for SIGCHLD; once it is gone, only for EOF,
            // which comes at once unless a process outside our tree holds a pipe (a step could
            // pass its stdout over a unix socket): that one gets a second in all, data or not.
            let gone = c.gone_at.is_some();
            if let Some(t) = c.gone_at {
                let end = t.saturating_add(ORPHAN_PIPE_MS);
                if now >= end {
                    for s in c.streams.drain(..) {
                        sys::close(s.fd);
                    }
                    continue;
                }
                until = Some(end);
            }
            let timeout = until.map_or(-1, |u| u.saturating_sub(now).min(i32::MAX as u64) as i32);
            let mut n = 0;
            if !gone {
                pfds[0].fd = self.sfd;
                n = 1;
            }
            for s in &c.streams {
                pfds[n] = libc::pollfd {
                    fd: s.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                n += 1;
            }
            for p in pfds.iter_mut() {
                p.revents = 0;
            }
            // SAFETY: pfds[..n] are valid pollfds.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout) };
            if r < 0 && Errno::last().0 != libc::EINTR {
                // poll refused (a step of our uid lowered our RLIMIT_NOFILE under the fds we
                // poll: EINVAL, for ever): never spin, never hang; look at everything, 10 ms apart.
                self.look_without_poll(c, timeout, gone);
                continue;
            }
            if r <= 0 {
                continue;
            }
            let first_stream = if gone { 0 } else { 1 };
            // Output first, so a step's last bytes are relayed before its end is reported.
            for i in (first_stream..n).rev() {
                if pfds[i].revents != 0 {
                    self.relay(c, i - first_stream);
                }
            }
            if !gone && pfds[0].revents != 0 {
                self.on_signals(c);
            }
        }
    }

    fn relay(&mut self, c: &mut Child, idx: usize) {
        let s = &c.streams[idx];
        match sys::read(s.fd, &mut self.buf) {
            Ok(n) if n > 0 => {
                let framed = self.framers[s.which].user_bytes(&self.buf[..n], &mut self.scratch);
                let _ = sys::write_all(1 + s.which as libc::c_int, framed);
            }
            // Nothing there yet (see look_without_poll).
            Err(Errno(libc::EAGAIN)) => {}
            _ => {
                sys::close(s.fd);
                c.streams.remove(idx);
            }
        }
    }

    /// What `wait` does when poll cannot: sleeps a little, then reads every stream (made
    /// non-blocking) and the signals, whatever is there.
    fn look_without_poll(&mut self, c: &mut Child, timeout: i32, gone: bool) {
        let ms = if timeout < 0 { 10 } else { timeout.min(10) };
        sys::sleep_ms(ms as u64);
        for i in (0..c.streams.len()).rev() {
            // SAFETY: fcntl on our own fd.
            unsafe {
                let fl = libc::fcntl(c.streams[i].fd, libc::F_GETFL);
                libc::fcntl(c.streams[i].fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            self.relay(c, i);
        }
        if !gone {
            self.on_signals(c);
        }
    }

    fn on_signals(&mut self, c: &mut Child) {
        let mut sigs = [0; 16];
        let n = sys::read_signals(self.sfd, &mut sigs);
        for &sig in &sigs[..n] {
            match sig {
                libc::SIGCHLD => self.reap(c),
                libc::SIGTERM | libc::SIGINT => {
                    self.interrupt.get_or_insert(sig);
                }
                // When we relay, a SIGPIPE is about our own stdout, not the step's business.
                libc::SIGPIPE if c.relayed => {}
                // Everything else is the step's business (SIGHUP, SIGUSR1, SIGWINCH, SIGTSTP...).
                _ => {
                    sys::kill(-c.pid, sig);
                }
            }
        }
    }

    fn reap(&mut self, c: &mut Child) {
        loop {
            match sys::reap_one() {
                sys::Reaped::Child(pid, code) if pid == c.pid => c.main_code = Some(code),
                sys::Reaped::Child(..) => {}
                sys::Reaped::None => break,
                sys::Reaped::NoChildren => {
                    c.gone_at = Some(sys::now_ms());
                    return;
                }
            }
        }
        match c.stop {
            // The main process is gone but others are left: they get the stop sequence.
            Stop::Idle if c.main_exited() => self.stop(c, libc::SIGTERM),
            // New orphans were re-parented to us while we kill: they die too.
            Stop::Kill => self.kill_everything(c),
            _ => {}
        }
    }

    /// Step 4 of the module doc: `sig` (SIGTERM, or the SIGINT received) now, SIGKILL after the
    /// grace. Idempotent.
    pub fn stop(&mut self, c: &mut Child, sig: i32) {
        if c.stop != Stop::Idle || c.gone_at.is_some() {
            return;
        }
        // Each gets the signal, then SIGCONT: a stopped process could not act on it before the
        // grace ran out (systemd does the same).
        if self.pid1 {
            // PID 1 of a pid namespace: every other process in it is the step's (setsid'd ones
            // included), and kill(-1) reaches each once, with no /proc to trust.
            sys::kill(-1, sig);
            sys::kill(-1, libc::SIGCONT);
        } else {
            sys::kill(-c.pid, sig);
            sys::kill(-c.pid, libc::SIGCONT);
            for pid in self.children() {
                // Group members already got it: a second SIGINT means "force" to many programs.
                if unsafe { libc::getpgid(pid) } != c.pid {
                    sys::kill(pid, sig);
                    sys::kill(pid, libc::SIGCONT);
                }
            }
        }
        c.stop = Stop::Term(sys::now_ms().saturating_add(c.grace_ms));
        if c.grace_ms == 0 {
            self.kill_everything(c);
        }
    }

    fn kill_everything(&mut self, c: &mut Child) {
        c.stop = Stop::Kill;
        if self.pid1 {
            // PID 1 of a pid namespace: every other process in it is ours to kill.
            sys::kill(-1, libc::SIGKILL);
            return;
        }
        // Never kill(-1) outside our own namespace: the group, then each child of ours. Their
        // zombies are not reaped between the listing and the kill, so the pids cannot be reused.
        sys::kill(-c.pid, libc::SIGKILL);
        for pid in self.children() {
            sys::kill(pid, libc::SIGKILL);
        }
    }

    /// Our direct children. From /proc when it is a procfs of our own pid namespace (read
    /// without blocking); else by asking the kernel about every possible pid, which no mount can
    /// fake: `waitid(P_PID)` says ECHILD for anything but a child of ours. That costs about half a
    /// second, and only where /proc lies (another namespace's, or a tmpfs over it).
    fn children(&mut self) -> Vec<Pid> {
        let ok = *self.proc_ok.get_or_insert_with(sys::proc_is_ours);
        if ok {
            if let Some(v) = children_from_proc() {
                return v;
            }
        }
        children_by_wait()
    }
}

/// The children /proc lists, or None when it cannot say.
fn children_from_proc() -> Option<Vec<Pid>> {
    let me = sys::getpid();
    let read = |p: String| {
        crate::fs::read_bounded(libc::AT_FDCWD, std::path::Path::new(&p), 1 << 20, false).ok()
    };
    if let Some(s) = read(format!("/proc/{me}/task/{me}/children")) {
        return Some(
            String::from_utf8_lossy(&s)
                .split_ascii_whitespace()
                .filter_map(|p| p.parse::<Pid>().ok())
                .collect(),
        );
    }
    // Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<Pid>().ok()) else {
            continue;
        };
        if let Some(stat) = read(format!("/proc/{pid}/stat")) {
            if parent_of(&stat) == Some(me) {
                out.push(pid);
            }
        }
    }
    Some(out)
}

/// Every child of ours, asked of the kernel pid by pid (up to the kernel's PID_MAX_LIMIT).
fn children_by_wait() -> Vec<Pid> {
    const PID_MAX_LIMIT: Pid = 4 << 20;
    let mut out = Vec::new();
    for pid in 2..=PID_MAX_LIMIT {
        // SAFETY: info is a valid out-pointer; WNOWAIT leaves any state for our reaper.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r == 0 {
            out.push(pid);
        }
    }
    out
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for &fd in &self.exclusive {
            // SAFETY: our own standard fd.
            unsafe { libc::ioctl(fd, libc::TIOCNXCL) };
        }
    }
}

/// The ppid field of /proc/PID/stat (after the last ')', the comm may contain anything).
fn parent_of(stat: &[u8]) -> Option<Pid> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn close_pipes(p: &[(libc::c_int, libc::c_int); 2]) {
    for &(r, w) in p {
        if r >= 0 {
            sys::close(r);
            sys::close(w);
        }
    }
}

fn read_full(fd: libc::c_int, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match sys::read(fd, &mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

extern "C" {
    static environ: *const *const c_char;
}

unsafe fn current_environ() -> *const *const c_char {
    environ
}

/// What the child needs between fork/clone and exec, prepared by the parent.
struct ChildCtx<'a> {
    l: &'a Launch<'a>,
    envp: *const *const c_char,
    cwd: *const c_char,
    pipes: [(libc::c_int, libc::c_int); 2],
    /// Fork: the pipe to report a failure on. Vfork: -1, and `err` (shared memory) is used.
    err_w: libc::c_int,
    err: *mut [i32; 2],
    ignored: Option<u64>,
    /// An fd to give the step as its stdin instead of ours (-1: ours).
    stdin: libc::c_int,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the parent's ChildCtx, alive until exec/exit (fork copy, or vfork-shared
    // memory with the parent suspended).
    unsafe { child_after_fork(&*(arg as *const ChildCtx)) }
}

/// The child between fork and exec: system calls only, no allocation, no lock, no return. It may
/// share the parent's memory (CLONE_VM|CLONE_VFORK), so it writes nothing but its own stack, and
/// uses raw system calls where the C library would take locks (set*id, sigaction). After vfork it
/// writes one thing of the parent's: `err`, on failure, right before it exits.
unsafe fn child_after_fork(c: &ChildCtx) -> ! {
    let fail = |stage: i32| -> ! {
        let e = Errno::last().0;
        if c.err_w < 0 {
            std::ptr::write_volatile(c.err, [stage, e]);
        } else {
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&stage.to_ne_bytes());
            msg[4..].copy_from_slice(&e.to_ne_bytes());
            libc::write(c.err_w, msg.as_ptr().cast(), 8);
        }
        libc::_exit(127)
    };
    let l = c.l;
    // Own process group: signals for the step reach its whole group, never us.
    libc::setpgid(0, 0);
    if c.stdin >= 0 {
        // Our stdout is a terminal: the step gets none of it (see guard_terminal).
        libc::dup2(c.stdin, 0);
    } else if libc::tcgetpgrp(0) == libc::getpgid(libc::getppid()) {
        // Foreground of the terminal, when the init has it, so an interactive step can read it
        // (SIGTTOU is blocked here, so this cannot stop us; ENOTTY is the common, ignored case).
        libc::tcsetpgrp(0, libc::getpid());
    }
    if l.relay {
        // dup2 clears close-on-exec on the copies: only fds 1 and 2 reach the step.
        libc::dup2(c.pipes[0].1, 1);
        libc::dup2(c.pipes[1].1, 2);
    }
    if l.only_std_fds {
        // Whatever fds the init inherited (a jobserver, a leaked descriptor of whoever started
        // it) do not reach a step: close-on-exec from 3 up (err_w must live until exec).
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
            for fd in 3..1024 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    if let Some(fd) = l.cwd_fd {
        if libc::fchdir(fd) != 0 {
            fail(1);
        }
    } else if !c.cwd.is_null() && libc::chdir(c.cwd) != 0 {
        fail(1);
    }
    // Only root switches (and drops supplementary groups); a non-root init asked for its own
    // uid/gid (a spec mirroring the container's securityContext) has nothing to do.
    let root = libc::geteuid() == 0;
    if let Some(g) = l.gid {
        if root && libc::syscall(libc::SYS_setgroups, 0, 0) != 0 {
            fail(2);
        }
        if (root || g != libc::getegid()) && libc::syscall(libc::SYS_setgid, g) != 0 {
            fail(2);
        }
    }
    if let Some(u) = l.uid {
        if u != libc::geteuid() && libc::syscall(libc::SYS_setuid, u) != 0 {
            fail(2);
        }
    }
    // Default dispositions (an ignored SIGPIPE or SIGINT we inherited is not the step's), then
    // the empty mask, last, so no signal is delivered to the child before it execs.
    let reset = c.ignored.unwrap_or(u64::MAX);
    let dfl = [0usize; 4]; // kernel sigaction: SIG_DFL, no flags, no restorer, empty mask
    for sig in 1..65 {
        if reset & (1 << (sig - 1)) != 0 {
            libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0, 8);
        }
    }
    let empty = 0u64;
    libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty, 0, 8);
    libc::execve(l.path.as_ptr(), l.argv.as_ptr(), c.envp);
    fail(3)
}

/// The search path when the step's environment has no PATH (what execvp and shells use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds `prog` as execvp would: with a `/` it is used as is, else searched in `path` (a
/// PATH value). Err: (exit code 127/126, reason).
pub fn resolve_program(prog: &str, path: &str) -> Result<CString, (i32, String)> {
    let not_found = || (127, format!("program not found: {prog}"));
    let not_exec = || (126, format!("program not executable: {prog}"));
    if prog.is_empty() {
        return Err(not_found());
    }
    if prog.contains('\0') {
        return Err((127, "program name contains a NUL byte".into()));
    }
    if prog.contains('/') {
        let c = CString::new(prog).map_err(|_| not_found())?;
        return match sys::is_executable_file(&c) {
            None => Err(not_found()),
            Some(false) => Err(not_exec()),
            Some(true) => Ok(c),
        };
    }
    let mut seen_non_exec = false;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let mut full = Vec::with_capacity(dir.len() + prog.len() + 2);
        full.extend_from_slice(dir.as_bytes());
        full.push(b'/');
        full.extend_from_slice(prog.as_bytes());
        let Ok(c) = CString::new(full) else { continue };
        match sys::is_executable_file(&c) {
            Some(true) => return Ok(c),
            Some(false) => seen_non_exec = true,
            None => {}
        }
    }
    Err(if seen_non_exec {
        not_exec()
    } else {
        not_found()
    })
}

/// Exit code and reason for a spawn that failed after fork.
pub fn describe_spawn_error(e: SpawnError, prog: &str, cwd: Option<&str>) -> (i32, String) {
    match e {
        SpawnError::Fork(e) => (1, format!("cannot start {prog}: {e}")),
        SpawnError::Chdir(e) => (
            1,
            format!("cannot enter working directory {}: {e}", cwd.unwrap_or("?")),
        ),
        SpawnError::Credentials(e) => (1, format!("cannot switch user/group: {e}")),
        SpawnError::Exec(e) if e.0 == libc::ENOENT => (127, format!("program not found: {prog}")),
        SpawnError::Exec(e) => (126, format!("cannot execute {prog}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_last_paren() {
        assert_eq!(parent_of(b"12 (a) b) c) S 7 12 12 0"), Some(7));
        assert_eq!(parent_of(b"garbage"), None);
    }

    #[test]
    fn programs_are_resolved_like_execvp() {
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin")
                .unwrap()
                .as_bytes(),
            b"/bin/sh"
        );
        assert_eq!(
            resolve_program("no-such-prog-x", "/bin").unwrap_err().0,
            127
        );
        assert_eq!(resolve_program("/etc/passwd", "").unwrap_err().0, 126);
        assert_eq!(resolve_program("/no/such", "").unwrap_err().0, 127);
        assert_eq!(resolve_program("passwd", "/etc").unwrap_err().0, 126);
    }

    /// Runs `f` in a forked, single-threaded child (the test harness has threads: signals and
    /// waitpid(-1) must not be shared with them) and returns its exit code.
    fn isolated(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` and exits; glibc resets malloc locks at fork.
        match unsafe { libc::fork() } {
            0 => {
                let code = f();
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
                sys::exit_code(st)
            }
        }
    }

    fn sh(script: &str) -> (CString, Vec<CString>) {
        let path = CString::new("/bin/sh").unwrap();
        let argv = ["/bin/sh", "-c", script]
            .iter()
            .map(|a| CString::new(*a).unwrap())
            .collect();
        (path, argv)
    }

    fn run_sh(sup: &mut Supervisor, script: &str, grace_ms: u64, deadline: Option<u64>) -> Wake {
        let (path, argv_c) = sh(script);
        let mut argv: Vec<*const c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut c = sup.spawn(&Launch::new(&path, &argv), grace_ms).unwrap();
        let mut d = deadline;
        loop {
            match sup.wait(&mut c, d) {
                Wake::Deadline => {
                    d = None;
                    sup.stop(&mut c, libc::SIGTERM);
                }
                w => return w,
            }
        }
    }

    #[test]
    fn exit_codes_come_back_after_the_tree_is_gone() {
        for vfork in [false, true] {
            let code = isolated(|| {
                let mut sup = Supervisor::new().unwrap();
                if vfork {
                    sup.use_vfork();
                }
                match run_sh(&mut sup, "echo out; echo err >&2; exit 3", 100, None) {
                    Wake::Gone(3) => 0,
                    other => {
                        eprintln!("{other:?}");
                        1
                    }
                }
            });
            assert_eq!(code, 0, "vfork: {vfork}");
        }
    }

    #[test]
    fn leftovers_ignoring_term_are_killed_after_the_grace() {
        let code = isolated(|| {
            let mut sup = Supervisor::new().unwrap();
            let t0 = sys::now_ms();
            // A TERM-ignoring child in the group and a setsid'd grandchild outside it.
            let w = run_sh(
                &mut sup,
                "trap '' TERM; (trap '' TERM; sleep 30) & setsid sh -c 'trap \"\" TERM; sleep 31' & sleep 0.2; exit 4",
                300,
                None,
            );
            let took = sys::now_ms() - t0;
            let none_left = matches!(sys::reap_one(), sys::Reaped::NoChildren);
            eprintln!("{w:?} after {took} ms, none left: {none_left}");
            i32::from(!(w == Wake::Gone(4) && (450..3000).contains(&took) && none_left))
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_deadline_stops_the_step_with_term() {
        let code = isolated(|| {
            let mut sup = Supervisor::new().unwrap();
            let w = run_sh(&mut sup, "sleep 5", 1000, Some(sys::now_ms() + 100));
            i32::from(w != Wake::Gone(128 + libc::SIGTERM))
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_step_that_exited_before_we_looked_is_not_timed_out() {
        let code = isolated(|| {
            let mut sup = Supervisor::new().unwrap();
            let (path, argv_c) = sh("exit 0");
            let argv: Vec<_> = argv_c
                .iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect();
            let mut c = sup.spawn(&Launch::new(&path, &argv), 100).unwrap();
            // The step exits well before its deadline, but we only look after it (a loaded
            // machine): its SIGCHLD is waiting on the signalfd.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let w = sup.wait(&mut c, Some(sys::now_ms() - 100));
            eprintln!("{w:?}");
            i32::from(w != Wake::Gone(0))
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_process_outside_the_tree_cannot_keep_the_step_alive_by_writing() {
        let pidfile =
            std::env::temp_dir().join(format!("stepinit-outsider-{}", std::process::id()));
        let _ = std::fs::remove_file(&pidfile);
        let p = pidfile.display();
        // Outside our tree (double fork, before we are a subreaper): it opens the step's stdout
        // through /proc and writes a line every 200 ms for 10 s.
        let outsider = format!(
            "while [ ! -s {p} ]; do sleep 0.02; done; exec >/proc/$(cat {p})/fd/1; \
             i=0; while [ $i -lt 50 ]; do echo x || exit; sleep 0.2; i=$((i+1)); done"
        );
        let code = isolated(|| {
            if unsafe { libc::fork() } == 0 {
                if unsafe { libc::fork() } == 0 {
                    let (path, argv_c) = sh(&outsider);
                    let argv: Vec<_> = argv_c
                        .iter()
                        .map(|c| c.as_ptr())
                        .chain([std::ptr::null()])
                        .collect();
                    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
                }
                unsafe { libc::_exit(0) }
            }
            unsafe { libc::wait(std::ptr::null_mut()) };
            let mut sup = Supervisor::new().unwrap();
            let t0 = sys::now_ms();
            let script = format!("echo $$ > {p}; sleep 0.6");
            let w = run_sh(&mut sup, &script, 100, None);
            let took = sys::now_ms() - t0;
            eprintln!("{w:?} after {took} ms");
            i32::from(!(w == Wake::Gone(0) && took < 3000))
        });
        let _ = std::fs::remove_file(&pidfile);
        assert_eq!(code, 0);
    }

    #[test]
    fn a_sigpipe_from_our_closed_stdout_never_reaches_the_step() {
        let code = isolated(|| {
            // Our stdout is a pipe nobody reads: relaying the step's output raises SIGPIPE (read
            // from the signalfd). The step then closes its own pipes and lives on.
            let (r, w) = sys::pipe().unwrap();
            sys::close(r);
            unsafe { libc::dup2(w, 1) };
            let mut sup = Supervisor::new().unwrap();
            // Whether the EOF and the SIGPIPE are seen in one poll is up to the scheduler: a few
            // runs make that case all but certain.
            let wakes: Vec<Wake> = (0..5)
                .map(|_| run_sh(&mut sup, "printf x; exec >&- 2>&-; sleep 0.1", 100, None))
                .collect();
            eprintln!("{wakes:?}");
            i32::from(wakes.iter().any(|w| *w != Wake::Gone(0)))
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_spawn_that_runs_out_of_fds_leaks_none() {
        let code = isolated(|| {
            let mut sup = Supervisor::new().unwrap();
            // Room for exactly one pipe: the second one (stderr) fails with EMFILE.
            let lowest_free = unsafe { libc::dup(0) };
            sys::close(lowest_free);
            let lim = libc::rlimit {
                rlim_cur: lowest_free as libc::rlim_t + 2,
                rlim_max: lowest_free as libc::rlim_t + 2,
            };
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
            let (path, argv_c) = sh("true");
            let argv = [argv_c[0].as_ptr(), std::ptr::null()];
            let e = sup.spawn(&Launch::new(&path, &argv), 0).err();
            let again = unsafe { libc::dup(0) };
            eprintln!("{e:?}, then dup: {again} (lowest free was {lowest_free})");
            i32::from(!(e == Some(SpawnError::Fork(Errno(libc::EMFILE))) && again == lowest_free))
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn exec_and_chdir_failures_are_reported_with_their_errno() {
        let code = isolated(|| {
            let mut sup = Supervisor::new().unwrap();
            sup.use_vfork();
            let path = CString::new("/nonexistent/prog").unwrap();
            let argv = [path.as_ptr(), std::ptr::null()];
            let mut l = Launch::new(&path, &argv);
            let e1 = sup.spawn(&l, 0).err();
            let sh = CString::new("/bin/sh").unwrap();
            let cwd = CString::new("/nonexistent/dir").unwrap();
            l.path = &sh;
            l.cwd = Some(&cwd);
            let e2 = sup.spawn(&l, 0).err();
            let ok = e1 == Some(SpawnError::Exec(Errno(libc::ENOENT)))
                && e2 == Some(SpawnError::Chdir(Errno(libc::ENOENT)))
                && matches!(sys::reap_one(), sys::Reaped::NoChildren);
            i32::from(!ok)
        });
        assert_eq!(code, 0);
    }
}
