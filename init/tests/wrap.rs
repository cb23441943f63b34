//! Wrap mode (`init [--timeout DUR] [--grace DUR] [--report] -- CMD [ARG...]`): exit codes,
//! usage errors, byte-exact pass-through, what the child inherits.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn child_exit_code_passes_through() {
    let m = Marker::new("codes");
    for code in [0, 1, 42, 255] {
        let out = run(["--", "sh", "-c", &format!("exit {code}")], &m);
        out.assert_code(code);
    }
    let out = run(["--", "/bin/true"], &m);
    assert_eq!(out.code, 0);
    let out = run(["--", "false"], &m);
    assert_eq!(
        out.code,
        1,
        "PATH lookup of `false`; stderr: {}",
        out.stderr_str()
    );
}

#[test]
fn child_killed_by_signal_gives_128_plus_n() {
    let m = Marker::new("sigdeath");
    for sig in [
        libc::SIGKILL,
        libc::SIGSEGV,
        libc::SIGTERM,
        libc::SIGABRT,
        libc::SIGUSR1,
    ] {
        let out = run(["--", "sh", "-c", &format!("kill -{sig} $$")], &m);
        assert_eq!(
            out.code,
            128 + sig,
            "child killed itself with {} ({sig}); stderr: {}",
            signame(sig),
            out.stderr_str()
        );
    }
}

#[test]
fn missing_command_is_127() {
    let m = Marker::new("missing");
    let out = run(["--", "stepinit-no-such-program-xyz"], &m);
    out.assert_code(127);
    assert!(
        out.stderr_str().contains("stepinit-no-such-program-xyz"),
        "stderr should name the program: {:?}",
        out.stderr_str()
    );
    let out = run(["--", "/nonexistent/dir/prog"], &m);
    out.assert_code(127);
}

