"""supervisord, for comparison: a throw-away install, one instance per check, and its cleanup.

The reliability campaign runs scenarios 2 and 4 against supervisord too. This module installs a
pinned supervisord from PyPI into a virtual environment in a temporary directory (once per run,
deleted at exit), writes a configuration whose every path (socket, pid file, logs) lies in another
temporary directory, runs `supervisord -n` in the background, and talks to it over XML-RPC on its
unix socket (stdlib `xmlrpc.client`; supervisorctl speaks the same protocol, it only costs a Python
start per call).

Every process it spawns is marked: supervisord itself carries `ISREL_SD=<dir>` in its environment,
and its programs carry `ISREL_SD_PROGRAM=<dir>` (through `environment=`) as well as the inherited
`ISREL_SD`. `close()` SIGKILLs supervisord, every /proc descendant of it, and every process that
carries either marker, until none is left, even when the check failed half-way.
"""

import atexit
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xmlrpc.client

from common import PYTHON, descendants_of, env_of, kill_pids, pids_with_env

VERSION = "4.3.0"
NAME = f"supervisord {VERSION}"

SELF_MARK = "ISREL_SD"            # on supervisord (and inherited by its programs)
PROGRAM_MARK = "ISREL_SD_PROGRAM"  # on the programs only, through `environment=`

_venv = None


def install():
    """The bin/ directory of a virtual environment holding supervisor==VERSION (created once)."""
    global _venv
    if _venv and os.path.exists(os.path.join(_venv, "bin", "supervisord")):
        return os.path.join(_venv, "bin")
    _venv = os.path.realpath(tempfile.mkdtemp(prefix="isrel-sdvenv-"))
    atexit.register(shutil.rmtree, _venv, True)
    subprocess.run([PYTHON, "-m", "venv", _venv], check=True, capture_output=True, timeout=120)
    p = subprocess.run([os.path.join(_venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
                        f"supervisor=={VERSION}"], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"pip install supervisor=={VERSION} failed: {p.stderr.strip()[-500:]}")
    return os.path.join(_venv, "bin")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path, timeout):
        super().__init__()
        self.path = path
        self.timeout = timeout

    def make_connection(self, host):
        return _UnixConnection(self.path, self.timeout)


def _ini_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Supervisord:
    """One supervisord with its own configuration in a temporary directory.

    `programs` maps a program name to its options (supervisord's keys: `command`, `startsecs`,
    `stopwaitsecs`, `stopasgroup`, ...). Each program also gets `environment` (the marker, plus
    any `env` dict given) and `stdout_logfile=<dir>/logs/<name>.log`, unless set; its stderr goes
    to a file of its own in the same directory (supervisord's default: no `redirect_stderr`, which
    makes its stop wait for its 1 s poll timeout between programs). `{dir}` in a string option is
    replaced by the instance's directory.
    """

    def __init__(self, programs, keep=False):
        self.bin = install()
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="isrel-sd-"))
        self.keep = keep
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs)
        self.sock = os.path.join(self.dir, "supervisor.sock")
        self.pidfile = os.path.join(self.dir, "supervisord.pid")
        self.conf = os.path.join(self.dir, "supervisord.conf")
        self.procs = []  # every supervisord Popen, to reap
        self.current = None
        lines = [
            "[unix_http_server]", f"file={self.sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.dir}/supervisord.log", f"pidfile={self.pidfile}",
            f"childlogdir={self.logs}", "nodaemon=true", "loglevel=info", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.sock}", "",
        ]
        for name, opts in programs.items():
            # "{dir}" in a string option stands for this instance's directory.
            opts = {k: (v.replace("{dir}", self.dir) if isinstance(v, str) else v) for k, v in opts.items()}
            env = {PROGRAM_MARK: self.dir, **opts.pop("env", {})}
            opts.setdefault("environment", ",".join(f'{k}="{v}"' for k, v in env.items()))
            opts.setdefault("stdout_logfile", os.path.join(self.logs, f"{name}.log"))
            lines.append(f"[program:{name}]")
            lines += [f"{k}={_ini_value(v)}" for k, v in opts.items()]
            lines.append("")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    # ------------------------------------------------------------------ the daemon

    def start(self):
        """Starts `supervisord -n` in the background; returns its pid once its socket answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGESERVING_", "ISREL_"))}
        env[SELF_MARK] = self.dir
        out = open(os.path.join(self.dir, "stdout.log"), "ab")
        p = subprocess.Popen([os.path.join(self.bin, "supervisord"), "-n", "-c", self.conf], env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=self.dir)
        out.close()
        self.procs.append(p)
        self.current = p
        return p.pid

    def pid(self):
        return self.current.pid if self.current and self.current.poll() is None else None

    def pidfile_pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout=10):
        """Until the XML-RPC interface answers (True) or timeout (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.current is None or self.current.poll() is not None:
                return False
            try:
                if self.rpc(2).supervisor.getState()["statename"] == "RUNNING":
                    return True
            except (OSError, xmlrpc.client.Error, http.client.HTTPException):
                pass
            time.sleep(0.02)
        return False

    def kill(self):
        """SIGKILL to the current supervisord (only it), reaped."""
        p = self.current
        if p and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()

    def wait_exit(self, timeout):
        p = self.current
        if p is None:
            return True
        try:
            p.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    # ------------------------------------------------------------------ XML-RPC

    def rpc(self, timeout=5):
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(self.sock, timeout))

    def processes(self, timeout=5):
        """{name: info} from getAllProcessInfo (statename, pid, ...), or {} if it does not answer."""
        try:
            return {p["name"]: p for p in self.rpc(timeout).supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return {}

    def states(self):
        return {n: p["statename"] for n, p in self.processes().items()}

    def wait_states(self, names, state, timeout):
        deadline = time.monotonic() + timeout
        while True:
            st = self.states()
            if all(st.get(n) == state for n in names):
                return st
            if time.monotonic() >= deadline:
                return st
            time.sleep(0.02)

    def shutdown(self):
        """Asks supervisord to stop everything and exit; returns at once."""
        try:
            self.rpc(5).supervisor.shutdown()
            return True
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return False

    # ------------------------------------------------------------------ processes

    def marked(self):
        """Live processes carrying the programs' marker (not supervisord itself)."""
        return pids_with_env(PROGRAM_MARK, self.dir)

    def program_pids(self, name):
        """Live processes of one program: its marker plus SUPERVISOR_PROCESS_NAME=name."""
        return [p for p in self.marked() if env_of(p, "SUPERVISOR_PROCESS_NAME") == name]

    def close(self, failed=False):
        """Kills supervisord, its descendants and every marked process; removes the directory."""
        for _ in range(5):
            victims = set()
            for p in self.procs:
                if p.poll() is None:
                    victims.add(p.pid)
                    victims.update(descendants_of(p.pid))
            victims.update(pids_with_env(SELF_MARK, self.dir))
            victims.update(self.marked())
            if not victims:
                break
            kill_pids(victims)
            time.sleep(0.1)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if failed or self.keep:
            print(f"  (supervisord directory kept: {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
