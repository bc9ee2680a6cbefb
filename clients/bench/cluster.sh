#!/usr/bin/env bash
# Issue 14's benchmark in one run on one machine: the same load against one
# node (Pebble, fsync) and against a three-node cluster on NATS JetStream
# (docs/cluster.md), with JetStream's fsync on every write (the default,
# --cluster-sync always) and on an interval (--cluster-sync 2m). In a
# cluster, pairs spread over the nodes; "cross" pairs have their sender and
# receiver on different nodes, "same" pairs on one node; "p6" runs the
# cluster with six partitions (--partitions 6: every node owns two and
# writes for its users; most pairs span two partitions, the recipient's
# copy an intent). Each cell is the
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

. clients/bench/lib.sh

wait_http() {
	for _ in $(seq 600); do
		curl -fsS "http://$1/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "no healthy node at $1" >&2
	return 1
}

single() {
	local pairs=$1 pid
	rm -rf "$work/single"
	DUET_SECRET=bench "$work/duet" --data "$work/single" --auto-accounts --media=false --mqtt 127.0.0.1:21883 \
		--ws "" --http 127.0.0.1:28080 --log-level warn >"$work/single.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	wait_http 127.0.0.1:28080
	run single "$pid" -secret bench -addr tcp://127.0.0.1:21883 -pairs "$pairs"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
}

# cluster NAME SYNC PAIRS PLACEMENT [PARTITIONS]: three nodes, started together.
cluster() {
	local name=$1 sync=$2 pairs=$3 placement=$4 partitions=${5:-1} i cpids="" addrs="" routes=""
	for i in 0 1 2; do routes+="nats://127.0.0.1:$((26220 + i)),"; done
	local started=()
	for i in 0 1 2; do
		rm -rf "$work/n$i"
		DUET_SECRET=bench "$work/duet" --data "$work/n$i" --auto-accounts --media=false \
			--mqtt "127.0.0.1:$((21890 + i))" --ws "" --http "127.0.0.1:$((28090 + i))" --log-level warn \
			--cluster-name bench --node "n$i" --cluster-listen "127.0.0.1:$((26220 + i))" \
			--cluster-routes "${routes%,}" --cluster-secret bench --cluster-sync "$sync" \
			--partitions "$partitions" >"$work/n$i.log" 2>&1 &
		started+=($!)
		pids+=($!)
	done
	for i in 0 1 2; do
		wait_http "127.0.0.1:$((28090 + i))"
		addrs+="tcp://127.0.0.1:$((21890 + i)),"
	done
	cpids=$(IFS=,; echo "${started[*]}")
	run "$name" "$cpids" -secret bench -addr "${addrs%,}" -placement "$placement" -pairs "$pairs"
	for p in "${started[@]}"; do kill "$p"; done
	for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
}

for pairs in $PAIRS; do
	for _ in $(seq "$RUNS"); do
		single "$pairs"
		cluster always-cross always "$pairs" cross
		cluster always-same always "$pairs" same
		cluster 2m-cross 2m "$pairs" cross
		cluster p6-cross always "$pairs" cross 6
	done
done

echo
echo "median run (by msgs/s) of $RUNS, $DURATION each, QoS 1, window 1, $(nproc) cores; broker_us/msg sums every node:"
medians single always-cross always-same 2m-cross p6-cross
