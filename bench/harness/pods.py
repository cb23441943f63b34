"""Section 4: pods in podman (runc, tests/podman/containers.conf).

The same N steps as:
- merged:   setup + 1 container running all N steps (`init run SPEC --group 0`);
- isolated: setup + N containers, container i running step i (`init run SPEC --group i --state`),
            all but the last as initContainers (what a controller generates for isolated steps);
- no init:  N containers running the step directly (initContainers + 1), no setup.
Each step is busybox `adjtimex`, which prints the wall clock with microseconds (busybox `date` has
no sub-second format): the interval between two consecutive steps' clocks is the step-to-step
cost, including, across containers, the handoff (step exit, init exit, container teardown, next
container start, init start, step spawn).
The pod YAML (a ConfigMap with the spec, and the Pod) is written here, in the layout of
tests/e2e: shared emptyDir at /stepinit, spec ConfigMap at /spec. Finished initContainers are kept
(annotation `io.podman.annotations.init.container.type: always`) so that the exit code and logs
of every container can be read afterwards.
"""

import json
import os
import re
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from .util import Failed, NotMeasured, require_tools, run

INIT_IMAGE = "localhost/stepinit/init:dev"
STEP_IMAGE = "localhost/stepinit/test-busybox:dev"
SHARED, SPEC_DIR, STATE = "/stepinit", "/spec", "/stepinit/state"
MARKER = 0x1E
STEP = ["/bin/adjtimex"]


class Podman:
    def __init__(self, root):
        self.env = dict(os.environ, CONTAINERS_CONF=str(Path(root) / "tests/podman/containers.conf"))

    def __call__(self, *args, timeout=120, check=True):
        return run(["podman", *args], timeout=timeout, env=self.env, check=check)


def pod_yaml(name, variant, n):
    """(YAML text, container names in start order) for one pod of the given variant."""
    steps = [{"command": STEP, "container": i if variant == "isolated" else 0}
             for i in range(n)]
    spec = {"version": 1, "steps": steps}
    if variant == "isolated":
        spec["containers"] = [{"name": f"c{i}"} for i in range(n)]
    # Volume names are per pod: podman kube play shares emptyDir volumes between pods by name.
    shared, state, home = f"{name}-shared", f"{name}-state", f"{name}-home"
    key = os.urandom(32).hex()

    def mounts(setup):
        # As stepctl lays pods out: the steps only read the shared volume; the state and the
        # HOMEs are volumes of their own inside it.
        return [{"name": shared, "mountPath": SHARED, "readOnly": not setup},
                {"name": state, "mountPath": f"{SHARED}/state"},
                {"name": home, "mountPath": f"{SHARED}/home"},
                {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}]

    def ctr(cname, image, command, volume_mounts=None):
        return {"name": cname, "image": image, "command": command,
                "volumeMounts": mounts(cname == "setup") if volume_mounts is None else volume_mounts}

    def group(i):
        c = ctr(f"c{i}", STEP_IMAGE, [f"{SHARED}/init", "run", f"{SPEC_DIR}/spec.json",
                                      "--group", str(i), "--state", STATE])
        # The state journals' key, as every pod of stepctl has it (see protocol/README.md).
        c["env"] = [{"name": "STEPINIT_STATE_KEY", "value": key}]
        return c

    setup = ctr("setup", INIT_IMAGE, ["/init", "setup", SHARED, "--spec", f"{SPEC_DIR}/spec.json"])
    if variant == "merged":
        ctrs = [setup, group(0)]
    elif variant == "isolated":
        ctrs = [setup] + [group(i) for i in range(n)]
    else:
        # Nothing of the init's: its volume would be empty and read-only, with nowhere to mount
        # the state and the HOMEs.
        ctrs = [ctr(f"c{i}", STEP_IMAGE, STEP, volume_mounts=[]) for i in range(n)]
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-spec"},
                 "data": {"spec.json": json.dumps(spec)}}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name,
                     "annotations": {"io.podman.annotations.init.container.type": "always"}},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": ctrs[:-1],
            "containers": ctrs[-1:],
            "volumes": [{"name": shared, "emptyDir": {}}, {"name": state, "emptyDir": {}},
                        {"name": home, "emptyDir": {}},
                        {"name": "spec", "configMap": {"name": f"{name}-spec"}}],
        },
    }
    # JSON is YAML.
    text = json.dumps(configmap, indent=1) + "\n---\n" + json.dumps(pod, indent=1) + "\n"
    return text, [f"{name}-{c['name']}" for c in ctrs]


