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
        # numpy<2: nvidia-pytriton requires numpy<2 (0.7.0: numpy>=1.21,<2); pinned here so pip
        # never tries otherwise. tritonclient[http,grpc] comes with nvidia-pytriton.
        "$VENV/bin/pip" install -q nvidia-pytriton onnxruntime 'numpy<2'
    fi
}

setup
if [ "${1:-}" = setup ]; then
    exit 0
fi

# PyTriton's Python backend stub links libpython3.X.so.1.0 and must get the one of the venv's
# interpreter. Without LD_LIBRARY_PATH it fails ("cannot open shared object file") or, worse,
# loads another Python's library of the same minor version: here Debian's 3.11.2 under pyenv's
# 3.11.7 stdlib, and the model fails to load with "'_thread.RLock' object has no attribute
# '_recursion_count'". See bench/PYTRITON.md.
LIBDIR="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
LDLIB="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY"))')"
if [ ! -e "$LIBDIR/$LDLIB" ]; then
    echo "pytriton.sh: $LIBDIR/$LDLIB missing: PyTriton needs a Python built with --enable-shared" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$VENV/bin/python" "$ROOT/bench/pytriton_server.py" "$@"
