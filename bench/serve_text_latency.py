"""Served text latency: /predict with texts in and embeddings out (tokenization included),
a server whose champion is the dense MiniLM vs one whose champion is the pruned one.

all-MiniLM-L6-v2 dense and pruned by a built-in recipe (``--recipe``, default minilm-fast;
cached in ``--artifacts``); ``--champion quantized`` serves the run's int8 version instead
(``--recipe minilm-int8``). Two pruneguard servers on loopback, each with its own registry database
(same model store) naming its champion, get closed-loop requests of 1 and 8 texts of 128
tokens in alternating blocks (ABAB...), each block's first request per client dropped; each
round starts a fresh pair. The shadow is off on both unless ``--shadow-sample``: this
measures what the pruning buys a client. Latency is end to end, as the client sees it.
Target (issue 14): dense / pruned p50 >= 1.6x at batch 1 and 8. Prints JSON on stdout.

    .venv/bin/python bench/serve_text_latency.py --artifacts .pruneguard/bench-minilm \\
        [--rounds 2] [--blocks 6] [--requests 40] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from serve_common import (
    TEXT_RECIPE,
    Workspace,
    alternating_blocks,
    log,
    percentiles_ms,
    pruneguard_server,
    text_tokens,
    uptime,
    workspace,
)

NAME = "serve_text_latency"
SERVERS = ("dense", "pruned")
QUANTILES = ("p50", "p99")


def run_round(
    pair: dict[str, Workspace], args: argparse.Namespace, seen: dict[str, Any], round_no: int
) -> None:
    """A fresh pair of servers (started in alternating order), ``blocks`` block pairs per
    batch size."""
    names = SERVERS if round_no % 2 == 0 else SERVERS[::-1]
    servers = {
        k: pruneguard_server(pair[k], shadow_sample=args.shadow_sample, name=f"{k}-{round_no}")
        for k in names
    }
    try:
        for batch in args.batches:
            blocks = alternating_blocks(
                servers,
                blocks=args.blocks,
                requests=args.requests,
                concurrency=args.concurrency,
                body=pair["dense"].body(batch),
                warmup=args.warmup,
                drop_first=True,
            )
            for block, done in blocks:
                for b in done:
                    seen["samples"][batch][b.name] += b.load.samples
                    seen["blocks"][batch][b.name].append(percentiles_ms(b.load.samples))
                    seen["errors"][b.name] += b.load.errors
                    seen["versions"][b.name] |= {s.version for s in b.load.samples}
                log(
                    NAME,
                    f"round {round_no} batch {batch} block {block}: "
                    + ", ".join(
                        f"{k} p50 {v[-1]['p50']}ms" for k, v in seen["blocks"][batch].items()
                    ),
                )
    finally:
        for server in servers.values():
            server.stop()


def summary(seen: dict[str, Any], batch: int) -> dict[str, Any]:
    samples, blocks = seen["samples"][batch], seen["blocks"][batch]
    stats = {k: percentiles_ms(samples[k]) for k in SERVERS}
    return {
        "latency_ms": stats,
        "ratio_dense_over_pruned": {
            q: round(stats["dense"][q] / stats["pruned"][q], 3) for q in QUANTILES
        },
        # each block pair ran back to back: the median of their ratios cancels slow drift
        "ratio_paired_blocks_median": {
            q: round(
                float(
                    np.median(
                        [
                            d[q] / p[q]
                            for d, p in zip(blocks["dense"], blocks["pruned"], strict=True)
                        ]
                    )
                ),
                3,
            )
            for q in QUANTILES
        },
        "blocks_p50_ms": {k: [b["p50"] for b in v] for k, v in blocks.items()},
        "samples": {k: len(v) for k, v in samples.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=None, help="minilm-fast artifact cache")
    ap.add_argument("--rounds", type=int, default=2, help="fresh server pairs")
    ap.add_argument("--blocks", type=int, default=6, help="block pairs per round and batch size")
    ap.add_argument("--requests", type=int, default=40, help="requests per block")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured requests per server")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--shadow-sample", type=float, default=0.0)
    ap.add_argument("--recipe", default=TEXT_RECIPE, help="the text recipe whose run is served")
    ap.add_argument("--champion", choices=("pruned", "quantized"), default="pruned",
                    help="which of the run's versions the pruned server answers with "
                    "(quantized: the recipe must quantize, e.g. minilm-int8)")  # fmt: skip
    args = ap.parse_args()
    load_before = uptime()
    seen: dict[str, Any] = {
        "samples": {b: defaultdict(list) for b in args.batches},
        "blocks": {b: {k: [] for k in SERVERS} for b in args.batches},
        "errors": dict.fromkeys(SERVERS, 0),
        "versions": {k: set() for k in SERVERS},
    }
    with workspace("text", args.artifacts, recipe=args.recipe, champion_kind=args.champion) as ws:
        pair = {
            "dense": ws.with_champion(ws.shadow, shadow=ws.champion, label="dense"),
            "pruned": ws.with_champion(ws.champion, shadow=ws.shadow, label="pruned"),
        }
        tokens = text_tokens(ws)
        for round_no in range(args.rounds):
            run_round(pair, args, seen, round_no)
    per_batch = {str(b): summary(seen, b) for b in args.batches}
    # the answers came from the intended champion: the model_version of every 200
    expected = {k: {pair[k].champion.split(":", 1)[1]} for k in SERVERS}
    right_versions = all(seen["versions"][k] - {""} == expected[k] for k in SERVERS)
    print(
        json.dumps(
            {
                "bench": NAME,
                "recipe": args.recipe,
                "champion_kind": args.champion,
                "champion_cosine_to_dense": json.loads(
                    (pair["pruned"].champion_dir / "manifest.json").read_text()
                )["metrics"].get("mean_cosine_to_dense"),
                "champions": {k: pair[k].champion for k in SERVERS},
                "tokens_per_text": {"min": min(tokens), "max": max(tokens)},
                "rounds": args.rounds,
                "blocks_per_server_and_batch": args.blocks * args.rounds,
                "requests_per_block": args.requests,
                "concurrency": args.concurrency,
                "shadow_sample": args.shadow_sample,
                "batches": per_batch,
                "errors": seen["errors"],
                "answers_from_intended_champion": right_versions,
                "target": "dense/pruned p50 >= 1.6 at every batch size",
                "pass": all(v["ratio_dense_over_pruned"]["p50"] >= 1.6 for v in per_batch.values())
                and not any(seen["errors"].values())
                and right_versions,
                "loadavg_before": load_before,
                "loadavg_after": uptime(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
