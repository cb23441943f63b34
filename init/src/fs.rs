//! File-system access that a step cannot subvert: a step may write anything its uid can, plant
//! symlinks and FIFOs, and swap names between our checks and our uses. So:
//!
//! - files are read with [`read_bounded`]: opened non-blocking (a planted FIFO cannot hang us),
//!   only regular files, never more than a given size (a sparse 3 GiB file or `/dev/zero` cannot
//!   exhaust memory);
//! - directories are reached with [`Walk`], one component at a time through directory fds: a
//!   symlink is followed only when root or the user who will use the directory owns it (a link
//!   planted by another user is refused), and what is created is created through the fd of its
//!   verified parent, so no name can be swapped underneath.

use crate::sys::{self, Errno};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// An fd closed on drop.
#[derive(Debug)]
pub struct Fd(pub libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))
}

pub fn fstat(fd: libc::c_int) -> Result<libc::stat, Errno> {
    // SAFETY: st is a valid out-pointer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        sys::check(libc::fstat(fd, &mut st))?;
        Ok(st)
    }
}

fn lstat_at(dir: libc::c_int, name: &CString) -> Result<libc::stat, Errno> {
    // SAFETY: st is a valid out-pointer; name is NUL-terminated.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        sys::check(libc::fstatat(
            dir,
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ))?;
        Ok(st)
    }
}

/// `openat` with O_CLOEXEC (and whatever `flags` add).
pub fn open_at(dir: libc::c_int, name: &Path, flags: libc::c_int, mode: u32) -> Result<Fd, Errno> {
    let c = cpath(name)?;
    // SAFETY: valid path.
    let fd = sys::check(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    Ok(Fd(fd))
}

/// Why a file could not be read as a bounded regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Os(Errno),
    NotRegular,
    TooLarge(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Os(e) => write!(f, "{e}"),
            ReadError::NotRegular => f.write_str("not a regular file"),
            ReadError::TooLarge(max) => write!(f, "larger than {max} bytes"),
        }
    }
}

/// Reads a whole regular file of at most `max` bytes. `follow`: whether a symlink at the last
/// component may be followed (a ConfigMap mounts its keys as symlinks; state files never are).
pub fn read_bounded(
    dir: libc::c_int,
    path: &Path,
    max: u64,
    follow: bool,
) -> Result<Vec<u8>, ReadError> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let fd = open_at(dir, path, libc::O_RDONLY | libc::O_NONBLOCK | nofollow, 0)
        .map_err(ReadError::Os)?;
    read_fd_bounded(&fd, max)
}

/// [`read_bounded`] on an open fd.
pub fn read_fd_bounded(fd: &Fd, max: u64) -> Result<Vec<u8>, ReadError> {
    let st = fstat(fd.0).map_err(ReadError::Os)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ReadError::NotRegular);
    }
    if st.st_size as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    let mut buf = vec![0u8; st.st_size as usize];
    let mut got = 0;
    loop {
        if got == buf.len() {
            // The file may have grown since fstat: one more byte says so.
            if buf.len() as u64 >= max {
                let mut one = [0u8; 1];
                if sys::read(fd.0, &mut one).map_err(ReadError::Os)? > 0 {
                    return Err(ReadError::TooLarge(max));
                }
                break;
            }
            let more = (buf.len() as u64 + 64 * 1024).min(max + 1) as usize;
            buf.resize(more, 0);
        }
        match sys::read(fd.0, &mut buf[got..]).map_err(ReadError::Os)? {
            0 => break,
            n => got += n,
        }
    }
    if got as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    buf.truncate(got);
    Ok(buf)
}

/// Who a walked path is for: symlinks this uid owns may be followed (they can only mislead that
/// user's own steps), and what the walk creates belongs to `uid:gid` when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl Owner {
    /// This process's effective user.
    pub fn me() -> Owner {
        // SAFETY: geteuid cannot fail.
        Owner {
            uid: unsafe { libc::geteuid() },
            gid: None,
        }
    }
}

/// A symlink-safe walk to a directory (see the module doc).
pub struct Walk {
    pub owner: Owner,
    /// Create missing components (mode 0755 before umask, or `mode`), owned by `owner` when we
    /// are root.
    pub create: Option<u32>,
}

/// While alive, root acts for another user in the file system: this thread's fsuid/fsgid are
/// theirs and it has no supplementary groups, so a walk for a step's user reaches and creates
/// only what that user could (a link of theirs into a root-only directory leads nowhere), and
/// what it creates is theirs.
struct ActAs {
    groups: Vec<libc::gid_t>,
}

impl ActAs {
    fn begin(owner: Owner) -> Option<ActAs> {
        // SAFETY: credential calls of a single-threaded process, undone by drop.
        unsafe {
            if libc::geteuid() != 0 || owner.uid == 0 {
                return None;
            }
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut groups = vec![0; n.max(0) as usize];
            let n = libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr());
            groups.truncate(n.max(0) as usize);
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
            libc::setfsgid(owner.gid.unwrap_or_else(|| libc::getegid()));
            libc::setfsuid(owner.uid);
            Some(ActAs { groups })
        }
    }
}

