#!/usr/bin/env bash
# The main job on one host: a manager-side Prometheus that receives
# remote-write (standing in for the central manager), and an agent on the
# embedded etcd that runs the stack (Prometheus + node_exporter with the
# process driver, or Docker with DRIVER=docker), relaying metrics to it.
# Everything listens on 127.0.0.1. Ctrl-C stops it all and removes what the
# agent started, processes or containers.
#
# Environment: DATA_DIR (./data), DRIVER (process), AGENT (bin/agent),
# MANAGER_ADDR (127.0.0.1:19090); every AGENT_* variable reaches the agent
# (AGENT_LISTEN, AGENT_EMBEDDED_ETCD_LISTEN, AGENT_STACK_PROMETHEUS_LISTEN,
# AGENT_STACK_NODE_EXPORTER_LISTEN move its ports).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_DIR:-$PWD/data}
DRIVER=${DRIVER:-process}
AGENT=${AGENT:-bin/agent}
MANAGER=${MANAGER_ADDR:-127.0.0.1:19090}
API=${AGENT_LISTEN:-127.0.0.1:9464}
PROM=${AGENT_STACK_PROMETHEUS_LISTEN:-127.0.0.1:9090}
NODE=demo    # deploy/demo.toml
CLUSTER=default
export AGENT_RELAY_UPSTREAM=${AGENT_RELAY_UPSTREAM:-http://$MANAGER/api/v1/write}
mkdir -p "$DATA/manager"

manager="" agent="" cleaned=""

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
  if [ -n "$manager" ]; then
    kill -TERM "$manager" 2>/dev/null || true
    wait "$manager" 2>/dev/null || true
  fi
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

"$AGENT" join --config deploy/demo.toml --data-dir "$DATA/agent" --driver "$DRIVER" &
agent=$!
wait_ready "the agent" "http://$API/-/ready" "$agent" 60

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
