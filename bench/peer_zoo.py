"""pruneguard's default channel recipe against Torch-Pruning's default, on the zoo (issue 15).

Every zoo net (residual, concat, depthwise, grouped, mlp, densenet, resnext) is trained on
scikit-learn's digits (1×8×8; 360 held-out rows, so one accuracy point is ~3.6 rows), then
cut to 60% and 85% fewer MACs by both sides from the same trained dense model:

- **pruneguard**: the default recipe shape — ``criterion: auto``, ``schedule: auto``
  (iterative candidate: 3 steps, 1 recovery epoch between), a 4-epoch distilled finetune,
  with the opt-in ``scope: auto`` (``--scope``; ``layer`` is the recipe shape without it).
  The trial it runs first is reported (seconds, share of the run's training batches).
- **peer**: Torch-Pruning's default, as its README shows it: ``BasePruner`` with group L2
  magnitude, one shot, the classifier ignored; the ratio found by bisection on its own MAC
  count; then the *same* finetune (pruneguard's ``finetune.train``, distilled) for as many
  epochs as the pruneguard run spent recovering (its recovery rounds + final finetune).

Claims: pruneguard's mean drop is at most half the peer's; on no architecture is its mean
drop more than 0.5 points worse; every cut the peer reaches, pruneguard reaches.

Usage: python bench/peer_zoo.py [--seeds 0,1,2] [--archs densenet,resnext] [--targets 0.6,0.85]
       [--scope auto|layer|global]
Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

ARCHS = ("residual", "concat", "depthwise", "grouped", "mlp", "densenet", "resnext")
TARGETS = (0.6, 0.85)
STEPS, RECOVERY_EPOCHS, FINETUNE_EPOCHS = 3, 1, 4


def recipe(arch: str, target: float, seed: int, scope: str = "auto") -> Any:
    from pruneguard.pruning.recipe import parse_recipe

    options: dict[str, Any] = {"name": arch, "in_channels": 1}
    if arch == "mlp":
        options["spatial"] = 8
    return parse_recipe({
        "name": f"zoo-{arch}",
        "model": {"factory": "pruneguard.pruning.models.zoo:build_zoo", "options": options},
        "data": {"builtin": "digits"},
        "train": {"epochs": 15, "lr": 0.003},
        "method": "channel",
        "criterion": "auto",
        "scope": scope,
        "target": {"macs_reduction": target},
        "schedule": {"kind": "auto", "steps": STEPS},
        "finetune": {"epochs": FINETUNE_EPOCHS, "lr": 0.002, "distill": True,
                     "recovery_epochs": RECOVERY_EPOCHS},
        "seed": seed,
    })  # fmt: skip


def _peer_prune(model: Any, example: Any, ratio: float) -> Any:
    import torch_pruning as tp

    from pruneguard.pruning.methods.channels import find_classifier

    pruned = copy.deepcopy(model).eval()
    head = find_classifier(pruned, example)
    tp.pruner.BasePruner(
        pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[head] if head is not None else [],
    ).step()  # fmt: skip
    return pruned


def _peer_reduction(model: Any, example: Any, ratio: float, dense_macs: int) -> float:
    from pruneguard.pruning.measure import count_macs

    try:
        pruned = _peer_prune(model, example, ratio)
        pruned(example)
    except Exception:  # a cut the peer cannot make (a broken graph) counts as not reached
        return 0.0
    return 1.0 - count_macs(pruned, example) / dense_macs


def peer_ratio(model: Any, example: Any, target: float) -> tuple[float | None, float]:
    """The peer's smallest ratio reaching ``target`` (None if none), and its best reduction.

    Scans ratios 0.05..0.95 (a user would, too: the MACs do not always grow with the
    ratio), then bisects up to the first that meets the target."""
    from pruneguard.pruning.measure import count_macs

    dense = count_macs(model, example)
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    reached = [(r, _peer_reduction(model, example, r, dense)) for r in grid]
    best = max(red for _, red in reached)
    hits = [i for i, (_, red) in enumerate(reached) if red >= target]
    if not hits:
        return None, best
    lo = reached[hits[0] - 1][0] if hits[0] else 0.0
    hi = reached[hits[0]][0]
    while hi - lo > 5e-3:
        mid = (lo + hi) / 2
        if _peer_reduction(model, example, mid, dense) >= target:
            hi = mid
        else:
            lo = mid
    return hi, best


def run_one(arch: str, target: float, seed: int, scope: str) -> dict[str, Any]:
    from pruneguard.pruning.errors import TargetUnreachable
    from pruneguard.pruning.finetune import train
    from pruneguard.pruning.pipeline import evaluate, prepare, prune_copy

    row: dict[str, Any] = {"arch": arch, "target": target, "seed": seed, "scope": scope}
    started = time.perf_counter()
    try:
        prep = prepare(recipe(arch, target, seed, scope), progress=False)
    except TargetUnreachable as exc:
        row["pruneguard"] = {"reached": False, "error": str(exc)}
        prep = prepare(recipe(arch, 0.5, seed).with_seed(seed), progress=False)  # a dense model
    else:
        safety: list[dict[str, Any]] = []
        model = prune_copy(prep, progress=False, safety=safety)
        ev = evaluate(model, prep.data["val"], prep.example)
        chosen = prep.recipe  # a one-shot choice trains as long as the iterative candidate
        ft = chosen.finetune
        recovery = ft.epochs + ft.recovery_epochs * (chosen.schedule.steps - 1)
        row["pruneguard"] = {
            "reached": True,
            "drop_points": round((prep.baseline.accuracy - ev.accuracy) * 100, 3),
            "macs_reduction": round(1 - ev.macs / prep.baseline.macs, 4),
            "chosen": f"{chosen.criterion} {chosen.schedule.kind}x{chosen.schedule.steps} "
                      f"{chosen.scope}",
            "recovery_epochs": recovery,
            "safety_net_fired": [r["step"] for r in safety if "action" in r],
            "trial_seconds": prep.selection["seconds"] if prep.selection else 0.0,
            "trial_share_of_run": prep.selection["budget"]["share_of_run"] if prep.selection else 0.0,
            "seconds": round(time.perf_counter() - started, 1),
        }  # fmt: skip
    row["dense_accuracy"] = prep.baseline.accuracy
    row["peer"] = _peer_side(prep, target, row["pruneguard"].get("recovery_epochs", 6), train)
    print(f"{arch} {target} seed {seed}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def _peer_side(prep: Any, target: float, epochs: int, train: Any) -> dict[str, Any]:
    from pruneguard.pruning.pipeline import evaluate

    started = time.perf_counter()
    ratio, best = peer_ratio(prep.model, prep.example, target)
    if ratio is None:
        return {"reached": False, "best_macs_reduction": round(best, 4)}
    model = _peer_prune(prep.model, prep.example, ratio)
    train(model, prep.data["train"], epochs=epochs, lr=prep.recipe.finetune.lr,
          teacher=prep.teacher, progress=False, seed=prep.recipe.seed + 1000)  # fmt: skip
    ev = evaluate(model, prep.data["val"], prep.example)
    return {
        "reached": True,
        "ratio": round(ratio, 4),
        "drop_points": round((prep.baseline.accuracy - ev.accuracy) * 100, 3),
        "macs_reduction": round(1 - ev.macs / prep.baseline.macs, 4),
        "finetune_epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    both = [r for r in rows if r["pruneguard"]["reached"] and r["peer"]["reached"]]
    per_arch: dict[str, dict[str, float]] = {}
    for arch in sorted({r["arch"] for r in both}):
        mine = [r["pruneguard"]["drop_points"] for r in both if r["arch"] == arch]
        peer = [r["peer"]["drop_points"] for r in both if r["arch"] == arch]
        per_arch[arch] = {
            "pruneguard_mean_drop": round(statistics.mean(mine), 3),
            "peer_mean_drop": round(statistics.mean(peer), 3),
            "pruneguard_spread": [min(mine), max(mine)],
            "peer_spread": [min(peer), max(peer)],
        }
    mine_all = statistics.mean(r["pruneguard"]["drop_points"] for r in both) if both else 0.0
    peer_all = statistics.mean(r["peer"]["drop_points"] for r in both) if both else 0.0
    unreached = [
        f"{r['arch']}@{r['target']}" for r in rows
        if r["peer"]["reached"] and not r["pruneguard"]["reached"]
    ]  # fmt: skip
    fired = [r for r in rows if r["pruneguard"].get("safety_net_fired")]
    return {
        "safety_net_fired_in": [f"{r['arch']}@{r['target']} seed {r['seed']}" for r in fired],
        "pruneguard_mean_drop": round(mine_all, 3),
        "peer_mean_drop": round(peer_all, 3),
        "per_arch": per_arch,
        "cuts_peer_reaches_that_pruneguard_does_not": sorted(set(unreached)),
        "claims": {
            "mean_drop_at_most_half_the_peers": mine_all <= 0.5 * peer_all,
            "never_more_than_half_a_point_worse": all(
                a["pruneguard_mean_drop"] - a["peer_mean_drop"] <= 0.5 for a in per_arch.values()
            ),
            "reaches_every_cut_the_peer_reaches": not unreached,
        },
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)))
    parser.add_argument("--scope", default="auto", choices=("auto", "layer", "global"),
                        help="pruneguard's scope; layer: the recipe before scope: auto")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = [
        run_one(arch, float(target), int(seed), args.scope)
        for arch in args.archs.split(",")
        for target in args.targets.split(",")
        for seed in args.seeds.split(",")
    ]
    by_target = {t: summarise([r for r in rows if r["target"] == float(t)])
                 for t in args.targets.split(",")}  # fmt: skip
    report = {
        "bench": "peer_zoo",
        "validation_rows": 360,
        "overall": summarise(rows),
        "by_target": by_target,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
