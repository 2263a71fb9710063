#!/usr/bin/env python3
"""The supervisor benchmark of issue #7: imageserving beside supervisord, N tiny children.

    cargo build --release && python3 benches/supervisors/run.py [--quick] [--n 3,100,1000]
        [--variant sleeper,tcp] [--no-supervisord] [--runs K] [--idle SECONDS] [--keep] [--json FILE]

For N = 3, 100 and 1000 supervised copies of a tiny long-running child, it measures cold start,
the `status` round trip of the whole CLI, crash -> restart, `restart <one>`, `stop`, the
supervisor's memory and idle CPU, and the floor (the same child forked and exec'd alone), for
imageserving and, in the same run, supervisord (installed from PyPI into a throw-away virtual
environment by benches/reliability/supervisord.py). It prints Markdown tables: both sides, the
ratio supervisord / imageserving, the issue's targets and whether they are met. Not a timed
test: it always exits 0 unless it cannot run at all.

Two children ("variants"):
  sleeper  coreutils `sleep 100000`; "running" = the process exists and has exec'd.
  tcp      tinychild.c (compiled here at bench time into a temporary directory with `cc -O2
           -static`; nothing is installed), `tinychild listen PORT`: it listens on its own
           loopback port; "running" = that port accepts a connection.

supervisord runs at its defaults but for the settings that make it do what ours does in the bench
configuration: `startsecs=0` (ours: `start_secs = "0s"`, RUNNING once
spawned), `autorestart=true` (ours restarts a `permanent` component whatever its exit),
`stopasgroup=true` and `killasgroup=true` (ours signals the process group). Outside the programs:
`childlogdir` (its log files go to the run's temporary directory; their names and number are its
defaults: one file for stdout and one for stderr per program), `minfds` and `minprocs` (raised to
what N programs need; its defaults, 1024 and 200, are below that at N = 1000). The "defaults"
configuration gives its programs nothing but the command and the marker. In particular no
`redirect_stderr=true`: with it, supervisord's stop of 100 programs took 37 s where it takes
about 0.2 s without (issue #13); its log shows it waiting for its 1 s poll timeout between some
of the programs.

`status` is measured two ways. Single calls, as people make them: one call after a pause longer
than the daemon's memory-sample cache (200 ms), repeated, the median reported. Back to back (most
of those reuse our cached memory sample; supervisorctl has no cache): the p50 and p99.

Everything runs in temporary directories (homes, supervisord's directory), on ports checked free
below the kernel's ephemeral range, and is cleaned up in a `finally`: `stop` / `shutdown`, then
SIGKILL of every process carrying the run's marker (IMAGESERVING_TREE=<home> for ours,
ISBENCH_SD=<dir> for supervisord and its programs). Linux only (it reads /proc); run as root or
as a user whose RLIMIT_NOFILE hard limit allows N = 1000.
"""

import argparse
import ctypes
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "benches", "reliability"))
import common as C  # noqa: E402
import supervisord as SD  # noqa: E402

BINARY = C.BINARY
PC = time.perf_counter
CLK_TCK = os.sysconf("SC_CLK_TCK")
SLEEP = shutil.which("sleep") or "/bin/sleep"
SD_MARK = "ISBENCH_SD"              # on supervisord, inherited by its programs
SD_PROGRAM_MARK = "ISBENCH_SD_PROGRAM"  # on the programs, through `environment=`
STATUS_CALLS = 50
STATUS_COLD_CALLS = 10      # single calls, each after a pause (fewer with --quick)
STATUS_COLD_PAUSE = 0.5     # seconds: longer than the daemon's memory-sample cache (200 ms)
COLD_INTERVAL = None  # the cold start's poll interval; None: poll_interval(N)

TARGETS = []  # filled by add_target; printed at the end


def clean_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("IMAGESERVING_", "ISBENCH_", "ISREL_", "SUPERVISOR_"))}


# =========================================================================== /proc

def children(pid):
    """Pids of the children of every thread of pid (/proc/PID/task/*/children)."""
    out = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/children", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if data:
            out.update(int(x) for x in data.split())
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip().decode(errors="replace")
    except OSError:
        return None


def alive(pid):
    return C.pid_alive(pid)


def smaps(pid):
    """{'rss','pss','private'} in KiB from /proc/PID/smaps_rollup (VmRSS for rss)."""
    out = {"rss": C.vm_rss_kib(pid)}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            vals = {}
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    vals[parts[0][:-1]] = int(parts[1])
        out["pss"] = vals.get("Pss")
        out["private"] = vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)
    except OSError:
        out["pss"] = out["private"] = None
    return out


def cpu_sample(pid):
    """({tid: (on-cpu ns, context switches)}, utime+stime ticks of the process) or None."""
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns = int(f.read().split()[0])
            ctx = 0
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        ctx += int(line.split()[1])
            threads[int(t)] = (ns, ctx)
        except (OSError, ValueError, IndexError):
            continue
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        rest = data[data.rindex(")") + 2:].split()
        ticks = int(rest[11]) + int(rest[12])
    except (OSError, ValueError):
        return None
    return threads, ticks


def accepts(port, timeout=1.0):
    """Whether 127.0.0.1:port accepts a connection now (closed with a RST: no TIME_WAIT)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(timeout)
    try:
        return s.connect_ex(("127.0.0.1", port)) == 0
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(n):
    """n loopback ports, free now, below the ephemeral range (so no connect() takes them)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except OSError:
        lo = 32768
    candidates = [p for p in range(10000, lo) if p not in (8080, 27345, 27346)]
    random.shuffle(candidates)
    ports = []
    for p in candidates:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
        if len(ports) == n:
            return ports
    raise RuntimeError(f"fewer than {n} free ports below {lo}")


# =========================================================================== the children

class Child:
    """What each supervised copy runs, and how to recognise it once it has exec'd."""

    def __init__(self, variant, tiny):
        self.variant = variant
        self.tiny = tiny
        if variant == "sleeper":
            self.comm = os.path.basename(SLEEP)[:15]
        else:
            self.comm = os.path.basename(tiny)[:15]

    @property
    def tcp(self):
        return self.variant == "tcp"

    def argv(self, port):
        return [SLEEP, "100000"] if not self.tcp else [self.tiny, "listen", str(port)]


def compile_tiny(tmp):
    src = os.path.join(HERE, "tinychild.c")
    out = os.path.join(tmp, "tinychild")
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (cc) found"
    for flags in (["-O2", "-static"], ["-O2"]):
        p = subprocess.run([cc, *flags, "-o", out, src], capture_output=True, text=True)
        if p.returncode == 0:
            return out, f"`{os.path.basename(cc)} {' '.join(flags)}`"
    return None, f"cc failed: {p.stderr.strip()[-300:]}"


# =========================================================================== the two sides

