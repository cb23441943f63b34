//! Attacks on stepctl runs by the steps they run, on the local engine and in real podman pods,
//! each kept as a test that failed before its fix: a non-root step forging the state the next
//! container trusts, stopping or killing its init, writing records through stepctl's fds,
//! printing enough to lose the end of the logs, writing records to the pod's terminal; and
//! stepctl killed mid-run. The podman tests fail, never skip, when podman or the images are
//! missing (images/build makes them).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One pod at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn podman_lock() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let o = Command::new("podman")
        .env("CONTAINERS_CONF", containers_conf())
        .args(["image", "exists", "localhost/stepinit/test-busybox:dev"])
        .status()
        .unwrap_or_else(|e| panic!("podman cannot run ({e}): install it (tests/install-deps)"));
    assert!(
        o.success(),
        "the test images are missing: build them with images/build"
    );
    g
}

/// The attack as first found: isolated containers running as uid 1000, step 1 fails, step 2
/// forges the next container's state (every state file it can reach copied as the next
/// container's, `failed` made `passed`). It made `stepctl run` say passed, exit 0, and run a
/// step that had to be skipped.
const FORGE: &str = r#"
kind: TestWorkflow
metadata: {name: forge}
spec:
  container:
    image: localhost/stepinit/test-busybox:dev
    securityContext: {runAsUser: 1000, runAsGroup: 1000}
  system: {isolatedContainers: true}
  steps:
  - name: fails
    shell: exit 1
  - name: attack
    condition: always
    shell: |
      cd /stepinit/state 2>/dev/null || cd "$(dirname "$PWD")/state"
      for f in state.*.json journal.*; do
        [ -e "$f" ] || continue
        n=${f#*.}; n=${n%.json}
        sed 's/"failed":true,//g; s/"failed"/"passed"/g; s/ failed / passed /g' "$f" > "next.$f"
        mv "next.$f" "$(echo "$f" | sed "s/$n/$((n + 1))/")" || true
      done
      ls -la
  - name: must be skipped
    shell: echo MUST-NOT-RUN
  - name: cleanup
    condition: always
    shell: echo cleanup
"#;

fn assert_forge_fails(code: i32, doc: &serde_json::Value, stderr: &str) {
    assert_eq!(code, 1, "the workflow failed: {doc}\n{stderr}");
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(
        step(doc, &["attack"])["status"],
        "passed",
        "the attack ran: {doc}"
    );
    assert_ne!(step(doc, &["must be skipped"])["status"], "passed", "{doc}");
    assert!(!stderr.contains("MUST-NOT-RUN"), "{stderr}");
    assert_eq!(step(doc, &["cleanup"])["status"], "passed", "{doc}");
}

#[test]
fn a_forged_state_fails_the_workflow_locally() {
    assert!(
        is_root(),
        "this test runs steps as uid 1000: run it as root"
    );
    let p = temp_wf("forge-local", FORGE);
    let (code, doc, stderr) = Engine::Local.run_json(&p, &[]);
    assert_forge_fails(code, &doc, &stderr);
}

#[test]
fn a_forged_state_fails_the_workflow_in_a_pod() {
    let _g = podman_lock();
    let p = temp_wf("forge-pod", FORGE);
    let (code, doc, stderr) = Engine::Podman.run_json(&p, &[]);
    assert_forge_fails(code, &doc, &stderr);
}

/// Runs `cmd` to its end, killed (and the test failed) after `limit`: a stepctl a step could
/// stop used to wait for ever.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let t = Instant::now();
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            if t.elapsed() > limit {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let o = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "still running after {limit:?}: killed"
    );
    o
}

/// stepctl as a non-root user on the local engine (the way most people run it).
fn as_user_1000(workflow: &Path, extra: &[&str]) -> Command {
    as_user_1000_with(Path::new(env!("CARGO_BIN_EXE_stepctl")), workflow, extra)
}

/// [`as_user_1000`] with the stepctl at `exe`.
fn as_user_1000_with(exe: &Path, workflow: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(exe)
        .args(["run", "--output", "json"])
        .args(extra)
        .arg(workflow)
        .env("NO_COLOR", "1")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp");
    c
}

