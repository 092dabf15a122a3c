"""Rollback under load: the champion flips 5 times while closed-loop clients keep sending.

One pruneguard server (poll interval --poll-interval) on loopback; the bench moves the
champion through the registry (promote the dense version / roll back) every --gap seconds
and records, per flip, how long until the first response carrying the new model_version.
Targets (issue 5): >= 5,000 requests, 0 failed, each flip visible within the poll interval.
Prints JSON on stdout.

    .venv/bin/python bench/serve_rollback_under_load.py [--requests 6000] [--flips 5]
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from serve_common import (
    MODEL,
    Sample,
    closed_loop,
    log,
    percentiles_ms,
    pruneguard_server,
    uptime,
    workspace,
)

NAME = "serve_rollback_under_load"


def flipper(
    ws, flips: int, gap: float, moves: list[tuple[float, str]], done: threading.Event
) -> None:  # type: ignore[no-untyped-def]
    for i in range(flips):
        if done.wait(gap):
            return
        if i % 2 == 0:
            ws.registry.promote(ws.shadow, actor="bench", reason=f"flip {i}")
            target = ws.shadow
        else:
            ws.registry.rollback(MODEL, actor="bench", reason=f"flip {i}")
            target = ws.champion
        moves.append((time.perf_counter(), target.split(":", 1)[1]))
        log(NAME, f"flip {i} -> {target}")


def visible_after(samples: list[Sample], moves: list[tuple[float, str]]) -> list[float | None]:
    """Seconds from each move to the first response (started after it) with the new version."""
    delays: list[float | None] = []
    for at, version in moves:
        ends = [s.end for s in samples if s.start >= at and s.version == version]
        delays.append(round(min(ends) - at, 3) if ends else None)
    return delays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--flips", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--poll-interval", type=float, default=2.0)
    ap.add_argument(
        "--gap",
        type=float,
        default=None,
        help="seconds between flips [default: 2.5x poll interval]",
    )
    args = ap.parse_args()
    gap = args.gap or 2.5 * args.poll_interval
    load_before = uptime()
    with workspace() as ws:
        server = pruneguard_server(ws, shadow_sample=1.0, poll_interval=args.poll_interval)
        try:
            server.wait_ready()
            moves: list[tuple[float, str]] = []
            done = threading.Event()
            thread = threading.Thread(target=flipper, args=(ws, args.flips, gap, moves, done))
            start = time.perf_counter()
            thread.start()
            load = closed_loop(
                server.url,
                requests=args.requests,
                concurrency=args.concurrency,
                until=lambda: (
                    not thread.is_alive()
                    and (not moves or time.perf_counter() - moves[-1][0] > gap)
                ),
            )
            elapsed = time.perf_counter() - start
            done.set()
            thread.join()
        finally:
            server.stop()
    delays = visible_after(load.samples, moves)
    within = [d is not None and d <= args.poll_interval for d in delays]
    print(
        json.dumps(
            {
                "bench": NAME,
                "requests": len(load.samples),
                "failed": load.errors,
                "flips_done": len(moves),
                "poll_interval_s": args.poll_interval,
                "gap_s": gap,
                "visible_after_s": delays,
                "each_within_poll_interval": within,
                "rps": round(len(load.samples) / elapsed, 1),
                "latency_ms": percentiles_ms(load.samples),
                "target": ">= 5000 requests, 0 failed, 5 flips each visible within the poll interval",
                "pass": len(load.samples) >= 5000
                and load.errors == 0
                and len(moves) == args.flips
                and all(within),
                "loadavg_before": load_before,
                "loadavg_after": uptime(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