class Ours:
    label = "imageserving"

    def __init__(self, child, n, ports, defaults, template, keep):
        self.child, self.n, self.ports, self.defaults, self.keep = child, n, ports, defaults, keep
        self.names = [f"c{i}" for i in range(n)]
        self.home = os.path.realpath(tempfile.mkdtemp(prefix="isbench-"))
        os.makedirs(os.path.join(self.home, "conf"))
        for d in ("catalog", "images"):
            if template and os.path.isdir(os.path.join(template, d)):
                shutil.copytree(os.path.join(template, d), os.path.join(self.home, d))
        with open(os.path.join(self.home, "conf", "imageserving.toml"), "w") as f:
            f.write(self.config_text())
        self.sock = os.path.join(self.home, "run", "control.sock")
        self.sup = None
        self.env = clean_env()
        self.out = os.path.join(self.home, "cli.out")

    def config_text(self):
        lines = []
        for i, name in enumerate(self.names):
            argv = ", ".join(json.dumps(a) for a in self.child.argv(self.ports[i] if self.ports else None))
            lines += [f"[components.{name}]", f"command = [{argv}]"]
            if not self.defaults:
                lines += ['start_secs = "0s"', 'stable_after = "1s"']
                if self.child.tcp:
                    lines.append(f"port = {self.ports[i]}")
            lines.append("")
        return "\n".join(lines)

    def start_argv(self):
        return [BINARY, "--home", self.home, "start"]

    def status_argv(self):
        return [BINARY, "--home", self.home, "status"]

    def restart_argv(self, name):
        return [BINARY, "--home", self.home, "restart", name]

    def stop_argv(self):
        return [BINARY, "--home", self.home, "stop"]

    def find_sup(self):
        try:
            with open(os.path.join(self.home, "run", "supervisor.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def _status(self, component=None, timeout=5.0):
        req = json.dumps({"v": 1, "request": {"type": "status", "component": component}}) + "\n"
        ans = C.control_call(self.sock, req.encode(), timeout=timeout)
        if ans.get("type") != "status":
            raise RuntimeError(f"status answered {ans}")
        return ans

    def raw_status(self):
        """One status request over the control socket (no CLI), for the socket round trip."""
        self._status(None)

    def pids(self):
        """{name: (state, pid)}."""
        try:
            return {c["name"]: (c["state"], c["pid"]) for c in self._status()["components"]}
        except Exception:  # noqa: BLE001
            return {}

    def state(self, name):
        try:
            c = self._status(name)["components"][0]
            return c["state"], c["pid"]
        except Exception:  # noqa: BLE001
            return None, None

    def close(self, graceful=True):
        try:
            if graceful and os.path.exists(self.sock):
                subprocess.run(self.stop_argv(), capture_output=True, timeout=60, env=self.env)
        except Exception:  # noqa: BLE001
            pass
        for _ in range(5):
            victims = set(C.marked_pids(self.home))
            sup = self.find_sup()
            if sup and self.home in C.read_cmdline(sup):
                victims.add(sup)
            if not victims:
                break
            C.kill_pids(victims)
            time.sleep(0.1)
        if self.keep:
            print(f"  (home kept: {self.home})", file=sys.stderr)
        else:
            shutil.rmtree(self.home, ignore_errors=True)


# supervisord's settings in the bench configuration: what makes it do what ours does.
SD_SETTINGS = ["startsecs=0", "autorestart=true", "stopasgroup=true", "killasgroup=true"]


class Sd:
    label = f"supervisord {SD.VERSION}"

    def __init__(self, child, n, ports, defaults, template, keep):
        self.child, self.n, self.ports, self.defaults, self.keep = child, n, ports, defaults, keep
        self.names = [f"c{i}" for i in range(n)]
        self.bin = SD.install()
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="isbench-sd-"))
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs)
        self.sock = os.path.join(self.dir, "supervisor.sock")
        self.pidfile = os.path.join(self.dir, "supervisord.pid")
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.sup = None
        self.env = clean_env()
        self.env[SD_MARK] = self.dir
        self.out = os.path.join(self.dir, "cli.out")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        minfds = max(1024, 5 * n + 200)
        if hard != resource.RLIM_INFINITY:
            minfds = min(minfds, hard)
        lines = [
            "[unix_http_server]", f"file={self.sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.dir}/supervisord.log", f"pidfile={self.pidfile}",
            f"childlogdir={self.logs}", "loglevel=info", f"minfds={minfds}",
            f"minprocs={max(200, n + 200)}", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.sock}", "",
        ]
        for i, name in enumerate(self.names):
            argv = self.child.argv(self.ports[i] if self.ports else None)
            # Its defaults but for these (see the module docstring); its logs are its own
            # (`childlogdir` above: one file per stream and program).
            lines += [f"[program:{name}]", f"command={' '.join(argv)}",
                      f'environment={SD_PROGRAM_MARK}="{self.dir}"']
            if not defaults:
                lines += SD_SETTINGS
            lines.append("")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    def start_argv(self):
        return [os.path.join(self.bin, "supervisord"), "-c", self.conf]

    def ctl(self, *args):
        return [os.path.join(self.bin, "supervisorctl"), "-c", self.conf, *args]

    def status_argv(self):
        return self.ctl("status")

    def restart_argv(self, name):
        return self.ctl("restart", name)

    def stop_argv(self):
        return self.ctl("shutdown")

    def find_sup(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def rpc(self, timeout=5.0):
        return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                         transport=SD._UnixTransport(self.sock, timeout))

    def raw_status(self):
        self.rpc().supervisor.getAllProcessInfo()

    def pids(self):
        try:
            return {p["name"]: (p["statename"], p["pid"] or None)
                    for p in self.rpc().supervisor.getAllProcessInfo()}
        except Exception:  # noqa: BLE001
            return {}

    def state(self, name):
        try:
            p = self.rpc().supervisor.getProcessInfo(name)
            return p["statename"], p["pid"] or None
        except Exception:  # noqa: BLE001
            return None, None

    def close(self, graceful=True):
        sup = self.find_sup()
        if sup and graceful:
            try:
                self.rpc(5).supervisor.shutdown()
                deadline = time.monotonic() + 20
                while alive(sup) and time.monotonic() < deadline:
                    time.sleep(0.05)
            except Exception:  # noqa: BLE001
                pass
        for _ in range(5):
            victims = set(C.pids_with_env(SD_MARK, self.dir)) | set(C.pids_with_env(SD_PROGRAM_MARK, self.dir))
            sup = self.find_sup()
            if sup:
                victims.add(sup)
                victims.update(C.descendants_of(sup))
            if not victims:
                break
            C.kill_pids(victims)
            time.sleep(0.1)
        if self.keep:
            print(f"  (supervisord directory kept: {self.dir})", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


OPEN = []  # sides not yet closed, closed by the finally of main()


def open_side(cls, *args):
    side = cls(*args)
    OPEN.append(side)
    return side


def close_side(side, graceful=True):
    try:
        side.close(graceful)
    finally:
        if side in OPEN:
            OPEN.remove(side)
        reap()


def become_subreaper():
    """Orphans of ours (the daemons, whose parent exits) are reparented to this script instead
    of pid 1, and reap() collects them: no zombie is left behind even where pid 1 does not reap."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


# =========================================================================== measurements

class Timeout(Exception):
    def __init__(self, msg, limit):
        super().__init__(msg)
        self.limit = limit


class Timed:
    """A sample that hit its deadline: the figure is more than `limit` seconds."""

    def __init__(self, limit):
        self.limit = limit

    def __repr__(self):
        return f"timeout>{self.limit}s"


POPENS = []  # every Popen of ours, so that reap() never takes one of their exit statuses


def popen(argv, env, out):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    POPENS.append(p)
    return p


def reap():
    """Reaps the zombies handed to us as the child subreaper (daemons whose parent exited)."""
    busy = {p.pid for p in POPENS if p.returncode is None}
    POPENS[:] = [p for p in POPENS if p.returncode is None]
    for pid in children(os.getpid()):
        if pid in busy:
            continue
        st = C.proc_stat(pid)
        if st and st[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def finish(p, limit):
    if p.poll() is None:
        try:
            p.wait(limit)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def poll_interval(n):
    """The pause between two polls of /proc while N processes start or stop: short for a few
    processes, longer for many, so that the poller's own CPU does not slow the supervisor."""
    return 0.0002 if n <= 10 else 0.001 if n <= 100 else 0.005


def cold_start(side, deadline_s):
    """(wall clock at the start, seconds to all N exec'd / all ports accepting, seconds to the
    command's return)."""
    child, n = side.child, side.n
    interval = COLD_INTERVAL or poll_interval(n)
    out = open(side.out, "ab")
    wall0 = time.time()
    t0 = PC()
    p = popen(side.start_argv(), side.env, out)
    out.close()
    deadline = t0 + deadline_s
    t_ret = t_all = None
    confirmed = set()
    pending_ports = list(side.ports) if child.tcp else []
    try:
        while True:
            if t_ret is None and p.poll() is not None:
                t_ret = PC() - t0
                if p.returncode != 0:
                    raise RuntimeError(f"start exited {p.returncode}: {tail(side.out)}")
            if side.sup is None:
                side.sup = side.find_sup()
            if side.sup is not None and t_all is None:
                kids = children(side.sup)
                for k in kids - confirmed:
                    if comm(k) == child.comm:
                        confirmed.add(k)
                if len(confirmed & kids) >= n:
                    while pending_ports and accepts(pending_ports[-1]):
                        pending_ports.pop()
                    if not pending_ports:
                        t_all = PC() - t0
            if t_ret is not None and t_all is not None:
                return wall0, t_all, t_ret
            if PC() > deadline:
                raise Timeout(f"cold start: {len(confirmed)} of {n} exec'd, {len(pending_ports)} ports pending, "
                              f"command {'returned' if t_ret is not None else 'still running'} after {deadline_s} s",
                              deadline_s)
            time.sleep(interval)
    finally:
        finish(p, max(1.0, deadline - PC()))


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-n:])
    except OSError:
        return ""


