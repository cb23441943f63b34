//! Signals sent to the init (wrap mode): forwarded to the child's whole process group, the stop
//! sequence on SIGTERM/SIGINT, and signals that must neither stop nor kill the init.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A recorder: the child shell and a grandchild in its process group trap each signal of `sigs`
/// and append `NAME` (child) or `gc-NAME` (grandchild) to `$D/got`; both exit 0 once `$D/got`
/// holds `n` lines. While signals may arrive they only run builtins (a busy loop, short): a
/// forked helper has default dispositions for a moment, and would die of, or be stopped by,
/// the very signals under test.
const RECORDER: &str = r#"
who=$1; n=$2; shift 2; sigs="$*"
for s in $sigs; do trap "echo $who$s >> \"\$D/got\"" $s; done
if [ -z "$who" ]; then : > "$D/got"; sh "$D/rec.sh" gc- "$n" $sigs & fi
echo ready > "$D/ready_${who:-p}"
count() { c=0; while read -r l; do c=$((c+1)); done < "$D/got"; }
count
while [ "$c" -lt "$n" ]; do count; done
if [ -z "$who" ]; then wait; fi
exit 0
"#;

/// Starts `init -- sh RECORDER` trapping `names` (child and grandchild: 2 lines a signal) and
/// waits until both traps are set.
fn spawn_recorder(f: &Fixture, names: &[&str]) -> Running {
    let rec = f.dir.join("rec.sh");
    std::fs::write(&rec, RECORDER).unwrap();
    let n = (2 * names.len()).to_string();
    let mut args = vec!["--", "sh", rec.to_str().unwrap(), "", &n];
    args.extend_from_slice(names);
    let r = Running::spawn(&mut f.init_cmd(&args));
    await_file(&f.dir.join("ready_p"), "the child's traps");
    await_file(&f.dir.join("ready_gc-"), "the grandchild's traps");
    r
}

/// Sends each of `sigs` (named `names`) to the recorder in turn, waiting for both receipts
/// before the next (standard signals do not queue), and runs `after_each` after each receipt.
fn send_one_at_a_time(
    f: &Fixture,
    r: &Running,
    sigs: &[i32],
    names: &[&str],
    mut after_each: impl FnMut(&str),
) {
    assert_eq!(sigs.len(), names.len());
    for (i, (sig, name)) in sigs.iter().zip(names).enumerate() {
        r.signal(*sig);
        await_lines(
            &f.dir.join("got"),
            2 * (i + 1),
            &format!("receipt of {name}"),
        );
        after_each(name);
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn signals_are_forwarded_to_the_whole_process_group() {
    let f = Fixture::new("fwd");
    let names = ["USR1", "USR2", "HUP", "WINCH", "ALRM", "PIPE", "CONT"];
    let sigs = [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
        libc::SIGWINCH,
        libc::SIGALRM,
        libc::SIGPIPE,
        libc::SIGCONT,
    ];
    let r = spawn_recorder(&f, &names);
    send_one_at_a_time(&f, &r, &sigs, &names, |_| {});
    r.finish(LIMIT).assert_code(0);
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.extend(names.iter().map(|n| format!("gc-{n}")));
    assert_eq!(sorted(read_lines(&f.dir.join("got"))), sorted(want));
}

#[test]
fn job_control_signals_do_not_stop_the_init() {
    let f = Fixture::new("tstp");
    let names = ["TSTP", "TTIN", "TTOU", "USR1"];
    let sigs = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGUSR1];
    let r = spawn_recorder(&f, &names);
    // A stopped init would forward nothing more, so each receipt proves it kept running.
    send_one_at_a_time(&f, &r, &sigs, &names, |name| {
        let st = proc_state(r.pid());
        assert!(
            st.is_some_and(|c| c != 'T' && c != 't'),
            "init state after SIG{name}: {st:?}"
        );
    });
    r.finish(LIMIT).assert_code(0);
}

/// The init ignores nothing it receives: job-control signals do not stop it even when the child
/// does not handle them (the child itself may stop or not; the init must go on).
#[test]
fn job_control_signals_do_not_stop_the_init_even_with_default_child() {
    let f = Fixture::new("tstp2");
    let r = f.start_init_until_ready([
        "--",
        "sh",
        "-c",
        r#"touch "$D/ready"; while [ ! -e "$D/stop" ]; do sleep 0.02; done"#,
    ]);
    for s in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        r.signal(s);
    }
    // Whatever the child did, the init must be runnable and must still relay a SIGCONT and
    // a SIGTERM, which ends the child.
    let ok = wait_until(Duration::from_millis(300), || {
        proc_state(r.pid()).is_some_and(|c| c == 'T' || c == 't')
    });
    assert!(!ok, "the init got stopped: state {:?}", proc_state(r.pid()));
    r.signal(libc::SIGCONT);
    std::fs::write(f.dir.join("stop"), "").unwrap();
    r.finish(LIMIT).assert_code(0);
}

