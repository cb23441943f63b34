//! Attacks on the init by the steps it runs: each was found by playing a hostile step (any uid
//! the container runs as: it can write whatever that uid can, plant FIFOs and symlinks, race
//! renames, stop or kill its parent), and each is kept here as a test that failed before its
//! fix. The init and its steps run as uid 1000 (`setpriv`), as in a container with
//! `runAsUser: 1000`, unless a test says otherwise.

mod common;

use common::*;
use serde_json::json;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use stepinit_protocol::attempts::Attempts;

const UID: &str = "1000";

/// A fresh state key, as a controller makes one per run.
fn key() -> String {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `init ARGS` as uid 1000 (its steps too), in `f`'s directory, `$D` and `$S` (the state
/// directory) set, the state key in its environment.
fn as_user<I, S>(f: &Fixture, key: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> = ["--reuid", UID, "--regid", UID, "--clear-groups"]
        .iter()
        .map(Into::into)
        .collect();
    all.push(INIT.as_str().into());
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    let mut c = marked_cmd("setpriv", all, &f.marker);
    c.current_dir(f.dir.path())
        .env("D", f.dir.s())
        .env("S", f.dir.join("state"))
        .env("STEPINIT_STATE_KEY", key);
    c
}

/// Runs container `group` of `spec` (in `$D/spec.json`) with `--state $D/state` as uid 1000.
fn container(f: &Fixture, key: &str, group: u32) -> SpecRun {
    let spec = f.dir.join("spec.json");
    let g = group.to_string();
    let state = f.dir.join("state");
    let args = [
        OsStr::new("run"),
        spec.as_os_str(),
        OsStr::new("--group"),
        OsStr::new(&g),
        OsStr::new("--state"),
        state.as_os_str(),
    ];
    framed(Running::spawn(&mut as_user(f, key, args)).finish(LIMIT))
}

/// A fixture whose directory uid 1000 owns (the shared volume as setup leaves it for one user).
fn user_fixture(tag: &str, spec: &serde_json::Value) -> Fixture {
    let f = Fixture::new_shared(tag);
    write_spec(&f.dir, spec);
    std::fs::create_dir(f.dir.join("state")).unwrap();
    let c = std::ffi::CString::new(f.dir.join("state").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 1000, 1000) }, 0);
    f
}

/// What a controller reads from the records of every container, in order (repeats dropped):
/// each step's final status, the workflow's, and the contradictions found (a later init that
/// was handed a state cut short reports an earlier step again, differently: the controller then
/// fails the run).
struct Read {
    steps: std::collections::BTreeMap<String, Status>,
    done: Option<Status>,
    contradictions: Vec<String>,
}

fn read_all(runs: &[&SpecRun]) -> Read {
    let mut seen = Attempts::default();
    let mut last = std::collections::BTreeMap::new();
    let mut done = None;
    let mut contradictions = Vec::new();
    for r in runs {
        for rec in &r.stdout.records {
            match seen.admit(rec) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(c) => {
                    contradictions.push(c.0);
                    continue;
                }
            }
            match rec {
                Record::End { step, status, .. } => {
                    last.insert(step.clone(), *status);
                }
                Record::Done {
                    status, last: true, ..
                } => done = Some(*status),
                _ => {}
            }
        }
    }
    Read {
        steps: last,
        done,
        contradictions,
    }
}

/// Step 1 fails; step 2 (`attack`, condition always) does what a hostile step of container 0
/// would; container 1 has a step that must be skipped (it records that it ran) and one that
/// always runs.
fn forge_spec(attack: &str) -> serde_json::Value {
    json!({"version": 1, "containers": [{}, {}], "steps": [
        {"id": "fails", "command": ["sh", "-c", "exit 1"], "container": 0},
        {"id": "attack", "shell": attack, "container": 0, "condition": "always"},
        {"id": "must-skip", "shell": "touch $D/ran", "container": 1},
        {"id": "after", "shell": "true", "container": 1, "condition": "always"},
    ]})
}