def wait_all_running(side, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = side.pids()
        if len(st) == side.n and all(s == "RUNNING" for s, _ in st.values()):
            return st
        time.sleep(0.05)
    raise Timeout(f"not all RUNNING after {timeout} s", timeout)


def status_rtt(side, calls):
    """Back to back: (CLI round trips in seconds, count of nonzero exits, direct round trips in
    seconds). Ours reuses its memory sample for 200 ms, so most of these calls do not take one."""
    cli, bad, raw = [], 0, []
    for _ in range(calls):
        t0 = PC()
        p = subprocess.run(side.status_argv(), capture_output=True, env=side.env, timeout=60)
        cli.append(PC() - t0)
        bad += p.returncode != 0
    for _ in range(calls):
        t0 = PC()
        side.raw_status()
        raw.append(PC() - t0)
    return cli, bad, raw


def status_single(side, calls):
    """Single calls, as people make them: each after a pause longer than our memory-sample cache,
    so that each takes a fresh sample. (CLI round trips in seconds, count of nonzero exits, direct
    round trips in seconds.)"""
    cli, bad, raw = [], 0, []
    for _ in range(calls):
        time.sleep(STATUS_COLD_PAUSE)
        t0 = PC()
        p = subprocess.run(side.status_argv(), capture_output=True, env=side.env, timeout=60)
        cli.append(PC() - t0)
        bad += p.returncode != 0
        time.sleep(STATUS_COLD_PAUSE)
        t0 = PC()
        side.raw_status()
        raw.append(PC() - t0)
    return cli, bad, raw


def new_exec_child(side, before):
    for k in children(side.sup) - before:
        if comm(k) == side.child.comm:
            return k
    return None


def crash(side, name):
    """kill -9 of name's process: (wall clock at the kill, to replacement exec'd, to RUNNING
    again, to port accepting)."""
    seen = []
    deadline = time.monotonic() + 10
    while True:
        state, old = side.state(name)
        if state == "RUNNING" and old:
            break
        seen.append(state)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not RUNNING before the crash (states seen: "
                               f"{', '.join(dict.fromkeys(map(str, seen)))})")
        time.sleep(0.05)
    port = side.ports[side.names.index(name)] if side.child.tcp else None
    before = children(side.sup)
    if old not in before:
        raise RuntimeError(f"{name}'s pid {old} is not a child of the supervisor {side.sup}")
    # Leave the supervisor idle before the kill: the request above must not have woken it
    # (supervisord notices an exit at once while it is busy, else at its next 1 s poll timeout).
    time.sleep(0.2)
    wall0 = time.time()
    t0 = PC()
    os.kill(old, signal.SIGKILL)
    limit = 15
    deadline = t0 + limit
    # Only /proc until the replacement exists: no request to the supervisor meanwhile.
    interval = 0.00005 if side.n <= 10 else poll_interval(side.n) / 5
    while True:
        new = new_exec_child(side, before)
        if new is not None:
            t_exist = PC() - t0
            break
        if PC() > deadline:
            raise Timeout(f"crash of {name}: no replacement within {limit} s", limit)
        time.sleep(interval)
    t_run = t_port = None
    while t_run is None or (port and t_port is None):
        if t_run is None:
            st, pid = side.state(name)
            if st == "RUNNING" and pid and pid != old:
                t_run = PC() - t0
        if port and t_port is None and accepts(port):
            t_port = PC() - t0
        if PC() > deadline:
            raise Timeout(f"crash of {name}: not RUNNING again within {limit} s", limit)
        time.sleep(0.0005)
    return wall0, t_exist, t_run, t_port


def restart_one(side, name):
    """(wall clock at the command, to new process exec'd, to the command's return, to port
    accepting, whether the others kept their pids)."""
    before_pids = side.pids()
    old = before_pids.get(name, (None, None))[1]
    port = side.ports[side.names.index(name)] if side.child.tcp else None
    before = children(side.sup)
    out = open(side.out, "ab")
    wall0 = time.time()
    t0 = PC()
    p = popen(side.restart_argv(name), side.env, out)
    out.close()
    limit = 30
    deadline = t0 + limit
    t_ret = t_exist = t_port = None
    new = None
    try:
        while t_ret is None or t_exist is None or (port and t_port is None):
            if t_ret is None and p.poll() is not None:
                t_ret = PC() - t0
                if p.returncode != 0:
                    raise RuntimeError(f"restart {name} exited {p.returncode}: {tail(side.out)}")
            if t_exist is None:
                new = new_exec_child(side, before)
                if new is not None:
                    t_exist = PC() - t0
            elif port and t_port is None and accepts(port):
                t_port = PC() - t0
            if PC() > deadline:
                raise Timeout(f"restart {name}: not done within {limit} s", limit)
            time.sleep(0.0002)
    finally:
        finish(p, 1)
    after = side.pids()
    others = all(after.get(k, (None, None))[1] == v[1] for k, v in before_pids.items() if k != name)
    ok = others and after.get(name, (None, None))[1] == new and new != old
    return wall0, t_exist, t_ret, t_port, ok


def stop(side, limit):
    """(wall clock at the command, to the command's return, to every process gone, supervisor
    included). The command's return is None if it was still running when all were gone and the
    deadline passed."""
    procs = C.with_start(sorted(children(side.sup))) + C.with_start([side.sup])
    out = open(side.out, "ab")
    wall0 = time.time()
    t0 = PC()
    p = popen(side.stop_argv(), side.env, out)
    out.close()
    deadline = t0 + limit
    t_ret = t_gone = None
    interval = poll_interval(side.n)
    try:
        while t_ret is None or t_gone is None:
            if t_ret is None and p.poll() is not None:
                t_ret = PC() - t0
            if t_gone is None:
                # Drop the dead from the front up to the first one alive: one read per poll
                # while that one lives.
                while procs and not C.pid_alive(*procs[0]):
                    procs.pop(0)
                if not procs:
                    t_gone = PC() - t0
            if PC() > deadline:
                e = Timeout(f"stop: {len(procs)} processes left after {limit} s", limit)
                e.t_ret = t_ret
                raise e
            time.sleep(interval)
    finally:
        finish(p, 5)
        reap()
    side.sup = None
    return wall0, t_ret, t_gone


def idle_cpu(pids, seconds):
    """{pid: (ms per 10 s from schedstat, wakeups per 10 s, ms per 10 s from utime+stime)}.

    Samples every thread's on-CPU time (/proc/PID/task/TID/schedstat, ns) every 0.5 s, so a
    thread that ends during the window loses at most its last half second."""
    first = {p: cpu_sample(p) for p in pids}
    last = {p: dict(first[p][0]) if first[p] else {} for p in pids}
    ticks = {p: None for p in pids}
    t_end = time.monotonic() + seconds
    while True:
        for p in pids:
            s = cpu_sample(p)
            if s:
                last[p].update(s[0])
                ticks[p] = s[1]
        if time.monotonic() >= t_end:
            break
        time.sleep(min(0.5, max(0.0, t_end - time.monotonic())))
    out = {}
    for p in pids:
        if not first[p] or ticks[p] is None:
            out[p] = None
            continue
        f = first[p][0]
        ns = sum(v[0] - f.get(t, (0, 0))[0] for t, v in last[p].items())
        ctx = sum(v[1] - f.get(t, (0, 0))[1] for t, v in last[p].items())
        scale = 10.0 / seconds
        out[p] = (ns / 1e6 * scale, ctx * scale, (ticks[p] - first[p][1]) * 1000.0 / CLK_TCK * scale)
    return out


# --------------------------------------------------------------------------- our supervisor's log

LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(.*)$")


def log_events(side, wall0, upto=None):
    """[(seconds since wall0, message)] of logs/supervisor.log from wall0 on (microsecond
    timestamps, the same clock as time.time()), up to `upto` seconds after it if given."""
    out = []
    try:
        with open(os.path.join(side.home, "logs", "supervisor.log"), errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        m = LOG_TS.match(line.rstrip("\n"))
        if not m:
            continue
        ts = datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        if ts >= wall0 - 0.0005 and (upto is None or ts - wall0 <= upto + 0.001):
            out.append((ts - wall0, m.group(2)))
    return out


def first(events, *words, component=None, last=False):
    """The time of the first (or last) event whose message holds every word (and the component)."""
    hit = None
    for t, msg in events:
        if component and f"component={component}" not in msg.split():
            continue
        if all(w in msg for w in words):
            if not last:
                return t
            hit = t
    return hit


# Our supervisor's own timeline of each measured step, from its log: (key, label, how).
TIMELINES = {
    "cold": ("command → daemon logs it started / → start requested / → first spawned / → last spawned / → last RUNNING",
             lambda ev, name: [first(ev, "Server Supervisor started"), first(ev, "start requested"),
                               first(ev, "process spawned"), first(ev, "process spawned", last=True),
                               first(ev, "-> RUNNING", last=True)]),
    "crash": ("kill → exit noticed / → replacement spawned / → RUNNING",
              lambda ev, name: [first(ev, "process killed by signal", component=name),
                                first(ev, "process spawned", component=name),
                                first(ev, "-> RUNNING", component=name)]),
    "restart": ("command → SIGTERM sent / → exit noticed / → spawned / → RUNNING",
                lambda ev, name: [first(ev, "signalling process group", component=name),
                                  first(ev, "process killed by signal", component=name),
                                  first(ev, "process spawned", component=name),
                                  first(ev, "-> RUNNING", component=name)]),
    "stop": ("command → stop requested / → last component STOPPED / → supervisor logs it stopped",
             lambda ev, name: [first(ev, "stop requested"), first(ev, "-> STOPPED", last=True),
                               first(ev, "Server Supervisor stopped")]),
}


# =========================================================================== one configuration

class Samples:
    """Named lists of figures; None is a failed measurement, a Timed one that hit its deadline."""

    def __init__(self):
        self.d = {}
        self.errors = []

    def add(self, key, value):
        self.d.setdefault(key, []).append(value)

    def get(self, key):
        return self.d.get(key, [])


def one_run(cls, cfg, args, template, status_calls, rec):
    """One fresh supervisor: cold start, status, memory, crashes, restarts, stop."""
    child, n, defaults = cfg["child"], cfg["n"], cfg["defaults"]
    ports = pick_ports(n) if child.tcp else None
    side = open_side(cls, child, n, ports, defaults, template, args.keep)
    marks = []  # (kind, component, wall clock) for our log's timeline
    ours = isinstance(side, Ours)

    def failed(keys, e):
        for k in keys:
            rec.add(k, Timed(e.limit) if isinstance(e, Timeout) else None)
        rec.errors.append(str(e))

    try:
        try:
            wall0, t_all, t_ret = cold_start(side, 120)
            rec.add("cold_all", t_all)
            rec.add("cold_ret", t_ret)
            marks.append(("cold", None, wall0, t_ret))
        except (Timeout, RuntimeError) as e:
            failed(["cold_all", "cold_ret"], e)
            return
        wait_all_running(side, 60)
        time.sleep(0.3)
        cli, bad, raw = status_single(side, cfg["status_cold_per_run"])
        for v in cli:
            rec.add("status_cold_cli", v)
        for v in raw:
            rec.add("status_cold_raw", v)
        if bad:
            rec.errors.append(f"status: {bad} of {cfg['status_cold_per_run']} single calls exited non-zero")
        cli, bad, raw = status_rtt(side, status_calls)
        for v in cli:
            rec.add("status_cli", v)
        for v in raw:
            rec.add("status_raw", v)
        if bad:
            rec.errors.append(f"status: {bad} of {status_calls} calls exited non-zero")
        for k, v in smaps(side.sup).items():
            rec.add(k, v)
        for name in cfg["crash_victims"]:
            try:
                wall0, t_exist, t_run, t_port = crash(side, name)
                rec.add("crash_exist", t_exist)
                rec.add("crash_run", t_run)
                if child.tcp:
                    rec.add("crash_port", t_port)
                marks.append(("crash", name, wall0, None))
            except (Timeout, RuntimeError) as e:
                failed(["crash_exist"], e)
            time.sleep(0.2)
        for name in cfg["restart_victims"]:
            try:
                wait_all_running(side, 30)
                wall0, t_exist, t_ret, t_port, ok = restart_one(side, name)
                rec.add("restart_exist", t_exist)
                rec.add("restart_ret", t_ret)
                if child.tcp:
                    rec.add("restart_port", t_port)
                rec.add("restart_ok", ok)
                marks.append(("restart", name, wall0, None))
            except (Timeout, RuntimeError) as e:
                failed(["restart_exist"], e)
            time.sleep(0.1)
        wait_all_running(side, 30)
        time.sleep(0.2)
        limit = 60
        try:
            wall0, t_ret, t_gone = stop(side, limit)
            rec.add("stop_ret", t_ret)
            rec.add("stop_gone", t_gone)
            marks.append(("stop", None, wall0, None))
        except Timeout as e:
            failed(["stop_gone"], e)
            if getattr(e, "t_ret", None) is not None:
                rec.add("stop_ret", e.t_ret)
        if ours:
            # The supervisor's own timeline, from its log (read once the measurements are done).
            for kind, name, wall0, upto in marks:
                ev = log_events(side, wall0, upto)
                for i, v in enumerate(TIMELINES[kind][1](ev, name)):
                    rec.add(f"log_{kind}_{i}", v)
    except (Timeout, RuntimeError, OSError, subprocess.SubprocessError) as e:
        rec.errors.append(f"{type(e).__name__}: {e}")
    finally:
        close_side(side)


def idle_phase(cfgs, classes, args, template, seconds, settle, recs):
    """Every configuration of one N, on both sides, up at once; idle for `seconds`.

    Idle processes do not disturb each other, so the windows are shared to save time."""
    sides = []
    try:
        for cfg in cfgs:
            for cls in classes:
                ports = pick_ports(cfg["n"]) if cfg["child"].tcp else None
                side = open_side(cls, cfg["child"], cfg["n"], ports, cfg["defaults"], template, args.keep)
                side.cfg_key = cfg["key"]
                sides.append(side)
                cold_start(side, 120)
                wait_all_running(side, 60)
        time.sleep(settle)
        res = idle_cpu([s.sup for s in sides], seconds)
        for side in sides:
            r = res.get(side.sup)
            rec = recs[side.cfg_key][side.label]
            if r:
                rec.add("idle_ms", r[0])
                rec.add("idle_wakeups", r[1])
                rec.add("idle_ticks_ms", r[2])
            rec.add("idle_rss", smaps(side.sup)["rss"])
    except (Timeout, RuntimeError, OSError) as e:
        for side in sides:
            recs[side.cfg_key][side.label].errors.append(f"idle: {type(e).__name__}: {e}")
    finally:
        for side in sides:
            close_side(side, graceful=False)


def victims(n, count):
    if n <= count:
        return [f"c{i}" for i in range(n)]
    return [f"c{(i * (n - 1)) // (count - 1)}" for i in range(count)]


def make_cfg(variant, n, defaults, args, tiny):
    quick = args.quick
    if args.runs:
        runs = args.runs
    elif defaults:
        runs = 2 if quick else 3
    else:
        runs = (2 if n < 1000 else 1) if quick else (5 if n < 1000 else 3)
    total_calls = 20 if quick else STATUS_CALLS
    cold_calls = 6 if quick else STATUS_COLD_CALLS
    return {
        "key": f"{variant}, N = {n}, {'defaults' if defaults else 'bench configuration'}",
        "variant": variant, "n": n, "defaults": defaults, "child": Child(variant, tiny), "runs": runs,
        "status_per_run": math.ceil(total_calls / runs),
        "status_cold_per_run": math.ceil(cold_calls / runs),
        "crash_victims": victims(n, 3 if n <= 3 else 5),
        "restart_victims": [f"c{n - 1}", f"c{n // 2}"] if n > 1 else ["c0"],
    }


def run_config(cfg, args, template, classes):
    recs = {cls.label: Samples() for cls in classes}
    t0 = time.monotonic()
    for _ in range(cfg["runs"]):
        for cls in classes:
            one_run(cls, cfg, args, template, cfg["status_per_run"], recs[cls.label])
    cfg["seconds"] = time.monotonic() - t0
    return recs


# =========================================================================== formatting

def fmt_s(v):
    """Seconds as milliseconds, 3 significant digits."""
    ms_ = v * 1000
    if ms_ >= 100:
        return f"{ms_:.0f}"
    if ms_ >= 10:
        return f"{ms_:.1f}"
    return f"{ms_:.2f}"


def summary(values, fmt=fmt_s, unit=" ms"):
    """('median [min–max] unit', median, lower bound): failures (None) and timeouts apart."""
    if not values:
        return "n/a", None, None
    good = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    timed = [v for v in values if isinstance(v, Timed)]
    fails = len(values) - len(good) - len(timed)
    extra = []
    if timed:
        extra.append(f"{len(timed)} timeout (> {max(t.limit for t in timed):g} s)")
    if fails:
        extra.append(f"{fails} failed")
    if not good:
        lower = max(t.limit for t in timed) if timed else None
        return "; ".join(extra) or "n/a", None, lower
    med = statistics.median(good)
    s = f"{fmt(med)}{unit}" if len(good) == 1 else f"{fmt(med)} [{fmt(min(good))}–{fmt(max(good))}]{unit}"
    if extra:
        s += " (" + ", ".join(extra) + ")"
    return s, med, None


def pstat(values, which, fmt, unit):
    good = sorted(v for v in values if isinstance(v, (int, float)))
    if not good:
        return "n/a", None, None
    v = C.pct(good, 50 if which == "p50" else 99)
    if which == "p50":
        return f"{fmt(v)} [{fmt(good[0])}–{fmt(good[-1])}]{unit}", v, None
    return f"{fmt(v)}{unit}", v, None


def kib(v):
    return f"{v / 1024:.1f}"


def plain(v):
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def ratio_text(r, lower=False):
    if r is None:
        return ""
    s = f"{r:.1f}×" if r < 100 else f"{r:.0f}×"
    return "> " + s if lower else s


def table(cfg, recs, classes):
    ours = recs["imageserving"]
    other = recs.get(Sd.label) if Sd in classes else None
    key = cfg["key"]
    n, bench = cfg["n"], not cfg["defaults"]
    child = cfg["child"]
    lines = [f"#### {key}", ""]
    argv = [os.path.basename(a) if a == child.tiny else a for a in child.argv("PORT")]
    lines.append(f"Child `{' '.join(argv)}`; {cfg['runs']} runs, each a fresh supervisor; "
                 f"crashes of {', '.join(cfg['crash_victims'])} and restarts of "
                 f"{', '.join(cfg['restart_victims'])} in each run; {cfg['status_cold_per_run'] * cfg['runs']} single "
                 f"status calls ({STATUS_COLD_PAUSE:g} s apart) and {cfg['status_per_run'] * cfg['runs']} back to back "
                 f"in all; idle window {cfg.get('idle_s', 0):g} s; {cfg['seconds']:.0f} s for the runs.")
    lines.append("")
    head, sep = "| measurement | imageserving |", "|---|---|"
    if other:
        head += f" {Sd.label} | ratio sd / ours |"
        sep += "---|---|"
    head += " target | met? |"
    sep += "---|---|"
    lines += [head, sep]

    def row(label, k, target=None, fmt=fmt_s, unit=" ms", stat="median"):
        get = (lambda vals: summary(vals, fmt, unit)) if stat == "median" else (lambda vals: pstat(vals, stat, fmt, unit))
        s_o, m_o, _ = get(ours.get(k))
        cells = [label, s_o]
        ratio = None
        if other:
            s_s, m_s, lower_s = get(other.get(k))
            if m_o and m_s:
                ratio, rt = m_s / m_o, ratio_text(m_s / m_o)
            elif m_o and lower_s:
                ratio, rt = None, ratio_text(lower_s / m_o, lower=True)
            else:
                rt = ""
            cells += [s_s, rt]
        t_txt, met_txt = "", ""
        if target and bench:
            limit, ratio_min = target
            parts, mets = [], []
            if limit is not None:
                parts.append(f"≤ {fmt(limit)}{unit}")
                mets.append(add_target(key, label, m_o, limit, (fmt, unit)))
            if ratio_min is not None and other:
                parts.append(f"ratio ≥ {ratio_min}")
                mets.append(add_ratio_target(key, label + " (ratio sd / ours)", ratio, ratio_min))
            t_txt = ", ".join(parts)
            met_txt = ", ".join("n/a" if m is None else "met" if m else "**missed**" for m in mets)
        cells += [t_txt, met_txt]
        lines.append("| " + " | ".join(cells) + " |")

    def timeline(kind):
        keys = [k for k in ours.d if k.startswith(f"log_{kind}_")]
        if not keys:
            return
        meds = []
        for i in range(len(keys)):
            good = [v for v in ours.get(f"log_{kind}_{i}") if isinstance(v, float)]
            meds.append(fmt_s(statistics.median(good)) if good else "n/a")
        cells = [f"↳ ours, from its log: {TIMELINES[kind][0]} (medians)", " / ".join(meds) + " ms"]
        if other:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells + ["", ""]) + " |")

    n3, n1000 = n == 3, n == 1000
    ready = "all ports accepting" if child.tcp else "all N children exec'd"
    row(f"cold start: `start` → {ready}", "cold_all", (0.050, None) if n3 else (1.0, None) if n1000 else None)
    row("cold start: `start` → command returns", "cold_ret")
    timeline("cold")
    row("`status` CLI round trip, single call (after a pause: a fresh memory sample)", "status_cold_cli",
        (0.005, 35) if n3 else (0.020, None) if n1000 else None)
    row("status request without the CLI, single call (ours: control socket; sd: XML-RPC getAllProcessInfo)",
        "status_cold_raw")
    row("`status` CLI round trip back to back p50 [min–max of the calls] (ours: mostly a cached memory sample)",
        "status_cli", stat="p50")
    row("`status` CLI round trip back to back p99", "status_cli", stat="p99")
    row("status request without the CLI back to back p50", "status_raw", stat="p50")
    row("crash (`kill -9`) → replacement process exec'd", "crash_exist", (0.003, 300) if n3 else None)
    row("crash → RUNNING again (ours: control socket; sd: XML-RPC)", "crash_run")
    if child.tcp:
        row("crash → port accepting again", "crash_port")
    timeline("crash")
    row("`restart <one>` → new process exec'd", "restart_exist")
    row("`restart <one>` → command returns (new process RUNNING)", "restart_ret", (0.010, None) if n3 else None)
    if child.tcp:
        row("`restart <one>` → port accepting", "restart_port")
    timeline("restart")
    oks_o = ours.get("restart_ok")
    cells = ["`restart <one>`: the others keep their pids", f"{sum(1 for x in oks_o if x)} of {len(oks_o)}"]
    if other:
        oks_s = other.get("restart_ok")
        cells += [f"{sum(1 for x in oks_s if x)} of {len(oks_s)}", ""]
    lines.append("| " + " | ".join(cells + ["all", ""]) + " |")
    row("`stop` → command returns", "stop_ret")
    row("`stop` → every process gone, supervisor included", "stop_gone", (0.100, None) if n3 else None)
    timeline("stop")
    row("supervisor resident memory (VmRSS) after start and the status calls", "rss",
        (5 * 1024, None) if n3 else (40 * 1024, None) if n1000 else None, fmt=kib, unit=" MiB")
    row("supervisor Pss", "pss", fmt=kib, unit=" MiB")
    row("supervisor Private (clean + dirty)", "private", fmt=kib, unit=" MiB")
    if ours.get("idle_ms"):
        row("idle CPU, ms per 10 s (on-CPU time of every thread, schedstat)", "idle_ms",
            (1.0, None) if n3 else None, fmt=plain, unit=" ms")
        row("idle wakeups (context switches) per 10 s", "idle_wakeups", fmt=plain, unit="")
        row("idle CPU from utime+stime (10 ms ticks), ms per 10 s", "idle_ticks_ms", fmt=plain, unit=" ms")
        row("VmRSS after the idle window", "idle_rss", fmt=kib, unit=" MiB")
    lines.append("")
    for label, rec in recs.items():
        if rec.errors:
            errs = list(dict.fromkeys(rec.errors))
            lines.append(f"{label}, problems: " + "; ".join(errs[:6]) + (" …" if len(errs) > 6 else ""))
            lines.append("")
    return "\n".join(lines)


