"""How much the values that kernel-sensitive tests assert on move with torch's kernels.

torch picks floating-point kernels by CPU (AVX-512, AVX2 or plain), so a trained model's
accuracy or a parity error is not a constant from one machine to the next. This measures,
under whatever kernels this process runs with, the quantities that tests bound, over several
seeds; ``make kernel-spread`` runs it under ``ATEN_CPU_CAPABILITY=default|avx2|avx512`` and
1 and 2 torch threads, and the tests' bounds are set from what it printed (docs/testing.md).

Usage: ATEN_CPU_CAPABILITY=avx2 python bench/kernel_spread.py [--seeds 0,1,2,3,4] [--threads 1]
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CUT_CRITERIA = ("l2", "taylor", "random")
DEAD = [1, 4, 9, 15, 20, 22, 27, 30]


def finetune_seed(seed: int) -> dict[str, float]:
    """test_finetune: dense accuracy, and distillation after an l1 cut at ratio 0.5."""
    import torch
    from kernel_cases import finetune_split, trained_cnn

    from pruneguard.pruning.finetune import accuracy, train
    from pruneguard.pruning.methods.channels import ChannelPruner

    digits = finetune_split()
    teacher = trained_cnn(digits["train"], seed)
    student = copy.deepcopy(teacher)
    ChannelPruner(student, torch.randn(1, 1, 8, 8), criterion="l1", ratio=0.5).step()
    pruned = accuracy(student, digits["val"])
    train(student, digits["train"], epochs=5, lr=3e-3, teacher=teacher, progress=False)
    dense = accuracy(teacher, digits["val"])
    recovered = accuracy(student, digits["val"])
    return {
        "dense": dense,
        "pruned": pruned,
        "recovered": recovered,
        "recovery_gap": dense - recovered,
    }


def light_cut_seed(seed: int) -> dict[str, float]:
    """test_structured: 10% of the channels cut, BatchNorm re-estimated or left stale."""
    from kernel_cases import light_cut, recipe_split, trained_cnn

    loader, calibration, val = recipe_split()
    dense = trained_cnn(loader, seed)
    found = {}
    for criterion in CUT_CRITERIA:
        cut = light_cut(dense, calibration, val, criterion, seed)
        found["dense"] = cut["dense"]
        found[f"{criterion}_recalibrated"] = cut["recalibrated"]
        found[f"{criterion}_stale"] = cut["stale"]
    return found


def parity_errors() -> dict[str, float]:
    """test_structured: ORT vs torch after an l1 cut at ratio 0.5, per zoo model."""
    import torch

    from pruneguard.pruning.export import export_onnx, parity
    from pruneguard.pruning.methods.channels import ChannelPruner
    from pruneguard.pruning.models import build_builtin
    from pruneguard.pruning.models.zoo import ZOO, ZOO_INPUT_SHAPE, build_zoo

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["digits-cnn", *sorted(ZOO)]:
            torch.manual_seed(0)
            if name == "digits-cnn":
                model, x = build_builtin("digits-cnn").eval(), torch.randn(1, 1, 8, 8)
            else:
                model, x = build_zoo(name).eval(), torch.randn(1, *ZOO_INPUT_SHAPE)
            ChannelPruner(model, x, criterion="l1", ratio=0.5).step()
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(model, x, path)
            found[name] = parity(model, path, torch.randn(5, *x.shape[1:]))
    return found


def dead_channel_shifts() -> dict[str, float]:
    """test_structured: how far the logits move when the dead channels are removed."""
    import torch
    from torch import nn

    from pruneguard.pruning.methods.channels import ChannelPruner
    from pruneguard.pruning.models.zoo import ZOO_INPUT_SHAPE, build_zoo

    found = {}
    for criterion in ("l1", "l2", "gradient", "taylor", "activation"):
        torch.manual_seed(0)
        model, x = build_zoo("grouped").eval(), torch.randn(1, *ZOO_INPUT_SHAPE)
        conv, bn = model.mix[0], model.mix[1]
        with torch.no_grad():
            for t in (conv.weight, bn.weight, bn.bias):
                t[DEAD] = 0
            model.head.fc.weight[:, DEAD] = 0
        others = [
            m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not conv
        ]
        g = torch.Generator().manual_seed(1)
        calibration = [
            (torch.randn((8, *x.shape[1:]), generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(2)
        ]
        batch = torch.randn(6, *x.shape[1:])
        before = model(batch)
        ChannelPruner(
            model, x, criterion=criterion, ratio=len(DEAD) / 32, calibration=calibration,
            ignored_layers=others, recalibrate_bn=False,
        ).step()  # fmt: skip
        found[criterion] = float((model(batch) - before).abs().max())
    return found


def minilm_gated_vs_removed() -> float:
    """test_minilm: heads removed physically vs the same heads gated to zero."""
    from kernel_cases import heads_removed_and_gated

    from pruneguard.pruning.text import load_minilm, tokenize

    model, tokenizer = load_minilm()
    feeds = tokenize(tokenizer, ["A quick test.", "The cat sat on the warm mat by the door."])
    removed, gated = heads_removed_and_gated(model, feeds)
    return float((removed - gated).abs().max())


def _summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    import numpy as np

    keys = rows[0].keys()
    return {
        k: {
            "min": round(float(np.min([r[k] for r in rows])), 4),
            "mean": round(float(np.mean([r[k] for r in rows])), 4),
            "max": round(float(np.max([r[k] for r in rows])), 4),
        }
        for k in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-minilm", action="store_true", help="skip the MiniLM check")
    args = parser.parse_args()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    finetune = {s: finetune_seed(s) for s in seeds}
    light = {s: light_cut_seed(s) for s in seeds}
    result: dict[str, Any] = {
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "(native)"),
        "cpu_capability_used": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "seeds": seeds,
        "finetune": {"per_seed": finetune, "summary": _summary(list(finetune.values()))},
        "light_cut": {"per_seed": light, "summary": _summary(list(light.values()))},
        "light_cut_paired": _summary(
            [
                {
                    **{f"{c}_drop": r["dense"] - r[f"{c}_recalibrated"] for c in CUT_CRITERIA},
                    **{f"{c}_gain": r[f"{c}_recalibrated"] - r[f"{c}_stale"] for c in CUT_CRITERIA},
                }
                for r in light.values()
            ]
        ),
        "parity_max_abs_diff": parity_errors(),
        "dead_channel_logit_shift": dead_channel_shifts(),
    }
    if not args.no_minilm:
        result["minilm_gated_vs_removed"] = minilm_gated_vs_removed()
    result["seconds"] = round(time.perf_counter() - start, 1)
    json.dump(result, sys.stdout, default=float)
    print()


if __name__ == "__main__":
    main()
