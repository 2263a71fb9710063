"""Scenario 4 of the reliability campaign: misbehaving processes, against imageserving and supervisord.

Six components, each misbehaving in one way:

- `noterm` ignores SIGTERM (`trap '' TERM; exec sleep 1000`): a stop must take `stop_timeout`, then
  SIGKILL;
- `forker` forks two grandchildren that stay in its process group (`sleep 1000 & sleep 1000 & exec
  sleep 1000`);
- `daemon` daemonizes one grandchild the classic way (fork, setsid, fork, stdio to /dev/null, exec
  `sleep 1000`), so that it leaves both the group and the process tree;
- `detach` does the same from the shell, `(setsid sleep 1000 &); exec sleep 1000`, and its escaped
  grandchild keeps the output pipe open;
- `writer` writes numbered lines of 100 bytes as fast as it can (200 MB, 20 MB with --quick) once a
  go-file appears, then `DONE`, then sleeps; its log rotates every 8 MiB and keeps 40 backups, more
  than the output needs, so that every line must be found again;
- `hog` (imageserving only: supervisord has no memory limit) forks a `sleep 1000`, and on its first
  attempt allocates 8 MiB every 100 ms once a go-file appears, past its `memory_limit` of 64 MiB.

The same checks run against both supervisors, one after the other, so that the daemon's memory is
measured alone: start; the writer's 200 MB (lines counted across the rotated files, the daemon's
VmRSS sampled every 10 ms); SIGKILL of the main processes of `forker`, `daemon` and `detach`, whose
grandchildren remain (are they killed before the restart?); the hog (restarted, with the reason?); a restart of
`noterm` (how long, and is it gone?); then a stop of everything. After every restart and after the
stop, every process seen so far in an earlier attempt must be gone, and after the stop no process
may carry the marker.
"""

import os
import threading
import time

import supervisord as sd
from common import (PYTHON, SETTINGS, Home, Result, components, descendants_of, env_of, parse_log, read_cmdline,
                    still_alive, timed_status, vm_rss_kib, wait_for, with_start)

LINE = 100                     # bytes per line of the writer, newline included
PAD = b"x" * (LINE - 12)       # "%010d " + PAD + "\n"
ROTATE_BYTES = 8 * 1024 * 1024
BACKUPS = 40
STOP_TIMEOUT = 2.0
MEMORY_LIMIT_MIB = 64
# The daemon holds at most a 16 KiB read chunk, one 64 KiB unfinished line and the batch being written
# per stream: its memory must not follow the output. 4 MiB is far above that and above the noise of
# the allocator and the blocking pool's threads, and 50 times less than the output.
RSS_GROWTH_BOUND_KIB = 4 * 1024
NAMES = ("noterm", "forker", "daemon", "detach", "writer", "hog")
KILLED = ("forker", "daemon", "detach")  # SIGKILLed while their grandchildren remain

DAEMON_PY = r'''
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        fd = os.open(os.devnull, os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        os.execvp("sleep", ["sleep", "1000"])
    os._exit(0)
os.wait()
os.execvp("sleep", ["sleep", "1000"])
'''

WRITER_PY = r'''
import os, sys, time
go, total = sys.argv[1], int(sys.argv[2])
while not os.path.exists(go):
    time.sleep(0.01)
n = total // %(line)d
pad = b"x" * %(pad)d
out = sys.stdout.buffer
i = 0
while i < n:
    k = min(2000, n - i)
    out.write(b"".join(b"%%010d %%s\n" %% (j, pad) for j in range(i, i + k)))
    i += k
out.write(b"DONE %%d\n" %% n)
out.flush()
os.execvp("sleep", ["sleep", "1000"])
''' % {"line": LINE, "pad": len(PAD)}

