//! Steps cannot write records by other paths: the init is non-dumpable (so a step running as the
//! same uid cannot open /proc/<init>/fd/1) and leaks no fd of its own into steps.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;

const NOBODY: u32 = 65534;

/// Makes `c` start as uid and gid [`NOBODY`] with no supplementary groups.
fn drop_to_nobody(c: &mut std::process::Command) {
    unsafe {
        c.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The init runs as an unprivileged uid, and so does its step: same uid, so only the init's
/// non-dumpable flag keeps the step out of /proc/<init>/fd.
#[test]
fn a_step_as_the_same_uid_cannot_reach_the_inits_stdout() {
    let f = Fixture::new_shared("nodump");
    let spec = json!({"version": 1, "steps": [
        {"shell": r#"echo $PPID > "$D/ppid"
stat -c %u /proc/$PPID/status > "$D/owner"
id -u > "$D/uid"
if printf '\036{"v":1,"t":"done","status":"passed","ms":0,"last":true}\n' > /proc/$PPID/fd/1; then
  echo wrote > "$D/forge"
else
  echo denied > "$D/forge"
fi
if ls /proc/$PPID/fd >/dev/null 2>&1; then echo listed > "$D/ls"; else echo denied > "$D/ls"; fi"#},
        {"shell": "exit 1"},
    ]});
    let mut c = f.spec_cmd(&spec, &[]);
    drop_to_nobody(&mut c);
    let r = Running::spawn(&mut c);
    let init_pid = r.pid();
    let run = finish_spec(r, LIMIT);
    run.assert_well_formed();
    assert_eq!(
        run.briefs(),
        vec![
            "start 1 #1",
            "end 1 passed code=0 #1",
            "start 2 #1",
            "end 2 failed code=1 #1",
            "done failed last=true"
        ],
        "stderr: {}",
        run.raw.stderr_str()
    );
    run.assert_code(1);
    let line = |file: &str| read_lines(&f.dir.join(file)).join("");
    assert_eq!(line("uid"), NOBODY.to_string(), "the step runs as nobody");
    assert_eq!(
        line("ppid"),
        init_pid.to_string(),
        "the step's parent is the init"
    );
    assert_eq!(
        line("owner"),
        "0",
        "/proc/<init>/status of a non-dumpable process is owned by root"
    );
    assert_eq!(line("forge"), "denied", "the step opened the init's stdout");
    assert_eq!(line("ls"), "denied", "the step listed the init's fds");
}

/// Also checked from outside: the init running as nobody has its /proc entry owned by root, i.e.
/// it made itself non-dumpable (in wrap mode as well).
#[test]
fn the_init_is_non_dumpable_in_wrap_mode() {
    let f = Fixture::new_shared("nodump-wrap");
    let mut c = f.init_cmd(["--", "sh", "-c", r#"touch "$D/ready"; exec sleep 1000"#]);
    drop_to_nobody(&mut c);
    let r = Running::spawn(&mut c);
    f.await_ready();
    let meta = std::fs::metadata(format!("/proc/{}/status", r.pid())).unwrap();
    let uid_line = std::fs::read_to_string(format!("/proc/{}/status", r.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    r.signal(libc::SIGTERM);
    let out = r.finish(LIMIT);
    assert!(uid_line.contains(&NOBODY.to_string()), "{uid_line}");
    assert_eq!(
        meta.uid(),
        0,
        "/proc/<init>/status owner: the init is dumpable"
    );
    out.assert_code(128 + libc::SIGTERM);
}

#[test]
fn steps_get_only_fds_0_1_2_and_not_the_inits_stdout() {
    let f = Fixture::new("fds");
    let r = f.run_steps(json!([
            {"shell": r#"ls /proc/$$/fd
readlink /proc/$$/fd/1 > "$D/step1"; readlink /proc/$$/fd/2 > "$D/step2"
readlink /proc/$PPID/fd/1 > "$D/init1"; readlink /proc/$PPID/fd/2 > "$D/init2""#},
            {"command": ["ls", "/proc/self/fd"]},
    ]));
    r.assert_code(0);
    // The first step lists its shell's fds (no pipeline: the shell would hold the pipe's fds),
    // the second its own: 0 1 2, plus the one `ls` opened for the directory.
    assert_eq!(
        r.out_str(),
        "0\n1\n2\n0\n1\n2\n3\n",
        "open fds of the steps"
    );
    let l = |file: &str| read_lines(&f.dir.join(file)).join("");
    assert_ne!(l("step1"), "", "readlink");
    assert_ne!(
        l("step1"),
        l("init1"),
        "the step writes to the init's own stdout"
    );
    assert_ne!(
        l("step2"),
        l("init2"),
        "the step writes to the init's own stderr"
    );
}
