#!/usr/bin/env bash
# Benchmark the metric relay as its own process, on loopback only:
#   relayload -sink (core 1)  <-  relay (core 0)  <-  relayload -url (core 1)
# once per case and round, the cases interleaved in each round:
#   1.0 in           remote-write 1.0 in, 1.0 out (the upstream's protocol auto)
#   2.0 in           2.0 in, 2.0 out (auto)
#   2.0 in, 1.0 out  2.0 in, converted to 1.0 (upstream protocol 1.0)
#   vmagent 1.0 in   vmagent v1.151.0 in the relay's place, on the same load
#                    (skipped unless VMAGENT=/path or its testbin is built:
#                    bash testdata/testbins/build.sh vmagent)
# and prints, per case, acknowledged samples/s, the relay's CPU seconds per
# million samples, samples per CPU second and peak RSS; after the last round,
# each case's median samples per CPU second and the ratios of issue 15's two
# goals (2.0 in / 1.0 in, at least 1.3; 1.0 in / vmagent, at least 1.25)
# per round, where both cases ran in the same round on the same load. The CPU is the
# relay's from the first request until the sink has received every sample
# the relay acknowledged: ingest and forwarding. Everything started here is
# stopped on exit.
#
# Env: DURATION (15s), SERIES (1000), LABELS (9), SAMPLES (2000 per request),
# CONCURRENCY (8 requests in flight), SHARDS (relay concurrency, 4),
# RELAY_CORE (0), LOAD_CORE (1), QUEUE_DIR (a temporary dir; put it on the
# disk you want to measure), CASES (which cases: "v1 v2 v2v1 vmagent"),
# ROUNDS (3).
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
CASES=${CASES:-v1 v2 v2v1 vmagent}
ROUNDS=${ROUNDS:-3}
declare -A per_cpu # per_cpu[case,round]: samples per CPU second

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
	for _ in $(seq 600); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "port $1 did not open" >&2
	return 1
}

go build -o "$work/relayload" ./cmd/relayload
vmagent=${VMAGENT:-$(bash testdata/testbins/build.sh --path vmagent)/vmagent}

