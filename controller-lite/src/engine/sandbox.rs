//! The local engine's containers as a pod would have them: each init is PID 1 of a pid
//! namespace of its own (through a user namespace when stepctl is not root).
//!
//! A step is untrusted code running as the init's user. Outside a pid namespace it could stop
//! the init (`kill -STOP $PPID`: stepctl then waited for ever) or kill it and live on. As PID 1
//! of its namespace the init cannot be stopped or killed from inside it (the kernel drops
//! SIGSTOP/SIGKILL from its own namespace), and when it ends the kernel kills every process of
//! the namespace: nothing a step starts survives.
//!
//! `stepctl __init-ns ARGS` is the launcher, started by [`isolate`]d commands: it forks the init
//! (`ARGS` as for `stepctl __init`) as PID 1 of the namespace made before it was exec'd, forwards
//! the signals stepctl sends it, and exits as the init did. Where the kernel or its policy
//! refuses namespaces, [`run_isolated`] says so in one line and runs the init as before.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The launcher's subcommand.
pub const LAUNCHER: &str = "__init-ns";

/// Makes `cmd` (a `stepctl __init-ns ...`) start in new pid (and, unless root, user)
/// namespaces. Its launcher gets SIGTERM when stepctl dies (the init then stops its step
/// gracefully); the init gets SIGKILL when its launcher dies.
fn isolate(cmd: &mut Command, as_root: bool) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // Everything the child writes is made now: after fork it may only make system calls.
    let files = [
        (
            c"/proc/self/setgroups",
            CString::new("deny").unwrap_or_default(),
        ),
        (
            c"/proc/self/uid_map",
            CString::new(format!("{uid} {uid} 1")).unwrap_or_default(),
        ),
        (
            c"/proc/self/gid_map",
            CString::new(format!("{gid} {gid} 1")).unwrap_or_default(),
        ),
    ];
    // SAFETY: only async-signal-safe system calls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // stepctl is not dumpable, and so neither is this copy of it: its /proc/self files
            // belong to root until it is (exec would make it so anyway; no step exists yet).
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
            if !as_root {
                // Our own uid and gid, mapped to themselves: files keep their owner, and the
                // new namespace's capabilities allow the pid namespace.
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (path, text) in &files {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, text.as_ptr().cast(), text.as_bytes().len());
                    libc::close(fd);
                    if n < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether namespaces are to be tried, learned from the first spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    Untried,
    Work,
    Refused,
}

/// Spawns `make(launcher)` (a command running `stepctl LAUNCHER|__init ARGS`) isolated when
/// namespaces work, else plain, saying once why not.
pub fn run_isolated(
    ns: &mut Namespaces,
    as_root: bool,
    mut make: impl FnMut(&str) -> Command,
) -> std::io::Result<Child> {
    if *ns != Namespaces::Refused {
        let mut cmd = make(LAUNCHER);
        isolate(&mut cmd, as_root);
        match cmd.spawn() {
            Ok(c) => {
                *ns = Namespaces::Work;
                return Ok(c);
            }
            // What unshare or the id maps say when namespaces are not allowed here.
            Err(e)
                if *ns == Namespaces::Untried
                    && matches!(
                        e.raw_os_error(),
                        Some(
                            libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS | libc::EACCES
                        )
                    ) =>
            {
                eprintln!(
                    "stepctl: warning: no pid namespace for the steps ({e}): a step can stop or kill its init, and what it leaves running may outlive it"
                );
                *ns = Namespaces::Refused;
            }
            Err(e) => return Err(e),
        }
    }
    make("__init").spawn()
}

/// `stepctl __init-ns ARGS`: runs the init (`ARGS`) as PID 1 of the namespace this process was
/// started in, forwards signals to it, and returns its exit code (128+N if signal N killed it).
pub fn launcher_main(args: Vec<std::ffi::OsString>) -> i32 {
    // SAFETY: sigset manipulation and fork in a process that has no other thread yet.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::fork();
        if pid < 0 {
            eprintln!(
                "stepctl: cannot fork the init: {}",
                std::io::Error::last_os_error()
            );
            return 1;
        }
        if pid == 0 {
            // PID 1 now. Its launcher gone, it goes too (and with it the namespace).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::_exit(stepinit::cli_main(args).clamp(0, 255));
        }
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig == libc::SIGCHLD {
                let mut st = 0;
                if libc::waitpid(pid, &mut st, libc::WNOHANG) == pid {
                    return if libc::WIFEXITED(st) {
                        libc::WEXITSTATUS(st)
                    } else {
                        128 + libc::WTERMSIG(st)
                    };
                }
            } else if sig > 0 {
                libc::kill(pid, sig);
            }
        }
    }
}
