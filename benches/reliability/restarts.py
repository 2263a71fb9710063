"""Scenario 9 (issue #14): what clients see while components are restarted, reloaded and killed.

Eight HTTP clients loop on ps for the whole run (an image request that reaches is, `cache=off`),
while the phases run one after another: `restart ps`, `restart is`, `restart svg` (each ROUNDS
times), `reload` with a changed `ps` setting (ROUNDS times), `kill -9` of ps (ROUNDS times, after
ps is RUNNING again each time), then `kill -9` of is every 0.5-2 s for STORM seconds. Every answer
is classified by phase: 200, another status (503, 500…), refused, reset (the connection died, e.g.
with the killed ps), timeout.

The same run is made three times with the same binary: imageserving at its defaults (the
supervisor holds the servers' listening sockets, ps and is hold failed requests), imageserving
with `hold_socket = false` (each server binds its own port, as before issue #14), and supervisord
4.3.0 running the same three servers (`imageserving component ps|is|svg`, each binding its own
port). supervisord's `restart` is `stopProcess` then `startProcess` over XML-RPC, which is what
`supervisorctl restart` sends; its reload is `supervisorctl update` (reloadConfig, then the changed
group stopped, removed and added again). Every run raises the restart budget so that the kill
storm never exhausts it (ours: STACK_BUDGET; supervisord: `startretries = 1000`); the other
settings are the defaults. Only the first run's failures count.
"""

import os
import random
import signal
import threading
import time

import supervisord as sd
from common import BINARY, IMAGE_PATH, SETTINGS, Home, http_get_kind, Result, env_of, free_ports, ms, pct, stack_config, STACK_BUDGET, timed_status, wait_for

CLIENTS = 8
PATH = IMAGE_PATH


def all_running(home):
    _, ans, _ = timed_status(home.sock)
    return bool(ans) and all(c["state"] == "RUNNING" for c in ans["components"])


def pid_of(home, name):
    _, ans, _ = timed_status(home.sock)
    for c in (ans or {}).get("components", []):
        if c["name"] == name and c["pid"] and env_of(c["pid"], "IMAGESERVING_TREE") == home.path:
            return c["pid"]
    return None


class Ours:
    """imageserving, driven by its CLI."""

    def __init__(self, hold, keep):
        self.ports = free_ports(3)
        ps, is_, svg = self.ports
        self.config = stack_config(ps, is_, svg, STACK_BUDGET + ("" if hold else "hold_socket = false\n"))
        self.home = Home(self.config, keep)
        self.config_file = f"{self.home.path}/conf/imageserving.toml"

    def start(self):
        rc, out, err = self.home.cli("start", timeout=60)
        if rc != 0:
            raise RuntimeError(f"start exited {rc}: {out}{err}")

    def restart(self, name):
        rc, out, err = self.home.cli("restart", name, timeout=60)
        if rc != 0:
            raise RuntimeError(f"restart {name} exited {rc}: {out}{err}")

    def reload_ps(self, n):
        text = self.config.replace(
            "[components.ps]\n", f'[components.ps]\nenv = {{ IMAGESERVING_CACHE_CHECK = "{n + 2}s" }}\n', 1)
        with open(self.config_file, "w") as f:
            f.write(text)
        rc, out, err = self.home.cli("reload", timeout=60)
        if rc != 0 or "changed (restarted): ps" not in out:
            raise RuntimeError(f"reload exited {rc}: {out}{err}")

    def pid(self, name):
        return pid_of(self.home, name)

    def all_running(self):
        return all_running(self.home)

    def close(self, failed):
        self.home.close(failed)


