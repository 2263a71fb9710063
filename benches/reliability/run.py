#!/usr/bin/env python3
"""The reliability campaign of imageserving: fault injection against the release binary.

    python3 benches/reliability/run.py [scenario ...] [--quick] [--keep] [--no-supervisord]

Scenarios: crash_storm (1), supervisor_kill (2), restart_loops (3), misbehaving (4),
control_channel (5), image_inputs (7), restarts (9), frozen (10). Without a name, all run in that order. Each prints its own Markdown table,
then a summary table. Scenarios 2 and 4 also run the same checks against supervisord (installed
from PyPI into a throw-away virtual environment; see supervisord.py) and show its figures beside
ours; its misses never count as ours. `--no-supervisord` skips that comparison.
Every scenario uses a temporary home and ephemeral loopback ports, is bounded in time, and in a
`finally` runs `imageserving --home H stop` and SIGKILLs whatever still carries the home's marker.
Build first: `cargo build --release`. Run as root (scenario 5 switches a child to uid 65534).
Scenario 6 is `tests/fuzz/` and `fuzz/`; scenario 8 is the e2e tests named `a_full_*` in
`tests/e2e/policy.rs`.
"""

import argparse
import os
import platform
import random
import resource
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import supervisord as sd  # noqa: E402
from common import (BINARY, SETTINGS, http_get_kind, STATUS_REQUEST, Home, Result, children_of, components, stack_config, STACK_BUDGET,  # noqa: E402
                    control_call, env_of, field, free_ports, read_cmdline, ms, parse_log, pct, pid_alive,
                    proc_stat, still_alive, timed_status, vm_rss_kib, wait_for, with_start)
from image_inputs import image_inputs  # noqa: E402
from misbehaving import misbehaving  # noqa: E402
from restarts import restarts  # noqa: E402
from frozen import frozen  # noqa: E402


# =========================================================================== 1. crash storm

