#!/usr/bin/env bash
# figures.sh runs every loadgen workload with the settings behind
# docs/benchmarks.md and keeps each report (its table, and the progress log) in OUT.
#
#   bash cmd/loadgen/figures.sh [OUT]      (from the module root)
#
# It builds loadgen once; each workload spawns its own sessiond (-spawn).
# About 13 minutes on 2 cores. Run it twice or more: the spread between runs
# is part of the result on a shared machine.
set -euo pipefail

out=${1:-loadgen-figures-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
go build -o "$out/loadgen" ./cmd/loadgen
git rev-parse HEAD > "$out/commit" 2>/dev/null || true

# run runs one workload, keeping its table (stdout) and progress log.
run() {
	local name=$1
	shift
	echo "== $name: loadgen $*" >&2
	"$out/loadgen" "$@" > "$out/$name.txt" 2> "$out/$name.log"
	cat "$out/$name.txt"
}

run post-turns post-turns -spawn -durability normal,full -cases 1x1,1x64,1000x64 -duration 10s
run post-turns-pinned post-turns -spawn -pin -raw -durability normal,full -cases 1x1,1x64,1000x64 -duration 10s
run post-turns-std post-turns -spawn -client std -durability normal,full -cases 1x1,1x64,1000x64 -duration 10s
run get-turns get-turns -spawn -lengths 100,10000,100000 -conns 1,16 -duration 5s
run token-latency token-latency -spawn -gens 20 -rate 50 -tokens 250 -duration 20s
run ws-fanout ws-fanout -spawn -raw -sockets -viewers 100,1000 -rate 50 -tokens 400 -duration 20s
run gens gens -spawn -gens 1000 -offline-tps 50 -ramp 5s -duration 10s
run gens-fake gens -spawn -gens 1000 -model fake -rate 50 -ramp 5s -duration 10s
run gens-lean gens -spawn -client lean -gens 1000 -offline-tps 50 -ramp 5s -duration 10s
run gens-40ms gens -spawn -server-args "--flush-interval 40ms" -gens 1000 -offline-tps 50 -ramp 5s -duration 10s
run big big -spawn -raw -rest -durability normal,full -size 33554432 -reps 5 -duration 30s
run idle idle -spawn -viewers 10000 -sessions 1000 -hibernate 5s