/// The attacks of a step on the state the next container's init trusts: forging the next
/// container's journal, editing, cutting, replacing or removing its own, planting a FIFO, a
/// symlink to /dev/zero or a 3 GiB sparse file, appending lines without the key. Before the
/// journal, copying the state as the next container's with every status `passed` made the
/// workflow pass and ran the step that had to be skipped. Now: the workflow fails, the step
/// does not run, the next init neither hangs nor eats memory.
#[test]
fn a_step_cannot_make_a_failed_workflow_pass_through_the_state() {
    let attacks: &[(&str, &str)] = &[
        // The attack as first found, on the state files of before the journal.
        (
            "old state file forged as the next container's",
            r#"sed 's/"failed":true,//g; s/"failed"/"passed"/g; s/"phase":"running"/"phase":"passed"/2g; s/"container":0/"container":1/' $S/state.0.json > $S/state.1.json || true"#,
        ),
        (
            "forged next journal",
            "sed 's/ failed / passed /' $S/journal.0 > $S/journal.1",
        ),
        (
            "edited own journal",
            "sed -i 's/^E 1 failed 1 /E 1 passed 0 /' $S/journal.0",
        ),
        (
            "journal cut to its header",
            "head -n 1 $S/journal.0 > $S/t; cat $S/t > $S/journal.0",
        ),
        ("journal emptied", ": > $S/journal.0"),
        (
            "journal replaced",
            "rm $S/journal.0; echo garbage > $S/journal.0",
        ),
        ("journal removed", "rm $S/journal.0"),
        (
            "line appended without the key",
            "echo 'E 1 passed 0 1 1 f - 00000000000000000000000000000000' >> $S/journal.0",
        ),
        ("FIFO as the next journal", "mkfifo $S/journal.1"),
        (
            "next journal a symlink to /dev/zero",
            "ln -s /dev/zero $S/journal.1",
        ),
        ("3 GiB sparse next journal", "truncate -s 3G $S/journal.1"),
        ("state directory swapped", "mv $S $D/state.old; mkdir $S"),
    ];
    for (what, attack) in attacks {
        let f = user_fixture("forge", &forge_spec(attack));
        let k = key();
        let r0 = container(&f, &k, 0);
        r0.assert_code(0);
        assert_eq!(r0.end("attack").0, Status::Passed, "{what}: the attack ran");
        let started = Instant::now();
        let r1 = container(&f, &k, 1);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_eq!(
            r1.code,
            1,
            "{what}: the workflow must fail: {:?}\n{}",
            r1.briefs(),
            r1.raw.stderr_str()
        );
        assert!(
            !f.dir.join("ran").exists(),
            "{what}: a step that had to be skipped ran"
        );
        let read = read_all(&[&r0, &r1]);
        assert_eq!(read.done, Some(Status::Failed), "{what}");
        assert_ne!(read.steps.get("must-skip"), Some(&Status::Passed), "{what}");
        assert_eq!(
            read.steps.get("after"),
            Some(&Status::Passed),
            "{what}: always-steps still run"
        );
        // A state cut short makes the next init report container 0's steps again (aborted):
        // a contradiction a controller sees, never a pass.
        for c in &read.contradictions {
            assert!(
                c.contains("reported twice") || c.contains("skipped after it ran"),
                "{what}: {c}"
            );
        }
    }
}

/// A line that fails verification says so in the final record, naming the file and line.
#[test]
fn a_tampered_journal_is_named_in_the_final_record() {
    let f = user_fixture(
        "taint",
        &forge_spec("sed -i 's/^E 1 failed 1 /E 1 passed 0 /' $S/journal.0"),
    );
    let k = key();
    container(&f, &k, 0).assert_code(0);
    let r1 = container(&f, &k, 1);
    let reason = r1.stdout.records.iter().find_map(|r| match r {
        Record::Done { reason, .. } => reason.clone(),
        _ => None,
    });
    let reason = reason.unwrap_or_else(|| panic!("no reason in done: {:?}", r1.briefs()));
    // Line 4: the header, the workflow's start, step 1's start, its (edited) end.
    assert!(
        reason.contains("journal.0: line 4 fails verification"),
        "{reason}"
    );
    assert!(
        r1.raw.stderr_str().contains("fails verification"),
        "{}",
        r1.raw.stderr_str()
    );
}

/// A different key (another run's journals, or a step's guess) verifies nothing.
#[test]
fn journals_of_another_key_are_not_trusted() {
    let f = user_fixture("otherkey", &forge_spec("true"));
    container(&f, &key(), 0).assert_code(0);
    let r1 = container(&f, &key(), 1);
    assert_eq!(r1.code, 1);
    assert!(
        r1.raw.stderr_str().contains("line 1 fails verification"),
        "{}",
        r1.raw.stderr_str()
    );
}

