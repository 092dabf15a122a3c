"""Soak: minutes of traffic against a real `pruneguard serve` (shadow on every request) with a
real `pruneguard agent run` watching it; the memory of every process at start, middle and end.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 30] [--concurrency 2]

Traffic is a bounded, paced loop on loopback: ``--rate`` requests per second in all (at most
rate x duration requests), 1-4 rows each; half of the rows get /feedback with the champion's
own answer, so the agent sees a healthy champion and the soak measures the steady state (no
rollback). The agent writes an Evidently report every ``--report-every`` seconds, as in
production. Memory is VmRSS from /proc/<pid>/status of the BentoML arbiter, each worker and
the agent, sampled every ``--sample-every`` seconds; "start" is the first sample after a
warm-up minute. Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_common import MODEL, Process, free_port, log, pruneguard_server, uptime, workspace

NAME = "soak"
PRUNEGUARD = str(Path(sys.executable).parent / "pruneguard")


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in kB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *children(kid)]
    return found


def memory(service_pid: int, agent_pid: int) -> dict[str, Any]:
    workers = {str(pid): rss_kb(pid) for pid in children(service_pid)}
    return {
        "service_main_kb": rss_kb(service_pid),
        "service_workers_kb": workers,
        "service_total_kb": (rss_kb(service_pid) or 0) + sum(v or 0 for v in workers.values()),
        "agent_kb": rss_kb(agent_pid),
    }


@dataclass
class Tally:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    feedback: int = 0
    feedback_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def client(url: str, slots: list[float], tally: Tally, seed: int, stop: threading.Event) -> None:
    """Send one request at each time in ``slots`` (monotonic), never more."""
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=30) as http:
        for slot in slots:
            if stop.wait(max(0.0, slot - time.monotonic())):
                return
            rows = rng.uniform(0, 16, size=(int(rng.integers(1, 5)), 1, 8, 8)).round(2)
            start = time.perf_counter()
            try:
                reply = http.post("/predict", json={"inputs": rows.tolist()})
            except httpx.HTTPError as exc:
                tally.error(type(exc).__name__)
                continue
            with tally.lock:
                tally.requests += 1
                tally.latencies_ms.append((time.perf_counter() - start) * 1000)
            if reply.status_code != 200:
                tally.error(f"status_{reply.status_code}")
                continue
            body = reply.json()
            with tally.lock:
                tally.rows += len(body["request_ids"])
            _feedback(http, body, rng, tally)


def _feedback(http: httpx.Client, body: dict[str, Any], rng: Any, tally: Tally) -> None:
    for request_id, label in zip(body["request_ids"], body["predictions"], strict=True):
        if rng.random() >= 0.5:
            continue
        try:
            ok = http.post("/feedback", json={"request_id": request_id, "label": label})
            good = ok.status_code == 200
        except httpx.HTTPError:
            good = False
        with tally.lock:
            tally.feedback += 1
            tally.feedback_errors += not good


def start_agent(home: Path, args: argparse.Namespace) -> tuple[Process, str]:
    port = free_port()
    argv = [
        PRUNEGUARD, "agent", "run", "--model", MODEL, "--interval", str(args.agent_interval),
        "--window", str(args.agent_window), "--min-samples", "100", "--port", str(port),
        "--report-every", str(args.report_every),
    ]  # fmt: skip
    process = Process(argv, {}, home / "agent.log")
    return process, f"http://127.0.0.1:{port}"


def scrape(url: str, names: tuple[str, ...]) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                key = sample.name + "".join(
                    f",{k}={v}" for k, v in sorted(sample.labels.items()) if k not in ("pid",)
                )
                out[key] = out.get(key, 0.0) + sample.value
    return out


SERVICE_METRICS = (
    "pruneguard_predictions_total",
    "pruneguard_predlog_written_total",
    "pruneguard_predlog_dropped_total",
    "pruneguard_shadow_dropped_total",
    "pruneguard_feedback_total",
    "pruneguard_model_reloads_total",
)
AGENT_METRICS = (
    "pruneguard_rollbacks_total",
    "pruneguard_agent_failed_checks",
    "pruneguard_agent_analysis_status",
    "pruneguard_window_samples",
    "pruneguard_accuracy",
)


def run_traffic(
    url: str, args: argparse.Namespace, tally: Tally, stop: threading.Event
) -> list[threading.Thread]:
    total = int(args.rate * args.minutes * 60)
    t0 = time.monotonic() + 1.0
    slots = [t0 + i / args.rate for i in range(total)]
    threads = [
        threading.Thread(
            target=client, args=(url, slots[i :: args.concurrency], tally, i, stop), daemon=True
        )
        for i in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    return threads


def sample_until_done(
    threads: list[threading.Thread], pids: tuple[int, int], tally: Tally, every: float
) -> list[dict[str, Any]]:
    """A memory sample every ``every`` seconds until the traffic threads finish, and one last."""
    samples: list[dict[str, Any]] = []
    start = next_at = time.monotonic()
    while True:
        running = any(t.is_alive() for t in threads)
        with tally.lock:
            counts = {"requests": tally.requests, "errors": tally.errors}
        sample = {"t_s": round(time.monotonic() - start, 1), **counts, **memory(*pids)}
        samples.append(sample)
        log(
            NAME,
            f"{sample['t_s']:>6.0f}s {counts} service={sample['service_total_kb']} kB "
            f"agent={sample['agent_kb']} kB",
        )
        if not running:
            return samples
        next_at += every
        while any(t.is_alive() for t in threads) and time.monotonic() < next_at:
            time.sleep(min(1.0, next_at - time.monotonic()))


def summary(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    steady = [s for s in samples if s["t_s"] >= warmup_s] or samples
    points = {"start": steady[0], "middle": steady[len(steady) // 2], "end": steady[-1]}
    keys = ("service_main_kb", "service_total_kb", "agent_kb")
    out = {key: {name: point[key] for name, point in points.items()} for key in keys}
    out["service_workers_kb"] = {
        name: point["service_workers_kb"] for name, point in points.items()
    }
    out["t_s"] = {name: point["t_s"] for name, point in points.items()}
    out["growth_middle_to_end_kb"] = {
        key: (points["end"][key] or 0) - (points["middle"][key] or 0) for key in keys
    }
    out["max_kb"] = {key: max(s[key] or 0 for s in steady) for key in keys}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=30.0, help="requests per second, in all")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--sample-every", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before 'start'")
    ap.add_argument("--agent-interval", type=float, default=10.0)
    ap.add_argument("--agent-window", type=float, default=120.0)
    ap.add_argument("--report-every", type=float, default=120.0)
    args = ap.parse_args()
    from pruneguard.agent.reports import (
        model_dir,  # after serve_common put the repository on sys.path
    )

    with workspace() as ws:
        server = pruneguard_server(ws, shadow_sample=1.0, name=NAME)
        agent, agent_url = start_agent(ws.home, args)
        try:
            server.wait_ready()
            log(NAME, f"serving on {server.url}; agent on {agent_url}; load {uptime()}")
            tally, stop = Tally(), threading.Event()
            threads = run_traffic(server.url, args, tally, stop)
            samples = sample_until_done(
                threads, (server.proc.pid, agent.proc.pid), tally, args.sample_every
            )
            service = scrape(server.url, SERVICE_METRICS)
            agent_metrics = scrape(agent_url, AGENT_METRICS)
            alive = {"service": server.proc.poll() is None, "agent": agent.proc.poll() is None}
            events = [e.to_dict() for e in ws.registry.history(MODEL)]
        finally:
            server.stop()
            agent.stop()
        agent_log = (ws.home / "agent.log").read_text(errors="replace")
        reports = len(list(model_dir(ws.home, MODEL).glob("*/report.html")))

    latency = np.asarray(tally.latencies_ms or [0.0])
    result = {
        "bench": NAME,
        "minutes": args.minutes,
        "rate_target_rps": args.rate,
        "concurrency": args.concurrency,
        "shadow_sample": 1.0,
        "requests": tally.requests,
        "rows": tally.rows,
        "errors": tally.errors,
        "error_kinds": tally.error_kinds,
        "feedback": tally.feedback,
        "feedback_errors": tally.feedback_errors,
        "latency_ms": {
            "p50": round(float(np.percentile(latency, 50)), 2),
            "p99": round(float(np.percentile(latency, 99)), 2),
        },
        "memory": summary(samples, args.warmup),
        "alive_at_end": alive,
        "service_metrics": service,
        "agent_metrics": agent_metrics,
        "agent_ticks": agent_log.count(f"{MODEL}: "),
        "agent_reports": reports,
        "rollback_events": sum(e["action"] == "rollback" for e in events),
        "samples": [
            {k: s[k] for k in ("t_s", "requests", "service_total_kb", "agent_kb")} for s in samples
        ],
        "load": uptime(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
