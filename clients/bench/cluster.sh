#!/usr/bin/env bash
# Issue 14's benchmark in one run on one machine: the same load against one
# node (Pebble, fsync) and against a three-node cluster on NATS JetStream
# (docs/cluster.md), with JetStream's fsync on every write (the default,
# --cluster-sync always) and on an interval (--cluster-sync 2m). In a
# cluster, pairs spread over the nodes; "cross" pairs have their sender and
# receiver on different nodes, "same" pairs on one node. Each cell is the
# median of RUNS runs; every run starts from empty data directories.
#
#   clients/bench/cluster.sh                  # RUNS=3 DURATION=10s PAIRS="100"
#   RUNS=1 PAIRS="100 1000" clients/bench/cluster.sh
#
# On one 2-core machine three nodes share two cores and every message is
# written more times: the figures show the cost and the shape of a cluster,
# not its capacity (docs/cluster.md §20).
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
PAIRS=${PAIRS:-"100"}
cd "$(dirname "$0")/../.."

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

go build -o "$work/duet" .
go build -o "$work/bench" ./clients/bench

wait_http() {
	for _ in $(seq 600); do
		curl -fsS "http://$1/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "no healthy node at $1" >&2
	return 1
}

# run NAME PIDS ARGS...: one bench run; a row "name pairs msgs/s p50 p99
# broker_us tool_us lost errors".
run() {
	local name=$1 bpids=$2 out
	shift 2
	out=$("$work/bench" -q -client wire -duration "$DURATION" -broker-pid "$bpids" -conn-parallel 32 -secret bench "$@")
	echo "$out" >&2
	printf '%s %s %s %s %s %s %s %s %s\n' "$name" "$(sed -n 's/^mode=.* pairs=\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^throughput: \([0-9]*\) delivered.*/\1/p' <<<"$out")" \
		"$(sed -n 's/^latency ms: p50=\([0-9.]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^latency ms: .* p99=\([0-9.]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^cpu over the send window: broker [0-9.]*s (\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/.*this tool [0-9.]*s (\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^sent=.* lost=\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^sent=.* errors=\([0-9]*\) .*/\1/p' <<<"$out")"
}

results=$work/results
: >"$results"

single() {
	local pairs=$1 pid
	rm -rf "$work/single"
	DUET_SECRET=bench "$work/duet" --data "$work/single" --auto-accounts --media=false --mqtt 127.0.0.1:21883 \
		--ws "" --http 127.0.0.1:28080 --log-level warn >"$work/single.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	wait_http 127.0.0.1:28080
	run single "$pid" -addr tcp://127.0.0.1:21883 -pairs "$pairs" | tee -a "$results"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
}

# cluster NAME SYNC PAIRS PLACEMENT: three nodes, started together.
cluster() {
	local name=$1 sync=$2 pairs=$3 placement=$4 i cpids="" addrs="" routes=""
	for i in 0 1 2; do routes+="nats://127.0.0.1:$((26220 + i)),"; done
	local started=()
	for i in 0 1 2; do
		rm -rf "$work/n$i"
		DUET_SECRET=bench "$work/duet" --data "$work/n$i" --auto-accounts --media=false \
			--mqtt "127.0.0.1:$((21890 + i))" --ws "" --http "127.0.0.1:$((28090 + i))" --log-level warn \
			--cluster-name bench --node "n$i" --cluster-listen "127.0.0.1:$((26220 + i))" \
			--cluster-routes "${routes%,}" --cluster-secret bench --cluster-sync "$sync" >"$work/n$i.log" 2>&1 &
		started+=($!)
		pids+=($!)
	done
	for i in 0 1 2; do
		wait_http "127.0.0.1:$((28090 + i))"
		addrs+="tcp://127.0.0.1:$((21890 + i)),"
	done
	cpids=$(IFS=,; echo "${started[*]}")
	run "$name" "$cpids" -addr "${addrs%,}" -placement "$placement" -pairs "$pairs" | tee -a "$results"
	for p in "${started[@]}"; do kill "$p"; done
	for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
}

for pairs in $PAIRS; do
	for _ in $(seq "$RUNS"); do
		single "$pairs"
		cluster always-cross always "$pairs" cross
		cluster always-same always "$pairs" same
		cluster 2m-cross 2m "$pairs" cross
	done
done

echo
echo "median run (by msgs/s) of $RUNS, $DURATION each, QoS 1, window 1, $(nproc) cores; broker_us/msg sums every node:"
printf '%-14s %6s %8s %8s %8s %14s %12s %5s %6s\n' setup pairs msgs/s p50_ms p99_ms broker_us/msg tool_us/msg lost errors
for setup in single always-cross always-same 2m-cross; do
	for pairs in $PAIRS; do
		rows=$(awk -v b="$setup" -v p="$pairs" '$1 == b && $2 == p' "$results" | sort -k3,3n)
		n=$(grep -c . <<<"$rows" || true)
		[ "$n" -gt 0 ] || continue
		sed -n "$(((n + 1) / 2))p" <<<"$rows" |
			awk '{ printf "%-14s %6s %8s %8s %8s %14s %12s %5s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
	done
done