def crash_storm(quick, keep):
    r = Result("Crash storm under load", 1)
    duration = 15 if quick else 60
    ps_port, is_port, svg_port = free_ports(3)
    home = Home(stack_config(ps_port, is_port, svg_port, STACK_BUDGET), keep)
    stop = threading.Event()
    http_counts = {}
    http_lat = {"200": [], "503": []}
    http_unexplained = []
    status_lat, status_err = [], []
    kills = []  # (monotonic time, component, pid)
    kill_states = {}  # the victim's state when it was killed
    failed = True
    try:
        rc, out, err = home.cli("start", timeout=60)
        if rc != 0:
            raise RuntimeError(f"start exited {rc}: {out}{err}")
        ps_down = []  # (t0, t1) windows in which ps had been killed and was not back yet

        def http_client():
            while not stop.is_set():
                t0 = time.monotonic()
                kind, dt = http_get_kind(ps_port)
                http_counts[kind] = http_counts.get(kind, 0) + 1
                if kind in http_lat:
                    http_lat[kind].append(dt)
                elif kind not in ("refused",):
                    http_unexplained.append((t0, t0 + dt, kind))
                if kind == "refused":
                    time.sleep(0.02)

        def status_client():
            while not stop.is_set():
                dt, ans, e = timed_status(home.sock, timeout=5)
                status_lat.append(dt)
                if e:
                    status_err.append(e)
                time.sleep(max(0.0, 0.1 - dt))

        threads = [threading.Thread(target=http_client, daemon=True),
                   threading.Thread(target=status_client, daemon=True)]
        for t in threads:
            t.start()
        seed = int(time.time())
        rng = random.Random(seed)
        t_end = time.monotonic() + duration
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.5, 2.0))
            _, ans, e = timed_status(home.sock)
            if not ans:
                continue
            alive = [(c["name"], c["pid"]) for c in ans["components"] if c["pid"]]
            if not alive:
                continue
            name, pid = rng.choice(alive)
            # Only ever a process of this home's tree and of that component.
            if env_of(pid, "IMAGESERVING_TREE") != home.path or env_of(pid, "IMAGESERVING_COMPONENT") != name:
                continue
            state = components(ans)[name]["state"]
            try:
                os.kill(pid, signal.SIGKILL)
                kills.append((time.monotonic(), name, pid))
                kill_states[state] = kill_states.get(state, 0) + 1
            except ProcessLookupError:
                pass
        stop.set()
        for t in threads:
            t.join(15)
        # Let the last restarts finish so that the final status counts them.
        wait_for(lambda: all(c["state"] == "RUNNING" for c in (timed_status(home.sock)[1] or {"components": [{"state": ""}]})["components"]), 20, 0.1)
        _, final, _ = timed_status(home.sock)
        restarts = sum(c["restarts"] for c in final["components"]) if final else None
        states = {c["name"]: c["state"] for c in final["components"]} if final else {}

        # Downtime from the supervisor's own transitions: leaving RUNNING -> next "-> RUNNING".
        events = parse_log(home.log)
        down_since, downtimes = {}, {"ps": [], "is": [], "svg": []}
        killed_lines = {"ps": 0, "is": 0, "svg": 0}
        for t, _lvl, msg in events:
            comp = field(msg, "component")
            if comp not in downtimes:
                continue
            if msg.startswith("process killed by signal 9"):
                killed_lines[comp] += 1
                down_since.setdefault(comp, t)
            elif " -> " in msg.split(" component=")[0]:
                frm, to = msg.split(" component=")[0].split(" -> ")
                if frm == "RUNNING":
                    down_since.setdefault(comp, t)
                if to == "RUNNING" and comp in down_since:
                    downtimes[comp].append(t - down_since.pop(comp))

        # Resets/timeouts explained by ps itself being killed during the request.
        ps_kills = [t for t, n, _ in kills if n == "ps"]
        unexplained = [u for u in http_unexplained
                       if u[2] not in ("200", "503") and not any(u[0] - 0.05 <= k <= u[1] + 0.05 for k in ps_kills)]
        other_status = {k: v for k, v in http_counts.items() if k not in ("200", "503", "refused", "reset", "timeout")}

        by_comp = {n: sum(1 for _, c, _ in kills if c == n) for n in ("ps", "is", "svg")}
        r.load = (f"{duration} s; 1 HTTP client on ps (10 s timeout), status every 100 ms over the socket; "
                  f"max_restarts=1000, max_window=60s, backoff_max=1s per component")
        r.faults = f"{len(kills)} × SIGKILL of a random component (ps {by_comp['ps']}, is {by_comp['is']}, svg {by_comp['svg']})"
        r.add("budget (per component)", "max_restarts = 1000, max_window = \"60s\", backoff_max = \"1s\" (others default: start_secs 1s, stable_after 30s)")
        r.add("duration", f"{duration} s")
        r.add("faults injected (SIGKILL)", f"{len(kills)} (ps {by_comp['ps']}, is {by_comp['is']}, svg {by_comp['svg']})")
        r.add("victim's state when killed", ", ".join(f"{k} {v}" for k, v in sorted(kill_states.items())))
        r.add("random seed", seed)
        r.add("'killed by signal 9' lines in supervisor.log", sum(killed_lines.values()), "= faults")
        r.add("restarts performed (sum of `restarts`)", restarts, "≥ faults")
        r.add("final states", ", ".join(f"{k} {v}" for k, v in states.items()), "all RUNNING")
        for n in ("is", "svg", "ps"):
            d = downtimes[n]
            r.add(f"downtime {n} p50 / p99 / max (n={len(d)})",
                  f"{ms(pct(d, 50))} / {ms(pct(d, 99))} / {ms(max(d) if d else None)}")
        total = sum(http_counts.values())
        r.add("HTTP requests", total)
        r.add("HTTP answers by kind", ", ".join(f"{k}: {v}" for k, v in sorted(http_counts.items())),
              "200 and 503 only (+ refused/reset while ps is killed)")
        r.add("HTTP 200 latency p50 / p99", f"{ms(pct(http_lat['200'], 50))} / {ms(pct(http_lat['200'], 99))}")
        r.add("HTTP 503 latency p50 / p99 / max",
              f"{ms(pct(http_lat['503'], 50))} / {ms(pct(http_lat['503'], 99))} / {ms(max(http_lat['503']) if http_lat['503'] else None)}",
              "fast")
        r.add("resets/timeouts/other not explained by a ps kill", len(unexplained), "0")
        r.add("status calls / failed", f"{len(status_lat)} / {len(status_err)}", "failed 0")
        r.add("status latency p50 / p99 / max",
              f"{ms(pct(status_lat, 50))} / {ms(pct(status_lat, 99))} / {ms(max(status_lat) if status_lat else None)}")
        if status_err:
            r.fail(f"{len(status_err)} status calls failed (first: {status_err[0]})")
        if other_status:
            r.fail(f"HTTP statuses other than 200/503: {other_status}")
        if unexplained:
            r.fail(f"{len(unexplained)} resets/timeouts not explained by a ps kill: {unexplained[:3]}")
        if any(s != "RUNNING" for s in states.values()):
            r.fail(f"not all RUNNING at the end: {states}")
        if restarts is not None and restarts < len(kills):
            r.fail(f"restarts {restarts} < faults {len(kills)}")
        r.lost = (f"{http_counts.get('refused', 0)} refused + {http_counts.get('reset', 0)} reset requests, all while ps was killed; "
                  f"{http_counts.get('503', 0)} fast 503s while is was down" if not unexplained else "see failures")
        failed = bool(r.failures)
    finally:
        stop.set()
        home.close(failed)
    return r


# =========================================================================== 2. supervisor SIGKILL

