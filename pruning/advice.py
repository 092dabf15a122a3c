"""``pruneguard prune plan``: structured or unstructured, one-shot or iterative, and why.

A pure function of the target, the method and the deploy target (no model is loaded). The
decision table is in docs/pruning.md; in short:

- **Schedule.** Removing under ~30% of the weights, one shot plus a finetune recovers;
  above ~50%, prune in steps with recovery finetuning between them; in between, two steps.
  For channel pruning that rule is only the prior: ``criterion: auto`` and ``schedule: auto``
  measure the candidates on the user's model (:mod:`pruning.selection`) and are what the
  plan recommends.
- **Structure.** On CPU ONNX Runtime only structured pruning (channels, heads, layers) makes
  the model faster, because it makes the tensors smaller. Unstructured and 2:4 zeros are
  multiplied like any other number there: they only shrink the compressed file. 2:4 gains
  speed only on sparse kernels (NVIDIA Ampere+ sparse tensor cores via TensorRT/cuSPARSELt).
- **int8** (:func:`int8_plan`). ONNX Runtime's int8 kernels pay most on CPUs with VNNI
  (int8 dot-product instructions); without it ORT advises 7-bit weights (``reduce_range``)
  and gains less. Whatever the CPU, a measured figure beats the rule: once a run with a
  ``quantize`` section is registered, its speed-up over the fp32 parent is quoted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pruneguard.pruning.recipe import SELECTING_METHODS, Recipe, Target

__all__ = [
    "DEPLOY_TARGETS",
    "ITERATIVE_ABOVE",
    "ONE_SHOT_BELOW",
    "Advice",
    "advise",
    "advise_recipe",
    "int8_plan",
]

DEPLOY_TARGETS = ("cpu", "gpu-sparse")
ONE_SHOT_BELOW = 0.30
ITERATIVE_ABOVE = 0.50
STEP_SIZE = 0.20  # about how much to remove per iterative step
STRUCTURED = ("channel", "head", "layer", "ffn")


@dataclass(frozen=True)
class Advice:
    structure: str  # "structured" | "2:4" | "unstructured"
    method: str  # the recipe method to use
    schedule: str  # "one-shot" | "iterative"
    steps: int
    removed_fraction: float | None  # estimated fraction of weights removed (None: unknown)
    deploy_target: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]  # where the recipe as written disagrees with the advice
    # "auto" where a trial should choose the criterion and schedule (channel pruning); else
    # None, and ``schedule``/``steps`` are the advice itself
    select: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        schedule = f"{self.schedule}{f' in {self.steps} steps' if self.steps > 1 else ''}"
        if self.select == "auto":
            schedule = f"criterion: auto, schedule: auto (tried first: {schedule})"
        head = f"Recommended: {self.structure} pruning (method: {self.method}), {schedule}."
        lines = [head, *(f"  why: {r}" for r in self.reasons)]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def removed_fraction(target: Target) -> float | None:
    """The fraction of weights (≈ compute) a target removes; None when it depends on the model."""
    if target.kind == "ratio":
        return 1.0 - (1.0 - target.value) ** 2  # a conv loses channels on both sides
    if target.kind == "layers":
        return None
    return target.value


def _schedule(amount: float | None, target: Target) -> tuple[str, int, str]:
    if amount is None:
        count = int(target.value)
        if count <= 1:
            return "one-shot", 1, "Removing one layer is a single cut: prune it, then finetune."
        return (
            "iterative",
            count,
            (
                f"Removing {count} layers: drop one per step with recovery finetuning between, so each "
                "cut is judged on a network that has adapted to the previous one."
            ),
        )
    pct = f"{amount:.0%}"
    if amount < ONE_SHOT_BELOW:
        return (
            "one-shot",
            1,
            (
                f"Removing about {pct} is light (under {ONE_SHOT_BELOW:.0%}): one shot followed by a short "
                "finetune usually recovers the accuracy; iterating costs time for little gain."
            ),
        )
    if amount <= ITERATIVE_ABOVE:
        return (
            "iterative",
            2,
            (
                f"Removing about {pct} is in the grey zone ({ONE_SHOT_BELOW:.0%}–{ITERATIVE_ABOVE:.0%}): one shot "
                "with a longer finetune often works, two steps with recovery is the safer choice."
            ),
        )
    steps = max(3, math.ceil(amount / STEP_SIZE))
    return (
        "iterative",
        steps,
        (
            f"Removing about {pct} (over {ITERATIVE_ABOVE:.0%}) at once also removes the weights the rest "
            f"would have compensated with: prune in {steps} steps with recovery finetuning between them, "
            "so the network re-routes before each next cut."
        ),
    )


def _structure(method: str, target: Target, deploy: str) -> tuple[str, str, list[str], list[str]]:
    """(structure, method, reasons, warnings) for the deploy target."""
    if deploy == "cpu":
        return _for_cpu(method)
    return _for_gpu_sparse(method, target)


def _for_cpu(method: str) -> tuple[str, str, list[str], list[str]]:
    reason = (
        "On CPU ONNX Runtime only structured pruning is faster: removing whole channels, heads or "
        "layers makes every matrix smaller, so the kernels do less work."
    )
    if method in STRUCTURED:
        return "structured", method, [reason], []
    warning = (
        f"method {method} on CPU: ONNX Runtime multiplies the zeros like any other weight, so the "
        "latency will not improve (speed-up ≈ 1.0); only the compressed size shrinks. "
        "Use method: channel for speed."
    )
    return "structured", "channel", [reason], [warning]


def _for_gpu_sparse(method: str, target: Target) -> tuple[str, str, list[str], list[str]]:
    reasons = [
        "2:4 sparsity (2 zeros in every 4 weights, 50%) is the pattern NVIDIA Ampere-and-newer sparse "
        "tensor cores skip (TensorRT, cuSPARSELt): up to ~2x on matmul-heavy layers. It needs those "
        "kernels: pruneguard's ONNX Runtime CPU measurements will show no gain."
    ]
    if method in STRUCTURED:
        first = (
            "Structured pruning is faster on every backend, GPUs included; 2:4 can be added on top."
        )
        return "structured", method, [first, *reasons], []
    warnings = []
    if method == "unstructured":
        warnings.append(
            "method unstructured: sparse tensor cores accelerate only the 2:4 pattern; arbitrary "
            "zeros are no faster on them. Use method: nm."
        )
        if target.value > 0.5:
            warnings.append(
                f"target.sparsity={target.value:g} is above 2:4's fixed 50%; for the rest, combine with "
                "channel pruning."
            )
    return "2:4", "nm", reasons, warnings


def advise(
    method: str, target: Target, deploy_target: str = "cpu", *, steps: int | None = None
) -> Advice:
    """The plan for pruning with ``method`` to ``target`` for ``deploy_target``.

    ``steps``: the recipe's schedule steps, to warn when it iterates less than advised.
    """
    if deploy_target not in DEPLOY_TARGETS:
        raise ValueError(
            f"deploy_target={deploy_target!r}: must be one of {', '.join(DEPLOY_TARGETS)}"
        )
    amount = removed_fraction(target)
    structure, suggested, reasons, warnings = _structure(method, target, deploy_target)
    kind, advised_steps, why = _schedule(amount, target)
    if suggested == "nm":  # the 2:4 pattern is fixed at 50%
        kind, advised_steps, why = _schedule(0.5, Target("sparsity", 0.5))
    reasons.append(why)
    select = "auto" if suggested in SELECTING_METHODS else None
    if select:
        reasons.append(
            "That rule of thumb can be far off on a net it was not written for, so let a short "
            "trial on your model choose: criterion: auto and schedule: auto prune a copy with each "
            "candidate at the target, recover briefly, and keep the best on rows held out of "
            "the training split (within a quarter of the run's training; the table goes in "
            "the manifest's pruning.selection)."
        )
    if (
        steps is not None
        and kind == "iterative"
        and amount is not None
        and amount > ITERATIVE_ABOVE
        and steps < 2
    ):
        warnings.append(
            f"the recipe prunes in one shot; at about {amount:.0%} expect a larger accuracy drop: use "
            f"schedule: {{kind: iterative, steps: {advised_steps}}}"
        )
    return Advice(
        structure,
        suggested,
        kind,
        advised_steps,
        amount,
        deploy_target,
        tuple(reasons),
        tuple(warnings),
        select,
    )


def advise_recipe(recipe: Recipe, deploy_target: str = "cpu") -> Advice:
    """The plan for a recipe; a combined recipe's is each stage's plan, merged."""
    steps = recipe.schedule.steps
    plans = [advise(s.method, s.target, deploy_target, steps=steps) for s in recipe.stages]
    return plans[0] if len(plans) == 1 else _merged(recipe, plans)


def _merged(recipe: Recipe, plans: list[Advice]) -> Advice:
    """One plan for ``method: [a, b, ...]``: the schedule of the stage that needs the most
    steps (a combined recipe runs the schedule once per stage), each stage's reasons once."""
    most = max(plans, key=lambda a: a.steps)
    reasons: list[str] = []
    for stage, plan in zip(recipe.stages, plans, strict=True):
        for reason in plan.reasons:
            shared = all(reason in other.reasons for other in plans)
            line = reason if shared else f"{stage.method}: {reason}"
            if line not in reasons:
                reasons.append(line)
    warnings = [
        f"{s.method}: {w}" for s, a in zip(recipe.stages, plans, strict=True) for w in a.warnings
    ]
    structures = {a.structure for a in plans}
    return Advice(
        structures.pop() if len(structures) == 1 else "mixed",
        "[" + ", ".join(a.method for a in plans) + "]",
        most.schedule,
        most.steps,
        None,  # the stages remove different things; their shares do not add up
        most.deploy_target,
        tuple(reasons),
        tuple(warnings),
    )


def int8_plan(
    recipe: Recipe, cpu: Mapping[str, Any], measured: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Whether int8 is likely to help ``recipe`` on this CPU (``pruning.quantize.cpu_int8``),
    with the measured figure of a registered int8 version of it when there is one."""
    mode = "dynamic" if recipe.is_text else "static"
    if cpu.get("vnni"):
        why = (f"this CPU has int8 dot-product instructions ({', '.join(cpu['int8_flags'])}): "
               "ONNX Runtime's int8 kernels are likely to help; measure it with "
               f"quantize: {{mode: {mode}}}")  # fmt: skip
    else:
        why = str(cpu.get("advice"))
    return {
        "likely_to_help": bool(cpu.get("vnni")),
        "mode": mode,
        "recipe_quantizes": recipe.quantize is not None,
        "reduce_range_advised": bool(cpu.get("reduce_range_advised")),
        "cpu": cpu.get("cpu"),
        "why": why,
        "measured": dict(measured) if measured is not None else None,
    }
