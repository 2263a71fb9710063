#!/usr/bin/env bash
# The image benchmark: a typical thumbnail request (the 2000x1500 sample JPEG -> wid=300, JPEG q80)
# through the whole stack (ps -> is), with the response cache off and with cache hits, beside
# libvips's vipsthumbnail doing the same work and nginx serving a file of the reply's size, all in
# one run on this machine. Not a test: it prints a Markdown table for docs/performance.md.
#
#   benches/image.sh                # about two minutes after the release build
#   DURATION=30 benches/image.sh    # longer runs
#
# It installs what it needs from Debian (wrk, libvips-tools, nginx-light) when missing, builds the
# release binary, runs everything on loopback with ephemeral ports and a temporary home, and
# stops everything it started, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-4}
THREADS=${THREADS:-2}
VIPS_RUNS=${VIPS_RUNS:-100}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v vipsthumbnail >/dev/null || need+=(libvips-tools)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q
BIN=$PWD/target/release/imageserving

work=$(mktemp -d)
home=$work/home
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PS=$(port); IS=$(port); SVG=$(port); STATIC=$(port)
mkdir -p "$home/conf"
cat >"$home/conf/imageserving.toml" <<EOF
[components.ps]
command = ["@self", "component", "ps"]
port = $PS
depends_on = ["is", "svg"]
[components.is]
command = ["@self", "component", "is"]
port = $IS
[components.svg]
command = ["@self", "component", "svg"]
port = $SVG
EOF

cleanup() {
  "$BIN" --home "$home" stop >/dev/null 2>&1 || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN" --home "$home" start >/dev/null
URL="http://127.0.0.1:$PS/is/image/sample/photo?wid=300&qlt=80&fmt=jpeg"
curl -fsS -o "$work/reply.jpg" "$URL&cache=off"
size=$(stat -c %s "$work/reply.jpg")

# CPU time (user+system, in clock ticks) used so far by the three component processes.
pids() { "$BIN" --home "$home" status --json | python3 -c 'import json,sys; print(" ".join(str(c["pid"]) for c in json.load(sys.stdin)["components"] if c["pid"]))'; }
ticks() { local t=0; for p in $(pids); do read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat"); t=$((t + u + s)); done; echo $t; }
HZ=$(getconf CLK_TCK)

# run_wrk URL -> "requests/s p50_ms p99_ms requests"
run_wrk() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$1" >"$work/wrk.txt"
  python3 - "$work/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = float(re.match(r"([\d.]+)", v).group(1)), re.sub(r"[\d.]", "", v)
    return n * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    sys.exit(f"wrk saw {errors.group(1)} error answers")
print(f"{rps:.1f} {p50:.2f} {p99:.2f} {total}")
PY
}

# 1. The whole stack, cache off: every request decodes, resizes and encodes.
t0=$(ticks)
read -r off_rps off_p50 off_p99 off_n < <(run_wrk "$URL&cache=off")
t1=$(ticks)
off_cpu_ms=$(python3 -c "print(f'{($t1-$t0)*1000/$HZ/$off_n:.2f}')")

# 2. Cache hits.
curl -fsS -o /dev/null "$URL"
read -r hit_rps hit_p50 hit_p99 _ < <(run_wrk "$URL")

# 3. A static file of the same size from nginx (2 workers, like our 2 cores).
mkdir -p "$work/www"
cp "$work/reply.jpg" "$work/www/reply.jpg"
# nginx's workers run as an unprivileged user: let them read the file.
chmod a+rx "$work" "$work/www"; chmod a+r "$work/www/reply.jpg"
cat >"$work/nginx.conf" <<EOF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 256; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$STATIC;
    root $work/www;
  }
}
EOF
"$NGINX" -c "$work/nginx.conf" -p "$work"
for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$STATIC/reply.jpg" && break; sleep 0.1; done
read -r static_rps static_p50 static_p99 _ < <(run_wrk "http://127.0.0.1:$STATIC/reply.jpg")
kill "$(cat "$work/nginx.pid")"; rm -f "$work/nginx.pid"