def add_target(key, what, value, limit, fmt):
    met = None if value is None else value <= limit
    TARGETS.append((key, what, value, limit, fmt, met))
    return met


def add_ratio_target(key, what, ratio, minimum):
    met = None if ratio is None else ratio >= minimum
    TARGETS.append((key, what, ratio, minimum, None, met))
    return met


# =========================================================================== the floor

def floor(tiny, sizes, variants, reps):
    """Markdown: the same child forked and exec'd alone (and N copies back to back)."""
    rows = []

    def add(label, vals_s):
        s = summary(vals_s)[0]
        rows.append(f"| {label} | {s} | {len(vals_s)} |")

    env = clean_env()
    # C: fork + execv, exec done = EOF on a close-on-exec pipe.
    if tiny:
        p = subprocess.run([tiny, "floor", str(reps), "-", SLEEP, "100000"], capture_output=True, text=True, timeout=120)
        vals = [float(line.split()[0]) / 1e6 for line in p.stdout.split("\n") if line.strip()]
        add("C fork + execv of `sleep 100000` → exec'd", vals)
        if "tcp" in variants:
            port = pick_ports(1)[0]
            p = subprocess.run([tiny, "floor", str(reps), str(port), tiny, "listen", "{port}"],
                               capture_output=True, text=True, timeout=120)
            lines = [line.split() for line in p.stdout.split("\n") if line.strip()]
            add("C fork + execv of `tinychild listen PORT` → exec'd", [float(a) / 1e6 for a, _ in lines])
            add("C fork + execv of `tinychild listen PORT` → port accepting", [float(b) / 1e6 for _, b in lines])
    # Python: os.posix_spawn (glibc's clone(CLONE_VFORK): it returns once the exec is done).
    spawn, loaded = [], []
    for _ in range(reps):
        t0 = PC()
        pid = os.posix_spawn(SLEEP, [SLEEP, "100000"], env)
        spawn.append(PC() - t0)
        deadline = t0 + 5
        while PC() < deadline:
            try:
                with open(f"/proc/{pid}/syscall") as f:
                    sc = f.read().split()[0]
            except OSError:
                sc = ""
            if sc in ("230", "35"):  # blocked in clock_nanosleep / nanosleep
                loaded.append(PC() - t0)
                break
            time.sleep(0.00002)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        time.sleep(0.002)
    add("Python os.posix_spawn of `sleep 100000` → exec'd (posix_spawn returns)", spawn)
    add("Python os.posix_spawn of `sleep 100000` → blocked in its sleep (loaded)", loaded)
    # Python: os.fork + os.execv, exec done = EOF on a close-on-exec pipe (as supervisord forks).
    fork = []
    for _ in range(reps):
        r, w = os.pipe()
        t0 = PC()
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(SLEEP, [SLEEP, "100000"], env)
            finally:
                os._exit(127)
        os.close(w)
        os.read(r, 1)
        fork.append(PC() - t0)
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        time.sleep(0.002)
    add("Python os.fork + os.execve of `sleep 100000` → exec'd", fork)
    # Whole CLI processes that do nothing: what a `status` round trip cannot go below.
    for label, argv in (("Python subprocess.run of `/bin/true` (a CLI process that does nothing)", ["/bin/true"]),
                        ("Python subprocess.run of `imageserving --version` (our CLI, no request)", [BINARY, "--version"])):
        vals = []
        for _ in range(reps):
            t0 = PC()
            subprocess.run(argv, capture_output=True, env=env, timeout=30)
            vals.append(PC() - t0)
        add(label, vals)
    # C: N copies back to back.
    if tiny:
        for n in sizes:
            for variant in variants:
                ports = pick_ports(n) if variant == "tcp" else None
                stdin = "\n".join(str(p) for p in ports) if ports else "\n".join("-" for _ in range(n))
                argv = [tiny, "batch", tiny, "listen", "{port}"] if ports else [tiny, "batch", SLEEP, "100000"]
                a, b = [], []
                for _ in range(3):
                    p = subprocess.run(argv, input=stdin + "\n", capture_output=True, text=True, timeout=120)
                    if p.returncode == 0:
                        x, y = p.stdout.split()
                        a.append(float(x) / 1e6)
                        b.append(float(y) / 1e6)
                    time.sleep(0.2)
                what = "`tinychild listen PORT`" if ports else "`sleep 100000`"
                add(f"C: {n} copies of {what} forked + exec'd back to back → all exec'd", a)
                if ports:
                    add(f"C: {n} copies of {what} back to back → all ports accepting", b)
    return "\n".join(["| floor | median [min–max] | samples |", "|---|---|---|", *rows])


