//! `init setup DIR [--spec SPEC]`: prepare the shared volume for the containers that follow.
//!
//! - `DIR/init`: a copy of the running binary, mode 0555.
//! - `DIR/sh`: a static shell (busybox) when this image has one, so `shell` steps work in images
//!   without any shell (scratch, distroless).
//! - `DIR/spec.json`: a copy of SPEC (mode 0444), when given.
//! - `DIR/state`, `DIR/workspace`: writable by every uid/gid the spec's containers run as, and by
//!   nobody else (see [`Access`]); `DIR/home/<uid>`: a private HOME per known uid.
//!
//! Every file is written to a fresh temporary name in DIR (O_CREAT|O_EXCL|O_NOFOLLOW: never
//! through a planted symlink) and renamed into place, so a reader sees the old file or the whole
//! new one. Directories are opened with O_NOFOLLOW|O_DIRECTORY and changed through their fd.

use crate::fs::{Owner, Walk, WalkError, WalkFailure};
use crate::run::{load_spec, EXIT_BAD_SPEC, EXIT_STATE};
use crate::sys::{self, Errno};
use crate::wrap::usage_error;
use std::collections::BTreeSet;
use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use stepinit_protocol::Spec;

/// Who must be able to write the shared directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Only root containers: root-owned 0755 (root needs no permission bits).
    RootOnly,
    /// One uid (and its gid): owned by it, 0700.
    Owner { uid: u32, gid: u32 },
    /// All writers share one gid: owned by `uid:gid`, 2770 (setgid: new files keep the group).
    Group { uid: u32, gid: u32 },
    /// Several uids/gids without a common group: 0770 plus POSIX ACL entries (access and
    /// default) for each uid and gid.
    Acl {
        uid: u32,
        gid: u32,
        users: Vec<u32>,
        groups: Vec<u32>,
    },
    /// Some container's uid and gid are both unknown before it starts (random UIDs): the
    /// documented fallback, 1777 (world-writable, sticky: nobody deletes others' files).
    Open,
}

/// Derives the access model from the uids/gids of the spec's containers and of its steps that
/// run as their own user (no spec: unknown, so [`Access::Open`]).
pub fn plan(spec: Option<&Spec>) -> Access {
    let Some(spec) = spec else {
        return Access::Open;
    };
    let containers: Vec<_> = if spec.containers.is_empty() {
        vec![Default::default()]
    } else {
        spec.containers.clone()
    };
    let mut users = BTreeSet::new();
    let mut user_gids = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for c in &containers {
        match (c.run_as_user, c.run_as_group) {
            (Some(0), _) => {} // root bypasses permission bits
            (Some(u), g) => {
                users.insert(u);
                user_gids.insert(g.unwrap_or(u));
            }
            (None, Some(g)) => {
                groups.insert(g);
            }
            (None, None) => return Access::Open,
        }
    }
    // Leaves may also run as a uid/gid of their own (step runAsUser/runAsGroup): they use the
    // same directories as their container.
    let mut todo: Vec<&stepinit_protocol::Step> = spec.steps.iter().collect();
    while let Some(s) = todo.pop() {
        todo.extend(s.steps.iter());
        match (s.run_as_user, s.run_as_group) {
            (Some(0), _) | (None, None) => {}
            (Some(u), g) => {
                users.insert(u);
                user_gids.insert(g.unwrap_or(u));
            }
            (None, Some(g)) => {
                groups.insert(g);
            }
        }
    }
    let first_user = users.iter().next().copied();
    match (users.len(), groups.len()) {
        (0, 0) => Access::RootOnly,
        (1, 0) => Access::Owner {
            uid: first_user.unwrap_or(0),
            gid: *user_gids.iter().next().unwrap_or(&0),
        },
        _ => {
            let all_gids: BTreeSet<u32> = user_gids.union(&groups).copied().collect();
            if all_gids.len() == 1 {
                Access::Group {
                    uid: first_user.unwrap_or(0),
                    gid: *all_gids.iter().next().unwrap_or(&0),
                }
            } else {
                let uid = first_user.unwrap_or(0);
                let gid = *all_gids.iter().next().unwrap_or(&0);
                // Named entries for the owner too: a subdirectory root creates has another owner.
                Access::Acl {
                    uid,
                    gid,
                    users: users.into_iter().collect(),
                    groups: all_gids.into_iter().collect(),
                }
            }
        }
    }
}

