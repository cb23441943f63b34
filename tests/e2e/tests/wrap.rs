//! Wrap mode (`init -- CMD`) as PID 1 of real containers: exit codes, signals from the runtime
//! (`podman stop`), the init's grace period, zombie reaping, and `--report` framing through podman's
//! log driver.

use std::time::{Duration, Instant};

use stepinit_e2e::*;

/// `podman run RUN_OPTS...` of the busybox image with the host's init (mounted from `mount`, see
/// [`mount_init`]) as entrypoint, given `init_args`.
fn podman_run_args<'a>(
    mount: &'a str,
    run_opts: &[&'a str],
    init_args: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec!["run"];
    a.extend_from_slice(run_opts);
    a.extend_from_slice(&["-v", mount, "--entrypoint", "/sbin/stepinit", BUSYBOX_IMAGE]);
    a.extend_from_slice(init_args);
    a
}

/// `podman run --rm` of the busybox image with the host's init as entrypoint; returns the output.
fn run_wrapped(args: &[&str]) -> std::process::Output {
    let mount = mount_init();
    let a = podman_run_args(&mount, &["--rm"], args);
    run_limited(podman_cmd(a), Duration::from_secs(60))
}

#[test]
fn exit_codes_pass_through_the_runtime() {
    require_images();
    for (args, want) in [
        (&["--", "sh", "-c", "exit 7"][..], 7),
        (&["--", "true"][..], 0),
        (&["--", "sh", "-c", "kill -KILL $$"][..], 137),
        (&["--", "sh", "-c", "kill -TERM $$"][..], 143),
        (&["--", "no-such-program"][..], 127),
        (&["--", "/dev/null"][..], 126),
        (&["--timeout", "300ms", "--", "sleep", "10"][..], 124),
        (&["--bogus-flag", "--", "true"][..], 2),
    ] {
        let o = run_wrapped(args);
        assert_eq!(
            o.status.code(),
            Some(want),
            "init {args:?}: stderr {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn stdout_and_stderr_are_the_childs_own_bytes() {
    require_images();
    let o = run_wrapped(&["--", "sh", "-c", "printf 'a\\036b'; printf 'err' >&2"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, b"a\x1eb", "no framing without --report");
    assert_eq!(o.stderr, b"err");
}

/// Starts a detached wrapped container; returns its guard.
fn start_detached(init_args: &[&str]) -> CtrGuard {
    let name = unique("wrap");
    let mount = mount_init();
    podman_ok(podman_run_args(&mount, &["-d", "--name", &name], init_args));
    CtrGuard(name)
}

/// What `podman stop -t 20` did to a wrapped container.
struct Stopped {
    /// How long `podman stop` took.
    took: Duration,
    /// The container's exit code.
    code: i32,
    /// Its logs (stdout).
    logs: String,
}

/// Starts a detached wrapped container, waits for its child to print `ready`, then stops it
/// with `podman stop -t 20` (SIGTERM to the init, SIGKILL after 20s).
fn stop_once_ready(init_args: &[&str]) -> Stopped {
    let c = start_detached(init_args);
    wait_for_log(&c.0, "ready");
    let t = Instant::now();
    podman_ok(["stop", "-t", "20", &c.0]);
    let took = t.elapsed();
    let code = wait_exited(&c.0, Duration::from_secs(30));
    let logs = podman_ok(["logs", &c.0]);
    Stopped { took, code, logs }
}

fn wait_for_log(name: &str, needle: &str) {
    wait_until(
        &format!("{needle:?} in the logs of {name}"),
        Duration::from_secs(30),
        || {
            let o = podman(["logs", name]);
            String::from_utf8_lossy(&o.stdout).contains(needle)
        },
    );
}

#[test]
fn podman_stop_sigterm_reaches_the_child_through_the_init() {
    require_images();
    let Stopped { took, code, logs } = stop_once_ready(&[
        "--",
        "sh",
        "-c",
        "trap 'echo got TERM; exit 42' TERM; echo ready; sleep 60 & wait",
    ]);
    assert_eq!(code, 42, "the child's own exit code is kept; logs: {logs}");
    assert!(logs.contains("got TERM"), "{logs}");
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}: TERM was not forwarded"
    );
}

#[test]
fn the_inits_grace_kills_a_term_ignoring_child_long_before_podmans() {
    require_images();
    // The child ignores SIGTERM; the init's grace (1s) ends it with SIGKILL, well within podman's
    // own 20s before it would kill the init.
    let Stopped { took, code, logs } = stop_once_ready(&[
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo ready; sleep 60; echo survived",
    ]);
    assert!(!logs.contains("survived"), "{logs}");
    assert_eq!(
        code, 137,
        "child killed by SIGKILL after the grace; logs: {logs}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "stop took {took:?}: expected the init's 1s grace"
    );
}

#[test]
fn as_pid1_the_init_reaps_orphaned_zombies() {
    require_images();
    // Orphans re-parented to PID 1 exit while the main child still runs; then the main child
    // counts zombies in the container.
    let script = r#"
        for i in 1 2 3 4 5; do sh -c 'sleep 0.1 &' ; done
        sleep 1
        z=0
        for s in /proc/[0-9]*/stat; do
            read -r line < "$s" 2>/dev/null || continue
            case "${line##*) }" in Z*) z=$((z+1));; esac
        done
        echo "zombies=$z pid1=$(cat /proc/1/comm)"
    "#;
    let o = run_wrapped(&["--", "sh", "-c", script]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out.trim(), "zombies=0 pid1=stepinit");
}

#[test]
fn report_mode_records_decode_from_podman_logs() {
    require_images();
    let c = start_detached(&[
        "--report",
        "--",
        "sh",
        "-c",
        r#"printf 'line\n\036{"v":1,"t":"done","status":"passed","ms":0,"last":true}\n'; printf 'e\036' >&2; exit 3"#,
    ]);
    let code = wait_exited(&c.0, Duration::from_secs(30));
    assert_eq!(code, 3);
    let logs = container_logs(&c.0);
    logs.assert_clean("wrap --report");
    assert_eq!(
        logs.stdout,
        b"line\n\x1e{\"v\":1,\"t\":\"done\",\"status\":\"passed\",\"ms\":0,\"last\":true}\n",
        "the forged record is the child's output, byte for byte"
    );
    assert_eq!(logs.stderr, b"e\x1e");
    assert_eq!(logs.end("1").0, Status::Failed);
    assert_eq!(logs.end("1").1, Some(3));
    assert_eq!(logs.done(), (Status::Failed, true));
}

/// The drop-in case: podman's own `--init` runs `<init-path> -- CMD...` as PID 1 (catatonit by
/// default); ours takes its place with `--init-path`.
#[test]
fn it_replaces_catatonit_as_podman_run_init() {
    require_images();
    let init = init_binary();
    let o = run_limited(
        podman_cmd([
            "run",
            "--rm",
            "--init",
            "--init-path",
            init.to_str().unwrap(),
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; exit 7",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cmdline = String::from_utf8_lossy(&o.stdout);
    assert!(
        cmdline.starts_with("/run/podman-init -- sh -c"),
        "{cmdline}"
    );
}
