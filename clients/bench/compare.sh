#!/usr/bin/env bash
# The issue-2 comparison in one run on one machine: Duet (durable) at 100 and
# 1,000 pairs, then Debian's mosquitto (not durable) in raw mode at the same
# sizes, each RUNS times; prints every run and a table of the median runs,
# with the CPU the broker and the load tool spent per delivered message.
#
#   clients/bench/compare.sh              # RUNS=3 DURATION=10s CLIENT=wire
#   RUNS=1 PAIRS="1000" clients/bench/compare.sh
#   BEFORE=/tmp/duet-main clients/bench/compare.sh   # also a "before" binary
#
# With BEFORE set to a duet binary built from an earlier commit, every Duet run
# is made twice in a row, before then after, so both rows of the table come
# from one run on one machine, interleaved so that the machine's drift over
# the run falls on both. MOSQUITTO=0 skips the mosquitto rows.
#
# Needs: go, and mosquitto (apt-get install mosquitto) for the raw rows; the
# mosquitto rows are skipped, with a note, when it is not installed.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
PAIRS=${PAIRS:-"100 1000"}
CLIENT=${CLIENT:-wire}
cd "$(dirname "$0")/../.."

. clients/bench/lib.sh

wait_port() {
	for _ in $(seq 100); do
		(echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on $1" >&2
	return 1
}

# duet_run NAME BINARY PAIRS: one run of a Duet binary on a fresh data
# directory, so every run starts from an empty store.
duet_run() {
	local name=$1 bin=$2 pairs=$3 dpid
	rm -rf "$work/data"
	DUET_SECRET=compare "$bin" --data "$work/data" --auto-accounts --mqtt 127.0.0.1:21883 \
		--ws "" --http 127.0.0.1:28080 --log-level warn >"$work/duet.log" 2>&1 &
	dpid=$!
	pids+=("$dpid")
	wait_port 21883
	run "$name" "$dpid" -addr tcp://127.0.0.1:21883 -secret compare -pairs "$pairs"
	kill "$dpid"
	wait "$dpid" 2>/dev/null || true
}

for pairs in $PAIRS; do
	for i in $(seq "$RUNS"); do
		if [ -n "${BEFORE:-}" ]; then
			duet_run before "$BEFORE" "$pairs"
		fi
		duet_run duet "$work/duet" "$pairs"
	done
done

if [ "${MOSQUITTO:-1}" = 0 ]; then
	echo "MOSQUITTO=0: raw-mode rows skipped" >&2
elif command -v mosquitto >/dev/null; then
	printf 'listener 18830 127.0.0.1\nallow_anonymous true\n' >"$work/mosquitto.conf"
	for pairs in $PAIRS; do
		for i in $(seq "$RUNS"); do
			mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
			mpid=$!
			pids+=("$mpid")
			wait_port 18830
			run mosquitto "$mpid" -mode raw -addr tcp://127.0.0.1:18830 -pairs "$pairs"
			kill "$mpid"
			wait "$mpid" 2>/dev/null || true
		done
	done
else
	echo "mosquitto is not installed (apt-get install mosquitto): raw-mode rows skipped" >&2
fi

echo
echo "median run (by msgs/s) of $RUNS, $DURATION each, client $CLIENT, QoS 1, window 1, $(nproc) cores:"
medians before duet mosquitto