HOG_PY = r'''
import os, subprocess, sys, time
go, flag = sys.argv[1], sys.argv[2]
subprocess.Popen(["sleep", "1000"])
while not os.path.exists(go):
    time.sleep(0.02)
if not os.path.exists(flag):
    open(flag, "w").close()
    hold = []
    while True:
        hold.append(b"\x01" * (8 << 20))
        time.sleep(0.1)
while True:
    time.sleep(1000)
'''


def write_scripts(d):
    os.makedirs(d, exist_ok=True)
    for name, text in (("daemon.py", DAEMON_PY), ("writer.py", WRITER_PY), ("hog.py", HOG_PY)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def _toml_list(items):
    return "[" + ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "]"


# --------------------------------------------------------------------------- the two supervisors

class Ours:
    """imageserving, driven through its CLI and its control socket."""

    label = "imageserving"

    def __init__(self, total, keep):
        self.home = Home("", keep)
        d = self.home.path
        self.scripts = os.path.join(d, "scripts")
        write_scripts(self.scripts)
        self.go_writer = os.path.join(d, "go-writer")
        self.go_hog = os.path.join(d, "go-hog")
        self.hog_flag = os.path.join(d, "hog-grew")
        common = f'start_secs = "300ms"\nstop_timeout = "{STOP_TIMEOUT:g}s"\n'
        cfg = f"""[supervisor]
start_wait = "15s"

[components.noterm]
command = ["sh", "-c", "trap '' TERM; exec sleep 1000"]
{common}
[components.forker]
command = ["sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000"]
{common}
[components.daemon]
command = {_toml_list([PYTHON, os.path.join(self.scripts, "daemon.py")])}
{common}
[components.detach]
command = ["sh", "-c", "(setsid sleep 1000 &); exec sleep 1000"]
{common}
[components.writer]
command = {_toml_list([PYTHON, os.path.join(self.scripts, "writer.py"), self.go_writer, str(total)])}
log_max_bytes = {ROTATE_BYTES}
log_backups = {BACKUPS}
{common}
[components.hog]
command = {_toml_list([PYTHON, os.path.join(self.scripts, "hog.py"), self.go_hog, self.hog_flag])}
memory_limit = "{MEMORY_LIMIT_MIB}MiB"
memory_check_interval = "250ms"
{common}"""
        with open(os.path.join(d, "conf", "imageserving.toml"), "w") as f:
            f.write(cfg)
        self.names = NAMES
        self.writer_log = os.path.join(d, "logs", "writer.log")

    def start(self):
        rc, out, err = self.home.cli("start", timeout=60)
        return rc == 0, f"rc {rc}" + ("" if rc == 0 else f": {(out + err).strip()[-300:]}")

    def status(self):
        """{name: component dict} (state, pid, restarts, last_exit, info), or {}."""
        _, ans, _ = timed_status(self.home.sock)
        return components(ans) if ans else {}

    def states(self):
        return {n: (c["state"], c["pid"]) for n, c in self.status().items()}

    def daemon_pid(self):
        return self.home.supervisor_pid()

    def tree(self, name, pid):
        """(pid, starttime) of the component's main process, its descendants and its marked escapees."""
        pids = {pid} | set(descendants_of(pid)) if pid else set()
        pids |= {p for p in self.home.marked() if env_of(p, "IMAGESERVING_COMPONENT") == name}
        return with_start(pids)

    def marked(self):
        return self.home.marked()

    def restart(self, name):
        rc, out, err = self.home.cli("restart", name, timeout=60)
        return rc == 0, f"rc {rc} {(out + err).strip()[-200:]}"

    def stop(self):
        rc, out, err = self.home.cli("stop", timeout=60)
        return rc == 0, f"rc {rc} {(out + err).strip()[-200:]}"

    def kill_evidence(self, name, pid):
        want = f"process killed by signal 9 (SIGKILL) component={name} pid={pid}"
        return next((m for _, _, m in parse_log(self.home.log) if m.startswith(want)), None)

    @staticmethod
    def text(line):
        """The component's own text of a log line (after the timestamp)."""
        sp = line.find(b" ")
        return line[sp + 1:] if sp == 24 else line

    def close(self, failed):
        self.home.close(failed)


class Theirs:
    """supervisord with the equivalent settings, driven over XML-RPC."""

    label = sd.NAME

    def __init__(self, total, keep):
        base = {"startsecs": 1, "stopwaitsecs": int(STOP_TIMEOUT), "stopasgroup": True, "killasgroup": True,
                "autorestart": True}
        progs = {
            "noterm": {"command": "sh -c \"trap '' TERM; exec sleep 1000\"", **base},
            "forker": {"command": "sh -c \"sleep 1000 & sleep 1000 & exec sleep 1000\"", **base},
            "daemon": {"command": f"{PYTHON} {{dir}}/scripts/daemon.py", **base},
            "detach": {"command": "sh -c \"(setsid sleep 1000 &); exec sleep 1000\"", **base},
            "writer": {"command": f"{PYTHON} {{dir}}/scripts/writer.py {{dir}}/go-writer {total}", **base,
                       "stdout_logfile_maxbytes": ROTATE_BYTES, "stdout_logfile_backups": BACKUPS},
        }
        self.sd = sd.Supervisord(progs, keep)
        write_scripts(os.path.join(self.sd.dir, "scripts"))
        self.go_writer = os.path.join(self.sd.dir, "go-writer")
        self.names = ("noterm", "forker", "daemon", "detach", "writer")
        self.writer_log = os.path.join(self.sd.logs, "writer.log")

    def start(self):
        self.sd.start()
        if not self.sd.wait_ready(15):
            return False, "supervisord did not answer"
        st = self.sd.wait_states(self.names, "RUNNING", 15)
        ok = all(st.get(n) == "RUNNING" for n in self.names)
        return ok, f"states {st}"

    def status(self):
        return {n: {"state": p["statename"], "pid": p["pid"] or None, "last_exit": p.get("spawnerr") or p.get("description")}
                for n, p in self.sd.processes().items()}

    def states(self):
        return {n: (c["state"], c["pid"]) for n, c in self.status().items()}

    def daemon_pid(self):
        return self.sd.pid()

    def tree(self, name, pid):
        pids = {pid} | set(descendants_of(pid)) if pid else set()
        pids |= set(self.sd.program_pids(name))
        return with_start(pids)

    def marked(self):
        return self.sd.marked()

    def restart(self, name):
        # What `supervisorctl restart NAME` does: stopProcess, then startProcess, each waiting.
        try:
            rpc = self.sd.rpc(60)
            rpc.supervisor.stopProcess(name, True)
            rpc.supervisor.startProcess(name, True)
            return True, ""
        except Exception as e:  # noqa: BLE001
            return False, f"{type(e).__name__}: {e}"

    def stop(self):
        # The equivalent of `imageserving stop`: stop everything and the daemon.
        if not self.sd.shutdown():
            return False, "shutdown refused"
        ok = self.sd.wait_exit(60)
        return ok, "" if ok else "supervisord still running after 60 s"

    def kill_evidence(self, name, pid):
        try:
            with open(os.path.join(self.sd.dir, "supervisord.log"), errors="replace") as f:
                for line in f:
                    if f"killing '{name}' ({pid}) with SIGKILL" in line:
                        return line.strip().split(" ", 3)[-1]
        except OSError:
            pass
        return None

    @staticmethod
    def text(line):
        return line

    def close(self, failed):
        self.sd.close(failed)


# --------------------------------------------------------------------------- the checks

def count_lines(paths, text_of, n):
    """Counts the writer's lines in the rotated files (oldest first). Returns a dict of figures.

    A line is whole when it reads `%010d ` + PAD. A file that does not end with a newline had its
    last line cut by a rotation: that piece is joined with the first line of the next file, and if
    the two make a whole line it counts as present, and as split.
    """
    seen = bytearray(n)
    dups = bad = markers = done = split = 0
    bad_examples = []
    sizes = []
    carry = None  # the unterminated end of the previous file

    def whole(t):
        if len(t) == LINE - 1 and t[10:11] == b" " and t[11:] == PAD and t[:10].isdigit():
            k = int(t[:10])
            return k if k < n else None
        return None

    def take(k):
        nonlocal dups
        if seen[k]:
            dups += 1
        else:
            seen[k] = 1

    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        sizes.append(len(data))
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        if carry is not None and lines:
            joined = carry + lines[0]
            k = whole(text_of(joined))
            if k is not None:
                take(k)
                split += 1
                lines = lines[1:]
            else:
                lines.insert(0, carry)
            carry = None
        for line in lines:
            t = text_of(line)
            k = whole(t)
            if k is not None:
                take(k)
            elif t.startswith(b"[imageserving]"):
                markers += 1
            elif t.startswith(b"DONE "):
                done += 1
            else:
                bad += 1
                if len(bad_examples) < 3:
                    bad_examples.append(t[:40])
        if carry is not None:
            bad += 1
        carry = tail if tail else None
    if carry is not None:
        bad += 1
        bad_examples.append(carry[:40])
    present = sum(seen)
    return {"files": len(sizes), "largest": max(sizes) if sizes else 0, "total_bytes": sum(sizes),
            "present": present, "missing": n - present, "dups": dups, "bad": bad, "split": split,
            "markers": markers, "done": done, "bad_examples": bad_examples}


def rotated_files(base):
    files = []
    k = 1
    while os.path.exists(f"{base}.{k}"):
        files.append(f"{base}.{k}")
        k += 1
    return list(reversed(files)) + [base]


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.01):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = vm_rss_kib(self.pid)
            if v is not None:
                self.samples.append((time.monotonic(), v))
            time.sleep(self.interval)


