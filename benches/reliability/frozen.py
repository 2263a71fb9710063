"""Scenario 10 (issue #15 §5 and §6): an image server frozen with SIGSTOP under load.

The real stack with the embedded default's liveness checks and `retry_fatal_after` (copied from
`src/config.rs`'s DEFAULT_CONFIG: `/livez` for ps, `/healthz` for is and svg, 2 s interval, 2 s
timeout, 3 failures). CLIENTS clients loop ordinary thumbnails on ps (`wid=300`, cache off). After
WARMUP seconds `is` is frozen with SIGSTOP (alive, answering nothing: a deadlock looks the same
from outside) and left so; the run goes on for FROZEN seconds.

Goals: `is` replaced by its liveness check within REPLACE_GOAL seconds (about 10 s in the issue);
while it is frozen no request hangs (every one answered, 503 or 200, none waiting for the 35 s
render deadline: at most ANSWER_GOAL seconds); after the replacement, 200s again; no refused or
reset connection and no timeout at any time.
"""

import os
import signal
import threading
import time

from common import Home, Result, free_ports, http_get_kind, ms, pct, stack_config, timed_status

CLIENTS = 4
PATH = "/is/image/sample/photo?wid=300&fmt=jpeg&cache=off"
WARMUP = 3.0
FROZEN = 30.0
REPLACE_GOAL = 12.0
ANSWER_GOAL = 10.0

# The embedded default's liveness checks and FATAL retry (src/config.rs, DEFAULT_CONFIG).
DEFAULTS = {
    "ps": 'health = { http = "/livez", interval = "1s", timeout = "2s", max_failed = 3 }\nretry_fatal_after = "1m"\n',
    "is": 'health = { http = "/healthz", interval = "1s", timeout = "2s", max_failed = 3 }\nretry_fatal_after = "1m"\n',
    "svg": 'health = { http = "/healthz", interval = "1s", timeout = "2s", max_failed = 3 }\nretry_fatal_after = "1m"\n',
}


def config(ps, is_, svg):
    text = stack_config(ps, is_, svg)
    for name, lines in DEFAULTS.items():
        text = text.replace(f"[components.{name}]\n", f"[components.{name}]\n{lines}", 1)
    return text


def component(home, name):
    _, ans, _ = timed_status(home.sock)
    for c in (ans or {}).get("components", []):
        if c["name"] == name:
            return c
    return {}


def frozen(quick, keep):
    r = Result("An image server frozen with SIGSTOP under load (issue #15 §5)", 10)
    ps, is_, svg = free_ports(3)
    home = Home(config(ps, is_, svg), keep)
    failed = False
    answers = []  # (started, kind, seconds)
    stop = threading.Event()
    try:
        rc, out, err = home.cli("start", timeout=60)
        if rc != 0:
            raise RuntimeError(f"start exited {rc}: {out}{err}")

        def client():
            while not stop.is_set():
                t = time.monotonic()
                kind, took = http_get_kind(ps, PATH, timeout=40)
                answers.append((t, kind, took))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(WARMUP)
        old = component(home, "is").get("pid")
        os.kill(old, signal.SIGSTOP)
        frozen_at = time.monotonic()
        replaced_at = None
        while time.monotonic() - frozen_at < (10.0 if quick else FROZEN):
            c = component(home, "is")
            if replaced_at is None and c.get("state") == "RUNNING" and c.get("pid") not in (None, old):
                replaced_at = time.monotonic()
                last_exit = c.get("last_exit")
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(timeout=45)

        replace = None if replaced_at is None else replaced_at - frozen_at
        during = [a for a in answers if frozen_at <= a[0] < (replaced_at or float("inf"))]
        after = [a for a in answers if replaced_at is not None and a[0] >= replaced_at]
        before = [a for a in answers if a[0] < frozen_at]

        def kinds(xs):
            counts = {}
            for _, k, _ in xs:
                counts[k] = counts.get(k, 0) + 1
            return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"

        def lat(xs):
            t = [s for _, _, s in xs]
            return f"{ms(pct(t, 50))} / {ms(pct(t, 99))} / {ms(max(t) if t else None)}"

        r.load = f"{CLIENTS} HTTP clients looping on ps ({PATH})"
        r.faults = f"SIGSTOP of is for {int(10 if quick else FROZEN)} s (it is never sent SIGCONT by the bench)"
        r.add("is replaced by its liveness check after", "never" if replace is None else f"{replace:.1f} s",
              f"≤ {REPLACE_GOAL:.0f} s")
        if replaced_at is not None:
            r.add("its last exit, as status says", last_exit or "-")
        r.add("answers before the freeze: kinds; latency p50 / p99 / max", f"{kinds(before)}; {lat(before)}")
        r.add("answers asked while is was frozen: kinds; latency p50 / p99 / max", f"{kinds(during)}; {lat(during)}",
              f"each answered (200 or 503) within {ANSWER_GOAL:.0f} s")
        r.add("answers asked after the replacement: kinds; latency p50 / p99 / max", f"{kinds(after)}; {lat(after)}",
              "200")
        if replace is None or replace > REPLACE_GOAL:
            r.fail(f"is replaced after {replace}")
        bad = [a for a in answers if a[1] not in ("200", "503")]
        if bad:
            r.fail(f"{len(bad)} requests neither 200 nor 503: {kinds(bad)}")
        slow = [a for a in during if a[2] > ANSWER_GOAL]
        if slow:
            r.fail(f"{len(slow)} requests waited more than {ANSWER_GOAL} s while is was frozen")
        late = [a for a in after if a[1] != "200"]
        if late:
            r.fail(f"{len(late)} requests after the replacement were not 200: {kinds(late)}")
        r.lost = f"{sum(1 for a in answers if a[1] != '200')} requests not 200 (the 503s while is was frozen)"
        failed = bool(r.failures)
    except Exception:
        failed = True
        raise
    finally:
        stop.set()
        home.close(failed)
    return r
