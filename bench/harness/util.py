"""Process helpers for the harness: bounded runs, hyperfine, callgrind, strace, /proc sampling."""

import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import time
from pathlib import Path


class NotMeasured(Exception):
    """A prerequisite is missing: the section reports "not measured: <why>" (not a failure)."""


class Failed(Exception):
    """A command the harness relies on failed: the run exits non-zero."""


def fmt_cmd(cmd, limit=240):
    """A command for messages, shortened past `limit` characters."""
    text = cmd if isinstance(cmd, str) else shlex.join(str(c) for c in cmd)
    return text if len(text) <= limit else text[: limit - 5] + " ..."


def run(cmd, timeout, env=None, cwd=None, stdin=subprocess.DEVNULL, check=True):
    """Runs `cmd` (argv list) in its own process group, bounded by `timeout` seconds.

    Returns CompletedProcess with text stdout/stderr. On timeout the whole group is killed and
    Failed is raised; a non-zero exit raises Failed with the command and its stderr tail."""
    p = subprocess.Popen(
        [str(c) for c in cmd],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        raise Failed(f"timed out after {timeout:.0f}s: {fmt_cmd(cmd)}")
    except BaseException:
        kill_group(p)
        raise
    if check and p.returncode != 0:
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise Failed(f"exit {p.returncode}: {fmt_cmd(cmd)}: {tail}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def kill_group(p):
    """Kills everything in the session of Popen `p` (started with start_new_session): its process
    group and the groups its descendants made (an init puts its child in a group of its own),
    then reaps `p`."""
    for pid in session_members(p.pid) + [p.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def session_members(sid):
    """Pids whose session id is `sid` (from /proc/PID/stat)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after "(comm)": state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and fields[3] == str(sid):
            pids.append(int(d))
    return pids


def which(name):
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def require_tools(*names):
    missing = [n for n in names if not which(n)]
    if missing:
        raise NotMeasured(f"missing tool(s): {', '.join(missing)} (tests/install-deps installs them)")


def hyperfine(commands, runs, warmup, workdir, tag, shell=False, timeout=600, rounds=1,
              prepare=None):
    """Times `commands` [(name, command string)] with hyperfine.

    With `rounds` > 1, hyperfine is run that many times with runs/rounds runs each, the order of
    the commands reversed every other round, and the times pooled: a load change on the shared
    machine then hits every command alike instead of biasing a ratio.
    Returns {name: {"median", "mean", "stddev", "min", "max", "runs"}} in seconds. Commands must
    exit 0. `shell=False` runs them without a shell (-N: no spawn-time correction needed).
    `prepare` {name: command}: run before each timing run of that command (not timed)."""
    times = {name: [] for name, _ in commands}
    per_round = max(2, runs // rounds)
    for r in range(rounds):
        order = commands if r % 2 == 0 else commands[::-1]
        out = Path(workdir) / f"hyperfine-{tag}-{r}.json"
        cmd = ["hyperfine", "--style", "none", "--runs", str(per_round), "--warmup", str(warmup),
               "--export-json", str(out)]
        if not shell:
            cmd.append("-N")
        if prepare:
            # hyperfine takes one --prepare per command, in the commands' order.
            for name, _ in order:
                cmd += ["--prepare", prepare.get(name, "true")]
        for name, c in order:
            cmd += ["-n", name, c]
        try:
            run(cmd, timeout=timeout)
        except Failed:
            explain_failure(commands, shell, timeout)
            raise
        for (name, _), result in zip(order, json.loads(out.read_text())["results"]):
            times[name] += result["times"]
    return {
        name: {"median": statistics.median(t), "mean": statistics.fmean(t),
               "stddev": statistics.pstdev(t), "min": min(t), "max": max(t), "runs": len(t)}
        for name, t in times.items()
    }


def explain_failure(commands, shell, timeout):
    """hyperfine does not say which command failed: run each once and raise naming it."""
    for name, c in commands:
        argv = ["/bin/sh", "-c", c] if shell else shlex.split(c)
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=timeout, errors="replace", text=True)
        except subprocess.TimeoutExpired:
            raise Failed(f"{name}: timed out after {timeout}s: {fmt_cmd(c)}")
        if p.returncode != 0:
            tail = " | ".join(p.stderr.strip().splitlines()[-3:])
            raise Failed(f"{name}: exit {p.returncode}: {fmt_cmd(c)}: {tail}")


CALLGRIND_WARNINGS = []


def callgrind(argv, workdir, tag, timeout=120):
    """Counts user-space instructions (Ir) of the process `argv` starts, parent only.

    valgrind runs the guest in the same process, so the parent's profile is the file named after
    the pid we started; children forked by it stop being traced at their exec
    (no --trace-children). Returns (instructions, path of the callgrind out file)."""
    d = Path(workdir) / f"callgrind-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p", *argv]
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        raise Failed(f"timed out after {timeout}s: {fmt_cmd(cmd)}")
    if p.returncode != 0:
        raise Failed(f"exit {p.returncode}: {fmt_cmd(cmd)}: {err.strip().splitlines()[-1:]}")
    f = d / f"cg.{p.pid}"
    if not f.exists():
        raise Failed(f"callgrind wrote no profile for pid {p.pid}: {fmt_cmd(cmd)}")
    # A syscall valgrind does not know makes the guest take another path: say so.
    for line in err.splitlines():
        if "unhandled" in line.lower() or "warning" in line.lower():
            CALLGRIND_WARNINGS.append(f"{fmt_cmd(argv, 80)}: {line.split('== ', 1)[-1].strip()}")
    return callgrind_total(f), f


def callgrind_total(path):
    """The first event (Ir) of the "summary:" or "totals:" line of a callgrind out file."""
    for line in Path(path).read_text(errors="replace").splitlines():
        m = re.match(r"^(summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(2))
    raise Failed(f"no summary/totals line in {path}")


def callgrind_top(path, n=10, timeout=60):
    """Top `n` functions by self instruction count: [(Ir, percent, function)] (callgrind_annotate)."""
    out = run(["callgrind_annotate", "--threshold=99", str(path)], timeout=timeout).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.+)$", line)
        if m and "PROGRAM TOTALS" not in m.group(3):
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), short_fn(m.group(3))))
    return rows[:n]


def short_fn(text):
    """`/long/build/path/src_musl/src/malloc/free.c:__libc_free [/path/init]` -> `musl
    src/malloc/free.c:__libc_free`: no binary suffix, build-tree prefixes cut."""
    text = re.sub(r"\s+\[[^\]]*\]$", "", text.strip())
    for marker, label in (("src_musl/", "musl "), ("/library/", "std "), ("/src/", "")):
        i = text.find(marker)
        if i >= 0 and i < text.find(":") if ":" in text else False:
            return label + text[i + len(marker):]
    return text


def strace_summary(argv, workdir, tag, follow=False, n=10, timeout=120):
    """`strace -c` of `argv` (parent only unless `follow`): top `n` syscalls by time.

    Returns [(syscall, calls, seconds, percent)]."""
    out = Path(workdir) / f"strace-{tag}.txt"
    cmd = ["strace", "-c", "-o", str(out)] + (["-f"] if follow else []) + [str(a) for a in argv]
    run(cmd, timeout=timeout)
    rows = []
    for line in out.read_text().splitlines():
        parts = line.split()
        # % time  seconds  usecs/call  calls  [errors]  syscall
        if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
            try:
                rows.append((parts[-1], int(parts[3]), float(parts[1]), float(parts[0])))
            except ValueError:
                continue
    return rows[:n]


def proc_status_kb(pid, field):
    """A `kB` field (VmHWM, VmRSS) of /proc/PID/status; None once the process is gone/a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


class HwmSampler:
    """Samples VmHWM of one pid every `interval` s until it exits; `peak` is the last value seen
    (VmHWM is a high-water mark, so the last sample is the peak up to that moment)."""

    def __init__(self, pid, interval=0.005):
        self.pid, self.interval, self.peak, self.samples = pid, interval, None, 0

    def poll(self):
        v = proc_status_kb(self.pid, "VmHWM")
        if v is not None:
            self.peak = max(self.peak or 0, v)
            self.samples += 1
        return v

    def run_until_exit(self, popen, timeout):
        deadline = time.monotonic() + timeout
        while popen.poll() is None:
            if time.monotonic() > deadline:
                kill_group(popen)
                raise Failed(f"timed out after {timeout:.0f}s: {fmt_cmd(popen.args)}")
            self.poll()
            time.sleep(self.interval)
        return popen.returncode


def smaps_top(pid, n=6):
    """Largest mappings of `pid` by Rss: [(kB, name)], to explain a peak RSS."""
    rows, name = [], None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+$", parts[0]):
                    name = parts[5] if len(parts) > 5 else "[anon]"
                    perms = parts[1]
                    name = f"{name} ({perms})"
                elif parts[0] == "Rss:":
                    rows.append((int(parts[1]), name))
    except (FileNotFoundError, ProcessLookupError):
        return []
    rows.sort(reverse=True)
    return [r for r in rows if r[0] > 0][:n]