#[test]
fn non_executable_command_is_126() {
    let d = TempDir::new("noexec");
    let f = d.join("script");
    std::fs::write(&f, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = Marker::new("noexec");
    let out = run([std::ffi::OsStr::new("--"), f.as_os_str()], &m);
    out.assert_code(126);
    // A directory is not executable either.
    let out = run([std::ffi::OsStr::new("--"), d.path().as_os_str()], &m);
    out.assert_code(126);
}

#[test]
fn timeout_gives_124_and_stops_the_child() {
    let m = Marker::new("timeout");
    // (what, init args, least and most the run may take)
    let cases: [(&str, &[&str], Duration, Duration); 3] = [
        (
            "a child that obeys TERM",
            &["--timeout", "300ms", "--", "sleep", "1000"],
            Duration::from_millis(250),
            Duration::from_secs(20),
        ),
        (
            // Still 124 when only killed after the grace period.
            "a child that ignores TERM",
            &[
                "--timeout",
                "1",
                "--grace",
                "500ms",
                "--",
                "sh",
                "-c",
                "trap '' TERM; sleep 1000",
            ],
            Duration::from_millis(1400),
            Duration::from_secs(30),
        ),
        (
            // Still 124 when the child handles TERM by exiting 0.
            "a child that exits 0 on TERM",
            &[
                "--timeout",
                "300ms",
                "--",
                "sh",
                "-c",
                "trap 'exit 0' TERM; while :; do sleep 0.05; done",
            ],
            Duration::from_millis(250),
            Duration::from_secs(20),
        ),
    ];
    for (what, args, least, most) in cases {
        let out = run(args, &m);
        assert_eq!(out.code, 124, "{what}: stderr: {}", out.stderr_str());
        assert!(
            (least..most).contains(&out.elapsed),
            "{what}: took {:?}, expected {least:?} to {most:?}",
            out.elapsed
        );
        assert!(m.pids().is_empty(), "{what}: survivors: {}", m.describe());
    }
}

#[test]
fn a_child_finishing_before_the_timeout_keeps_its_code() {
    let m = Marker::new("beforetimeout");
    let out = run(["--timeout", "2m", "--", "sh", "-c", "exit 3"], &m);
    out.assert_code(3);
    assert!(out.elapsed < Duration::from_secs(20));
}

#[test]
fn durations_accept_every_documented_unit() {
    let m = Marker::new("units");
    for d in ["500ms", "10s", "2m", "1h", "7"] {
        let out = run(["--timeout", d, "--grace", d, "--", "true"], &m);
        assert_eq!(out.code, 0, "DUR {d}: stderr: {}", out.stderr_str());
    }
}

fn assert_usage_error(args: &[&str], m: &Marker) {
    let out = run(args, m);
    assert_eq!(
        out.code,
        2,
        "init {args:?} should be a usage error (exit 2); stderr: {}",
        out.stderr_str()
    );
    assert!(
        out.stderr_str().to_lowercase().contains("usage"),
        "init {args:?}: usage expected on stderr, got {:?}",
        out.stderr_str()
    );
    assert!(out.stdout.is_empty(), "init {args:?} wrote to stdout");
}

#[test]
fn usage_errors_exit_2_with_usage_on_stderr() {
    let m = Marker::new("usage");
    let none: [&str; 0] = [];
    assert_usage_error(&none, &m);
    assert_usage_error(&["--bogus", "--", "true"], &m);
    assert_usage_error(&["--timeout", "abc", "--", "true"], &m);
    assert_usage_error(&["--timeout", "5x", "--", "true"], &m);
    assert_usage_error(&["--timeout", "-1", "--", "true"], &m);
    assert_usage_error(&["--grace", "", "--", "true"], &m);
    assert_usage_error(&["--grace"], &m);
    assert_usage_error(&["--"], &m);
    assert_usage_error(&["--timeout", "1s"], &m);
}

#[test]
fn without_report_stdout_and_stderr_are_the_childs_exact_bytes() {
    let m = Marker::new("exact");
    // Binary bytes, markers, forged records, no trailing newline.
    let out = run(
        [
            "--",
            "sh",
            "-c",
            r#"printf 'a\036b\000c\377\n\036{"v":1,"t":"done","status":"passed","ms":1,"last":true}\nend'; printf 'E\036\001rr' >&2"#,
        ],
        &m,
    );
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        b"a\x1eb\x00c\xff\n\x1e{\"v\":1,\"t\":\"done\",\"status\":\"passed\",\"ms\":1,\"last\":true}\nend"
    );
    assert_eq!(out.stderr, b"E\x1e\x01rr");

    let out = run(["--", "true"], &m);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn stdin_cwd_and_env_pass_through() {
    let d = TempDir::new("passthru");
    let m = Marker::new("passthru");
    let mut c = init_cmd(
        [
            "--",
            "sh",
            "-c",
            r#"read line; printf '%s|%s|%s' "$line" "$(pwd)" "$STEPINIT_FOO""#,
        ],
        &m,
    );
    c.current_dir(d.path())
        .env("STEPINIT_FOO", "bar baz")
        .stdin(Stdio::piped());
    let mut r = Running::spawn(&mut c);
    r.child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from stdin\n")
        .unwrap();
    let out = r.finish(LIMIT);
    out.assert_code(0);
    assert_eq!(
        out.stdout_str(),
        format!("hello from stdin|{}|bar baz", d.s())
    );
}

/// The init's caller may hand it a blocked signal mask and ignored signals; the child must still
/// start with an empty mask and default dispositions.
#[test]
fn child_gets_empty_signal_mask_and_default_dispositions() {
    fn dirty(c: &mut std::process::Command) {
        unsafe {
            c.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for s in [
                    libc::SIGUSR1,
                    libc::SIGUSR2,
                    libc::SIGTERM,
                    libc::SIGCHLD,
                    40,
                ] {
                    libc::sigaddset(&mut set, s);
                }
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                // Raw rt_sigaction: libc refuses its internal signals 32-34, a parent may not.
                #[repr(C)]
                struct KernelSigaction {
                    handler: usize,
                    flags: u64,
                    restorer: usize,
                    mask: u64,
                }
                let ign = KernelSigaction {
                    handler: libc::SIG_IGN,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                for s in [
                    libc::SIGHUP,
                    libc::SIGINT,
                    libc::SIGQUIT,
                    libc::SIGPIPE,
                    32,
                    33,
                    34,
                    40,
                ] {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        s,
                        &ign as *const KernelSigaction,
                        std::ptr::null_mut::<KernelSigaction>(),
                        8usize,
                    );
                }
                Ok(())
            });
        }
    }
    let fields = |s: &str| -> (String, String) {
        let get = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .unwrap_or_else(|| panic!("no {k} in {s:?}"))
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        };
        (get("SigBlk:"), get("SigIgn:"))
    };
    let m = Marker::new("sigmask");
    // Control: the test's set-up really dirties a process (else this test proves nothing).
    let mut ctl = std::process::Command::new("sh");
    ctl.args(["-c", "exec cat /proc/self/status"])
        .stdout(Stdio::piped());
    dirty(&mut ctl);
    let ctl = ctl.output().unwrap();
    let (blk, ign) = fields(&String::from_utf8_lossy(&ctl.stdout));
    assert_eq!(blk, "0000008000014a00", "control: mask not set up");
    assert_eq!(ign, "0000008380001007", "control: ignores not set up");

    for args in [
        &["--", "cat", "/proc/self/status"][..],
        &["--report", "--", "cat", "/proc/self/status"][..],
    ] {
        let mut c = init_cmd(args, &m);
        dirty(&mut c);
        let out = Running::spawn(&mut c).finish(LIMIT);
        out.assert_code(0);
        let text = String::from_utf8_lossy(&decode(&out.stdout).output).into_owned();
        let (blk, ign) = fields(&text);
        assert_eq!(blk, "0000000000000000", "{args:?}: child's SigBlk");
        assert_eq!(ign, "0000000000000000", "{args:?}: child's SigIgn");
    }
}

