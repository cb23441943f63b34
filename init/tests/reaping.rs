//! Reaping and the end of a run, as PID 1 (in a new PID namespace, `unshare -fp --mount-proc`) and
//! as a subreaper (not PID 1): orphans are adopted and reaped promptly, leftovers are stopped
//! (TERM, grace, KILL) including setsid'd and double-forked grandchildren, nothing survives the
//! init, and the main child's exit code is kept.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Makes 10 orphans (each `sleep 1` started by a shell that exits at once), checks from inside
/// that each one was adopted by the init (its parent is the main shell's parent), then waits
/// (bounded) until every orphan is gone from /proc: an unreaped orphan stays as a zombie `Z`.
/// Finally no zombie child of the init may remain. Prints `reaped N` and exits 0 on success.
const ORPHANS: &str = r#"
for i in 1 2 3 4 5 6 7 8 9 10; do sh -c 'sleep 1 >/dev/null 2>&1 & echo $!'; done > "$D/orphans"
n=0
for p in $(cat "$D/orphans"); do
  if read -r pid comm state ppid rest < /proc/$p/stat 2>/dev/null; then
    if [ "$ppid" != "$PPID" ]; then echo "orphan $p adopted by $ppid, not the init $PPID" >&2; exit 1; fi
    n=$((n+1))
  fi
done
if [ "$n" -lt 5 ]; then echo "only $n orphans seen alive: machine too slow?" >&2; exit 1; fi
for p in $(cat "$D/orphans"); do
  i=0
  while [ -e /proc/$p ]; do
    i=$((i+1))
    if [ $i -gt 1500 ]; then echo "orphan $p not reaped: $(cat /proc/$p/stat)" >&2; exit 1; fi
    sleep 0.02
  done
done
# No zombie child of the init (allow a moment for a just-exited helper to be reaped).
i=0
while :; do
  z=""
  for f in /proc/[0-9]*/stat; do
    if read -r pid comm state ppid rest < "$f" 2>/dev/null && [ "$state" = Z ] && [ "$ppid" = "$PPID" ]; then z="$z $pid"; fi
  done
  [ -z "$z" ] && break
  i=$((i+1))
  if [ $i -gt 500 ]; then echo "zombies of the init:$z" >&2; exit 1; fi
  sleep 0.02
done
echo "reaped $n"
"#;

/// Asserts the init exited 0 after the [`ORPHANS`] script printed `reaped N`.
fn assert_orphans_reaped(out: &Out) {
    out.assert_code(0);
    assert!(
        out.stdout_str().starts_with("reaped "),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn orphans_are_reaped_as_subreaper() {
    let f = Fixture::new("subreaper");
    assert_orphans_reaped(&f.run_init(["--", "sh", "-c", ORPHANS]));
    f.assert_no_survivors();
}

#[test]
fn orphans_are_reaped_as_pid_1() {
    let f = Fixture::new("pid1");
    let script = format!(
        r#"[ "$PPID" = 1 ] || {{ echo "not under PID 1: PPID=$PPID" >&2; exit 1; }}; {ORPHANS}"#
    );
    let out = Running::spawn(&mut f.unshare_init_cmd(["--", "sh", "-c", &script])).finish(LIMIT);
    assert_eq!(
        out.code,
        0,
        "unshare -fp --mount-proc init (this test needs root and PID namespaces; it must not \
         be skipped); stderr: {}",
        out.stderr_str()
    );
    assert_orphans_reaped(&out);
}

/// Leftovers of three kinds, all waiting to be stopped after the main child exits with 7:
/// a plain background `sleep` (same group, dies of TERM), a `setsid` session leader that ignores
/// TERM, and a double-forked, setsid'd grandchild that ignores TERM.
const LEFTOVERS: &str = r#"
sleep 1000 &
setsid sh -c 'trap "" TERM; touch "$D/r1"; exec sleep 1000' &
(setsid sh -c 'trap "" TERM; touch "$D/r2"; while :; do sleep 1; done' &)
while [ ! -e "$D/r1" ] || [ ! -e "$D/r2" ]; do sleep 0.01; done
exit 7
"#;

#[test]
fn leftovers_are_killed_after_the_grace_and_the_main_code_is_kept() {
    let f = Fixture::new("leftovers");
    let out = f.run_init(["--grace", "1s", "--", "sh", "-c", LEFTOVERS]);
    out.assert_code(7);
    // The TERM-ignoring ones were given the grace before SIGKILL.
    assert_waited_a_1s_grace(out.elapsed, "the run");
    assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
    f.assert_no_survivors();
}

#[test]
fn leftovers_that_obey_term_do_not_wait_for_the_grace() {
    let f = Fixture::new("leftovers-term");
    let out = f.run_init([
        "--grace",
        "40s",
        "--",
        "sh",
        "-c",
        r#"sleep 1000 & setsid sh -c 'touch "$D/r1"; exec sleep 1000' &
           while [ ! -e "$D/r1" ]; do sleep 0.01; done; exit 3"#,
    ]);
    out.assert_code(3);
    assert!(out.elapsed < Duration::from_secs(20), "{:?}", out.elapsed);
    f.assert_no_survivors();
}

#[test]
fn leftovers_as_pid_1_and_the_main_code_is_kept() {
    let f = Fixture::new("pid1-leftovers");
    let mut c = f.unshare_init_cmd(["--grace", "1s", "--", "sh", "-c", LEFTOVERS]);
    let out = Running::spawn(&mut c).finish(LIMIT);
    out.assert_code(7);
    assert_waited_a_1s_grace(out.elapsed, "the run");
    f.assert_no_survivors();
}

/// A grandchild that left the group and ignores TERM is still killed when the init is told to
/// stop (SIGTERM), after the grace.
#[test]
fn sigterm_reaches_setsid_grandchildren_too() {
    let f = Fixture::new("term-setsid");
    let r = Running::spawn(&mut f.init_cmd([
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        r#"(setsid sh -c 'trap "" TERM; touch "$D/r1"; exec sleep 1000' &)
           while [ ! -e "$D/r1" ]; do sleep 0.01; done; exec sleep 1000"#,
    ]));
    await_file(&f.dir.join("r1"), "the grandchild");
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    r.finish(LIMIT).assert_code(128 + libc::SIGTERM);
    assert_waited_a_1s_grace(t.elapsed(), "SIGTERM");
    f.assert_no_survivors();
}

/// Reaping is driven by events: while the child sleeps, the init does not wake up.
#[test]
fn the_init_sleeps_while_its_child_sleeps() {
    let f = Fixture::new("idle");
    let r = f.start_init_until_ready(["--", "sh", "-c", r#"touch "$D/ready"; exec sleep 3"#]);
    let switches = |pid: i32| {
        status_kb(pid, "voluntary_ctxt_switches").unwrap_or(0)
            + status_kb(pid, "nonvoluntary_ctxt_switches").unwrap_or(0)
    };
    let before = switches(r.pid());
    // Observing idleness needs a time window; nothing to await here.
    std::thread::sleep(Duration::from_millis(1500));
    let after = switches(r.pid());
    assert!(
        proc_state(r.pid()) == Some('S'),
        "init state {:?}",
        proc_state(r.pid())
    );
    r.finish(LIMIT).assert_code(0);
    assert!(
        after - before <= 5,
        "the init woke up {} times in 1.5 s while its child slept (polling?)",
        after - before
    );
}
