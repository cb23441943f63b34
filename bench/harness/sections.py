"""The measured sections 1, 2, 3, 5 and 6 (pods, section 4, are in pods.py).

Each section is a function `(ctx, section)` that fills the Section (about, tables, notes,
targets); it raises NotMeasured when a prerequisite is missing and Failed when a command it
relies on fails."""

import json
import os
import shlex
import statistics
import subprocess
import time
from pathlib import Path

from . import util
from .report import Target
from .util import (
    Failed,
    HwmSampler,
    NotMeasured,
    callgrind,
    children,
    comm,
    hyperfine,
    kill_group,
    proc_status_kb,
    require_tools,
    run,
    smaps_top,
    strace_summary,
)

MARKER = 0x1E
TINI = "/usr/bin/tini-static"
PEERS = [  # (name, binary, argv prefix before CMD)
    ("tini-static", TINI, [TINI, "-s", "--"]),
    ("dumb-init", "/usr/bin/dumb-init", ["/usr/bin/dumb-init"]),
    ("catatonit", "/usr/bin/catatonit", ["/usr/bin/catatonit", "--"]),
]
GIB, MIB = 1 << 30, 1 << 20


def human(nbytes):
    for unit, n in (("GiB", GIB), ("MiB", MIB)):
        if nbytes >= n and nbytes % n == 0:
            return f"{nbytes // n} {unit}"
    return f"{nbytes:,} bytes"


def short(ctx, cmd):
    """A command for tables: the init's path as `init`, temp paths relative to the temp dir."""
    return cmd.replace(ctx.init or "\0", "init").replace(str(ctx.work) + "/", "")


def ms(seconds):
    return f"{seconds * 1e3:.2f} ms"


def us(seconds):
    return f"{seconds * 1e6:.0f} µs"


def num(n):
    return f"{n:,}"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def need_init(ctx):
    if not ctx.init:
        raise NotMeasured(ctx.init_missing)


def need_tini():
    if not os.access(TINI, os.X_OK):
        raise NotMeasured(f"{TINI} missing (Debian package tini; tests/install-deps)")


def peers_present(s):
    present = []
    for name, binary, prefix in PEERS:
        if os.access(binary, os.X_OK):
            present.append((name, binary, prefix))
        else:
            s.notes.append(f"{name} not installed ({binary}): row omitted.")
    return present


def records(stdout_bytes):
    """The records in a framed stdout (a record is a line starting with the marker and `{`)."""
    out = []
    for line in stdout_bytes.split(b"\n"):
        if line.startswith(bytes([MARKER, ord("{")])):
            out.append(json.loads(line[1:]))
    return out


def write_spec(path, steps):
    Path(path).write_text(json.dumps({"version": 1, "steps": steps}))


