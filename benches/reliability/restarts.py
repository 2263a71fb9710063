"""Scenario 9 (issue #14): what clients see while components are restarted and killed.

Eight HTTP clients loop on ps for the whole run (an image request that reaches is, `cache=off`),
while the phases run one after another: `restart ps`, `restart is`, `restart svg` (each ROUNDS
times), `kill -9` of ps (ROUNDS times, after ps is RUNNING again each time), then `kill -9` of is
every 0.5-2 s for STORM seconds. Every answer is classified by phase: 200, another status (503…),
refused, reset (the connection died, e.g. with the killed ps), timeout.

The same run is made twice with the same binary: with the supervisor holding the servers'
listening sockets (the default, `hold_socket = true`), and with each server binding its own
(`hold_socket = false`, the behaviour before issue #14). Only the first run's failures count.
"""

import http.client
import os
import random
import signal
import socket
import threading
import time

from common import Home, Result, env_of, free_ports, ms, pct, stack_config, STACK_BUDGET, timed_status, wait_for

CLIENTS = 8
PATH = "/is/image/sample/photo?wid=120&fmt=jpeg&cache=off"


def one_request(port):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", PATH)
        resp = c.getresponse()
        resp.read()
        c.close()
        kind = str(resp.status)
    except ConnectionRefusedError:
        kind = "refused"
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError, http.client.IncompleteRead):
        kind = "reset"
    except socket.timeout:
        kind = "timeout"
    except OSError as e:
        kind = f"error {e.__class__.__name__}"
    return kind, time.monotonic() - t0


def all_running(home):
    _, ans, _ = timed_status(home.sock)
    return bool(ans) and all(c["state"] == "RUNNING" for c in ans["components"])


def pid_of(home, name):
    _, ans, _ = timed_status(home.sock)
    for c in (ans or {}).get("components", []):
        if c["name"] == name and c["pid"] and env_of(c["pid"], "IMAGESERVING_TREE") == home.path:
            return c["pid"]
    return None


def one_run(hold, rounds, storm, keep):
    """Answers by phase: {phase: {kind: count}}, latencies of 200s by phase, faults by phase."""
    ps, is_, svg = free_ports(3)
    home = Home(stack_config(ps, is_, svg, STACK_BUDGET + ("" if hold else "hold_socket = false\n")), keep)
    stop = threading.Event()
    phase = ["warm-up"]
    answers, lat = {}, {}
    lock = threading.Lock()
    faults = {}
    failed = True
    try:
        rc, out, err = home.cli("start", timeout=60)
        if rc != 0:
            raise RuntimeError(f"start exited {rc}: {out}{err}")

        def client():
            while not stop.is_set():
                p = phase[0]
                kind, dt = one_request(ps)
                with lock:
                    answers.setdefault(p, {}).setdefault(kind, 0)
                    answers[p][kind] += 1
                    if kind == "200":
                        lat.setdefault(p, []).append(dt)
                if kind == "refused":
                    time.sleep(0.01)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        for name in ("ps", "is", "svg"):
            phase[0] = f"restart {name}"
            for _ in range(rounds):
                rc, out, err = home.cli("restart", name, timeout=60)
                faults[phase[0]] = faults.get(phase[0], 0) + 1
                if rc != 0:
                    raise RuntimeError(f"restart {name} exited {rc}: {out}{err}")
                time.sleep(0.3)
        phase[0] = "kill -9 ps"
        for _ in range(rounds):
            pid = pid_of(home, "ps")
            if pid:
                os.kill(pid, signal.SIGKILL)
                faults[phase[0]] = faults.get(phase[0], 0) + 1
            time.sleep(0.2)
            wait_for(lambda: all_running(home), 20, 0.05)
            time.sleep(0.3)
        phase[0] = "kill -9 is"
        rng = random.Random(1)
        t_end = time.monotonic() + storm
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.5, 2.0))
            pid = pid_of(home, "is")
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    faults[phase[0]] = faults.get(phase[0], 0) + 1
                except ProcessLookupError:
                    pass
        wait_for(lambda: all_running(home), 20, 0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(15)
        failed = False
    finally:
        stop.set()
        home.close(failed)
    return answers, lat, faults


def restarts(quick, keep):
    r = Result("Restarts and crashes under load (issue #14)", 9)
    rounds = 3 if quick else 10
    storm = 15 if quick else 60
    held, held_lat, faults = one_run(True, rounds, storm, keep)
    own, own_lat, own_faults = one_run(False, rounds, storm, keep)
    r.other = "hold_socket = false (each server binds its own port, as before issue #14)"
    r.load = f"{CLIENTS} HTTP clients looping on ps for the whole run ({PATH})"
    r.faults = ", ".join(f"{k} × {v}" for k, v in faults.items())

    def failures(counts, phase):
        return sum(v for k, v in counts.get(phase, {}).items() if k != "200")

    def kinds(counts, phase):
        c = counts.get(phase, {})
        return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"

    for phase in ("restart ps", "restart is", "restart svg", "kill -9 ps", "kill -9 is"):
        n = faults.get(phase, 0)
        goal = f"≤ {CLIENTS * n} resets (requests in flight)" if phase == "kill -9 ps" else "0 failed"
        r.add(f"{phase} ({n}×): answers by kind", kinds(held, phase), goal, kinds(own, phase))
        r.add(f"{phase}: 200 latency p50 / p99",
              f"{ms(pct(held_lat.get(phase, []), 50))} / {ms(pct(held_lat.get(phase, []), 99))}", "",
              f"{ms(pct(own_lat.get(phase, []), 50))} / {ms(pct(own_lat.get(phase, []), 99))}")
        bad = failures(held, phase)
        if phase == "kill -9 ps":
            not_reset = bad - held.get(phase, {}).get("reset", 0)
            if not_reset or bad > CLIENTS * n:
                r.fail(f"{phase}: {kinds(held, phase)}")
        elif bad:
            r.fail(f"{phase}: {bad} failed ({kinds(held, phase)})")
    total_held = sum(failures(held, p) for p in held)
    total_own = sum(failures(own, p) for p in own)
    r.lost = f"{total_held} failed requests (hold_socket = false: {total_own})"
    r.other_lost = f"{total_own} failed requests"
    return r