def supervisor_kill_config():
    fast = 'start_secs = "300ms"\nstop_timeout = "2s"\n'
    return f"""[supervisor]
start_wait = "4s"

[components.s1]
command = ["sleep", "1000"]
{fast}
[components.s2]
command = ["sleep", "1000"]
{fast}
[components.s3]
command = ["sh", "-c", "trap '' TERM; exec sleep 1000"]
{fast}
[components.fork]
command = ["sh", "-c", "setsid sleep 1000 & exec sleep 1000"]
{fast}
[components.crash]
command = ["sh", "-c", "sleep 0.2; exit 1"]
backoff_initial = "300ms"
backoff_max = "1s"
max_restarts = 100000
max_window = "60s"
"""


SLEEPERS = ("s1", "s2", "s3", "fork")


def setsid_grandchildren(home):
    """The `setsid sleep 1000` escapees of the fork component: marked, not in the main's group."""
    out = []
    for pid in home.marked():
        if env_of(pid, "IMAGESERVING_COMPONENT") == "fork":
            st = proc_stat(pid)
            if st and os.getsid(pid) == pid:
                out.append((pid, st[2]))
    return out


def supervisor_kill(quick, keep):
    r = Result("Supervisor killed with SIGKILL", 2)
    rounds = 5 if quick else 20
    home = Home(supervisor_kill_config(), keep)
    rng = random.Random(2)
    # The look-alike: same command line as a sleeper, started by us, without the marker.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGESERVING_")}
    lookalike = subprocess.Popen(["sleep", "1000"], env=env)
    la_start = proc_stat(lookalike.pid)[2]
    figures = {"children_alive_after_2s": 0, "escaped_after_kill": 0, "escaped_after_start": 0,
               "clean_starts": 0, "lookalike_ok": 0, "start_rc": {}, "old_mains_after_start": 0}
    modes = []
    failed = True
    try:
        rc, out, err = home.cli("start", timeout=30)
        if rc not in (0, 1):
            raise RuntimeError(f"first start exited {rc}: {out}{err}")
        for i in range(rounds):
            mode = ["starting", "stopping", "backoff"][i % 3]
            modes.append(mode)
            bg = None
            if mode == "starting":
                home.cli("stop", timeout=30)
                old = home.supervisor_pid()
                bg = home.cli_bg("start")
                sup = wait_for(lambda: (home.supervisor_pid() if home.supervisor_pid() not in (None, old)
                                        and pid_alive(home.supervisor_pid()) else None), 5, 0.005)
                time.sleep(rng.uniform(0.0, 0.8))
            elif mode == "stopping":
                sup = home.supervisor_pid()
                bg = home.cli_bg("stop")
                # s3 ignores SIGTERM, so the stop lasts stop_timeout (2 s): kill inside it.
                time.sleep(rng.uniform(0.05, 1.5))
            else:
                sup = home.supervisor_pid()
                wait_for(lambda: (timed_status(home.sock)[1] or {}).get("components") and
                         components(timed_status(home.sock)[1])["crash"]["state"] == "BACKOFF", 5, 0.01)
                time.sleep(rng.uniform(0.0, 0.1))
            prev_escapees = setsid_grandchildren(home)
            kids = children_of(sup) if sup else []
            if sup:
                try:
                    os.kill(sup, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if bg:
                try:
                    bg.wait(10)
                except subprocess.TimeoutExpired:
                    bg.kill()
                    bg.wait()
            time.sleep(2.0)
            alive_kids = [p for p, st in kids if pid_alive(p, st)]
            figures["children_alive_after_2s"] += len(alive_kids)
            if alive_kids:
                r.fail(f"round {i + 1} ({mode}): direct children alive 2 s after the kill: "
                       + ", ".join(f"{p} {proc_stat(p)}" for p in alive_kids))
            escaped = [(p, proc_stat(p)[2]) for p in home.marked() if proc_stat(p)]
            figures["escaped_after_kill"] += len(escaped)
            # The next start sweeps them: none of the processes marked before it may survive it.
            rc, out, err = home.cli("start", timeout=30)
            figures["start_rc"][rc] = figures["start_rc"].get(rc, 0) + 1
            stray = [(p, read_cmdline(p)) for p, st in escaped if pid_alive(p, st)]
            stray_old = [p for p, st in prev_escapees if pid_alive(p, st)]
            figures["old_mains_after_start"] += len(still_alive(kids))
            figures["escaped_after_start"] += len(stray)
            if stray or stray_old:
                r.fail(f"round {i + 1} ({mode}): after start, marked processes not of the new supervisor: "
                       f"{stray} (old setsid grandchildren alive: {stray_old})")
            _, ans, e = timed_status(home.sock)
            states = {n: c["state"] for n, c in components(ans).items()} if ans else {}
            clean = rc in (0, 1) and all(states.get(n) == "RUNNING" for n in SLEEPERS)
            figures["clean_starts"] += clean
            if not clean:
                r.fail(f"round {i + 1} ({mode}): start rc {rc}, states {states}, {err.strip()[-300:]}")
            if pid_alive(lookalike.pid, la_start):
                figures["lookalike_ok"] += 1
            else:
                r.fail(f"round {i + 1} ({mode}): the look-alike `sleep 1000` (pid {lookalike.pid}) was killed")
        # The same rounds against supervisord (not counted as our failures).
        o = None
        if SETTINGS.get("supervisord", True):
            try:
                o = supervisord_kill_rounds(rounds, lookalike, la_start, keep)
            except Exception as e:  # noqa: BLE001 - supervisord's trouble is reported, never ours
                o = {"error": f"{type(e).__name__}: {e}"}
            r.other = sd.NAME
            r.other_failures = list(o.get("missed", [])) + ([f"the run itself failed: {o['error']}"] if "error" in o else [])
            r.other_lost = "nothing (no data in this scenario)"

        def other(key, fmt=str):
            if o is None:
                return None
            return fmt(o[key]) if key in o else "—"

        r.load = f"{rounds} rounds (modes: {', '.join(sorted(set(modes)))}); 5 components (3 sleepers, 1 setsid forker, 1 crash-looper)"
        r.faults = f"{rounds} × SIGKILL of the supervisor (while starting, stopping, in BACKOFF)"
        r.add("settings", "start_secs 300ms, stop_timeout 2s; crash-looper backoff 300ms–1s, max_restarts 100000", "",
              other("settings"))
        r.add("rounds", f"{rounds} ({modes.count('starting')} starting, {modes.count('stopping')} stopping, {modes.count('backoff')} backoff)",
              "", other("rounds"))
        r.add("direct children alive 2 s after the kill", figures["children_alive_after_2s"], "0 (PDEATHSIG)",
              other("children_alive_after_2s", lambda v: f"{v} of {o['children']}"))
        r.add("escaped descendants found after the kill (marked, alive after 2 s)", figures["escaped_after_kill"],
              "expected: the setsid grandchildren", other("escaped_after_kill"))
        r.add("escaped descendants found after the next start", figures["escaped_after_start"], "0",
              other("escaped_after_start"))
        r.add("the killed supervisor's direct children still running beside the new ones after the next start",
              figures["old_mains_after_start"], "0", other("old_mains_after_start"))
        r.add("clean starts (s1 s2 s3 fork RUNNING; for imageserving also rc 0 or 1)", f"{figures['clean_starts']} / {rounds}", f"{rounds}",
              other("clean_starts", lambda v: f"{v} / {rounds}"))
        r.add("start exit codes", ", ".join(f"{k}: {v}" for k, v in sorted(figures["start_rc"].items())),
              "1 (crash-looper never runs)", other("start_rc"))
        r.add("look-alike `sleep 1000` survived", f"{figures['lookalike_ok']} / {rounds}", f"{rounds}",
              other("lookalike_ok", lambda v: f"{v} / {rounds}"))
        if o is not None and "leftovers" in o:
            r.add("processes left by the supervisor that the script had to kill after the round", 0, "",
                  other("leftovers"))
        r.lost = "nothing" if not r.failures else "see failures"
        failed = bool(r.failures)
    finally:
        home.close(failed)
        lookalike.kill()
        lookalike.wait()
    return r


def supervisord_kill_rounds(rounds, lookalike, la_start, keep):
    """Scenario 2's rounds against supervisord: the same programs, moments and checks.

    supervisord runs as `supervisord -n` in the background. "start" is starting supervisord (its
    programs start with it) and waiting until s1, s2, s3 and fork are RUNNING; "stop" is its
    `shutdown`. After each round's checks, the script kills what the kill left behind, so that
    the rounds stay independent and the processes do not pile up.
    """
    base = {"startsecs": 1, "stopwaitsecs": 2, "stopasgroup": True, "killasgroup": True, "autorestart": True}
    progs = {
        "s1": {"command": "sleep 1000", **base},
        "s2": {"command": "sleep 1000", **base},
        "s3": {"command": "sh -c \"trap '' TERM; exec sleep 1000\"", **base},
        "fork": {"command": "sh -c \"setsid sleep 1000 & exec sleep 1000\"", **base},
        "crash": {"command": "sh -c \"sleep 0.2; exit 1\"", **base, "startretries": 100000},
    }
    rng = random.Random(3)
    out = {"settings": "startsecs=1 (its minimum: whole seconds), stopwaitsecs=2, stopasgroup=true, killasgroup=true, "
                       "autorestart=true; crash-looper startretries=100000 (its backoff: 1 s more per retry)",
           "children": 0, "children_alive_after_2s": 0, "escaped_after_kill": 0, "escaped_after_start": 0,
           "clean_starts": 0, "lookalike_ok": 0, "leftovers": 0, "old_mains_after_start": 0, "missed": []}
    modes = []
    sv = sd.Supervisord(progs, keep)
    try:
        sv.start()
        if not sv.wait_ready(15):
            raise RuntimeError("supervisord did not answer within 15 s")
        sv.wait_states(SLEEPERS, "RUNNING", 15)
        for i in range(rounds):
            mode = ["starting", "stopping", "backoff"][i % 3]
            modes.append(mode)
            if mode == "starting":
                sv.shutdown()
                if not sv.wait_exit(15):
                    sv.kill()
                pid = sv.start()
                wait_for(lambda: sv.pidfile_pid() == pid, 5, 0.005)
                time.sleep(rng.uniform(0.0, 0.8))
            elif mode == "stopping":
                pid = sv.pid()
                sv.shutdown()
                time.sleep(rng.uniform(0.05, 1.5))
            else:
                pid = sv.pid()
                wait_for(lambda: sv.states().get("crash") == "BACKOFF", 10, 0.01)
                time.sleep(rng.uniform(0.0, 0.1))
            kids = children_of(pid) if pid else []
            out["children"] += len(kids)
            sv.kill()
            time.sleep(2.0)
            alive_kids = still_alive(kids)
            out["children_alive_after_2s"] += len(alive_kids)
            escaped = with_start(sv.marked())
            out["escaped_after_kill"] += len(escaped)
            sv.start()
            ok = sv.wait_ready(10)
            st = sv.wait_states(SLEEPERS, "RUNNING", 10) if ok else {}
            clean = ok and all(st.get(n) == "RUNNING" for n in SLEEPERS)
            out["clean_starts"] += clean
            stray = still_alive(escaped)
            out["escaped_after_start"] += len(stray)
            out["old_mains_after_start"] += len(still_alive(kids))
            if pid_alive(lookalike.pid, la_start):
                out["lookalike_ok"] += 1
            # Clean up what the kill left behind (the new supervisord's programs are not touched).
            out["leftovers"] += len(stray)
            for p, _ in stray:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for(lambda: not still_alive(stray), 5, 0.01)
            if not clean:
                out["missed"].append(f"round {i + 1} ({mode}): start not clean: {st}")
        out["rounds"] = f"{rounds} ({modes.count('starting')} starting, {modes.count('stopping')} stopping, {modes.count('backoff')} backoff)"
        out["start_rc"] = "— (supervisord -n in the background)"
        if out["children_alive_after_2s"]:
            out["missed"].append(f"{out['children_alive_after_2s']} of {out['children']} direct children alive 2 s after the kill")
        if out["escaped_after_start"]:
            out["missed"].append(f"{out['escaped_after_start']} escaped processes alive after the next start")
        if out["lookalike_ok"] != rounds:
            out["missed"].append(f"the look-alike was killed ({out['lookalike_ok']} / {rounds})")
    finally:
        sv.close()
    return out


# =========================================================================== 3. restart loops

def restart_loops(quick, keep):
    r = Result("Restart loops", 3)
    (hang_port,) = free_ports(1)
    budget = 'backoff_initial = "100ms"\nmax_restarts = 6\nmax_window = "60s"\n'
    cfg = f"""[supervisor]
start_wait = "1s"

[components.instant]
command = ["sh", "-c", "exit 1"]
{budget}
[components.late]
command = ["sh", "-c", "sleep 1.5; exit 1"]
{budget}
[components.hang]
command = ["sleep", "1000"]
port = {hang_port}
start_timeout = "2s"
{budget}"""
    home = Home(cfg, keep)
    names = ("instant", "late", "hang")
    lat, errs = [], []
    seen = {n: [] for n in names}  # (t, state, pid)
    failed = True
    try:
        home.cli_bg("start").wait(30)
        deadline = time.monotonic() + 45
        fatal = {}
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            dt, ans, e = timed_status(home.sock, timeout=5)
            lat.append(dt)
            if e:
                errs.append(e)
            else:
                for c in ans["components"]:
                    s = seen[c["name"]]
                    if not s or s[-1][1:] != (c["state"], c["pid"]):
                        s.append((t0, c["state"], c["pid"]))
                    if c["state"] == "FATAL":
                        fatal[c["name"]] = c["fatal_reason"]
                if len(fatal) == 3:
                    break
            time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))
        # Delays from the supervisor's log: failure (exit / not ready) -> next spawn.
        events = parse_log(home.log)
        delays = {n: [] for n in names}
        last_fail = {}
        for t, _lvl, msg in events:
            comp = field(msg, "component")
            if comp not in delays:
                continue
            head = msg.split(" component=")[0]
            if head.startswith("process spawned"):
                if comp in last_fail:
                    delays[comp].append(t - last_fail.pop(comp))
            elif head.startswith("process ") or "not ready" in head or head.endswith("-> BACKOFF"):
                last_fail.setdefault(comp, t)
        r.load = "3 looping components, status polled every 20 ms over the socket until all FATAL"
        r.faults = "exit at once / exit after 1.5 s / never ready (start_timeout 2s); backoff_initial 100ms, max_restarts 6"
        expected = [0.0, 0.1, 0.2, 0.4, 0.8, 1.6]
        for n in names:
            d = delays[n]
            r.add(f"{n}: delays between failure and next spawn",
                  ", ".join(f"{x * 1000:.0f}" for x in d) + " ms", "≈ 0, 100, 200, 400, 800, 1600 (±10 %)")
            r.add(f"{n}: FATAL reason", fatal.get(n, "not FATAL"), "7 failures in …")
            if n not in fatal:
                r.fail(f"{n} never went FATAL")
            for k, x in enumerate(d[:len(expected)]):
                want = expected[k]
                # ±10 % jitter, plus 30 ms for the exit to be noticed and the spawn to happen.
                if not (want * 0.9 - 0.005 <= x <= want * 1.1 + 0.03):
                    r.fail(f"{n}: delay #{k + 1} {x * 1000:.0f} ms, expected {want * 1000:.0f} ms ±10 %")
            if len(d) != 6:
                r.fail(f"{n}: {len(d)} restarts, expected 6")
        r.add("status calls / failed", f"{len(lat)} / {len(errs)}", "failed 0")
        r.add("status latency p50 / p99 / max", f"{ms(pct(lat, 50))} / {ms(pct(lat, 99))} / {ms(max(lat) if lat else None)}",
              "< 50 ms")
        if errs:
            r.fail(f"{len(errs)} status calls failed: {errs[0]}")
        if lat and max(lat) > 0.05:
            r.fail(f"status latency max {max(lat) * 1000:.1f} ms > 50 ms ({sum(1 for x in lat if x > 0.05)} calls over)")
        r.lost = "nothing" if not r.failures else "see failures"
        failed = bool(r.failures)
    finally:
        home.close(failed)
    return r