def play_once(pm, work, variant, n, timeout):
    """Plays one pod to its end and checks it; returns {"total", "first_step", "step_times"}:
    seconds from `kube play` to the last container's exit and to the first step, and each step's
    clock (epoch seconds) in order."""
    name = f"stepinit-bench-{variant.replace(' ', '')}-{uuid.uuid4().hex[:8]}"
    text, names = pod_yaml(name, variant, n)
    path = Path(work) / f"{name}.yaml"
    path.write_text(text)
    try:
        t0 = time.time()
        pm("kube", "play", str(path), timeout=timeout)
        pm("wait", "--interval", "10ms", names[-1], timeout=timeout)
        # podman's FinishedAt can be earlier than the last step's own clock: time the wait.
        total = time.time() - t0
        for c in names:
            exit_code = pm("inspect", "--type", "container", "--format", "{{.State.ExitCode}}",
                           c).stdout.strip()
            if exit_code != "0":
                raise Failed(f"{variant} pod: container {c} exited {exit_code}: " + logs_tail(pm, c))
        stamps = []
        for c in names if variant == "no init" else names[1:]:
            stamps += step_clocks(pm("logs", c, timeout=30).stdout)
        if len(stamps) != n:
            raise Failed(f"{variant} pod: {len(stamps)} step clocks in the logs, expected {n}")
        if variant != "no init":
            check_done(pm, names[-1], variant)
        return {"total": total, "first_step": stamps[0] - t0,
                "step_times": stamps}
    finally:
        pm("pod", "rm", "-f", "-t", "0", name, check=False, timeout=60)
        for volume in (f"{name}-spec", f"{name}-shared", f"{name}-state", f"{name}-home"):
            pm("volume", "rm", "-f", volume, check=False, timeout=60)


def step_clocks(log):
    """The clocks busybox adjtimex printed (`time.tv_sec: S` / `time.tv_usec: U`), in order."""
    secs = re.findall(r"time\.tv_sec:\s+(\d+)", log)
    usecs = re.findall(r"time\.tv_usec:\s+(\d+)", log)
    return [int(a) + int(b) / 1e6 for a, b in zip(secs, usecs)]


def logs_tail(pm, c):
    o = pm("logs", c, check=False, timeout=30)
    return " | ".join((o.stdout + o.stderr).strip().splitlines()[-3:])


def check_done(pm, c, variant):
    """The last container's log must end with a passed `done` record marked last."""
    out = pm("logs", c, timeout=30).stdout
    # split("\n"), not splitlines(): str.splitlines() also splits at 0x1E, the marker.
    dones = [json.loads(line[1:]) for line in out.split("\n")
             if line.startswith(chr(MARKER) + "{") and '"t":"done"' in line]
    if not dones or dones[-1].get("status") != "passed" or not dones[-1].get("last"):
        raise Failed(f"{variant} pod: no passed final done record in {c}'s log: {dones[-1:]}")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def quartiles(xs):
    if len(xs) < 4:
        return "-"
    q = statistics.quantiles(xs, n=4)
    return f"{q[0] * 1e3:.1f}–{q[2] * 1e3:.1f} ms"