impl Drop for ActAs {
    fn drop(&mut self) {
        // SAFETY: back to root's own ids and groups.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(libc::getegid());
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
        }
    }
}

/// Most symlinks one walk follows (the kernel's limit is 40).
const MAX_LINKS: usize = 40;

/// Why a [`Walk`] stopped, at which component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkError {
    pub at: PathBuf,
    pub kind: WalkFailure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkFailure {
    /// It does not exist (and the walk creates nothing).
    Missing,
    /// A symlink owned by this uid, neither root nor the walk's owner.
    UntrustedLink(u32),
    NotADirectory,
    TooManyLinks,
    Os(Errno),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.at.display();
        match &self.kind {
            WalkFailure::Missing => write!(f, "{at}: {}", Errno(libc::ENOENT)),
            WalkFailure::UntrustedLink(uid) => write!(
                f,
                "{at}: a symlink owned by uid {uid}, neither root nor the step's user: not followed"
            ),
            WalkFailure::NotADirectory => write!(f, "{at}: not a directory"),
            WalkFailure::TooManyLinks => write!(f, "{at}: too many symlinks"),
            WalkFailure::Os(e) => write!(f, "{at}: {e}"),
        }
    }
}

impl Walk {
    /// Opens directory `path` (relative paths: from the current directory) as an `O_PATH` fd
    /// (enough to `fchdir` into and to create in). The error names the component that failed.
    pub fn open(&self, path: &Path) -> Result<Fd, WalkError> {
        let fail = |at: &Path, kind| WalkError {
            at: at.to_path_buf(),
            kind,
        };
        let _acting = ActAs::begin(self.owner);
        let mut links = 0;
        let start = if path.is_absolute() { "/" } else { "." };
        let root = || {
            // O_PATH: walking through a directory needs its x bit only (`home` is 0711).
            open_at(
                libc::AT_FDCWD,
                Path::new("/"),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| fail(Path::new("/"), WalkFailure::Os(e)))
        };
        let mut dir = match start {
            "/" => root()?,
            _ => open_at(
                libc::AT_FDCWD,
                Path::new("."),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| fail(Path::new("."), WalkFailure::Os(e)))?,
        };
        // Components still to walk, last first.
        let mut todo: Vec<PathBuf> = components(path);
        todo.reverse();
        let mut walked = PathBuf::from(start);
        // A step deleting what we create as fast as we create it cannot keep us here forever.
        let mut creations = 0;
        while let Some(name) = todo.pop() {
            let at = walked.join(&name);
            let c = cpath(&name).map_err(|e| fail(&at, WalkFailure::Os(e)))?;
            match open_at(
                dir.0,
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(fd) => {
                    dir = fd;
                    walked = at;
                }
                Err(Errno(libc::ENOENT)) if self.create.is_some() && creations < 1000 => {
                    creations += 1;
                    // SAFETY: valid name relative to our directory fd.
                    let r =
                        unsafe { libc::mkdirat(dir.0, c.as_ptr(), self.create.unwrap_or(0o755)) };
                    if r != 0 && Errno::last().0 != libc::EEXIST {
                        return Err(fail(&at, WalkFailure::Os(Errno::last())));
                    }
                    // Walk into it (again, should it have been swapped meanwhile).
                    todo.push(name);
                }
                Err(Errno(libc::ENOENT)) => return Err(fail(&at, WalkFailure::Missing)),
                Err(Errno(libc::ELOOP)) | Err(Errno(libc::ENOTDIR)) => {
                    let st = lstat_at(dir.0, &c).map_err(|e| fail(&at, WalkFailure::Os(e)))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                        return Err(fail(&at, WalkFailure::NotADirectory));
                    }
                    if st.st_uid != 0 && st.st_uid != self.owner.uid {
                        return Err(fail(&at, WalkFailure::UntrustedLink(st.st_uid)));
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(fail(&at, WalkFailure::TooManyLinks));
                    }
                    let target =
                        read_link_at(dir.0, &c).map_err(|e| fail(&at, WalkFailure::Os(e)))?;
                    let mut more = components(&target);
                    more.reverse();
                    todo.extend(more);
                    if target.is_absolute() {
                        dir = root()?;
                        walked = PathBuf::from("/");
                    }
                }
                Err(e) => return Err(fail(&at, WalkFailure::Os(e))),
            }
        }
        Ok(dir)
    }
}