def wait_file_tail(path, needle, timeout):
    """Until the last 4 KiB of the file at path hold needle (the file may be rotated meanwhile)."""
    def check():
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 4096))
                return needle in f.read()
        except OSError:
            return False
    return wait_for(check, timeout, 0.02)


def run_checks(sv, total, with_hog):
    """The scenario's checks against one supervisor. Returns {figure key: value} and a list of goals missed."""
    fig, missed = {}, []
    ever = {}  # (pid, starttime) -> label: every process seen in an attempt that has since ended

    ok, why = sv.start()
    fig["start"] = "all RUNNING" if ok else f"not clean: {why}"
    if not ok:
        missed.append(f"start: {why}")
        return fig, missed
    st = sv.states()
    trees = {n: sv.tree(n, st[n][1]) for n in sv.names}
    fig["forker_tree"] = len(trees["forker"])
    main_sid = _sid(st["daemon"][1])
    fig["daemon_escapees"] = len([p for p, _ in trees["daemon"] if _sid(p) not in (None, main_sid)])
    main_sid = _sid(st["detach"][1])
    fig["detach_escapees"] = len([p for p, _ in trees["detach"] if _sid(p) not in (None, main_sid)])

    # ---- the writer: 200 MB as fast as it can, lines counted across rotations, the daemon's memory.
    dpid = sv.daemon_pid()
    sampler = RssSampler(dpid)
    sampler.start()
    time.sleep(1.0)
    before = max((v for _, v in sampler.samples), default=None)
    t_go = time.monotonic()
    open(sv.go_writer, "w").close()
    n = total // LINE
    done = wait_file_tail(sv.writer_log, b"DONE %d" % n, 150)
    t_done = time.monotonic()
    time.sleep(1.0)
    sampler.stop.set()
    sampler.join()
    during = [v for t, v in sampler.samples if t >= t_go]
    peak = max(during, default=None)
    after = vm_rss_kib(dpid)
    fig["write_time"] = t_done - t_go if done else None
    fig["rss"] = (before, peak, after)
    if not done:
        missed.append("the writer's DONE line never appeared within 150 s")
    c = count_lines(rotated_files(sv.writer_log), sv.text, n)
    fig["lines"] = c
    if c["missing"] or c["dups"] or c["bad"] or c["split"]:
        missed.append(f"writer lines: {c['missing']:,} missing, {c['dups']:,} twice, {c['bad']:,} broken, "
                      f"{c['split']:,} split across two files")
    if c["largest"] > ROTATE_BYTES:
        missed.append(f"a writer log file holds {c['largest']:,} B, past the rotation size {ROTATE_BYTES:,} B")
    if None not in (before, peak) and peak - before >= RSS_GROWTH_BOUND_KIB:
        missed.append(f"the daemon's VmRSS grew by {peak - before:,} KiB while writing "
                      f"(bound {RSS_GROWTH_BOUND_KIB:,} KiB)")

    # ---- SIGKILL of the main processes of forker, daemon and detach; their grandchildren remain.
    st = sv.states()
    old = {}
    for name in KILLED:
        pid = st[name][1]
        old[name] = (pid, [x for x in sv.tree(name, pid) if x[0] != pid])
        for x in sv.tree(name, pid):
            ever[x] = name
    t_kill = time.monotonic()
    for name in KILLED:
        try:
            os.kill(old[name][0], 9)
        except ProcessLookupError:
            pass
    grand = [x for name in KILLED for x in old[name][1]]

    def new_pids(state=None):
        st = sv.states()
        return all(st.get(nm, (None, None))[1] not in (None, old[nm][0]) and
                   (state is None or st[nm][0] == state) for nm in KILLED)

    # The moment both new processes exist (spawned, not yet running): are the old grandchildren gone?
    spawned = wait_for(new_pids, 15, 0.005)
    alive_at_spawn = still_alive(grand)
    back = wait_for(lambda: new_pids("RUNNING"), 15, 0.02)
    t_back = time.monotonic()
    time.sleep(1.0)
    alive_later = still_alive(grand)
    fig["kill_grandchildren"] = len(grand)
    fig["kill_back"] = (t_back - t_kill) if back else None
    fig["kill_alive_at_spawn"] = len(alive_at_spawn) if spawned else None
    fig["kill_alive_later"] = len(alive_later)
    if not back:
        missed.append("forker/daemon/detach not RUNNING again within 15 s of their SIGKILL")
    if alive_at_spawn:
        missed.append(f"after SIGKILL of forker, daemon and detach, {len(alive_at_spawn)} of their {len(grand)} grandchildren "
                      "were alive when the new processes were spawned")
    if alive_later:
        missed.append(f"after SIGKILL of forker, daemon and detach, {len(alive_later)} of their {len(grand)} grandchildren "
                      f"are still alive 1 s after the restart")

    # ---- the hog: past memory_limit.
    if with_hog:
        before_hog = sv.status().get("hog", {})
        hog_pid = before_hog.get("pid")
        hog_tree = sv.tree("hog", hog_pid)
        for x in hog_tree:
            ever[x] = "hog"
        t_go_hog = time.monotonic()
        open(sv.go_hog, "w").close()
        seen = wait_for(lambda: (lambda c: c if c and c.get("restarts", 0) >= 1 and c.get("state") == "RUNNING"
                                 and c.get("pid") != hog_pid else None)(sv.status().get("hog")), 20, 0.02)
        t_hog = time.monotonic()
        fig["hog_restarted"] = (t_hog - t_go_hog) if seen else None
        fig["hog_reason"] = (seen or sv.status().get("hog", {})).get("last_exit")
        fig["hog_info"] = (seen or sv.status().get("hog", {})).get("info")
        fig["hog_old_alive"] = len(still_alive(hog_tree))
        fig["hog_old_n"] = len(hog_tree)
        log = parse_log(sv.home.log)
        fig["hog_log"] = next((m for _, _, m in log if m.startswith("restarting an unhealthy component component=hog")), None)
        try:
            with open(os.path.join(sv.home.path, "logs", "hog.log"), errors="replace") as f:
                fig["hog_marker"] = next((ln.strip()[25:] for ln in f if "stopping to restart: restarted: memory" in ln), None)
        except OSError:
            fig["hog_marker"] = None
        if not seen:
            missed.append("the hog was not restarted (and RUNNING again) within 20 s")
        if not (fig["hog_reason"] or "").startswith("restarted: memory"):
            missed.append(f"the hog's reason is not shown in status: {fig['hog_reason']!r}")
        if not fig["hog_log"] or not fig["hog_marker"]:
            missed.append("the hog's memory restart is not in supervisor.log / hog.log")
        if fig["hog_old_alive"]:
            missed.append(f"{fig['hog_old_alive']} processes of the hog's first attempt alive after its restart")

    # ---- noterm: ignores SIGTERM; a restart lasts stop_timeout, then SIGKILL.
    st = sv.states()
    nt_pid = st["noterm"][1]
    nt_tree = sv.tree("noterm", nt_pid)
    for x in nt_tree:
        ever[x] = "noterm"
    gone = {}

    def watch():
        main = [x for x in nt_tree if x[0] == nt_pid]
        while still_alive(main) and time.monotonic() - t0 < 30:
            time.sleep(0.002)
        gone["t"] = time.monotonic() - t0

    t0 = time.monotonic()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ok, why = sv.restart("noterm")
    fig["noterm_restart"] = time.monotonic() - t0
    watcher.join(30)
    fig["noterm_gone"] = gone.get("t")
    fig["noterm_old_alive"] = len(still_alive(nt_tree))
    fig["noterm_kill_line"] = sv.kill_evidence("noterm", nt_pid)
    st = sv.states()
    fig["noterm_after"] = st.get("noterm", (None, None))[0]
    if not ok:
        missed.append(f"restart noterm failed: {why}")
    gt = fig["noterm_gone"]
    if gt is None or not (STOP_TIMEOUT - 0.05 <= gt <= STOP_TIMEOUT + 0.5):
        missed.append(f"noterm's old process was gone {gt if gt is None else round(gt, 2)} s after the restart began, "
                      f"expected {STOP_TIMEOUT:g} s (stop_timeout, then SIGKILL) + 0.5 s")
    if not fig["noterm_kill_line"]:
        missed.append("no log line says noterm was killed by SIGKILL")
    if fig["noterm_old_alive"]:
        missed.append("noterm's old process survived its restart")
    if fig["noterm_after"] != "RUNNING":
        missed.append(f"noterm is {fig['noterm_after']} after its restart")

    # ---- stop everything.
    st = sv.states()
    for name in sv.names:
        for x in sv.tree(name, st.get(name, (None, None))[1]):
            ever.setdefault(x, name)
    t0 = time.monotonic()
    ok, why = sv.stop()
    fig["stop_time"] = time.monotonic() - t0
    time.sleep(0.5)
    left = sv.marked()
    fig["stop_marked"] = [(p, env_label(p), _cmd(p)) for p in left]
    survivors = still_alive(list(ever))
    fig["stop_survivors"] = [(p, ever[(p, s)], _cmd(p)) for p, s in survivors]
    fig["ever"] = len(ever)
    if not ok:
        missed.append(f"stop: {why}")
    if left or survivors:
        missed.append(f"after stop, {len(set(left) | {p for p, _ in survivors})} processes left: "
                      + ", ".join(f"{p} {lbl} `{cmd}`" for p, lbl, cmd in fig["stop_survivors"][:6]))
    return fig, missed


