//! Ctrl-C, SIGTERM and SIGHUP: recorded, turned into a SIGTERM for the running child (the local
//! engine's init, which then stops its step with SIGTERM, grace, SIGKILL, as a container gets on
//! `podman stop` or a pod deletion), and announced on a pipe so a thread can react (the podman
//! and kubernetes engines stop the pod).
//!
//! Always SIGTERM, whatever arrived: an init that receives SIGINT passes SIGINT on to the step,
//! and the background processes of a non-interactive shell ignore SIGINT, so they would live out
//! the whole grace period.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Pid of the child to forward the signal to (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// Write end of the notification pipe (-1: none).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill and write are async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let fd = PIPE_W.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [sig as u8];
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
    }
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler. Returns the read end of a pipe that receives one
/// byte per signal.
pub fn install() -> std::io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on owned memory.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The reader blocks; only the writer (used by the handler) must never block.
    unsafe {
        let fl = libc::fcntl(fds[0], libc::F_GETFL);
        libc::fcntl(fds[0], libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    PIPE_W.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    // SAFETY: fds[0] is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fds[0]) })
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sets the child that receives forwarded signals (0 for none).
pub fn set_child(pid: i32) {
    CHILD.store(pid, Ordering::SeqCst);
}
