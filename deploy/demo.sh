#!/usr/bin/env bash
# The main job on one host: a manager-side Prometheus that receives
# remote-write (standing in for the central manager), and an agent on the
# embedded etcd that runs the stack (Prometheus + node_exporter with the
# process driver, or Docker with DRIVER=docker), relaying metrics to it.
# When the testbins are built (make testbins), the manager also has a
# Jaeger (memory, query API) and a VictoriaLogs, the agent runs the Jaeger
# v2 collector and the trace agent (otelcol) from them, and the demo sends
# a span and a log record of a guid app "demo-app" and writes a line to a
# shipped log file, so that all three signals show at the manager.
# Everything listens on 127.0.0.1. Ctrl-C stops it all and removes what the
# agent started, processes or containers.
#
# Environment: DATA_DIR (./data), DRIVER (process), AGENT (bin/agent),
# MANAGER_ADDR (127.0.0.1:19090), MANAGER_JAEGER_ADDR (query API,
# 127.0.0.1:16686), MANAGER_OTLP_ADDR (its OTLP gRPC, 127.0.0.1:24317),
# MANAGER_LOGS_ADDR (VictoriaLogs, 127.0.0.1:19428), SIGNALS (auto: traces
# and logs when the testbins are there; off: metrics only); every AGENT_*
# variable reaches the agent (AGENT_LISTEN, AGENT_EMBEDDED_ETCD_LISTEN,
# AGENT_STACK_PROMETHEUS_LISTEN, AGENT_STACK_NODE_EXPORTER_LISTEN,
# AGENT_STACK_JAEGER_*_LISTEN, AGENT_STACK_TRACE_AGENT_*_LISTEN move its
# ports).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_DIR:-$PWD/data}
DRIVER=${DRIVER:-process}
AGENT=${AGENT:-bin/agent}
MANAGER=${MANAGER_ADDR:-127.0.0.1:19090}
MANAGER_JAEGER=${MANAGER_JAEGER_ADDR:-127.0.0.1:16686}
MANAGER_OTLP=${MANAGER_OTLP_ADDR:-127.0.0.1:24317}
MANAGER_LOGS=${MANAGER_LOGS_ADDR:-127.0.0.1:19428}
SIGNALS=${SIGNALS:-auto}
TRACE_HTTP=${AGENT_STACK_TRACE_AGENT_OTLP_HTTP_LISTEN:-127.0.0.1:14318}
API=${AGENT_LISTEN:-127.0.0.1:9464}
PROM=${AGENT_STACK_PROMETHEUS_LISTEN:-127.0.0.1:9090}
NODE=demo    # deploy/demo.toml
CLUSTER=default
export AGENT_RELAY_UPSTREAM=${AGENT_RELAY_UPSTREAM:-http://$MANAGER/api/v1/write}
mkdir -p "$DATA/manager"

manager="" jaeger="" vlogs="" agent="" cleaned=""

# alive PID: the process exists and is not a zombie.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status"; }

# stop_group PID: SIGTERM to its process group, SIGKILL after 15 s.
stop_group() {
  kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 75); do alive "$1" || return 0; sleep 0.2; done
  echo "demo: pid $1 ignored SIGTERM for 15 s: killing it" >&2
  kill -KILL -- "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
}

