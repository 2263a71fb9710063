"""Shared helpers of the reliability campaign: temporary homes, the control socket, /proc, cleanup.

Everything here is stdlib only and Linux only (it reads /proc). Nothing touches the default home
or the default ports: homes come from tempfile.mkdtemp, ports from binding port 0.
"""

import json
import os
import re
import shutil
import signal
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("IMAGESERVING_BIN", os.path.join(ROOT, "target", "release", "imageserving"))

STATUS_REQUEST = b'{"v":1,"request":{"type":"status","component":null}}\n'


# --------------------------------------------------------------------------- results

class Result:
    """What one scenario reports: a summary row and its detailed figures.

    A scenario that runs the same checks against another supervisor (supervisord) fills `other`
    (its name), gives each row a second value, and describes that run in `other_failures` (goals
    it missed, in words) and `other_lost`. Those are shown beside ours and never count as our
    failures: only `failures` decides the exit code.
    """

    def __init__(self, name, number):
        self.name = name
        self.number = number
        self.load = ""
        self.faults = ""
        self.failures = []   # goal violations, in words
        self.lost = ""
        self.rows = []       # (figure, value, goal, other value or None)
        self.other = None    # e.g. "supervisord 4.3.0"
        self.other_failures = []
        self.other_lost = ""
        self.notes = []      # lines printed after the table

    def add(self, figure, value, goal="", other=None):
        self.rows.append((figure, str(value), goal, None if other is None else str(other)))

    def fail(self, what):
        self.failures.append(what)

    def table(self):
        out = [f"### {self.number}. {self.name}", ""]
        if self.other:
            out += [f"| figure | imageserving | {self.other} | goal |", "|---|---|---|---|"]
            for f, v, g, o in self.rows:
                out.append(f"| {f} | {v} | {'' if o is None else o} | {g} |")
        else:
            out += ["| figure | value | goal |", "|---|---|---|"]
            for f, v, g, _ in self.rows:
                out.append(f"| {f} | {v} | {g} |")
        out.append("")
        out.append("Failures: " + ("none" if not self.failures else "; ".join(self.failures)))
        if self.other:
            out.append(f"{self.other} (not counted): goals missed: "
                       + ("none" if not self.other_failures else "; ".join(self.other_failures)))
        for n in self.notes:
            out.append(n)
        return "\n".join(out)


# Options of the whole run (set by run.py's main): whether to run the supervisord comparison.
SETTINGS = {"supervisord": True}

# The interpreter running this script, resolved (python3 may be a shim that adds a process).
PYTHON = os.path.realpath(sys.executable)


# --------------------------------------------------------------------------- homes and the CLI

# A budget that a storm of faults never exhausts (scenarios 1 and 9).
STACK_BUDGET = 'max_restarts = 1000\nmax_window = "60s"\nbackoff_max = "1s"\n'


def stack_config(ps, is_, svg, extra=""):
    """The real stack (ps depending on is and svg) on the given ports, with `extra` TOML lines in
    each component's table."""
    return f"""[supervisor]
start_wait = "30s"

[components.ps]
command = ["@self", "component", "ps"]
port = {ps}
depends_on = ["is", "svg"]
{extra}
[components.is]
command = ["@self", "component", "is"]
port = {is_}
{extra}
[components.svg]
command = ["@self", "component", "svg"]
port = {svg}
{extra}"""