# =========================================================================== main

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
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    try:
        built = datetime.fromtimestamp(os.path.getmtime(BINARY), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        built = "?"
    return (f"{os.cpu_count()} cores ({cpu}), {mem}, Linux {platform.release()}, Python {platform.python_version()}; "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; commit {commit}"
            f"{' with uncommitted changes' if dirty else ''}; binary built {built}")


def binary_stamp():
    """The release binaries' modification times: a rebuild during the run shows here."""
    out = []
    for path in (BINARY, BINARY + "-supervisor"):
        try:
            out.append(os.stat(path).st_mtime_ns)
        except OSError:
            out.append(None)
    return out


def make_template(keep):
    """A home started once (its directories and files created), copied into every measured home, so
    that cold starts measure a home that has been used before. Its only component is a sleeper: the
    sample images are provisioned by `is` (run/samples.due), which no measured home runs. Returns
    (path, the fresh home's start in seconds)."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="isbench-tpl-"))
    os.makedirs(os.path.join(path, "conf"))
    with open(os.path.join(path, "conf", "imageserving.toml"), "w") as f:
        f.write(f'[components.c0]\ncommand = ["{SLEEP}", "100000"]\nstart_secs = "0s"\n')
    env = clean_env()
    t0 = PC()
    p = subprocess.run([BINARY, "--home", path, "start"], capture_output=True, text=True, env=env, timeout=120)
    t = PC() - t0
    subprocess.run([BINARY, "--home", path, "stop"], capture_output=True, env=env, timeout=60)
    C.kill_pids(C.marked_pids(path))
    if p.returncode != 0:
        raise RuntimeError(f"start of the template home failed: {p.stdout}{p.stderr}")
    return path, t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, 6 single and 20 back-to-back status calls, "
                    "30 s idle windows")
    ap.add_argument("--n", default="3,100,1000", help="comma-separated sizes (default 3,100,1000)")
    ap.add_argument("--variant", default="sleeper,tcp", help="sleeper, tcp or both (default)")
    ap.add_argument("--no-supervisord", action="store_true", help="measure imageserving only")
    ap.add_argument("--runs", type=int, help="runs per configuration (default 5, 3 at N = 1000 and for the "
                    "defaults; --quick: 2, 1 at N = 1000)")
    ap.add_argument("--idle", type=float, help="idle window in seconds (default 60, --quick 30; 0 skips it)")
    ap.add_argument("--floor-reps", type=int, default=50, help="samples of each floor figure (default 50)")
    ap.add_argument("--keep", action="store_true", help="keep the homes and directories (processes are killed)")
    ap.add_argument("--json", help="also write every sample to this file")
    args = ap.parse_args()
    sizes = [int(x) for x in args.n.split(",") if x.strip()]
    variants = [v.strip() for v in args.variant.split(",") if v.strip()]
    for v in variants:
        if v not in ("sleeper", "tcp"):
            ap.error(f"unknown variant {v}")
    if not os.path.exists(BINARY):
        sys.exit(f"{BINARY} not found: run `cargo build --release` first")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    become_subreaper()
    classes = [Ours] if args.no_supervisord else [Ours, Sd]
    idle_s = args.idle if args.idle is not None else (30 if args.quick else 60)
    t_start = time.monotonic()
    stamp0 = binary_stamp()
    tmp = tempfile.mkdtemp(prefix="isbench-tmp-")
    template = None
    out = []
    raw = {}
    try:
        tiny, how = compile_tiny(tmp)
        if not tiny and "tcp" in variants:
            print(f"tcp variant skipped: {how}", file=sys.stderr)
            variants = [v for v in variants if v != "tcp"]
        if Sd in classes:
            print(f"installing supervisor=={SD.VERSION} into a throw-away virtual environment…", file=sys.stderr)
            SD.install()
        template, fresh = make_template(args.keep)
        out += ["## Supervisor benchmark results", "", machine(), ""]
        out.append(f"Children: sleeper = `{SLEEP} 100000` (coreutils, dynamically linked)"
                   + (f"; tcp = `tinychild listen PORT` (benches/supervisors/tinychild.c, built with {how})." if tiny else "."))
        if Sd in classes:
            out.append(f"supervisord {SD.VERSION}: its defaults, but for {', '.join(f'`{x}`' for x in SD_SETTINGS)} "
                       "in the bench configuration (none in the defaults one), and `childlogdir`, `minfds`, "
                       "`minprocs` (see the script's docstring).")
        out.append(f"First start of a fresh home (one sleeper; it creates the home's directories): "
                   f"{fmt_s(fresh)} ms. Every measured home starts from a copy of that home instead.")
        out.append("")
        print("floor…", file=sys.stderr)
        out += ["### Floor: the child alone", "", floor(tiny, sizes, variants, args.floor_reps), ""]
        all_cfgs, recs = [], {}
        for n in sizes:
            cfgs = [make_cfg(v, n, False, args, tiny) for v in variants]
            if n == 3 and "sleeper" in variants:
                cfgs.insert(1, make_cfg("sleeper", 3, True, args, tiny))
            for cfg in cfgs:
                print(f"{cfg['key']}…", file=sys.stderr)
                recs[cfg["key"]] = run_config(cfg, args, template, classes)
            if idle_s > 0:
                # 12 s: the runtime's idle threads end 10 s after their last work (a one-off);
                # with the defaults, stable_after (30 s) must have fired too.
                settle = 32.0 if any(c["defaults"] for c in cfgs) else 12.0
                print(f"idle window, N = {n} ({settle:g} s settle + {idle_s:g} s)…", file=sys.stderr)
                idle_phase(cfgs, classes, args, template, idle_s, settle, recs)
            for cfg in cfgs:
                cfg["idle_s"] = idle_s
                cfg["text"] = table(cfg, recs[cfg["key"]], classes)
                print(cfg["text"] + "\n", file=sys.stderr)
                raw[cfg["key"]] = {"runs": cfg["runs"], "seconds": cfg["seconds"],
                                   **{label: {"samples": {k: [repr(x) if isinstance(x, Timed) else x for x in v]
                                                          for k, v in r.d.items()},
                                              "errors": r.errors} for label, r in recs[cfg["key"]].items()}}
            all_cfgs += cfgs
        order = {"sleeper": 0, "tcp": 1}
        for cfg in sorted(all_cfgs, key=lambda c: (order[c["variant"]], c["n"], c["defaults"])):
            out += [cfg["text"], ""]
        out += ["### Targets (bench configuration; our medians)", "",
                "| configuration | measurement | value | target | met? | margin |", "|---|---|---|---|---|---|"]
        seen = set()
        for key, what, value, limit, fmt, met in TARGETS:
            if (key, what) in seen:
                continue
            seen.add((key, what))
            if fmt is None:
                v = "n/a" if value is None else ratio_text(value)
                tg = f"≥ {limit}×"
                margin = "" if value is None else f"{value / limit:.2f}× the minimum"
                what = what.replace(" [min–max of the calls]", "")
            else:
                f, unit = fmt
                v = "n/a" if value is None else f"{f(value)}{unit}"
                tg = f"≤ {f(limit)}{unit}"
                margin = ("" if value is None else "under" if value == 0 else
                          f"{limit / value:.2f}× under" if value <= limit else f"{value / limit:.2f}× over")
                what = what.replace(" [min–max of the calls]", "")
            out.append(f"| {key} | {what} | {v} | {tg} | {'n/a' if met is None else 'met' if met else '**missed**'} | {margin} |")
        out += ["", f"Whole run: {(time.monotonic() - t_start) / 60:.1f} min."]
        if binary_stamp() != stamp0:
            out += ["", "**Warning: the release binary changed during the run: these figures mix two builds.**"]
    finally:
        for side in list(OPEN):
            close_side(side, graceful=False)
        if template:
            C.kill_pids(C.marked_pids(template))
            shutil.rmtree(template, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        reap()
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