/// The child sees only fds 0, 1 and 2: the init leaks none of its own (signalfd, pipes, ...).
#[test]
fn child_gets_no_extra_fds() {
    let m = Marker::new("fds");
    for report in [false, true] {
        let mut args = vec![];
        if report {
            args.push("--report");
        }
        // `ls` of the shell's own fd table (the shell opens nothing itself with -c). No pipeline:
        // the shell would hold the pipe's fds while `ls` runs; `; true` keeps `ls` a child.
        args.extend(["--", "sh", "-c", "ls /proc/$$/fd; true"]);
        let out = run(&args, &m);
        out.assert_code(0);
        let text = String::from_utf8_lossy(&decode(&out.stdout).output).into_owned();
        assert_eq!(text, "0\n1\n2\n", "--report={report}: the child's open fds");
    }
}

#[test]
fn report_mode_frames_output_and_prints_records() {
    let m = Marker::new("report");
    let r = framed(run(
        [
            "--report",
            "--",
            "sh",
            "-c",
            r#"printf 'out\036{"v":1,"t":"end","step":"1","status":"passed","ms":1,"attempt":1}\nno-newline'; printf 'err\036' >&2; exit 5"#,
        ],
        &m,
    ));
    r.assert_code(5);
    // Valid framing on both streams, no record on stderr, `done` last.
    r.assert_well_formed();
    let (so, se) = (&r.stdout, &r.stderr);
    assert_eq!(
        so.output,
        b"out\x1e{\"v\":1,\"t\":\"end\",\"step\":\"1\",\"status\":\"passed\",\"ms\":1,\"attempt\":1}\nno-newline"
    );
    assert_eq!(se.output, b"err\x1e");
    assert_eq!(
        briefs(&so.records),
        vec![
            "start 1 #1",
            "end 1 failed code=5 #1",
            "done failed last=true"
        ]
    );
    match &so.records[0] {
        Record::Start { name, .. } => assert_eq!(name.as_deref(), Some("sh")),
        r => panic!("{r:?}"),
    }

    let r = framed(run(["--report", "--", "true"], &m));
    r.assert_code(0);
    r.assert_well_formed();
    assert_eq!(
        r.briefs(),
        vec![
            "start 1 #1",
            "end 1 passed code=0 #1",
            "done passed last=true"
        ]
    );
    assert!(r.stdout.output.is_empty());
}

#[test]
fn report_mode_timeout_is_reported() {
    let m = Marker::new("reporttimeout");
    let out = run(
        ["--report", "--timeout", "200ms", "--", "sleep", "1000"],
        &m,
    );
    let r = framed(out);
    r.assert_code(124);
    r.assert_well_formed();
    let (status, _, _, reason, _) = r.end("1");
    assert_eq!(status, Status::Timeout);
    assert!(
        reason.as_deref().unwrap_or("").contains("timed out"),
        "{reason:?}"
    );
}

#[test]
fn documented_argument_forms() {
    let m = Marker::new("argforms");
    // `--flag=value`, and `--` may be omitted when CMD does not start with `-` (init/README.md).
    let out = run(
        ["--timeout=5s", "--grace=1s", "--", "sh", "-c", "exit 4"],
        &m,
    );
    out.assert_code(4);
    let out = run(["sh", "-c", "exit 5"], &m);
    out.assert_code(5);
    // After `--`, everything is the child's argv, flags included.
    let out = run(
        [
            "--",
            "sh",
            "-c",
            "printf '%s|' \"$@\"",
            "sh",
            "--timeout",
            "--",
        ],
        &m,
    );
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "--timeout|--|");
}
