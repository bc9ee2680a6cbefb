# Shared by compare.sh and cluster.sh (sourced, from the repository root):
# a work directory removed on exit with every process started into pids,
# the built duet and load tool, one load run as a table row, and the table
# of median runs.

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true # 2 connections per pair on both sides

go build -o "$work/duet" .
go build -o "$work/bench" ./clients/bench

results=$work/results
: >"$results"

# run NAME PIDS ARGS...: one load run against the broker process(es) PIDS
# (comma-separated); prints its summary to stderr and a row "name pairs
# msgs/s p50 p99 broker_us tool_us lost errors" to stdout.
run() {
	local name=$1 bpids=$2 out
	shift 2
	# 32 dials at a time: Duet admits 64 connections per client IP that
	# have not logged in yet (--pending-per-ip), and the whole load comes
	# from 127.0.0.1.
	out=$("$work/bench" -q -client "${CLIENT:-wire}" -duration "$DURATION" -broker-pid "$bpids" -conn-parallel 32 "$@")
	echo "$out" >&2
	printf '%s %s %s %s %s %s %s %s %s\n' "$name" "$(sed -n 's/^mode=.* pairs=\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^throughput: \([0-9]*\) delivered.*/\1/p' <<<"$out")" \
		"$(sed -n 's/^latency ms: p50=\([0-9.]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^latency ms: .* p99=\([0-9.]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^cpu over the send window: broker [0-9.]*s (\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/.*this tool [0-9.]*s (\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^sent=.* lost=\([0-9]*\) .*/\1/p' <<<"$out")" \
		"$(sed -n 's/^sent=.* errors=\([0-9]*\) .*/\1/p' <<<"$out")" | tee -a "$results"
}

# medians NAME...: for each name and each of $PAIRS, the median run by
# msgs/s.
medians() {
	printf '%-14s %6s %8s %8s %8s %14s %12s %5s %6s\n' setup pairs msgs/s p50_ms p99_ms broker_us/msg tool_us/msg lost errors
	local name pairs rows n
	for name in "$@"; do
		for pairs in $PAIRS; do
			rows=$(awk -v b="$name" -v p="$pairs" '$1 == b && $2 == p' "$results" | sort -k3,3n)
			n=$(grep -c . <<<"$rows" || true)
			[ "$n" -gt 0 ] || continue
			sed -n "$(((n + 1) / 2))p" <<<"$rows" |
				awk '{ printf "%-14s %6s %8s %8s %8s %14s %12s %5s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
		done
	done
}
