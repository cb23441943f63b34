//! Fault injection: the init SIGKILLed at every one of its system calls (strace's `inject`: the
//! signal comes as the call is entered, so the kill falls between any two of its writes,
//! journal appends, spawns), in each container of a workflow, which then restarts or goes on to
//! the next container. What the inits printed, read as a controller reads it, must report each
//! step exactly once: no attempt ended two ways, none left open, none begun twice, every step
//! with a final result, and never a pass that the run without kills did not have.
//!
//! (An init killed while blocked writing to a full stdout pipe is the same as one killed as its
//! write is entered: a write to a pipe of less than PIPE_BUF, as every record is, is all or
//! nothing.)

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::OsString;
use stepinit_protocol::attempts::Attempts;

fn key() -> String {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a run of one container left: its stdout, and whether SIGKILL ended it.
struct Run {
    stdout: Vec<u8>,
    killed: bool,
}

/// Runs container `group`, killed at its `kill_at`-th system call when given.
fn container(f: &Fixture, key: &str, group: u32, kill_at: Option<usize>) -> Run {
    let spec = f.dir.join("spec.json");
    let state = f.dir.join("state");
    let mut args: Vec<OsString> = Vec::new();
    let program = match kill_at {
        Some(n) => {
            for a in ["-qq", "-o", "/dev/null", "-e", "trace=all", "-e"] {
                args.push(a.into());
            }
            args.push(format!("inject=all:signal=KILL:when={n}").into());
            args.push(INIT.as_str().into());
            "strace".to_string()
        }
        None => INIT.to_string(),
    };
    args.extend([
        "run".into(),
        spec.into_os_string(),
        "--group".into(),
        group.to_string().into(),
    ]);
    args.extend(["--state".into(), state.into_os_string()]);
    let mut c = marked_cmd(program, args, &f.marker);
    c.current_dir(f.dir.path())
        .env("D", f.dir.s())
        .env("STEPINIT_STATE_KEY", key);
    // strace dies of the signal its tracee got.
    let o = c.output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let killed = o.status.signal() == Some(libc::SIGKILL) || o.status.code() == Some(137);
    assert!(
        killed || matches!(o.status.code(), Some(0 | 1)),
        "container {group}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Run {
        stdout: o.stdout,
        killed,
    }
}

struct Read {
    steps: BTreeMap<String, Status>,
    done: Option<Status>,
}

/// The records of all runs, in order, read with the protocol's rule (which also refuses an end
/// without its start); Err on any inconsistency.
fn read(outs: &[Run]) -> Result<Read, String> {
    let mut seen = Attempts::default();
    let mut steps = BTreeMap::new();
    let mut done = None;
    for o in outs {
        let d = decode(&o.stdout);
        if !d.invalid.is_empty() {
            return Err(format!("invalid framing: {:?}", d.invalid));
        }
        for r in &d.records {
            if !seen.admit(r).map_err(|c| c.0)? {
                continue;
            }
            match r {
                Record::End { step, status, .. } => {
                    steps.insert(step.clone(), *status);
                }
                Record::Done {
                    status, last: true, ..
                } => done = Some(*status),
                _ => {}
            }
        }
    }
    if let Some((s, a)) = seen.open().first() {
        return Err(format!("{s} attempt {a} never ends"));
    }
    Ok(Read { steps, done })
}

/// How many system calls container `group`'s init makes when nothing kills it (an upper
/// bound: the kill points run from 1 to here).
fn syscalls(f: &Fixture, key: &str, group: u32) -> usize {
    let trace = f.dir.join("trace");
    let spec = f.dir.join("spec.json");
    let state = f.dir.join("state");
    let mut c = marked_cmd(
        "strace",
        [
            OsString::from("-qq"),
            "-o".into(),
            trace.clone().into(),
            INIT.as_str().into(),
            "run".into(),
            spec.into(),
            "--group".into(),
            group.to_string().into(),
            "--state".into(),
            state.into(),
        ],
        &f.marker,
    );
    c.current_dir(f.dir.path())
        .env("D", f.dir.s())
        .env("STEPINIT_STATE_KEY", key);
    let o = Running::spawn(&mut c).finish(LIMIT);
    assert!(o.code == 0 || o.code == 1, "{}", o.stderr_str());
    std::fs::read_to_string(&trace).unwrap().lines().count()
}

#[test]
fn a_kill_at_any_system_call_reports_each_step_once() {
    // Two containers; a retried step, a failure, conditions, output around records.
    let spec = json!({"version": 1, "containers": [{}, {}], "steps": [
        {"id": "a", "shell": "echo a", "container": 0},
        {"id": "r", "shell": "test -e $D/flag || { touch $D/flag; exit 3; }", "container": 0,
         "retry": {"count": 2}},
        {"id": "g", "steps": [
            {"id": "b", "shell": "echo b; exit 1", "container": 0, "optional": true},
            {"id": "c", "shell": "echo c", "container": 1}]},
        {"id": "d", "shell": "echo d", "container": 1, "condition": "always"},
    ]});
    let f = Fixture::new("kill");
    write_spec(&f.dir, &spec);
    let k = key();
    // The counts of each container's system calls, from one clean run of all of them.
    let counts: Vec<usize> = (0..2).map(|g| syscalls(&f, &k, g)).collect();
    let fresh = || {
        let _ = std::fs::remove_dir_all(f.dir.join("state"));
        let _ = std::fs::remove_file(f.dir.join("flag"));
    };
    fresh();
    let base: Vec<Run> = (0..2).map(|g| container(&f, &k, g, None)).collect();
    let base = read(&base).expect("the run without kills reads cleanly");
    assert_eq!(base.done, Some(Status::Passed));
    let mut kills = 0;
    for (g, &n) in counts.iter().enumerate() {
        for at in 1..=n + 1 {
            for restart in [true, false] {
                if !restart && g == 1 {
                    continue; // nobody would report what the last container's init did not
                }
                fresh();
                let mut outs = Vec::new();
                for c in 0..2u32 {
                    let killed = c as usize == g;
                    let o = container(&f, &k, c, killed.then_some(at));
                    let died = o.killed;
                    kills += usize::from(died);
                    outs.push(o);
                    if died && restart {
                        outs.push(container(&f, &k, c, None));
                    }
                }
                let what =
                    format!("killed at system call {at} of container {g}, restart {restart}");
                let r = read(&outs).unwrap_or_else(|e| panic!("{what}: {e}"));
                for id in ["a", "r", "g", "g", "b", "c", "d"] {
                    assert!(r.steps.contains_key(id), "{what}: step {id} never reported");
                }
                let done = r.done.unwrap_or_else(|| panic!("{what}: no final done"));
                if done == Status::Passed {
                    // Then nothing the kill interrupted counts as a failure.
                    assert!(
                        !r.steps.iter().any(|(id, s)| id != "b" && s.is_failure()),
                        "{what}"
                    );
                }
            }
        }
    }
    assert!(kills > 100, "the test killed {kills} inits");
}
