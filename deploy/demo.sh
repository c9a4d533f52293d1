#!/usr/bin/env bash
# The main job on one host: a manager-side Prometheus that receives
# remote-write (standing in for the central manager), and an agent on the
# embedded etcd that runs the stack (Prometheus + node_exporter with the
# process driver, or Docker with DRIVER=docker), relaying metrics to it.
# Everything listens on 127.0.0.1. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_DIR:-$PWD/data}
DRIVER=${DRIVER:-process}
AGENT=${AGENT:-bin/agent}
mkdir -p "$DATA/manager"

cat > "$DATA/manager/prometheus.yml" <<'YML'
global: {scrape_interval: 1m}
YML
prometheus --config.file="$DATA/manager/prometheus.yml" --storage.tsdb.path="$DATA/manager/data" \
  --web.listen-address=127.0.0.1:19090 --web.enable-remote-write-receiver >"$DATA/manager/prometheus.log" 2>&1 &
manager=$!

"$AGENT" join --config deploy/demo.toml --data-dir "$DATA/agent" --driver "$DRIVER" &
agent=$!

cleanup() {
  trap - EXIT INT TERM
  kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true
  # The node stack outlives the agent on purpose (the next agent adopts it);
  # the demo stops it too.
  for f in "$DATA"/agent/processes/*.pid; do [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
  kill -TERM "$manager" 2>/dev/null && wait "$manager" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 100); do
  curl -fs 127.0.0.1:9464/-/ready >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<TXT

  agent up. Where to look:
    cluster:            $AGENT status            ($AGENT targets for the scrape targets)
    agent API:          http://127.0.0.1:9464/api/v1/status   /metrics   /sd/http
    master Prometheus:  http://127.0.0.1:9090/targets
    manager (relayed):  http://127.0.0.1:19090/graph
  One query that shows the relayed series (after ~10 s):
    curl -s http://127.0.0.1:19090/api/v1/query --data-urlencode 'query=node_load1{cluster="default"}'

  Ctrl-C stops the agent, its stack and the manager.
TXT
wait "$agent"
