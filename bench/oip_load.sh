#!/usr/bin/env bash
# First serving figure: requests/s and latency percentiles for the tabular MLP through
# POST /v2/models/tabular_mlp/infer (one row of 30 features, JSON), with wrk.
#
#   bench/oip_load.sh [concurrency=16] [seconds=15] [workers=2]
#
# Builds release, starts modeld on a free port with the bundled tabular_mlp, drives it with
# wrk (installed with apt-get if missing), prints wrk's report. Load generator and daemon
# share the machine: on 2 cores, the figure is a floor, not a ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."
conc=${1:-16}; secs=${2:-15}; workers=${3:-2}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -q

dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/models"
cp -r models/tabular_mlp "$dir/models/"
cat > "$dir/modeld.toml" <<TOML
[server]
repository = "models"
log_level = "warn"
[[model]]
name = "tabular_mlp"
version = 1
workers = $workers
threads = 1
TOML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/modeld serve --config "$dir/modeld.toml" --listen "127.0.0.1:$port" \
  --run-dir "$dir/run" --state-dir "$dir/state" 2>"$dir/modeld.log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
curl -sf "127.0.0.1:$port/ready" >/dev/null || { cat "$dir/modeld.log"; exit 1; }

python3 - > "$dir/body.json" <<'PY'
import json
row = [round((i % 7) * 0.31 - 1.0, 3) for i in range(30)]
print(json.dumps({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": row}]}))
PY
echo "modeld $(git rev-parse --short HEAD), $(nproc) cores, $workers workers, wrk -t2 -c$conc -d${secs}s"
BODY_FILE="$dir/body.json" wrk -t2 -c"$conc" -d"${secs}s" --latency -s bench/post.lua \
  "http://127.0.0.1:$port/v2/models/tabular_mlp/infer"
echo "supervisor RSS after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
