"""Registry operation latencies on a real SQLite file (and PostgreSQL with --db-url); prints JSON.

    .venv/bin/python bench/registry_ops.py [--db-url postgresql+psycopg://...] [--moves 200]

Measures: register (verify + BentoML store + DB row), an alias move (sha256 check + CAS
transaction + event + revision bump), revision() (what every serving replica polls),
path(verify=True) (what a replica does before loading a version), and the throughput of two
processes racing compare-and-set moves on one alias.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(
    1, str(ROOT / "tests" / "support")
)  # artifact_factory: a real ONNX model + manifest
WORKER = ROOT / "tests" / "registry" / "worker.py"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
        "n": len(ordered),
    }


def _timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def _race(url: str, home: Path, tags: list[str], moves: int) -> dict[str, float]:
    go = home / "go"
    cmd = [sys.executable, str(WORKER), "moves", url, str(home), "bench", str(moves), str(go)]
    procs = [subprocess.Popen([*cmd, *tags], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None and json.loads(proc.stdout.readline())["ready"]
    start = time.perf_counter()
    go.touch()
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    elapsed = time.perf_counter() - start
    total = sum(r["moves"] for r in results)
    return {
        "moves": total,
        "conflicts_retried": sum(r["conflicts"] for r in results),
        "moves_per_s": round(total / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--moves", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pruneguard-bench-registry-"))
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    from artifact_factory import make_artifact

    from pruneguard.registry import open_registry

    artifacts = [make_artifact(tmp / f"a{i}", name="bench", seed=i) for i in range(12)]
    reg = open_registry(args.db_url, home=tmp)
    reg.register(artifacts[0], actor="bench")  # first call pays BentoML's imports
    register = _timed(lambda i: reg.register(artifacts[i + 1], actor="bench"), 11)
    tags = [v.tag for v in reg.list("bench")]

    def move(i: int) -> None:
        current = reg.aliases("bench").get("champion")
        reg.set_alias("bench", "champion", tags[i % len(tags)], actor="bench", expected=current)

    moves = _timed(move, args.moves)
    poll = _timed(lambda i: reg.revision(), 500)
    load = _timed(lambda i: reg.path(tags[i % len(tags)], verify=True), 100)
    result = {
        "db": "postgresql" if args.db_url and args.db_url.startswith("postgresql") else "sqlite",
        "register": _ms(register),
        "alias_move": _ms(moves),
        "revision_poll": _ms(poll),
        "path_verify": _ms(load),
        "two_process_cas_race": _race(reg.url, tmp, tags, args.moves // 2),
    }
    reg.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