def check_spec_run(ctx, spec, expect_steps, timeout, extra=()):
    """Runs `init run spec` once and checks every step passed: the figures are of a real run."""
    p = subprocess.Popen([ctx.init, "run", str(spec), *extra], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        raise Failed(f"`init run {spec}` still running after {timeout}s")
    recs = records(out)
    ends = [r for r in recs if r.get("t") == "end" and r.get("status") == "passed"]
    done = [r for r in recs if r.get("t") == "done"]
    if p.returncode != 0 or len(ends) != expect_steps or not done or done[-1]["status"] != "passed":
        tail = err.decode(errors="replace").strip()[-300:]
        raise Failed(f"`init run {spec}` exit {p.returncode}, {len(ends)}/{expect_steps} steps "
                     f"passed, done={done[-1:] or 'missing'}: {tail}")


# ---------------------------------------------------------------------------------------------
# 1. Wrapping /bin/true

def wrap(ctx, s):
    s.about = (
        "The cost of putting an init in front of a command: `/bin/true` bare and behind "
        "each init. Wall time: hyperfine, no shell (`-N`), medians. Instructions: "
        "`valgrind --tool=callgrind`, user-space instructions (Ir) of the init process "
        "only (no `--trace-children`: the child stops being counted at its exec), read "
        "from the `totals:` line of the callgrind out file; deterministic, so immune to "
        "the machine's load. `bare` counts `/bin/true` itself (dynamically linked: mostly "
        "the loader).")
    need_init(ctx)
    need_tini()
    require_tools("hyperfine", "valgrind")
    rows = [("bare", []), ("init", [ctx.init, "--"]), ("init --report", [ctx.init, "--report", "--"])]
    rows += [(n, prefix) for n, _, prefix in peers_present(s)]
    cmds = [(name, shlex.join(prefix + ["/bin/true"])) for name, prefix in rows]
    t = hyperfine(cmds, ctx.p["wrap_runs"], ctx.p["wrap_warmup"], ctx.work, "wrap",
                  rounds=ctx.p["rounds"])
    instr = {}
    for name, prefix in rows:
        instr[name], _ = callgrind(prefix + ["/bin/true"], ctx.work, name.replace(" ", "_"))
    if util.CALLGRIND_WARNINGS:
        s.notes.append("valgrind warnings (the counts may not be representative): "
                       + "; ".join(util.CALLGRIND_WARNINGS))
    bare, tini_t, tini_i = t["bare"]["median"], t["tini-static"]["median"], instr["tini-static"]
    s.table(["Wrapper", "Command", "Wall median", "Over bare", "vs tini-static",
             "Instructions (parent)", "vs tini-static"],
            [(name, f"`{short(ctx, c)}`", ms(t[name]["median"]), ms(t[name]["median"] - bare),
              ratio(t[name]["median"], tini_t), num(instr[name]), ratio(instr[name], tini_i))
             for name, c in cmds])
    s.notes.append(f"hyperfine: {t['init']['runs']} runs per command in {ctx.p['rounds']} "
                   "rounds (command order reversed every other round), each round after "
                   f"{ctx.p['wrap_warmup']} warm-up runs. `init` has the issue's target; `init "
                   "--report` (framed output and records) is shown for information.")
    s.headline = (f"`init -- /bin/true` runs {num(instr['init'])} user-space instructions "
                  f"({ratio(instr['init'], tini_i)} tini-static's {num(tini_i)}, catatonit "
                  f"{num(instr.get('catatonit', 0))}, dumb-init {num(instr.get('dumb-init', 0))}) "
                  f"and adds {ms(t['init']['median'] - bare)} of wall time to `/bin/true` "
                  f"(tini-static: {ms(tini_t - bare)}).")
    target = Target("Instructions of `init -- /bin/true` (callgrind, parent only)",
                    "< tini-static", f"tini-static: {num(tini_i)}", num(instr["init"]), instr["init"] < tini_i)
    if not target.passed:
        target.profile = ctx.callgrind_profile(["--", "/bin/true"], "wrap")
    s.targets.append(target)


# ---------------------------------------------------------------------------------------------
# 2. Per-step cost

def steps(ctx, s):
    counts = ctx.p["step_counts"]
    s.about = (
        f"`init run spec.json` with a spec of N steps `{{\"command\":[\"/bin/true\"]}}` "
        "against `/bin/sh -c '/bin/true; /bin/true; ...'` running the same N commands "
        f"(N = {', '.join(map(str, counts))}), hyperfine without a shell, stdout discarded. "
        "Each init run is first checked once: N `end` records with status passed and a "
        "passed `done`. Per step = median / N; marginal = extra time per extra step "
        "between two sizes (flat per-step cost means linear growth).")
    need_init(ctx)
    require_tools("hyperfine")
    t_init, t_sh, runs_done = {}, {}, {}
    for n in counts:
        spec = Path(ctx.work) / f"steps-{n}.json"
        write_spec(spec, [{"command": ["/bin/true"]}] * n)
        check_spec_run(ctx, spec, n, timeout=60)
        script = "; ".join(["/bin/true"] * n)
        runs = ctx.p["step_runs"] if n <= 100 else ctx.p["step_runs_1000"]
        t = hyperfine([("init", shlex.join([ctx.init, "run", str(spec)])),
                       ("sh", shlex.join(["/bin/sh", "-c", script]))],
                      runs, max(1, runs // 10), ctx.work, f"steps-{n}",
                      rounds=ctx.p["rounds"])
        t_init[n], t_sh[n] = t["init"]["median"], t["sh"]["median"]
        runs_done[n] = t["init"]["runs"]
    s.table(["Steps", "`init run` median", "per step", "`sh -c` median", "per step", "init / sh"],
            [(n, ms(t_init[n]), us(t_init[n] / n), ms(t_sh[n]), us(t_sh[n] / n),
              ratio(t_init[n], t_sh[n])) for n in counts])
    s.table(["Between", "init: marginal per step", "sh: marginal per step"],
            [(f"{a} → {b}", us((t_init[b] - t_init[a]) / (b - a)), us((t_sh[b] - t_sh[a]) / (b - a)))
             for a, b in zip(counts, counts[1:])])
    big = counts[-1]
    s.headline = (f"{big} `/bin/true` steps take {ms(t_init[big])} in `init run` against "
                  f"{ms(t_sh[big])} in `sh -c` ({ratio(t_init[big], t_sh[big])}); "
                  f"{us(t_init[big] / big)} per step")
    if len(counts) > 1:
        a = counts[-2]
        s.headline += (f", {us((t_init[big] - t_init[a]) / (big - a))} per extra step from "
                       f"N = {a} to {big} (`sh -c`: {us((t_sh[big] - t_sh[a]) / (big - a))})")
    s.headline += "."
    s.notes.append("Runs per command: " + ", ".join(f"{runs_done[n]} (N = {n})" for n in counts)
                   + f", in {ctx.p['rounds']} rounds alternating the order of `init run` and "
                   "`sh -c`.")
    for name, t in (("init run", t_init), ("sh -c", t_sh)):
        a, b = linear_fit(counts, [t[n] for n in counts])
        worst = max(abs(t[n] - (a + b * n)) for n in counts)
        s.notes.append(f"`{name}`: least-squares fit t ≈ {ms(a)} + N × {us(b)}; every measured "
                       f"point lies within {ms(worst)} of that line.")
    if 100 in counts:
        spec = Path(ctx.work) / "steps-100.json"
        instr, _ = callgrind([ctx.init, "run", str(spec)], ctx.work, "steps-100")
        sys_rows = strace_summary([ctx.init, "run", str(spec)], ctx.work, "steps-100-info", n=8)
        s.notes.append(
            f"Where a step's time goes, for 100 steps: the init process itself executes "
            f"{num(instr)} user-space instructions ({num(instr // 100)} per step; callgrind, "
            "parent only); its system calls by time (`strace -c`, parent only; strace slows "
            "each call): " + ", ".join(f"{name} ×{calls} ({pct:.0f}%)"
                                       for name, calls, _, pct in sys_rows) + ".")
        if not ctx.quick:
            s.notes.append("\n".join(ctx.callgrind_profile(["run", str(spec)], "steps-100", n=8)))
        r = t_init[100] / t_sh[100]
        target = Target("100 steps of `/bin/true`: `init run` vs `sh -c`", "<= 1.5x sh -c",
                        f"sh -c: {ms(t_sh[100])}", f"{ms(t_init[100])} = {r:.2f}x sh -c",
                        r <= 1.5)
        if not target.passed:
            target.profile = ctx.strace_profile(["run", str(spec)], "steps-100")
            target.profile += ["", "See the callgrind profile in section 2."]
        s.targets.append(target)
    else:
        s.notes.append("The 100-step target is checked only when N = 100 is measured.")


# ---------------------------------------------------------------------------------------------
# 2b. Per-step cost with the state journal

def state(ctx, s):
    counts = ctx.p["state_counts"]
    s.about = (
        "What every pod runs: `init run spec.json --state DIR` (the journal each container hands "
        "to the next, HMAC-chained, one append before each record) with a spec of N "
        "`/bin/true` steps, against `/bin/sh -c` running the same N commands "
        f"(N = {', '.join(map(str, counts))}). Each timing run starts from an empty state "
        "directory (hyperfine `--prepare`, not timed); each spec run is checked once first. "
        "The journal's cost per step must not grow with the steps before it.")
    need_init(ctx)
    require_tools("hyperfine")
    key = "ab" * 32
    os.environ["STEPINIT_STATE_KEY"] = key
    try:
        t_init, t_sh, sizes = {}, {}, {}
        for n in counts:
            spec = Path(ctx.work) / f"state-{n}.json"
            sdir = Path(ctx.work) / f"state-{n}"
            write_spec(spec, [{"command": ["/bin/true"]}] * n)
            check_spec_run(ctx, spec, n, timeout=300, extra=["--state", str(sdir)])
            sizes[n] = (sdir / "journal.0").stat().st_size
            script = "; ".join(["/bin/true"] * n)
            runs = ctx.p["step_runs"] if n <= 100 else (ctx.p["step_runs_1000"] if n <= 1000 else 3)
            t = hyperfine([("init", shlex.join([ctx.init, "run", str(spec), "--state", str(sdir)])),
                           ("sh", shlex.join(["/bin/sh", "-c", script]))],
                          runs, max(1, runs // 10), ctx.work, f"state-{n}",
                          rounds=ctx.p["rounds"] if n <= 1000 else 1,
                          prepare={"init": shlex.join(["rm", "-rf", str(sdir)])})
            t_init[n], t_sh[n] = t["init"]["median"], t["sh"]["median"]
    finally:
        del os.environ["STEPINIT_STATE_KEY"]
    s.table(["Steps", "`init run --state` median", "per step", "`sh -c` median", "per step",
             "init / sh", "journal"],
            [(n, ms(t_init[n]), us(t_init[n] / n), ms(t_sh[n]), us(t_sh[n] / n),
              ratio(t_init[n], t_sh[n]), human(sizes[n])) for n in counts])
    s.table(["Between", "init: marginal per step", "sh: marginal per step"],
            [(f"{a} → {b}", us((t_init[b] - t_init[a]) / (b - a)), us((t_sh[b] - t_sh[a]) / (b - a)))
             for a, b in zip(counts, counts[1:])])
    a, b = linear_fit(counts, [t_init[n] for n in counts])
    worst = max(abs(t_init[n] - (a + b * n)) / t_init[n] for n in counts if n >= 100)
    s.notes.append(f"`init run --state`: least-squares fit t ≈ {ms(a)} + N × {us(b)}; the points "
                   f"from N = 100 up lie within {worst * 100:.0f}% of that line.")
    big = counts[-1]
    s.headline = (f"{big} `/bin/true` steps with `--state` take {ms(t_init[big])} against "
                  f"{ms(t_sh[big])} in `sh -c` ({ratio(t_init[big], t_sh[big])}), "
                  f"{us(t_init[big] / big)} per step; the journal grows by "
                  f"{sizes[big] // big} bytes a step.")
    if 1000 in counts:
        r = t_init[1000] / t_sh[1000]
        s.targets.append(Target("1,000 steps with `--state`: `init run` vs `sh -c`", "<= 1.1x sh -c",
                                f"sh -c: {ms(t_sh[1000])}", f"{ms(t_init[1000])} = {r:.2f}x sh -c",
                                r <= 1.1))
    if 1000 in counts and 10000 in counts:
        p1, p10 = t_init[1000] / 1000, t_init[10000] / 10000
        s.targets.append(Target("Linear to 10,000 steps: per-step cost at 10,000 vs at 1,000",
                                "within 20%", f"at 1,000: {us(p1)}", f"at 10,000: {us(p10)} "
                                f"({p10 / p1:.2f}x)", p10 <= 1.2 * p1))


def linear_fit(xs, ys):
    """Least-squares (intercept, slope) of ys against xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


# ---------------------------------------------------------------------------------------------
# 3. Output throughput

def output(ctx, s):
    size, line = ctx.p["output_size"], ctx.p["line_size"]
    s.about = (
        f"{human(size)} of log lines (`yes LINE | head -c {size}`) and a single "
        f"{human(line)} line (`cat` of a file holding {human(line)} of `x` and a "
        "newline), written by a step, relayed by the init in spec mode (framed) into the "
        "sink, against the same generator piped through `cat`. Sink: `/dev/null`, or a pipe "
        "into `cat > /dev/null` (as a container runtime reads a log pipe). Throughput = "
        "bytes / median wall time (hyperfine with a shell; GB = 10^9 bytes). Peak RSS: "
        "VmHWM of the relaying process (the init, or `cat`), sampled from /proc every 5 ms "
        "during a separate run whose output is counted by `wc -c` and checked.")
    need_init(ctx)
    require_tools("hyperfine", "yes", "head", "cat", "wc")
    work = Path(ctx.work)
    text = "2026-11-22T12:00:00Z INFO stepinit bench: one line of a step's log output, 80 bytes"
    gens = []
    g1 = work / "gen-lines.sh"
    g1.write_text(f"yes {shlex.quote(text[:79])} | head -c {size}\n")
    gens.append(("log lines", size, g1))
    big = work / "one-line.txt"
    with open(big, "wb") as f:
        chunk = b"x" * MIB
        for _ in range(line // MIB):
            f.write(chunk)
        f.write(b"\n")
    g2 = work / "gen-one-line.sh"
    g2.write_text(f"exec cat {shlex.quote(str(big))}\n")
    gens.append(("single line", line + 1, g2))
    rows, heads = [], []
    for label, nbytes, gen in gens:
        spec = work / f"{gen.stem}.json"
        write_spec(spec, [{"command": ["/bin/sh", str(gen)]}])
        init_run = shlex.join([ctx.init, "run", str(spec)])
        gen_cmd = shlex.join(["/bin/sh", str(gen)])
        cmds = [
            ("generator alone", f"{gen_cmd} > /dev/null"),
            ("cat", f"{gen_cmd} | cat > /dev/null"),
            ("init run", f"{init_run} > /dev/null"),
            ("cat | pipe", f"{gen_cmd} | cat | cat > /dev/null"),
            ("init run | pipe", f"{init_run} | cat > /dev/null"),
        ]
        t = hyperfine(cmds, ctx.p["output_runs"], 1, ctx.work, f"output-{gen.stem}", shell=True,
                      timeout=900)
        rss_init, out_bytes = relay_peak(ctx, [ctx.init, "run", str(spec)], None, nbytes)
        rss_cat, _ = relay_peak(ctx, ["cat"], ["/bin/sh", str(gen)], nbytes)
        rss = {"cat": rss_cat, "init run": rss_init, "cat | pipe": rss_cat, "init run | pipe": rss_init}
        heads.append(f"{label} ({human(nbytes - (nbytes % MIB))}) at "
                     f"{nbytes / t['init run | pipe']['median'] / 1e9:.2f} GB/s through the init "
                     f"into a pipe (`cat`: {nbytes / t['cat | pipe']['median'] / 1e9:.2f} GB/s), "
                     f"init peak RSS {rss_init:,} kB")
        for name, c in cmds:
            med = t[name]["median"]
            base = t["cat" if "pipe" not in name else "cat | pipe"]["median"]
            rows.append((label, f"`{short(ctx, c)}`",
                         f"{med:.3f} s ({t[name]['min']:.3f}–{t[name]['max']:.3f})",
                         f"{nbytes / med / 1e9:.2f} GB/s",
                         ratio(med, base) if name != "generator alone" else "-",
                         f"{rss[name]:,} kB" if name in rss else "-"))
        s.notes.append(f"{label}: the init's stdout carried {out_bytes:,} bytes for {nbytes:,} "
                       "bytes of step output (the difference: records and framing).")
    s.table(["Output", "Path (files in the temp dir)", "Median (min–max)", "Throughput",
             "Time vs cat", "Relay peak RSS"], rows)
    s.notes.append(f"hyperfine: {ctx.p['output_runs']} runs per command after 1 warm-up run.")
    s.headline = "; ".join(heads) + "."


def relay_peak(ctx, relay, producer, nbytes):
    """Runs `relay` (fed by `producer` when given) with its stdout into `wc -c`, samples the relay's
    VmHWM; returns (peak kB, bytes counted). Checks the relay exits 0 and passed >= nbytes."""
    timeout = 300
    prod = None
    if producer:
        prod = subprocess.Popen(producer, stdout=subprocess.PIPE, start_new_session=True)
    r, w = os.pipe()
    wc = subprocess.Popen(["wc", "-c"], stdin=r, stdout=subprocess.PIPE, start_new_session=True)
    rel = subprocess.Popen(relay, stdin=prod.stdout if prod else subprocess.DEVNULL, stdout=w,
                           stderr=subprocess.PIPE, start_new_session=True)
    os.close(r)
    os.close(w)
    if prod:
        prod.stdout.close()
    try:
        sampler = HwmSampler(rel.pid)
        code = sampler.run_until_exit(rel, timeout)
        err = rel.stderr.read().decode(errors="replace").strip()
        counted = int(wc.communicate(timeout=60)[0].split()[0])
        if prod:
            prod.wait(timeout=60)
    finally:
        for p in (prod, wc, rel):
            if p and p.poll() is None:
                kill_group(p)
    if code != 0 or counted < nbytes or sampler.peak is None:
        raise Failed(f"{shlex.join(relay)} exit {code}, relayed {counted} of {nbytes} bytes, "
                     f"{sampler.samples} RSS samples: {err[-300:]}")
    return sampler.peak, counted


# ---------------------------------------------------------------------------------------------
# 5. Binary size and peak RSS

def size_rss(ctx, s):
    s.about = (
        "File size of each init binary, and its peak RSS (VmHWM from /proc/PID/status) "
        "once its child `sleep` runs: the init is started as `INIT ... sleep 10`, VmHWM is "
        "read when /proc shows its child has exec'd `sleep`, then the init gets SIGTERM "
        f"(forwarded to the child). Median of {ctx.p['rss_reps']} starts; not PID 1 "
        "(a subreaper, as tini -s).")
    need_init(ctx)
    need_tini()
    inits = [("init", ctx.init, [ctx.init, "--"])] + peers_present(s)
    rows, hwm, size, tops = [], {}, {}, {}
    for name, binary, prefix in inits:
        size[name] = os.path.getsize(binary)
        samples = []
        for i in range(ctx.p["rss_reps"]):
            kb, top = hwm_while_sleeping(prefix, want_smaps=(name == "init" and i == 0))
            samples.append(kb)
            if top:
                tops[name] = top
        hwm[name] = statistics.median(samples)
        dynamic = interp(binary)
        static = "?" if dynamic is None else "dynamic (+ libc)" if dynamic else "static"
        rows.append((name, f"`{binary}`", num(size[name]), static,
                     f"{hwm[name]:.0f} kB", f"{min(samples)}–{max(samples)} kB"))
    s.table(["Init", "Binary", "Size (bytes)", "Linking", "VmHWM median", "range"], rows)
    t_size = Target("Binary size of the init", "< 700,000 bytes", f"tini-static: {num(size['tini-static'])} bytes",
                    f"{num(size['init'])} bytes", size["init"] < 700_000)
    if not t_size.passed:
        t_size.profile = ctx.size_profile()
    t_rss = Target("Peak RSS (VmHWM) while the child sleeps", "<= 700 kB",
                   f"tini-static: {hwm['tini-static']:.0f} kB", f"{hwm['init']:.0f} kB", hwm["init"] <= 700)
    if not t_rss.passed:
        t_rss.profile = ["Largest mappings of the init by RSS (/proc/PID/smaps) while its child "
                         "sleeps:", ""] + [f"    {kb:>6} kB  {name}" for kb, name in tops.get("init", [])]
    s.targets += [t_size, t_rss]
    s.headline = ", ".join(f"{name} {num(size[name])} bytes / {hwm[name]:.0f} kB"
                           for name, _, _ in inits) + " (file size / VmHWM while the child sleeps)."


def interp(binary):
    """Whether the ELF has a program interpreter (i.e. is dynamically linked)."""
    try:
        out = run(["readelf", "-l", binary], timeout=20).stdout
    except (Failed, FileNotFoundError):
        return None
    return "Requesting program interpreter" in out


def hwm_while_sleeping(prefix, want_smaps=False, timeout=10):
    p = subprocess.Popen(prefix + ["sleep", "10"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if p.poll() is not None:
                raise Failed(f"{shlex.join(prefix)} sleep exited early ({p.returncode}): "
                             f"{p.stderr.read().decode(errors='replace').strip()[-200:]}")
            if any(comm(c) == "sleep" for c in children(p.pid)):
                break
            if time.monotonic() > deadline:
                raise Failed(f"{shlex.join(prefix)} sleep: child did not start within {timeout}s")
            time.sleep(0.002)
        time.sleep(0.02)  # let the init settle into its wait
        kb = proc_status_kb(p.pid, "VmHWM")
        top = smaps_top(p.pid) if want_smaps else None
        p.terminate()
        p.wait(timeout=timeout)
        return kb, top
    finally:
        if p.poll() is None:
            kill_group(p)


# ---------------------------------------------------------------------------------------------
# 6. criterion benches of the protocol

def criterion(ctx, s):
    s.about = (
        "`cargo bench -p stepinit-bench --bench protocol` (bench/benches/protocol.rs), "
        "release profile as the init. escape: `Framer::user_bytes` on 64 KiB of clean log "
        "text (the no-copy scan), with a marker every 8th byte, and all markers. scan: the "
        "marker search alone (`frame::contains_marker`) next to the standard library's "
        "`<[u8]>::contains` on the same clean 64 KiB, for reference. encode: "
        "`Framer::record` of 1,000 start/end records. decode: `Decoder::feed` in 64 KiB "
        "chunks of a 4 MiB framed log (records every 64 KiB), of a marker-heavy one, and "
        "of 10,000 records. spec_parse: `serde_json` into `protocol::Spec` plus "
        "`validate()`, 100 and 10,000 steps. Throughput in GB/s (10^9 bytes) of input; "
        "median of criterion's samples.")
    require_tools("cargo")
    env = dict(os.environ, CRITERION_HOME=str(Path(ctx.work) / "criterion"))
    cargo = ["cargo", "bench", "-p", "stepinit-bench", "--bench", "protocol",
             "--profile", ctx.p["criterion_profile"]]
    run(cargo + ["--no-run"], timeout=1200, cwd=ctx.root, env=env)
    t0 = time.monotonic()
    run(cargo + ["--", "--noplot", *ctx.p["criterion_args"]], timeout=900, cwd=ctx.root, env=env)
    rows = []
    for bench in sorted(Path(env["CRITERION_HOME"]).glob("*/*/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        med_ns = est["median"]["point_estimate"]
        nbytes = (meta.get("throughput") or {}).get("Bytes")
        rows.append((meta["group_id"], meta.get("function_id") or "", num(nbytes) if nbytes else "-",
                     f"{med_ns / 1e3:,.1f} µs",
                     f"{nbytes / med_ns:.2f} GB/s" if nbytes else "-"))
    if not rows:
        raise Failed("criterion wrote no estimates (CRITERION_HOME layout changed?)")
    order = ["escape", "scan", "encode", "decode", "spec_parse"]
    rows.sort(key=lambda r: (order.index(r[0]) if r[0] in order else 9, r[1]))
    s.table(["Group", "Benchmark", "Input bytes", "Median time", "Throughput"], rows)
    tp = {f"{g}/{b}": t for g, b, _, _, t in rows}

    def pick(*parts):
        return [f"{label} {tp[key]}" for key, label in parts if key in tp]

    scan = []
    if "scan/contains_marker" in tp and "scan/std_slice_contains" in tp:
        scan = [f"marker scan {tp['scan/contains_marker']} (std `contains` on the same data: "
                f"{tp['scan/std_slice_contains']})"]
    s.headline = ", ".join(
        pick(("escape/clean", "escape (clean)"), ("escape/marker_every_8", "escape (1/8 markers)"))
        + scan
        + pick(("encode/records_1000", "encode"), ("decode/output_with_records", "decode"),
               ("spec_parse/steps_10000", "spec parsing"))) + "."
    s.notes.append(f"`{' '.join(cargo)} -- {' '.join(ctx.p['criterion_args'])}`; measuring "
                   f"took {time.monotonic() - t0:.0f} s (build excluded).")
    if ctx.p["criterion_profile"] == "dev":
        s.notes.append("**Quick mode: dev profile (unoptimized), these throughputs are not the "
                       "protocol's; the full run measures the release profile.**")