def _sid(pid):
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _cmd(pid):
    return read_cmdline(pid).strip()[:60]


def env_label(pid):
    return env_of(pid, "IMAGESERVING_COMPONENT") or env_of(pid, "SUPERVISOR_PROCESS_NAME") or "?"


# --------------------------------------------------------------------------- the scenario

def misbehaving(quick, keep):
    r = Result("Misbehaving processes", 4)
    total = (20 if quick else 200) * 1000 * 1000
    n = total // LINE
    compare = SETTINGS.get("supervisord", True)
    ours = theirs = None
    f = o = None
    o_missed = []
    try:
        ours = Ours(total, keep)
        f, missed = run_checks(ours, total, with_hog=True)
        for m in missed:
            r.fail(m)
        ours.close(bool(missed))
        ours = None
        if compare:
            try:
                theirs = Theirs(total, keep)
                o, o_missed = run_checks(theirs, total, with_hog=False)
            except Exception as e:  # noqa: BLE001 - supervisord's trouble is reported, never ours
                o, o_missed = {}, [f"the supervisord run itself failed: {type(e).__name__}: {e}"]
            r.other = sd.NAME
            r.other_failures = list(o_missed)
        _report(r, f, o, compare, total, n)
    finally:
        if ours is not None:
            ours.close(True)
        if theirs is not None:
            theirs.close(False)
    return r