/// The key reaches the init alone: not the steps' environment, not through /proc.
#[test]
fn steps_never_see_the_state_key() {
    let k = key();
    let spec = json!({"version": 1, "steps": [{"id": "look", "shell": format!(
        "env | grep -q {k} && exit 11; cat /proc/$PPID/environ 2>/dev/null | grep -q {k} && exit 12; \
         grep -rqs {k} $S && exit 13; true"
    )}]});
    let f = user_fixture("key", &spec);
    let r = container(&f, &k, 0);
    r.assert_code(0);
    assert_eq!(r.end("look").0, Status::Passed, "{:?}", r.end("look"));
    assert!(!r.raw.stdout_str().contains(&k) && !r.raw.stderr_str().contains(&k));
}

/// A re-run on an old state directory ran nothing and said passed, whatever the first run
/// said; it now repeats the first run's result, says why, and runs nothing twice.
#[test]
fn a_rerun_on_an_old_state_repeats_the_result_and_runs_nothing() {
    let spec = json!({"version": 1, "steps": [
        {"shell": "echo x >> $D/runs; exit 1"}]});
    let f = user_fixture("rerun", &spec);
    let k = key();
    container(&f, &k, 0).assert_code(1);
    let again = container(&f, &k, 0);
    again.assert_code(1);
    assert_eq!(std::fs::read_to_string(f.dir.join("runs")).unwrap(), "x\n");
    assert_eq!(again.briefs(), ["done failed last=true"]);
    assert!(
        again.raw.stderr_str().contains("already ran to its end"),
        "{}",
        again.raw.stderr_str()
    );
}