class Theirs:
    """supervisord running the same three servers, each binding its own port."""

    def __init__(self, keep):
        self.ports = free_ports(3)
        ps, is_, svg = self.ports
        # A home for is's samples, as ours has; nothing of ours runs in it. `is` writes the
        # samples at its start when run/samples.due exists, as the daemon asks for a new home.
        self.home = Home("", keep)
        os.makedirs(os.path.join(self.home.path, "run"), exist_ok=True)
        open(os.path.join(self.home.path, "run", "samples.due"), "w").close()
        addrs = {"IMAGESERVING_HOME": self.home.path, "IMAGESERVING_IS_ADDR": f"127.0.0.1:{is_}",
                 "IMAGESERVING_SVG_ADDR": f"127.0.0.1:{svg}"}
        # Defaults, but a start-retry budget the kill storm does not exhaust (as STACK_BUDGET for
        # ours); is and svg first, as ps depends on them in ours.
        base = {"autorestart": "true", "startretries": 1000, "redirect_stderr": "true"}
        self.sv = sd.Supervisord({
            "is": {"command": f"{BINARY} component is", "priority": 100, **base,
                   "env": {**addrs, "IMAGESERVING_LISTEN": f"127.0.0.1:{is_}"}},
            "svg": {"command": f"{BINARY} component svg", "priority": 100, **base,
                    "env": {**addrs, "IMAGESERVING_LISTEN": f"127.0.0.1:{svg}"}},
            "ps": {"command": f"{BINARY} component ps", "priority": 200, **base,
                   "env": {**addrs, "IMAGESERVING_LISTEN": f"127.0.0.1:{ps}", "IMAGESERVING_CACHE_CHECK": "1s"}},
        }, keep)

    def start(self):
        self.sv.start()
        if not self.sv.wait_ready(15):
            raise RuntimeError("supervisord did not answer within 15 s")
        st = self.sv.wait_states(["ps", "is", "svg"], "RUNNING", 30)
        if any(v != "RUNNING" for v in st.values()):
            raise RuntimeError(f"supervisord's programs did not all run: {st}")

    def restart(self, name):
        rpc = self.sv.rpc(60).supervisor
        rpc.stopProcess(name, True)
        rpc.startProcess(name, True)

    def reload_ps(self, n):
        with open(self.sv.conf) as f:
            text = f.read()
        text = text.replace(f'IMAGESERVING_CACHE_CHECK="{n + 1}s"', f'IMAGESERVING_CACHE_CHECK="{n + 2}s"')
        with open(self.sv.conf, "w") as f:
            f.write(text)
        rpc = self.sv.rpc(60).supervisor
        added, changed, removed = rpc.reloadConfig()[0]
        if changed != ["ps"]:
            raise RuntimeError(f"supervisord saw {changed} changed, not ps")
        rpc.stopProcessGroup("ps", True)
        rpc.removeProcessGroup("ps")
        rpc.addProcessGroup("ps")

    def pid(self, name):
        info = self.sv.processes().get(name)
        return info["pid"] if info and info["statename"] == "RUNNING" and info["pid"] else None

    def all_running(self):
        st = self.sv.states()
        return len(st) == 3 and all(v == "RUNNING" for v in st.values())

    def close(self, failed):
        try:
            self.sv.close(failed)
        finally:
            self.home.close(failed)


PHASES = ("restart ps", "restart is", "restart svg", "reload ps", "kill -9 ps", "kill -9 is")