# 4. libvips: the same thumbnail, one process per image, CPU time per image.
src="$home/images/sample/photo.jpg"
start_ns=$(date +%s%N)
cpu=$( { /usr/bin/time -f "%U %S" bash -c "for i in \$(seq $VIPS_RUNS); do vipsthumbnail '$src' -s 300x -o '$work/vips.jpg[Q=80]'; done" ; } 2>&1 | tail -n1)
end_ns=$(date +%s%N)
vips_cpu_ms=$(python3 -c "u,s='$cpu'.split(); print(f'{(float(u)+float(s))*1000/$VIPS_RUNS:.2f}')")
vips_wall_ms=$(python3 -c "print(f'{($end_ns-$start_ns)/1e6/$VIPS_RUNS:.2f}')")
# And the fairer reference: one vipsthumbnail process for all the images (no start-up per image).
mkdir -p "$work/batch"
for i in $(seq "$VIPS_RUNS"); do cp "$src" "$work/batch/p$i.jpg"; done
batch=$( { /usr/bin/time -f "%U %S %e" vipsthumbnail "$work"/batch/p*.jpg -s 300x -o "$work/batch/%s_t.jpg[Q=80]" ; } 2>&1 | tail -n1)
vips_batch_cpu_ms=$(python3 -c "u,s,e='$batch'.split(); print(f'{(float(u)+float(s))*1000/$VIPS_RUNS:.2f}')")
vips_batch_wall_ms=$(python3 -c "u,s,e='$batch'.split(); print(f'{float(e)*1000/$VIPS_RUNS:.2f}')")

# 5. The first request after an `is` restart: (a) `restart is` returned (is RUNNING again):
# the first request's latency, cold caches and all; (b) `is` killed with SIGKILL: time until ps
# answers 200 again, polling every 5 ms (ps answers 503 meanwhile).
read -r first_p50 first_max down_p50 down_max < <(python3 - "$BIN" "$home" "$URL&cache=off" <<'PY'
import json, os, signal, statistics, subprocess, sys, time, urllib.request, urllib.error
bin_, home, url = sys.argv[1:4]
def get():
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read(); code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    return code, (time.perf_counter() - t) * 1000
def is_pid():
    s = json.loads(subprocess.run([bin_, "--home", home, "status", "--json"], capture_output=True, text=True).stdout)
    return next(c["pid"] for c in s["components"] if c["name"] == "is")
first, down = [], []
for _ in range(5):
    subprocess.run([bin_, "--home", home, "restart", "is"], check=True, capture_output=True)
    code, ms = get()
    assert code == 200, code
    first.append(ms)
    pid = is_pid()
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while True:
        code, _ = get()
        if code == 200:
            break
        time.sleep(0.005)
    down.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.5)
print(f"{statistics.median(first):.1f} {max(first):.1f} {statistics.median(down):.1f} {max(down):.1f}")
PY
)

cores=$(nproc)
ratio_cpu=$(python3 -c "print(f'{$vips_batch_cpu_ms/$off_cpu_ms:.2f}')")
ratio_hit=$(python3 -c "print(f'{$static_rps/$hit_rps:.2f}')")
cat <<EOF
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)
Request: sample/photo (2000x1500 JPEG, $(stat -c %s "$src") bytes) -> wid=300, JPEG q80: reply of $size bytes
wrk: $THREADS threads, $CONNECTIONS connections, ${DURATION}s per run, on loopback

| what | requests/s | p50 ms | p99 ms | CPU ms per image |
|---|---|---|---|---|
| imageserving, cache off (ps -> is, decode + resize + encode) | $off_rps | $off_p50 | $off_p99 | $off_cpu_ms (ps + is + svg) |
| imageserving, cache hits | $hit_rps | $hit_p50 | $hit_p99 | |
| nginx, static file of the same size | $static_rps | $static_p50 | $static_p99 | |
| vipsthumbnail, one process for $VIPS_RUNS images (the reference) | | $vips_batch_wall_ms (wall per image) | | $vips_batch_cpu_ms |
| vipsthumbnail, one process per image ($VIPS_RUNS runs) | | $vips_wall_ms (wall per image) | | $vips_cpu_ms |

- Cache off vs libvips (one process for all images), CPU per image: libvips / imageserving = $ratio_cpu (goal: >= 1, at least as fast per core).
- Cache hits vs static files, throughput: nginx / imageserving = $ratio_hit (goal: <= 1.5).
- First request after \`restart is\` returned (5 rounds): median $first_p50 ms, worst $first_max ms (steady state, cache off: p50 $off_p50 ms).
- \`is\` killed with SIGKILL -> ps answers 200 again (polling every 5 ms; 503 meanwhile), 5 rounds: median $down_p50 ms, worst $down_max ms.
EOF