# remove_containers: the containers the agent started with the Docker
# driver (its node stack outlives it on purpose, for the next agent to
# adopt; the demo removes it). Through the Engine API, as the agent does.
remove_containers() {
  local sock=${DOCKER_HOST:-unix:///var/run/docker.sock}
  sock=${sock#unix://}
  [ -S "$sock" ] || return 0
  local ids
  ids=$(curl -fsS --unix-socket "$sock" -G http://docker/containers/json --data-urlencode all=1 \
    --data-urlencode "filters={\"label\":[\"io.agentproj.managed=true\",\"io.agentproj.node=$NODE\",\"io.agentproj.cluster=$CLUSTER\"]}" |
    grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4) || return 0
  for id in $ids; do
    curl -fsS --unix-socket "$sock" -X DELETE "http://docker/containers/$id?force=1" >/dev/null ||
      echo "demo: could not remove container $id" >&2
  done
}

cleanup() {
  [ -n "$cleaned" ] && return
  cleaned=1
  if [ -n "$agent" ] && alive "$agent"; then
    kill -TERM "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
  fi
  # The node stack outlives the agent on purpose (the next agent adopts
  # it); the demo stops it too.
  for f in "$DATA"/agent/processes/*.pid; do
    [ -e "$f" ] && stop_group "$(cat "$f")"
  done
  remove_containers
  for p in "$manager" "$jaeger" "$vlogs"; do
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

fail() {
  echo >&2
  echo "demo: $*" >&2
  exit 1
}

# wait_ready NAME URL PID SECONDS [LOG]: until URL answers 2xx; fails if PID
# exits first or SECONDS pass.
wait_ready() {
  local i code=0
  for ((i = 0; i < $4 * 5; i++)); do
    curl -fs "$2" >/dev/null 2>&1 && return 0
    if ! alive "$3"; then
      wait "$3" || code=$?
      fail "$1 exited with status $code before it was ready; see ${5:-its messages above}"
    fi
    sleep 0.2
  done
  fail "$1 is not ready at $2 after $4 s; see ${5:-its messages above}"
}

cat > "$DATA/manager/prometheus.yml" <<'YML'
global: {scrape_interval: 1m}
YML
prometheus --config.file="$DATA/manager/prometheus.yml" --storage.tsdb.path="$DATA/manager/data" \
  --web.listen-address="$MANAGER" --web.enable-remote-write-receiver >"$DATA/manager/prometheus.log" 2>&1 &
manager=$!
wait_ready "the manager Prometheus" "http://$MANAGER/-/ready" "$manager" 30 "$DATA/manager/prometheus.log"

# testbin NAME BINARY: the path of a testbin, empty when it is not built.
testbin() {
  local p
  p="$(bash testdata/testbins/build.sh --path "$1")/$2"
  [ -x "$p" ] && echo "$p"
}

# import_image NAME BINARY: a local image of a static binary, through the
# Engine API, unless the engine has it (no registry has the project's
# otelcol; the Jaeger image is made the same way so the demo needs none).
import_image() {
  local sock=${DOCKER_HOST:-unix:///var/run/docker.sock} repo=${1%:*} tag=${1##*:}
  sock=${sock#unix://}
  curl -fs --unix-socket "$sock" "http://docker/images/$1/json" >/dev/null 2>&1 && return 0
  echo "demo: importing $2 as the image $1" >&2
  tar -C "$(dirname "$2")" -c "$(basename "$2")" |
    curl -fsS --unix-socket "$sock" -X POST -H 'Content-Type: application/x-tar' --data-binary @- \
      "http://docker/images/create?fromSrc=-&repo=$repo&tag=$tag&changes=ENTRYPOINT%20%5B%22%2F$(basename "$2")%22%5D" >/dev/null ||
    fail "could not import $1 from $2"
}

JAEGER_BIN="" OTELCOL_BIN="" VLOGS_BIN=""
if [ "$SIGNALS" != off ]; then
  JAEGER_BIN=$(testbin jaeger jaeger || true)
  OTELCOL_BIN=$(testbin otelcol otelcol || true)
  VLOGS_BIN=$(testbin victorialogs victoria-logs || true)
fi
if [ -n "$JAEGER_BIN" ] && [ -n "$OTELCOL_BIN" ] && [ -n "$VLOGS_BIN" ]; then
  # The manager's trace store: Jaeger v2 keeping traces in memory, with its
  # query API; and its log store: VictoriaLogs, which takes OTLP logs.
  mkdir -p "$DATA/manager/logs" "$DATA/app"
  cat >"$DATA/manager/jaeger.yml" <<YML
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}}
extensions:
  jaeger_query: {storage: {traces: mem}, http: {endpoint: "$MANAGER_JAEGER"}, grpc: {endpoint: "127.0.0.1:0"}}
  jaeger_storage: {backends: {mem: {memory: {max_traces: 100000}}}}
receivers:
  otlp: {protocols: {grpc: {endpoint: "$MANAGER_OTLP"}}}
processors:
  batch: {}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
YML
  "$JAEGER_BIN" --config="file:$DATA/manager/jaeger.yml" >"$DATA/manager/jaeger.log" 2>&1 &
  jaeger=$!
  "$VLOGS_BIN" -httpListenAddr="$MANAGER_LOGS" -storageDataPath="$DATA/manager/logs" >"$DATA/manager/victoria-logs.log" 2>&1 &
  vlogs=$!
  wait_ready "the manager's Jaeger" "http://$MANAGER_JAEGER/api/services" "$jaeger" 30 "$DATA/manager/jaeger.log"
  wait_ready "the manager's VictoriaLogs" "http://$MANAGER_LOGS/health" "$vlogs" 30 "$DATA/manager/victoria-logs.log"
  export AGENT_STACK_JAEGER_BINARY=$JAEGER_BIN AGENT_STACK_TRACE_AGENT_BINARY=$OTELCOL_BIN
  export AGENT_STACK_JAEGER_OTLP_GRPC_LISTEN=${AGENT_STACK_JAEGER_OTLP_GRPC_LISTEN:-127.0.0.1:4317}
  export AGENT_STACK_JAEGER_OTLP_HTTP_LISTEN=${AGENT_STACK_JAEGER_OTLP_HTTP_LISTEN:-127.0.0.1:4318}
  export AGENT_MANAGER_TRACES_OTLP_ENDPOINT=http://$MANAGER_OTLP
  export AGENT_MANAGER_LOGS_URL=http://$MANAGER_LOGS/insert/opentelemetry/v1/logs
  export AGENT_STACK_LOGS_FILES=$DATA/app/*.log
  if [ "$DRIVER" = docker ]; then
    import_image jaegertracing/jaeger:2.12.0 "$JAEGER_BIN"
    import_image agentproj/otelcol:0.165.0 "$OTELCOL_BIN"
  fi
  signals=1
else
  signals=""
fi

"$AGENT" join --config deploy/demo.toml --data-dir "$DATA/agent" --driver "$DRIVER" &
agent=$!
wait_ready "the agent" "http://$API/-/ready" "$agent" 60

if [ -n "$signals" ]; then
  # A guid app's span and log record, as an instrumented app would send
  # them to its node's trace agent, and a line in a shipped file. The
  # trace agent starts once the master has published its collector.
  now=$(date +%s%N)
  trace=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  resource='{"attributes":[{"key":"guid","value":{"stringValue":"demo-app"}},{"key":"service.name","value":{"stringValue":"demo-app"}}]}'
  span="{\"resourceSpans\":[{\"resource\":$resource,\"scopeSpans\":[{\"spans\":[{\"traceId\":\"$trace\",\"spanId\":\"${trace:0:16}\",\"name\":\"checkout\",\"kind\":2,\"startTimeUnixNano\":\"$((now - 5000000))\",\"endTimeUnixNano\":\"$now\"}]}]}]}"
  record="{\"resourceLogs\":[{\"resource\":$resource,\"scopeLogs\":[{\"logRecords\":[{\"timeUnixNano\":\"$now\",\"body\":{\"stringValue\":\"demo-app: order 42 placed\"}}]}]}]}"
  sent=""
  for _ in $(seq 150); do
    if curl -fs -H 'Content-Type: application/json' -d "$span" "http://$TRACE_HTTP/v1/traces" >/dev/null 2>&1 &&
      curl -fs -H 'Content-Type: application/json' -d "$record" "http://$TRACE_HTTP/v1/logs" >/dev/null 2>&1; then
      sent=1
      break
    fi
    sleep 0.2
  done
  echo "$(date -Is) demo: a line of a shipped log file" >>"$DATA/app/demo.log"
  [ -n "$sent" ] || echo "demo: the trace agent did not answer on $TRACE_HTTP within 30 s; see $AGENT status" >&2
  cat <<TXT

  Traces and logs (the manager's Jaeger and VictoriaLogs; after a few seconds):
    span of demo-app:   curl -s 'http://$MANAGER_JAEGER/api/traces?service=demo-app'   (trace $trace)
    its log record:     curl -s http://$MANAGER_LOGS/select/logsql/query --data-urlencode 'query=guid:"demo-app"'
    the file's line:    curl -s http://$MANAGER_LOGS/select/logsql/query --data-urlencode 'query=node:"$NODE" "shipped log file"'
    send your own:      OTLP/HTTP to http://$TRACE_HTTP (/v1/traces, /v1/logs); append to $DATA/app/*.log
TXT
else
  cat <<TXT

  Traces and logs are off: Jaeger v2, the project's otelcol and VictoriaLogs
  have no Debian package. \`make testbins\` builds them once (several minutes,
  into ~/.cache/agent-testbins); then \`make run\` shows all three signals.
TXT
fi

cat <<TXT

  agent up. Where to look:
    cluster:            $AGENT status --api http://$API    ($AGENT targets for the scrape targets)
    agent API:          http://$API/api/v1/status   /metrics   /sd/http
    master Prometheus:  http://$PROM/targets
    manager (relayed):  http://$MANAGER/graph
  One query that shows the relayed series (after ~10 s):
    curl -s http://$MANAGER/api/v1/query --data-urlencode 'query=node_load1{cluster="default"}'

  Ctrl-C stops the agent, its stack and the manager.
TXT
code=0
wait "$agent" || code=$?
agent=""
[ "$code" = 0 ] && exit 0
fail "the agent exited with status $code"
