#!/usr/bin/env bash
# Triton via PyTriton, the benchmark peer: sets up its venv and starts bench/pytriton_server.py.
#
#   bench/pytriton.sh setup                      # only create/refresh target/pytriton-venv
#   bench/pytriton.sh --model tests/fixtures/reference/tabular_mlp.onnx --name tabular_mlp --port 8000
#
# Any arguments other than `setup` go to bench/pytriton_server.py (see its --help). The server
# is exec'd, so this script's pid is the server's pid (SIGTERM/SIGINT stop it).
#
# Environment: PYTHON (the interpreter the venv is made from; default python3), PYTRITON_VENV
# (default target/pytriton-venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYTRITON_VENV:-$ROOT/target/pytriton-venv}"
PYTHON="${PYTHON:-python3}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c 'import pytriton, onnxruntime, numpy, tritonclient.http' 2>/dev/null; then
        # numpy<2: PyTriton 0.5-0.7 and the tritonclient it pins are built against numpy 1.
        # tritonclient[http]: only for bench/pytriton_check.py, small.
        "$VENV/bin/pip" install -q nvidia-pytriton onnxruntime 'numpy<2' 'tritonclient[http]'
    fi
}

setup
if [ "${1:-}" = setup ]; then
    exit 0
fi

# PyTriton's Python backend stub is linked against libpython of the interpreter running the
# model's code; without the directory holding it on LD_LIBRARY_PATH the stub fails to start
# ("libpython3.X.so.1.0: cannot open shared object file") and the model never gets ready.
LIBDIR="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
LDLIB="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY"))')"
if [ ! -e "$LIBDIR/$LDLIB" ]; then
    echo "pytriton.sh: $LIBDIR/$LDLIB missing: PyTriton needs a Python built with --enable-shared" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$VENV/bin/python" "$ROOT/bench/pytriton_server.py" "$@"