def _s(t):
    return "n/a" if t is None else f"{t:.2f} s"


def _rss(x):
    b, p, a = x
    if None in (b, p, a):
        return "n/a"
    return f"{b:,} / {p:,} / {a:,} KiB (peak +{p - b:,} KiB)"


def _lines(c, n):
    return (f"{c['present']:,} of {n:,} present once; {c['missing']:,} missing; {c['dups']:,} twice; "
            f"{c['split']:,} split across two files; {c['bad']:,} other broken")


def _report(r, f, o, compare, total, n):
    o = o if compare else None
    g = (lambda k, fmt=str, dflt="—": (fmt(o[k]) if o and k in o and o[k] is not None else dflt)) if o is not None \
        else (lambda *a, **k: None)
    mb = total / 1e6
    r.load = (f"6 misbehaving components; {mb:.0f} MB of output written as fast as possible; "
              f"rotation every 8 MiB, 40 backups; memory_limit {MEMORY_LIMIT_MIB} MiB")
    r.faults = ("SIGTERM ignored, forked grandchildren, a double fork with setsid, "
                f"{mb:.0f} MB of output, memory past the limit, SIGKILL of a component whose grandchildren remain")
    r.add("settings", f'start_secs 300ms, stop_timeout {STOP_TIMEOUT:g}s; writer log_max_bytes 8 MiB, log_backups 40; '
          f'hog memory_limit {MEMORY_LIMIT_MIB} MiB, memory_check_interval 250ms',
          "", "startsecs=1, stopwaitsecs=2, stopasgroup=true, killasgroup=true, autorestart=true; writer "
          "stdout_logfile_maxbytes=8 MiB, stdout_logfile_backups=40; no memory limit exists" if compare else None)
    r.add("start", f["start"], "all RUNNING", g("start"))
    r.add("forker: processes in its tree", f.get("forker_tree"), "3", g("forker_tree"))
    r.add("daemon: double-forked setsid grandchildren found (by marker)", f.get("daemon_escapees"), "1",
          g("daemon_escapees"))
    r.add("detach: setsid grandchildren holding its output pipe found (by marker)", f.get("detach_escapees"), "1",
          g("detach_escapees"))
    if "lines" in f:
        c = f["lines"]
        r.add(f"writer: time to write {mb:.0f} MB ({n:,} lines of {LINE} B)",
              "n/a" if f["write_time"] is None else f"{f['write_time']:.1f} s ({mb / f['write_time']:.0f} MB/s)", "",
              g("write_time", lambda t: f"{t:.1f} s ({mb / t:.0f} MB/s)"))
        r.add("writer: lines counted across the rotated files", _lines(c, n), "all present once, none broken",
              g("lines", lambda x: _lines(x, n)))
        r.add("writer: log files / largest / total bytes",
              f"{c['files']} / {c['largest']:,} B / {c['total_bytes']:,} B", f"largest ≤ {ROTATE_BYTES:,} B",
              g("lines", lambda x: f"{x['files']} / {x['largest']:,} B / {x['total_bytes']:,} B"))
        if c["bad_examples"]:
            r.notes.append(f"imageserving: broken writer lines, e.g. {c['bad_examples']}")
        if o and o.get("lines", {}).get("bad_examples"):
            r.notes.append(f"{sd.NAME}: broken writer lines, e.g. "
                           f"{o['lines']['bad_examples']}")
        r.add("the daemon's VmRSS before / peak while writing / after", _rss(f["rss"]),
              f"peak growth < {RSS_GROWTH_BOUND_KIB // 1024} MiB", g("rss", _rss))
    if "kill_grandchildren" in f:
        r.add("SIGKILL of forker's, daemon's and detach's main: their grandchildren", f["kill_grandchildren"], "4",
              g("kill_grandchildren"))
        r.add("… time until all three are RUNNING again", "n/a" if f["kill_back"] is None else f"{f['kill_back']:.2f} s", "",
              g("kill_back", lambda t: f"{t:.2f} s"))
        r.add("… old grandchildren alive when the new main processes are first seen / 1 s after RUNNING",
              f"{f['kill_alive_at_spawn']} / {f['kill_alive_later']}", "0 / 0",
              g("kill_alive_at_spawn", lambda v: f"{v} / {o['kill_alive_later']}"))
    if "hog_restarted" in f:
        r.add(f"hog: restarted after passing memory_limit ({MEMORY_LIMIT_MIB} MiB)",
              "no" if f["hog_restarted"] is None else f"yes, RUNNING again {f['hog_restarted']:.2f} s after it began to grow",
              "yes", "not supported (no memory limit)" if compare else None)
        r.add("hog: reason in status (`last_exit`)", f"`{f['hog_reason']}`", "shown", "—" if compare else None)
        r.add("hog: in supervisor.log / hog.log", f"`{f['hog_log']}` / `{f['hog_marker']}`", "both", "—" if compare else None)
        r.add("hog: processes of the first attempt alive after the restart", f"{f['hog_old_alive']} of {f['hog_old_n']}",
              "0", "—" if compare else None)
    if "noterm_restart" in f:
        r.add("noterm (ignores SIGTERM): restart: old process gone after / restart returned after",
              f"{_s(f['noterm_gone'])} / {_s(f['noterm_restart'])}",
              f"gone after stop_timeout ({STOP_TIMEOUT:g} s) + < 0.5 s",
              g("noterm_gone", lambda t: f"{_s(t)} / {_s(o['noterm_restart'])}"))
        r.add("noterm: the kill in the log", f"`{f['noterm_kill_line']}`", "SIGKILL", g("noterm_kill_line", lambda x: f"`{x}`"))
        r.add("noterm: old process alive after the restart / state", f"{f['noterm_old_alive']} / {f['noterm_after']}",
              "0 / RUNNING", g("noterm_old_alive", lambda v: f"{v} / {o.get('noterm_after')}"))
    if "stop_time" in f:
        r.add("stop: duration", f"{f['stop_time']:.2f} s", f"≈ {STOP_TIMEOUT:g} s", g("stop_time", lambda t: f"{t:.2f} s"))
        r.add("stop: processes seen during the run / alive after the stop",
              f"{f['ever']} / {len(f['stop_survivors'])}", "0 alive",
              g("ever", lambda v: f"{v} / {len(o['stop_survivors'])}"))
        r.add("stop: marked processes left", len(f["stop_marked"]), "0", g("stop_marked", len))
        if o and o.get("stop_survivors"):
            r.notes.append(f"{sd.NAME}: left after its shutdown: " + ", ".join(
                f"{p} ({lbl}) `{cmd}`" for p, lbl, cmd in o["stop_survivors"]))
    r.lost = "nothing" if not r.failures else "see failures"
    if o is not None:
        c = o.get("lines")
        r.other_lost = ("nothing" if c and not (c["missing"] or c["bad"]) else
                        f"{c['missing']:,} lines missing, {c['bad']:,} broken" if c else "not measured")