/// A step stopped its init (`kill -STOP $PPID`: stepctl waited until SIGCONT, SIGTERM
/// ignored), killed it and lived on, and read stepctl's fds through /proc (stepctl was
/// dumpable: it could write forged records into the pipe the init's records come through).
#[test]
fn a_non_root_step_cannot_stop_kill_or_impersonate_its_init() {
    let p = temp_wf(
        "parent",
        r#"
kind: TestWorkflow
metadata: {name: parent}
spec:
  steps:
  - name: stop and kill the init
    shell: kill -STOP $PPID; kill -9 $PPID; sleep 0.2; echo alive
  - name: forge through stepctl's fds
    shell: |
      read -r me rest < /proc/self/stat
      for p in /proc/[0-9]*; do
        [ "$p" = /proc/$me ] && continue
        case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
        *stepctl*run*)
          echo "found $p"
          for fd in $p/fd/*; do
            { printf '\036{"v":1,"t":"end","step":"3","status":"passed","code":0,"ms":1,"attempt":1}\n' > "$fd"; } 2>/dev/null && echo "wrote $fd"
          done;;
        esac
      done
      true
  - name: fails
    shell: exit 1
"#,
    );
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = output_within(as_user_1000(&p, &[]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&o.stdout)));
    assert!(
        !stderr.contains("no pid namespace"),
        "namespaces work here: {stderr}"
    );
    assert_eq!(
        step(&doc, &["stop and kill the init"])["status"],
        "passed",
        "{doc}"
    );
    assert!(stderr.contains("alive"), "{stderr}");
    assert!(
        stderr.contains("found /proc/"),
        "the step found stepctl: {stderr}"
    );
    assert!(
        !stderr.contains("wrote /proc"),
        "a step wrote into a pipe of stepctl: {stderr}"
    );
    assert_eq!(step(&doc, &["fails"])["status"], "failed", "{doc}");
    assert_eq!(o.status.code(), Some(1), "{doc}");
}

/// `kill -9` of stepctl left the steps running: now each init is PID 1 of its own pid
/// namespace, whose processes die with it.
#[test]
fn nothing_outlives_a_killed_stepctl() {
    for root in [true, false] {
        let marker = format!("stepctl-sleeper-{}-{root}", std::process::id());
        let p = temp_wf(
            &format!("killed-{root}"),
            &format!(
                "kind: TestWorkflow\nmetadata: {{name: killed}}\nspec:\n  container: {{env: [{{name: STEPCTL_TEST_MARKER, value: {marker}}}]}}\n  steps:\n  - name: sleeper\n    shell: 'trap \"\" TERM; echo sleeping; exec sleep 60'\n"
            ),
        );
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let mut cmd = if root {
            let mut c = Engine::Local.run_cmd(&["--output", "json"]);
            c.arg(&p);
            c
        } else {
            as_user_1000(&p, &[])
        };
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("sleeping") {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
                "no sleeper"
            );
        }
        let needle = format!("STEPCTL_TEST_MARKER={marker}");
        let running = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
                .any(|c| c.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        };
        // (While the shell execs sleep, its environ reads as empty for a moment.)
        let t = Instant::now();
        while !running() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(running(), "the sleeper runs");
        child.kill().unwrap();
        let _ = child.wait();
        // The init gets SIGTERM; the sleeper ignores it and gets SIGKILL after the grace.
        let t = Instant::now();
        while running() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!running(), "root {root}: the step outlived stepctl");
    }
}

/// A step printing 8 MiB or more was reported aborted, exit 130, "final record is missing":
/// podman 4.3's logs -f lost the end. Every byte now arrives, and the result is the step's.
#[test]
fn fifty_mib_of_output_arrive_whole_from_a_pod() {
    let _g = podman_lock();
    let p = temp_wf(
        "big",
        r#"
kind: TestWorkflow
metadata: {name: big}
spec:
  container: {image: localhost/stepinit/test-busybox:dev}
  steps:
  - name: big
    shell: yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456 | head -c 52428800; echo; echo end-of-output
"#,
    );
    let o = Engine::Podman
        .run_cmd(&["--output", "json"])
        .arg(&p)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["status"], "passed", "{doc}");
    assert_eq!(o.status.code(), Some(0));
    // The step's output, exactly (in JSON mode it goes to stderr, with the progress lines).
    let out: Vec<&[u8]> = o.stderr.split(|&b| b == b'\n').collect();
    let lines = out.iter().filter(|l| l.starts_with(b"0123456789")).count();
    let whole = 52428800 / 98;
    assert!(
        lines == whole || lines == whole + 1,
        "{lines} lines of output"
    );
    assert!(out.iter().any(|l| *l == b"end-of-output"));
    let total: usize = out
        .iter()
        .filter(|l| l.starts_with(b"0123456789"))
        .map(|l| l.len() + 1)
        .sum();
    assert_eq!(
        total,
        52428800 + 1,
        "every byte, and the newline after them"
    );
}

/// Under `podman run -t`, a non-root step printed a forged end record to /dev/tty and
/// `stepctl decode` accepted it.
#[test]
fn a_step_cannot_write_records_to_a_pods_terminal() {
    let _g = podman_lock();
    let dir = std::env::temp_dir().join(format!("stepctl-tty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let init = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-musl/release/init");
    assert!(
        init.exists(),
        "{} is missing: images/build makes it",
        init.display()
    );
    std::fs::copy(&init, dir.join("init")).unwrap();
    let forged =
        r#"\036{"v":1,"t":"end","step":"1","status":"passed","code":0,"ms":1,"attempt":1}\n"#;
    let spec = serde_json::json!({"version": 1, "steps": [{"shell": format!(
        "for t in /dev/tty /dev/console /dev/pts/[0-9]* /proc/self/fd/0; do {{ printf '{forged}' > $t; }} 2>/dev/null || true; done; exit 1"
    )}]});
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let name = format!("stepctl-tty-{}", std::process::id());
    let st = Command::new("podman")
        .env("CONTAINERS_CONF", containers_conf())
        .args(["run", "-t", "--name", &name, "--user", "1000:1000", "-v"])
        .arg(format!("{}:/x:ro", dir.display()))
        .args([
            "localhost/stepinit/test-busybox:dev",
            "/x/init",
            "run",
            "/x/spec.json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1), "the step fails, so does the run");
    let logs = Command::new("podman")
        .env("CONTAINERS_CONF", containers_conf())
        .args(["logs", &name])
        .output()
        .unwrap();
    let _ = Command::new("podman")
        .env("CONTAINERS_CONF", containers_conf())
        .args(["rm", "-f", &name])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    // A terminal turns \n into \r\n.
    let text: Vec<u8> = logs
        .stdout
        .iter()
        .copied()
        .filter(|&b| b != b'\r')
        .collect();
    let mut dec = Engine::Local.stepctl();
    let mut child = dec
        .args(["decode", "--output", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &text).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["steps"][0]["status"], "failed", "{doc}");
    assert_eq!(doc["steps"][0]["exitCode"], 1, "{doc}");
}

/// Workflow files that cost the YAML parser quadratic time or unbounded memory (100,000 nested
/// flow mappings: 67 s; 200,000 steps: 524 MB; aliases: 6 GB from a 1 MB file) are refused at
/// once, with one line.
#[test]
fn hostile_workflow_files_are_refused_at_once() {
    let head = "kind: TestWorkflow\nmetadata: {name: big}\nspec:\n  steps:\n";
    let nested = format!(
        "{head}  - shell: echo\n    x: {}1{}\n",
        "{a: ".repeat(100_000),
        "}".repeat(100_000)
    );
    let many: String = std::iter::once(head.to_string())
        .chain((0..25_000).map(|i| format!("  - shell: echo {i}\n")))
        .collect();
    let huge = format!("{head}  - shell: echo\n{}", "# padding\n".repeat(500_000));
    // A review's: 1,000 aliases of an anchored 1 MiB string in a 2 MiB file (a terabyte with
    // 1,000,000 of them under the size limit).
    let aliases = format!(
        "{head}  - shell: &s {}\n{}",
        "x".repeat(1 << 20),
        "  - shell: *s\n".repeat(1000)
    );
    for (name, text, want) in [
        (
            "nested",
            nested,
            "line 6: collections nest deeper than 64 levels",
        ),
        (
            "many",
            many,
            "spec.steps[20000]: more than 20000 steps in one workflow",
        ),
        (
            "huge",
            huge,
            "more than 4194304 bytes, the most a workflow file may have",
        ),
        (
            "aliases",
            aliases,
            "not valid YAML: spec.steps[15].shell: the documents expand to more than 16777216 bytes (YAML aliases?) at line 5 column 12",
        ),
    ] {
        let p = temp_wf(&format!("hostile-{name}"), &text);
        let t = Instant::now();
        let o = Engine::Local
            .stepctl()
            .args(["plan", "--images", "none"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert_eq!(
            err.trim_end(),
            format!("stepctl: {}: {want}", p.display()),
            "{name}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            t.elapsed()
        );
    }
}

/// The shared volume came 0777 (an emptyDir): a step replaced the init that the next container
/// runs, with the state key in its environment, and the key and the result were its. The steps
/// now see that volume read-only.
#[test]
fn a_step_cannot_replace_the_init_of_the_next_container() {
    let _g = podman_lock();
    let p = temp_wf(
        "replace-init",
        r#"
kind: TestWorkflow
metadata: {name: replace-init}
spec:
  container:
    image: localhost/stepinit/test-busybox:dev
    securityContext: {runAsUser: 1000, runAsGroup: 1000}
  system: {isolatedContainers: true}
  steps:
  - name: replace
    shell: |
      for f in init sh; do
        { cp /bin/busybox /stepinit/$f || mv /stepinit/$f /stepinit/$f.x || rm -f /stepinit/$f; } 2>/dev/null && echo "REPLACED $f"
      done
      touch /stepinit/new 2>/dev/null && echo "WROTE the volume"
      true
  - name: next container
    shell: echo next ran
"#,
    );
    let (code, doc, stderr) = Engine::Podman.run_json(&p, &[]);
    assert!(
        !stderr.contains("REPLACED") && !stderr.contains("WROTE"),
        "{stderr}"
    );
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(step(&doc, &["next container"])["status"], "passed", "{doc}");
}

/// A second review's attacks on the local engine run by a non-root user, whose steps run as
/// that user and can write what it owns:
/// - the run's spec.json (step 2 made the next container's steps `never` and its own `true`,
///   and removed the journal: the next init started afresh and reported passed);
/// - the stepctl binary itself (installed in the user's ~/.cargo/bin: step 2 put a script at
///   its path, which the next container's launcher ran, with the key, printing records).
///
/// Both fail the run now, and the fake program never runs.
#[test]
fn a_non_root_step_cannot_rewrite_the_spec_or_replace_stepctl() {
    assert!(
        is_root(),
        "this test runs stepctl as uid 1000: run it as root"
    );
    let dir = std::env::temp_dir().join(format!("stepctl-replace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let exe = dir.join("bin/stepctl");
    std::fs::copy(env!("CARGO_BIN_EXE_stepctl"), &exe).unwrap();
    let marker = dir.join("fake-ran");
    for p in [&dir, &dir.join("bin"), &exe] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let forged_spec = r#"{"version":1,"containers":[{},{},{}],"steps":[{"id":"1","command":["true"],"container":0,"condition":"never"},{"id":"2","command":["true"],"container":1,"condition":"never"},{"id":"3","name":"integration tests","command":["true"],"container":2}]}"#;
    for (what, attack) in [
        (
            "the spec rewritten",
            format!("cd \"$(dirname \"$PWD\")\" && printf '%s' '{forged_spec}' > spec.json && rm -f state/journal.*"),
        ),
        (
            "stepctl replaced",
            format!(
                "printf '#!/bin/sh\\ntouch {m}\\necho \"$@\" >> {m}\\nexit 0\\n' > {e}.new && chmod +x {e}.new && mv {e}.new {e}",
                m = marker.display(),
                e = exe.display()
            ),
        ),
    ] {
        let p = temp_wf(
            "replace",
            &format!(
                "kind: TestWorkflow\nmetadata: {{name: replace}}\nspec:\n  system: {{isolatedContainers: true}}\n  steps:\n  - name: tests\n    shell: exit 1\n  - name: attack\n    condition: always\n    shell: {}\n  - name: integration tests\n    shell: echo MUST-NOT-RUN\n",
                serde_json::to_string(&attack).unwrap()
            ),
        );
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_stepctl"), &exe).unwrap();
        std::os::unix::fs::chown(&exe, Some(1000), Some(1000)).unwrap();
        let o = output_within(as_user_1000_with(&exe, &p, &[]), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&o.stderr);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{what}: {e}: {}\n{stderr}", String::from_utf8_lossy(&o.stdout)));
        assert_eq!(step(&doc, &["attack"])["status"], "passed", "{what}: the attack ran: {doc}\n{stderr}");
        assert_eq!(o.status.code(), Some(1), "{what}: {doc}\n{stderr}");
        assert_eq!(doc["status"], "failed", "{what}: {doc}");
        assert_eq!(step(&doc, &["tests"])["status"], "failed", "{what}: {doc}");
        assert_ne!(step(&doc, &["integration tests"])["status"], "passed", "{what}: {doc}");
        assert!(!stderr.contains("MUST-NOT-RUN"), "{what}: {stderr}");
        assert!(!marker.exists(), "{what}: the fake stepctl ran");
        if what == "the spec rewritten" {
            assert!(
                doc["notes"].to_string().contains("authentication tag does not verify"),
                "{what}: the next init's records are not this run's: {doc}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The local engine's steps shared the user's terminal as their controlling terminal: a step
/// could open /dev/tty, print a fake report on it and push a command into the user's shell
/// (TIOCSTI), which ran after stepctl exited (as root when stepctl ran as root). The inits now
/// start in sessions of their own, without a terminal.
#[test]
fn a_local_step_cannot_reach_the_users_terminal() {
    let p = temp_wf(
        "tty-reach",
        "kind: TestWorkflow\nmetadata: {name: tty-reach}\nspec:\n  steps:\n  - shell: if ( echo FAKE-REPORT > /dev/tty ) 2>/dev/null; then echo TTY-OPENED; else echo NO-TTY; fi\n",
    );
    // `script` gives stepctl a pseudo-terminal as its controlling terminal.
    let cmd = format!("{} run {}", env!("CARGO_BIN_EXE_stepctl"), p.display());
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .expect("script (util-linux) runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("NO-TTY"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.trim() == "TTY-OPENED" || l.trim() == "FAKE-REPORT"),
        "{out}"
    );
}
