//! Thin wrappers over the few system calls the init makes (signals, wait, pipes, reads and
//! writes, the clock), each retrying EINTR where it can happen. Nothing here panics; failures are
//! an [`Errno`] or a documented value. Every fd opened here is close-on-exec, so no child
//! inherits one by accident.

use std::ffi::CStr;
use std::fmt;

pub type Pid = libc::pid_t;

/// An OS error number.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust's message without its " (os error N)" suffix keeps our one-line errors short.
        let s = std::io::Error::from_raw_os_error(self.0).to_string();
        f.write_str(s.split(" (os error").next().unwrap_or(&s))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} (errno {})", self.0)
    }
}

pub fn check(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Monotonic time in milliseconds (CLOCK_MONOTONIC: shared by every container of a node, so a
/// deadline saved by one container's init means the same instant to the next one).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn full_sigset() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the set it is given.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut s);
        s
    }
}

/// Blocks every signal and returns a non-blocking signalfd that reads them all.
pub fn block_all_signals() -> Result<libc::c_int, Errno> {
    let all = full_sigset();
    // SAFETY: plain syscalls on a valid sigset.
    unsafe {
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &all,
            std::ptr::null_mut(),
        ))?;
        check(libc::signalfd(
            -1,
            &all,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))
    }
}

/// Reads the signal numbers waiting on a signalfd into `out`; returns how many.
pub fn read_signals(sfd: libc::c_int, out: &mut [i32; 16]) -> usize {
    // SAFETY: signalfd_siginfo is plain data; read fills whole structs or fails.
    unsafe {
        let mut buf: [libc::signalfd_siginfo; 16] = std::mem::zeroed();
        let n = libc::read(sfd, buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf));
        if n <= 0 {
            return 0;
        }
        let count = n as usize / std::mem::size_of::<libc::signalfd_siginfo>();
        for i in 0..count {
            out[i] = buf[i].ssi_signo as i32;
        }
        count
    }
}

pub fn kill(pid: Pid, sig: i32) -> bool {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, sig) == 0 }
}

pub fn getpid() -> Pid {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// How a reaped process ended, as a shell would report it: the code, or 128+N for signal N.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        // Stopped/continued are not reported without WUNTRACED; keep a defined value anyway.
        255
    }
}

/// One non-blocking `waitpid(-1)`.
pub enum Reaped {
    Child(Pid, i32),
    /// Children exist, none has exited.
    None,
    /// No child at all (ECHILD): nothing is left of the process tree.
    NoChildren,
}

pub fn reap_one() -> Reaped {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            return Reaped::Child(r, exit_code(status));
        }
        if r == 0 {
            return Reaped::None;
        }
        match Errno::last() {
            Errno(libc::EINTR) => continue,
            _ => return Reaped::NoChildren,
        }
    }
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> Result<(libc::c_int, libc::c_int), Errno> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

pub fn close(fd: libc::c_int) {
    // SAFETY: closing an fd we own.
    unsafe { libc::close(fd) };
}

/// Writes all of `data`, retrying on EINTR and short writes.
pub fn write_all(fd: libc::c_int, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        // SAFETY: data is a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            if e.0 == libc::EAGAIN {
                // Our stdout was made non-blocking by someone sharing it: wait until writable
                // (or a millisecond, where poll is refused: RLIMIT_NOFILE lowered to 0).
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
                    sleep_ms(1);
                }
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Reads into `buf`; `Ok(0)` is end of file.
pub fn read(fd: libc::c_int, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: buf is a valid mutable slice.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// Writes one line to stderr (the init's own messages); errors are ignored: there is nowhere else.
pub fn eprint_line(msg: &str) {
    let mut line = Vec::with_capacity(msg.len() + 7);
    line.extend_from_slice(b"init: ");
    line.extend_from_slice(msg.as_bytes());
    line.push(b'\n');
    let _ = write_all(2, &line);
}

/// `access(path, X_OK)`-like check through stat: a regular file with an execute bit.
pub fn is_executable_file(path: &CStr) -> Option<bool> {
    // SAFETY: st is a valid out-pointer; path is NUL-terminated.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0)
    }
}

/// Whether /proc is a procfs (not a tmpfs or anything else mounted over it) of our own pid
/// namespace (its `self` is our pid): only then does it say the truth about our processes.
pub fn proc_is_ours() -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    // SAFETY: st is a valid out-pointer.
    let procfs = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c"/proc".as_ptr(), &mut st) == 0 && st.f_type as i64 == PROC_SUPER_MAGIC
    };
    procfs
        && std::fs::read_link("/proc/self")
            .is_ok_and(|p| p.as_os_str().as_encoded_bytes() == getpid().to_string().as_bytes())
}

/// Sleeps `ms` milliseconds (signals stay blocked: nothing interrupts it but their arrival).
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: valid timespec; an early return (EINTR) is fine.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}
