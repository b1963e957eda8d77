#!/usr/bin/env bash
# Large JSON bodies at high concurrency: SqueezeNet images (3x224x224 floats as JSON,
# ~1.5 MB each) from 64 connections at once, against two modeld binaries in the same run:
# BASELINE (an older build) and this tree's release build. Reports wrk's throughput and
# latency, the non-200 answers, and the workers the liveness watch declared hung.
#
#   bench/json_burst.sh BASELINE_BINARY [connections=64] [seconds=20]
#
# Why: decoding such bodies on the runtime's threads once starved the worker connections'
# readers and writers, and the liveness watch killed healthy workers for the silence
# (src/front/offload.rs). Load generator and daemon share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:?the baseline modeld binary}
conns=${2:-64}; secs=${3:-20}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -q

dir=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/models/squeezenet1_1/1"
cp tests/fixtures/reference/squeezenet1_1.onnx "$dir/models/squeezenet1_1/1/model.onnx"
python3 - "$dir/body.json" <<'PY'
import json, sys
data = [float(f"{(i % 255) / 255:.7g}") for i in range(3 * 224 * 224)]
body = {"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": data}]}
open(sys.argv[1], "w").write(json.dumps(body))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/modeld.toml" <<TOML
[server]
repository = "models"
listen = "127.0.0.1:$port"
admin_socket = "admin.sock"
state_dir = "state"
run_dir = "run"
log_level = "warn"
[[model]]
name = "squeezenet1_1"
version = 1
workers = 2
TOML
echo "body: $(stat -c %s "$dir/body.json") bytes; $conns connections, ${secs}s each; $(nproc) cores"

run() {
  local name=$1 binary=$2
  (cd "$dir" && rm -rf state run && exec "$binary" serve --config modeld.toml 2>"$dir/$name.log") &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
  BODY_FILE="$dir/body.json" wrk -t2 -c"$conns" -d"${secs}s" --timeout 30s --latency -s bench/post.lua \
    "http://127.0.0.1:$port/v2/models/squeezenet1_1/infer" >"$dir/$name.wrk"
  local hangs
  hangs=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^modeld_worker_hangs_total/ {s += $2} END {print s + 0}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local rps p50 p99 non200
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/$name.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$dir/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/$name.wrk")
  non200=$(awk -F': ' '/non-200 answers/ {print $2}' "$dir/$name.wrk")
  printf '%-9s %8s req/s  p50 %8s  p99 %8s  non-200 %5s  workers declared hung %s\n' \
    "$name" "$rps" "$p50" "$p99" "$non200" "$hangs"
  echo "$rps" >"$dir/$name.rps"
}

run baseline "$baseline"
run modeld "$PWD/target/release/modeld"
python3 -c "import sys; b, m = (float(open(f).read()) for f in sys.argv[1:]); print(f'throughput modeld/baseline: {m / b:.2f}x')" \
  "$dir/baseline.rps" "$dir/modeld.rps"