# run_case NAME PROTO_IN: the relay (or vmagent) must already run as
# $relay_pid on $relay_port, forwarding to the sink on $sink_port.
measure() {
	local name=$1 proto=$2
	cpu_ticks() { awk '{print $14 + $15}' "/proc/$relay_pid/stat"; }
	# busy and total ticks of the relay's core (anything running there, kernel included)
	core_ticks() { awk -v c="cpu$RELAY_CORE" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
	read -r core_busy0 core_total0 < <(core_ticks)
	before=$(cpu_ticks)
	taskset -c "$LOAD_CORE" "$work/relayload" -url "http://127.0.0.1:$relay_port/api/v1/write" -proto "$proto" \
		-series "$SERIES" -labels "$LABELS" -samples "$SAMPLES" -concurrency "$CONCURRENCY" -duration "$DURATION" \
		>"$work/load.out" 2>"$work/load.err"
	acked=$(sed -n 's/.*acked_samples=\([0-9]*\) .*/\1/p' "$work/load.out")
	# The relay's work is done when the sink has everything it acknowledged:
	# its CPU is counted until then (ingest and forwarding, backlog included).
	local drained=no
	for _ in $(seq 1200); do
		got=$(exec 3<>"/dev/tcp/127.0.0.1/$sink_port" && printf 'GET /count HTTP/1.0\r\n\r\n' >&3 && tail -n1 <&3)
		if [ "${got:-0}" -ge "${acked:-0}" ]; then drained=yes; break; fi
		sleep 0.05
	done
	after=$(cpu_ticks)
	read -r core_busy1 core_total1 < <(core_ticks)
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$relay_pid/status")
	[ "$drained" = yes ] || echo "    $name: the sink got only ${got:-0} of $acked samples within 60 s; CPU counted until then" >&2
	rate=$(sed -n 's/.*acked_samples_per_second=\([0-9]*\) .*/\1/p' "$work/load.out")
	failed=$(sed -n 's/.*failed_requests=\([0-9]*\).*/\1/p' "$work/load.out")
	hz=$(getconf CLK_TCK)
	local line
	line=$(awk -v name="$name" -v t=$((after - before)) -v hz="$hz" -v n="$acked" -v rate="$rate" -v failed="$failed" -v hwm="$hwm" \
		-v busy=$((core_busy1 - core_busy0)) -v total=$((core_total1 - core_total0)) 'BEGIN {
		cpu = t / hz
		printf "%-16s acked_samples_per_second=%-8d failed=%-3d relay_cpu_seconds=%6.2f cpu_seconds_per_million_samples=%.3f samples_per_cpu_second=%-8.0f peak_rss_mib=%5.1f core_busy_percent=%.0f\n",
			name, rate, failed, cpu, (n > 0 ? cpu / (n / 1e6) : 0), (cpu > 0 ? n / cpu : 0), hwm / 1024, (total > 0 ? 100 * busy / total : 0)
	}')
	echo "$line"
	per_cpu[$c,$round]=$(sed -n 's/.*samples_per_cpu_second=\([0-9]*\).*/\1/p' <<<"$line")
	if [ "${failed:-0}" != 0 ]; then sed 's/^/    /' "$work/load.err" >&2; fi
}

start_sink() {
	sink_port=$(free_port)
	taskset -c "$LOAD_CORE" "$work/relayload" -sink "127.0.0.1:$sink_port" >"$work/sink.out" 2>"$work/sink.err" &
	sink_pid=$!
	pids+=("$sink_pid")
	wait_port "$sink_port"
}

stop() { # stop PID...
	for p in "$@"; do kill "$p" 2>/dev/null || true; done
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

relay_case() { # relay_case NAME PROTO_IN UPSTREAM_PROTOCOL
	start_sink
	relay_port=$(free_port)
	rm -rf "${QUEUE_DIR:-$work/queue}"
	GOMAXPROCS=${RELAY_GOMAXPROCS:-2} taskset -c "$RELAY_CORE" "$work/relayload" -serve "127.0.0.1:$relay_port" \
		-queue-dir "${QUEUE_DIR:-$work/queue}" -upstream "http://127.0.0.1:$sink_port/api/v1/write" -upstream-protocol "$3" \
		-shards "$SHARDS" ${RELAY_FLAGS:-} >"$work/relay.out" 2>"$work/relay.err" &
	relay_pid=$!
	pids+=("$relay_pid")
	wait_port "$relay_port"
	measure "$1" "$2"
	stop "$relay_pid" "$sink_pid"
	sed 's/^/    /' "$work/relay.out"
	[ ! -s "$work/relay.err" ] || sed 's/^/    relay: /' "$work/relay.err" | tail -5 >&2
}

vmagent_case() {
	if [ ! -x "$vmagent" ]; then
		echo "vmagent 1.0 in   skipped: no $vmagent (bash testdata/testbins/build.sh vmagent)"
		return
	fi
	start_sink
	relay_port=$(free_port)
	# As the relay: external label cluster=bench, SHARDS queues, Prometheus
	# remote-write 1.0 (snappy) to the sink, a disk queue directory.
	GOMAXPROCS=${RELAY_GOMAXPROCS:-2} taskset -c "$RELAY_CORE" "$vmagent" -httpListenAddr="127.0.0.1:$relay_port" \
		-remoteWrite.url="http://127.0.0.1:$sink_port/api/v1/write" -remoteWrite.forcePromProto \
		-remoteWrite.tmpDataPath="$work/vmagent" -remoteWrite.queues="$SHARDS" -remoteWrite.label=cluster=bench \
		-loggerLevel=WARN >"$work/vmagent.out" 2>&1 &
	relay_pid=$!
	pids+=("$relay_pid")
	wait_port "$relay_port"
	measure "vmagent 1.0 in" 1.0
	stop "$relay_pid" "$sink_pid"
	rm -rf "$work/vmagent"
}

# median FORMAT VALUE...: the middle value (the mean of the two middle ones), printed with FORMAT.
median() {
	local fmt=$1
	shift
	printf '%s\n' "$@" | sort -n | awk -v f="$fmt" '{v[NR] = $1} END {if (NR) printf f, NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# ratio A B GOAL: A / B per round where both ran, their median, and whether it reaches GOAL.
ratio() {
	local a=$1 b=$2 goal=$3 r rs=() round
	for ((round = 1; round <= ROUNDS; round++)); do
		[ -n "${per_cpu[$a,$round]:-}" ] && [ -n "${per_cpu[$b,$round]:-}" ] && [ "${per_cpu[$b,$round]}" -gt 0 ] || continue
		rs+=("$(awk -v x="${per_cpu[$a,$round]}" -v y="${per_cpu[$b,$round]}" 'BEGIN {printf "%.2f", x / y}')")
	done
	[ ${#rs[@]} -gt 0 ] || return 0
	r=$(median %.2f "${rs[@]}")
	printf '%-26s %s per round, median %s (goal at least %s: %s)\n' "$a / $b:" "${rs[*]}" "$r" "$goal" \
		"$(awk -v r="$r" -v g="$goal" 'BEGIN {print (r >= g ? "met" : "not met")}')"
}

echo "relay benchmark: $SERIES series x $LABELS labels, $SAMPLES samples/request, $CONCURRENCY in flight, $DURATION per case, $SHARDS shards, $ROUNDS rounds"
for ((round = 1; round <= ROUNDS; round++)); do
	[ "$ROUNDS" = 1 ] || echo "round $round"
	for c in $CASES; do
		case $c in
		v1) relay_case "1.0 in" 1.0 auto ;;
		v2) relay_case "2.0 in" 2.0 auto ;;
		v2v1) relay_case "2.0 in, 1.0 out" 2.0 1.0 ;;
		vmagent) vmagent_case ;;
		*) echo "unknown case $c" >&2; exit 2 ;;
		esac
	done
done

echo "median samples per CPU second over $ROUNDS rounds:"
for c in $CASES; do
	vals=()
	for ((round = 1; round <= ROUNDS; round++)); do
		[ -z "${per_cpu[$c,$round]:-}" ] || vals+=("${per_cpu[$c,$round]}")
	done
	[ ${#vals[@]} -eq 0 ] || printf '  %-8s %s (rounds: %s)\n' "$c" "$(median %.0f "${vals[@]}")" "${vals[*]}"
done
ratio v2 v1 1.3
ratio v1 vmagent 1.25