/// The components of a path, `.` dropped, `..` kept (walked physically, as the kernel does).
fn components(p: &Path) -> Vec<PathBuf> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn read_link_at(dir: libc::c_int, name: &CString) -> Result<PathBuf, Errno> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(buf),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        crate::scratch_dir(&format!("fs-{name}"))
    }

    #[test]
    fn bounded_reads_refuse_fifos_devices_and_big_files() {
        let d = tmp("read");
        let f = d.join("f");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(
            read_bounded(libc::AT_FDCWD, &f, 5, false).unwrap(),
            b"hello"
        );
        assert_eq!(
            read_bounded(libc::AT_FDCWD, &f, 4, false),
            Err(ReadError::TooLarge(4))
        );
        let fifo = cpath(&d.join("fifo")).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // Returns at once (a blocking open of a FIFO would wait for a writer forever).
        assert_eq!(
            read_bounded(libc::AT_FDCWD, &d.join("fifo"), 100, false),
            Err(ReadError::NotRegular)
        );
        assert_eq!(
            read_bounded(libc::AT_FDCWD, Path::new("/dev/zero"), 100, true),
            Err(ReadError::NotRegular)
        );
        symlink(&f, d.join("link")).unwrap();
        assert_eq!(
            read_bounded(libc::AT_FDCWD, &d.join("link"), 100, false),
            Err(ReadError::Os(Errno(libc::ELOOP)))
        );
        assert_eq!(
            read_bounded(libc::AT_FDCWD, &d.join("link"), 100, true).unwrap(),
            b"hello"
        );
        // A sparse file of 3 GiB is refused by its size, without reading it.
        let sparse = std::fs::File::create(d.join("sparse")).unwrap();
        sparse.set_len(3 << 30).unwrap();
        assert_eq!(
            read_bounded(libc::AT_FDCWD, &d.join("sparse"), 1 << 20, false),
            Err(ReadError::TooLarge(1 << 20))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn walks_create_and_follow_only_trusted_links() {
        let d = tmp("walk");
        let me = Owner::me();
        let w = Walk {
            owner: me,
            create: Some(0o755),
        };
        w.open(&d.join("a/b/c")).unwrap();
        assert!(d.join("a/b/c").is_dir());
        // Our own link is followed (it can only mislead ourselves).
        symlink(d.join("a"), d.join("mine")).unwrap();
        w.open(&d.join("mine/b/x")).unwrap();
        assert!(d.join("a/b/x").is_dir());
        // A relative link and `..` resolve physically, as the kernel does.
        symlink("a/b", d.join("rel")).unwrap();
        w.open(&d.join("rel/../y")).unwrap();
        assert!(d.join("a/y").is_dir());
        // A link of someone else is refused (as root we can make one owned by 4242).
        if me.uid == 0 {
            let l = d.join("theirs");
            symlink("/etc", &l).unwrap();
            let c = cpath(&l).unwrap();
            unsafe { libc::lchown(c.as_ptr(), 4242, 4242) };
            let other = Walk {
                owner: Owner {
                    uid: 1000,
                    gid: None,
                },
                create: Some(0o755),
            };
            let e = other.open(&l.join("evil")).unwrap_err();
            assert_eq!(e.kind, WalkFailure::UntrustedLink(4242));
            assert!(e.to_string().contains("owned by uid 4242"), "{e}");
            assert!(!Path::new("/etc/evil").exists());
            // The user's own link into a root-only directory: root, acting for the user,
            // creates nothing there (it did, owned by the user).
            let root_only = d.join("root-only");
            std::fs::create_dir(&root_only).unwrap();
            let mine = d.join("users-link");
            symlink(&root_only, &mine).unwrap();
            let c = cpath(&mine).unwrap();
            unsafe { libc::lchown(c.as_ptr(), 1000, 1000) };
            let user = Walk {
                owner: Owner {
                    uid: 1000,
                    gid: Some(1000),
                },
                create: Some(0o755),
            };
            let e = user.open(&mine.join("out")).unwrap_err();
            assert_eq!(e.kind, WalkFailure::Os(Errno(libc::EACCES)), "{e}");
            assert!(!root_only.join("out").exists());
            // Where the user may create, what is made is theirs.
            let open = d.join("open");
            std::fs::create_dir(&open).unwrap();
            std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
            user.open(&open.join("a/b")).unwrap();
            use std::os::unix::fs::MetadataExt;
            let st = std::fs::metadata(open.join("a/b")).unwrap();
            assert_eq!((st.uid(), st.gid()), (1000, 1000));
            // And root is root again.
            assert_eq!(unsafe { libc::setfsuid(u32::MAX) }, 0);
        }
        // A file in the way is not a directory.
        std::fs::write(d.join("file"), b"").unwrap();
        let e = w.open(&d.join("file/x")).unwrap_err();
        assert_eq!(e.kind, WalkFailure::NotADirectory);
        let missing = Walk {
            owner: me,
            create: None,
        };
        assert_eq!(
            missing.open(&d.join("nope/x")).unwrap_err().kind,
            WalkFailure::Missing
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
