"""Two modeld binaries against each other on one model, interleaved (A, B, A, B, ...) so
that the machine's drift falls on both: each round starts each binary with engines.py's
modeld setup (2 workers of 1 thread, busy_poll 100us, engine = "onnxruntime") and drives it
with run.py's wrk at c=16. Prints each round's images/s, P99 and CPU per request, and each
binary's median.

    python3 bench/ab.py MODEL BINARY_A,BINARY_B ROUNDS SECONDS [oip_binary|oip]
"""
import sys
import tempfile
from pathlib import Path

import engines
import run


def main():
    model, binaries = sys.argv[1], sys.argv[2].split(",")
    rounds, seconds = int(sys.argv[3]), int(sys.argv[4])
    request = sys.argv[5] if len(sys.argv) > 5 else "oip_binary"
    directory = Path(tempfile.mkdtemp(prefix="modeld-ab-", dir="/tmp"))
    body = run.bodies(model, directory)[request]
    library = engines.onnxruntime_library(None)
    config = run.modeld_config(directory, model, workers=2, intra_op=1)
    text = config.read_text().replace("[server]\n", f'[server]\nonnxruntime_library = "{library}"\n', 1)
    config = config.with_name("ab.toml")
    config.write_text(text + 'engine = "onnxruntime"\n')
    results = {b: [] for b in binaries}
    for _ in range(rounds):
        for binary in binaries:
            state = Path(tempfile.mkdtemp(prefix="modeld-ab-", dir="/tmp"))
            server = run.Server("ab", [binary, "serve", "--config", str(config), "--listen", "127.0.0.1:{port}",
                                       "--run-dir", str(state), "--state-dir", str(state / "state")], ready_timeout=180)
            try:
                m = run.measure(server, f"/v2/models/{model}/infer", body, 16, seconds)
            finally:
                server.stop()
            results[binary].append(m["rps"])
            print(f"{binary}: {m['rps']:.1f} req/s, P99 {m['p99']:.1f} ms, CPU us/req supervisor {m['cpu_main']:.0f} "
                  f"workers {m['cpu_children']:.0f} wrk {m['cpu_wrk']:.0f}", flush=True)
    for binary, rps in results.items():
        ordered = sorted(rps)
        print(f"{binary}: median {ordered[len(ordered) // 2]:.1f} req/s of {ordered}")


if __name__ == "__main__":
    main()