class Home:
    """A temporary home with a configuration file; cleaned up (processes, then files) by close()."""

    def __init__(self, config_text, keep=False):
        self.path = os.path.realpath(tempfile.mkdtemp(prefix="isrel-"))
        self.keep = keep
        os.makedirs(os.path.join(self.path, "conf"))
        with open(os.path.join(self.path, "conf", "imageserving.toml"), "w") as f:
            f.write(config_text)

    @property
    def sock(self):
        return os.path.join(self.path, "run", "control.sock")

    @property
    def log(self):
        return os.path.join(self.path, "logs", "supervisor.log")

    def cli(self, *args, timeout=60):
        """Runs `imageserving --home H args...`; returns (rc, stdout, stderr)."""
        p = subprocess.run([BINARY, "--home", self.path, *args], capture_output=True, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def cli_bg(self, *args):
        return subprocess.Popen([BINARY, "--home", self.path, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def supervisor_pid(self):
        try:
            with open(os.path.join(self.path, "run", "supervisor.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def marked(self):
        """Live (non-zombie) pids whose environment carries IMAGESERVING_TREE=<this home>."""
        return marked_pids(self.path)

    def close(self, failed=False):
        """stop, then SIGKILL whatever still carries the marker (and a leftover supervisor)."""
        try:
            if os.path.exists(self.sock):
                self.cli("stop", timeout=40)
        except Exception:
            pass
        sup = self.supervisor_pid()
        if sup and pid_alive(sup) and self.path in read_cmdline(sup):
            try:
                os.kill(sup, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(3):
            pids = self.marked()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        if failed or self.keep:
            print(f"  (home kept: {self.path})")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def free_ports(n):
    """n distinct ephemeral loopback ports (bound to port 0, then released)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# --------------------------------------------------------------------------- the control socket

# The image request the load of scenarios 1 and 9 loops on: it reaches is (`cache=off`).
IMAGE_PATH = "/is/image/sample/photo?wid=120&fmt=jpeg&cache=off"


def http_get_kind(port, path=IMAGE_PATH, timeout=10):
    """One GET on a new connection to 127.0.0.1:port: (kind, seconds), the kind being the status
    ("200", "503", ...) or how it failed: refused, reset (closed without a whole answer), timeout,
    error <class>."""
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
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


def control_call(sock_path, payload=STATUS_REQUEST, timeout=5.0):
    """One request on a fresh connection; returns the decoded answer (a dict)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(payload)
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a full answer")
            buf += chunk
        ans = json.loads(buf)
        return ans.get("response", ans)
    finally:
        s.close()


def timed_status(sock_path, timeout=5.0):
    """(latency seconds, answer or None, error string or None)."""
    t0 = time.monotonic()
    try:
        ans = control_call(sock_path, timeout=timeout)
        dt = time.monotonic() - t0
        if ans.get("type") != "status":
            return dt, None, f"answer type {ans.get('type')}: {ans.get('message')}"
        return dt, ans, None
    except Exception as e:  # noqa: BLE001 - every failure counts the same
        return time.monotonic() - t0, None, f"{type(e).__name__}: {e}"


def components(answer):
    return {c["name"]: c for c in answer["components"]}


def wait_for(cond, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    return cond()


# --------------------------------------------------------------------------- /proc

def read_environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def read_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_stat(pid):
    """(state, ppid, starttime) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def pid_alive(pid, starttime=None):
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[2] == starttime


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def marked_pids(home_realpath):
    marker = f"IMAGESERVING_TREE={home_realpath}".encode()
    out = []
    for pid in all_pids():
        if marker in read_environ(pid) and pid_alive(pid):
            out.append(pid)
    return out


def children_of(ppid):
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[1] == ppid and st[0] not in ("Z", "X"):
            out.append((pid, st[2]))
    return out


def descendants_of(root):
    """Every live descendant pid of root (by ppid)."""
    kids = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[0] not in ("Z", "X"):
            kids.setdefault(st[1], []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def pids_with_env(key, value):
    """Live (non-zombie) pids whose environment holds exactly KEY=value."""
    entry = f"{key}={value}".encode()
    return [pid for pid in all_pids() if entry in read_environ(pid) and pid_alive(pid)]


def with_start(pids):
    """[(pid, starttime)] of the given pids still alive: a pid plus its start time names one process."""
    out = []
    for p in pids:
        st = proc_stat(p)
        if st and st[0] not in ("Z", "X"):
            out.append((p, st[2]))
    return out


def still_alive(pairs):
    """The (pid, starttime) pairs whose process is still alive."""
    return [(p, st) for p, st in pairs if pid_alive(p, st)]


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def vm_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def env_of(pid, key):
    prefix = key.encode() + b"="
    for e in read_environ(pid):
        if e.startswith(prefix):
            return e[len(prefix):].decode()
    return None


# --------------------------------------------------------------------------- the supervisor log

LOG_LINE = re.compile(r"^(\S+Z)\s+(\w+)\s+(.*)$")


def parse_log(path):
    """[(unix seconds, level, message)] of logs/supervisor.log (and its rotations, oldest first)."""
    files = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        files.append(f"{path}.{n}")
        n += 1
    files = list(reversed(files)) + [path]
    out = []
    for fp in files:
        try:
            with open(fp, errors="replace") as f:
                for line in f:
                    m = LOG_LINE.match(line.rstrip("\n"))
                    if not m:
                        continue
                    ts = m.group(1)
                    try:
                        t = datetime.strptime(ts[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
                    except ValueError:
                        continue
                    out.append((t.replace(tzinfo=timezone.utc).timestamp(), m.group(2), m.group(3)))
        except OSError:
            pass
    return out


def field(msg, key):
    m = re.search(rf"\b{key}=(\S+)", msg)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- figures

def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def ms(x):
    return "n/a" if x is None else f"{x * 1000:.1f} ms"


def median(values):
    return statistics.median(values) if values else None