# =========================================================================== 5. control channel

def _connect(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def burst_status(path, n):
    """n clients connected at once, all send, then all read. Returns (ok, failed, max latency)."""
    socks = []
    t0 = time.monotonic()
    for _ in range(n):
        socks.append(_connect(path))
    sel = selectors.DefaultSelector()
    for s in socks:
        s.sendall(STATUS_REQUEST)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    ok = failed = 0
    worst = 0.0
    deadline = time.monotonic() + 30
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            s, buf = key.fileobj, key.data
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                buf += chunk
                if not buf.endswith(b"\n"):
                    continue
                ok += b'"type":"status"' in buf
                failed += b'"type":"status"' not in buf
            else:
                failed += 1
            worst = max(worst, time.monotonic() - t0)
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        failed += 1
        key.fileobj.close()
    return ok, failed, worst


def garbage_client(path, rng):
    s = _connect(path)
    try:
        s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))) + b"\n")
        s.settimeout(5)
        data = s.recv(65536)
        return data
    except OSError:
        return b""
    finally:
        s.close()


def huge_frame(path, total=100 * 1024 * 1024):
    """Streams a frame of `total` bytes without a newline. Returns (bytes accepted, answer)."""
    s = _connect(path)
    s.settimeout(10)
    chunk = b"x" * 65536
    sent = 0
    answer = b""
    try:
        while sent < total:
            sent += s.send(chunk)
    except OSError:
        pass
    try:
        answer = s.recv(65536)
    except OSError:
        pass
    s.close()
    return sent, answer