def iqr(xs):
    """Interquartile range (0 with fewer than 4 samples)."""
    if len(xs) < 4:
        return 0.0
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def pods(ctx, s):
    n = ctx.p["pod_steps"]
    s.about = (
        f"The same {n} steps as one pod each way, `podman kube play` with runc "
        "(`CONTAINERS_CONF=tests/podman/containers.conf`): "
        f"**merged**: a setup container (`{INIT_IMAGE}`, `init setup`) then 1 container whose "
        f"init runs the {n} steps; **isolated**: setup then {n} containers, each an init running "
        f"one step (`init run --group i --state`), all but the last as initContainers; **no "
        f"init**: {n} containers running the step themselves. Each step is busybox `adjtimex` in "
        f"`{STEP_IMAGE}`, which prints the clock in microseconds: the interval between two "
        "consecutive steps' clocks is the step-to-step cost; across two containers it is the "
        "**handoff gap** (step exit, init exit, container teardown, next container start, init "
        "start, step spawn). Total: from starting `podman kube play` until `podman wait` "
        "(polling every 10 ms) sees the last container exit. "
        "Each pod is checked: every container exits 0, every step printed its clock, and the "
        "last init prints a passed final `done` record. "
        f"{ctx.p['pod_runs']} pod(s) per variant, interleaved; medians.")
    require_tools("podman")
    if not ctx.init:
        raise NotMeasured(ctx.init_missing)
    pm = Podman(ctx.root)
    build = Path(ctx.root) / "images/build"
    if ctx.rebuild_images and build.exists():
        # The init image must carry the init measured elsewhere in this run.
        ctx.log("building the images: images/build")
        run([str(build)], timeout=900, cwd=ctx.root, env=pm.env)
        s.notes.append("Images rebuilt by `images/build` from this checkout at the start of the "
                       "section.")
    else:
        s.notes.append("Images used as found (quick mode, `--no-build` or `--init`): the init "
                       "image may carry another build of the init.")
    for image in (INIT_IMAGE, STEP_IMAGE):
        if pm("image", "exists", image, check=False, timeout=60).returncode != 0:
            raise NotMeasured(f"image {image} missing (build it: images/build)")
    variants = ["merged", "isolated", "no init"]
    res = {v: [] for v in variants}
    timeout = 60 + 15 * n
    for _ in range(ctx.p["pod_runs"]):
        for v in variants:
            res[v].append(play_once(pm, ctx.work, v, n, timeout))
    total = {v: med([r["total"] for r in res[v]]) for v in variants}
    first = {v: med([r["first_step"] for r in res[v]]) for v in variants}
    gaps = {v: [b - a for r in res[v] for a, b in zip(r["step_times"], r["step_times"][1:])]
            for v in variants}
    interval = {v: med(gaps[v]) for v in variants}
    ctrs = {"merged": "setup + 1", "isolated": f"setup + {n}", "no init": f"{n}"}
    s.table(["Variant", "Containers", "Total median", "vs merged", "play → first step",
             "Step to next step: median (quartiles, samples)"],
            [(v, ctrs[v], f"{total[v]:.2f} s", f"{total[v] / total['merged']:.2f}x",
              f"{first[v]:.2f} s", f"{interval[v] * 1e3:.1f} ms ({quartiles(gaps[v])}, "
              f"{len(gaps[v])})") for v in variants])
    saved = total["isolated"] - total["merged"]
    s.headline = (f"{n} steps in 1 merged container: {total['merged']:.2f} s; in {n} isolated "
                  f"containers with the init: {total['isolated']:.2f} s; in {n} containers "
                  f"without any init: {total['no init']:.2f} s. Handoff gap "
                  f"{interval['isolated'] * 1e3:.0f} ms with the init vs "
                  f"{interval['no init'] * 1e3:.0f} ms without.")
    s.notes.append(f"Merging the {n} steps into one container saves {saved:.2f} s against "
                   f"isolated containers ({saved / max(n - 1, 1) * 1e3:.0f} ms per container "
                   "removed).")
    diff = interval["isolated"] - interval["no init"]
    spread = max(iqr(gaps["isolated"]), iqr(gaps["no init"]))
    verdict = (f"the init adds {diff * 1e3:.0f} ms per handoff" if abs(diff) > spread / 2 else
               f"the difference ({diff * 1e3:+.0f} ms) is within the spread of the samples: no "
               "measurable handoff cost beyond the runtime's")
    s.notes.append(f"Handoff gap between two containers (last step of one to first step of the "
                   f"next): {interval['isolated'] * 1e3:.0f} ms with the init, "
                   f"{interval['no init'] * 1e3:.0f} ms without any init (the runtime alone); "
                   f"{verdict}. Within one container the init moves from step to step in "
                   f"{interval['merged'] * 1e3:.1f} ms.")