/// The POSIX ACL xattr value (`system.posix_acl_access`/`_default`) for `mode` plus rwx entries.
pub fn acl_xattr(mode: u32, users: &[u32], groups: &[u32]) -> Vec<u8> {
    const UNDEFINED: u32 = u32::MAX;
    let mut v = 2u32.to_le_bytes().to_vec();
    let mut entry = |tag: u16, perm: u32, id: u32| {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&(perm as u16 & 7).to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    };
    // Entries sorted by tag, then id, as the kernel requires.
    entry(0x01, mode >> 6, UNDEFINED);
    for &u in users {
        entry(0x02, 7, u);
    }
    entry(0x04, mode >> 3, UNDEFINED);
    for &g in groups {
        entry(0x08, 7, g);
    }
    entry(0x10, 7, UNDEFINED);
    entry(0x20, mode, UNDEFINED);
    v
}

struct Dir {
    fd: libc::c_int,
    path: PathBuf,
}

impl Drop for Dir {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Opens a directory without following a symlink at its last component.
fn open_dir(at: libc::c_int, name: &Path) -> Result<libc::c_int, Errno> {
    let c = CString::new(name.as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: valid path.
    sys::check(unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

impl Dir {
    /// Creates (if missing) and opens `name` inside `self`, refusing a symlink.
    fn subdir(&self, name: &str) -> Result<Dir, String> {
        let c = cstr(name);
        // SAFETY: valid path; EEXIST is fine, open_dir then checks what exists.
        unsafe { libc::mkdirat(self.fd, c.as_ptr(), 0o700) };
        let path = self.path.join(name);
        let fd = open_dir(self.fd, Path::new(name))
            .map_err(|e| format!("{}: cannot open directory: {e}", path.display()))?;
        Ok(Dir { fd, path })
    }

    /// Writes `data` as `name` (mode `mode`) via a temporary file and a rename.
    fn write_file(&self, name: &str, mode: u32, mut src: impl std::io::Read) -> Result<(), String> {
        let tmp = format!(".{name}.tmp.{}", sys::getpid());
        let ctmp = cstr(&tmp);
        let path = self.path.join(name);
        let fail = |what: &str, e: Errno| format!("{}: {what}: {e}", path.display());
        // SAFETY: valid path; O_EXCL|O_NOFOLLOW never reuses or follows anything that exists.
        let create = || {
            sys::check(unsafe {
                libc::openat(
                    self.fd,
                    ctmp.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600,
                )
            })
        };
        let fd = match create() {
            // Left by a setup killed mid-copy (in a container we are always PID 1, so a restart
            // meets the same name), or planted: unlink removes the name, never what it links to.
            Err(Errno(libc::EEXIST)) => {
                // SAFETY: valid path relative to our directory fd.
                unsafe { libc::unlinkat(self.fd, ctmp.as_ptr(), 0) };
                create()
            }
            r => r,
        }
        .map_err(|e| fail("cannot create temporary file", e))?;
        let mut buf = vec![0u8; 64 * 1024];
        let result = (|| {
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| format!("{}: cannot read source: {e}", path.display()))?;
                if n == 0 {
                    break;
                }
                sys::write_all(fd, &buf[..n]).map_err(|e| fail("cannot write", e))?;
            }
            // SAFETY: fd is ours.
            sys::check(unsafe { libc::fchmod(fd, mode) }).map_err(|e| fail("cannot chmod", e))?;
            let cname = cstr(name);
            // SAFETY: valid paths relative to our directory fd.
            sys::check(unsafe { libc::renameat(self.fd, ctmp.as_ptr(), self.fd, cname.as_ptr()) })
                .map_err(|e| fail("cannot rename into place", e))?;
            Ok(())
        })();
        sys::close(fd);
        if result.is_err() {
            // SAFETY: removing our own temporary name.
            unsafe { libc::unlinkat(self.fd, ctmp.as_ptr(), 0) };
        }
        result
    }

    /// Applies an access model to this directory. Err only for hard failures.
    fn apply(&self, a: &Access) -> Result<(), String> {
        let fail = |what: &str, e: Errno| format!("{}: {what}: {e}", self.path.display());
        let (uid, gid, mode) = match a {
            Access::RootOnly => (0, 0, 0o755),
            Access::Owner { uid, gid } => (*uid, *gid, 0o700),
            Access::Group { uid, gid } => (*uid, *gid, 0o2770),
            Access::Acl { uid, gid, .. } => (*uid, *gid, 0o2770),
            Access::Open => (0, 0, 0o1777),
        };
        // SAFETY: fd is ours.
        unsafe {
            if let Err(e) = sys::check(libc::fchown(self.fd, uid, gid)) {
                if e.0 == libc::EPERM && *a != Access::Open {
                    // A setup container that is not root cannot give directories away: the
                    // documented fallback, said out loud.
                    sys::eprint_line(&format!(
                        "{}: cannot chown to {uid}:{gid} ({e}): falling back to mode 1777",
                        self.path.display()
                    ));
                    return self.apply(&Access::Open);
                }
                if *a != Access::Open {
                    return Err(fail("cannot chown", e));
                }
            }
            sys::check(libc::fchmod(self.fd, mode)).map_err(|e| fail("cannot chmod", e))?;
        }
        // Default ACLs make what anyone (root, say) creates inside writable by the declared
        // users too, which mode bits alone cannot (umask, other owners).
        let (users, groups, required): (&[u32], &[u32], bool) = match a {
            Access::Owner { uid, .. } => (std::slice::from_ref(uid), &[], false),
            // Group: USER_OBJ/GROUP_OBJ rwx (mode 0770 below), files keep the group (setgid).
            Access::Group { .. } => (&[], &[], false),
            Access::Acl { users, groups, .. } => (users, groups, true),
            Access::RootOnly | Access::Open => return Ok(()),
        };
        let v = acl_xattr(if users.len() == 1 { 0o700 } else { 0o770 }, users, groups);
        let names: &[&CStr] = if required {
            &[c"system.posix_acl_access", c"system.posix_acl_default"]
        } else {
            &[c"system.posix_acl_default"]
        };
        for name in names {
            // SAFETY: valid name and buffer.
            let r =
                unsafe { libc::fsetxattr(self.fd, name.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            if r != 0 && required {
                let e = Errno::last();
                // No ACLs on this file system: the documented fallback, said out loud.
                sys::eprint_line(&format!(
                    "{}: no POSIX ACLs ({e}): falling back to mode 1777",
                    self.path.display()
                ));
                return self.apply(&Access::Open);
            }
        }
        Ok(())
    }
}

/// Whether an ELF file needs no program interpreter (statically linked).
pub fn is_static_elf(head: &[u8]) -> bool {
    // The offsets come from the file: checked arithmetic, and `get` for every read.
    let bytes = |o: usize, n: usize| head.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| bytes(o, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| bytes(o, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| bytes(o, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    // 64-bit little-endian ELF only (x86_64, aarch64).
    if !head.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    for i in 0..phnum as usize {
        let off = usize::try_from(phoff)
            .ok()
            .and_then(|p| p.checked_add(i * phentsize as usize));
        match off.and_then(u32_at) {
            Some(3) => return false, // PT_INTERP: dynamically linked
            Some(_) => {}
            None => return false, // headers beyond what we read: do not guess
        }
    }
    true
}

/// A static shell this image carries: busybox or sh beside the init, else in /bin.
fn find_static_shell(exe_dir: Option<&Path>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = exe_dir {
        candidates.push(d.join("busybox"));
        candidates.push(d.join("sh"));
    }
    for p in ["/bin/busybox", "/usr/bin/busybox", "/bin/sh"] {
        candidates.push(PathBuf::from(p));
    }
    candidates.into_iter().find(|p| {
        let mut head = vec![0u8; 4096];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .is_ok_and(|n| is_static_elf(&head[..n]))
    })
}

pub fn run(args: &[OsString]) -> i32 {
    let mut dir = None;
    let mut spec_path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--spec") => match it.next() {
                Some(v) => spec_path = Some(PathBuf::from(v)),
                None => return usage_error("--spec needs a file"),
            },
            Some(s) if s.starts_with("--spec=") => spec_path = Some(PathBuf::from(&s[7..])),
            Some(s) if s.starts_with('-') => return usage_error(&format!("unknown flag {s:?}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return usage_error(&format!("unexpected argument {a:?}")),
        }
    }
    let Some(dir) = dir else {
        return usage_error("init setup needs a DIR");
    };
    let spec = match &spec_path {
        Some(p) => match load_spec(p) {
            Ok(s) => Some(s),
            Err(e) => {
                sys::eprint_line(&e);
                return EXIT_BAD_SPEC;
            }
        },
        None => None,
    };
    match setup(&dir, spec_path.as_deref(), spec.as_ref()) {
        Ok(()) => 0,
        Err(e) => {
            sys::eprint_line(&e);
            EXIT_STATE
        }
    }
}

fn setup(dir: &Path, spec_path: Option<&Path>, spec: Option<&Spec>) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create directory: {e}", dir.display()))?;
    let fd = open_dir(libc::AT_FDCWD, dir)
        .map_err(|e| format!("{}: cannot open directory: {e}", dir.display()))?;
    let root = Dir {
        fd,
        path: dir.to_path_buf(),
    };
    // The volume's root is root's, 0755: it holds the init every later container runs (with
    // the state key in its environment) and the shell, so no step may replace them; the
    // directories below carry the shared permissions. An emptyDir comes 0777 (2777 with
    // fsGroup): a setup that is not root cannot fix that, and says so (mount the volume
    // read-only in the step containers, as stepctl does).
    // SAFETY: our own directory fd.
    let fixed = unsafe { libc::fchown(root.fd, 0, 0) == 0 && libc::fchmod(root.fd, 0o755) == 0 };
    if !fixed {
        let open = crate::fs::fstat(root.fd).is_ok_and(|st| st.st_mode & 0o022 != 0);
        if open {
            sys::eprint_line(&format!(
                "{}: writable by other users, and setup cannot change that ({}): a step could replace the init; mount it read-only in the step containers",
                dir.display(),
                Errno::last()
            ));
        }
    }
    let exe = std::fs::File::open("/proc/self/exe")
        .map_err(|e| format!("/proc/self/exe: cannot open the running init: {e}"))?;
    root.write_file("init", 0o555, exe)?;
    let exe_dir = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(sh) = find_static_shell(exe_dir.as_deref()) {
        let f = std::fs::File::open(&sh).map_err(|e| format!("{}: {e}", sh.display()))?;
        root.write_file("sh", 0o555, f)?;
    }
    if let Some(p) = spec_path {
        let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        root.write_file("spec.json", 0o444, f)?;
    }
    let access = plan(spec);
    for name in ["state", "workspace"] {
        root.subdir(name)?.apply(&access)?;
    }
    // Each container's working directory that is a volume mounted here too (the workspace):
    // shared like the state. Paths that do not exist here belong to an image: left alone.
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        if let Some(w) = c.working_dir.as_deref() {
            prepare_working_dir(Path::new(w), &access)?;
        }
    }
    let home = root.subdir("home")?;
    match &access {
        // Known uids: a private HOME each, made now; the base is traversable, not writable.
        a if *a != Access::Open && !has_uid_less(spec) => {
            home.apply(&Access::RootOnly)?;
            // SAFETY: fd is ours.
            unsafe { libc::fchmod(home.fd, 0o711) };
            for (uid, gid) in known_users(spec) {
                home.subdir(&uid.to_string())?
                    .apply(&Access::Owner { uid, gid })?;
            }
        }
        // Otherwise the init creates HOME/<uid> (0700) at run time in a base shared like state.
        _ => {
            home.apply(&access)?;
            for (uid, gid) in known_users(spec) {
                home.subdir(&uid.to_string())?
                    .apply(&Access::Owner { uid, gid })?;
            }
        }
    }
    Ok(())
}

/// A container's working directory that setup sees (a volume mounted here too) gets the shared
/// access. Its parents are walked without following a symlink that root did not make (a link
/// planted in the volume by a step of an earlier run of the pod would have had setup create and
/// chown a directory outside it); a path that does not exist here belongs to an image: left
/// alone.
fn prepare_working_dir(w: &Path, access: &Access) -> Result<(), String> {
    if !w.is_absolute()
        || ["/", "/proc", "/sys", "/dev", "/etc"]
            .iter()
            .any(|x| w == Path::new(x))
    {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (w.parent(), w.file_name()) else {
        return Ok(());
    };
    let walk = Walk {
        owner: Owner { uid: 0, gid: None },
        create: None,
    };
    let parent_fd = match walk.open(parent) {
        Ok(fd) => fd,
        Err(WalkError {
            kind: WalkFailure::Missing | WalkFailure::NotADirectory,
            ..
        }) => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", w.display())),
    };
    let c = CString::new(name.as_bytes()).map_err(|_| format!("{}: a NUL byte", w.display()))?;
    // A directory right under / that is not there is no volume of ours: not made up.
    if parent != Path::new("/") {
        // SAFETY: valid name relative to a verified directory; EEXIST is checked by the open.
        unsafe { libc::mkdirat(parent_fd.0, c.as_ptr(), 0o700) };
    }
    let fd = match open_dir(parent_fd.0, Path::new(name)) {
        Ok(fd) => fd,
        Err(Errno(libc::ENOENT)) => return Ok(()),
        Err(e) => return Err(format!("{}: cannot open: {e}", w.display())),
    };
    Dir {
        fd,
        path: w.to_path_buf(),
    }
    .apply(access)
}

/// Whether some container has no uid (only a gid, or nothing).
fn has_uid_less(spec: Option<&Spec>) -> bool {
    spec.is_none_or(|s| {
        s.containers.is_empty() || s.containers.iter().any(|c| c.run_as_user.is_none())
    })
}

fn known_users(spec: Option<&Spec>) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = spec
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.run_as_user.map(|u| (u, c.run_as_group.unwrap_or(u))))
                .filter(|&(u, _)| u != 0)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup_by_key(|x| x.0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepinit_protocol::spec::Container;

    fn spec_with(c: &[(Option<u32>, Option<u32>)]) -> Spec {
        Spec {
            version: 1,
            shell: None,
            env: vec![],
            containers: c
                .iter()
                .map(|&(u, g)| Container {
                    run_as_user: u,
                    run_as_group: g,
                    ..Default::default()
                })
                .collect(),
            steps: vec![],
        }
    }

    #[test]
    fn access_is_the_narrowest_that_serves_every_container() {
        let p = |c: &[(Option<u32>, Option<u32>)]| plan(Some(&spec_with(c)));
        assert_eq!(p(&[(Some(0), None)]), Access::RootOnly);
        assert_eq!(
            p(&[(Some(0), None), (Some(1001), Some(1001))]),
            Access::Owner {
                uid: 1001,
                gid: 1001
            }
        );
        assert_eq!(
            p(&[(Some(1001), Some(5)), (Some(1002), Some(5))]),
            Access::Group { uid: 1001, gid: 5 }
        );
        assert_eq!(
            p(&[
                (Some(1001), Some(1001)),
                (Some(1002), Some(1002)),
                (None, Some(7))
            ]),
            Access::Acl {
                uid: 1001,
                gid: 7,
                users: vec![1001, 1002],
                groups: vec![7, 1001, 1002]
            }
        );
        assert_eq!(p(&[(Some(1001), None), (None, None)]), Access::Open);
        assert_eq!(plan(None), Access::Open);
    }

    #[test]
    fn steps_running_as_their_own_user_are_served_too() {
        let mut spec = spec_with(&[(Some(0), Some(0)), (Some(1001), Some(1001))]);
        let leaf = |u: Option<u32>, g: Option<u32>| stepinit_protocol::Step {
            command: vec!["true".into()],
            run_as_user: u,
            run_as_group: g,
            ..Default::default()
        };
        spec.steps = vec![stepinit_protocol::Step {
            steps: vec![
                leaf(Some(2000), Some(2000)),
                leaf(Some(0), None),
                leaf(None, None),
            ],
            ..Default::default()
        }];
        assert_eq!(
            plan(Some(&spec)),
            Access::Acl {
                uid: 1001,
                gid: 1001,
                users: vec![1001, 2000],
                groups: vec![1001, 2000]
            }
        );
    }

    #[test]
    fn acl_entries_are_sorted_and_sized() {
        let v = acl_xattr(0o770, &[5, 6], &[9]);
        assert_eq!(v.len(), 4 + 8 * 7);
        assert_eq!(&v[..4], &2u32.to_le_bytes());
        let tags: Vec<u16> = v[4..]
            .chunks(8)
            .map(|e| u16::from_le_bytes([e[0], e[1]]))
            .collect();
        assert_eq!(tags, [1, 2, 2, 4, 8, 0x10, 0x20]);
    }

    #[test]
    fn static_elves_are_told_from_dynamic_ones() {
        let head = |p: &str| {
            let mut v = std::fs::read(p).unwrap();
            v.truncate(4096);
            v
        };
        assert!(
            !is_static_elf(&head("/bin/true")),
            "/bin/true is dynamic here"
        );
        if Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(&head("/bin/busybox")));
        }
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(b"\x7fELF\x02\x01"));
        // Program headers claimed at the end of the address space: no overflow, no guess.
        let mut evil = vec![0u8; 64];
        evil[..6].copy_from_slice(b"\x7fELF\x02\x01");
        evil[0x20..0x28].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        evil[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        evil[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        assert!(!is_static_elf(&evil));
    }

    #[test]
    fn a_temporary_file_left_by_a_killed_setup_is_replaced_not_followed() {
        // In a container the init is always PID 1: a setup killed mid-copy and restarted meets
        // its own temporary name again (or one planted as a symlink).
        let base = std::env::temp_dir().join(format!("stepinit-tmpfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let tmp = |name: &str| base.join(format!(".{name}.tmp.{}", sys::getpid()));
        std::fs::write(tmp("a"), b"half a copy").unwrap();
        std::os::unix::fs::symlink(&victim, tmp("b")).unwrap();
        let dir = Dir {
            fd: open_dir(libc::AT_FDCWD, &base).unwrap(),
            path: base.clone(),
        };
        let a = dir.write_file("a", 0o444, &b"new a"[..]);
        let b = dir.write_file("b", 0o444, &b"new b"[..]);
        let read = |n: &str| std::fs::read(base.join(n)).unwrap_or_default();
        let got = (a, b, read("a"), read("b"), read("victim"));
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(
            got,
            (
                Ok(()),
                Ok(()),
                b"new a".to_vec(),
                b"new b".to_vec(),
                b"keep".to_vec()
            )
        );
    }

    /// Runs `sh -c script` as uid:gid (we are root in tests that use it); true if it exits 0.
    fn as_user(uid: u32, gid: u32, script: &str) -> bool {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .uid(uid)
            .gid(gid)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A fresh directory for a test that chowns, or None (said on stderr) when we are not root.
    /// A scratch directory for a test that chowns: it needs root, and fails (never skips)
    /// without.
    fn root_scratch_dir(name: &str) -> Option<PathBuf> {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test chowns files: run it as root"
        );
        Some(crate::scratch_dir(name))
    }

    #[test]
    fn setup_copies_atomically_and_grants_exactly_the_declared_users() {
        let Some(base) = root_scratch_dir("setup") else {
            return;
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A symlink planted where the init goes is replaced, not written through.
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, base.join("init")).unwrap();
        let spec = spec_with(&[
            (Some(0), None),
            (Some(4001), Some(4001)),
            (Some(4002), Some(4002)),
        ]);
        setup(&base, None, Some(&spec)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(base.join("init")).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            0o555
        );
        let state = base.join("state");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&state).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o7,
            0,
            "nothing world-accessible when uids are known"
        );
        for uid in [4001, 4002] {
            assert!(
                as_user(uid, uid, &format!("echo x > {}/f{uid}", state.display())),
                "uid {uid} writes the state dir"
            );
            let home = base.join("home").join(uid.to_string());
            assert!(as_user(uid, uid, &format!("touch {}/h", home.display())));
        }
        // What root creates inside stays writable by the declared users (default ACLs).
        std::fs::create_dir(state.join("by-root")).unwrap();
        for uid in [4001, 4002] {
            assert!(as_user(
                uid,
                uid,
                &format!("touch {}/by-root/{uid}", state.display())
            ));
        }
        assert!(
            !as_user(4003, 4003, &format!("touch {}/intruder", state.display())),
            "an undeclared uid cannot write"
        );
        assert!(
            !as_user(4002, 4002, &format!("touch {}/home/4001/x", base.display())),
            "homes are private"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_single_user_owns_the_workspace_and_what_root_makes_in_it() {
        let Some(base) = root_scratch_dir("setup1") else {
            return;
        };
        let ws = base.join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let mut spec = spec_with(&[(Some(0), None), (Some(4011), Some(4011))]);
        spec.containers[1].working_dir = Some(ws.to_string_lossy().into_owned());
        setup(&base.join("shared"), None, Some(&spec)).unwrap();
        std::fs::create_dir(ws.join("data")).unwrap();
        std::fs::write(ws.join("data/root.txt"), b"x").unwrap();
        let ok = as_user(
            4011,
            4011,
            &format!(
                "echo y >> {0}/data/root.txt && touch {0}/data/u",
                ws.display()
            ),
        );
        std::fs::remove_dir_all(&base).unwrap();
        assert!(ok, "uid 4011 writes where root wrote");
    }

    /// A working directory below a symlink that a user (not root) planted is refused, not
    /// created and chowned wherever the link points; one below root's own link is served.
    #[test]
    fn working_dirs_below_a_planted_symlink_are_refused() {
        let Some(base) = root_scratch_dir("setuplink") else {
            return;
        };
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let vol = base.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let planted = vol.join("ws");
        std::os::unix::fs::symlink(&outside, &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(1000), Some(1000)).unwrap();
        let mut spec = spec_with(&[(Some(1000), Some(1000))]);
        spec.containers[0].working_dir = Some(planted.join("sub").to_string_lossy().into_owned());
        let e = setup(&base.join("shared"), None, Some(&spec)).unwrap_err();
        assert!(e.contains("a symlink owned by uid 1000"), "{e}");
        assert!(
            !outside.join("sub").exists(),
            "nothing made through the link"
        );
        // root's own link is followed.
        std::fs::remove_file(&planted).unwrap();
        std::os::unix::fs::symlink(&outside, &planted).unwrap();
        setup(&base.join("shared"), None, Some(&spec)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(outside.join("sub")).unwrap().uid(), 1000);
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A working directory right under / (the pods' `/data`, a volume) gets the shared access;
    /// one there that does not exist is no volume: left alone.
    #[test]
    fn a_volume_right_under_the_root_is_served() {
        let Some(base) = root_scratch_dir("setuproot") else {
            return;
        };
        let vol = PathBuf::from(format!("/stepinit-setup-test-{}", std::process::id()));
        std::fs::create_dir_all(&vol).unwrap();
        let missing = PathBuf::from(format!("/stepinit-setup-missing-{}", std::process::id()));
        let mut spec = spec_with(&[(Some(4021), Some(4021)), (Some(0), Some(0))]);
        spec.containers[0].working_dir = Some(vol.to_string_lossy().into_owned());
        spec.containers[1].working_dir = Some(missing.to_string_lossy().into_owned());
        let r = setup(&base.join("shared"), None, Some(&spec));
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(&vol).map(|m| m.uid());
        let _ = std::fs::remove_dir_all(&vol);
        std::fs::remove_dir_all(&base).unwrap();
        r.unwrap();
        assert_eq!(uid.unwrap(), 4021);
        assert!(!missing.exists());
    }

    /// An emptyDir comes 0777: setup makes the volume's root root's own 0755, so no step can
    /// replace the init that later containers run with the state key (a step did, and the key
    /// and the result were its).
    #[test]
    fn the_volume_root_becomes_roots_own() {
        let Some(base) = root_scratch_dir("setupvol") else {
            return;
        };
        let vol = base.join("vol");
        std::fs::create_dir(&vol).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&vol, Some(1000), Some(1000)).unwrap();
        setup(&vol, None, None).unwrap();
        let st = std::fs::metadata(&vol).unwrap();
        assert_eq!((st.uid(), st.gid(), st.mode() & 0o7777), (0, 0, 0o755));
        let ok = as_user(
            1000,
            1000,
            &format!("mv {0}/init {0}/x || cp /bin/true {0}/init", vol.display()),
        );
        assert!(!ok, "uid 1000 replaced the init");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