def mid_answer_disconnect(path):
    s = _connect(path)
    s.sendall(STATUS_REQUEST * 50)
    s.recv(10)
    # RST instead of FIN: the daemon's writes fail at once.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


def foreign_uid_connect(path):
    """Forks a child that becomes uid/gid 65534 and tries to connect. Returns its verdict."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(3)
                s.connect(path)
                s.sendall(STATUS_REQUEST)
                msg = "CONNECTED " + s.recv(300).decode(errors="replace")
            except OSError as e:
                msg = f"refused: {e.__class__.__name__} errno {e.errno}"
            os.write(wr, msg.encode()[:500])
        finally:
            os._exit(0)
    os.close(wr)
    os.waitpid(pid, 0)
    with os.fdopen(rd) as f:
        return f.read()


def control_channel(quick, keep):
    r = Result("Control channel abuse", 5)
    duration = 15 if quick else 60
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    cfg = """[components.a]
command = ["sleep", "1000"]
start_secs = "200ms"
[components.b]
command = ["sleep", "1000"]
start_secs = "200ms"
[components.c]
command = ["sleep", "1000"]
start_secs = "200ms"
"""
    home = Home(cfg, keep)
    failed = True
    stop = threading.Event()
    probe_lat, probe_err = [], []
    try:
        rc, out, err = home.cli("start", timeout=30)
        if rc != 0:
            raise RuntimeError(f"start exited {rc}: {out}{err}")
        sup = home.supervisor_pid()
        run_mode = stat.S_IMODE(os.stat(os.path.join(home.path, "run")).st_mode)
        sock_mode = stat.S_IMODE(os.stat(home.sock).st_mode)
        r.add("run/ mode", oct(run_mode), "0o700")
        r.add("control.sock mode", oct(sock_mode), "0o600")
        if run_mode != 0o700 or sock_mode != 0o600:
            r.fail(f"modes: run/ {oct(run_mode)}, socket {oct(sock_mode)}")
        foreign = foreign_uid_connect(home.sock)
        r.add("uid 65534 connects", foreign, "refused (EACCES)")
        if not foreign.startswith("refused"):
            r.fail(f"a foreign uid connected: {foreign}")

        for _ in range(20):  # warm up the daemon's allocator before the first sample
            control_call(home.sock)
        rss_before = vm_rss_kib(sup)

        def probe():
            while not stop.is_set():
                dt, ans, e = timed_status(home.sock, timeout=5)
                probe_lat.append(dt)
                if e:
                    probe_err.append(e)
                time.sleep(0.1)

        pt = threading.Thread(target=probe, daemon=True)
        pt.start()
        rng = random.Random(5)
        totals = {"burst_ok": 0, "burst_failed": 0, "burst_worst": 0.0, "garbage": 0, "garbage_answered": 0,
                  "huge": 0, "huge_max_accepted": 0, "huge_answers": set(), "slowloris": 0, "slowloris_cut": 0,
                  "disconnects": 0, "rounds": 0}
        rss_after_first = None
        rss_rounds = []
        t_end = time.monotonic() + duration
        while time.monotonic() < t_end:
            totals["rounds"] += 1
            # 20 slowloris clients: half a frame, then nothing.
            slow = []
            for _ in range(20):
                s = _connect(home.sock)
                s.sendall(STATUS_REQUEST[:25])
                slow.append((s, time.monotonic()))
            totals["slowloris"] += 20
            side = []
            side.append(threading.Thread(target=lambda: totals.__setitem__(
                "huge_res", huge_frame(home.sock)), daemon=True))
            for t in side:
                t.start()
            for _ in range(50):
                data = garbage_client(home.sock, rng)
                totals["garbage"] += 1
                totals["garbage_answered"] += b'"type":"error"' in data
            for _ in range(100):
                try:
                    mid_answer_disconnect(home.sock)
                    totals["disconnects"] += 1
                except OSError:
                    pass
            ok, bad, worst = burst_status(home.sock, 1000)
            totals["burst_ok"] += ok
            totals["burst_failed"] += bad
            totals["burst_worst"] = max(totals["burst_worst"], worst)
            for t in side:
                t.join(30)
            sent, answer = totals.pop("huge_res", (0, b""))
            totals["huge"] += 1
            totals["huge_max_accepted"] = max(totals["huge_max_accepted"], sent)
            totals["huge_answers"].add(answer[:120].decode(errors="replace").strip())
            # The slowloris clients must be cut by the daemon's read deadline.
            for s, t0 in slow:
                s.settimeout(max(0.1, t0 + 7 - time.monotonic()))
                try:
                    s.recv(65536)  # the timeout answer, or EOF: either way the daemon let go
                    totals["slowloris_cut"] += 1
                except OSError:
                    pass
                s.close()
            rss_rounds.append(vm_rss_kib(sup))
            if rss_after_first is None:
                rss_after_first = rss_rounds[-1]
        stop.set()
        pt.join(10)
        time.sleep(1)
        rss_after = vm_rss_kib(sup)

        # Extra: clients that pipeline requests and never read their answers (write side stalls).
        stalled_below = stalled_readers(home, 500)
        time.sleep(1)
        stalled_note = stalled_readers(home, 520)

        r.load = (f"{duration} s, {totals['rounds']} rounds of: 1000 concurrent status clients, 50 garbage clients, "
                  f"one 100 MB frame, 20 slowloris, 100 mid-answer disconnects; a status probe every 100 ms")
        r.faults = "garbage frames, 100 MB frames, slowloris, RST mid-answer, foreign uid"
        r.add("rounds", totals["rounds"])
        r.add("concurrent status clients answered / failed",
              f"{totals['burst_ok']} / {totals['burst_failed']} (bursts of 1000)", "failed 0")
        r.add("worst time for a burst of 1000 to be answered", ms(totals["burst_worst"]))
        r.add("garbage clients / answered with an error", f"{totals['garbage']} / {totals['garbage_answered']}")
        r.add("100 MB frames / most bytes the daemon took before cutting",
              f"{totals['huge']} / {totals['huge_max_accepted']:,} B", "≈ 64 KiB + socket buffers")
        r.add("100 MB frame answers", "; ".join(sorted(totals["huge_answers"]))[:300])
        r.add("slowloris clients / closed by the daemon within 7 s", f"{totals['slowloris']} / {totals['slowloris_cut']}")
        r.add("mid-answer disconnects (RST)", totals["disconnects"])
        r.add("status probe calls / failed", f"{len(probe_lat)} / {len(probe_err)}", "failed 0")
        r.add("status probe latency p50 / p99 / max",
              f"{ms(pct(probe_lat, 50))} / {ms(pct(probe_lat, 99))} / {ms(max(probe_lat) if probe_lat else None)}",
              "< 1 s")
        r.add("daemon VmRSS before / after 1st round / after", f"{rss_before} / {rss_after_first} / {rss_after} KiB",
              "no growth across rounds")
        r.add("daemon VmRSS after each round (KiB)", " ".join(str(x) for x in rss_rounds))
        r.add("extra: 500 clients pipelining status requests and never reading", stalled_below[0], "a status call answers within 1 s")
        r.add("extra: 520 clients pipelining status requests and never reading", stalled_note[0], "a status call answers within 1 s")
        if stalled_below[1]:
            r.fail(stalled_below[1])
        if stalled_note[1]:
            r.fail(stalled_note[1])
        if totals["burst_failed"]:
            r.fail(f"{totals['burst_failed']} concurrent status calls failed")
        if probe_err:
            r.fail(f"{len(probe_err)} probe status calls failed: {probe_err[0]}")
        if probe_lat and max(probe_lat) > 1.0:
            r.fail(f"probe status latency max {max(probe_lat):.2f} s > 1 s")
        if totals["huge_max_accepted"] > 8 * 1024 * 1024:
            r.fail(f"the daemon took {totals['huge_max_accepted']} bytes of one frame")
        r.lost = "nothing" if not r.failures else "see failures"
        failed = bool(r.failures)
    finally:
        stop.set()
        home.close(failed)
    return r


def stalled_readers(home, n):
    """n clients each send many status requests and never read. Then: does a status call answer?"""
    socks = []
    try:
        for _ in range(n):
            s = _connect(home.sock)
            s.setblocking(False)
            try:
                s.send(STATUS_REQUEST * 1000)
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(3)
        dt, ans, e = timed_status(home.sock, timeout=10)
        if e:
            return (f"a status call failed after {dt:.1f} s: {e}",
                    f"{n} clients that never read their answers block the control channel: status failed after {dt:.1f} s ({e})")
        if dt > 1.0:
            return (f"a status call took {dt:.2f} s", f"{n} non-reading clients: status took {dt:.2f} s")
        return (f"status answered in {dt * 1000:.1f} ms", None)
    finally:
        for s in socks:
            s.close()


# =========================================================================== runner

SCENARIOS = {
    "crash_storm": crash_storm,
    "supervisor_kill": supervisor_kill,
    "restart_loops": restart_loops,
    "misbehaving": misbehaving,
    "control_channel": control_channel,
    "image_inputs": image_inputs,
    "restarts": restarts,
    "frozen": frozen,
}


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="*", help=f"scenarios to run, among {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary homes")
    ap.add_argument("--no-supervisord", action="store_true",
                    help="skip the comparison with supervisord in scenarios 2 and 4")
    args = ap.parse_args()
    SETTINGS["supervisord"] = not args.no_supervisord
    if not os.access(BINARY, os.X_OK):
        sys.exit(f"{BINARY} not found: run `cargo build --release` first")
    names = args.scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; choose among {', '.join(SCENARIOS)}")
    print(f"Machine: {machine()}\n\nBinary: {BINARY}{' (--quick)' if args.quick else ''}\n")
    results = []
    for name in names:
        t0 = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            res = SCENARIOS[name](args.quick, args.keep)
        except Exception as e:  # noqa: BLE001 - a broken scenario is a failure, not a crash of the run
            res = Result(name, "?")
            res.fail(f"the scenario itself failed: {e.__class__.__name__}: {e}")
        res.add("wall time", f"{time.monotonic() - t0:.1f} s")
        results.append(res)
        print(res.table() + "\n", flush=True)
    print("### Summary\n")
    print("| scenario | load held | faults injected | failures seen | lost |")
    print("|---|---|---|---|---|")
    for res in results:
        fails = "none" if not res.failures else f"{len(res.failures)}: " + "; ".join(res.failures)
        print(f"| {res.number}. {res.name} | {res.load} | {res.faults} | {fails} | {res.lost} |")
        if res.other:
            misses = "none" if not res.other_failures else f"{len(res.other_failures)}: " + "; ".join(res.other_failures)
            print(f"| {res.number}. {res.name}, {res.other} (comparison, not counted) | same | same | {misses} | "
                  f"{res.other_lost} |")
    sys.exit(1 if any(res.failures for res in results) else 0)


if __name__ == "__main__":
    main()
