"""The agent's cosine check on a real pruned MiniLM: false alarms on unshifted windows, no
rollback over stationary ticks, and how fast a falling cosine rolls back. Prints JSON.

    .venv/bin/python bench/agent_text.py [--artifacts DIR] [--seeds 3] [--windows 200]

``DIR`` holds ``dense/`` and ``pruned/`` from ``pruneguard prune minilm-fast --out DIR``
(built there first when missing). The per-request cosines are what the service computes:
both ONNX artifacts, loaded as served, answer the held-out sentences the manifest's
``mean_cosine_to_dense`` was measured on, and ``registry.tasks`` compares them. Windows are
drawn from those cosines (stationary traffic) and fed through the real check and policy.
Targets (issue 14): <= 10% false alarms over >= 50 windows; no rollback over >= 1,000 ticks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests" / "support"))  # agent_sim: windows through the policy


def log(message: str) -> None:
    print(f"[agent_text] {message}", file=sys.stderr, flush=True)


def artifacts(folder: Path | None) -> tuple[Path, Path]:
    """dense/ and pruned/ of minilm-fast, built into ``folder`` (or a temp dir) when missing."""
    folder = folder or Path(tempfile.mkdtemp(prefix="pruneguard-agent-text-"))
    if not (folder / "pruned" / "manifest.json").is_file():
        from pruneguard.pruning.pipeline import run
        from pruneguard.pruning.recipe import load_recipe

        log(f"pruning minilm-fast into {folder}")
        run(load_recipe("minilm-fast"), folder, progress=True)
    return folder / "dense", folder / "pruned"


def served_cosines(dense: Path, pruned: Path) -> tuple[np.ndarray, float]:
    from pruneguard.deploy.model import LoadedModel
    from pruneguard.pruning.text import load_paraphrases
    from pruneguard.registry.artifact import read_manifest
    from pruneguard.registry.tasks import Decoded

    texts = [t for pair in load_paraphrases() for t in pair]
    models = [LoadedModel.load(p, tag=f"minilm:{p.name}") for p in (pruned, dense)]
    answers = []
    for model in models:
        parts = [model.predict(model.encode(texts[i : i + 32])[0])
                 for i in range(0, len(texts), 32)]  # fmt: skip
        answers.append(Decoded(np.concatenate([p.classes for p in parts]),
                               np.concatenate([p.outputs for p in parts])))  # fmt: skip
    cosines = models[0].task.compare(answers[0], answers[1]).similarity
    return cosines, float(read_manifest(pruned)["metrics"]["mean_cosine_to_dense"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=1000)
    args = parser.parse_args()

    from agent_sim import cosine_ticks, cosine_windows

    from pruneguard.agent.checks import CheckConfig, cosine_check
    from pruneguard.agent.policy import FAIL, PolicyConfig

    checks, policy = CheckConfig(), PolicyConfig()
    cosines, expected = served_cosines(*artifacts(args.artifacts))
    log(f"{len(cosines)} served cosines, mean {cosines.mean():.4f}; manifest {expected:.4f}")
    per_seed = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        windows = cosine_windows(rng, cosines, args.windows, size=checks.min_pairs)
        outcomes = [cosine_check(w, expected=expected, config=checks).outcome for w in windows]
        ticks = cosine_ticks(
            cosine_windows(rng, cosines, args.ticks, size=checks.min_pairs), expected,
            checks=checks, policy=policy,
        )  # fmt: skip
        falling = cosine_ticks(
            cosine_windows(rng, cosines, 20, size=checks.min_pairs, shift=0.05), expected,
            checks=checks, policy=policy,
        )  # fmt: skip
        per_seed.append({
            "seed": seed,
            "false_alarm_rate": outcomes.count(FAIL) / len(outcomes),
            "stationary_rollbacks": ticks.count("rollback"),
            "ticks_to_rollback_at_minus_0.05": falling.index("rollback") + 1
            if "rollback" in falling else None,
        })  # fmt: skip
    rates = [s["false_alarm_rate"] for s in per_seed]
    print(json.dumps({
        "bench": "agent_text",
        "model": "minilm-fast (pruned) vs dense, as served (ONNX, registry.tasks cosine)",
        "held_out_texts": len(cosines),
        "served_mean_cosine": round(float(cosines.mean()), 4),
        "served_cosine_p05_p50": [round(float(q), 4) for q in np.quantile(cosines, [0.05, 0.5])],
        "manifest_mean_cosine_to_dense": round(expected, 4),
        "check": {"min_pairs": checks.min_pairs, "cosine_margin": checks.cosine_margin,
                  "threshold": policy.threshold},
        "windows_per_seed": args.windows, "ticks_per_seed": args.ticks,
        "false_alarm_rate": {"max": max(rates), "mean": sum(rates) / len(rates)},
        "seeds": per_seed,
        "checks": {
            "false_alarms_le_10pct_every_seed": max(rates) <= 0.10,
            "no_stationary_rollback": all(s["stationary_rollbacks"] == 0 for s in per_seed),
        },
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
