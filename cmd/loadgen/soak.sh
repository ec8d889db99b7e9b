#!/usr/bin/env bash
# soak.sh runs mixed load against one sessiond for a few rounds, letting it
# go quiet after each, and checks that its goroutines and file descriptors
# come back to where they started (nothing leaked by a POST, a generation,
# a viewer or a hibernation). It prints one sample per phase and exits
# non-zero on a leak.
#
#   bash cmd/loadgen/soak.sh [OUT] [ROUNDS]     (from the module root)
#
# Each round: 1,000 sessions x 64 connections posting for 15 s, 300
# generations with a viewer each for 15 s, 2,000 idle viewers on 200
# sessions, then 15 s of quiet (the server's --idle-timeout is 2 s). About
# 70 s a round on 2 cores. OUT must allow executables. Ports: SOAK_PORT
# (18282) and SOAK_DEBUG_PORT (6062) on 127.0.0.1.
set -euo pipefail

out=${1:-loadgen-soak-$(date -u +%Y%m%dT%H%M%SZ)}
rounds=${2:-3}
port=${SOAK_PORT:-18282}
dport=${SOAK_DEBUG_PORT:-6062}
mkdir -p "$out"
go build -o "$out/loadgen" ./cmd/loadgen
go build -o "$out/sessiond" ./cmd/sessiond
rm -rf "$out/data"
"$out/sessiond" --addr "127.0.0.1:$port" --data "$out/data" --debug-addr "127.0.0.1:$dport" \
	--offline-tps 50 --idle-timeout 2s --durability normal > "$out/sessiond.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 50); do
	curl -sf "$url/healthz" > /dev/null && break
	sleep 0.2
done

# (sed reads the whole profile: head would close the pipe on curl.)
goroutines() { curl -s "http://127.0.0.1:$dport/debug/pprof/goroutine?debug=1" | sed -n '1s/.*total //p'; }
fds() { ls "/proc/$pid/fd" | wc -l; }
sample() {
	echo "$(date -u +%H:%M:%S) $1 goroutines=$(goroutines) fds=$(fds) rss_kib=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")"
}
# heap prints the Go heap in use after a collection it forces.
heap() { curl -s "http://127.0.0.1:$dport/debug/pprof/heap?gc=1&debug=1" | sed -n 's/^# HeapAlloc = /heap_alloc_bytes=/p'; }
# run runs one loadgen workload against the server, keeping its report.
run() {
	local name=$1
	shift
	"$out/loadgen" "$@" -url "$url" > "$out/$name.txt" 2> "$out/$name.log"
}

sample start
g0=$(goroutines)
f0=$(fds)
for r in $(seq "$rounds"); do
	run "post$r" post-turns -durability normal -cases 1000x64 -duration 15s
	sample "round $r: after posts"
	run "gens$r" gens -pid "$pid" -gens 300 -offline-tps 50 -ramp 2s -duration 15s
	sample "round $r: after generations"
	run "idle$r" idle -pid "$pid" -viewers 2000 -sessions 200 -hibernate 5s
	sample "round $r: after idle viewers"
	sleep 15
	echo "$(sample "round $r: quiet") $(heap)"
done
g1=$(goroutines)
f1=$(fds)
kill -INT $pid
wait $pid || true
trap - EXIT
# A few goroutines and descriptors come and go on their own (timers, the
# embedded NATS server's housekeeping): allow 10 and 5.
if ((g1 > g0 + 10 || f1 > f0 + 5)); then
	echo "LEAK: goroutines $g0 -> $g1, fds $f0 -> $f1" >&2
	exit 1
fi
echo "ok: goroutines $g0 -> $g1, fds $f0 -> $f1 after $rounds rounds"