def one_run(system, rounds, storm):
    """Answers by phase: {phase: {kind: count}}, latencies of 200s by phase, faults by phase."""
    stop = threading.Event()
    phase = ["warm-up"]
    answers, lat = {}, {}
    lock = threading.Lock()
    faults = {}
    failed = True
    ps = system.ports[0]
    try:
        system.start()

        def client():
            while not stop.is_set():
                kind, dt = http_get_kind(ps)
                # The phase when the answer came: a request in flight when a fault is injected
                # counts for that fault, though it started in the phase before.
                p = phase[0]
                with lock:
                    answers.setdefault(p, {}).setdefault(kind, 0)
                    answers[p][kind] += 1
                    if kind == "200":
                        lat.setdefault(p, []).append(dt)
                if kind == "refused":
                    time.sleep(0.01)

        def fault(p):
            faults[p] = faults.get(p, 0) + 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        for name in ("ps", "is", "svg"):
            phase[0] = f"restart {name}"
            for _ in range(rounds):
                system.restart(name)
                fault(phase[0])
                time.sleep(0.3)
        phase[0] = "reload ps"
        for n in range(rounds):
            system.reload_ps(n)
            fault(phase[0])
            time.sleep(0.3)
        phase[0] = "kill -9 ps"
        for _ in range(rounds):
            pid = system.pid("ps")
            if pid:
                os.kill(pid, signal.SIGKILL)
                fault(phase[0])
            time.sleep(0.2)
            wait_for(system.all_running, 20, 0.05)
            time.sleep(0.3)
        phase[0] = "kill -9 is"
        rng = random.Random(1)
        t_end = time.monotonic() + storm
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.5, 2.0))
            pid = system.pid("is")
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    fault(phase[0])
                except ProcessLookupError:
                    pass
        wait_for(system.all_running, 20, 0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(15)
        failed = False
    finally:
        stop.set()
        system.close(failed)
    return answers, lat, faults


def restarts(quick, keep):
    r = Result("Restarts, reloads and crashes under load (issue #14)", 9)
    rounds = 3 if quick else 10
    storm = 15 if quick else 60
    runs = [("imageserving", *one_run(Ours(True, keep), rounds, storm)),
            ("hold_socket = false", *one_run(Ours(False, keep), rounds, storm))]
    if SETTINGS.get("supervisord", True):
        try:
            runs.append((sd.NAME, *one_run(Theirs(keep), rounds, storm)))
        except Exception as e:  # noqa: BLE001 - supervisord's trouble is reported, never ours
            r.notes.append(f"{sd.NAME} run failed: {e}")
    (_, held, held_lat, faults), others = runs[0], runs[1:]
    r.other = " · ".join(name for name, *_ in others)
    r.load = f"{CLIENTS} HTTP clients looping on ps for the whole run ({PATH})"
    r.faults = ", ".join(f"{k} × {v}" for k, v in faults.items())

    def failures(counts, phase):
        return sum(v for k, v in counts.get(phase, {}).items() if k != "200")

    def kinds(counts, phase):
        c = counts.get(phase, {})
        return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"

    def latency(lats, phase):
        return f"{ms(pct(lats.get(phase, []), 50))} / {ms(pct(lats.get(phase, []), 99))}"

    for phase in PHASES:
        n = faults.get(phase, 0)
        goal = f"≤ {CLIENTS * n} resets (requests in flight)" if phase == "kill -9 ps" else "0 failed"
        r.add(f"{phase} ({n}×): answers by kind", kinds(held, phase), goal,
              " · ".join(f"{kinds(o[1], phase)} ({o[3].get(phase, 0)}×)" for o in others))
        r.add(f"{phase}: 200 latency p50 / p99", latency(held_lat, phase), "",
              " · ".join(latency(o[2], phase) for o in others))
        for name, o, _, o_faults in others:
            o_bad = failures(o, phase)
            o_n = o_faults.get(phase, 0)
            o_not_reset = o_bad - o.get(phase, {}).get("reset", 0)
            missed = (o_not_reset or o_bad > CLIENTS * o_n) if phase == "kill -9 ps" else o_bad
            if missed:
                r.other_failures.append(f"{name}, {phase}: {kinds(o, phase)}")
        bad = failures(held, phase)
        if phase == "kill -9 ps":
            not_reset = bad - held.get(phase, {}).get("reset", 0)
            if not_reset or bad > CLIENTS * n:
                r.fail(f"{phase}: {kinds(held, phase)}")
        elif bad:
            r.fail(f"{phase}: {bad} failed ({kinds(held, phase)})")
    total = sum(failures(held, p) for p in held)
    lost = [f"{name}: {sum(failures(o, p) for p in o)}" for name, o, *_ in others]
    r.lost = f"{total} failed requests ({'; '.join(lost)})"
    r.other_lost = "; ".join(lost) + " failed requests"
    return r
