#!/usr/bin/env bash
# Benchmark the metric relay as its own process, on loopback only:
#   relayload -sink (core 1)  <-  relayload -serve, the relay (core 0)  <-  relayload -url (core 1)
# Prints acknowledged samples/s, relay CPU seconds per million samples and
# the relay's peak RSS. Everything started here is stopped on exit.
#
# Env: DURATION (15s), SERIES (1000), LABELS (9), SAMPLES (2000 per request),
# CONCURRENCY (8 requests in flight), SHARDS (relay concurrency, 4),
# RELAY_CORE (0), LOAD_CORE (1), QUEUE_DIR (a temporary dir; put it on the
# disk you want to measure).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-15s}
SERIES=${SERIES:-1000}
LABELS=${LABELS:-9}
SAMPLES=${SAMPLES:-2000}
CONCURRENCY=${CONCURRENCY:-8}
SHARDS=${SHARDS:-4}
RELAY_CORE=${RELAY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { # a random port nothing answers on
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "port $1 did not open" >&2
	return 1
}

go build -o "$work/relayload" ./cmd/relayload
sink_port=$(free_port)
relay_port=$(free_port)

taskset -c "$LOAD_CORE" "$work/relayload" -sink "127.0.0.1:$sink_port" >"$work/sink.out" 2>"$work/sink.err" &
pids+=($!)
wait_port "$sink_port"
GOMAXPROCS=${RELAY_GOMAXPROCS:-2} taskset -c "$RELAY_CORE" "$work/relayload" -serve "127.0.0.1:$relay_port" \
	-queue-dir "${QUEUE_DIR:-$work/queue}" -upstream "http://127.0.0.1:$sink_port/api/v1/write" \
	-shards "$SHARDS" ${RELAY_FLAGS:-} >"$work/relay.out" 2>"$work/relay.err" &
relay_pid=$!
pids+=($relay_pid)
wait_port "$relay_port"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$relay_pid/stat"; }
# busy and total ticks of the relay's core (anything running there, kernel included)
core_ticks() { awk -v c="cpu$RELAY_CORE" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
read -r core_busy0 core_total0 < <(core_ticks)
before=$(cpu_ticks)
taskset -c "$LOAD_CORE" "$work/relayload" -url "http://127.0.0.1:$relay_port/api/v1/write" \
	-series "$SERIES" -labels "$LABELS" -samples "$SAMPLES" -concurrency "$CONCURRENCY" -duration "$DURATION" \
	>"$work/load.out"
after=$(cpu_ticks)
read -r core_busy1 core_total1 < <(core_ticks)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$relay_pid/status")
acked=$(sed -n 's/.*acked_samples=\([0-9]*\) .*/\1/p' "$work/load.out")
cat "$work/load.out"
hz=$(getconf CLK_TCK)
awk -v t=$((after - before)) -v hz="$hz" -v n="$acked" -v hwm="$hwm" \
	-v busy=$((core_busy1 - core_busy0)) -v total=$((core_total1 - core_total0)) 'BEGIN {
	cpu = t / hz
	printf "relay_cpu_seconds=%.2f cpu_seconds_per_million_samples=%.3f samples_per_cpu_second=%.0f peak_rss_mib=%.1f relay_core_busy_percent=%.0f\n",
		cpu, (n > 0 ? cpu / (n / 1e6) : 0), (cpu > 0 ? n / cpu : 0), hwm / 1024, (total > 0 ? 100 * busy / total : 0)
}'
kill "$relay_pid"
wait "$relay_pid" || true
cat "$work/relay.out" "$work/relay.err"
