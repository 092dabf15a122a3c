"""Serving throughput: pruneguard's service vs a plain BentoML service on the same ONNX model.

Both servers run at once on loopback; closed-loop clients send single-row /predict requests
to one server per block, alternating blocks (ABAB...) so both see the same machine load;
each round starts a fresh pair.
pruneguard runs with its defaults (shadow on 100% of requests, prediction log, metrics).
Target (issue 5): pruneguard >= 0.8x the plain service's requests/s. Prints JSON on stdout.

    .venv/bin/python bench/serve_throughput.py [--rounds 3] [--blocks 4] [--requests 400]
        [--model text --artifacts DIR --batch 1]   # MiniLM; the plain service tokenizes too
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from serve_common import (
    Workspace,
    add_model_args,
    alternating_blocks,
    log,
    percentiles_ms,
    plain_server,
    pruneguard_server,
    uptime,
    workspace,
)

NAME = "serve_throughput"


SERVERS = ("pruneguard", "plain")


def run_round(ws: Workspace, args: argparse.Namespace, seen: dict[str, Any], round_no: int) -> None:
    """A fresh pair of servers (started in alternating order), ``blocks`` blocks each:
    one server pair alone carries an instance effect of a few percent (seen in A/A runs)."""
    names = SERVERS if round_no % 2 == 0 else SERVERS[::-1]
    start_server = {
        "pruneguard": lambda: pruneguard_server(
            ws, shadow_sample=args.shadow_sample, name=f"pg-{round_no}"
        ),
        "plain": lambda: plain_server(ws),
    }
    servers = {name: start_server[name]() for name in names}
    try:
        blocks = alternating_blocks(
            servers,
            blocks=args.blocks,
            requests=args.requests,
            concurrency=args.concurrency,
            body=ws.body(args.batch),
            drop_first=True,
        )
        for block, done in blocks:
            for b in done:
                seen["rps"][b.name].append(args.requests / b.seconds)
                seen["cpu_ms"][b.name] += b.server_cpu_ms
                seen["samples"][b.name] += b.load.samples
                seen["errors"][b.name] += b.load.errors
            log(
                NAME,
                f"round {round_no} block {block}: "
                + ", ".join(f"{k} {v[-1]:.0f} req/s" for k, v in seen["rps"].items()),
            )
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="fresh server pairs")
    ap.add_argument("--blocks", type=int, default=4, help="blocks per server and round")
    ap.add_argument("--requests", type=int, default=400, help="requests per block")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--shadow-sample", type=float, default=1.0)
    add_model_args(ap)
    args = ap.parse_args()
    load_before = uptime()
    seen: dict[str, Any] = {
        "rps": {k: [] for k in SERVERS},
        "samples": {k: [] for k in SERVERS},
        "errors": dict.fromkeys(SERVERS, 0),
        "cpu_ms": dict.fromkeys(SERVERS, 0.0),
    }
    with workspace(args.model, args.artifacts) as ws:
        for round_no in range(args.rounds):
            run_round(ws, args, seen, round_no)
    rps, samples, errors = seen["rps"], seen["samples"], seen["errors"]
    total = args.requests * args.blocks * args.rounds
    median = {k: sorted(v)[len(v) // 2] for k, v in rps.items()}
    ratio = median["pruneguard"] / median["plain"]
    print(
        json.dumps(
            {
                "bench": NAME,
                "model": args.model,
                "batch": args.batch,
                "requests_per_block": args.requests,
                "rounds": args.rounds,
                "blocks_per_server": args.blocks * args.rounds,
                "concurrency": args.concurrency,
                "shadow_sample": args.shadow_sample,
                "rps_median": {k: round(v, 1) for k, v in median.items()},
                "rps_blocks": {k: [round(x, 1) for x in v] for k, v in rps.items()},
                "latency_ms": {k: percentiles_ms(v) for k, v in samples.items()},
                # server CPU (all its processes) per request
                "server_cpu_ms_per_request": {
                    k: round(v / total, 3) for k, v in seen["cpu_ms"].items()
                },
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