#[test]
fn fatal_signals_sent_by_kill_are_forwarded_and_do_not_kill_the_init() {
    let f = Fixture::new("fatal");
    let names = ["SEGV", "ABRT", "BUS", "FPE", "ILL"];
    let sigs = [
        libc::SIGSEGV,
        libc::SIGABRT,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
    ];
    let r = spawn_recorder(&f, &names);
    send_one_at_a_time(&f, &r, &sigs, &names, |_| {});
    // A dead init would forward nothing more (the awaits above time out); `finish` also panics
    // if the init died of a signal.
    r.finish(LIMIT).assert_code(0);
}

#[test]
fn fatal_signal_to_init_with_default_child_kills_the_child_not_the_init() {
    let f = Fixture::new("segvchild");
    let r = f.start_init_until_ready(["--", "sh", "-c", r#"touch "$D/ready"; exec sleep 1000"#]);
    // `exec sleep` replaced the shell: wait until the child really is `sleep`.
    f.await_process("sleep");
    r.signal(libc::SIGSEGV);
    r.finish(LIMIT).assert_code(128 + libc::SIGSEGV);
}

#[test]
fn sigterm_stops_a_cooperative_child_promptly() {
    let f = Fixture::new("term");
    let r = f.start_init_until_ready([
        "--grace",
        "30s",
        "--",
        "sh",
        "-c",
        r#"touch "$D/ready"; exec sleep 1000"#,
    ]);
    f.await_process("sleep");
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    r.finish(LIMIT).assert_code(128 + libc::SIGTERM);
    // Far below the 30 s grace: the init did not wait for a child that is already gone.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    f.assert_no_survivors();
}

#[test]
fn sigterm_kills_a_term_ignoring_child_after_the_grace() {
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let f = Fixture::new("termgrace");
        let r = f.start_init_until_ready([
            "--grace",
            "1s",
            "--",
            "sh",
            "-c",
            // The grandchild ignores TERM too, and sits in the same group.
            r#"trap '' TERM INT; sh -c 'sleep 1000' & touch "$D/ready"; while :; do sleep 0.05; done"#,
        ]);
        let t = Instant::now();
        r.signal(sig);
        let out = r.finish(LIMIT);
        let took = t.elapsed();
        assert_eq!(
            out.code,
            128 + libc::SIGKILL,
            "SIG{name}: the child was SIGKILLed; stderr: {}",
            out.stderr_str()
        );
        assert_waited_a_1s_grace(took, &format!("SIG{name}"));
        assert!(took < Duration::from_secs(20), "SIG{name}: {took:?}");
        assert!(
            f.marker.pids().is_empty(),
            "SIG{name} survivors: {}",
            f.marker.describe()
        );
    }
}

/// As PID 1 of a PID namespace (a container), signals from outside (`docker stop`, `kill`) still
/// reach the init, which forwards them and runs the stop sequence: PID 1 gets no default action,
/// so an init that merely left the signal at its default would never see it.
#[test]
fn signals_from_outside_reach_pid_1() {
    let f = Fixture::new("pid1sig");
    let child = f.dir.join("child.sh");
    std::fs::write(
        &child,
        r#"trap 'echo USR1 >> "$D/got"' USR1
trap '' TERM
touch "$D/ready"
while :; do sleep 0.05; done
"#,
    )
    .unwrap();
    let mut c = f.unshare_init_cmd(["--grace", "1s", "--", "sh", child.to_str().unwrap()]);
    let r = Running::spawn(&mut c);
    await_file(&f.dir.join("ready"), "the child under PID 1");
    // The init is unshare's child (in our namespace it has an ordinary pid).
    let mut init_pid = 0;
    assert!(
        wait_until(LIMIT, || {
            let kids =
                std::fs::read_to_string(format!("/proc/{}/task/{}/children", r.pid(), r.pid()))
                    .unwrap_or_default();
            init_pid = kids
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            init_pid > 0
        }),
        "no child of unshare"
    );
    let status = std::fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "the init is not PID 1 of its namespace: {status}"
    );
    assert_eq!(unsafe { libc::kill(init_pid, libc::SIGUSR1) }, 0);
    await_lines(&f.dir.join("got"), 1, "USR1 forwarded by PID 1");
    let t = Instant::now();
    assert_eq!(unsafe { libc::kill(init_pid, libc::SIGTERM) }, 0);
    let out = r.finish(LIMIT);
    // The child ignores TERM: SIGKILLed after the grace.
    out.assert_code(128 + libc::SIGKILL);
    assert_waited_a_1s_grace(t.elapsed(), "SIGTERM to PID 1");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}