/// `--state` naming a file said "File exists".
#[test]
fn a_state_that_is_a_file_is_named_as_such() {
    let f = user_fixture(
        "statefile",
        &json!({"version": 1, "steps": [{"command": ["true"]}]}),
    );
    std::fs::write(f.dir.join("afile"), b"").unwrap();
    let spec = f.dir.join("spec.json");
    let state = f.dir.join("afile");
    let r = framed(
        Running::spawn(&mut as_user(
            &f,
            &key(),
            [
                OsStr::new("run"),
                spec.as_os_str(),
                OsStr::new("--state"),
                state.as_os_str(),
            ],
        ))
        .finish(LIMIT),
    );
    assert_eq!(r.code, 3);
    let err = r.raw.stderr_str();
    assert!(err.contains("--state must be a directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A spec that is a FIFO, /dev/zero, or a link to it: one line, exit 2, at once, no memory.
#[test]
fn a_spec_that_is_not_a_regular_file_is_refused_at_once() {
    let f = Fixture::new("specfifo");
    let fifo = f.dir.join("fifo.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", f.dir.join("zero.json")).unwrap();
    for spec in [
        fifo.as_path(),
        Path::new("/dev/zero"),
        &f.dir.join("zero.json"),
    ] {
        let o = f.run_init([OsStr::new("run"), spec.as_os_str()]);
        o.assert_code(2);
        let err = o.stderr_str();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(o.elapsed < Duration::from_secs(5), "{:?}", o.elapsed);
    }
}

/// In the world-writable fallback a uid-1000 step pre-created home/1001 (0777) and the
/// uid-1001 step got it as HOME (1000 could read and plant what 1001 runs). Under /tmp too.
#[test]
fn a_home_squatted_by_another_user_is_not_given_out() {
    let f = Fixture::new_shared("home");
    let shared = f.dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    for d in ["home", "state"] {
        std::fs::create_dir(shared.join(d)).unwrap();
        std::fs::set_permissions(
            shared.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
    }
    // The init runs as root, steps as 1000 then 1001, their HOME unusable (so one is made).
    let spec = json!({"version": 1, "steps": [
        {"id": "squat", "runAsUser": 1000, "runAsGroup": 1000, "env": [{"name": "HOME", "value": "/nonexistent"}],
         "shell": "mkdir -m 777 $SH/home/1001 && touch $SH/home/1001/.profile"},
        {"id": "victim", "runAsUser": 1001, "runAsGroup": 1001, "env": [{"name": "HOME", "value": "/nonexistent"}],
         "shell": "echo $HOME > $D/home-of-1001; test \"$(stat -c %u $HOME)\" = 1001; test ! -e $HOME/.profile"},
    ]});
    // With --state, HOMEs are made beside it, in shared/home.
    let spec_path = write_spec(&f.dir, &spec);
    let state = shared.join("state");
    let mut c = f.init_cmd([
        OsStr::new("run"),
        spec_path.as_os_str(),
        OsStr::new("--state"),
        state.as_os_str(),
    ]);
    c.env("SH", &shared).env("STEPINIT_STATE_KEY", key());
    let r = framed(Running::spawn(&mut c).finish(LIMIT));
    r.assert_code(0);
    let home = std::fs::read_to_string(f.dir.join("home-of-1001")).unwrap();
    assert_eq!(home.trim(), shared.join("home/1001.1").to_str().unwrap());
}

/// With a terminal as stdout (podman run -t), a non-root step wrote a forged end record to
/// /dev/tty and it decoded as the init's. The terminal is now exclusive and not the steps'
/// stdin: every way to it is shut.
#[test]
fn a_step_cannot_write_records_to_the_terminal() {
    let f = Fixture::new_shared("tty");
    let forged =
        r#"\036{"v":1,"t":"end","step":"1","status":"passed","code":0,"ms":1,"attempt":1}\n"#;
    let script = format!(
        "for t in /dev/tty /dev/pts/[0-9]* $(readlink /proc/$PPID/fd/1) /proc/self/fd/0 /dev/stdin; do {{ printf '{forged}' > $t; }} 2>/dev/null || true; done; exit 1"
    );
    let spec = json!({"version": 1, "steps": [{"shell": script}]});
    write_spec(&f.dir, &spec);
    std::fs::set_permissions(
        f.dir.join("spec.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let log = f.dir.join("typescript");
    // script(1) gives the init a terminal of uid 1000's own (its pts), as podman -t does.
    let inner = format!(
        "{} run {}",
        INIT.as_str(),
        f.dir.join("spec.json").display()
    );
    let mut c = marked_cmd(
        "setpriv",
        [
            "--reuid",
            UID,
            "--regid",
            UID,
            "--clear-groups",
            "script",
            "-qfec",
            &inner,
            log.to_str().unwrap(),
        ],
        &f.marker,
    );
    let o = Running::spawn(&mut c).finish(LIMIT);
    assert_eq!(o.code, 1, "{}", o.stderr_str());
    let text = std::fs::read(&log).unwrap();
    // script's own header and footer lines aside, the terminal carried the init's stream.
    let body: Vec<u8> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"Script "))
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .filter(|&b| b != b'\r')
        .collect();
    let d = decode(&body);
    let ends: Vec<String> = briefs(&d.records)
        .into_iter()
        .filter(|b| b.starts_with("end"))
        .collect();
    assert_eq!(
        ends,
        ["end 1 failed code=1 #1"],
        "only the init's end: {:?}",
        briefs(&d.records)
    );
}

/// `unshare -p` without a /proc of its own (the init not PID 1): a setsid'd TERM-ignoring
/// grandchild lived 25 s past a 300 ms grace, since the stop sequence trusted /proc.
#[test]
fn leftovers_die_after_the_grace_when_proc_is_another_namespaces() {
    let f = Fixture::new("foreignproc");
    let inner = format!(
        "{} --grace 300ms -- sh -c 'setsid sh -c \"trap \\\"\\\" TERM; sleep 30\" & sleep 0.2; exit 0'",
        INIT.as_str()
    );
    let mut c = marked_cmd("unshare", ["-pf", "sh", "-c", &inner], &f.marker);
    let o = Running::spawn(&mut c).finish(LIMIT);
    o.assert_code(0);
    assert!(o.elapsed < Duration::from_secs(10), "took {:?}", o.elapsed);
    f.assert_no_survivors();
}

/// A tmpfs over /proc with a FIFO planted where the init looks for its children hung it for
/// ten minutes, SIGTERM ignored. The init is not fooled (it checks what /proc is), and never
/// blocks on it.
#[test]
fn a_fake_proc_cannot_hang_the_stop_sequence() {
    let f = Fixture::new("fakeproc");
    // In a mount namespace of its own: a tmpfs over /proc with `self` and the children file
    // of the pid the init will have (the shell execs it), the latter a FIFO.
    let inner = format!(
        "mount -t tmpfs none /proc && mkdir -p /proc/$$/task/$$ && ln -s $$ /proc/self && \
         mkfifo /proc/$$/task/$$/children && exec {} --grace 300ms -- sh -c 'setsid sh -c \"trap \\\"\\\" TERM; sleep 30\" & sleep 0.2; exit 0'",
        INIT.as_str()
    );
    let mut c = marked_cmd(
        "unshare",
        ["-m", "--propagation", "private", "sh", "-c", &inner],
        &f.marker,
    );
    let o = Running::spawn(&mut c).finish(LIMIT);
    o.assert_code(0);
    assert!(
        o.elapsed < Duration::from_secs(10),
        "took {:?}: {}",
        o.elapsed,
        o.stderr_str()
    );
    f.assert_no_survivors();
}

/// A step lowered its init's RLIMIT_NOFILE (prlimit needs no more than the same uid, even for
/// PID 1): poll() then failed with EINVAL for ever and the init spun at 100% CPU, SIGTERM unread.
/// It now goes on without poll: the run ends, failed (the next step cannot get its pipes).
#[test]
fn a_step_starving_the_inits_fds_cannot_hang_it() {
    let spec = json!({"version": 1, "steps": [
        {"id": "starve", "shell": "prlimit --pid $PPID --nofile=1:1; echo starved; sleep 0.3"},
        {"id": "next", "shell": "true", "condition": "always"}]});
    let f = user_fixture("nofile", &spec);
    let r = container(&f, &key(), 0);
    assert_eq!(r.code, 1, "{:?} {}", r.briefs(), r.raw.stderr_str());
    assert_eq!(r.end("starve").0, Status::Passed);
    assert_eq!(r.end("next").0, Status::Failed, "{:?}", r.end("next"));
    assert!(
        r.raw.elapsed < Duration::from_secs(20),
        "{:?}",
        r.raw.elapsed
    );
}

/// The termination log, opened before any step runs: a FIFO planted in its place (the init
/// blocked in open for ever), or a forged summary left there with the init's fds starved, no
/// longer decide what it holds or whether the init ends.
#[test]
fn a_step_cannot_block_or_forge_the_termination_log() {
    let forged = "stepinit-summary 1\\ncontainer 0 last 1 status passed\\n";
    for (what, attack) in [
        ("a FIFO in its place", "rm -f $T; mkfifo $T".to_string()),
        (
            "a forged summary, the init's fds starved",
            format!("printf '{forged}' > $T; prlimit --pid $PPID --nofile=3:3"),
        ),
    ] {
        let spec = json!({"version": 1, "steps": [
            {"id": "attack", "shell": attack}, {"id": "fails", "shell": "exit 1", "condition": "always"}]});
        let f = user_fixture("termlog", &spec);
        let t = f.dir.join("termination-log");
        let specf = f.dir.join("spec.json");
        let mut c = as_user(
            &f,
            &key(),
            [
                OsStr::new("run"),
                specf.as_os_str(),
                OsStr::new("--termination-log"),
                t.as_os_str(),
            ],
        );
        c.env("T", &t);
        let r = framed(Running::spawn(&mut c).finish(LIMIT));
        assert_eq!(r.code, 1, "{what}: {:?} {}", r.briefs(), r.raw.stderr_str());
        if what.starts_with("a forged") {
            let text = std::fs::read_to_string(&t).unwrap();
            assert!(text.contains("status failed"), "{what}: {text}");
        }
    }
}

/// A restarted container (OnFailure or Always restart policies) continued its own journal; a
/// step that cut it to its header and then got its init killed made the restart run everything
/// again: its failed step passed the second time, and a step that had to be skipped ran. A
/// restart now fails the workflow.
#[test]
fn a_cut_journal_and_a_killed_init_cannot_rerun_a_failure_into_a_pass() {
    let spec = json!({"version": 1, "steps": [
        {"id": "tests", "shell": "test -e $D/second-time || { touch $D/second-time; exit 1; }"},
        {"id": "deploy", "shell": "touch $D/deployed"},
        {"id": "report", "condition": "always",
         "shell": "test -e $D/cut && exit 0; touch $D/cut; head -n 1 $S/journal.0 > $S/t; cat $S/t > $S/journal.0; kill -9 $PPID; sleep 5"}]});
    let f = user_fixture("rerun-cut", &spec);
    let k = key();
    // (Not PID 1 here, so `kill -9 $PPID` works; as PID 1, prlimit --cpu does the same.)
    let specf = f.dir.join("spec.json");
    let state = f.dir.join("state");
    let first = as_user(
        &f,
        &k,
        [
            OsStr::new("run"),
            specf.as_os_str(),
            OsStr::new("--state"),
            state.as_os_str(),
        ],
    )
    .output()
    .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        first.status.signal(),
        Some(libc::SIGKILL),
        "the step killed its init"
    );
    // The container restarts.
    let again = container(&f, &k, 0);
    assert_eq!(
        again.code,
        1,
        "{:?} {}",
        again.briefs(),
        again.raw.stderr_str()
    );
    assert!(
        !f.dir.join("deployed").exists(),
        "a step that had to be skipped ran"
    );
    assert!(
        again.raw.stderr_str().contains("was restarted"),
        "{}",
        again.raw.stderr_str()
    );
}

/// A retried step whose attempts go on until one fails (`until: failed`) passed its first
/// attempt; a later step cut the journal there; the next container took the passed attempt as
/// the step's result (the attempts it owed never ran) and the workflow passed.
#[test]
fn owed_attempts_cut_away_are_no_pass() {
    let spec = json!({"version": 1, "containers": [{}, {}], "steps": [
        {"id": "flaky", "shell": "test -e $D/once && exit 1; touch $D/once", "container": 0,
         "retry": {"count": 1, "until": "failed"}},
        {"id": "lint", "optional": true, "container": 0,
         "shell": "grep -m1 -n '^E 1 passed' $S/journal.0 | cut -d: -f1 > $D/n; head -n $(cat $D/n) $S/journal.0 > $S/t; mv $S/t $S/journal.0"},
        {"id": "deploy", "shell": "touch $D/deployed", "container": 1}]});
    let f = user_fixture("owed", &spec);
    let k = key();
    container(&f, &k, 0).assert_code(0);
    let r1 = container(&f, &k, 1);
    assert_eq!(r1.code, 1, "{:?} {}", r1.briefs(), r1.raw.stderr_str());
    assert!(
        !f.dir.join("deployed").exists(),
        "a step that had to be skipped ran"
    );
}

/// A root init creating a step's working directory followed the step user's own symlink into a
/// root-only directory and made a directory there owned by that user. It now walks as the user.
#[test]
fn a_root_init_creates_nothing_where_the_steps_user_may_not() {
    let f = Fixture::new_shared("rootwalk");
    let root_only = f.dir.join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(
        &root_only,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let spec = json!({"version": 1, "steps": [
        {"id": "link", "runAsUser": 1000, "runAsGroup": 1000, "shell": "ln -s $D/root-only $D/build"},
        {"id": "use", "runAsUser": 1000, "runAsGroup": 1000, "workingDir": f.dir.join("build/out"),
         "shell": "touch planted"}]});
    let r = f.run_spec(&spec);
    assert_eq!(r.end("use").0, Status::Failed, "{:?}", r.end("use"));
    let reason = r.end("use").3.unwrap_or_default();
    assert!(reason.contains("Permission denied"), "{reason}");
    assert!(
        !root_only.join("out").exists(),
        "made inside a root-only directory"
    );
}

/// A directory planted as the next container's journal made that init exit 3 without a record.
/// It is removed when empty; when it cannot be, the init runs without a journal of its own:
/// its steps are reported, the workflow fails, and an intermediate container exits 3.
#[test]
fn a_directory_planted_as_the_next_journal_still_leaves_a_report() {
    for (what, plant) in [
        ("empty", "mkdir $S/journal.1"),
        ("full", "mkdir -p $S/journal.1/x"),
    ] {
        let spec = json!({"version": 1, "containers": [{}, {}], "steps": [
            {"id": "plant", "shell": plant, "container": 0},
            {"id": "b", "shell": "true", "container": 1, "condition": "always"}]});
        let f = user_fixture("plantdir", &spec);
        let k = key();
        container(&f, &k, 0).assert_code(0);
        let r1 = container(&f, &k, 1);
        assert_eq!(
            r1.code,
            1,
            "{what}: {:?} {}",
            r1.briefs(),
            r1.raw.stderr_str()
        );
        assert_eq!(
            r1.end("b").0,
            Status::Passed,
            "{what}: its step is reported"
        );
        assert!(matches!(
            r1.stdout.records.last(),
            Some(Record::Done {
                status: Status::Failed,
                ..
            })
        ));
    }
}
