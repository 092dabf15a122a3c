"""Serving throughput: pruneguard's service vs a plain BentoML service on the same ONNX model.

Both servers run at once on loopback; closed-loop clients send single-row /predict requests
to one server per block, alternating blocks (ABAB...) so both see the same machine load.
pruneguard runs with its defaults (shadow on 100% of requests, prediction log, metrics).
Target (issue 5): pruneguard >= 0.8x the plain service's requests/s. Prints JSON on stdout.

    .venv/bin/python bench/serve_throughput.py [--blocks 6] [--requests 400] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import time

from serve_common import (
    closed_loop,
    log,
    percentiles_ms,
    plain_server,
    pruneguard_server,
    uptime,
    workspace,
)

NAME = "serve_throughput"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=6, help="blocks per server")
    ap.add_argument("--requests", type=int, default=400, help="requests per block")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--shadow-sample", type=float, default=1.0)
    args = ap.parse_args()
    load_before = uptime()
    with workspace() as ws:
        servers = {
            "pruneguard": pruneguard_server(ws, shadow_sample=args.shadow_sample),
            "plain": plain_server(ws),
        }
        try:
            for server in servers.values():
                server.wait_ready()
            for server in servers.values():  # warm-up, not measured
                closed_loop(server.url, requests=100, concurrency=args.concurrency)
            rps: dict[str, list[float]] = {k: [] for k in servers}
            samples: dict[str, list] = {k: [] for k in servers}
            errors = dict.fromkeys(servers, 0)
            for block in range(args.blocks):
                order = list(servers) if block % 2 == 0 else list(reversed(servers))
                for name in order:
                    start = time.perf_counter()
                    load = closed_loop(
                        servers[name].url, requests=args.requests, concurrency=args.concurrency
                    )
                    rps[name].append(args.requests / (time.perf_counter() - start))
                    samples[name] += load.samples
                    errors[name] += load.errors
                log(
                    NAME,
                    f"block {block}: "
                    + ", ".join(f"{k} {v[-1]:.0f} req/s" for k, v in rps.items()),
                )
        finally:
            for server in servers.values():
                server.stop()
    median = {k: sorted(v)[len(v) // 2] for k, v in rps.items()}
    ratio = median["pruneguard"] / median["plain"]
    print(
        json.dumps(
            {
                "bench": NAME,
                "requests_per_block": args.requests,
                "blocks_per_server": args.blocks,
                "concurrency": args.concurrency,
                "shadow_sample": args.shadow_sample,
                "rps_median": {k: round(v, 1) for k, v in median.items()},
                "rps_blocks": {k: [round(x, 1) for x in v] for k, v in rps.items()},
                "latency_ms": {k: percentiles_ms(v) for k, v in samples.items()},
                "errors": errors,
                "ratio": round(ratio, 3),
                "target": ">= 0.8",
                "pass": ratio >= 0.8 and not any(errors.values()),
                "loadavg_before": load_before,
                "loadavg_after": uptime(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
